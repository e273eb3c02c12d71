# make_cluster(): a cluster for base R's parallel package (and so for
# foreach through doParallel), whose nodes are daemons of a compute profile.

#' Make a mirai Cluster
#'
#' Creates a cluster of daemons that every function of base R's 'parallel'
#' package accepts (`parLapply()`, `clusterApplyLB()`, `clusterExport()`,
#' `clusterSetRNGStream()`, ...), as does foreach through
#' `doParallel::registerDoParallel(cl)`. The 'snow' package's functions
#' accept it too (its methods are registered for snow's generics as well),
#' and so foreach through `doSNOW::registerDoSNOW(cl)`, including progress
#' reporting with `.options.snow = list(progress = f)`: `f` is called as
#' each task completes.
#'
#' Each node of the cluster is one daemon: a task sent to node i runs on the
#' i-th daemon to have connected, as parallel expects (so that
#' `clusterExport()` or `clusterEvalQ()` reaches every daemon exactly once).
#' The load-balanced functions (`clusterApplyLB()`, `parLapplyLB()`, ...)
#' therefore really balance: each new task goes to the node that just
#' finished. Global objects assigned on the daemons persist between tasks
#' (the daemons run with `cleanup = FALSE`).
#'
#' The cluster has its own compute profile, so it coexists with daemons set
#' by [daemons()]. Its daemons start in parallel; `make_cluster()` returns
#' once all have connected. Errors on nodes come back as parallel expects
#' (e.g. "one node produced an error: Error in f(): ..."); a node whose
#' daemon has died fails each call sent to it with an error saying so, and
#' never hangs.
#'
#' The cluster is also a backend for the futureverse:
#' `future::plan(future::cluster, workers = cl)` runs futures on its nodes,
#' for `future()`, 'future.apply' and 'furrr' alike. `resolved()` on such a
#' future never blocks. A subset (`cl[2:3]`) is a cluster of those nodes,
#' and `parallelly::as.cluster()` makes one node (`cl[[1]]`) a cluster of
#' one. The nodes hold no R connections, so a cluster may have more nodes
#' than the 125 that R's connection limit allows a PSOCK cluster. A function
#' defined at the top level or in a package travels to each node once (and
#' again only if its node no longer holds it), not with every task as to a
#' PSOCK cluster; a function made inside another function goes with every
#' task, so that a change to the variables it captured is always seen. The
#' host keeps such functions for reuse within 64 MB in all (a larger one
#' goes with every task): what it holds of functions you drop is bounded.
#'
#' With `url` (and no `remote`), the cluster listens for daemons launched
#' elsewhere: the shell commands to launch them are printed, and a task
#' sent to a node waits (interruptibly) until that node's daemon has
#' connected.
#'
#' @param n (integer) number of nodes (daemons) to launch. Required unless
#'   `url` is given with `remote = NULL`, in which case it is the number of
#'   launch commands printed (default 1 then).
#' @param url (character) a URL to listen at for remote daemons, e.g.
#'   `"tcp://10.75.32.70:5555"`. Default NULL: local daemons.
#' @param remote (list) a launch configuration for remote daemons, as for
#'   [daemons()]. Default NULL.
#' @param ... (named arguments) further [daemon()] arguments for the
#'   daemons, as for [daemons()], and `relay = TRUE` to show messages from
#'   running tasks on the host as they happen, and with future, progressr's
#'   updates before the futures resolve (see [daemons()], Live messages and
#'   progress). Default: none.
#' @return `make_cluster()`: a 'miraiCluster' (a list of 'miraiNode'
#'   objects, with classes `c("miraiCluster", "cluster")`). `stop_cluster()`:
#'   NULL, invisibly.
#' @seealso [daemons()]; [parallel::parLapply()] and the rest of parallel.
#' @examplesIf interactive()
#' cl <- make_cluster(2)
#' cl
#' parallel::clusterEvalQ(cl, Sys.getpid())
#' parallel::parLapply(cl, 1:4, function(x) x^2)
#' parallel::clusterApplyLB(cl, c(1, 0.1, 0.1), function(s) { Sys.sleep(s); s })
#' status(cl)
#' stop_cluster(cl)
#'
#' # As a future backend
#' cl <- make_cluster(2)
#' future::plan(future::cluster, workers = cl)
#' future.apply::future_sapply(1:4, function(i) i * 10)
#' future::plan(future::sequential)
#' stop_cluster(cl)
#' @export
make_cluster <- function(n, url = NULL, remote = NULL, ...) {
  if (!missing(n)) {
    check_count(n)
    if (is.na(n)) abort("`n` must be a single number")
    if (!is.finite(n) || n != trunc(n)) abort("`n` must be a whole number")
    # Before any profile is made: launch_remote() and daemons() refuse more.
    if (n > MAX_LOCAL_DAEMONS) abort(sprintf("`n` must be at most %d", MAX_LOCAL_DAEMONS))
  }
  if (is.null(url) || !is.null(remote)) {
    if (missing(n)) abort("`n` must be supplied (the number of nodes)")
    if (n < 1) abort("`n` must be 1 or greater")
  } else if (missing(n)) {
    n <- 1L
  }
  fixed <- intersect(names(list(...)), c("dispatcher", "cleanup", "idletime", "walltime", "maxtasks", "heal"))
  if (length(fixed))
    abort(sprintf("`%s` cannot be set for a cluster: its nodes are persistent daemons that keep their state",
                 fixed[[1L]]))
  id <- next_cluster_id()
  if (is.null(url)) {
    # Nodes are bound to the daemons that joined first, in order: a
    # replacement would be no node's.
    daemons(n, dispatcher = TRUE, cleanup = FALSE, ..., heal = FALSE, .compute = id)
  } else {
    daemons(n = if (is.null(remote)) 0L else n, url = url, remote = remote, dispatcher = TRUE,
            cleanup = FALSE, ..., .compute = id)
    if (is.null(remote)) {
      cat("Shell commands for deployment on nodes:\n\n")
      print(launch_remote(n, .compute = id))
    }
  }
  prof <- profile_of(id)
  # A name unique in the session: future keys its registry of busy nodes by
  # it (otherwise by a digest of the cluster, which changes as tasks queue).
  .$cluster_serial <- (.$cluster_serial %||% 0L) + 1L
  name <- sprintf("miraiCluster-%d-%d", Sys.getpid(), .$cluster_serial)
  host <- if (is.null(url)) structure("localhost", localhost = TRUE)
  peers <- new.env(parent = emptyenv())
  nodes <- lapply(seq_len(n), new_node, prof = prof, id = id, cluster = name, host = host, peers = peers)
  peers$nodes <- nodes
  cluster_of(nodes, id, name, prof)
}

