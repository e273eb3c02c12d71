# Live relay of messages and progress from running tasks (daemons(relay =
# TRUE)), with real daemons. "While the task runs" is shown by events, not
# clocks: a task relays a message, then waits for a file that only the
# host's handler for that message creates. Without live relay the task
# would wait out its own limit and answer "not released".

# The body of a task that relays `msgs`, then waits (up to 60 s) for `gate`.
gated <- function(msgs, gate) {
  for (x in msgs) message(x)
  t0 <- Sys.time()
  while (!file.exists(gate)) {
    if (difftime(Sys.time(), t0, units = "secs") > 60) return("not released")
    Sys.sleep(0.01)
  }
  "released"
}

# Collects relayed messages during `expr` (muffling them), and creates the
# gate file of the task whose message matches `open`.
collect <- function(expr, open = NULL, gate = NULL) {
  got <- list()
  value <- withCallingHandlers(expr, message = function(c) {
    got[[length(got) + 1L]] <<- c
    if (!is.null(open) && grepl(open, conditionMessage(c))) file.create(gate)
    invokeRestart("muffleMessage")
  })
  list(value = value, got = got)
}

msg_text <- function(got) vapply(got, function(c) sub("\n$", "", conditionMessage(c)), "")

# future's backend for the calling test: a one-node relay cluster, with
# progressr enabled; undone when the test ends.
future_on_relay_cluster <- function(env = parent.frame()) {
  cl <- make_cluster(1, relay = TRUE)
  op <- options(progressr.enable = TRUE)
  withr::defer({ future::plan(future::sequential); stop_cluster(cl); options(op) }, envir = env)
  future::plan(future::cluster, workers = cl)
  invisible(cl)
}

test_that("relay is off by default: a task's messages stay on its daemon", {
  daemons(1)
  on.exit(daemons(0))
  r <- collect(mirai({ message("quiet"); 1 })[])
  expect_identical(r$value, 1)
  expect_length(r$got, 0L)
  expect_null(status()$relay_dropped)
  expect_error(daemons(1, relay = NA), "`relay`")
})

for (disp in c(TRUE, FALSE)) {
  test_that(sprintf("messages arrive while the task runs, in order, tagged (dispatcher = %s)", disp), {
    daemons(2, dispatcher = disp, relay = TRUE)
    on.exit(daemons(0))
    gate <- tempfile()
    m <- mirai(gated(sprintf("step %d", 1:20), gate), gated = gated, gate = gate)
    r <- collect(m[], open = "step 20", gate = gate)
    expect_identical(r$value, "released")
    expect_identical(msg_text(r$got), sprintf("step %d", 1:20))
    expect_true(all(vapply(r$got, inherits, NA, "miraiCondition")))
    expect_true(all(vapply(r$got, inherits, NA, "simpleMessage")))
    expect_true(all(vapply(r$got, `[[`, 0, "mirai_id") == mirai:::task_ids(m)))
    expect_identical(r$got[[1L]]$mirai_compute, "default")
    expect_identical(status()$relay_dropped, 0)
  })
}

test_that("two concurrent tasks' messages are told apart by their tags, each in order", {
  daemons(2, relay = TRUE)
  on.exit(daemons(0))
  gate <- tempfile()
  # Each waits for the same gate, opened once both have sent everything.
  body <- function(tag, gate) {
    for (i in 1:10) message(sprintf("%s %d", tag, i))
    t0 <- Sys.time()
    while (!file.exists(gate)) if (difftime(Sys.time(), t0, units = "secs") > 60) return("not released") else Sys.sleep(0.01)
    "released"
  }
  ma <- mirai(body("a", gate), body = body, gate = gate)
  mb <- mirai(body("b", gate), body = body, gate = gate)
  got <- list()
  withCallingHandlers({
    ma[]
    mb[]
  }, message = function(c) {
    got[[length(got) + 1L]] <<- c
    if (length(got) == 20L) file.create(gate)
    invokeRestart("muffleMessage")
  })
  expect_identical(c(ma$data, mb$data), c("released", "released"))
  ids <- vapply(got, `[[`, 0, "mirai_id")
  expect_setequal(unique(ids), c(mirai:::task_ids(ma), mirai:::task_ids(mb)))
  expect_identical(msg_text(got[ids == mirai:::task_ids(ma)]), sprintf("a %d", 1:10))
  expect_identical(msg_text(got[ids == mirai:::task_ids(mb)]), sprintf("b %d", 1:10))
})

test_that("an unhandled relayed message is written to stderr after the task's tag", {
  daemons(1, relay = TRUE)
  on.exit(daemons(0))
  m <- mirai({ message("hello from the task"); 5 })
  out <- capture.output(v <- m[], type = "message")
  expect_identical(v, 5)
  expect_identical(out, sprintf("[mirai %d] hello from the task", mirai:::task_ids(m)))
  # A task's own handler still sees its messages first.
  m <- mirai(suppressMessages({ message("kept here"); 6 }))
  expect_identical(capture.output(v <- m[], type = "message"), character())
  expect_identical(v, 6)
  # Warnings are not relayed: they come with the value as before.
  expect_identical(mirai({ warning("w"); 7 })[], 7)
})

test_that("relayed conditions reach R from later's loop, without a wait", {
  skip_if_not_installed("later")
  daemons(1, relay = TRUE)
  on.exit(daemons(0))
  gate <- tempfile()
  m <- mirai(gated("from later", gate), gated = gated, gate = gate)
  # Only later's loop runs R code here, as in Shiny. later runs callbacks
  # outside every calling handler (global ones included), so the message
  # is seen where it is written: stderr, with its tag.
  out <- character()
  capture <- function() {
    out <<- c(out, capture.output(later::run_now(0.05), type = "message"))
    length(out) > 0L
  }
  expect_true(wait_until(capture, 30))
  expect_identical(out, sprintf("[mirai %d] from later", mirai:::task_ids(m)))
  # It arrived while the task still waited for its gate.
  expect_true(unresolved(m))
  file.create(gate)
  expect_identical(m[], "released")
})

