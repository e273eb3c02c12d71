# Memory backpressure: daemons(memory =), try_mirai(), status()$memory.
# x below serializes to about 0.6 MB, so two queued copies pass a 1 MB cap.

x06 <- function() runif(75000)

# Occupies the profile's one daemon until `gate` exists; waits until it runs.
occupy <- function(gate) {
  m <- mirai({ while (!file.exists(gate)) Sys.sleep(0.02); TRUE }, gate = gate)
  expect_true(wait_until(function() status()$mirai[["executing"]] == 1L, 10))
  m
}

test_that("try_mirai returns NULL at the cap; queued tasks still resolve", {
  daemons(1, memory = 1, seed = 7)
  on.exit(daemons(0))
  gate <- tempfile()
  busy <- occupy(gate)
  x <- x06()
  ms <- lapply(1:4, function(i) try_mirai(sum(x) + i, x = x, i = i))
  expect_true(is_mirai(ms[[1L]]))
  expect_true(is_mirai(ms[[2L]]))
  expect_null(ms[[3L]])
  expect_null(ms[[4L]])
  expect_identical(status()$mirai[["awaiting"]], 2L)
  # A declined try_mirai() leaves the per-mirai RNG stream where it was.
  stream <- nextget("stream")
  expect_null(expect_invisible(try_mirai(runif(1))))
  expect_identical(nextget("stream"), stream)
  mem <- status()$memory
  expect_named(mem, c("used", "peak", "capacity"))
  expect_gt(mem[["used"]], 1.2)
  expect_lt(mem[["used"]], 1.21)
  expect_gte(mem[["peak"]], mem[["used"]])
  expect_identical(mem[["capacity"]], 1)
  file.create(gate)
  expect_true(busy[])
  expect_identical(ms[[1L]][], sum(x) + 1)
  expect_identical(ms[[2L]][], sum(x) + 2)
  mem2 <- status()$memory
  expect_identical(mem2[["used"]], 0)
  expect_identical(mem2[["peak"]], mem[["peak"]])
  # Room again: it behaves as mirai(), and moves the stream on.
  m <- try_mirai(sum(x), x = x)
  expect_identical(m[], sum(x))
  expect_false(identical(nextget("stream"), stream))
})

test_that("queued bytes are freed by cancellation and timeouts", {
  daemons(1, memory = 1)
  on.exit(daemons(0))
  gate <- tempfile()
  busy <- occupy(gate)
  x <- x06()
  a <- try_mirai(sum(x), x = x)
  b <- try_mirai(sum(x), x = x, .timeout = 1000)
  expect_null(try_mirai(1))
  expect_true(stop_mirai(a))
  # b still waits: 0.6 MB is below the cap.
  expect_lt(status()$memory[["used"]], 0.61)
  expect_gt(status()$memory[["used"]], 0.6)
  expect_identical(b[], structure(5L, class = c("errorValue", "try-error")))
  expect_identical(status()$memory[["used"]], 0)
  expect_gt(status()$memory[["peak"]], 1.2)
  file.create(gate)
  expect_true(busy[])
})

test_that("mirai() blocks at the cap until the queue drains", {
  daemons(1, memory = 1)
  on.exit(daemons(0))
  busy <- mirai({ Sys.sleep(1.5); Sys.time() })
  expect_true(wait_until(function() status()$mirai[["executing"]] == 1L, 10))
  x <- x06()
  a <- mirai(sum(x), x = x)
  b <- mirai(sum(x), x = x)
  t0 <- Sys.time()
  m <- mirai(sum(x) * 2, x = x)
  returned <- Sys.time()
  # It returned only once the busy task was done and `a` left the queue.
  expect_gt(as.numeric(difftime(returned, t0, units = "secs")), 0.5)
  expect_true(returned >= busy[])
  expect_identical(a[], sum(x))
  expect_identical(b[], sum(x))
  expect_identical(m[], sum(x) * 2)
  expect_identical(status()$memory[["used"]], 0)
})

