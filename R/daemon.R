# daemon(): the receive-evaluate-reply loop that launched daemons run.

# The daemon() settings that daemons() and the launchers also take in `...`
# (for launch commands), by kind. check_setting() is the one check of each,
# whichever function takes it: one message.
DAEMON_SETTINGS <- c(asyncdial = "flag", autoexit = "flag or NA", cleanup = "flag", output = "flag",
                     idletime = "limit", walltime = "limit", maxtasks = "limit")

# Setting `nm` (a name of DAEMON_SETTINGS) checked: its value, a limit as a
# double.
check_setting <- function(v, nm) {
  switch(DAEMON_SETTINGS[[nm]],
         flag = check_flag(v, nm),
         "flag or NA" = check_flag(v, nm, na = TRUE),
         limit = check_number(v, nm, "a non-negative number (or Inf)"))
}

#' Daemon Instance
#'
#' Connects to a host at `url` and evaluates the tasks it sends until the
#' connection ends or a limit is reached. This is what launched daemons run;
#' a daemon started by hand must use the command the host prints, which
#' carries the host's credentials.
#'
#' @param url (character) the host's URL to dial, e.g.
#'   `"tcp://10.75.32.70:5555"`, `"tls+tcp://..."`, `"ws://..."` or
#'   `"wss://..."`. No default: required.
#' @param dispatcher (logical) whether the host runs a dispatcher; either
#'   value works, the argument is kept for compatibility. Default TRUE.
#' @param ... (named arguments) reserved for the launch command the host
#'   writes; not for users. Default: none.
#' @param asyncdial (logical) keep retrying until the host is listening
#'   (TRUE), or error if it cannot be reached within
#'   `r limit("dial_timeout_s")` seconds (FALSE). Default FALSE.
#' @param autoexit (logical) TRUE: exit as soon as the host goes away, even
#'   mid-task. NA: finish the current task, then exit. FALSE: stay and
#'   reconnect to a new host at the same URL. Such a daemon ends only when a
#'   host it is connected to calls `daemons(NULL)`, when one of its
#'   `idletime`, `walltime` or `maxtasks` limits is reached (the idle time
#'   runs on while it waits to reconnect), or when it is killed. A host that
#'   vanished without closing the connection is noticed through TCP
#'   keepalive within about `r limit("dead_peer_s")` seconds (also with data
#'   in flight). Default TRUE.
#' @param cleanup (logical) whether, after each task, to remove new global
#'   objects, detach newly attached packages and restore options. Default
#'   TRUE.
#' @param output (logical) keep stdout and stderr (TRUE), or discard them
#'   (FALSE). Default FALSE.
#' @param idletime (numeric) milliseconds idle after which to exit. Default
#'   Inf (never).
#' @param walltime (numeric) milliseconds after which to exit, once the
#'   current task is done. Default Inf (never).
#' @param maxtasks (numeric) number of tasks after which to exit. Default Inf
#'   (no limit).
#' @param tlscert (character) for a `tls+tcp://` or `wss://` `url`, the
#'   certificate(s) to verify the host with (its own certificate, its CA, or
#'   a chain): a PEM file path, or `c(pem, "")` with the PEM text first, as
#'   launch commands give it. Required for `tls+tcp://` and `wss://`. The
#'   host is connected to only if its certificate is one of these (checked
#'   byte for byte, and within its validity dates), or is issued by one of
#'   them (full chain validation), and names the URL's host (a
#'   subjectAltName, or the common name of a certificate without any);
#'   otherwise the error says why. Default NULL.
#' @param rs (integer) a vector of length 7: an initial `.Random.seed`
#'   (L'Ecuyer-CMRG), as put in launch commands by the host (see
#'   [nextstream()]). A stream sent by the host when the daemon connects
#'   takes precedence. Default NULL (none).
#' @return Invisibly, an exit code: `r exit_codes_text()` (see
#'   [nextcode()]). Any other end is an error
#'   saying why (in `Rscript`, a message on stderr and exit status 1): the
#'   host cannot be reached, refuses this daemon, cannot prove that it holds
#'   the daemon's secret (`MIRAI_SECRET`), or sends bytes that are not a
#'   valid message. Before a host has proved itself the daemon acts on
#'   nothing it sends and holds at most `r bytes_text(limit("pre_auth_bytes"))`
#'   of it. With `autoexit =
#'   TRUE`, a host that goes away mid-task ends the process at once with
#'   SIGTERM (exit status 143 in a shell), after a line on stderr.
#' @seealso [daemons()] to set daemons from the host, [nextcode()] to read
#'   exit codes.
#' @examples
#' # Exit codes returned by daemon():
#' nextcode(0L)
#' @examplesIf interactive()
#' # On the host:
#' daemons(url = local_url(), auth = FALSE)
#' url <- nextget("url")
#' # Then, in another R session:
#' # mirai::daemon(url)
#' daemons(0)
#' @export
daemon <- function(url, dispatcher = TRUE, ..., asyncdial = FALSE, autoexit = TRUE,
                   cleanup = TRUE, output = FALSE, idletime = Inf, walltime = Inf,
                   maxtasks = Inf, tlscert = NULL, rs = NULL) {
  if (missing(url)) url <- NULL
  check_string(url, "url", "a character string, e.g. \"tcp://10.75.32.70:5555\"")
  check_setting(autoexit, "autoexit")
  check_setting(asyncdial, "asyncdial")
  check_setting(cleanup, "cleanup")
  check_setting(output, "output")
  idletime <- check_setting(idletime, "idletime")
  walltime <- check_setting(walltime, "walltime")
  maxtasks <- check_setting(maxtasks, "maxtasks")
  tlscert <- daemon_tlscert(tlscert)
  extra <- list(...)
  secret <- extra[["secret"]] %||% Sys.getenv("MIRAI_SECRET")
  Sys.unsetenv("MIRAI_SECRET")

  if (!is.null(rs)) set_stream(rs)
  start <- proc.time()[["elapsed"]] * 1000
  ae <- if (is.na(autoexit)) 2L else as.integer(autoexit)
  # The first dial comes before output is discarded, so that why a daemon
  # cannot connect (a TLS handshake that fails, say) is seen.
  # asyncdial = FALSE: the native dial timeout (NULL).
  conn <- .Call(C_mirai_dial, url, secret, if (asyncdial) Inf, ae, max_message(), tlscert, FALSE, !output)
  unsink <- function() NULL
  if (!output) {
    out <- file(nullfile(), open = "w")
    sink(out)
    sink(out, type = "message")
    unsink <- function() {
      sink(type = "message")
      sink()
      close(out)
      unsink <<- function() NULL
    }
    on.exit(unsink(), add = TRUE)
  }
  .$daemon <- TRUE
  on.exit(.$daemon <- FALSE, add = TRUE)

  count <- 0
  # Exit codes are defined natively (ExitCode in rust/src/daemon/client.rs).
  codes <- .$codes
  code <- codes[["closed"]]
  first <- TRUE
  # Whatever error ends the daemon from here on (a setting it cannot read,
  # say) must be seen: the sinks go before R prints it. Tasks' own errors
  # never get here; they are caught where the task is evaluated. A task's
  # warnings that it does not handle itself would be kept by R and printed
  # once daemon() returns, after the sinks: with output = FALSE they go.
  quiet <- function(w) if (!output) invokeRestart("muffleWarning")
  withCallingHandlers(error = function(e) unsink(), warning = quiet, repeat {
    if (!first) {
      # Reconnecting (autoexit = FALSE): retry for as long as the idle and
      # wall time limits allow, so that a daemon whose host is gone for good
      # still ends by its limits. A peer at the URL that fails the handshake
      # (one that cannot prove it holds the secret) is dropped and the URL
      # dialled again: it is never run for.
      left <- walltime - (proc.time()[["elapsed"]] * 1000 - start)
      retry <- min(idletime, left)
      conn <- if (retry > 0) tryCatch(.Call(C_mirai_dial, url, secret, retry, ae, max_message(),
                                            tlscert, TRUE, !output),
                                      error = function(e) NULL)
      if (is.null(conn)) {
        code <- if (idletime <= left) codes[["idle"]] else codes[["wall"]]
        break
      }
    }
    first <- FALSE
    # The host's settings: this daemon's RNG stream, if it assigns one (the
    # serialization config is installed on `conn` by the call itself).
    init <- .Call(C_mirai_daemon_init, conn)
    if (!is.null(init$stream)) set_stream(init$stream)
    # Limits are kept (and timed) natively: the loop below is the hot path.
    .Call(C_mirai_daemon_limits, conn, idletime,
          walltime - (proc.time()[["elapsed"]] * 1000 - start), maxtasks - count)
    # Before the snapshot, so each task starts with it.
    if (isTRUE(init$config$relay)) relay_setup()
    snap <- snapshot()
    box <- new.env(parent = emptyenv())
    # Tasks run natively, inside the receive (see node_error()); future's
    # code on a cluster node looks for this as `master`.
    # An R error in the daemon's own code (not a task's: those are caught
    # where the task is evaluated) leaves the loop below as an interrupt
    # does, carrying the error. A calling handler, not tryCatch(error =): R
    # offers a C stack overflow only to exiting handlers, and one here
    # would take a task's overflow from R's default handler, which records
    # its message. Through the interrupt's catch: no frame more for tasks.
    escape <- function(e) {
      msg <- tryCatch(paste(as.character(conditionMessage(e)), collapse = "\n"),
                      error = function(x) "an R error in the daemon's own code")
      signalCondition(structure(class = c("miraiEscape", "interrupt", "condition"),
                                list(message = msg, call = NULL)))
    }
    failed_at <- -1
    relay <- structure(list(sink = new.env(parent = emptyenv())), class = c("miraiRelay", "SOCK0node"))
    # daemons(relay = TRUE): tasks' messages and immediate conditions go to
    # the host as they happen, as do those future sends to `master`. The
    # handler is set around the loop, not per task: a task that sends
    # nothing then costs what it costs with relay off. Off, no handler is
    # set. Between tasks none is running, and the handler relays nothing.
    relay_h <- if (isTRUE(init$config$relay)) relay_handler(conn)
    if (!is.null(relay_h)) relay$sink$conn <- conn
    # Progress updates the handler kept back over the budget, to go before
    # the task's value (see relay_handler()).
    relay_st <- if (!is.null(relay_h)) environment(relay_h)$st
    # A task answered natively, inside the receive, calls this first, as the
    # loop below does before send_result().
    if (!is.null(relay_h)) relay$sink$flush <- function(x) relay_flush(relay_h, conn)
    repeat {
      # A cancel raises SIGINT while a task evaluates; should it land just
      # outside the evaluation, it is caught here (set up once, off the
      # per-task path) and the task, if still unanswered, is answered as
      # interrupted (the native side knows which task that is).
      # The relay handler is set inside the catch: a cancel landing while
      # the handler runs (R then sees only the handlers set before it) is
      # caught as well.
      stopped <- tryCatch({
        with_relay(repeat {
          # A tagged list, `kind` first; the kinds and their fields are
          # defined natively (Received in rust/src/r/glue/daemon.rs). Tasks
          # are evaluated, answered and cleaned up after inside the call,
          # which returns only for what needs R.
          msg <- .Call(C_mirai_daemon_recv, conn, box, relay, if (cleanup) snap)
          res <- switch(msg[["kind"]],
            # An everywhere() task, answered, when cleaning up: what it
            # changed is meant to stay, so it becomes the state later
            # cleanups restore.
            kept = {
              snap <- snapshot()
              next
            },
            # A task that cannot be run, answered with why.
            error = mirai_error(msg[["message"]]),
            # A task (run natively) failed.
            failed = node_error(box, msg[["before"]]),
            # A task answered natively changed the search path or options.
            done = {
              snap <- do_cleanup(snap)
              next
            },
            exit = {
              code <- msg[["code"]]
              break
            },
            # The host broke the protocol: why.
            broken = {
              code <- msg[["why"]]
              break
            },
            stop(sprintf("internal error in mirai: the daemon received a '%s'", msg[["kind"]]))
          )
          if (!is.null(relay_h) && (length(relay_st$held) || length(relay_st$after))) relay_flush(relay_h, conn)
          last <- send_result(conn, msg[["id"]], res)
          if (last != 0L) {
            code <- last
            break
          }
          # An everywhere() task that failed: what it changed stays.
          if (cleanup) snap <- after_task(snap, isTRUE(msg[["keep"]]))
        }, relay_h, escape)
        TRUE
      }, interrupt = function(e) if (inherits(e, "miraiEscape")) conditionMessage(e) else FALSE)
      if (isTRUE(stopped)) break
      keep <- .Call(C_mirai_daemon_keeping, conn)
      # An R error that escaped the task's own evaluation (a time limit the
      # task left, running out in the daemon's code) fails the task if it
      # is still unanswered; one between tasks is passed over, unless no
      # task was answered since the last: that one is the daemon's own.
      cur <- .Call(C_mirai_daemon_current, conn)
      if (cur > 0) {
        # (The error's call is the daemon's, not the task's.)
        res <- if (isFALSE(stopped)) mirai_interrupt() else mirai_error(stopped)
        last <- send_result(conn, cur, res)
        if (last != 0L) {
          code <- last
          break
        }
      } else if (!isFALSE(stopped)) {
        answered <- .Call(C_mirai_daemon_answered, conn)
        if (identical(answered, failed_at)) stop(stopped, call. = FALSE)
        failed_at <- answered
      }
      # The clean-up after the task, which the interrupt or error may have
      # cut short (an everywhere() task's changes stay); one that fails
      # leaves the state as it is.
      if (cleanup) snap <- tryCatch(after_task(snap, keep), error = function(e) snap, interrupt = function(e) snap)
    }
    count <- count + .Call(C_mirai_daemon_close, conn)
    # The host broke the protocol: stop, saying why.
    if (is.character(code)) stop(sprintf("daemon connected to '%s' stops: %s", url, code), call. = FALSE)
    # Only a lost connection with autoexit = FALSE leads to a reconnect.
    # A host gone mid-reply ends the connection as a close does.
    if (code == codes[["gone"]]) code <- codes[["closed"]]
    if (code != codes[["closed"]] || !isFALSE(autoexit)) break
  })
  # An exit request ends the daemon as a closed connection does.
  invisible(if (code < 0L) codes[["closed"]] else code)
}

