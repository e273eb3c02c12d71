# What the daemons did: daemons_table() (per-daemon counters) and
# daemons_timeline() (which task ran where, and when), with real daemons.

skip_on_cran()

table_cols <- c("id", "pid", "state", "assigned", "completed", "connected", "bytes_in", "bytes_out")

test_that("daemons_table() has no rows, and daemons_timeline() no tasks, without daemons or in sync mode", {
  for (tab in list(daemons_table(), with(daemons(sync = TRUE), daemons_table()))) {
    expect_s3_class(tab, "data.frame")
    expect_identical(names(tab), table_cols)
    expect_identical(nrow(tab), 0L)
    expect_s3_class(tab$connected, "POSIXct")
  }
  f <- tempfile(fileext = ".pdf")
  on.exit(unlink(f))
  d <- daemons_timeline(file = f)
  expect_identical(names(d), c("task", "daemon", "start", "end", "error"))
  expect_identical(nrow(d), 0L)
  expect_true(file.exists(f))
})

test_that("daemons_table() of a profile with no daemons set has no rows, as status() gives none", {
  daemons(1)
  on.exit(daemons(0))
  expect_identical(nrow(daemons_table()), 1L)
  # Not an error: status() of such a profile is a value too (as the reference's).
  expect_identical(nrow(daemons_table(.compute = "nope")), 0L)
  expect_identical(status("nope")[c("connections", "daemons")], list(connections = 0L, daemons = 0L))
})

test_that("daemons_table() and daemons_timeline() check their arguments, naming them", {
  expect_error(daemons_timeline(file = 1), "`file` must be a single file name")
  expect_error(daemons_timeline(file = c("a", "b")), "`file` must be a single file name")
  expect_error(daemons_timeline(x = 1), "`x` must be a mirai, a list of mirai or a mirai_map")
  expect_error(daemons_timeline(x = list(1)), "`x` must be a mirai, a list of mirai or a mirai_map")
  expect_error(daemons_table(.compute = 1), "`.compute`")
})

for (disp in c(TRUE, FALSE)) {
  mode <- if (disp) "dispatcher" else "no dispatcher"

  test_that(sprintf("daemons_table() counts each daemon's tasks and bytes, by pid (%s)", mode), {
    t0 <- Sys.time() - 1
    daemons(2, dispatcher = disp)
    on.exit(daemons(0))
    pids <- unlist(everywhere(Sys.getpid())[])
    tab0 <- daemons_table()
    expect_identical(names(tab0), table_cols)
    expect_identical(tab0$id, 1:2)
    expect_setequal(tab0$pid, pids)
    expect_identical(tab0$state, c("idle", "idle"))
    expect_true(all(tab0$connected >= t0 & tab0$connected <= Sys.time()))
    expect_identical(tab0$assigned, tab0$completed)
    # Tasks that say which daemon ran them: the table's counts per pid grow
    # by exactly that.
    res <- unlist(mirai_map(1:20, function(i) { Sys.sleep(0.02); Sys.getpid() })[])
    tab1 <- daemons_table()
    ran <- table(factor(res, levels = tab0$pid))
    expect_identical(tab1$completed - tab0$completed, as.numeric(ran))
    expect_identical(tab1$assigned - tab0$assigned, as.numeric(ran))
    expect_true(all(tab1$bytes_in > tab0$bytes_in[match(tab1$pid, tab0$pid)] | ran[as.character(tab1$pid)] == 0))
    # A 2 MB argument out and a 3 MB value back, on one daemon: its bytes.
    tab2 <- daemons_table()
    who <- mirai({ x; list(pid = Sys.getpid(), y = raw(3e6)) }, x = raw(2e6))[]$pid
    tab3 <- daemons_table()
    k <- match(who, tab3$pid)
    expect_gt(tab3$bytes_out[k] - tab2$bytes_out[k], 2e6)
    expect_lt(tab3$bytes_out[k] - tab2$bytes_out[k], 2.5e6)
    expect_gt(tab3$bytes_in[k] - tab2$bytes_in[k], 3e6)
    expect_lt(tab3$bytes_in[k] - tab2$bytes_in[k], 3.5e6)
    expect_identical(tab3$bytes_in[-k], tab2$bytes_in[-k])
    # Busy while it runs a task, idle again after.
    m <- mirai({ Sys.sleep(1.5); Sys.getpid() })
    expect_true(wait_until(function() any(daemons_table()$state == "busy"), 10))
    busy <- daemons_table()
    expect_identical(sum(busy$state == "busy"), 1L)
    expect_identical(busy$pid[busy$state == "busy"], m[])
    expect_true(wait_until(function() all(daemons_table()$state == "idle"), 10))
  })
}

