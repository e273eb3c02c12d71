skip_on_cran()
# Soak: mixed tasks (tiny, errors, sleeps, 10 MB payloads, timeouts,
# cancellations), every one with .retry = 3, on 4 daemons while one is
# SIGKILLed every 2.5 s and the pool replaces it. No task may resolve to
# errorValue 19: each reaches its own outcome (value, miraiError, timeout,
# cancel), tasks running on a killed daemon included. About 20 s of load by
# default; MIRAI_TEST_LONG=1 runs it for 5 minutes.
test_that("soak: with .retry every task reaches its own outcome while daemons are killed, and the pool stays at 4", {
  skip_if_not(dir.exists("/proc/self/fd"), "needs /proc")
  long <- identical(Sys.getenv("MIRAI_TEST_LONG"), "1")
  seconds <- if (long) 300 else 20
  res <- soak_run(seconds = seconds, n = 4L, max_inflight = 40L, kill_every = if (long) 3 else 2.5,
                  sample_every = 2, warmup = min(60, seconds / 3), grace = 30, retry = 3L,
                  progress_every = if (long) 30 else Inf,
                  log = if (long) function(x) message(x) else function(...) invisible())
  if (res$pkg_changed) skip("mirai was reinstalled during the soak run")
  checks <- soak_checks(res)
  report <- paste(utils::capture.output(soak_report(res, checks)), collapse = "\n")
  if (long) message(report)
  info <- report
  cnt <- function(k, o) sum(res$kind == k & res$outcome %in% o)
  expect_gte(res$kills, if (long) 50L else 4L)
  expect_identical(res$n_violations, 0L, info = info)
  expect_identical(res$unresolved_after_grace, 0L, info = info)
  expect_identical(res$n19, 0L, info = info)
  # Tasks were running on killed daemons, and each got its own outcome.
  expect_gte(res$victim_hits, 1L)
  expect_identical(res$victim_other, res$victim_hits)
  expect_gte(res$retried, res$victim_hits)
  expect_gte(cnt("tiny", 1L), 100L)
  expect_gte(cnt("sleep", 1L) + cnt("payload", 1L), 5L)
  expect_gte(cnt("error", 3L), 5L)
  # Every kill replaced; the pool at 4 at the end, all usable.
  expect_identical(res$replaced, res$kills, info = info)
  expect_identical(res$conns_final, 4L, info = info)
  expect_identical(res$children_final, 4L, info = info)
  expect_true(res$batch_ok, info = info)
  expect_length(res$leftover, 0L)
  expect_length(res$zombies, 0L)
})
