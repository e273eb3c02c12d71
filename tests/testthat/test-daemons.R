test_that("daemons() validates its arguments", {
  expect_error(daemons("tcp://127.0.0.1:0"), "`n` must be numeric, did you mean to provide `url`?")
  expect_error(daemons(raw(0)), "`n` must be numeric")
  expect_error(daemons(TRUE), "`n` must be numeric")
  expect_error(daemons(c(1, 2)), "`n` must be a single number")
  expect_error(daemons(NA_real_), "the number of daemons must be zero or greater")
  expect_error(daemons(-1), "the number of daemons must be zero or greater")
  expect_error(daemons(url = 5), "`url` must be of type character, not double")
  expect_error(daemons(1, url = "bogus"), "invalid URL 'bogus'")
  expect_error(daemons(1, url = "tcp://127.0.0.1:99999"), "port must be an integer")
  expect_error(daemons(1, dispatcher = NA), "`dispatcher` must be TRUE or FALSE")
  expect_false(daemons_set())
  expect_identical(status(), list(connections = 0L, daemons = 0L))
  expect_null(info())
  expect_error(require_daemons(), "No daemons set")
  expect_error(require_daemons(.compute = "gpu"), "No daemons set for the 'gpu' compute profile")
  expect_error(launch_local(1), "daemons must be set to use this function")
})

test_that("status, info and daemons_set report a live profile", {
  expect_invisible(daemons(2, dispatcher = FALSE))
  on.exit(daemons(0))
  expect_true(daemons_set())
  expect_true(require_daemons())
  s <- status()
  expect_identical(s$connections, 2L)
  expect_match(s$daemons, "^abstract://[0-9a-f]{24}$")
  expect_null(s$mirai)
  # The reference's fields first, in its order (status()[[3]] and the like
  # keep working); ours after them.
  expect_identical(names(s), c("connections", "daemons", "refused", "replaced", "retried"))
  daemons(1, .compute = "withdisp")
  expect_identical(names(status(.compute = "withdisp")),
                   c("connections", "daemons", "mirai", "memory", "refused", "replaced", "retried"))
  daemons(0, .compute = "withdisp")
  i <- info()
  expect_identical(i[["connections"]], 2L)
  # Without a dispatcher only `connections` is counted.
  expect_identical(unname(i[c("cumulative", "awaiting", "executing", "completed")]), rep(NA_integer_, 4L))
  expect_identical(nextget("url"), s$daemons)
  expect_null(nextget("secret"))
})

test_that("nextget() gives each documented key the reference's type", {
  keys <- c("url", "tls", "dispatcher", "stream", "seed", "n", "dots", "sync", "compute", "cv",
            "sock", "unbounded", "everywhere", "otel_span")
  for (k in keys) expect_null(nextget(k), label = k)
  on.exit(daemons(0))
  # A dispatcher: its (in-process) address, as the reference's is a URL.
  daemons(url = "tcp://127.0.0.1:0", cleanup = FALSE, maxtasks = 5, seed = 7)
  expect_type(nextget("url"), "character")
  expect_match(nextget("dispatcher"), "^inproc://[0-9a-f]+$")
  expect_type(nextget("stream"), "integer")
  expect_length(nextget("stream"), 7L)
  expect_identical(nextget("seed"), 7)
  expect_identical(nextget("n"), 0L)
  # The daemon() arguments as they appear in the launch command.
  expect_identical(nextget("dots"), ",cleanup=FALSE,maxtasks=5")
  expect_match(launch_remote(1)[[1L]], nextget("dots"), fixed = TRUE)
  expect_false(nextget("sync"))
  expect_identical(nextget("compute"), "default")
  expect_true(nextget("unbounded"))
  expect_null(nextget("tls"))
  # No dispatcher: NULL, as the reference's tests for it expect.
  daemons(url = "tcp://127.0.0.1:0", dispatcher = FALSE, .compute = "nd")
  on.exit(daemons(0, .compute = "nd"), add = TRUE)
  expect_null(nextget("dispatcher", .compute = "nd"))
  expect_identical(nextget("dots", .compute = "nd"), "")
  expect_identical(nextget("compute", .compute = "nd"), "nd")
  expect_true(nextget("unbounded", .compute = "nd"))
  daemons(url = "tcp://127.0.0.1:0", memory = 10, .compute = "cap")
  on.exit(daemons(0, .compute = "cap"), add = TRUE)
  expect_false(nextget("unbounded", .compute = "cap"))
  daemons(sync = TRUE, .compute = "s")
  on.exit(daemons(0, .compute = "s"), add = TRUE)
  expect_match(nextget("url", .compute = "s"), "^inproc://")
  expect_null(nextget("dispatcher", .compute = "s"))
  expect_true(nextget("sync", .compute = "s"))
  expect_identical(nextget("n", .compute = "s"), 0L)
  expect_identical(nextget("dots", .compute = "s"), "")
  # What the host keeps to itself is not a field.
  for (k in c("secret", "host")) expect_null(nextget(k))
})

