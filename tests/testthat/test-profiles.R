current <- function() get("current", envir = mirai:::.)

test_that("with_daemons evaluates with the profile current, then restores it", {
  daemons(1, dispatcher = FALSE, .compute = "wd")
  on.exit(daemons(0, .compute = "wd"))
  expect_identical(current(), "default")
  expect_false(daemons_set())
  res <- with_daemons("wd", {
    list(current = current(), set = daemons_set(), pid = mirai(Sys.getpid())[], n = status()$connections)
  })
  expect_identical(res$current, "wd")
  expect_true(res$set)
  expect_identical(res$n, 1L)
  expect_false(res$pid == Sys.getpid())
  expect_identical(current(), "default")
  # mirai_map and race_mirai follow the current profile too
  expect_identical(with_daemons("wd", mirai_map(1:2, function(x) x * 3)[.flat]), c(3, 6))
  expect_identical(with_daemons("wd", race_mirai(list(mirai(1)))), 1L)
  # restored after an error
  expect_error(with_daemons("wd", stop("inner failure")), "inner failure")
  expect_identical(current(), "default")
  # nesting restores each level
  daemons(sync = TRUE, .compute = "wd2")
  on.exit(daemons(0, .compute = "wd2"), add = TRUE)
  inner <- with_daemons("wd", c(current(), with_daemons("wd2", current()), current()))
  expect_identical(inner, c("wd", "wd2", "wd"))
  expect_identical(current(), "default")
})

test_that("with_daemons and local_daemons need an existing profile", {
  expect_error(with_daemons("nonexistent", 1), "the 'nonexistent' compute profile does not exist")
  expect_error(local_daemons("nonexistent"), "the 'nonexistent' compute profile does not exist")
  expect_error(with_daemons(1, 1), "`.compute` must be a character string")
  expect_identical(current(), "default")
})

test_that("local_daemons lasts until the frame exits, also on error", {
  daemons(sync = TRUE, .compute = "ld")
  on.exit(daemons(0, .compute = "ld"))
  f <- function(fail = FALSE) {
    prev <- local_daemons("ld")
    if (fail) stop("failed in f")
    c(prev, current(), nextget("compute", .compute = NULL))
  }
  expect_identical(f(), c("default", "ld", "ld"))
  expect_identical(current(), "default")
  expect_error(f(TRUE), "failed in f")
  expect_identical(current(), "default")
  # a frame given explicitly
  g <- function() {
    h <- function(env) local_daemons("ld", frame = env)
    h(environment())
    first <- current()
    c(first, current())
  }
  expect_identical(g(), c("ld", "ld"))
  expect_identical(current(), "default")
})

test_that("with(daemons(), expr) uses then resets the profile", {
  expect_identical(current(), "default")
  res <- with(daemons(1, .compute = "wm"), {
    c(current(), mirai(paste("ok", 1))[], daemons_set())
  })
  expect_identical(res, c("wm", "ok 1", "TRUE"))
  expect_false(daemons_set(.compute = "wm"))
  expect_identical(current(), "default")
  # after an error too
  expect_error(with(daemons(sync = TRUE, .compute = "wm"), stop("with failed")), "with failed")
  expect_false(daemons_set(.compute = "wm"))
  expect_identical(current(), "default")
  # the default profile works the same way
  expect_identical(with(daemons(sync = TRUE), mirai_map(1:2, function(x) x + 1L)[.flat]), 2:3)
  expect_false(daemons_set())
})