# `tlscert` as PEM text: from a file path, or the chain of c(chain, "").
daemon_tlscert <- function(tlscert) {
  if (is.null(tlscert)) return(NULL)
  x <- check_tlscert(tlscert)[[1L]]
  if (grepl("-----BEGIN", x, fixed = TRUE)) return(x)
  if (!file.exists(x)) abort(sprintf("`tlscert`: no such file '%s'", x))
  paste(readLines(x, warn = FALSE), collapse = "\n")
}

# Sends a result; for a daemon's last task, waits for the host to take it.
# Returns the exit code for a last task, else 0.
send_result <- function(conn, id, res) {
  last <- .Call(C_mirai_daemon_send, conn, id, res)
  if (is.character(last)) {
    err <- mirai_error(paste("result could not be serialized:", last))
    last <- .Call(C_mirai_daemon_send, conn, id, err)
  }
  if (last > 0L) .Call(C_mirai_daemon_linger, conn)
  last
}

# A task run natively (see mirai_daemon_recv in rust/src/r/glue/daemon.rs)
# failed: `box` holds its error and the calls on the stack when it was
# signalled (see eval_on_error in src/entrypoint.c). The calls before the
# task's own are this loop's and the two of the eval() the task is
# evaluated in (for a cluster node's task, the one that binds `master`:
# call_binding in rust/src/r/glue/call.rs); the last two are the handler's.
node_error <- function(box, before) {
  cond <- box$cond
  if (is.null(cond)) return(unhandled_jump(before))
  mirai_error(cond, task_trace(box$calls, sys.nframe() + 1L, 2L))
}

