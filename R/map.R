# mirai_map(): one task per element (or row), submitted and collected
# natively as a whole (rust/src/r/glue/map.rs), and collecting with the
# .flat / .progress / .stop options.

#' mirai Map
#'
#' Asynchronous parallel map of a function over a list or vector, or over
#' the rows of a data frame or matrix, using the daemons of a compute
#' profile. Each element is one task, so the work is spread over the
#' daemons as they become free (with a dispatcher). The whole map is
#' submitted at once, and `.f`, `.args` and the objects in `...` travel to
#' each daemon once, not with every element: a daemon keeps them (the last
#' four such sets, by content) until its profile is reset, so a later map
#' with the same `.args` sends them no more.
#'
#' For a list or vector `.x`, each mirai evaluates `.f(x_i, <.args>)`. For a
#' data frame, matrix, or anything else with two dimensions, `.f` is called
#' once per row, with the columns as its arguments: by name where the columns
#' are named, otherwise by position. Names of `.x` are kept, and character
#' row names become the names of the result.
#'
#' The result is a 'mirai_map', returned at once: a list with one element
#' per input element, where `x[[i]]` (or `x$name`) is the element's mirai,
#' made when first asked for (`as.list(x)` makes them all). Collect it with
#' `x[]` (a list of values, in order, whatever the order in which
#' they resolve), or with options:
#'
#' * `x[.flat]` flattens the values into a vector, checking that all are of
#'   the same type;
#' * `x[.progress]` shows a progress bar (a 'cli' bar where that package is
#'   installed, a plain text one on stderr otherwise). Under
#'   `daemons(relay = TRUE)` it also counts progress inside the elements:
#'   an element that runs a cli progress bar or a progressr `progressor()`
#'   moves the bar by its share done as it goes, and those bars are then
#'   shown by the map's bar alone;
#' * `x[.stop]` stops at the first error value, cancels the remaining mirai
#'   and raises an error naming the index.
#'
#' Options combine, as in `x[.stop, .progress]`. [collect_mirai()] takes the
#' same options as a character vector, e.g. `c(".flat", ".progress")`, or as
#' a named list, e.g. `list(.stop = TRUE, .progress = list(name = "bar"))`
#' to pass arguments to [cli::cli_progress_bar()]. With `.flat` an error
#' value also stops the collection, as there is no flat way to return it.
#'
#' Calling `daemons(n)` from within `.f` errors: a map must not start local
#' daemons on the daemons that run it. `daemons(url = local_url())` followed
#' by `launch_local()` is allowed.
#'
#' @param .x (list or vector) a list or atomic vector, or a data frame,
#'   matrix or other object with two dimensions (mapped over its rows). No
#'   default: required.
#' @param .f (function) the function to apply. No default: required.
#' @param ... (named objects) named objects (or one environment) placed in
#'   the global environment of the daemons, as for [mirai()]. Default: none.
#' @param .args (list) further arguments to `.f`, after the element (or the
#'   row's columns). Default `list()`.
#' @param .promise (function or list) a function, or a list of two
#'   functions, attached to each mirai as the `onFulfilled` (and
#'   `onRejected`) callbacks of a promise with [promises::then()]. Needs the
#'   'promises' package. Default NULL (none).
#' @param .retry (integer) how many times to send an element's task again if
#'   its daemon dies while running it, as for [mirai()]. Default 0.
#' @param .compute (character) name of the compute profile. Default NULL:
#'   the current profile.
#' @return A 'mirai_map' (a list whose elements `[[` gives as 'mirai'),
#'   invisibly. Take elements with `[[`, `$`, `as.list()` or `lapply()`:
#'   the mirai objects are made when asked for, so a `for` loop over the
#'   map itself (or `unclass()`) sees NULLs.
#' @seealso [collect_mirai()], [race_mirai()]
#' @examples
#' # Synchronous mode: each element is evaluated in this process.
#' daemons(sync = TRUE)
#' mirai_map(c(a = 1, b = 2, c = 3), function(x, y) x + y, .args = list(y = 10))[.flat]
#' daemons(0)
#' @examplesIf interactive()
#' daemons(2)
#' mp <- mirai_map(c(a = 1, b = 2, c = 3), function(x, y) x + y, .args = list(y = 10))
#' mp
#' mp[]
#' mp[.flat]
#'
#' df <- data.frame(x = 1:3, y = c("a", "b", "c"), row.names = c("r1", "r2", "r3"))
#' mirai_map(df, function(y, x) strrep(y, x))[.flat]
#'
#' mirai_map(1:4, function(i) { Sys.sleep(0.1); i^2 })[.progress, .flat]
#'
#' mp <- mirai_map(list(1, "a", 3), function(x) log(x))
#' try(mp[.stop])
#' daemons(0)
#' @export
mirai_map <- function(.x, .f, ..., .args = list(), .promise = NULL, .retry = 0L, .compute = NULL) {
  require_daemons(.compute)
  if (!is.function(.f)) abort(sprintf("`.f` must be of type function, not %s", typeof(.f)))
  # `...` is evaluated here (once), so that an error in it names this call.
  dots <- if (...length()) list(...)
  globals <- if (length(dots)) named_list(dots, "`...` arguments") else list()
  if (is.environment(.args)) .args <- as.list.environment(.args, all.names = TRUE)
  if (!is.list(.args)) abort(sprintf("`.args` must be a list, not %s", typeof(.args)))
  check_retry(.retry)
  # An environment's objects, as lapply() takes them (names starting with a
  # dot left out): names(.x) would name those too, and not match.
  if (is.environment(.x)) .x <- as.list(.x)
  if (not_listable(.x))
    abort(sprintf("`.x` must be a vector, list, data frame or matrix, not %s", typeof(.x)))
  callbacks <- promise_callbacks(.promise)
  d <- dim(.x)
  if (length(d) > 2L)
    abort(sprintf("`.x` has %d dimensions: mirai_map() maps over vectors, lists and the rows of 2-dimensional objects", length(d)))
  prof <- profile_of(.compute)
  # Sync mode, seeded profiles (a stream per element) and promises go
  # element by element, as mirai() calls.
  if (is.null(prof) || isTRUE(prof$sync) || !is.null(prof$seed) || length(callbacks))
    return(map_each(.x, .f, globals, .args, callbacks, .retry, .compute))
  invisible(map_native(prof, .x, d, .f, globals, .args, .retry))
}

