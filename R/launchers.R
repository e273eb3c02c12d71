# Launchers: the commands that start daemons on other machines (by SSH, an
# HPC scheduler, an HTTP API or any other command), and `miraiLaunchCmd`.

#' Launch Remote Daemons
#'
#' Builds the shell commands that start daemons for a compute profile set
#' up with [daemons()] `(url = ...)`, and, when `remote` has a `command`,
#' runs them: over SSH ([ssh_config()]), through an HPC scheduler
#' ([cluster_config()]), an HTTP API ([http_config()]) or any other command
#' ([remote_config()]). Without a `command` the commands are only returned,
#' to be run by hand on the remote machines.
#'
#' Each command carries what a daemon needs to join the host: its URL, its
#' random number stream (`rs`, for profiles without dispatcher or seed), the
#' TLS certificate (`tlscert`) when the profile uses TLS, and the profile's
#' secret. The secret is set as the environment variable `MIRAI_SECRET` of
#' the command (`MIRAI_SECRET=... Rscript -e '...'`), so it is not in the
#' argument list of the daemon process on the remote machine, where other
#' users could read it with `ps`. [ssh_config()] hands the command to `ssh`
#' in a private configuration file (`RemoteCommand`) rather than as an
#' argument, so it is in no argument list on this machine either; on the
#' remote machine it is in the arguments of the login shell only until that
#' starts `Rscript` (at once, for `sh` and `bash`). [cluster_config()]
#' gives the job script to the submission command in a file only the user
#' can read (for `bsub`, on its standard input), so the secret is in no
#' process's arguments. A [remote_config()] `command` receives the
#' launch command as an argument, so there the secret is visible in the
#' arguments of that command while it runs.
#' [http_config()] sends it in the request body, as an argument of the
#' daemon call (so it is in the launched daemon's arguments, and reaches
#' the API in clear unless the URL is `https://`). The secret never crosses
#' the connection between daemon and host: daemons prove they hold it by
#' challenge-response. With `daemons(..., auth = FALSE)` there is no secret.
#'
#' Printing a `miraiLaunchCmd` shows the commands, numbered, for copy and
#' paste: they include the secret, since a daemon started without it is
#' refused.
#'
#' @param n (integer) number of daemons to launch, from 0 to 10000. With a [ssh_config()] of
#'   several remotes, 1 launches one daemon on each. Default 1.
#' @param remote (list) a launch configuration from [remote_config()],
#'   [ssh_config()], [cluster_config()] or [http_config()]. Default
#'   `remote_config()`: only build the commands.
#' @param ... (named arguments) [daemon()] arguments overriding those given
#'   to [daemons()], checked as there. Default: none.
#' @param .compute (character) name of the compute profile. Default NULL:
#'   the current profile.
#' @return A character vector of launch commands, of class `miraiLaunchCmd`
#'   (invisibly if they were run). For [http_config()], invisibly, the list
#'   of HTTP responses (each a list of `status`, `headers` and `data`).
#' @seealso [daemons()], [launch_local()].
#' @examples
#' # Listen on loopback only and print the commands, for copy and paste
#' # (on another machine, listen at one of host_url() instead):
#' daemons(url = "tcp://127.0.0.1:0", dispatcher = FALSE, .compute = "rem")
#' launch_remote(2, .compute = "rem")
#' daemons(0, .compute = "rem")
#' \dontrun{
#' # Not run: needs a machine reachable by SSH without a password, with R
#' # and mirai installed. Two daemons there, tunnelled back to this one:
#' daemons(
#'   n = 2,
#'   url = local_url(tcp = TRUE, port = 5555),
#'   remote = ssh_config("ssh://user@10.75.32.90", tunnel = TRUE)
#' )
#' daemons(0)
#' }
#' @export
launch_remote <- function(n = 1L, remote = remote_config(), ..., .compute = NULL) {
  if (inherits(n, c("miraiCluster", "miraiNode"))) {
    .compute <- attr(n, "id")
    n <- if (inherits(n, "miraiNode")) 1L else length(n)
  }
  prof <- launchable_profile(.compute)
  check_launch_count(n)
  check_remote(remote)
  dots <- prof$dots
  new <- daemon_dots(list(...))
  dots[names(new)] <- new
  check_tunnel(remote, prof$url)
  if (is.list(remote$args) && length(remote$args) > 1L) {
    if (n == 1L) n <- length(remote$args)
    else if (n != length(remote$args))
      abort("`n` must equal the length of `args`, or either must be 1")
  }
  n <- as.integer(n)
  if (identical(remote$type, "http")) {
    calls <- vapply(seq_len(n), function(i) daemon_call(prof, dots, with_secret = TRUE),
                    character(1L))
    return(invisible(http_launch(remote, calls)))
  }
  cmds <- vapply(seq_len(n), function(i) daemon_shell_command(prof, remote$rscript, dots),
                 character(1L))
  cmds <- structure(cmds, class = "miraiLaunchCmd")
  if (is.null(remote$command)) return(cmds)
  if (is.null(remote$quote)) run_cluster(remote, cmds, prof) else run_remote(remote, cmds, prof$url)
  invisible(cmds)
}

