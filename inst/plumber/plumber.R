# An asynchronous plumber API on mirai daemons.
#
# /slow runs its computation as a mirai on a daemon and returns a promise
# of the result: plumber answers it when the mirai resolves, and meanwhile
# serves other requests, such as /fast, from the same R process. /fail
# shows that an error inside a mirai becomes an HTTP 500 carrying the
# error's message.
#
# Run it with:
#   pr <- plumber::pr(system.file("plumber", "plumber.R", package = "mirai"))
#   plumber::pr_run(pr, port = 8000)
# then, e.g., curl "http://127.0.0.1:8000/slow?secs=2&x=21" and, while that
# runs, curl http://127.0.0.1:8000/fast.
#
# If no daemons are set when the API is built, it sets
# getOption("mirai.plumber.daemons", 2) local daemons, and resets them when
# the API stops.

library(mirai)
library(promises)

#* @plumber
function(pr) {
  if (!daemons_set()) {
    daemons(getOption("mirai.plumber.daemons", 2L))
    plumber::pr_hook(pr, "exit", function() {
      daemons(0)
      cat("mirai plumber API: daemons reset\n")
    })
  }
  # A rejected promise (an error in the mirai) reaches this handler: answer
  # 500 with the error's message rather than plumber's generic text.
  plumber::pr_set_error(pr, function(req, res, err) {
    res$status <- 500L
    list(error = if (inherits(err, "condition")) conditionMessage(err) else as.character(err))
  })
}

# A query parameter as a number in [lo, hi], or NULL (and a 400 answer).
number_param <- function(res, value, name, lo, hi) {
  v <- suppressWarnings(as.numeric(value))
  if (length(v) != 1L || is.na(v) || v < lo || v > hi) {
    res$status <- 400L
    return(NULL)
  }
  v
}

#* A slow computation, run on a daemon: sleeps `secs` seconds, then doubles `x`
#* @param secs:number seconds the computation takes (0 to 60)
#* @param x:number the number to double
#* @serializer unboxedJSON
#* @get /slow
function(res, secs = 1, x = 1) {
  secs <- number_param(res, secs, "secs", 0, 60)
  x <- number_param(res, x, "x", -1e300, 1e300)
  if (is.null(secs) || is.null(x)) return(list(error = "secs (0 to 60) and x must be numbers"))
  mirai({
    Sys.sleep(secs)
    list(value = 2 * x, pid = Sys.getpid())
  }, secs = secs, x = x) %...>% (function(v) v)
}

#* A fast answer from the API's own process
#* @serializer unboxedJSON
#* @get /fast
function() {
  list(time = format(Sys.time(), "%H:%M:%OS3"), pid = Sys.getpid())
}

#* A computation that fails on its daemon: the error becomes an HTTP 500
#* @param msg the error message
#* @serializer unboxedJSON
#* @get /fail
function(msg = "failed on the daemon") {
  as.promise(mirai(stop(msg), msg = as.character(msg)))
}
