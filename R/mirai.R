# mirai(): create a task, and the 'mirai' object that receives its result.

# Types as.list() cannot make a list of: `.x` of mirai_map() given one is
# refused with a message naming it rather than R's from deep inside.
# Classed objects are left to their methods.
UNLISTABLE <- c("externalptr", "weakref", "bytecode", "environment", "promise", "char", "...", "any")
not_listable <- function(x) !is.object(x) && typeof(x) %in% UNLISTABLE

# Those, and functions and symbols (which as.list() takes, as lapply() and
# mirai_map() do): no list of arguments, so no `.args`.
no_arg_list <- function(x) !is.object(x) && typeof(x) %in% c(UNLISTABLE, "symbol", "closure", "builtin", "special")

named_list <- function(x, what) {
  if (is.environment(x)) return(as.list.environment(x, all.names = TRUE))
  # Only `.args` can be other than a list (`...` is list(...)).
  if (no_arg_list(x))
    abort(sprintf("`.args` must be a named list or an environment, not %s", typeof(x)))
  if (!length(x)) return(list())
  nm <- names(x)
  if (length(x) == 1L && is.null(nm) && is.environment(x[[1L]]))
    return(as.list.environment(x[[1L]], all.names = TRUE))
  if (is.null(nm) || anyNA(nm) || !all(nzchar(nm)))
    abort(sprintf("all %s must be named, unless supplying an environment", what))
  # A plain list as it is: as.list() would return it too, by two closure calls.
  if (is.list(x) && !is.pairlist(x) && !is.object(x)) x else as.list(x)
}

