#!/usr/bin/env Rscript
# TLS overhead: tls+tcp:// against plain tcp:// (both to a local daemon over
# loopback, dispatcher on), side by side with base R's PSOCK cluster, all
# measured in the same run.
#
# 1. Round trip of one tiny task (`mirai("hello world")[]`): batches of BATCH
#    reps per setup, interleaved; the figure is the median over batches of the
#    batch mean, after WARMUP reps each.
# 2. A 200 MB payload round trip (`mirai(x, x = x)[]`, x <- runif(25e6)) and
#    PSOCK `clusterCall(cl, identity, x)`: interleaved rounds, gc() before
#    each, median of LARGE_REPS reps after one untimed warm-up (which also
#    checks the result).
#
# Env overrides: BENCH_REPS (default 2000), BENCH_WARMUP (200), BENCH_BATCH
# (100), BENCH_LARGE_REPS (5).
# Not a test: prints figures, asserts nothing.

suppressPackageStartupMessages({ library(mirai); library(parallel) })
bench_dir <- dirname(sub("^--file=", "", grep("^--file=", commandArgs(FALSE), value = TRUE)[1L]))
source(file.path(bench_dir, "common.R"))
options(width = 200)

reps   <- as.integer(Sys.getenv("BENCH_REPS", "2000"))
warmup <- as.integer(Sys.getenv("BENCH_WARMUP", "200"))
batch  <- as.integer(Sys.getenv("BENCH_BATCH", "100"))
lreps  <- as.integer(Sys.getenv("BENCH_LARGE_REPS", "5"))
nbatch <- max(1L, reps %/% batch)

cl <- makePSOCKcluster(1L)
for (p in c("tcp", "tls")) {
  daemons(url = sprintf("%s://127.0.0.1:0", if (p == "tls") "tls+tcp" else "tcp"), .compute = p)
  launch_local(1, .compute = p)
}
deadline <- Sys.time() + 30
while (any(vapply(c("tcp", "tls"), function(p) status(p)$connections < 1L, logical(1L))) &&
       Sys.time() < deadline) Sys.sleep(0.05)
stopifnot(startsWith(status("tls")$daemons, "tls+tcp://"), startsWith(status("tcp")$daemons, "tcp://"))

sendCall   <- parallel:::sendCall
recvResult <- parallel:::recvResult
node <- cl[[1L]]
small <- list(
  psock = function(n) for (i in seq_len(n)) { sendCall(node, identity, list("hello world")); recvResult(node) },
  tcp   = function(n) for (i in seq_len(n)) mirai("hello world", .compute = "tcp")[],
  tls   = function(n) for (i in seq_len(n)) mirai("hello world", .compute = "tls")[]
)
for (f in small) f(warmup)
per <- matrix(NA_real_, nbatch, length(small), dimnames = list(NULL, names(small)))
for (b in seq_len(nbatch)) {
  ord <- names(small)[(seq_along(small) + b - 2L) %% length(small) + 1L]
  for (nm in ord) {
    t0 <- Sys.time()
    small[[nm]](batch)
    per[b, nm] <- as.double(Sys.time() - t0, units = "secs") / batch
  }
}
med <- apply(per, 2L, median) * 1e6
rt <- data.frame(
  setup = c("PSOCK sendCall+recvResult", "mirai tcp://", "mirai tls+tcp://"),
  median_us = round(med[c("psock", "tcp", "tls")], 1),
  vs_tcp = round(med[c("psock", "tcp", "tls")] / med[["tcp"]], 3),
  vs_PSOCK = round(med[c("psock", "tcp", "tls")] / med[["psock"]], 3)
)
cat(sprintf("\n== tls: tiny-task round trip, 1 daemon, median over %d batches of %d ==\n", nbatch, batch))
print(rt, row.names = FALSE, right = FALSE)
cat(sprintf("TLS overhead per round trip: %+.1f us (%+.1f%%)\n",
            med[["tls"]] - med[["tcp"]], 100 * (med[["tls"]] / med[["tcp"]] - 1)))

set.seed(1)
x <- runif(25e6)
large <- list(
  psock = function() clusterCall(cl, identity, x)[[1L]],
  tcp   = function() mirai(x, x = x, .compute = "tcp")[],
  tls   = function() mirai(x, x = x, .compute = "tls")[]
)
for (nm in names(large)) {
  out <- large[[nm]]()
  if (!identical(out, x)) cat(sprintf("WARNING: %s returned a different object\n", nm))
  rm(out)
}
secs <- time_interleaved(large, lreps)
lm <- apply(secs, 2L, median)
big <- data.frame(
  setup = c("PSOCK clusterCall", "mirai tcp://", "mirai tls+tcp://"),
  median_s = round(lm[c("psock", "tcp", "tls")], 3),
  range_s = sprintf("%.3f-%.3f", apply(secs, 2L, min)[c("psock", "tcp", "tls")],
                    apply(secs, 2L, max)[c("psock", "tcp", "tls")]),
  MB_moved_per_s = round(2 * as.numeric(object.size(x)) / 1e6 / lm[c("psock", "tcp", "tls")]),
  vs_tcp = round(lm[c("psock", "tcp", "tls")] / lm[["tcp"]], 3),
  vs_PSOCK = round(lm[c("psock", "tcp", "tls")] / lm[["psock"]], 3)
)
cat(sprintf("\n== tls: %.0f MB double vector round trip, 1 daemon, median of %d reps ==\n",
            as.numeric(object.size(x)) / 1e6, lreps))
print(big, row.names = FALSE, right = FALSE)
cat(sprintf("TLS overhead on 200 MB each way: %+.3f s (%+.1f%%)\n",
            lm[["tls"]] - lm[["tcp"]], 100 * (lm[["tls"]] / lm[["tcp"]] - 1)))

invisible(daemons(0, .compute = "tcp")); invisible(daemons(0, .compute = "tls")); stopCluster(cl)
cat(sprintf("load average: %s\n", paste(readLines("/proc/loadavg"), collapse = " ")))
