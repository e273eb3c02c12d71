# Live relay of conditions from running tasks (daemons(relay = TRUE)): the
# daemon's calling handler that sends them, and the host's side that
# signals them again as they arrive. The transport, the bounded inbox and
# the moments R is handed them are native (rust/src/host/relay.rs and
# rust/src/r/glue/relay.rs).

# ---- on the daemon --------------------------------------------------------

# A calling handler (for `message` and `immediateCondition`, which
# progressr's updates are) that sends the condition to the host at once and
# muffles it here. One it cannot send (no task running, too large, a host
# gone) goes on as it would without relay.
#
# A task's own 'miraiRelayDropped' is not relayed: the host would take it
# for the daemon's drop note (sent natively before a task's value: relay_note
# in rust/src/r/glue/daemon.rs), counting and telling drops
# that never were.
#
# A progress update over the task's relay budget is not dropped: it is kept
# back (`held`, per progressor), its amount added to the next update of that
# progressor that goes, or sent just before the task's value
# (relay_flush()): so a task's progress bar ends on the host where it ended
# in the task, however fast the task updated it, with no note of drops. At
# most `relay_hold_max` progressors per task are kept; the updates of others
# are dropped and counted as any condition. A cluster node's task, answered
# natively, flushes through the `flush` daemon() leaves in the node's sink.
relay_handler <- function(conn) {
  # Per progressor, the update kept back (`held`) and the other
  # progressions kept back behind it (`after`), for the running `task`.
  st <- new.env(parent = emptyenv())
  st$held <- new.env(parent = emptyenv())
  st$after <- new.env(parent = emptyenv())
  st$task <- 0
  function(cond) {
    if (inherits(cond, "miraiRelayDropped")) return()
    if (inherits(cond, "progression")) {
      now <- hold_progress(st, conn, cond)
      if (is.null(now)) {
        r <- findRestart("muffleProgression", cond)
        if (!is.null(r)) invokeRestart(r)
        return()
      }
      cond <- now
    }
    if (!.Call(C_mirai_daemon_relay, conn, relay_slim(cond), FALSE)) return()
    # A message's own restart is muffleMessage (as future's muffling has
    # it): any other 'muffle' restart would be one a task set around the
    # signal (warning()'s, when signalled in a warning handler), and taking
    # it would change what the task computes.
    if (inherits(cond, "message")) {
      r <- findRestart("muffleMessage", cond)
      if (!is.null(r)) invokeRestart(r)
      return()
    }
    for (r in computeRestarts(cond)) {
      # R's top-level restart ('abort') has no `name` field: its name is
      # only its first element.
      name <- r[[1L]]
      if (is.character(name) && startsWith(name, "muffle")) invokeRestart(r)
    }
  }
}

relay_hold_max <- 100L

# Progression `cond` as it goes to the host now (an update merged with the
# one of its progressor kept back), or NULL when kept back (state `st` of
# relay_handler()). Another progression (a finish) of a progressor with an
# update kept back is kept back behind it, sent after it, never before it:
# the host would end the bar short of it. So is a finish over the budget
# (at most `relay_hold_max` of those): progressr signals one as a
# progressor's function returns, and dropped it would be told as a drop.
hold_progress <- function(st, conn, cond) {
  uuid <- cond$progressor_uuid
  if (!is.character(uuid) || length(uuid) != 1L || is.na(uuid)) return(cond)
  id <- .Call(C_mirai_daemon_current, conn)
  if (id != st$task) {
    empty_held(st)
    st$task <- id
  }
  # No task runs: nothing is relayed, nor kept.
  if (id == 0) return(cond)
  before <- st$held[[uuid]]
  room <- .Call(C_mirai_daemon_relay_room, conn)
  if (identical(cond$type, "update")) {
    if (room) {
      if (is.null(before)) return(cond)
      rm(list = uuid, envir = st$held)
      return(merge_updates(before, cond))
    }
    if (is.null(before) && length(st$held) >= relay_hold_max) return(cond)
    assign(uuid, merge_updates(before, cond), envir = st$held)
    return(NULL)
  }
  if (!is.null(before) && room && .Call(C_mirai_daemon_relay, conn, relay_slim(before), FALSE)) {
    rm(list = uuid, envir = st$held)
    before <- NULL
    room <- .Call(C_mirai_daemon_relay_room, conn)
  }
  if (!is.null(before) ||
      identical(cond$type, "finish") && !room && length(st$after) < relay_hold_max) {
    assign(uuid, cond, envir = st$after)
    return(NULL)
  }
  cond
}

