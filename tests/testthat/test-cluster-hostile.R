# A miraiCluster's native node path (R/cluster.R, rust/src/r/glue/node.rs and
# the daemon's node tasks in rust/src/r/glue/daemon.rs) under unusual use:
# parallel's low-level API called by hand, functions that differ only in
# their source references, daemons launched by hand with their own
# settings, and node environments that were tampered with. The reference
# for what a task does is a PSOCK cluster, whose workers run
# do.call(fun, args, quote = TRUE).

library(parallel)

# Sends one task to node 1 of `cl` through parallel's own functions and
# returns parallel's result for it.
send_recv <- function(cl, fun, args) {
  parallel:::sendCall(cl[[1L]], fun, args)
  parallel:::recvResult(cl[[1L]])
}

test_that("a node runs sendCall()'s fun and args exactly as a PSOCK worker does", {
  cl <- make_cluster(1)
  on.exit(stop_cluster(cl))
  ps <- makePSOCKcluster(1)
  on.exit(stopCluster(ps), add = TRUE)
  same <- list(
    # A function named by a string, as do.call() allows (clusterCall() and
    # clusterApply() pass `fun` on unchanged).
    name = list("paste", list("a", "b")),
    sum = list("sum", list(1, 2, 3)),
    # The arguments are quoted as do.call(quote = TRUE) quotes them.
    substitute = list(function(x) deparse(substitute(x)), list(quote(foo))),
    sys.call = list(function(a, b) sys.call(), list(a = 1, b = quote(z))),
    match.call = list(function(a, b) match.call(), list(b = 2, a = quote(f(y)))),
    # A pairlist is a list to do.call().
    pairlist = list(function(a) a * 2, pairlist(a = 3)),
    names = list(function(...) names(list(...)),
                 structure(list(1, 2, 3), names = c("", "b", "if"))),
    missing = list(function(x, y) missing(y), list(1, quote(expr = ))),
    symbol = list(function(x) x, list(quote(not_defined_anywhere))),
    call = list(function(x) x, list(quote(stop("never evaluated")))),
    builtin = list(sum, list(1, 2)),
    special = list(`if`, list(TRUE, "yes", "no")),
    zero = list(function() "none", list())
  )
  for (nm in names(same)) {
    fa <- same[[nm]]
    expect_identical(send_recv(cl, fa[[1L]], fa[[2L]]), send_recv(ps, fa[[1L]], fa[[2L]]),
                     label = nm)
  }
  # What do.call() refuses is refused with do.call()'s message.
  refused <- list(
    not_function = list(42, list()),
    null_fun = list(NULL, list()),
    two_names = list(c("sum", "max"), list(1)),
    not_list = list(sum, 1:3),
    null_args = list(function() 1, NULL)
  )
  for (nm in names(refused)) {
    fa <- refused[[nm]]
    want <- send_recv(ps, fa[[1L]], fa[[2L]])
    expect_s3_class(want, "try-error")
    got <- send_recv(cl, fa[[1L]], fa[[2L]])
    expect_s3_class(got, "try-error")
    expect_match(got, unclass(want)[[1L]], fixed = TRUE, label = nm)
    # Built natively, it reads as one built in R does.
    expect_identical(unclass(got)[[1L]], sprintf("Error: %s", attr(got, "message")), label = nm)
  }
  # A string naming no function fails as do.call() fails.
  expect_error(clusterCall(cl, "no_such_function_here"),
               "could not find function \"no_such_function_here\"", fixed = TRUE)
  # The node is still in step: each result is the one just asked for.
  expect_identical(clusterCall(cl, "Sys.getpid"), clusterCall(cl, function() Sys.getpid()))
  expect_identical(clusterApply(cl, 1:3, "sqrt"), lapply(1:3, sqrt))
})

