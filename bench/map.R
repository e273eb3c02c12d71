#!/usr/bin/env Rscript
# mirai_map() against the native node path and PSOCK, in one run:
#
# 1. 10,000 tiny elements on 2 workers: mirai_map() with and without the
#    dispatcher, a data frame map (rows) of the same length, clusterApplyLB()
#    on a 2-node make_cluster(), and PSOCK's parLapplyLB(). Every setup is
#    live at once and the jobs are interleaved round by round
#    (time_interleaved), so load drift hits all alike; medians of
#    BENCH_ROUNDS rounds (default 5). Target: mirai_map >= 0.9x
#    clusterApplyLB.
# 2. Host bytes per queued map element: one daemon kept busy, a map of
#    BENCH_QUEUE (100,000) tiny elements queued; growth of VmRSS and of R's
#    heap per element (target <= 300): in this run, after the section
#    above (part of it lands in memory that section freed), and the median
#    of BENCH_MEM_RUNS (3) fresh processes (queued_memory_fresh, common.R).
# 3. Shared `.args` once per daemon: 1,000 elements with a BENCH_BIG_MB
#    (100) MB `.args` on 2 daemons, against the same map without it; the
#    bytes the host wrote (/proc/self/io wchar) and the times.
#
# Not a test: prints figures, asserts nothing.

suppressPackageStartupMessages({ library(mirai); library(parallel) })
bench_dir <- dirname(sub("^--file=", "", grep("^--file=", commandArgs(FALSE), value = TRUE)[1L]))
source(file.path(bench_dir, "common.R"))
options(width = 200)

ntask  <- as.integer(Sys.getenv("BENCH_TASKS", "10000"))
rounds <- as.integer(Sys.getenv("BENCH_ROUNDS", "5"))
nqueue <- as.integer(Sys.getenv("BENCH_QUEUE", "100000"))
mem_runs <- as.integer(Sys.getenv("BENCH_MEM_RUNS", "3"))
big_mb <- as.numeric(Sys.getenv("BENCH_BIG_MB", "100"))
cat(sprintf("load: %s\n", paste(readLines("/proc/loadavg"), collapse = "")))

psock <- makePSOCKcluster(2L)
mcl <- make_cluster(2L)
daemons(2, dispatcher = TRUE, .compute = "disp")
daemons(2, dispatcher = FALSE, .compute = "nodisp")

idx <- seq_len(ntask)
df <- data.frame(a = idx, b = idx)
jobs <- list(
  map_disp     = function() mirai_map(idx, identity, .compute = "disp")[],
  map_nodisp   = function() mirai_map(idx, identity, .compute = "nodisp")[],
  map_df_disp  = function() mirai_map(df, function(a, b) a, .compute = "disp")[],
  node_lb      = function() clusterApplyLB(mcl, idx, identity),
  psock_lb     = function() clusterApplyLB(psock, idx, identity),
  psock_parlb  = function() parLapplyLB(psock, idx, identity)
)
for (nm in names(jobs)) {
  out <- jobs[[nm]]()
  if (!identical(unlist(out), idx)) cat(sprintf("WARNING: %s returned unexpected values\n", nm))
}
secs <- time_interleaved(jobs, rounds)
med <- apply(secs, 2L, median)
tps <- ntask / med
res <- data.frame(
  setup = c("mirai_map (dispatcher)", "mirai_map (no dispatcher)", "mirai_map data frame rows (dispatcher)",
            "clusterApplyLB on make_cluster(2)", "PSOCK clusterApplyLB", "PSOCK parLapplyLB (2 chunks)"),
  median_s = round(med, 3),
  range_s = sprintf("%.3f-%.3f", apply(secs, 2L, min), apply(secs, 2L, max)),
  per_s = round(tps),
  vs_node_lb = round(tps / tps[["node_lb"]], 2),
  vs_psock_lb = round(tps / tps[["psock_lb"]], 2),
  vs_psock_parlb = round(tps / tps[["psock_parlb"]], 2)
)
cat(sprintf("\n== %d tiny elements on 2 workers, median of %d rounds ==\n", ntask, rounds))
print(res, row.names = FALSE, right = FALSE)
cat("target: mirai_map >= 0.9x clusterApplyLB on make_cluster(2)\n")
stopCluster(psock)
stopCluster(mcl)
invisible(daemons(0, .compute = "nodisp"))

