# make_cluster(): a cluster for base R's parallel package (and so for
# foreach through doParallel), whose nodes are daemons of a compute profile.

#' Make a mirai Cluster
#'
#' Creates a cluster of daemons that every function of base R's 'parallel'
#' package accepts (`parLapply()`, `clusterApplyLB()`, `clusterExport()`,
#' `clusterSetRNGStream()`, ...), as does foreach through
#' `doParallel::registerDoParallel(cl)`.
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
#'   daemons, as for [daemons()]. Default: none.
#' @return `make_cluster()`: a 'miraiCluster' (a list of 'miraiNode'
#'   objects, with classes `c("miraiCluster", "cluster")`). `stop_cluster()`:
#'   NULL, invisibly.
#' @seealso [daemons()]; [parallel::parLapply()] and the rest of parallel.
#' @examplesIf interactive() || identical(Sys.getenv("IN_PKGDOWN"), "true")
#' cl <- make_cluster(2)
#' cl
#' parallel::clusterEvalQ(cl, Sys.getpid())
#' parallel::parLapply(cl, 1:4, function(x) x^2)
#' parallel::clusterApplyLB(cl, c(1, 0.1, 0.1), function(s) { Sys.sleep(s); s })
#' status(cl)
#' stop_cluster(cl)
#' @export
make_cluster <- function(n, url = NULL, remote = NULL, ...) {
  if (!missing(n) && !is.numeric(n)) stop("`n` must be numeric, did you mean to provide `url`?", call. = FALSE)
  if (!missing(n) && (length(n) != 1L || is.na(n))) stop("`n` must be a single number", call. = FALSE)
  if (!missing(n) && (!is.finite(n) || n != trunc(n))) stop("`n` must be a whole number", call. = FALSE)
  if (is.null(url) || !is.null(remote)) {
    if (missing(n)) stop("`n` must be supplied (the number of nodes)", call. = FALSE)
    if (n < 1) stop("`n` must be 1 or greater", call. = FALSE)
  } else if (missing(n)) {
    n <- 1L
  }
  fixed <- intersect(names(list(...)), c("dispatcher", "cleanup", "idletime", "walltime", "maxtasks"))
  if (length(fixed))
    stop(sprintf("`%s` cannot be set for a cluster: its nodes are persistent daemons that keep their state",
                 fixed[[1L]]), call. = FALSE)
  id <- next_cluster_id()
  if (is.null(url)) {
    daemons(n, dispatcher = TRUE, cleanup = FALSE, ..., .compute = id)
  } else {
    daemons(n = if (is.null(remote)) 0L else n, url = url, remote = remote, dispatcher = TRUE,
            cleanup = FALSE, ..., .compute = id)
    if (is.null(remote)) {
      cat("Shell commands for deployment on nodes:\n\n")
      print(launch_remote(n, .compute = id))
    }
  }
  prof <- profile_of(id)
  peers <- new.env(parent = emptyenv())
  nodes <- lapply(seq_len(n), new_node, prof = prof, id = id, peers = peers)
  peers$nodes <- nodes
  structure(nodes, class = c("miraiCluster", "cluster"), id = id, profile = prof)
}

