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

# Host bytes per queued task, each figure from a fresh R process: there,
# after a warm-up of 1,000 tasks, one daemon (dispatcher) is kept busy and
# `n` tasks are queued behind it, either as one mirai_map() over 1:n
# ("map") or as n `mirai(i, i = i)` calls ("mirai"). In a process that has
# run other jobs first, part of the growth lands in memory those jobs freed
# and the figure depends on what they were; a fresh process has no such
# credit. Returns one row per run: VmRSS growth per task, R's heap growth
# per task (Ncells * 56 + Vcells * 8 B, by gc()), and how many were still
# queued when measured.
queued_memory_fresh <- function(what, n, runs) {
  code <- sprintf('
    suppressPackageStartupMessages(library(mirai))
    rss <- function() { l <- grep("^VmRSS:", readLines("/proc/self/status"), value = TRUE)
                        as.numeric(gsub("[^0-9]", "", l)) * 1024 }
    heap <- function() { g <- gc(); g["Ncells", "used"] * 56 + g["Vcells", "used"] * 8 }
    n <- %d; map <- %s
    daemons(1, dispatcher = TRUE)
    w <- if (map) mirai_map(1:1000, identity)[] else collect_mirai(lapply(1:1000, function(i) mirai(i, i = i)))
    rm(w)
    busy <- mirai(Sys.sleep(300))
    Sys.sleep(0.3)
    x <- seq_len(n)
    h0 <- heap(); r0 <- rss()
    q <- if (map) mirai_map(x, identity) else lapply(x, function(i) mirai(i, i = i))
    h1 <- heap(); r1 <- rss()
    cat(sprintf("MEM %%.1f %%.1f %%d\\n", (r1 - r0) / n, (h1 - h0) / n, status()$mirai[["awaiting"]]))
    invisible(daemons(0))', as.integer(n), if (what == "map") "TRUE" else "FALSE")
  rscript <- file.path(R.home("bin"), "Rscript")
  env <- paste0("R_LIBS=", paste(.libPaths(), collapse = .Platform$path.sep))
  rows <- lapply(seq_len(runs), function(k) {
    out <- system2(rscript, c("-e", shQuote(code)), stdout = TRUE, stderr = FALSE, env = env)
    f <- scan(text = sub("^MEM ", "", grep("^MEM ", out, value = TRUE)[1L]), quiet = TRUE)
    data.frame(rss_B = f[1L], Rheap_B = f[2L], native_B = f[1L] - f[2L], still_queued = f[3L])
  })
  do.call(rbind, rows)
}