# ---- host bytes per queued map element ------------------------------------
rss <- function() {
  l <- grep("^VmRSS:", readLines("/proc/self/status"), value = TRUE)
  as.numeric(sub("^VmRSS:\\s+(\\d+) kB.*", "\\1", l)) * 1024
}
heap <- function() sum(gc()[, 2L]) * 1e6
invisible(daemons(0, .compute = "disp"))
daemons(1, dispatcher = TRUE, .compute = "mem")
busy <- mirai(Sys.sleep(60), .compute = "mem")
Sys.sleep(0.5)
x <- seq_len(nqueue)
invisible(gc())
r0 <- rss(); h0 <- heap()
mp <- mirai_map(x, identity, .compute = "mem")
invisible(gc())
r1 <- rss(); h1 <- heap()
st <- status(.compute = "mem")
cat(sprintf("\n== host memory: %d map elements queued behind a busy daemon ==\n", nqueue))
cat(sprintf("VmRSS growth per element: %.0f B; R heap growth per element: %.0f B; still queued: %s\n",
            (r1 - r0) / nqueue, (h1 - h0) / nqueue,
            paste(st$mirai[["awaiting"]], collapse = "")))
rm(mp)
invisible(daemons(0, .compute = "mem"))
fresh <- queued_memory_fresh("map", nqueue, mem_runs)
cat(sprintf("fresh process, median of %d: VmRSS growth per element %.0f B (R heap %.0f B, the rest %.0f B); runs: %s\n",
            mem_runs, median(fresh$rss_B), median(fresh$Rheap_B), median(fresh$native_B),
            paste(sprintf("%.0f", fresh$rss_B), collapse = ", ")))
cat("target: <= 300 B per queued map element\n")

# ---- shared .args once per daemon -----------------------------------------
daemons(2, dispatcher = TRUE, .compute = "big")
# Bytes the host's profile wrote to its daemons' sockets.
wchar <- function() .Call(mirai:::C_mirai_host_sent, mirai:::profile_of("big")$host)
invisible(everywhere({}, .compute = "big")[])
big <- runif(big_mb * 1e6 / 8)
n <- 1000L
f_plain <- function(i) i
f_big <- function(i, big) i + length(big) * 0
w0 <- wchar(); t0 <- Sys.time()
r_plain <- mirai_map(seq_len(n), f_plain, .compute = "big")[]
t_plain <- as.double(Sys.time() - t0, units = "secs"); w_plain <- wchar() - w0
# One 100 MB transfer, host to daemon and back, as the unit of cost.
w0 <- wchar(); t0 <- Sys.time()
echo <- mirai(length(big), big = big, .compute = "big")[]
t_xfer <- as.double(Sys.time() - t0, units = "secs")
w0 <- wchar(); t0 <- Sys.time()
r_big <- mirai_map(seq_len(n), f_big, .args = list(big = big), .compute = "big")[]
t_big <- as.double(Sys.time() - t0, units = "secs"); w_big <- wchar() - w0
# The same content again: the daemons hold it already.
w0 <- wchar(); t0 <- Sys.time()
r_big2 <- mirai_map(seq_len(n), f_big, .args = list(big = big), .compute = "big")[]
t_big2 <- as.double(Sys.time() - t0, units = "secs"); w_big2 <- wchar() - w0
ok <- identical(unlist(r_big), as.double(seq_len(n))) && identical(r_big, r_big2)
cat(sprintf("\n== %d elements with a %.0f MB .args on 2 daemons ==\n", n, big_mb))
cat(sprintf("without .args: %.3f s, host wrote %.1f MB\n", t_plain, w_plain / 1e6))
cat(sprintf("one %.0f MB mirai() round trip: %.3f s\n", big_mb, t_xfer))
cat(sprintf("with .args (first map): %.3f s, host wrote %.1f MB (%.2fx the .args)\n", t_big, w_big / 1e6,
            w_big / (big_mb * 1e6)))
cat(sprintf("with .args (same content again): %.3f s, host wrote %.1f MB\n", t_big2, w_big2 / 1e6))
cat(sprintf("time ratio: with .args / (without + 2 x one transfer) = %.2f (target <= 1.3); values ok: %s\n",
            t_big / (t_plain + 2 * t_xfer), ok))
invisible(daemons(0, .compute = "big"))
