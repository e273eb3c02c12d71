# Dead peers across a real network cut: TCP keepalive and TCP_USER_TIMEOUT.
#
# Each test runs a host in network namespace A and two daemons in namespace
# B, joined by a veth pair on a private /30 that exists only inside these two
# namespaces (nothing is sent to any other address). Then B's end of the
# link is set down: nothing is closed, no FIN or RST can pass, the peers
# simply vanish for each other, as on a power loss or a network cut. Both
# sides of every connection must notice that by themselves: the daemons
# exit, the host drops the connections and fails the task each was running
# (errorValue 19), and keeps running.
#
# The host's accepted sockets and the daemon's dialed socket run keepalive
# (idle 10 s, probes 5 s apart) and TCP_USER_TIMEOUT = 30 s. On a quiet
# connection (nothing unacknowledged) keepalive probes after 10 s of silence
# and, the user timeout taking the place of the probe count, gives up at the
# first unanswered probe 30 s or more after the peer was last heard from.
# Keepalive does not run while data is unacknowledged: there the user
# timeout alone ends retransmission (or zero-window / local-failure probing)
# 30 s after it began, where the kernel would otherwise retry for about 15
# minutes (net.ipv4.tcp_retries2).
#
# 1. Quiet connections (keepalive): one daemon idle, the other busy with a
#    long task. Asserted: right after the cut every connection is still
#    established, both daemons are alive and the sockets on both sides run a
#    keepalive timer of at most 10 s (the kernel's default would be 2 hours);
#    within 45 s of the cut both daemons exit (the idle one returning from
#    daemon(), the busy one by its own SIGTERM), the host's connection counts
#    drop to 0 and the busy daemon's task resolves to errorValue 19. About
#    30 s.
# 2. Data in flight (user timeout), two cases at once:
#    - reply: the link is cut about 1 s into a daemon's Sys.sleep(6); its
#      result, written some 5 s after the cut, stays unacknowledged on the
#      daemon's socket (ss: Send-Q > 0, timer 'persist' as B has no route
#      left to send it on, or 'on' were it sent and lost; not keepalive).
#      The daemon exits by itself (daemon() returns); the host (whose socket
#      is quiet: keepalive) drops the connection, the task resolving to
#      errorValue 19.
#    - late: the host has an idle daemon, the link is cut, then the host
#      submits a task, which its dispatcher writes to that daemon: the task
#      frame stays unacknowledged on the host's socket (Send-Q > 0,
#      retransmit timer 'on'). The host drops the connection and the task
#      resolves to errorValue 19 (a dispatcher fails a daemon's in-flight
#      task when the daemon is lost, it never requeues it); the daemon (its
#      socket quiet: keepalive) exits by itself (daemon() returns).
#    All within 50 s of the cut (about 35 s for the reply daemon, 30 s for
#    the rest).
#
# The whole file takes about 80 s.

skip_on_cran()

# Runs a command; list(ok, out) with stdout and stderr together.
ka_run <- function(cmd, args) {
  r <- tryCatch(processx::run(cmd, args, error_on_status = FALSE, stderr_to_stdout = TRUE, timeout = 20),
                error = function(e) list(status = -1L, stdout = conditionMessage(e)))
  list(ok = identical(r$status, 0L), out = trimws(r$stdout))
}

# NULL if namespaces can be used here, else why not.
ka_unusable <- function() {
  if (Sys.info()[["sysname"]] != "Linux") return("network namespaces need Linux")
  if (!requireNamespace("processx", quietly = TRUE)) return("package processx is not installed")
  uid <- ka_run("id", "-u")
  if (!uid$ok || uid$out != "0") return(sprintf("network namespaces need root; running as uid %s", uid$out))
  if (!nzchar(Sys.which("ip"))) return("`ip` (iproute2) is not on the PATH")
  if (!nzchar(Sys.which("ss"))) return("`ss` (iproute2) is not on the PATH")
  NULL
}