#' Generic Remote Launch Configuration
#'
#' A launch configuration for [launch_remote()] and [daemons()] `(remote =)`
#' that runs `command` with `args`, in which `"."` stands for the daemon's
#' launch command. With `command = NULL` the launch commands are only
#' returned (and printed), for manual deployment.
#'
#' @param command (character) the program to run, e.g. `"ssh"` (a shell
#'   command, which may include options), or NULL to run nothing. Default
#'   NULL.
#' @param args (character or list) the arguments of `command`, one of which
#'   must be `"."`; or a list of such vectors, one per daemon. Default
#'   `c("", ".")`.
#' @param rscript (character) how to call Rscript on the remote machine: a
#'   path, or a command prefix such as `"R_LIBS=/opt/r Rscript"`. Default
#'   `"Rscript"` (on the remote PATH).
#' @param quote (logical) shell-quote the launch command where it replaces
#'   `"."` (needed when it is passed through a remote shell as one
#'   argument, as by `ssh`). Default FALSE.
#' @return A launch configuration (a list).
#' @seealso [ssh_config()], [cluster_config()], [http_config()].
#' @examples
#' remote_config()
#' remote_config(command = "ssh", args = c("-p 22", "user@10.75.32.90", "."), quote = TRUE)
#' @export
remote_config <- function(command = NULL, args = c("", "."), rscript = "Rscript", quote = FALSE) {
  if (!is.null(command)) check_string(command, "command", "a character string, or NULL")
  arg_sets <- if (is.list(args)) args else list(args)
  has_dot <- function(a) is.character(a) && "." %in% a
  if (!length(arg_sets) || !all(vapply(arg_sets, has_dot, logical(1L))))
    abort("`.` must be an element of the character vector(s) supplied to `args`")
  check_string(rscript, "rscript")
  check_flag(quote, "quote")
  list(command = command, args = args, rscript = rscript, quote = quote)
}

#' SSH Remote Launch Configuration
#'
#' A launch configuration that starts daemons over SSH, one per remote, with
#' `ssh -o ConnectTimeout=<timeout> -fTp <port> [user@]host '<command>'`.
#' `ssh` must be able to log in without a password (keys or an agent).
#'
#' With `tunnel = TRUE`, the SSH connection also carries the daemons' own
#' connections back to the host (reverse port forwarding,
#' `-R <port>:127.0.0.1:<port>`), for remote machines that cannot reach the
#' host directly. The daemons `url` must then be `tcp://127.0.0.1:<port>`
#' with a fixed port (e.g. `local_url(tcp = TRUE, port = 5555)`), and the
#' same port must be free on the remote machines. `ssh` is told to exit if
#' the forwarding fails (`ExitOnForwardFailure`), so a failed tunnel is an
#' error rather than a daemon that cannot connect.
#'
#' The launch command goes to `ssh` as `RemoteCommand` in a temporary
#' configuration file readable only by this user, which then includes
#' `~/.ssh/config` and `/etc/ssh/ssh_config`, so that the profile's secret
#' is not in the arguments of the `ssh` process (see [launch_remote()]).
#' The printed commands are those that run on the remote machines.
#'
#' @param remotes (character) remote machines as URLs
#'   `ssh://[user@]host[:port]` (port 22 if none). No default: required.
#' @param tunnel (logical) tunnel the daemons' connections through SSH.
#'   Default FALSE.
#' @param timeout (integer) seconds to wait for each SSH connection.
#'   Default 10.
#' @param command (character) the ssh client, possibly with options, e.g.
#'   `"ssh -i ~/.ssh/cluster_key"`. Default `"ssh"`.
#' @param rscript (character) how to call Rscript on the remote machines: a
#'   path, or a command prefix such as `"R_LIBS=/opt/r Rscript"`. Default
#'   `"Rscript"`.
#' @return A launch configuration (a list).
#' @seealso [launch_remote()], [remote_config()].
#' @examples
#' ssh_config("ssh://user@10.75.32.90:222")
#' ssh_config(c("ssh://10.75.32.90", "ssh://10.75.32.91"), tunnel = TRUE)
#' @export
ssh_config <- function(remotes, tunnel = FALSE, timeout = 10, command = "ssh",
                       rscript = "Rscript") {
  if (missing(remotes) || !is.character(remotes) || !length(remotes) || anyNA(remotes))
    abort("`remotes` must be a character vector of URLs such as \"ssh://user@host:22\"")
  check_flag(tunnel, "tunnel")
  check_number(timeout, "timeout", "a positive number of seconds", open = TRUE)
  check_string(command, "command")
  check_string(rscript, "rscript")
  args <- lapply(remotes, function(r) {
    to <- url_parts(r, ssh = TRUE)
    login <- if (is.null(to$user)) to$host else paste0(to$user, "@", to$host)
    c(sprintf("-o ConnectTimeout=%d -fTp %d", as.integer(timeout), to$port), login, ".")
  })
  list(command = command, args = args, rscript = rscript, quote = TRUE, tunnel = tunnel)
}

