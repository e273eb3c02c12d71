# daemons(): compute profiles, local daemon launch, status.

# The daemon() settings in `dots` to write into launch commands. A known one
# (DAEMON_SETTINGS, R/daemon.R) of the wrong type is the error daemon()
# gives for it (rather than a setting dropped, or a daemon that fails as it
# starts); `auth` is the host's own flag and `tlscert` is taken apart (as
# the certificate daemons verify the host with); an unknown name is warned
# about, and passed on if its value is a single logical or number, as the
# reference passes it, else left out.
daemon_dots <- function(dots) {
  nms <- names(dots) %||% rep("", length(dots))
  keep <- logical(length(dots))
  for (k in seq_along(dots)) {
    nm <- nms[[k]]
    v <- dots[[k]]
    if (is.na(nm) || !nzchar(nm)) {
      warn("daemon() settings in `...` must be named: an unnamed one is left out")
    } else if (nm %in% names(DAEMON_SETTINGS)) {
      check_setting(v, nm)
      keep[k] <- TRUE
    } else if (nm == "auth") {
      check_flag(v, "auth")
    } else if (nm != "tlscert") {
      ok <- (is.logical(v) || is.numeric(v)) && length(v) == 1L
      warn(sprintf("`%s` is not a daemon() setting: %s", nm,
                   if (ok) "passed on to daemon() as given" else "left out (not a single logical or number)"))
      keep[k] <- ok
    }
  }
  dots[keep]
}

# The daemon() arguments `dots` as written in a launch command:
# ",name=value" for each, "" for none.
dots_text <- function(dots) {
  args <- vapply(names(dots), function(nm) sprintf(",%s=%s", nm, paste(deparse(dots[[nm]]), collapse = "")),
                 character(1L))
  paste(args, collapse = "")
}

launch_command <- function(url, dots) sprintf("mirai::daemon(%s%s)", deparse(url), dots_text(dots))

# Arguments for launching one more daemon. Without dispatcher or seed each
# daemon starts on its own stream, given as `rs` (with dispatcher the host
# sends it in the daemon's Init instead, seed or no seed).
launch_args <- function(prof, dots) {
  args <- c(list(dispatcher = prof$dispatcher), dots)
  if (!is.null(prof$tls)) args$tlscert <- prof$tls
  if (!prof$dispatcher && is.null(prof$seed)) args$rs <- next_stream(prof)
  args
}

# `tls` as PEM text for the native side: a file's contents (certificate,
# any chain, then the key), or c(cert, key), each PEM text or a file path.
# The native side checks the rest (that the key decrypts and belongs to the
# certificate, the validity dates), before anything is launched.
tls_pem <- function(tls) {
  if (is.null(tls)) return(NULL)
  if (!is.character(tls) || !length(tls) %in% 1:2 || anyNA(tls))
    abort("`tls` must be a PEM file path (certificate, optional chain, then key) or c(cert, key), or NULL")
  vapply(tls, pem_text, character(1L), USE.NAMES = FALSE)
}

# PEM text as given, or read from the file `x` names.
pem_text <- function(x) {
  if (!nzchar(x) || grepl("-----BEGIN", x, fixed = TRUE)) return(x)
  if (!file.exists(x)) abort(sprintf("`tls`: no such file '%s'", x))
  if (dir.exists(x)) abort(sprintf("`tls`: '%s' is a directory, not a PEM file", x))
  fail <- function(e) abort(sprintf("`tls`: cannot read '%s': %s", x, conditionMessage(e)))
  paste(tryCatch(readLines(x, warn = FALSE), error = fail, warning = fail), collapse = "\n")
}

# The key's password from `pass`: a character string, or a function
# returning one (so that the password need not appear in the call).
tls_pass <- function(pass) {
  if (is.null(pass)) return(NULL)
  if (!is.function(pass))
    return(check_string(pass, "pass",
                        "the password of the `tls` key (a character string), a function returning it, or NULL"))
  pw <- pass()
  if (!is_string(pw)) abort("`pass` must return the password of the `tls` key as a character string")
  pw
}

# Launches one local daemon; its pid. With `heal`, a daemon that dies is
# replaced natively (rust/src/host/pool.rs), with the same command but for its
# random-number stream `rs` (passed apart, so that the replacement can start
# on the next substream). `together`: the number of daemons launched with it,
# which lowers their priority when they outnumber the cores.
launch_process <- function(host, url, secret, dots, heal = FALSE, together = 1L) {
  rscript <- file.path(R.home("bin"), "Rscript")
  env <- c(R_LIBS = paste(.libPaths(), collapse = .Platform$path.sep), MIRAI_SECRET = secret)
  rs <- dots[["rs"]]
  dots[["rs"]] <- NULL
  .Call(C_mirai_host_launch, host, rscript, c("-e", launch_command(url, dots)), names(env), unname(env),
        isFALSE(dots[["autoexit"]]), heal, rs, together)
}

# Raises, as a warning, what the profile's daemon pool has to say (that it
# stopped replacing dead daemons, and why): the pool runs off R's thread, so
# it waits for the next call into mirai.
pool_notice <- function(prof) {
  host <- prof$host
  if (is.null(host)) return(invisible())
  msg <- .Call(C_mirai_host_notice, host)
  if (!is.null(msg)) pool_warning(msg)
  invisible()
}

pool_warning <- function(msg) warning(msg, call. = FALSE, immediate. = TRUE)

