# Faults: a host whose event loop fails, daemons that do not leave on their
# own, and how persistent (autoexit = FALSE) daemons end.

test_that("a failed host resolves its pending mirai at once and errors on the next call", {
  # Fault injection exists only in the test build (tools/test.sh installs
  # with MIRAI_TEST_HOOKS=1, which src/Makevars turns into the feature).
  skip_if_not(
    exists("C_mirai_host_inject_fault", envir = asNamespace("mirai"), inherits = FALSE),
    "fault injection needs the test build of mirai (install with MIRAI_TEST_HOOKS=1, as tools/test.sh does)"
  )
  daemons(1)
  on.exit(daemons(0))
  busy <- mirai(Sys.sleep(30))
  queued <- lapply(1:3, function(i) mirai(i, i = i))
  expect_true(wait_until(function() status()$mirai[["executing"]] == 1L))
  # Fault injection (internal): the event loop thread panics as a bug would.
  .Call(mirai:::C_mirai_host_inject_fault, mirai:::profile_of(NULL)$host)
  start <- Sys.time()
  v <- collect_mirai(c(list(busy), queued))
  # Resolved by the failure, well before the 30 s task could have ended.
  expect_lt(as.double(Sys.time() - start, units = "secs"), 20)
  expect_length(v, 4L)
  for (x in v) {
    expect_true(is_error_value(x))
    expect_identical(unclass(x)[[1L]], 19L)
  }
  expect_error(mirai(1), "host has failed.*event loop stopped.*daemons\\(0\\)")
  expect_error(everywhere(1), "host has failed")
  # The profile resets cleanly and works again.
  daemons(0)
  daemons(1)
  expect_identical(mirai(21 * 2)[], 42)
})

test_that("daemons(0) kills local daemons that do not exit within the grace period", {
  # autoexit = NA: finish the current task before exiting, so this daemon
  # would sit in Sys.sleep(60) for a minute after its host has gone.
  daemons(1, autoexit = NA)
  pid <- mirai(Sys.getpid())[]
  m <- mirai(Sys.sleep(60))
  expect_true(wait_until(function() status()$mirai[["executing"]] == 1L))
  start <- Sys.time()
  daemons(0)
  took <- as.double(Sys.time() - start, units = "secs")
  expect_gt(took, 4)
  expect_lt(took, 15)
  expect_false(pid_alive(pid))
})

test_that("an autoexit = FALSE daemon outlives daemons(0), rejoins a new host at its URL, and ends by daemons(NULL)", {
  url <- local_url()
  daemons(url = url, auth = FALSE)
  launch_local(1, autoexit = FALSE)
  pid <- mirai(Sys.getpid())[]
  daemons(0)
  Sys.sleep(1)
  expect_true(pid_alive(pid))
  daemons(url = url, auth = FALSE)
  on.exit(daemons(0))
  expect_identical(mirai(Sys.getpid())[], pid)
  daemons(NULL)
  expect_true(wait_until(function() !pid_alive(pid), 10))
})

test_that("an autoexit = FALSE daemon whose host is gone for good ends at its idle time", {
  url <- local_url()
  daemons(url = url, auth = FALSE)
  launch_local(1, autoexit = FALSE, idletime = 2000)
  pid <- mirai(Sys.getpid())[]
  # The daemon's idle time starts no later than now, its last task done.
  idle_from <- Sys.time()
  daemons(0)
  Sys.sleep(0.5)
  expect_true(pid_alive(pid))
  expect_true(wait_until(function() !pid_alive(pid), 15))
  # It ended at its idle time, not because its host went away.
  expect_gt(as.double(Sys.time() - idle_from, units = "secs"), 1.9)
})

test_that("daemons do not inherit the session's open files and sockets", {
  tmp <- tempfile()
  f <- file(tmp, open = "w")
  on.exit(close(f))
  daemons(1)
  on.exit(daemons(0), add = TRUE)
  pid <- mirai(Sys.getpid())[]
  fds <- list.files(sprintf("/proc/%d/fd", pid), full.names = TRUE)
  targets <- vapply(fds, function(p) Sys.readlink(p), character(1L))
  expect_gt(length(targets), 2L) # the daemon's own descriptors are listed
  expect_false(any(targets == normalizePath(tmp)))
})

