# make_cluster(): base R's parallel, and foreach through doParallel, on
# mirai daemons.

library(parallel)

test_that("make_cluster() validates its arguments", {
  expect_error(make_cluster("tcp://127.0.0.1:0"), "`n` must be numeric, did you mean to provide `url`?")
  expect_error(make_cluster(0), "`n` must be 1 or greater")
  expect_error(make_cluster(c(1, 2)), "`n` must be a single number")
  # Refused before any daemon is launched.
  expect_error(make_cluster(2.5), "`n` must be a whole number")
  expect_error(make_cluster(Inf), "`n` must be a whole number")
  expect_error(make_cluster(10001, url = "tcp://127.0.0.1:0"), "`n` must be at most 10000")
  expect_error(make_cluster(10001), "`n` must be at most 10000")
  expect_error(make_cluster(2, cleanup = TRUE), "`cleanup` cannot be set for a cluster")
  expect_error(make_cluster(2, dispatcher = FALSE), "`dispatcher` cannot be set for a cluster")
  expect_error(make_cluster(2, maxtasks = 3), "`maxtasks` cannot be set for a cluster")
  expect_false(daemons_set(.compute = "`0`"))
  expect_false(any(grepl("^`", ls(mirai:::.$profiles, all.names = TRUE))))
  expect_error(make_cluster(), "`n` must be supplied")
  expect_error(stop_cluster(list()), "`cl` must be a 'miraiCluster'")
})

test_that("every function of parallel works on a miraiCluster", {
  cl <- make_cluster(2)
  on.exit(stop_cluster(cl))
  expect_s3_class(cl, c("miraiCluster", "cluster"))
  expect_output(print(cl), sprintf("< miraiCluster | ID: %s nodes: 2 active: TRUE >", attr(cl, "id")), fixed = TRUE)
  expect_output(print(cl[[2]]), "< miraiNode | node: 2 cluster ID: ", fixed = TRUE)
  expect_identical(status(cl)$connections, 2L)
  # Each node is its own daemon.
  pids <- unlist(clusterEvalQ(cl, Sys.getpid()))
  expect_length(unique(pids), 2L)
  expect_false(Sys.getpid() %in% pids)
  # ...and stays so: node i always answers from the same process.
  expect_identical(unlist(clusterEvalQ(cl, Sys.getpid())), pids)
  expect_identical(unlist(clusterCall(cl, function(a, b) a + b, 1, 2)), c(3, 3))
  base_value <- 100
  clusterExport(cl, "base_value", envir = environment())
  expect_identical(unlist(clusterEvalQ(cl, base_value + 1)), c(101, 101))
  # Exported objects persist on the daemons between calls.
  expect_identical(unlist(clusterEvalQ(cl, exists("base_value"))), c(TRUE, TRUE))
  expect_identical(clusterApply(cl, 1:5, function(x) x * 2), as.list((1:5) * 2))
  expect_identical(clusterApplyLB(cl, 1:5, function(x) x * 3), as.list((1:5) * 3))
  expect_identical(parLapply(cl, 1:7, sqrt), lapply(1:7, sqrt))
  expect_identical(parLapplyLB(cl, 1:7, sqrt), lapply(1:7, sqrt))
  expect_identical(parSapply(cl, 1:5, function(x) x^2), (1:5)^2)
  expect_identical(parSapplyLB(cl, c(a = 1, b = 2), function(x) x + 1), c(a = 2, b = 3))
  mat <- matrix(1:6, 2)
  expect_identical(parApply(cl, mat, 1, sum), apply(mat, 1, sum))
  expect_identical(parRapply(cl, mat, sum), c(9L, 12L))
  expect_identical(parCapply(cl, mat, sum), c(3L, 7L, 11L))
  expect_identical(clusterMap(cl, function(x, y) x + y, 1:3, 4:6), list(5L, 7L, 9L))
  # Functions carry their environments, as with PSOCK.
  k <- 10
  expect_identical(parSapply(cl, 1:3, function(x) x + k), c(11, 12, 13))
  setDefaultCluster(cl)
  on.exit(setDefaultCluster(NULL), add = TRUE, after = FALSE)
  expect_identical(parLapply(NULL, 1:2, function(x) -x), list(-1L, -2L))
})

test_that("clusterSetRNGStream() gives each node parallel's stream", {
  cl <- make_cluster(2)
  on.exit(stop_cluster(cl))
  clusterSetRNGStream(cl, 123)
  got <- clusterEvalQ(cl, .Random.seed)
  RNGkind("L'Ecuyer-CMRG")
  on.exit(RNGkind("default"), add = TRUE)
  set.seed(123)
  s1 <- .Random.seed
  expect_identical(got, list(s1, nextRNGStream(s1)))
  clusterSetRNGStream(cl, 123)
  a <- parSapply(cl, 1:2, function(i) runif(1))
  clusterSetRNGStream(cl, 123)
  expect_identical(parSapply(cl, 1:2, function(i) runif(1)), a)
})

