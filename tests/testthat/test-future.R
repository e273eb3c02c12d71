# The futureverse on a miraiCluster: plan(cluster, workers = make_cluster(n))
# with future, future.apply and furrr (Debian's packages, unmocked).

skip_if_not_installed("future")

node_pids <- function(cl) unlist(parallel::clusterEvalQ(cl, Sys.getpid()))

test_that("future() and value() run on the cluster's nodes, with globals, packages and errors", {
  cl <- make_cluster(2)
  on.exit({ future::plan(future::sequential); stop_cluster(cl) })
  future::plan(future::cluster, workers = cl)
  expect_identical(future::nbrOfWorkers(), 2L)
  pids <- node_pids(cl)
  expect_true(future::value(future::future(Sys.getpid())) %in% pids)
  # Globals, found by future in the calling environment (including those a
  # global function needs).
  x <- 5
  g <- function(y) y * x
  expect_identical(future::value(future::future(g(2))), 10)
  big <- runif(1e5)
  expect_identical(future::value(future::future(sum(big))), sum(big))
  # Packages: attached on the node when asked for, reached through `::`.
  expect_false(any(unlist(parallel::clusterEvalQ(cl, "package:tools" %in% search()))))
  expect_true(future::value(future::future("package:tools" %in% search(), packages = "tools")))
  expect_identical(future::value(future::future(tools::toTitleCase("web apis"))), "Web Apis")
  # Errors are re-raised with their message; messages and warnings relayed.
  expect_error(future::value(future::future(stop("boom on a node"))), "boom on a node")
  expect_error(future::value(future::future(log("a"))),
               "non-numeric argument to mathematical function")
  f <- future::future({ message("hello"); warning("careful"); 3 })
  expect_message(expect_warning(v <- future::value(f), "careful"), "hello")
  expect_identical(v, 3)
  # Immediate conditions (progressr's updates are such) are relayed too,
  # in order, once the future is done (a PSOCK worker sends them live).
  ticks <- function() {
    for (i in 1:3) {
      signalCondition(structure(class = c("immediateCondition", "condition"),
                                list(message = sprintf("tick %d", i), call = NULL)))
    }
    "ticked"
  }
  got <- character()
  v <- withCallingHandlers(future::value(future::future(ticks())),
                           immediateCondition = function(c) got <<- c(got, conditionMessage(c)))
  expect_identical(v, "ticked")
  expect_identical(got, sprintf("tick %d", 1:3))
  # The cluster works afterwards, on both nodes.
  fs <- lapply(1:2, function(i) future::future({ Sys.sleep(0.3); Sys.getpid() }))
  expect_setequal(vapply(fs, future::value, 0), pids)
})

test_that("future_lapply(), future_sapply() and future_map() spread over the nodes", {
  skip_if_not_installed("future.apply")
  skip_if_not_installed("furrr")
  cl <- make_cluster(2)
  on.exit({ future::plan(future::sequential); stop_cluster(cl) })
  future::plan(future::cluster, workers = cl)
  pids <- node_pids(cl)
  offset <- 100
  expect_identical(future.apply::future_lapply(1:50, function(i) i + offset),
                   as.list(1:50 + offset))
  expect_identical(future.apply::future_sapply(1:7, function(i) i^2), (1:7)^2)
  # One chunk per node: both daemons took part.
  expect_setequal(future.apply::future_sapply(1:2, function(i) Sys.getpid()), pids)
  expect_identical(furrr::future_map(1:4, ~ .x * offset), as.list((1:4) * offset))
  expect_identical(furrr::future_map_chr(c("a", "b"), toupper), c("A", "B"))
  expect_error(future.apply::future_sapply(1:4, function(i) {
    if (i == 3) stop("three is bad") else i
  }),
               "three is bad")
  expect_error(furrr::future_map(1:2, ~ stop("furrr failed here")), "furrr failed here")
  # More futures than nodes: the extra ones wait for a free node (future
  # polls resolved()), and all values come back in order.
  t0 <- Sys.time()
  expect_identical(future.apply::future_sapply(1:6, function(i) { Sys.sleep(0.4); i },
                                               future.scheduling = Inf), 1:6)
  elapsed <- as.numeric(difftime(Sys.time(), t0, units = "secs"))
  expect_gt(elapsed, 1.1)
  # A guard against a hang (polling that never sees a node free).
  expect_lt(elapsed, 30)
})

test_that("future.seed = TRUE gives the same numbers as a PSOCK cluster of the same size", {
  skip_if_not_installed("future.apply")
  skip_if_not_installed("furrr")
  draw <- function() {
    set.seed(42)
    a <- future.apply::future_sapply(1:10, function(i) runif(1), future.seed = TRUE)
    b <- furrr::future_map_dbl(1:5, ~ rnorm(1), .options = furrr::furrr_options(seed = 123))
    c(a, b)
  }
  on.exit(future::plan(future::sequential))
  psock <- parallel::makePSOCKcluster(2)
  on.exit(parallel::stopCluster(psock), add = TRUE)
  future::plan(future::cluster, workers = psock)
  want <- draw()
  cl <- make_cluster(2)
  on.exit(stop_cluster(cl), add = TRUE)
  future::plan(future::cluster, workers = cl)
  expect_identical(draw(), want)
  expect_length(unique(want), 15L)
})

