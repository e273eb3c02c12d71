# RNG streams: a stream per daemon (seed = NULL) or per mirai (seed = k),
# checked against parallel::nextRNGStream computed in this process.

# Evaluates `expr` and then puts this session's RNG kind and state back.
with_rng_restored <- function(expr) {
  kind <- RNGkind()
  genv <- globalenv()
  saved <- genv[[".Random.seed"]]
  on.exit({
    RNGkind(kind[[1L]], kind[[2L]], kind[[3L]])
    if (is.null(saved)) rm(".Random.seed", envir = genv) else assign(".Random.seed", saved, envir = genv)
  })
  expr
}

nth_stream <- function(s, n) {
  for (i in seq_len(n)) s <- parallel::nextRNGStream(s)
  s
}

# The stream daemons() derives after set.seed(host_seed) on the host: one
# exponential draw, then the switch to L'Ecuyer-CMRG (seeded from the old
# generator), then set.seed(seed) if given.
expected_stream <- function(host_seed, seed = NULL) with_rng_restored({
  set.seed(host_seed)
  stats::rexp(1)
  RNGkind("L'Ecuyer-CMRG")
  if (!is.null(seed)) set.seed(seed)
  get(".Random.seed", envir = globalenv())
})

# rnorm(1) evaluated on each of n consecutive streams from set.seed(seed).
expected_draws <- function(seed, n) with_rng_restored({
  RNGkind("L'Ecuyer-CMRG")
  set.seed(seed)
  s <- get(".Random.seed", envir = globalenv())
  vapply(seq_len(n), function(i) {
    assign(".Random.seed", s, envir = globalenv())
    s <<- parallel::nextRNGStream(s)
    rnorm(1)
  }, numeric(1L))
})

test_that("nextstream() follows parallel::nextRNGStream and nextget() shows the stream", {
  expect_null(nextstream())
  daemons(sync = TRUE, seed = 99)
  on.exit(daemons(0))
  expect_identical(nextget("seed"), 99)
  s <- nextget("stream")
  expect_identical(s, with_rng_restored({ RNGkind("L'Ecuyer-CMRG"); set.seed(99); .Random.seed }))
  for (i in 1:50) {
    cur <- nextstream()
    expect_identical(cur, s)
    s <- parallel::nextRNGStream(s)
  }
  expect_identical(nextget("stream"), s)
})

test_that("daemons() moves the host RNG on by one draw, derives the stream from it, and restores the RNG kind", {
  with_rng_restored({
    set.seed(1546)
    kind <- RNGkind()
    daemons(sync = TRUE)
    after <- .Random.seed
    s1 <- nextget("stream")
    expect_identical(RNGkind(), kind)
    daemons(0)
    expect_identical(s1, expected_stream(1546))
    set.seed(1546)
    stats::rexp(1)
    expect_identical(after, .Random.seed)
    # Twice without a seed: different streams; with a seed: the same.
    daemons(sync = TRUE)
    s2 <- nextget("stream")
    daemons(0)
    expect_false(identical(s1, s2))
    daemons(sync = TRUE, seed = 5)
    s3 <- nextget("stream")
    daemons(0)
    daemons(sync = TRUE, seed = 5)
    expect_identical(nextget("stream"), s3)
    daemons(0)
  })
  expect_error(daemons(1, seed = "a"), "`seed` must be NULL or a single integer")
  expect_error(daemons(1, seed = NA), "`seed` must be NULL or a single integer")
})

test_that("seed = k: a stream per mirai, the same results whatever the daemons and dispatcher", {
  want <- expected_draws(7, 12)
  daemons(2, seed = 7)
  a <- unlist(collect_mirai(lapply(1:12, function(i) mirai(rnorm(1)))))
  daemons(0)
  daemons(3, dispatcher = FALSE, seed = 7)
  b <- unlist(collect_mirai(lapply(1:12, function(i) mirai(rnorm(1)))))
  daemons(0)
  expect_identical(a, want)
  expect_identical(b, want)
  # Sync mode gives the same and leaves the session's RNG state alone.
  with_rng_restored({
    set.seed(3)
    daemons(sync = TRUE, seed = 7)
    before <- .Random.seed
    s <- unlist(collect_mirai(lapply(1:12, function(i) mirai(rnorm(1)))))
    expect_identical(.Random.seed, before)
    daemons(0)
  })
  expect_identical(s, want)
})