test_that("the function a node reuses is the one sent, source references included", {
  cl <- make_cluster(1)
  on.exit(stop_cluster(cl))
  # Identical but for a comment in the body (identical() ignores source
  # references): each must run as sent, with its own source.
  src <- function(comment) {
    text <- sprintf("function() {\n  # %s\n  as.character(attr(sys.function(), 'srcref'))\n}",
                    comment)
    f <- eval(parse(text = text, keep.source = TRUE))
    environment(f) <- globalenv()
    f
  }
  v1 <- src("version one")
  v2 <- src("version two")
  expect_true(identical(v1, v2))
  got <- vapply(list(v1, v2, v1), function(f) paste(clusterCall(cl, f)[[1L]], collapse = "\n"), "")
  expect_identical(regmatches(got, regexpr("version [a-z]+", got)),
                   c("version one", "version two", "version one"))
  # The source positions of an error's calls are the ones of the function
  # sent (here: stop() on line 3, then on line 5).
  fails_at <- function(line) {
    f <- eval(parse(text = sprintf("function() {%sstop('here')\n}", strrep("\n", line - 1L)),
                    keep.source = TRUE))
    environment(f) <- globalenv()
    e <- send_recv(cl, f, list())
    attr(attr(e, "stack.trace")[[1L]], "srcref")[[1L]]
  }
  expect_identical(c(fails_at(3L), fails_at(5L), fails_at(3L)), c(3L, 5L, 3L))
  # Functions without source references are still told apart by their
  # environments.
  k1 <- local({ k <- 1; function(x) x + k })
  k2 <- local({ k <- 2; function(x) x + k })
  got <- vapply(1:4, function(i) send_recv(cl, if (i %% 2) k1 else k2, list(10)), 0)
  expect_identical(got, c(11, 12, 11, 12))
})

test_that("a node's daemon launched by hand keeps its own cleanup and maxtasks settings", {
  expect_output(cl <- make_cluster(1, url = local_url(tcp = TRUE)), "Shell commands for deployment")
  on.exit(stop_cluster(cl))
  cmd <- launch_remote(cl)[[1L]]
  expect_match(cmd, "cleanup=FALSE", fixed = TRUE)
  cmd <- sub("cleanup=FALSE", "cleanup=TRUE,maxtasks=3", cmd, fixed = TRUE)
  # (Rscript by its full path: R CMD check puts a stub first on PATH.)
  rscript <- shQuote(file.path(R.home("bin"), "Rscript"))
  cmd <- sub(" Rscript -e ", sprintf(" %s -e ", rscript), cmd, fixed = TRUE)
  system(cmd, wait = FALSE)
  # (A node's task waits for its daemon for as long as it takes.)
  joined <- wait_until(function() status(cl)$connections == 1L, 30)
  expect_true(joined)
  if (!joined) return(invisible())
  pid <- clusterCall(cl, function() {
    assign("left_behind", 1, envir = globalenv())
    Sys.getpid()
  })[[1L]]
  on.exit(if (pid_alive(pid)) tools::pskill(pid, tools::SIGKILL), add = TRUE)
  # Cleaned up after the task, as the daemon was told to.
  expect_identical(clusterCall(cl, function() exists("left_behind", envir = globalenv())),
                   list(FALSE))
  # The third task is its last: its result arrives, and then the daemon
  # exits; the next task fails at once, naming the node.
  expect_identical(clusterCall(cl, function() "last"), list("last"))
  expect_true(wait_until(function() !pid_alive(pid)))
  t0 <- Sys.time()
  expect_error(clusterCall(cl, function() "too many"),
               "node 1 of the mirai cluster could not run the task")
  # A guard against waiting for the 30 s keepalive, or for ever.
  expect_lt(as.numeric(difftime(Sys.time(), t0, units = "secs")), 20)
})

test_that("a node environment tampered with fails clearly, and leaves no stale results", {
  cl <- make_cluster(2)
  on.exit(stop_cluster(cl))
  node <- cl[[1L]]
  # Not an aio handle where the node's oldest task should be.
  assign("head", 42, envir = node)
  expect_error(clusterCall(cl, function() "stale"), "not a valid mirai handle")
  expect_identical(clusterCall(cl, function() "fresh"), list("fresh", "fresh"))
  # Junk in the queue behind it.
  parallel:::sendCall(node, function() "one", list())
  assign("rest", list("junk", list(1)), envir = node)
  parallel:::sendCall(node, function() "two", list())
  expect_identical(parallel:::recvResult(node), "one")
  expect_error(parallel:::recvResult(node), "not a valid mirai handle")
  expect_identical(clusterCall(cl, function() "fresh again"), list("fresh again", "fresh again"))
  expect_identical(clusterApplyLB(cl, 1:6, function(i) i), as.list(1:6))
})

test_that("a value of the classes the host uses as markers arrives as the value it is", {
  cl <- make_cluster(1)
  on.exit(stop_cluster(cl))
  ps <- makePSOCKcluster(1)
  on.exit(stopCluster(ps), add = TRUE)
  looks_relayed <- function() {
    structure(list(conditions = list("c1", "c2"), value = "v"), class = "miraiRelayed")
  }
  looks_failed <- function() structure(19L, class = "errorValue")
  for (f in list(looks_relayed, looks_failed)) {
    want <- clusterCall(ps, f)
    expect_identical(clusterCall(cl, f), want)
    # Nothing left behind to be taken for the next call's result.
    expect_identical(clusterCall(cl, function() "next"), list("next"))
  }
})