# Waits for `n` connections, with a progress message every
# limit("wait_note_s") seconds.
wait_for_daemons <- function(host, n) {
  start <- Sys.time()
  while (!.Call(C_mirai_host_wait_ready, host, n, limit("wait_note_s") * 1000)) {
    message(sprintf("mirai: initial sync with daemon(s) [%d secs elapsed]",
                    as.integer(difftime(Sys.time(), start, units = "secs"))))
  }
}

# The memory cap in bytes; 0 for none (NULL, NA, zero, negative, Inf). The
# one check of `memory` (the native side takes the result as it is).
memory_bytes <- function(memory) {
  if (is.null(memory)) return(0)
  if (length(memory) != 1L || !(is.numeric(memory) || identical(memory, NA)))
    abort("`memory` must be a single number of megabytes, or NULL")
  if (is.na(memory) || memory <= 0 || is.infinite(memory)) 0 else memory * 1e6
}

# The one constructor of compute profiles: an environment (fields change
# later, e.g. `stream` moves on), registered under `.compute`. `host` is the
# native handle (NULL in sync mode, where `globals` receives `...` objects).
new_profile <- function(.compute, url, dispatcher, seed = NULL, stream = NULL, host = NULL, serial = NULL,
                        secret = NULL, dots = list(), n = 0L, sync = FALSE, memory = 0) {
  prof <- new.env(parent = emptyenv())
  prof$compute <- .compute
  prof$url <- url
  prof$dispatcher <- dispatcher
  # The dispatcher's address, which nextget("dispatcher") gives (NULL
  # without one), as the reference's is the URL the host reaches it at:
  # here the dispatcher runs in this process, so the address is inproc://.
  if (dispatcher) prof$dispatcher_url <- paste0("inproc://", random_name())
  # The dispatcher's cap on queued bytes; 0 for none.
  prof$memory <- memory
  prof$seed <- seed
  prof$stream <- stream
  prof$host <- host
  prof$serial <- serial
  prof$secret <- secret
  prof$dots <- dots
  prof$n <- as.integer(n)
  prof$sync <- sync
  # Cleared at reset: objects holding the profile (cluster nodes) see it.
  prof$active <- TRUE
  # Jobs submitted by cluster_config() launches, each c(cancel =, id =),
  # cancelled at reset.
  prof$cluster_jobs <- list()
  if (sync) prof$globals <- new.env(parent = .GlobalEnv)
  assign(.compute, prof, envir = .$profiles)
  assign(.compute, TRUE, envir = .$profile_names)
  prof
}

reset_profile <- function(.compute, signal = FALSE) {
  prof <- .$profiles[[.compute]]
  if (is.null(prof)) return(FALSE)
  rm(list = .compute, envir = .$profiles)
  prof$active <- FALSE
  # In a process forked from the one that set it up (mclapply()'s, say),
  # the profile is only forgotten: its daemons, threads and cluster jobs
  # are that process's.
  if (!is.null(prof$host) && .Call(C_mirai_host_foreign, prof$host)) return(TRUE)
  # Also if the wait for local daemons below is interrupted: no later reset
  # reaches the profile's jobs.
  on.exit(cancel_cluster_jobs(prof))
  if (!is.null(prof$host)) {
    .Call(C_mirai_host_close, prof$host, signal)
    reap_children(prof$host)
  }
  TRUE
}

# How long daemons(0) waits for local daemons to exit before killing them.
RESET_GRACE_SECS <- 5

# Local daemons see the connection close and exit. Those still running
# after a grace period (autoexit = NA, finishing a long task, say) are
# killed, so that no process outlives daemons(0); their reapers collect them.
# Daemons launched with autoexit = FALSE are meant to outlive their host and
# are left alone (daemons(NULL) ends them).
# An interrupt (or error) during the grace period kills them at once: the
# profile is gone by then, and no later daemons(0) would reach them.
reap_children <- function(host, grace = RESET_GRACE_SECS) {
  deadline <- Sys.time() + grace
  waited <- FALSE
  on.exit(if (!waited) .Call(C_mirai_host_children, host, TRUE))
  while (length(.Call(C_mirai_host_children, host, FALSE)) && Sys.time() < deadline) Sys.sleep(0.01)
  waited <- TRUE
  if (length(.Call(C_mirai_host_children, host, TRUE))) {
    deadline <- Sys.time() + 2
    while (length(.Call(C_mirai_host_children, host, FALSE)) && Sys.time() < deadline) Sys.sleep(0.01)
  }
}

# A bound on `n` for local daemons: a typo such as daemons(1e10) must not
# start launching processes until the machine gives out.
MAX_LOCAL_DAEMONS <- 10000L

# The message size cap, in bytes, from option `mirai.max_message` (NULL: the
# native default, limit("max_message_bytes")). The one check of the option.
max_message <- function() {
  v <- getOption("mirai.max_message")
  if (is.null(v)) return(NULL)
  least <- limit("min_max_message_bytes")
  if (!is.numeric(v) || length(v) != 1L || is.na(v) || v < least)
    abort(sprintf("option `mirai.max_message` must be a single number of bytes (at least %s), %s",
                  format(least, scientific = FALSE), "or NULL"))
  as.double(v)
}