test_that("load-balanced calls balance: short tasks go to the node that is free", {
  cl <- make_cluster(2)
  on.exit(stop_cluster(cl))
  # The first task runs until the four short ones have all run (each writes
  # a file), or 60 s: balanced, they run on the other node meanwhile; sent
  # round robin, the third would queue behind the first, which would give up
  # waiting.
  dir <- tempfile()
  dir.create(dir)
  on.exit(unlink(dir, recursive = TRUE), add = TRUE)
  res <- clusterApplyLB(cl, 1:5, function(i, dir) {
    if (i > 1L) {
      file.create(file.path(dir, i))
      return(list(pid = Sys.getpid(), all_ran = NA))
    }
    deadline <- Sys.time() + 60
    while (length(list.files(dir)) < 4L && Sys.time() < deadline) Sys.sleep(0.05)
    list(pid = Sys.getpid(), all_ran = length(list.files(dir)) == 4L)
  }, dir = dir)
  pids <- vapply(res, `[[`, 0L, "pid")
  expect_true(res[[1L]]$all_ran)
  # The long task ran on one daemon, every short one on the other.
  expect_false(pids[[1L]] %in% pids[-1L])
  expect_length(unique(pids[-1L]), 1L)
})

test_that("receiving from many nodes at once, while R's thread reads their daemons, loses no result", {
  # Waiting in recvOneData(), R's thread reads the daemons of every node
  # with a task (up to 8; the host's loop thread reads the rest): with 10
  # nodes both kinds are in play. A lost reply would hang, so the call runs
  # in a child process with a deadline.
  script <- tempfile(fileext = ".R")
  writeLines(c(
    "library(mirai); library(parallel)",
    "cl <- make_cluster(10)",
    "ok <- TRUE",
    "for (k in 1:3) ok <- ok && identical(clusterApplyLB(cl, 1:3000, function(i) i * 2L), as.list(1:3000 * 2L))",
    "ok <- ok && identical(parLapply(cl, 1:3000, function(i) -i), as.list(-(1:3000)))",
    "stop_cluster(cl)",
    "cat(if (ok) 'ALL-OK' else 'WRONG')"
  ), script)
  res <- processx::run(file.path(R.home("bin"), "Rscript"), script, timeout = 120, error_on_status = FALSE,
                       env = c("current", R_LIBS = paste(.libPaths(), collapse = ":")))
  expect_false(res$timeout)
  expect_match(res$stdout, "ALL-OK")
})

test_that("a receive keeps its claim on the nodes' daemons for the next one; the host takes it back once unused", {
  # Between two receives of a parallel call, a node's reply is left for R's
  # thread to read at the next receive (see Claim in rust/src/host/mod.rs).
  # A claim R's thread stops reading goes back to the host's loop thread,
  # which reads the replies that came meanwhile: none is lost or held up.
  skip_if_not(exists("C_mirai_test_claims", envir = asNamespace("mirai"), inherits = FALSE),
              "the claims are read through a test hook: needs the test build of mirai (install with MIRAI_TEST_HOOKS=1, as tools/test.sh does)")
  cl <- make_cluster(2)
  on.exit(stop_cluster(cl))
  host <- attr(cl, "profile")$host
  claims <- function() .Call(mirai:::C_mirai_test_claims, host)
  head_done <- function(i) .Call(mirai:::C_mirai_aio_done, .subset2(cl[[i]], "head"))
  # Claims linger only after a receive whose reply R's thread read while it
  # spun for it (150 us); on a loaded machine most spins may run out. They
  # are read at once: the loop thread takes them back 2 ms after their last
  # use, about what an expectation of testthat's takes (run between the
  # call and the read, it left them 0,0 every time on this machine).
  linger <- function() {
    deadline <- Sys.time() + 20
    while (Sys.time() < deadline) {
      v <- clusterEvalQ(cl, 1L)
      held <- claims()
      expect_identical(v, list(1L, 1L))
      if (identical(held, c(2L, 1L))) return(invisible())
    }
    skip("no receive caught its reply while spinning in 20 s (machine too loaded to test this)")
  }
  linger()
  # A reply that comes while its daemon is claimed and no receive waits for
  # it is read once the loop thread takes the claim back. (Checked after
  # that: the check itself gives the claims back.)
  parallel:::sendCall(cl[[1L]], function(x) x * 2L, list(21L))
  expect_true(wait_until(function() identical(claims(), c(0L, 0L)), timeout = 5))
  expect_true(wait_until(function() head_done(1L), timeout = 5))
  expect_identical(parallel:::recvResult(cl[[1L]]), 42L)
  # A claim on a node that no receive waits on goes back to the loop thread
  # while R's thread keeps receiving from another node (it would otherwise
  # stay unread for as long as those receives went on).
  linger()
  parallel:::sendCall(cl[[2L]], function(x) x + 1L, list(1L))
  t0 <- Sys.time()
  while (Sys.time() < t0 + 0.5) {
    parallel:::sendCall(cl[[1L]], identity, list(0L))
    expect_identical(parallel:::recvResult(cl[[1L]]), 0L)
  }
  expect_lte(claims()[[1L]], 1L)
  expect_identical(parallel:::recvResult(cl[[2L]]), 2L)
  expect_identical(clusterApplyLB(cl, 1:500, function(i) -i), as.list(-(1:500)))
})

test_that("errors on nodes surface as parallel reports them", {
  cl <- make_cluster(2)
  on.exit(stop_cluster(cl))
  expect_error(clusterEvalQ(cl, elephant()), "2 nodes produced errors; first error: Error in elephant(): could not find function \"elephant\"",
               fixed = TRUE)
  expect_error(parLapply(cl, list(1, "a"), function(x) log(x)),
               "one node produced an error: Error in log(x): non-numeric argument to mathematical function",
               fixed = TRUE)
  # The cluster is still usable afterwards.
  expect_identical(parSapply(cl, 1:4, function(x) x), 1:4)
})

