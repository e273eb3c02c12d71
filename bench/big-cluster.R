#!/usr/bin/env Rscript
# A cluster larger than base R's connection limit: make_cluster(n) (default
# 200) starts and answers clusterEvalQ(cl, 1) on every node, where
# parallel::makePSOCKcluster(n) fails, because each PSOCK node holds one of
# the 128 connections an R session can have (3 are stdin, stdout, stderr).
# A miraiCluster's nodes hold no R connections: the transport is native.
#
# Prints, in one run: the start-up time of make_cluster(n) and the time of
# one clusterEvalQ() round over all nodes; the memory of each daemon (RSS
# from /proc/<pid>/status) and of this host process; then the same figures
# for a PSOCK cluster of BENCH_PSOCK_OK nodes (default 100, which fits) and
# the error makePSOCKcluster(n) gives. PSOCK workers left behind by the
# failed call are ended (their connections closed) and counted.
#
# Usage: Rscript bench/big-cluster.R    (BENCH_NODES=200 BENCH_PSOCK_OK=100)
# Not a test: prints figures, asserts nothing. Needs about 55 MB of memory
# (RSS) per node, and a few minutes on 2 cores.

suppressPackageStartupMessages({ library(mirai); library(parallel) })
options(width = 200)

n <- as.integer(Sys.getenv("BENCH_NODES", "200"))
n_ok <- as.integer(Sys.getenv("BENCH_PSOCK_OK", "100"))

rss_mb <- function(pid) {
  st <- tryCatch(readLines(sprintf("/proc/%d/status", pid)), error = function(e) NULL)
  line <- grep("^VmRSS:", st, value = TRUE)
  if (!length(line)) return(NA_real_)
  as.numeric(gsub("[^0-9]", "", line)) / 1024
}

# PSS: resident memory with shared pages (R's own library, mapped by every
# process) divided among the processes sharing them.
pss_mb <- function(pid) {
  st <- tryCatch(readLines(sprintf("/proc/%d/smaps_rollup", pid)), error = function(e) NULL)
  line <- grep("^Pss:", st, value = TRUE)
  if (!length(line)) return(NA_real_)
  as.numeric(gsub("[^0-9]", "", line)) / 1024
}

mem_summary <- function(pids) {
  rss <- vapply(pids, rss_mb, 0)
  pss <- vapply(pids, pss_mb, 0)
  sprintf(paste0("per node: RSS median %.1f MB (min %.1f, max %.1f), PSS median %.1f MB;",
                 " all %d nodes: RSS %.0f MB, PSS %.0f MB"),
          median(rss, na.rm = TRUE), min(rss, na.rm = TRUE), max(rss, na.rm = TRUE),
          median(pss, na.rm = TRUE), length(pids), sum(rss, na.rm = TRUE), sum(pss, na.rm = TRUE))
}

# PSOCK workers started for master port `port` that are still running.
psock_workers <- function(port) {
  pids <- as.integer(list.files("/proc", pattern = "^[0-9]+$"))
  Filter(function(p) {
    # (Processes come and go while /proc is read.)
    cmd <- tryCatch(suppressWarnings(readBin(sprintf("/proc/%d/cmdline", p), "raw", 65536L)),
                    error = function(e) raw())
    cmd[cmd == as.raw(0L)] <- as.raw(32L)
    length(cmd) && grepl(sprintf("workRSOCK.* PORT=%d ", port), rawToChar(cmd))
  }, pids)
}

# A free port for the PSOCK master (so that its workers can be told apart
# from other sessions' on a shared machine).
free_port <- function() {
  for (k in 0:99) {
    port <- 20000L + (Sys.getpid() + k * 7919L) %% 30000L
    srv <- tryCatch(serverSocket(port), error = function(e) NULL)
    if (!is.null(srv)) {
      close(srv)
      return(port)
    }
  }
  stop("no free port found")
}