#' Daemons (Set Persistent Processes)
#'
#' Sets up persistent background R processes ('daemons') for a compute
#' profile: `daemons(n)` launches `n` local daemons; `daemons(url = ...)`
#' listens for daemons launched elsewhere. `daemons(0)` resets the profile,
#' resolving pending mirai to 'errorValue' `r error_code("reset")`; `daemons(NULL)` does the
#' same and also tells every connected daemon to exit.
#'
#' With `dispatcher = TRUE` (the default) tasks wait in a queue on the host
#' and each goes to an idle daemon; with `FALSE` each is sent straight to
#' the least busy daemon that can take it now (in turn among equals), where
#' it may queue behind that daemon's current task.
#'
#' Only daemons launched by this host (they carry its secret) are accepted,
#' and daemons run tasks only for a host that holds the same secret, unless
#' `auth = FALSE` is given in `...`. Each side proves it by challenge-response:
#' the daemon sends an HMAC-SHA256 under the secret of a fresh nonce from each
#' side; the host, once that checks out, sends its own HMAC of both nonces
#' (bound to the other direction), which the daemon checks before acting on
#' anything else. The secret never crosses the network; it reaches local
#' daemons in their environment, remote ones as described in
#' [launch_remote()]. A peer must complete its
#' handshake within `r limit("hello_timeout_s")` seconds; at most
#' `r limit("max_pending")` peers may be mid-handshake at once (a newer one
#' takes the place of the longest-waiting, or, when one address holds more
#' than a quarter of the places, of that address's longest-waiting, so that
#' a flood of connections from one address does not keep out a daemon from
#' another). Messages larger than option
#' `mirai.max_message` (bytes; default `r bytes_text(limit("max_message_bytes"))`)
#' close the connection that sent them. Each such refusal counts in the
#' `refused` element of [status()].
#'
#' Local daemons that outnumber the CPU cores available to this process run
#' at a lower priority (nice value), so that together they weigh as much as
#' one ordinary process per core: the host that feeds them keeps its share
#' of the CPU, and tiny tasks on many daemons go about as fast as on one
#' daemon per core. `daemons(16)` on 2 cores, for example, runs each daemon
#' at nice 9; up to one daemon per core, daemons run at the host's
#' priority. [launch_local()] does the same for the daemons it launches
#' together.
#'
#' `daemons(0)` ends local daemons that have not connected yet (still
#' starting) at once, waits up to `r RESET_GRACE_SECS` seconds for the others to
#' exit, then kills any still running (except those launched with `autoexit =
#' FALSE`, which are meant to outlive their host), together with the
#' processes their tasks forked (`parallel::mclapply()`, `mcparallel()`).
#' A daemon that is killed, or whose host goes away during a task, ends
#' those processes too. Each local daemon makes its `tempdir()` in a
#' directory of its own, made where R made this session's, and removed once
#' the daemon has ended: a daemon killed while this session runs, or ended
#' mid-task because this session has gone, leaves no files behind.
#' Processes its tasks start see this session's `TMPDIR`. TCP connections use
#' keepalive, so a daemon whose host vanished without closing the connection
#' (power loss, a cut network) notices within about `r limit("dead_peer_s")`
#' seconds.
#'
#' @section Self-healing:
#' `daemons(n)` keeps `n` local daemons: one that dies (killed, crashed, out
#' of memory: a signal or a non-zero exit status) is replaced at once by a
#' new one launched with the same settings, and [status()] counts the
#' replacements (`replaced`). The task it was running resolves to
#' 'errorValue' 19, unless the mirai was created with `.retry` (see
#' [mirai()]). A daemon that ends by itself (`idletime`, `walltime`,
#' `maxtasks`, or its host closing) is not replaced. If 3 daemons in a row
#' die within 5 seconds of their launch without having been sent a task (a
#' daemon that cannot start: a broken R profile or library path, say),
#' replacing stops for the life of the profile, with a warning at the next
#' call into mirai. A daemon that dies while it runs a task does not count,
#' so a task that kills every daemon it runs on (retried with `.retry`)
#' cannot stop the healing; a daemon that sends a result, or lives longer
#' than 5 seconds, starts the count again. `heal = FALSE` turns replacing
#' off. [daemons_table()] shows a replacement that has not connected yet
#' as `"connecting"`; a reset ends such daemons at once.
#'
#' A replacement evaluates the profile's earlier [everywhere()] calls, in
#' order, before any task, so it starts in the state the others are in. The
#' host keeps up to `r limit("replay_calls")` such calls, of up to
#' `r bytes_text(limit("replay_bytes"))` in all, from when daemons were set;
#' past either limit it keeps none, and a replacement evaluates none of them
#' (call [everywhere()] again when `status()$replaced` changes). Without a
#' dispatcher or `seed`, a replacement starts on the next substream
#' ([parallel::nextRNGSubStream()]) of the random-number stream of the
#' daemon it replaces.
#'
#' @section Live messages and progress:
#' With `relay = TRUE`, a `message()` or an immediate condition (class
#' 'immediateCondition', such as progressr's progress updates) signalled by
#' a running task, and not handled by the task itself, is sent to the host
#' at once instead of to the daemon's (usually discarded) stderr. The host
#' signals it again, in order per task, the next time it runs R code:
#' while waiting for a mirai (`m[]`, [call_mirai()], a map's `[]`, a
#' cluster's receive), or, with the 'later' package installed, from later's
#' event loop (Shiny, plumber, promises, or the console at rest). There it
#' is a condition of its original classes plus 'miraiCondition', with the
#' task's number (as in the tag below) as `mirai_id` and the profile's name as
#' `mirai_compute`: a calling handler such as `withCallingHandlers(m[],
#' message = ...)` or progressr's `with_progress()` catches it; a message
#' no handler muffles is written to stderr after a tag naming the task,
#' `[mirai 3] `. later runs its callbacks with R's handler stack emptied:
#' from later's loop the host calls the global calling handlers itself
#' ([globalCallingHandlers()], as progressr's `handlers(global = TRUE)`
#' sets), but no other calling handler can be there. To act on a task's
#' conditions there (a Shiny progress bar), give the task a handler with
#' [on_relay()], which sees its conditions wherever they are shown. A task's cli progress bar is relayed as the lines cli draws (on a
#' dynamic terminal the host redraws it in place); progressr's
#' `progressor()`s created inside a task report too (the daemon enables
#' progressr), and a map's `[.progress]` counts both inside its elements
#' (see [mirai_map()]). Warnings and
#' errors are unaffected (they come with the
#' task's result). Relayed conditions are serialized without `serial`'s
#' configurations, and one over `r bytes_text(limit("relay_limit_bytes"))`
#' is not relayed. A task relays at most
#' `r format(limit("relay_burst"), big.mark = ",")` conditions at once and
#' `r format(limit("relay_rate"), big.mark = ",")` a second after that (so
#' that a task signalling without pause cannot take the host from other
#' tasks): the rest take their way on the daemon as without relay, and
#' before its value the task tells the host how many, which says so and
#' counts them in [status()] (`relay_dropped`). Progress updates are the
#' exception: one over the budget is kept back and added into the next update
#' of its progressor that goes, or sent just before the task's value, so a
#' progress bar ends on the host where it ended in the task, however often
#' the task updated it. The host holds at most
#' `r format(limit("relay_max_items"), big.mark = ",")` of them (and
#' `r bytes_text(limit("relay_max_bytes"))`) per profile at once: beyond that they are dropped, with a message saying
#' how many per task, and counted in [status()] (`relay_dropped`). A reset
#' drops those not yet shown. With
#' relay off (the default) nothing is sent and tasks run exactly as before.
#'
#' @param n (integer) number of local daemons to launch; 0 to reset; NULL to
#'   reset and ask connected daemons to exit. No default: required unless
#'   `url` is given (then 0 launches none).
#' @param url (character) a URL to listen at for remote daemons, e.g.
#'   `"tcp://10.75.32.70:5555"`, or one from [host_url()] / [local_url()].
#'   Schemes: `tcp://`, `tls+tcp://` (TLS, see `tls`), `ws://` and `wss://`
#'   (WebSocket, and WebSocket over TLS; an optional path follows the port,
#'   as in `"ws://10.75.32.70:5555/mirai"`), `abstract://` and `ipc://`.
#'   Port 0 picks a free port; [status()] shows the real one. Default NULL:
#'   a local URL, for local daemons only.
#' @param remote (list) a launch configuration from [ssh_config()],
#'   [cluster_config()], [http_config()] or [remote_config()]: `n` daemons
#'   are launched with it at once by [launch_remote()] (if that fails, the
#'   profile is reset and the error raised). Needs `url`. Default NULL.
#' @param dispatcher (logical) queue tasks on the host and send each to an
#'   idle daemon (TRUE), or send each to the least busy daemon that can take
#'   it now, where it may queue behind other tasks (FALSE). Default TRUE.
#' @param ... (named arguments) [daemon()] arguments for launched daemons:
#'   `asyncdial`, `cleanup` and `output` (TRUE or FALSE), `autoexit` (TRUE,
#'   NA or FALSE), `idletime`, `walltime` and `maxtasks` (non-negative
#'   numbers); and `tlscert`, the certificate daemons verify a `tls+tcp://`
#'   host with (see `tls`). `auth = FALSE` turns off the check that daemons
#'   were launched by this host. A value of the wrong type for one of these
#'   is an error naming it; any other name draws a warning (a single logical
#'   or number is still passed on to [daemon()], as the reference does).
#'   Default: none.
#' @param heal (logical) replace local daemons launched by `daemons(n)` that
#'   die (see Self-healing). Ignored for daemons launched otherwise
#'   ([launch_local()], `remote`). Default TRUE.
#' @param sync (logical) evaluate each mirai in this process when it is
#'   created, for debugging. Of the other arguments only `seed` and
#'   `.compute` apply. Default FALSE.
#' @param seed (integer) NULL: each daemon gets its own L'Ecuyer-CMRG random
#'   number stream (statistically independent, but results depend on which
#'   daemon runs which task). An integer: each mirai gets its own stream
#'   instead, in the order the mirai are created, so results are
#'   reproducible whatever the number of daemons or the scheduling (with a
#'   dispatcher each daemon still starts on its own stream, as with NULL:
#'   what [everywhere()] sees). See [nextstream()]. Default NULL.
#' @param memory (numeric) a cap, in megabytes (1 MB = 1e6 bytes), on the
#'   tasks waiting in the dispatcher's queue (tasks running on daemons do not
#'   count). Once queued tasks reach it, [mirai()] waits (interruptibly) until
#'   the queue drains below it, and [try_mirai()] returns NULL. NULL, 0,
#'   negative values, NA and Inf mean no cap. Needs a dispatcher. The used,
#'   peak and capacity figures appear in [status()]. Default NULL (no cap).
#' @param serial (list) a configuration from [serial_config()], for custom
#'   serialization of reference objects such as external pointers, applied
#'   on this host and on every daemon of the profile, in both directions.
#'   NULL uses the configurations registered with [register_serial()], if
#'   any. Works with or without dispatcher. Default NULL.
#' @param tls (character) the host's TLS certificate and key, for a
#'   `tls+tcp://` or `wss://` `url`: a PEM file path (the certificate, any
#'   chain after it, then the private key), or `c(cert, key)`, each PEM text
#'   or a file path (`cert` may hold the chain too, its own certificate
#'   first). Keys: RSA (2048 bits or more), ECDSA P-256 or P-384, Ed25519;
#'   encrypted ones need `pass`. Before anything is launched, `daemons()`
#'   checks that the key decrypts and belongs to the certificate and that
#'   every certificate is within its validity dates, and errors otherwise.
#'   Daemons launched by this host verify it against `tlscert` if given in
#'   `...` (a file path or `c(pem, "")`: the host's own certificate, a CA, or
#'   a chain), else against the certificates given here. A daemon trusts
#'   the host if the host's certificate is one of those (a self-signed
#'   certificate, even one marked as a CA, as `openssl req -x509` makes by
#'   default), or is issued by one of them, through any intermediate
#'   certificates the host sends after its own. Either way the certificate
#'   must name the host as the daemon's URL writes it: an IP address or DNS
#'   name among its subjectAltNames, or, if it has none, its common name (so
#'   `-subj /CN=127.0.0.1` serves `tls+tcp://127.0.0.1:port`). Default NULL:
#'   with a `tls+tcp://` or `wss://` `url`, a fresh self-signed certificate
#'   (ECDSA P-256) is made for the URL's host name or IP address, or for a
#'   wildcard host (`r wildcard_text()`) for this machine's loopback and
#'   interface addresses and its name, and its public part goes to launched
#'   daemons as `tlscert` (see [nextget()] `("tls")`). A peer must complete
#'   its TLS handshake, too, within the `r limit("hello_timeout_s")` second
#'   handshake limit.
#' @param pass (character or function) the password of an encrypted `tls`
#'   key, or a function returning it (so that the password need not appear
#'   in the call; it is called once, by `daemons()`). Encrypted keys may be
#'   PKCS#8 ('ENCRYPTED PRIVATE KEY', as OpenSSL 3 writes them) or in
#'   OpenSSL's legacy format ('Proc-Type: 4,ENCRYPTED', AES or 3DES). A wrong
#'   password is an error naming `pass`. Default NULL (the key is not
#'   encrypted).
#' @param relay (logical) relay conditions that tasks signal while they run
#'   (see Live messages and progress). Default FALSE.
#' @param .compute (character) name of the compute profile. Default NULL:
#'   the current profile (`"default"` unless changed with [with_daemons()]
#'   or [local_daemons()]).
#' @return Invisibly, TRUE (of class 'miraiDaemons') when daemons were set,
#'   FALSE on reset.
#' @seealso [status()] and [info()] to query daemons, [launch_local()] to add
#'   daemons, [with_daemons()] to switch compute profiles.
#' @examples
#' # Synchronous mode: mirai are evaluated in this process, for debugging.
#' daemons(sync = TRUE)
#' mirai(1 + 1)[]
#' daemons(0)
#' @examplesIf interactive()
#' daemons(2)
#' status()
#' m <- mirai(Sys.getpid())
#' m[]
#' daemons(0)
#' # At most 100 MB of tasks wait in the queue; mirai() waits beyond that.
#' daemons(2, memory = 100)
#' status()$memory
#' daemons(0)
#' # A task's messages shown on the host as they happen.
#' daemons(1, relay = TRUE)
#' m <- mirai({ message("started"); Sys.sleep(0.5); message("done"); 1 })
#' m[]
#' daemons(0)
#' @export
daemons <- function(n, url = NULL, remote = NULL, dispatcher = TRUE, ..., heal = TRUE, sync = FALSE,
                    seed = NULL, memory = NULL, serial = NULL, tls = NULL, pass = NULL,
                    relay = FALSE, .compute = NULL) {
  .compute <- if (is.null(.compute)) .$current else check_compute(.compute)
  check_flag(sync, "sync")
  if (!is.null(seed)) check_number(seed, "seed", "NULL or a single integer", min = -Inf)
  if (sync) {
    reset_profile(.compute)
    new_profile(.compute, url = paste0("inproc://", random_name()), dispatcher = FALSE,
                seed = seed, stream = init_stream(seed), sync = TRUE)
    return(invisible(structure(TRUE, class = c("miraiDaemons", .compute))))
  }
  if (missing(n)) {
    if (is.null(url)) abort("`n` must be supplied (the number of daemons), or `url` to listen for remote daemons")
    # With a launcher: one daemon (one per remote for several remotes).
    n <- if (is.null(remote)) 0L else 1L
  } else if (is.null(n)) {
    reset_profile(.compute, signal = TRUE)
    return(invisible(FALSE))
  } else {
    check_count(n)
    if (is.na(n) || n < 0) abort("the number of daemons must be zero or greater")
    if (!is.finite(n) || n != trunc(n) || n > MAX_LOCAL_DAEMONS)
      abort(sprintf("`n` must be a whole number of daemons, at most %d", MAX_LOCAL_DAEMONS))
  }
  if (!is.null(url) && !is.character(url))
    abort(sprintf("`url` must be of type character, not %s", typeof(url)))
  if (!is.null(url) && (!length(url) || is.na(url[[1L]]) || !nzchar(url[[1L]])))
    abort("`url` must be a URL such as \"tcp://hostname:5555\", not empty or NA")
  check_flag(dispatcher, "dispatcher")
  check_flag(heal, "heal")
  check_flag(relay, "relay")
  cap <- memory_bytes(memory)
  if (cap > 0 && !dispatcher)
    abort("`memory` needs a dispatcher: use `dispatcher = TRUE`, or leave `memory` NULL")
  if (!is.null(remote)) {
    check_remote(remote)
    if (is.null(url))
      abort("`remote` needs `url`: the address remote daemons dial, e.g. from host_url()")
    check_tunnel(remote, url[[1L]])
  }
  pem <- tls_pem(tls)
  if ((!is.null(pem) || !is.null(pass)) && !(is.character(url) && url_parts(url[[1L]])$tls))
    abort("`tls` and `pass` need a tls+tcp:// or wss:// `url`")
  # A function is called only when there is a key to decrypt.
  password <- if (!is.null(pem) || !is.function(pass)) tls_pass(pass)
  # Refused credentials leave daemons already set as they were.
  if (!is.null(pem)) .Call(C_mirai_tls_check, pem, password)
  if (n == 0 && is.null(url)) {
    reset_profile(.compute)
    return(invisible(FALSE))
  }
  if (is.null(url) && in_map()) abort("cannot create local daemons from within mirai map")
  # Checked before the profile is reset: a wrong setting leaves daemons
  # already set as they were.
  given <- list(...)
  dots <- daemon_dots(given)
  auth <- !isFALSE(given[["auth"]])
  tlscert <- if (!is.null(given[["tlscert"]])) check_tlscert(given[["tlscert"]])
  reset_profile(.compute)
  secret <- new_secret()
  listen <- if (is.null(url)) local_url() else url[[1L]]
  stream <- init_stream(seed)
  serial <- serial %||% session_serial()
  settings <- c(if (!is.null(serial)) list(serial = serial), if (relay) list(relay = TRUE))
  host <- .Call(C_mirai_host_start, listen, dispatcher, if (auth) secret else NULL, FALSE,
                if (dispatcher) stream, settings, cap, max_message(), pem, password)
  if (relay) enable_relay(host, .compute)
  prof <- new_profile(.compute, url = .Call(C_mirai_host_url, host), dispatcher = dispatcher, seed = seed,
                      stream = stream, host = host, serial = serial, secret = if (auth) secret,
                      dots = dots, n = n, memory = cap)
  if (relay) prof$relay <- TRUE
  # What launched daemons verify the host with: the `tlscert` given, else
  # the host's own certificate chain (generated or from `tls`).
  cert <- .Call(C_mirai_host_tlscert, host)
  if (!is.null(cert)) prof$tls <- tlscert %||% c(cert, "")
  if (!is.null(remote)) {
    tryCatch(launch_remote(n, remote, .compute = .compute), error = function(e) {
      reset_profile(.compute)
      stop(e)
    })
  }
  if (is.null(url) && n > 0) {
    ok <- FALSE
    on.exit(if (!ok) reset_profile(.compute))
    for (i in seq_len(n))
      launch_process(host, prof$url, prof$secret, launch_args(prof, dots), heal = heal, together = n)
    wait_for_daemons(host, n)
    ok <- TRUE
  }
  invisible(structure(TRUE, class = c("miraiDaemons", .compute)))
}

