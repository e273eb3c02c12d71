test_that("mirai_map needs daemons and a function", {
  expect_error(mirai_map(1:2, identity), "No daemons set")
  expect_error(mirai_map(1:2, identity, .compute = "nomap"), "No daemons set for the 'nomap' compute profile")
  daemons(sync = TRUE)
  on.exit(daemons(0))
  expect_error(mirai_map(1:2, 1), "`.f` must be of type function, not double")
  expect_error(mirai_map(1:2, "sum"), "`.f` must be of type function, not character")
  expect_error(mirai_map(array(1:8, c(2, 2, 2)), sum), "3 dimensions")
})

test_that("vectors and lists map .f(x, .args) and keep names (dispatcher)", {
  daemons(2)
  on.exit(daemons(0))
  mp <- mirai_map(c(a = 1, b = 2, c = 3), function(x, y) x + y, .args = list(y = 10))
  expect_true(is_mirai_map(mp))
  expect_false(is_mirai_map(list(mirai(1))))
  expect_length(mp, 3L)
  expect_true(all(vapply(mp, is_mirai, logical(1L))))
  expect_identical(mp[], list(a = 11, b = 12, c = 13))
  expect_identical(mp[.flat], c(a = 11, b = 12, c = 13))
  expect_output(print(mp), "< mirai map \\[3/3\\] >", fixed = FALSE)
  # unnamed input, list elements of any kind, `...` globals, positional .args
  mp <- mirai_map(list(1:3, "x", NULL), function(x, sep) paste(c(x, k), collapse = sep), k = "K", .args = list("+"))
  expect_null(names(mp))
  expect_identical(mp[], list("1+2+3+K", "x+K", "K"))
  # factors and dates keep their class per element
  expect_identical(mirai_map(factor(c("u", "v")), function(x) class(x))[.flat], c("factor", "factor"))
  expect_identical(mirai_map(as.Date("2024-01-01") + 0:1, function(x) format(x))[.flat], c("2024-01-01", "2024-01-02"))
  # language elements arrive unevaluated, in `.args` too, and each
  # argument is matched by the name c(element, .args) gives it
  expect_identical(mirai_map(list(quote(a + b), as.name("z")), function(x) class(x))[.flat], c("call", "name"))
  expect_identical(mirai_map(list(list(quote(f(x)), y = 2)), function(...) list(...), .args = list(z = as.name("w"), expression(1)))[],
                   list(list(list(quote(f(x)), y = 2), z = as.name("w"), expression(1))))
  expect_identical(mirai_map(data.frame(a = 1:2, b = c("p", "q")), function(b, a, s) paste(b, a, deparse(s)), .args = list(s = quote(g(h))))[.flat],
                   c("p 1 g(h)", "q 2 g(h)"))
  # empty input
  expect_identical(mirai_map(list(), identity)[], list())
  expect_output(print(mirai_map(NULL, identity)), "< mirai map [0/0] >", fixed = TRUE)
})

test_that("results come back in input order, not completion order", {
  daemons(3, dispatcher = FALSE)
  on.exit(daemons(0))
  mp <- mirai_map(c(first = 0.6, second = 0, third = 0.3), function(s) { Sys.sleep(s); s })
  expect_identical(mp[.flat], c(first = 0.6, second = 0, third = 0.3))
})

test_that("data frames and matrices map over rows, columns as arguments", {
  daemons(2, dispatcher = FALSE)
  on.exit(daemons(0))
  df <- data.frame(n = 1:3, s = c("a", "b", "c"), row.names = c("r1", "r2", "r3"))
  # matched by name: the function's arguments are in the other order
  expect_identical(mirai_map(df, function(s, n) strrep(s, n))[.flat], c(r1 = "a", r2 = "bb", r3 = "ccc"))
  # automatic row names give no names; factor columns stay factors
  df2 <- data.frame(x = 1:2, f = factor(c("p", "q")))
  mp <- mirai_map(df2, function(f, x) paste(class(f), as.character(f), x))
  expect_null(names(mp))
  expect_identical(mp[.flat], c("factor p 1", "factor q 2"))
  # .args follow the columns
  expect_identical(mirai_map(df2, function(x, f, plus) x + plus, .args = list(plus = 100L))[.flat], c(101L, 102L))
  m <- matrix(1:4, 2, dimnames = list(c("p", "q"), c("a", "b")))
  expect_identical(mirai_map(m, function(b, a) b * 10L + a)[.flat], c(p = 31L, q = 42L))
  # no column names: by position
  expect_identical(mirai_map(matrix(1:4, 2), function(a, b) a * 10L + b)[.flat], c(13L, 24L))
  expect_identical(mirai_map(matrix(1:3, 3), function(x) x * 2L)[.flat], c(2L, 4L, 6L))
})

