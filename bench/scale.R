#!/usr/bin/env Rscript
# More daemons than cores: 5,000 tiny tasks (BENCH_TASKS) on 16 daemons
# against the same on 2, with the dispatcher and without, and base R's PSOCK
# clusterApplyLB() on 2 and 16 nodes as the reference, all in one run.
#
# Every setup is live at once (four compute profiles, two PSOCK clusters)
# and the jobs are interleaved round by round (time_interleaved), so load
# drift hits all alike; medians of BENCH_ROUNDS rounds (default 5). On a
# 2-core machine the extra daemons only share the same cores: the target is
# 16 daemons at least 0.9x the rate of 2.
#
# Not a test: prints figures, asserts nothing.

suppressPackageStartupMessages({ library(mirai); library(parallel) })
bench_dir <- dirname(sub("^--file=", "", grep("^--file=", commandArgs(FALSE), value = TRUE)[1L]))
source(file.path(bench_dir, "common.R"))
options(width = 200)

ntask  <- as.integer(Sys.getenv("BENCH_TASKS", "5000"))
rounds <- as.integer(Sys.getenv("BENCH_ROUNDS", "5"))
cat(sprintf("load: %s\n", paste(readLines("/proc/loadavg"), collapse = "")))

ps2 <- makePSOCKcluster(2L)
ps16 <- makePSOCKcluster(16L)
daemons(2, dispatcher = TRUE, .compute = "d2")
daemons(16, dispatcher = TRUE, .compute = "d16")
daemons(2, dispatcher = FALSE, .compute = "n2")
daemons(16, dispatcher = FALSE, .compute = "n16")
for (p in c("d2", "d16", "n2", "n16")) invisible(everywhere({}, .compute = p)[])

idx <- seq_len(ntask)
job <- function(prof) function() collect_mirai(lapply(idx, function(i) mirai(i, i = i, .compute = prof)))
jobs <- list(
  disp_2 = job("d2"), disp_16 = job("d16"), nodisp_2 = job("n2"), nodisp_16 = job("n16"),
  psock_2 = function() clusterApplyLB(ps2, idx, identity),
  psock_16 = function() clusterApplyLB(ps16, idx, identity)
)
for (nm in names(jobs)) {
  if (!identical(unlist(jobs[[nm]]()), idx)) cat(sprintf("WARNING: %s returned unexpected values\n", nm))
}
secs <- time_interleaved(jobs, rounds)
for (p in c("d2", "d16", "n2", "n16")) invisible(daemons(0, .compute = p))
stopCluster(ps2); stopCluster(ps16)

med <- apply(secs, 2L, median)
tps <- ntask / med
res <- data.frame(
  setup = c("mirai dispatcher, 2 daemons", "mirai dispatcher, 16 daemons", "mirai no dispatcher, 2 daemons",
            "mirai no dispatcher, 16 daemons", "PSOCK clusterApplyLB, 2 nodes", "PSOCK clusterApplyLB, 16 nodes"),
  median_s = round(med, 3),
  range_s = sprintf("%.3f-%.3f", apply(secs, 2L, min), apply(secs, 2L, max)),
  tasks_per_s = round(tps),
  vs_psock_2 = round(tps / tps[["psock_2"]], 2)
)
cat(sprintf("\n== %d tiny tasks, 2 vs 16 workers on %d cores, median of %d rounds ==\n",
            ntask, parallel::detectCores(), rounds))
print(res, row.names = FALSE, right = FALSE)
cat(sprintf("16 / 2 daemons: dispatcher %.2f, no dispatcher %.2f, PSOCK %.2f (target >= 0.9 for mirai)\n",
            tps[["disp_16"]] / tps[["disp_2"]], tps[["nodisp_16"]] / tps[["nodisp_2"]],
            tps[["psock_16"]] / tps[["psock_2"]]))
