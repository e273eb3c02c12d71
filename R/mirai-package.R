#' mirai: Minimalist Async Evaluation Framework for R
#'
#' Evaluates R expressions asynchronously, in parallel, on local or remote
#' persistent processes ('daemons'), over a native transport written in Rust.
#' A 'mirai' resolves by itself once its result arrives.
#'
#' The main entry points: [mirai()] to evaluate an expression in another
#' process, [daemons()] to set up persistent processes (locally, on other
#' machines, or through an HPC scheduler), [mirai_map()] to map a function
#' in parallel, and [make_cluster()] for base R's 'parallel' package. A
#' 'mirai' is also a promise (see [as.promise.mirai()]) for Shiny and
#' plumber.
#'
#' Start with `vignette("mirai", package = "mirai")`, a quick reference; the
#' other vignettes are listed by `vignette(package = "mirai")`.
#'
#' @useDynLib mirai, .registration = TRUE, .fixes = "C_"
#' @aliases NULL mirai-package
#' @keywords internal
"_PACKAGE"

# Session state: compute profiles and the current profile name. On a daemon,
# `daemon` is TRUE (see on_daemon()).
. <- new.env(parent = emptyenv())
.$profiles <- new.env(parent = emptyenv())
# Every profile name ever set in the session (a reset keeps its name here):
# cluster IDs count them, so that no two clusters share an ID.
.$profile_names <- new.env(parent = emptyenv())
.$current <- "default"
.$daemon <- FALSE

`%||%` <- function(x, y) if (is.null(x)) y else x

.unresolved <- structure(NA, class = "unresolvedValue")

# On every mirai()'s path: the common cases are tested inline, the check
# (and its one message) is check_compute()'s.
profile_of <- function(.compute) {
  if (is.null(.compute)) return(.$profiles[[.$current]])
  if (!is.character(.compute) || length(.compute) != 1L || is.na(.compute)) check_compute(.compute)
  .$profiles[[.compute]]
}

# A mirai's `$data` binding calls this (see init in rust/src/r/layer/object.rs).
aio_data <- function(aio) .Call(C_mirai_aio_data, aio)

# The finalizer of every mirai's aio handle, shared (R_FINALIZED in
# rust/src/r/layer/handle.rs).
aio_free <- function(aio) .Call(C_mirai_aio_free, aio)

.onLoad <- function(libname, pkgname) {
  .Call(C_mirai_r_init, aio_data, .unresolved, aio_free)
  # Defined once, natively (mirai_constants in rust/src/r/glue/helpers.rs): the
  # daemon's exit codes, the error values and their texts, the kinds of
  # what the daemon's loop receives, the wildcard hosts, and the timeouts
  # and limits that R checks arguments against and its documentation
  # quotes (see limit()).
  k <- .Call(C_mirai_constants)
  .$codes <- k$exit_codes
  .$error_codes <- k$error_codes
  .$error_texts <- k$error_texts
  .$recv_kinds <- k$recv_kinds
  .$wildcard_hosts <- k$wildcard_hosts
  .$limits <- k$limits
}
