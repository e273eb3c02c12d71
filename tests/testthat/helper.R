# Helpers shared by the tests.

# Zombies count as gone (state Z); see helper-soak.R, loaded before this file.
pid_alive <- soak_pid_alive

wait_until <- function(cond, timeout = 10) {
  deadline <- Sys.time() + timeout
  while (!cond()) {
    if (Sys.time() > deadline) return(FALSE)
    Sys.sleep(0.05)
  }
  TRUE
}


# The scheduler state of thread `tid` of process `pid` (its main thread by
# default), from /proc: "R" running or waiting for a CPU, "S" or "D" asleep in
# a wait, ...; NA once it is gone.
thread_state <- function(pid, tid = pid) {
  st <- suppressWarnings(tryCatch(readLines(sprintf("/proc/%d/task/%d/stat", pid, tid), warn = FALSE),
                                  error = function(e) character()))
  if (!length(st)) return(NA_character_)
  substr(sub("^.*\\) ", "", st[[1L]]), 1L, 1L)
}

# The fraction of `n` samples, 20 ms apart, in which that thread was running
# or waiting to run (state R). A thread that spins or polls is runnable all
# the time, whatever the machine's load (a busy machine only makes it wait
# longer for a CPU, still in state R); a thread blocked in a wait is asleep
# but for its brief wake-ups. So, unlike its CPU time, this tells the two
# apart on a loaded machine too.
busy_fraction <- function(pid, tid = pid, n = 50L) {
  s <- character(n)
  for (i in seq_len(n)) {
    s[[i]] <- thread_state(pid, tid)
    Sys.sleep(0.02)
  }
  mean(s == "R", na.rm = TRUE)
}

# Runs `lines` as an Rscript child that blocks once it has printed `ready`:
# checks that its main thread is asleep in that wait (not spinning or
# polling), sends it SIGINT, and returns all it printed once `done` appears.
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
  # Blocked means asleep, not polling: over a second, the main thread is
  # asleep in most of 50 samples, where a spinning or polling one would be
  # in none. (Its wake-ups every 50 ms to look for an interrupt, each
  # waiting for a CPU on a loaded machine, and whatever it still had to do
  # after printing `ready`, show up as the rest: about a third under load
  # 10 on two cores.)
  testthat::expect_lt(busy_fraction(p$get_pid()), 0.75)
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

