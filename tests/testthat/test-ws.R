# WebSockets (ws://, wss://): real daemons over both, and conformance with a
# WebSocket implementation we did not write, Debian's python3-websockets:
# - a relay (a python websockets server for the daemon, a python websockets
#   client to our host) that re-frames every message, pinging both sides
#   every second: tasks, results and a 20 MB payload pass through it, so our
#   client and server frames, masks and pongs are read and written by it;
# - a python echo server our daemon dials: it accepts our upgrade and our
#   masked frames and echoes the daemon's first message, which the daemon
#   reads back from python's frames.

skip_on_cran()

rscript <- file.path(R.home("bin"), "Rscript")
libs <- paste(.libPaths(), collapse = ":")

# A python3 that has the websockets module (Debian's python3-websockets
# installs it for /usr/bin/python3), or NULL.
ws_python <- function() {
  for (py in unique(c("/usr/bin/python3", Sys.which("python3")))) {
    if (!nzchar(py) || !file.exists(py)) next
    r <- processx::run(py, c("-c", "import websockets"), error_on_status = FALSE)
    if (r$status == 0L) return(py)
  }
  NULL
}

# Starts a python script that prints its port first; list(proc, port).
start_py <- function(py, code, ...) {
  f <- tempfile(fileext = ".py")
  writeLines(code, f)
  p <- processx::process$new(py, c("-u", f, ...), stdout = "|", stderr = "2>&1")
  out <- ""
  ok <- wait_until(function() { out <<- paste0(out, p$read_output()); grepl("^[0-9]+\n", out) }, 20)
  if (!ok) {
    p$kill()
    stop("python peer did not start: ", out)
  }
  list(proc = p, port = as.integer(sub("\n.*", "", out)))
}

relay_py <- c(
  "import asyncio, sys, websockets",
  "UP = sys.argv[1]",
  "SP = ['pair1.sp.nanomsg.org']",
  "async def pump(a, b):",
  "    async for m in a:",
  "        assert isinstance(m, bytes)",
  "        await b.send(m)",
  "async def handler(down, path=None):",
  "    async with websockets.connect(UP, subprotocols=SP, max_size=None, ping_interval=1, ping_timeout=2) as up:",
  "        print('relaying subprotocols', down.subprotocol, up.subprotocol, flush=True)",
  "        tasks = [asyncio.ensure_future(pump(down, up)), asyncio.ensure_future(pump(up, down))]",
  "        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)",
  "        for t in pending: t.cancel()",
  "        for t in done:",
  "            if t.exception(): print('relay error', repr(t.exception()), flush=True)",
  "async def main():",
  "    async with websockets.serve(handler, '127.0.0.1', 0, subprotocols=SP, max_size=None,",
  "                                ping_interval=1, ping_timeout=2) as server:",
  "        print(server.sockets[0].getsockname()[1], flush=True)",
  "        await asyncio.Future()",
  "asyncio.run(main())"
)

# Plays a host's first move by hand: a Challenge (pair1 hop count, then the
# bincode envelope: variant 7, the protocol version, a 32-byte nonce), then echoes.
echo_py <- c(
  "import asyncio, os, websockets",
  "async def handler(ws, path=None):",
  "    print('subprotocol', ws.subprotocol, flush=True)",
  sprintf("    await ws.send(bytes([0, 0, 0, 1, 7, %d]) + os.urandom(32))", as.integer(mirai:::limit("protocol_version"))),
  "    async for m in ws:",
  "        print('echo', type(m).__name__, len(m), flush=True)",
  "        await ws.send(m)",
  "async def main():",
  "    async with websockets.serve(handler, '127.0.0.1', 0, subprotocols=['pair1.sp.nanomsg.org']) as server:",
  "        print(server.sockets[0].getsockname()[1], flush=True)",
  "        await asyncio.Future()",
  "asyncio.run(main())"
)