#' HPC Cluster Launch Configuration
#'
#' A launch configuration that submits each daemon as a job to an HPC
#' scheduler: Slurm (`sbatch`), SGE, Torque or PBS (`qsub`), or LSF
#' (`bsub`). The job script is `#!/bin/sh`, then `options`, then the launch
#' command. It is given to the submission command as a file named `mirai`
#' (readable only by the user, removed once the command returns; the
#' scheduler keeps its own copy), or for `bsub` on its standard input, so
#' the profile's secret is in no process's arguments.
#'
#' Jobs end when their daemon exits, e.g. at `daemons(0)`. So that none is
#' left waiting in the queue to start a daemon nobody needs, `daemons(0)`
#' also cancels every job submitted for the profile: with `scancel`, `qdel`
#' or `bkill` (in the directory of the submission command, if that is a
#' path), by the job id the submission command printed.
#'
#' @param command (character) the submission command: `"sbatch"`, `"qsub"`
#'   or `"bsub"`, possibly a path, possibly with options (the job script's
#'   file is added last). Default `"sbatch"`.
#' @param options (character) the job script's scheduler directives and any
#'   set-up, one per line (leading whitespace is removed), e.g.
#'   `"#SBATCH --job-name=mirai\n#SBATCH --mem=10G\nmodule load R/4.5.0"`.
#'   Default `""`.
#' @param rscript (character) how to call Rscript on the compute nodes: a
#'   path, or a command prefix. Default `"Rscript"`.
#' @return A launch configuration (a list).
#' @seealso [launch_remote()].
#' @examples
#' cluster_config("sbatch", "#SBATCH --job-name=mirai\n#SBATCH --time=01:00:00")
#' cluster_config("qsub", "#$ -N mirai\n#$ -l mem_free=10G")
#' cluster_config("bsub", "#BSUB -J mirai\n#BSUB -n 1")
#' @export
cluster_config <- function(command = "sbatch", options = "", rscript = "Rscript") {
  check_string(command, "command", "a character string such as \"sbatch\"")
  if (!is.character(options) || anyNA(options))
    abort("`options` must be a character string")
  check_string(rscript, "rscript")
  lines <- unlist(strsplit(paste(options, collapse = "\n"), "\n", fixed = TRUE))
  lines <- sub("^[[:space:]]+", "", lines)
  script <- paste(c("#!/bin/sh", lines[nzchar(lines)]), collapse = "\n")
  scheduler <- submit_program(command)
  list(command = "/bin/sh", args = c(sprintf("%s<<'EOF'\n%s\n", command, script), ".", "\nEOF"),
       rscript = rscript, quote = NULL, submit = command, script = script,
       stdin = identical(scheduler$name, "bsub"), cancel = scheduler$cancel)
}

