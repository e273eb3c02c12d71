# make_cluster() where snow's generics are used, not only parallel's:
# doSNOW (the foreach backend people pick for its progress bars) calls
# snow's sendCall(), recvOneResult(), clusterCall() and stopCluster(),
# whose generics are snow's own. doSNOW's shipped unit tests and examples
# run on a miraiCluster, with a PSOCK cluster as the baseline.

skip_if_not_installed("snow")
skip_if_not_installed("doSNOW")
skip_if_not_installed("foreach")

# Evaluates `expr` with doSNOW attached (with foreach, iterators and snow),
# as its tests and examples expect; whatever it attached is detached after
# (snow would mask parallel's functions for the test files that follow) and
# foreach's backend reset.
with_dosnow_attached <- function(expr) {
  before <- search()
  on.exit({
    foreach::registerDoSEQ()
    for (pkg in setdiff(search(), before)) detach(pkg, character.only = TRUE)
  })
  for (pkg in c("foreach", "iterators", "snow", "doSNOW", "RUnit"))
    if (requireNamespace(pkg, quietly = TRUE)) suppressPackageStartupMessages(library(pkg, character.only = TRUE))
  expr
}

# Runs doSNOW's own unit tests (unitTests/options.R, with RUnit, as its
# tests/doRUnit.R does) on the cluster `make` returns; the RUnit summary.
dosnow_unit_tests <- function(make) {
  cl <- make(2)
  on.exit(snow::stopCluster(cl))
  suite <- RUnit::defineTestSuite("doSNOW", dirs = system.file("unitTests", package = "doSNOW"),
                                  testFileRegexp = "^options\\.R$", testFuncRegexp = "^test.+",
                                  rngKind = "default", rngNormalKind = "default")
  with_dosnow_attached({
    doSNOW::registerDoSNOW(cl)
    # RUnit prints its deactivated test's error (by try()) as it runs.
    utils::capture.output(res <- RUnit::runTestSuite(suite, verbose = 0L), type = "message")
  })
  RUnit::getErrors(res)
}

# Runs a doSNOW example script as shipped, with its cluster made by `make`
# (in place of snow's makeCluster()/makeSOCKcluster()) and each line given
# in `edits` (c(from = to)) replaced; returns what it printed.
dosnow_example <- function(lines, make, edits = character()) {
  for (from in names(edits)) lines <- sub(from, edits[[from]], lines, fixed = TRUE)
  env <- new.env(parent = globalenv())
  env$makeSOCKcluster <- function(spec, ...) make(spec)
  env$makeCluster <- function(spec, ...) make(spec)
  with_dosnow_attached(utils::capture.output(source(exprs = parse(text = lines), local = env,
                                                    print.eval = TRUE)))
}

psock <- function(n) snow::makeSOCKcluster(n)
mirai_cl <- function(n) make_cluster(n)

test_that("snow's generics work on a miraiCluster (snow's clusterCall, clusterApplyLB, stopCluster)", {
  cl <- make_cluster(2)
  on.exit(if (daemons_set(.compute = attr(cl, "id"))) stop_cluster(cl))
  pids <- unlist(snow::clusterCall(cl, Sys.getpid))
  expect_length(unique(pids), 2L)
  expect_identical(snow::clusterApply(cl, 1:4, function(x) x * 2), as.list((1:4) * 2))
  expect_identical(snow::clusterApplyLB(cl, 1:6, function(x) x + 1L), as.list(2:7))
  expect_identical(snow::parLapply(cl, 1:5, sqrt), lapply(1:5, sqrt))
  snow::clusterExport(cl, "pids", envir = environment())
  expect_identical(snow::clusterEvalQ(cl, length(pids)), list(2L, 2L))
  # sendCall()/recvOneResult(): what doSNOW's scheduler uses.
  snow::sendCall(cl[[1L]], function(x) x * 10, list(4), tag = "a")
  snow::sendCall(cl[[2L]], function(x) x * 10, list(5), tag = "b")
  got <- list(snow::recvOneResult(cl), snow::recvOneResult(cl))
  got <- got[order(vapply(got, `[[`, "", "tag"))]
  expect_identical(lapply(got, `[`, c("value", "tag")), list(list(value = 40, tag = "a"), list(value = 50, tag = "b")))
  expect_setequal(vapply(got, `[[`, 0, "node"), c(1, 2))
  # Errors come back as snow reports them.
  expect_error(snow::clusterCall(cl, function() stop("snowy")), "2 nodes produced errors; first error: .*snowy")
  # snow's stopCluster() stops the cluster's daemons.
  snow::stopCluster(cl)
  expect_false(daemons_set(.compute = attr(cl, "id")))
  expect_true(wait_until(function() !any(vapply(pids, pid_alive, logical(1L)))))
})