mirai_interrupt <- function() structure("", class = c("miraiInterrupt", "errorValue", "try-error"))

# A task left without its error handler having run: an interrupt, or a C
# stack overflow, which R signals to no calling handler: only R's default
# handler saw it, and recorded its message. An interrupt records nothing,
# but the record may have changed since `before` through an error the task
# handled itself, hence the check of the message too. The record is then
# overwritten, so that the same overflow in the next task is a change.
unhandled_jump <- function(before) {
  msg <- sub("\n$", "", geterrmessage())
  try(stop("no error since a mirai task's", call. = FALSE), silent = TRUE)
  fmt <- gettext("C stack usage  %ld is too close to the limit", domain = "R")
  fmt <- strsplit(fmt, "%ld", fixed = TRUE)[[1L]]
  at <- regexpr(fmt[[1L]], msg, fixed = TRUE)
  overflow <- !identical(msg, sub("\n$", "", before)) && at > 0L &&
    (length(fmt) < 2L || grepl(fmt[[2L]], msg, fixed = TRUE))
  if (!overflow) return(mirai_interrupt())
  mirai_error(substring(msg, at))
}

# Evaluates a task payload in this process (sync mode). `genv` receives the
# `...` globals.
eval_mirai <- function(data, genv) {
  # As task_parts() (rust/src/r/glue/daemon.rs): positional if 3 and unnamed.
  if (length(data) == 3L && is.null(names(data))) names(data) <- c("._expr_.", "._globals_.", "._args_.")
  g <- data[["._globals_."]]
  if (length(g)) list2env(g, envir = genv)
  env <- list2env(data[["._args_."]] %||% list(), parent = genv)
  expr <- data[["._expr_."]]
  calls <- NULL
  tryCatch(
    withCallingHandlers(
      ._mirai_eval_.(expr, env),
      error = function(e) calls <<- sys.calls()
    ),
    error = function(e) mirai_error(e, task_trace(calls, eval_frame(calls), 1L)),
    interrupt = function(e) mirai_interrupt()
  )
}