#' HTTP API Launch Configuration
#'
#' A launch configuration that starts each daemon with an HTTP request to a
#' job-launching API, by default that of Posit Workbench.
#'
#' `data` holds a `%s` placeholder, which receives the daemon call
#' (`mirai::daemon(...)`), escaped for a JSON string. Each of `url`,
#' `headers`, `data`, `cookie` and `token` may be a function, called at
#' launch (so credentials are read when they are needed); `...` is passed
#' to `data` when it is a function. `cookie` and `token` add `Cookie` and
#' `Authorization: Bearer` headers.
#'
#' The defaults target Posit Workbench's `launch_job` API: the URL from
#' the `RS_SERVER_ADDRESS` environment variable, the session cookie from
#' `RS_SESSION_RPC_COOKIE`, and a job that runs `Rscript` with the current
#' library paths; `...` may set `rscript`, `job_name`, `cluster`, `image`,
#' `resource_profile`, `cpus` and `memory` (MB). Not tested against
#' Workbench itself here.
#'
#' Requests are made with the 'curl' package (each times out after
#' `r HTTP_TIMEOUT_SECS` seconds), and the daemon call is escaped for JSON by
#' the 'jsonlite' package: launching needs both installed (mirai suggests
#' them; it does not require them). The daemon call in the request body
#' includes the profile's secret (`secret =`): use `https://` for an API on
#' another machine.
#'
#' @param url (character or function) the API endpoint. Default: Posit
#'   Workbench's, from `RS_SERVER_ADDRESS`.
#' @param method (character) the HTTP method. Default `"POST"`.
#' @param headers (character or function) named request headers. Default:
#'   Posit Workbench's (JSON content, and with the default `data` the
#'   session cookie from `RS_SESSION_RPC_COOKIE`).
#' @param data (character or function) the request body, with a `%s` for
#'   the daemon call. Default: Posit Workbench's `launch_job` request.
#' @param ... (named arguments) passed to `data` when it is a function (kept
#'   as the configuration's `dots`).
#' @param cookie (character or function) a cookie to send, or NULL. Default
#'   NULL.
#' @param token (character or function) a bearer token to send, or NULL.
#'   Default NULL.
#' @return A launch configuration: a list of `type` ("http"), `url`,
#'   `method`, `headers`, `data`, `dots` (the `...` arguments), `cookie` and
#'   `token`.
#' @seealso [launch_remote()].
#' @examples
#' cfg <- http_config(
#'   url = "http://127.0.0.1:8000/launch",
#'   headers = c(`Content-Type` = "application/json"),
#'   data = '{"command": "%s"}',
#'   token = function() Sys.getenv("LAUNCH_API_TOKEN")
#' )
#' str(cfg)
#' @export
http_config <- function(url = posit_workbench_url, method = "POST",
                        headers = posit_workbench_headers, data = posit_workbench_data, ...,
                        cookie = NULL, token = NULL) {
  lazy <- function(x) is.function(x) || is.character(x)
  if (!lazy(url))
    abort("`url` must be a character string or a function returning one")
  check_string(method, "method", "a character string such as \"POST\"")
  if (!lazy(headers))
    abort("`headers` must be a named character vector or a function returning one")
  if (!lazy(data))
    abort("`data` must be a character string or a function returning one")
  if (!is.null(cookie) && !lazy(cookie))
    abort("`cookie` must be a character string, a function or NULL")
  if (!is.null(token) && !lazy(token))
    abort("`token` must be a character string, a function or NULL")
  # The Workbench session cookie goes only with the Workbench request.
  if (identical(headers, posit_workbench_headers) && !identical(data, posit_workbench_data))
    headers <- json_headers
  list(type = "http", url = url, method = method, headers = headers, data = data, dots = list(...),
       cookie = cookie, token = token)
}

#' @export
print.miraiLaunchCmd <- function(x, ...) {
  for (i in seq_along(x)) cat(sprintf("[%d]\n%s\n\n", i, x[[i]]))
  invisible(x)
}

# ---------------------------------------------------------------- internals

check_remote <- function(remote) {
  command_config <- function(r) all(c("args", "rscript") %in% names(r)) && is_string(r$rscript)
  ok <- is.list(remote) && (identical(remote$type, "http") || command_config(remote))
  if (!ok) abort("`remote` must be a launch configuration from remote_config(), ssh_config(), ",
                "cluster_config() or http_config()")
}

# The parts of `url` (see mirai_url_parts in rust/src/r/glue/helpers.rs, the
# one URL parser): `ssh = TRUE` for an ssh:// URL, else one daemons dial.
url_parts <- function(url, ssh = FALSE) .Call(C_mirai_url_parts, url, ssh)

