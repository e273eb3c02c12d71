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

# ---- errors raised for the user ---------------------------------------------

# The frame an error names: the outermost frame of a mirai function on the
# chain of callers that starts at frame `from` (by default the caller of
# the function calling user_frame()), following each frame's parent
# through mirai's own functions and base R's (tryCatch(), lapply(), ...)
# and stopping at the user's code. So an error in a helper of daemons()
# names `daemons("2")`, one in the daemons() that make_cluster() calls
# names make_cluster(), and one in a mirai() evaluated inside
# with_daemons(...) names mirai(). 0 if no mirai function is on that chain.
user_frame <- function(from = sys.parent()) {
  ns <- topenv(environment(user_frame))
  parents <- sys.parents()
  found <- 0L
  i <- from
  while (i > 0L) {
    env <- environment(sys.function(i))
    if (is.null(env)) break
    if (identical(topenv(env), ns)) found <- i
    else if (!identical(env, .BaseNamespaceEnv)) break
    # A function called from an environment that is no frame's (a task's on
    # a daemon, say) has itself for parent in sys.parents(): the chain ends.
    if (parents[[i]] >= i) break
    i <- parents[[i]]
  }
  found
}

# The call of frame `i` (NULL for 0), as the user wrote it: `x[.stop]`
# rather than the `[.mirai_map`(x, .stop) that the method's frame records.
frame_call_at <- function(i) {
  if (i <= 0L) return(NULL)
  call <- sys.call(i)
  if (is.call(call) && is.symbol(call[[1L]]) && startsWith(as.character(call[[1L]]), "[."))
    call[[1L]] <- as.name("[")
  call
}

# The user's call (see user_frame()).
user_call <- function(from = sys.parent()) frame_call_at(user_frame(from))

# Raises an error whose message is `...` pasted together, naming the call
# of frame `frame` (the user's, see user_frame()). With cli installed (and
# rlang, which its errors are), styled as the reference's cli errors are
# ("Error in `daemons()`: ! ..."), the backtrace ending at that frame; else
# a plain 'simpleError' ("Error in daemons("2") : ..."). The message is
# kept as it is (never re-wrapped), so code matching it sees the same text
# either way.
abort <- function(..., frame = user_frame(), call = frame_call_at(frame), class = NULL, parent = NULL) {
  msg <- paste0(...)
  if (use_rlang()) {
    at <- if (frame > 0L) sys.frame(frame) else parent.frame()
    rlang::abort(msg, class = class, call = call, parent = parent, .frame = at, .trace_bottom = at)
  }
  stop(structure(class = c(class, "simpleError", "error", "condition"), list(message = msg, call = call)))
}

# A warning naming the user's call.
warn <- function(..., call = user_call()) {
  warning(warningCondition(paste0(...), call = call))
}

# Whether errors are raised through rlang with cli's styling: both
# installed (looked up once a session).
use_rlang <- function() {
  if (!use_cli()) return(FALSE)
  if (is.null(.$rlang)) .$rlang <- requireNamespace("rlang", quietly = TRUE)
  .$rlang
}

# An error raised by mirai's native code (rust/src/r/layer/call.rs, which calls
# this from the .Call it was in): as abort(), naming the user's call
# through the function that made the .Call, the innermost frame below.
native_error <- function(msg) abort(msg, frame = user_frame(sys.nframe() - 1L))

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
    abort("`xc` must be a single integer exit code")
  xc <- as.integer(xc)
  what <- c(closed = "Daemon connection terminated", idle = "Daemon idletime limit reached",
            wall = "Daemon walltime limit reached", tasks = "Daemon task limit reached")
  name <- names(.$codes)[match(xc, .$codes)]
  sprintf("%d | %s", xc, if (!is.na(name) && name %in% names(what)) what[[name]] else "Unknown exit code")
}