test_that("status() counts a task once m[] or unresolved() has seen it resolve", {
  # Without a dispatcher status() has no task counters (as in the reference
  # mirai), so the same native counters are read directly there.
  native <- function() {
    v <- .Call(mirai:::C_mirai_host_info, mirai:::profile_of(NULL)$host)
    unname(v[c("awaiting", "executing", "completed")])
  }
  for (disp in c(TRUE, FALSE)) {
    daemons(1, dispatcher = disp)
    counters <- if (disp) function() unname(status()$mirai) else native
    stale <- 0L
    for (i in seq_len(1000L)) {
      m <- mirai(1)
      m[]
      stale <- stale + !identical(counters(), c(0L, 0L, 2L * i - 1L))
      m <- mirai(1)
      while (unresolved(m)) {}
      stale <- stale + !identical(counters(), c(0L, 0L, 2L * i))
    }
    daemons(0)
    expect_identical(stale, 0L, label = sprintf("stale counters (dispatcher = %s)", disp))
  }
})

test_that("daemons(0) resolves pending mirai to 19 and leaves no processes", {
  daemons(2, dispatcher = FALSE)
  pids <- unlist(collect_mirai(lapply(1:4, function(i) mirai({ Sys.sleep(0.2); Sys.getpid() }))))
  pids <- unique(pids)
  expect_length(pids, 2L)
  m <- mirai(Sys.sleep(10))
  expect_false(daemons(0))
  expect_identical(as.integer(m[]), 19L)
  expect_false(daemons_set())
  expect_true(wait_until(function() !any(vapply(pids, pid_alive, logical(1))), 5))
})

test_that("a daemon that dies mid-task resolves the task to 19 at once, others keep going", {
  daemons(2, heal = FALSE)
  on.exit(daemons(0))
  m <- mirai({ Sys.sleep(0.3); tools::pskill(Sys.getpid(), tools::SIGKILL) })
  t0 <- Sys.time()
  expect_identical(as.integer(m[]), 19L)
  # At once: on the closed connection, well short of the 30 s keepalive
  # that would otherwise notice the dead daemon.
  expect_lt(as.numeric(difftime(Sys.time(), t0, units = "secs")), 20)
  expect_identical(mirai(1 + 1)[], 2)
  # Not replaced with heal = FALSE.
  Sys.sleep(1)
  expect_identical(info()[["connections"]], 1L)
  expect_identical(status()$replaced, 0L)
})

test_that("remote-style setup: listen at a URL, launch_local adds daemons, TCP port 0", {
  daemons(url = local_url(tcp = TRUE), dispatcher = FALSE)
  on.exit(daemons(0))
  url <- status()$daemons
  expect_match(url, "^tcp://127\\.0\\.0\\.1:[0-9]+$")
  expect_false(grepl(":0$", url))
  expect_identical(status()$connections, 0L)
  m <- mirai(Sys.getpid())
  expect_true(unresolved(m))
  expect_identical(launch_local(2), 2)
  pid <- m[]
  expect_true(is.integer(pid))
  expect_true(wait_until(function() status()$connections == 2L))
  # It ran on one of the two daemons just launched, not here.
  kids <- .Call(mirai:::C_mirai_host_children, mirai:::profile_of(NULL)$host, FALSE)
  expect_length(kids, 2L)
  expect_true(pid %in% kids)
})

test_that("ipc:// URLs work", {
  path <- file.path(tempdir(), "mirai-test.sock")
  daemons(url = paste0("ipc://", path))
  on.exit(daemons(0))
  expect_identical(status()$daemons, paste0("ipc://", path))
  launch_local(1)
  expect_identical(mirai(2 * 21)[], 42)
})