test_that("a task relays a burst, then at most its rate: the rest is counted and told", {
  daemons(2, relay = TRUE)
  on.exit(daemons(0))
  n <- 30000L
  m <- mirai({ for (i in seq_len(n)) message(i); "flooded" }, n = n)
  other <- mirai_map(1:50, function(i) i * 2)
  got <- 0L
  notes <- character()
  withCallingHandlers(v <- m[], message = function(c) {
    if (inherits(c, "miraiCondition")) got <<- got + 1L else notes <<- c(notes, conditionMessage(c))
    invokeRestart("muffleMessage")
  })
  expect_identical(v, "flooded")
  # At least the burst went, not all: the daemon kept the rest back and
  # said how many, before the task's value; nothing is unaccounted for.
  expect_gte(got, mirai:::limit("relay_burst"))
  expect_lt(got, n)
  expect_length(notes, 1L)
  held_back <- as.numeric(sub("^\\[mirai [0-9]+\\] ([0-9]+) condition.*$", "\\1", notes))
  expect_match(notes, sprintf("\\[mirai %d\\] [0-9]+ condition\\(s\\) signalled by this task were not relayed: a task relays at most %s a second",
                              mirai:::task_ids(m), format(mirai:::limit("relay_rate"), big.mark = ",")))
  expect_identical(got + held_back, as.double(n))
  expect_identical(status()$relay_dropped, held_back)
  # The neighbour was not held up.
  expect_identical(unlist(other[]), (1:50) * 2)
})

test_that("the host holds a bounded number of relayed conditions, with the drops counted and told", {
  # Eleven tasks each relay 1,000 (their burst) while R does not wait: the
  # host keeps at most 10,000 and counts the rest.
  cap <- mirai:::limit("relay_max_items")
  k <- 11L
  each <- mirai:::limit("relay_burst")
  expect_gt(k * each, cap)
  daemons(k, relay = TRUE)
  on.exit(daemons(0))
  gate <- tempfile()
  ms <- lapply(seq_len(k), function(j) mirai(gated(rep("x", each), gate), gated = gated, gate = gate, each = each))
  expect_true(wait_until(function() status()$relay_dropped >= k * each - cap, 120))
  file.create(gate)
  got <- 0L
  notes <- character()
  withCallingHandlers(v <- collect_mirai(ms), message = function(c) {
    if (inherits(c, "miraiCondition")) got <<- got + 1L else notes <<- c(notes, conditionMessage(c))
    invokeRestart("muffleMessage")
  })
  expect_identical(unlist(v), rep("released", k))
  expect_lte(got, cap)
  dropped <- status()$relay_dropped
  expect_identical(got + dropped, k * each)
  expect_gte(length(notes), 1L)
  # Both bounds are named: either may be the one hit.
  expect_match(notes, sprintf("the host holds at most %s \\(and %s\\) at once", format(cap, big.mark = ","),
                              mirai:::bytes_text(mirai:::limit("relay_max_bytes"))))
  told <- as.numeric(sub("^\\[mirai [0-9]+\\] ([0-9]+) condition\\(s\\) relayed by this task were dropped.*$", "\\1", notes))
  expect_identical(sum(told), dropped)
})

test_that("with_progress() shows progressr's updates from inside mirai_map() elements", {
  skip_if_not_installed("progressr")
  daemons(2, relay = TRUE)
  op <- options(progressr.enable = TRUE)
  on.exit({ daemons(0); options(op) })
  gate <- tempfile()
  updates <- character()
  # A reporter of our own: progressr's handlers are what sees the updates.
  seen <- progressr::make_progression_handler("seen", reporter = list(
    update = function(config, state, progression, ...) {
      updates <<- c(updates, progression$message)
      if (startsWith(progression$message, "half of")) file.create(gate)
    }
  ), enable = TRUE)
  res <- progressr::with_progress({
    p <- progressr::progressor(steps = 6L)
    mirai_map(1:3, function(i) {
      p(sprintf("half of %d", i))
      t0 <- Sys.time()
      while (!file.exists(gate)) if (difftime(Sys.time(), t0, units = "secs") > 60) return("not released") else Sys.sleep(0.01)
      p(sprintf("all of %d", i))
      i
    }, p = p, gate = gate)[]
  }, handlers = seen)
  expect_identical(unlist(res), 1:3)
  # A first update arrived while its element was still running (it opened
  # the gate the elements wait for), and every element's two updates
  # arrived.
  expect_setequal(updates, c(sprintf("half of %d", 1:3), sprintf("all of %d", 1:3)))
})

test_that("a cluster's nodes relay messages from parallel's functions", {
  cl <- make_cluster(2, relay = TRUE)
  on.exit(stop_cluster(cl))
  r <- collect(parallel::parLapply(cl, 1:4, function(i) { message("node says ", i); i }))
  expect_identical(r$value, as.list(1:4))
  expect_setequal(msg_text(r$got), sprintf("node says %d", 1:4))
  # Without relay a cluster is as before.
  cl2 <- make_cluster(1)
  on.exit(stop_cluster(cl2), add = TRUE)
  r <- collect(parallel::parLapply(cl2, 1:2, function(i) { message("silent"); i }))
  expect_length(r$got, 0L)
})

test_that("future with progressr shows progress before the future resolves", {
  skip_if_not_installed("future")
  skip_if_not_installed("progressr")
  future_on_relay_cluster()
  gate <- tempfile()
  updates <- character()
  resolved_at_first <- NA
  f <- NULL
  seen <- progressr::make_progression_handler("seen", reporter = list(
    update = function(config, state, progression, ...) {
      updates <<- c(updates, progression$message)
      if (identical(progression$message, "first")) {
        resolved_at_first <<- future::resolved(f)
        file.create(gate)
      }
    }
  ), enable = TRUE)
  v <- progressr::with_progress({
    p <- progressr::progressor(steps = 2L)
    f <- future::future({
      p("first")
      t0 <- Sys.time()
      while (!file.exists(gate)) if (difftime(Sys.time(), t0, units = "secs") > 60) return("not released") else Sys.sleep(0.01)
      p("second")
      "done"
    }, globals = list(p = p, gate = gate))
    future::value(f)
  }, handlers = seen)
  expect_identical(v, "done")
  expect_identical(updates, c("first", "second"))
  expect_false(resolved_at_first)
})

test_that("under relay a node task's error has the same stack trace as without", {
  cl <- make_cluster(1, relay = TRUE)
  on.exit(stop_cluster(cl))
  parallel:::sendCall(cl[[1L]], "stop", list("direct"))
  e <- parallel:::recvResult(cl[[1L]])
  expect_identical(unclass(e)[[1L]], "Error: direct")
  expect_identical(attr(e, "stack.trace"), list(quote(stop(base::quote("direct")))))
})