# The whole map in one native call (see rust/src/r/glue/map.rs): the function,
# `.args` and globals travel once to each daemon (the shared part), each
# element's frame carries only the element. A data frame or matrix small
# enough travels in the shared part too, and each element is its row
# number: the rows are taken on the daemons. The result is a list of
# NULLs with the map's handle as attribute "handle": mirai objects are made
# only for elements asked for with `[[` or `$`.
map_native <- function(prof, .x, d, .f, globals, .args, .retry) {
  args <- list(.x = NULL, .map_call = map_call, .f = .f, .args = .args)
  expr <- quote(.map_call(.f, .x, .args))
  if (length(d) < 2L) {
    nms <- names(.x)
    # A plain vector's elements are taken natively, without a list of them.
    plain <- typeof(.x) %in% c("logical", "integer", "double", "character") &&
      all(names(attributes(.x)) == "names")
    items <- if (plain) .x else as.list(.x)
    wrap <- if (plain) 2 else 1
  } else {
    nms <- if (is.data.frame(.x)) {
      rn <- attr(.x, "row.names")
      if (is.character(rn)) rn
    } else rownames(.x)
    if (utils::object.size(.x) <= MAP_SHARE_ROWS_BYTES) {
      # Each element is its row number, sent as a vector's element is
      # (`list(i)`, natively: see wrap 2), not serialized one by one.
      items <- seq_len(d[[1L]])
      wrap <- 2
      # The rows of a data frame of plain columns are taken natively by
      # map_call(); others by map_row().
      if (.Call(C_mirai_map_plain_rows, .x)) {
        args <- c(args, list(.data = .x))
        expr <- quote(.map_call(.f, .x, .args, .data))
      } else {
        args <- c(args, list(.map_row = map_row, .data = .x))
        expr <- quote(.map_call(.f, .map_row(.data, .x[[1L]]), .args))
      }
    } else {
      items <- unname(map_items(.x))
      wrap <- 0
    }
  }
  shared <- list(._expr_. = expr, ._globals_. = globals, ._args_. = args)
  h <- .Call(C_mirai_map_submit, prof$host, shared, items, wrap, .retry)
  out <- vector("list", length(items))
  names(out) <- nms
  attr(out, "handle") <- h
  class(out) <- "mirai_map"
  out
}