# Forgets what `st` kept back.
empty_held <- function(st) {
  rm(list = ls(st$held, all.names = TRUE), envir = st$held)
  rm(list = ls(st$after, all.names = TRUE), envir = st$after)
}

# Progress update `cond` of a progressor, after `before` (kept back, or
# NULL): one update to the same point. An absolute `step` stands as it is;
# an amount adds to the one kept back (or to its step).
merge_updates <- function(before, cond) {
  if (is.null(before) || is_number(cond$step)) return(cond)
  amount <- if (is_number(cond$amount)) cond$amount else 0
  if (is_number(before$step)) {
    cond$step <- before$step + amount
  } else {
    cond$amount <- amount + if (is_number(before$amount)) before$amount else 0
  }
  cond
}

# Before a task's value: the progress updates its relay handler `h` kept
# back, sent whatever the budget (at most one per progressor), then the
# finishes kept back behind them (see hold_progress()).
relay_flush <- function(h, conn) {
  st <- environment(h)$st
  if (!length(st$held) && !length(st$after)) return(invisible())
  if (st$task == .Call(C_mirai_daemon_current, conn)) {
    for (e in list(st$held, st$after)) {
      for (uuid in ls(e, all.names = TRUE)) .Call(C_mirai_daemon_relay_flush, conn, relay_slim(e[[uuid]]))
    }
  }
  empty_held(st)
  invisible()
}

# A condition's call, from code parsed with source references, carries
# them, and with them the whole source file (tens of KB for one message);
# progressr's updates carry the whole call stack (`calls`, the daemon's own
# frames included). The host has no use for either.
#
# A cli progress bar's line (a 'cliMessage', signalled while cli renders the
# bar) also gets the bar's position as `mirai_bar`, read through cli's
# exported `pb_*` bindings, which hold it only while the bar is rendered:
# the host counts it in a map's `[.progress]` (the text alone says "20%").
relay_slim <- function(cond) {
  call <- cond$call
  if (!is.null(attr(call, "srcref"))) {
    attr(call, "srcref") <- NULL
    cond$call <- call
  }
  if (!is.null(cond$calls)) cond$calls <- NULL
  if (inherits(cond, "cliMessage")) cond$mirai_bar <- cli_bar_position()
  cond
}

cli_bar_position <- function() {
  pos <- tryCatch(list(id = cli::pb_id, current = cli::pb_current, total = cli::pb_total),
                  error = function(e) NULL)
  if (is_bar_position(pos)) pos
}

# Whether `pos` is a bar position as cli_bar_position() makes it. The host
# checks too: a task may send a message with a `mirai_bar` of its own.
is_bar_position <- function(pos) {
  is.list(pos) && is.character(pos$id) && length(pos$id) == 1L && !is.na(pos$id) &&
    is_number(pos$current) && is.finite(pos$current) && pos$current >= 0 &&
    is_number(pos$total) && is.finite(pos$total) && pos$total > 0
}

# Set once on a daemon whose host relays, before its first task. Both only
# decide what a task shows, never what it computes: progressr's
# progressors are inert where progressr is not enabled (by default, where R
# is not interactive, as on a daemon), and cli redraws a bar every 3 s where
# output is not a terminal, every 0.2 s where it is.
relay_setup <- function() {
  if (is.null(getOption("progressr.enable"))) options(progressr.enable = TRUE)
  if (!nzchar(Sys.getenv("CLI_TICK_TIME")) && !isNamespaceLoaded("cli"))
    Sys.setenv(CLI_TICK_TIME = "200")
}

# Evaluates `expr` under the relay handler `h` (NULL: none) and the daemon
# loop's `error` handler. Either way through one withCallingHandlers(): a
# task then runs as deep in the call stack with relay on as off (its
# sys.nframe(), sys.function(n)).
with_relay <- function(expr, h, error) {
  if (is.null(h)) withCallingHandlers(expr, error = error)
  else withCallingHandlers(expr, message = h, immediateCondition = h, error = error)
}

# ---- on the host ----------------------------------------------------------