test_that("under relay a task runs at the same depth, with the same error trace, as without", {
  # The relay handler is set once around the daemon's loop, not per task:
  # the task's frames and its error's trace must not show it.
  task <- function() {
    f <- function() stop("deep")
    m <- mirai(f(), f = f)
    list(depth = mirai({ g <- function() sys.nframe(); g() })[], trace = attr(m[], "stack.trace"))
  }
  daemons(1)
  off <- task()
  daemons(0)
  daemons(1, relay = TRUE)
  on.exit(daemons(0))
  on <- task()
  expect_gt(off$depth, 1L)
  expect_identical(on$depth, off$depth)
  expect_identical(on$trace, off$trace)
  expect_identical(on$trace, list(quote(stop("deep")), quote(f())))
})

test_that("a handler's error while showing one profile's relays leaves the others' relays working", {
  daemons(1, relay = TRUE, .compute = "relay_a")
  daemons(1, relay = TRUE, .compute = "relay_b")
  on.exit({ daemons(0, .compute = "relay_a"); daemons(0, .compute = "relay_b") })
  fa <- tempfile()
  fb <- tempfile()
  m1 <- mirai({ message("a1"); file.create(f); 1 }, f = fa, .compute = "relay_a")
  m2 <- mirai({ message("b1"); file.create(f); 2 }, f = fb, .compute = "relay_b")
  # A busy wait: no wait of mirai's (nor later's loop, nor Sys.sleep) runs,
  # so nothing is shown until m1[] below, which shows both profiles' at once.
  t0 <- Sys.time()
  while (!(file.exists(fa) && file.exists(fb)) && difftime(Sys.time(), t0, units = "secs") < 30) NULL
  t0 <- Sys.time()
  while (difftime(Sys.time(), t0, units = "secs") < 0.5) NULL
  # The handler fails on the first relayed message it sees.
  failed <- FALSE
  res <- tryCatch(withCallingHandlers(m1[], message = function(c) {
    if (inherits(c, "miraiCondition") && !failed) {
      failed <<- TRUE
      stop("handler failed")
    }
  }), error = conditionMessage)
  expect_identical(res, "handler failed")
  # The other profile's message is still shown, and both relay afterwards.
  m1 <- mirai({ message("a2"); 1 }, .compute = "relay_a")
  m2 <- mirai({ message("b2"); 2 }, .compute = "relay_b")
  got <- collect({ m1[]; m2[] })$got
  expect_length(intersect(msg_text(got), c("a1", "b1")), 1L)
  expect_true(all(c("a2", "b2") %in% msg_text(got)))
})

test_that("a relayed message that is not text does not fail the wait it is shown in", {
  daemons(1, relay = TRUE)
  on.exit(daemons(0))
  m <- mirai({ message(structure(class = c("message", "condition"), list(message = list(1, 2), call = NULL))); 3 })
  out <- capture.output(v <- m[], type = "message")
  expect_identical(v, 3)
  expect_match(out, "not text", all = FALSE)
})

test_that("conditions held for a task whose mirai is gone do not fill the inbox for good", {
  daemons(1, relay = TRUE)
  on.exit(daemons(0))
  # Tasks that hold conditions nobody will receive (as a cluster node's
  # for a receive that was interrupted): as many as the inbox takes, each
  # task within its relay budget.
  each <- mirai:::limit("relay_burst")
  k <- mirai:::limit("relay_max_items") / each
  ms <- lapply(seq_len(k), function(j) mirai({
    conn <- dynGet("conn")
    for (i in seq_len(each)) .Call(mirai:::C_mirai_daemon_relay, conn, simpleMessage("held"), TRUE)
    1
  }, each = each))
  expect_identical(unlist(collect_mirai(ms)), rep(1, k))
  rm(ms)
  invisible(gc())
  got <- collect(mirai({ message("after"); 2 })[])
  expect_identical(got$value, 2)
  expect_identical(msg_text(got$got), "after")
})

test_that("conditions a task holds after its mirai is gone are not kept: the inbox stays open to others", {
  daemons(2, relay = TRUE)
  on.exit(daemons(0))
  gate <- tempfile()
  over <- tempfile()
  # Its mirai goes while it waits; then it holds (as a cluster node's task
  # would) more bytes of conditions than the inbox takes, within its budget.
  size <- mirai:::limit("relay_limit_bytes") / 2
  k <- ceiling(mirai:::limit("relay_max_bytes") / size) + 10
  m <- mirai({
    conn <- dynGet("conn")
    while (!file.exists(gate)) Sys.sleep(0.01)
    big <- simpleMessage(strrep("x", size - 1000))
    for (i in seq_len(k)) .Call(mirai:::C_mirai_daemon_relay, conn, big, TRUE)
    file.create(over)
    1
  }, gate = gate, over = over, size = size, k = k)
  expect_lt(k, mirai:::limit("relay_burst"))
  collected <- FALSE
  reg.finalizer(m, function(e) collected <<- TRUE)
  rm(m)
  # R may keep the object last made referenced for a while: the next ones
  # (run by the other daemon) take its place.
  expect_true(wait_until(function() {
    mirai(NULL)[]
    invisible(gc())
    collected
  }, 20))
  file.create(gate)
  expect_true(wait_until(function() file.exists(over), 30))
  # Larger than what room the inbox would have left.
  after <- strrep("y", size + 1000)
  got <- collect(mirai({ message(after); 2 }, after = after)[])
  expect_identical(got$value, 2)
  expect_identical(msg_text(got$got), after)
  expect_identical(status()$relay_dropped, 0)
})

test_that("on_relay() hands a task's conditions to its handler, while R waits and from later's loop", {
  skip_if_not_installed("later")
  daemons(2, relay = TRUE)
  on.exit(daemons(0))
  expect_error(on_relay(mirai(1), "f"), "`handler` must be a function")
  expect_error(on_relay(list(1), identity), "`x` must be a mirai, a mirai_map or a list of mirai")
  # While R waits: the handler gets them in order, nothing reaches stderr or
  # calling handlers, and another task's messages go their usual way.
  gate <- tempfile()
  m <- mirai(gated(sprintf("step %d", 1:5), gate), gated = gated, gate = gate)
  other <- mirai({ message("not mine"); 2 })
  got <- list()
  expect_identical(on_relay(m, function(c) {
    got[[length(got) + 1L]] <<- c
    if (length(got) == 5L) file.create(gate)
  }), m)
  err <- capture.output(r <- collect(list(m[], other[])), type = "message")
  expect_identical(r$value, list("released", 2))
  expect_identical(msg_text(got), sprintf("step %d", 1:5))
  expect_true(all(vapply(got, `[[`, 0, "mirai_id") == mirai:::task_ids(m)))
  expect_identical(msg_text(r$got), "not mine")
  expect_identical(err, character())
  # From later's loop, where no calling handler is: the handler alone sees
  # the message (not stderr), while the task still runs.
  gate2 <- tempfile()
  m2 <- mirai(gated("from later", gate), gated = gated, gate = gate2)
  seen <- character()
  running <- NA
  on_relay(m2, function(c) {
    seen <<- c(seen, conditionMessage(c))
    running <<- unresolved(m2)
    file.create(gate2)
  })
  err <- character()
  expect_true(wait_until(function() {
    err <<- c(err, capture.output(later::run_now(0.05), type = "message"))
    length(seen) > 0L
  }, 30))
  expect_identical(seen, "from later\n")
  expect_true(running)
  expect_identical(err, character())
  expect_identical(m2[], "released")
  # Handlers of tasks that are over go with a later drain of the inbox.
  reg <- function() ls(mirai:::.$profiles$default$relay_handlers)
  expect_true(length(reg()) > 0L)
  for (k in 1:3) collect(mirai({ message("drain"); k }, k = k)[])
  expect_identical(reg(), character())
})