test_that("a node whose daemon died fails calls clearly, never hangs", {
  cl <- make_cluster(2)
  on.exit(stop_cluster(cl))
  pids <- unlist(clusterEvalQ(cl, Sys.getpid()))
  # Killed mid-task.
  res <- tryCatch({
    clusterApply(cl, 1:2, function(i) { if (i == 2) tools::pskill(Sys.getpid(), tools::SIGKILL); Sys.sleep(0.5); i })
  }, error = function(e) e)
  expect_s3_class(res, "error")
  expect_match(conditionMessage(res), "one node produced an error: node 2 of the mirai cluster could not run the task: its daemon disconnected")
  expect_true(wait_until(function() !pid_alive(pids[[2]])))
  # Later calls that reach the dead node fail at once.
  t0 <- Sys.time()
  expect_error(clusterEvalQ(cl, 1), "node 2 of the mirai cluster could not run the task")
  # A guard against waiting for the 30 s keepalive, or for ever.
  expect_lt(as.numeric(difftime(Sys.time(), t0, units = "secs")), 20)
  # The surviving node still works, alone.
  expect_identical(clusterEvalQ(cl[1], Sys.getpid()), list(pids[[1]]))
})

# A child process that interrupts (Ctrl-C) `r <- <call>`, a parallel call
# on a 2-node cluster whose tasks take 20 s, then runs `after`: what it
# printed.
interrupt_cluster_call <- function(call, after) {
  interrupt_child(c(
    "library(mirai); library(parallel)",
    "cl <- make_cluster(2)",
    "invisible(clusterEvalQ(cl, 1))",
    "slow <- function(i) { Sys.sleep(20); i * 100 }",
    "got <- NULL",
    "cat('ready\\n')",
    paste("r <-", call),
    "cat('first:', unlist(r), '\\n')",
    after,
    "stop_cluster(cl)",
    "cat('done\\n')"
  ), "ready", "done", timeout = 60)
}

test_that("an interrupted parallel call leaves no stale results for the next one", {
  skip_if_not_installed("processx")
  out <- interrupt_cluster_call("tryCatch(parLapply(cl, 1:2, slow), interrupt = function(e) 'int')", c(
    "cat('next:', unlist(parLapply(cl, 1:2, function(i) -i)), '\\n')",
    "cat('LB:', unlist(clusterApplyLB(cl, 1:4, function(i) i)), '\\n')"
  ))
  expect_match(out, "first: int", fixed = TRUE)
  # Not the interrupted call's 100 200: the results of the call just made.
  expect_match(out, "next: -1 -2 \n", fixed = TRUE)
  expect_match(out, "LB: 1 2 3 4 \n", fixed = TRUE)
})

test_that("a calling handler of an interrupt that uses the cluster gets its own results", {
  # The interrupted wait's tasks are dropped before any handler runs, as for
  # a time limit (PSOCK hands the handler the interrupted call's results).
  skip_if_not_installed("processx")
  out <- interrupt_cluster_call(paste(
    "tryCatch(withCallingHandlers(parLapply(cl, 1:2, slow),",
    "interrupt = function(c) got <<- unlist(parLapply(cl, 1:2, function(i) -i))), interrupt = function(e) 'int')"
  ), c(
    "cat('got:', got, '\\n')",
    "cat('next:', unlist(parLapply(cl, 1:2, function(i) i * 10)), '\\n')"
  ))
  expect_match(out, "first: int", fixed = TRUE)
  expect_match(out, "got: -1 -2 \n", fixed = TRUE)
  expect_match(out, "next: 10 20 \n", fixed = TRUE)
})

test_that("a parallel call interrupted while sending leaves no stale results either", {
  skip_if_not_installed("processx")
  # The second serialization (node 2's task) blocks: the interrupt lands
  # after node 1's task was sent.
  out <- interrupt_child(c(
    "library(mirai); library(parallel)",
    "calls <- 0",
    "cfg <- serial_config('slowser', sfunc = function(x) { calls <<- calls + 1; if (calls == 2) Sys.sleep(30); serialize(NULL, NULL) }, ufunc = function(r) structure(new.env(), class = 'slowser'))",
    "cl <- make_cluster(2, serial = cfg)",
    "invisible(clusterEvalQ(cl, 1))",
    "obj <- structure(new.env(), class = 'slowser')",
    "cat('ready\\n')",
    "r <- tryCatch(clusterCall(cl, function(o) 'stale', obj), interrupt = function(e) 'int')",
    "cat('first:', unlist(r), '\\n')",
    "cat('next:', unlist(clusterEvalQ(cl, 'fresh')), '\\n')",
    "stop_cluster(cl)",
    "cat('done\\n')"
  ), "ready", "done", timeout = 60)
  expect_match(out, "first: int", fixed = TRUE)
  expect_match(out, "next: fresh fresh \n", fixed = TRUE)
})

test_that("a parallel call that fails while sending leaves no stale results", {
  # The second serialization (node 2's task) fails after node 1's task was
  # sent: the routine drops node 1's task before the error reaches R.
  calls <- 0
  cfg <- serial_config("failser", sfunc = function(x) {
    calls <<- calls + 1
    if (calls == 2) stop("cannot serialize this one")
    serialize(NULL, NULL)
  }, ufunc = function(r) structure(new.env(), class = "failser"))
  cl <- make_cluster(2, serial = cfg)
  on.exit(stop_cluster(cl))
  expect_identical(clusterEvalQ(cl, 1), list(1, 1))
  obj <- structure(new.env(), class = "failser")
  expect_error(clusterCall(cl, function(o) "stale", obj), "cannot serialize this one")
  expect_identical(calls, 2)
  expect_identical(clusterEvalQ(cl, "fresh"), list("fresh", "fresh"))
  expect_identical(clusterApplyLB(cl, 1:4, function(i) i), as.list(1:4))
})

