# Launchers, for real: an OpenSSH server (direct, and tunnelled from a
# network namespace), one-node Slurm and Grid Engine clusters (Slurm also
# behind Torque's qsub) and an HTTP launch API, each
# started by the test (helper-services.R) and stopped after it.

secret_of <- function(cmd) sub("^MIRAI_SECRET=([0-9a-f]+) .*$", "\\1", cmd)

# Runs a launch command as a user would paste it into a shell (with this
# R's Rscript and library path), as a processx process.
run_launch_command <- function(cmd, stdout = NULL, stderr = NULL) {
  processx::process$new("sh", c("-c", sub("Rscript", file.path(R.home("bin"), "Rscript"), cmd)),
                        env = c("current", R_LIBS = paste(.libPaths(), collapse = ":")),
                        stdout = stdout, stderr = stderr, cleanup_tree = TRUE)
}

test_that("launch configurations are checked and built as documented", {
  expect_error(remote_config(args = c("a", "b")), "`.` must be an element of the character vector\\(s\\) supplied to `args`")
  expect_error(remote_config(args = list(c("."), c("x"))), "`.` must be an element")
  expect_identical(remote_config()$args, c("", "."))
  expect_error(ssh_config("http://host"), "ssh://\\[user@\\]host\\[:port\\]")
  expect_error(ssh_config(), "`remotes` must be")
  cfg <- ssh_config(c("ssh://me@h1:2222", "ssh://h2"), timeout = 5)
  expect_identical(cfg$args, list(c("-o ConnectTimeout=5 -fTp 2222", "me@h1", "."),
                                  c("-o ConnectTimeout=5 -fTp 22", "h2", ".")))
  expect_true(cfg$quote)
  cl <- cluster_config("sbatch", "  #SBATCH --job-name=x\n\t#SBATCH --mem=1G\nmodule load R")
  expect_identical(cl$script, "#!/bin/sh\n#SBATCH --job-name=x\n#SBATCH --mem=1G\nmodule load R")
  expect_identical(cl$args[2L], ".")
  expect_null(cl$quote)
  expect_error(cluster_config(NA_character_), "`command` must be")
  # Each scheduler's jobs are cancelled by its own command, next to it.
  expect_identical(cl$cancel, "scancel")
  expect_false(cl$stdin)
  expect_identical(cluster_config("/opt/sge/bin/qsub -V")$cancel, "/opt/sge/bin/qdel")
  bsub <- cluster_config("LSF_ENVDIR=/etc/lsf bsub -q short")
  expect_identical(bsub$cancel, "LSF_ENVDIR=/etc/lsf bkill")
  expect_true(bsub$stdin)
  expect_null(cluster_config("submit-job")$cancel)
  # ...by the job id the submission printed, whatever the scheduler.
  id <- mirai:::submitted_job_id
  expect_identical(id("Submitted batch job 4021"), "4021")
  expect_identical(id("4021;cluster2"), "4021")
  expect_identical(id('Your job 17 ("mirai") has been submitted'), "17")
  expect_identical(id('Your job-array 18.1-4:1 ("mirai") has been submitted'), "18")
  expect_identical(id("Job <311> is submitted to default queue <normal>."), "311")
  expect_identical(id(c("qsub: note: defaults applied", "12.pbs-server.example")), "12.pbs-server.example")
  expect_null(id("qsub: job rejected"))
  expect_error(http_config(url = 1), "`url` must be")
  expect_identical(http_config(url = "http://x", data = "%s")$type, "http")
  # ssh:// URLs are read by the native URL parser, IPv6 hosts included.
  expect_identical(ssh_config("ssh://u@[::1]:2200/")$args[[1L]], c("-o ConnectTimeout=10 -fTp 2200", "u@::1", "."))
  expect_error(ssh_config("ssh://h:+22"), "ssh://\\[user@\\]host\\[:port\\]")
})

test_that("http_config() escapes the daemon call for JSON with jsonlite, control characters too", {
  skip_if_not_installed("jsonlite")
  # Every control character, which a JSON string may not hold raw.
  call <- paste0("mirai::daemon(\"tcp://h:1\", secret = \"x\")\\", intToUtf8(1:31))
  expect_true(jsonlite::validate(sprintf("\"%s\"", mirai:::json_string(call))))
  expect_identical(jsonlite::fromJSON(sprintf("\"%s\"", mirai:::json_string(call))), call)
  # The Workbench request is valid JSON, the call in the right place, even
  # for library paths and options holding quotes and percent signs.
  body <- sprintf(mirai:::posit_workbench_data(job_name = "50% \"done\"", image = "r:4.5"),
                  mirai:::json_string(call))
  expect_true(jsonlite::validate(body))
  job <- jsonlite::fromJSON(body)$kwparams$job
  expect_identical(job$name, "50% \"done\"")
  expect_identical(job$container$image, "r:4.5")
  expect_identical(job$args[[1L]], "-e")
  expect_identical(sub("^[^;]*;", "", job$args[[2L]]), call)
})

test_that("a suggested package that is missing is named in the error", {
  # http_config() launches need 'curl' and 'jsonlite' (Suggests); what it
  # says when one is not installed, with a name no library holds.
  absent <- "mirai.no.such.package"
  expect_error(mirai:::need_packages(c("jsonlite", absent), "launching daemons with http_config()"),
               sprintf("launching daemons with http_config() needs the '%s' package: install it", absent),
               fixed = TRUE)
  expect_error(mirai:::need_packages(c(absent, "b.absent"), "x"),
               sprintf("x needs the '%s' and 'b.absent' packages: install them", absent), fixed = TRUE)
  expect_null(mirai:::need_packages(c("jsonlite", "curl"), "x"))
})