#' @export
print.miraiDaemons <- function(x, ...) {
  print(unclass(x)[1L])
  invisible(x)
}

#' Launch Local Daemons
#'
#' Starts `n` more local daemons for an existing compute profile (for
#' example one set up with `daemons(url = local_url())`). Daemons launched
#' together that outnumber the CPU cores run at a lower priority, as for
#' [daemons()].
#'
#' @param n (integer) number of daemons to launch, from 0 to 10000 (as for
#'   [daemons()]). Default 1.
#' @param ... (named arguments) [daemon()] arguments overriding those given
#'   to [daemons()], checked as there. Default: none.
#' @param .compute (character) name of the compute profile. Default NULL:
#'   the current profile.
#' @return `n`, invisibly.
#' @examplesIf interactive()
#' daemons(url = local_url())
#' launch_local(1)
#' Sys.sleep(1)
#' status()$connections
#' daemons(0)
#' @export
launch_local <- function(n = 1L, ..., .compute = NULL) {
  prof <- launchable_profile(.compute)
  check_launch_count(n)
  dots <- prof$dots
  new <- daemon_dots(list(...))
  dots[names(new)] <- new
  for (i in seq_len(n)) launch_process(prof$host, prof$url, prof$secret, launch_args(prof, dots), together = n)
  invisible(n)
}

