# Real services for the launcher tests, started by the tests themselves as
# root, without systemd: an OpenSSH server (optionally in a network
# namespace of its own), a one-node Slurm cluster with munge, and an HTTP
# job-launching API (python3). Each start_*() returns an object with a
# stop() function, or a character string saying why the service could not
# start (the test then skips with that reason). See TOOLCHAIN.md, "Real
# Slurm and sshd on loopback".

`%||%` <- function(a, b) if (is.null(a)) b else a

is_root <- function() identical(unname(Sys.info()[["effective_user"]]), "root")

# Runs a command; returns its output, with attribute "status".
run <- function(cmd, args = character(), input = NULL) {
  out <- suppressWarnings(system2(cmd, args, stdout = TRUE, stderr = TRUE, input = input))
  attr(out, "status") <- attr(out, "status") %||% 0L
  out
}

run_ok <- function(cmd, args = character(), what = cmd) {
  out <- run(cmd, args)
  if (attr(out, "status") != 0L)
    stop(sprintf("%s failed (status %s): %s", what, attr(out, "status"), paste(out, collapse = "\n")),
         call. = FALSE)
  invisible(out)
}

# Pids of the processes whose command line contains `text`.
procs_with <- function(text) {
  pids <- suppressWarnings(as.integer(list.files("/proc", "^[0-9]+$")))
  hit <- vapply(pids, function(pid) {
    argv <- tryCatch(readBin(sprintf("/proc/%d/cmdline", pid), "raw", 1e6), error = function(e) raw(),
                     warning = function(w) raw())
    length(argv) > 0L && length(grepRaw(charToRaw(text), argv, fixed = TRUE)) > 0L
  }, logical(1L))
  setdiff(pids[hit], Sys.getpid())
}

# `pid` and all its descendants (read from /proc before anything is killed,
# so that orphans reparented later are not missed).
proc_tree <- function(pid) {
  pids <- suppressWarnings(as.integer(list.files("/proc", "^[0-9]+$")))
  ppid <- vapply(pids, function(p) {
    st <- tryCatch(readLines(sprintf("/proc/%d/stat", p), warn = FALSE), error = function(e) "", warning = function(w) "")
    as.integer(strsplit(sub("^.*\\) ", "", st[1L]), " ", fixed = TRUE)[[1L]][2L] %||% NA)
  }, integer(1L))
  tree <- pid
  repeat {
    more <- setdiff(pids[!is.na(ppid) & ppid %in% tree], tree)
    if (!length(more)) return(tree)
    tree <- c(tree, more)
  }
}

# Kills `pids` and waits until they are gone (or zombies), so that nothing
# they do outlives the call.
kill_pids <- function(pids) {
  for (p in pids) tools::pskill(p, tools::SIGKILL)
  wait_until(function() !any(vapply(pids, pid_alive, logical(1L))), 10)
}

# Stops a service process and its descendants: SIGTERM, children first, so
# each exits cleanly and is reaped by its parent; after 5 s, SIGKILL for
# whatever is left.
stop_tree <- function(pid) {
  tree <- rev(proc_tree(pid))
  for (p in tree) {
    tools::pskill(p, tools::SIGTERM)
    wait_until(function() !pid_alive(p), 2)
  }
  kill_pids(tree)
}

# Removes a service's directory. Not with unlink(): R's unlink() (4.2)
# takes a Unix socket for a directory and leaves it, and the directory too.
remove_dir <- function(dir) {
  run("rm", c("-rf", shQuote(dir)))
}

# A TCP port free on 127.0.0.1 right now.
free_tcp_port <- function() {
  for (i in 1:50) {
    port <- sample(20000:40000, 1L)
    s <- tryCatch(serverSocket(port), error = function(e) NULL, warning = function(w) NULL)
    if (!is.null(s)) {
      close(s)
      return(port)
    }
  }
  stop("no free TCP port found")
}

