# Custom serialization of reference objects, on the host and on daemons,
# both directions.

# An environment-based object: sfunc records who packed it, ufunc who
# unpacked it, so each side's hook is seen to have run.
pack <- function(x) serialize(list(value = x$value, packed_by = Sys.getpid()), NULL)
unpack <- function(r) {
  l <- unserialize(r)
  e <- new.env(parent = emptyenv())
  e$value <- l$value
  e$packed_by <- l$packed_by
  e$unpacked_by <- Sys.getpid()
  class(e) <- "myobj"
  e
}
environment(pack) <- environment(unpack) <- globalenv()

myobj <- function(value) {
  e <- new.env(parent = emptyenv())
  e$value <- value
  class(e) <- "myobj"
  e
}

# An external pointer (a NULL one: base R cannot make others) whose payload
# lives in an attribute. Without the hooks it would arrive as a bare
# pointer; the unserializer upper-cases the payload to show it ran.
myptr <- function(payload) {
  p <- unserialize(serialize(new("externalptr"), NULL))
  attr(p, "payload") <- payload
  class(p) <- "myptr"
  p
}
ptr_cfg <- serial_config(
  "myptr",
  function(x) serialize(attr(x, "payload"), NULL),
  function(r) {
    p <- unserialize(serialize(new("externalptr"), NULL))
    attr(p, "payload") <- toupper(unserialize(r))
    class(p) <- "myptr"
    p
  }
)

test_that("serial_config() validates and builds the config", {
  cfg <- serial_config("myobj", pack, unpack)
  expect_identical(cfg, list("myobj", list(pack), list(unpack)))
  two <- serial_config(c("a", "b"), list(pack, unpack), unpack)
  expect_identical(two, list(c("a", "b"), list(pack, unpack), list(unpack, unpack)))
  expect_error(serial_config(1, pack, unpack), "`class` must be a character vector")
  expect_error(serial_config(character(), pack, unpack), "`class` must be a character vector")
  expect_error(serial_config("a", "pack", unpack), "`sfunc` must be a function")
  expect_error(serial_config("a", pack, list(unpack, unpack)), "`ufunc` must be a function, or a list of 1")
  expect_error(daemons(1, serial = list("a", 1, 2)), "`serial` must be a serialization config")
  expect_false(daemons_set())
})

for (disp in c(TRUE, FALSE)) {
  test_that(sprintf("objects of a configured class travel both ways (dispatcher = %s)", disp), {
    daemons(1, dispatcher = disp, serial = serial_config(c("other", "myobj"), list(unpack, pack), list(pack, unpack)))
    on.exit(daemons(0))
    obj <- myobj(1:5)
    r <- mirai(
      list(value = obj$value, packed_by = obj$packed_by, unpacked_by = obj$unpacked_by,
           pid = Sys.getpid(), back = obj, same = identical(obj, lst[[1L]]) && identical(obj, lst[[2L]])),
      obj = obj, lst = list(obj, obj)
    )[]
    host <- Sys.getpid()
    expect_identical(r$value, 1:5)
    expect_identical(r$packed_by, host)
    expect_identical(r$unpacked_by, r$pid)
    expect_false(r$pid == host)
    # One object referred to three times is still one object.
    expect_true(r$same)
    expect_s3_class(r$back, "myobj")
    expect_identical(r$back$value, 1:5)
    expect_identical(r$back$packed_by, r$pid)
    expect_identical(r$back$unpacked_by, host)
    # Other environments and external pointers are untouched: no hook runs
    # on them, so they keep their contents and attributes.
    plain <- mirai(
      list(class(environment(f)), ls(environment(f)), f(2), typeof(p), class(p), attr(p, "tag")),
      f = local(function(x) x * k, list2env(list(k = 3))), p = structure(unserialize(serialize(new("externalptr"), NULL)), tag = "kept")
    )[]
    expect_identical(plain, list("environment", "k", 6, "externalptr", "externalptr", "kept"))
  })
}

test_that("an external pointer object is rebuilt on each side by the unserializer", {
  daemons(1, serial = ptr_cfg)
  on.exit(daemons(0))
  p <- myptr(c("a", "b"))
  r <- mirai(list(seen = attr(p, "payload"), cls = class(p), typ = typeof(p), back = p), p = p)[]
  expect_identical(r$seen, c("A", "B"))
  expect_identical(r$cls, "myptr")
  expect_identical(r$typ, "externalptr")
  expect_identical(typeof(r$back), "externalptr")
  # Upper-cased on the daemon, then again (no-op) here: the hook ran twice.
  expect_identical(attr(r$back, "payload"), c("A", "B"))
  big <- mirai(p, p = myptr(strrep("x", 5e6)))[]
  expect_identical(nchar(attr(big, "payload")), 5000000L)
})

