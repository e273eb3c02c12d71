# everywhere(): one task pinned to each connected daemon, plus tasks for
# daemons yet to connect up to `.min` (the host does the fan-out, see
# Host::broadcast in rust/src/host/mod.rs).

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
#' before evaluating it, that daemon's mirai resolves to 'errorValue'
#' `r error_code("reset")`.
#'
#' Daemons connected at the time of the call take part. If fewer than
#' `.min` are connected, the difference is sent to daemons that connect
#' later, one task each (the first `.min` minus connected daemons to join),
#' so `everywhere()` can be called straight after [daemons()] with a `url`,
#' before the daemons have been launched; it never waits. Other daemons that
#' connect afterwards do not evaluate earlier `everywhere()` calls: call it
#' again once they have joined. The exception is a daemon that [daemons()]
#' launches in place of one that died, which evaluates them, in order,
#' before any task (see Self-healing in [daemons()]).
#'
#' It does not use up a random number stream of a profile set up with
#' `daemons(seed = )`, so the results of mirai do not depend on it: it runs
#' on the daemon's own stream (with a dispatcher, the i-th daemon to connect
#' starts on [parallel::nextRNGStream()] applied i times to the profile's
#' starting stream, seed or no seed). In
#' synchronous mode (`daemons(sync = TRUE)`) the expression is evaluated
#' once, in this process.
#'
#' @inheritParams mirai
#' @param .min (integer) the minimum number of daemons to evaluate on,
#'   counting daemons yet to connect (see Details), at most
#'   `r format(limit("max_everywhere"), scientific = FALSE)`. Default 1.
#' @return A 'mirai_map' (a list of 'mirai', one per daemon), invisibly:
#'   collect it with `x[]` to wait until every daemon has evaluated the
#'   expression and see the results.
#' @seealso [mirai_map()], [daemons()]
#' @examples
#' # Synchronous mode: evaluated once, in this process.
#' daemons(sync = TRUE)
#' everywhere(Sys.getpid())[]
#' daemons(0)
#' @examplesIf interactive()
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
  if (missing(.expr)) abort("missing expression, perhaps wrap in {}?")
  most <- limit("max_everywhere")
  check_number(.min, ".min", sprintf("a non-negative number of daemons, at most %s",
                                     format(most, scientific = FALSE)), max = most)
  expr <- substitute(.expr)
  if (is.symbol(expr)) {
    val <- get0(as.character(expr), envir = parent.frame(), inherits = TRUE)
    if (is.language(val)) expr <- val
  }
  dots <- list(...)
  data <- list(._expr_. = expr, ._globals_. = named_list(dots, "`...` arguments"),
               ._args_. = named_list(.args, "items in `.args`"), ._everywhere_. = TRUE)
  prof <- profile_of(.compute)
  out <- if (isTRUE(prof$sync)) list(sync_mirai(prof, data, seed = FALSE))
         else .Call(C_mirai_host_broadcast, prof$host, data, .min)
  invisible(structure(out, class = "mirai_map"))
}