test_that("daemons without the host's secret are refused; auth = FALSE admits them", {
  daemons(url = local_url())
  url <- status()$daemons
  out <- tempfile()
  rs <- file.path(R.home("bin"), "Rscript")
  system2(rs, c("-e", shQuote(sprintf("r <- try(mirai::daemon('%s', secret = 'wrong')); cat(conditionMessage(attr(r, 'condition')))", url))),
          stdout = out, stderr = out, env = paste0("R_LIBS=", paste(.libPaths(), collapse = ":")))
  expect_match(paste(readLines(out, warn = FALSE), collapse = "\n"), "not launched for this host")
  expect_identical(status()$connections, 0L)
  expect_true(wait_until(function() identical(status()$refused, 1L)))
  daemons(0)
  daemons(url = local_url(), auth = FALSE)
  on.exit(daemons(0))
  url <- status()$daemons
  system2(rs, c("-e", shQuote(sprintf("mirai::daemon('%s', maxtasks = 1)", url))), wait = FALSE,
          env = paste0("R_LIBS=", paste(.libPaths(), collapse = ":")))
  expect_identical(mirai("anyone")[], "anyone")
})

test_that("daemons(NULL) tells persistent daemons to exit", {
  daemons(1, autoexit = FALSE, dispatcher = FALSE)
  pid <- mirai(Sys.getpid())[]
  expect_true(pid_alive(pid))
  daemons(NULL)
  expect_true(wait_until(function() !pid_alive(pid), 5))
})

test_that("maxtasks, idletime and walltime end daemons without losing results", {
  daemons(url = local_url(), dispatcher = FALSE)
  on.exit(daemons(0))
  launch_local(1, maxtasks = 2)
  ms <- lapply(1:3, function(i) mirai(i, i = i))
  expect_true(wait_until(function() status()$connections == 0L))
  # The third task went back to the queue when the daemon retired.
  expect_true(unresolved(ms[[3L]]))
  launch_local(1)
  expect_identical(unlist(collect_mirai(ms)), c(1L, 2L, 3L))
  daemons(0)

  daemons(url = local_url())
  launch_local(1, idletime = 300)
  expect_true(wait_until(function() status()$connections == 1L))
  expect_true(wait_until(function() status()$connections == 0L, 5))
  daemons(0)

  daemons(url = local_url())
  launch_local(1, walltime = 500)
  m <- mirai({ Sys.sleep(0.8); "finished" })
  expect_identical(m[], "finished")
  expect_true(wait_until(function() status()$connections == 0L, 5))
})

test_that("a daemon leaving after the task whose reply m[] read itself is seen to go", {
  # Waiting on a mirai, R's thread reads the reply itself (Host::read_for):
  # the host's loop thread must still see the daemon's end that follows,
  # on a plain and on a TLS socket, with and without dispatcher.
  on.exit(daemons(0))
  for (url in c(local_url(), "tls+tcp://127.0.0.1:0")) for (disp in c(TRUE, FALSE)) {
    daemons(url = url, dispatcher = disp)
    for (k in 1:3) {
      launch_local(1, maxtasks = 1)
      expect_true(wait_until(function() status()$connections == 1L, 20))
      expect_identical(mirai(k, k = k)[], k)
      expect_true(wait_until(function() status()$connections == 0L, 5), info = paste(url, disp, k))
    }
    daemons(0)
  }
})

test_that("waiting on each of many tasks in turn, with other daemons' replies streaming in, loses none", {
  # R's thread reads the daemon of the task it waits for, and the host's
  # loop thread passes over that daemon meanwhile (Claim in
  # rust/src/host/mod.rs). A reply the loop passed over while other
  # daemons' replies kept it busy was once never read: the wait hung. Each
  # task has a timeout, so a lost reply shows as an error value here, not
  # as a hang.
  on.exit(daemons(0))
  for (disp in c(TRUE, FALSE)) {
    daemons(8, dispatcher = disp)
    for (round in 1:3) {
      ms <- lapply(1:1500, function(i) mirai(i, i = i, .timeout = 30000))
      got <- vapply(ms, function(m) { v <- m[]; if (is.numeric(v)) v else -1 }, numeric(1))
      expect_identical(got, as.numeric(1:1500), info = paste(disp, round))
    }
    daemons(0)
  }
})

