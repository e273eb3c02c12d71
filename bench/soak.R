# Soak: mixed tasks on 4 local daemons with a dispatcher (tiny ones, 10 MB
# payloads both ways, R errors, .timeout expiries, stop_mirai() while
# running), up to 50 mirai in flight, while every 4 s one daemon is
# SIGKILLed (and replaced by the pool). Prints progress every
# 30 s, then a report: outcomes per kind, tasks/s, kill-to-resolution
# latency, host RSS / fd / thread series (first minute against the rest),
# leftover processes, and PASS or FAIL (exit status 1 on FAIL).
#
# Usage: Rscript bench/soak.R [minutes] [retry]   (default 10 and 0; from
# anywhere). With retry > 0 every task has that `.retry`, and none may
# resolve to errorValue 19. Dead daemons are replaced by the pool
# (daemons(n) heals).
#
# The logic lives in tests/testthat/helper-soak.R, shared with
# tests/testthat/test-soak.R (a 40 s version). Linux only.

args <- commandArgs(trailingOnly = TRUE)
minutes <- if (length(args)) as.numeric(args[[1L]]) else 10
retry <- if (length(args) > 1L) as.integer(args[[2L]]) else 0L
if (is.na(minutes) || minutes <= 0 || is.na(retry) || retry < 0L)
  stop("usage: Rscript bench/soak.R [minutes] [retry]")

file_arg <- grep("^--file=", commandArgs(FALSE), value = TRUE)
here <- if (length(file_arg)) dirname(normalizePath(sub("^--file=", "", file_arg[[1L]]))) else "bench"
source(file.path(here, "..", "tests", "testthat", "helper-soak.R"))
suppressPackageStartupMessages(library(mirai))

say <- function(x) { cat(x, "\n", sep = ""); flush(stdout()) }
say(sprintf("mirai %s, R %s, %d cores, load average %s, %s", format(utils::packageVersion("mirai")),
            getRversion(), parallel::detectCores(), paste(strsplit(readLines("/proc/loadavg"), " ")[[1L]][1:3], collapse = " "),
            format(Sys.time(), "%Y-%m-%d %H:%M:%S")))
seconds <- minutes * 60
t0 <- Sys.time()
res <- tryCatch(
  soak_run(seconds = seconds, n = 4L, max_inflight = 50L, kill_every = 4, sample_every = 5,
           warmup = min(60, seconds / 3), grace = 60, progress_every = 30, log = say, retry = retry),
  error = function(e) e
)
if (inherits(res, "error")) {
  say(sprintf("the soak stopped with an error: %s", conditionMessage(res)))
  say("FAIL")
  quit(status = 1L)
}
# Bounds: growth after the first minute, kill-to-19 latency (s), timeout
# lateness (ms); generous for a loaded machine.
checks <- soak_checks(res, rss_mb = 100, heap_mb = 40, fds = 20, threads = 20, kill_latency = 5, timeout_late = 5000)
soak_report(res, checks, log = say)
say(sprintf("wall time %.1f s, load average %s", as.numeric(difftime(Sys.time(), t0, units = "secs")),
            paste(strsplit(readLines("/proc/loadavg"), " ")[[1L]][1:3], collapse = " ")))
quit(status = if (all(checks$ok)) 0L else 1L)
