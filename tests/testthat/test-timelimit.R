# R's time limits (setTimeLimit()) and user interrupts while R waits in
# mirai's native code. R raises a time limit's error from its check for an
# interrupt: the error must reach the caller's handlers as it would from R
# code waiting in a loop, and the wait it ended must lose nothing.

# What `wait()` gives under an elapsed time limit of `secs`: the message of
# the error it raised, caught by the caller's own tryCatch(), and how long
# that took. The limit is lifted before returning, whatever happens.
under_limit <- function(wait, secs = 0.3) {
  on.exit(setTimeLimit())
  t0 <- Sys.time()
  msg <- tryCatch({
    setTimeLimit(elapsed = secs, transient = TRUE)
    wait()
    "no error"
  }, error = function(e) conditionMessage(e))
  setTimeLimit()
  list(msg = msg, secs = as.numeric(difftime(Sys.time(), t0, units = "secs")))
}

# R's own error for the limit, as R code waiting in a loop meets it.
limit_message <- function() under_limit(function() for (i in 1:40) Sys.sleep(0.05))$msg

test_that("a time limit reached in m[] or call_mirai() is R's error, caught by the caller's handler", {
  want <- limit_message()
  expect_match(want, "time limit")
  daemons(1)
  on.exit(daemons(0))
  m <- mirai({ Sys.sleep(1.5); 7 })
  m3 <- mirai({ Sys.sleep(0.5); 9 })
  r <- under_limit(function() m[])
  expect_identical(r$msg, want)
  # Raised during the wait, not once the task was done.
  expect_lt(r$secs, 1.2)
  # (m3 waits behind m, on the one daemon.)
  expect_identical(under_limit(function() call_mirai(m3))$msg, want)
  # The wait it ended lost nothing: waiting again gives the value.
  expect_identical(m[], 7)
  expect_identical(call_mirai(m3)$data, 9)
  # The handlers a caller sets around the wait see it as R's error.
  m2 <- mirai({ Sys.sleep(1.5); 8 })
  seen <- NULL
  on.exit(setTimeLimit(), add = TRUE)
  r <- tryCatch(withCallingHandlers({
    setTimeLimit(elapsed = 0.3, transient = TRUE)
    m2[]
  }, error = function(e) seen <<- class(e)), error = function(e) "caught")
  setTimeLimit()
  expect_identical(r, "caught")
  expect_true("error" %in% seen)
  expect_identical(m2[], 8)
  expect_identical(mirai(1)[], 1)
})

test_that("a time limit reached while collecting a map, racing or collecting mirai is R's error", {
  want <- limit_message()
  daemons(2)
  on.exit(daemons(0))
  mp <- mirai_map(1:2, function(x) { Sys.sleep(1.5); x * 10 })
  expect_identical(under_limit(function() mp[])$msg, want)
  expect_identical(under_limit(function() mp[.progress])$msg, want)
  expect_identical(mp[], list(10, 20))
  ms <- list(mirai({ Sys.sleep(1.5); 1 }), mirai({ Sys.sleep(1.5); 2 }))
  expect_identical(under_limit(function() race_mirai(ms))$msg, want)
  expect_identical(under_limit(function() collect_mirai(ms))$msg, want)
  expect_identical(collect_mirai(ms), list(1, 2))
  expect_identical(mirai(3)[], 3)
  expect_identical(status()$connections, 2L)
})

test_that("a time limit reached while a cluster's results are awaited is R's error; the cluster goes on", {
  want <- limit_message()
  cl <- make_cluster(2)
  on.exit(stop_cluster(cl))
  slow <- function(i) { Sys.sleep(1.5); i }
  expect_identical(under_limit(function() parallel::parLapply(cl, 1:2, slow))$msg, want)
  expect_identical(under_limit(function() parallel::clusterEvalQ(cl, Sys.sleep(1.5)))$msg, want)
  expect_identical(under_limit(function() parallel::clusterApplyLB(cl, 1:4, slow))$msg, want)
  # No stale result is handed to the next calls.
  expect_identical(parallel::parLapply(cl, 1:4, function(i) -i), as.list(-(1:4)))
  expect_identical(unlist(parallel::clusterEvalQ(cl, "fresh")), c("fresh", "fresh"))
})

test_that("a task's time limit reached while it waits in mirai's native code is its miraiError", {
  daemons(1)
  on.exit(daemons(0))
  # The task waits for a mirai of its own, on daemons it sets up.
  # Once the error is raised, waiting again still gives that mirai's value.
  out <- tempfile()
  on.exit(unlink(out), add = TRUE)
  m <- mirai((function() {
    mirai::daemons(1, dispatcher = FALSE, .compute = "inner")
    inner <- mirai::mirai({ Sys.sleep(1.5); 1 }, .compute = "inner")
    on.exit({
      cat(inner[], file = out)
      mirai::daemons(0, .compute = "inner")
    })
    setTimeLimit(elapsed = 0.5)
    inner[]
  })(), out = out)
  v <- m[]
  expect_true(is_mirai_error(v))
  expect_false(is_mirai_interrupt(v))
  expect_match(conditionMessage(v), "time limit")
  expect_identical(readLines(out, warn = FALSE), "1")
  # The daemon goes on.
  expect_identical(mirai(2)[], 2)
})

