# The documentation as users meet it: the README's quick start, run exactly
# as written, and the pkgdown site, built offline.

# The package's source directory: two levels up from tests/testthat in a
# checkout (tools/test.sh); under R CMD check, the unpacked tarball beside
# the tests (which has README.md but, by .Rbuildignore, no _pkgdown.yml).
source_root <- function() {
  up <- normalizePath(file.path(testthat::test_path(), "..", ".."), mustWork = FALSE)
  for (dir in c(up, file.path(up, "00_pkg_src", "mirai"))) {
    if (file.exists(file.path(dir, "DESCRIPTION")) && file.exists(file.path(dir, "README.md")))
      return(dir)
  }
  NULL
}

# The R code blocks (```r ... ```) of the README's "Quick start" section.
readme_quick_start <- function(readme) {
  lines <- readLines(readme, warn = FALSE)
  start <- grep("^## Quick start", lines)
  if (length(start) != 1L) stop("README.md has no single '## Quick start' section")
  heads <- grep("^## ", lines)
  end <- min(c(heads[heads > start], length(lines) + 1L))
  section <- lines[seq.int(start + 1L, end - 1L)]
  opens <- grep("^```r[[:space:]]*$", section)
  closes <- grep("^```[[:space:]]*$", section)
  unlist(lapply(opens, function(o) {
    close <- min(closes[closes > o])
    section[seq.int(o + 1L, close - 1L)]
  }))
}

test_that("the README's quick start runs as written in a fresh R session", {
  root <- source_root()
  if (is.null(root)) skip("README.md not found beside the tests (not a source checkout)")
  code <- readme_quick_start(file.path(root, "README.md"))
  expect_gt(length(code), 10L)
  script <- tempfile(fileext = ".R")
  on.exit(unlink(script))
  writeLines(code, script)
  # A fresh session: no site or user profile; the library paths of this one
  # (R_LIBS), so that the package under test is the one found.
  env <- sprintf("R_LIBS=%s", paste(.libPaths(), collapse = .Platform$path.sep))
  t0 <- Sys.time()
  out <- suppressWarnings(system2(file.path(R.home("bin"), "Rscript"), c("--vanilla", shQuote(script)),
                                  stdout = TRUE, stderr = TRUE, env = env, timeout = 90))
  secs <- as.numeric(difftime(Sys.time(), t0, units = "secs"))
  status <- if (is.null(attr(out, "status"))) 0L else attr(out, "status")
  expect_identical(status, 0L, info = paste(c(sprintf("exit status %s after %.1f s; output:", status, secs),
                                              out), collapse = "\n"))
  text <- paste(out, collapse = "\n")
  # What it prints: an unresolved then a resolved mirai, the statistics,
  # the flattened map, the error value and the promise's callback.
  expect_match(text, "< mirai [$data] >", fixed = TRUE)
  expect_match(text, "mean", fixed = TRUE)
  expect_match(text, "[1]  1  4  9 16 25 36", fixed = TRUE)
  expect_match(text, "'miraiError' chr Error in log(\"a\"): non-numeric argument", fixed = TRUE)
  expect_match(text, "computed by process [0-9]+")
  expect_lt(secs, 60)
})

test_that("the pkgdown site builds offline, with every reference page and article", {
  skip_on_cran()
  if (!requireNamespace("pkgdown", quietly = TRUE)) skip("pkgdown is not installed")
  root <- source_root()
  if (is.null(root) || !file.exists(file.path(root, "_pkgdown.yml")))
    skip("_pkgdown.yml not found beside the tests (not a source checkout)")
  dest <- tempfile("mirai-site-")
  on.exit(unlink(dest, recursive = TRUE))
  # pkgdown looks the package up on CRAN for the home page's links unless
  # told there is no internet; nothing else it does here needs the network
  # (tools/test.sh's tarball check proves the same of the vignettes).
  old <- options(pkgdown.internet = FALSE)
  on.exit(options(old), add = TRUE)
  vignettes <- sub("\\.Rmd$", "", list.files(file.path(root, "vignettes"), pattern = "\\.Rmd$"))
  expect_gte(length(vignettes), 8L)
  # The whole site, every article knitted, with MIRAI_TEST_LONG=1 (about
  # 80 s of knitting on two cores). By default every page but the articles,
  # which pkgdown indexes, and one article knitted by pkgdown: every
  # vignette's code is knitted by tools/test.sh's R CMD build and run again
  # by its R CMD check, against the release build, in the same run.
  long <- identical(Sys.getenv("MIRAI_TEST_LONG"), "1")
  knitted <- if (long) vignettes else "mirai"
  # The installed package (devel = FALSE, install = FALSE: no rebuild of the
  # Rust crate); examples are not run (those that run are cheap and offline,
  # R CMD check runs them); articles are knitted, as vignettes are.
  t0 <- Sys.time()
  log <- utils::capture.output(suppressMessages(suppressWarnings(
    if (long) {
      pkgdown::build_site(root, examples = FALSE, preview = FALSE, devel = FALSE, new_process = FALSE,
                          install = FALSE, override = list(destination = dest))
    } else {
      pkg <- pkgdown::as_pkgdown(root, override = list(destination = dest))
      pkgdown::init_site(pkg)
      pkgdown::build_home(pkg, preview = FALSE)
      pkgdown::build_reference(pkg, examples = FALSE, devel = FALSE, preview = FALSE)
      pkgdown::build_article("mirai", pkg)
      pkgdown::build_articles_index(pkg)
      pkgdown::build_news(pkg, preview = FALSE)
      pkgdown::build_search(pkg)
    }
  )))
  secs <- as.numeric(difftime(Sys.time(), t0, units = "secs"))
  testthat::expect_true(file.exists(file.path(dest, "index.html")), info = paste(log, collapse = "\n"))
  # Every help page has its page; every vignette is in the articles index,
  # and each knitted one has its page.
  topics <- sub("\\.Rd$", "", list.files(file.path(root, "man"), pattern = "\\.Rd$"))
  missing <- topics[!file.exists(file.path(dest, "reference", paste0(topics, ".html")))]
  expect_identical(missing, character(0))
  articles <- paste(readLines(file.path(dest, "articles", "index.html"), warn = FALSE), collapse = "\n")
  unlisted <- vignettes[!vapply(sprintf('href="%s.html"', vignettes), grepl, logical(1L), articles, fixed = TRUE)]
  expect_identical(unlisted, character(0))
  missing <- knitted[!file.exists(file.path(dest, "articles", paste0(knitted, ".html")))]
  expect_identical(missing, character(0))
  for (page in c("reference/index.html", "articles/index.html", "news/index.html", "search.json"))
    expect_true(file.exists(file.path(dest, page)), label = page)
  # The home page is the README; the reference index lists the functions.
  home <- paste(readLines(file.path(dest, "index.html"), warn = FALSE), collapse = "\n")
  expect_match(home, "Quick start", fixed = TRUE)
  index <- paste(readLines(file.path(dest, "reference", "index.html"), warn = FALSE), collapse = "\n")
  for (fn in c("mirai", "daemons", "mirai_map", "launch_remote", "serial_config"))
    expect_match(index, sprintf("%s()", fn), fixed = TRUE, label = fn)
  # An article knitted with its output: the quick reference's first daemons.
  article <- paste(readLines(file.path(dest, "articles", "mirai.html"), warn = FALSE), collapse = "\n")
  expect_match(article, "connections", fixed = TRUE)
  message(sprintf("test-docs.R: the pkgdown site (%s) took %.0f s to build",
                  if (long) "all articles" else "one article knitted", secs))
})

