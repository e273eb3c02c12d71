# Launchers, for real: an OpenSSH server (direct, and tunnelled from a
# network namespace), a one-node Slurm cluster and an HTTP launch API, each
# started by the test (helper-services.R) and stopped after it.

secret_of <- function(cmd) sub("^MIRAI_SECRET=([0-9a-f]+) .*$", "\\1", cmd)

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
  expect_error(http_config(url = 1), "`url` must be")
  expect_identical(http_config(url = "http://x", data = "%s")$type, "http")
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

test_that("a daemon proves its secret without sending it (its HMAC checked with openssl)", {
  skip_unless_service(need_tools("openssl"))
  skip_if_not_installed("processx")
  secret <- "d00dfeed0123456789abcdef76543210"
  port <- free_tcp_port()
  srv <- serverSocket(port)
  on.exit(close(srv))
  p <- processx::process$new(file.path(R.home("bin"), "Rscript"),
                             c("-e", sprintf("mirai::daemon('tcp://127.0.0.1:%d')", port)),
                             env = c("current", R_LIBS = paste(.libPaths(), collapse = ":"), MIRAI_SECRET = secret),
                             stdout = NULL, stderr = NULL)
  on.exit(p$kill(), add = TRUE)
  con <- socketAccept(srv, blocking = TRUE, open = "r+b", timeout = 20)
  on.exit(close(con), add = TRUE, after = FALSE)
  # Play the host: SP header and a Challenge (variant 7, version 4, nonce).
  sp <- as.raw(c(0x00, 0x53, 0x50, 0x00, 0x00, 0x11, 0x00, 0x00))
  nonce <- as.raw(sample(0:255, 32L, TRUE))
  body <- c(as.raw(c(0, 0, 0, 1, 7, 4)), nonce)
  writeBin(c(sp, as.raw(c(rep(0, 7), length(body))), body), con)
  flush(con)
  wire <- readBin(con, "raw", 8L)
  expect_identical(wire, sp)
  len <- readBin(con, "raw", 8L)
  hello <- readBin(con, "raw", sum(as.numeric(len) * 256^(7:0)))
  wire <- c(wire, len, hello)
  # Hop count, Hello (variant 0), version 4, then 32 bytes of MAC and the pid.
  expect_identical(hello[1:6], as.raw(c(0, 0, 0, 1, 0, 4)))
  mac <- hello[7:38]
  msg <- tempfile()
  writeBin(c(charToRaw("mirai daemon hello v3"), as.raw(0), nonce), msg)
  ref <- system2("openssl", c("dgst", "-sha256", "-mac", "HMAC", "-macopt", paste0("key:", secret), "-r", msg),
                 stdout = TRUE)
  expect_identical(paste(format(mac), collapse = ""), sub(" .*$", "", ref))
  expect_false(length(grepRaw(charToRaw(secret), wire, fixed = TRUE)) > 0)
  expect_false(length(grepRaw(charToRaw(substr(secret, 1, 8)), wire, fixed = TRUE)) > 0)
  # Refused (variant 2): the daemon exits.
  reason <- charToRaw("test over")
  body <- c(as.raw(c(0, 0, 0, 1, 2, length(reason))), reason)
  writeBin(c(as.raw(c(rep(0, 7), length(body))), body), con)
  flush(con)
  expect_true(wait_until(function() !p$is_alive(), 10))
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

test_that("cluster_config(): Slurm jobs connect back, return results, and daemons(0) leaves no job", {
  slurm <- start_slurm()
  skip_unless_service(slurm)
  on.exit(slurm$stop())
  opts <- sprintf("  #SBATCH --job-name=mirai-test\n  #SBATCH --output=%s/job-%%j.out\n#SBATCH --time=5",
                  slurm$jobs)
  daemons(2, url = "tcp://127.0.0.1:0", remote = cluster_config("sbatch", opts, rscript = test_rscript()))
  on.exit(daemons(0), add = TRUE, after = FALSE)
  expect_length(slurm_jobs(), 2L)
  expect_true(wait_until(function() status()$connections == 2L, 60))
  res <- mirai_map(1:4, function(x) c(x = x * 10, job = as.numeric(Sys.getenv("SLURM_JOB_ID"))))[]
  expect_identical(vapply(res, `[[`, numeric(1L), "x"), c(10, 20, 30, 40))
  expect_true(all(vapply(res, `[[`, numeric(1L), "job") %in% as.numeric(slurm_jobs())))
  daemons(0)
  expect_true(wait_until(function() length(slurm_jobs()) == 0L, 30))
  expect_length(slurm_jobs(), 0L)
  # The jobs ran the job script given, with its directives.
  expect_length(list.files(slurm$jobs, "^job-[0-9]+\\.out$"), 2L)
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
                  mirai:::json_escape("mirai::daemon(\"tcp://h:1\", secret = \"x\")\n"))
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