test_that("launch_remote() commands carry URL, stream and secret, which print() and status() never show", {
  expect_error(launch_remote(1), "daemons must be set")
  daemons(url = "tcp://127.0.0.1:0", dispatcher = FALSE)
  on.exit(daemons(0))
  url <- nextget("url")
  cmds <- launch_remote(2, remote_config(rscript = "/opt/R/bin/Rscript"))
  expect_s3_class(cmds, "miraiLaunchCmd")
  expect_length(cmds, 2L)
  secret <- secret_of(cmds[[1L]])
  expect_match(secret, "^[0-9a-f]{32}$")
  for (cmd in cmds) {
    expect_match(cmd, sprintf("^MIRAI_SECRET=%s /opt/R/bin/Rscript -e 'mirai::daemon\\(\"%s\",dispatcher=FALSE,", secret, url))
    expect_match(cmd, "rs=c\\(10407L")
  }
  # Each daemon gets a stream of its own.
  expect_false(identical(sub("^.*rs=", "", cmds[[1L]]), sub("^.*rs=", "", cmds[[2L]])))
  out <- capture.output(print(cmds))
  expect_identical(out, c("[1]", cmds[[1L]], "", "[2]", cmds[[2L]], ""))
  # Nowhere else.
  shown <- c(capture.output(print(status())), capture.output(print(info())),
             capture.output(print(daemons_set())), capture.output(str(nextget("dots"))))
  expect_false(any(grepl(secret, shown, fixed = TRUE)))
  expect_null(nextget("secret"))
  # Overrides from `...`, and no secret without auth.
  expect_match(launch_remote(1, maxtasks = 3)[[1L]], ",maxtasks=3")
  daemons(url = "tcp://127.0.0.1:0", auth = FALSE)
  cmd <- launch_remote(1)
  expect_match(cmd, "^Rscript -e 'mirai::daemon\\(\"tcp://127.0.0.1:[0-9]+\",dispatcher=TRUE\\)'$")
})

test_that("launch_remote() with `n` not matching the number of remotes fails as the reference does", {
  daemons(url = "tcp://127.0.0.1:0", dispatcher = FALSE)
  on.exit(daemons(0))
  two <- remote_config(command = "/bin/true", args = list(c("a", "."), c("b", ".")))
  msg <- "`n` must equal the length of `args`, or either must be 1"
  expect_error(launch_remote(3, two), msg, fixed = TRUE)
  expect_error(launch_remote(3, ssh_config(c("ssh://h1", "ssh://h2"))), msg, fixed = TRUE)
  # 1, or the number of remotes, launches one daemon on each.
  expect_length(launch_remote(1, two), 2L)
  expect_length(launch_remote(2, two), 2L)
})

test_that("remote_config() runs its command: the daemon joins, its argv holds no secret", {
  daemons(url = "tcp://127.0.0.1:0")
  on.exit(daemons(0))
  # `sh -c` stands in for a remote shell.
  cmds <- launch_remote(1, remote_config("sh", c("-c", "."), rscript = test_rscript(), quote = TRUE))
  secret <- secret_of(cmds[[1L]])
  m <- mirai({
    argv <- readBin("/proc/self/cmdline", "raw", 1e5)
    argv[argv == 0] <- as.raw(32)
    list(cmdline = rawToChar(argv), env = Sys.getenv("MIRAI_SECRET"))
  }, .timeout = 20000)
  res <- m[]
  expect_type(res, "list")
  expect_match(res$cmdline, "mirai::daemon", fixed = TRUE)
  expect_false(grepl(secret, res$cmdline, fixed = TRUE))
  # daemon() takes the variable out of its environment once read.
  expect_identical(res$env, "")
  expect_identical(status()$connections, 1L)
})

test_that("daemons(remote =) checks its launcher and resets the profile when the launch fails", {
  expect_error(daemons(1, remote = remote_config()), "`remote` needs `url`")
  expect_error(daemons(1, url = "tcp://127.0.0.1:0", remote = list(1)), "`remote` must be a launch configuration")
  expect_error(daemons(1, url = "tcp://10.1.2.3:5555", remote = ssh_config("ssh://h", tunnel = TRUE)),
               "SSH tunnelling requires daemons `url` hostname to be `127.0.0.1`")
  expect_false(daemons_set())
  # An HTTP launcher that nobody serves: the launch fails, daemons are reset.
  port <- free_tcp_port()
  expect_error(daemons(1, url = "tcp://127.0.0.1:0",
                       remote = http_config(url = sprintf("http://127.0.0.1:%d/x", port), data = "%s")),
               "launching a daemon failed: cannot connect")
  expect_false(daemons_set())
  # So does a cluster submission command that fails.
  expect_error(daemons(1, url = "tcp://127.0.0.1:0", remote = cluster_config("false")),
               "launching a daemon failed: 'false' exited with status 1")
  expect_false(daemons_set())
})

