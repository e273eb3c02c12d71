# The errors a user sees: they name the user's call (never one of mirai's
# internals), are styled by cli where it is installed (plain otherwise),
# and say what to do.

# The condition `expr` signals (error or warning).
caught <- function(expr) tryCatch(expr, error = identity, warning = identity)

internal <- "named_list|abort|daemon_dots|check_|no_daemons|native_error|require_daemons|eval_task|\\.Call"

expect_names_call <- function(expr, call) {
  e <- caught(expr)
  expect_s3_class(e, "error")
  expect_identical(conditionCall(e), call)
  expect_false(grepl(internal, paste(deparse(conditionCall(e)), collapse = "")))
  invisible(e)
}

test_that("errors name the user's call, never an internal function", {
  expect_names_call(daemons("2"), quote(daemons("2")))
  expect_names_call(daemons(1, idletime = "1s"), quote(daemons(1, idletime = "1s")))
  # An object not found in `...` (it used to name named_list(...)).
  e <- expect_names_call(mirai(1, x = notfound), quote(mirai(1, x = notfound)))
  expect_match(conditionMessage(e), "object 'notfound' not found")
  # Raised inside the daemons() that make_cluster() calls: make_cluster().
  expect_names_call(make_cluster("x"), quote(make_cluster("x")))
  # Raised by the native code.
  expect_names_call(daemons(url = "foo://x"), quote(daemons(url = "foo://x")))
  # A mirai() inside with_daemons(): the mirai() call.
  daemons(sync = TRUE, .compute = "err")
  on.exit(daemons(0, .compute = "err"))
  expect_names_call(with_daemons("err", mirai(1, .timeout = "a")), quote(mirai(1, .timeout = "a")))
  expect_names_call(mirai_map(1:2, sqrt, 3, .compute = "err"), quote(mirai_map(1:2, sqrt, 3, .compute = "err")))
  expect_names_call(mirai_map(1:2, sqrt, z = notfound, .compute = "err"),
                    quote(mirai_map(1:2, sqrt, z = notfound, .compute = "err")))
  expect_names_call(everywhere(1, z = notfound, .compute = "err"), quote(everywhere(1, z = notfound, .compute = "err")))
  mp <- mirai_map(1:3, function(x) if (x == 2) stop("two") else x, .compute = "err")
  expect_names_call(mp[.stop], quote(mp[.stop]))
  expect_names_call(collect_mirai(mp, ".stop"), quote(collect_mirai(mp, ".stop")))
  # try() shows it as R shows any error with a call.
  out <- paste(capture.output(try(daemons("2"), silent = FALSE), type = "message"), collapse = "\n")
  expect_match(out, "Error in daemons(\"2\")", fixed = TRUE)
  expect_match(out, "`n` must be numeric, did you mean to provide `url`?", fixed = TRUE)
})

test_that("errors are cli-styled where cli is installed, plain simpleErrors otherwise", {
  skip_if_not_installed("cli")
  skip_if_not_installed("rlang")
  e <- caught(daemons("2"))
  expect_s3_class(e, "rlang_error")
  expect_match(paste(format(e), collapse = "\n"), "Error in `daemons()`:\n! `n` must be numeric", fixed = TRUE)
  # Without cli: the same message and call, as a plain simpleError.
  old <- mirai:::.$rlang
  on.exit(assign("rlang", old, envir = mirai:::.))
  assign("rlang", FALSE, envir = mirai:::.)
  p <- caught(daemons("2"))
  expect_identical(class(p), c("simpleError", "error", "condition"))
  expect_identical(conditionMessage(p), conditionMessage(e))
  expect_identical(conditionCall(p), quote(daemons("2")))
  p <- caught(require_daemons(.compute = "gpu"))
  expect_identical(class(p), c("simpleError", "error", "condition"))
  expect_identical(conditionMessage(p), paste0("No daemons set for the 'gpu' compute profile.\n",
                                               "Use e.g. mirai::daemons(6, .compute = \"gpu\") to set 6 local daemons."))
})

