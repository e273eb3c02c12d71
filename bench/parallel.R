#!/usr/bin/env Rscript
# base R's parallel functions on a mirai cluster (make_cluster) against a
# PSOCK cluster of the same size, both live at once, measured in the same
# run with their repetitions interleaved (so load drift hits both alike):
#   - parLapply() over 10,000 tiny elements;
#   - clusterEvalQ() round trip on all nodes;
#   - clusterApplyLB() over 10,000 tiny tasks (one task per element: the
#     dispatch cost itself).
# Figures are medians over REPS repetitions (after one warm-up each).
#
# Env overrides: BENCH_NODES (default 2), BENCH_REPS (5), BENCH_N (10000),
# BENCH_EVALQ (500: clusterEvalQ calls per repetition).
# Not a test: prints figures, asserts only that both clusters give the same
# answers.

suppressPackageStartupMessages({ library(mirai); library(parallel) })
options(width = 200)

nodes <- as.integer(Sys.getenv("BENCH_NODES", "2"))
reps <- as.integer(Sys.getenv("BENCH_REPS", "5"))
n <- as.integer(Sys.getenv("BENCH_N", "10000"))
nevalq <- as.integer(Sys.getenv("BENCH_EVALQ", "500"))

t_start <- system.time(mc <- make_cluster(nodes))[["elapsed"]]
t_start_ps <- system.time(ps <- makePSOCKcluster(nodes))[["elapsed"]]
on.exit({ stop_cluster(mc); stopCluster(ps) })

x <- seq_len(n)
f <- function(i) i + 1L
cases <- list(
  parLapply = function(cl) parLapply(cl, x, f),
  clusterEvalQ = function(cl) for (i in seq_len(nevalq)) clusterEvalQ(cl, 1L),
  clusterApplyLB = function(cl) clusterApplyLB(cl, x, f)
)
units <- c(parLapply = n, clusterEvalQ = nevalq, clusterApplyLB = n)
unit_name <- c(parLapply = "elements", clusterEvalQ = "round trips", clusterApplyLB = "tasks")

stopifnot(identical(cases$parLapply(mc), cases$parLapply(ps)),
          identical(cases$clusterApplyLB(mc), cases$clusterApplyLB(ps)))

clusters <- list(mirai = mc, psock = ps)
times <- array(NA_real_, c(reps, length(cases), 2L), list(NULL, names(cases), names(clusters)))
for (r in seq_len(reps)) {
  for (k in names(cases)) {
    # Alternate which cluster goes first.
    ord <- if (r %% 2L) names(clusters) else rev(names(clusters))
    for (cn in ord) times[r, k, cn] <- system.time(cases[[k]](clusters[[cn]]))[["elapsed"]]
  }
}

med <- apply(times, c(2L, 3L), median)
cat(sprintf("nodes: %d; repetitions: %d (median shown); start-up: make_cluster %.2f s, makePSOCKcluster %.2f s\n\n",
            nodes, reps, t_start, t_start_ps))
cat(sprintf("%-15s %14s %14s %12s %12s %9s\n", "case", "mirai (s)", "psock (s)", "mirai /s", "psock /s", "speed-up"))
for (k in names(cases)) {
  m <- med[k, "mirai"]
  p <- med[k, "psock"]
  cat(sprintf("%-15s %14.4f %14.4f %12.0f %12.0f %8.2fx  (%s)\n", k, m, p, units[[k]] / m, units[[k]] / p,
              p / m, unit_name[[k]]))
}
cat(sprintf("\nclusterEvalQ round trip on all %d nodes: mirai %.0f us, psock %.0f us\n", nodes,
            med["clusterEvalQ", "mirai"] / nevalq * 1e6, med["clusterEvalQ", "psock"] / nevalq * 1e6))