# The number of frames before a task's own in sys.calls() taken inside
# eval_mirai(): up to the innermost ._mirai_eval_. frame and the two of the
# eval() inside it (the closure's and .Internal(eval())'s).
eval_frame <- function(calls) {
  at <- function(cl) is.call(cl) && identical(cl[[1L]], quote(._mirai_eval_.))
  top <- which(vapply(calls, at, logical(1L)))
  if (length(top)) top[[length(top)]] + 2L else length(calls)
}

# The stack trace of an error, innermost call first: the calls in `calls`
# (sys.calls() as the error handler saw it) after the first `from` and
# before the last `handler`, which are the handler's own. It starts at the
# call that signalled the condition: an error raised by R's C code shows as
# .handleSimpleError(h, msg, quote(call)) instead, where `call` is that of a
# builtin (which has no frame) unless it is already on the stack.
task_trace <- function(calls, from, handler) {
  n <- length(calls) - handler
  if (n <= from) return(list())
  trace <- calls[(from + 1L):n]
  last <- trace[[length(trace)]]
  if (is.call(last) && identical(last[[1L]], quote(.handleSimpleError)) && length(last) == 4L) {
    trace <- trace[-length(trace)]
    call <- last[[4L]]
    if (is.call(call) && identical(call[[1L]], quote(base::quote))) call <- call[[2L]]
    if (is.call(call) && !any(vapply(calls, same_call, logical(1L), call)))
      trace <- c(trace, list(call))
  }
  rev(trace)
}