test_that("'no daemons' errors give a hint that names the profile", {
  e <- caught(require_daemons())
  expect_match(conditionMessage(e), "No daemons set.", fixed = TRUE)
  expect_match(conditionMessage(e), "mirai::daemons(6)", fixed = TRUE)
  e <- caught(require_daemons(.compute = "gpu"))
  expect_match(conditionMessage(e), "No daemons set for the 'gpu' compute profile.", fixed = TRUE)
  expect_match(conditionMessage(e), "mirai::daemons(6, .compute = \"gpu\")", fixed = TRUE)
  e <- caught(mirai_map(1:2, sqrt, .compute = "gpu"))
  expect_identical(conditionCall(e), quote(mirai_map(1:2, sqrt, .compute = "gpu")))
  expect_match(conditionMessage(e), "mirai::daemons(6, .compute = \"gpu\")", fixed = TRUE)
  # require_daemons(call = environment()) names the function that asks.
  f <- function() require_daemons(.compute = "gpu", call = environment())
  expect_identical(conditionCall(caught(f())), quote(f()))
  expect_identical(conditionCall(caught(require_daemons())), quote(require_daemons()))
})

test_that("a daemon() setting of the wrong type is an error naming it; an unknown name a warning", {
  daemons(url = local_url())
  on.exit(daemons(0))
  url <- nextget("url")
  e <- caught(daemons(1, idletime = "1s"))
  expect_s3_class(e, "error")
  # The message daemon() itself gives (one check: check_setting()).
  expect_identical(conditionMessage(e), conditionMessage(caught(daemon("tcp://127.0.0.1:1", idletime = "1s"))))
  expect_identical(conditionMessage(e), "`idletime` must be a non-negative number (or Inf)")
  # Refused before anything was reset.
  expect_identical(nextget("url"), url)
  for (bad in list(list(cleanup = "yes"), list(autoexit = 1:2), list(maxtasks = -1), list(walltime = NA),
                   list(output = NA), list(asyncdial = NULL), list(auth = "no"))) {
    e <- caught(do.call(daemons, c(list(url = "tcp://127.0.0.1:0"), bad)))
    expect_s3_class(e, "error")
    expect_match(conditionMessage(e), sprintf("`%s`", names(bad)), fixed = TRUE, label = names(bad))
  }
  expect_identical(nextget("url"), url)
  expect_match(conditionMessage(caught(launch_local(1, maxtasks = "x"))), "`maxtasks`", fixed = TRUE)
  expect_match(conditionMessage(caught(launch_remote(1, cleanup = 0))), "`cleanup`", fixed = TRUE)
  # As many daemons as daemons() would start: a typo launches nothing.
  for (bad in list(1e6, 1.5, -1, NA, Inf, "2", 1:2)) {
    for (launch in list(launch_local, launch_remote)) {
      e <- caught(launch(bad))
      expect_s3_class(e, "error")
      expect_match(conditionMessage(e), "`n` must be a whole number of daemons from 0 to 10000", fixed = TRUE)
    }
  }
  expect_identical(status()$connections, 0L)
  # autoexit = NA and Inf limits are fine.
  expect_match(launch_remote(1, autoexit = NA, idletime = Inf)[[1L]], ",autoexit=NA,idletime=Inf", fixed = TRUE)
  # Unknown names: a warning naming them; a single logical or number is
  # passed on to daemon() (as the reference's tests expect), anything else
  # left out.
  w <- caught(daemons(url = "tcp://127.0.0.1:0", correcttype = 0L))
  expect_s3_class(w, "warning")
  expect_match(conditionMessage(w), "`correcttype` is not a daemon() setting: passed on", fixed = TRUE)
  expect_identical(conditionCall(w), quote(daemons(url = "tcp://127.0.0.1:0", correcttype = 0L)))
  expect_warning(expect_warning(daemons(url = "tcp://127.0.0.1:0", correcttype = 0L, notused = "wrongtype"),
                                "`correcttype`"), "`notused` is not a daemon() setting: left out", fixed = TRUE)
  expect_true(daemons_set())
  cmd <- launch_remote(1)[[1L]]
  expect_match(cmd, ",correcttype=0L", fixed = TRUE)
  expect_false(grepl("notused", cmd, fixed = TRUE))
  expect_warning(launch_remote(1, remote_config(), TRUE), "must be named")
})

