# Soak (short): 40 s of mixed tasks on 4 daemons with a dispatcher while a
# daemon is SIGKILLed every 2 s and replaced by the pool (20 kills; daemons(n)
# heals, and test-heal.R runs the same with .retry), memory, descriptors
# and threads sampled every 2 s after a 24 s warm-up; memory is checked as
# the C heap's bytes in use (see below). The
# logic is in helper-soak.R, shared with bench/soak.R (the long run,
# minutes of it, with the same checks). About 40 s.

soak <- new.env()

soak_result <- function() {
  skip_on_cran()
  skip_if_not(dir.exists("/proc/self/fd"), "needs /proc")
  if (is.null(soak$res)) skip("the soak run did not complete")
  soak$res
}

test_that("soak: every mirai resolves once, to its value or an allowed error, while daemons are killed", {
  skip_on_cran()
  skip_if_not(dir.exists("/proc/self/fd"), "needs /proc")
  # The host's RSS climbs to a plateau (glibc keeps the payloads' freed
  # memory) in 20-24 s here: a warm-up of 16 s left the last of the climb
  # to count as growth (4.8 and 85.8 MB in two runs of one build, 101.9 and
  # 114.6 in CI-like runs under load), 24 s measures from the plateau
  # (-45.7 and -9.5 MB). A leak would still show as the rise after it.
  res <- soak_run(seconds = 40, n = 4L, max_inflight = 50L, kill_every = 2, sample_every = 2,
                  warmup = 24, grace = 30)
  # Replacement daemons would have loaded a different build.
  if (res$pkg_changed) skip("mirai was reinstalled during the soak run")
  soak$res <- res
  report <- paste(utils::capture.output(soak_report(res, soak_checks(res))), collapse = "\n")
  # Shown with any failure below.
  info <- report
  cnt <- function(k, o) sum(res$kind == k & res$outcome %in% o)

  # Load really happened, of every kind, and reached each expected outcome.
  expect_gte(res$kills, 10L)
  expect_gte(cnt("tiny", 1L), 200L)
  expect_gte(cnt("sleep", 1L), 5L)
  expect_gte(cnt("payload", 1L), 5L)
  expect_gte(cnt("error", 3L), 20L)
  expect_gte(cnt("timeout", 5L), 5L)
  expect_gte(cnt("cancel", 20L), 5L)

  # No disallowed outcome: wrong values or payloads, foreign errors, an
  # errorValue 19 not explained by a kill, a timeout firing early, a
  # cancel not resolving at once, a value changing after it resolved.
  expect_identical(res$n_violations, 0L, info = info)
  # None left unresolved 30 s after the load stopped.
  expect_identical(res$unresolved_after_grace, 0L, info = info)
  expect_gte(res$rechecks, res$submitted)
  expect_identical(sum(is.na(res$outcome)), 0L, info = info)

  # A killed daemon costs at most one task (the one it was running, or one
  # the dispatcher sent it before noticing the death), and a task known to
  # be running on it resolves to 19 at once.
  expect_gte(res$n19, 1L)
  expect_lte(res$n19, res$kills)
  expect_gte(length(res$kill_latency), 1L)
  expect_lt(max(c(0, res$kill_latency)), 5, label = "max seconds from SIGKILL to errorValue 19")
  expect_lt(max(c(0, res$timeout_late_ms)), 5000, label = "max ms a timeout resolved after its .timeout")
  expect_gte(res$cancel_found, 1L)

  # Afterwards: all replacements connected, none of the killed daemons
  # still counted, the dispatcher idle, the daemons usable.
  expect_true(res$conns_ok, info = info)
  expect_identical(res$conns_final, 4L, info = info)
  expect_identical(res$children_final, 4L, info = info)
  # Every kill was answered by the pool with one replacement, and only that.
  expect_identical(res$replaced, res$kills, info = info)
  expect_identical(res$retried, 0L, info = info)
  expect_true(res$idle_ok, info = info)
  expect_true(res$batch_ok, info = info)
})

test_that("soak: host RSS, fds and threads are flat after the warm-up", {
  res <- soak_result()
  info <- paste(utils::capture.output(print(res$samples)), collapse = "\n")
  expect_gte(nrow(res$samples[res$samples$t > res$warmup, ]), 5L)
  # The leak check is on the C heap's bytes in use (R's heap among them):
  # RSS also counts memory malloc keeps after free() for reuse, which
  # climbs with 10 MB payloads and with the machine's load (101.9 MB of
  # "growth" in one CI run, no leak). RSS keeps a loose bound, for memory
  # that does not come from malloc.
  expect_lt(soak_growth(res$rss), 250, label = "RSS growth after the warm-up (MB)")
  expect_lt(soak_growth(res$fds), 20, label = "fd growth after the warm-up")
  expect_lt(soak_growth(res$threads), 20, label = "thread growth after the warm-up")
  # Killed daemons' connections are not kept: after the drain, about one fd
  # per daemon on top of the listener and poller.
  expect_lt(res$fds_drained, res$fds_before + 4L + 10L)
  # Everything the run opened is closed once the profile is reset and its
  # host object collected.
  expect_lte(res$fds_reset, res$fds_before)
  skip_if(is.na(res$heap[["last"]]), "the heap's bytes in use are known only in a test build on glibc")
  expect_lt(soak_growth(res$heap), 40, label = "heap bytes in use, growth after the warm-up (MB)")
})

test_that("soak: no daemon outlives daemons(0), no zombie children", {
  res <- soak_result()
  expect_gte(res$pids_seen, res$kills + 4L)
  expect_length(res$leftover, 0L)
  expect_length(res$zombies, 0L)
  expect_lt(res$reset_s, 10)
})

test_that("daemons(0) closes the listener and its descriptors at once, without waiting for gc()", {
  # Found by the soak (fixed since): the listening socket, then the poller
  # and its waker, stayed open after daemons(0) until the host object was
  # garbage collected, so the same TCP port could not be listened at again
  # in the meantime ("Address already in use").
  skip_on_cran()
  skip_if_not(dir.exists("/proc/self/fd"), "needs /proc")
  invisible(gc())
  fds0 <- soak_fds()
  daemons(url = local_url(tcp = TRUE))
  url <- status()$daemons
  launch_local(1)
  expect_identical(mirai(1 + 1)[], 2)
  daemons(0)
  expect_lte(soak_fds(), fds0)
  ok <- tryCatch(isTRUE(daemons(url = url)), error = function(e) conditionMessage(e))
  daemons(0)
  expect_identical(ok, TRUE)
  invisible(gc())
})
