# everywhere(): once on every connected daemon, with lasting effects, in
# both scheduling modes.

daemon_pids <- function(.compute = NULL) {
  sort(.Call(mirai:::C_mirai_host_children, mirai:::profile_of(.compute)$host, FALSE))
}

test_that("everywhere() needs daemons and checks its arguments", {
  expect_error(everywhere(1), "No daemons set")
  daemons(sync = TRUE)
  on.exit(daemons(0))
  expect_error(everywhere(), "missing expression")
  expect_error(everywhere(1, 2), "must be named")
  expect_error(everywhere(1, .args = list(2)), "must be named")
  expect_error(everywhere(1, .min = -1), "`.min` must be a non-negative number of daemons")
  expect_error(everywhere(1, .min = "a"), "`.min` must be a non-negative number of daemons")
})

for (disp in c(TRUE, FALSE)) {
  mode <- if (disp) "dispatcher" else "no dispatcher"

  test_that(sprintf("everywhere() runs once on each daemon (%s)", mode), {
    daemons(3, dispatcher = disp)
    on.exit(daemons(0))
    mp <- expect_invisible(everywhere(Sys.getpid()))
    expect_s3_class(mp, "mirai_map")
    expect_length(mp, 3L)
    pids <- unlist(mp[])
    expect_identical(sort(pids), daemon_pids())
    expect_identical(mp[.flat], pids)
    expect_identical(unname(info()[["connections"]]), 3L)
    if (disp) expect_identical(unname(info()[["awaiting"]]), 0L)
  })

  test_that(sprintf("what everywhere() sets persists through cleanup (%s)", mode), {
    daemons(3, dispatcher = disp)
    on.exit(daemons(0))
    set <- list(
      everywhere({}, x = 42),
      everywhere(y <<- a + 1, .args = list(a = 1)),
      everywhere(library(tools)),
      everywhere(options(mirai.test.everywhere = "kept"))
    )
    # Each ran once on each of the 3 daemons without error.
    for (mp in set) {
      res <- mp[]
      expect_length(res, 3L)
      expect_false(any(vapply(res, is_error_value, logical(1L))))
    }
    # Ordinary tasks in between run each daemon's cleanup many times over
    # and see the changes; what they set themselves is still cleaned up.
    seen <- mirai_map(1:12, function(i) {
      w <<- i
      c(x == 42, y == 2, "package:tools" %in% search(), identical(getOption("mirai.test.everywhere"), "kept"))
    })[]
    expect_identical(seen, rep(list(rep(TRUE, 4L)), 12L))
    state <- everywhere(list(x = x, y = y, tools = "package:tools" %in% search(),
                             opt = getOption("mirai.test.everywhere"), w = exists("w")))[]
    expect_length(state, 3L)
    for (s in state) expect_identical(s, list(x = 42, y = 2, tools = TRUE, opt = "kept", w = FALSE))
  })

  test_that(sprintf("everywhere() waits for busy daemons and reaches each once (%s)", mode), {
    daemons(3, dispatcher = disp)
    on.exit(daemons(0))
    long <- lapply(1:3, function(i) mirai({ Sys.sleep(0.6); Sys.getpid() }))
    queued <- lapply(1:3, function(i) mirai(list(pid = Sys.getpid(), start = Sys.time())))
    ew <- everywhere(list(pid = Sys.getpid(), at = Sys.time()))
    res <- ew[]
    pids <- vapply(res, `[[`, numeric(1L), "pid")
    expect_identical(sort(as.integer(pids)), daemon_pids())
    expect_identical(sort(unlist(collect_mirai(long))), daemon_pids())
    if (disp) {
      # Each daemon ran its everywhere() task before any FIFO task queued
      # earlier that it took afterwards.
      at <- setNames(lapply(res, `[[`, "at"), pids)
      for (q in collect_mirai(queued)) expect_true(q$start >= at[[as.character(q$pid)]])
    } else {
      q <- collect_mirai(queued)
      expect_length(q, 3L)
      expect_true(all(vapply(q, function(x) is.list(x) && x$pid %in% daemon_pids(), logical(1L))))
    }
  })

  test_that(sprintf("a daemon lost before its everywhere() task resolves it to errorValue 19 (%s)", mode), {
    daemons(2, dispatcher = disp)
    on.exit(daemons(0))
    m1 <- mirai({ Sys.sleep(0.8); tools::pskill(Sys.getpid(), tools::SIGKILL) })
    m2 <- mirai({ Sys.sleep(0.8); Sys.getpid() })
    res <- everywhere(Sys.getpid())[]
    expect_length(res, 2L)
    lost <- vapply(res, is_error_value, logical(1L))
    expect_identical(sum(lost), 1L)
    expect_identical(unclass(res[lost][[1L]]), 19L)
    expect_identical(res[!lost][[1L]], m2[])
    expect_identical(unclass(m1[]), 19L)
  })

  test_that(sprintf("everywhere() consumes no RNG stream of a seeded profile (%s)", mode), {
    daemons(2, dispatcher = disp, seed = 1)
    on.exit(daemons(0))
    s0 <- nextget("stream")
    ew <- everywhere(runif(1))[]
    expect_length(ew, 2L)
    expect_true(all(vapply(ew, is.double, logical(1L))))
    expect_identical(nextget("stream"), s0)
    with_ew <- mirai_map(1:4, function(i) rnorm(1))[.flat]
    # A stream per mirai: four different draws.
    expect_length(unique(with_ew), 4L)
    daemons(0)
    daemons(2, dispatcher = disp, seed = 1)
    without <- mirai_map(1:4, function(i) rnorm(1))[.flat]
    expect_identical(with_ew, without)
  })

  test_that(sprintf("everywhere(.min =) also reaches daemons that connect afterwards (%s)", mode), {
    daemons(url = local_url(), dispatcher = disp)
    on.exit(daemons(0))
    # None connected yet: it returns at once with two tasks for the next two
    # (no daemon connects until one is launched below: a call that waited
    # for them would never return).
    t0 <- Sys.time()
    mp <- everywhere(Sys.getpid(), .min = 2)
    expect_lt(as.numeric(difftime(Sys.time(), t0, units = "secs")), 10)
    expect_length(mp, 2L)
    expect_true(unresolved(mp))
    expect_identical(info()[["awaiting"]], if (disp) 2L else NA_integer_)
    launch_local(2)
    expect_identical(sort(unlist(mp[])), daemon_pids())
    # With enough daemons connected, .min adds nothing.
    expect_length(everywhere(1, .min = 1), 2L)
    # .min = 0 with none connected gives none.
    daemons(url = local_url(), dispatcher = disp)
    expect_length(everywhere(1, .min = 0), 0L)
  })
}