test_that("errors are kept in a plain collection, and stop .flat", {
  daemons(2)
  on.exit(daemons(0))
  mp <- mirai_map(list(a = 1, b = "x", c = 3), function(x) log(x))
  res <- mp[]
  expect_identical(res$a, 0)
  expect_true(is_mirai_error(res$b))
  expect_identical(res$b$message, "non-numeric argument to mathematical function")
  expect_identical(res$c, log(3))
  expect_error(mp[.flat], "In index: 2")
  expect_error(mirai_map(list(1L, "a"), identity)[.flat], "Cannot flatten outputs of differing type: integer / character")
  expect_identical(collect_mirai(mirai_map(1:3, function(x) x * 2L), ".flat"), c(2L, 4L, 6L))
})

test_that(".stop cancels the remaining mirai and names the index (dispatcher)", {
  daemons(2)
  on.exit(daemons(0))
  mp <- mirai_map(list(a = 0, b = "boom", c = 30, d = 30), function(x) {
    if (is.character(x)) stop(x)
    Sys.sleep(x)
    x
  })
  t0 <- Sys.time()
  err <- tryCatch(mp[.stop], error = identity)
  expect_s3_class(err, "error")
  # At the failure, not once the 30 s elements are done.
  expect_lt(as.numeric(difftime(Sys.time(), t0, units = "secs")), 20)
  msg <- conditionMessage(err)
  expect_match(msg, "In index: 2.", fixed = TRUE)
  expect_match(msg, "With name: b.", fixed = TRUE)
  expect_match(msg, "boom", fixed = TRUE)
  # the long tasks (one running, one queued) were cancelled
  expect_identical(mp$a$data, 0)
  for (k in c("c", "d")) {
    expect_true(is_error_value(mp[[k]]$data))
    expect_identical(unclass(mp[[k]]$data), 20L)
  }
  expect_false(unresolved(mp))
})

test_that(".stop without dispatcher, and through collect_mirai options", {
  daemons(2, dispatcher = FALSE)
  on.exit(daemons(0))
  mp <- mirai_map(list(0.5, "oops", 10), function(x) if (is.character(x)) stop(x) else { Sys.sleep(x); x })
  expect_error(collect_mirai(mp, list(.stop = TRUE)), "In index: 2.", fixed = TRUE)
  expect_identical(mp[[1L]]$data, 0.5)
  expect_identical(unclass(mp[[3L]]$data), 20L)
  expect_error(collect_mirai(mp, c(".bogus")), "unknown collection option '.bogus'")
  expect_error(collect_mirai(mp, list(.stop = "yes")), "the `.stop` option must be TRUE or FALSE")
  expect_error(collect_mirai(mp, list(1)), "collection options must be")
  expect_error(mp[.stop], "In index: 2.", fixed = TRUE)
})

test_that("without cli, errors read 'In index %d:' and progress is plain text on stderr", {
  state <- mirai:::.
  old <- state$cli
  state$cli <- FALSE
  on.exit({ state$cli <- old; daemons(0) })
  daemons(sync = TRUE)
  mp <- mirai_map(c(x = 1, y = -1), function(v) if (v < 0) stop("negative") else v)
  expect_error(mp[.stop], "^In index 2:\nError in .f\\(-1\\): negative$")
  mp <- mirai_map(list(1, 2, 3), function(x) x)
  err <- capture.output(res <- mp[.progress, .flat], type = "message")
  expect_identical(res, c(1, 2, 3))
  out <- paste(err, collapse = "\n")
  expect_identical(out, "\r[ 1 / 3 .... ]\r[ 2 / 3 .... ]\r[ 3 / 3 done ]")
})