test_that("on_relay() covers every element of a map, and needs relay", {
  daemons(2, relay = TRUE)
  on.exit(daemons(0))
  mp <- mirai_map(1:6, function(i) { message("element ", i); i })
  got <- numeric()
  on_relay(mp, function(c) got <<- c(got, as.numeric(sub("element ", "", conditionMessage(c)))))
  expect_identical(unlist(mp[]), 1:6)
  expect_setequal(got, 1:6)
  daemons(0)
  daemons(1)
  expect_error(on_relay(mirai(1), identity), "not sent to daemons set with `relay = TRUE`")
})

# The map's bar, as text (so each position it shows can be read back).
text_bar <- function(expr) {
  old <- mirai:::.$cli
  assign("cli", FALSE, envir = mirai:::.)
  on.exit(assign("cli", old, envir = mirai:::.))
  out <- capture.output(v <- expr, type = "message")
  list(value = v, bar = unlist(strsplit(paste(out, collapse = "\n"), "\r", fixed = TRUE)))
}

test_that("a map's [.progress] counts progress inside elements (progressr and cli)", {
  skip_if_not_installed("progressr")
  daemons(2, relay = TRUE)
  on.exit(daemons(0))
  # Each element reports half its work done, says so, and waits for the
  # gate the host opens once both have said it: by then the bar counted the
  # two halves (1.0 of 2) although no element had finished.
  gate <- tempfile()
  halves <- 0L
  body <- function(i, gate) {
    if (i == 1L) {
      p <- progressr::progressor(steps = 4L)
      p(amount = 2)
    } else {
      options(cli.progress_show_after = 0)
      cli::cli_progress_bar(total = 10)
      cli::cli_progress_update(set = 5, force = TRUE)
    }
    message("half")
    t0 <- Sys.time()
    while (!file.exists(gate)) if (difftime(Sys.time(), t0, units = "secs") > 60) return(-1L) else Sys.sleep(0.01)
    i
  }
  r <- text_bar(withCallingHandlers(
    mirai_map(1:2, body, .args = list(gate = gate))[.progress],
    message = function(c) {
      if (inherits(c, "miraiCondition") && identical(conditionMessage(c), "half\n")) {
        halves <<- halves + 1L
        if (halves == 2L) file.create(gate)
        invokeRestart("muffleMessage")
      }
    }))
  expect_identical(r$value, list(1L, 2L), info = paste(unlist(r$value), collapse = " "))
  expect_identical(halves, 2L)
  # Partial positions were shown (the first half alone, then both) before
  # the end, and the bar never went back.
  pos <- as.numeric(sub("^\\[ ([0-9.]+) / 2.*$", "\\1", grep("^\\[ [0-9.]+ / 2", r$bar, value = TRUE)))
  expect_true(any(grepl("^\\[ 1\\.0 / 2", r$bar)))
  expect_false(is.unsorted(pos))
  expect_identical(r$bar[length(r$bar)], "[ 2 / 2 done ]")
  # The elements' own bars and progressors were shown by the map's bar
  # alone: no cli line of theirs reached stderr.
  expect_false(any(grepl("■|%", r$bar)))

  # The same for a list of mirai, one of them from a profile without relay.
  daemons(1, .compute = "quiet")
  on.exit(daemons(0, .compute = "quiet"), add = TRUE)
  unlink(gate)
  halves <- 0L
  ms <- list(mirai(body(1L, gate), body = body, gate = gate),
             mirai(body(2L, gate), body = body, gate = gate))
  # The quiet task also waits for the gate: were it over before the halves
  # came, the bar would go 1.5, 2.0 and never show 1.0.
  quiet <- mirai({
    t0 <- Sys.time()
    while (!file.exists(gate) && difftime(Sys.time(), t0, units = "secs") < 60) Sys.sleep(0.01)
    1L
  }, gate = gate, .compute = "quiet")
  r <- text_bar(withCallingHandlers(
    collect_mirai(c(ms, list(quiet)), ".progress"),
    message = function(c) {
      if (inherits(c, "miraiCondition") && identical(conditionMessage(c), "half\n")) {
        halves <<- halves + 1L
        if (halves == 2L) file.create(gate)
        invokeRestart("muffleMessage")
      }
    }))
  expect_identical(r$value, list(1L, 2L, 1L))
  expect_true(any(grepl("^\\[ 1\\.0 / 3", r$bar)))
  expect_identical(r$bar[length(r$bar)], "[ 3 / 3 done ]")
})

test_that("a task's cli progress bar is shown on the host as it moves", {
  daemons(1, relay = TRUE)
  on.exit(daemons(0))
  task <- function() {
    options(cli.progress_show_after = 0)
    cli::cli_progress_bar("Fitting", total = 8)
    for (i in 1:8) {
      Sys.sleep(0.25)
      cli::cli_progress_update()
    }
    "fitted"
  }
  # Each update cli draws is a tagged line. The daemon has cli draw as
  # often as in a terminal (every 0.2 s, not every 3 s where output is a
  # log): several of the eight updates are drawn, not only the first and
  # the last.
  m <- mirai(task(), task = task)
  out <- capture.output(v <- m[], type = "message")
  expect_identical(v, "fitted")
  tag <- sprintf("[mirai %d] Fitting", mirai:::task_ids(m))
  expect_true(all(startsWith(out, tag)))
  pct <- as.integer(sub("^.* ([0-9]+)% .*$", "\\1", out))
  expect_gte(length(unique(pct)), 4L)
  expect_false(is.unsorted(pct))
  expect_identical(pct[length(pct)], 100L)
  # Where stderr is a dynamic terminal (cli.dynamic says so here), the bar
  # is redrawn in place, and the line ends with the bar.
  op <- options(cli.dynamic = TRUE)
  on.exit(options(op), add = TRUE)
  m <- mirai(task(), task = task)
  out <- paste(capture.output(v <- m[], type = "message"), collapse = "\n")
  expect_identical(v, "fitted")
  draws <- strsplit(out, "\r", fixed = TRUE)[[1L]]
  draws <- draws[nzchar(draws)]
  expect_gte(length(draws), 4L)
  expect_true(all(endsWith(draws[-length(draws)], "\033[K")))
  expect_match(draws[length(draws)], "100%")
})