#' @rdname make_cluster
#' @param cl (miraiCluster) a cluster from `make_cluster()`. No default:
#'   required.
#' @export
stop_cluster <- function(cl) {
  if (!inherits(cl, "miraiCluster")) stop("`cl` must be a 'miraiCluster'", call. = FALSE)
  if (!is.null(live_profile(cl))) daemons(0, .compute = attr(cl, "id"))
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

#' @export
`[.miraiCluster` <- function(x, i) {
  structure(.subset(x, i), class = class(x), id = attr(x, "id"), profile = attr(x, "profile"))
}

# ---- parallel's node interface ------------------------------------------

# parallel sends list(type, data = list(fun, args, return, tag), tag); only
# "EXEC" reaches a node (stopCluster() has its own method). The task runs
# `fun` on `args` in a local environment, so nothing is left in the
# daemon's global environment that parallel itself would not leave.
#' @rawNamespace S3method(parallel::sendData, miraiNode)
sendData.miraiNode <- function(node, data) {
  prof <- .subset2(node, "prof")
  if (!isTRUE(prof$active)) stop("cluster is no longer active", call. = FALSE)
  # Interrupted (or failed) before the task is on record: parallel's caller
  # gives up on the tasks already sent to other nodes too.
  sent <- FALSE
  m <- NULL
  on.exit(if (!sent) {
    if (!is.null(m)) stop_mirai(m)
    drop_outstanding(node)
  })
  d <- .subset2(data, "data")
  task <- list(._expr_. = node_call, ._globals_. = list(),
               ._args_. = list(.fun = .subset2(d, "fun"), .args = .subset2(d, "args")))
  m <- .Call(C_mirai_host_submit_node, prof$host, task, attr(node, "node") - 1)
  tag <- .subset2(d, "tag")
  if (!is.null(tag)) assign("tag", tag, envir = m)
  # Almost always the node has no other task outstanding: the head is kept
  # apart from the (rarely used) rest, so neither end costs a list copy.
  if (is.null(.subset2(node, "head"))) {
    assign("head", m, envir = node)
  } else {
    rest <- .subset2(node, "rest")
    rest[[length(rest) + 1L]] <- m
    assign("rest", rest, envir = node)
  }
  sent <- TRUE
  invisible()
}

#' @rawNamespace S3method(parallel::recvData, miraiNode)
recvData.miraiNode <- function(node) {
  m <- .subset2(node, "head")
  if (is.null(m)) stop(sprintf("node %d of the cluster has no task to receive", attr(node, "node")), call. = FALSE)
  received <- FALSE
  on.exit(if (!received) drop_outstanding(node))
  v <- .Call(C_mirai_value, m)
  received <- TRUE
  rest <- .subset2(node, "rest")
  if (length(rest)) {
    assign("head", rest[[1L]], envir = node)
    assign("rest", rest[-1L], envir = node)
  } else {
    assign("head", NULL, envir = node)
  }
  if (is.integer(v) && inherits(v, "errorValue")) v <- node_failure(v, attr(node, "node"))
  list(type = "VALUE", value = v, tag = .subset2(m, "tag"))
}

#' @rawNamespace S3method(parallel::recvOneData, miraiCluster)
recvOneData.miraiCluster <- function(cl) {
  heads <- lapply(cl, .subset2, "head")
  busy <- which(!vapply(heads, is.null, logical(1L)))
  if (!length(busy)) stop("no node of the cluster has a task to receive", call. = FALSE)
  received <- FALSE
  on.exit(if (!received) drop_outstanding(.subset2(cl, busy[[1L]])))
  i <- busy[.Call(C_mirai_race, lapply(heads[busy], .subset2, "aio"))]
  received <- TRUE
  list(node = i, value = recvData.miraiNode(.subset2(cl, i)))
}

#' @rawNamespace S3method(parallel::stopCluster, miraiCluster)
stopCluster.miraiCluster <- function(cl) stop_cluster(cl)

# ---- internals -----------------------------------------------------------

node_call <- quote(do.call(.fun, .args, quote = TRUE))

# One constructor of nodes: an empty environment holding the cluster's
# profile, the environment `peers` whose `nodes` are all the cluster's
# nodes, and the node's outstanding tasks, in order: `head` (a mirai, or
# NULL) and the `rest` (a list).
new_node <- function(i, prof, id, peers) {
  node <- new.env(parent = emptyenv())
  node$prof <- prof
  node$peers <- peers
  node$head <- NULL
  node$rest <- list()
  structure(node, class = "miraiNode", node = i, id = id)
}

# A wait for a result was interrupted (or failed): parallel's caller has
# given up on every task then outstanding on the cluster, and would take
# their results for those of its next call. They are cancelled and
# forgotten, on every node.
drop_outstanding <- function(node) {
  for (p in .subset2(.subset2(node, "peers"), "nodes")) {
    for (m in c(list(.subset2(p, "head")), .subset2(p, "rest"))) {
      if (!is.null(m)) stop_mirai(m)
    }
    assign("head", NULL, envir = p)
    assign("rest", list(), envir = p)
  }
}

# The cluster's profile while it is still the one registered under the
# cluster's ID, else NULL: once a cluster has stopped, its ID goes to the
# next cluster made, which a stale handle must neither report nor stop.
live_profile <- function(cl) {
  prof <- profile_of(attr(cl, "id"))
  if (!is.null(prof) && identical(prof, attr(cl, "profile"))) prof
}

# "`k`" for the lowest k >= the number of profiles not yet in use.
next_cluster_id <- function() {
  k <- length(ls(.$profiles, all.names = TRUE))
  while (!is.null(.$profiles[[sprintf("`%d`", k)]])) k <- k + 1L
  sprintf("`%d`", k)
}

# A node's task resolved to an error value (its daemon died, or the cluster
# was stopped): a 'try-error' as parallel reports it.
node_failure <- function(v, i) {
  why <- if (as.integer(v) == 19L) "its daemon disconnected, or the cluster was stopped" else "it failed"
  structure(sprintf("node %d of the mirai cluster could not run the task: %s (errorValue %s)\n", i, why,
                    error_text(as.integer(v))),
            class = "try-error")
}