test_that(".progress shows a cli progress bar, with cli options", {
  skip_if_not_installed("cli")
  # cli redraws on a timer (every 3 s off a terminal); this helper of cli's
  # own tests makes every update draw, so the output does not depend on timing.
  skip_if_not(exists("cli_with_ticks", envir = asNamespace("cli")))
  with_ticks <- get("cli_with_ticks", envir = asNamespace("cli"))
  daemons(2)
  on.exit(daemons(0))
  mp <- mirai_map(1:4, function(i) i)
  msgs <- testthat::capture_messages(res <- with_ticks(mp[.progress]))
  expect_identical(res, as.list(1:4))
  # one line per element (cli may leave out the last one of an unnamed bar)
  expect_gte(length(msgs), 3L)
  expect_true(all(mapply(grepl, c("25%", "50%", "75%"), msgs[1:3], fixed = TRUE)))
  mp <- mirai_map(1:3, function(i) i)
  msgs <- testthat::capture_messages(
    res <- with_ticks(collect_mirai(mp, list(.progress = list(name = "mapbar"), .flat = TRUE))))
  expect_identical(res, 1:3)
  expect_match(msgs, "^mapbar .*%", all = TRUE)
  mp <- mirai_map(1:2, function(i) i)
  msgs <- testthat::capture_messages(res <- with_ticks(mp[.progress = "named", .flat]))
  expect_identical(res, 1:2)
  expect_match(msgs, "^named .*%", all = TRUE)
  # no bar without the option
  expect_length(testthat::capture_messages(with_ticks(mirai_map(1:2, function(i) i)[.flat])), 0L)
})

test_that("call_mirai, unresolved and stop_mirai accept a mirai_map", {
  daemons(2)
  on.exit(daemons(0))
  mp <- mirai_map(c(0.3, 0.3), function(s) { Sys.sleep(s); s })
  expect_true(unresolved(mp))
  expect_output(print(mp), "< mirai map [0/2] >", fixed = TRUE)
  expect_identical(call_mirai(mp), mp)
  expect_false(unresolved(mp))
  expect_identical(mp[[1L]]$data, 0.3)
  mp <- mirai_map(c(10, 10, 10), Sys.sleep)
  expect_identical(unname(stop_mirai(mp)), c(TRUE, TRUE, TRUE))
  expect_false(unresolved(mp))
  expect_identical(lapply(mp[], unclass), list(20L, 20L, 20L))
})

test_that("stop_mirai on a large map cancels its queued elements in one pass", {
  # One scan of the queue per element made this quadratic: minutes for
  # 200,000 queued elements (and for mp[.stop] whose first element errs).
  daemons(1)
  on.exit(daemons(0))
  mp <- mirai_map(c(10, numeric(2e5 - 1)), Sys.sleep)
  t <- system.time(found <- stop_mirai(mp))[["elapsed"]]
  expect_length(found, 2e5)
  expect_true(all(found))
  expect_lt(t, 20)
  expect_false(unresolved(mp))
  expect_identical(unclass(mp[[2e5]][]), 20L)
  expect_identical(status()$mirai[["awaiting"]], 0L)
  expect_identical(mirai_map(1:2, function(x) x)[.flat], 1:2)
})

test_that("daemons(n) errors inside a map; daemons(url) does not", {
  daemons(1)
  on.exit(daemons(0))
  res <- mirai_map(1, function(x) mirai::daemons(1))[]
  expect_true(is_mirai_error(res[[1L]]))
  expect_match(res[[1L]]$message, "cannot create local daemons from within mirai map")
  res <- mirai_map(1, function(x) { mirai::daemons(url = mirai::local_url()); mirai::daemons(0) })[]
  expect_identical(res, list(FALSE))
  # the check holds only inside a map's element on that daemon
  expect_false(mirai(mirai:::in_map())[])
  expect_identical(mirai_map(1, function(x) mirai:::in_map())[], list(TRUE))
})

test_that("sync mode maps in this process", {
  daemons(sync = TRUE)
  on.exit(daemons(0))
  mp <- mirai_map(c(p = 2, q = 3), function(x) c(x, Sys.getpid()))
  expect_identical(mp[], list(p = c(2, Sys.getpid()), q = c(3, Sys.getpid())))
  expect_error(mirai_map(1, function(x) daemons(1))[.stop], "cannot create local daemons from within mirai map")
  expect_false(mirai:::in_map())
})