test_that("a .compute profile that is not set is a clear error, not a fresh process", {
  e <- caught(mirai(1, .compute = "nope"))
  expect_s3_class(e, "error")
  expect_identical(conditionCall(e), quote(mirai(1, .compute = "nope")))
  expect_match(conditionMessage(e), "No daemons set for the 'nope' compute profile", fixed = TRUE)
  e <- caught(try_mirai(1, .compute = "nope"))
  expect_identical(conditionCall(e), quote(try_mirai(1, .compute = "nope")))
  # With no daemons set at all, the default profile still means a fresh
  # process for the task.
  expect_identical(mirai(2 + 2, .compute = "default")[], 4)
  expect_identical(mirai(2 + 3)[], 5)
})

test_that("mirai's errors raised inside a task on a daemon come back as its miraiError", {
  daemons(1, dispatcher = FALSE)
  on.exit(daemons(0))
  # The task's frames hang off an environment that is no frame's: the
  # search for the user's call ends there (it once looped forever).
  e <- mirai(mirai::daemons("2"), .timeout = 20000)[]
  expect_true(is_mirai_error(e))
  expect_identical(e$message, "`n` must be numeric, did you mean to provide `url`?")
  expect_identical(conditionCall(e), quote(mirai::daemons("2")))
  f <- function() mirai::require_daemons(.compute = "none")
  e <- mirai(f(), f = f, .timeout = 20000)[]
  expect_true(is_mirai_error(e))
  expect_match(e$message, "No daemons set for the 'none' compute profile", fixed = TRUE)
})

test_that("a miraiError's string is the reference's: \"Error: <msg>\" or \"Error in <call>: <msg>\", no newline", {
  daemons(1)
  on.exit(daemons(0))
  e <- mirai(stop("boom"))[]
  expect_identical(as.vector(unclass(e)), "Error: boom")
  e <- mirai(f(1), f = function(x) stop("positive"))[]
  expect_identical(as.vector(unclass(e)), "Error in f(1): positive")
  expect_output(print(e), "'miraiError' chr Error in f(1): positive", fixed = TRUE)
  # A newline of the message's own is kept (none of mirai's is added).
  e <- mirai(stop("ends\n"))[]
  expect_identical(as.vector(unclass(e)), "Error: ends\n")
  expect_identical(capture.output(print(e)), c("'miraiError' chr Error: ends", ""))
  # As parallel reports it for a cluster node: the miraiError is the try-error.
  cl <- make_cluster(1)
  on.exit(stop_cluster(cl), add = TRUE)
  err <- tryCatch(parallel::clusterEvalQ(cl, elephant()), error = conditionMessage)
  expect_identical(err, 'one node produced an error: Error in elephant(): could not find function "elephant"')
})

test_that("a miraiError has the same shape whichever path makes it (R or native, host or daemon)", {
  shape <- function(e) {
    expect_true(is_mirai_error(e))
    expect_identical(class(e), c("miraiError", "errorValue", "try-error"))
    expect_identical(e$condition.class, c("simpleError", "error", "condition"))
    expect_true(is.list(e$stack.trace))
    expect_identical(unclass(e)[[1L]], sprintf("Error: %s", e$message))
    sort(names(attributes(e)))
  }
  want <- sort(c("class", "message", "condition.class", "stack.trace"))
  # Raised in the task, built by R on the daemon.
  daemons(1)
  on.exit(daemons(0))
  expect_identical(shape(mirai(stop("in the task", call. = FALSE))[]), want)
  daemons(0)
  # The result cannot be unserialized on the host: built natively there.
  host_fail <- function(r) if (!mirai::on_daemon()) stop("host side failed") else NULL
  environment(host_fail) <- globalenv()
  pack <- function(x) serialize(NULL, NULL)
  environment(pack) <- globalenv()
  daemons(1, serial = serial_config("myobj", pack, host_fail))
  e <- mirai(structure(new.env(), class = "myobj"))[]
  expect_match(e$message, "result could not be unserialized")
  expect_identical(shape(e), want)
  daemons(0)
  # A cluster node's task that do.call() refuses: built natively on the daemon.
  cl <- make_cluster(1)
  on.exit(stop_cluster(cl), add = TRUE)
  parallel:::sendCall(cl[[1L]], 1, list())
  e <- parallel:::recvResult(cl[[1L]])
  expect_identical(e$message, "'what' must be a function or character string")
  expect_identical(shape(e), want)
})

