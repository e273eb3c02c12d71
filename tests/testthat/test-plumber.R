# The example plumber API (inst/plumber/plumber.R), served by a real plumber
# in a background R process and queried with the curl command-line tool.

skip_if_not_installed("plumber")
skip_if_not_installed("processx")
skip_if(!nzchar(Sys.which("curl")), "the curl command-line tool is not installed")

# Starts the API in a background R process. It picks a free loopback port,
# prints it, and stops (running the API's exit hook, which resets its
# daemons) once `stop_file` exists.
start_api <- function(stop_file, log) {
  script <- tempfile(fileext = ".R")
  writeLines(c(
    "library(mirai)",
    "args <- commandArgs(TRUE)",
    "port <- httpuv::randomPort(host = '127.0.0.1')",
    "watch <- function() {",
    "  if (file.exists(args[[1L]])) httpuv::interrupt() else later::later(watch, 0.1)",
    "}",
    "later::later(watch, 0.1)",
    "pr <- plumber::pr(system.file('plumber', 'plumber.R', package = 'mirai'))",
    "cat(sprintf('port %d pid %d\\n', port, Sys.getpid()))",
    "plumber::pr_run(pr, host = '127.0.0.1', port = port, docs = FALSE, quiet = TRUE)",
    "cat('api stopped; daemons set:', daemons_set(), '\\n')"
  ), script)
  processx::process$new(file.path(R.home("bin"), "Rscript"), c(script, stop_file),
                        stdout = "|", stderr = log,
                        env = c("current", R_LIBS = paste(.libPaths(), collapse = ":")))
}

# Starts `curl` on `path`; its output is the body, then a line with the
# status code and the total time.
curl_get <- function(port, path, max_time = 20) {
  url <- sprintf("http://127.0.0.1:%d%s", port, path)
  fmt <- "\\n%{http_code} %{time_total}"
  processx::process$new("curl", c("-s", "-m", max_time, "-w", fmt, url),
                        stdout = "|", stderr = NULL)
}

curl_result <- function(p, timeout = 30) {
  p$wait(timeout * 1000)
  if (p$is_alive()) p$kill()
  lines <- strsplit(p$read_all_output(), "\n", fixed = TRUE)[[1L]]
  if (!length(lines)) return(list(body = "", status = NA_integer_, time = NA_real_))
  last <- strsplit(lines[[length(lines)]], " ", fixed = TRUE)[[1L]]
  list(body = paste(lines[-length(lines)], collapse = "\n"), status = as.integer(last[[1L]]),
       time = as.numeric(last[[2L]]))
}

test_that("slow requests run on daemons while fast ones are answered; errors become HTTP 500", {
  stop_file <- tempfile()
  log <- tempfile()
  api <- start_api(stop_file, log)
  on.exit({
    # Ask the API to stop (its exit hook resets the daemons); kill it if it
    # does not, and reap it either way.
    file.create(stop_file)
    api$wait(10000)
    if (api$is_alive()) api$kill()
    unlink(c(stop_file, log))
  })
  out <- ""
  started <- wait_until(function() {
    out <<- paste0(out, api$read_output())
    grepl("port \\d+ pid \\d+\n", out) || !api$is_alive()
  }, 30) && api$is_alive()
  if (!started) stop("the API did not start: ", paste(readLines(log), collapse = "\n"))
  port <- as.integer(sub(".*port (\\d+) pid.*", "\\1", out))
  api_pid <- as.integer(sub(".*pid (\\d+)\n.*", "\\1", out))
  expect_identical(api_pid, api$get_pid())
  # Wait until it answers.
  answers <- function() isTRUE(curl_result(curl_get(port, "/fast", 2))$status == 200L)
  expect_true(wait_until(answers, 30))

  # One slow request (6 s on a daemon), then, once it is surely under way,
  # fast ones, all at once.
  slow <- curl_get(port, "/slow?secs=6&x=21")
  Sys.sleep(1)
  fast <- lapply(1:4, function(i) curl_get(port, "/fast"))
  fast_res <- lapply(fast, curl_result)
  slow_running <- slow$is_alive()
  for (r in fast_res) {
    expect_identical(r$status, 200L)
    expect_match(r$body, sprintf('"pid":%d', api_pid), fixed = TRUE)
  }
  # All answered while the slow one was still being computed.
  expect_true(slow_running)
  slow_res <- curl_result(slow)
  expect_identical(slow_res$status, 200L)
  expect_match(slow_res$body, '^\\{"value":42,"pid":\\d+\\}$')
  expect_gte(slow_res$time, 6)
  pid_of <- function(r) as.integer(sub('.*"pid":(\\d+).*', "\\1", r$body))
  daemon_pids <- pid_of(slow_res)
  expect_false(daemon_pids == api_pid)

  # Two slow requests at once run on the two daemons side by side: both
  # answered well before the 10 s they would take one after the other.
  t1 <- Sys.time()
  both <- lapply(1:2, function(x) curl_get(port, sprintf("/slow?secs=5&x=%d", x)))
  both_res <- lapply(both, curl_result)
  expect_identical(vapply(both_res, `[[`, 0L, "status"), c(200L, 200L))
  expect_match(both_res[[1L]]$body, '"value":2,', fixed = TRUE)
  expect_match(both_res[[2L]]$body, '"value":4,', fixed = TRUE)
  expect_lt(as.numeric(difftime(Sys.time(), t1, units = "secs")), 9.5)
  daemon_pids <- unique(c(daemon_pids, vapply(both_res, pid_of, 0L)))
  expect_length(daemon_pids, 2L)

  # An error inside the mirai: a 500 carrying its message, promptly.
  err <- curl_result(curl_get(port, "/fail?msg=kaput%20on%20the%20daemon", 10))
  expect_identical(err$status, 500L)
  expect_identical(err$body, '{"error":"kaput on the daemon"}')
  expect_lt(err$time, 5)
  # Bad input: a 400 naming what was expected.
  bad <- curl_result(curl_get(port, "/slow?secs=forever", 10))
  expect_identical(bad$status, 400L)
  expect_match(bad$body, "secs (0 to 60) and x must be numbers", fixed = TRUE)
  # The API still serves after all that.
  expect_identical(curl_result(curl_get(port, "/fast"))$status, 200L)

  # Stopping the API resets its daemons and ends the process.
  file.create(stop_file)
  api$wait(15000)
  expect_false(api$is_alive())
  expect_identical(api$get_exit_status(), 0L)
  expect_match(api$read_all_output(), "api stopped; daemons set: FALSE", fixed = TRUE)
  expect_true(wait_until(function() !any(vapply(daemon_pids, pid_alive, logical(1L)))))
})