#' @rdname make_cluster
#' @param cl (miraiCluster) a cluster from `make_cluster()`. No default:
#'   required.
#' @export
stop_cluster <- function(cl) {
  if (!inherits(cl, "miraiCluster")) abort("`cl` must be a 'miraiCluster'")
  if (!is.null(live_profile(cl))) daemons(0, .compute = attr(cl, "id"))
  # The functions kept to be sent as shares (rust/src/r/glue/node.rs) go
  # now rather than with the last reference to the cluster.
  prof <- attr(cl, "profile")
  if (is.environment(prof) && !isTRUE(prof$active)) prof$node_funs <- NULL
  invisible()
}

#' @export
print.miraiCluster <- function(x, ...) {
  prof <- live_profile(x)
  cat(sprintf("< miraiCluster | ID: %s nodes: %d active: %s >\n", attr(x, "id"), length(x),
              !is.null(prof) && isTRUE(prof$active)))
  invisible(x)
}

#' @export
print.miraiNode <- function(x, ...) {
  cat(sprintf("< miraiNode | node: %d cluster ID: %s >\n", attr(x, "node"), attr(x, "id")))
  invisible(x)
}

# A subset is a cluster of the same profile, named after its nodes so that
# future sees the same nodes under the same name however they were picked.
#' @export
`[.miraiCluster` <- function(x, i) {
  nodes <- .subset(x, i)
  base <- if (length(x)) .subset2(.subset2(x, 1L), "cluster") else attr(x, "name")
  cluster_of(nodes, attr(x, "id"),
             sprintf("%s[%s]", base, paste(vapply(nodes, attr, 0L, "node"), collapse = ",")), attr(x, "profile"))
}

