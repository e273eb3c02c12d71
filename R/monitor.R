# What the daemons did: a table of each daemon's counters, and a timeline of
# the tasks each ran. The host keeps both (rust/src/host/monitor.rs); these
# only shape them for R.

#' What Each Daemon Did
#'
#' A table with one row per daemon of a compute profile: how many tasks it
#' was sent and answered, whether it is running one now, its process id,
#' when it connected, and the bytes it sent and received. A companion to
#' [status()], which gives the profile's totals.
#'
#' Rows are the connected daemons, in the order they connected, then the
#' local daemons launched but not (yet) connected (state `"connecting"`),
#' such as a replacement for a daemon that died (see [daemons()],
#' Self-healing). A daemon that has disconnected no longer appears.
#' The counters are kept by the host with or without a dispatcher (without
#' one, the host still chooses the daemon for each task). Reading them is
#' one short lock of the host: cheap, but not free, so do not call it in a
#' tight loop.
#'
#' @param .compute (character) name of the compute profile, or a
#'   'miraiCluster'. Default NULL: the current profile.
#' @return A data frame with columns `id` (integer: the order in which the
#'   daemon connected, from 1; NA for one still connecting), `pid` (integer:
#'   the daemon's process id on its own machine), `state` (`"busy"`,
#'   `"idle"` or `"connecting"`), `assigned` and `completed` (tasks sent to
#'   it, and results it sent back, cancelled ones included), `connected`
#'   (POSIXct: when it connected), `bytes_in` and `bytes_out` (bytes of
#'   whole messages received from it and written to it). No rows if no
#'   daemons are set, or in synchronous mode.
#' @seealso [daemons_timeline()] for which task ran where and when;
#'   [status()].
#' @examples
#' # No daemons set: no rows.
#' daemons_table()
#' @examplesIf interactive()
#' daemons(2)
#' mirai_map(1:10, function(x) Sys.sleep(0.1))[]
#' daemons_table()
#' daemons(0)
#' @export
daemons_table <- function(.compute = NULL) {
  prof <- if (inherits(.compute, "miraiCluster")) live_profile(.compute) else profile_of(.compute)
  if (is.null(prof) || isTRUE(prof$sync)) return(daemon_rows())
  pool_notice(prof)
  d <- .Call(C_mirai_host_daemons, prof$host)
  n <- length(d$launching)
  daemon_rows(
    id = c(d$id, rep(NA_integer_, n)),
    pid = c(d$pid, d$launching),
    state = c(ifelse(d$busy, "busy", "idle"), rep("connecting", n)),
    assigned = c(d$assigned, numeric(n)),
    completed = c(d$completed, numeric(n)),
    connected = c(d$connected, rep(NA_real_, n)),
    bytes_in = c(d$bytes_in, numeric(n)),
    bytes_out = c(d$bytes_out, numeric(n))
  )
}

#' Timeline of Tasks on Daemons
#'
#' Draws which daemon ran each recent task, and when: one row per daemon,
#' one bar per task from when it was sent to when its result came back,
#' errors in another colour, so that load balance and stragglers show at a
#' glance. Base graphics only. Returns the data it draws.
#'
#' The host of a compute profile records the last `r timeline_cap()` tasks
#' sent to its daemons, from when daemons were set (a reset clears them):
#' recording a task costs two clock reads. A task sent again after its
#' daemon died (see `.retry` in [mirai()]) has a bar for each attempt, the
#' lost ones marked as errors. A task still running is drawn up to the
#' latest time shown, in grey. Without a dispatcher a task goes to its
#' daemon when it is created and may wait there behind that daemon's other
#' tasks: its bar includes that wait.
#'
#' @param x (mirai, list or mirai_map) restrict the timeline to these tasks,
#'   e.g. the result of [mirai_map()] or a list of mirai, all of the profile
#'   `.compute`. Default NULL: every task recorded.
#' @param file (character) a file to draw into: a PNG image for a name
#'   ending in `.png`, a PDF otherwise. Default NULL: the current graphics
#'   device (a new plot).
#' @param ... (named arguments) passed to [graphics::plot()], e.g. `main`,
#'   and for a `file` the sizes `width` and `height` (pixels for a PNG,
#'   inches for a PDF). Default: none.
#' @param .compute (character) name of the compute profile. Default NULL:
#'   the current profile.
#' @return Invisibly, a data frame with one row per task attempt, oldest
#'   first: `task` (a number per task, in the order they were sent to the
#'   host), `daemon` (the id
#'   that [daemons_table()] shows), `start` and `end` (seconds since the
#'   first task shown was sent; `end` NA while running) and `error` (TRUE
#'   for an error value, whether the daemon returned it or the task
#'   timed out, was cancelled or lost its daemon; NA while running).
#' @seealso [daemons_table()].
#' @examples
#' # No daemons set: nothing to draw.
#' nrow(daemons_timeline())
#' @examplesIf interactive()
#' daemons(2)
#' mp <- mirai_map(c(0.1, 0.1, 1, 0.1), function(s) if (s > 0.5) stop("slow") else Sys.sleep(s))
#' mp[]
#' daemons_timeline(mp)
#' daemons(0)
#' @export
daemons_timeline <- function(x = NULL, file = NULL, ..., .compute = NULL) {
  if (!is.null(file) && !(is.character(file) && length(file) == 1L && !is.na(file) && nzchar(file)))
    abort("`file` must be a single file name, or NULL")
  ids <- if (is.null(x)) NULL else task_ids(x)
  prof <- profile_of(.compute)
  tl <- if (is.null(prof) || isTRUE(prof$sync)) NULL else .Call(C_mirai_host_timeline, prof$host, ids)
  data <- timeline_frame(tl)
  if (!is.null(file)) {
    dots <- list(...)
    size <- dots[intersect(names(dots), c("width", "height"))]
    png_file <- grepl("\\.png$", file, ignore.case = TRUE)
    if (png_file) do.call(grDevices::png, c(list(filename = file), size))
    else do.call(grDevices::pdf, c(list(file = file), size))
    on.exit(grDevices::dev.off())
    plot_timeline(data, dots[setdiff(names(dots), c("width", "height"))])
  } else {
    plot_timeline(data, list(...))
  }
  invisible(data)
}

