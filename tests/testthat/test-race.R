elapsed <- function(expr) {
  t0 <- Sys.time()
  force(expr)
  as.numeric(difftime(Sys.time(), t0, units = "secs"))
}

test_that("race_mirai needs daemons; empty lists and resolved mirai return at once", {
  # The message launch_local() gives (the reference's).
  expect_error(race_mirai(list()), "daemons must be set to use this function")
  expect_error(race_mirai(list(), .compute = "norace"), "daemons must be set to use this function")
  daemons(sync = TRUE)
  on.exit(daemons(0))
  expect_identical(race_mirai(list()), 0L)
  # sync mirai are resolved on creation and have no aio
  expect_identical(race_mirai(list(mirai(1), mirai(2))), 1L)
  expect_identical(race_mirai(mirai(3)), 1L)
  expect_error(race_mirai(1:3), "`x` must be a list of mirai")
})

test_that("race_mirai returns the first to resolve, without waiting for the rest (dispatcher)", {
  daemons(2)
  on.exit(daemons(0))
  ms <- list(slow = mirai(Sys.sleep(3)), fast = mirai(Sys.sleep(0.3)))
  expect_true(unresolved(ms$fast))
  t <- elapsed(i <- race_mirai(ms))
  expect_identical(i, 2L)
  expect_false(unresolved(ms$fast))
  expect_true(unresolved(ms$slow))
  expect_lt(t, 2)
  # already resolved: immediate, lowest index first
  expect_identical(race_mirai(ms), 2L)
  done <- mirai(1)
  call_mirai(done)
  expect_identical(race_mirai(list(ms$slow, done, ms$fast)), 2L)
  expect_true(stop_mirai(ms$slow))
  expect_identical(unclass(ms$slow$data), 20L)
  expect_identical(race_mirai(list(ms$slow)), 1L)
})

test_that("repeated races give completion order, also for a mirai_map (no dispatcher)", {
  daemons(3, dispatcher = FALSE)
  on.exit(daemons(0))
  mp <- mirai_map(c(a = 1.5, b = 0.1, c = 0.8), function(s) { Sys.sleep(s); s })
  # as.list(): the elements as mirai (a map makes them on request)
  ms <- as.list(mp)
  order <- character()
  while (length(ms)) {
    i <- race_mirai(ms)
    order <- c(order, names(ms)[i])
    ms <- ms[-i]
  }
  expect_identical(order, c("b", "c", "a"))
  expect_identical(race_mirai(mp), 1L)
})

test_that("race_mirai waits without using the CPU", {
  daemons(1)
  on.exit(daemons(0))
  t0 <- Sys.time()
  m <- mirai({ Sys.sleep(1); Sys.time() })
  cpu <- system.time(expect_identical(race_mirai(list(m)), 1L))
  # It returned because m resolved, a second after it was sent (however
  # long this session took to get to the race on a loaded machine).
  expect_false(unresolved(m))
  expect_gte(as.double(m$data - t0, units = "secs"), 0.95)
  expect_gte(as.double(Sys.time() - t0, units = "secs"), 0.95)
  # Blocked, not polling, for whatever part of that second it waited.
  expect_lt(cpu[["user.self"]] + cpu[["sys.self"]], 0.25)
})

test_that("race_mirai across two compute profiles", {
  daemons(1, .compute = "race_a")
  daemons(1, dispatcher = FALSE, .compute = "race_b")
  on.exit({ daemons(0, .compute = "race_a"); daemons(0, .compute = "race_b") })
  ms <- list(mirai(Sys.sleep(3), .compute = "race_a"), mirai(Sys.sleep(0.3), .compute = "race_b"))
  t <- elapsed(i <- race_mirai(ms, .compute = "race_a"))
  expect_identical(i, 2L)
  expect_lt(t, 2)
  expect_true(unresolved(ms[[1L]]))
  expect_true(stop_mirai(ms[[1L]]))
})

test_that("a user interrupt ends the wait and leaves the session usable", {
  skip_on_os("windows")
  daemons(2)
  on.exit(daemons(0))
  m <- mirai(Sys.sleep(10))
  system(sprintf("sleep 0.5 && kill -INT %d", Sys.getpid()), wait = FALSE)
  t <- elapsed(res <- tryCatch(race_mirai(list(m)), interrupt = function(e) "interrupted"))
  expect_identical(res, "interrupted")
  expect_lt(t, 5)
  expect_true(unresolved(m))
  # the other daemon is free: the session and the profile still work
  expect_identical(race_mirai(list(m, mirai(1 + 1))), 2L)
  expect_true(stop_mirai(m))
  expect_identical(unclass(m$data), 20L)
  expect_identical(race_mirai(list(m)), 1L)
})
