# Soak run: mixed tasks on local daemons with a dispatcher while daemons are
# SIGKILLed and replaced: by the pool itself (`heal = TRUE`, the default:
# daemons(n) replaces a dead daemon), or by launch_local() after each kill
# (`heal = FALSE`). With `retry` > 0 every task is submitted with that
# `.retry`, and no task may resolve to errorValue 19: a task running on a
# killed daemon runs again elsewhere and reaches its own outcome. Shared by test-soak.R (a short run) and
# bench/soak.R (a long one), which sources this file. Defines functions
# only; Linux only (reads /proc).
#
# soak_run() returns a list of raw figures; soak_checks() turns them into
# pass/fail checks against bounds. The test asserts on the figures itself.

soak_kinds <- c("tiny", "error", "sleep", "payload", "timeout", "cancel")

# What each kind resolves to when nothing goes wrong: 1 = the right value,
# 3 = its own miraiError, 5 = timed out, 20 = canceled. Besides, any kind may
# resolve to 19 (connection reset) if it was in flight when a daemon was
# killed (see soak_run()).
soak_expected <- c(tiny = 1L, error = 3L, sleep = 1L, payload = 1L, timeout = 5L, cancel = 20L)

soak_outcomes <- c(
  "1" = "value ok", "2" = "WRONG VALUE", "3" = "miraiError ok", "4" = "WRONG miraiError",
  "5" = "errorValue 5", "19" = "errorValue 19", "20" = "errorValue 20",
  "6" = "OTHER errorValue", "7" = "OTHER (interrupt?)"
)

soak_proc_field <- function(field) {
  l <- grep(sprintf("^%s:", field), readLines("/proc/self/status"), value = TRUE)
  as.numeric(sub("^[^:]+:\\s*(\\d+).*$", "\\1", l))
}
soak_rss_mb <- function() soak_proc_field("VmRSS") / 1024
# The C heap's bytes in use (malloc's chunks handed out, R's heap among
# them), in MB; NA without a test build's hook or off glibc. RSS also counts
# what malloc keeps after free() for reuse, which climbs for 20-24 s under
# 10 MB payloads and further on a loaded machine (101.9 MB of "growth" in a
# CI run with no leak): in-use bytes grow only with what is still held.
soak_heap_mb <- function() {
  hook <- get0("C_mirai_test_heap_bytes", envir = asNamespace("mirai"), inherits = FALSE)
  if (is.null(hook)) NA_real_ else .Call(hook) / 1048576
}
soak_threads <- function() soak_proc_field("Threads")
soak_fds <- function() length(list.files("/proc/self/fd"))

# Whether process `pid` is alive (helper.R's pid_alive() is this function:
# defined here so that bench/soak.R needs only this file). A zombie counts
# as gone; so does a process that ends between the open and the read of its
# stat file, which then reads as empty.
soak_pid_alive <- function(pid) {
  st <- suppressWarnings(tryCatch(readLines(sprintf("/proc/%d/stat", pid)), error = function(e) NULL))
  length(st) > 0L && !grepl("^\\d+ \\(.*\\) Z", st[[1L]])
}

soak_cmdline <- function(pid) {
  x <- suppressWarnings(tryCatch(readBin(sprintf("/proc/%d/cmdline", pid), "raw", 65536L), error = function(e) raw()))
  x[x == as.raw(0L)] <- as.raw(32L)
  trimws(rawToChar(x))
}

# Processes whose parent is `ppid`: data frame of pid and state.
soak_children_of <- function(ppid = Sys.getpid()) {
  pids <- suppressWarnings(as.integer(list.files("/proc", pattern = "^[0-9]+$")))
  rows <- lapply(pids, function(p) {
    s <- suppressWarnings(tryCatch(readLines(sprintf("/proc/%d/stat", p), warn = FALSE)[[1L]], error = function(e) NA))
    if (is.na(s)) return(NULL)
    f <- strsplit(sub("^.*\\) ", "", s), " ", fixed = TRUE)[[1L]]
    if (as.integer(f[[2L]]) != ppid) return(NULL)
    data.frame(pid = p, state = f[[1L]])
  })
  do.call(rbind, c(list(data.frame(pid = integer(), state = character())), rows))
}

soak_wait <- function(cond, timeout) {
  deadline <- Sys.time() + timeout
  while (!cond()) {
    if (Sys.time() > deadline) return(FALSE)
    Sys.sleep(0.05)
  }
  TRUE
}

