test_that("mirai evaluates with ... globals and .args locals (no dispatcher)", {
  daemons(2, dispatcher = FALSE)
  on.exit(daemons(0))
  m <- mirai(x + y, x = 1, .args = list(y = 2))
  expect_s3_class(m, "mirai")
  expect_identical(m[], 3)
  expect_identical(m$data, 3)
  # `...` go to the daemon's global env, `.args` stay local
  m <- mirai(c(exists("a", envir = globalenv(), inherits = FALSE),
               exists("b", envir = globalenv(), inherits = FALSE)),
             a = 1, .args = list(b = 2))
  expect_identical(m[], c(TRUE, FALSE))
  env <- new.env(); env$z <- 5
  expect_identical(mirai(z * 2, env)[], 10)
  expect_identical(mirai(z * 3, .args = env)[], 15)
  q <- quote(1 + 41)
  expect_identical(mirai(.expr = q)[], 42)
  pids <- unique(unlist(collect_mirai(lapply(1:6, function(i) mirai(Sys.getpid())))))
  expect_length(pids, 2L)
  expect_false(Sys.getpid() %in% pids)
})

test_that("mirai with dispatcher works and counts", {
  daemons(2)
  on.exit(daemons(0))
  res <- collect_mirai(lapply(1:20, function(i) mirai(i * 2L, i = i)))
  expect_identical(unlist(res), (1:20) * 2L)
  i <- info()
  expect_identical(names(i), c("connections", "cumulative", "awaiting", "executing", "completed"))
  expect_identical(i[["connections"]], 2L)
  expect_identical(i[["completed"]], 20L)
  expect_identical(status()$mirai[["completed"]], 20L)
})

test_that("argument errors are clear", {
  expect_error(mirai(), "missing expression, perhaps wrap in \\{\\}\\?")
  expect_error(mirai(1, 2), "all `...` arguments must be named, unless supplying an environment")
  expect_error(mirai(1, .args = list(2)), "all items in `.args` must be named, unless supplying an environment")
  expect_error(mirai(1, .timeout = "a"), "`.timeout` must be a non-negative number of milliseconds, or NULL")
  expect_error(mirai(1, .compute = 1), "`.compute` must be a character string naming a compute profile, or NULL")
})

# With daemons set, mirai() submits its common case natively and leaves
# everything else to its R code: both must check alike, and evaluate `...`
# and `.args` once whichever path runs.
test_that("arguments are checked and evaluated once with daemons set, whichever path submits", {
  daemons(1, dispatcher = FALSE)
  on.exit(daemons(0))
  expect_error(mirai(1, 2), "all `...` arguments must be named, unless supplying an environment")
  expect_error(mirai(1, x = 1, 2), "all `...` arguments must be named")
  expect_error(mirai(1, .args = list(2)), "all items in `.args` must be named, unless supplying an environment")
  expect_error(mirai(1, .timeout = "a"), "`.timeout` must be a non-negative number of milliseconds, or NULL")
  expect_error(mirai(1, .timeout = -1), "`.timeout` must be a non-negative number")
  expect_error(mirai(1, .timeout = NA_integer_), "`.timeout` must be a non-negative number")
  expect_error(mirai(1, .retry = -1), "`.retry` must be a non-negative whole number")
  expect_error(mirai(1, .compute = NA_character_), "`.compute` must be a character string")
  expect_error(mirai(1, .compute = "nowhere"), "nowhere")
  n <- 0L
  count <- function(v) { n <<- n + 1L; v }
  # Native path, then R's (.retry = 1 and a classed .args are R's).
  expect_identical(mirai(x + y, x = count(1), .args = list(y = count(2)))[], 3)
  expect_identical(mirai(x + y, x = count(1), .args = list(y = count(2)), .retry = 1)[], 3)
  expect_identical(mirai(x + y, x = count(1), .args = data.frame(y = count(2)))[], 3)
  expect_identical(n, 6L)
  # Checked in order, each before the next is evaluated: the first wrong
  # argument is the one named, and those after it are not evaluated.
  expect_error(mirai(1, .args = list(1), .timeout = stop("T")), "all items in `.args` must be named")
  expect_error(mirai(1, 2, .args = stop("A")), "all `...` arguments must be named")
  expect_error(mirai(1, .timeout = -1, .compute = stop("C")), "`.timeout` must be a non-negative number")
  expect_error(mirai(1, .args = list(1), .timeout = count(5), .compute = count("default")), "must be named")
  expect_identical(n, 6L)
  # An environment as `...` or `.args`, a whole-number timeout, `.retry`
  # as a double, a profile named: all give the same results.
  env <- new.env(); env$z <- 5
  expect_identical(mirai(z * 2, env)[], 10)
  expect_identical(mirai(z * 2, .args = env)[], 10)
  expect_identical(mirai(1L, .timeout = 5000L, .retry = 0, .compute = "default")[], 1L)
  expect_identical(unclass(mirai(Sys.sleep(5), .timeout = 50L)[]), 5L)
})