test_that("a node failure value prints as the 'try-error' it is", {
  cl <- make_cluster(1)
  on.exit(stop_cluster(cl))
  parallel:::sendCall(cl[[1]], function() Sys.sleep(10), list())
  daemons(0, .compute = attr(cl, "id"))
  v <- parallel:::recvResult(cl[[1]])
  expect_s3_class(v, "try-error")
  expect_output(print(v), "node 1 of the mirai cluster could not run the task", fixed = TRUE)
})

test_that("foreach %dopar% via doParallel: .combine, many iterations, .export, .packages, errors", {
  skip_if_not_installed("doParallel")
  skip_if_not_installed("foreach")
  library(foreach)
  cl <- make_cluster(2)
  on.exit({ foreach::registerDoSEQ(); stop_cluster(cl) })
  doParallel::registerDoParallel(cl)
  expect_identical(foreach::getDoParWorkers(), 2L)
  expect_identical(foreach(i = 1:10, .combine = c) %dopar% i^2, (1:10)^2)
  # Far more iterations than nodes.
  expect_identical(foreach(i = 1:500, .combine = "+") %dopar% i, sum(1:500))
  offset <- 1000
  f <- function() foreach(i = 1:3, .combine = c, .export = "offset") %dopar% (i + offset)
  expect_identical(f(), c(1001, 1002, 1003))
  expect_identical(foreach(i = 1:2, .combine = c, .packages = "tools") %dopar% ("package:tools" %in% search()),
                   c(TRUE, TRUE))
  expect_error(foreach(i = 1:4) %dopar% if (i == 3) stop("bad three") else i, "task 3 failed - \"bad three\"")
  res <- foreach(i = 1:4, .errorhandling = "pass") %dopar% if (i == 3) stop("x") else i
  expect_s3_class(res[[3]], "error")
  expect_identical(conditionMessage(res[[3]]), "x")
  expect_identical(res[c(1, 2, 4)], list(1L, 2L, 4L))
})

test_that("a cluster coexists with daemons() profiles, and stops cleanly", {
  daemons(1)
  on.exit(daemons(0))
  cl <- make_cluster(2)
  expect_false(identical(attr(cl, "id"), "default"))
  host_pid <- mirai(Sys.getpid())[]
  node_pids <- unlist(clusterEvalQ(cl, Sys.getpid()))
  expect_false(host_pid %in% node_pids)
  cl2 <- make_cluster(1)
  expect_false(identical(attr(cl2, "id"), attr(cl, "id")))
  stopCluster(cl2)
  stopCluster(cl)
  expect_output(print(cl), "active: FALSE")
  expect_error(parLapply(cl, 1:2, identity), "cluster is no longer active")
  expect_true(wait_until(function() !any(vapply(node_pids, pid_alive, logical(1L)))))
  # The default profile is untouched.
  expect_identical(mirai(1 + 1)[], 2)
})

test_that("a cluster made after stop_cluster() gets an ID no earlier cluster had", {
  ids <- character()
  for (i in 1:3) {
    cl <- make_cluster(1)
    ids <- c(ids, attr(cl, "id"))
    stop_cluster(cl)
  }
  # Daemons set meanwhile under another profile name move the count on too.
  daemons(sync = TRUE, .compute = "fidelity-extra")
  daemons(0, .compute = "fidelity-extra")
  cl <- make_cluster(1)
  ids <- c(ids, attr(cl, "id"))
  stop_cluster(cl)
  expect_match(ids, "^`[0-9]+`$")
  expect_false(anyDuplicated(ids) > 0L)
  # Each ID is a number higher than the one before.
  expect_true(all(diff(as.integer(gsub("`", "", ids, fixed = TRUE))) > 0L))
})

test_that("a stopped cluster's handle neither reports nor stops a later cluster", {
  cl1 <- make_cluster(1)
  stop_cluster(cl1)
  cl2 <- make_cluster(1)
  on.exit(stop_cluster(cl2))
  expect_false(identical(attr(cl2, "id"), attr(cl1, "id")))
  expect_output(print(cl1), "active: FALSE", fixed = TRUE)
  stop_cluster(cl1)
  stopCluster(cl1[1])
  expect_output(print(cl2), "active: TRUE", fixed = TRUE)
  expect_identical(status(cl1), list(connections = 0L, daemons = 0L))
  expect_identical(status(cl2)$connections, 1L)
  expect_identical(clusterEvalQ(cl2, 7), list(7))
  expect_error(clusterEvalQ(cl1, 1), "cluster is no longer active")
})

test_that("subsetting keeps the cluster's classes", {
  cl <- make_cluster(2)
  on.exit(stop_cluster(cl))
  sub <- cl[2]
  expect_s3_class(sub, c("miraiCluster", "cluster"))
  expect_identical(attr(sub, "id"), attr(cl, "id"))
  expect_s3_class(cl[[1]], "miraiNode")
  expect_identical(parLapply(sub, 1:3, function(x) x), list(1L, 2L, 3L))
})