# A data frame or matrix up to this size goes to each daemon whole, its
# rows taken there; a larger one is cut into rows here, so that each row
# crosses the wire once.
MAP_SHARE_ROWS_BYTES <- 16e6

# Runs on the daemon: row `i` of `x` as an argument list, as R takes it
# (map_call() takes that of a data frame of plain columns natively:
# mirai_map_plain_rows).
map_row <- function(x, i) {
  if (is.data.frame(x)) return(lapply(x, `[[`, i))
  row <- as.list(x[i, , drop = TRUE])
  names(row) <- colnames(x)
  row
}

# One mirai() per element: sync mode, seeded profiles, `.promise`.
map_each <- function(.x, .f, globals, .args, callbacks, .retry, .compute) {
  items <- map_items(.x)
  task <- quote(.map_call(.f, .x, .args))
  out <- vector("list", length(items))
  genv <- if (length(globals)) list2env(globals)
  for (i in seq_along(items)) {
    args <- list(.map_call = map_call, .f = .f, .x = items[[i]], .args = .args)
    out[[i]] <- if (is.null(genv)) mirai(.expr = task, .args = args, .retry = .retry, .compute = .compute)
                else mirai(.expr = task, genv, .args = args, .retry = .retry, .compute = .compute)
  }
  names(out) <- names(items)
  if (length(callbacks)) for (m in out) promises::then(m, onFulfilled = callbacks[[1L]], onRejected = callbacks[[2L]])
  invisible(structure(out, class = "mirai_map"))
}

map_handle <- function(x) attr(x, "handle", exact = TRUE)

# Runs on the daemon: `.f` on element `.x` (its argument list), or on row
# `.x` of `.data` (a data frame of plain columns sent once per daemon), and
# `.args`. Calling `.f` by name gives errors a readable call ("Error in
# .f(3L): ...") instead of the deparsed function; only language arguments
# need quoting, and quoting the rest would clutter that call. The row is
# taken, and the call made and evaluated here, natively
# (mirai_map_apply: what do.call(".f", c(.x, .args)) does with the
# language arguments quoted), against several closure calls per element.
# daemons() knows it runs inside a map by this function's call on the
# stack (in_map()).
map_call <- function(.f, .x, .args, .data = NULL) .Call(C_mirai_map_apply, .x, .args, .data, environment())

# Whether the calling code runs inside a map's element (map_call() above,
# called by this name from every map's task).
in_map <- function() {
  for (cl in sys.calls()) if (is.call(cl) && identical(cl[[1L]], quote(.map_call))) return(TRUE)
  FALSE
}

# The argument list of each call, named after the elements or rows.
map_items <- function(.x) {
  d <- dim(.x)
  if (length(d) > 2L)
    abort(sprintf("`.x` has %d dimensions: mirai_map() maps over vectors, lists and the rows of 2-dimensional objects", length(d)))
  if (length(d) < 2L) {
    items <- lapply(as.list(.x), list)
    names(items) <- names(.x)
    return(items)
  }
  rows <- seq_len(d[[1L]])
  if (is.data.frame(.x)) {
    items <- lapply(rows, function(i) lapply(.x, `[[`, i))
    rn <- attr(.x, "row.names")
    names(items) <- if (is.character(rn)) rn
  } else {
    cn <- colnames(.x)
    items <- lapply(rows, function(i) {
      row <- as.list(.x[i, , drop = TRUE])
      names(row) <- cn
      row
    })
    names(items) <- rownames(.x)
  }
  items
}

# Validates `.promise` before any task is sent; list(onFulfilled, onRejected).
promise_callbacks <- function(.promise) {
  if (is.null(.promise)) return(NULL)
  fns <- if (is.function(.promise)) list(.promise, NULL) else .promise
  if (!is.list(fns) || !length(fns) || length(fns) > 2L ||
      !all(vapply(fns, function(f) is.null(f) || is.function(f), logical(1L))))
    abort("`.promise` must be a function, or a list of an onFulfilled and an onRejected function")
  if (!requireNamespace("promises", quietly = TRUE))
    abort("`.promise` requires the 'promises' package")
  if (is.null(utils::getS3method("as.promise", "mirai", optional = TRUE, envir = asNamespace("promises"))))
    abort("`.promise` is not supported yet: this version of mirai cannot make a promise from a mirai")
  list(fns[[1L]], if (length(fns) > 1L) fns[[2L]])
}