test_that("after a wait that read its daemon itself, the host's loop reads that daemon again", {
  # While R's thread spins on a mirai it reads the task's daemon itself and
  # the poll stops reporting that socket (Core::quiet); the wait's end must
  # give it back to the loop thread, or a later reply nobody waits for
  # would never resolve its mirai.
  on.exit(daemons(0))
  for (disp in c(FALSE, TRUE)) {
    daemons(1, dispatcher = disp)
    for (k in 1:3) {
      expect_identical(mirai(k, k = k)[], k)
      later <- mirai({ Sys.sleep(0.3); "later" })
      # Polled, never waited on: only the loop thread can read this reply.
      expect_true(wait_until(function() !unresolved(later), 10), info = paste(disp, k))
      expect_identical(later$data, "later")
    }
    daemons(0)
  }
})

test_that("a daemon waiting for its next task sleeps once its brief spin is over", {
  # After a result, a daemon whose tasks come in quick succession spins
  # briefly (IDLE_SPIN, 100 us) before it blocks: it must then block.
  daemons(1, dispatcher = FALSE)
  on.exit(daemons(0))
  pid <- mirai(Sys.getpid())[]
  for (i in 1:200) mirai(i, i = i)[]
  expect_lt(busy_fraction(pid), 0.5)
})

test_that("cleanup removes globals between tasks; cleanup = FALSE keeps them", {
  # Each task reports its daemon and whether `leftover` is in its global
  # env: set by the first task (seen within it), looked for by the second
  # on the same daemon.
  set_it <- quote({ assign("leftover", 1, envir = globalenv()); list(Sys.getpid(), exists("leftover", envir = globalenv())) })
  look <- quote(list(Sys.getpid(), exists("leftover", envir = globalenv())))
  daemons(1, dispatcher = FALSE)
  on.exit(daemons(0))
  first <- mirai(.expr = set_it)[]
  expect_identical(first[[2L]], TRUE)
  expect_identical(mirai(.expr = look)[], list(first[[1L]], FALSE))
  daemons(0)
  daemons(1, dispatcher = FALSE, cleanup = FALSE)
  first <- mirai(.expr = set_it)[]
  expect_identical(first[[2L]], TRUE)
  expect_identical(mirai(.expr = look)[], list(first[[1L]], TRUE))
})

test_that("cleanup removes a task's `...` and new globals, keeps everywhere()'s and .Random.seed, detaches packages", {
  daemons(1, dispatcher = FALSE)
  on.exit(daemons(0))
  everywhere(assign("kept", 1, envir = globalenv()))[]
  where <- function(nms) vapply(nms, exists, logical(1L), envir = globalenv(), inherits = FALSE)
  # `...` lands in the global environment, seen by its task only.
  expect_true(mirai({ set.seed(1); exists("a", envir = globalenv(), inherits = FALSE) }, a = 1)[])
  expect_identical(unname(mirai(where(c("a", "kept", ".Random.seed")), where = where)[]), c(FALSE, TRUE, TRUE))
  # Many globals at once, some of them `...`, with the search path changed
  # in the same task: all undone.
  mirai({
    for (i in 1:50) assign(sprintf("g%d", i), i, envir = globalenv())
    library(stats4)
    TRUE
  }, b = 2, c = 3)[]
  left <- mirai(list(ls(globalenv()), "package:stats4" %in% search()))[]
  expect_identical(left, list("kept", FALSE))
  # A task that changes nothing leaves everything as it was.
  mirai(1 + 1)[]
  expect_identical(mirai(ls(globalenv()))[], "kept")
})

test_that("after a task changed options and set them back, later tasks tidy up natively again", {
  # do_cleanup() in R runs only when the native check finds options or the
  # search path changed; options() stores copies, so once a task has set an
  # option back, the check must compare against the options as restored.
  daemons(1, dispatcher = FALSE)
  on.exit(daemons(0))
  log <- tempfile()
  everywhere(suppressMessages(trace("do_cleanup", bquote(cat("R\n", file = .(log), append = TRUE)),
                                    print = FALSE, where = asNamespace("mirai"))), log = log)[]
  runs <- function() if (file.exists(log)) length(readLines(log)) else 0L
  for (i in 1:5) mirai(1, a = 1)[]
  expect_identical(runs(), 0L)
  expect_identical(mirai({ op <- options(digits = 3); options(op); getOption("digits") }, b = 2)[], 7L)
  expect_identical(runs(), 1L)
  for (i in 1:5) expect_identical(mirai(c(a, getOption("digits")), a = 1L)[], c(1L, 7L))
  expect_identical(runs(), 1L)
})