# The test network: namespaces A and B (unique names) joined by a veth pair,
# A at ipA, B at ipB. Nothing exists until create(), which skips the test if
# the network cannot be set up. Register cleanup() with on.exit() before
# calling create(): it kills every process spawn() started and deletes the
# namespaces (and with them the veth pair), whatever happened.
ka_net <- function() {
  net <- new.env()
  sfx <- paste0(sprintf("%04x", Sys.getpid() %% 65536L), sprintf("%04x", sample.int(65536L, 1L) - 1L))
  net$A <- paste0("mirai-ka-a-", sfx)
  net$B <- paste0("mirai-ka-b-", sfx)
  net$vethA <- paste0("mka", sfx)
  net$vethB <- paste0("mkb", sfx)
  net$ipA <- "10.254.254.1"
  net$ipB <- "10.254.254.2"
  net$made <- character()
  net$procs <- list()
  net$files <- character()
  net$cleanup <- function() {
    for (p in net$procs) try(p$kill(), silent = TRUE)
    # Deleting a namespace also deletes the veth end inside it, and so the pair.
    for (ns in rev(net$made)) ka_run("ip", c("netns", "del", ns))
    net$made <- character()
    unlink(net$files)
  }
  net$create <- function() {
    setup <- function(...) {
      args <- c(...)
      r <- ka_run("ip", args)
      if (!r$ok) skip(sprintf("cannot set up the test network: `ip %s` failed: %s", paste(args, collapse = " "), r$out))
    }
    setup("netns", "add", net$A)
    net$made <- c(net$made, net$A)
    setup("netns", "add", net$B)
    net$made <- c(net$made, net$B)
    # The pair is made inside A, its other end placed straight into B.
    setup("-n", net$A, "link", "add", net$vethA, "type", "veth", "peer", "name", net$vethB, "netns", net$B)
    setup("-n", net$A, "addr", "add", paste0(net$ipA, "/30"), "dev", net$vethA)
    setup("-n", net$B, "addr", "add", paste0(net$ipB, "/30"), "dev", net$vethB)
    for (ns in c(net$A, net$B)) setup("-n", ns, "link", "set", "lo", "up")
    setup("-n", net$A, "link", "set", net$vethA, "up")
    setup("-n", net$B, "link", "set", net$vethB, "up")
  }
  # Rscript with these arguments inside namespace ns (`ip netns exec` execs
  # it, so the process is Rscript itself); stdout and stderr to a pipe.
  net$spawn <- function(ns, ...) {
    p <- processx::process$new("ip", c("netns", "exec", ns, file.path(R.home("bin"), "Rscript"), ...),
                               stdout = "|", stderr = "2>&1",
                               env = c("current", R_LIBS = paste(.libPaths(), collapse = ":")))
    net$procs[[length(net$procs) + 1L]] <- p
    p
  }
  # A daemon in B dialing the host in A at port.
  net$daemon <- function(port) net$spawn(net$B, "-e", sprintf("mirai::daemon('tcp://%s:%d')", net$ipA, port))
  # The cut: B's end of the link goes down. Nothing is closed or killed.
  net$cut <- function() ka_run("ip", c("-n", net$B, "link", "set", net$vethB, "down"))
  net
}

# Runs an R script (lines, then args) in namespace A. The script prints
# READY once set up, then a line 'STATE ...' every so often; poll() reads
# what it printed and returns its last STATE line (without 'STATE ').
ka_host <- function(net, lines, ...) {
  h <- new.env()
  script <- tempfile(fileext = ".R")
  net$files <- c(net$files, script)
  writeLines(lines, script)
  h$p <- net$spawn(net$A, script, ...)
  h$out <- ""
  h$state <- ""
  h$poll <- function() {
    if (h$p$is_alive() || h$p$is_incomplete_output()) h$out <- paste0(h$out, h$p$read_output())
    st <- regmatches(h$out, gregexpr("STATE [^\n]*\n", h$out))[[1L]]
    if (length(st)) h$state <- sub("^STATE ", "", trimws(st[[length(st)]]))
    h$state
  }
  h$ready <- function(timeout = 30) {
    wait_until(function() { h$poll(); grepl("READY", h$out) || !h$p$is_alive() }, timeout)
    grepl("READY", h$out)
  }
  h
}