test_that("errors in the functions become clean errors on either side", {
  on_daemon_fail <- function(f) {
    force(f)
    g <- function(x) if (mirai::on_daemon()) stop("daemon side failed") else f(x)
    environment(g) <- list2env(list(f = f), parent = globalenv())
    g
  }
  # sfunc fails on the host: mirai() errors, the profile carries on.
  daemons(1, serial = serial_config("myobj", function(x) stop("cannot pack"), unpack))
  expect_error(mirai(1, obj = myobj(1)), "cannot serialize the task: serialization function for class 'myobj' failed: cannot pack")
  expect_identical(mirai(1 + 1)[], 2)
  daemons(0)
  # ufunc fails on the daemon: the task resolves to a miraiError, and the
  # same daemon takes the next task.
  daemons(1, serial = serial_config("myobj", pack, on_daemon_fail(unpack)))
  pid <- mirai(Sys.getpid())[]
  e <- mirai(obj$value, obj = myobj(1))[]
  expect_true(is_mirai_error(e))
  expect_match(e$message, "cannot unserialize task: unserialization function for class 'myobj' failed: daemon side failed")
  expect_identical(mirai(Sys.getpid())[], pid)
  daemons(0)
  # sfunc fails on the daemon (for the result): a miraiError.
  daemons(1, serial = serial_config("myobj", on_daemon_fail(pack), unpack))
  e <- mirai({ e <- new.env(); class(e) <- "myobj"; e })[]
  expect_true(is_mirai_error(e))
  expect_match(e$message, "result could not be serialized: serialization function for class 'myobj' failed: daemon side failed")
  daemons(0)
  # ufunc fails on the host (for the result): a miraiError.
  host_fail <- function(r) if (!mirai::on_daemon()) stop("host side failed") else NULL
  environment(host_fail) <- globalenv()
  daemons(1, serial = serial_config("myobj", pack, host_fail))
  e <- mirai(structure(new.env(), class = "myobj"))[]
  expect_true(is_mirai_error(e))
  expect_match(e$message, "unserialization function for class 'myobj' failed: host side failed")
  daemons(0)
  # sfunc must return a raw vector.
  daemons(1, serial = serial_config("myobj", function(x) "not raw", unpack))
  expect_error(mirai(1, obj = myobj(1)), "must return a raw vector")
  daemons(0)
})

test_that("register_serial() and serialization() feed daemons(serial = NULL)", {
  st <- mirai:::.
  old <- list(st$serial, st$refhook)
  on.exit({ st$serial <- old[[1L]]; st$refhook <- old[[2L]]; daemons(0) })
  st$serial <- NULL
  expect_null(register_serial("myobj", function(x) stop("replaced"), unpack))
  register_serial("myobj", pack, unpack)
  expect_identical(st$serial[[1L]], "myobj")
  daemons(1)
  r <- mirai(obj$unpacked_by == Sys.getpid(), obj = myobj(1))[]
  expect_true(r)
  daemons(0)
  # The older interface: one pair for every external pointer.
  said <- capture.output(
    serialization(refhook = list(function(x) serialize("pointer", NULL), function(r) unserialize(r))),
    type = "message"
  )
  expect_identical(said, "[ mirai ] serialization functions registered")
  daemons(1)
  r <- mirai(list(p, obj$packed_by), p = unserialize(serialize(new("externalptr"), NULL)), obj = myobj(1))[]
  expect_identical(r[[1L]], "pointer")
  expect_identical(r[[2L]], Sys.getpid())
  daemons(0)
  said <- capture.output(serialization(NULL), type = "message")
  expect_identical(said, "[ mirai ] serialization functions cancelled")
  expect_null(st$refhook)
  # An explicit config takes precedence over the registry.
  daemons(1, serial = ptr_cfg)
  obj <- mirai(obj, obj = myobj(1))[]
  expect_s3_class(obj, "myobj")
  expect_identical(obj$value, 1)
  expect_null(obj$packed_by)
  expect_null(obj$unpacked_by)
  expect_identical(attr(mirai(p, p = myptr("q"))[], "payload"), "Q")
})