# An SSH tunnel forwards the port of a loopback URL.
check_tunnel <- function(remote, url) {
  if (isTRUE(remote$tunnel) && !identical(url_parts(url)$host, "127.0.0.1"))
    abort("SSH tunnelling requires daemons `url` hostname to be `127.0.0.1`")
}

# The daemon() call for one more daemon of `prof`: URL, dispatcher, dots,
# its stream (`rs`) and the TLS certificate (both from launch_args()).
# `with_secret` writes the secret as an argument, for launchers that have no
# environment to put it in.
daemon_call <- function(prof, dots, with_secret = FALSE) {
  args <- launch_args(prof, dots)
  if (with_secret && !is.null(prof$secret)) args$secret <- prof$secret
  launch_command(prof$url, args)
}

# A shell command that starts one daemon; the secret goes in its
# environment, not in Rscript's arguments.
daemon_shell_command <- function(prof, rscript, dots) {
  env <- if (is.null(prof$secret)) "" else sprintf("MIRAI_SECRET=%s ", prof$secret)
  sprintf("%s%s -e %s", env, rscript, shQuote(daemon_call(prof, dots)))
}

launch_failed <- function(what, status, out = character()) {
  abort(sprintf("launching a daemon failed: %s exited with status %s%s", what, status,
               if (length(out)) paste0(":\n", paste(out, collapse = "\n")) else ""))
}

# Runs `command` with `args` for each launch command, "." replaced by it.
# Other commands run in the background (they may be the daemon itself).
run_remote <- function(remote, cmds, url) {
  sets <- if (is.list(remote$args)) remote$args else list(remote$args)
  for (i in seq_along(cmds)) {
    a <- sets[[(i - 1L) %% length(sets) + 1L]]
    if (!is.null(remote$tunnel)) {
      run_ssh(remote, a, cmds[[i]], url)
      next
    }
    a[a == "."] <- if (isTRUE(remote$quote)) shQuote(cmds[[i]]) else cmds[[i]]
    # `command` is a shell fragment (it may carry options), so the line is
    # composed here rather than by system2(), which would quote it whole.
    system(paste(c(remote$command, a), collapse = " "), wait = FALSE)
  }
}

# Runs one SSH launch. The remote command (which holds the secret) goes to
# ssh in a configuration file readable only by this user (`RemoteCommand`,
# followed by the user's and the system's usual configuration), not in its
# arguments, where other users of this machine could read it with `ps` for
# as long as the connection lasts. With `-f`, ssh returns once logged in
# (and, with a tunnel, once the forwarding is up), so its status is checked
# and the file removed.
run_ssh <- function(remote, args, cmd, url) {
  cfg <- tempfile("mirai-ssh-")
  file.create(cfg)
  Sys.chmod(cfg, "0600")
  on.exit(unlink(cfg))
  writeLines(c(paste("RemoteCommand", gsub("%", "%%", cmd, fixed = TRUE)),
               "Include ~/.ssh/config", "Include /etc/ssh/ssh_config"), cfg)
  args <- c("-F", shQuote(cfg), args[args != "."])
  if (isTRUE(remote$tunnel)) {
    port <- url_parts(url)$port
    args <- c(sprintf("-o ExitOnForwardFailure=yes -R %d:127.0.0.1:%d", port, port), args)
  }
  status <- system(paste(c(remote$command, args), collapse = " "), wait = TRUE)
  if (status != 0L)
    launch_failed(sprintf("'%s' (to %s)", remote$command, args[length(args)]), status)
}

# Submits one job per launch command. The script (which holds the secret)
# is never in an argument list: it goes in a file of mode 0600, in a
# directory of its own, whose path ends the submission command (sbatch,
# qsub, including the Torque-style qsub over Slurm that reads no standard
# input), or on the standard input of bsub, whose file argument would be a
# command to run. Each job id the command prints is recorded in the profile,
# for daemons(0) to cancel the job.
run_cluster <- function(remote, cmds, prof) {
  for (cmd in cmds) {
    script <- c(strsplit(remote$script, "\n", fixed = TRUE)[[1L]], cmd)
    out <- if (isTRUE(remote$stdin)) {
      suppressWarnings(system2("/bin/sh", c("-c", shQuote(remote$submit)), input = script,
                               stdout = TRUE, stderr = TRUE))
    } else {
      dir <- tempfile("mirai-job-")
      dir.create(dir, mode = "0700")
      file <- file.path(dir, "mirai")
      file.create(file)
      Sys.chmod(file, "0600")
      writeLines(script, file)
      submit <- paste(remote$submit, shQuote(file))
      res <- suppressWarnings(system2("/bin/sh", c("-c", shQuote(submit)), stdout = TRUE,
                                      stderr = TRUE))
      unlink(dir, recursive = TRUE)
      res
    }
    status <- attr(out, "status") %||% 0L
    if (status != 0L) launch_failed(sprintf("'%s'", remote$submit), status, out)
    id <- submitted_job_id(out)
    if (!is.null(remote$cancel) && !is.null(id))
      prof$cluster_jobs[[length(prof$cluster_jobs) + 1L]] <- c(cancel = remote$cancel, id = id)
    if (length(out)) cat(out, sep = "\n")
  }
}