test_that("a local daemon's temporary directory is its own, and goes when it ends, killed or not", {
  daemons(1)
  on.exit(daemons(0))
  d1 <- mirai({
    writeLines("left by a task", file.path(tempdir(), "f"))
    list(pid = Sys.getpid(), tmp = tempdir(),
         env = Sys.getenv(c("TMPDIR", "MIRAI_SCRATCH_DIR", "MIRAI_OUTER_TMPDIR", "MIRAI_OWN_PROCESS_GROUP"), unset = NA))
  })[]
  # R made its session directory in the one the launcher made for the daemon.
  own <- dirname(d1$tmp)
  expect_match(basename(own), "^mirai-daemon-")
  # ... made where R made this session's, by the same rule.
  expect_identical(normalizePath(dirname(own)), normalizePath(dirname(tempdir())))
  # What the task starts sees this session's TMPDIR (it may outlive the
  # daemon and its directory), and nothing of what the launcher told the daemon.
  expect_identical(unname(d1$env), c(Sys.getenv("TMPDIR", unset = NA), NA, NA, NA))
  expect_true(file.exists(file.path(d1$tmp, "f")))
  # SIGKILL: R runs no exit code, yet the directory and the task's file go.
  tools::pskill(d1$pid, tools::SIGKILL)
  expect_true(wait_until(function() !dir.exists(own), 10))
  # The daemon that replaces it has a directory of its own, gone at the reset.
  d2 <- mirai(list(pid = Sys.getpid(), tmp = tempdir()))[]
  expect_false(d2$pid == d1$pid)
  expect_true(dir.exists(d2$tmp))
  expect_false(dirname(d2$tmp) == own)
  daemons(0)
  expect_false(dir.exists(dirname(d2$tmp)))
})

test_that("a host that ends without a reset leaves no daemon directory behind, even with a task writing into it", {
  skip_if_not_installed("processx")
  tmp <- tempfile("tmpdir")
  dir.create(tmp)
  on.exit(unlink(tmp, recursive = TRUE))
  env <- c("current", TMPDIR = tmp, R_LIBS = paste(.libPaths(), collapse = ":"))
  host <- processx::run(file.path(R.home("bin"), "Rscript"),
                        c("-e", paste(
                          "library(mirai); daemons(2); stopifnot(mirai(1)[] == 1); cat(mirai(tempdir())[]);",
                          # Writes new files into its tempdir() until its daemon ends.
                          "m <- mirai({ k <- 0; repeat { k <- k + 1; writeLines('x', file.path(tempdir(), k)) } });",
                          "while (status()$mirai[['executing']] < 1L) Sys.sleep(0.05); Sys.sleep(1)")),
                        env = env, error_on_status = FALSE)
  expect_identical(host$status, 0L)
  # The daemon's R session directory was in one of the daemons' own.
  expect_match(basename(dirname(host$stdout)), "^mirai-daemon-")
  # The idle daemon exits once its host has gone, and removes its (by then
  # empty) directory; the busy one ends itself, and its directory is removed
  # once it has ended.
  expect_true(wait_until(function() !length(list.files(tmp, all.files = TRUE, no.. = TRUE)), 15))
})

test_that("a daemon ended mid-task by a reset takes what its task forked, and its temporary directory, with it", {
  daemons(1)
  on.exit(daemons(0))
  f <- tempfile()
  on.exit(unlink(f), add = TRUE)
  m <- mirai({
    p <- parallel::mcparallel(Sys.sleep(60))
    writeLines(c(as.character(p$pid), tempdir()), f)
    Sys.sleep(60)
  }, f = f)
  expect_true(wait_until(function() length(suppressWarnings(tryCatch(readLines(f), error = function(e) NULL))) == 2L, 20))
  info <- readLines(f)
  child <- as.integer(info[[1L]])
  own <- dirname(info[[2L]])
  expect_true(pid_alive(child))
  expect_true(dir.exists(own))
  daemons(0)
  expect_true(wait_until(function() !pid_alive(child), 10))
  expect_false(dir.exists(own))
  expect_true(is_error_value(m$data))
})

test_that("a process a task forks may quit() without ending its daemon's connection", {
  daemons(1)
  on.exit(daemons(0))
  pid <- mirai(Sys.getpid())[]
  # The fork runs R's exit code, which drops its copy of the connection.
  m <- mirai({
    p <- parallel::mcparallel(quit("no"))
    parallel::mccollect(p)
    Sys.sleep(0.3)
    Sys.getpid()
  })
  expect_identical(m[], pid)
  expect_identical(mirai(Sys.getpid())[], pid)
  expect_identical(status()$connections, 1L)
})