test_that("daemons over ws:// and wss://, with and without dispatcher, path optional", {
  on.exit(daemons(0))
  for (u in c("ws://:0", "ws://127.0.0.1:0/mirai/path", "wss://127.0.0.1:0")) {
    for (disp in c(TRUE, FALSE)) {
      daemons(url = u, dispatcher = disp)
      url <- status()$daemons
      expect_match(url, sprintf("^%s://[^:]*:[1-9][0-9]*", sub(":.*", "", u)))
      if (grepl("/mirai/path", u)) expect_match(url, "/mirai/path$")
      if (startsWith(u, "wss")) expect_match(nextget("tls")[[1L]], "BEGIN CERTIFICATE") else expect_null(nextget("tls"))
      launch_local(2)
      expect_true(wait_until(function() status()$connections == 2L, 20))
      expect_identical(unlist(mirai_map(1:4, function(i) i + 1L)[]), 2:5)
      x <- runif(2e6)
      expect_identical(mirai(rev(x), x = x)[], rev(x))
      expect_length(unique(unlist(everywhere(Sys.getpid())[])), 2L)
      expect_identical(status()$refused, 0L)
      daemons(0)
    }
  }
})

test_that("the host answers upgrades to other paths with 404, non-upgrades with 400, and drops a stalled upgrade", {
  on.exit(daemons(0))
  daemons(url = "ws://127.0.0.1:0/p")
  port <- as.integer(sub(".*:([0-9]+).*", "\\1", status()$daemons))
  ask <- function(req) {
    s <- socketConnection("127.0.0.1", port, blocking = TRUE, open = "r+b", timeout = 10)
    on.exit(close(s))
    writeBin(charToRaw(req), s)
    flush(s)
    rawToChar(readBin(s, "raw", 4096))
  }
  up <- "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
  # (Each asked once: expect_match() evaluates its argument twice.)
  r404 <- ask(paste0("GET /other HTTP/1.1\r\nHost: x\r\n", up))
  r400 <- ask("GET /p HTTP/1.1\r\nHost: x\r\n\r\n")
  r426 <- ask(paste0("GET /p HTTP/1.1\r\nHost: x\r\n", sub("13", "8", up)))
  expect_match(r404, "^HTTP/1.1 404")
  expect_match(r400, "^HTTP/1.1 400")
  expect_match(r426, "^HTTP/1.1 426")
  wait_until(function() status()$refused >= 3L, 5)
  expect_identical(status()$refused, 3L)
  # A valid upgrade gets 101 with the RFC 6455 accept key for this key.
  s <- socketConnection("127.0.0.1", port, blocking = TRUE, open = "r+b", timeout = 10)
  writeBin(charToRaw(paste0("GET /p HTTP/1.1\r\nHost: x\r\n", up)), s)
  flush(s)
  # The response head, then the host's first WebSocket frame (binary).
  raw <- readBin(s, "raw", 4096)
  end <- grepRaw("\r\n\r\n", raw, fixed = TRUE)
  resp <- rawToChar(raw[seq_len(end + 3L)])
  expect_match(resp, "^HTTP/1.1 101")
  expect_match(resp, "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", fixed = TRUE)
  # ... then silence: dropped at the 5 s handshake deadline, counted.
  wait_until(function() status()$refused >= 4L, 10)
  expect_identical(status()$refused, 4L)
  close(s)
  # Half a request, then silence: the same.
  s <- socketConnection("127.0.0.1", port, blocking = TRUE, open = "r+b", timeout = 10)
  writeBin(charToRaw("GET /p HTTP/1.1\r\nHost"), s)
  flush(s)
  wait_until(function() status()$refused >= 5L, 10)
  expect_identical(status()$refused, 5L)
  close(s)
  launch_local(1)
  expect_true(wait_until(function() status()$connections == 1L, 20))
  expect_identical(mirai("ok")[], "ok")
})