test_that("foreach through doSNOW on make_cluster(): results, .combine, errors", {
  cl <- make_cluster(2)
  on.exit(stop_cluster(cl))
  doSNOW::registerDoSNOW(cl)
  on.exit(foreach::registerDoSEQ(), add = TRUE)
  `%dopar%` <- foreach::`%dopar%`
  expect_identical(foreach::getDoParName(), "doSNOW")
  expect_identical(foreach::getDoParWorkers(), 2L)
  expect_identical(foreach::foreach(i = 1:10, .combine = c) %dopar% i^2, (1:10)^2)
  # Prescheduled: one chunk per node.
  expect_identical(foreach::foreach(i = 1:7, .combine = c, .options.snow = list(preschedule = TRUE)) %dopar% i,
                   1:7)
  k <- 3
  expect_identical(foreach::foreach(i = 1:4) %dopar% (i + k), as.list((1:4) + 3))
  expect_error(foreach::foreach(i = 1:3) %dopar% if (i == 2) stop("two") else i,
               "task 2 failed - \"two\"", fixed = TRUE)
  res <- foreach::foreach(i = 1:3, .errorhandling = "pass") %dopar% if (i == 2) stop("two") else i
  expect_s3_class(res[[2L]], "error")
  expect_identical(res[c(1L, 3L)], list(1L, 3L))
  # More iterations than nodes, many times over: every result once, in order.
  expect_identical(foreach::foreach(i = 1:200, .combine = c) %dopar% i, 1:200)
})

test_that("doSNOW's progress function is called as each task completes", {
  cl <- make_cluster(2)
  on.exit(stop_cluster(cl))
  doSNOW::registerDoSNOW(cl)
  on.exit(foreach::registerDoSEQ(), add = TRUE)
  `%dopar%` <- foreach::`%dopar%`
  calls <- list()
  # Task 6 runs until the progress function has been called for the other
  # five (a flag file it writes then), or 60 s: reported as each completes,
  # they all are before task 6 ends; reported only at the end, task 6 would
  # give up waiting and return NA.
  flag <- tempfile()
  on.exit(unlink(flag), add = TRUE)
  progress <- function(n, tag) {
    calls[[length(calls) + 1L]] <<- list(n = n, tag = tag)
    if (n == 5) file.create(flag)
  }
  res <- foreach::foreach(i = 1:6, .combine = c, .options.snow = list(progress = progress)) %dopar% {
    if (i < 6L) return(i)
    deadline <- Sys.time() + 60
    while (!file.exists(flag) && Sys.time() < deadline) Sys.sleep(0.05)
    if (file.exists(flag)) i else NA
  }
  expect_identical(res, 1:6)
  expect_identical(vapply(calls, `[[`, 0, "n"), as.numeric(1:6))
  expect_setequal(vapply(calls, `[[`, 0, "tag"), as.numeric(1:6))
  expect_identical(calls[[6L]]$tag, 6)
  # The usual idiom, a txtProgressBar, draws as the tasks complete.
  out <- file(tempfile(), "w+")
  on.exit(close(out), add = TRUE)
  pb <- utils::txtProgressBar(max = 4, style = 3, file = out)
  drawn <- integer()
  opts <- list(progress = function(n) { utils::setTxtProgressBar(pb, n); drawn <<- c(drawn, n) })
  expect_identical(foreach::foreach(i = 1:4, .combine = c, .options.snow = opts) %dopar% i, 1:4)
  close(pb)
  expect_identical(drawn, as.numeric(1:4))
  expect_match(paste(readLines(out, warn = FALSE), collapse = ""), "100%", fixed = TRUE)
})

test_that("doSNOW's own unit tests pass on make_cluster(), as on a PSOCK cluster", {
  skip_if_not_installed("RUnit")
  skip_if_not(dir.exists(system.file("unitTests", package = "doSNOW")), "doSNOW ships no unitTests")
  base <- dosnow_unit_tests(psock)
  expect_identical(c(base$nErr, base$nFail), c(0, 0))
  expect_gte(base$nTestFunc, 2L)
  ours <- dosnow_unit_tests(mirai_cl)
  expect_identical(ours[c("nErr", "nDeactivated", "nTestFunc", "nFail")],
                   base[c("nErr", "nDeactivated", "nTestFunc", "nFail")])
})

test_that("doSNOW's shipped examples run on make_cluster(), as on a PSOCK cluster", {
  # The registerDoSNOW() help example, as shipped.
  rd <- tools::Rd_db("doSNOW")[["registerDoSNOW.Rd"]]
  f <- tempfile(fileext = ".R")
  on.exit(unlink(f))
  tools::Rd2ex(rd, f, commentDontrun = TRUE, commentDonttest = FALSE)
  lines <- readLines(f)
  # Its matrix is random: seeded where it is drawn, after the cluster is
  # made (making either kind of cluster moves the generator on).
  seeded <- c("m <- matrix(rnorm(9), 3, 3)" = "set.seed(1); m <- matrix(rnorm(9), 3, 3)")
  base <- dosnow_example(lines, psock, seeded)
  ours <- dosnow_example(lines, mirai_cl, seeded)
  expect_identical(ours, base)
  expect_true(any(grepl("^result\\.3", ours)))
  # examples/boot.R, as shipped but with 200 trials, not 10000: each of its
  # six timings runs every trial. As shipped (measured on 2 cores) it ran in
  # 57 s on make_cluster(4), 173 s on the PSOCK cluster it makes.
  boot <- readLines(system.file("examples", "boot.R", package = "doSNOW"))
  edits <- c("trials <- 10000" = "trials <- 200")
  base <- dosnow_example(boot, psock, edits)
  ours <- dosnow_example(boot, mirai_cl, edits)
  # The timings differ, and with them the padding before them (a timing of
  # 10 s or more on a loaded machine takes one more character).
  strip <- function(out) trimws(sub("[0-9.]+ sec$", "", out))
  expect_identical(strip(ours), strip(base))
  expect_length(grep("sec$", ours), 6L)
})