# Calls on the stack carry the source reference of their statement (code
# with srcrefs in braces); the call R's C code reports for an error has none.
same_call <- function(a, b) {
  attr(a, "srcref") <- NULL
  attr(b, "srcref") <- NULL
  identical(a, b)
}

._mirai_eval_. <- function(expr, env) eval(expr, envir = env)

# The one constructor of 'miraiError' values, for an error condition `e`
# (or a message, as an error without a call), with its stack trace `trace`
# as task_trace() returns it. The native side makes its own through this
# (mirai_error in rust/src/r/glue/shared.rs).
mirai_error <- function(e, trace = list()) {
  if (is.character(e)) e <- simpleError(e)
  call <- conditionCall(e)
  # A miraiError is one string: a condition's message may be anything.
  msg <- paste(as.character(conditionMessage(e)), collapse = "\n")
  # A call of eval() itself (by name, or by the closure as a node task's
  # call has it) is the daemon's, not the task's: the error was raised at
  # the top of the task, which has no call of its own (as R's "Error: msg"),
  # so `$call` and conditionCall() are NULL rather than a daemon internal.
  internal <- is.null(call) || (is.call(call) && (identical(call[[1L]], quote(eval)) ||
    identical(call[[1L]], eval)))
  if (internal) call <- NULL
  # No trailing newline (a try() string has one): API.md, the reference.
  text <- if (internal) sprintf("Error: %s", msg)
          else sprintf("Error in %s: %s", paste(deparse(call, nlines = 1L), collapse = ""), msg)
  out <- text
  fields <- unclass(e)
  for (nm in setdiff(names(fields), c("message", "call"))) attr(out, nm) <- fields[[nm]]
  attr(out, "message") <- msg
  attr(out, "call") <- call
  attr(out, "condition.class") <- class(e)
  attr(out, "stack.trace") <- trace
  class(out) <- c("miraiError", "errorValue", "try-error")
  out
}