test_that("nodes start in parallel: make_cluster(8) launches all eight at once", {
  rscript <- file.path(R.home("bin"), "Rscript")
  start_up <- function() system.time(system2(rscript, c("-e", shQuote("invisible(loadNamespace('mirai'))"))))[["elapsed"]]
  one <- start_up()
  t8 <- system.time(cl <- make_cluster(8))[["elapsed"]]
  on.exit(stop_cluster(cl))
  # A start-up timed on each side of the launches, the longer one kept: a
  # load spike during the launches slows both alike (timed only before, a
  # quiet moment could set the bar for a loaded one).
  one <- max(one, start_up())
  pids <- unlist(clusterEvalQ(cl, Sys.getpid()))
  expect_length(unique(pids), 8L)
  # Process start times (clock ticks since boot, field 22 of /proc/<pid>/stat):
  # launched one after another, each waiting for the previous to connect,
  # they would span seven start-ups. Timing-independent of the machine's load.
  ticks <- as.numeric(system2("getconf", "CLK_TCK", stdout = TRUE))
  start <- vapply(pids, function(p) {
    st <- readLines(sprintf("/proc/%d/stat", p))
    as.numeric(strsplit(sub("^.*\\) ", "", st), " ")[[1]][[20L]])
  }, numeric(1L)) / ticks
  spread <- max(start) - min(start)
  cat(sprintf("\n[figures] one R start-up loading mirai: %.2f s; make_cluster(8): %.2f s; launches spread over %.2f s (%d cores)\n",
              one, t8, spread, parallel::detectCores()))
  # Half of what launching them one after another would take at the least.
  expect_lt(spread, 3.5 * one)
})

test_that("custom-serialized reference objects travel through parLapply both ways", {
  cfg <- fresh_ptr_config()
  mk <- fresh_ptr
  cl <- make_cluster(2, serial = cfg)
  on.exit(stop_cluster(cl))
  out <- parLapply(cl, list(mk("a"), mk("b")), function(p) {
    stopifnot(typeof(p) == "externalptr")
    attr(p, "payload") <- paste0(attr(p, "payload"), "x")
    p
  })
  expect_true(all(vapply(out, function(p) inherits(p, "myptr") && typeof(p) == "externalptr", logical(1L))))
  # Upper-cased on the way in (on the daemon) and on the way back (here).
  expect_identical(vapply(out, attr, "", "payload"), c("AX", "BX"))
})

test_that("make_cluster(url) prints launch commands; nodes wait for their daemons", {
  expect_output(cl <- make_cluster(2, url = local_url(tcp = TRUE)), "Shell commands for deployment on nodes")
  on.exit(stop_cluster(cl))
  cmds <- launch_remote(cl)
  expect_s3_class(cmds, "miraiLaunchCmd")
  expect_length(cmds, 2L)
  # The tasks are sent before any daemon has connected: each node's task
  # waits for its own daemon.
  # (Rscript by its full path: R CMD check puts a stub first on PATH.)
  cmds <- sub(" Rscript -e ", sprintf(" %s -e ", shQuote(file.path(R.home("bin"), "Rscript"))), cmds, fixed = TRUE)
  for (cmd in cmds) system(cmd, wait = FALSE)
  pids <- unlist(clusterEvalQ(cl, Sys.getpid()))
  expect_length(unique(pids), 2L)
  stop_cluster(cl)
  expect_true(wait_until(function() !any(vapply(pids, pid_alive, logical(1L)))))
  # With a launch configuration, the daemons are launched at once.
  cl2 <- make_cluster(2, url = local_url(tcp = TRUE),
                      remote = remote_config(command = "sh", args = c("-c", "."), quote = TRUE,
                                             rscript = file.path(R.home("bin"), "Rscript")))
  on.exit(stop_cluster(cl2), add = TRUE)
  expect_identical(parSapply(cl2, 1:4, function(x) x * 2), c(2, 4, 6, 8))
})

test_that("a node runs tasks as parallel's workers do: do.call(fun, args, quote = TRUE)", {
  cl <- make_cluster(2)
  ps <- makePSOCKcluster(1)
  on.exit({ stop_cluster(cl); stopCluster(ps) })
  # Argument values that are symbols or calls arrive unevaluated (quoted),
  # names become argument names, and the function sees its own call as
  # PSOCK's worker gives it.
  f <- function(a, b = 2, ...) list(a = a, b = b, dots = list(...), missing_b = missing(b))
  args <- list(quote(sym), b = quote(g(x)), extra = 1:3, 4)
  ours <- clusterCall(cl[1], f, quote(sym), b = quote(g(x)), extra = 1:3, 4)[[1L]]
  expect_identical(ours, clusterCall(ps, f, quote(sym), b = quote(g(x)), extra = 1:3, 4)[[1L]])
  expect_identical(ours$a, quote(sym))
  expect_identical(clusterCall(cl[1], f, 1)[[1L]]$missing_b, TRUE)
  # The same function sent with every task is run as one object (R's JIT
  # compiles it once), but two closures with the same code and different
  # environments each keep their own.
  make <- function(k) function(x) x + k
  one <- make(1)
  two <- make(100)
  got <- clusterApplyLB(cl, 1:6, function(i) i)
  expect_identical(unlist(got), 1:6)
  mixed <- lapply(1:6, function(i) {
    parallel:::sendCall(cl[[1]], if (i %% 2L) one else two, list(i))
    parallel:::recvResult(cl[[1]])
  })
  expect_identical(unlist(mixed), c(2, 102, 4, 104, 6, 106))
  # A global the function reads is looked up at each call, memo or not.
  clusterEvalQ(cl, k0 <- 1)
  g0 <- function(x) x + k0
  expect_identical(unlist(clusterCall(cl, g0, 1)), c(2, 2))
  clusterEvalQ(cl, k0 <- 10)
  expect_identical(unlist(clusterCall(cl, g0, 1)), c(11, 11))
})

