# Hostile peers at a host's TCP listener, spoken to with base R sockets.
#
# Wire: each side opens with the SP header; messages then go as frames (on
# TCP an 8-byte big-endian length, then the body). A body starts with the
# pair1 hop count (00 00 00 01), then the bincode envelope (variant index as
# a varint; Hello = 0 with version u32, a 32-byte nonce, a 32-byte HMAC, pid
# u32; Init = 1; Refused = 2 with a string; Challenge = 7 with version u32 and
# a 32-byte nonce; Welcome = 8 with an optional 32-byte HMAC). On accept the
# host sends its SP header and a Challenge; a daemon answers with its Hello;
# the host then sends its Welcome and the Init. See rust/src/wire/frame.rs,
# rust/src/wire/proto.rs and rust/src/wire/auth.rs.

sp_header <- as.raw(c(0x00, 0x53, 0x50, 0x00, 0x00, 0x11, 0x00, 0x00))
hop <- as.raw(c(0x00, 0x00, 0x00, 0x01))

# `n` (a double, exact below 2^53 and for powers of two) as `k` bytes.
le_bytes <- function(n, k) {
  r <- raw(k)
  for (i in seq_len(k)) {
    r[i] <- as.raw(n %% 256)
    n <- n %/% 256
  }
  r
}
be_bytes <- function(n, k = 8L) rev(le_bytes(n, k))

# bincode's varint: < 251 one byte, else a marker and a little-endian integer.
varint <- function(n) {
  if (n < 251) as.raw(n)
  else if (n < 2^16) c(as.raw(0xfb), le_bytes(n, 2L))
  else if (n < 2^32) c(as.raw(0xfc), le_bytes(n, 4L))
  else c(as.raw(0xfd), le_bytes(n, 8L))
}

# A TCP frame; `len` is the length claimed, whatever follows.
tcp_frame <- function(body, len = length(body)) c(if (is.raw(len)) len else be_bytes(len), body)

protocol_version <- as.integer(mirai:::limit("protocol_version"))

hello_body <- function(mac = raw(32L), version = protocol_version, pid = 1, nonce = raw(32L)) {
  c(hop, varint(0), varint(version), nonce, mac, varint(pid))
}

# The attack of the bug report, on the envelope's one string field (it was
# a Hello's secret before the challenge-response handshake): a message whose
# string claims 2^62 bytes.
huge_string_message <- function() c(hop, varint(2), varint(2^62), charToRaw("abc"))

tcp_port <- function() as.integer(sub("^.*:", "", status()$daemons))

peer <- function(port, timeout = 10) {
  socketConnection("127.0.0.1", port, blocking = TRUE, open = "r+b", timeout = timeout)
}

# Writes, tolerating a host that has already hung up (EPIPE / reset).
send_bytes <- function(con, bytes) {
  tryCatch({ writeBin(bytes, con); flush(con); TRUE }, error = function(e) FALSE, warning = function(w) FALSE)
}

# Reads exactly `n` bytes (fewer at end of stream or on timeout).
read_bytes <- function(con, n) {
  tryCatch(readBin(con, "raw", n), error = function(e) raw(0), warning = function(w) raw(0))
}

# Reads until end of stream. TRUE if the host closed the connection within
# `within` seconds (a read that times out takes the connection's full
# timeout, so `within` must be below it).
closed_by_host <- function(con, within) {
  t0 <- Sys.time()
  repeat {
    x <- read_bytes(con, 65536L)
    if (!length(x)) break
  }
  as.numeric(difftime(Sys.time(), t0, units = "secs")) < within
}

# TRUE if nothing, not even an end of stream, is waiting to be read.
still_open <- function(con) !socketSelect(list(con), timeout = 0)

# Reads one TCP frame; returns its body.
read_frame <- function(con) {
  len <- sum(as.numeric(read_bytes(con, 8L)) * 256^(7:0))
  read_bytes(con, len)
}

# The peer's side of a handshake with a host that has `auth = FALSE`: the
# host's SP header and Challenge, then a Hello (any MAC), then the host's
# Welcome (with no proof: it has no secret) and the Init. Returns the Init
# body.
handshake <- function(con) {
  send_bytes(con, sp_header)
  stopifnot(identical(read_bytes(con, 8L), sp_header))
  challenge <- read_frame(con)
  stopifnot(identical(challenge[5:6], as.raw(c(7, protocol_version))), length(challenge) == 38L)
  send_bytes(con, tcp_frame(hello_body()))
  welcome <- read_frame(con)
  stopifnot(identical(welcome, c(hop, as.raw(c(8, 0)))))
  read_frame(con)
}