test_that("seed = k: a failed submission does not use up a stream; internal unseeded submission", {
  bad <- serial_config("unsendable", function(x) stop("refused"), function(r) NULL)
  daemons(1, seed = 11, serial = bad)
  on.exit(daemons(0))
  s0 <- nextget("stream")
  expect_error(mirai(1, x = structure(new.env(), class = "unsendable")), "refused")
  expect_identical(nextget("stream"), s0)
  # What everywhere() uses: a task that takes no stream.
  prof <- mirai:::profile_of(NULL)
  aio <- mirai:::submit_task(prof, list(._expr_. = quote(1), ._globals_. = list(), ._args_. = list()), NULL, seed = FALSE)
  expect_identical(aio[], 1)
  expect_identical(nextget("stream"), s0)
  expect_identical(mirai(rnorm(1))[], expected_draws(11, 1))
  expect_identical(nextget("stream"), parallel::nextRNGStream(s0))
})

test_that("seed = NULL with dispatcher: the i-th daemon to connect gets nextRNGStream^i in its Init", {
  with_rng_restored({
    set.seed(2024)
    daemons(2)
  })
  on.exit(daemons(0))
  s <- nextget("stream")
  expect_identical(s, expected_stream(2024))
  # One slow task per daemon (the dispatcher sends a task only to an idle
  # daemon), each reading its daemon's untouched .Random.seed.
  seeds <- collect_mirai(lapply(1:2, function(i) mirai({ Sys.sleep(1); list(Sys.getpid(), .Random.seed) })))
  expect_length(unique(lapply(seeds, `[[`, 1L)), 2L)
  got <- lapply(seeds, `[[`, 2L)
  want <- list(nth_stream(s, 1), nth_stream(s, 2))
  expect_true(setequal(got, want))
  expect_false(identical(got[[1L]], got[[2L]]))
  # A third daemon joins later: it gets the third stream.
  launch_local(1)
  expect_true(wait_until(function() status()$connections == 3L))
  seeds <- collect_mirai(lapply(1:3, function(i) mirai({ Sys.sleep(1); .Random.seed })))
  expect_true(setequal(seeds, c(want, list(nth_stream(s, 3)))))
  # The profile's own stream is not used by the dispatcher.
  expect_identical(nextget("stream"), s)
})

test_that("seed = NULL without dispatcher: each launch command carries the next stream as `rs`", {
  with_rng_restored({
    set.seed(77)
    daemons(2, dispatcher = FALSE)
  })
  on.exit(daemons(0))
  s <- expected_stream(77)
  seeds <- collect_mirai(lapply(1:2, function(i) mirai({ Sys.sleep(0.5); .Random.seed })))
  expect_true(setequal(seeds, list(s, nth_stream(s, 1))))
  expect_identical(nextget("stream"), nth_stream(s, 2))
})

test_that("seed = k: mirai_map(1:12, rnorm) is identical on 2 dispatcher daemons plus 1 launched and on 4 without dispatcher", {
  daemons(2, seed = 1546)
  launch_local(1)
  expect_true(wait_until(function() status()$connections == 3L))
  a <- mirai_map(1:12, rnorm)[]
  daemons(0)
  daemons(4, dispatcher = FALSE, seed = 1546)
  b <- mirai_map(1:12, rnorm)[]
  daemons(0)
  expect_identical(a, b)
  expect_identical(lengths(a), 1:12)
  # And equal to drawing from each stream in turn in this process.
  want <- with_rng_restored({
    RNGkind("L'Ecuyer-CMRG")
    set.seed(1546)
    s <- get(".Random.seed", envir = globalenv())
    lapply(1:12, function(n) {
      assign(".Random.seed", s, envir = globalenv())
      s <<- parallel::nextRNGStream(s)
      rnorm(n)
    })
  })
  expect_identical(a, want)
})

test_that("seed = k with dispatcher: daemon i to connect gets nextRNGStream^i in its Init", {
  daemons(4, seed = 31)
  on.exit(daemons(0))
  s0 <- nextget("stream")
  expect_identical(s0, with_rng_restored({ RNGkind("L'Ecuyer-CMRG"); set.seed(31); .Random.seed }))
  # everywhere() takes no per-mirai stream: each daemon shows its own.
  got <- everywhere(.Random.seed, .min = 4)[]
  expect_length(got, 4L)
  expect_true(setequal(got, lapply(1:4, function(i) nth_stream(s0, i))))
  expect_identical(nextget("stream"), s0)
  # Seeded mirai still run on their own streams, in order of creation.
  draws <- unlist(collect_mirai(lapply(1:6, function(i) mirai(rnorm(1)))))
  expect_identical(draws, expected_draws(31, 6))
})
