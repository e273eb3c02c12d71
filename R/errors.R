# Error values and their printing.

.nng_errors <- c(
  "Interrupted", "Out of memory", "Invalid argument", "Resource busy",
  "Timed out", "Connection refused", "Object closed", "Try again",
  "Not supported", "Address in use", "Incorrect state", "Entry not found",
  "Protocol error", "Destination unreachable", "Address invalid",
  "Permission denied", "Message too large", "Connection aborted",
  "Connection reset", "Operation canceled", "Out of files", "Out of space",
  "Resource already exists", "Read only resource", "Write only resource",
  "Cryptographic error", "Peer could not be authenticated",
  "Option requires argument", "Ambiguous option", "Incorrect type",
  "Connection shutdown"
)

error_text <- function(code) {
  txt <- if (code >= 1L && code <= length(.nng_errors)) .nng_errors[[code]] else "Unknown error"
  sprintf("%d | %s", code, txt)
}

#' @export
print.errorValue <- function(x, ...) {
  cat(sprintf("'errorValue' int %s\n", error_text(as.integer(x))))
  invisible(x)
}

#' @export
print.miraiError <- function(x, ...) {
  cat("'miraiError' chr ", sub("\n$", "", unclass(x)), "\n", sep = "")
  invisible(x)
}

#' @export
print.miraiInterrupt <- function(x, ...) {
  cat("'miraiInterrupt' chr \"\"\n")
  invisible(x)
}

#' @export
print.unresolvedValue <- function(x, ...) {
  cat("'unresolved' logi NA\n")
  invisible(x)
}

#' @export
`$.miraiError` <- function(x, name) attr(x, name, exact = TRUE)

#' @importFrom utils .DollarNames
#' @export
.DollarNames.miraiError <- function(x, pattern = "") {
  grep(pattern, names(attributes(x)), value = TRUE, fixed = TRUE)
}

#' @export
conditionMessage.miraiError <- function(c) attr(c, "message", exact = TRUE)

#' @export
conditionCall.miraiError <- function(c) attr(c, "call", exact = TRUE)

#' Error Validators
#'
#' Tests for the values a 'mirai' resolves to when something went wrong.
#'
#' `is_mirai_error()`: an error in the evaluated code ('miraiError'), with
#' the original message, call, condition classes and stack trace as
#' attributes (`$message`, `$call`, `$condition.class`, `$stack.trace`).
#'
#' `is_mirai_interrupt()`: the evaluation was interrupted ('miraiInterrupt').
#'
#' `is_error_value()`: any of the above, or an integer error code: 5 (timed
#' out), 19 (connection reset: the daemon died or `daemons(0)` was called),
#' 20 (canceled).
#'
#' @param x (any) an object, such as the `$data` of a 'mirai'. No default:
#'   required.
#' @return Logical value.
#' @seealso [is_mirai()], [unresolved()]
#' @examples
#' daemons(sync = TRUE)
#' m <- mirai(stop("boom"))
#' is_mirai_error(m$data)
#' is_error_value(m$data)
#' is_mirai_interrupt(m$data)
#' daemons(0)
#' @export
is_mirai_error <- function(x) inherits(x, "miraiError")

#' @rdname is_mirai_error
#' @export
is_mirai_interrupt <- function(x) inherits(x, "miraiInterrupt")

#' @rdname is_mirai_error
#' @export
is_error_value <- function(x) inherits(x, "errorValue")

#' Translate Daemon Exit Codes
#'
#' Describes an exit code returned by [daemon()] in words.
#'
#' @param xc (integer) a single exit code, as returned by [daemon()]. No
#'   default: required.
#' @return A character string.
#' @examples
#' nextcode(0L)
#' nextcode(3L)
#' @export
nextcode <- function(xc) {
  if (!is.numeric(xc) || length(xc) != 1L || is.na(xc))
    stop("`xc` must be a single integer exit code", call. = FALSE)
  xc <- as.integer(xc)
  what <- c(closed = "Daemon connection terminated", idle = "Daemon idletime limit reached",
            wall = "Daemon walltime limit reached", tasks = "Daemon task limit reached")
  name <- names(.$codes)[match(xc, .$codes)]
  sprintf("%d | %s", xc, if (!is.na(name) && name %in% names(what)) what[[name]] else "Unknown exit code")
}