test_that("resolved() does not block, and turns TRUE once the future is done", {
  cl <- make_cluster(2)
  on.exit({ future::plan(future::sequential); stop_cluster(cl) })
  future::plan(future::cluster, workers = cl)
  # The slow future runs until told to end (a file), or 60 s: a resolved()
  # that waited for it would return TRUE only after 60 s.
  flag <- tempfile()
  on.exit(unlink(flag), add = TRUE)
  f <- future::future({
    deadline <- Sys.time() + 60
    while (!file.exists(flag) && Sys.time() < deadline) Sys.sleep(0.05)
    if (file.exists(flag)) "slept" else "gave up"
  })
  expect_silent(r <- future::resolved(f))
  expect_false(r)
  # A quick future on the other node resolves while the slow one runs.
  g <- future::future("quick")
  expect_true(wait_until(function() future::resolved(g), 20))
  expect_false(future::resolved(f))
  expect_identical(future::value(g), "quick")
  file.create(flag)
  expect_identical(future::value(f), "slept")
  expect_true(future::resolved(f))
})

test_that("a future whose daemon dies fails with a FutureError naming the node, never hangs", {
  cl <- make_cluster(2)
  on.exit({ future::plan(future::sequential); stop_cluster(cl) })
  future::plan(future::cluster, workers = cl[1])
  f <- future::future(tools::pskill(Sys.getpid(), tools::SIGKILL))
  t0 <- Sys.time()
  err <- tryCatch(future::value(f), error = function(e) e)
  expect_s3_class(err, "FutureError")
  expect_match(conditionMessage(err),
               "node 1 of the mirai cluster could not run the task: its daemon disconnected")
  expect_lt(as.numeric(difftime(Sys.time(), t0, units = "secs")), 10)
  # A stopped cluster fails clearly too.
  future::plan(future::cluster, workers = cl[2])
  expect_identical(future::value(future::future(2)), 2)
  stop_cluster(cl)
  expect_error(future::value(future::future(3)), "cluster is no longer active")
})

test_that("subsets of a miraiCluster work with parallel and future", {
  cl <- make_cluster(3)
  on.exit({ future::plan(future::sequential); stop_cluster(cl) })
  pids <- node_pids(cl)
  sub <- cl[2:3]
  expect_s3_class(sub, c("miraiCluster", "cluster"))
  expect_s3_class(cl[[1]], "miraiNode")
  expect_identical(unlist(parallel::clusterEvalQ(sub, Sys.getpid())), pids[2:3])
  future::plan(future::cluster, workers = sub)
  expect_identical(future::nbrOfWorkers(), 2L)
  fs <- lapply(1:4, function(i) future::future({ Sys.sleep(0.2); Sys.getpid() }))
  expect_setequal(vapply(fs, future::value, 0), pids[2:3])
  # A single node: as.cluster() (which future applies) makes it a cluster.
  one <- parallelly::as.cluster(cl[[1]])
  expect_s3_class(one, c("miraiCluster", "cluster"))
  expect_identical(unlist(parallel::clusterEvalQ(one, Sys.getpid())), pids[[1]])
  future::plan(future::cluster, workers = one)
  expect_identical(future::value(future::future(Sys.getpid())), pids[[1]])
  # The same nodes however picked: the same name, so future's bookkeeping
  # of busy nodes agrees.
  expect_identical(attr(cl[1], "name"), attr(one, "name"))
  expect_identical(attr(cl[2:3][1], "name"), attr(cl[2], "name"))
  expect_false(identical(attr(cl[2], "name"), attr(cl[3], "name")))
})

test_that("a cluster holds no R connections, so it goes beyond R's 125-connection limit", {
  # A PSOCK node holds one R connection each, which is why
  # makePSOCKcluster(130) fails (see bench/big-cluster.R); a miraiCluster's
  # nodes hold none. By default 8 nodes show that; MIRAI_TEST_LONG=1 runs
  # 130 (130 processes and about 7 GB, a burst of some 40 s of CPU): not on
  # CRAN's machines either way.
  skip_on_cran()
  skip_if_not_installed("future.apply")
  long <- identical(Sys.getenv("MIRAI_TEST_LONG"), "1")
  n <- if (long) 130L else 8L
  # Each daemon is an R process of about 55 MB (RSS; 40 MB PSS).
  meminfo <- readLines("/proc/meminfo")
  avail <- as.numeric(gsub("[^0-9]", "", grep("^MemAvailable:", meminfo, value = TRUE))) / 1024
  skip_if(avail < n * 60, sprintf("%d daemons need about %.0f MB of memory; %.0f MB available",
                                  n, n * 60, avail))
  conns <- nrow(showConnections(all = TRUE))
  t0 <- Sys.time()
  cl <- make_cluster(n)
  on.exit({ future::plan(future::sequential); stop_cluster(cl) })
  started <- as.numeric(difftime(Sys.time(), t0, units = "secs"))
  expect_identical(parallel::clusterEvalQ(cl, 1), rep(list(1), n))
  pids <- node_pids(cl)
  expect_length(unique(pids), n)
  # The nodes hold no R connections.
  expect_identical(nrow(showConnections(all = TRUE)), conns)
  future::plan(future::cluster, workers = cl)
  expect_identical(future::nbrOfWorkers(), n)
  got <- future.apply::future_sapply(seq_len(n), function(i) c(i, Sys.getpid()))
  expect_identical(got[1L, ], seq_len(n))
  expect_setequal(got[2L, ], pids)
  cat(sprintf("\n[figures] make_cluster(%d): %.1f s to start (%d cores)\n", n, started,
              parallel::detectCores()))
})