# HMAC-SHA256 of `msg` (raw) under `key`, by the openssl command line: an
# implementation independent of ours.
openssl_hmac <- function(key, msg) {
  f <- tempfile()
  on.exit(unlink(f))
  writeBin(msg, f)
  out <- system2("openssl", c("dgst", "-sha256", "-mac", "HMAC", "-macopt", paste0("key:", key), "-r", f),
                 stdout = TRUE)
  as.raw(strtoi(substring(sub(" .*$", "", out), seq(1, 63, 2), seq(2, 64, 2)), 16L))
}

# The protocol version this build speaks, for the messages played by hand.
proto_v <- as.integer(mirai:::limit("protocol_version"))

# Plays a host by hand over `con`, an accepted TCP connection from a daemon
# (TCP framing: an 8-byte big-endian length before each message): sends the
# SP header and a Challenge, reads the daemon's SP header and Hello, and
# returns what a test needs to go on.
play_host_challenge <- function(con) {
  sp <- as.raw(c(0x00, 0x53, 0x50, 0x00, 0x00, 0x11, 0x00, 0x00))
  nonce <- as.raw(sample(0:255, 32L, TRUE))
  # Hop count, Challenge (variant 7), the protocol version, the nonce.
  send_frame(con, c(as.raw(c(0, 0, 0, 1, 7, proto_v)), nonce), header = sp)
  head <- readBin(con, "raw", 8L)
  hello <- recv_frame(con)
  list(sp = sp, nonce = nonce, head = head, hello = hello)
}

send_frame <- function(con, body, header = raw(0)) {
  n <- length(body)
  writeBin(c(header, as.raw((n %/% 256^(7:0)) %% 256), body), con)
  flush(con)
}

recv_frame <- function(con) {
  len <- readBin(con, "raw", 8L)
  if (length(len) < 8L) return(raw(0))
  readBin(con, "raw", sum(as.numeric(len) * 256^(7:0)))
}

# A daemon started by hand with `secret`, dialling the returned port's
# listener; its stderr is kept.
hand_daemon <- function(secret, extra = "") {
  port <- free_tcp_port()
  srv <- serverSocket(port)
  p <- processx::process$new(file.path(R.home("bin"), "Rscript"),
                             c("-e", sprintf("mirai::daemon('tcp://127.0.0.1:%d'%s)", port, extra)),
                             env = c("current", R_LIBS = paste(.libPaths(), collapse = ":"), MIRAI_SECRET = secret),
                             stdout = NULL, stderr = "|")
  con <- socketAccept(srv, blocking = TRUE, open = "r+b", timeout = 20)
  close(srv)
  list(p = p, con = con)
}

test_that("daemon and host each prove the secret without sending it (HMACs checked with openssl)", {
  skip_unless_service(need_tools("openssl"))
  skip_if_not_installed("processx")
  secret <- "d00dfeed0123456789abcdef76543210"
  d <- hand_daemon(secret)
  on.exit({ close(d$con); d$p$kill() })
  h <- play_host_challenge(d$con)
  expect_identical(h$head, h$sp)
  # Hop count, Hello (variant 0), the protocol version, then the daemon's nonce, its
  # MAC over both nonces, and the pid.
  expect_identical(h$hello[1:6], as.raw(c(0, 0, 0, 1, 0, proto_v)))
  theirs <- h$hello[7:38]
  mac <- h$hello[39:70]
  ctx <- function(who) c(charToRaw(sprintf("mirai v4 %s", who)), as.raw(0))
  expect_identical(mac, openssl_hmac(secret, c(ctx("daemon to host"), h$nonce, theirs)))
  wire <- c(h$head, h$hello)
  expect_false(length(grepRaw(charToRaw(secret), wire, fixed = TRUE)) > 0)
  expect_false(length(grepRaw(charToRaw(substr(secret, 1, 8)), wire, fixed = TRUE)) > 0)
  # The host's proof (Welcome, variant 8, Some = 1), the Init (variant 1,
  # the protocol version, no stream), then a task (variant 3, id 1): the daemon runs it
  # and answers (Result, variant 4, id 1, last = 0, error = 0).
  proof <- openssl_hmac(secret, c(ctx("host to daemon"), h$nonce, theirs))
  send_frame(d$con, c(as.raw(c(0, 0, 0, 1, 8, 1)), proof))
  send_frame(d$con, as.raw(c(0, 0, 0, 1, 1, proto_v, 0)))
  # A task's payload ends in a completion mark (1).
  send_frame(d$con, c(as.raw(c(0, 0, 0, 1, 3, 1)), serialize(list(._expr_. = quote(40 + 2)), NULL), as.raw(1)))
  res <- recv_frame(d$con)
  expect_identical(res[1:8], as.raw(c(0, 0, 0, 1, 4, 1, 0, 0)))
  expect_identical(unserialize(res[-(1:8)]), 42)
  # Exit (variant 6): the daemon ends normally.
  send_frame(d$con, as.raw(c(0, 0, 0, 1, 6)))
  expect_true(wait_until(function() !d$p$is_alive(), 10))
  expect_identical(d$p$get_exit_status(), 0L)
})