# The profile named by `.compute` (NULL: the current one), or an error if no
# daemons are set for it.
needed_profile <- function(.compute) {
  prof <- profile_of(.compute)
  if (is.null(prof)) abort("daemons must be set to use this function")
  prof
}

# needed_profile(), which must also not be synchronous: one to launch
# daemons for.
launchable_profile <- function(.compute) {
  prof <- needed_profile(.compute)
  if (isTRUE(prof$sync)) abort("daemons cannot be launched for synchronous compute profiles")
  prof
}

# `n` of launch_local() and launch_remote(): how many daemons to launch,
# bounded as daemons()' own `n` is (a typo such as 1e6 must not launch
# processes until the machine gives out; 1.5 is no number of daemons).
check_launch_count <- function(n) {
  what <- sprintf("a whole number of daemons from 0 to %d", MAX_LOCAL_DAEMONS)
  if (check_number(n, "n", what, max = MAX_LOCAL_DAEMONS) %% 1 != 0) abort(sprintf("`n` must be %s", what))
}

# `n` of daemons() and make_cluster(): a single number (NA is theirs to
# refuse).
check_count <- function(n) {
  if (!is.numeric(n)) abort("`n` must be numeric, did you mean to provide `url`?")
  if (length(n) != 1L) abort("`n` must be a single number")
  n
}