# TRUE once something accepts TCP connections at host:port (from the
# network namespace `netns`, if given).
port_open <- function(host, port, netns = NULL) {
  if (is.null(netns)) {
    con <- tryCatch(suppressWarnings(socketConnection(host, port, open = "r+b", timeout = 1)),
                    error = function(e) NULL)
    if (is.null(con)) return(FALSE)
    close(con)
    return(TRUE)
  }
  probe <- sprintf("exec 3<>/dev/tcp/%s/%d", host, port)
  attr(run("ip", c("netns", "exec", netns, "bash", "-c", shQuote(probe))), "status") == 0L
}

# The Rscript command that remote daemons run: this R, with this test's
# library (where the package under test is installed).
test_rscript <- function() {
  sprintf("R_LIBS=%s %s", paste(.libPaths(), collapse = ":"), file.path(R.home("bin"), "Rscript"))
}

need_tools <- function(...) {
  tools <- c(...)
  missing <- tools[!nzchar(Sys.which(tools)) & !file.exists(tools)]
  if (length(missing))
    sprintf("not installed: %s (tools/setup.sh installs them)", paste(missing, collapse = ", "))
}

# ------------------------------------------------------------------ netns

# A network namespace with its own loopback, joined to this one by a veth
# pair: this side is 10.231.<k>.1, the namespace 10.231.<k>.2. Nothing in
# it can reach this namespace's 127.0.0.1.
start_netns <- function() {
  if (!is_root()) return("needs root (ip netns)")
  why <- need_tools("ip")
  if (!is.null(why)) return(why)
  k <- sample(1:250, 1L)
  tag <- paste0(sprintf("%x", Sys.getpid() %% 65536L), k)
  ns <- paste0("mirai-test-", tag)
  host_if <- paste0("mh", tag)
  ns_if <- paste0("mn", tag)
  host_ip <- sprintf("10.231.%d.1", k)
  ns_ip <- sprintf("10.231.%d.2", k)
  stop_fn <- function() {
    run("ip", c("netns", "del", ns))
    run("ip", c("link", "del", host_if))
  }
  ok <- tryCatch({
    run_ok("ip", c("netns", "add", ns))
    run_ok("ip", c("link", "add", host_if, "type", "veth", "peer", "name", ns_if))
    run_ok("ip", c("link", "set", ns_if, "netns", ns))
    run_ok("ip", c("addr", "add", paste0(host_ip, "/30"), "dev", host_if))
    run_ok("ip", c("link", "set", host_if, "up"))
    run_ok("ip", c("netns", "exec", ns, "ip", "addr", "add", paste0(ns_ip, "/30"), "dev", ns_if))
    run_ok("ip", c("netns", "exec", ns, "ip", "link", "set", ns_if, "up"))
    run_ok("ip", c("netns", "exec", ns, "ip", "link", "set", "lo", "up"))
    TRUE
  }, error = function(e) conditionMessage(e))
  if (!isTRUE(ok)) {
    stop_fn()
    return(paste("cannot create a network namespace:", ok))
  }
  list(name = ns, host_ip = host_ip, ns_ip = ns_ip, stop = stop_fn)
}

# ------------------------------------------------------------------ sshd