test_that("a daemon runs nothing for a host that cannot prove the secret, and says why", {
  skip_unless_service(need_tools("openssl"))
  skip_if_not_installed("processx")
  secret <- "0123456789abcdef0123456789abcdef"
  marker <- tempfile()
  task <- c(as.raw(c(0, 0, 0, 1, 3, 1)), serialize(list(._expr_. = call("file.create", marker)), NULL), as.raw(1))
  ctx <- c(charToRaw("mirai v4 host to daemon"), as.raw(0))
  proofs <- list(
    # Another secret's proof; the daemon's own proof reflected back; none.
    wrong_secret = function(h, theirs) c(as.raw(1), openssl_hmac("not-the-secret", c(ctx, h$nonce, theirs))),
    reflected = function(h, theirs) c(as.raw(1), h$hello[39:70]),
    none = function(h, theirs) as.raw(0)
  )
  for (nm in names(proofs)) {
    d <- hand_daemon(secret)
    h <- play_host_challenge(d$con)
    theirs <- h$hello[7:38]
    # (The daemon may hang up before the later writes: that is its right.)
    tryCatch({
      send_frame(d$con, c(as.raw(c(0, 0, 0, 1, 8)), proofs[[nm]](h, theirs)))
      send_frame(d$con, as.raw(c(0, 0, 0, 1, 1, proto_v, 0)))
      send_frame(d$con, task)
    }, error = function(e) NULL, warning = function(w) NULL)
    # The daemon closes without a word and exits with an error.
    after <- tryCatch(readBin(d$con, "raw", 1000L), error = function(e) raw(0))
    expect_identical(after, raw(0), label = nm)
    expect_true(wait_until(function() !d$p$is_alive(), 20), label = nm)
    expect_identical(d$p$get_exit_status(), 1L, label = nm)
    err <- d$p$read_all_error()
    expect_match(err, "did not prove that it holds this daemon's secret", fixed = TRUE, label = nm)
    if (nm == "none") expect_match(err, "auth = FALSE", fixed = TRUE)
    expect_false(file.exists(marker), label = nm)
    close(d$con)
  }
})

test_that("a daemon whose proven host then sends garbage stops with a message and status 1", {
  skip_unless_service(need_tools("openssl"))
  skip_if_not_installed("processx")
  secret <- "fedcba9876543210fedcba9876543210"
  d <- hand_daemon(secret)
  on.exit({ close(d$con); d$p$kill() })
  h <- play_host_challenge(d$con)
  theirs <- h$hello[7:38]
  proof <- openssl_hmac(secret, c(charToRaw("mirai v4 host to daemon"), as.raw(0), h$nonce, theirs))
  send_frame(d$con, c(as.raw(c(0, 0, 0, 1, 8, 1)), proof))
  send_frame(d$con, as.raw(c(0, 0, 0, 1, 1, proto_v, 0)))
  # A message of no known kind (variant 99).
  send_frame(d$con, as.raw(c(0, 0, 0, 1, 99, 1, 2, 3)))
  expect_true(wait_until(function() !d$p$is_alive(), 20))
  expect_identical(d$p$get_exit_status(), 1L)
  expect_match(d$p$read_all_error(), "stops: the host sent a malformed message", fixed = TRUE)
})

# A squatter on an abstract socket name (python3: base R cannot bind one):
# for every connection it challenges, reads the Hello, answers with a
# random proof, the Init and a task, and logs how many bytes the daemon
# sent after its Hello. Serves until `secs` pass without a connection.
squatter_py <- c(
  "import os, socket, struct, sys",
  "name, task_path, log_path, secs = sys.argv[1:5]",
  "task = open(task_path, 'rb').read()",
  "SP = bytes([0, 0x53, 0x50, 0, 0, 0x11, 0, 0])",
  "def frame(b): return b'\\x01' + struct.pack('>Q', len(b)) + b",
  "def read_exact(c, n):",
  "    b = b''",
  "    while len(b) < n:",
  "        x = c.recv(n - len(b))",
  "        if not x: raise EOFError",
  "        b += x",
  "    return b",
  "s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)",
  "s.bind('\\0' + name)",
  "s.listen(8)",
  "s.settimeout(float(secs))",
  "n = 0",
  "while True:",
  "    try: c, _ = s.accept()",
  "    except socket.timeout: break",
  "    n += 1",
  "    c.settimeout(10)",
  "    try:",
  sprintf("        c.sendall(SP + frame(bytes([0, 0, 0, 1, 7, %d]) + os.urandom(32)))", proto_v),
  "        read_exact(c, 8)",
  "        hdr = read_exact(c, 9)",
  "        read_exact(c, struct.unpack('>Q', hdr[1:])[0])",
  "        c.sendall(frame(bytes([0, 0, 0, 1, 8, 1]) + os.urandom(32)) +",
  sprintf("                  frame(bytes([0, 0, 0, 1, 1, %d, 0])) + frame(bytes([0, 0, 0, 1, 3, 1]) + task))", proto_v),
  "        after = b''",
  "        while True:",
  "            x = c.recv(65536)",
  "            if not x: break",
  "            after += x",
  "    except Exception as e:",
  "        after = ('error ' + repr(e)).encode()",
  "    with open(log_path, 'a') as f: f.write('connection %d: %d bytes after the Hello\\n' % (n, len(after)))",
  "    c.close()"
)