# The scheduler behind a submission command (its first word that is not a
# VAR=value assignment): its program name, and the command that cancels its
# jobs (scancel, qdel or bkill, next to it if it is a path, with the same
# assignments), or NULL for a program not known.
submit_program <- function(command) {
  words <- strsplit(trimws(command), "[[:space:]]+")[[1L]]
  env <- grepl("^[A-Za-z_][A-Za-z0-9_]*=", words)
  first <- which(!env)[1L]
  if (is.na(first)) return(list(name = NULL, cancel = NULL))
  name <- basename(words[first])
  cancel <- c(sbatch = "scancel", qsub = "qdel", bsub = "bkill")[name]
  if (is.na(cancel)) return(list(name = name, cancel = NULL))
  dir <- dirname(words[first])
  if (dir != ".") cancel <- file.path(dir, cancel)
  list(name = name, cancel = paste(c(words[seq_len(first - 1L)], unname(cancel)), collapse = " "))
}

# The job id in a submission command's output, or NULL: Slurm's "Submitted
# batch job 123" (or "123" with --parsable), SGE's "Your job 123 (...) has
# been submitted", LSF's "Job <123> is submitted ...", or a line holding
# only an id (PBS and Torque: "123" or "123.server").
submitted_job_id <- function(out) {
  patterns <- c("^Submitted batch job ([0-9]+)", "^Your job(-array)? ([0-9]+)", "^Job <([0-9]+)>",
                "^[[:space:]]*([0-9]+(\\.[A-Za-z0-9._-]+)?)(;[^[:space:]]*)?[[:space:]]*$")
  group <- c(1L, 2L, 1L, 1L)
  for (line in rev(out)) {
    for (i in seq_along(patterns)) {
      m <- regmatches(line, regexec(patterns[i], line))[[1L]]
      if (length(m)) return(m[group[i] + 1L])
    }
  }
  NULL
}

# Cancels the jobs submitted for a profile (at its reset), one command per
# scheduler, quietly: jobs whose daemon has exited are already gone, which
# the command may report as an error.
cancel_cluster_jobs <- function(prof) {
  jobs <- prof$cluster_jobs
  if (!length(jobs)) return(invisible())
  prof$cluster_jobs <- list()
  cancel <- vapply(jobs, `[[`, character(1L), "cancel")
  ids <- vapply(jobs, `[[`, character(1L), "id")
  for (cmd in unique(cancel)) {
    line <- paste(cmd, paste(shQuote(ids[cancel == cmd]), collapse = " "))
    suppressWarnings(system2("/bin/sh", c("-c", shQuote(line)), stdout = FALSE, stderr = FALSE,
                             timeout = 30))
  }
  invisible()
}

# ---------------------------------------------------------------- HTTP

# A value of a config that may be a function evaluated at launch.
resolve <- function(x, ...) if (is.function(x)) x(...) else x

# How long one request of http_config() may take.
HTTP_TIMEOUT_SECS <- 5

# `x` as the contents of a JSON string (without the quotes): jsonlite's
# escaping, control characters included.
json_string <- function(x) {
  s <- as.character(jsonlite::toJSON(x, auto_unbox = TRUE))
  substr(s, 2L, nchar(s) - 1L)
}

# Suggested packages that `what` cannot do without: an error naming those
# not installed.
need_packages <- function(pkgs, what) {
  missing <- pkgs[!vapply(pkgs, requireNamespace, logical(1L), quietly = TRUE)]
  if (length(missing))
    abort(sprintf("%s needs the %s %s: install %s", what,
                  paste(sprintf("'%s'", missing), collapse = " and "),
                  if (length(missing) > 1L) "packages" else "package",
                  if (length(missing) > 1L) "them" else "it"))
}