#' Query if Daemons are Set
#'
#' `daemons_set()` tells whether daemons are set for a profile;
#' `require_daemons()` errors if they are not: "No daemons set." (or "No
#' daemons set for the '<profile>' compute profile."), with a hint to set
#' them that names the profile, such as `mirai::daemons(6, .compute =
#' "gpu")` (a runnable link, where the cli package is installed).
#'
#' @param .compute (character) name of the compute profile. Default NULL:
#'   the current profile.
#' @param call (environment) the execution environment of the function the
#'   error names, as `environment()` gives it inside that function. Default:
#'   the user's call that needed daemons (such as `mirai_map(...)` when it
#'   calls `require_daemons()`), or `require_daemons()` itself when called
#'   directly.
#' @return `daemons_set()`: logical. `require_daemons()`: TRUE invisibly.
#' @seealso [daemons()]
#' @examples
#' daemons_set()
#' daemons(sync = TRUE)
#' daemons_set()
#' require_daemons()
#' daemons(0)
#' # In a function that needs daemons:
#' f <- function() {
#'   require_daemons()
#'   mirai(1 + 1)[]
#' }
#' try(f())
#' @export
daemons_set <- function(.compute = NULL) !is.null(profile_of(.compute))

#' @rdname daemons_set
#' @export
require_daemons <- function(.compute = NULL, call = environment()) {
  if (daemons_set(.compute)) return(invisible(TRUE))
  # Not given: the user's call (that of mirai_map() when it asks, say).
  if (missing(call)) return(no_daemons(.compute %||% .$current, user_frame()))
  if (is.environment(call)) return(no_daemons(.compute %||% .$current, frame_of(call)))
  no_daemons(.compute %||% .$current, 0L, call)
}