test_that("an autoexit = FALSE daemon redials a squatter at its host's address and never runs its task", {
  skip_unless_service(need_tools("python3"))
  skip_if_not_installed("processx")
  name <- sprintf("mirai-squat-%d-%d", Sys.getpid(), sample.int(1e6, 1L))
  url <- paste0("abstract://", name)
  daemons(url = url)
  on.exit(daemons(0))
  cmd <- launch_remote(1, autoexit = FALSE)
  p <- run_launch_command(cmd)
  on.exit(p$kill_tree(), add = TRUE, after = FALSE)
  expect_true(wait_until(function() status()$connections == 1L, 20))
  expect_identical(mirai(6 * 7, .timeout = 10000)[], 42)
  daemons(0)
  # The host is gone; the daemon stays (autoexit = FALSE) and redials. Now
  # anyone may bind the name: a squatter that cannot prove the secret.
  marker <- tempfile()
  task <- tempfile()
  writeBin(c(serialize(list(._expr_. = call("file.create", marker)), NULL), as.raw(1)), task)
  log <- tempfile()
  script <- tempfile(fileext = ".py")
  writeLines(squatter_py, script)
  sq <- processx::process$new("python3", c(script, name, task, log, "3"), stdout = NULL, stderr = "|")
  on.exit(sq$kill(), add = TRUE, after = FALSE)
  conns <- function() if (file.exists(log)) length(readLines(log)) else 0L
  expect_true(wait_until(function() conns() >= 3L, 30))
  lines <- readLines(log)
  expect_true(all(grepl(": 0 bytes after the Hello$", lines)), info = paste(lines, collapse = "; "))
  expect_false(file.exists(marker))
  expect_true(p$is_alive())
  sq$kill()
})

# A squatter on an abstract socket name that never answers: "silent"
# accepts every connection and says nothing; "full" never accepts, and
# fills its accept queue itself, so a connect to it would wait.
silent_squatter_py <- c(
  "import socket, sys, time",
  "name, mode, secs = sys.argv[1], sys.argv[2], float(sys.argv[3])",
  "s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)",
  "s.bind('\\0' + name)",
  "s.listen(0)",
  "held = []",
  "if mode == 'full':",
  "    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)",
  "    c.connect('\\0' + name)",
  "    held.append(c)",
  "    time.sleep(secs)",
  "else:",
  "    s.settimeout(secs)",
  "    try:",
  "        while True: held.append(s.accept()[0])",
  "    except socket.timeout: pass"
)

test_that("an autoexit = FALSE daemon facing a squatter that never answers still ends by its idletime", {
  skip_unless_service(need_tools("python3"))
  skip_if_not_installed("processx")
  for (mode in c("silent", "full")) {
    name <- sprintf("mirai-mute-%d-%d", Sys.getpid(), sample.int(1e6, 1L))
    daemons(url = paste0("abstract://", name))
    cmd <- launch_remote(1, autoexit = FALSE, idletime = 2000)
    # The task is queued before the daemon starts: the idle time also runs
    # from the daemon's connection to its first task, and a task sent only
    # once status() showed the connection could, on a loaded CI machine,
    # come after the daemon had left (one run lost it so).
    m <- mirai(6 * 7, .timeout = 30000)
    p <- run_launch_command(cmd, stdout = NULL, stderr = "|")
    expect_identical(m[], 42, label = sprintf("%s squatter: the daemon's first task", mode))
    script <- tempfile(fileext = ".py")
    writeLines(silent_squatter_py, script)
    daemons(0)
    t0 <- Sys.time()
    # The host is gone; the name is taken at once by a squatter that never
    # answers. The daemon redials it for its idle time (2 s), then ends:
    # neither a connect nor a handshake may outlast that (they used to wait
    # 30 s, and for ever on a full accept queue).
    sq <- processx::process$new("python3", c(script, name, mode, "40"), stdout = NULL, stderr = NULL)
    # Within 20 s: short of the 30 s a connect or handshake used to wait.
    ended <- wait_until(function() !p$is_alive(), 20)
    took <- as.numeric(difftime(Sys.time(), t0, units = "secs"))
    sq$kill()
    if (!ended) p$kill_tree()
    why <- sprintf("%s squatter: the daemon ended (after %.1f s; its stderr: %s)", mode, took,
                   paste(tryCatch(p$read_all_error_lines(), error = function(e) conditionMessage(e)), collapse = " | "))
    expect_true(ended, label = why)
    expect_identical(p$get_exit_status(), 0L, label = why)
  }
})

test_that("ssh_config(): daemons launched over SSH return results", {
  sshd <- start_sshd()
  skip_unless_service(sshd)
  on.exit(sshd$stop())
  daemons(2, url = "tcp://127.0.0.1:0",
          remote = ssh_config(sshd$remote, command = sshd$ssh, rscript = test_rscript()))
  on.exit(daemons(0), add = TRUE, after = FALSE)
  expect_true(wait_until(function() status()$connections == 2L, 30))
  res <- mirai_map(1:4, function(x) {
    argv <- readBin("/proc/self/cmdline", "raw", 1e5)
    argv[argv == 0] <- as.raw(32)
    list(x = x * 2, ssh = Sys.getenv("SSH_CONNECTION"), argv = rawToChar(argv))
  })[]
  expect_identical(vapply(res, `[[`, numeric(1L), "x"), c(2, 4, 6, 8))
  # They run in sessions of this sshd, with the secret in no daemon's argv.
  secret <- mirai:::profile_of(NULL)$secret
  expect_match(secret, "^[0-9a-f]{32}$")
  for (r in res) {
    expect_match(r$ssh, sprintf(" 127.0.0.1 %d$", sshd$port))
    expect_match(r$argv, "mirai::daemon", fixed = TRUE)
    expect_false(grepl(secret, r$argv, fixed = TRUE))
  }
  # Nor in any process's arguments on this machine (the ssh clients, sshd's
  # sessions, the daemons): this machine is both host and remote here.
  expect_length(procs_with(secret), 0L)
  expect_identical(status()$refused, 0L)
  # At daemons(0) they exit, and so do their SSH sessions.
  url <- nextget("url")
  daemon_procs <- function() procs_with(paste0("mirai::daemon(\"", url, "\""))
  # The daemons, and the ssh clients that started them.
  expect_gte(length(daemon_procs()), 2L)
  daemons(0)
  expect_true(wait_until(function() length(daemon_procs()) == 0L, 10))
})