# Task expressions. Each that runs for a while first writes its daemon's pid
# to the file `f` (atomically, by rename), so that the host knows which
# daemon runs it.
soak_exprs <- local({
  mark <- quote({ .t <- paste0(f, ".t"); writeLines(as.character(Sys.getpid()), .t); file.rename(.t, f) })
  list(
    tiny = quote(i * 2L + 1L),
    error = quote(stop(sprintf("soak error %d", i))),
    sleep = bquote({ .(mark); Sys.sleep(s); i * 3L }),
    payload = bquote({ .(mark); x + k }),
    timeout = bquote({ .(mark); Sys.sleep(30); "not timed out" }),
    cancel = bquote({ .(mark); Sys.sleep(60); "not cancelled" })
  )
})

soak_read_pid <- function(f) {
  if (!file.exists(f)) return(NA_integer_)
  suppressWarnings(as.integer(tryCatch(readLines(f, warn = FALSE)[1L], error = function(e) NA)))
}

# Runs the soak for `seconds` of load, then drains (up to `grace` seconds),
# checks the daemons are all back and usable, resets with daemons(0) and
# looks for leftover processes. `log` receives progress lines every
# `progress_every` seconds.
#
# Which errorValue 19 are allowed: the task was in flight when some daemon
# was killed, and the pid its daemon wrote (for kinds that write one) is a
# killed one. A task known to be running on the victim when it was killed
# must resolve within a bound of the kill (`kill_latency`).
soak_run <- function(seconds = 40, n = 4L, max_inflight = 50L, kill_every = 3, sample_every = 2,
                     warmup = min(60, seconds / 3), grace = 30, hold = 2, progress_every = Inf,
                     log = function(...) invisible(), weights = NULL, caps = NULL,
                     payload_mb = 10, heal = TRUE, retry = 0L) {
  # With heal, only daemons older than this are killed: 3 deaths in a row
  # within 5 s of launch are a crash loop, which stops the replacing.
  min_age <- 6
  if (is.null(weights)) weights <- c(tiny = 0.55, error = 0.12, sleep = 0.08, payload = 0.10, timeout = 0.08, cancel = 0.07)
  if (is.null(caps)) caps <- c(tiny = Inf, error = Inf, sleep = 2, payload = 2, timeout = 2, cancel = 2)
  now <- function() as.numeric(Sys.time())
  dir <- tempfile("mirai-soak-")
  dir.create(dir)
  on.exit(unlink(dir, recursive = TRUE), add = TRUE)

  # Payloads: integer vectors of payload_mb MB; a task returns x + k.
  plen <- as.integer(payload_mb * 1e6 / 4)
  pool <- lapply(1:3, function(j) sample.int(1e6L, plen, replace = TRUE))

  # Per-task records, grown by doubling.
  fields <- c("kind", "t_sub", "t_res", "outcome", "pid", "at_kill", "near_kill", "victim_t", "timeout",
              "pj", "pk", "cdelay", "cstart", "cret")
  # They are variables r_<field> of this frame, set with `r_x[id] <<- v`,
  # which modifies in place (an environment and get()/assign() would copy
  # the whole vector on each write).
  run_env <- environment()
  cap <- 4096L
  for (f in fields) assign(paste0("r_", f), rep(NA_real_, cap), envir = run_env)
  grow <- function(id) {
    if (id <= cap) return(invisible())
    while (cap < id) cap <<- cap * 2L
    for (f in fields) {
      x <- get(paste0("r_", f), envir = run_env)
      length(x) <- cap
      assign(paste0("r_", f), x, envir = run_env)
    }
  }
  pidfile <- function(id) file.path(dir, id)

  violations <- character()
  n_violations <- 0L
  violate <- function(msg) {
    n_violations <<- n_violations + 1L
    if (length(violations) < 50L) violations <<- c(violations, msg)
  }

  inflight <- list()        # id (character) -> mirai
  held <- list()            # resolved mirai kept a while to check they stay put
  next_id <- 0L
  killed <- integer(); kill_t <- numeric(); seen <- integer()
  watch <- FALSE; conns_at_kill <- NA_integer_; detect_s <- numeric()
  recheck_n <- 0L
  samples <- data.frame(t = numeric(), rss = numeric(), heap = numeric(), fds = numeric(), threads = numeric(),
                        conns = integer(), inflight = integer(), children = integer(), resolved = integer())

  # Daemons load the installed package when launched: a reinstall during
  # the run (a shared machine) would make the figures meaningless.
  so <- file.path(find.package("mirai"), "libs", "mirai.so")
  so_mtime <- file.mtime(so)
  fds0 <- soak_fds()
  mirai::daemons(n, heal = heal)
  reset_done <- FALSE
  on.exit(if (!reset_done) mirai::daemons(0), add = TRUE)
  host <- mirai:::profile_of(NULL)$host
  children <- function() .Call(mirai:::C_mirai_host_children, host, FALSE)
  url <- mirai::status()$daemons
  seen <- children()
  # When each pid was first seen (its age, give or take the launch).
  seen_at <- stats::setNames(rep(now(), length(seen)), seen)
  note_children <- function() {
    kids <- children()
    new <- setdiff(kids, as.integer(names(seen_at)))
    if (length(new)) seen_at[as.character(new)] <<- now()
    seen <<- union(seen, kids)
    kids
  }

  submit <- function(kind) {
    next_id <<- next_id + 1L
    id <- next_id
    grow(id)
    args <- list(i = id)
    to <- NULL
    if (kind %in% c("sleep", "payload", "timeout", "cancel")) args$f <- pidfile(id)
    if (kind == "sleep") args$s <- stats::runif(1, 0.02, 0.4)
    if (kind == "payload") {
      j <- sample.int(length(pool), 1L); k <- sample.int(1000L, 1L)
      args$x <- pool[[j]]; args$k <- k
      r_pj[id] <<- j; r_pk[id] <<- k
    }
    if (kind == "timeout") { to <- sample(150:600, 1L); r_timeout[id] <<- to }
    if (kind == "cancel") r_cdelay[id] <<- stats::runif(1, 0.1, 1)
    e <- soak_exprs[[kind]]
    r_kind[id] <<- match(kind, soak_kinds)
    if (watch) r_near_kill[id] <<- 1
    r_t_sub[id] <<- now()
    inflight[[as.character(id)]] <<- mirai::mirai(e, .args = args, .timeout = to, .retry = retry)
  }

  classify <- function(id, v) {
    kind <- soak_kinds[r_kind[id]]
    # miraiError and miraiInterrupt also inherit from errorValue.
    if (inherits(v, "miraiError")) {
      ok <- kind == "error" && identical(conditionMessage(v), sprintf("soak error %d", id))
      return(if (ok) 3L else 4L)
    }
    if (inherits(v, "miraiInterrupt")) return(7L)
    if (inherits(v, "errorValue")) {
      code <- as.integer(v)
      return(if (code %in% c(5L, 19L, 20L)) code else 6L)
    }
    ok <- switch(kind,
      tiny = identical(v, id * 2L + 1L),
      sleep = identical(v, id * 3L),
      payload = is.integer(v) && length(v) == plen &&
        identical(v - as.integer(r_pk[id]), pool[[r_pj[id]]]),
      FALSE)
    if (ok) 1L else 2L
  }

  describe <- function(v) {
    if (inherits(v, "miraiError")) return(sprintf("miraiError '%s'", conditionMessage(v)))
    if (inherits(v, "miraiInterrupt")) return("miraiInterrupt")
    if (inherits(v, "errorValue")) return(sprintf("errorValue %d", as.integer(v)))
    paste(class(v), collapse = "/")
  }

  resolve <- function(id, m, t) {
    v <- m$data
    code <- classify(id, v)
    kind <- soak_kinds[r_kind[id]]
    r_t_res[id] <<- t
    r_outcome[id] <<- code
    ok <- code == soak_expected[[kind]]
    if (code == 19L && retry > 0L) {
      violate(sprintf("task %d (%s, .retry = %d) resolved to errorValue 19", id, kind, retry))
    } else if (code == 19L) {
      pid <- r_pid[id]
      if (is.na(pid) && kind %in% c("sleep", "payload", "timeout", "cancel")) {
        pid <- soak_read_pid(pidfile(id)); r_pid[id] <<- pid
      }
      near <- isTRUE(r_at_kill[id] == 1) || isTRUE(r_near_kill[id] == 1)
      ok <- near && (is.na(pid) || pid %in% killed)
      if (!ok) violate(sprintf("task %d (%s, submitted at %.2f s) resolved to errorValue 19 at %.2f s but %s", id, kind,
                               r_t_sub[id] - t0, t - t0,
                               if (!near) sprintf("no daemon was killed while it was in flight (last kill before it at %.2f s, host noticed after %.2f s)",
                                                  max(c(-Inf, kill_t[kill_t < r_t_sub[id]])) - t0, max(c(NA, detect_s), na.rm = TRUE))
                               else sprintf("ran on daemon %d, which was not killed", pid)))
    } else if (!ok) {
      violate(sprintf("task %d (%s) resolved to %s", id, kind, describe(v)))
    }
    if (code == 5L && kind == "timeout") {
      el <- (t - r_t_sub[id]) * 1000
      # Early is wrong; late by the poll interval is not.
      if (el < r_timeout[id] - 20) violate(sprintf("task %d timed out after %.0f ms, before its %d ms", id, el, r_timeout[id]))
    }
    held[[length(held) + 1L]] <<- list(id = id, m = m, v = v, due = t + if (kind == "payload") min(hold, 1) else hold)
  }

  recheck <- function(all = FALSE) {
    if (!length(held)) return(invisible())
    t <- now()
    due <- all | vapply(held, function(h) h$due <= t, logical(1L))
    for (h in held[due]) {
      recheck_n <<- recheck_n + 1L
      if (mirai::unresolved(h$m) || !identical(h$m$data, h$v) || !identical(h$m[], h$v))
        violate(sprintf("task %d (%s) changed value after resolving: was %s, now %s", h$id,
                        soak_kinds[r_kind[h$id]], describe(h$v), describe(h$m$data)))
    }
    held <<- held[!due]
  }

  collect <- function() {
    if (!length(inflight)) return(0L)
    done <- !vapply(inflight, mirai::unresolved, logical(1L))
    if (!any(done)) return(0L)
    t <- now()
    for (nm in names(inflight)[done]) resolve(as.integer(nm), inflight[[nm]], t)
    inflight <<- inflight[!done]
    sum(done)
  }

  cancel_one <- function(id, m) {
    r <- mirai::stop_mirai(m)
    r_cret[id] <<- r
    if (mirai::unresolved(m)) violate(sprintf("task %d (cancel) still unresolved right after stop_mirai()", id))
  }

  cancels <- function(force = FALSE) {
    t <- now()
    for (nm in names(inflight)) {
      id <- as.integer(nm)
      if (soak_kinds[r_kind[id]] != "cancel") next
      m <- inflight[[nm]]
      if (!mirai::unresolved(m)) next
      if (force) { cancel_one(id, m); next }
      if (is.na(r_cstart[id])) {
        if (file.exists(pidfile(id))) r_cstart[id] <<- t
      } else if (t - r_cstart[id] >= r_cdelay[id]) {
        cancel_one(id, m)
      }
    }
  }

  kill_one <- function() {
    kids <- note_children()
    t <- now()
    if (heal) kids <- kids[t - seen_at[as.character(kids)] >= min_age]
    if (length(kids)) {
      victim <- kids[sample.int(length(kids), 1L)]
      for (nm in names(inflight)) {
        id <- as.integer(nm)
        r_at_kill[id] <<- 1
        if (soak_kinds[r_kind[id]] %in% c("sleep", "payload", "timeout", "cancel")) {
          if (is.na(r_pid[id])) r_pid[id] <<- soak_read_pid(pidfile(id))
          if (isTRUE(r_pid[id] == victim)) r_victim_t[id] <<- t
        }
      }
      conns_at_kill <<- mirai::info()[["connections"]]
      tools::pskill(victim, tools::SIGKILL)
      killed <<- c(killed, victim)
      kill_t <<- c(kill_t, t)
      # Until the host notices the death, the dispatcher may still send it
      # a task (submitted after the kill), which then resolves to 19 too.
      watch <<- TRUE
    }
    if (!heal) mirai::launch_local(1L)
    note_children()
  }

  sample_now <- function(t) {
    # Resolved values kept for their recheck are checked now and let go:
    # up to ten 10 MB payloads held at once made the heap swing by 100 MB
    # between samples, noise a leak check must not have to see through.
    recheck(all = TRUE)
    # RSS after a full collection: R collects lazily, and after a large
    # allocation earlier in the session (the 2.2 GB test, say) its trigger is
    # high enough that uncollected 10 MB payloads would read as growth.
    invisible(gc(full = TRUE))
    samples[nrow(samples) + 1L, ] <<- list(t - t0, soak_rss_mb(), soak_heap_mb(), soak_fds(), soak_threads(),
                                            mirai::status()$connections, length(inflight),
                                            length(children()), sum(!is.na(r_outcome)))
  }

  weights <- weights[soak_kinds]
  inflight_kinds <- function() {
    if (!length(inflight)) return(stats::setNames(integer(length(soak_kinds)), soak_kinds))
    table(factor(soak_kinds[r_kind[as.integer(names(inflight))]], levels = soak_kinds))
  }

  t0 <- now()
  t_end <- t0 + seconds
  next_kill <- t0 + kill_every
  next_sample <- t0
  next_progress <- t0 + progress_every
  next_recheck <- t0 + 0.5
  log(sprintf("soak: %d daemons, %.0f s of load, up to %d mirai in flight, a daemon killed every %.1f s",
              n, seconds, max_inflight, kill_every))
  while ((t <- now()) < t_end) {
    if (watch) {
      if (mirai::info()[["connections"]] < conns_at_kill) {
        watch <- FALSE
        detect_s <- c(detect_s, t - kill_t[length(kill_t)])
      } else if (t - kill_t[length(kill_t)] > 5) {
        watch <- FALSE  # the victim had not connected yet, or a replacement came in first
      }
    }
    got <- collect()
    cancels()
    room <- max_inflight - length(inflight)
    if (room > 0L) {
      ik <- inflight_kinds()
      for (r in seq_len(room)) {
        kind <- sample(soak_kinds, 1L, prob = weights)
        if (ik[[kind]] >= caps[[kind]]) kind <- "tiny"
        ik[[kind]] <- ik[[kind]] + 1L
        submit(kind)
      }
    }
    if (t >= next_kill) { kill_one(); next_kill <- next_kill + kill_every }
    if (t >= next_recheck) { recheck(); next_recheck <- t + 0.5 }
    if (t >= next_sample) { note_children(); sample_now(t); next_sample <- next_sample + sample_every }
    if (t >= next_progress) {
      s <- samples[nrow(samples), ]
      log(sprintf("[%4.0f s] resolved %d (%.0f/s), in flight %d, kills %d, 19s %d, violations %d, RSS %.0f MB, fds %d, threads %d, connections %d",
                  t - t0, s$resolved, s$resolved / (t - t0), length(inflight), length(killed),
                  sum(r_outcome == 19L, na.rm = TRUE), n_violations, s$rss, s$fds, s$threads, s$conns))
      next_progress <- next_progress + progress_every
    }
    if (!got) Sys.sleep(0.005)
  }
  t_load <- now() - t0
  resolved_load <- sum(!is.na(r_outcome))
  sample_now(now())
  watch <- FALSE

  # Drain: no more submissions or kills; cancel-kind tasks are cancelled.
  cancels(force = TRUE)
  t_drain <- now()
  while (length(inflight) && now() - t_drain < grace) {
    if (!collect()) Sys.sleep(0.01)
    recheck()
  }
  drain_s <- now() - t_drain
  left <- names(inflight)
  left_desc <- vapply(left, function(nm) {
    id <- as.integer(nm)
    sprintf("task %d (%s, submitted at %.1f s, in flight at a kill: %s, pid %s)", id, soak_kinds[r_kind[id]],
            r_t_sub[id] - t0, isTRUE(r_at_kill[id] == 1), soak_read_pid(pidfile(id)))
  }, character(1L))

  # The replacements are all connected and the dispatcher is idle.
  conns_ok <- soak_wait(function() mirai::status()$connections == n, 30)
  conns_final <- mirai::status()$connections
  kids_final <- children()
  kids_desc <- vapply(kids_final, function(p) {
    st <- suppressWarnings(tryCatch(readLines(sprintf("/proc/%d/stat", p), warn = FALSE)[[1L]], error = function(e) "?"))
    sprintf("pid %d (launched %s, state %s)", p, if (p %in% seen) "during the load" else "?",
            strsplit(sub("^.*\\) ", "", st), " ", fixed = TRUE)[[1L]][[1L]])
  }, character(1L))
  seen <- union(seen, kids_final)
  idle_ok <- soak_wait(function() {
    s <- mirai::status()$mirai
    s[["awaiting"]] == 0L && s[["executing"]] == 0L
  }, 15)
  mirai_final <- mirai::status()$mirai
  refused <- mirai::status()$refused
  replaced <- mirai::status()$replaced
  retried <- mirai::status()$retried
  # Still usable: a batch of tasks answers, from the daemons now running.
  t_batch <- now()
  batch <- lapply(1:(2L * n), function(i) mirai::mirai({ Sys.sleep(0.05); Sys.getpid() }))
  batch_ok <- soak_wait(function() !mirai::unresolved(batch), 20)
  batch_s <- now() - t_batch
  batch_pids <- if (batch_ok) unlist(lapply(batch, function(m) m$data)) else integer()
  batch_ok <- batch_ok && is.integer(batch_pids) && length(batch_pids) == 2L * n && all(batch_pids %in% kids_final)
  recheck(all = TRUE)
  rm(held)
  invisible(gc())
  rss_drained <- soak_rss_mb()
  heap_drained <- soak_heap_mb()
  fds_drained <- soak_fds()
  threads_drained <- soak_threads()

  # Reset, then nothing of ours may be left running.
  t_reset <- now()
  mirai::daemons(0)
  reset_done <- TRUE
  reset_s <- now() - t_reset
  soak_wait(function() !any(vapply(seen, soak_pid_alive, logical(1L))), 10)
  alive <- seen[vapply(seen, soak_pid_alive, logical(1L))]
  leftover <- vapply(alive, function(p) sprintf("pid %d: %s", p, soak_cmdline(p)), character(1L))
  soak_wait(function() !any(soak_children_of()$state == "Z"), 5)
  kids_after <- soak_children_of()
  zombies <- kids_after$pid[kids_after$state == "Z"]
  # Right after daemons(0), and once the host object is unreachable and
  # collected (its finalizer closes whatever daemons(0) left open).
  fds_reset_nogc <- soak_fds()
  host <- NULL
  batch <- NULL
  inflight <- NULL
  invisible(gc())
  soak_wait(function() soak_fds() <= fds0, 5)
  fds_reset <- soak_fds()

  # Summaries.
  ids <- seq_len(next_id)
  kind <- factor(soak_kinds[r_kind[ids]], levels = soak_kinds)
  outcome <- r_outcome[ids]
  outcome_lab <- factor(ifelse(is.na(outcome), "unresolved", soak_outcomes[as.character(outcome)]),
                        levels = c(soak_outcomes, "unresolved"))
  counts <- table(kind, outcome_lab)
  counts <- counts[, colSums(counts) > 0, drop = FALSE]
  victim <- !is.na(r_victim_t[ids])
  kill_latency <- (r_t_res[ids] - r_victim_t[ids])[victim & outcome %in% 19L]
  race19 <- sum(outcome %in% 19L & !(r_at_kill[ids] %in% 1) & r_near_kill[ids] %in% 1)
  victim_other <- sum(victim & !(outcome %in% 19L))
  to <- kind == "timeout" & outcome %in% 5L
  timeout_late <- ((r_t_res[ids] - r_t_sub[ids]) * 1000 - r_timeout[ids])[to]
  cancel_ret <- r_cret[ids][kind == "cancel" & !is.na(r_cret[ids])]
  warm <- samples$t <= warmup
  post <- samples$t > warmup
  last_win <- samples$t > warmup & samples$t >= max(samples$t) - max(seconds / 4, sample_every * 3)
  series <- function(x) c(warmup_max = if (any(warm)) max(x[warm]) else NA,
                          post_max = if (any(post)) max(x[post]) else NA,
                          last = x[length(x)],
                          last_win_median = if (any(last_win)) stats::median(x[last_win]) else NA)

  list(
    seconds = seconds, n = n, load_s = t_load, warmup = warmup, heal = heal, retry = retry,
    replaced = replaced, retried = retried,
    submitted = next_id, resolved_load = resolved_load, tasks_per_s = resolved_load / t_load,
    counts = counts, outcome = outcome, kind = kind,
    n_violations = n_violations, violations = violations,
    unresolved_after_grace = length(left), unresolved_desc = unname(left_desc), drain_s = drain_s,
    kills = length(killed), killed = killed, n19 = sum(outcome %in% 19L), race19 = race19, detect_s = detect_s,
    kill_latency = kill_latency, victim_hits = sum(victim), victim_other = victim_other,
    timeout_late_ms = timeout_late, cancel_found = sum(cancel_ret == 1), cancel_calls = length(cancel_ret),
    rechecks = recheck_n,
    conns_ok = conns_ok, conns_final = conns_final, children_final = length(kids_final), children_desc = unname(kids_desc),
    idle_ok = idle_ok, mirai_final = mirai_final, refused = refused,
    batch_ok = batch_ok, batch_s = batch_s,
    samples = samples, rss = series(samples$rss), heap = series(samples$heap), fds = series(samples$fds), threads = series(samples$threads),
    rss_drained = rss_drained, heap_drained = heap_drained, fds_drained = fds_drained, threads_drained = threads_drained,
    fds_before = fds0, fds_reset_nogc = fds_reset_nogc, fds_reset = fds_reset, reset_s = reset_s,
    pids_seen = length(seen), leftover = unname(leftover), zombies = zombies, url = url,
    pkg_changed = !identical(file.mtime(so), so_mtime)
  )
}