#' mirai (Evaluate Async)
#'
#' Evaluates an expression asynchronously in another R process and returns a
#' 'mirai' straight away. The mirai resolves by itself once the result
#' arrives: `m$data` gives the value (or `'unresolved' logi NA` until then),
#' `m[]` waits for it.
#'
#' Where daemons are set (see [daemons()]) the task goes to them. Otherwise a
#' fresh `Rscript` process is started for this one task (a few tenths of a
#' second each: set daemons for anything more than occasional use); but a
#' `.compute` profile named and not set is an error ("No daemons set for the
#' '<name>' compute profile"), as the name is more likely a mistake than a
#' request for a fresh process.
#'
#' If `daemons(memory =)` caps the dispatcher's queue and the tasks waiting
#' in it have reached the cap, `mirai()` first waits for the queue to drain
#' below it (Ctrl-C ends the wait, sending nothing). [try_mirai()] returns
#' NULL instead of waiting.
#'
#' @section Evaluation:
#' The expression is evaluated in a clean R process, which sees nothing of
#' the calling session: every object it uses must either be passed in or be
#' created by the expression itself. Objects passed by name in `...` are
#' assigned in the daemon's global environment (a function passed this way
#' finds other objects passed in `...`); those in `.args` are local to the
#' evaluation, in an environment whose parent is the global environment. A
#' function passed in carries its enclosing environment with it, except the
#' global environment: a function defined at top level that calls another
#' top-level function needs that one passed too. Packages are not attached
#' unless the expression (or [everywhere()]) attaches them: use `pkg::fun()`
#' or a `library()` call inside the expression.
#'
#' Daemons set with the default `cleanup = TRUE` undo, after each task, what
#' it did to the global environment, the search path and options, so tasks
#' do not depend on which daemon ran what before them. [everywhere()] makes
#' changes that persist. Random numbers come from the daemon's own
#' L'Ecuyer-CMRG stream, or from one stream per mirai with
#' `daemons(seed = )`.
#'
#' `m[]` and [call_mirai()] wait, interruptibly: Ctrl-C ends the wait and
#' leaves the mirai (and its task) running. [unresolved()] asks without
#' waiting; [race_mirai()] waits for the first of several.
#'
#' @section Timeouts:
#' With `.timeout`, a mirai that has not resolved after that many
#' milliseconds resolves to 'errorValue' `r error_code("timeout")`
#' (`r code_span("'errorValue' int", error_text(error_code("timeout")))`).
#' With a dispatcher (the default) the task is also cancelled: taken off the
#' queue if it has not started, or interrupted on its daemon, which
#' is then free for the next task. Without a dispatcher
#' (`daemons(dispatcher = FALSE)`) only the mirai gives up: the task runs to
#' its end on the daemon, and later tasks sent to that daemon wait for it.
#' [stop_mirai()] cancels a mirai in the same way at any time (errorValue
#' `r error_code("canceled")`).
#'
#' @section Retry:
#' With `.retry = k`, a task whose daemon dies while running it goes back to
#' the front of the queue, up to `k` times, and runs again on another daemon
#' (with `daemons(n)`, the dead one is replaced at once; see [daemons()]).
#' The task starts again from scratch: whatever it did before its daemon
#' died (files written, rows inserted) may happen again. With a seeded
#' profile (`daemons(seed =)`) the task keeps its random-number stream, so
#' the result is the same. [status()] counts the retries (`retried`).
#'
#' @section Errors:
#' An error in the expression does not raise an error in this session: the
#' mirai resolves to a 'miraiError', a character string (such as
#' `"Error in f(5): too big: 5"`) with class `c("miraiError", "errorValue",
#' "try-error")`. Its attributes, read with `$`, keep the original
#' `$message`, `$call`, `$condition.class` (the classes of the condition),
#' `$stack.trace` (the calls from the evaluation down to the error) and any
#' other fields of a custom condition. An interrupt on the daemon gives a
#' 'miraiInterrupt'. A daemon that dies or disconnects during the task, or
#' a [daemons()] reset while it is pending, gives 'errorValue'
#' `r error_code("reset")` (`r code_span(error_meaning("reset"))`). Test for
#' these with [is_mirai_error()], [is_mirai_interrupt()] and
#' [is_error_value()]; `m[.stop]`-style collection ([mirai_map()]) turns the
#' first of them into an R error.
#' Warnings, messages and printed output on a daemon are not returned with
#' the value: return them as part of it if needed. Local daemons set with
#' `daemons(n, output = TRUE)` print theirs to this session's console.
#'
#' @param .expr (expression) the expression to evaluate, wrapped in `{}` if
#'   it spans several lines. A symbol bound to a language object is
#'   evaluated as that object. No default: required.
#' @param ... (named objects) named objects (or one environment) placed in
#'   the global environment of the evaluating process. Default: none.
#' @param .args (list) a named list or environment of objects kept local to
#'   the evaluation. Default `list()`.
#' @param .timeout (integer) milliseconds after which the mirai resolves to
#'   an 'errorValue' `r error_code("timeout")` (timed out). Default NULL (no timeout).
#' @param .retry (integer) how many times to send the task again, to another
#'   daemon, if the daemon running it dies (is killed, crashes, runs out of
#'   memory) before it answers; it resolves to 'errorValue' 19 only once
#'   these are used up. A task that timed out or was stopped is never sent
#'   again. Leave at 0 for a task with side effects that must not happen
#'   twice. Needs daemons set with [daemons()] (ignored for an ephemeral or
#'   synchronous mirai). Default 0.
#' @param .compute (character) name of the compute profile. Default NULL:
#'   the current profile.
#' @return A 'mirai' object, invisibly. It prints as `< mirai [] >` while
#'   unresolved and `< mirai [$data] >` once resolved.
#' @seealso [daemons()] to set daemons, [call_mirai()] and [unresolved()] to
#'   wait for and query results, [mirai_map()] to map over a list.
#' @examples
#' # Synchronous mode: evaluated in this process, for debugging.
#' daemons(sync = TRUE)
#' m <- mirai(x + y, x = 1, y = 2)
#' m[]
#' # Errors come back as values:
#' m <- mirai(stop("boom"))
#' m$data
#' m$data$message
#' daemons(0)
#' @examplesIf interactive()
#' daemons(1)
#' m <- mirai(x + y, x = 1, y = 2)
#' m
#' m[]
#' m
#'
#' # Local objects with .args, global ones with ...
#' f <- function(n) rnorm(n)
#' m <- mirai(f(n), f = f, .args = list(n = 3))
#' call_mirai(m)$data
#'
#' # An error, with its call and stack trace
#' g <- function(x) if (x > 1) stop("too big: ", x) else x
#' m <- mirai(g(5), g = g)
#' m[]
#' m$data$call
#' m$data$stack.trace
#'
#' # A timeout: the task is cancelled on the daemon
#' m <- mirai(Sys.sleep(5), .timeout = 200)
#' m[]
#'
#' # A retry: the task's daemon is killed the first time it runs it
#' f <- tempfile()
#' m <- mirai({
#'   if (!file.exists(f)) { file.create(f); tools::pskill(Sys.getpid(), tools::SIGKILL) }
#'   "second time lucky"
#' }, f = f, .retry = 1)
#' m[]
#' status()[c("replaced", "retried")]
#' daemons(0)
#' @export
mirai <- function(.expr, ..., .args = list(), .timeout = NULL, .retry = 0L, .compute = NULL) {
  if (missing(.expr)) abort("missing expression, perhaps wrap in {}?")
  expr <- substitute(.expr)
  if (is.symbol(expr)) {
    val <- get0(as.character(expr), envir = parent.frame(), inherits = TRUE)
    if (is.language(val)) expr <- val
  }
  # `...` is evaluated here, so that an error in it (an object not found)
  # names this call, and once: the common case is submitted natively
  # (mirai_submit_fast in rust/src/r/glue/profile.rs: this function is on
  # every task's path), which leaves the rest to the code below.
  dots <- if (...length()) list(...)
  m <- .Call(C_mirai_submit_fast, expr, dots, environment(), .)
  if (!is.null(m)) return(invisible(m))
  globals <- if (is.null(dots)) list() else named_list(dots, "`...` arguments")
  args <- if (is.list(.args) && !length(.args)) .args else named_list(.args, "items in `.args`")
  if (!is.null(.timeout))
    check_number(.timeout, ".timeout", "a non-negative number of milliseconds, or NULL")
  if (!identical(.retry, 0L)) check_retry(.retry)
  # Positional: names would cost a task's frame about 70 of its 185 bytes
  # (mirai(i, i = i)), held in the queue while it waits. The daemon reads a
  # payload without names as list(expr, globals, args) (see task_parts()).
  data <- list(expr, globals, args)
  prof <- if (is.null(.compute)) .$profiles[[.$current]] else profile_of(.compute)
  if (is.null(prof)) {
    # A profile named but not set is a mistake, not a request for a fresh
    # process (as with no daemons set at all).
    if (!is.null(.compute) && !identical(.compute, "default")) require_daemons(.compute)
    return(invisible(ephemeral_mirai(data, .timeout)))
  }
  # isTRUE() inlined, as profile_of() above: a closure call each.
  if (is.logical(sync <- prof$sync) && length(sync) == 1L && !is.na(sync) && sync)
    return(invisible(sync_mirai(prof, data)))
  # Inline rather than pool_notice(): this is every task's path.
  if (!is.null(note <- .Call(C_mirai_host_notice, prof$host))) pool_warning(note)
  # The mirai object itself is built natively (new_mirai in rust/src/r/layer/object.rs).
  invisible(if (is.null(prof$seed)) .Call(C_mirai_host_submit, prof$host, data, .timeout, .retry)
            else submit_task(prof, data, .timeout, retry = .retry))
}

