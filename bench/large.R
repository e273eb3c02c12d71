#!/usr/bin/env Rscript
# 200 MB round trip: `mirai(x, x = x)[]` with 1 daemon (dispatcher FALSE and
# TRUE) against twice the in-process `unserialize(serialize(x, NULL))` time
# and against base R's PSOCK `clusterCall(cl, identity, x)`, all measured in
# the same run.
#
# Method: x <- runif(25e6) (200 MB). Setups are live at once (mirai via two
# compute profiles, one PSOCK node) and interleaved round by round; gc()
# before each timed rep; median of BENCH_REPS reps (default 5) after one
# untimed warm-up each.
#
# The target reference is 2 x in-process serialize(x, NULL) + unserialize,
# serialize()'s default XDR (big-endian) format, as the design budget states.
# mirai itself serializes in R's native binary format (xdr = FALSE), which is
# cheaper, so the row "2x in-process, xdr=FALSE" is printed too as the
# tighter reference.
#
# Not a test: prints figures, asserts nothing.

suppressPackageStartupMessages({ library(mirai); library(parallel) })
bench_dir <- dirname(sub("^--file=", "", grep("^--file=", commandArgs(FALSE), value = TRUE)[1L]))
source(file.path(bench_dir, "common.R"))
options(width = 200)

reps <- as.integer(Sys.getenv("BENCH_REPS", "5"))
set.seed(1)
x <- runif(25e6)

cl <- makePSOCKcluster(1L)
daemons(1, dispatcher = FALSE, .compute = "nodisp")
daemons(1, dispatcher = TRUE,  .compute = "disp")

jobs <- list(
  inproc     = function() unserialize(serialize(x, NULL)),
  inproc_bin = function() unserialize(serialize(x, NULL, xdr = FALSE)),
  psock      = function() clusterCall(cl, identity, x)[[1L]],
  nodisp     = function() mirai(x, x = x, .compute = "nodisp")[],
  disp       = function() mirai(x, x = x, .compute = "disp")[]
)

for (nm in names(jobs)) {                       # warm-up + correctness check
  out <- jobs[[nm]]()
  if (!identical(out, x)) cat(sprintf("WARNING: %s returned a different object\n", nm))
  rm(out)
}

secs <- time_interleaved(jobs, reps)

invisible(daemons(0, .compute = "nodisp")); invisible(daemons(0, .compute = "disp")); stopCluster(cl)

med <- apply(secs, 2L, median)
ref  <- 2 * med[["inproc"]]
refb <- 2 * med[["inproc_bin"]]
res <- data.frame(
  setup = c("2x in-process ser+unser (xdr)", "2x in-process ser+unser, xdr=FALSE",
            "PSOCK clusterCall", "mirai dispatcher=FALSE", "mirai dispatcher=TRUE"),
  median_s    = round(c(ref, refb, med[c("psock", "nodisp", "disp")]), 3),
  range_s     = c(sprintf("%.3f-%.3f", 2 * min(secs[, "inproc"]), 2 * max(secs[, "inproc"])),
                  sprintf("%.3f-%.3f", 2 * min(secs[, "inproc_bin"]), 2 * max(secs[, "inproc_bin"])),
                  sprintf("%.3f-%.3f", apply(secs[, c("psock", "nodisp", "disp"), drop = FALSE], 2L, min),
                          apply(secs[, c("psock", "nodisp", "disp"), drop = FALSE], 2L, max))),
  vs_2x_inproc     = round(c(ref, refb, med[c("psock", "nodisp", "disp")]) / ref, 3),
  vs_2x_inproc_bin = round(c(ref, refb, med[c("psock", "nodisp", "disp")]) / refb, 3),
  vs_PSOCK         = round(c(ref, refb, med[c("psock", "nodisp", "disp")]) / med[["psock"]], 3),
  stringsAsFactors = FALSE
)
cat(sprintf("\n== large: %.0f MB double vector round trip, 1 worker, median of %d reps ==\n",
            as.numeric(object.size(x)) / 1e6, reps))
print(res, row.names = FALSE, right = FALSE)
cat("target: mirai <= 1.15 x (2x in-process ser+unser)\n")
cat(sprintf("load average: %s\n", paste(readLines("/proc/loadavg"), collapse = " ")))