# Called natively with what the profiles' inboxes held: a list of
# list(compute, id, seq, cond) for each condition, in order per task, then
# list(compute, id, dropped) for tasks some of whose conditions were dropped.
# `from_later`: called from later's loop, which runs callbacks with R's
# handler stack emptied, global calling handlers (progressr's
# `handlers(global = TRUE)`) included: those are then called here.
#
# An error where one is shown (a handler's) is raised once the rest are
# shown: they were taken from the inbox, and would otherwise be lost.
#
# All are of one profile, current when they were taken. Should a handler
# reset it, the rest go unshown, as a reset empties the inbox: task ids are
# numbered per profile, and a new profile of the same name (set by the
# handler too) may have a task of the same id.
relay_show <- function(items, from_later = FALSE) {
  .$relay_showing <- TRUE
  on.exit(.$relay_showing <- FALSE)
  n <- length(items)
  if (!n) return(invisible())
  compute <- items[[1L]]$compute
  prof <- .$profiles[[compute]]
  current <- function() identical(.$profiles[[compute]], prof)
  k <- 0L
  err <- NULL
  while (k < n && current()) {
    e <- tryCatch({
      while (k < n && current()) {
        k <- k + 1L
        x <- items[[k]]
        if (!is.null(x$dropped)) {
          relay_dropped(x$compute, x$id, x$dropped)
        } else {
          relay_signal(x$cond, x$id, x$compute, from_later)
        }
      }
    }, error = identity)
    if (is.null(err) && inherits(e, "error")) err <- e
  }
  if (current()) forget_handlers(compute)
  if (!is.null(err)) stop(err)
}

# ---- handlers set by on_relay() -------------------------------------------

#' Handle a Task's Relayed Messages and Progress
#'
#' `on_relay()` sets a function to be called on the host with each message
#' and progress update that the task of a mirai (or each task of a
#' `mirai_map()`, or of a list of mirai) relays while it runs, under
#' `daemons(relay = TRUE)`. It is called whenever the host shows relayed
#' conditions: while R waits for a mirai and, with the 'later' package, from
#' later's event loop, which is where Shiny and plumber run. This is how a
#' Shiny app moves a progress bar while one long task runs: later calls its
#' callbacks outside every calling handler, so only a handler set here sees
#' the task's conditions there.
#'
#' The handler receives each condition (with classes and fields as described
#' in [daemons()], section 'Live messages and progress', e.g. `mirai_id`)
#' in order per task, instead of its being signalled or shown: it is not
#' also written to stderr or passed to calling handlers. Set it just after
#' creating the mirai: conditions shown before that (R waited meanwhile)
#' took their usual way. It is dropped once its tasks are over and their
#' conditions have been handed to it, or when the daemons are reset (a
#' mirai sent before a reset gets none: nothing more comes for it). An
#' error in the handler is an error where the condition is shown (in the
#' wait, or reported by later).
#'
#' @param x a 'mirai', a 'mirai_map', or a list of 'mirai', all sent to
#'   daemons set with `relay = TRUE`.
#' @param handler a function of one argument, the condition.
#'
#' @return `x`, invisibly.
#'
#' @examples
#' \donttest{
#' daemons(1, relay = TRUE)
#' m <- mirai({
#'   for (i in 1:3) message("step ", i, " of 3")
#'   "done"
#' })
#' steps <- character()
#' on_relay(m, function(cond) steps <<- c(steps, conditionMessage(cond)))
#' m[]
#' steps
#' daemons(0)
#' }
#'
#' @export
on_relay <- function(x, handler) {
  if (!is.function(handler))
    abort(sprintf("`handler` must be a function of one argument (the condition), not %s", typeof(handler)))
  targets <- relay_targets(x)
  for (t in targets) {
    prof <- .$profiles[[t$compute]]
    if (is.null(prof)) next
    if (is.null(prof$relay_handlers)) {
      prof$relay_handlers <- new.env(parent = emptyenv())
      prof$relay_entries <- list()
    }
    entry <- new.env(parent = emptyenv())
    entry$handler <- handler
    entry$ids <- id_key(t$ids)
    entry$done <- t$done
    entry$seen_done <- FALSE
    for (k in entry$ids) assign(k, entry, envir = prof$relay_handlers)
    prof$relay_entries[[length(prof$relay_entries) + 1L]] <- entry
    # Every so often (twice as many as were left last time): handlers
    # whose tasks never relay are otherwise kept until one of the
    # profile's tasks does.
    if (length(prof$relay_entries) >= (prof$relay_sweep_at %||% 64L)) {
      forget_over(prof)
      prof$relay_sweep_at <- max(64L, 2L * length(prof$relay_entries))
    }
  }
  invisible(x)
}

