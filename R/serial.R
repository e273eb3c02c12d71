# Custom serialization of reference objects (external pointers,
# environments). The hooks themselves are native (rust/src/r/layer/serial.rs); this
# file only builds and stores configurations.

as_function_list <- function(f, n, what) {
  if (is.function(f)) f <- rep(list(f), n)
  if (!is.list(f) || length(f) != n || !all(vapply(f, is.function, logical(1L))))
    abort(sprintf("`%s` must be a function, or a list of %d functions (one per class)", what, n))
  unname(f)
}

#' Create Serialization Configuration
#'
#' Builds a configuration for custom serialization of reference objects
#' (external pointers, environments, weak references) of the given classes,
#' such as Arrow tables, polars data frames or torch tensors, which R's own
#' serialization cannot send to another process. Use it with
#' `daemons(serial = ...)`, or register it for the session with
#' [register_serial()].
#'
#' When an object to be sent inherits one of `class`, the corresponding
#' `sfunc` is called on it and must return a raw vector. That vector is sent
#' in place of the object, and `ufunc` is called on it at the other end to
#' rebuild the object. This happens in both directions: for task data sent
#' to daemons and for results sent back.
#'
#' The functions are sent to every daemon when it connects, together with
#' their enclosing environments: define them at top level or in a package.
#'
#' @param class (character) a vector of class names. `""` stands for every
#'   external pointer, whatever its class. No default: required.
#' @param sfunc (function or list) a function (or a list of functions, one
#'   per class) taking an object and returning a raw vector. No default:
#'   required.
#' @param ufunc (function or list) a function (or a list of functions, one
#'   per class) taking a raw vector and returning the rebuilt object. No
#'   default: required.
#' @return A list of three: the classes, the serialization functions and the
#'   unserialization functions.
#' @seealso [register_serial()], [daemons()]
#' @examples
#' cfg <- serial_config(
#'   "myobj",
#'   function(x) serialize(as.list.environment(x), NULL),
#'   function(r) structure(list2env(unserialize(r)), class = "myobj")
#' )
#' cfg
#' @examplesIf interactive()
#' obj <- structure(list2env(list(a = 1:3)), class = "myobj")
#' daemons(1, serial = cfg)
#' mirai(sum(obj$a), obj = obj)[]
#' daemons(0)
#' @export
serial_config <- function(class, sfunc, ufunc) {
  if (!is.character(class) || !length(class) || anyNA(class))
    abort("`class` must be a character vector of class names")
  list(class, as_function_list(sfunc, length(class), "sfunc"), as_function_list(ufunc, length(class), "ufunc"))
}

# Joins configurations; for a class given twice the later one wins.
merge_serial <- function(old, new) {
  if (is.null(old)) return(new)
  if (is.null(new)) return(old)
  keep <- !old[[1L]] %in% new[[1L]]
  list(c(old[[1L]][keep], new[[1L]]), c(old[[2L]][keep], new[[2L]]), c(old[[3L]][keep], new[[3L]]))
}

#' Register Serialization Configuration
#'
#' Registers custom serialization functions for the rest of the session.
#' [daemons()] then uses them for every compute profile it sets up with
#' `serial = NULL` (profiles already set up are not affected). Registering a
#' class again replaces its functions.
#'
#' @inheritParams serial_config
#' @return NULL, invisibly.
#' @seealso [serial_config()]
#' @examples
#' register_serial(
#'   "myobj",
#'   function(x) serialize(as.list.environment(x), NULL),
#'   function(r) structure(list2env(unserialize(r)), class = "myobj")
#' )
#' @examplesIf interactive()
#' obj <- structure(list2env(list(a = 1:3)), class = "myobj")
#' daemons(1)
#' mirai(sum(obj$a), obj = obj)[]
#' daemons(0)
#' @export
register_serial <- function(class, sfunc, ufunc) {
  .$serial <- merge_serial(.$serial, serial_config(class, sfunc, ufunc))
  invisible()
}

#' Custom Serialization Functions (Older Interface)
#'
#' The interface of earlier mirai versions: registers one pair of functions
#' for the session, applied to every external pointer (or, with `class`, to
#' objects inheriting that class). Profiles set up by [daemons()] afterwards
#' use them, together with anything registered by [register_serial()]. New
#' code should use [serial_config()] or [register_serial()].
#'
#' @param refhook (list) two functions, the serialization function (object
#'   to raw vector) and the unserialization function (raw vector to object);
#'   `list()` or NULL to cancel. Default `list()`.
#' @param class (character) the class name the functions apply to; `""`
#'   means every external pointer. Default `""`.
#' @param vec (logical) ignored; kept for compatibility. Default FALSE.
#' @return NULL, invisibly.
#' @examples
#' serialization(refhook = list(function(x) serialize(NULL, NULL), function(r) NULL))
#' serialization(NULL)
#' @export
serialization <- function(refhook = list(), class = "", vec = FALSE) {
  if (!length(refhook)) {
    .$refhook <- NULL
    cat("[ mirai ] serialization functions cancelled\n", file = stderr())
    return(invisible())
  }
  if (!is.list(refhook) || length(refhook) != 2L)
    abort("`refhook` must be a list of two functions: serialization and unserialization")
  .$refhook <- serial_config(class, refhook[[1L]], refhook[[2L]])
  cat("[ mirai ] serialization functions registered\n", file = stderr())
  invisible()
}

# The configuration daemons() uses when given `serial = NULL`.
session_serial <- function() merge_serial(.$refhook, .$serial)