# ------------------------------------------------------------------------------

timeline_cap <- function() format(limit("timeline_tasks"), big.mark = ",", scientific = FALSE)

daemon_rows <- function(id = integer(), pid = integer(), state = character(), assigned = numeric(),
                        completed = numeric(), connected = numeric(), bytes_in = numeric(),
                        bytes_out = numeric()) {
  data.frame(id = id, pid = pid, state = state, assigned = assigned, completed = completed,
             connected = structure(connected, class = c("POSIXct", "POSIXt")),
             bytes_in = bytes_in, bytes_out = bytes_out, stringsAsFactors = FALSE)
}

# The task ids of a mirai, a list of mirai or a mirai_map.
task_ids <- function(x) {
  h <- if (is_mirai_map(x)) map_handle(x)
  if (!is.null(h)) return(.Call(C_mirai_map_ids, h))
  if (is_mirai(x)) x <- list(x)
  if (!is.list(x)) abort(sprintf("`x` must be a mirai, a list of mirai or a mirai_map, not %s", typeof(x)))
  ids <- vapply(x, function(m) {
    if (!is_mirai(m)) abort("`x` must be a mirai, a list of mirai or a mirai_map: an element is not a mirai")
    aio <- aio_of(m)
    if (is.null(aio)) NA_real_ else .Call(C_mirai_aio_id, aio)
  }, numeric(1L))
  as.double(ids)
}

timeline_frame <- function(tl) {
  if (is.null(tl) || !length(tl$task))
    return(data.frame(task = numeric(), daemon = integer(), start = numeric(), end = numeric(),
                      error = logical()))
  t0 <- min(tl$start)
  data.frame(task = tl$task, daemon = tl$daemon, start = tl$start - t0, end = tl$end - t0,
             error = ifelse(is.na(tl$outcome), NA, tl$outcome != 0L))
}

plot_timeline <- function(data, args) {
  daemons <- sort(unique(data$daemon))
  running <- is.na(data$end)
  last <- if (nrow(data)) max(c(data$end, data$start), na.rm = TRUE) else 1
  xmax <- max(last, 1e-3)
  # A task of a few microseconds still shows, as a sliver.
  end <- pmax(ifelse(running, last, data$end), data$start + xmax / 400)
  y <- match(data$daemon, daemons)
  op <- graphics::par(mar = c(4.5, 6.5, 4, 1))
  on.exit(graphics::par(op))
  base <- list(x = NA, type = "n", xlim = c(0, xmax), ylim = c(0.5, max(length(daemons), 1) + 0.5),
               xlab = "seconds since the first task", ylab = "", yaxt = "n", main = "Tasks on daemons")
  do.call(graphics::plot, utils::modifyList(base, args))
  if (length(daemons))
    graphics::axis(2, at = seq_along(daemons), labels = paste("daemon", daemons), las = 1, cex.axis = 0.8)
  col <- ifelse(running, "grey70", ifelse(data$error %in% TRUE, "firebrick", "steelblue"))
  if (nrow(data))
    graphics::rect(data$start, y - 0.35, end, y + 0.35, col = col, border = "white", lwd = 0.5)
  graphics::legend("bottom", legend = c("value", "error", "running"), fill = c("steelblue", "firebrick", "grey70"),
                   bty = "n", cex = 0.8, horiz = TRUE, inset = c(0, 1), xpd = TRUE)
}
