# Switching the current compute profile for a block of code or a frame.

#' With Daemons
#'
#' Makes a compute profile the current one, so that [mirai()],
#' [mirai_map()], [daemons()] and the other functions use it when their
#' `.compute` is NULL.
#'
#' `with_daemons()` does so while evaluating `expr`; `local_daemons()` until
#' `frame` exits (called at top level, the profile stays current until
#' changed). Either way the previous profile is restored afterwards, also
#' after an error. The profile must already have daemons set.
#'
#' `with(daemons(...), expr)` sets daemons, makes their profile current for
#' `expr`, then resets them with `daemons(0)` and restores the previous
#' profile.
#'
#' @param .compute (character) name of the compute profile to make current;
#'   daemons must be set for it. No default: required.
#' @param expr (expression) the expression to evaluate. No default: required.
#' @param frame (environment) the frame whose exit restores the previous
#'   profile. Default `parent.frame()`: that of the caller.
#' @return `with_daemons()`: the value of `expr`. `local_daemons()`: the
#'   previous profile name, invisibly. `with()`: the value of `expr`.
#' @seealso [daemons()]
#' @examples
#' daemons(sync = TRUE, .compute = "debug")
#' with_daemons("debug", mirai(on_daemon())[])
#' daemons(0, .compute = "debug")
#' @examplesIf interactive()
#' daemons(1, dispatcher = FALSE, .compute = "cpu")
#' with_daemons("cpu", mirai(Sys.getpid())[])
#'
#' f <- function() {
#'   local_daemons("cpu")
#'   mirai(1 + 1)[]
#' }
#' f()
#' daemons(0, .compute = "cpu")
#'
#' with(daemons(1, .compute = "tmp"), {
#'   mirai(2 + 2)[]
#' })
#' daemons_set(.compute = "tmp")
#' @export
with_daemons <- function(.compute, expr) {
  prev <- switch_profile(.compute)
  on.exit(.$current <- prev)
  expr
}

#' @rdname with_daemons
#' @export
local_daemons <- function(.compute, frame = parent.frame()) {
  if (!is.environment(frame)) abort("`frame` must be an environment")
  prev <- switch_profile(.compute)
  restore <- function() .$current <- prev
  do.call(base::on.exit, list(as.call(list(restore)), TRUE, FALSE), envir = frame)
  invisible(prev)
}

#' @param data (miraiDaemons) the value of a call to [daemons()]. No
#'   default: required.
#' @param ... (any) not used. Default: none.
#' @rdname with_daemons
#' @export
with.miraiDaemons <- function(data, expr, ...) {
  prof <- class(data)[[2L]]
  prev <- .$current
  .$current <- prof
  on.exit({
    .$current <- prev
    daemons(0, .compute = prof)
  })
  expr
}

# Makes `.compute` current; returns the previous profile name.
switch_profile <- function(.compute) {
  check_compute(.compute, null = FALSE)
  if (is.null(.$profiles[[.compute]]))
    abort(sprintf("the '%s' compute profile does not exist: set it first with daemons(..., .compute = \"%s\")",
                 .compute, .compute))
  prev <- .$current
  .$current <- .compute
  prev
}