mem_total <- grep("^MemTotal:", readLines("/proc/meminfo"), value = TRUE)
load <- strsplit(readLines("/proc/loadavg"), " ")[[1L]][1:3]
cat(sprintf("== %d cores, %.1f GB memory, %s; load %s ==\n", detectCores(),
            as.numeric(gsub("[^0-9]", "", mem_total)) / 1048576, R.version.string,
            paste(load, collapse = " ")))
cat(sprintf("R connections in use before: %d of 128\n\n", nrow(showConnections(all = TRUE))))

cat(sprintf("---- make_cluster(%d) ----\n", n))
host_before <- rss_mb(Sys.getpid())
t_start <- system.time(cl <- make_cluster(n))[["elapsed"]]
t_eval <- system.time(ones <- clusterEvalQ(cl, 1))[["elapsed"]]
pids <- unlist(clusterEvalQ(cl, Sys.getpid()))
cat(sprintf("start-up: %.1f s; clusterEvalQ(cl, 1) over %d nodes: %.2f s, all answered 1: %s\n",
            t_start, n, t_eval, identical(unlist(ones), rep(1, n))))
cat(sprintf("distinct daemon processes: %d\n", length(unique(pids))))
cat(mem_summary(pids), "\n")
cat(sprintf("host process RSS: %.1f MB (%.1f MB before make_cluster())\n", rss_mb(Sys.getpid()),
            host_before))
cat(sprintf("R connections in use with the cluster up: %d\n", nrow(showConnections(all = TRUE))))
t_par <- system.time(res <- parSapply(cl, seq_len(10 * n), function(i) i))[["elapsed"]]
cat(sprintf("parSapply over %d elements: %.2f s, correct: %s\n", 10 * n, t_par,
            identical(res, seq_len(10 * n))))
stop_cluster(cl)
Sys.sleep(2)
cat(sprintf("daemons still alive 2 s after stop_cluster(): %d\n\n",
            sum(vapply(pids, function(p) file.exists(sprintf("/proc/%d", p)), logical(1L)))))

cat(sprintf("---- makePSOCKcluster(%d), which fits ----\n", n_ok))
t_ok <- system.time(pcl <- makePSOCKcluster(n_ok))[["elapsed"]]
ppids <- unlist(clusterEvalQ(pcl, Sys.getpid()))
cat(sprintf("start-up: %.1f s\n", t_ok))
cat(mem_summary(ppids), "\n")
stopCluster(pcl)
Sys.sleep(2)

cat(sprintf("\n---- makePSOCKcluster(%d) ----\n", n))
port <- free_port()
warned <- character()
t_fail <- system.time(err <- withCallingHandlers(
  tryCatch(makePSOCKcluster(n, port = port), error = function(e) e),
  warning = function(w) {
    warned <<- c(warned, conditionMessage(w))
    invokeRestart("muffleWarning")
  }))[["elapsed"]]
if (inherits(err, "error")) {
  cat(sprintf("failed after %.1f s: %s\n", t_fail, conditionMessage(err)))
} else {
  cat(sprintf("unexpectedly started (%.1f s)\n", t_fail))
  stopCluster(err)
}
if (length(warned)) {
  cat(sprintf("with %d warnings, e.g.: %s\n", length(warned), warned[[1L]]))
}
# (The failed call's node connections are unreferenced: closing them, or
# the garbage collector finding them, warns once per connection, the
# latter from finalizers, which suppressWarnings() does not reach.)
old_warn <- options(warn = -1)
suppressWarnings({
  cat(sprintf("PSOCK workers left running by the failed call: %d; closing our connections\n",
              length(psock_workers(port))))
  closeAllConnections()
  invisible(gc())
  deadline <- Sys.time() + 10
  while (length(psock_workers(port)) && Sys.time() < deadline) Sys.sleep(0.5)
  left <- psock_workers(port)
})
options(old_warn)
cat(sprintf("PSOCK workers still running 10 s later (still waiting to connect; now killed): %d\n",
            length(left)))
for (p in left) tools::pskill(p, tools::SIGTERM)
