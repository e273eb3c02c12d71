#!/usr/bin/env Rscript
# Cost of live relay (daemons(relay = TRUE)) on the task path: throughput of
# BENCH_TASKS (default 5,000) tiny tasks on 2 daemons, side by side in one
# run, with
#   - relay off (the default),
#   - relay on but unused (no task sends anything),
#   - relay on, with a third daemon of the same profile running a neighbour
#     task that burns CPU without messages ("burn"), or that sends messages
#     as fast as it can for the whole job ("flood"): the flood's own CPU is
#     the burner's, so the difference between the two is what the relay
#     costs the other tasks (the host reads, bounds and shows the flood, the
#     shown messages muffled by a calling handler),
#   - relay off with the flooding neighbour: what the flood costs without
#     relay, so that its difference to "on + flood" is the relay's cost,
#   - and base R's PSOCK cluster (clusterApplyLB) as the reference.
# Jobs are interleaved round by round (see common.R); the figure is the
# median over BENCH_ROUNDS rounds (default 3). Then the latency of a relayed
# message, from message() on a daemon to an on_relay() handler on the host
# while it waits, and the host's CPU while it waits beside a flood. Not a
# test: prints figures.

suppressPackageStartupMessages({ library(mirai); library(parallel) })
bench_dir <- dirname(sub("^--file=", "", grep("^--file=", commandArgs(FALSE), value = TRUE)[1L]))
source(file.path(bench_dir, "common.R"))
options(width = 200)

ntask  <- as.integer(Sys.getenv("BENCH_TASKS", "5000"))
rounds <- as.integer(Sys.getenv("BENCH_ROUNDS", "3"))

cl <- makePSOCKcluster(2L)
daemons(2, .compute = "off")
daemons(2, relay = TRUE, .compute = "on")
# Two daemons for the job and one for the neighbour, with relay and without.
daemons(3, relay = TRUE, .compute = "busy")
daemons(3, .compute = "busy_off")

idx <- seq_len(ntask)
tiny <- function(prof) {
  ms <- lapply(idx, function(i) mirai(i, i = i, .compute = prof))
  collect_mirai(ms)
}
muffled <- function(expr) withCallingHandlers(expr, message = function(c) invokeRestart("muffleMessage"))

# Runs `job` while the third daemon of "busy" runs the neighbour `body`
# (which stops once `stop` exists).
with_neighbour <- function(body, prof = "busy") function() {
  stop <- tempfile()
  n <- mirai(body(stop), body = body, stop = stop, .compute = prof)
  # The neighbour has started before the job does, and has run for a
  # second with what it relays shown meanwhile (from later's loop), so a
  # flood is measured at its steady rate, past the burst a task may relay
  # at once (about 40 ms of the host's time, once per task).
  while (status(prof)$mirai[["executing"]] < 1) Sys.sleep(0.005)
  settle <- Sys.time() + 1
  while (Sys.time() < settle) muffled(later::run_now(0.05))
  t0 <- Sys.time()
  out <- muffled(tiny(prof))
  secs <- as.double(Sys.time() - t0, units = "secs")
  file.create(stop)
  muffled(n[])
  unlink(stop)
  structure(list(out), secs = secs)
}
burn <- function(stop) { k <- 0; while (!file.exists(stop)) for (i in 1:1000) k <- k + 1; k }
flood <- function(stop) { k <- 0; while (!file.exists(stop)) { message("flood ", k); k <- k + 1 }; k }

jobs <- list(
  "relay off"          = function() tiny("off"),
  "relay on, unused"   = function() tiny("on"),
  "on + burn neighbour"  = with_neighbour(burn),
  "on + flood neighbour" = with_neighbour(flood),
  "off + flood neighbour" = with_neighbour(flood, "busy_off"),
  "PSOCK clusterApplyLB" = function() clusterApplyLB(cl, idx, function(i) i)
)
for (j in jobs) invisible(j())
secs <- time_interleaved(jobs, rounds)
med <- apply(secs, 2, median)
cat(sprintf("%d tiny tasks, 2 daemons/nodes, median of %d rounds (%s)\n", ntask, rounds, format(Sys.time())))
print(data.frame(setup = names(med), secs = round(med, 3), tasks_per_s = round(ntask / med),
                 vs_relay_off = round(med[["relay off"]] / med, 2), row.names = NULL))
cat(sprintf("conditions dropped by the flooded profile: %s\n", format(status("busy")$relay_dropped, big.mark = ",")))

# The host's CPU while it waits beside a flood (after the burst): the
# flood's cost to the host, in a figure that load on the machine does not
# swing as it swings wall times. Relay off: what waiting costs without it.
host_cpu <- function(prof) {
  stop <- tempfile()
  n <- mirai(flood(stop), flood = flood, stop = stop, .compute = prof)
  muffled(mirai(Sys.sleep(2), .compute = prof)[])
  out <- replicate(rounds, {
    p0 <- proc.time()
    muffled(mirai(Sys.sleep(2), .compute = prof)[])
    p <- proc.time() - p0
    sum(p[c("user.self", "sys.self")]) / p[["elapsed"]]
  })
  file.create(stop)
  muffled(n[])
  unlink(stop)
  100 * median(out)
}
cat(sprintf("host CPU while waiting 2 s beside a flooding task: relay on %.1f%% of a core, relay off %.1f%%\n",
            host_cpu("busy"), host_cpu("busy_off")))

# Latency: from message() on the daemon to the host's handler, while R
# waits on the task (one message every 20 ms; clocks of one machine).
lat <- numeric()
m <- mirai({
  for (i in 1:200) { message(format(as.numeric(Sys.time()), digits = 17)); Sys.sleep(0.02) }
  "done"
}, .compute = "on")
on_relay(m, function(cond) lat <<- c(lat, as.numeric(Sys.time()) - as.numeric(conditionMessage(cond))))
invisible(m[])
cat(sprintf("relay latency, message() to handler (%d messages): median %.2f ms, 90th percentile %.2f ms, max %.2f ms\n",
            length(lat), 1000 * median(lat), 1000 * quantile(lat, 0.9), 1000 * max(lat)))

daemons(0, .compute = "off")
daemons(0, .compute = "on")
daemons(0, .compute = "busy")
daemons(0, .compute = "busy_off")
stopCluster(cl)