test_that("errors come back as miraiError with message, call, classes and trace", {
  daemons(1, dispatcher = FALSE)
  on.exit(daemons(0))
  f <- function(x) if (x > 0) stop("positive")
  m <- mirai(f(1), f = f)
  e <- m[]
  expect_true(is_mirai_error(e))
  expect_true(is_error_value(e))
  expect_false(is_mirai_interrupt(e))
  expect_s3_class(e, "try-error")
  expect_identical(e$message, "positive")
  expect_identical(conditionMessage(e), "positive")
  expect_identical(deparse(conditionCall(e)), "f(1)")
  expect_identical(e$condition.class, c("simpleError", "error", "condition"))
  expect_identical(e$stack.trace, list(quote(stop("positive")), quote(f(1))))
  expect_output(print(e), "'miraiError' chr Error in f\\(1\\): positive")
  e2 <- mirai(stop("boom"))[]
  expect_output(print(e2), "'miraiError' chr Error: boom")
  custom <- mirai(stop(structure(class = c("myError", "error", "condition"),
                                 list(message = "custom", call = NULL, extra = 42))))[]
  expect_identical(custom$extra, 42)
  expect_identical(custom$condition.class, c("myError", "error", "condition"))
  expect_true("extra" %in% utils::.DollarNames(custom, ""))
})

test_that("conditionCall() of a miraiError is the task's call that raised it, in every mode", {
  f <- function(x) stop("positive")
  check <- function(mode) {
    e <- mirai(f(1), f = f)[]
    expect_identical(conditionCall(e), quote(f(1)), label = mode)
    expect_identical(e$call, quote(f(1)), label = mode)
    # An error raised by R's C code names the builtin's call.
    expect_identical(conditionCall(mirai(log("a"))[]), quote(log("a")), label = mode)
    # An error at the top of the task has no call of the task's (as R's
    # own "Error: msg"): none of the daemon's internals show through.
    top <- mirai(stop("top"))[]
    expect_null(conditionCall(top), label = mode)
    expect_output(print(top), "'miraiError' chr Error: top", fixed = TRUE)
    expect_null(conditionCall(mirai(stop(simpleError("cond")))[]), label = mode)
  }
  check("ephemeral")
  daemons(1)
  check("dispatcher")
  daemons(1, dispatcher = FALSE)
  check("no dispatcher")
  daemons(sync = TRUE)
  check("sync")
  daemons(0)
})

test_that("unresolved, call_mirai, collect_mirai and printing", {
  daemons(1, dispatcher = FALSE)
  on.exit(daemons(0))
  m <- mirai({ Sys.sleep(0.5); "done" })
  expect_true(unresolved(m))
  expect_true(unresolved(m$data))
  expect_output(print(m$data), "'unresolved' logi NA")
  expect_output(print(m), "< mirai \\[\\] >")
  expect_identical(call_mirai(m), m)
  expect_false(unresolved(m))
  expect_output(print(m), "< mirai \\[\\$data\\] >")
  expect_identical(m$data, "done")
  expect_identical(collect_mirai(m), "done")
  ms <- list(a = mirai(1), b = mirai(2))
  expect_identical(call_mirai(ms), ms)
  expect_false(unresolved(ms))
  expect_identical(collect_mirai(ms), list(a = 1, b = 2))
  expect_true(is_mirai(m))
  expect_false(is_mirai(1))
  expect_false(unresolved(1))
})