# A help page of the installed package as plain text, whitespace collapsed
# and without the quotes code is shown in.
rd_text <- function(topic) {
  old <- options(useFancyQuotes = FALSE)
  on.exit(options(old))
  rd <- tools::Rd_db("mirai")[[paste0(topic, ".Rd")]]
  out <- utils::capture.output(tools::Rd2txt(rd, options = list(underline_titles = FALSE)))
  gsub("['\u2018\u2019]", "", gsub("[[:space:]]+", " ", paste(out, collapse = " ")))
}

test_that("help pages and messages quote the timeouts, limits and codes the native side defines", {
  # Each is defined once (natively, or as one R constant) and written into
  # the help pages when they are generated (`r ...` in the roxygen
  # comments): a page generated before the value changed fails here.
  lim <- function(name) format(mirai:::limit(name), scientific = FALSE)
  bytes <- function(name) mirai:::bytes_text(mirai:::limit(name))
  code <- function(name) mirai:::error_code(name)
  pages <- list(
    daemons = c(sprintf("handshake within %s seconds", lim("hello_timeout_s")),
                sprintf("at most %s peers may be mid-handshake", lim("max_pending")),
                sprintf("(bytes; default %s)", bytes("max_message_bytes")),
                sprintf("waits up to %s seconds", mirai:::RESET_GRACE_SECS),
                sprintf("notices within about %s seconds", lim("dead_peer_s")),
                sprintf("within the %s second handshake limit", lim("hello_timeout_s")),
                sprintf("wildcard host (%s)", gsub("`", "", mirai:::wildcard_text())),
                sprintf("resolving pending mirai to errorValue %d", code("reset"))),
    info = c(sprintf("handshake within %s seconds", lim("hello_timeout_s")),
             sprintf("default %s)", bytes("max_message_bytes"))),
    daemon = c(sprintf("reached within %s seconds", lim("dial_timeout_s")),
               sprintf("within about %s seconds", lim("dead_peer_s")),
               sprintf("holds at most %s of it", bytes("pre_auth_bytes")),
               sprintf("an exit code: %s", mirai:::exit_codes_text())),
    everywhere = c(sprintf("at most %s", lim("max_everywhere")),
                   sprintf("resolves to errorValue %d.", code("reset"))),
    mirai = c(sprintf("resolves to errorValue %d (errorValue int %s)", code("timeout"),
                      mirai:::error_text(code("timeout"))),
              sprintf("(errorValue %d)", code("canceled")),
              sprintf("gives errorValue %d (%s)", code("reset"), mirai:::error_meaning("reset")),
              sprintf("an errorValue %d (timed out)", code("timeout"))),
    stop_mirai = sprintf("Resolves a mirai to errorValue %d (operation canceled)", code("canceled")),
    as.promise.mirai = sprintf("(errorValue %s)", mirai:::error_text(code("reset"))),
    is_mirai_error = sprintf("%d (timed out), %d (connection reset", mirai:::error_code("timeout"),
                             mirai:::error_code("reset")),
    http_config = sprintf("times out after %s seconds", mirai:::HTTP_TIMEOUT_SECS)
  )
  for (topic in names(pages)) {
    text <- rd_text(topic)
    for (quote in pages[[topic]])
      expect_true(grepl(quote, text, fixed = TRUE), label = sprintf("%s: '%s'", topic, quote))
  }
  # Messages are made from the same values.
  daemons(sync = TRUE)
  on.exit(daemons(0))
  expect_error(everywhere(1, .min = -1), sprintf("at most %s", lim("max_everywhere")), fixed = TRUE)
  old <- options(mirai.max_message = 1)
  on.exit(options(old), add = TRUE)
  expect_error(daemons(1), sprintf("at least %s", lim("min_max_message_bytes")), fixed = TRUE)
})