# The established TCP connections in namespace ns with `port` at either end,
# from `ss -tnoi`: a list with, per connection, its Send-Q (bytes not yet
# acknowledged, or not yet sent), its timer, e.g. "keepalive,8.1sec,0",
# "on,196ms,2" (retransmission) or "persist,1.6sec,5" (probing), "" for none,
# and the full line. Attribute `ss`: all ss printed.
ka_sockets <- function(ns, port) {
  r <- ka_run("ip", c("netns", "exec", ns, "ss", "-H", "-tnoi", "state", "established"))
  lines <- strsplit(r$out, "\n", fixed = TRUE)[[1L]]
  # -i puts each connection's details on a line of its own, indented.
  conns <- character()
  for (l in lines) {
    if (grepl("^\\s", l) && length(conns)) conns[[length(conns)]] <- paste(conns[[length(conns)]], trimws(l))
    else conns <- c(conns, l)
  }
  conns <- conns[grepl(sprintf(":%d\\s", port), paste0(conns, " "))]
  out <- lapply(conns, function(l) {
    f <- strsplit(trimws(l), "\\s+")[[1L]]
    tm <- regmatches(l, regexpr("timer:\\([^)]*\\)", l))
    list(sendq = as.integer(f[[2L]]),
         timer = if (length(tm)) sub("^timer:\\((.*)\\)$", "\\1", tm) else "",
         line = l)
  })
  structure(out, ss = r$out)
}

# The timers ss shows for those connections, one string per connection;
# attribute n: how many connections there are, ss: all ss printed.
ka_timers <- function(ns, port) {
  s <- ka_sockets(ns, port)
  tm <- vapply(s, function(x) x$timer, "")
  structure(tm[nzchar(tm)], ss = attr(s, "ss"), n = length(s))
}

# Seconds until the next keepalive probe, from a timer string; NA if the
# timer is not a keepalive one. ss writes times as "[Mmin][S(sec|.)][mmmms]":
# "8.308ms" is 8.308 s, "196ms" 0.196 s, "26sec", "119min" (the kernel's
# default keepalive time of 2 hours), "" when due now.
ka_seconds <- function(timer) {
  m <- regmatches(timer, regexec("^keepalive,(([0-9]+)min)?(([0-9]+)(sec|\\.))?(([0-9]+)ms)?,", timer))[[1L]]
  if (!length(m)) return(NA_real_)
  n <- function(x) if (nzchar(x)) as.numeric(x) else 0
  60 * n(m[[3L]]) + n(m[[5L]]) + n(m[[8L]]) / 1000
}

ka_since <- function(t) as.numeric(difftime(Sys.time(), t, units = "secs"))
ka_status <- function(p) if (p$is_alive()) NA_integer_ else p$get_exit_status()

