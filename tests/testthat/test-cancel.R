# Cancellation: stop_mirai() and .timeout with a dispatcher reach the daemon.

marker <- function() tempfile("mirai-marker-")

# Waits for m to resolve; FALSE if it has not within `secs` (a guard against
# hanging, well short of the 30 s tasks below that a failed stop would leave
# running).
resolves <- function(m, secs = 20) wait_until(function() !unresolved(m), secs)

test_that("stop_mirai interrupts a running task on its daemon, which stays usable", {
  daemons(1)
  on.exit(daemons(0))
  pid <- mirai(Sys.getpid())[]
  f <- marker()
  m <- mirai({ Sys.sleep(30); writeLines("ran", f) }, f = f)
  expect_true(wait_until(function() info()[["executing"]] == 1L))
  expect_true(stop_mirai(m))
  expect_identical(as.integer(m$data), 20L)
  expect_true(is_error_value(m$data))
  # The same daemon answers the next task, and the stopped one never wrote
  # its file: its 30 s sleep was interrupted, not waited out (a daemon runs
  # one task at a time).
  m2 <- mirai(Sys.getpid())
  expect_true(resolves(m2))
  expect_identical(m2$data, pid)
  expect_false(file.exists(f))
  expect_identical(info()[["cumulative"]], 1L)
})

test_that(".timeout resolves to 5 and, with a dispatcher, stops the task on the daemon", {
  daemons(1)
  on.exit(daemons(0))
  pid <- mirai(Sys.getpid())[]
  f <- marker()
  m <- mirai({ Sys.sleep(30); writeLines("ran", f) }, f = f, .timeout = 200)
  expect_true(resolves(m))
  expect_identical(as.integer(m$data), 5L)
  # Stopped on the daemon too: it answers the next task (it runs one at a
  # time) and the timed-out task never wrote its file.
  m2 <- mirai(Sys.getpid())
  expect_true(resolves(m2))
  expect_identical(m2$data, pid)
  expect_false(file.exists(f))
})

test_that("a queued task that is stopped never runs", {
  daemons(1)
  on.exit(daemons(0))
  f <- marker()
  m1 <- mirai({ Sys.sleep(0.5); 1 })
  m2 <- mirai(writeLines("ran", f), f = f)
  expect_true(stop_mirai(m2))
  expect_identical(m1[], 1)
  expect_identical(as.integer(m2[]), 20L)
  expect_identical(mirai(2)[], 2)
  expect_false(file.exists(f))
  expect_identical(info()[["awaiting"]], 0L)
})

test_that("rapid submit-and-cancel never takes a daemon down", {
  daemons(1)
  on.exit(daemons(0))
  pid <- mirai(Sys.getpid())[]
  ms <- lapply(1:60, function(i) {
    m <- mirai(Sys.sleep(i %% 3 / 100), i = i)
    if (i %% 2) Sys.sleep(0.002)
    stop_mirai(m)
    m
  })
  # Each is either stopped (20) or had already finished (Sys.sleep's NULL).
  vals <- lapply(ms, `[`)
  expect_true(all(vapply(vals, function(v) is.null(v) || identical(as.integer(v), 20L), logical(1L))))
  expect_gt(sum(vapply(vals, is_error_value, logical(1L))), 10L)
  expect_identical(mirai(Sys.getpid())[], pid)
  expect_identical(info()[["connections"]], 1L)
  expect_identical(info()[["cumulative"]], 1L)
})

test_that("a cancelled mirai inside a longer queue does not hold up the rest", {
  daemons(2)
  on.exit(daemons(0))
  long <- mirai({ Sys.sleep(30); "long" })
  rest <- lapply(1:6, function(i) mirai(i * 10, i = i))
  expect_true(stop_mirai(long))
  expect_identical(unclass(long$data), 20L)
  expect_true(all(vapply(rest, resolves, logical(1L))))
  expect_identical(unlist(collect_mirai(rest)), (1:6) * 10)
  # Nothing is left running: the cancelled task no longer holds a daemon.
  expect_true(wait_until(function() info()[["executing"]] == 0L))
  expect_identical(info()[["awaiting"]], 0L)
})

test_that("without a dispatcher stop_mirai resolves locally and returns FALSE", {
  daemons(1, dispatcher = FALSE)
  on.exit(daemons(0))
  m <- mirai({ Sys.sleep(0.5); "late" })
  expect_false(stop_mirai(m))
  expect_identical(as.integer(m$data), 20L)
  expect_output(print(m$data), "20 \\| Operation canceled")
  expect_identical(mirai(3)[], 3)
  expect_false(stop_mirai(NULL))
})

test_that("with a dispatcher, maxtasks retires a daemon without losing its last result", {
  daemons(url = local_url())
  on.exit(daemons(0))
  launch_local(1, maxtasks = 2)
  ms <- lapply(1:3, function(i) mirai(i, i = i))
  expect_true(wait_until(function() !unresolved(ms[[2L]])))
  expect_true(wait_until(function() status()$connections == 0L))
  expect_true(unresolved(ms[[3L]]))
  launch_local(1)
  expect_identical(unlist(collect_mirai(ms)), 1:3)
  expect_identical(info()[["cumulative"]], 2L)
})

test_that("a task stopped the moment it is sent still frees its daemon at once", {
  daemons(1)
  on.exit(daemons(0))
  pid <- mirai(Sys.getpid())[]
  for (i in 1:5) {
    m <- mirai(Sys.sleep(30))
    expect_true(stop_mirai(m))
    expect_identical(unclass(m$data), 20L)
    # Answered by the same daemon, long before the 30 s task could end.
    m2 <- mirai(Sys.getpid())
    expect_true(resolves(m2))
    expect_identical(m2$data, pid)
  }
})

test_that("writing to a daemon that has just died is not an R error (no SIGPIPE)", {
  daemons(1, dispatcher = FALSE, heal = FALSE)
  on.exit(daemons(0))
  pid <- mirai(Sys.getpid())[]
  tools::pskill(pid, tools::SIGKILL)
  ms <- lapply(1:200, function(i) mirai(i, i = i))
  expect_true(wait_until(function() status()$connections == 0L))
  launch_local(1)
  # Tasks written to the dead daemon are lost (19); the rest wait for the
  # new one. Each resolves to one or the other, the later ones to values.
  res <- collect_mirai(ms)
  expect_length(res, 200L)
  lost <- vapply(res, function(v) identical(unclass(v), 19L), logical(1L))
  expect_identical(res[!lost], as.list((1:200)[!lost]))
  expect_false(any(lost[150:200]))
})