#' @export
print.mirai_map <- function(x, ...) {
  h <- map_handle(x)
  done <- if (is.null(h)) sum(!vapply(x, unresolved, logical(1L))) else .Call(C_mirai_map_resolved, h)
  cat(sprintf("< mirai map [%d/%d] >\n", done, length(x)))
  invisible(x)
}

#' Is mirai Map
#'
#' Tests whether an object is a 'mirai_map', as returned by [mirai_map()]
#' and [everywhere()].
#'
#' @param x (any) an object. No default: required.
#' @return Logical value.
#' @examples
#' daemons(sync = TRUE)
#' is_mirai_map(mirai_map(1:2, sqrt))
#' is_mirai_map(list(mirai(1)))
#' daemons(0)
#' @export
is_mirai_map <- function(x) inherits(x, "mirai_map")

#' @export
`[.mirai_map` <- function(x, i, ...) {
  opts <- if (missing(i)) list(...) else c(list(i), list(...))
  collect_list(x, collect_options(opts))
}

#' @export
`[[.mirai_map` <- function(x, i, ...) {
  h <- map_handle(x)
  if (is.null(h)) return(.subset2(x, i, ...))
  k <- if (is.character(i) && length(i) == 1L) match(i, names(x)) else i
  if (!is.numeric(k) || length(k) != 1L || is.na(k) || k < 1 || k > length(x))
    abort(sprintf("subscript out of bounds: the map has %d elements", length(x)))
  .Call(C_mirai_map_element, h, as.double(k))
}

#' @export
`$.mirai_map` <- function(x, name) {
  k <- match(name, names(x))
  if (is.na(k)) NULL else x[[k]]
}

#' @export
as.list.mirai_map <- function(x, ...) {
  if (is.null(map_handle(x))) return(unclass(x))
  out <- lapply(seq_along(x), function(i) x[[i]])
  names(out) <- names(x)
  out
}

#' @rdname mirai_map
#' @format NULL
#' @export
.flat <- ".flat"

#' @rdname mirai_map
#' @format NULL
#' @export
.progress <- ".progress"

#' @rdname mirai_map
#' @format NULL
#' @export
.stop <- ".stop"

# A list, or a mirai_map, whose elements are each waited for: lets
# call_mirai(), unresolved() and stop_mirai() treat a map as a list.
is_mirai_list <- function(x) is.list(x) && (!is.object(x) || inherits(x, "mirai_map"))

# Normalises collection options: unnamed elements are option names (the
# `.flat` objects are just those strings), named ones carry a value.
collect_options <- function(options) {
  opts <- list(.flat = FALSE, .progress = FALSE, .stop = FALSE)
  nms <- names(options)
  for (k in seq_along(options)) {
    nm <- if (is.null(nms) || is.na(nms[[k]])) "" else nms[[k]]
    if (nzchar(nm)) {
      keys <- nm
      val <- options[[k]]
    } else {
      keys <- options[[k]]
      val <- TRUE
      if (!is.character(keys))
        abort("collection options must be `.flat`, `.progress` or `.stop`, or a named list of them")
    }
    for (key in keys) {
      if (!key %in% names(opts))
        abort(sprintf("unknown collection option '%s': use `.flat`, `.progress` or `.stop`", key))
      if (key != ".progress" && (!is.logical(val) || length(val) != 1L || is.na(val)))
        abort(sprintf("the `%s` option must be TRUE or FALSE", key))
      opts[[key]] <- val
    }
  }
  opts
}

# Waits for each element in turn (interruptibly: `m[]`), applying the options.
collect_list <- function(x, opts) {
  h <- if (inherits(x, "mirai_map")) map_handle(x)
  if (!is.null(h)) return(collect_map(x, h, opts))
  n <- length(x)
  out <- vector("list", n)
  tick <- progress_bar(n, opts$.progress, environment())
  within_elements(x, NULL, tick, {
    for (i in seq_len(n)) {
      xi <- .subset2(x, i)
      # A mirai's `[` method inlined (it is the one S3 dispatch would pick
      # for a class vector starting with "mirai"): two closure calls less
      # per element.
      # (Locals here are seen by a cli progress format: no common names.)
      xi_class <- oldClass(xi)
      v <- if (is.null(xi_class)) xi
           else if (!is.na(xi_first <- xi_class[1L]) && xi_first == "mirai") .Call(C_mirai_value, xi)
           else if (inherits(xi, "mirai")) xi[] else xi
      if ((opts$.stop || opts$.flat) && is_error_value(v)) stop_collection(x, i, v)
      if (opts$.flat && i > 1L && typeof(v) != typeof(out[[1L]])) {
        stop_mirai(x)
        abort(sprintf("Cannot flatten outputs of differing type: %s / %s", typeof(out[[1L]]), typeof(v)))
      }
      out[i] <- list(v)
      if (!is.null(tick)) tick(i)
    }
  })
  names(out) <- names(x)
  if (isTRUE(opts$.flat)) unlist(out, recursive = FALSE) else out
}