# The error for a profile with no daemons set, naming the call of frame
# `frame` (or `call`, if given); its hint names the profile unless it is
# the default one. With cli, as the reference's cli error (the hint is a
# runnable link); else plain text.
no_daemons <- function(profile, frame, call = frame_call_at(frame)) {
  named <- !identical(profile, "default")
  head <- if (named) sprintf("No daemons set for the '%s' compute profile.", profile) else "No daemons set."
  hint <- if (named) sprintf("mirai::daemons(6, .compute = \"%s\")", profile) else "mirai::daemons(6)"
  if (use_rlang())
    cli::cli_abort(c("{head}", i = "Use e.g. {.run {hint}} to set 6 local daemons."), call = call,
                   .frame = if (frame > 0L) sys.frame(frame) else environment(),
                   .trace_bottom = if (frame > 0L) sys.frame(frame) else environment())
  abort(head, "\nUse e.g. ", hint, " to set 6 local daemons.", frame = frame, call = call)
}

# The number of the frame whose environment is `env`, or 0.
frame_of <- function(env) {
  for (i in rev(seq_len(sys.nframe() - 1L))) if (identical(sys.frame(i), env)) return(i)
  0L
}

#' Daemons Information
#'
#' `info()`: counters as a named integer vector: `connections`,
#' `cumulative`, `awaiting`, `executing`, `completed` (all but `connections`
#' NA without a dispatcher); NULL if no daemons are set. Reading it costs no
#' round trip.
#'
#' `status()`: a list with `connections` and `daemons` (the URL); with a
#' dispatcher then `mirai`, the counters `awaiting`, `executing` and
#' `completed`, and `memory`: the megabytes of tasks now waiting in the queue
#' (`used`), the most there have been (`peak`), and the cap set by
#' `daemons(memory =)` (`capacity`, NA for none) (these first, in the
#' reference's order); then `refused`:
#' the number of peers turned away since the profile started (no valid
#' handshake within `r limit("hello_timeout_s")` seconds, the wrong secret or
#' protocol version, a malformed message, or a message over the size cap set
#' by option `mirai.max_message`, in bytes, default
#' `r bytes_text(limit("max_message_bytes"))`); `replaced`: the number of
#' local daemons launched in place of ones that died (see [daemons()],
#' Self-healing); and `retried`: the number of times a task was sent again
#' after its daemon died (see [mirai()] `.retry`). With `daemons(relay =
#' TRUE)` it also has `relay_dropped`: the number of conditions relayed by
#' running tasks that the host dropped (see [daemons()], Live messages and
#' progress).
#'
#' @param .compute (character) name of the compute profile. Default NULL:
#'   the current profile.
#' @return See Details.
#' @seealso [daemons()]
#' @examples
#' # No daemons set:
#' info()
#' status()
#' @examplesIf interactive()
#' daemons(1)
#' info()
#' status()
#' daemons(0)
#' daemons(1, memory = 50)
#' status()$memory
#' daemons(0)
#' @export
info <- function(.compute = NULL) {
  prof <- profile_of(.compute)
  if (is.null(prof)) return(NULL)
  nms <- c("connections", "cumulative", "awaiting", "executing", "completed")
  if (isTRUE(prof$sync)) return(structure(c(0L, NA, NA, NA, NA), names = nms))
  pool_notice(prof)
  v <- .Call(C_mirai_host_info, prof$host)[nms]
  if (!prof$dispatcher) v[nms[-1L]] <- NA_integer_
  v
}