test_that("python3-websockets relays a daemon's traffic to our host: standard frames both ways", {
  py <- ws_python()
  if (is.null(py)) skip("no python3 with the websockets module (Debian package python3-websockets; tools/setup.sh)")
  procs <- list()
  on.exit({ for (p in procs) try(p$kill(), silent = TRUE); daemons(0) })
  daemons(url = "ws://127.0.0.1:0/sp")
  url <- status()$daemons
  relay <- start_py(py, relay_py, url)
  procs$relay <- relay$proc
  secret <- mirai:::profile_of(NULL)$secret
  d <- processx::process$new(rscript, c("-e", sprintf("mirai::daemon('ws://127.0.0.1:%d')", relay$port)),
                             stdout = "|", stderr = "2>&1", env = c("current", R_LIBS = libs, MIRAI_SECRET = secret))
  procs$daemon <- d
  expect_true(wait_until(function() status()$connections == 1L, 20))
  # Python negotiated NNG's subprotocol with both of our ends.
  out <- ""
  expect_true(wait_until(function() { out <<- paste0(out, relay$proc$read_output()); grepl("relaying", out) }, 5))
  expect_match(out, "relaying subprotocols pair1.sp.nanomsg.org pair1.sp.nanomsg.org", fixed = TRUE)
  expect_identical(mirai(Sys.getpid())[], d$get_pid())
  # Longer than python's ping timeout: our host and daemon answer its pings.
  expect_identical(mirai({ Sys.sleep(4); "slept" })[], "slept")
  x <- as.raw(sample.int(256, 2e7, TRUE) - 1L)
  expect_identical(mirai(rev(x), x = x)[], rev(x))
  out <- paste0(out, relay$proc$read_output())
  expect_false(grepl("relay error", out))
  expect_identical(status()$connections, 1L)
  expect_identical(status()$refused, 0L)
})

test_that("our daemon's upgrade and frames are read, and python's frames read back, via a python echo server", {
  py <- ws_python()
  if (is.null(py)) skip("no python3 with the websockets module (Debian package python3-websockets; tools/setup.sh)")
  echo <- start_py(py, echo_py)
  on.exit(echo$proc$kill())
  r <- processx::run(rscript, c("-e", sprintf("mirai::daemon('ws://127.0.0.1:%d')", echo$port)),
                     error_on_status = FALSE, stderr_to_stdout = TRUE, timeout = 30,
                     env = c("current", R_LIBS = libs, MIRAI_SECRET = "s"))
  # The daemon read python's Challenge frame, answered it with a Hello
  # (python parsed our masked frame: 'echo bytes'), and got its own Hello
  # back, framed by python as a server, where the host's proof belongs.
  expect_false(r$status == 0L)
  expect_match(r$stdout, "did not answer the handshake as a mirai host does", fixed = TRUE)
  out <- echo$proc$read_output()
  expect_match(out, "subprotocol pair1.sp.nanomsg.org", fixed = TRUE)
  expect_match(out, "echo bytes [0-9]+")
})

# Unauthenticated ws:// peers, each upgrading and then sending one 64 MiB
# message as non-final fragments (64 KiB for half of them, 1000 bytes for
# the others, every fragment masked as a client's must be), never the last
# one. Each reconnects as soon as the host cuts it off, until `secs` have
# passed; then it prints what happened to its connections.
flood_py <- c(
  "import socket, struct, sys, threading, time",
  "port, path, n, secs = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), float(sys.argv[4])",
  "end = time.time() + secs",
  "req = ('GET %s HTTP/1.1\\r\\nHost: 127.0.0.1:%d\\r\\nUpgrade: websocket\\r\\n'",
  "       'Connection: Upgrade\\r\\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\\r\\n'",
  "       'Sec-WebSocket-Version: 13\\r\\n\\r\\n' % (path, port)).encode()",
  "TOTAL = 64 << 20",
  "stats = {'connects': 0, 'upgraded': 0, 'cut': 0, 'completed': 0, 'bytes': 0}",
  "lock = threading.Lock()",
  "def count(k, v=1):",
  "    with lock: stats[k] += v",
  "def header(opcode, size):",
  "    # No FIN bit; masked with a zero key (so the payload goes as it is).",
  "    if size < 126: h = bytes([opcode, 0x80 | size])",
  "    elif size < 65536: h = bytes([opcode, 0x80 | 126]) + struct.pack('>H', size)",
  "    else: h = bytes([opcode, 0x80 | 127]) + struct.pack('>Q', size)",
  "    return h + bytes(4)",
  "def peer(i):",
  "    size = 65536 if i % 2 == 0 else 1000",
  "    data = bytes([i % 251]) * size",
  "    first, cont = header(0x2, size) + data, header(0x0, size) + data",
  "    while time.time() < end:",
  "        s = None",
  "        try:",
  "            s = socket.create_connection(('127.0.0.1', port), timeout=5)",
  "            count('connects')",
  "            s.sendall(req)",
  "            head = b''",
  "            while b'\\r\\n\\r\\n' not in head:",
  "                got = s.recv(4096)",
  "                if not got: raise EOFError()",
  "                head += got",
  "            if not head.startswith(b'HTTP/1.1 101'): raise EOFError()",
  "            count('upgraded')",
  "            sent = 0",
  "            while sent < TOTAL and time.time() < end:",
  "                s.sendall(first if sent == 0 else cont)",
  "                sent += size",
  "                count('bytes', size)",
  "            if sent >= TOTAL: count('completed')",
  "        except (OSError, EOFError):",
  "            count('cut')",
  "        finally:",
  "            if s is not None: s.close()",
  "        time.sleep(0.05)",
  "ts = [threading.Thread(target=peer, args=(i,), daemon=True) for i in range(n)]",
  "for t in ts: t.start()",
  "print('started', flush=True)",
  "for t in ts: t.join(secs + 10)",
  "print('flood', ' '.join('%s=%d' % kv for kv in sorted(stats.items())), flush=True)"
)