# collect_list() for a native map: in one call without a progress bar.
collect_map <- function(x, h, opts) {
  n <- length(x)
  stops <- opts$.stop || opts$.flat
  tick <- progress_bar(n, opts$.progress, environment())
  if (is.null(tick)) {
    out <- .Call(C_mirai_map_collect, h, stops)
    if (is.numeric(out) && !is.list(out)) {
      # As element by element: a type clash before the error comes first.
      if (opts$.flat && out > 2L) {
        for (j in 2:(out - 1L)) flat_check(x, .Call(C_mirai_map_value, h, 1), .Call(C_mirai_map_value, h, j))
      }
      stop_collection(x, out, .Call(C_mirai_map_value, h, out))
    }
    if (opts$.flat && n > 1L) {
      types <- vapply(out, typeof, character(1L))
      bad <- which(types != types[[1L]])
      if (length(bad)) flat_check(x, out[[1L]], out[[bad[[1L]]]])
    }
  } else {
    out <- vector("list", n)
    within_elements(x, h, tick, {
      for (i in seq_len(n)) {
        v <- .Call(C_mirai_map_value, h, i)
        if (stops && is_error_value(v)) stop_collection(x, i, v)
        if (opts$.flat && i > 1L) flat_check(x, out[[1L]], v)
        out[i] <- list(v)
        tick(i)
      }
    })
  }
  names(out) <- names(x)
  if (isTRUE(opts$.flat)) unlist(out, recursive = FALSE) else out
}

flat_check <- function(x, first, v) {
  if (typeof(v) != typeof(first)) {
    stop_mirai(x)
    abort(sprintf("Cannot flatten outputs of differing type: %s / %s", typeof(first), typeof(v)))
  }
}

# The first error value ends the collection: the rest is of no use, so it is
# cancelled rather than left running.
stop_collection <- function(x, i, v) {
  stop_mirai(x)
  nm <- names(x)[i]
  has_name <- !is.null(nm) && !is.na(nm) && nzchar(nm)
  msg <- if (is_mirai_error(v)) attr(v, "message", exact = TRUE) %||% unclass(v)
         else if (is_mirai_interrupt(v)) "the evaluation was interrupted"
         else error_text(as.integer(v))
  if (use_rlang()) {
    parent <- simpleError(msg, call = if (is_mirai_error(v)) attr(v, "call", exact = TRUE))
    bullets <- c("In index: {i}.", if (has_name) c(i = "With name: {nm}."))
    frame <- user_frame()
    at <- if (frame > 0L) sys.frame(frame) else environment()
    cli::cli_abort(bullets, parent = parent, call = frame_call_at(frame), .frame = at, .trace_bottom = at)
  }
  text <- if (is_mirai_error(v)) unclass(v) else msg
  abort(sprintf("In index %d:\n%s", i, text))
}

use_cli <- function() {
  if (is.null(.$cli)) .$cli <- requireNamespace("cli", quietly = TRUE)
  .$cli
}

# A function to call with each completed index, or NULL for no bar. `spec`
# is TRUE, a bar name, or a list of cli_progress_bar() arguments; the cli bar
# belongs to `frame`, so it is closed however the collection ends. Called
# with `partial = TRUE`, `i` is a position short of the end (elements done
# plus shares of elements under way) and the bar only moves.
progress_bar <- function(n, spec, frame) {
  if (isFALSE(spec) || is.null(spec) || n == 0L) return(NULL)
  if (use_cli()) {
    args <- if (is.list(spec)) spec else if (is.character(spec)) list(name = spec) else list()
    args$total <- n
    args$.envir <- frame
    id <- do.call(cli::cli_progress_bar, args)
    show <- function(i, partial) {
      if (partial || i < n) cli::cli_progress_update(id = id, set = i, .envir = frame)
      else cli::cli_progress_done(id = id, .envir = frame)
    }
  } else {
    show <- function(i, partial) {
      cat(if (partial) sprintf("\r[ %.1f / %d .... ]", i, n)
          else if (i < n) sprintf("\r[ %d / %d .... ]", i, n)
          else sprintf("\r[ %d / %d done ]\n", i, n), file = stderr())
    }
  }
  # Never backwards: elements are waited for in order, while shares of
  # elements under way may already count later ones done.
  high <- 0
  function(i, partial = FALSE) {
    if (i < n) {
      partial <- partial || i < high
      i <- max(i, high)
      high <<- i
    }
    show(i, partial)
  }
}