# An OpenSSH server for root with a generated host key and user key,
# listening at `listen` (in network namespace `netns`, if given). Its
# `ssh` is the client command that logs in with the user key and trusts
# the host key.
start_sshd <- function(listen = "127.0.0.1", netns = NULL) {
  if (!is_root()) return("needs root (sshd)")
  why <- need_tools("/usr/sbin/sshd", "ssh", "ssh-keygen")
  if (!is.null(why)) return(why)
  if (!requireNamespace("processx", quietly = TRUE)) return("needs the processx package")
  dir <- tempfile("sshd-")
  dir.create(dir, mode = "0700")
  for (k in c("host_key", "user_key")) {
    out <- run("ssh-keygen", c("-q", "-t", "ed25519", "-N", "''", "-f", file.path(dir, k)))
    if (attr(out, "status") != 0L) return(paste("ssh-keygen failed:", paste(out, collapse = " ")))
  }
  file.copy(file.path(dir, "user_key.pub"), file.path(dir, "authorized_keys"))
  port <- free_tcp_port()
  config <- file.path(dir, "sshd_config")
  writeLines(c(
    sprintf("Port %d", port),
    sprintf("ListenAddress %s", listen),
    sprintf("HostKey %s", file.path(dir, "host_key")),
    sprintf("AuthorizedKeysFile %s", file.path(dir, "authorized_keys")),
    sprintf("PidFile %s", file.path(dir, "sshd.pid")),
    "PermitRootLogin prohibit-password",
    "PubkeyAuthentication yes",
    "PasswordAuthentication no",
    "KbdInteractiveAuthentication no",
    "UsePAM no",
    # Keys live under /tmp, whose permissions sshd would otherwise refuse.
    "StrictModes no",
    "AllowTcpForwarding yes",
    "LogLevel ERROR"
  ), config)
  dir.create("/run/sshd", showWarnings = FALSE)
  sshd <- c("/usr/sbin/sshd", "-D", "-e", "-f", config)
  if (!is.null(netns)) sshd <- c("ip", "netns", "exec", netns, sshd)
  log <- file.path(dir, "sshd.log")
  p <- processx::process$new(sshd[1L], sshd[-1L], stdout = log, stderr = "2>&1")
  # Its sessions, and ssh clients using its key, go with it.
  stop_fn <- function() {
    kill_pids(procs_with(file.path(dir, "user_key")))
    stop_tree(p$get_pid())
    remove_dir(dir)
  }
  if (!wait_until(function() port_open(listen, port) || !p$is_alive(), 10) || !p$is_alive()) {
    why <- paste(readLines(log, warn = FALSE), collapse = " ")
    stop_fn()
    return(paste("sshd did not start:", why))
  }
  ssh <- sprintf("ssh -i %s -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o LogLevel=ERROR",
                 file.path(dir, "user_key"))
  list(port = port, host = listen, ssh = ssh, remote = sprintf("ssh://root@%s:%d", listen, port), stop = stop_fn)
}

# ------------------------------------------------------------------ Slurm