test_that("ssh_config(tunnel = TRUE): a daemon that can reach the host only through the tunnel returns results", {
  ns <- start_netns()
  skip_unless_service(ns)
  on.exit(ns$stop())
  # The "remote" machine: an sshd in a network namespace of its own, whose
  # 127.0.0.1 is not this one's.
  sshd <- start_sshd(listen = ns$ns_ip, netns = ns$name)
  skip_unless_service(sshd)
  on.exit(sshd$stop(), add = TRUE, after = FALSE)
  port <- free_tcp_port()
  daemons(url = local_url(tcp = TRUE, port = port))
  on.exit(daemons(0), add = TRUE, after = FALSE)
  # Without the tunnel, nothing there reaches the host's port.
  expect_false(port_open("127.0.0.1", port, netns = ns$name))
  expect_true(port_open("127.0.0.1", port))
  cmds <- launch_remote(1, ssh_config(sshd$remote, tunnel = TRUE, command = sshd$ssh, rscript = test_rscript()))
  expect_length(cmds, 1L)
  expect_true(wait_until(function() status()$connections == 1L, 30))
  res <- mirai(list(ssh = Sys.getenv("SSH_CONNECTION"), pid = Sys.getpid()), .timeout = 20000)[]
  # The daemon runs in the namespace, in a session of that sshd.
  expect_match(res$ssh, sprintf("^%s [0-9]+ %s %d$", ns$host_ip, ns$ns_ip, sshd$port))
  netns_of <- function(pid) Sys.readlink(sprintf("/proc/%d/ns/net", pid))
  expect_false(identical(netns_of(res$pid), netns_of(Sys.getpid())))
  expect_identical(mirai(6 * 7)[], 42)
  # At daemons(0) the daemon exits, and with it the SSH session and client.
  daemons(0)
  expect_true(wait_until(function() !pid_alive(res$pid), 10))
  expect_true(wait_until(function() !length(procs_with(sprintf("-R %d:127.0.0.1:%d", port, port))), 10))
})

# One Slurm cluster for the tests that submit to it (with sbatch, and with
# Torque's qsub over it): started by the first, stopped when this file ends.
shared <- new.env()
shared_slurm <- function() {
  if (is.null(shared$slurm)) shared$slurm <- start_slurm()
  shared$slurm
}
withr::defer(if (is.list(shared$slurm)) shared$slurm$stop())

test_that("cluster_config(): Slurm jobs connect back, return results, and daemons(0) leaves no job", {
  slurm <- shared_slurm()
  skip_unless_service(slurm)
  opts <- sprintf("  #SBATCH --job-name=mirai-test\n  #SBATCH --output=%s/job-%%j.out\n#SBATCH --time=5",
                  slurm$jobs)
  daemons(2, url = "tcp://127.0.0.1:0", remote = cluster_config("sbatch", opts, rscript = test_rscript()))
  on.exit(daemons(0), add = TRUE, after = FALSE)
  expect_length(slurm_jobs(), 2L)
  expect_true(wait_until(function() status()$connections == 2L, 60))
  res <- mirai_map(1:4, function(x) c(x = x * 10, job = as.numeric(Sys.getenv("SLURM_JOB_ID"))))[]
  expect_identical(vapply(res, `[[`, numeric(1L), "x"), c(10, 20, 30, 40))
  expect_true(all(vapply(res, `[[`, numeric(1L), "job") %in% as.numeric(slurm_jobs())))
  # A job held in the queue at the reset is cancelled with the others.
  launch_remote(1, cluster_config("sbatch", paste(opts, "#SBATCH --hold", sep = "\n"), rscript = test_rscript()))
  expect_length(slurm_jobs(), 3L)
  daemons(0)
  expect_true(wait_until(function() length(slurm_jobs()) == 0L, 30))
  expect_length(slurm_jobs(), 0L)
  # The jobs ran the job script given, with its directives.
  expect_length(list.files(slurm$jobs, "^job-[0-9]+\\.out$"), 2L)
})

test_that("cluster_config(): SGE jobs connect back, return results, and daemons(0) leaves no job", {
  sge <- start_sge()
  skip_unless_service(sge)
  on.exit(sge$stop())
  opts <- sprintf("#$ -N mirai-sge\n#$ -o %s\n#$ -j y", sge$jobs)
  daemons(2, url = local_url(tcp = TRUE), remote = cluster_config(sge$qsub, opts, rscript = test_rscript()))
  on.exit(daemons(0), add = TRUE, after = FALSE)
  jobs <- sge_jobs()
  expect_length(jobs, 2L)
  expect_true(wait_until(function() status()$connections == 2L, 60))
  res <- mirai_map(1:4, function(x) list(x = x * 10, job = Sys.getenv("JOB_ID"), name = Sys.getenv("JOB_NAME"),
                                         cell = Sys.getenv("SGE_CELL")))[]
  expect_identical(vapply(res, `[[`, numeric(1L), "x"), c(10, 20, 30, 40))
  # Each ran in one of the jobs submitted, under the job script's directives.
  expect_true(all(vapply(res, `[[`, "", "job") %in% jobs))
  expect_identical(unique(vapply(res, `[[`, "", "name")), "mirai-sge")
  expect_identical(unique(vapply(res, `[[`, "", "cell")), "mirai")
  # A job still queued (held, so it cannot start) when the launch is
  # cancelled: daemons(0) deletes it along with the running ones.
  launch_remote(1, cluster_config(sge$qsub, paste(opts, "#$ -h", sep = "\n"), rscript = test_rscript()))
  expect_length(sge_jobs(), 3L)
  daemons(0)
  expect_true(wait_until(function() length(sge_jobs()) == 0L, 30))
  expect_length(sge_jobs(), 0L)
  expect_setequal(list.files(sge$jobs), sprintf("mirai-sge.o%s", jobs))
})