#' mirai (Evaluate Async, If There Is Room)
#'
#' The same as [mirai()], except where `daemons(memory =)` caps the bytes of
#' tasks waiting in the dispatcher's queue: if the queue is at the cap,
#' `mirai()` waits for it to drain, while `try_mirai()` returns NULL at once,
#' without sending the task (and without using up a random number stream of
#' `daemons(seed =)`). Without a cap it never returns NULL.
#'
#' @inheritParams mirai
#' @return A 'mirai' object, or NULL if the queue is at its memory cap;
#'   invisibly.
#' @examplesIf interactive()
#' daemons(1, memory = 1)
#' # The daemon is kept busy, so the next tasks wait in the queue.
#' busy <- mirai(Sys.sleep(1))
#' x <- runif(1e5) # about 0.8 MB
#' m1 <- try_mirai(sum(x), x = x)
#' m2 <- try_mirai(sum(x), x = x)
#' m3 <- try_mirai(sum(x), x = x)
#' is.null(m3) # the queue held 1.6 MB, over the 1 MB cap
#' status()$memory
#' m1[] == sum(x)
#' daemons(0)
#' @export
try_mirai <- function(.expr, ..., .args = list(), .timeout = NULL, .retry = 0L, .compute = NULL) {
  prof <- profile_of(.compute)
  if (is.null(prof) && !is.null(.compute) && !identical(.compute, "default")) require_daemons(.compute)
  host <- prof$host
  if (!is.null(host) && !.Call(C_mirai_host_room, host)) return(invisible(NULL))
  # Only R's thread adds to the queue, so mirai() finds the room still
  # there (unless evaluating `...` queues tasks itself). Re-evaluating this
  # very call hands mirai() `.expr` and `...` unevaluated, as if called
  # directly; an error there names mirai::mirai().
  call <- sys.call()
  call[[1L]] <- quote(mirai::mirai)
  eval(call, parent.frame())
}