snapshot <- function() {
  # as.list(.Options), not options(): the latter sorts, costing ~30 us a task.
  # `pairlist`: the same values as a pairlist of new cells, for the fast
  # check in do_cleanup().
  options <- as.list(.Options)
  list(globals = names(.GlobalEnv), search = search(), options = options,
       pairlist = as.pairlist(options))
}

# The state later tasks start from, after a task answered in R: what an
# everywhere() task left (`keep`), else `snap` restored.
after_task <- function(snap, keep) {
  if (keep) snapshot() else if (.Call(C_mirai_daemon_tidy, snap)) snap else do_cleanup(snap)
}

# Runs after a task when the native check (mirai_daemon_tidy, which removes
# the globals a task added) finds the search path or options changed.
# Returns `snap` with its pairlist made anew from the options as restored:
# options() stores copies, so a value set back (or set to the same value)
# is a new object, and the native check, which compares pointers, would
# otherwise fail after every later task.
do_cleanup <- function(snap) {
  g <- names(.GlobalEnv)
  # Names in the same order: none added (matching costs ~2 us a task).
  if (!identical(g, snap$globals)) {
    new <- g[!g %in% snap$globals & g != ".Random.seed"]
    if (length(new)) rm(list = new, envir = .GlobalEnv)
  }
  s <- search()
  if (!identical(s, snap$search)) {
    for (pkg in setdiff(s, snap$search)) {
      if (startsWith(pkg, "package:")) try(detach(pkg, character.only = TRUE, unload = FALSE), silent = TRUE)
    }
  }
  # options() sets a value in the cell of .Options that holds it, so an
  # unchanged .Options holds the very values of the snapshot's pairlist and
  # identical() ends at each pointer: no copy (as.list() and a deep
  # comparison cost ~4 us a task).
  if (!identical(.Options, snap$pairlist)) {
    cur <- as.list(.Options)
    added <- setdiff(names(cur), names(snap$options))
    if (length(added)) options(structure(vector("list", length(added)), names = added))
    changed <- names(snap$options)[!mapply(identical, snap$options, cur[names(snap$options)])]
    if (length(changed)) options(snap$options[changed])
  }
  snap$pairlist <- as.pairlist(as.list(.Options))
  snap
}