test_that(".promise attaches callbacks with promises::then, or errors clearly", {
  skip_if_not_installed("promises")
  skip_if_not_installed("later")
  daemons(sync = TRUE)
  on.exit(daemons(0))
  expect_error(mirai_map(1:2, identity, .promise = 1), "`.promise` must be a function")
  expect_error(mirai_map(1:2, identity, .promise = list(identity, identity, identity)), "`.promise` must be a function")
  ns <- asNamespace("promises")
  if (is.null(utils::getS3method("as.promise", "mirai", optional = TRUE, envir = ns))) {
    expect_error(mirai_map(1:2, identity, .promise = identity), "`.promise` is not supported yet")
    # With a stand-in for the as.promise method, the callbacks are attached.
    table <- get(".__S3MethodsTable__.", envir = ns)
    assign("as.promise.mirai", function(x) {
      v <- x[]
      if (is_mirai_error(v)) promises::promise_reject(simpleError(v$message)) else promises::promise_resolve(v)
    }, envir = table)
    on.exit(rm("as.promise.mirai", envir = table), add = TRUE)
  }
  got <- new.env()
  mirai_map(c(1, 2), function(x) x * 2, .promise = function(v) got$ok <- c(got$ok, v))
  mirai_map(list("a"), function(x) stop("bad"),
            .promise = list(function(v) got$wrong <- TRUE, function(e) got$err <- conditionMessage(e)))
  deadline <- Sys.time() + 5
  while ((length(got$ok) < 2L || is.null(got$err)) && Sys.time() < deadline) later::run_now(0.05)
  expect_identical(sort(got$ok), c(2, 4))
  expect_null(got$wrong)
  expect_match(got$err, "bad")
})

test_that("a large map keeps order, names and element access, with and without dispatcher", {
  for (disp in c(TRUE, FALSE)) {
    daemons(2, dispatcher = disp)
    x <- setNames(seq_len(3000), paste0("e", seq_len(3000)))
    mp <- mirai_map(x, function(i) i * 2L)
    res <- mp[.flat]
    expect_identical(res, x * 2L)
    # elements are mirai, made on request, the same object each time
    expect_true(is_mirai(mp[[7L]]))
    expect_identical(mp[[7L]]$data, 14L)
    expect_identical(mp$e9$data, 18L)
    expect_identical(mp[["e10"]], mp[[10L]])
    expect_error(mp[[3001L]], "subscript out of bounds")
    expect_false(unresolved(mp))
    expect_output(print(mp), "< mirai map [3000/3000] >", fixed = TRUE)
    expect_identical(call_mirai(mp), mp)
    # plain vectors of each type, and character/logical/NA values
    expect_identical(mirai_map(c("a", NA, "c"), function(s) paste0(s, "!"))[.flat], c("a!", "NA!", "c!"))
    expect_identical(mirai_map(c(TRUE, NA), function(v) is.na(v))[.flat], c(FALSE, TRUE))
    daemons(0)
  }
})

test_that("plain logical, integer and double elements arrive bit for bit, with or without a serial config", {
  # Past the first, these elements are written natively, not by R's
  # serializer: every value must still be the one sent.
  dbl <- c(1.5, NA, NaN, -Inf, Inf, -0, 0, .Machine$double.xmin, -1e308, pi)
  int <- c(7L, NA, -.Machine$integer.max, .Machine$integer.max, 0L)
  lgl <- c(TRUE, NA, FALSE)
  for (cfg in list(NULL, serial_config("neverseen", function(x) serialize(x, NULL), unserialize))) {
    daemons(1, serial = cfg)
    expect_identical(unlist(mirai_map(dbl, identity)[]), dbl)
    expect_identical(mirai_map(dbl, function(x) sprintf("%a", x))[.flat], sprintf("%a", dbl))
    expect_identical(mirai_map(setNames(int, letters[1:5]), identity)[.flat], setNames(int, letters[1:5]))
    expect_identical(mirai_map(lgl, identity)[.flat], lgl)
    # an ALTREP sequence, each element a plain vector of one on the daemon
    expect_identical(mirai_map(1:2000, function(i) c(i, length(i)))[.flat], rbind(1:2000, 1L)[seq_len(4000)])
    expect_identical(mirai_map(c(2.5, 3.5), function(x) is.double(x) && is.null(attributes(x)))[.flat], c(TRUE, TRUE))
    # They go without R's serialization header (23 bytes; the daemon puts
    # its own back): 43 bytes per element written here, 66 with it, as a
    # list's elements still take.
    host <- mirai:::profile_of(NULL)$host
    sent <- function() .Call(mirai:::C_mirai_host_sent, host)
    x <- runif(5000)
    s0 <- sent()
    expect_identical(mirai_map(x, identity)[.flat], x)
    expect_lt((sent() - s0) / 5000, 50)
    s0 <- sent()
    expect_identical(mirai_map(as.list(x), identity)[.flat], x)
    expect_gt((sent() - s0) / 5000, 60)
    daemons(0)
  }
})