# A one-node Slurm cluster (slurmctld and slurmd on 127.0.0.1, on free
# ports) authenticating with its own munged, all in a temporary directory.
# Sets SLURM_CONF for this process (sbatch, squeue), restored by stop().
start_slurm <- function() {
  if (!is_root()) return("needs root (slurmctld, slurmd, munged)")
  why <- need_tools("/usr/sbin/slurmctld", "/usr/sbin/slurmd", "/usr/sbin/munged", "sbatch", "squeue", "scancel", "runuser")
  if (!is.null(why)) return(why)
  if (!requireNamespace("processx", quietly = TRUE)) return("needs the processx package")
  # Outside R's session directory (mode 0700), which munged, running as
  # the munge user, could not enter.
  dir <- file.path("/tmp", basename(tempfile("mirai-slurm-")))
  dir.create(dir, mode = "0755")
  Sys.chmod(dir, "0755")
  procs <- list()
  old_conf <- Sys.getenv("SLURM_CONF", NA)
  stop_fn <- function() {
    if (length(procs)) run("scancel", c("--full", "--user=root"))
    for (p in rev(procs)) stop_tree(p$get_pid())
    if (is.na(old_conf)) Sys.unsetenv("SLURM_CONF") else Sys.setenv(SLURM_CONF = old_conf)
    remove_dir(dir)
  }
  fail <- function(what) {
    logs <- unlist(lapply(list.files(dir, "\\.log$", full.names = TRUE), function(f) tail(readLines(f, warn = FALSE), 5)))
    stop_fn()
    paste(what, paste(logs, collapse = " | "))
  }
  # munge: its own key, socket and files, owned by the munge user (munged
  # refuses to run as root).
  mdir <- file.path(dir, "munge")
  dir.create(mdir, mode = "0755")
  key <- file.path(mdir, "munge.key")
  writeBin(as.raw(sample(0:255, 1024L, TRUE)), key)
  Sys.chmod(key, "0400")
  if (attr(run("chown", c("-R", "munge:munge", mdir)), "status") != 0L)
    return(fail("cannot chown the munge directory:"))
  socket <- file.path(mdir, "munge.socket")
  munged <- processx::process$new("runuser", c("-u", "munge", "--", "/usr/sbin/munged", "-F", "--force",
                                              paste0("--key-file=", key), paste0("--socket=", socket),
                                              paste0("--pid-file=", file.path(mdir, "munged.pid")),
                                              paste0("--log-file=", file.path(mdir, "munged.log")),
                                              paste0("--seed-file=", file.path(mdir, "munged.seed"))),
                                  stdout = file.path(dir, "munged-out.log"), stderr = "2>&1")
  procs <- list(munged)
  if (!wait_until(function() file.exists(socket) || !munged$is_alive(), 10) || !munged$is_alive())
    return(fail("munged did not start:"))
  node <- "miraitest"
  cpus <- max(1L, parallel::detectCores())
  conf <- file.path(dir, "slurm.conf")
  for (d in c("state", "spool", "jobs")) dir.create(file.path(dir, d))
  writeLines(c(
    "ClusterName=miraitest",
    "SlurmctldHost=localhost(127.0.0.1)",
    sprintf("SlurmctldPort=%d", free_tcp_port()),
    sprintf("SlurmdPort=%d", free_tcp_port()),
    "SlurmUser=root",
    "SlurmdUser=root",
    "AuthType=auth/munge",
    "CredType=cred/munge",
    sprintf("AuthInfo=socket=%s", socket),
    sprintf("StateSaveLocation=%s", file.path(dir, "state")),
    sprintf("SlurmdSpoolDir=%s", file.path(dir, "spool")),
    sprintf("SlurmctldPidFile=%s", file.path(dir, "slurmctld.pid")),
    sprintf("SlurmdPidFile=%s", file.path(dir, "slurmd.pid")),
    sprintf("SlurmctldLogFile=%s", file.path(dir, "slurmctld.log")),
    sprintf("SlurmdLogFile=%s", file.path(dir, "slurmd.log")),
    # No cgroups here: plain process tracking, no task containment.
    "ProctrackType=proctrack/linuxproc",
    "TaskPlugin=task/none",
    "JobAcctGatherType=jobacct_gather/none",
    "MailProg=/bin/true",
    "ReturnToService=2",
    "SchedulerType=sched/builtin",
    # Start jobs at once rather than after the default batch delay.
    "SchedulerParameters=batch_sched_delay=0",
    "SelectType=select/cons_tres",
    "SelectTypeParameters=CR_Core",
    sprintf("NodeName=%s NodeAddr=127.0.0.1 CPUs=%d State=UNKNOWN", node, cpus),
    sprintf("PartitionName=debug Nodes=%s Default=YES MaxTime=INFINITE State=UP", node)
  ), conf)
  Sys.setenv(SLURM_CONF = conf)
  ctld <- processx::process$new("/usr/sbin/slurmctld", c("-D", "-i", "-f", conf),
                                stdout = file.path(dir, "slurmctld-out.log"), stderr = "2>&1")
  procs <- c(procs, ctld)
  slurmd <- processx::process$new("/usr/sbin/slurmd", c("-D", "-N", node, "-f", conf),
                                  stdout = file.path(dir, "slurmd-out.log"), stderr = "2>&1")
  procs <- c(procs, slurmd)
  idle <- function() {
    out <- run("sinfo", c("-h", "-N", "-o", "%t"))
    attr(out, "status") == 0L && any(grepl("^idle", out))
  }
  if (!wait_until(function() idle() || !ctld$is_alive() || !slurmd$is_alive(), 30) || !idle())
    return(fail("Slurm did not come up:"))
  list(conf = conf, dir = dir, jobs = file.path(dir, "jobs"), node = node, stop = stop_fn)
}

# Job ids Slurm still has (pending or running).
slurm_jobs <- function() {
  out <- run("squeue", c("-h", "-o", "%i"))
  out[nzchar(out)]
}