test_that("the daemon's loop handles exactly the kinds of message the native side defines", {
  # The kinds are defined once, natively (Received in rust/src/r/glue/daemon.rs),
  # and handed to R at load; the loop in daemon() dispatches on them by name
  # in one switch().
  arms <- NULL
  walk <- function(x) {
    if (is.call(x)) {
      if (identical(x[[1L]], as.name("switch")) && identical(x[[2L]], quote(msg[["kind"]])))
        arms <<- c(arms, setdiff(names(as.list(x))[-(1:2)], ""))
      for (i in seq_along(x)[-1L]) if (!identical(x[[i]], quote(expr = ))) walk(x[[i]])
    }
  }
  walk(body(mirai::daemon))
  kinds <- mirai:::.$recv_kinds
  expect_gt(length(kinds), 3L)
  expect_setequal(arms, kinds)
})

test_that("each argument is checked once, by R, with one message naming it", {
  # The same helpers (check_flag, check_string, check_number, ...) make the
  # message wherever the same kind of argument is taken.
  cases <- list(
    list(quote(daemon(1)), "`url` must be a character string, e.g."),
    list(quote(daemon("tcp://127.0.0.1:1", autoexit = "yes")), "`autoexit` must be TRUE, NA or FALSE"),
    list(quote(daemon("tcp://127.0.0.1:1", cleanup = NA)), "`cleanup` must be TRUE or FALSE"),
    list(quote(daemon("tcp://127.0.0.1:1", idletime = -1)), "`idletime` must be a non-negative number (or Inf)"),
    list(quote(daemons(1, sync = NA)), "`sync` must be TRUE or FALSE"),
    list(quote(daemons(1, .compute = 1)), "`.compute` must be a character string naming a compute profile, or NULL"),
    list(quote(mirai(1, .timeout = -1)), "`.timeout` must be a non-negative number of milliseconds, or NULL"),
    list(quote(mirai(1, .retry = 0.5)), "`.retry` must be a non-negative whole number of retries (at most 1e6)"),
    list(quote(daemons(1, heal = NA)), "`heal` must be TRUE or FALSE"),
    list(quote(local_url(port = 70000)), "`port` must be an integer from 0 to 65535"),
    list(quote(host_url(port = NA)), "`port` must be an integer from 0 to 65535"),
    list(quote(nextcode("a")), "`xc` must be a single integer exit code"),
    list(quote(nextcode(1e10)), "`xc` must be a single integer exit code"),
    list(quote(nextcode(2.7)), "`xc` must be a single integer exit code"),
    list(quote(host_url(tls = "a")), "`tls` must be TRUE or FALSE"),
    list(quote(host_url(tls = NA)), "`tls` must be TRUE or FALSE"),
    list(quote(daemons(url = character(0))), "`url` must be a URL such as \"tcp://hostname:5555\", not empty or NA"),
    list(quote(daemons(url = NA_character_)), "`url` must be a URL such as \"tcp://hostname:5555\", not empty or NA"),
    list(quote(mirai(1, .args = sum)), "`.args` must be a named list or an environment, not builtin"),
    list(quote(mirai(1, .args = quote(a))), "`.args` must be a named list or an environment, not symbol"),
    list(quote(nextget(1)), "`x` must be a character string"),
    list(quote(remote_config(quote = NA)), "`quote` must be TRUE or FALSE"),
    list(quote(ssh_config("ssh://h", timeout = 0)), "`timeout` must be a positive number of seconds"),
    list(quote(ssh_config("ssh://h", tunnel = 1)), "`tunnel` must be TRUE or FALSE"),
    list(quote(cluster_config(rscript = 1)), "`rscript` must be a character string")
  )
  for (case in cases) {
    e <- tryCatch(eval(case[[1L]]), error = identity)
    expect_s3_class(e, "error")
    # The whole message (the `url` one goes on with an example).
    expect_true(startsWith(conditionMessage(e), case[[2L]]),
                label = sprintf("%s gives '%s'", deparse1(case[[1L]]), conditionMessage(e)))
    if (!endsWith(case[[2L]], "e.g.")) expect_identical(conditionMessage(e), case[[2L]])
  }
})