test_that("from later's loop, global calling handlers see relayed conditions (progressr's global mode)", {
  skip_if_not_installed("later")
  # Global handlers can only be set with no handler on the stack: in a
  # script of its own, as a user's session would.
  script <- tempfile(fileext = ".R")
  gate <- tempfile()
  on.exit(unlink(c(script, gate)))
  writeLines(c(
    "library(mirai)",
    "daemons(1, relay = TRUE)",
    "seen <- character()",
    "globalCallingHandlers(message = function(c) if (inherits(c, 'miraiCondition')) {",
    "  seen <<- c(seen, conditionMessage(c)); invokeRestart('muffleMessage') })",
    sprintf("gate <- %s", deparse(gate)),
    "m <- mirai({ message('to the global handler'); t0 <- Sys.time()",
    "  while (!file.exists(gate) && difftime(Sys.time(), t0, units = 'secs') < 60) Sys.sleep(0.01); 'released' },",
    "  gate = gate)",
    "t0 <- Sys.time()",
    "while (!length(seen) && difftime(Sys.time(), t0, units = 'secs') < 60) later::run_now(0.05)",
    "running <- unresolved(m)",
    "invisible(file.create(gate))",
    "cat(sprintf('seen=%s running=%s value=%s\\n', paste(trimws(seen), collapse = '|'), running, m[]))",
    "daemons(0)"
  ), script)
  out <- system2(file.path(R.home("bin"), "Rscript"), script, stdout = TRUE, stderr = TRUE,
                 env = paste0("R_LIBS=", paste(.libPaths(), collapse = ":")))
  expect_identical(out, "seen=to the global handler running=TRUE value=released")
})

test_that("a task's own immediate condition, with no restart to muffle it, is relayed and the task goes on", {
  daemons(1, relay = TRUE)
  on.exit(daemons(0))
  got <- list()
  v <- withCallingHandlers(mirai({
    signalCondition(structure(class = c("immediateCondition", "condition"),
                              list(message = "custom", call = NULL)))
    "went on"
  })[], immediateCondition = function(c) got[[length(got) + 1L]] <<- c)
  expect_identical(v, "went on")
  expect_identical(vapply(got, conditionMessage, ""), "custom")
})

test_that("a task cannot pass a condition of its own for the daemon's drop note", {
  daemons(1, relay = TRUE)
  on.exit(daemons(0))
  fake <- function(cls) structure(class = c("miraiRelayDropped", cls, "condition"),
                                  list(message = "fake\n", call = NULL, dropped = 1e12))
  notes <- character()
  v <- withCallingHandlers(mirai({
    message(fake("message"))
    signalCondition(fake("immediateCondition"))
    "done"
  }, fake = fake)[], message = function(c) {
    notes <<- c(notes, conditionMessage(c))
    invokeRestart("muffleMessage")
  })
  expect_identical(v, "done")
  expect_identical(notes, character())
  expect_identical(status()$relay_dropped, 0)
})

test_that("a map's [.progress] skips malformed progress a task sends, and still counts", {
  daemons(2, relay = TRUE)
  on.exit(daemons(0))
  mp <- mirai_map(1:4, function(i) {
    junk <- simpleMessage("junk bar\n")
    junk$mirai_bar <- list(id = c("a", "b"), current = list(1), total = "z")
    message(junk)
    for (p in list(list(type = NULL, progressor_uuid = "u"),
                   list(type = "initiate", progressor_uuid = c("a", "b"), steps = 5),
                   list(type = list(1), progressor_uuid = list(1), steps = "x"),
                   list(type = "update", progressor_uuid = "v", step = -3),
                   list(type = "initiate", progressor_uuid = "w", steps = Inf))) {
      cond <- structure(class = c("progression", "immediateCondition", "condition"),
                        c(list(message = "", call = NULL), p))
      withRestarts(signalCondition(cond), muffleProgression = function(...) NULL)
    }
    i
  })
  r <- text_bar(collect(mp[.progress]))
  expect_identical(r$value$value, as.list(1:4))
  expect_identical(tail(r$bar, 1L), "[ 4 / 4 done ]")
})

test_that("a map's [.progress] counts only its own profile's tasks, whose ids another's share", {
  daemons(1, relay = TRUE, .compute = "p1")
  on.exit(daemons(0, .compute = "p1"))
  daemons(1, relay = TRUE, .compute = "p2")
  on.exit(daemons(0, .compute = "p2"), add = TRUE)
  prog <- function(type) structure(class = c("progression", "immediateCondition", "condition"),
                                   list(message = "", call = NULL, type = type,
                                        progressor_uuid = "other", steps = 4, amount = 1))
  # The other profile's task relays while the map is collected: its
  # element opens the gate, then outlasts the relays.
  gate <- tempfile()
  other <- mirai({
    while (!file.exists(gate)) Sys.sleep(0.01)
    for (t in c("initiate", "update")) withRestarts(signalCondition(prog(t)), muffleProgression = function(...) NULL)
    "other"
  }, prog = prog, gate = gate, .compute = "p2")
  mp <- mirai_map(1, function(i) { file.create(gate); Sys.sleep(1); i }, gate = gate, .compute = "p1")
  expect_identical(mirai:::task_ids(other), .Call(mirai:::C_mirai_map_ids, mirai:::map_handle(mp)))
  seen <- character()
  withCallingHandlers(r <- text_bar(mp[.progress]), progression = function(c) seen <<- c(seen, c$type))
  expect_identical(r$value, list(1))
  expect_identical(seen, c("initiate", "update"))
})