wait_refused <- function(n, timeout = 10) wait_until(function() status()$refused >= n, timeout)

vm_rss_mb <- function() {
  line <- grep("^VmRSS:", readLines("/proc/self/status"), value = TRUE)
  as.numeric(gsub("[^0-9]", "", line)) / 1024
}

# The host still serves its own daemons: a daemon launched now connects and
# evaluates a mirai (the timeout turns a hang into a failure).
expect_serves <- function(launch = TRUE) {
  if (launch) launch_local(1)
  m <- mirai(x * 2, x = 21, .timeout = 20000)
  expect_identical(m[], 42)
}

test_that("a peer that sends the SP header and nothing more is dropped at the Hello deadline", {
  daemons(url = "tcp://127.0.0.1:0")
  on.exit(daemons(0))
  con <- peer(tcp_port(), timeout = 15)
  on.exit(close(con), add = TRUE, after = FALSE)
  t0 <- Sys.time()
  expect_true(send_bytes(con, sp_header))
  expect_identical(read_bytes(con, 8L), sp_header)
  # Its own daemons are served meanwhile.
  expect_serves()
  expect_identical(status()$refused, 0L)
  expect_true(closed_by_host(con, within = 14))
  expect_gte(as.numeric(difftime(Sys.time(), t0, units = "secs")), 4.5)
  expect_true(wait_refused(1L))
  expect_identical(status()$refused, 1L)
  expect_identical(status()$connections, 1L)
  expect_serves(launch = FALSE)
})