test_that("a mirai is an environment whose value, read any way, is converted once and kept", {
  daemons(1, dispatcher = TRUE)
  on.exit(daemons(0))
  m <- mirai({ Sys.sleep(0.3); list(x = 1:3, e = new.env()) })
  expect_true(is.environment(m))
  expect_identical(class(m), c("mirai", "recvAio"))
  expect_true(bindingIsActive("data", m))
  expect_true(is.na(get("data", envir = m)))
  v <- m[]
  # The same object (not a second conversion of the reply) every time.
  expect_identical(m$data$e, v$e)
  expect_identical(get("data", envir = m)$e, v$e)
  expect_identical(collect_mirai(m)$e, v$e)
  expect_identical(v$x, 1:3)
  expect_false(unresolved(m))
  # Read first through $data, then through [].
  m2 <- mirai(new.env())
  while (unresolved(m2)) Sys.sleep(0.01)
  expect_identical(m2[], m2$data)
  # An error value is kept the same way.
  m3 <- mirai(stop("kept"))
  expect_s3_class(m3[], "miraiError")
  expect_identical(m3$data, m3[])
  # A map element's mirai, made after the map was collected, has its value.
  mp <- mirai_map(1:3, function(i) new.env())
  vals <- mp[]
  expect_identical(mp[[2]]$data, vals[[2]])
  expect_identical(mp[[2]][], vals[[2]])
  # ... and one made before: collected through the map, read through it.
  mp2 <- mirai_map(1:2, function(i) new.env())
  e1 <- mp2[[1]]
  vals2 <- mp2[]
  expect_identical(e1$data, vals2[[1]])
})

test_that("a mirai saved and read back says its handle is gone, however it is read", {
  daemons(1)
  on.exit(daemons(0))
  f <- tempfile(fileext = ".rds")
  on.exit(unlink(f), add = TRUE)
  m <- mirai(1)
  saveRDS(m, f)
  back <- readRDS(f)
  expect_identical(m[], 1)
  # Not R's "NULL value passed as symbol address" for $data.
  gone <- "`aio` is no longer valid \\(it was closed or saved and reloaded\\)"
  expect_error(back$data, gone)
  expect_error(back[], gone)
  expect_error(unresolved(back), gone)
})

test_that("a mirai in sync mode has its value as a plain binding", {
  daemons(sync = TRUE)
  on.exit(daemons(0))
  m <- mirai(1 + 1)
  expect_false(bindingIsActive("data", m))
  expect_identical(m$data, 2)
  expect_identical(m[], 2)
  expect_false(unresolved(m))
})

test_that(".timeout resolves to errorValue 5", {
  daemons(1, dispatcher = FALSE)
  on.exit(daemons(0))
  # The task would return NULL after 3 s: 5 means the timeout ended the wait.
  m <- mirai(Sys.sleep(3), .timeout = 200)
  v <- m[]
  expect_true(is_error_value(v))
  expect_identical(as.integer(v), 5L)
  expect_output(print(v), "'errorValue' int 5 \\| Timed out")
})

test_that("on_daemon is TRUE only on daemons", {
  expect_false(on_daemon())
  daemons(1, dispatcher = FALSE)
  on.exit(daemons(0))
  expect_true(mirai(mirai::on_daemon())[])
})

test_that("nextcode translates exit codes and validates input", {
  expect_identical(nextcode(0L), "0 | Daemon connection terminated")
  expect_identical(nextcode(1L), "1 | Daemon idletime limit reached")
  expect_identical(nextcode(2L), "2 | Daemon walltime limit reached")
  expect_identical(nextcode(3L), "3 | Daemon task limit reached")
  expect_error(nextcode("a"), "`xc` must be a single integer exit code")
})

test_that("a stack trace through code with source references has no repeated call", {
  daemons(1)
  on.exit(daemons(0))
  # The error's call, g(x), is on the stack with a srcref attached.
  f <- eval(parse(text = "function(x) {\n  g <- function(y) {\n    stop('bad ', y)\n  }\n  g(x)\n}",
                  keep.source = TRUE))
  e <- mirai(f("a"), f = f)[]
  expect_true(is_mirai_error(e))
  calls <- lapply(e$stack.trace, function(cl) { attr(cl, "srcref") <- NULL; cl })
  expect_identical(calls, list(quote(stop("bad ", y)), quote(g(x)), quote(f("a"))))
})