#' @rdname info
#' @export
status <- function(.compute = NULL) {
  prof <- if (inherits(.compute, "miraiCluster")) live_profile(.compute) else profile_of(.compute)
  if (is.null(prof)) return(list(connections = 0L, daemons = 0L))
  if (isTRUE(prof$sync)) return(list(connections = 0L, daemons = prof$url))
  pool_notice(prof)
  v <- .Call(C_mirai_host_info, prof$host)
  out <- list(connections = v[["connections"]], daemons = prof$url)
  if (prof$dispatcher) {
    out$mirai <- v[c("awaiting", "executing", "completed")]
    out$memory <- .Call(C_mirai_host_memory, prof$host)
  }
  # Ours after the reference's, so that status()[[3]] is still `mirai`.
  out[c("refused", "replaced", "retried")] <- list(v[["refused"]], v[["replaced"]], v[["retried"]])
  if (isTRUE(prof$relay)) out$relay_dropped <- .Call(C_mirai_host_relay_dropped, prof$host)
  out
}

#' URL Constructors
#'
#' `local_url()`: a random local URL (abstract Unix socket on Linux), or
#' with `tcp = TRUE` a loopback TCP URL. `host_url()`: a TCP URL for each of
#' this machine's network interfaces, for daemons on other machines.
#'
#' @param tcp (logical) a loopback TCP URL instead of a Unix socket.
#'   Default FALSE.
#' @param port (integer) port number, from 0 to 65535; 0 picks a free port
#'   when listening. Default 0.
#' @param tls (logical) a `tls+tcp://` URL instead of `tcp://`: [daemons()]
#'   then secures the connections with TLS (a certificate is made for the
#'   URL's address unless one is given). Default FALSE.
#' @return Character URL(s); `host_url()` names them after the network
#'   interfaces.
#' @seealso [daemons()], whose `url` argument takes these.
#' @examples
#' local_url()
#' local_url(tcp = TRUE, port = 5555)
#' host_url()
#' @export
local_url <- function(tcp = FALSE, port = 0) {
  check_port(port)
  if (isTRUE(tcp)) return(sprintf("tcp://127.0.0.1:%d", as.integer(port)))
  if (Sys.info()[["sysname"]] == "Linux") paste0("abstract://", random_name())
  else paste0("ipc://", file.path(tempdir(), random_name()))
}

check_port <- function(port) check_number(port, "port", "an integer from 0 to 65535", max = 65535)

# A fresh name for a socket or an in-process URL: 12 random bytes in hex.
random_name <- function() .Call(C_mirai_random_hex, 12)

# A fresh secret for daemons to prove themselves with: 16 random bytes (128
# bits) in hex.
new_secret <- function() .Call(C_mirai_random_hex, 16)

#' @rdname local_url
#' @export
host_url <- function(tls = FALSE, port = 0) {
  check_flag(tls, "tls")
  check_port(port)
  ip <- .Call(C_mirai_ip_addr)
  if (!length(ip)) ip <- c(nodename = Sys.info()[["nodename"]])
  structure(sprintf("%s://%s:%d", if (tls) "tls+tcp" else "tcp", ip, as.integer(port)), names = names(ip))
}

#' Get Profile Field
#'
#' `nextget()` reads a field of a compute profile, for developers, each of
#' the type the reference gives it:
#' * `"url"` (character): the URL daemons dial.
#' * `"dispatcher"` (character): the address of the profile's dispatcher
#'   (`inproc://`, as it runs in this process), or NULL without one.
#' * `"n"` (integer): the number of daemons launched by [daemons()].
#' * `"dots"` (character): the [daemon()] arguments given to [daemons()], as
#'   they appear in launch commands, e.g. `",cleanup=FALSE,maxtasks=5"`
#'   (`""` for none).
#' * `"sync"` (logical), `"compute"` (character): whether the profile is
#'   synchronous, and its name.
#' * `"seed"`: the `seed` given to [daemons()]; `"stream"` (integer): the
#'   profile's current L'Ecuyer-CMRG stream (see [nextstream()]).
#' * `"tls"` (character): for a `tls+tcp://` or `wss://` host, the
#'   certificate launched daemons verify it with, as [daemon()]'s `tlscert`
#'   takes it.
#' * `"unbounded"` (logical): TRUE unless `daemons(memory =)` caps the
#'   dispatcher's queue.
#'
#' `"cv"` and `"sock"` are objects of the 'nanonext' package in the
#' reference, which this implementation does not use, `"otel_span"` is an
#' OpenTelemetry span, which it does not record, and `"everywhere"` is the
#' reference's internal state: all are NULL here.
#'
#' @param x (character) the field name. No default: required.
#' @param .compute (character) name of the compute profile. Default
#'   `"default"`.
#' @return The field's value, or NULL (no daemons set for the profile, or no
#'   such field).
#' @examples
#' daemons(sync = TRUE, seed = 1)
#' nextget("url")
#' nextget("seed")
#' nextget("stream")
#' daemons(0)
#' @export
nextget <- function(x, .compute = "default") {
  check_string(x, "x")
  prof <- profile_of(.compute)
  if (is.null(prof)) return(NULL)
  switch(x,
         dispatcher = prof$dispatcher_url,
         dots = dots_text(prof$dots),
         unbounded = !(prof$memory > 0),
         # The native handle and the daemons' secret stay inside.
         secret = , host = , dispatcher_url = , memory = NULL,
         prof[[x]])
}
