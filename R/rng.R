# RNG streams (L'Ecuyer-CMRG): by default one per daemon; with a `seed`,
# one per mirai. Streams are advanced by the native `nextRNGStream`
# (rust/src/host/rng.rs), which gives the same result as parallel's.

# The profile's starting stream. The session's RNG first moves on by one
# draw, so that profiles set up one after the other without a seed start
# from different streams; apart from that draw the session's RNG state (and
# kind) is left as it was.
init_stream <- function(seed) {
  .Call(C_mirai_rng_advance)
  genv <- .GlobalEnv
  saved <- genv[[".Random.seed"]]
  on.exit(assign(".Random.seed", saved, envir = genv))
  RNGkind("L'Ecuyer-CMRG")
  if (!is.null(seed)) set.seed(seed)
  genv[[".Random.seed"]]
}

# Returns the profile's current stream and moves it on.
next_stream <- function(prof) {
  s <- prof$stream
  if (is.integer(s)) prof$stream <- .Call(C_mirai_next_stream, s)
  s
}

# Makes `s` the RNG state of this process (on a daemon).
set_stream <- function(s) {
  if (!is.numeric(s) || length(s) != 7L) abort("`rs` must be an integer vector of length 7")
  suppressWarnings(RNGkind("L'Ecuyer-CMRG"))
  assign(".Random.seed", as.integer(s), envir = .GlobalEnv)
}

# Sync mode: evaluates `expr` on the task's own stream when the profile is
# seeded (so results match those from daemons), then puts the session's RNG
# state back.
with_task_stream <- function(prof, expr) {
  if (is.null(prof$seed)) return(expr)
  genv <- .GlobalEnv
  saved <- genv[[".Random.seed"]]
  on.exit(
    if (is.null(saved)) rm(".Random.seed", envir = genv)
    else assign(".Random.seed", saved, envir = genv)
  )
  assign(".Random.seed", next_stream(prof), envir = genv)
  expr
}

#' Next Random Number Stream
#'
#' Returns the compute profile's current L'Ecuyer-CMRG random number stream
#' (an integer vector of length 7, a valid `.Random.seed`) and moves the
#' profile on to the next stream, as [parallel::nextRNGStream()] would. For
#' developers: e.g. to start a daemon by hand on the next stream with
#' `daemon(url, rs = nextstream())`.
#'
#' With `daemons(seed = NULL)` (the default) every daemon gets its own
#' stream: with dispatcher, the i-th daemon to connect gets the i-th stream
#' after the profile's; without, each launch command carries the next one.
#' With `daemons(seed = k)` each mirai also gets its own stream, in the
#' order the mirai are created, so results are reproducible whatever the
#' number of daemons and however tasks are scheduled.
#'
#' @param .compute (character) name of the compute profile. Default
#'   `"default"`.
#' @return An integer vector of length 7, or NULL if daemons are not set.
#' @seealso [nextget()], [daemons()] (its `seed` argument)
#' @examples
#' daemons(sync = TRUE, seed = 42)
#' s <- nextstream()
#' identical(nextget("stream"), parallel::nextRNGStream(s))
#' daemons(0)
#' @export
nextstream <- function(.compute = "default") {
  prof <- profile_of(.compute)
  if (is.null(prof)) return(NULL)
  next_stream(prof)
}