test_that("a time limit a task leaves set, running out while its daemon is idle, ends nothing", {
  daemons(1)
  on.exit(daemons(0))
  pid <- mirai(Sys.getpid())[]
  expect_identical(mirai({ setTimeLimit(elapsed = 0.3); 1 })[], 1)
  Sys.sleep(0.8)
  # The same daemon answers, and is not interrupted by it.
  m <- mirai({ Sys.sleep(0.3); Sys.getpid() })
  expect_identical(m[], pid)
  expect_identical(status()$connections, 1L)
})

test_that("Ctrl-C during m[] still ends the wait as an interrupt, and loses nothing", {
  skip_if_not_installed("processx")
  out <- interrupt_child(c(
    "library(mirai)",
    "daemons(1)",
    "m <- mirai({ Sys.sleep(4); 5 })",
    "cat('ready\\n')",
    "r <- tryCatch(m[], interrupt = function(e) 'int', error = function(e) 'error')",
    "cat('first:', r, '\\n')",
    "cat('value:', m[], '\\n')",
    "cat('next:', mirai(6)[], '\\n')",
    "daemons(0)",
    "cat('done\\n')"
  ), "ready", "done", timeout = 30)
  expect_match(out, "first: int \n", fixed = TRUE)
  expect_match(out, "value: 5 \n", fixed = TRUE)
  expect_match(out, "next: 6 \n", fixed = TRUE)
})

test_that("a calling handler that reuses a cluster after a time limit gets its own results (review)", {
  # The interrupted call's tasks are dropped before the caller's handlers
  # run, not only once the wait unwinds; with relay = TRUE too, whose
  # receive first waits for the task's held conditions.
  on.exit(setTimeLimit(), add = TRUE)
  slow <- function(i) { Sys.sleep(1.5); i * 10 }
  # `first` runs under a time limit that ends it; the error's calling
  # handler runs `again` on the same cluster. Its result and what the
  # outer tryCatch() gave.
  limited_then <- function(first, again) {
    got <- NULL
    r <- tryCatch(withCallingHandlers({
      setTimeLimit(elapsed = 0.3, transient = TRUE)
      first()
    }, error = function(e) {
      setTimeLimit()
      got <<- unlist(again())
    }), error = function(e) "caught")
    setTimeLimit()
    list(r = r, got = got)
  }
  for (relay in c(FALSE, TRUE)) {
    cl <- make_cluster(2, relay = relay)
    out <- limited_then(function() parallel::parLapply(cl, 1:2, slow),
                        function() parallel::parLapply(cl, 1:2, function(i) -i))
    expect_identical(out$r, "caught")
    expect_identical(out$got, c(-1L, -2L))
    out <- limited_then(function() parallel::clusterApplyLB(cl, 1:4, slow),
                        function() parallel::clusterApplyLB(cl, 1:3, function(i) -i))
    expect_identical(out$got, -(1:3))
    expect_identical(unlist(parallel::parLapply(cl, 1:4, function(i) -i)), -(1:4))
    stop_cluster(cl)
  }
})

test_that("a time limit while a cluster waits for a node's daemon drops the call's tasks before the handlers run (review)", {
  on.exit(setTimeLimit(), add = TRUE)
  cl <- suppressMessages(make_cluster(2, url = local_url(tcp = TRUE)))
  on.exit(stop_cluster(cl), add = TRUE)
  launch_local(1, .compute = attr(cl, "id"))
  slow <- function(i) { Sys.sleep(1); i * 10 }
  got <- NULL
  # Node 1's task is sent; node 2 waits for its daemon when the limit runs
  # out. The handler brings node 2's daemon and retries on the cluster.
  r <- tryCatch(withCallingHandlers({
    setTimeLimit(elapsed = 0.5, transient = TRUE)
    parallel::clusterCall(cl, slow, 1)
  }, error = function(e) {
    setTimeLimit()
    launch_local(1, .compute = attr(cl, "id"))
    got <<- unlist(parallel::clusterCall(cl, function() -1))
  }), error = function(e) conditionMessage(e))
  setTimeLimit()
  expect_match(r, "time limit")
  expect_identical(got, c(-1, -1))
  expect_identical(unlist(parallel::clusterCall(cl, function() 5)), c(5, 5))
})

test_that("a time limit a serialization hook catches itself, in a wait of its own, leaves the cluster call alone", {
  # The hook runs while the node's task is sent (and its result read), not
  # in the cluster's wait: only an error of that wait drops the call's
  # tasks (the call failed with "node 1 of the cluster has no task to
  # receive").
  daemons(1)
  on.exit(daemons(0), add = TRUE)
  on.exit(setTimeLimit(), add = TRUE)
  caught <- 0L
  cfg <- serial_config("myobj", function(x) {
    tryCatch({
      setTimeLimit(elapsed = 0.2, transient = TRUE)
      mirai(Sys.sleep(1))[]
    }, error = function(e) caught <<- caught + 1L)
    setTimeLimit(elapsed = Inf)
    serialize(x$v, NULL)
  }, unserialize)
  cl <- make_cluster(2, serial = cfg)
  on.exit(stop_cluster(cl), add = TRUE)
  objs <- lapply(1:2, function(i) structure(list2env(list(v = i)), class = "myobj"))
  r <- parallel::parLapply(cl, objs, function(o) { Sys.sleep(0.5); o * 10 })
  expect_gte(caught, 2L)
  expect_identical(unlist(r), c(10, 20))
  expect_identical(unlist(parallel::parLapply(cl, 1:2, function(i) -i)), c(-1L, -2L))
})