http_launch <- function(remote, calls) {
  need_packages(c("curl", "jsonlite"), "launching daemons with http_config()")
  lapply(calls, function(call) {
    url <- resolve(remote$url)
    if (!is_string(url)) abort("`url` of http_config() must give a character string")
    headers <- resolve(remote$headers)
    if (length(headers) && (!is.character(headers) || is.null(names(headers))))
      abort("`headers` of http_config() must give a named character vector")
    data <- if (is.function(remote$data)) do.call(remote$data, remote$dots %||% list()) else remote$data
    if (!is_string(data) || !grepl("%s", data, fixed = TRUE))
      abort("`data` of http_config() must give a character string with a %s placeholder")
    cookie <- resolve(remote$cookie)
    token <- resolve(remote$token)
    if (length(cookie) && nzchar(cookie)) headers <- c(headers, Cookie = cookie)
    if (length(token) && nzchar(token))
      headers <- c(headers, Authorization = paste("Bearer", token))
    body <- sprintf(data, json_string(call))
    res <- http_request(url, remote$method, headers, body)
    if (res$status >= 400L)
      abort(sprintf("launching a daemon failed: %s %s answered HTTP %d: %s",
                   remote$method, url, res$status,
                   substr(res$data, 1L, 500L)))
    res
  })
}

# One HTTP request, by curl. Returns list(status, headers, data), the
# headers named in lower case.
http_request <- function(url, method, headers, body, timeout = HTTP_TIMEOUT_SECS) {
  if (!startsWith(url, "http://") && !startsWith(url, "https://"))
    abort(sprintf("`url`: '%s' is not an http:// or https:// URL", url))
  h <- curl::new_handle(customrequest = method, postfields = body, timeout = timeout)
  if (length(headers)) curl::handle_setheaders(h, .list = as.list(headers))
  r <- tryCatch(curl::curl_fetch_memory(url, handle = h), error = function(e)
    abort(sprintf("launching a daemon failed: cannot connect to %s: %s", url, conditionMessage(e))))
  list(status = r$status_code, headers = curl::parse_headers_list(r$headers),
       data = rawToChar(r$content))
}

# ---------------------------------------------------------------- Posit Workbench defaults

posit_workbench_url <- function() {
  addr <- Sys.getenv("RS_SERVER_ADDRESS")
  if (!nzchar(addr))
    abort("http_config(): RS_SERVER_ADDRESS is not set (not in Posit Workbench?); give `url`")
  paste0(sub("/*$", "/", addr), "api/launch_job")
}

json_headers <- function() c(`Content-Type` = "application/json")

posit_workbench_headers <- function() c(json_headers(), Cookie = posit_workbench_cookie())

posit_workbench_cookie <- function() {
  cookie <- Sys.getenv("RS_SESSION_RPC_COOKIE")
  if (!nzchar(cookie))
    abort("http_config(): RS_SESSION_RPC_COOKIE is not set (not in Posit Workbench?); give `cookie`")
  cookie
}

posit_workbench_data <- function(rscript = file.path(R.home("bin"), "Rscript"),
                                 job_name = "mirai_daemon", cluster = "Kubernetes", image = NULL,
                                 resource_profile = NULL, cpus = 1, memory = 512) {
  # The daemon call goes last, after the library paths are set; the JSON is
  # made with a marker in its place, which becomes the %s that receives it
  # (every literal percent sign doubled, to survive that sprintf()).
  marker <- paste0("@mirai-daemon-call-", .Call(C_mirai_random_hex, 8), "@")
  libs <- sprintf(".libPaths(%s)", paste(deparse(.libPaths()), collapse = ""))
  job <- list(name = job_name, cluster = cluster)
  if (!is.null(image)) job$container <- list(image = image)
  if (!is.null(resource_profile)) job$resourceProfile <- resource_profile
  job$resourceLimits <- list(list(type = "cpuCount", value = as.character(cpus)),
                             list(type = "memory", value = as.character(memory)))
  job$exe <- rscript
  job$args <- c("-e", paste0(libs, ";", marker))
  json <- as.character(jsonlite::toJSON(list(method = "launch_job", kwparams = list(job = job)),
                                        auto_unbox = TRUE))
  sub(marker, "%s", gsub("%", "%%", json, fixed = TRUE), fixed = TRUE)
}
