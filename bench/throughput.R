#!/usr/bin/env Rscript
# Throughput of 10,000 tiny tasks on 2 workers: mirai (dispatcher TRUE and
# FALSE) against base R's PSOCK cluster (clusterApplyLB, parLapply), all
# measured in the same run; then host memory per queued task.
#
# Method: all four setups are live at once (mirai via two compute profiles,
# 2 daemons each; one PSOCK cluster of 2 nodes) and their runs are
# interleaved round by round, so load drift hits all alike. The figure is the
# median over BENCH_ROUNDS rounds (default 3) of the wall time of one whole
# 10,000-task job (submit + collect). One untimed warm-up job each first.
#
# The mirai job is `lapply(1:n, function(i) mirai(i, i = i))` then
# collect_mirai(): `i` is passed as a global so the daemon can see it (a bare
# mirai(i) would evaluate `i` on the daemon and return an error value).
#
# Memory: with daemons(1, dispatcher = TRUE) and the daemon kept busy by a
# long Sys.sleep(), queue BENCH_QUEUE (100,000) small tasks and report the
# growth of this process's VmRSS and of R's own heap (gc()) per queued task.
# The sleep is BENCH_BUSY_SECS (default 60) rather than 5 s because queueing
# 100,000 tasks can take more than 5 s; daemons(0) ends it early, and the
# "still queued" column shows whether the queue was intact when measured.
# Then the same in BENCH_MEM_RUNS (3) fresh processes, median
# (queued_memory_fresh, common.R): in this run part of the growth lands in
# memory the throughput jobs freed.
#
# Not a test: prints figures, asserts nothing.

suppressPackageStartupMessages({ library(mirai); library(parallel) })
bench_dir <- dirname(sub("^--file=", "", grep("^--file=", commandArgs(FALSE), value = TRUE)[1L]))
source(file.path(bench_dir, "common.R"))
options(width = 200)

ntask  <- as.integer(Sys.getenv("BENCH_TASKS", "10000"))
rounds <- as.integer(Sys.getenv("BENCH_ROUNDS", "3"))
nqueue <- as.integer(Sys.getenv("BENCH_QUEUE", "100000"))
busy   <- as.numeric(Sys.getenv("BENCH_BUSY_SECS", "60"))
mem_runs <- as.integer(Sys.getenv("BENCH_MEM_RUNS", "3"))

cl <- makePSOCKcluster(2L)
daemons(2, dispatcher = FALSE, .compute = "nodisp")
daemons(2, dispatcher = TRUE,  .compute = "disp")

idx <- seq_len(ntask)
job_mirai <- function(prof) function() {
  ms <- lapply(idx, function(i) mirai(i, i = i, .compute = prof))
  collect_mirai(ms)
}
jobs <- list(
  psock_lb  = function() clusterApplyLB(cl, idx, identity),
  psock_par = function() parLapply(cl, idx, identity),
  nodisp    = job_mirai("nodisp"),
  disp      = job_mirai("disp"),
  map_disp  = function() mirai_map(idx, identity, .compute = "disp")[]
)

# warm-up + correctness check of every job
for (nm in names(jobs)) {
  out <- jobs[[nm]]()
  if (!identical(unlist(out), idx)) cat(sprintf("WARNING: %s returned unexpected values\n", nm))
}

secs <- time_interleaved(jobs, rounds)

invisible(daemons(0, .compute = "nodisp")); invisible(daemons(0, .compute = "disp")); stopCluster(cl)

med <- apply(secs, 2L, median)
tps <- ntask / med
res <- data.frame(
  setup          = c("PSOCK clusterApplyLB", "PSOCK parLapply", "mirai dispatcher=FALSE", "mirai dispatcher=TRUE",
                     "mirai_map(dispatcher=TRUE)[]"),
  median_s       = round(med, 3),
  range_s        = sprintf("%.3f-%.3f", apply(secs, 2L, min), apply(secs, 2L, max)),
  tasks_per_s    = round(tps),
  vs_ApplyLB     = round(tps / tps[["psock_lb"]], 3),
  vs_parLapply   = round(tps / tps[["psock_par"]], 3),
  stringsAsFactors = FALSE
)
cat(sprintf("\n== throughput: %d tiny tasks on 2 workers, median of %d rounds (ratios: tasks/s over PSOCK's) ==\n",
            ntask, rounds))
print(res, row.names = FALSE, right = FALSE)
cat("target: mirai >= 10,000 tasks/s and faster than clusterApplyLB\n")

# ---- host memory per queued task -------------------------------------------
rss_bytes <- function() {
  l <- grep("^VmRSS:", readLines("/proc/self/status"), value = TRUE)
  as.numeric(gsub("[^0-9]", "", l)) * 1024
}
heap_bytes <- function() {           # R's heap in use: Ncells * 56 B + Vcells * 8 B
  g <- gc()
  g["Ncells", "used"] * 56 + g["Vcells", "used"] * 8
}

daemons(1, dispatcher = TRUE)
invisible(mirai(1)[])                                # daemon connected and warm
busy_m <- mirai(Sys.sleep(s), s = busy)
Sys.sleep(0.3)
h0 <- heap_bytes(); r0 <- rss_bytes()
t0 <- Sys.time()
ms <- lapply(seq_len(nqueue), function(i) mirai(i, i = i))
tq <- as.double(Sys.time() - t0, units = "secs")
h1 <- heap_bytes(); r1 <- rss_bytes()
st <- status()$mirai
invisible(daemons(0))

mem <- data.frame(
  queued       = nqueue,
  still_queued = unname(st["awaiting"]),
  queue_s      = round(tq, 2),
  submit_per_s = round(nqueue / tq),
  rss_before_MB = round(r0 / 2^20, 1),
  rss_after_MB  = round(r1 / 2^20, 1),
  rss_diff_MB   = round((r1 - r0) / 2^20, 1),
  B_per_task    = round((r1 - r0) / nqueue),
  Rheap_B_per_task = round((h1 - h0) / nqueue),
  other_B_per_task = round(((r1 - r0) - (h1 - h0)) / nqueue)
)
cat(sprintf("\n== host memory: %d small tasks queued behind a busy daemon (daemons(1, dispatcher = TRUE)) ==\n", nqueue))
print(mem, row.names = FALSE, right = FALSE)
cat("(Rheap = growth of R's heap per gc(), i.e. the mirai objects held in R; other = RSS growth outside it)\n")
fresh <- queued_memory_fresh("mirai", nqueue, mem_runs)
cat(sprintf("fresh process, median of %d: VmRSS growth per queued mirai %.0f B (R heap %.0f B, the rest %.0f B); runs: %s\n",
            mem_runs, median(fresh$rss_B), median(fresh$Rheap_B), median(fresh$native_B),
            paste(sprintf("%.0f", fresh$rss_B), collapse = ", ")))
cat(sprintf("load average: %s\n", paste(readLines("/proc/loadavg"), collapse = " ")))
