#!/usr/bin/env Rscript
# Large payloads through one daemon, in each direction, for one or more
# builds of mirai side by side:
#   argument: mirai(length(x), x = big)[]   big object out, tiny result back
#   result:   mirai(numeric(n), n = n)[]    tiny task out, big result back
# against twice the in-process unserialize(serialize(big, NULL)) time
# (serialize()'s default XDR format) and, as the tighter reference since
# mirai serializes in R's native format, the same with xdr = FALSE.
#
# Usage: Rscript bench/payload.R [LIB ...]
#   Each LIB is a library path holding a build of mirai (default: the
#   default library only). Each build runs in its own child Rscript (two
#   versions never load in one session) with LIB first in .libPaths() and
#   in R_LIBS (so the daemon it launches loads the same build), and
#   daemons(1) (the default, dispatcher = TRUE).
# Env: SIZES   comma-separated MB (1 MB = 1e6 bytes), default "200,1000,2000"
#      REPS    timed reps per measurement (default 3; BENCH_REPS also read)
#      CHILD_TIMEOUT  seconds allowed per child (default scales with size)
#
# Method: big <- numeric(MB * 1e6 / 8). One child per size and LIB, sizes
# in turn, the LIB order rotated from size to size so load drift does not
# always favour the same build. In the child the four jobs (argument,
# result, in-process xdr, in-process binary) are interleaved round by round
# as in common.R; before each timed job gc() runs on the host and on the
# daemon (untimed). No full-size warm-up (a 2 GB warm-up costs 15 s+); a
# 1 MB round trip each way warms the connection. Figures: median and min
# of the reps; ratio = median / (2 x median in-process ser+unser of the same
# child). Each direction moves the big object once, so a ratio of 0.5 means
# the cost of one in-process serialize + unserialize. Peak memory is about 5x the size (2 GB: ~10 GB), one child at a
# time.
#
# Exits non-zero if any child failed. Not a test: prints figures, asserts
# nothing about speed.

options(width = 200)
argv <- commandArgs(TRUE)
bench_file <- normalizePath(sub("^--file=", "", grep("^--file=", commandArgs(FALSE), value = TRUE)[1L]))

## ---------------------------------------------------------------- child ----
# Rscript bench/payload.R --child LIB SIZE_MB REPS OUT.rds   (LIB "-" = default)
if (length(argv) && argv[1L] == "--child") {
  lib  <- argv[2L]; size_mb <- as.numeric(argv[3L]); reps <- as.integer(argv[4L]); out_file <- argv[5L]
  if (lib != "-") .libPaths(c(lib, .libPaths()))
  suppressPackageStartupMessages(library(mirai))
  tag <- sprintf("[%s %g MB]", if (lib == "-") "default" else lib, size_mb)
  status <- 0L
  tryCatch({
    daemons(1)
    # Which build did the host and the daemon load?
    host_pkg   <- find.package("mirai")
    daemon_pkg <- mirai(find.package("mirai"))[]
    if (!is.character(daemon_pkg) || normalizePath(daemon_pkg) != normalizePath(host_pkg))
      stop(sprintf("daemon loaded mirai from %s, host from %s", format(daemon_pkg), host_pkg))
    cat(sprintf("%s mirai %s from %s (daemon: same)\n", tag, format(packageVersion("mirai")), host_pkg))

    n <- size_mb * 1e6 / 8
    big <- numeric(n)
    # 1 MB each way: warms the connection, checks both directions work.
    stopifnot(identical(mirai(length(x), x = numeric(125000))[], 125000L),
              identical(length(mirai(numeric(125000))[]), 125000L))

    check_len <- function(ok, what, r) if (!isTRUE(ok))
      stop(sprintf("%s returned %s", what, paste(format(r)[1L], collapse = " ")), call. = FALSE)
    jobs <- list(
      argument = function() {
        r <- mirai(length(x), x = big)[]
        check_len(!inherits(r, "errorValue") && is.numeric(r) && r == n, "argument", r)
        r
      },
      result = function() {
        r <- mirai(numeric(n), n = n)[]
        check_len(is.double(r) && length(r) == n, "result", r)
        r
      },
      inproc     = function() unserialize(serialize(big, NULL)),
      inproc_bin = function() unserialize(serialize(big, NULL, xdr = FALSE))
    )
    # time_interleaved() from common.R, plus an untimed gc() on the daemon.
    secs <- matrix(NA_real_, reps, length(jobs), dimnames = list(NULL, names(jobs)))
    for (r in seq_len(reps)) {
      ord <- names(jobs)[(seq_along(jobs) + r - 2L) %% length(jobs) + 1L]
      for (nm in ord) {
        invisible(mirai({ gc(); NULL })[])
        invisible(gc())
        t0 <- Sys.time()
        out <- jobs[[nm]]()
        secs[r, nm] <- as.double(Sys.time() - t0, units = "secs")
        rm(out)
      }
      cat(sprintf("%s rep %d/%d: %s\n", tag, r, reps,
                  paste(sprintf("%s %.2fs", colnames(secs), secs[r, ]), collapse = ", ")))
    }
    saveRDS(list(secs = secs, version = format(packageVersion("mirai")), path = host_pkg), out_file)
  }, error = function(e) {
    cat(sprintf("%s FAILED: %s\n", tag, conditionMessage(e)), file = stderr())
    status <<- 1L
  }, finally = {
    try(daemons(0), silent = TRUE)
  })
  quit(save = "no", status = status)
}