test_that("a mirai taken from a map before collection gives the same value to both", {
  daemons(1)
  on.exit(daemons(0))
  mp <- mirai_map(1:3, function(i) i + 0.5)
  m2 <- mp[[2L]]
  expect_identical(m2[], 2.5)
  expect_identical(mp[], list(1.5, 2.5, 3.5))
  expect_identical(mp[[3L]]$data, 3.5)
  expect_identical(race_mirai(mp), 1L)
})

test_that("shared .args reach each daemon once, are cached, and follow changed content", {
  daemons(2, dispatcher = TRUE)
  on.exit(daemons(0))
  everywhere({})[]
  host <- mirai:::profile_of(NULL)$host
  sent <- function() .Call(mirai:::C_mirai_host_sent, host)
  big <- runif(1e6) # 8 MB
  # A function carries its enclosing environment: this test's (which
  # holds `big` too) would go along, and change between maps.
  f <- function(i, big) big[[i]]
  environment(f) <- globalenv()
  s0 <- sent()
  expect_identical(mirai_map(1:200, f, .args = list(big = big))[.flat], big[1:200])
  first <- sent() - s0
  # once per daemon (2 daemons), not once per element (200)
  expect_gt(first, 1 * 8e6)
  expect_lt(first, 2.5 * 8e6)
  # the same content again: the daemons still hold it
  s1 <- sent()
  expect_identical(mirai_map(1:200, f, .args = list(big = big))[.flat], big[1:200])
  expect_lt(sent() - s1, 1e6)
  # changed content (same size, one value): sent again, and used
  big[[5]] <- -5
  s2 <- sent()
  expect_identical(mirai_map(c(4L, 5L), f, .args = list(big = big))[.flat], c(big[[4]], -5))
  expect_gt(sent() - s2, 8e6)
  # mirai() with .args still sends them with each task
  s3 <- sent()
  expect_identical(mirai(big[[5]], .args = list(big = big))[], -5)
  expect_identical(mirai(big[[5]], .args = list(big = big))[], -5)
  expect_gt(sent() - s3, 2 * 8e6)
})

test_that("shared .args are sent again after a reset (new daemons hold nothing)", {
  big <- runif(5e5) # 4 MB
  f <- function(i, big) big[[i]] + i
  environment(f) <- globalenv()
  for (round in 1:2) {
    daemons(1, dispatcher = FALSE)
    host <- mirai:::profile_of(NULL)$host
    s0 <- .Call(mirai:::C_mirai_host_sent, host)
    expect_identical(mirai_map(1:3, f, .args = list(big = big))[.flat], big[1:3] + 1:3)
    expect_gt(.Call(mirai:::C_mirai_host_sent, host) - s0, 4e6)
    daemons(0)
  }
})

test_that("many maps with different shared parts cycle through the daemon's cache", {
  daemons(1)
  on.exit(daemons(0))
  # more distinct shared parts than cache slots, revisited in turn
  for (k in rep(1:6, 3)) {
    expect_identical(mirai_map(1:2, function(i, k) i * k, .args = list(k = k))[.flat], c(1L, 2L) * k)
  }
})