test_that("a forked child cannot use its parent's daemons: a clear error, not a hang; daemons() of its own work", {
  daemons(1)
  on.exit(daemons(0))
  parent_daemon <- mirai(Sys.getpid())[]
  m <- mirai(1)
  expect_identical(m[], 1)
  value <- m[]
  slow <- mirai({ Sys.sleep(2); "slow" })
  slow_map <- mirai_map(1:2, function(x) { Sys.sleep(2); x })
  # Each child's answer: what mirai(), status(), a wait, a cancel or a race
  # on the parent's tasks gave (each reaches the parent's threads or
  # sockets: refused, even for a resolved mirai), then daemons of its own.
  child <- parallel::mcparallel({
    err <- function(expr) tryCatch({ expr; "no error" }, error = conditionMessage)
    list(submit = err(mirai(2)), status = err(status()), wait = err(slow[]), wait_map = err(slow_map[]),
         resolved = err(m[]), cancel = err(stop_mirai(slow)), race = err(race_mirai(list(slow))),
         copied = value + 1,
         own = { daemons(0); daemons(1); r <- mirai(Sys.getpid())[]; daemons(0); r })
  })
  out <- parallel::mccollect(child, wait = FALSE, timeout = 30)[[1L]]
  expect_type(out, "list")
  forked <- "belong to the process that set them up, not to this forked child"
  for (k in c("submit", "status", "wait", "wait_map", "resolved", "cancel", "race"))
    expect_match(out[[k]], forked, fixed = TRUE, info = k)
  expect_identical(out$copied, 2)
  expect_type(out$own, "integer")
  expect_false(out$own %in% c(Sys.getpid(), parent_daemon))
  # The parent's profile, daemon and results are untouched: the slow tasks
  # were neither cancelled nor their replies taken by the child.
  expect_identical(slow[], "slow")
  expect_identical(slow_map[.flat], 1:2)
  expect_identical(status()$connections, 1L)
  expect_identical(mirai(Sys.getpid())[], parent_daemon)
  expect_identical(unlist(parallel::mclapply(1:2, function(i) tryCatch(mirai(i)[], error = function(e) "refused"))),
                   c("refused", "refused"))
})

test_that("a task's forked children relay their messages and return their values", {
  daemons(1, relay = TRUE)
  on.exit(daemons(0))
  relayed <- character()
  res <- withCallingHandlers(
    mirai(parallel::mclapply(1:2, function(i) { message("hi ", i); i * 10 }, mc.cores = 2))[],
    message = function(m) { relayed <<- c(relayed, conditionMessage(m)); invokeRestart("muffleMessage") }
  )
  expect_identical(res, list(10, 20))
})

test_that("an interrupt during daemons(0)'s grace period kills the daemons still running at once", {
  skip_if_not_installed("processx")
  out <- interrupt_child(c(
    "library(mirai)",
    "daemons(1, autoexit = NA)",
    "pid <- mirai(Sys.getpid())[]",
    "m <- mirai({ Sys.sleep(60); 1 })",
    "Sys.sleep(0.5)",
    "cat('ready\\n')",
    "r <- tryCatch({ daemons(0); 'completed' }, interrupt = function(e) 'interrupted')",
    "gone <- function() { st <- tryCatch(readLines(sprintf('/proc/%d/stat', pid)), error = function(e) ''); !length(st) || !nzchar(st[[1L]]) || grepl(') Z', st[[1L]], fixed = TRUE) }",
    "t0 <- Sys.time(); while (!gone() && Sys.time() - t0 < 3) Sys.sleep(0.05)",
    "cat('reset', r, 'gone', gone(), 'done\\n')"
  ), "ready", "done")
  expect_match(out, "reset interrupted gone TRUE done", fixed = TRUE)
})

test_that("internal entry points refuse objects that are not what they expect", {
  daemons(1)
  on.exit(daemons(0))
  m <- mirai(1)
  expect_identical(m[], 1)
  # A look-alike holding a real handle reads the value kept with the
  # handle, and nothing is written into it.
  fake <- structure(list(aio = get("aio", m)), class = "mirai")
  expect_false(unresolved(fake))
  expect_identical(names(fake), "aio")
  expect_error(.Call(mirai:::C_mirai_aio_data, NULL), "not a valid mirai handle")
  expect_error(.Call(mirai:::C_mirai_aio_data, m), "not a valid mirai handle")
  expect_error(.Call(mirai:::C_mirai_value, list()), "not a mirai")
  expect_error(.Call(mirai:::C_mirai_aio_wait, m), "not a valid mirai handle")
  # The real mirai still reads its value after all that.
  expect_identical(m$data, 1)
})

test_that("everywhere() refuses an absurd .min instead of queueing it", {
  daemons(1)
  on.exit(daemons(0))
  expect_error(everywhere(1, .min = 1e20), "at most 100000")
  expect_identical(status()$mirai[["awaiting"]], 0L)
  expect_identical(length(everywhere(1, .min = 3)), 3L)
})

test_that("running out of memory while serializing a task is an R error, not an abort", {
  skip_on_cran()
  script <- tempfile(fileext = ".R")
  writeLines(c(
    "library(mirai); daemons(1)",
    "x <- runif(1.5e8)",
    "r <- tryCatch(mirai(length(x), x = x), error = conditionMessage)",
    "cat('RESULT:', if (is.character(r)) r else 'no error', '\\n')",
    "rm(x); invisible(gc()); cat('ALIVE:', mirai(1 + 1)[], '\\n'); daemons(0)"
  ), script)
  rs <- file.path(R.home("bin"), "Rscript")
  out <- suppressWarnings(system2("bash", c("-c", shQuote(sprintf("ulimit -v 2600000; %s %s 2>&1", rs, script))),
                                  stdout = TRUE, env = paste0("R_LIBS=", paste(.libPaths(), collapse = ":"))))
  out <- paste(out, collapse = "\n")
  expect_match(out, "RESULT: .*(cannot allocate|serialize)")
  expect_match(out, "ALIVE: 2")
})