# Torque's commands over Slurm (Debian's slurm-wlm-torque: perl wrappers,
# qsub turning #PBS job scripts into sbatch submissions). The package
# conflicts with gridengine-client (both ship /usr/bin/qsub), so
# tools/setup.sh unpacks it into /opt/slurm-wlm-torque, with links to
# Slurm's commands beside it (its qsub runs the sbatch in its own
# directory); where it is installed as a package, /usr/bin has both.
torque_qsub <- function() {
  for (qsub in c("/opt/slurm-wlm-torque/usr/bin/qsub", "/usr/bin/qsub")) {
    head <- if (file.exists(qsub)) readLines(qsub, n = 5L, warn = FALSE) else ""
    if (grepl("perl", head[1L]) && any(grepl("pbs", head, ignore.case = TRUE)) &&
        file.exists(file.path(dirname(qsub), "sbatch")))
      return(list(qsub = qsub, qstat = file.path(dirname(qsub), "qstat")))
  }
  paste("not installed: slurm-wlm-torque's qsub with sbatch beside it",
        "(tools/setup.sh unpacks it into /opt/slurm-wlm-torque)")
}

# Job ids the wrapper's qstat lists as not completed (state other than C).
torque_active <- function(torque) {
  out <- run(torque$qstat)
  rows <- strsplit(trimws(grep("^[0-9]", out, value = TRUE)), "[[:space:]]+")
  ids <- vapply(rows, `[[`, "", 1L)
  state <- vapply(rows, function(r) r[length(r) - 1L], "")
  ids[state != "C"]
}

# ------------------------------------------------------------------ Grid Engine

