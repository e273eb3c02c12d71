# The native reader and writer of plain values (rust/src/r/layer/plain.rs)
# against R's own serialize() and unserialize(): what they read and write
# must be what R reads and writes, what they do not know must be left to R,
# and no byte sequence may crash the reader.

plain_read <- function(bytes) .Call(mirai:::C_mirai_test_plain_read, bytes)
plain_write <- function(x) .Call(mirai:::C_mirai_test_plain_write, x)
have_hooks <- exists("C_mirai_test_plain_read", envir = asNamespace("mirai"), inherits = FALSE)

plain_values <- function() {
  latin <- "caf\xe9"; Encoding(latin) <- "latin1"
  bytes_str <- "\xff\xfe"; Encoding(bytes_str) <- "bytes"
  list(
    NULL, TRUE, c(TRUE, NA, FALSE), logical(), 1L, c(NA, -2147483647L, 0L), integer(),
    3.5, c(NA, NaN, Inf, -Inf, -0, 1e-300), numeric(), as.raw(c(0, 255, 7)), raw(),
    "hello", c("a", NA, ""), character(), "\u00e9t\u00e9 \u65e5\u672c", latin, bytes_str,
    list(), list(1, "a", NULL), list(a = 1, b = list(c = "x", d = NULL)), c(x = 1L, y = 2L),
    c(first = "a", second = NA), setNames(list(1, 2), c("", "b")),
    quote(x), quote(f(x, y = 2, ...)), quote(x[, 1]), quote(a$b$c + a$b$d),
    # Parsed without source references, as Rscript and a daemon do (with
    # them, a call carries attributes, and is left to R: tested below).
    parse(text = "function(x, y = 2) x + y", keep.source = FALSE)[[1L]],
    parse(text = "{ z <- g(h(1)); z * z }", keep.source = FALSE)[[1L]],
    list(._expr_. = quote(slow_fit(d)), ._globals_. = list(d = c(1, 2, 3)), ._args_. = list()),
    expression(1 + 2, b), as.pairlist(list(a = 1, b = "c")), globalenv(), emptyenv(), baseenv(),
    as.list(seq_len(3000) + 0.5), paste0("s", 1:3000)
  )
}

not_plain_values <- function() {
  deep <- list(); for (i in 1:300) deep <- list(deep)
  list(
    factor(c("a", "b")), data.frame(x = 1:2), matrix(1:4, 2), structure(1, class = "foo"),
    structure(1:3 + 0L, myattr = "z"), 1+2i, new.env(), function(x) x, sum, deep,
    methods::getClass("numeric"), structure(list(1), names = "a", extra = TRUE),
    parse(text = "{ z <- g(h(1)); z * z }", keep.source = TRUE)[[1L]],
    list(1, structure(2, class = "inner")), as.call(list(as.name("f"), structure(1, a = 2))),
    # Not ASCII and in the native encoding (unmarked): R translates it.
    rawToChar(as.raw(c(0x63, 0x61, 0x66, 0xc3, 0xa9)))
  )
}


test_that("plain values read natively are identical to R's reading", {
  skip_if_not(have_hooks, "needs the test build (MIRAI_TEST_HOOKS=1): the reader's test entry point")
  values <- plain_values()
  for (i in seq_along(values)) {
    x <- values[i][[1L]]
    b <- serialize(x, NULL, xdr = FALSE)
    got <- plain_read(b)
    expect_true(got[[1L]], info = paste("value", i))
    expect_identical(got[[2L]], x, info = paste("value", i))
    if (is.character(x)) expect_identical(Encoding(got[[2L]]), Encoding(x), info = paste("value", i))
  }
})

test_that("what is not plain is left to R", {
  skip_if_not(have_hooks, "needs the test build (MIRAI_TEST_HOOKS=1): the reader's test entry point")
  not_plain <- c(not_plain_values(), list(1:10))
  for (i in seq_along(not_plain)) {
    b <- serialize(not_plain[[i]], NULL, xdr = FALSE)
    got <- plain_read(b)
    expect_false(got[[1L]], info = paste("value", i))
    expect_null(got[[2L]], info = paste("value", i))
  }
  # XDR (big-endian) and ASCII streams are R's to read.
  expect_false(plain_read(serialize(1L, NULL))[[1L]])
  expect_false(plain_read(serialize(1L, NULL, ascii = TRUE))[[1L]])
})