# future's as.cluster() (from parallelly), which plan(cluster, workers = )
# applies: one node is a cluster of one.
#' @exportS3Method parallelly::as.cluster
as.cluster.miraiNode <- function(x, ...) {
  cluster_of(list(x), attr(x, "id"), sprintf("%s[%d]", .subset2(x, "cluster"), attr(x, "node")),
             .subset2(x, "prof"))
}

# ---- parallel's node interface ------------------------------------------
#
# snow, from which parallel's cluster code comes, has the same four
# generics and the same messages (list(type, data = list(fun, args, return,
# tag), tag) out; list(node, value = list(type, value, tag)) back from
# recvOneData()). Packages built on snow (doSNOW, whose progress bars are
# called as each result comes back from recvOneData()) call snow's
# generics, so the methods below are registered for both (for snow's when
# its namespace loads).

# parallel sends list(type, data = list(fun, args, return, tag), tag); only
# "EXEC" reaches a node (stopCluster() has its own method). The node's
# daemon runs `fun` on `args` as parallel's workers do (natively: see
# rust/src/r/glue/node.rs), so nothing is left in its global environment that
# parallel itself would not leave.
#' @exportS3Method parallel::sendData
#' @exportS3Method snow::sendData
sendData.miraiNode <- function(node, data) {
  # `data` is evaluated as .Call()'s argument, first: an error in making
  # the message is the caller's and leaves the cluster as it was. (snow's
  # sendCall() passes its `args` unevaluated, and doSNOW's are its
  # iterator's next element, whose end is an error that doSNOW catches
  # before receiving the results still outstanding.) Interrupted or failed
  # once sending began, the routine drops the tasks outstanding on the
  # cluster: parallel's caller gives up on all of them.
  invisible(.Call(C_mirai_node_send, node, data))
}

# future (ClusterFuture) drives a node through parallel's sendCall() and
# recvResult(), i.e. the two methods above and below, and asks whether a
# node's task is done (resolved()) by reading `node$con`: for NULL it
# falls back to a blocking value() (with a warning), otherwise it returns
# FALSE at once for a connection whose id is negative ("from another
# session"), and for a real socket it waits up to 10 ms for it to become
# readable, then receives. `con` is thus an active binding answering from
# the node's queue, which never blocks: while the oldest task is
# unresolved, a marker with id -1; once it has resolved (or there is none,
# so that receiving fails clearly rather than waiting), a socket that is
# always readable (see ready_socket()).
#
# future also relays "immediate" conditions (e.g. progressr's updates) from
# a PSOCK worker as messages sent ahead of the result. Its wrapper around a
# future's expression looks for `master` in the frames above it on the
# worker and sends them with parallel's sendData(master, ...): the daemon
# binds one (a 'miraiRelay', made in daemon()) in a frame above each node
# task, which collects them, and they return with the task's value.
# recvData() then hands them out first, one per call, as PSOCK's messages
# would be; they arrive when the task is done, not live. With
# `make_cluster(relay = TRUE)` they are sent as they happen instead, held
# by the host for the node's task (see relay.R), and `con` reports the node
# readable as soon as it holds any, so that future's resolved() takes them
# while the task runs.

#' @exportS3Method parallel::recvData
#' @exportS3Method snow::recvData
recvData.miraiNode <- function(node) {
  if (length(.subset2(node, "pending"))) return(next_pending(node))
  # With relay on, a receive ends for conditions held for the node's task
  # as it does for its value (a PSOCK worker's messages do).
  # Interrupted or failed, the routines drop the tasks outstanding on the
  # cluster.
  head <- if (isTRUE(.subset2(node, "prof")$relay)) .subset2(node, "head")
  if (!is.null(head) && .Call(C_mirai_node_wait_held, head, node)) return(hand_out_held(node, head))
  msg <- .Call(C_mirai_node_recv, node)
  # Conditions relayed live for this task all arrived before its value.
  if (!is.null(head) && .Call(C_mirai_node_held_any, head)) return(hand_out_held(node, head, msg))
  if (is.object(.subset2(msg, "value"))) node_message(node, msg) else msg
}