test_that("a mirai is read-only: assigning to it is ignored, as in the reference, with a warning", {
  daemons(1)
  on.exit(daemons(0))
  m <- mirai({ Sys.sleep(0.2); 1 })
  expect_warning(m$data <- 5, "cannot set `$data` of a mirai: a mirai is read-only", fixed = TRUE)
  expect_warning(m[["data"]] <- 5, "cannot set `$data` of a mirai", fixed = TRUE)
  expect_warning(m$other <- 5, "the assignment is ignored", fixed = TRUE)
  expect_identical(m[], 1)
  expect_warning(m$data <- 5, "read-only")
  expect_identical(m$data, 1)
  expect_false(exists("other", envir = m, inherits = FALSE))
  expect_true(is_mirai(m))
})

# on.exit() at the top of a task's expression: its code runs when the task
# ends, as with R's eval(), and before the task's value is sent. `check`
# runs in each mode; `f` is a file the exit code writes.
expect_task_on_exit <- function() {
  f <- tempfile()
  on.exit(unlink(f))
  wrote <- function() {
    x <- if (file.exists(f)) readLines(f, warn = FALSE) else character()
    unlink(f)
    x
  }
  # On success: the value is the expression's, and the exit code has run.
  expect_identical(mirai({ on.exit(cat("done", file = f)); 7L }, f = f)[], 7L)
  expect_identical(wrote(), "done")
  # add = TRUE appends, after = FALSE prepends, and without add the last
  # registration replaces the earlier ones.
  v <- mirai({
    on.exit(cat("a", file = f, append = TRUE))
    on.exit(cat("b", file = f, append = TRUE), add = TRUE)
    on.exit(cat("c", file = f, append = TRUE), add = TRUE, after = FALSE)
    "value"
  }, f = f)[]
  expect_identical(v, "value")
  expect_identical(wrote(), "cab")
  expect_identical(mirai({ on.exit(cat("x", file = f)); on.exit(cat("y", file = f)); 1 }, f = f)[], 1)
  expect_identical(wrote(), "y")
  # Named by base::, and with the task's own `eval` and `quote`, which
  # mirai's evaluation must not call.
  masked <- function(...) stop("masked")
  expect_identical(mirai({ base::on.exit(cat("b", file = f)); 2 }, f = f, eval = masked, quote = masked)[], 2)
  expect_identical(wrote(), "b")
  # On an error: the exit code has run when the error value arrives, and
  # the error value is the one the same error gives without on.exit().
  g <- function(x) stop("positive")
  e <- mirai({ on.exit(cat("cleaned", file = f)); g(1) }, f = f, g = g)[]
  expect_identical(wrote(), "cleaned")
  expect_identical(e, mirai(g(1), g = g)[])
  expect_identical(e$stack.trace, list(quote(stop("positive")), quote(g(1))))
  expect_identical(deparse(e$call), "g(1)")
  # An error at the top of the task has no call, as without on.exit().
  e <- mirai({ on.exit(cat("top", file = f)); stop("boom") }, f = f)[]
  expect_identical(wrote(), "top")
  expect_identical(e, mirai(stop("boom"))[])
  expect_null(e$call)
  expect_null(conditionCall(e))
  expect_identical(e$message, "boom")
  expect_identical(e$stack.trace, list(quote(stop("boom"))))
  e <- mirai({ on.exit(cat("top", file = f)); sqrt("a") }, f = f)[]
  expect_identical(wrote(), "top")
  expect_identical(e, mirai(sqrt("a"))[])
  # An error in the exit code itself is the task's error, as R's eval()
  # reports it: no call, the exit code's own trace.
  e <- mirai({ on.exit(stop("late")); 1 })[]
  expect_true(is_mirai_error(e))
  expect_identical(e$message, "late")
  expect_null(e$call)
  expect_identical(e$stack.trace, list(quote(stop("late"))))
}

test_that("on.exit() at the top of a task runs when it ends: value, error, order (dispatcher)", {
  daemons(1)
  on.exit(daemons(0))
  expect_task_on_exit()
})

test_that("on.exit() at the top of a task runs when it ends: value, error, order (no dispatcher, sync)", {
  daemons(1, dispatcher = FALSE)
  expect_task_on_exit()
  daemons(0)
  daemons(sync = TRUE)
  on.exit(daemons(0))
  expect_task_on_exit()
})

