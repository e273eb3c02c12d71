# Helpers shared by the tests.

pid_alive <- function(pid) {
  # Signal 0 only checks existence; zombies count as gone (state Z).
  st <- suppressWarnings(tryCatch(readLines(sprintf("/proc/%d/stat", pid)), error = function(e) NULL))
  !is.null(st) && !grepl("^\\d+ \\(.*\\) Z", st[[1L]])
}

wait_until <- function(cond, timeout = 10) {
  deadline <- Sys.time() + timeout
  while (!cond()) {
    if (Sys.time() > deadline) return(FALSE)
    Sys.sleep(0.05)
  }
  TRUE
}


# Runs `lines` as an Rscript child that blocks once it has printed `ready`:
# checks that it uses (next to) no CPU for a second while blocked, sends it
# SIGINT, and returns all it printed once `done` appears.
interrupt_child <- function(lines, ready, done, timeout = 20) {
  script <- tempfile(fileext = ".R")
  writeLines(lines, script)
  p <- processx::process$new(file.path(R.home("bin"), "Rscript"), script, stdout = "|", stderr = NULL,
                             env = c("current", R_LIBS = paste(.libPaths(), collapse = ":")))
  on.exit(p$kill())
  out <- ""
  read_until <- function(pattern, secs)
    wait_until(function() { out <<- paste0(out, p$read_output()); grepl(pattern, out) }, secs)
  testthat::expect_true(read_until(ready, 30))
  Sys.sleep(0.3)
  cpu0 <- sum(p$get_cpu_times()[1:2])
  Sys.sleep(1)
  # Blocked means no busy polling.
  testthat::expect_lt(sum(p$get_cpu_times()[1:2]) - cpu0, 0.2)
  p$interrupt()
  testthat::expect_true(read_until(done, timeout))
  out
}

# A 'myptr': an external pointer (a fresh one: new("externalptr") hands out
# one shared object, unserializing makes a new pointer) carrying `payload`.
fresh_ptr <- function(payload) {
  p <- unserialize(serialize(new("externalptr"), NULL))
  attr(p, "payload") <- payload
  class(p) <- "myptr"
  p
}

# A serialization config for 'myptr' whose unserializer upper-cases the
# payload, so that each side's hook is seen to have run.
# (Self-contained functions: they also run on daemons, where this file's
# helpers do not exist.)
fresh_ptr_config <- function() {
  ufunc <- function(r) {
    p <- unserialize(serialize(new("externalptr"), NULL))
    attr(p, "payload") <- toupper(unserialize(r))
    class(p) <- "myptr"
    p
  }
  sfunc <- function(x) serialize(attr(x, "payload"), NULL)
  environment(ufunc) <- environment(sfunc) <- globalenv()
  serial_config("myptr", sfunc, ufunc)
}

