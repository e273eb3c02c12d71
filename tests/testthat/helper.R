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