test_that("cluster_config(): PBS job scripts through Torque's qsub over Slurm join, and daemons(0) leaves no job", {
  torque <- torque_qsub()
  skip_unless_service(torque)
  slurm <- shared_slurm()
  skip_unless_service(slurm)
  # The wrapper's own -o/-e would name files in the working directory.
  qsub <- sprintf("%s -o %s/pbs-%%j.out -e %s/pbs-%%j.err", torque$qsub, slurm$jobs, slurm$jobs)
  opts <- "#PBS -N mirai-pbs\n#PBS -l walltime=00:05:00"
  daemons(2, url = local_url(tcp = TRUE), remote = cluster_config(qsub, opts, rscript = test_rscript()))
  on.exit(daemons(0))
  jobs <- slurm_jobs()
  expect_length(jobs, 2L)
  expect_true(wait_until(function() status()$connections == 2L, 60))
  res <- mirai_map(1:4, function(x) list(x = x * 10, job = Sys.getenv("SLURM_JOB_ID"),
                                         name = Sys.getenv("SLURM_JOB_NAME")))[]
  expect_identical(vapply(res, `[[`, numeric(1L), "x"), c(10, 20, 30, 40))
  expect_true(all(vapply(res, `[[`, "", "job") %in% jobs))
  # sbatch read the #PBS directives: the job name, and the walltime as the
  # job's time limit.
  expect_identical(unique(vapply(res, `[[`, "", "name")), "mirai-pbs")
  expect_identical(unique(run("squeue", c("-h", "-o", "%l"))), "5:00")
  # The PBS view of the queue, through the wrapper's qstat.
  expect_setequal(torque_active(torque), jobs)
  launch_remote(1, cluster_config(qsub, paste(opts, "#PBS -h", sep = "\n"), rscript = test_rscript()))
  expect_length(torque_active(torque), 3L)
  daemons(0)
  expect_true(wait_until(function() length(slurm_jobs()) == 0L, 30))
  expect_length(torque_active(torque), 0L)
  # Output where the qsub command line said (the held job never ran).
  expect_setequal(list.files(slurm$jobs, "^pbs-.*\\.out$"), sprintf("pbs-%s.out", jobs))
})

test_that("http_config(): the request carries method, headers and the daemon call; the daemon joins", {
  launcher <- start_http_launcher()
  skip_unless_service(launcher)
  on.exit(launcher$stop())
  calls <- 0L
  cfg <- http_config(
    url = function() { calls <<- calls + 1L; launcher$url },
    method = "POST",
    headers = c(`Content-Type` = "application/json", `X-Launch-Test` = "yes"),
    data = function(name) sprintf('{"name": "%s", "call": "%%s"}', name),
    name = "mirai-daemon",
    cookie = "session=abc123",
    token = function() "t0ken"
  )
  daemons(url = "tcp://127.0.0.1:0", dispatcher = FALSE)
  on.exit(daemons(0), add = TRUE, after = FALSE)
  res <- launch_remote(2, cfg)
  expect_length(res, 2L)
  expect_identical(vapply(res, `[[`, integer(1L), "status"), c(201L, 201L))
  expect_identical(calls, 2L)  # url evaluated at launch, once per request
  expect_true(wait_until(function() status()$connections == 2L, 30))
  expect_identical(mirai_map(1:2, function(x) x + 0.5)[], list(1.5, 2.5))
  reqs <- http_requests(launcher)
  expect_length(reqs, 2L)
  for (r in reqs) {
    expect_identical(r$method, "POST")
    expect_identical(r$path, "/launch")
    expect_identical(r$authorization, "Bearer t0ken")
    expect_identical(r$cookie, "session=abc123")
    expect_identical(r[["x-launch-test"]], "yes")
    expect_identical(r[["content-type"]], "application/json")
    expect_match(r$body, '"name": "mirai-daemon"', fixed = TRUE)
    expect_match(r$call, sprintf("^mirai::daemon\\(\"%s\",dispatcher=FALSE,rs=c\\(", nextget("url")))
    expect_match(r$call, "secret=\"[0-9a-f]{32}\"\\)$")
  }
  # The Posit Workbench defaults: credentials read at launch, and a body
  # that is valid JSON once the daemon call is in.
  withr_env <- Sys.getenv(c("RS_SERVER_ADDRESS", "RS_SESSION_RPC_COOKIE"), unset = NA)
  on.exit(for (nm in names(withr_env)) if (is.na(withr_env[[nm]])) Sys.unsetenv(nm) else
    do.call(Sys.setenv, as.list(withr_env[nm])), add = TRUE)
  Sys.unsetenv(c("RS_SERVER_ADDRESS", "RS_SESSION_RPC_COOKIE"))
  expect_error(launch_remote(1, http_config()), "RS_SERVER_ADDRESS is not set")
  Sys.setenv(RS_SERVER_ADDRESS = sub("/launch$", "/", launcher$url))
  expect_error(launch_remote(1, http_config()), "RS_SESSION_RPC_COOKIE is not set")
  body <- sprintf(mirai:::posit_workbench_data(cpus = 2, image = "r:4.5"),
                  mirai:::json_string("mirai::daemon(\"tcp://h:1\", secret = \"x\")\n"))
  f <- tempfile()
  writeLines(body, f)
  parsed <- run("/usr/bin/python3", c("-c", shQuote("import json,sys; j=json.load(open(sys.argv[1]))['kwparams']['job']; print(j['args'][1]); print(j['container']['image'])"), f))
  expect_identical(attr(parsed, "status"), 0L)
  expect_match(parsed[[1L]], "^\\.libPaths\\(.*\\);mirai::daemon\\(\"tcp://h:1\", secret = \"x\"\\)$")
  expect_identical(parsed[[3L]], "r:4.5")
  # A launch the API rejects is an error that says so.
  bad <- http_config(url = launcher$url, headers = c(`Content-Type` = "application/json"), data = '{"x": "%s"}')
  expect_error(launch_remote(1, bad), "answered HTTP 400")
})