# What on_relay() keys handlers by: for each profile, the task ids and a
# function telling whether they are all over. An element of a profile reset
# since is left out: nothing more comes for it.
relay_targets <- function(x) {
  h <- if (is_mirai_map(x)) map_handle(x)
  if (is.null(h)) {
    if (is_mirai(x)) x <- list(x)
    if (!is.list(x) || !length(x)) abort(relay_x_error())
  }
  el <- relay_elements(x, h, strict = TRUE)
  on <- which(!is.na(el$compute))
  if (!is.null(h)) {
    if (!length(on)) return(list())
    return(list(list(compute = el$compute[[1L]], ids = el$ids, done = el$all_done)))
  }
  lapply(on, function(i) list(compute = el$compute[[i]], ids = el$ids[[i]], done = function() el$done_at(i)))
}

relay_x_error <- function(detail = NULL) {
  paste0("`x` must be a mirai, a mirai_map or a list of mirai", if (!is.null(detail)) ": ", detail)
}

# How relayed conditions name the elements of map `x` (handle `h`) or of
# list `x` (`h` NULL), for on_relay() and a map's progress: per element,
# the profile relaying its conditions (`compute`) and its task id (`ids`),
# both NA for an element that relays none; `done()`, which elements are
# over (`done_at(i)`: element `i`; `all_done()`: all). An element of a
# profile reset since relays none: its id may be a new profile's task's.
# `strict`: an element that is not a mirai, or was not sent to daemons that
# relay, is an error rather than one that relays none.
relay_elements <- function(x, h, strict) {
  off <- function() abort("`x` was not sent to daemons set with `relay = TRUE`: nothing is relayed for it")
  if (!is.null(h)) {
    of <- .Call(C_mirai_relay_of, h, TRUE)
    if (strict && is.null(of)) off()
    n <- length(x)
    done <- function() .Call(C_mirai_map_done, h)
    return(list(compute = rep(if (is.character(of)) of else NA_character_, n),
                ids = .Call(C_mirai_map_ids, h), done = done,
                done_at = function(i) done()[i],
                all_done = function() .Call(C_mirai_map_resolved, h) == n))
  }
  aios <- lapply(x, function(m) if (is_mirai(m)) aio_of(m))
  compute <- vapply(seq_along(aios), function(i) {
    a <- aios[[i]]
    of <- if (!is.null(a)) .Call(C_mirai_relay_of, a, FALSE)
    if (strict) {
      if (!is_mirai(x[[i]])) abort(relay_x_error("an element is not a mirai"))
      if (is.null(of)) off()
    }
    if (is.character(of)) of else NA_character_
  }, "")
  ids <- rep(NA_real_, length(aios))
  on <- !is.na(compute)
  ids[on] <- vapply(aios[on], function(a) .Call(C_mirai_aio_id, a), 0)
  done_at <- function(i) {
    a <- aios[[i]]
    is.null(a) || .Call(C_mirai_aio_done, a)
  }
  done <- function() vapply(seq_along(aios), done_at, NA)
  list(compute = compute, ids = ids, done = done, done_at = done_at, all_done = function() all(done()))
}

# A task id as a name: the key of on_relay()'s registry and of a map's
# elements in its progress bar.
id_key <- function(id) format(id, scientific = FALSE, trim = TRUE)

relay_handler_for <- function(compute, id) {
  prof <- .$profiles[[compute]]
  reg <- if (!is.null(prof)) prof$relay_handlers
  if (is.null(reg)) return(NULL)
  entry <- reg[[id_key(id)]]
  if (!is.null(entry)) entry$handler
}

# A task's conditions all reach the host before its value, so once a
# handler's tasks were seen over, the next drain of the profile's inbox
# hands it the last of them: after that drain, the handler goes.
forget_handlers <- function(compute) {
  prof <- .$profiles[[compute]]
  entries <- if (!is.null(prof)) prof$relay_entries
  if (!length(entries)) return(invisible())
  keep <- logical(length(entries))
  for (k in seq_along(entries)) {
    e <- entries[[k]]
    if (e$seen_done) {
      forget_entry(prof, e)
    } else {
      e$seen_done <- isTRUE(e$done())
      keep[k] <- TRUE
    }
  }
  prof$relay_entries <- entries[keep]
  invisible()
}

# Outside a drain, the handlers whose tasks are over go at once if the
# profile's inbox holds nothing to show: their tasks' conditions, all
# received before the values, were shown already.
forget_over <- function(prof) {
  entries <- prof$relay_entries
  over <- vapply(entries, function(e) isTRUE(e$done()), NA)
  if (!any(over) || isTRUE(.$relay_showing) || !.Call(C_mirai_host_relay_idle, prof$host)) return()
  for (e in entries[over]) forget_entry(prof, e)
  prof$relay_entries <- entries[!over]
}