vm_rss_kb <- function() {
  line <- grep("^VmRSS:", readLines("/proc/self/status"), value = TRUE)
  as.numeric(gsub("[^0-9]", "", line))
}

test_that("64 unauthenticated ws:// peers flooding fragments: host RSS stays within 10 MB", {
  py <- Sys.which("python3")
  if (!nzchar(py)) skip("no python3 to play the unauthenticated WebSocket peers")
  flood <- NULL
  on.exit({
    if (!is.null(flood)) {
      flood$kill()
      flood$wait(5000)
    }
    daemons(0)
  })
  daemons(url = "ws://127.0.0.1:0/flood")
  launch_local(2)
  expect_true(wait_until(function() status()$connections == 2L, 20))
  port <- as.integer(sub(".*:([0-9]+).*", "\\1", status()$daemons))
  # Warm up the task path, so that its own allocations are in the baseline.
  expect_identical(unlist(mirai_map(1:20, function(i) i)[]), 1:20)
  gc()
  rss0 <- vm_rss_kb()
  f <- tempfile(fileext = ".py")
  writeLines(flood_py, f)
  secs <- 6
  flood <- processx::process$new(py, c("-u", f, port, "/flood", 64L, secs),
                                 stdout = "|", stderr = "2>&1")
  out <- ""
  read_flood <- function() out <<- paste0(out, flood$read_output())
  expect_true(wait_until(function() { read_flood(); grepl("started", out) }, 10))
  # While they flood: RSS sampled, and the host's daemons given tasks.
  samples <- numeric()
  answered <- 0L
  t_end <- Sys.time() + secs - 0.5
  while (Sys.time() < t_end) {
    m <- mirai(x + 1L, x = answered, .timeout = 5000)
    if (identical(m[], answered + 1L)) answered <- answered + 1L
    samples <- c(samples, vm_rss_kb())
    Sys.sleep(0.1)
  }
  expect_true(wait_until(function() { read_flood(); !flood$is_alive() }, secs + 15))
  read_flood()
  rss1 <- vm_rss_kb()
  # The figures, for the record.
  cat(sprintf(paste("\nws flood: host VmRSS start %.1f MB, peak %.1f MB, end %.1f MB",
                    "(%d samples); %d tasks answered; refused %d; %s\n"),
              rss0 / 1024, max(samples) / 1024, rss1 / 1024, length(samples), answered,
              status()$refused, sub(".*(flood [^\n]*).*", "\\1", out)), file = stderr())
  expect_gte(length(samples), 10L)
  expect_lt(max(samples) - rss0, 10 * 1024)
  expect_lt(rss1 - rss0, 10 * 1024)
  expect_identical(answered, length(samples))
  # Every peer upgraded, none got its message through, every one was cut
  # off, and each cut-off connection was counted as refused.
  stat <- function(k) as.numeric(sub(sprintf(".*%s=([0-9]+).*", k), "\\1", out))
  expect_match(out, "flood .*completed=0")
  expect_gte(stat("upgraded"), 64)
  expect_gte(stat("cut"), 64)
  expect_gte(status()$refused, 64L)
  expect_identical(status()$connections, 2L)
  expect_false(flood$is_alive())
})