test_that("a cut network ends idle and busy daemons and frees the host within 45 s (keepalive)", {
  reason <- ka_unusable()
  if (!is.null(reason)) skip(reason)
  net <- ka_net()
  on.exit(net$cleanup(), add = TRUE)
  net$create()
  ports <- c(idle = 45551L, busy = 45552L)

  # The host: two profiles, one per daemon; once the busy profile has its
  # daemon it sends it a long task. It prints its state every 0.2 s, and
  # ends by itself after 150 s at the latest.
  host <- ka_host(net, c(
    "library(mirai)",
    "a <- commandArgs(TRUE)",
    "daemons(url = sprintf('tcp://%s:%s', a[[1L]], a[[2L]]), auth = FALSE, .compute = 'idle')",
    "daemons(url = sprintf('tcp://%s:%s', a[[1L]], a[[3L]]), auth = FALSE, .compute = 'busy')",
    "cat('READY\\n'); flush(stdout())",
    "m <- NULL",
    "end <- Sys.time() + 150",
    "while (Sys.time() < end) {",
    "  ci <- status(.compute = 'idle')$connections",
    "  sb <- status(.compute = 'busy')",
    "  if (is.null(m) && sb$connections == 1L) m <- mirai(Sys.sleep(120), .compute = 'busy')",
    "  task <- if (is.null(m)) 'none' else if (unresolved(m)) 'pending'",
    "          else if (is_error_value(m$data)) paste('errorValue', as.integer(m$data)) else 'value'",
    "  cat(sprintf('STATE idle=%d busy=%d executing=%d task=%s\\n', ci, sb$connections,",
    "              sb$mirai[['executing']], task))",
    "  flush(stdout())",
    "  Sys.sleep(0.2)",
    "}"
  ), net$ipA, ports[["idle"]], ports[["busy"]])
  ready <- host$ready()
  expect_true(ready, info = host$out)
  if (!ready) return()

  daemons_b <- lapply(ports, net$daemon)
  connected <- wait_until(function() grepl("idle=1 busy=1 executing=1 task=pending", host$poll()), 30)
  expect_true(connected, info = paste(host$out, vapply(daemons_b, function(p) p$read_output(), ""), sep = "\n"))
  if (!connected) return()

  # Everything in flight is acknowledged well before the cut (keepalive only
  # runs on a connection with no unacknowledged data).
  Sys.sleep(1)
  cut_at <- Sys.time()
  cut <- net$cut()
  expect_true(cut$ok, info = cut$out)
  Sys.sleep(1)

  # The cut itself ended nothing: only keepalive can tell the peers apart
  # from quiet ones now, and it runs on all four sockets, at most 10 s from
  # its next probe (the kernel's default, unset, is 2 hours).
  expect_identical(host$poll(), "idle=1 busy=1 executing=1 task=pending")
  for (d in daemons_b) expect_true(d$is_alive())
  timers <- character()
  for (ns in c(net$A, net$B)) {
    for (port in ports) {
      tm <- ka_timers(ns, port)
      what <- sprintf("ss -tnoi in %s, port %d:\n%s", ns, port, attr(tm, "ss"))
      expect_identical(attr(tm, "n"), 1L, info = what)
      expect_length(tm, 1L)
      secs <- vapply(tm, ka_seconds, 0)
      timers <- c(timers, sprintf("%s:%d %s", if (ns == net$A) "A" else "B", port, tm))
      expect_true(length(secs) == 1L && !is.na(secs) && secs <= 10, info = what)
    }
  }

  # Within 45 s of the cut (keepalive: at most 10 s to the first probe, then
  # the first unanswered one 30 s after the peer was last heard from): the
  # daemons are gone, the host dropped both connections and failed the
  # running task.
  exited <- rep(NA_real_, 2L)
  freed <- NA_real_
  done <- wait_until(function() {
    el <- ka_since(cut_at)
    for (i in 1:2) if (is.na(exited[[i]]) && !daemons_b[[i]]$is_alive()) exited[[i]] <<- el
    if (is.na(freed) && host$poll() == "idle=0 busy=0 executing=0 task=errorValue 19") freed <<- el
    !anyNA(exited) && !is.na(freed)
  }, 45 - ka_since(cut_at))
  cat(sprintf("\nkeepalive timers 1 s after the cut: %s", paste(timers, collapse = "; ")))
  cat(sprintf("\nkeepalive: idle daemon exited %.1f s (status %d), busy daemon %.1f s (status %d), host freed %.1f s after the cut\n",
              exited[[1L]], ka_status(daemons_b[[1L]]), exited[[2L]], ka_status(daemons_b[[2L]]), freed))
  expect_true(done, info = sprintf("host: %s", host$state))
  expect_false(is.na(exited[[1L]]), label = "idle daemon exited")
  expect_false(is.na(exited[[2L]]), label = "busy daemon exited")
  # The idle daemon's daemon() returned (exit status 0); the busy one was
  # ended mid-task by its watcher's SIGTERM (autoexit = TRUE).
  expect_identical(ka_status(daemons_b[[1L]]), 0L)
  expect_identical(ka_status(daemons_b[[2L]]), -15L)
  expect_identical(host$state, "idle=0 busy=0 executing=0 task=errorValue 19")
  expect_true(host$p$is_alive())
})