test_that("in a stream of queued tasks, those that need R's clean-up leave the next as they should be", {
  # Tasks are run and tidied after inside the daemon's receive; the loop
  # returns to R only for a task whose clean-up needs R (search path,
  # options) and, cleaning up, for everywhere() tasks. Queued back to back
  # on one daemon, each task must still see the state restored. (Where an
  # everywhere() task falls among queued tasks is not fixed: it waits for
  # its own results.)
  daemons(1, dispatcher = FALSE)
  on.exit(daemons(0))
  look <- quote(list(getOption("digits"), "package:stats4" %in% search(), exists("g", envir = globalenv()),
                     exists("kept", envir = globalenv())))
  change <- quote({ options(digits = 3); library(stats4); assign("g", 1, envir = globalenv()); eval(look) })
  stream <- function(kept) {
    ms <- lapply(1:30, function(i) if (i %in% c(10L, 20L)) mirai(.expr = change, look = look) else mirai(.expr = look))
    res <- lapply(ms, `[`)
    expect_identical(res[c(10L, 20L)], rep(list(list(3L, TRUE, TRUE, kept)), 2L))
    expect_identical(res[-c(10L, 20L)], rep(list(list(7L, FALSE, FALSE, kept)), 28L))
  }
  stream(FALSE)
  everywhere(assign("kept", 1, envir = globalenv()))[]
  stream(TRUE)
})

test_that("a time limit a task leaves running out in the daemon's own code neither ends the daemon nor skips its clean-up", {
  # setTimeLimit() outlives the task that calls it; R signals the limit in
  # whatever R code runs then: here, most likely the daemon's own between
  # tasks (the clean-up restoring an option), which used to end it.
  for (cleanup in c(TRUE, FALSE)) {
    daemons(1, dispatcher = FALSE, cleanup = cleanup)
    pid <- mirai(Sys.getpid())[]
    expect_identical(mirai({ setTimeLimit(elapsed = 0.3); 1 })[], 1)
    Sys.sleep(0.5)
    res <- lapply(lapply(1:1000, function(i) mirai({ options(o = i); i }, i = i)), `[`)
    failed <- vapply(res, inherits, logical(1L), "miraiError")
    # Without clean-up the limit may fall in a task's own evaluation: that
    # task fails, saying so.
    expect_lte(sum(failed), if (cleanup) 0L else 1L)
    for (e in res[failed]) expect_match(format(e), "time limit")
    expect_identical(unlist(res[!failed]), (1:1000)[!failed])
    expect_identical(mirai(Sys.getpid())[], pid)
    if (cleanup) expect_null(mirai(getOption("o"))[])
    daemons(0)
  }
})

test_that("cleanup detaches a package attached by a task that also detached one", {
  daemons(1, dispatcher = FALSE)
  on.exit(daemons(0))
  before <- mirai(search())[]
  mirai({ detach("package:methods"); library(tools); 1 })[]
  after <- mirai(search())[]
  expect_false("package:tools" %in% after)
  expect_identical(setdiff(after, before), character())
})

test_that("a task runs at the same depth whatever its kind and the cleanup setting", {
  depth <- function() {
    c(mirai = mirai(sys.nframe())[], everywhere = unlist(everywhere(sys.nframe())[]),
      # .f is called by map_call(), under the task's own frame
      map = unlist(mirai_map(1, function(x) sys.nframe())[]) - 2L)
  }
  daemons(1, dispatcher = FALSE)
  on <- depth()
  daemons(0)
  daemons(1, dispatcher = FALSE, cleanup = FALSE)
  on.exit(daemons(0))
  off <- depth()
  expect_identical(on, off)
  expect_identical(unname(on), rep(on[[1L]], 3L))
})

test_that("an error whose value cannot be made fails its task; the daemon stays, an everywhere() task's changes too", {
  # A condition whose message is a function: making the error value fails
  # in the daemon's own R code, outside the task (this ended the daemon).
  daemons(1, dispatcher = FALSE)
  on.exit(daemons(0))
  mk <- function() structure(class = c("error", "condition"), list(message = function() 1, call = NULL))
  pid <- mirai(Sys.getpid())[]
  expect_s3_class(mirai(stop(mk()), mk = mk)[], "miraiError")
  res <- everywhere({ assign("evx", 1, envir = globalenv()); options(evo = 1); stop(mk()) }, mk = mk)[]
  expect_s3_class(res[[1L]], "miraiError")
  expect_identical(mirai(list(exists("evx", envir = globalenv()), getOption("evo")))[], list(TRUE, 1))
  expect_identical(mirai(Sys.getpid())[], pid)
})