test_that("a blocked mirai() can be interrupted and leaves the session usable", {
  skip_if_not_installed("processx")
  out <- interrupt_child(c(
    "library(mirai)",
    "daemons(1, memory = 1)",
    "busy <- mirai(Sys.sleep(4))",
    "while (status()$mirai[['executing']] < 1L) Sys.sleep(0.02)",
    "x <- runif(75000)",
    "a <- mirai(sum(x), x = x); b <- mirai(sum(x), x = x)",
    "cat('blocking\\n')",
    "r <- tryCatch({ mirai(sum(x), x = x); 'returned' }, interrupt = function(e) 'interrupted')",
    "cat(r, '\\n')",
    # The interrupted task was never queued: still only a and b wait.
    "cat('usable', 1 + 1 == 2, is.null(try_mirai(1)), status()$mirai[['awaiting']], '\\n')",
    "cat('resolved', a[] == sum(x), b[] == sum(x), mirai(2)[], '\\n')",
    "daemons(0)"
  ), ready = "blocking", done = "resolved")
  expect_match(out, "interrupted")
  expect_match(out, "usable TRUE TRUE 2")
  expect_match(out, "resolved TRUE TRUE 2")
})

test_that("no cap: status()$memory shows NA capacity, try_mirai() never declines", {
  for (memory in list(NULL, 0, -1, NA, NA_real_, Inf)) {
    daemons(1, memory = memory)
    mem <- status()$memory
    expect_identical(mem, c(used = 0, peak = 0, capacity = NA_real_))
    expect_identical(try_mirai(1 + 1)[], 2)
    daemons(0)
  }
  daemons(1, dispatcher = FALSE)
  on.exit(daemons(0))
  expect_null(status()$memory)
  expect_identical(try_mirai(1 + 1)[], 2)
})

test_that("memory argument errors", {
  for (bad in list("1", c(1, 2), TRUE, list(1), numeric()))
    expect_error(daemons(1, memory = bad), "`memory` must be a single number of megabytes, or NULL")
  expect_error(daemons(1, dispatcher = FALSE, memory = 1), "`memory` needs a dispatcher")
  expect_false(daemons_set())
})

test_that("try_mirai() is mirai() with no daemons set and in sync mode", {
  expect_false(daemons_set())
  expect_identical(try_mirai(x + 1, x = 1)[], 2)
  daemons(sync = TRUE)
  on.exit(daemons(0))
  expect_invisible(try_mirai(1))
  expect_identical(try_mirai(x + y, x = 1, .args = list(y = 2))$data, 3)
  q <- quote(a * 2)
  expect_identical(try_mirai(q, a = 3)[], 6)
  f <- function(...) try_mirai(y, ...)
  expect_identical(f(y = 5)[], 5)
  expect_identical(try_mirai(.expr = q, a = 4)[], 8)
  expect_error(try_mirai(), "missing expression")
  expect_error(try_mirai(1, 2), "must be named")
})

test_that("a mirai R has collected frees what it held natively", {
  # Each mirai's handle is freed by one shared R function (aio_free), not a
  # C finalizer per object: all of them must run, read or not, resolved or
  # not.
  skip_if_not(exists("C_mirai_test_live_aios", envir = asNamespace("mirai"), inherits = FALSE),
              "needs the test build (MIRAI_TEST_HOOKS=1): the count of live handles")
  live <- function() .Call(mirai:::C_mirai_test_live_aios)
  daemons(1, dispatcher = FALSE)
  on.exit(daemons(0))
  invisible(gc())
  before <- live()
  ms <- lapply(1:2000, function(i) mirai(i, i = i))
  expect_gte(live() - before, 2000)
  read <- vapply(ms[1:1000], function(m) m[], numeric(1))
  expect_identical(read, as.numeric(1:1000))
  rm(ms)
  invisible(gc()); invisible(gc())
  expect_true(wait_until(function() { invisible(gc()); live() <= before }, 10))
})