test_that("a list argument of a type that makes no list is an error naming it; an environment maps as lapply() has it", {
  daemons(1)
  on.exit(daemons(0))
  for (bad in list(sum, quote(a), new("externalptr"), function(x) x)) {
    expect_error(everywhere(1, .args = bad), "`.args` must be a named list or an environment, not ", fixed = TRUE)
    expect_error(mirai(1, .args = bad), "`.args` must be a named list or an environment, not ", fixed = TRUE)
    if (!is.function(bad) && !is.symbol(bad))
      expect_error(mirai_map(bad, identity), "`.x` must be a vector, list, data frame or matrix, not ", fixed = TRUE)
  }
  e <- new.env()
  e$a <- 1
  e$.hidden <- 2
  expect_identical(mirai_map(e, function(x) x + 1)[], list(a = 2))
  expect_identical(mirai(a, .args = c(a = 3))[], 3)
  expect_identical(mirai(1, .args = NULL)[], 1)
  expect_length(mirai_map(NULL, identity)[], 0L)
  # A symbol or a function maps as lapply() takes it (as.list()).
  expect_identical(mirai_map(quote(a), identity)[], list(quote(a)))
})

test_that("a task whose value is the empty symbol resolves to an error, and the daemon lives on", {
  daemons(1, dispatcher = FALSE)
  on.exit(daemons(0))
  pid <- mirai(Sys.getpid())[]
  m <- mirai(quote(expr = ))[]
  expect_s3_class(m, "miraiError")
  expect_match(m, "empty symbol")
  expect_identical(mirai(Sys.getpid())[], pid)
})

test_that("a task payload that is no list, or an odd list, leaves the daemon serving", {
  # No host of ours sends these (mirai() sends list(expr, globals, args));
  # an authenticated host might. The daemon evaluates what it can read and
  # goes on: `[[` on an atomic payload used to end it (subscript out of
  # bounds), with and without cleanup.
  for (cleanup in c(TRUE, FALSE)) {
    daemons(url = local_url())
    launch_local(1, cleanup = cleanup)
    host <- mirai:::profile_of(NULL)$host
    pid <- mirai(Sys.getpid(), .timeout = 30000)[]
    expect_true(is.integer(pid))
    for (payload in list(1:3, "x", function() 1, list(1, 2), list(quote(1 + 1), "not a list", list()))) {
      m <- .Call(mirai:::C_mirai_host_submit, host, payload, 10000, 0L)
      v <- m[]
      # Not the connection's end (19), nor a timeout (5): an answer.
      expect_false(inherits(v, "errorValue") && unclass(v) %in% c(5L, 19L), label = deparse(payload)[1L])
      expect_identical(mirai(Sys.getpid(), .timeout = 10000)[], pid,
                       label = sprintf("cleanup = %s, after %s", cleanup, deparse(payload)[1L]))
    }
    # A positional payload is evaluated as mirai() means it.
    m <- .Call(mirai:::C_mirai_host_submit, host, list(quote(x + y), list(x = 1), list(y = 2)), 10000, 0L)
    expect_identical(m[], 3)
    daemons(0)
  }
})

test_that("a task with a name R cannot make a variable of fails as a task, and its daemon stays", {
  daemons(1)
  on.exit(daemons(0))
  pid <- mirai(Sys.getpid())[]
  # Non-ASCII in "bytes" encoding: R refuses to translate it into a symbol.
  nm <- "a\xffb"
  Encoding(nm) <- "bytes"
  a <- list(1)
  names(a) <- nm
  why <- "translating strings with \"bytes\" encoding is not allowed"
  m <- mirai(1, .args = a)
  expect_s3_class(m[], "miraiError")
  expect_identical(conditionMessage(m$data), why)
  expect_identical(everywhere(1, .args = a)[][[1L]]$message, why)
  expect_identical(mirai(Sys.getpid())[], pid)
})
