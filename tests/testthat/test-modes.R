test_that("ephemeral mirai runs in a fresh process when no daemons are set", {
  expect_false(daemons_set())
  m <- mirai(Sys.getpid())
  pid <- m[]
  expect_true(is.integer(pid))
  expect_false(pid == Sys.getpid())
  expect_true(wait_until(function() !pid_alive(pid), 5))
  e <- mirai(stop("eph"))[]
  expect_true(is_mirai_error(e))
  expect_identical(conditionMessage(e), "eph")
})

test_that("sync mode evaluates in this process and keeps globals per profile", {
  daemons(sync = TRUE)
  on.exit(daemons(0))
  expect_identical(status()$connections, 0L)
  expect_match(status()$daemons, "^inproc://")
  m <- mirai(Sys.getpid())
  expect_identical(m$data, Sys.getpid())
  expect_false(unresolved(m))
  expect_true(mirai(on_daemon())[])
  expect_false(on_daemon())
  expect_identical(mirai(x, x = 5)$data, 5)
  expect_identical(mirai(x * 2)[], 10)
  expect_false(exists("x", envir = globalenv(), inherits = FALSE))
  expect_error(launch_local(1), "synchronous compute profiles")
})

test_that("compute profiles are independent", {
  daemons(1, dispatcher = FALSE, .compute = "a")
  daemons(sync = TRUE, .compute = "b")
  on.exit({ daemons(0, .compute = "a"); daemons(0, .compute = "b") })
  expect_false(daemons_set())
  expect_true(daemons_set(.compute = "a"))
  pa <- mirai(Sys.getpid(), .compute = "a")[]
  pb <- mirai(Sys.getpid(), .compute = "b")[]
  expect_false(pa == Sys.getpid())
  expect_identical(pb, Sys.getpid())
})

test_that("waiting is interruptible and leaves the session usable", {
  skip_if_not_installed("processx")
  out <- interrupt_child(c(
    "library(mirai)",
    "daemons(1, dispatcher = FALSE)",
    "m <- mirai(Sys.sleep(30))",
    "cat('waiting\\n')",
    "r <- tryCatch(m[], interrupt = function(e) 'interrupted')",
    "cat(r, '\\n')",
    "cat('usable', 1 + 1 == 2, unresolved(m), '\\n')"
  ), ready = "waiting", done = "usable", timeout = 10)
  expect_match(out, "interrupted")
  expect_match(out, "usable TRUE TRUE")
})

test_that("large payloads round trip", {
  daemons(1, dispatcher = FALSE)
  on.exit(daemons(0))
  x <- runif(5e6)
  expect_identical(mirai(x, x = x)[], x)
})

test_that("a 2.2 GB vector round trips (objects over 2 GiB)", {
  skip_on_cran() # about 50 s and 16 GB of memory
  mi <- if (file.exists("/proc/meminfo")) grep("^MemAvailable:", readLines("/proc/meminfo"), value = TRUE) else character()
  if (length(mi) != 1L) skip("cannot read MemAvailable from /proc/meminfo")
  avail <- as.numeric(sub("[^0-9]*([0-9]+).*", "\\1", mi)) / 1024^2
  if (avail < 16) skip(sprintf("needs 16 GB of free memory, this machine has %.1f GB", avail))
  daemons(1, dispatcher = FALSE)
  on.exit(daemons(0))
  # Past 2^31 bytes (2.147e9) by enough to cross every 32-bit length, and no
  # further: each GB costs this test some 20 s of a loaded CI machine.
  n <- 2.2e9
  x <- raw(n)
  x[c(1, n)] <- as.raw(c(7, 9))
  res <- mirai(list(length(x), x[c(1, length(x))]), x = x)[]
  rm(x); gc()
  expect_identical(res, list(n, as.raw(c(7, 9))))
  y <- mirai({ y <- raw(n); y[n] <- as.raw(5); y }, n = n)[]
  expect_identical(length(y), n)
  expect_identical(y[n], as.raw(5))
})