test_that("a peer that does not speak SP is dropped at once", {
  daemons(url = "tcp://127.0.0.1:0")
  on.exit(daemons(0))
  for (bytes in list(charToRaw("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), as.raw(0:255),
                     replace(sp_header, 6L, as.raw(0x10)))) {  # pair0, not pair1
    con <- peer(tcp_port())
    send_bytes(con, bytes)
    expect_true(closed_by_host(con, within = 5))
    close(con)
  }
  expect_true(wait_refused(3L))
  expect_identical(status()$refused, 3L)
  expect_serves()
})

test_that("a first frame claiming 2^62 or 2^64-1 bytes is refused at once, without allocating", {
  daemons(url = "tcp://127.0.0.1:0")
  on.exit(daemons(0))
  rss <- vm_rss_mb()
  for (len in list(be_bytes(2^62), as.raw(rep(0xff, 8L)), be_bytes(2^40), be_bytes(5000))) {
    con <- peer(tcp_port())
    send_bytes(con, c(sp_header, tcp_frame(hop, len = len)))
    expect_true(closed_by_host(con, within = 5))
    close(con)
  }
  expect_true(wait_refused(4L))
  expect_identical(status()$refused, 4L)
  expect_lt(vm_rss_mb() - rss, 200)
  expect_true(daemons_set())  # the session lives on
  expect_serves()
})

test_that("a first message whose string claims 2^62 bytes is refused, not allocated (the bug report's attack)", {
  daemons(url = "tcp://127.0.0.1:0")
  on.exit(daemons(0))
  body <- huge_string_message()
  for (i in 1:2) {
    con <- peer(tcp_port())
    send_bytes(con, c(sp_header, tcp_frame(body)))
    expect_true(closed_by_host(con, within = 5))
    close(con)
  }
  # The same with 2^64-1, and with the length field cut short.
  for (body in list(c(hop, as.raw(c(2, 0xfd)), as.raw(rep(0xff, 8L))), c(hop, as.raw(c(2, 0xfd, 0, 0))))) {
    con <- peer(tcp_port())
    send_bytes(con, c(sp_header, tcp_frame(body)))
    expect_true(closed_by_host(con, within = 5))
    close(con)
  }
  expect_true(wait_refused(4L))
  expect_identical(status()$refused, 4L)
  expect_true(daemons_set())
  expect_serves()
})

test_that("the bug report's attack leaves a host R process alive and serving", {
  skip_if_not_installed("processx")
  dir <- tempfile()
  dir.create(dir)
  script <- file.path(dir, "host.R")
  writeLines(c(
    "library(mirai)",
    "daemons(url = 'tcp://127.0.0.1:0')",
    sprintf("writeLines(status()$daemons, '%s')", file.path(dir, "url")),
    sprintf("while (!file.exists('%s')) Sys.sleep(0.05)", file.path(dir, "go")),
    "launch_local(1)",
    "cat('value', mirai(6 * 7, .timeout = 20000)[], 'refused', status()$refused, '\\n')",
    "daemons(0)"
  ), script)
  p <- processx::process$new(file.path(R.home("bin"), "Rscript"), script, stdout = "|", stderr = "2>&1",
                             env = c("current", R_LIBS = paste(.libPaths(), collapse = ":")))
  on.exit(p$kill())
  expect_true(wait_until(function() file.exists(file.path(dir, "url")) && length(readLines(file.path(dir, "url"))), 30))
  port <- as.integer(sub("^.*:", "", readLines(file.path(dir, "url"))))
  for (bytes in list(c(sp_header, tcp_frame(huge_string_message())), c(sp_header, be_bytes(2^62)))) {
    con <- peer(port)
    send_bytes(con, bytes)
    expect_true(closed_by_host(con, within = 5))
    close(con)
  }
  expect_true(p$is_alive())
  file.create(file.path(dir, "go"))
  out <- ""
  expect_true(wait_until(function() { out <<- paste0(out, p$read_output()); grepl("\n", out) }, 30))
  expect_match(out, "value 42 refused 2")
  p$wait(10000)
  expect_identical(p$get_exit_status(), 0L)
})

test_that("after the handshake, a frame claiming more than mirai.max_message closes the connection", {
  old <- options(mirai.max_message = 2^30)
  on.exit(options(old))
  daemons(url = "tcp://127.0.0.1:0", auth = FALSE)
  on.exit(daemons(0), add = TRUE)
  rss <- vm_rss_mb()
  con <- peer(tcp_port())
  init <- handshake(con)
  expect_identical(init[1:4], hop)
  expect_identical(init[[5L]], as.raw(1L))  # Init
  expect_true(wait_until(function() status()$connections == 1L))
  expect_identical(status()$refused, 0L)
  send_bytes(con, c(be_bytes(2^39), hop, as.raw(c(4, 1, 0)), as.raw(rep(7L, 100L))))
  expect_true(closed_by_host(con, within = 5))
  close(con)
  expect_true(wait_refused(1L))
  expect_identical(status()$refused, 1L)
  expect_identical(status()$connections, 0L)
  expect_lt(vm_rss_mb() - rss, 200)
  expect_serves()
})

test_that("after the handshake, a claim under the cap costs only the bytes that arrive", {
  skip_if_not(file.exists("/proc/self/status"))
  daemons(url = "tcp://127.0.0.1:0", auth = FALSE)
  on.exit(daemons(0))
  rss <- vm_rss_mb()
  con <- peer(tcp_port(), timeout = 2)
  handshake(con)
  expect_true(wait_until(function() status()$connections == 1L))
  # 2^39 bytes claimed (under the default cap of 2^40), 8 MB sent.
  expect_true(send_bytes(con, c(be_bytes(2^39), hop, as.raw(c(4, 1, 0)), as.raw(rep(7L, 8e6)))))
  Sys.sleep(0.5)
  expect_lt(vm_rss_mb() - rss, 200)
  # Within the cap the host waits for the rest: the peer is still connected.
  expect_true(still_open(con))
  expect_identical(status()$connections, 1L)
  close(con)
  # A daemon that hangs up is not a refusal.
  expect_true(wait_until(function() status()$connections == 0L))
  expect_identical(status()$refused, 0L)
  expect_lt(vm_rss_mb() - rss, 200)
  expect_serves()
})

test_that("200 hostile peers in a row are all refused and the host keeps serving", {
  daemons(url = "tcp://127.0.0.1:0")
  on.exit(daemons(0))
  port <- tcp_port()
  rss <- vm_rss_mb()
  kinds <- list(
    garbage = c(as.raw(c(0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03)), charToRaw("TLS")),
    huge62 = c(sp_header, be_bytes(2^62)),
    huge64 = c(sp_header, as.raw(rep(0xff, 8L))),
    huge_string = c(sp_header, tcp_frame(huge_string_message())),
    over_4k = c(sp_header, tcp_frame(as.raw(rep(1L, 100L)), len = 5000)),
    wrong_mac = c(sp_header, tcp_frame(hello_body(as.raw(sample(0:255, 32L, TRUE))))),
    zero_mac = c(sp_header, tcp_frame(hello_body())),
    wrong_version = c(sp_header, tcp_frame(hello_body(version = 99))),
    old_protocol = c(sp_header, tcp_frame(c(hop, varint(0), varint(2), varint(6), charToRaw("secret"), varint(1)))),
    not_hello = c(sp_header, tcp_frame(c(hop, as.raw(c(4, 1, 0))))),
    bad_hop = c(sp_header, tcp_frame(c(as.raw(c(0, 0, 1, 0)), hello_body()[-(1:4)]))),
    empty_body = c(sp_header, tcp_frame(raw(0))),
    hangs_up = sp_header
  )
  closed <- logical(200L)
  for (i in seq_len(200L)) {
    kind <- names(kinds)[(i - 1L) %% length(kinds) + 1L]
    con <- peer(port, timeout = 5)
    send_bytes(con, kinds[[kind]])
    # The peer that hangs up mid-handshake closes first; every other kind
    # is closed by the host at once.
    closed[i] <- kind == "hangs_up" || closed_by_host(con, within = 4)
    close(con)
  }
  expect_true(all(closed))
  expect_true(wait_refused(200L))
  expect_identical(status()$refused, 200L)
  expect_identical(status()$connections, 0L)
  expect_lt(vm_rss_mb() - rss, 200)
  expect_serves()
})

test_that("over 64 silent peers: the oldest are dropped at once, and a daemon still gets in", {
  daemons(url = "tcp://127.0.0.1:0")
  on.exit(daemons(0))
  port <- tcp_port()
  t0 <- Sys.time()
  cons <- vector("list", 70L)
  on.exit(for (con in cons) if (!is.null(con)) try(close(con), silent = TRUE), add = TRUE, after = FALSE)
  for (i in seq_along(cons)) {
    cons[[i]] <- peer(port)
    send_bytes(cons[[i]], sp_header)
  }
  # Each gets the SP header and a Challenge.
  for (con in cons) {
    read_bytes(con, 8L)
    read_frame(con)
  }
  # Six over the limit of 64: the six oldest go at once, not at their deadline.
  expect_true(wait_refused(6L, timeout = 3))
  expect_identical(status()$refused, 6L)
  expect_true(all(vapply(cons[1:6], closed_by_host, logical(1L), within = 3)))
  expect_true(all(vapply(cons[7:70], still_open, logical(1L))))
  # A daemon launched now takes the place of the oldest and is served before
  # the silent peers' own deadline (5 s) would have freed any room.
  launch_local(1)
  m <- mirai(x * 2, x = 21, .timeout = 20000)
  expect_identical(m[], 42)
  # Served while the other silent peers still wait for their deadline: only
  # the oldest of them made way.
  expect_identical(status()$refused, 7L)
  expect_true(all(vapply(cons[8:70], still_open, logical(1L))))
  expect_false(still_open(cons[[7L]]))
  expect_true(all(vapply(cons[8:70], still_open, logical(1L))))
  for (i in seq_along(cons)) {
    close(cons[[i]])
    cons[i] <- list(NULL)
  }
  # Each silent peer counts once, however it went: closed here (the daemon
  # child does not inherit these sockets, so the host sees the close), or at
  # its Hello deadline, whichever comes first.
  expect_true(wait_refused(70L))
  expect_identical(status()$refused, 70L)
  expect_identical(status()$connections, 1L)
  expect_serves(launch = FALSE)
})

# The next line `p` (a processx process) prints, waiting up to `secs` for it
# (the machine may be loaded: a python start-up can take seconds).
read_line <- function(p, secs = 60) {
  line <- character()
  wait_until(function() { line <<- c(line, p$read_output_lines(n = 1L)); length(line) > 0L }, secs)
  line[1L]
}

# For tests whose peers python makes (from other loopback addresses): a
# host with auth = FALSE listening on 127.0.0.1, reset when the calling test
# ends; its port. Skips without python3 or processx.
python_peers_host <- function(env = parent.frame()) {
  why <- need_tools("/usr/bin/python3")
  if (!is.null(why)) skip(why)
  skip_if_not_installed("processx")
  daemons(url = "tcp://127.0.0.1:0", auth = FALSE)
  withr::defer(daemons(0), envir = env)
  tcp_port()
}

test_that("a flood of silent peers from one address makes room with its own: a daemon from another still gets in", {
  port <- python_peers_host()
  # A slow daemon's side (from 127.0.0.1): it has its Challenge, and answers
  # only after the flood.
  con <- peer(port, timeout = 10)
  on.exit(close(con), add = TRUE, after = FALSE)
  send_bytes(con, sp_header)
  expect_identical(read_bytes(con, 8L), sp_header)
  challenge <- read_frame(con)
  expect_length(challenge, 38L)
  # Twice the places (64) in silent peers from another loopback address,
  # 127.0.0.2, held open until this test closes python's stdin.
  flood <- "
import socket, sys
port = int(sys.argv[1]); held = []
for i in range(128):
    s = socket.socket(); s.bind(('127.0.0.2', 0)); s.connect(('127.0.0.1', port))
    s.sendall(bytes([0, 0x53, 0x50, 0, 0, 0x11, 0, 0])); held.append(s)
print('flooded', flush=True)
sys.stdin.read()
"
  p <- processx::process$new("/usr/bin/python3", c("-c", flood, port), stdin = "|", stdout = "|", stderr = "2>&1")
  on.exit({ try(p$close_connections(), silent = TRUE); p$kill() }, add = TRUE, after = FALSE)
  expect_identical(read_line(p), "flooded")
  # Each of the last 65 took the place of the flood's own oldest (64 places:
  # the slow daemon's and 63 of the flood's), not the slow daemon's, though
  # it was the oldest of all.
  expect_true(wait_refused(65L, timeout = 20))
  Sys.sleep(0.2)
  expect_identical(status()$refused, 65L)
  expect_true(still_open(con))
  send_bytes(con, tcp_frame(hello_body()))
  expect_identical(read_frame(con), c(hop, as.raw(c(8, 0))))
  expect_true(length(read_frame(con)) > 0L)
  expect_identical(status()$connections, 1L)
})

test_that("peers spread over many addresses make room with the oldest of all: a burst of daemons from one address stays", {
  port <- python_peers_host()
  # 56 silent peers, each from its own address (127.0.1.1-56); then, once
  # 8 slow daemons from 127.0.0.1 hold the other places, 8 more.
  spread <- "
import socket, sys
port = int(sys.argv[1]); held = []
def one(k):
    s = socket.socket(); s.bind(('127.0.1.%d' % k, 0)); s.connect(('127.0.0.1', port))
    s.sendall(bytes([0, 0x53, 0x50, 0, 0, 0x11, 0, 0])); held.append(s)
for k in range(1, 57): one(k)
print('first', flush=True)
sys.stdin.readline()
for k in range(57, 65): one(k)
print('second', flush=True)
sys.stdin.read()
"
  p <- processx::process$new("/usr/bin/python3", c("-c", spread, port), stdin = "|", stdout = "|", stderr = "2>&1")
  on.exit({ try(p$close_connections(), silent = TRUE); p$kill() }, add = TRUE, after = FALSE)
  expect_identical(read_line(p), "first")
  cons <- lapply(1:8, function(i) peer(port))
  on.exit(for (con in cons) try(close(con), silent = TRUE), add = TRUE, after = FALSE)
  for (con in cons) {
    send_bytes(con, sp_header)
    expect_identical(read_bytes(con, 8L), sp_header)
    expect_length(read_frame(con), 38L)
  }
  p$write_input("go\n")
  expect_identical(read_line(p), "second")
  # The 8 newcomers took the places of the 8 oldest, spread peers: no
  # address held more than a quarter of the places.
  expect_true(wait_refused(8L, timeout = 20))
  Sys.sleep(0.2)
  expect_identical(status()$refused, 8L)
  for (con in cons) {
    send_bytes(con, tcp_frame(hello_body()))
    expect_identical(read_frame(con), c(hop, as.raw(c(8, 0))))
    expect_true(length(read_frame(con)) > 0L)
  }
  expect_identical(status()$connections, 8L)
})

test_that("a result over mirai.max_message drops its daemon: the mirai resolves to 19, counted refused", {
  old <- options(mirai.max_message = 1e6)
  on.exit(options(old))
  daemons(url = "tcp://127.0.0.1:0", auth = FALSE)
  on.exit(daemons(0), add = TRUE)
  launch_local(1)
  m <- mirai(raw(2e6), .timeout = 30000)
  res <- m[]
  expect_true(is_error_value(res))
  expect_identical(as.integer(res), 19L)
  expect_true(wait_refused(1L))
  expect_identical(status()$refused, 1L)
  expect_true(wait_until(function() status()$connections == 0L))
  # Results under the cap still come back.
  launch_local(1)
  expect_identical(length(mirai(raw(5e5), .timeout = 20000)[]), 500000L)
  expect_serves(launch = FALSE)
  expect_identical(status()$refused, 1L)
})