test_that("http_config() keeps extra named arguments in $dots and passes them to `data`", {
  cfg <- http_config(cluster = "k8s", cpus = 4)
  expect_named(cfg, c("type", "url", "method", "headers", "data", "dots", "cookie", "token"))
  expect_identical(cfg$dots, list(cluster = "k8s", cpus = 4))
  # The Workbench session cookie comes with the default headers.
  expect_null(cfg$cookie)
  expect_identical(http_config(url = "http://x", data = "%s")$dots, list())
  launcher <- start_http_launcher()
  skip_unless_service(launcher)
  on.exit(launcher$stop())
  old <- Sys.getenv(c("RS_SERVER_ADDRESS", "RS_SESSION_RPC_COOKIE"), unset = NA)
  on.exit(for (nm in names(old)) if (is.na(old[[nm]])) Sys.unsetenv(nm) else
    do.call(Sys.setenv, as.list(old[nm])), add = TRUE)
  Sys.setenv(RS_SERVER_ADDRESS = sub("/launch$", "/", launcher$url), RS_SESSION_RPC_COOKIE = "wb=1")
  daemons(url = "tcp://127.0.0.1:0", dispatcher = FALSE)
  on.exit(daemons(0), add = TRUE, after = FALSE)
  # The test API takes no Workbench job (HTTP 400), but records the request.
  expect_error(launch_remote(1, cfg), "answered HTTP 400")
  reqs <- http_requests(launcher)
  expect_length(reqs, 1L)
  expect_identical(reqs[[1L]]$path, "/api/launch_job")
  expect_identical(reqs[[1L]]$cookie, "wb=1")
  f <- tempfile()
  on.exit(unlink(f), add = TRUE)
  writeLines(reqs[[1L]]$body, f)
  job <- run("/usr/bin/python3", c("-c", shQuote(paste(
    "import json, sys; j = json.load(open(sys.argv[1]))['kwparams']['job']",
    "print(j['cluster']); print([r['value'] for r in j['resourceLimits'] if r['type'] == 'cpuCount'][0])",
    sep = "\n")), f))
  expect_identical(as.vector(job), c("k8s", "4"))
})

test_that("a daemon whose host goes away mid-task says so on stderr as it ends (autoexit = TRUE), unless its output is discarded", {
  skip_if_not_installed("processx")
  for (output in c(TRUE, FALSE)) {
    daemons(url = local_url())
    cmd <- launch_remote(1, output = output)
    p <- run_launch_command(cmd, stdout = NULL, stderr = "|")
    expect_true(wait_until(function() status()$connections == 1L, 20))
    m <- mirai(Sys.sleep(60))
    expect_true(wait_until(function() status()$mirai[["executing"]] == 1L, 20))
    daemons(0)
    expect_true(wait_until(function() !p$is_alive(), 20), label = sprintf("output = %s: the daemon ended", output))
    err <- p$read_all_error()
    p$kill_tree()
    # output = FALSE (the default) discards what a daemon writes, this too.
    expect_identical(grepl("the host went away during a task", err, fixed = TRUE), output, label = err)
  }
})

test_that("a task's warnings stay on its daemon with output = FALSE, even once the daemon ends", {
  skip_if_not_installed("processx")
  daemons(url = local_url())
  on.exit(daemons(0))
  cmd <- launch_remote(1)
  p <- run_launch_command(cmd, stdout = "|", stderr = "|")
  on.exit(p$kill_tree(), add = TRUE, after = FALSE)
  expect_true(wait_until(function() status()$connections == 1L, 20))
  expect_identical(mirai({ warning("left-behind warning"); 1 }, .timeout = 10000)[], 1)
  daemons(0)
  expect_true(wait_until(function() !p$is_alive(), 20))
  expect_identical(p$get_exit_status(), 0L)
  expect_no_match(paste(p$read_all_output(), p$read_all_error()), "left-behind warning", fixed = TRUE)
})