check_retry <- function(retry) {
  what <- "a non-negative whole number of retries (at most 1e6)"
  if (check_number(retry, ".retry", what, max = 1e6) != trunc(retry)) abort(sprintf("`.retry` must be %s", what))
}

# Sends a task to the profile's host; returns the mirai. On a seeded
# profile the task carries the current stream as its `.Random.seed`, so
# results do not depend on which daemon runs which task. The stream moves on
# only once the host has taken the task: a submission that errors does not
# use one up. `seed = FALSE` sends the task without a stream.
submit_task <- function(prof, data, timeout, seed = TRUE, retry = 0L) {
  stream <- if (seed && !is.null(prof$seed)) prof$stream
  # The globals are second whether `data` is named (everywhere()) or not.
  if (!is.null(stream)) data[[2L]][[".Random.seed"]] <- stream
  m <- .Call(C_mirai_host_submit, prof$host, data, timeout, retry)
  if (!is.null(stream)) prof$stream <- .Call(C_mirai_next_stream, stream)
  m
}

# A mirai resolved from the start (sync mode), built by the same native
# constructor as every other mirai.
resolved_mirai <- function(value) .Call(C_mirai_resolved, value)

ephemeral_mirai <- function(data, timeout) {
  secret <- new_secret()
  host <- .Call(C_mirai_host_start, local_url(), FALSE, secret, TRUE, NULL, NULL, 0, max_message(), NULL, NULL)
  url <- .Call(C_mirai_host_url, host)
  launch_process(host, url, secret, list(dispatcher = FALSE, maxtasks = 1L, cleanup = FALSE))
  .Call(C_mirai_host_submit, host, data, timeout, 0L)
}

# `seed = FALSE` (everywhere()) evaluates without taking a stream.
sync_mirai <- function(prof, data, seed = TRUE) {
  old <- .$daemon
  .$daemon <- TRUE
  on.exit(.$daemon <- old)
  resolved_mirai(if (seed) with_task_stream(prof, eval_mirai(data, prof$globals)) else eval_mirai(data, prof$globals))
}

aio_of <- function(x) .subset2(x, "aio")

#' mirai (Call Value)
#'
#' `call_mirai()` waits for a mirai (or each mirai in a list) to resolve and
#' returns it, with `$data` filled in. The wait can be interrupted with
#' Ctrl-C, which leaves the mirai and the session intact.
#'
#' `collect_mirai()` waits likewise and returns the value itself (for a
#' list, a list of values, in order). `x[]` on a mirai is the same, and on a
#' 'mirai_map' `x[]` is `collect_mirai(x)`.
#'
#' @param x (mirai or list) a 'mirai' or a list of them (such as a
#'   'mirai_map'). No default: required.
#' @param options (character or list) for a list, collection options (see
#'   [mirai_map()]): a character vector such as
#'   `c(".flat", ".progress", ".stop")`, or a named list such as
#'   `list(.stop = TRUE, .progress = list(name = "bar"))`, where `.progress`
#'   may give [cli::cli_progress_bar()] arguments. Default NULL (none).
#' @return `call_mirai()`: `x`, invisibly. `collect_mirai()`: the value(s).
#' @examples
#' daemons(sync = TRUE)
#' m <- mirai(1 + 1)
#' call_mirai(m)$data
#' collect_mirai(list(a = mirai(1), b = mirai(2)))
#' collect_mirai(list(a = mirai(1), b = mirai(2)), ".flat")
#' daemons(0)
#' @export
call_mirai <- function(x) {
  h <- if (inherits(x, "mirai_map")) map_handle(x)
  if (!is.null(h)) {
    .Call(C_mirai_map_wait, h)
  } else if (is_mirai_list(x)) {
    for (m in x) call_mirai(m)
  } else if (inherits(x, "mirai")) {
    aio <- aio_of(x)
    if (!is.null(aio)) .Call(C_mirai_aio_wait, aio)
  }
  invisible(x)
}

