# Error values and their printing; errors raised for the user, and the
# checks of arguments that raise them.

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

# The number of the error value called `name` (as the native side names
# them): 5 for "timeout", 19 for "reset", 20 for "canceled".
error_code <- function(name) .$error_codes[[name]]

# An error raised by mirai's native code (rust/src/r/layer/call.rs, which calls
# this from the .Call it was in): as abort(), naming the user's call
# through the function that made the .Call, the innermost frame below.
native_error <- function(msg) abort(msg, frame = user_frame(sys.nframe() - 1L))

# ---- checking arguments -----------------------------------------------------
#
# Each check returns its argument (a number as a double) or raises the one
# error for it: "`name` must be <what>", naming the user's call. `what`
# defaults to the usual wording; an argument with more to say (a unit, a
# range) passes its own.

check_flag <- function(x, name, na = FALSE) {
  if (is.logical(x) && length(x) == 1L && (na || !is.na(x))) return(x)
  abort(sprintf("`%s` must be %s", name, if (na) "TRUE, NA or FALSE" else "TRUE or FALSE"))
}

is_string <- function(x) is.character(x) && length(x) == 1L && !is.na(x)

check_string <- function(x, name, what = "a character string") {
  if (is_string(x)) return(x)
  abort(sprintf("`%s` must be %s", name, what))
}

# A number from `min` to `max` (above `min` if `open`).
check_number <- function(x, name, what = "a non-negative number", min = 0, max = Inf,
                         open = FALSE) {
  if (is.numeric(x) && length(x) == 1L && !is.na(x) && (if (open) x > min else x >= min) &&
      x <= max) return(as.double(x))
  abort(sprintf("`%s` must be %s", name, what))
}

# A compute profile's name (NULL, where allowed, is dealt with by the caller).
check_compute <- function(.compute, null = TRUE) {
  check_string(.compute, ".compute",
               paste0("a character string naming a compute profile", if (null) ", or NULL"))
}

# `tlscert` for daemons, as daemon() takes it: a PEM file path, or c(pem, "").
check_tlscert <- function(x) {
  if (is.character(x) && length(x) %in% 1:2 && !anyNA(x) && (length(x) == 1L || !nzchar(x[[2L]])))
    return(x)
  abort("`tlscert` must be a PEM file path or c(certificate chain, \"\")")
}

# ---- what the native side defines --------------------------------------------

# A timeout or limit the native side defines (`limits` of mirai_constants
# in rust/src/r/glue/helpers.rs), by name; R checks arguments against these and
# the documentation quotes them (through `r ...` in roxygen comments).
limit <- function(name) .$limits[[name]]

# The wildcard hosts (which listen on every interface), for the
# documentation: "an empty one as in `tcp://:port`, `*`, `0.0.0.0` or `::`".
wildcard_text <- function() {
  h <- .$wildcard_hosts
  shown <- ifelse(nzchar(h), sprintf("`%s`", h), "an empty one as in `tcp://:port`")
  paste0(paste(shown[-length(shown)], collapse = ", "), " or ", shown[[length(shown)]])
}

# Bytes in words: "1 TiB", "16 KiB", "1024 bytes".
bytes_text <- function(b) {
  units <- c("bytes", "KiB", "MiB", "GiB", "TiB", "PiB")
  k <- 0L
  while (b >= 1024 && b %% 1024 == 0 && k < length(units) - 1L) {
    b <- b / 1024
    k <- k + 1L
  }
  paste(format(b, big.mark = ",", scientific = FALSE), units[[k + 1L]])
}

# What the error value called `name` means: "Connection reset" for "reset".
error_meaning <- function(name) .$error_texts[[error_code(name)]]

# Its arguments pasted into one inline code span, for the documentation.
code_span <- function(...) paste0("`", paste(...), "`")

# An error value's number and what it means: "19 | Connection reset".
error_text <- function(code) {
  texts <- .$error_texts
  txt <- if (!is.na(code) && code >= 1L && code <= length(texts)) texts[[code]] else "Unknown error"
  sprintf("%d | %s", code, txt)
}

#' @export
print.errorValue <- function(x, ...) {
  cat(sprintf("'errorValue' int %s\n", error_text(as.integer(x))))
  invisible(x)
}

#' @export
print.miraiError <- function(x, ...) {
  cat("'miraiError' chr ", unclass(x), "\n", sep = "")
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
#' `is_error_value()`: any of the above, or an integer error code:
#' `r error_code("timeout")` (timed out),
#' `r error_code("reset")` (connection reset: the daemon died or
#' `daemons(0)` was called), `r error_code("canceled")` (canceled).
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

# The exit codes daemon() returns, in words, for its documentation:
# "0 connection ended, 1 idletime, ...".
exit_codes_text <- function() {
  words <- c(closed = "connection ended", idle = "idletime", wall = "walltime", tasks = "maxtasks")
  paste(sprintf("%d %s", .$codes[names(words)], words), collapse = ", ")
}

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
  expected <- "a single integer exit code"
  xc <- check_number(xc, "xc", expected, min = -.Machine$integer.max, max = .Machine$integer.max)
  if (xc != trunc(xc)) abort(sprintf("`xc` must be %s", expected))
  xc <- as.integer(xc)
  what <- c(closed = "Daemon connection terminated", idle = "Daemon idletime limit reached",
            wall = "Daemon walltime limit reached", tasks = "Daemon task limit reached")
  name <- names(.$codes)[match(xc, .$codes)]
  sprintf("%d | %s", xc, if (!is.na(name) && name %in% names(what)) what[[name]] else "Unknown exit code")
}