# A one-node Sun Grid Engine (Debian's gridengine-master, -exec, -client):
# sge_qmaster and sge_execd in the foreground (SGE_ND, in their environment
# only), on free ports, with a cell of their own in a temporary SGE_ROOT
# (the packages' binaries linked in), so nothing of the system's cell is
# used or changed. The cell is written with the packages' own spooling tool
# before the qmaster starts: classic (file) spooling, daemons running as
# root (admin_user none), root allowed to run jobs (min_uid 0), the host
# known by the name of 127.0.0.1 (usually "localhost") whatever its own name
# is (host_aliases), so that both daemons see it under one name; then a
# queue all.q with 4 slots and no load threshold (the load here is that of
# every other test), and scheduling every second. Sets SGE_ROOT, SGE_CELL,
# SGE_QMASTER_PORT and SGE_EXECD_PORT for this process (qsub, qstat,
# qdel), restored by stop(). Up in about 1 s; a job starts about 1 s after
# its submission.
start_sge <- function() {
  if (!is_root()) return("needs root (sge_qmaster, sge_execd)")
  bin <- "/usr/lib/gridengine"
  why <- need_tools("/usr/sbin/sge_qmaster", "/usr/sbin/sge_execd", file.path(bin, "spooldefaults"),
                    "/var/lib/gridengine/bin", "/usr/share/gridengine/default-configuration")
  if (!is.null(why)) return(paste(why, "(gridengine-master, gridengine-exec, gridengine-client)"))
  # /usr/bin/qsub is Grid Engine's only if gridengine-client owns it (it
  # conflicts with slurm-wlm-torque's).
  qsub <- file.path(bin, "qsub")
  if (!file.exists(qsub)) return("not installed: gridengine-client (tools/setup.sh installs it)")
  if (!requireNamespace("processx", quietly = TRUE)) return("needs the processx package")
  root <- file.path("/tmp", basename(tempfile("mirai-sge-")))
  dir.create(root, mode = "0755")
  vars <- c("SGE_ROOT", "SGE_CELL", "SGE_QMASTER_PORT", "SGE_EXECD_PORT")
  old <- Sys.getenv(vars, NA, names = TRUE)
  procs <- list()
  host <- character()
  sge <- function(cmd, args = character()) run(file.path(bin, cmd), args)
  stop_fn <- function() {
    if (length(procs) == 2L) {
      sge("qdel", c("-f", "-u", "root"))
      sge("qconf", c("-kej", host))
    }
    if (length(procs)) sge("qconf", "-km")
    for (p in rev(procs)) stop_tree(p$get_pid())
    for (v in vars) if (is.na(old[[v]])) Sys.unsetenv(v) else do.call(Sys.setenv, as.list(old[v]))
    remove_dir(root)
  }
  fail <- function(what, out = character()) {
    force(out)
    logs <- unlist(lapply(c(list.files(root, "\\.log$", full.names = TRUE),
                            file.path(root, "spool", c("qmaster", file.path("execd", host)),
                                      "messages")),
                          function(f) if (file.exists(f)) tail(readLines(f, warn = FALSE), 5)))
    stop_fn()
    paste(what, paste(c(out, logs), collapse = " | "))
  }
  Sys.setenv(SGE_ROOT = root, SGE_CELL = "mirai", SGE_QMASTER_PORT = free_tcp_port(),
             SGE_EXECD_PORT = free_tcp_port())
  # The name SGE's own resolver gives 127.0.0.1: the daemons talk over
  # loopback, and each side must see the other under one name.
  host <- sge("gethostbyaddr", c("-name", "127.0.0.1"))
  if (attr(host, "status") != 0L || length(host) != 1L || !nzchar(host))
    return(fail("cannot resolve 127.0.0.1:", host))
  for (d in c("bin", "lib", "utilbin"))
    file.symlink(file.path("/var/lib/gridengine", d), file.path(root, d))
  file.symlink("/usr/share/gridengine/util", file.path(root, "util"))
  common <- file.path(root, "mirai", "common")
  qspool <- file.path(root, "spool", "qmaster")
  tpl <- file.path(root, "templates")
  dirs <- c(common, qspool, file.path(root, "spool", "execd"), file.path(tpl, c("hosts", "queues")))
  for (d in dirs) dir.create(d, recursive = TRUE)
  writeLines(c(
    "admin_user none", "default_domain none", "ignore_fqdn true",
    "spooling_method classic", "spooling_lib libspoolc",
    sprintf("spooling_params %s;%s", common, qspool),
    "binary_path /usr/sbin", sprintf("qmaster_spool_dir %s", qspool),
    "security_mode none", "listener_threads 2", "worker_threads 2", "scheduler_threads 1"
  ), file.path(common, "bootstrap"))
  writeLines(host, file.path(common, "act_qmaster"))
  if (Sys.info()[["nodename"]] != host)
    writeLines(paste(host, Sys.info()[["nodename"]]), file.path(common, "host_aliases"))
  conf <- readLines("/usr/share/gridengine/default-configuration")
  set <- function(lines, key, value)
    sub(sprintf("^%s[[:space:]].*$", key), paste(key, value), lines)
  conf <- set(conf, "execd_spool_dir", file.path(root, "spool", "execd"))
  conf <- set(conf, "min_uid", "0")
  conf <- set(conf, "min_gid", "0")
  conf <- set(conf, "mailer", "/bin/true")
  conf <- set(conf, "load_report_time", "00:00:05")
  writeLines(conf, file.path(tpl, "global"))
  writeLines(paste("hostname", host), file.path(tpl, "hosts", host))
  queue <- c(
    "qname all.q", paste("hostlist", host), "seq_no 0", "load_thresholds NONE",
    "suspend_thresholds NONE", "nsuspend 1", "suspend_interval 00:05:00", "priority 0",
    "min_cpu_interval 00:05:00", "processors UNDEFINED", "qtype BATCH", "ckpt_list NONE",
    "pe_list NONE", "rerun FALSE", "slots 4", "tmpdir /tmp", "shell /bin/sh", "prolog NONE",
    "epilog NONE", "shell_start_mode unix_behavior", "starter_method NONE",
    "suspend_method NONE", "resume_method NONE", "terminate_method NONE", "notify 00:00:60",
    "owner_list NONE", "user_lists NONE", "xuser_lists NONE", "subordinate_list NONE",
    "complex_values NONE", "projects NONE", "xprojects NONE", "calendar NONE",
    "initial_state default",
    paste(c("s_rt", "h_rt", "s_cpu", "h_cpu", "s_fsize", "h_fsize", "s_data", "h_data",
            "s_stack", "h_stack", "s_core", "h_core", "s_rss", "h_rss", "s_vmem", "h_vmem"),
          "INFINITY"))
  writeLines(queue, file.path(tpl, "queues", "all.q"))
  spool <- list(c("configuration", file.path(tpl, "global")),
                c("complexes", "/usr/share/gridengine/util/resources/centry"),
                c("usersets", "/usr/share/gridengine/util/resources/usersets"),
                c("managers", "root"),
                c("adminhosts", file.path(tpl, "hosts")),
                c("submithosts", file.path(tpl, "hosts")))
  for (a in spool) {
    out <- sge("spooldefaults", a)
    if (attr(out, "status") != 0L) return(fail(paste("spooldefaults", a[1L], "failed:"), out))
  }
  qmaster <- processx::process$new("/usr/sbin/sge_qmaster", stdout = file.path(root, "qmaster.log"),
                                   stderr = "2>&1", env = c("current", SGE_ND = "1"))
  procs <- list(qmaster)
  up <- function() attr(sge("qconf", "-ss"), "status") == 0L
  if (!wait_until(function() up() || !qmaster$is_alive(), 20) || !up())
    return(fail("sge_qmaster did not come up:"))
  # Schedule every second (the default is every 15 s).
  sconf <- file.path(tpl, "sched")
  sc <- sge("qconf", "-ssconf")
  sc <- set(sc, "schedule_interval", "0:0:1")
  sc <- set(sc, "flush_submit_sec", "1")
  sc <- set(sc, "flush_finish_sec", "1")
  sc <- set(sc, "job_load_adjustments", "NONE")
  writeLines(sc, sconf)
  out <- sge("qconf", c("-Msconf", sconf))
  if (attr(out, "status") != 0L) return(fail("qconf -Msconf failed:", out))
  # Through the qmaster (spooled beforehand, the queue would get no
  # instance on the host).
  out <- sge("qconf", c("-Aq", file.path(tpl, "queues", "all.q")))
  if (attr(out, "status") != 0L) return(fail("qconf -Aq failed:", out))
  execd <- processx::process$new("/usr/sbin/sge_execd", stdout = file.path(root, "execd.log"),
                                 stderr = "2>&1", env = c("current", SGE_ND = "1"))
  procs <- c(procs, execd)
  ready <- function() {
    out <- sge("qstat", c("-f", "-q", "all.q"))
    # The queue instance is listed without a state (such as "u", unknown)
    # once the execd has reported.
    instance <- "^all\\.q@[^ ]+ +B +[0-9/]+ +[-0-9.]+ +[^ ]+ *$"
    attr(out, "status") == 0L && any(grepl(instance, out))
  }
  if (!wait_until(function() ready() || !execd$is_alive(), 30) || !ready())
    return(fail("sge_execd did not report:", c(sge("qstat", "-f"), sge("qhost"))))
  jobs <- file.path(root, "jobs")
  dir.create(jobs)
  list(root = root, jobs = jobs, qsub = qsub, stop = stop_fn)
}