# Hands out the conditions held for the node's task `head` (see above), one
# per call, then `msg`, its value, if received.
hand_out_held <- function(node, head, msg = NULL) {
  held <- lapply(.Call(C_mirai_node_held, head), function(cond) list(type = "VALUE", value = cond))
  if (!is.null(msg)) {
    rest <- if (is.object(.subset2(msg, "value"))) {
      m <- node_message(node, msg)
      c(list(m), .subset2(node, "pending"))
    } else list(msg)
    held <- c(held, rest)
  }
  assign("pending", held, envir = node)
  next_pending(node)
}

# On a daemon: what future's wrapper sends (see above), sent to the host at
# once with relay on, else collected to go with the task's value.
#' @exportS3Method parallel::sendData
sendData.miraiRelay <- function(node, data) {
  sink <- .subset2(node, "sink")
  conn <- sink$conn
  if (!is.null(conn) && .Call(C_mirai_daemon_relay, conn, relay_slim(.subset2(data, "value")), TRUE))
    return(invisible())
  sink$conds <- c(sink$conds, list(.subset2(data, "value")))
  invisible()
}

#' @exportS3Method parallel::recvOneData
#' @exportS3Method snow::recvOneData
recvOneData.miraiCluster <- function(cl) {
  # list(node, value), or the number of a node holding messages already
  # received (future's relayed conditions), which come first. Interrupted
  # or failed, the routine drops the tasks outstanding on the cluster.
  r <- .Call(C_mirai_cluster_recv, cl)
  if (is.integer(r)) return(list(node = r, value = recvData.miraiNode(.subset2(cl, r))))
  if (is.object(.subset2(.subset2(r, "value"), "value")))
    r[["value"]] <- node_message(.subset2(cl, .subset2(r, "node")), .subset2(r, "value"))
  r
}

#' @exportS3Method parallel::stopCluster
#' @exportS3Method snow::stopCluster
stopCluster.miraiCluster <- function(cl) stop_cluster(cl)

# ---- internals -----------------------------------------------------------

# A received message whose value is an object: a node failure (an error
# value) becomes a 'try-error' naming the node; future's relayed conditions
# are handed out first, one per call, then the value.
node_message <- function(node, msg) {
  v <- .subset2(msg, "value")
  if (is.integer(v) && inherits(v, "errorValue")) {
    msg[["value"]] <- node_failure(v, attr(node, "node"))
    return(msg)
  }
  if (!inherits(v, "miraiRelayed")) return(msg)
  msg[["value"]] <- .subset2(v, "value")
  assign("pending", c(lapply(.subset2(v, "conditions"), function(cond) list(type = "VALUE", value = cond)),
                      list(msg)), envir = node)
  next_pending(node)
}

next_pending <- function(node) {
  pending <- .subset2(node, "pending")
  assign("pending", pending[-1L], envir = node)
  pending[[1L]]
}

# One constructor of nodes: an empty environment holding the cluster's
# profile, the environment `peers` whose `nodes` are all the cluster's
# nodes, the node's outstanding tasks, in order: `head` (an aio handle, or
# NULL) with parallel's tag `head_tag`, and the `rest` (a list of
# list(aio, tag)), messages received but
# not yet handed out (`pending`, see recvData()), the cluster's name,
# `host` (as parallel's socket nodes have it; NULL for remote daemons,
# whose host is not known here) and `con` (for future, see above).
new_node <- function(i, prof, id, cluster, host, peers) {
  node <- new.env(parent = emptyenv())
  node$prof <- prof
  node$peers <- peers
  node$head <- NULL
  node$head_tag <- NULL
  node$rest <- list()
  node$pending <- list()
  node$cluster <- cluster
  node$host <- host
  makeActiveBinding("con", function() node_con(node), node)
  structure(node, class = "miraiNode", node = i, id = id)
}

# Whether R writes function `f` the same for as long as it is the same
# object, so that it may travel to each node once (see NodeFuns in
# rust/src/r/glue/node.rs); asked once per function. R's serializer offers
# its reference hook each environment it would write with its contents
# (all but the global one, base, namespaces and packages'), each external
# pointer and weak reference: the parts whose contents may change while
# `f` does not. The one exception is the file of `f`'s own source
# references (and the file it aliases, for a `#line` directive), an
# environment R never changes once made. Only that object is let through,
# not whatever is classed "srcfile": a closure's own environment so
# classed, whose bindings change like any other's, still goes whole.
# Once the answer is no, every part the hook is offered is written as a
# reference (a name) rather than with its contents: a closure over a large
# environment is not written whole just to find that out.
node_fun_fixed <- function(f) {
  fixed <- TRUE
  files <- NULL
  own_file <- function(x) {
    if (!inherits(x, "srcfile") || identical(x, environment(f))) return(FALSE)
    if (is.null(files)) files <<- srcfiles_of(f)
    any(vapply(files, identical, NA, x))
  }
  serialize(f, NULL, refhook = function(x) {
    if (fixed && !own_file(x)) fixed <<- FALSE
    if (!fixed) "-"
  })
  fixed
}