test_that("return() at the top of a task gives the task's value, as the reference's eval() does", {
  for (disp in c(TRUE, FALSE)) {
    daemons(1, dispatcher = disp)
    expect_identical(mirai(return(1))[], 1)
    expect_identical(mirai({ if (x > 0) return("early"); "late" }, x = 1)[], "early")
    expect_identical(mirai({ if (x > 0) return("early"); "late" }, x = -1)[], "late")
    # A return() inside a function of the task is that function's.
    expect_identical(mirai({ f <- function() return(2); f() + 1 })[], 3)
    # An error after it is unchanged: no call, the task's own trace.
    e <- mirai({ if (FALSE) return(1); stop("boom") })[]
    expect_s3_class(e, "miraiError")
    expect_null(e$call)
    expect_identical(conditionMessage(e), "boom")
    daemons(0)
  }
})

test_that("on.exit() at the top of a task runs when stop_mirai() interrupts it, before the next task", {
  daemons(1)
  on.exit(daemons(0))
  f <- tempfile()
  on.exit(unlink(f), add = TRUE)
  m <- mirai({ on.exit(cat("stopped", file = f)); writeLines("started", paste0(f, ".s")); Sys.sleep(30); 1 },
            f = f)
  # Cancel only once it runs (so the interrupt, not the queue, stops it).
  deadline <- Sys.time() + 10
  while (!file.exists(paste0(f, ".s")) && Sys.time() < deadline) Sys.sleep(0.02)
  unlink(paste0(f, ".s"))
  stop_mirai(m)
  expect_true(is_error_value(m[]))
  # The daemon's next task runs after the exit code.
  expect_identical(mirai(readLines(f, warn = FALSE), f = f)[], "stopped")
})

test_that("exit code registered without naming on.exit runs at the task's end, and leaks nothing (review)", {
  daemons(1)
  on.exit(daemons(0))
  # An alias of on.exit, and the primitive itself in a built call.
  out <- tempfile()
  on.exit(unlink(out), add = TRUE)
  oe <- on.exit
  expect_identical(mirai({ oe(writeLines("ran", out)); 1 }, oe = oe, out = out)[], 1)
  expect_true(file.exists(out))
  unlink(out)
  e <- as.call(list(as.name("{"), as.call(list(on.exit, quote(writeLines("ran", out)))), 2))
  expect_identical(mirai(e, out = out)[], 2)
  expect_true(file.exists(out))
  # An expression vector is evaluated, element by element, as by eval().
  p <- parse(text = "x <- 20; x + 1")
  expect_identical(mirai(p)[], 21)
  b <- quote({ x <- "no name here"; return(7) })
  expect_identical(mirai(b)[], 7)
  # withr's defer() and local_*(): what they undo does not leak into the
  # daemon's next task.
  skip_if_not_installed("withr")
  f <- tempfile()
  writeLines("x", f)
  on.exit(unlink(f), add = TRUE)
  expect_true(mirai({ withr::defer(unlink(f)); file.exists(f) }, f = f)[])
  expect_false(file.exists(f))
  wd <- mirai(getwd())[]
  expect_identical(mirai({ withr::local_dir(tempdir()); basename(getwd()) })[], basename(mirai(tempdir())[]))
  expect_identical(mirai(getwd())[], wd)
  expect_identical(mirai({ withr::local_envvar(MIRAI_T_FOO = "bar"); Sys.getenv("MIRAI_T_FOO") })[], "bar")
  expect_identical(mirai(Sys.getenv("MIRAI_T_FOO"))[], "")
})

test_that("collect_mirai() on a list reads mirai, keeps other elements as they are, whatever their class", {
  daemons(1, dispatcher = FALSE)
  on.exit(daemons(0))
  odd <- 1
  attr(odd, "class") <- NA_character_
  fake <- structure(list(), class = "miraiError")
  out <- collect_mirai(list(a = mirai(1L + 1L), b = odd, c = fake, d = NULL, e = 3))
  expect_identical(out, list(a = 2L, b = odd, c = fake, d = NULL, e = 3))
  # A subclass of mirai with its own `[` method keeps it.
  sub <- mirai(5L)
  class(sub) <- c("myMirai", class(sub))
  local({
    `[.myMirai` <- function(x, i) "own method"
    registerS3method("[", "myMirai", `[.myMirai`)
    expect_identical(collect_mirai(list(sub)), list("own method"))
  })
})