test_that("truncated and corrupted bytes never crash the reader", {
  skip_if_not(have_hooks, "needs the test build (MIRAI_TEST_HOOKS=1): the reader's test entry point")
  x <- list(a = quote(f(x, y = "z")), b = c(1.5, NA), c = c(u = "v"), d = as.raw(1:3), e = list(TRUE))
  b <- serialize(x, NULL, xdr = FALSE)
  # Every truncation: left to R (or, if a prefix happens to be whole, read).
  # One expectation over all the cases, naming those that fail: an
  # expectation each made this block 9 s of testthat's bookkeeping.
  read_whole <- vapply(seq_len(length(b) - 1L), function(k) {
    got <- tryCatch(plain_read(b[seq_len(k)]), error = function(e) list(NA, conditionMessage(e)))
    isTRUE(got[[1L]]) && identical(got[[2L]], x)
  }, logical(1L))
  expect_identical(which(read_whole), integer(), label = "prefixes read as the whole value")
  # Random corruption after the header: whatever it reads is a value, never
  # a crash; lengths claiming more than the bytes hold are refused.
  set.seed(42)
  odd <- vapply(1:3000, function(k) {
    bad <- b
    at <- sample(24:length(b), sample(1:4, 1))
    bad[at] <- as.raw(sample(0:255, length(at), replace = TRUE))
    got <- tryCatch(plain_read(bad), error = function(e) NULL)
    !(is.null(got) || is.logical(got[[1L]]))
  }, logical(1L))
  expect_identical(which(odd), integer(), label = "corruptions read as something other than a value or NULL")
  huge <- c(b[1:23], writeBin(c(19L, .Machine$integer.max), raw(), size = 4), as.raw(rep(0, 16)))
  expect_false(plain_read(huge)[[1L]])
})

test_that("plain values are written as R writes them, and read back identical", {
  skip_if_not(have_hooks, "needs the test build (MIRAI_TEST_HOOKS=1): the writer's test entry point")
  values <- plain_values()
  small <- vapply(values, function(x) is.environment(x) || (length(x) <= 200L && object.size(x) <= 2000), logical(1))
  expect_gt(sum(small), 30L)
  for (i in which(small)) {
    x <- values[i][[1L]]
    b <- plain_write(x)
    expect_true(is.raw(b), info = paste("value", i))
    expect_identical(b, serialize(x, NULL, xdr = FALSE), info = paste("value", i))
    expect_identical(unserialize(b), x, info = paste("value", i))
  }
  for (i in which(!small)) expect_null(plain_write(values[i][[1L]]), info = paste("large value", i))
})

test_that("what is not plain, or too large, is left to R_Serialize", {
  skip_if_not(have_hooks, "needs the test build (MIRAI_TEST_HOOKS=1): the writer's test entry point")
  # ALTREP vectors too: R writes their compact form (1:4096 in 130 bytes,
  # not 16 KB), and one without a data pointer must not raise an R error.
  not_plain <- c(not_plain_values(), list(runif(200), as.list(1:300), 1:10, as.character(1:10),
                                          as.call(c(as.name("f"), as.list(rep(1, 100))))))
  for (i in seq_along(not_plain)) expect_null(plain_write(not_plain[[i]]), info = paste("value", i))
})

test_that("tasks and results of every plain kind travel intact", {
  # Both ends write and read plain values natively: a round trip through
  # a daemon must give back exactly what went.
  daemons(1, dispatcher = FALSE)
  on.exit(daemons(0))
  for (x in c(plain_values(), not_plain_values()[1:5])) {
    if (is.environment(x) || is.language(x) || is.pairlist(x)) next
    expect_identical(mirai(x, x = x)[], x)
    expect_identical(mirai(y, .args = list(y = x))[], x)
  }
  expect_identical(mirai(quote(f(x, y = 2)))[], quote(f(x, y = 2)))
  expect_identical(mirai(a + b, a = 1L, b = 2.5)[], 3.5)
})