# Job ids Grid Engine still has (pending, running or being deleted).
sge_jobs <- function() {
  out <- run("/usr/lib/gridengine/qstat", c("-u", "root"))
  ids <- sub("^[[:space:]]*([0-9]+)[[:space:]].*$", "\\1", grep("^[[:space:]]*[0-9]+[[:space:]]", out, value = TRUE))
  ids
}

# ------------------------------------------------------------------ HTTP launch API

# A job-launching HTTP API (python3's http.server): each POST is recorded in
# `dir` (method, path, headers, the JSON body's `call`) and starts
# `Rscript -e <call>`. Answers 201 with the job's pid, or 400 if the body is
# not JSON with a `call`.
start_http_launcher <- function() {
  why <- need_tools("/usr/bin/python3")
  if (!is.null(why)) return(why)
  if (!requireNamespace("processx", quietly = TRUE)) return("needs the processx package")
  dir <- tempfile("http-")
  dir.create(dir)
  script <- file.path(dir, "launcher.py")
  writeLines(c(
    "import json, os, subprocess, sys",
    "from http.server import BaseHTTPRequestHandler, HTTPServer",
    "out, rscript, libs = sys.argv[1:4]",
    "jobs = []",
    "class Launcher(BaseHTTPRequestHandler):",
    "    def do_POST(self):",
    "        body = self.rfile.read(int(self.headers.get('Content-Length', 0))).decode()",
    "        rec = {'method': self.command, 'path': self.path, 'body': body}",
    "        rec.update({k.lower(): v for k, v in self.headers.items()})",
    "        try:",
    "            rec['call'] = json.loads(body)['call']",
    "        except Exception as e:",
    "            rec['error'] = str(e)",
    "        n = len(os.listdir(out))",
    "        with open(os.path.join(out, 'req-%d.json' % n), 'w') as f:",
    "            json.dump(rec, f)",
    "        if 'call' not in rec:",
    "            self.send_response(400)",
    "            self.end_headers()",
    "            self.wfile.write(b'body must be JSON with a call')",
    "            return",
    "        env = dict(os.environ, R_LIBS=libs)",
    "        jobs.append(subprocess.Popen([rscript, '-e', rec['call']], env=env, stdin=subprocess.DEVNULL))",
    "        reply = json.dumps({'id': jobs[-1].pid}).encode()",
    "        self.send_response(201)",
    "        self.send_header('Content-Type', 'application/json')",
    "        self.send_header('Content-Length', str(len(reply)))",
    "        self.end_headers()",
    "        self.wfile.write(reply)",
    "    def log_message(self, *args):",
    "        pass",
    "srv = HTTPServer(('127.0.0.1', 0), Launcher)",
    "with open(os.path.join(out, '..', 'port'), 'w') as f:",
    "    f.write(str(srv.server_address[1]))",
    "srv.serve_forever()"
  ), script)
  reqs <- file.path(dir, "requests")
  dir.create(reqs)
  p <- processx::process$new("/usr/bin/python3", c(script, reqs, file.path(R.home("bin"), "Rscript"),
                                                   paste(.libPaths(), collapse = ":")),
                             stdout = file.path(dir, "out.log"), stderr = "2>&1")
  stop_fn <- function() {
    stop_tree(p$get_pid())
    remove_dir(dir)
  }
  port_file <- file.path(dir, "port")
  if (!wait_until(function() (file.exists(port_file) && length(readLines(port_file, warn = FALSE))) || !p$is_alive(), 10) ||
      !p$is_alive()) {
    why <- paste(readLines(file.path(dir, "out.log"), warn = FALSE), collapse = " ")
    stop_fn()
    return(paste("the HTTP launcher did not start:", why))
  }
  port <- as.integer(readLines(port_file, warn = FALSE))
  list(url = sprintf("http://127.0.0.1:%d/launch", port), requests = reqs, stop = stop_fn)
}

# The recorded requests, each a named list of strings (parsed by python3,
# which wrote them, so no JSON package is needed here).
http_requests <- function(launcher) {
  files <- sort(list.files(launcher$requests, full.names = TRUE))
  lapply(files, function(f) {
    flat <- run("/usr/bin/python3", c("-c", shQuote(paste(
      "import json, sys",
      "for k, v in json.load(open(sys.argv[1])).items(): print(k + '\\t' + json.dumps(v))",
      sep = "\n")), f))
    vals <- sub("^[^\t]*\t", "", flat)
    # Each value is a JSON string: R's parser reads the same escapes.
    structure(lapply(vals, function(v) eval(parse(text = v))), names = sub("\t.*$", "", flat))
  })
}

skip_unless_service <- function(svc) {
  if (is.character(svc)) testthat::skip(paste("service unavailable:", svc))
}