test_that("a task that sets the smallest expressions limit R allows leaves the daemon working", {
  daemons(1, dispatcher = FALSE)
  on.exit(daemons(0))
  expect_identical(mirai({ options(expressions = 25); 1 })[], 1)
  expect_identical(mirai(getOption("expressions"))[], 5000L)
  expect_s3_class(mirai(stop("x"))[], "miraiError")
  expect_identical(mirai(1)[], 1)
})

test_that("cleanup restores options a task changed, added or removed", {
  daemons(1, dispatcher = FALSE)
  on.exit(daemons(0))
  base <- mirai(list(getOption("digits"), getOption("mirai.test.new"), getOption("OutDec")))[]
  expect_identical(base[[2L]], NULL)
  # A changed value, a new option and a removed one (OutDec cannot be
  # removed, so a removable one is added and removed in two tasks).
  mirai({ options(digits = 3, mirai.test.new = "set", OutDec = ","); TRUE })[]
  expect_identical(mirai(list(getOption("digits"), getOption("mirai.test.new"), getOption("OutDec")))[],
                   base)
  # An option removed by a task comes back, with its very value.
  everywhere(options(mirai.test.kept = "kept"))[]
  expect_identical(mirai({ options(mirai.test.kept = NULL); getOption("mirai.test.kept") })[], NULL)
  expect_identical(mirai(getOption("mirai.test.kept"))[], "kept")
  # The same value set again is no change; the next task still sees it.
  mirai({ options(digits = getOption("digits")); TRUE })[]
  expect_identical(mirai(getOption("digits"))[], base[[1L]])
})

test_that("a daemon exits within seconds when its host is killed", {
  skip_if_not_installed("processx")
  script <- tempfile(fileext = ".R")
  pidfile <- tempfile()
  writeLines(c(
    "library(mirai)",
    "daemons(2)",
    sprintf("writeLines(as.character(unique(unlist(collect_mirai(lapply(1:6, function(i) mirai({Sys.sleep(0.1); Sys.getpid()})))))), '%s')", pidfile),
    "m <- mirai(Sys.sleep(60))",
    "Sys.sleep(60)"
  ), script)
  p <- processx::process$new(file.path(R.home("bin"), "Rscript"), script,
                             env = c("current", R_LIBS = paste(.libPaths(), collapse = ":")))
  on.exit(p$kill())
  expect_true(wait_until(function() file.exists(pidfile) && length(readLines(pidfile)) == 2L, 30))
  pids <- as.integer(readLines(pidfile))
  expect_length(pids, 2L)
  expect_false(anyNA(pids))
  expect_true(all(vapply(pids, pid_alive, logical(1))))
  p$kill()  # SIGKILL: no chance to clean up
  expect_true(wait_until(function() !any(vapply(pids, pid_alive, logical(1))), 5))
})

test_that("local_url and host_url build URLs", {
  expect_match(local_url(), "^abstract://[0-9a-f]{24}$")
  expect_identical(local_url(tcp = TRUE, port = 5555), "tcp://127.0.0.1:5555")
  expect_error(local_url(port = -1), "`port` must be an integer from 0 to 65535")
  expect_error(host_url(port = 70000), "`port` must be an integer from 0 to 65535")
  # One URL per interface (at least one), named by it. expect_match()
  # fails on an empty vector, where all(grepl()) would pass.
  h <- host_url(port = 7)
  expect_gte(length(h), 1L)
  expect_false(is.null(names(h)))
  expect_false(any(names(h) == ""))
  expect_match(h, "^tcp://[^/]+:7$", all = TRUE)
  ht <- host_url(tls = TRUE)
  expect_length(ht, length(h))
  expect_identical(names(ht), names(h))
  expect_identical(unname(ht), sub(":7$", ":0", sub("^tcp://", "tls+tcp://", unname(h))))
})

test_that("daemons(n) refuses a number of daemons it could not sensibly launch", {
  expect_error(daemons(2.5), "`n` must be a whole number of daemons, at most 10000")
  expect_error(daemons(Inf), "`n` must be a whole number of daemons")
  expect_error(daemons(1e10), "at most 10000")
  expect_false(daemons_set())
})