test_that("a data frame's row reaches the function as R's [[ gives each column's element", {
  # Rows of vector columns without classes are taken natively on the
  # daemon; any other column (a factor, a date, a column with a class of
  # its own) makes R take the row. Either way each argument is what
  # lapply(df, `[[`, i) gives.
  daemons(2, dispatcher = FALSE)
  on.exit(daemons(0))
  df <- data.frame(i = c(1L, NA, 3L), d = c(1.5, NA, -Inf), s = c("x", NA, "\u00e9"), b = c(TRUE, FALSE, NA),
                   stringsAsFactors = FALSE)
  df$l <- list(1:2, "q", NULL)
  df2 <- df
  df2$day <- as.Date("2026-12-07") + 0:2
  df3 <- df
  df3$k <- structure(1:3, class = "myclass")
  `[[.myclass` <- function(x, i) paste("myclass element", unclass(x)[i])
  # The method where lapply()'s `[[` finds it here, as the daemons find the
  # global passed to them.
  assign("[[.myclass", `[[.myclass`, envir = globalenv())
  on.exit(rm("[[.myclass", envir = globalenv()), add = TRUE)
  # A subclass of data.frame with an as.list() method of its own, which
  # lapply() calls: R takes its rows.
  df4 <- structure(df, class = c("reversed", "data.frame"))
  as.list.reversed <- function(x, ...) rev(as.list.data.frame(x))
  assign("as.list.reversed", as.list.reversed, envir = globalenv())
  on.exit(rm("as.list.reversed", envir = globalenv()), add = TRUE)
  for (x in list(df, df2, df3, df4)) {
    got <- mirai_map(x, function(...) list(...), `[[.myclass` = `[[.myclass`, as.list.reversed = as.list.reversed)[]
    want <- lapply(seq_len(nrow(x)), function(i) lapply(x, `[[`, i))
    expect_identical(got, want, label = paste(names(x), collapse = ","))
  }
  # A data frame made by hand, a column shorter than its rows: the rows
  # there fail with R's own error, the others are taken
  odd <- structure(list(a = 1:3, b = 1:2), class = "data.frame", row.names = 1:3)
  got <- mirai_map(odd, function(a, b) a + b)[]
  expect_identical(got[1:2], list(2L, 4L))
  expect_true(is_mirai_error(got[[3L]]))
  expect_match(got[[3L]]$message, "subscript out of bounds")
})

test_that("data frame and matrix maps, large ones cut into rows on the host", {
  daemons(2)
  on.exit(daemons(0))
  df <- data.frame(a = 1:500, b = as.character(1:500), f = factor(rep(c("x", "y"), 250)))
  res <- mirai_map(df, function(a, b, f) paste(a, b, as.character(f)))[.flat]
  expect_identical(res, paste(df$a, df$b, as.character(df$f)))
  old <- mirai:::MAP_SHARE_ROWS_BYTES
  ns <- asNamespace("mirai")
  unlockBinding("MAP_SHARE_ROWS_BYTES", ns)
  assign("MAP_SHARE_ROWS_BYTES", 0, envir = ns)
  on.exit({ assign("MAP_SHARE_ROWS_BYTES", old, envir = ns); lockBinding("MAP_SHARE_ROWS_BYTES", ns) }, add = TRUE)
  expect_identical(mirai_map(df, function(a, b, f) paste(a, b, as.character(f)))[.flat], res)
  m <- matrix(1:6, 3, dimnames = list(c("p", "q", "r"), c("u", "v")))
  expect_identical(mirai_map(m, function(u, v) u + v)[.flat], c(p = 5L, q = 7L, r = 9L))
})

test_that("a daemon that dies mid-map resolves its element to errorValue 19; the queue waits for the next", {
  for (disp in c(TRUE, FALSE)) {
    daemons(1, dispatcher = disp, heal = FALSE)
    pid <- mirai(Sys.getpid())[]
    mp <- mirai_map(1:4, function(i) { if (i == 1L) Sys.sleep(30); i })
    Sys.sleep(0.5)
    tools::pskill(pid, tools::SIGKILL)
    expect_identical(unclass(call_mirai(mp[[1L]])$data), 19L)
    # with a dispatcher, the elements not yet sent stay queued for the
    # next daemon (without one, some may have been written to the socket
    # of the daemon that died: those resolve to 19 too)
    Sys.sleep(0.2)
    if (disp) expect_true(unresolved(mp))
    launch_local(1)
    t0 <- Sys.time()
    res <- mp[]
    expect_lt(as.numeric(difftime(Sys.time(), t0, units = "secs")), 20)
    expect_identical(unclass(res[[1L]]), 19L)
    for (i in 2:4) expect_true(identical(res[[i]], i) || identical(unclass(res[[i]]), 19L))
    if (disp) expect_identical(res[2:4], list(2L, 3L, 4L))
    expect_error(mp[.stop], "In index: 1")
    daemons(0)
  }
})
