# The states of this process's main thread (see thread_state() in helper.R)
# sampled every 20 ms, n times, by a child process while this one goes on:
# call the returned function for them (it waits for the sampler to finish).
sample_own_state <- function(n = 50L) {
  pid <- Sys.getpid()
  script <- sprintf(paste0("i=0; while [ $i -lt %d ]; do s=$(cat /proc/%d/task/%d/stat 2>/dev/null); ",
                           "s=${s##*) }; echo \"${s%%%% *}\"; sleep 0.02; i=$((i+1)); done"), n, pid, pid)
  p <- processx::process$new("sh", c("-c", script), stdout = "|")
  function() {
    p$wait(30000)
    out <- p$read_all_output_lines()
    p$kill()
    out
  }
}

test_that("race_mirai needs daemons; empty lists and resolved mirai return at once", {
  # The message launch_local() gives (the reference's).
  expect_error(race_mirai(list()), "daemons must be set to use this function")
  expect_error(race_mirai(list(), .compute = "norace"), "daemons must be set to use this function")
  daemons(sync = TRUE)
  on.exit(daemons(0))
  expect_identical(race_mirai(list()), 0L)
  # sync mirai are resolved on creation and have no aio
  expect_identical(race_mirai(list(mirai(1), mirai(2))), 1L)
  expect_identical(race_mirai(mirai(3)), 1L)
  expect_error(race_mirai(1:3), "`x` must be a list of mirai")
})

test_that("race_mirai returns the first to resolve, without waiting for the rest (dispatcher)", {
  daemons(2)
  on.exit(daemons(0))
  # The slow one would take 30 s: still unresolved when the race returns
  # means the race did not wait for it (however loaded the machine).
  ms <- list(slow = mirai(Sys.sleep(30)), fast = mirai(Sys.sleep(0.3)))
  expect_true(unresolved(ms$fast))
  i <- race_mirai(ms)
  expect_identical(i, 2L)
  expect_false(unresolved(ms$fast))
  expect_true(unresolved(ms$slow))
  # already resolved: immediate, lowest index first
  expect_identical(race_mirai(ms), 2L)
  done <- mirai(1)
  call_mirai(done)
  expect_identical(race_mirai(list(ms$slow, done, ms$fast)), 2L)
  expect_true(stop_mirai(ms$slow))
  expect_identical(unclass(ms$slow$data), 20L)
  expect_identical(race_mirai(list(ms$slow)), 1L)
})

test_that("repeated races give completion order, also for a mirai_map (no dispatcher)", {
  daemons(3, dispatcher = FALSE)
  on.exit(daemons(0))
  mp <- mirai_map(c(a = 1.5, b = 0.1, c = 0.8), function(s) { Sys.sleep(s); s })
  # as.list(): the elements as mirai (a map makes them on request)
  ms <- as.list(mp)
  order <- character()
  while (length(ms)) {
    i <- race_mirai(ms)
    order <- c(order, names(ms)[i])
    ms <- ms[-i]
  }
  expect_identical(order, c("b", "c", "a"))
  expect_identical(race_mirai(mp), 1L)
})

test_that("race_mirai waits asleep, not polling", {
  daemons(1)
  on.exit(daemons(0))
  m <- mirai({ Sys.sleep(2); Sys.time() })
  states <- sample_own_state(50L)
  expect_identical(race_mirai(list(m)), 1L)
  # It returned because m resolved, not before.
  expect_false(unresolved(m))
  expect_s3_class(m$data, "POSIXct")
  # Sampled from outside during the first second of the wait (the task
  # takes two): the main thread was asleep most of the time. A spinning or
  # polling loop is never asleep (state R in every sample, running or
  # waiting for a CPU). A blocked wait wakes every 50 ms to look for an
  # interrupt, and on a loaded machine waits for a CPU each time: 32% of
  # samples in state R under load 10 on two cores.
  s <- states()
  expect_gte(length(s), 40L)
  expect_lt(mean(s == "R"), 0.75, label = paste(s, collapse = ""))
})

test_that("race_mirai across two compute profiles", {
  daemons(1, .compute = "race_a")
  daemons(1, dispatcher = FALSE, .compute = "race_b")
  on.exit({ daemons(0, .compute = "race_a"); daemons(0, .compute = "race_b") })
  ms <- list(mirai(Sys.sleep(30), .compute = "race_a"), mirai(Sys.sleep(0.3), .compute = "race_b"))
  i <- race_mirai(ms, .compute = "race_a")
  expect_identical(i, 2L)
  expect_true(unresolved(ms[[1L]]))
  expect_true(stop_mirai(ms[[1L]]))
})

test_that("a user interrupt ends the wait and leaves the session usable", {
  skip_on_os("windows")
  daemons(2)
  on.exit(daemons(0))
  # m takes 30 s: the race ends by the interrupt, with m still unresolved.
  m <- mirai(Sys.sleep(30))
  system(sprintf("sleep 0.5 && kill -INT %d", Sys.getpid()), wait = FALSE)
  res <- tryCatch(race_mirai(list(m)), interrupt = function(e) "interrupted")
  expect_identical(res, "interrupted")
  expect_true(unresolved(m))
  # the other daemon is free: the session and the profile still work
  expect_identical(race_mirai(list(m, mirai(1 + 1))), 2L)
  expect_true(stop_mirai(m))
  expect_identical(unclass(m$data), 20L)
  expect_identical(race_mirai(list(m)), 1L)
})
