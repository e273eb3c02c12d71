#!/usr/bin/env Rscript
# Round-trip latency of one tiny task on one worker: mirai (no dispatcher,
# dispatcher) against base R's PSOCK cluster, all measured in the same run.
#
# Method: the three setups are all live at once (mirai via two compute
# profiles) and their batches are interleaved, so load drift on the machine
# hits all of them alike. Each batch of BATCH reps is timed with Sys.time()
# (microsecond clock); the figure is the median over batches of the batch
# mean. A warm-up of WARMUP reps per setup comes first, and each batch
# follows BATCH_WARMUP untimed reps of its own setup: the floor program
# times its round trips after 1,000 untimed ones, and mirai's must be
# measured alike. On this (virtualised) machine the first round trips after
# a process has waited some milliseconds (while the other setups ran) are
# slow for all: measured, a tiny mirai round trip took 111 us for the first
# 20 after 30 ms of idling, 63-68 us for the next 180, 48-52 us back to
# back; with batches of 100 and no warm-up, the batch means came out 81-106
# us against 51 us for batches of 1,000.
#
# The floor: bench/floor/pingpong.c, compiled here with `cc`, sends a
# 100-byte message to a forked process and back over a Unix socketpair,
# both ends blocking in read() (FLOOR_REPS round trips, timed inside the
# program, so its start-up does not count); run once per batch round, in
# the rotation, and reported as the median. mirai's figures are also given
# as their excess over it. Without a C compiler the floor is left out.
#
# Env overrides: BENCH_REPS (default 10000), BENCH_WARMUP (200), BENCH_BATCH (500),
# BENCH_BATCH_WARMUP (200).
# Not a test: prints figures, asserts nothing.

suppressPackageStartupMessages({ library(mirai); library(parallel) })
options(width = 200)

reps   <- as.integer(Sys.getenv("BENCH_REPS", "10000"))
warmup <- as.integer(Sys.getenv("BENCH_WARMUP", "200"))
batch  <- as.integer(Sys.getenv("BENCH_BATCH", "500"))
batch_warmup <- as.integer(Sys.getenv("BENCH_BATCH_WARMUP", "200"))
nbatch <- max(1L, reps %/% batch)

cl <- makePSOCKcluster(1L)
daemons(1, dispatcher = FALSE, .compute = "nodisp")
daemons(1, dispatcher = TRUE,  .compute = "disp")

sendCall   <- parallel:::sendCall
recvResult <- parallel:::recvResult
node <- cl[[1L]]

run_psock <- function(n) for (i in seq_len(n)) {
  sendCall(node, identity, list("hello world")); recvResult(node)
}
run_nodisp <- function(n) for (i in seq_len(n)) mirai("hello world", .compute = "nodisp")[]
run_disp   <- function(n) for (i in seq_len(n)) mirai("hello world", .compute = "disp")[]

# sanity: each returns the right value
stopifnot(identical(mirai("hello world", .compute = "nodisp")[], "hello world"),
          identical(mirai("hello world", .compute = "disp")[], "hello world"))
invisible(sendCall(node, identity, list("hello world")))
stopifnot(identical(recvResult(node), "hello world"))

runs <- list(psock = run_psock, nodisp = run_nodisp, disp = run_disp)

bench_dir <- dirname(sub("^--file=", "", grep("^--file=", commandArgs(FALSE), value = TRUE)[1L]))
floor_reps <- as.integer(Sys.getenv("FLOOR_REPS", "5000"))
pingpong <- file.path(tempdir(), "pingpong")
has_floor <- nzchar(Sys.which("cc")) &&
  system2("cc", c("-O2", "-o", pingpong, file.path(bench_dir, "floor", "pingpong.c"))) == 0L
# One run of floor_reps round trips whatever `n`; its mean (us) is kept.
if (has_floor) runs$floor <- function(n) {
  floor_us <<- c(floor_us, as.numeric(system2(pingpong, as.character(floor_reps), stdout = TRUE)))
}
floor_us <- numeric()
for (f in runs) f(warmup)

batch_means <- matrix(NA_real_, nbatch, length(runs), dimnames = list(NULL, names(runs)))
for (b in seq_len(nbatch)) {
  # rotate the order each batch so no setup always runs first
  ord <- names(runs)[(seq_along(runs) + b - 2L) %% length(runs) + 1L]
  for (nm in ord) {
    if (nm != "floor" && batch_warmup > 0L) runs[[nm]](batch_warmup)
    t0 <- Sys.time()
    runs[[nm]](batch)
    batch_means[b, nm] <- if (nm == "floor") floor_us[length(floor_us)] / 1e6
                          else as.double(Sys.time() - t0, units = "secs") / batch
  }
}

med <- apply(batch_means, 2L, median) * 1e6        # microseconds
q25 <- apply(batch_means, 2L, quantile, 0.25) * 1e6
q75 <- apply(batch_means, 2L, quantile, 0.75) * 1e6
fl <- if (has_floor) med[["floor"]] else NA_real_

res <- data.frame(
  setup       = c("PSOCK sendCall+recvResult", "mirai dispatcher=FALSE", "mirai dispatcher=TRUE",
                  if (has_floor) "floor: C ping-pong, Unix socketpair"),
  median_us   = round(med, 1),
  iqr_us      = sprintf("%.1f-%.1f", q25, q75),
  vs_PSOCK    = round(med / med[["psock"]], 3),
  over_floor_us = round(med - fl, 1),
  target      = c("", "<= 0.5 PSOCK; floor + 15", "<= 0.7 PSOCK; floor + 20", if (has_floor) ""),
  stringsAsFactors = FALSE
)
cat(sprintf("\n== roundtrip: 1 worker, %d reps (%d batches of %d, each after %d untimed) after %d warm-up, median of batch means ==\n",
            nbatch * batch, nbatch, batch, batch_warmup, warmup))
print(res, row.names = FALSE, right = FALSE)

invisible(daemons(0, .compute = "nodisp")); invisible(daemons(0, .compute = "disp")); stopCluster(cl)
cat(sprintf("load average: %s\n", paste(readLines("/proc/loadavg"), collapse = " ")))