## --------------------------------------------------------------- parent ----
sizes <- as.numeric(strsplit(Sys.getenv("SIZES", "200,1000,2000"), ",", fixed = TRUE)[[1L]])
reps  <- as.integer(Sys.getenv("REPS", Sys.getenv("BENCH_REPS", "3")))
if (!length(sizes) || anyNA(sizes) || any(sizes <= 0)) stop("SIZES must be comma-separated positive MB, e.g. 200,1000")
if (is.na(reps) || reps < 1L) stop("REPS must be a positive integer")

libs <- if (length(argv)) argv else "-"
for (l in libs) if (l != "-" && !file.exists(file.path(l, "mirai", "DESCRIPTION")))
  stop(sprintf("no mirai build in library %s", l))
lib_ids <- sprintf("L%d", seq_along(libs))
names(libs) <- lib_ids
desc_of <- function(l) {
  p <- if (l == "-") find.package("mirai") else file.path(l, "mirai")
  d <- read.dcf(file.path(p, "DESCRIPTION"), fields = c("Version", "Built", "Packaged"))
  sprintf("%s  mirai %s, built %s",
          if (l == "-") paste0(dirname(p), " (default)") else normalizePath(l),
          d[, "Version"], sub(";.*", "", sub("^[^;]*; [^;]*; ", "", d[, "Built"])))
}
rscript <- file.path(R.home("bin"), "Rscript")

cat(sprintf("== payload: %d rep(s), sizes %s MB, %d build(s) ==\n", reps,
            paste(sizes, collapse = ","), length(libs)))
for (id in lib_ids) cat(sprintf("%s = %s\n", id, desc_of(libs[[id]])))
cat(sprintf("load average: %s\n", paste(readLines("/proc/loadavg"), collapse = " ")))

results <- list()
failed  <- character()
for (si in seq_along(sizes)) {
  size <- sizes[si]
  ord <- lib_ids[(seq_along(lib_ids) + si - 2L) %% length(lib_ids) + 1L]
  for (id in ord) {
    lib <- libs[[id]]
    out_file <- tempfile(fileext = ".rds")
    timeout <- as.numeric(Sys.getenv("CHILD_TIMEOUT", as.character(300 + reps * size / 1000 * 120)))
    env <- if (lib == "-") character() else
      paste0("R_LIBS=", shQuote(paste(c(normalizePath(lib), Sys.getenv("R_LIBS")[nzchar(Sys.getenv("R_LIBS"))]),
                                      collapse = .Platform$path.sep)))
    rc <- system2(rscript, shQuote(c(bench_file, "--child", lib, format(size), reps, out_file)),
                  env = env, timeout = timeout)
    if (rc != 0L || !file.exists(out_file)) {
      failed <- c(failed, sprintf("%s %g MB (exit status %d%s)", id, size, rc,
                                  if (rc == 124L) ", timed out" else ""))
      next
    }
    res <- readRDS(out_file); unlink(out_file)
    secs <- res$secs
    ref  <- 2 * median(secs[, "inproc"])
    refb <- 2 * median(secs[, "inproc_bin"])
    rows <- data.frame(
      size_MB   = size,
      direction = c("argument", "result", "2x in-proc ser+unser", "2x in-proc ser+unser bin"),
      lib       = id,
      median_s  = c(median(secs[, "argument"]), median(secs[, "result"]), ref, refb),
      min_s     = c(min(secs[, "argument"]), min(secs[, "result"]),
                    2 * min(secs[, "inproc"]), 2 * min(secs[, "inproc_bin"])),
      stringsAsFactors = FALSE
    )
    rows$vs_2x_inproc     <- rows$median_s / ref
    rows$vs_2x_inproc_bin <- rows$median_s / refb
    results[[length(results) + 1L]] <- rows
  }
}

if (length(results)) {
  tab <- do.call(rbind, results)
  dir_levels <- c("argument", "result", "2x in-proc ser+unser", "2x in-proc ser+unser bin")
  tab <- tab[order(tab$size_MB, match(tab$direction, dir_levels), match(tab$lib, lib_ids)), ]
  num <- c("median_s", "min_s", "vs_2x_inproc", "vs_2x_inproc_bin")
  tab[num] <- lapply(tab[num], round, 3)
  cat(sprintf("\n== payload: round trip through 1 daemon (dispatcher = TRUE), median and min of %d reps ==\n", reps))
  cat("vs_2x_inproc: median / (2 x median in-process unserialize(serialize(big, NULL))) of the same child;\n")
  cat("vs_2x_inproc_bin: the same with serialize(xdr = FALSE)\n")
  cat("(each direction moves the big object once: 0.5 = one in-process ser+unser)\n")
  print(tab, row.names = FALSE, right = FALSE)

  # Wide: one row per size and direction, medians (and ratio) per build.
  wide <- unique(tab[c("size_MB", "direction")])
  for (id in lib_ids) {
    m <- merge(wide, tab[tab$lib == id, c("size_MB", "direction", "median_s", "vs_2x_inproc")],
               all.x = TRUE, sort = FALSE)
    m <- m[match(paste(wide$size_MB, wide$direction), paste(m$size_MB, m$direction)), ]
    wide[[paste0(id, "_median_s")]] <- m$median_s
    wide[[paste0(id, "_vs_2x")]]    <- m$vs_2x_inproc
  }
  if (length(lib_ids) > 1L) for (id in lib_ids[-1L])
    wide[[paste0(id, "/L1")]] <- round(wide[[paste0(id, "_median_s")]] / wide[["L1_median_s"]], 3)
  cat("\n== side by side: median seconds and vs_2x_inproc per build ==\n")
  print(wide, row.names = FALSE, right = FALSE)
}
cat(sprintf("load average: %s\n", paste(readLines("/proc/loadavg"), collapse = " ")))

if (length(failed)) {
  cat(sprintf("FAILED: %s\n", paste(failed, collapse = "; ")), file = stderr())
  quit(save = "no", status = 1L)
}