test_that("on_relay() for a mirai of a reset profile never takes a new profile's task of the same id", {
  daemons(1, relay = TRUE)
  old <- mirai(1)
  old[]
  daemons(0)
  daemons(1, relay = TRUE)
  on.exit(daemons(0))
  stale <- character()
  expect_identical(on_relay(old, function(c) stale <<- c(stale, conditionMessage(c))), old)
  new <- mirai({ message("new task"); 2 })
  expect_identical(mirai:::task_ids(new), mirai:::task_ids(old))
  r <- collect(new[])
  expect_identical(r$value, 2)
  expect_identical(msg_text(r$got), "new task")
  expect_identical(stale, character())
})

test_that("a cluster node's task tells what its relay budget held back, before its value", {
  cl <- make_cluster(1, relay = TRUE)
  on.exit(stop_cluster(cl))
  n <- 3000L
  notes <- character()
  got <- 0L
  v <- withCallingHandlers(parallel::clusterCall(cl, function(n) { for (i in seq_len(n)) message(i); "flooded" }, n),
    message = function(c) {
      if (inherits(c, "miraiCondition")) got <<- got + 1L else notes <<- c(notes, conditionMessage(c))
      invokeRestart("muffleMessage")
    })
  expect_identical(v, list("flooded"))
  expect_length(notes, 1L)
  held_back <- as.numeric(sub("^\\[mirai [0-9]+ \\| [^]]+\\] ([0-9]+) condition.*$", "\\1", notes))
  expect_identical(got + held_back, as.double(n))
})

test_that("on_relay() handlers of tasks that relay nothing do not pile up", {
  daemons(1, relay = TRUE)
  on.exit(daemons(0))
  reg <- function() length(ls(mirai:::.$profiles$default$relay_handlers))
  for (k in 1:300) {
    m <- mirai(k, k = k)
    on_relay(m, function(c) NULL)
    m[]
  }
  expect_lt(reg(), 100L)
})

test_that("future's conditions over a node's relay budget come with the value, and are not counted as dropped", {
  skip_if_not_installed("future")
  skip_if_not_installed("progressr")
  cl <- future_on_relay_cluster()
  n <- 3000L
  count <- 0L
  notes <- character()
  seen <- progressr::make_progression_handler("seen", reporter = list(
    update = function(config, state, progression, ...) count <<- count + 1L
  ), enable = TRUE)
  v <- withCallingHandlers(progressr::with_progress({
    p <- progressr::progressor(steps = n)
    f <- future::future({ for (i in seq_len(n)) p(); "done" }, globals = list(p = p, n = n))
    future::value(f)
  }, handlers = seen), message = function(c) {
    notes <<- c(notes, conditionMessage(c))
    invokeRestart("muffleMessage")
  })
  expect_identical(v, "done")
  expect_identical(count, n)
  expect_identical(notes, character())
  prof <- mirai:::profile_of(attr(cl, "id"))
  expect_identical(.Call(mirai:::C_mirai_host_relay_dropped, prof$host), 0)
})

test_that("a handler's error is raised once the rest of what was taken with it is shown", {
  daemons(2, relay = TRUE)
  on.exit(daemons(0))
  flag <- tempfile()
  gate <- tempfile()
  m <- mirai({
    for (i in 1:3) message("s", i)
    file.create(flag)
    v <- gated(character(), gate)
    message("s4")
    v
  }, flag = flag, gate = gate, gated = gated)
  other <- mirai({ message("other"); 2 })
  got <- character()
  on_relay(m, function(c) {
    got <<- c(got, sub("\n$", "", conditionMessage(c)))
    if (length(got) == 1L) stop("handler failed")
  })
  # No wait (nor event loop) meanwhile: the three arrive for one drain.
  t0 <- Sys.time()
  while (!file.exists(flag) && difftime(Sys.time(), t0, units = "secs") < 30) NULL
  t0 <- Sys.time()
  while (difftime(Sys.time(), t0, units = "secs") < 0.5) NULL
  r <- collect(expect_error(other[], "handler failed"))
  expect_identical(got, c("s1", "s2", "s3"))
  expect_identical(msg_text(r$got), "other")
  file.create(gate)
  expect_identical(m[], "released")
  expect_identical(got, c("s1", "s2", "s3", "s4"))
})

# Sets profile "p" with a task that relays a message and progress, then
# resets "p" before any wait (or event loop) has shown them, and sets it
# again, listening for daemons: none is launched, so that no wait for them
# shows what is left before the caller's first task (which has the old
# task's id) is sent. The old task's id.
reset_with_leftovers <- function() {
  prog <- function(type) structure(class = c("progression", "immediateCondition", "condition"),
                                   list(message = "", call = NULL, type = type,
                                        progressor_uuid = "old", steps = 4, amount = 1))
  daemons(1, relay = TRUE, .compute = "p")
  flag <- tempfile()
  old <- mirai({
    message("old task")
    for (t in c("initiate", "update")) withRestarts(signalCondition(prog(t)), muffleProgression = function(...) NULL)
    file.create(flag)
    Sys.sleep(60)
  }, prog = prog, flag = flag, .compute = "p")
  t0 <- Sys.time()
  while (!file.exists(flag) && difftime(Sys.time(), t0, units = "secs") < 30) NULL
  t0 <- Sys.time()
  while (difftime(Sys.time(), t0, units = "secs") < 0.5) NULL
  unlink(flag)
  # The host holds them, unshown.
  expect_false(.Call(mirai:::C_mirai_host_relay_idle, mirai:::profile_of("p")$host))
  daemons(0, .compute = "p")
  daemons(url = local_url(), relay = TRUE, .compute = "p")
  mirai:::task_ids(old)
}

test_that("a reset profile's unshown conditions reach no handler of a new profile's task of the same id", {
  id <- reset_with_leftovers()
  on.exit(daemons(0, .compute = "p"))
  new <- mirai({ Sys.sleep(0.3); 2 }, .compute = "p")
  expect_identical(mirai:::task_ids(new), id)
  got <- list()
  on_relay(new, function(c) got[[length(got) + 1L]] <<- c)
  launch_local(1, .compute = "p")
  seen <- 0L
  r <- collect(withCallingHandlers(new[], miraiCondition = function(c) seen <<- seen + 1L))
  expect_identical(r$value, 2)
  expect_length(got, 0L)
  expect_length(r$got, 0L)
  expect_identical(seen, 0L)
  # Relay still works for the new profile's tasks.
  r <- collect(mirai({ message("new task"); 3 }, .compute = "p")[])
  expect_identical(msg_text(r$got), "new task")
})