forget_entry <- function(prof, e) {
  rm(list = e$ids[vapply(e$ids, function(i) identical(prof$relay_handlers[[i]], e), NA)],
     envir = prof$relay_handlers)
}

relay_tag <- function(id, compute) {
  if (identical(compute, "default")) sprintf("[mirai %s] ", format(id, scientific = FALSE))
  else sprintf("[mirai %s | %s] ", format(id, scientific = FALSE), compute)
}

# Signals relayed condition `cond` of task `id` of profile `compute` on the
# host, as a condition of its own classes and 'miraiCondition', with the
# task as `mirai_id` and the profile as `mirai_compute`. A message no handler
# muffles is written to stderr after the task's tag, as message() would;
# progressr's updates reach progressr's handlers.
relay_signal <- function(cond, id, compute, from_later = FALSE) {
  if (!inherits(cond, "condition")) return(invisible())
  if (inherits(cond, "miraiRelayDropped")) return(relay_over_budget(cond, id, compute))
  cond$mirai_id <- id
  cond$mirai_compute <- compute
  class(cond) <- unique(c("miraiCondition", class(cond)))
  handler <- relay_handler_for(compute, id)
  if (!is.null(handler)) return(invisible(handler(cond)))
  signal <- if (from_later) signal_global else signalCondition
  if (inherits(cond, "message")) {
    withRestarts({
      signal(cond)
      # What the daemon sent need not print (a message that is not text):
      # a relayed message must not fail the wait it is shown in.
      text <- tryCatch(conditionMessage(cond), error = function(e) NULL)
      if (!is.character(text)) text <- "(a relayed message that is not text)\n"
      relay_write(relay_tag(id, compute), text, cond$mirai_bar)
    }, muffleMessage = function() NULL)
  } else if (inherits(cond, "progression")) {
    withRestarts(signal(cond), muffleProgression = function(p) NULL)
  } else {
    withRestarts(signal(cond), muffleCondition = function(...) NULL)
  }
  invisible()
}

# Writes a relayed message to stderr after its tag. A cli progress bar's
# line is redrawn in place where stderr is a dynamic terminal (as cli
# decides), until the bar is full; anything else written meanwhile starts on
# a line of its own.
relay_write <- function(tag, text, bar) {
  if (is_bar_position(bar) && use_cli() && cli::is_dynamic_tty(stderr())) {
    full <- bar$current >= bar$total
    cat("\r", tag, sub("\n$", "", text), "\033[K", if (full) "\n", sep = "", file = stderr())
    .$bar_line <- !full
    return(invisible())
  }
  if (isTRUE(.$bar_line)) {
    cat("\n", file = stderr())
    .$bar_line <- FALSE
  }
  cat(tag, text, sep = "", file = stderr())
}

# A daemon's note of conditions its task could not relay, being over the
# budget: counted with the host's own drops, and told.
relay_over_budget <- function(cond, id, compute) {
  n <- cond$dropped
  if (!is.numeric(n) || length(n) != 1L || is.na(n) || n <= 0) return(invisible())
  prof <- .$profiles[[compute]]
  if (!is.null(prof)) .Call(C_mirai_host_relay_count, prof$host, as.double(n))
  message(sprintf("%s%s condition(s) signalled by this task were not relayed: a task relays at most %s a second",
                  relay_tag(id, compute), format(n, scientific = FALSE),
                  format(limit("relay_rate"), big.mark = ",")))
}

# signalCondition(), then the global calling handlers for the condition's
# classes, most recently registered first, as R itself calls them at top
# level.
signal_global <- function(cond) {
  signalCondition(cond)
  hs <- globalCallingHandlers()
  classes <- class(cond)
  for (k in seq_along(hs)) {
    if (names(hs)[k] %in% classes) hs[[k]](cond)
  }
  invisible()
}

# Either bound may be the one a flood hit (a few large conditions fill the
# bytes long before the count): the note names both.
relay_dropped <- function(compute, id, n) {
  message(sprintf("%s%s condition(s) relayed by this task were dropped: the host holds at most %s (and %s) at once",
                  relay_tag(id, compute), format(n, scientific = FALSE),
                  format(limit("relay_max_items"), big.mark = ","), bytes_text(limit("relay_max_bytes"))))
}

# daemons(relay = TRUE): the host keeps and shows its daemons' conditions.
enable_relay <- function(host, compute) {
  use_later <- requireNamespace("later", quietly = TRUE)
  .Call(C_mirai_host_relay, host, compute, relay_show, use_later)
}