test_that("a cut network with a reply or a task in flight ends the daemons and frees the host within 50 s (user timeout)", {
  reason <- ka_unusable()
  if (!is.null(reason)) skip(reason)
  net <- ka_net()
  on.exit(net$cleanup(), add = TRUE)
  net$create()
  ports <- c(reply = 45553L, late = 45554L)
  # Created by the test right after the cut: the host then submits the late task.
  flag <- tempfile()
  net$files <- c(net$files, flag)

  # The host: profile 'reply' sends its daemon Sys.sleep(6) once both
  # daemons are connected; profile 'late' sends its (idle) daemon a task
  # once `flag` exists. It prints its state every 0.2 s, and ends by itself
  # after 150 s at the latest.
  host <- ka_host(net, c(
    "library(mirai)",
    "a <- commandArgs(TRUE)",
    "daemons(url = sprintf('tcp://%s:%s', a[[1L]], a[[2L]]), auth = FALSE, .compute = 'reply')",
    "daemons(url = sprintf('tcp://%s:%s', a[[1L]], a[[3L]]), auth = FALSE, .compute = 'late')",
    "cat('READY\\n'); flush(stdout())",
    "task <- function(m) {",
    "  if (is.null(m)) 'none' else if (unresolved(m)) 'pending'",
    "  else if (is_error_value(m$data)) paste('errorValue', as.integer(m$data)) else 'value'",
    "}",
    "m1 <- NULL",
    "m2 <- NULL",
    "end <- Sys.time() + 150",
    "while (Sys.time() < end) {",
    "  if (is.null(m2) && file.exists(a[[4L]])) m2 <- mirai(TRUE, .compute = 'late')",
    "  sr <- status(.compute = 'reply')",
    "  sl <- status(.compute = 'late')",
    "  if (is.null(m1) && sr$connections == 1L && sl$connections == 1L) m1 <- mirai(Sys.sleep(6), .compute = 'reply')",
    "  cat(sprintf('STATE reply=%d executing=%d task=%s late=%d executing=%d task=%s\\n',",
    "              sr$connections, sr$mirai[['executing']], task(m1),",
    "              sl$connections, sl$mirai[['executing']], task(m2)))",
    "  flush(stdout())",
    "  Sys.sleep(0.2)",
    "}"
  ), net$ipA, ports[["reply"]], ports[["late"]], flag)
  ready <- host$ready()
  expect_true(ready, info = host$out)
  if (!ready) return()

  daemons_b <- lapply(ports, net$daemon)
  running <- "reply=1 executing=1 task=pending late=1 executing=0 task=none"
  connected <- wait_until(function() host$poll() == running, 30)
  expect_true(connected, info = paste(host$out, vapply(daemons_b, function(p) p$read_output(), ""), sep = "\n"))
  if (!connected) return()

  # About 1 s into Sys.sleep(6), everything sent so far acknowledged: the cut,
  # then the late task.
  Sys.sleep(1)
  cut_at <- Sys.time()
  cut <- net$cut()
  expect_true(cut$ok, info = cut$out)
  file.create(flag)
  sent <- wait_until(function() grepl("late=1 executing=1 task=pending$", host$poll()), 5)
  expect_true(sent, info = host$state)
  Sys.sleep(1)

  # Nothing ended yet. The late task sits unacknowledged on the host's socket,
  # under retransmission (keepalive cannot run there); the other three
  # sockets are quiet, with a keepalive timer.
  expect_identical(host$poll(), "reply=1 executing=1 task=pending late=1 executing=1 task=pending")
  for (d in daemons_b) expect_true(d$is_alive())
  evidence <- character()
  look <- function(ns, port) {
    s <- ka_sockets(ns, port)
    what <- sprintf("%.1f s after the cut, ss -tnoi in %s, port %d:\n%s", ka_since(cut_at), ns, port, attr(s, "ss"))
    expect_length(s, 1L)
    if (length(s) != 1L) return(list(sendq = NA_integer_, timer = "", what = what))
    # Send-Q, the timer and what -i tells of unsent and unacknowledged data.
    info <- regmatches(s[[1L]]$line, gregexpr("\\b(backoff|unacked|lost|retrans|notsent):[^ ]+", s[[1L]]$line))[[1L]]
    evidence <<- c(evidence, sprintf("%s:%d at %.1f s: Send-Q %d timer:(%s) %s", if (ns == net$A) "A" else "B", port,
                                     ka_since(cut_at), s[[1L]]$sendq, s[[1L]]$timer, paste(info, collapse = " ")))
    c(s[[1L]], what = what)
  }
  s <- look(net$A, ports[["late"]])
  expect_true(isTRUE(s$sendq > 0L) && startsWith(s$timer, "on,"), info = s$what)
  for (x in list(look(net$A, ports[["reply"]]), look(net$B, ports[["reply"]]), look(net$B, ports[["late"]]))) {
    expect_identical(x$sendq, 0L, info = x$what)
    expect_true(startsWith(x$timer, "keepalive,"), info = x$what)
  }

  # Sys.sleep(6) ends some 5 s after the cut: the daemon's reply then sits
  # unacknowledged on its socket. The link being down on B's side, it never
  # leaves: B probes (timer 'persist'); were it sent and lost it would be
  # retransmitted ('on'). Either way, not keepalive.
  stuck <- wait_until(function() isTRUE(ka_sockets(net$B, ports[["reply"]])[[1L]]$sendq > 0L), 12 - ka_since(cut_at))
  s <- look(net$B, ports[["reply"]])
  expect_true(stuck, info = s$what)
  expect_true(isTRUE(s$sendq > 0L) && grepl("^(on|persist),", s$timer), info = s$what)
  expect_true(daemons_b[[1L]]$is_alive())
  expect_match(host$poll(), "^reply=1 executing=1 task=pending ")

  # Within 50 s of the cut (the user timeout: 30 s after the reply or the
  # task was first sent, or after the peer was last heard from): both daemons
  # are gone, the host dropped both connections and failed both tasks.
  exited <- c(reply = NA_real_, late = NA_real_)
  freed <- c(reply = NA_real_, late = NA_real_)
  done <- wait_until(function() {
    el <- ka_since(cut_at)
    for (i in 1:2) if (is.na(exited[[i]]) && !daemons_b[[i]]$is_alive()) exited[[i]] <<- el
    st <- host$poll()
    if (is.na(freed[["reply"]]) && startsWith(st, "reply=0 executing=0 task=errorValue 19 ")) freed[["reply"]] <<- el
    if (is.na(freed[["late"]]) && endsWith(st, " late=0 executing=0 task=errorValue 19")) freed[["late"]] <<- el
    !anyNA(exited) && !anyNA(freed)
  }, 50 - ka_since(cut_at))
  cat(sprintf("\nin flight after the cut: %s", paste(evidence, collapse = "\n  ")))
  cat(sprintf("\nuser timeout: reply daemon exited %.1f s (status %d), late daemon %.1f s (status %d); host freed reply %.1f s, late %.1f s after the cut\n",
              exited[["reply"]], ka_status(daemons_b[[1L]]), exited[["late"]], ka_status(daemons_b[[2L]]),
              freed[["reply"]], freed[["late"]]))
  expect_true(done, info = sprintf("host: %s", host$state))
  expect_false(is.na(exited[["reply"]]), label = "reply daemon exited")
  expect_false(is.na(exited[["late"]]), label = "late daemon exited")
  # Both daemon() calls returned (exit status 0): the reply daemon had
  # finished its task, the late one never received its own.
  expect_identical(ka_status(daemons_b[[1L]]), 0L)
  expect_identical(ka_status(daemons_b[[2L]]), 0L)
  expect_identical(host$state, "reply=0 executing=0 task=errorValue 19 late=0 executing=0 task=errorValue 19")
  expect_true(host$p$is_alive())
})
