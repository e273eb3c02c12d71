# Shared by the bench scripts: time each job `reps` times, rotating the order
# every round so load swings hit every setup alike. Returns seconds,
# one row per round and one column per job.
`%||%` <- function(x, y) if (is.null(x)) y else x

time_interleaved <- function(jobs, reps) {
  secs <- matrix(NA_real_, reps, length(jobs), dimnames = list(NULL, names(jobs)))
  for (r in seq_len(reps)) {
    ord <- names(jobs)[(seq_along(jobs) + r - 2L) %% length(jobs) + 1L]
    for (nm in ord) {
      invisible(gc())
      t0 <- Sys.time()
      out <- jobs[[nm]]()
      # A job that sets things up first times its own part: "secs" attribute.
      secs[r, nm] <- attr(out, "secs", exact = TRUE) %||% as.double(Sys.time() - t0, units = "secs")
      rm(out)
    }
  }
  secs
}