test_that("stop_mirai() withdraws everywhere() tasks still waiting for their daemon", {
  daemons(1)
  on.exit(daemons(0))
  long <- mirai({ Sys.sleep(0.5); 1 })
  ew <- everywhere(stop("never evaluated"))
  expect_identical(stop_mirai(ew), TRUE)
  expect_identical(unclass(ew[][[1L]]), 20L)
  expect_identical(long[], 1)
  expect_identical(mirai(2)[], 2)
  expect_identical(unname(info()[c("awaiting", "executing", "completed")]), c(0L, 0L, 2L))
})

test_that("everywhere() in sync mode evaluates once in this process", {
  daemons(sync = TRUE, seed = 3)
  on.exit(daemons(0))
  s0 <- nextget("stream")
  mp <- everywhere(Sys.getpid())
  expect_s3_class(mp, "mirai_map")
  expect_identical(mp[], list(Sys.getpid()))
  everywhere({}, z = 5)
  expect_identical(nextget("stream"), s0)
  expect_identical(mirai(z)[], 5)
  expect_false(exists("z", envir = globalenv(), inherits = FALSE))
})

test_that("everywhere() reaches the daemons of the profile given", {
  daemons(1, .compute = "ew_a")
  daemons(2, dispatcher = FALSE, .compute = "ew_b")
  on.exit({ daemons(0, .compute = "ew_a"); daemons(0, .compute = "ew_b") })
  expect_identical(sort(unlist(everywhere(Sys.getpid(), .compute = "ew_b")[])), daemon_pids("ew_b"))
  expect_identical(unlist(everywhere(Sys.getpid(), .compute = "ew_a")[]), daemon_pids("ew_a"))
})