test_that("a reset profile's unshown progress is not counted in a new profile's map of the same ids", {
  id <- reset_with_leftovers()
  on.exit(daemons(0, .compute = "p"))
  mp <- mirai_map(1, function(i) { Sys.sleep(0.3); i }, .compute = "p")
  expect_identical(.Call(mirai:::C_mirai_map_ids, mirai:::map_handle(mp)), id)
  launch_local(1, .compute = "p")
  seen <- 0L
  r <- text_bar(withCallingHandlers(mp[.progress], miraiCondition = function(c) seen <<- seen + 1L))
  expect_identical(r$value, list(1))
  expect_identical(seen, 0L)
  # The bar went straight to its end: no share of the old task's progress.
  expect_identical(r$bar[nzchar(r$bar)], "[ 1 / 1 done ]")
})

test_that("a handler that resets its profile mid-drain hands the rest taken with it to no new task", {
  daemons(1, relay = TRUE, .compute = "p")
  on.exit(daemons(0, .compute = "p"))
  flag <- tempfile()
  old <- mirai({ message("a"); message("b"); file.create(flag); Sys.sleep(60) }, flag = flag, .compute = "p")
  # No wait (nor event loop) meanwhile: both arrive for one drain.
  t0 <- Sys.time()
  while (!file.exists(flag) && difftime(Sys.time(), t0, units = "secs") < 30) NULL
  t0 <- Sys.time()
  while (difftime(Sys.time(), t0, units = "secs") < 0.5) NULL
  unlink(flag)
  seen <- character()
  stale <- character()
  new <- NULL
  on_relay(old, function(c) {
    seen <<- c(seen, conditionMessage(c))
    # "p" set again, listening: its first task has the old one's id.
    daemons(0, .compute = "p")
    daemons(url = local_url(), relay = TRUE, .compute = "p")
    new <<- mirai(2, .compute = "p")
    on_relay(new, function(c) stale <<- c(stale, conditionMessage(c)))
  })
  expect_true(is_error_value(old[]))
  expect_identical(seen, "a\n")
  expect_identical(mirai:::task_ids(new), mirai:::task_ids(old))
  launch_local(1, .compute = "p")
  expect_identical(new[], 2)
  expect_identical(stale, character())
})

test_that("a message from a custom serializer of a task's value does not hang the daemon", {
  # The value is serialized with the daemon's connection held; the relay
  # handler, set around the whole task loop, sees the serializer's message.
  cfg <- serial_config(
    "relayEnv",
    function(x) { message("serializing"); serialize(as.list.environment(x), NULL) },
    function(r) structure(list2env(unserialize(r)), class = "relayEnv")
  )
  daemons(1, relay = TRUE, serial = cfg)
  on.exit(daemons(0))
  m <- mirai({ e <- new.env(); e$a <- 1; class(e) <- "relayEnv"; e }, .timeout = 10000)
  v <- m[]
  expect_s3_class(v, "relayEnv")
  expect_identical(v$a, 1)
  # The daemon goes on.
  expect_identical(mirai(2, .timeout = 10000)[], 2)
})

test_that("a message signalled with no restart of its own takes no other restart the task set", {
  # With relay off the handler goes on after signalling; the relay handler
  # must not take warning()'s muffleWarning, the only 'muffle' restart there.
  task <- function() mirai({
    trail <- character()
    withCallingHandlers({ warning("w"); trail <- c(trail, "body") }, warning = function(w) {
      signalCondition(simpleMessage("from a warning handler\n"))
      trail <<- c(trail, "handler")
    })
    trail
  })[]
  daemons(1)
  off <- task()
  daemons(0)
  daemons(1, relay = TRUE)
  on.exit(daemons(0))
  r <- collect(task())
  expect_identical(off, c("handler", "body"))
  expect_identical(r$value, off)
  expect_identical(msg_text(r$got), "from a warning handler")
})

test_that("a timed-out task's relays that arrive after its value are not shown", {
  # The task runs on until the cancel lands, and what it relayed before
  # may still be on its way: shown after its value, it would be out of
  # order; it is counted as dropped instead.
  daemons(1, relay = TRUE, dispatcher = TRUE)
  on.exit(daemons(0))
  for (k in 1:3) {
    m <- mirai(repeat message("late"), .timeout = 50)
    v <- withCallingHandlers(m[], message = function(c) invokeRestart("muffleMessage"))
    expect_identical(unclass(v), 5L)
    seen_after <- 0L
    withCallingHandlers({
      for (j in 1:3) mirai(Sys.sleep(0.1))[]
    }, message = function(c) {
      seen_after <<- seen_after + 1L
      invokeRestart("muffleMessage")
    })
    expect_identical(seen_after, 0L)
  }
  expect_identical(mirai(1)[], 1)
})

test_that("progress updates over the relay budget add up on the host: the bar ends where the task's did", {
  skip_if_not_installed("progressr")
  daemons(1, relay = TRUE)
  on.exit(daemons(0))
  # Far more updates than the budget lets through (a burst, then 100 a
  # second): those kept back are merged into the next that goes, the rest
  # sent just before the value; none is dropped, and no note is made.
  n <- 5000L
  m <- mirai({ p <- progressr::progressor(steps = n); for (i in seq_len(n)) p(); "done" }, n = n)
  updates <- 0L
  total <- 0
  notes <- character()
  v <- withCallingHandlers(m[], progression = function(c) {
    if (identical(c$type, "update")) {
      updates <<- updates + 1L
      total <<- if (is.numeric(c$step) && length(c$step) == 1L) c$step else total + c$amount
    }
    invokeRestart("muffleProgression")
  }, message = function(c) {
    notes <<- c(notes, conditionMessage(c))
    invokeRestart("muffleMessage")
  })
  expect_identical(v, "done")
  expect_identical(total, as.double(n))
  expect_lt(updates, n)
  expect_length(notes, 0L)
  expect_identical(status()$relay_dropped, 0)
  # Messages over the budget are still dropped, counted and told.
  m <- mirai({ for (i in 1:3000) message("m", i); 1 })
  notes <- character()
  withCallingHandlers(m[], message = function(c) {
    if (!inherits(c, "miraiCondition")) notes <<- c(notes, conditionMessage(c))
    invokeRestart("muffleMessage")
  })
  expect_length(notes, 1L)
  expect_gt(status()$relay_dropped, 0)
})