test_that("errors on nodes carry the remote message and a stack trace starting at the signalling call", {
  cl <- make_cluster(1)
  on.exit(stop_cluster(cl))
  outer <- function(x) {
    inner <- function(x) stop("inner failure ", x)
    inner(x)
  }
  parallel:::sendCall(cl[[1]], outer, list(7))
  v <- parallel:::recvResult(cl[[1]])
  expect_s3_class(v, "miraiError")
  expect_identical(v$message, "inner failure 7")
  expect_identical(v$stack.trace[[1L]], quote(stop("inner failure ", x)))
  expect_identical(v$stack.trace[[2L]], quote(inner(x)))
  # The node goes on: the next task runs normally, and so does a function
  # the tasks before did not send.
  expect_identical(clusterCall(cl, function() 42)[[1L]], 42)
  err <- tryCatch(clusterCall(cl, function() stop(simpleError("condition object"))), error = identity)
  expect_match(conditionMessage(err), "condition object", fixed = TRUE)
  # Warnings on a node do not fail the task.
  expect_identical(clusterCall(cl, function() { warning("w"); 3 })[[1L]], 3)
})

# A function whose environment is the global one or a namespace travels to
# each node's daemon once (as a share); the others go with every task.
# Functions made here have the test's environment: these are moved to the
# global one, as a script's would be.
global_fun <- function(f) {
  environment(f) <- globalenv()
  f
}

test_that("parallel's functions give the same results whatever kind of function they send", {
  cl <- make_cluster(2)
  on.exit(stop_cluster(cl))
  k <- 5
  local_closure <- function(i) i + k
  funs <- list(global = global_fun(function(i) i * 2), namespace = tools::file_ext,
               anonymous_local = function(i) i - 1, local_closure = local_closure,
               primitive = sqrt, name = "sqrt", base_closure = base::nchar)
  x <- c("a.txt", "b.R", "c", "d.tar.gz", "e.md")
  for (nm in names(funs)) {
    f <- funs[[nm]]
    xs <- if (identical(nm, "namespace") || identical(nm, "base_closure")) x else c(1, 4, 9, 16, 25)
    want <- lapply(xs, match.fun(f))
    expect_identical(clusterApplyLB(cl, xs, f), want, label = nm)
    expect_identical(clusterApply(cl, xs, f), want, label = nm)
    expect_identical(parLapply(cl, xs, f), want, label = nm)
    # Sent again: from the daemons' copies this time.
    expect_identical(clusterApplyLB(cl, xs, f), want, label = nm)
  }
  # One value per task, written natively when plain: every bit arrives
  # (NA, NaN, -0, an NA's payload), and a value with attributes is R's to
  # write.
  id <- global_fun(function(v) v)
  plain <- list(NA, TRUE, FALSE, NA_integer_, 0L, -7L, .Machine$integer.max, NA_real_, NaN, -0, Inf,
                -Inf, 1e-300, pi, c(a = 1), as.Date("2024-01-02"), factor("z"), "text", 1:3, list(1))
  got <- clusterApplyLB(cl, plain, id)
  expect_identical(got, plain)
  expect_identical(sign(1 / got[[10]]), -1)
  expect_identical(clusterApply(cl, plain, id), plain)
  # Errors from a function sent once still come back as parallel reports
  # them, with the call that failed.
  boom <- global_fun(function(i) if (i == 3) stop("boom at ", i) else i)
  err <- tryCatch(clusterApplyLB(cl, 1:4, boom), error = identity)
  expect_match(conditionMessage(err), "^one node produced an error: .*boom at 3")
  expect_identical(clusterApplyLB(cl, 1:2, boom), list(1L, 2L))
  # Many functions in turn: more than a daemon keeps, and more than the host
  # keeps ready to send; each is sent again when needed.
  many <- lapply(1:10, function(j) global_fun(eval(bquote(function(i) i * .(j)))))
  for (round in 1:2) for (j in seq_along(many))
    expect_identical(unlist(clusterApplyLB(cl, 1:3, many[[j]])), (1:3) * j)
})

