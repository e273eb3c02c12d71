# everywhere(): one task pinned to each connected daemon (the host does the
# fan-out, see Host::broadcast in rust/src/host.rs).

#' Evaluate Everywhere
#'
#' Evaluates an expression once on every daemon connected to a compute
#' profile: to load packages, set options, or place common data or
#' connections in each daemon's global environment before sending work.
#' Changes it makes to global objects, attached packages and options
#' persist on the daemons, also on daemons with `cleanup = TRUE`, which
#' otherwise undo such changes after every task.
#'
#' As with [mirai()], objects passed in `...` are placed in each daemon's
#' global environment, while `.args` and assignments with `<-` stay local
#' to the evaluation: use `...`, or `<<-` in the expression, for globals.
#'
#' Each daemon evaluates the expression when it is next free. With a
#' dispatcher it goes ahead of queued mirai, so a daemon busy with a long
#' task evaluates it right after that task; without a dispatcher it runs
#' after whatever was already sent to that daemon. It never runs twice on a
#' daemon, nor on a daemon it was not meant for: if a daemon disconnects
#' before evaluating it, that daemon's mirai resolves to 'errorValue' 19.
#'
#' Only daemons connected at the time of the call take part. If fewer than
#' `.min` are connected, `everywhere()` first waits for `.min` connections
#' (up to 60 seconds; Ctrl-C ends the wait, and so does an error if they
#' are not reached), which suits daemons just started with [launch_local()]
#' or launched remotely. Daemons that connect afterwards do not evaluate
#' earlier `everywhere()` calls: call it again once they have joined.
#'
#' It does not use up a random number stream of a profile set up with
#' `daemons(seed = )`, so the results of mirai do not depend on it. In
#' synchronous mode (`daemons(sync = TRUE)`) the expression is evaluated
#' once, in this process.
#'
#' @inheritParams mirai
#' @param .min integer: the minimum number of connected daemons to wait for
#'   before evaluating (see Details).
#' @return A 'mirai_map' (a list of 'mirai', one per daemon), invisibly:
#'   collect it with `x[]` to wait until every daemon has evaluated the
#'   expression and see the results.
#' @seealso [mirai_map()], [daemons()]
#' @examples
#' daemons(2)
#' everywhere(library(tools))
#' everywhere({}, base_value = 100)
#' pids <- everywhere(Sys.getpid())
#' pids[.flat]
#' mirai(base_value + 1)[]
#' mirai("package:tools" %in% search())[]
#' daemons(0)
#' @export
everywhere <- function(.expr, ..., .args = list(), .min = 1L, .compute = NULL) {
  require_daemons(.compute)
  if (missing(.expr)) stop("missing expression, perhaps wrap in {}?", call. = FALSE)
  if (!is.numeric(.min) || length(.min) != 1L || is.na(.min) || .min < 0)
    stop("`.min` must be a non-negative number of daemons", call. = FALSE)
  expr <- substitute(.expr)
  if (is.symbol(expr)) {
    val <- get0(as.character(expr), envir = parent.frame(), inherits = TRUE)
    if (is.language(val)) expr <- val
  }
  data <- list(._expr_. = expr, ._globals_. = named_list(list(...), "`...` arguments"),
               ._args_. = named_list(.args, "items in `.args`"), ._everywhere_. = TRUE)
  prof <- profile_of(.compute)
  out <- if (isTRUE(prof$sync)) list(sync_mirai(prof, data, seed = FALSE)) else {
    await_daemons(prof$host, .min)
    .Call(C_mirai_host_broadcast, prof$host, data)
  }
  invisible(structure(out, class = "mirai_map"))
}

# Waits until `n` daemons are connected, interruptibly and for at most
# `secs`, with a progress message every 10 s.
await_daemons <- function(host, n, secs = 60) {
  start <- Sys.time()
  waited <- 0
  while (!.Call(C_mirai_host_wait_ready, host, n, 1000 * min(10, secs - waited))) {
    waited <- as.numeric(difftime(Sys.time(), start, units = "secs"))
    if (waited >= secs)
      stop(sprintf("`.min` not reached: %d of %d daemons connected after %d secs",
                   .Call(C_mirai_host_info, host)[[1L]], as.integer(n), as.integer(waited)), call. = FALSE)
    message(sprintf("mirai: waiting for %d daemon(s) to connect [%d secs elapsed]", as.integer(n), as.integer(waited)))
  }
}