#' @rdname call_mirai
#' @export
collect_mirai <- function(x, options = NULL) {
  if (inherits(x, "mirai")) return(x[])
  if (!is.list(x)) return(x)
  collect_list(x, collect_options(options))
}

#' @export
`[.mirai` <- function(x, i) .Call(C_mirai_value, x)

# A mirai is read-only: `$data` is its task's value, read through an active
# binding (which, assigned to, failed with R's "unused argument"). As in the
# reference, an assignment leaves the mirai as it was (code written for it
# goes on); unlike it, a warning says so.
#' @export
`$<-.mirai` <- function(x, name, value) read_only(x, name)

#' @export
`[[<-.mirai` <- function(x, i, value) read_only(x, i)

read_only <- function(x, name) {
  what <- if (is.character(name) && length(name) == 1L && !is.na(name)) sprintf("`$%s` of ", name)
  warning(sprintf("cannot set %sa mirai: a mirai is read-only (its `$data` is its task's value); the assignment is ignored",
                  what %||% ""), call. = FALSE)
  x
}

#' @export
print.mirai <- function(x, ...) {
  cat(if (unresolved(x)) "< mirai [] >\n" else "< mirai [$data] >\n")
  invisible(x)
}

#' Query if a mirai is Unresolved
#'
#' Never waits.
#'
#' @param x (mirai or list) a 'mirai', a list of them, or a mirai's `$data`.
#'   No default: required.
#' @return TRUE if `x` (or any element of a list) is still unresolved.
#' @seealso [call_mirai()] to wait, [race_mirai()] to wait for the first of
#'   several.
#' @examples
#' daemons(sync = TRUE)
#' m <- mirai(1)
#' unresolved(m)
#' unresolved(m$data)
#' daemons(0)
#' @export
unresolved <- function(x) {
  if (inherits(x, "mirai")) {
    aio <- aio_of(x)
    return(!is.null(aio) && !.Call(C_mirai_aio_collect, aio))
  }
  if (inherits(x, "unresolvedValue")) return(TRUE)
  h <- if (inherits(x, "mirai_map")) map_handle(x)
  if (!is.null(h)) return(.Call(C_mirai_map_resolved, h) < length(x))
  if (is_mirai_list(x)) {
    for (m in x) if (unresolved(m)) return(TRUE)
  }
  FALSE
}

#' Is mirai
#'
#' Tests whether an object is a 'mirai'.
#'
#' @param x (any) an object. No default: required.
#' @return Logical value.
#' @examples
#' is_mirai(1)
#' daemons(sync = TRUE)
#' is_mirai(mirai(1))
#' daemons(0)
#' @export
is_mirai <- function(x) inherits(x, "mirai")

#' Stop a mirai
#'
#' Resolves a mirai to 'errorValue' `r error_code("canceled")` (operation canceled) at
#' once. With a
#' dispatcher, a queued task is withdrawn and a running one interrupted.
#'
#' @param x (mirai or list) a 'mirai' or a list of them. No default:
#'   required.
#' @return Logical: TRUE where the dispatcher found the task (vectorised
#'   over lists); FALSE without a dispatcher.
#' @seealso [mirai()] (its `.timeout` argument), [is_error_value()]
#' @examplesIf interactive()
#' daemons(1)
#' m <- mirai(Sys.sleep(10))
#' stop_mirai(m)
#' m$data
#' daemons(0)
#' @export
stop_mirai <- function(x) {
  h <- if (inherits(x, "mirai_map")) map_handle(x)
  if (!is.null(h)) return(.Call(C_mirai_map_cancel, h))
  if (is_mirai_list(x)) return(vapply(x, stop_mirai, logical(1L)))
  if (!inherits(x, "mirai")) return(FALSE)
  aio <- aio_of(x)
  if (is.null(aio)) return(FALSE)
  .Call(C_mirai_aio_cancel, aio)
}

#' On Daemon
#'
#' Tells whether the calling code is being evaluated by a daemon.
#'
#' @return TRUE when called from code being evaluated by a daemon (or in
#'   synchronous mode), FALSE otherwise.
#' @examples
#' on_daemon()
#' daemons(sync = TRUE)
#' mirai(on_daemon())[]
#' daemons(0)
#' @export
on_daemon <- function() isTRUE(.$daemon)
