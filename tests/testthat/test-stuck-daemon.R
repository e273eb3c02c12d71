# A daemon that stops reading (SIGSTOP): without a dispatcher it must not
# take the tasks the other daemon can run, and tasks cancelled or timed out
# before their frame was written must not pin the host's memory. A task
# cancelled mid-write reaches the daemon as filler, which it answers
# without running.

# This process's resident memory (VmRSS), in MB.
vm_rss <- function() {
  s <- grep("^VmRSS:", readLines("/proc/self/status"), value = TRUE)
  as.numeric(gsub("[^0-9]", "", s)) / 1024
}

# Gone and reaped: no process at all, not even a zombie.
reaped <- function(pid) !file.exists(sprintf("/proc/%d", pid))

# The profile's task counters (awaiting, executing, completed). Without a
# dispatcher status() has none (as in the reference mirai): read natively.
task_counters <- function() {
  v <- .Call(mirai:::C_mirai_host_info, mirai:::profile_of(NULL)$host)
  unname(v[c("awaiting", "executing", "completed")])
}

test_that("without a dispatcher a stopped daemon takes one task, then none, and pins no memory", {
  skip_on_cran()
  skip_if_not(file.exists("/proc/self/status"))
  daemons(2, dispatcher = FALSE)
  pids <- unlist(everywhere(Sys.getpid())[.flat])
  expect_length(unique(pids), 2L)
  on.exit({
    tools::pskill(pids, tools::SIGCONT)
    daemons(0)
  })
  x <- runif(1.25e6) # 10 MB
  invisible(gc())
  start <- vm_rss()
  tools::pskill(pids[[2L]], tools::SIGSTOP)
  ok <- rss <- integer()
  for (round in 1:4) {
    ms <- lapply(1:40, function(i) mirai(length(x), x = x, .timeout = 2000))
    # Each resolves within its 2 s timeout: a bounded wait.
    ok[round] <- sum(vapply(ms, function(m) identical(m[], 1250000L), logical(1L)))
    rm(ms)
    invisible(gc())
    rss[round] <- round(vm_rss() - start)
  }
  # The first task may go to the stopped daemon before it is known to be
  # stuck (and was half of them); after that, none.
  done <- paste("tasks done per round:", toString(ok))
  expect_gte(ok[[1L]], 30L, label = done)
  expect_true(all(ok[-1L] >= 39L), label = done)
  expect_true(all(rss < 50), label = paste("MB over the start after each round:", toString(rss)))
  # Resumed, the daemon answers its withdrawn task (counted as executing
  # until then) and works again.
  tools::pskill(pids[[2L]], tools::SIGCONT)
  expect_true(wait_until(function() task_counters()[[2L]] == 0L, 10))
  ms <- lapply(1:8, function(i) mirai({ Sys.sleep(0.2); Sys.getpid() }, .timeout = 10000))
  expect_setequal(unlist(collect_mirai(ms)), pids)
  daemons(0)
  expect_true(wait_until(function() all(vapply(pids, reaped, logical(1L))), 10))
})

test_that("a task cancelled mid-write is answered, never run, and the daemon keeps working", {
  skip_on_cran()
  for (disp in c(FALSE, TRUE)) for (url in c(local_url(), local_url(tcp = TRUE))) {
    what <- sprintf("dispatcher = %s, %s", disp, sub(":.*", "", url))
    daemons(url = url, dispatcher = disp)
    launch_local(1)
    expect_true(wait_until(function() status()$connections == 1L, 10), label = what)
    pid <- mirai(Sys.getpid())[]
    tools::pskill(pid, tools::SIGSTOP)
    # Far more than a socket's buffers hold: the frame is partly written.
    x <- runif(1.25e7)
    f <- tempfile()
    m <- mirai({ writeLines("ran", f); length(x) }, x = x, f = f)
    # TRUE only with a dispatcher, which also interrupts it on the daemon.
    expect_identical(stop_mirai(m), disp, label = what)
    expect_identical(as.integer(m[]), 20L, label = what)
    rm(x)
    # Waits while the daemon cannot take it, then runs once it reads again.
    after <- mirai(sum(1:10), .timeout = 10000)
    tools::pskill(pid, tools::SIGCONT)
    expect_identical(after[], 55L, label = what)
    expect_false(file.exists(f), label = what)
    expect_true(wait_until(function() task_counters()[[2L]] == 0L, 10), label = what)
    y <- runif(1e6)
    expect_identical(mirai(sum(y), y = y, .timeout = 10000)[], sum(y), label = what)
    expect_identical(mirai(Sys.getpid())[], pid, label = what)
    daemons(0)
    expect_true(wait_until(function() reaped(pid), 10), label = what)
  }
})

test_that("frames of large tasks leave the host's memory once done, however many piled up", {
  skip_on_cran()
  skip_if_not(file.exists("/proc/self/status"))
  # A slow daemon: the 10 MB frames wait in the host, 300 MB at the peak.
  # glibc serves them from its heap after the first (its mmap threshold
  # rises to the size of a freed mapped block) and would keep that heap;
  # the host hands it back once the burst is over.
  daemons(1, dispatcher = FALSE)
  on.exit(daemons(0))
  x <- runif(1.25e6)
  expect_identical(mirai(length(x), x = x)[], 1250000L)
  invisible(gc())
  start <- vm_rss()
  for (round in 1:2) {
    ms <- lapply(1:30, function(i) mirai({ Sys.sleep(0.05); length(x) }, x = x, .timeout = 20000))
    expect_identical(unique(unlist(collect_mirai(ms))), 1250000L)
    rm(ms)
    invisible(gc())
    expect_lt(vm_rss() - start, 50, label = sprintf("MB over the start after round %d", round))
  }
})