# Growth after the warm-up: the highest sample after it less the highest
# during it (both catch the peaks of payloads in flight).
# Growth after the warm-up: the median of the last window against the
# warm-up's peak. Not the later peak: with 10 MB payloads in flight, RSS
# peaks with however many a loaded machine lets queue at one moment
# (transient, +30 MB one run, +130 MB the next), where a leak keeps growing
# into the last window.
soak_growth <- function(s) unname(s[["last_win_median"]] - s[["warmup_max"]])

# Least-squares trend of RSS after the warm-up, MB per minute (reported only:
# too noisy to bound over a short run).
soak_rss_trend <- function(res) {
  s <- res$samples[res$samples$t > res$warmup, ]
  if (nrow(s) < 3L) return(NA_real_)
  unname(stats::coef(stats::lm(rss ~ t, data = s))[[2L]] * 60)
}

soak_checks <- function(res, rss_mb = 250, heap_mb = 40, fds = 20, threads = 20, kill_latency = 5, timeout_late = 5000) {
  cnt <- function(k, o) sum(res$kind == k & res$outcome %in% o)
  chk <- list(
    "no disallowed outcome" = list(res$n_violations == 0L, sprintf("%d violation(s)%s", res$n_violations,
      if (length(res$violations)) paste0(": ", paste(utils::head(res$violations, 5), collapse = "; ")) else "")),
    "all resolved within grace" = list(res$unresolved_after_grace == 0L, sprintf("%d unresolved %.0f s after the load%s",
      res$unresolved_after_grace, res$drain_s,
      if (res$unresolved_after_grace) paste0(": ", paste(utils::head(res$unresolved_desc, 5), collapse = "; ")) else "")),
    "stay resolved (rechecked)" = list(res$rechecks >= res$submitted - res$unresolved_after_grace,
      sprintf("%d of %d rechecked", res$rechecks, res$submitted)),
    "daemons were killed" = list(res$kills >= 3L, sprintf("%d kills", res$kills)),
    "19s at most one per kill" = if (res$retry > 0L) list(res$n19 == 0L, sprintf("%d errorValue 19 with .retry = %d", res$n19, res$retry))
      else list(res$n19 >= 1L && res$n19 <= res$kills, sprintf("%d errorValue 19 for %d kills", res$n19, res$kills)),
    "killed task resolves at once" = if (res$retry > 0L)
      # A task seen running on the victim may have resolved already (timed
      # out, stopped): then it is not retried. At most one per kill is.
      list(res$victim_hits >= 1L && res$victim_other == res$victim_hits && res$retried >= 1L && res$retried <= res$kills,
           sprintf("%d tasks seen running on a killed daemon, all reached their own outcome; %d retries for %d kills",
                   res$victim_hits, res$retried, res$kills))
      else list(length(res$kill_latency) >= 1L && max(res$kill_latency) <= kill_latency,
      sprintf("%d observed, max %.2f s (bound %g s)", length(res$kill_latency),
              if (length(res$kill_latency)) max(res$kill_latency) else NA, kill_latency)),
    "every kill replaced" = list(!res$heal || res$replaced == res$kills, sprintf("%d kills, %d replaced", res$kills, res$replaced)),
    "every kind reached its outcome" = list(cnt("tiny", 1L) >= 100L && cnt("sleep", 1L) >= 1L && cnt("payload", 1L) >= 1L &&
      cnt("error", 3L) >= 1L && cnt("timeout", 5L) >= 1L && cnt("cancel", 20L) >= 1L,
      sprintf("tiny %d, sleep %d, payload %d, error %d, timeout %d, cancel %d", cnt("tiny", 1L), cnt("sleep", 1L),
              cnt("payload", 1L), cnt("error", 3L), cnt("timeout", 5L), cnt("cancel", 20L))),
    "timeouts not late" = list(length(res$timeout_late_ms) >= 1L && max(res$timeout_late_ms) <= timeout_late,
      sprintf("max %.0f ms late (bound %g)", if (length(res$timeout_late_ms)) max(res$timeout_late_ms) else NA, timeout_late)),
    "replacements connected" = list(res$conns_ok && res$children_final == res$n,
      sprintf("%d connections, %d children: %s", res$conns_final, res$children_final, paste(res$children_desc, collapse = ", "))),
    "dispatcher idle after drain" = list(res$idle_ok, paste(names(res$mirai_final), res$mirai_final, collapse = ", ")),
    "daemons usable after the run" = list(res$batch_ok, sprintf("batch of %d in %.2f s", 2L * res$n, res$batch_s)),
    "RSS flat after warm-up" = list(is.na(rss_mb) || soak_growth(res$rss) < rss_mb,
      sprintf("%+.1f MB (bound %s)", soak_growth(res$rss), if (is.na(rss_mb)) "none: the heap's bytes in use are bounded" else rss_mb)),
    "heap in use flat after warm-up" = list(is.na(soak_growth(res$heap)) || soak_growth(res$heap) < heap_mb,
      if (is.na(soak_growth(res$heap))) "not measured (no test hook in this build)"
      else sprintf("%+.1f MB (bound %g)", soak_growth(res$heap), heap_mb)),
    "fds flat after warm-up" = list(soak_growth(res$fds) < fds, sprintf("%+.0f (bound %g)", soak_growth(res$fds), fds)),
    "threads flat after warm-up" = list(soak_growth(res$threads) < threads, sprintf("%+.0f (bound %g)", soak_growth(res$threads), threads)),
    "fds back after daemons(0) and gc()" = list(res$fds_reset <= res$fds_before,
      sprintf("%d before daemons(), %d after daemons(0) and gc()", res$fds_before, res$fds_reset)),
    "no daemon left running" = list(!length(res$leftover), sprintf("%d of %d pids alive%s", length(res$leftover), res$pids_seen,
      if (length(res$leftover)) paste0(": ", paste(res$leftover, collapse = "; ")) else "")),
    "no zombie children" = list(!length(res$zombies), paste(c(length(res$zombies), res$zombies), collapse = " "))
  )
  data.frame(check = names(chk), ok = vapply(chk, function(x) isTRUE(x[[1L]]), logical(1L)),
             detail = vapply(chk, function(x) x[[2L]], character(1L)), row.names = NULL)
}