# Evaluates `expr` (a collection of map or list `x`, map handle `h` or
# NULL, with bar `tick`) so that, under daemons(relay = TRUE), the bar also
# counts progress inside the elements: each element's share done, from the
# progressr progressors and cli progress bars it runs, as their updates are
# relayed. Those updates are then shown by the bar alone.
within_elements <- function(x, h, tick, expr) {
  track <- if (!is.null(tick)) element_progress(x, h, tick)
  if (is.null(track)) expr
  else withCallingHandlers(expr, miraiCondition = track)
}

element_progress <- function(x, h, tick) {
  n <- length(x)
  el <- relay_elements(x, h, strict = FALSE)
  if (all(is.na(el$compute))) return(NULL)
  # Each element's key: its profile and task id, as relayed conditions
  # carry them (NA for an element that relays nothing).
  key <- function(compute, id) paste0(compute, "\r", id_key(id))
  keys <- ifelse(is.na(el$compute), NA_character_, key(el$compute, el$ids))
  done <- el$done
  # Element index by key (ids are per profile: another profile's task of
  # the same id, shown during the same wait, is not this map's); per
  # element, units done and units in all of its progressors (a cli bar is
  # one too); per progressor, its last known c(done, steps).
  index <- new.env(parent = emptyenv(), size = n)
  for (i in seq_len(n)) if (!is.na(keys[i])) assign(keys[i], i, envir = index)
  units <- numeric(n)
  steps <- numeric(n)
  meters <- new.env(parent = emptyenv())
  shown_at <- 0
  over <- NULL
  function(cond) {
    if (!is.character(cond$mirai_compute)) return()
    k <- key(cond$mirai_compute, cond$mirai_id)
    i <- if (length(k) == 1L) index[[k]]
    if (is.null(i)) return()
    bar <- cond$mirai_bar
    if (inherits(cond, "progression")) {
      # What a task sends is checked as it is used: a malformed update is
      # not counted, and never fails the collection.
      uuid <- cond$progressor_uuid
      type <- cond$type
      if (!is.character(uuid) || length(uuid) != 1L || !is.character(type) || !length(type)) return()
      key <- paste0("p", uuid)
      was <- meters[[key]] %||% c(0, 0)
      now <- switch(
        type[1L],
        initiate = c(0, if (is_number(cond$steps)) cond$steps else 0),
        update = c(if (is_number(cond$step)) cond$step
                   else was[1L] + if (is_number(cond$amount)) cond$amount else 0, was[2L]),
        finish = c(was[2L], was[2L]),
        was
      )
      restart <- "muffleProgression"
    } else if (is_bar_position(bar)) {
      key <- paste0("c", bar$id)
      was <- meters[[key]] %||% c(0, 0)
      now <- c(bar$current, bar$total)
      restart <- "muffleMessage"
    } else {
      return()
    }
    if (length(now) == 2L && all(is.finite(now)) && all(now >= 0)) {
      assign(key, now, envir = meters)
      units[i] <<- units[i] + now[1L] - was[1L]
      steps[i] <<- steps[i] + now[2L] - was[2L]
      # Which elements are over is asked at most 20 times a second, however
      # fast updates come (the bar itself throttles its drawing).
      t <- proc.time()[[3L]]
      if (is.null(over) || t - shown_at >= 0.05) {
        shown_at <<- t
        over <<- done()
      }
      share <- ifelse(steps > 0, pmin(pmax(units / steps, 0), 1), 0)
      at <- sum(over) + sum(share[!over])
      if (at < n) tick(at, partial = TRUE)
    }
    tryInvokeRestart(restart)
  }
}

is_number <- function(x) is.numeric(x) && length(x) == 1L && !is.na(x)