test_that("a task with thousands of arguments runs in time proportional to them", {
  cl <- make_cluster(1)
  on.exit(stop_cluster(cl))
  args <- as.list(seq_len(10000))
  names(args)[10000] <- "last"
  f <- function(...) c(...length(), list(...)$last)
  expect_identical(send_recv(cl, f, list(1, last = 2L)), c(2L, 2L))
  # A PSOCK worker takes about 0.1 s; a wrapper closure around the call
  # (compiled by R's JIT at its first call) took about 30 s on an idle
  # machine, more under load: the ceiling is generous, and still tells.
  t0 <- Sys.time()
  expect_identical(send_recv(cl, f, args), c(10000L, 10000L))
  expect_lt(as.numeric(difftime(Sys.time(), t0, units = "secs")), 15)
})

test_that("a node error raised by the task's function itself names no call of the daemon's", {
  cl <- make_cluster(1)
  on.exit(stop_cluster(cl))
  e <- send_recv(cl, "stop", list("direct"))
  expect_identical(unclass(e)[[1L]], "Error: direct")
  expect_identical(attr(e, "stack.trace"), list(quote(stop(base::quote("direct")))))
  e <- send_recv(cl, function() stop("in fun"), list())
  expect_match(e, "^Error in \\(function \\(\\) : in fun")
})

test_that("a function whose source file holds an active binding runs, and the daemon stays", {
  cl <- make_cluster(1)
  on.exit(stop_cluster(cl))
  pid <- clusterCall(cl, Sys.getpid)[[1L]]
  f <- function() "ran"
  environment(f) <- globalenv()
  srcfile <- new.env()
  makeActiveBinding("lines", function() stop("read from an active binding"), srcfile)
  attr(f, "srcref") <- structure(1:8, srcfile = srcfile, class = "srcref")
  # The second task compares its function with the first's source.
  expect_identical(clusterCall(cl, f), list("ran"))
  expect_identical(clusterCall(cl, f), list("ran"))
  expect_identical(clusterCall(cl, Sys.getpid), list(pid))
})

test_that("a task that cannot be set up fails as a task, and the daemon stays", {
  cl <- make_cluster(1)
  on.exit(stop_cluster(cl))
  pid <- clusterCall(cl, Sys.getpid)[[1L]]
  # An argument name R will not translate to make the call.
  nm <- "a\xffb"
  Encoding(nm) <- "bytes"
  args <- list(1)
  names(args) <- nm
  e <- send_recv(cl, function(...) names(list(...)), args)
  expect_s3_class(e, "try-error")
  expect_identical(unclass(e)[[1L]], paste("Error: the node could not run the task: translating",
                                           "strings with \"bytes\" encoding is not allowed"))
  expect_identical(clusterCall(cl, Sys.getpid), list(pid))
})

test_that("an R error caught natively, then calls that succeed, re-raises that same error", {
  # Dropping a cluster's outstanding tasks visits every node; node 1's state
  # is tampered with so that reading it signals a condition of its own class.
  # The drop goes on to node 2 (protected calls into R that succeed), then
  # re-raises the first condition: the handler must receive it, not a value
  # a later call left behind.
  cl <- make_cluster(2)
  on.exit(stop_cluster(cl))
  n1 <- cl[[1L]]
  n2 <- cl[[2L]]
  rm("head", envir = n1)
  cond <- structure(class = c("tamperedNode", "error", "condition"), list(message = "boom", call = NULL))
  makeActiveBinding("head", function(v) stop(cond), n1)
  assign("head_tag", "stale", envir = n2)
  got <- tryCatch(.Call(mirai:::C_mirai_cluster_drop, n1), tamperedNode = function(e) e,
                  error = function(e) e)
  expect_identical(got, cond)
  # The drop went on past node 1: node 2's state was cleared.
  expect_null(get("head_tag", envir = n2))
  # And the same twice in a row (a fresh token each time).
  got <- tryCatch(.Call(mirai:::C_mirai_cluster_drop, n1), tamperedNode = function(e) e)
  expect_identical(got, cond)
  rm("head", envir = n1)
  assign("head", NULL, envir = n1)
  expect_identical(clusterCall(cl, function() 1L), list(1L, 1L))
})
