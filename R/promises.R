# promises: a mirai (or a mirai_map) as a promise, settled when it resolves.

#' Make a Promise from a mirai
#'
#' Methods for [promises::as.promise()], so that a 'mirai' (or a
#' 'mirai_map') can be used wherever a promise can: with [promises::then()],
#' the promise pipes such as `%...>%`, and in Shiny or plumber.
#'
#' The promise settles as soon as the mirai resolves, with no polling: the
#' thread that receives the result schedules the settlement on the 'later'
#' event loop, which runs it on R's main thread when R is idle (in an
#' interactive session, or in Shiny or plumber), or when
#' [later::run_now()] is called.
#'
#' A mirai whose value is a 'miraiError' rejects with an error carrying the
#' remote error's message and call. One that resolves to another error
#' value rejects with an error naming it, such as "the mirai timed out
#' (errorValue `r error_text(error_code("timeout"))`)" or "the mirai's daemon
#' disconnected, or its daemons were reset (errorValue
#' `r error_text(error_code("reset"))`)". Either way the
#' rejection reason is a 'simpleError' (of class 'miraiPromiseError' too). A
#' 'miraiInterrupt' fulfils with its value. A mirai_map becomes a promise
#' of the list of its values ([promises::promise_all()]).
#'
#' The promise is made once per mirai and cached in it, so calling
#' `as.promise()` again returns the same promise.
#'
#' The settlement is scheduled on later's global event loop: a promise is
#' not settled while only a private loop runs (`later::with_temp_loop()`).
#' With versions of 'promises' older than 1.3.0, a `then()` callback that
#' returns a mirai fulfils with the mirai object itself; return
#' `as.promise(mirai(...))` to chain on its value.
#'
#' @param x (mirai or mirai_map) the object to turn into a promise. No
#'   default: required.
#' @return A promise (`as.promise`); TRUE (`is.promising`).
#' @seealso [mirai_map()] (its `.promise` argument)
#' @examplesIf interactive()
#' library(promises)
#' daemons(1)
#' p1 <- as.promise(mirai(1 + 1)) %...>% print()
#' p2 <- mirai(stop("boom")) %...!% (function(e) cat("rejected:", conditionMessage(e), "\n"))
#' # Outside an interactive session, run later's event loop until they have
#' # settled (nothing is scheduled on it before a result arrives, so
#' # later::loop_empty() is no guide).
#' done <- FALSE
#' promise_all(p1, p2) %...>% (function(v) done <<- TRUE)
#' while (!done) later::run_now(0.1)
#' daemons(0)
#' @usage \method{as.promise}{mirai}(x)
#' @name as.promise.mirai
#' @exportS3Method promises::as.promise
as.promise.mirai <- function(x) {
  p <- .subset2(x, "promise")
  if (!is.null(p)) return(p)
  p <- promises::promise(function(resolve, reject) {
    settle <- function() {
      v <- .subset2(x, "data")
      if (is_error_value(v) && !is_mirai_interrupt(v)) reject(promise_error(v)) else resolve(v)
    }
    aio <- aio_of(x)
    # FALSE: already resolved (or resolved meanwhile): settle now.
    if (is.null(aio) || !.Call(C_mirai_on_resolve, aio, settle)) settle()
  })
  assign("promise", p, envir = x)
  p
}

#' @rdname as.promise.mirai
#' @usage \method{as.promise}{mirai_map}(x)
#' @exportS3Method promises::as.promise
as.promise.mirai_map <- function(x) {
  promises::promise_all(.list = lapply(unclass(x), as.promise.mirai))
}

#' @rdname as.promise.mirai
#' @details `is.promising()` methods return TRUE for a mirai and a
#'   mirai_map. They take effect with versions of 'promises' in which
#'   `is.promising()` is generic (1.3.0 and later); with older versions,
#'   pipes and [promises::then()] still accept a mirai, as they call
#'   `as.promise()`.
#' @usage \method{is.promising}{mirai}(x)
#' @exportS3Method promises::is.promising
is.promising.mirai <- function(x) TRUE

#' @rdname as.promise.mirai
#' @usage \method{is.promising}{mirai_map}(x)
#' @exportS3Method promises::is.promising
is.promising.mirai_map <- function(x) TRUE

# The rejection reason for error value `v`: the remote error itself (its
# message and call) for a miraiError, otherwise an error naming the value.
# Either way a 'simpleError' (as the reference's stop() makes), which code
# written for it tests with inherits(e, "simpleError").
promise_error <- function(v) {
  class <- c("miraiPromiseError", "simpleError")
  if (is_mirai_error(v)) {
    return(errorCondition(attr(v, "message", exact = TRUE) %||% unclass(v),
                          call = if (startsWith(unclass(v), "Error in ")) attr(v, "call", exact = TRUE),
                          class = class,
                          stack.trace = attr(v, "stack.trace", exact = TRUE),
                          condition.class = attr(v, "condition.class", exact = TRUE)))
  }
  code <- as.integer(v)
  name <- names(.$error_codes)[match(code, .$error_codes)]
  what <- switch(if (is.na(name)) "" else name,
                 timeout = "the mirai timed out",
                 reset = "the mirai's daemon disconnected, or its daemons were reset",
                 canceled = "the mirai was cancelled",
                 "the mirai resolved to an error value")
  errorCondition(sprintf("%s (errorValue %s)", what, error_text(code)), class = class,
                 call = NULL, value = v)
}
