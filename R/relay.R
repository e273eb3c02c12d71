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
relay_handler <- function(conn) {
  function(cond) {
    if (!.Call(C_mirai_daemon_relay, conn, relay_slim(cond), FALSE)) return()
    for (r in computeRestarts(cond)) {
      if (startsWith(r$name, "muffle")) invokeRestart(r)
    }
  }
}

# A condition's call, from code parsed with source references, carries
# them, and with them the whole source file (tens of KB for one message);
# progressr's updates carry the whole call stack (`calls`, the daemon's own
# frames included). The host has no use for either.
relay_slim <- function(cond) {
  call <- cond$call
  if (!is.null(attr(call, "srcref"))) {
    attr(call, "srcref") <- NULL
    cond$call <- call
  }
  if (!is.null(cond$calls)) cond$calls <- NULL
  cond
}

# Evaluates `expr` under the relay handler `h` (NULL: as it is).
with_relay <- function(expr, h) {
  if (is.null(h)) expr else withCallingHandlers(expr, message = h, immediateCondition = h)
}

# ---- on the host ----------------------------------------------------------

# Called natively with what the profiles' inboxes held: a list of
# list(compute, id, seq, cond) for each condition, in order per task, then
# list(compute, id, dropped) for tasks some of whose conditions were dropped.
relay_show <- function(items) {
  for (x in items) {
    if (!is.null(x$dropped)) {
      relay_dropped(x$compute, x$id, x$dropped)
    } else {
      relay_signal(x$cond, x$id, x$compute)
    }
  }
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
relay_signal <- function(cond, id, compute) {
  if (!inherits(cond, "condition")) return(invisible())
  cond$mirai_id <- id
  cond$mirai_compute <- compute
  class(cond) <- unique(c("miraiCondition", class(cond)))
  if (inherits(cond, "message")) {
    withRestarts({
      signalCondition(cond)
      # What the daemon sent need not print (a message that is not text):
      # a relayed message must not fail the wait it is shown in.
      text <- tryCatch(conditionMessage(cond), error = function(e) NULL)
      if (!is.character(text)) text <- "(a relayed message that is not text)\n"
      cat(relay_tag(id, compute), text, sep = "", file = stderr())
    }, muffleMessage = function() NULL)
  } else if (inherits(cond, "progression")) {
    withRestarts(signalCondition(cond), muffleProgression = function(p) NULL)
  } else {
    withRestarts(signalCondition(cond), muffleCondition = function(...) NULL)
  }
  invisible()
}

relay_dropped <- function(compute, id, n) {
  message(sprintf("%s%s condition(s) relayed by this task were dropped: the host holds at most %s at once",
                  relay_tag(id, compute), format(n, scientific = FALSE),
                  format(limit("relay_max_items"), big.mark = ",")))
}

# daemons(relay = TRUE): the host keeps and shows its daemons' conditions.
enable_relay <- function(host, compute) {
  use_later <- requireNamespace("later", quietly = TRUE)
  .Call(C_mirai_host_relay, host, compute, relay_show, use_later)
}