# The stack trace every mode must give: from the call that signalled the
# condition, innermost first, with no frame of mirai's own.
expect_task_traces <- function() {
  g <- function(x) stop("inner")
  expect_identical(mirai(stop("boom"))[]$stack.trace, list(quote(stop("boom"))))
  expect_identical(mirai(g(1), g = g)[]$stack.trace, list(quote(stop("inner")), quote(g(1))))
  # A condition object (signalled through signalCondition, not R's C code).
  cnd <- structure(class = c("myError", "error", "condition"), list(message = "m", call = NULL))
  expect_identical(mirai(stop(cnd), cnd = cnd)[]$stack.trace, list(quote(stop(cnd))))
  # An error raised by a builtin, which has no frame of its own.
  expect_identical(mirai(sqrt("a"))[]$stack.trace, list(quote(sqrt("a"))))
  f <- function() sqrt("a")
  expect_identical(mirai(f(), f = f)[]$stack.trace, list(quote(sqrt("a")), quote(f())))
  expect_identical(mirai(stop("x", call. = FALSE))[]$stack.trace,
                   list(quote(stop("x", call. = FALSE))))
  # With on.exit() at the top (evaluated within eval(), whose frames are
  # mirai's): the same traces.
  expect_identical(mirai({ on.exit(NULL); stop("boom") })[]$stack.trace, list(quote(stop("boom"))))
  expect_identical(mirai({ on.exit(NULL); g(1) }, g = g)[]$stack.trace,
                   list(quote(stop("inner")), quote(g(1))))
  expect_identical(mirai({ on.exit(NULL); stop(cnd) }, cnd = cnd)[]$stack.trace, list(quote(stop(cnd))))
  expect_identical(mirai({ on.exit(NULL); f() }, f = f)[]$stack.trace, list(quote(sqrt("a")), quote(f())))
  # rlang's custom conditions: rlang's own frames down to abort(), then the
  # caller; nothing past the task's expression.
  h <- function() rlang::abort("rl", class = "my_rlang")
  e <- mirai(h(), h = h)[]
  expect_identical(e$stack.trace, mirai({ on.exit(NULL); h() }, h = h)[]$stack.trace)
  expect_identical(e$condition.class, c("my_rlang", "rlang_error", "error", "condition"))
  tr <- e$stack.trace
  n <- length(tr)
  expect_identical(tr[n - 1:0], list(quote(rlang::abort("rl", class = "my_rlang")), quote(h())))
  ours <- c("eval", "eval_task", "eval_mirai", "._mirai_eval_.", "tryCatch", "withCallingHandlers",
            ".handleSimpleError", "daemon")
  heads <- vapply(tr, function(cl) paste(deparse(cl[[1L]]), collapse = ""), character(1L))
  expect_false(any(heads %in% ours))
  # rlang signals the condition object itself (its version decides how).
  expect_true(heads[[1L]] %in% c("signalCondition", "stop"))
}

test_that("stack.trace starts at the signalling call, without mirai's frames (dispatcher)", {
  skip_if_not_installed("rlang")
  daemons(1)
  on.exit(daemons(0))
  expect_task_traces()
})

test_that("stack.trace starts at the signalling call, without mirai's frames (no dispatcher)", {
  skip_if_not_installed("rlang")
  daemons(1, dispatcher = FALSE)
  on.exit(daemons(0))
  expect_task_traces()
})

test_that("stack.trace starts at the signalling call, without mirai's frames (ephemeral, sync)", {
  skip_if_not_installed("rlang")
  expect_false(daemons_set())
  expect_task_traces()
  daemons(sync = TRUE)
  on.exit(daemons(0))
  expect_task_traces()
  # A user's own eval() stays in the trace; a nested sync mirai's trace is
  # its own.
  expect_identical(mirai(eval(quote(stop("x"))))[]$stack.trace,
                   list(quote(stop("x")), quote(eval(quote(stop("x")))),
                        quote(eval(quote(stop("x"))))))
  expect_identical(mirai(mirai(stop("in"))[]$stack.trace)[], list(quote(stop("in"))))
})

test_that("a C stack overflow in a task is an error, not an interrupt, in every mode", {
  # R runs no calling handler while it recovers from a C stack overflow.
  deep <- quote({ options(expressions = 5e5); f <- function(n) f(n + 1); f(1) })
  check <- function() {
    for (i in 1:2) {
      v <- mirai(eval(deep), deep = deep)[]
      expect_s3_class(v, "miraiError")
      expect_false(is_mirai_interrupt(v))
      expect_match(attr(v, "message"), "C stack usage", fixed = TRUE)
    }
    # A real interrupt still reads as one afterwards, also after an error
    # the task handled itself.
    expect_true(is_mirai_interrupt(mirai(rlang::interrupt())[]))
    expect_true(is_mirai_interrupt(mirai({ try(stop("handled"), silent = TRUE); rlang::interrupt() })[]))
    expect_identical(mirai(1 + 1)[], 2)
  }
  skip_if_not_installed("rlang")
  daemons(1)
  check()
  daemons(0)
  daemons(1, dispatcher = FALSE)
  check()
  daemons(0)
  daemons(sync = TRUE)
  check()
  daemons(0)
})

test_that("a condition whose message is not one string still makes a one-string miraiError", {
  cnd <- function(msg) structure(class = c("error", "condition"), list(message = msg, call = NULL))
  check <- function() {
    v <- mirai(stop(cnd(NULL)), cnd = cnd)[]
    expect_s3_class(v, "miraiError")
    expect_length(v, 1L)
    expect_identical(v$message, "")
    v <- mirai(stop(cnd(c("a", "b"))), cnd = cnd)[]
    expect_length(v, 1L)
    expect_identical(v$message, "a\nb")
    expect_identical(mirai(stop(cnd(1:2)), cnd = cnd)[]$message, "1\n2")
  }
  daemons(1)
  check()
  daemons(0)
  daemons(sync = TRUE)
  check()
  daemons(0)
})