soak_report <- function(res, checks, log = function(x) cat(x, "\n", sep = "")) {
  log(sprintf("== soak report: %d daemons (%s), .retry = %d, %.0f s of load (warm-up %.0f s) ==", res$n,
              if (res$heal) "replaced by the pool" else "replaced by launch_local()", res$retry, res$load_s, res$warmup))
  log(sprintf("daemons replaced %d, tasks retried %d", res$replaced, res$retried))
  if (res$pkg_changed) log("WARNING: the installed mirai changed during the run (reinstalled?): figures unreliable")
  log(sprintf("submitted %d, resolved during load %d (%.1f tasks/s), kills %d, pids seen %d, refused %s",
              res$submitted, res$resolved_load, res$tasks_per_s, res$kills, res$pids_seen, res$refused))
  log("outcomes by kind:")
  for (l in utils::capture.output(print(res$counts))) log(paste0("  ", l))
  q <- function(x, d = 2) if (length(x)) paste(format(round(stats::quantile(x, c(0, 0.5, 0.9, 1)), d), nsmall = d), collapse = " / ") else "none"
  log(sprintf("kill -> errorValue 19 latency (min/median/p90/max s, %d obs.): %s; victims resolving otherwise: %d",
              length(res$kill_latency), q(res$kill_latency), res$victim_other))
  log(sprintf("kill -> host sees the connection drop (s, %d obs.): %s; 19s of tasks sent after a kill, before the host noticed: %d",
              length(res$detect_s), q(res$detect_s, 3), res$race19))
  log(sprintf("timeout lateness (ms): %s", q(res$timeout_late_ms, 0)))
  log(sprintf("stop_mirai(): %d calls, %d found by the dispatcher", res$cancel_calls, res$cancel_found))
  fmt <- function(s, d) paste(sprintf("%s %s", names(s), format(round(s, d), nsmall = d)), collapse = ", ")
  log(sprintf("RSS MB:  %s; trend after warm-up %+.2f MB/min; after drain %.1f",
              fmt(res$rss, 1), soak_rss_trend(res), res$rss_drained))
  log(sprintf("heap MB: %s; after drain %.1f", fmt(res$heap, 1), res$heap_drained))
  log(sprintf("fds:     %s; after drain %d; before daemons() %d, after daemons(0) %d, and after gc() %d",
              fmt(res$fds, 0), res$fds_drained, res$fds_before, res$fds_reset_nogc, res$fds_reset))
  log(sprintf("threads: %s; after drain %d", fmt(res$threads, 0), res$threads_drained))
  s <- res$samples
  idx <- unique(round(seq(1, nrow(s), length.out = min(nrow(s), 12))))
  log("samples (t s, RSS MB, heap MB, fds, threads, connections, in flight):")
  log(paste0("  ", paste(sprintf("%.0f:%.0f/%.0f/%d/%d/%d/%d", s$t[idx], s$rss[idx], s$heap[idx], s$fds[idx], s$threads[idx],
                                s$conns[idx], s$inflight[idx]), collapse = " ")))
  log(sprintf("daemons(0) took %.2f s", res$reset_s))
  log("checks:")
  for (i in seq_len(nrow(checks)))
    log(sprintf("  [%s] %s: %s", if (checks$ok[i]) "ok" else "FAIL", checks$check[i], checks$detail[i]))
  log(if (all(checks$ok)) "PASS" else "FAIL")
}