test_that("a progressor's finish is not shown before its update kept back over the relay budget", {
  skip_if_not_installed("progressr")
  daemons(1, relay = TRUE)
  on.exit(daemons(0))
  # A progressor made in a function finishes as the function returns: over
  # the budget, after the budget refills (the pause), or at once. Either
  # way its last updates, kept back, go first, and no drop is told.
  for (pause in c(0.1, 0)) {
    m <- mirai({
      f <- function() { p <- progressr::progressor(steps = 3000); for (i in 1:3000) p(); Sys.sleep(pause); 1 }
      f()
    }, pause = pause)
    types <- character()
    total <- 0
    notes <- character()
    v <- withCallingHandlers(m[], progression = function(c) {
      types <<- c(types, c$type)
      if (identical(c$type, "update")) total <<- total + c$amount
      invokeRestart("muffleProgression")
    }, message = function(c) {
      notes <<- c(notes, conditionMessage(c))
      invokeRestart("muffleMessage")
    })
    expect_identical(v, 1)
    expect_identical(total, 3000)
    expect_identical(sum(types == "finish"), 1L)
    expect_identical(types[length(types)], "finish")
    expect_length(notes, 0L)
  }
  expect_identical(status()$relay_dropped, 0)
})

test_that("a cluster node's progress updates kept back over the relay budget reach the host before its value", {
  skip_if_not_installed("progressr")
  cl <- make_cluster(1, relay = TRUE)
  on.exit(stop_cluster(cl))
  total <- 0
  notes <- character()
  v <- withCallingHandlers(
    parallel::parLapply(cl, 1:2, function(x) { p <- progressr::progressor(steps = 3000); for (i in 1:3000) p(); x }),
    progression = function(c) {
      if (identical(c$type, "update")) total <<- total + c$amount
      invokeRestart("muffleProgression")
    }, message = function(c) {
      notes <<- c(notes, conditionMessage(c))
      invokeRestart("muffleMessage")
    })
  expect_identical(v, list(1L, 2L))
  expect_identical(total, 6000)
  expect_length(notes, 0L)
})

test_that("a handler of a relayed condition that uses the same cluster gets its own results, never the waiting call's", {
  cl <- make_cluster(2, relay = TRUE)
  on.exit(stop_cluster(cl))
  f <- function(i) { message("note ", i); Sys.sleep(0.5); i * 10 }
  # The message handler stops; the error's calling handler uses the cluster.
  got <- NULL
  r <- tryCatch(withCallingHandlers(
    parallel::parLapply(cl, 1:2, f),
    message = function(m) stop("stopped by the message handler"),
    error = function(e) got <<- unlist(parallel::parLapply(cl, 1:2, function(i) -i))
  ), error = function(e) conditionMessage(e))
  expect_identical(r, "stopped by the message handler")
  expect_identical(got, c(-1L, -2L))
  # The message handler uses the cluster itself and returns: it gets its
  # own results, and the call it interrupted fails instead of returning the
  # handler's (or the handler receiving the call's).
  inner <- list()
  r <- tryCatch(withCallingHandlers(
    parallel::parLapply(cl, 1:2, f),
    message = function(m) {
      inner[[length(inner) + 1L]] <<- unlist(parallel::parLapply(cl, 1:2, function(i) -i))
      invokeRestart("muffleMessage")
    }
  ), error = function(e) "failed")
  expect_identical(r, "failed")
  expect_true(length(inner) >= 1L)
  for (x in inner) expect_identical(x, c(-1L, -2L))
  # The handler only sends (a task it receives later): the interrupted call
  # fails, rather than taking the handler's task's result for its own.
  sent <- FALSE
  r <- tryCatch(withCallingHandlers(
    parallel::parLapply(cl, 1:2, f),
    message = function(m) {
      if (!sent) {
        sent <<- TRUE
        parallel:::sendCall(cl[[1L]], function() 999, list())
      }
      invokeRestart("muffleMessage")
    }
  ), error = function(e) conditionMessage(e))
  expect_match(r, "this call's tasks were dropped while it waited", fixed = TRUE)
  expect_identical(unlist(parallel::parLapply(cl, 1:4, function(i) -i)), -(1:4))
})

test_that("a relayed message's handler that waits on another cluster under a time limit: the error's handler using the first cluster gets its own results", {
  # The handler's wait on `b` runs out of time; the time limit's error
  # reaches a calling handler around the call on `a`, which uses `a` while
  # that call still waits. Each wait in progress keeps its own hook (a stack
  # of them): `b`'s ran first and must not hide `a`'s.
  a <- make_cluster(2, relay = TRUE)
  b <- make_cluster(1)
  on.exit({ stop_cluster(a); stop_cluster(b) })
  f <- function(i) { message("note ", i); Sys.sleep(1); i * 10 }
  got <- NULL
  r <- tryCatch(withCallingHandlers(
    parallel::parLapply(a, 1:2, f),
    message = function(m) {
      setTimeLimit(elapsed = 0.3, transient = TRUE)
      parallel::parLapply(b, 1, function(i) { Sys.sleep(5); i })
    },
    error = function(e) if (is.null(got)) got <<- unlist(parallel::parLapply(a, 1:2, function(i) -i))
  ), error = function(e) conditionMessage(e))
  setTimeLimit(elapsed = Inf)
  expect_match(r, "elapsed time limit")
  expect_identical(got, c(-1L, -2L))
  # Both clusters are usable afterwards.
  expect_identical(unlist(parallel::parLapply(a, 1:4, function(i) -i)), -(1:4))
  expect_identical(unlist(parallel::parLapply(b, 1:2, function(i) i)), 1:2)
})

test_that("an error a relayed message's handler catches itself, from a mirai's wait, leaves the waiting cluster call alone", {
  # The mirai's wait has no hook of its own; the cluster call's hook belongs
  # to the wait further up, and must not run for an error that never leaves
  # the handler (the call failed with "this call's tasks were dropped").
  daemons(1)
  a <- make_cluster(2, relay = TRUE)
  on.exit({ stop_cluster(a); daemons(0) })
  f <- function(i) { message("note ", i); Sys.sleep(0.5); i * 10 }
  caught <- 0L
  r <- withCallingHandlers(
    parallel::parLapply(a, 1:2, f),
    message = function(m) {
      tryCatch({
        setTimeLimit(elapsed = 0.2, transient = TRUE)
        mirai(Sys.sleep(2))[]
      }, error = function(e) caught <<- caught + 1L)
      setTimeLimit(elapsed = Inf)
      invokeRestart("muffleMessage")
    }
  )
  setTimeLimit(elapsed = Inf)
  expect_gte(caught, 1L)
  expect_identical(unlist(r), c(10, 20))
})