test_that("daemons_table() lists a replacement still starting as connecting, then connected", {
  daemons(1)
  on.exit(daemons(0))
  first <- daemons_table()$pid
  tools::pskill(first, tools::SIGKILL)
  expect_true(wait_until(function() {
    tab <- daemons_table()
    nrow(tab) == 1L && tab$pid != first
  }, 20))
  tab <- daemons_table()
  # Caught before its handshake, or after: either way one row, its pid.
  expect_true(tab$state %in% c("connecting", "idle"))
  expect_identical(is.na(tab$id), tab$state == "connecting")
  expect_true(wait_until(function() identical(daemons_table()$state, "idle"), 20))
  tab <- daemons_table()
  expect_identical(tab$id, 2L)
  expect_identical(mirai(Sys.getpid())[], tab$pid)
})

timeline_file <- function() {
  # PNG where this R can draw one without a display; PDF otherwise.
  if (isTRUE(capabilities("png")) || isTRUE(capabilities("cairo"))) tempfile(fileext = ".png")
  else tempfile(fileext = ".pdf")
}

test_that("daemons_timeline() draws a map's tasks, the straggler longest and the error flagged", {
  daemons(3)
  on.exit(daemons(0))
  f <- timeline_file()
  on.exit(unlink(f), add = TRUE)
  # Element 4 is the straggler, element 6 fails.
  mp <- mirai_map(1:10, function(i) {
    Sys.sleep(if (i == 4L) 1.5 else 0.05)
    if (i == 6L) stop("boom")
    i
  })
  res <- mp[]
  expect_true(is_mirai_error(res[[6L]]))
  ids <- vapply(1:10, function(i) mirai:::task_ids(mp[[i]]), 0)
  # Earlier tasks on this profile are left out.
  d <- daemons_timeline(mp, file = f, main = "a map")
  expect_true(file.exists(f))
  expect_gt(file.size(f), 2000)
  expect_identical(names(d), c("task", "daemon", "start", "end", "error"))
  # Each task once, so on exactly one daemon.
  expect_identical(nrow(d), 10L)
  expect_setequal(d$task, ids)
  expect_false(anyDuplicated(d$task) > 0L)
  expect_identical(min(d$start), 0)
  expect_true(all(d$end > d$start))
  dur <- d$end - d$start
  expect_identical(d$task[which.max(dur)], ids[[4L]])
  expect_gt(max(dur), 1.4)
  expect_identical(d$task[d$error], ids[[6L]])
  expect_gt(length(unique(d$daemon)), 1L)
  expect_true(all(d$daemon %in% daemons_table()$id))
  # The straggler's daemon ran nothing else while it ran.
  s <- d[d$task == ids[[4L]], ]
  other <- d[d$daemon == s$daemon & d$task != s$task, ]
  expect_true(all(other$end <= s$start | other$start >= s$end))
  # A list of mirai, and everything recorded.
  m <- mirai(stop("no"))
  m[]
  one <- daemons_timeline(list(m, mp[[1L]]), file = f)
  expect_setequal(one$task, c(mirai:::task_ids(m), ids[[1L]]))
  expect_identical(one$error[one$task == mirai:::task_ids(m)], TRUE)
  expect_identical(nrow(daemons_timeline(file = f)), 11L)
})

test_that("daemons_timeline() shows a running task as running, and a reset clears it", {
  daemons(1, dispatcher = FALSE)
  on.exit(daemons(0))
  f <- timeline_file()
  on.exit(unlink(f), add = TRUE)
  m <- mirai(Sys.sleep(2))
  expect_true(wait_until(function() nrow(daemons_timeline(m, file = f)) == 1L, 10))
  d <- daemons_timeline(m, file = f)
  expect_true(is.na(d$end))
  expect_true(is.na(d$error))
  m[]
  d <- daemons_timeline(m, file = f)
  expect_gt(d$end, 1.5)
  expect_false(d$error)
  daemons(0)
  daemons(1)
  expect_identical(nrow(daemons_timeline(file = f)), 0L)
})