test_that("a changed function, or a changed captured variable, is what the next call runs", {
  cl <- make_cluster(2)
  on.exit(stop_cluster(cl))
  # A closure made in a function: its captured `k` changes between calls.
  make <- function(k) function(i) i + k
  h <- make(1)
  expect_identical(unlist(parLapply(cl, 1:4, h)), c(2, 3, 4, 5))
  assign("k", 100, envir = environment(h))
  expect_identical(unlist(parLapply(cl, 1:4, h)), c(101, 102, 103, 104))
  expect_identical(unlist(clusterApplyLB(cl, 1:2, h)), c(101, 102))
  # A global function redefined under the same name.
  f <- global_fun(function(i) i)
  expect_identical(unlist(clusterApplyLB(cl, 1:4, f)), 1:4)
  f <- global_fun(function(i) -i)
  expect_identical(unlist(clusterApplyLB(cl, 1:4, f)), -(1:4))
  # A global function's attribute changed in place (R copies it: the host
  # holds it too), read by the function itself.
  g <- global_fun(function(i) attr(sys.function(), "k") * i)
  attr(g, "k") <- 2
  expect_identical(unlist(clusterApplyLB(cl, 1:3, g)), c(2, 4, 6))
  attr(g, "k") <- 3
  expect_identical(unlist(clusterApplyLB(cl, 1:3, g)), c(3, 6, 9))
  body(g) <- quote(-i)
  expect_identical(unlist(clusterApplyLB(cl, 1:3, g)), -(1:3))
  # An environment inside a global function (an attribute, a default
  # argument) is written with its contents, which change while the
  # function stays the same object.
  memo <- global_fun(function(i) get("k", envir = attr(sys.function(), "memo")) + i)
  attr(memo, "memo") <- new.env()
  assign("k", 10, envir = attr(memo, "memo"))
  expect_identical(unlist(clusterApplyLB(cl, 1:2, memo)), c(11, 12))
  assign("k", 20, envir = attr(memo, "memo"))
  expect_identical(unlist(clusterApplyLB(cl, 1:2, memo)), c(21, 22))
  e <- new.env()
  e$k <- 1
  dflt <- global_fun(eval(bquote(function(i, e = .(e)) e$k + i)))
  expect_identical(unlist(clusterApplyLB(cl, 1:2, dflt)), c(2, 3))
  e$k <- 5
  expect_identical(unlist(clusterApplyLB(cl, 1:2, dflt)), c(6, 7))
})

test_that("a node's function is sent to each daemon once, not with every task", {
  cl <- make_cluster(2)
  on.exit(stop_cluster(cl))
  host <- attr(cl, "profile")$host
  # A large constant in the function itself (not in a captured environment).
  big <- global_fun(eval(bquote(function(i, b = .(runif(2e5))) i + length(b))))
  size <- length(serialize(big, NULL))
  before <- .Call(mirai:::C_mirai_host_sent, host)
  got <- clusterApplyLB(cl, 1:200, big)
  sent <- .Call(mirai:::C_mirai_host_sent, host) - before
  expect_identical(unlist(got), 1:200 + 200000L)
  # Once per daemon (two), not 200 times.
  expect_gt(sent, 2 * size)
  expect_lt(sent, 2 * size + 200 * 1000)
  # So too with source references (kept in interactive sessions), whose
  # file is an environment R never changes.
  withr_src <- options(keep.source = TRUE)
  srcd <- eval(parse(text = sprintf("function(i) { x <- '%s'; i + nchar(x) }", strrep("a", 5e4))),
               globalenv())
  options(withr_src)
  expect_false(is.null(attr(srcd, "srcref")))
  before <- .Call(mirai:::C_mirai_host_sent, host)
  expect_identical(unlist(clusterApplyLB(cl, 1:200, srcd)), 1:200 + 50000L)
  expect_lt(.Call(mirai:::C_mirai_host_sent, host) - before, 4 * length(serialize(srcd, NULL)) + 200 * 1000)
  # Later calls send it no more. (parLapply() sends it as an argument of
  # lapply(), with each chunk, as to a PSOCK cluster.)
  before <- .Call(mirai:::C_mirai_host_sent, host)
  expect_identical(unlist(clusterApply(cl, 1:10, big)), 1:10 + 200000L)
  expect_lt(.Call(mirai:::C_mirai_host_sent, host) - before, 20000)
  # A node whose daemon died mid-call fails clearly; the other goes on with
  # the function it holds.
  pids <- unlist(clusterEvalQ(cl, Sys.getpid()))
  killer <- global_fun(function(i) { if (i == 2) tools::pskill(Sys.getpid(), tools::SIGKILL); Sys.sleep(0.2); i })
  expect_error(clusterApply(cl, 1:2, killer), "its daemon disconnected")
  expect_true(wait_until(function() !pid_alive(pids[[2]])))
  expect_identical(unlist(clusterApplyLB(cl[1], 1:5, big)), 1:5 + 200000L)
  expect_error(clusterCall(cl[2], big, 1), "could not run the task")
  # A new cluster (new daemons) is sent the same function afresh.
  cl2 <- make_cluster(2)
  on.exit(stop_cluster(cl2), add = TRUE)
  host2 <- attr(cl2, "profile")$host
  before <- .Call(mirai:::C_mirai_host_sent, host2)
  expect_identical(unlist(clusterApplyLB(cl2, 1:50, big)), 1:50 + 200000L)
  sent <- .Call(mirai:::C_mirai_host_sent, host2) - before
  expect_gt(sent, 2 * size)
  expect_lt(sent, 3 * size)
})

test_that("a function that must go whole is checked once, not with every task", {
  cl <- make_cluster(2)
  on.exit(stop_cluster(cl))
  calls <- 0L
  counter <- function() calls <<- calls + 1L
  suppressMessages(trace("node_fun_fixed", tracer = as.call(list(counter)), print = FALSE, where = asNamespace("mirai")))
  on.exit(suppressMessages(untrace("node_fun_fixed", where = asNamespace("mirai"))), add = TRUE)
  # A closure made in a function, over a large environment: it goes whole
  # with each task, as to a PSOCK cluster, and its captured values may
  # change between calls.
  make <- function(k) { pad <- runif(1e6); function(i) i + k + 0 * length(pad) }
  h <- make(1)
  expect_identical(unlist(clusterApplyLB(cl, 1:30, h)), 1:30 + 1)
  expect_identical(calls, 1L)
  assign("k", 100, envir = environment(h))
  expect_identical(unlist(clusterApplyLB(cl, 1:3, h)), 1:3 + 100)
  expect_identical(calls, 1L)
})

