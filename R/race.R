# race_mirai(): wait for whichever mirai resolves first.

#' Race mirai
#'
#' Returns the index of the first resolved mirai in a list, waiting for one
#' to resolve if none has yet. The wait blocks on the compute profile's
#' completion signal, so it uses no CPU, and can be interrupted with Ctrl-C.
#'
#' Calling it repeatedly, removing the winner each time, processes results
#' in the order in which they complete.
#'
#' @param x (list) a list of 'mirai' (or a 'mirai_map'). Elements that are
#'   not mirai count as resolved. No default: required.
#' @param .compute (character) name of the compute profile; daemons must be
#'   set for it. Default NULL: the current profile.
#' @return Integer index of the first resolved element (the lowest one if
#'   several are resolved), or `0L` for an empty list.
#' @seealso [mirai_map()], [unresolved()]
#' @examplesIf interactive()
#' daemons(2)
#' ms <- list(slow = mirai(Sys.sleep(1)), fast = mirai(Sys.sleep(0.1)))
#' race_mirai(ms)
#' while (length(ms)) {
#'   i <- race_mirai(ms)
#'   cat("resolved:", names(ms)[i], "\n")
#'   ms <- ms[-i]
#' }
#' daemons(0)
#' @export
race_mirai <- function(x, .compute = NULL) {
  needed_profile(.compute)
  if (is_mirai(x)) x <- list(x)
  if (inherits(x, "mirai_map")) x <- as.list(x)
  if (!is.list(x)) abort(sprintf("`x` must be a list of mirai, not %s", typeof(x)))
  .Call(C_mirai_race, lapply(unclass(x), function(m) if (is_mirai(m)) aio_of(m)))
}
