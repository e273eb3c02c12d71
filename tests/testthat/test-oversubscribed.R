# More local daemons than cores: they run at a lower priority (nice), so
# that the host feeding them keeps its share of the CPU (see
# oversubscribed_nice in rust/src/host/pool.rs). Real daemons; their nice
# values as they see them (tools::psnice() on each).

skip_on_cran()

cores <- parallel::detectCores()
daemon_nices <- function() unlist(everywhere(tools::psnice())[])
host_nice <- tools::psnice()

test_that("daemons up to one per core run at the host's priority", {
  daemons(1)
  on.exit(daemons(0))
  expect_identical(daemon_nices(), host_nice)
})

for (disp in c(TRUE, FALSE)) {
  mode <- if (disp) "dispatcher" else "no dispatcher"

  test_that(sprintf("daemons that outnumber the cores run at a lower priority, replacements too (%s)", mode), {
    skip_if(is.na(cores) || cores > 4L, "launches 4 daemons per core")
    n <- 4L * cores
    # Together they weigh as much as one process per core: each nice step
    # is 1.25x less weight.
    want <- min(19L, host_nice + as.integer(round(log(n / cores) / log(1.25))))
    daemons(n, dispatcher = disp)
    on.exit(daemons(0))
    nices <- daemon_nices()
    expect_length(nices, n)
    expect_true(all(nices == want), info = paste(nices, collapse = " "))
    expect_gt(want, host_nice)
    # Tiny tasks on all of them: every result, in order.
    idx <- seq_len(2000L)
    expect_identical(unlist(collect_mirai(lapply(idx, function(i) mirai(i, i = i)))), idx)
    # A daemon killed mid-batch: the batch completes (its running task with
    # .retry), and its replacement runs at the same priority.
    ms <- lapply(idx, function(i) mirai({ Sys.sleep(0.001); i }, i = i, .retry = 1L))
    victim <- .Call(mirai:::C_mirai_host_children, mirai:::profile_of(NULL)$host, FALSE)[[1L]]
    tools::pskill(victim, tools::SIGKILL)
    expect_identical(unlist(collect_mirai(ms)), idx)
    expect_true(wait_until(function() status()$replaced == 1L && status()$connections == n, 20))
    nices <- daemon_nices()
    expect_length(nices, n)
    expect_true(all(nices == want), info = paste(nices, collapse = " "))
  })
}