test_that("only a function's own source file passes for one R never changes", {
  cl <- make_cluster(2)
  on.exit(stop_cluster(cl))
  # An environment classed as source references' files are, as a closure's
  # own: its bindings change like any other's, and each call sees them.
  e <- new.env(parent = globalenv())
  e$k <- 1
  class(e) <- "srcfile"
  g <- function(i) i + k
  environment(g) <- e
  expect_identical(unlist(clusterApplyLB(cl, 1:2, g)), c(2, 3))
  assign("k", 10, envir = e)
  expect_identical(unlist(clusterApplyLB(cl, 1:2, g)), c(11, 12))
  # Or held in the function's attribute.
  h <- global_fun(function(i) get("k", envir = attr(sys.function(), "e")) + i)
  attr(h, "e") <- e
  expect_identical(unlist(clusterApplyLB(cl, 1:2, h)), c(11, 12))
  assign("k", 20, envir = e)
  expect_identical(unlist(clusterApplyLB(cl, 1:2, h)), c(21, 22))
  # A function parsed with its source references is sent once all the same.
  host <- attr(cl, "profile")$host
  old <- options(keep.source = TRUE)
  srcd <- eval(parse(text = sprintf("function(i) { x <- '%s'; i + nchar(x) }", strrep("b", 5e4))),
               globalenv())
  options(old)
  expect_true(is.environment(attr(attr(srcd, "srcref"), "srcfile")))
  before <- .Call(mirai:::C_mirai_host_sent, host)
  expect_identical(unlist(clusterApplyLB(cl, 1:100, srcd)), 1:100 + 50000L)
  expect_lt(.Call(mirai:::C_mirai_host_sent, host) - before, 4 * length(serialize(srcd, NULL)) + 100 * 1000)
})

test_that("functions sent to a cluster are not kept alive once dropped, beyond a bounded cache", {
  cl <- make_cluster(2)
  on.exit(stop_cluster(cl))
  # R's heap in use, in MB, after a full collection.
  used <- function() {
    gc()
    sum(gc()[, 2L])
  }
  # A closure over a large environment, sent by parLapply() and with each
  # task: collected once dropped. Classed as a source file, the same.
  for (cls in list(NULL, "srcfile")) {
    gone <- new.env()
    e <- new.env(parent = globalenv())
    e$data <- numeric(1e7)
    class(e) <- cls
    reg.finalizer(e, function(e) assign("yes", TRUE, envir = gone))
    f <- function(i) i + length(data)
    environment(f) <- e
    expect_identical(unlist(parLapply(cl, 1:10, f)), 1:10 + 10000000L)
    expect_identical(unlist(clusterApplyLB(cl, 1:2, f)), 1:2 + 10000000L)
    rm(f, e)
    invisible(used())
    expect_true(isTRUE(gone$yes), label = paste("collected, class", format(cls)))
  }
  # A global function holding a large constant (80 MB): too big to keep.
  base <- used()
  big <- global_fun(eval(bquote(function(i, b = .(numeric(1e7))) i + length(b))))
  expect_gt(used() - base, 70)
  expect_identical(unlist(clusterApplyLB(cl, 1:2, big)), 1:2 + 10000000L)
  expect_identical(unlist(clusterApplyLB(cl, 1:2, big)), 1:2 + 10000000L)
  held <- used()
  rm(big)
  expect_gt(held - used(), 70)
  # Three of 24 MB, each sent once per daemon: not all three are kept.
  mids <- lapply(1:3, function(j) global_fun(eval(bquote(function(i, b = .(rep(as.numeric(j), 3e6))) i + b[[1L]]))))
  for (j in 1:3) expect_identical(unlist(clusterApplyLB(cl, 1:4, mids[[j]])), 1:4 + as.numeric(j))
  held <- used()
  rm(mids)
  expect_gt(held - used(), 20)
})

test_that("custom-serialized arguments travel with a function sent once", {
  cfg <- fresh_ptr_config()
  mk <- fresh_ptr
  cl <- make_cluster(2, serial = cfg)
  on.exit(stop_cluster(cl))
  f <- global_fun(function(p) {
    stopifnot(typeof(p) == "externalptr")
    attr(p, "payload") <- paste0(attr(p, "payload"), "x")
    p
  })
  for (round in 1:2) {
    out <- clusterApplyLB(cl, list(mk("a"), mk("b"), mk("c")), f)
    expect_identical(vapply(out, attr, "", "payload"), c("AX", "BX", "CX"))
  }
})

test_that("on.exit() in a node's expression runs as on a PSOCK node: on success and on error", {
  cl <- make_cluster(1)
  on.exit(stop_cluster(cl))
  f <- tempfile()
  on.exit(unlink(f), add = TRUE)
  clusterExport(cl, "f", envir = environment())
  # clusterEvalQ() evaluates with eval(), whose frame on.exit() uses.
  expect_identical(clusterEvalQ(cl, { on.exit(cat("a", file = f, append = TRUE)); 1 }), list(1))
  expect_identical(readLines(f, warn = FALSE), "a")
  expect_error(clusterEvalQ(cl, { on.exit(cat("b", file = f, append = TRUE)); stop("boom") }), "boom")
  expect_identical(readLines(f, warn = FALSE), "ab")
  # In a function sent to the node, as in any function.
  expect_identical(clusterCall(cl, function() { on.exit(cat("c", file = f, append = TRUE)); 2 }), list(2))
  expect_identical(readLines(f, warn = FALSE), "abc")
})