# The files R attached to closure `f`'s source references: the one of the
# function's srcref and of its body's, with each one's original when it is
# an alias.
srcfiles_of <- function(f) {
  files <- list(attr(attr(f, "srcref"), "srcfile"), attr(body(f), "srcfile"))
  files <- Filter(function(x) is.environment(x) && inherits(x, "srcfile"), files)
  originals <- lapply(files, function(x) get0("original", envir = x, inherits = FALSE))
  c(files, Filter(function(x) is.environment(x) && inherits(x, "srcfile"), originals))
}

cluster_of <- function(nodes, id, name, profile) {
  structure(nodes, class = c("miraiCluster", "cluster"), id = id, name = name, profile = profile)
}

# The cluster's profile while it is still the one registered under the
# cluster's ID, else NULL: once a cluster has stopped, its handle must
# neither report nor stop daemons set later under that name by hand.
live_profile <- function(cl) {
  prof <- profile_of(attr(cl, "id"))
  if (!is.null(prof) && identical(prof, attr(cl, "profile"))) prof
}

node_con <- function(node) {
  head <- .subset2(node, "head")
  if (!length(.subset2(node, "pending")) && !is.null(head) && !.Call(C_mirai_aio_done, head) &&
      !(isTRUE(.subset2(node, "prof")$relay) && .Call(C_mirai_node_held_any, head)))
    structure(-1L, class = c("miraiPending", "connection"))
  else ready_socket()
}

# A client socket whose peer has closed: select() always reports it
# readable, and nothing ever reads it (receiving goes through recvData()).
# One per session, made on first use and again if it was closed (e.g. by
# closeAllConnections()). The listener it connects to is open only for the
# connect and accept; its port comes from the pid and the clock, not from
# R's random number generator, which must stay untouched (future.seed).
ready_socket <- function() {
  con <- .$ready_con
  if (!is.null(con) && still_open(con)) return(con)
  base <- Sys.getpid() + (proc.time()[["elapsed"]] * 1000) %% 1e6
  for (k in 0:99) {
    port <- 49152L + as.integer((base + k * 7919) %% 16384)
    srv <- tryCatch(serverSocket(port), error = function(e) NULL)
    if (!is.null(srv)) break
  }
  if (is.null(srv))
    abort("could not open a local socket for future's resolved() checks")
  on.exit(close(srv))
  con <- socketConnection("127.0.0.1", port, open = "rb", blocking = TRUE, timeout = 5)
  close(socketAccept(srv, open = "rb", blocking = TRUE, timeout = 5))
  .$ready_con <- con
  con
}

# Whether connection `con` is still the one registered under its number.
still_open <- function(con) {
  now <- tryCatch(getConnection(as.integer(con)), error = function(e) NULL)
  identical(attr(con, "conn_id"), attr(now, "conn_id"))
}

# "`k`", k the number of profile names set so far in the session (as the
# reference counts them), moved on past any name already used: a cluster
# made after another was stopped gets an ID of its own, never the old one.
next_cluster_id <- function() {
  used <- .$profile_names
  k <- length(ls(used, all.names = TRUE))
  while (exists(sprintf("`%d`", k), envir = used, inherits = FALSE)) k <- k + 1L
  sprintf("`%d`", k)
}

# A node's task resolved to an error value (its daemon died, or the cluster
# was stopped): a 'try-error' as parallel reports it.
node_failure <- function(v, i) {
  reset <- as.integer(v) == error_code("reset")
  why <- if (reset) "its daemon disconnected, or the cluster was stopped" else "it failed"
  structure(sprintf("node %d of the mirai cluster could not run the task: %s (errorValue %s)", i, why,
                    error_text(as.integer(v))),
            class = "try-error")
}
