# TLS (tls+tcp://): real handshakes between real R processes, a stock TLS
# client (openssl s_client) against our host, user certificates made with
# the openssl CLI as users make them (a self-signed certificate from
# `openssl req -x509`, their own CA, a chain through an intermediate CA, EC
# keys, encrypted keys in both of OpenSSL's formats, expired certificates,
# certificates for another name), hostile peers (a stalled handshake,
# garbage), mismatches (wrong CA, plain TCP against TLS and back), and a
# daemon in its own network namespace.

skip_on_cran()

rscript <- file.path(R.home("bin"), "Rscript")
libs <- paste(.libPaths(), collapse = ":")

# Runs `expr` (a string) in a child Rscript with `env`; list(status, out, secs).
run_child <- function(expr, env = character(), timeout = 40) {
  t0 <- Sys.time()
  r <- processx::run(rscript, c("-e", expr), error_on_status = FALSE, stderr_to_stdout = TRUE,
                     timeout = timeout, env = c("current", R_LIBS = libs, env))
  list(status = r$status, out = r$stdout, secs = as.numeric(difftime(Sys.time(), t0, units = "secs")))
}

port_of <- function(url) as.integer(sub(".*:", "", url))

# A raw TCP peer (not a daemon) of the profile's host.
raw_peer <- function(url) {
  socketConnection("127.0.0.1", port_of(url), blocking = TRUE, open = "r+b", timeout = 10)
}

ossl <- function(..., wd = NULL) {
  r <- processx::run("openssl", c(...), error_on_status = FALSE, stderr_to_stdout = TRUE, timeout = 30, wd = wd)
  if (r$status != 0L) stop("openssl ", paste(c(...), collapse = " "), " failed: ", r$stdout)
  r$stdout
}

skip_if_no_openssl <- function() {
  if (!nzchar(Sys.which("openssl"))) skip("the openssl CLI is not installed (Debian package openssl; tools/setup.sh)")
}

# A root CA, an intermediate CA signed by it, and a server certificate for
# 127.0.0.1 signed by the intermediate; the server key also encrypted
# (PKCS#8, AES-256-CBC) with password "mirai-pw".
make_pki <- function(dir) {
  f <- function(x) file.path(dir, x)
  ec <- c("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
  ossl("req", "-x509", ec, "-keyout", f("root.key"), "-out", f("root.pem"), "-days", "2",
       "-subj", "/CN=mirai test root", "-addext", "basicConstraints=critical,CA:TRUE",
       "-addext", "keyUsage=critical,keyCertSign,cRLSign")
  writeLines(c("basicConstraints=critical,CA:TRUE", "keyUsage=critical,keyCertSign,cRLSign"), f("ca.ext"))
  ossl("req", ec, "-keyout", f("int.key"), "-out", f("int.csr"), "-subj", "/CN=mirai test intermediate")
  ossl("x509", "-req", "-in", f("int.csr"), "-CA", f("root.pem"), "-CAkey", f("root.key"),
       "-CAcreateserial", "-out", f("int.pem"), "-days", "2", "-extfile", f("ca.ext"))
  writeLines(c("subjectAltName=IP:127.0.0.1", "basicConstraints=CA:FALSE"), f("srv.ext"))
  ossl("req", ec, "-keyout", f("srv.key"), "-out", f("srv.csr"), "-subj", "/CN=127.0.0.1")
  ossl("x509", "-req", "-in", f("srv.csr"), "-CA", f("int.pem"), "-CAkey", f("int.key"),
       "-CAcreateserial", "-out", f("srv.pem"), "-days", "2", "-extfile", f("srv.ext"))
  ossl("pkcs8", "-topk8", "-v2", "aes-256-cbc", "-in", f("srv.key"), "-out", f("srv.enc.key"),
       "-passout", "pass:mirai-pw")
  # Server file: certificate, chain, then key.
  writeLines(c(readLines(f("srv.pem")), readLines(f("int.pem")), readLines(f("srv.key"))), f("server.pem"))
  f
}

pem_of <- function(...) paste(unlist(lapply(c(...), readLines)), collapse = "\n")

# The command users run for a self-signed certificate (it marks itself a
# CA, and names its host in the CN only); `key` the -newkey argument(s).
self_signed <- function(dir, name, cn, key = c("-newkey", "rsa:2048", "-nodes"), days = "1") {
  f <- function(x) file.path(dir, x)
  ossl("req", "-x509", key, "-keyout", f(paste0(name, ".key")), "-out", f(paste0(name, ".pem")),
       "-subj", paste0("/CN=", cn), "-days", days)
  c(cert = f(paste0(name, ".pem")), key = f(paste0(name, ".key")))
}

# A certificate signed by the CA `ca` (c(cert, key)), with `ext` lines
# (e.g. a subjectAltName) as its extensions.
signed_by <- function(dir, name, ca, subj, ext = "basicConstraints=CA:FALSE") {
  f <- function(x) file.path(dir, paste0(name, x))
  ossl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f(".key"), "-out", f(".csr"), "-subj", subj)
  writeLines(ext, f(".ext"))
  ossl("x509", "-req", "-in", f(".csr"), "-CA", ca[["cert"]], "-CAkey", ca[["key"]], "-CAcreateserial",
       "-out", f(".pem"), "-days", "1", "-extfile", f(".ext"))
  c(cert = f(".pem"), key = f(".key"))
}

# Child processes of this R session (the daemons it launched), but for the
# `ps` that lists them.
child_pids <- function() {
  r <- processx::run("ps", c("-o", "pid=,comm=", "--ppid", Sys.getpid()), error_on_status = FALSE)
  rows <- strsplit(trimws(strsplit(r$stdout, "\n", fixed = TRUE)[[1L]]), "\\s+")
  as.integer(vapply(Filter(function(x) length(x) == 2L && x[[2L]] != "ps", rows), `[[`, "", 1L))
}

# Sets daemons at `url` with `...` (tls etc.), launches one local daemon and
# runs a task on it; the daemon's process id.
one_daemon <- function(url, ...) {
  daemons(url = url, ...)
  launch_local(1)
  expect_true(wait_until(function() status()$connections == 1L, 20))
  pid <- mirai(Sys.getpid())[]
  expect_false(pid == Sys.getpid())
  expect_identical(status()$refused, 0L)
  daemons(0)
  pid
}

# What a daemon dialling the current profile's URL with `tlscert` says.
dial_with <- function(tlscert, url = status()$daemons) {
  run_child(sprintf("mirai::daemon(%s, tlscert = %s)", deparse(url), paste(deparse(tlscert), collapse = "")),
            env = c(MIRAI_SECRET = mirai:::profile_of(NULL)$secret))
}

test_that("daemons over tls+tcp:// with a generated certificate, with and without dispatcher", {
  on.exit(daemons(0))
  for (disp in c(TRUE, FALSE)) {
    daemons(url = "tls+tcp://127.0.0.1:0", dispatcher = disp)
    url <- status()$daemons
    expect_match(url, "^tls\\+tcp://127\\.0\\.0\\.1:[0-9]+$")
    cert <- nextget("tls")
    expect_length(cert, 2L)
    expect_match(cert[[1L]], "^-----BEGIN CERTIFICATE-----\n")
    expect_identical(cert[[2L]], "")
    # The certificate is fresh per daemons() call and names the URL's host.
    if (disp) first <- cert[[1L]] else expect_false(identical(first, cert[[1L]]))
    if (nzchar(Sys.which("openssl"))) {
      f <- tempfile(fileext = ".pem")
      writeLines(cert[[1L]], f)
      txt <- ossl("x509", "-in", f, "-noout", "-text")
      expect_match(txt, "IP Address:127.0.0.1", fixed = TRUE)
      expect_match(txt, "ecdsa-with-SHA256|prime256v1")
      unlink(f)
    }
    launch_local(2)
    expect_true(wait_until(function() status()$connections == 2L, 20))
    pids <- unlist(lapply(1:4, function(i) mirai(Sys.getpid())[]))
    expect_true(all(pids != Sys.getpid()))
    expect_identical(unlist(mirai_map(1:6, function(i) i * 2L)[]), (1:6) * 2L)
    ev <- everywhere(Sys.getpid())[]
    expect_length(unique(unlist(ev)), 2L)
    expect_identical(status()$refused, 0L)
    daemons(0)
  }
})

test_that("a 200 MB payload makes the round trip over TLS", {
  on.exit(daemons(0))
  daemons(url = "tls+tcp://127.0.0.1:0")
  launch_local(1)
  expect_true(wait_until(function() status()$connections == 1L, 20))
  x <- rep_len(as.raw(0:250), 2e8)
  m <- mirai({
    y[1:3] <- as.raw(c(7, 8, 9))
    y
  }, y = x)
  res <- m[]
  expect_identical(length(res), length(x))
  x[1:3] <- as.raw(c(7, 8, 9))
  expect_identical(res, x)
  rm(res, x)
  invisible(gc())
})

test_that("a daemon holding the wrong CA cannot connect and receives nothing", {
  on.exit({ daemons(0); daemons(0, .compute = "other") })
  daemons(url = "tls+tcp://127.0.0.1:0")
  url <- status()$daemons
  secret <- mirai:::profile_of(NULL)$secret
  m <- mirai("must not run")
  # Another host's (valid, but different) self-signed certificate.
  daemons(url = "tls+tcp://127.0.0.1:0", .compute = "other")
  wrong <- nextget("tls", .compute = "other")
  f <- tempfile(fileext = ".pem")
  on.exit(unlink(f), add = TRUE)
  writeLines(wrong[[1L]], f)
  r <- run_child(sprintf("mirai::daemon(%s, tlscert = %s)", deparse(url), deparse(f)),
                 env = c(MIRAI_SECRET = secret))
  expect_false(r$status == 0L)
  expect_match(r$out, "TLS handshake failed")
  expect_match(r$out, "certificate", ignore.case = TRUE)
  expect_lt(r$secs, 30)
  expect_identical(status()$connections, 0L)
  expect_true(wait_until(function() status()$refused >= 1L, 5))
  expect_true(unresolved(m))
  # The right certificate works at once for the same host.
  launch_local(1)
  expect_identical(m[], "must not run")
})

test_that("plain TCP against a TLS host, and TLS against a plain host, fail clearly and fast", {
  on.exit(daemons(0))
  daemons(url = "tls+tcp://127.0.0.1:0")
  url <- status()$daemons
  secret <- mirai:::profile_of(NULL)$secret
  plain <- sub("^tls\\+tcp://", "tcp://", url)
  r <- run_child(sprintf("mirai::daemon(%s)", deparse(plain)), env = c(MIRAI_SECRET = secret))
  expect_false(r$status == 0L)
  expect_match(r$out, "tls+tcp://", fixed = TRUE)
  expect_lt(r$secs, 20)
  expect_true(wait_until(function() status()$refused >= 1L, 5))
  expect_identical(status()$connections, 0L)
  cert <- nextget("tls")
  daemons(0)

  daemons(url = "tcp://127.0.0.1:0")
  url <- status()$daemons
  secret <- mirai:::profile_of(NULL)$secret
  tls_url <- sub("^tcp://", "tls+tcp://", url)
  r <- run_child(sprintf("mirai::daemon(%s, tlscert = %s)", deparse(tls_url), paste(deparse(cert), collapse = "")),
                 env = c(MIRAI_SECRET = secret))
  expect_false(r$status == 0L)
  expect_match(r$out, "TLS handshake failed")
  expect_lt(r$secs, 20)
  expect_identical(status()$connections, 0L)
  # A TLS URL needs a certificate on the daemon side.
  expect_error(daemon(tls_url), "`tlscert` is required")
})

test_that("user certificates: a chain through an intermediate CA, and an encrypted key with pass", {
  skip_if_no_openssl()
  dir <- tempfile("pki")
  dir.create(dir)
  on.exit({ daemons(0); unlink(dir, recursive = TRUE) })
  f <- make_pki(dir)
  # File form (certificate, chain, key); daemons trust only the root.
  daemons(url = "tls+tcp://127.0.0.1:0", tls = f("server.pem"), tlscert = f("root.pem"))
  expect_identical(nextget("tls"), f("root.pem"))
  launch_local(1)
  expect_true(wait_until(function() status()$connections == 1L, 20))
  expect_identical(mirai(21 * 2)[], 42)
  daemons(0)

  # Without the intermediate in the chain, a daemon trusting only the root
  # cannot verify the host.
  daemons(url = "tls+tcp://127.0.0.1:0", tls = c(paste(readLines(f("srv.pem")), collapse = "\n"),
                                                 paste(readLines(f("srv.key")), collapse = "\n")))
  r <- run_child(sprintf("mirai::daemon(%s, tlscert = %s)", deparse(status()$daemons), deparse(f("root.pem"))),
                 env = c(MIRAI_SECRET = mirai:::profile_of(NULL)$secret))
  expect_false(r$status == 0L)
  expect_match(r$out, "certificate", ignore.case = TRUE)
  daemons(0)

  # c(cert chain, encrypted key) with `pass`.
  chain <- paste(c(readLines(f("srv.pem")), readLines(f("int.pem"))), collapse = "\n")
  key <- paste(readLines(f("srv.enc.key")), collapse = "\n")
  expect_match(key, "ENCRYPTED PRIVATE KEY", fixed = TRUE)
  expect_error(daemons(url = "tls+tcp://127.0.0.1:0", tls = c(chain, key)), "encrypted.*pass")
  expect_error(daemons(url = "tls+tcp://127.0.0.1:0", tls = c(chain, key), pass = function() "nope"),
               "`pass`: wrong password")
  daemons(url = "tls+tcp://127.0.0.1:0", tls = c(chain, key), pass = function() "mirai-pw",
          tlscert = c(paste(readLines(f("root.pem")), collapse = "\n"), ""))
  launch_local(1)
  expect_true(wait_until(function() status()$connections == 1L, 20))
  expect_identical(mirai(Sys.getpid() != 0L)[], TRUE)
  daemons(0)

  # Bad arguments.
  expect_error(daemons(url = "tcp://127.0.0.1:0", tls = f("server.pem")), "need a tls\\+tcp://")
  expect_error(daemons(url = "tls+tcp://127.0.0.1:0", tls = 1), "`tls` must be")
  expect_error(daemons(url = "tls+tcp://127.0.0.1:0", tls = file.path(dir, "none.pem")), "no such file")
  expect_error(daemons(url = "tls+tcp://127.0.0.1:0", tls = f("srv.pem")), "no private key")
  expect_error(daemons(url = "tls+tcp://127.0.0.1:0", tls = f("server.pem"), pass = 1), "`pass` must be")
  expect_error(daemons(url = "tls+tcp://127.0.0.1:0", tls = f("server.pem"), pass = function() NULL),
               "`pass` must return")
  expect_error(daemon("tls+tcp://127.0.0.1:1", tlscert = 5), "`tlscert` must be")
  expect_false(daemons_set())
})

test_that("a self-signed certificate made by `openssl req -x509` (a CA, CN only) serves daemons", {
  skip_if_no_openssl()
  dir <- tempfile("selfsigned")
  dir.create(dir)
  on.exit({ daemons(0); unlink(dir, recursive = TRUE) })
  # Exactly the command in the issue.
  ossl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "key.pem", "-out", "cert.pem",
       "-subj", "/CN=127.0.0.1", "-days", "1", wd = dir)
  cert <- file.path(dir, "cert.pem")
  key <- file.path(dir, "key.pem")
  txt <- ossl("x509", "-in", cert, "-noout", "-text")
  expect_match(txt, "CA:TRUE", fixed = TRUE)
  expect_no_match(txt, "Subject Alternative Name", fixed = TRUE)
  # c(cert, key) as file paths, as PEM text, and both in one file.
  one_daemon("tls+tcp://127.0.0.1:0", tls = c(cert, key))
  one_daemon("tls+tcp://127.0.0.1:0", tls = c(pem_of(cert), pem_of(key)), dispatcher = FALSE)
  both <- file.path(dir, "both.pem")
  writeLines(c(readLines(cert), readLines(key)), both)
  one_daemon("tls+tcp://127.0.0.1:0", tls = both)
  # Launched daemons were given the host's certificate itself.
  daemons(url = "tls+tcp://127.0.0.1:0", tls = c(cert, key))
  expect_identical(gsub("\\s", "", nextget("tls")[[1L]]), gsub("\\s", "", pem_of(cert)))
  daemons(0)
  # And over wss:// (WebSocket over TLS).
  one_daemon("wss://127.0.0.1:0/mirai", tls = c(cert, key))
})

test_that("EC (P-256) keys, and a certificate for a DNS name", {
  skip_if_no_openssl()
  dir <- tempfile("ec")
  dir.create(dir)
  on.exit({ daemons(0); unlink(dir, recursive = TRUE) })
  ec <- c("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
  ip <- self_signed(dir, "ip", "127.0.0.1", key = ec)
  expect_match(ossl("x509", "-in", ip[["cert"]], "-noout", "-text"), "prime256v1", fixed = TRUE)
  one_daemon("tls+tcp://127.0.0.1:0", tls = ip)
  dns <- self_signed(dir, "dns", "localhost", key = ec)
  one_daemon("tls+tcp://localhost:0", tls = dns)
  # The name counts for a pinned certificate too: this one is not for 127.0.0.1.
  daemons(url = "tls+tcp://127.0.0.1:0", tls = dns)
  r <- dial_with(nextget("tls"))
  expect_false(r$status == 0L)
  expect_match(r$out, "not valid for '127.0.0.1': it is only for CN=localhost (and has no subjectAltName)",
               fixed = TRUE)
})

test_that("a leaf signed by the user's own CA, daemons given the CA (or nothing: the chain)", {
  skip_if_no_openssl()
  dir <- tempfile("ownca")
  dir.create(dir)
  on.exit({ daemons(0); unlink(dir, recursive = TRUE) })
  ca <- self_signed(dir, "ca", "mirai test CA")
  leaf <- signed_by(dir, "leaf", ca, "/CN=mirai host", c("subjectAltName=IP:127.0.0.1", "basicConstraints=CA:FALSE"))
  one_daemon("tls+tcp://127.0.0.1:0", tls = leaf, tlscert = ca[["cert"]])
  one_daemon("tls+tcp://127.0.0.1:0", tls = leaf, tlscert = c(pem_of(ca[["cert"]]), ""))
  # Without tlscert, daemons are given the host's certificate.
  one_daemon("tls+tcp://127.0.0.1:0", tls = leaf)
})

test_that("a CA-signed leaf for another name is refused by the daemon, which says why", {
  skip_if_no_openssl()
  dir <- tempfile("wrongname")
  dir.create(dir)
  on.exit({ daemons(0); unlink(dir, recursive = TRUE) })
  ca <- self_signed(dir, "ca", "mirai test CA")
  # A subjectAltName for another host: its CN (127.0.0.1) does not count.
  san <- signed_by(dir, "san", ca, "/CN=127.0.0.1", "subjectAltName=DNS:other.example")
  daemons(url = "tls+tcp://127.0.0.1:0", tls = san, tlscert = ca[["cert"]])
  m <- mirai("never")
  r <- dial_with(ca[["cert"]])
  expect_false(r$status == 0L)
  expect_match(r$out, "TLS handshake failed")
  expect_match(r$out, "not valid for name \"127.0.0.1\"; certificate is only valid for DnsName(\"other.example\")",
               fixed = TRUE)
  expect_lt(r$secs, 30)
  expect_identical(status()$connections, 0L)
  expect_true(wait_until(function() status()$refused >= 1L, 5))
  expect_true(unresolved(m))
  daemons(0)
  # No subjectAltName, and a CN for another host.
  cn <- signed_by(dir, "cn", ca, "/CN=other.example")
  daemons(url = "tls+tcp://127.0.0.1:0", tls = cn, tlscert = ca[["cert"]])
  r <- dial_with(ca[["cert"]])
  expect_false(r$status == 0L)
  expect_match(r$out, "not valid for '127.0.0.1': it is only for CN=other.example", fixed = TRUE)
  daemons(0)
  # A daemon given another CA.
  other <- self_signed(dir, "other", "another CA")
  daemons(url = "tls+tcp://127.0.0.1:0", tls = san)
  r <- dial_with(other[["cert"]])
  expect_false(r$status == 0L)
  expect_match(r$out, "not one given in `tlscert`", fixed = TRUE)
})

test_that("encrypted keys (both of OpenSSL's formats), `pass` as a string or a function", {
  skip_if_no_openssl()
  dir <- tempfile("enckey")
  dir.create(dir)
  on.exit({ daemons(0); unlink(dir, recursive = TRUE) })
  f <- function(x) file.path(dir, x)
  # `openssl req` without -nodes: PKCS#8, AES-256-CBC.
  ossl("req", "-x509", "-newkey", "rsa:2048", "-keyout", f("rsa.key"), "-passout", "pass:top secret",
       "-out", f("rsa.pem"), "-subj", "/CN=127.0.0.1", "-days", "1")
  expect_match(pem_of(f("rsa.key")), "BEGIN ENCRYPTED PRIVATE KEY", fixed = TRUE)
  one_daemon("tls+tcp://127.0.0.1:0", tls = c(f("rsa.pem"), f("rsa.key")), pass = "top secret")
  one_daemon("tls+tcp://127.0.0.1:0", tls = c(f("rsa.pem"), f("rsa.key")), pass = function() "top secret")
  # `openssl ec -aes256`: the legacy format (Proc-Type: 4,ENCRYPTED).
  ec <- self_signed(dir, "ec", "127.0.0.1", key = c("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                                                     "-nodes"))
  ossl("ec", "-in", ec[["key"]], "-aes256", "-passout", "pass:pw", "-out", f("ec.enc.key"))
  expect_match(pem_of(f("ec.enc.key")), "Proc-Type: 4,ENCRYPTED", fixed = TRUE)
  one_daemon("tls+tcp://127.0.0.1:0", tls = c(ec[["cert"]], f("ec.enc.key")), pass = "pw")
  expect_error(daemons(url = "tls+tcp://127.0.0.1:0", tls = c(ec[["cert"]], f("ec.enc.key")), pass = "nope"),
               "`pass`: wrong password for the encrypted `tls` key", fixed = TRUE)
  expect_error(daemons(url = "tls+tcp://127.0.0.1:0", tls = c(ec[["cert"]], f("ec.enc.key"))),
               "`tls`: the private key is encrypted: give its password with `pass`", fixed = TRUE)
})

test_that("bad credentials are errors naming `tls` or `pass`, before anything is launched", {
  skip_if_no_openssl()
  dir <- tempfile("badcreds")
  dir.create(dir)
  on.exit({ daemons(0); unlink(dir, recursive = TRUE) })
  f <- function(x) file.path(dir, x)
  a <- self_signed(dir, "a", "127.0.0.1")
  b <- self_signed(dir, "b", "127.0.0.1", key = c("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                                                   "-nodes"))
  ossl("pkcs8", "-topk8", "-v2", "aes-256-cbc", "-in", a[["key"]], "-out", f("a.enc.key"), "-passout", "pass:pw")
  # An expired certificate: `openssl ca` sets the dates.
  writeLines(c("[ca]", "default_ca = d", "[d]", "database = index.txt", "new_certs_dir = .",
               "serial = serial", "default_md = sha256", "policy = p", "[p]", "commonName = supplied"),
             f("ca.cnf"))
  file.create(f("index.txt"))
  writeLines("01", f("serial"))
  ossl("req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", f("old.key"), "-out", f("old.csr"),
       "-subj", "/CN=127.0.0.1")
  ossl("ca", "-batch", "-config", "ca.cnf", "-selfsign", "-keyfile", "old.key", "-in", "old.csr",
       "-startdate", "20200101000000Z", "-enddate", "20200102000000Z", "-out", "old.pem", "-notext", wd = dir)
  garbled <- sub("\n[A-Za-z0-9+/]{20}", "\n!!not base64!!", pem_of(a[["cert"]]))
  before <- child_pids()
  url <- "tls+tcp://127.0.0.1:0"
  cases <- list(
    list(tls = c(a[["cert"]], f("a.enc.key")), pass = "wrong", msg = "`pass`: wrong password"),
    list(tls = c(a[["cert"]], f("a.enc.key")), pass = function() "wrong", msg = "`pass`: wrong password"),
    list(tls = c(a[["cert"]], b[["key"]]), msg = "`tls`: the private key does not belong to the certificate"),
    list(tls = c(garbled, pem_of(a[["key"]])), msg = "`tls`: cannot read the PEM certificates"),
    list(tls = c("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----", pem_of(a[["key"]])),
         msg = "`tls`: the certificate is not a valid X.509 certificate"),
    list(tls = c(f("nothere.pem"), a[["key"]]), msg = "`tls`: no such file"),
    list(tls = c(dir, a[["key"]]), msg = "is a directory, not a PEM file"),
    list(tls = c(f("old.pem"), f("old.key")), msg = "`tls`: the certificate expired on 2020-01-02T00:00:00Z"),
    list(tls = c(pem_of(a[["cert"]]), ""), msg = "`tls`: no private key found")
  )
  for (case in cases) {
    expect_error(daemons(1, url = url, tls = case$tls, pass = case$pass), case$msg, fixed = TRUE)
    expect_false(daemons_set())
  }
  expect_identical(child_pids(), before)
  # Daemons already set stay as they were when new credentials are refused.
  daemons(url = "tcp://127.0.0.1:0")
  set <- status()$daemons
  expect_error(daemons(1, url = url, tls = c(a[["cert"]], b[["key"]])), "does not belong", fixed = TRUE)
  expect_true(daemons_set())
  expect_identical(status()$daemons, set)
  daemons(0)
  # The good pair works.
  one_daemon(url, tls = c(a[["cert"]], f("a.enc.key")), pass = "pw")
})

test_that("openssl s_client completes a TLS handshake with our host and sees our certificate", {
  skip_if_no_openssl()
  on.exit(daemons(0))
  daemons(url = "tls+tcp://127.0.0.1:0")
  url <- status()$daemons
  ca <- tempfile(fileext = ".pem")
  on.exit(unlink(ca), add = TRUE)
  writeLines(nextget("tls")[[1L]], ca)
  # stdin is kept open until the summary is out: with stdin at EOF from the
  # start, s_client sometimes quits before printing it. Its output goes to a
  # file: it also prints what our host sends once the handshake is done (the
  # SP header and the Challenge, binary with NULs).
  log <- tempfile()
  on.exit(unlink(log), add = TRUE)
  p <- processx::process$new("openssl", c("s_client", "-connect", sprintf("127.0.0.1:%d", port_of(url)),
                                          "-CAfile", ca, "-verify_return_error", "-verify_ip", "127.0.0.1",
                                          "-showcerts"),
                             stdin = "|", stdout = log, stderr = "2>&1")
  on.exit(p$kill(), add = TRUE)
  out <- ""
  wait_until(function() {
    b <- readBin(log, "raw", 1e6)
    b[b == as.raw(0) | b > as.raw(127)] <- charToRaw("?")
    out <<- rawToChar(b)
    grepl("Verify return code", out, fixed = TRUE)
  }, 20)
  r <- list(stdout = out)
  expect_match(r$stdout, "Verify return code: 0 (ok)", fixed = TRUE)
  expect_match(r$stdout, "TLSv1.3", fixed = TRUE)
  # The certificate it was shown is ours, byte for byte.
  got <- regmatches(r$stdout, regexpr("-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----", r$stdout))
  norm <- function(x) gsub("\\s", "", x)
  expect_identical(norm(got), norm(nextget("tls")[[1L]]))
  # It never became a daemon.
  expect_identical(status()$connections, 0L)
})

test_that("a stalled TLS handshake is dropped and counted; garbage never crashes the host", {
  on.exit(daemons(0))
  daemons(url = "tls+tcp://127.0.0.1:0")
  url <- status()$daemons
  # The start of a ClientHello, then silence.
  s <- raw_peer(url)
  writeBin(as.raw(c(0x16, 0x03, 0x01, 0x01, 0x00, 0x01, 0x00, 0x00)), s)
  flush(s)
  # A daemon connecting meanwhile is not held up by it.
  launch_local(1)
  expect_true(wait_until(function() status()$connections == 1L, 20))
  expect_identical(status()$refused, 0L)
  # Dropped at the 5 s deadline: the host closes the socket (EOF) and counts it.
  expect_true(wait_until(function() status()$refused == 1L, 30))
  expect_length(readBin(s, "raw", 100), 0L)
  close(s)
  # Garbage, plain SP and an HTTP request: each refused at once.
  set.seed(9)
  for (junk in list(as.raw(sample.int(256, 5000, TRUE) - 1L),
                    as.raw(c(0, 0x53, 0x50, 0, 0, 0x11, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9)),
                    charToRaw("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))) {
    before <- status()$refused
    s <- raw_peer(url)
    writeBin(junk, s)
    flush(s)
    expect_true(wait_until(function() status()$refused == before + 1L, 5))
    close(s)
  }
  expect_identical(mirai("still fine")[], "still fine")
  expect_identical(status()$connections, 1L)
})

test_that("a daemon in its own network namespace reaches the host over TLS via a veth link", {
  if (Sys.info()[["sysname"]] != "Linux") skip("network namespaces need Linux")
  if (!identical(unname(Sys.info()[["effective_user"]]), "root"))
    skip("network namespaces need root")
  if (!nzchar(Sys.which("ip"))) skip("`ip` (iproute2) is not on the PATH")
  sfx <- sprintf("%04x%04x", Sys.getpid() %% 65536L, sample.int(65535L, 1L))
  A <- paste0("mirai-tls-a-", sfx)
  B <- paste0("mirai-tls-b-", sfx)
  ipA <- "10.254.253.1"
  ipB <- "10.254.253.2"
  made <- character()
  procs <- list()
  dir <- tempfile("tlsns")
  dir.create(dir)
  on.exit({
    for (p in procs) try(p$kill(), silent = TRUE)
    for (ns in rev(made)) processx::run("ip", c("netns", "del", ns), error_on_status = FALSE)
    unlink(dir, recursive = TRUE)
  })
  ip <- function(...) {
    r <- processx::run("ip", c(...), error_on_status = FALSE, stderr_to_stdout = TRUE)
    if (r$status != 0L) skip(sprintf("cannot set up the test network: `ip %s`: %s", paste(c(...), collapse = " "), r$stdout))
  }
  ip("netns", "add", A)
  made <- c(made, A)
  ip("netns", "add", B)
  made <- c(made, B)
  ip("-n", A, "link", "add", paste0("mta", sfx), "type", "veth", "peer", "name", paste0("mtb", sfx), "netns", B)
  ip("-n", A, "addr", "add", paste0(ipA, "/30"), "dev", paste0("mta", sfx))
  ip("-n", B, "addr", "add", paste0(ipB, "/30"), "dev", paste0("mtb", sfx))
  for (ns in c(A, B)) ip("-n", ns, "link", "set", "lo", "up")
  ip("-n", A, "link", "set", paste0("mta", sfx), "up")
  ip("-n", B, "link", "set", paste0("mtb", sfx), "up")

  # The host, in A, listens on its veth address only; it writes the launch
  # command (with the certificate) and the secret, then waits for a daemon
  # and reports what that daemon ran.
  cmdfile <- file.path(dir, "cmd")
  host <- file.path(dir, "host.R")
  writeLines(c(
    "library(mirai)",
    sprintf("daemons(url = 'tls+tcp://%s:0')", ipA),
    "prof <- mirai:::profile_of(NULL)",
    "cmd <- mirai:::launch_command(prof$url, mirai:::launch_args(prof, prof$dots))",
    sprintf("writeLines(c(cmd, prof$secret), '%s.tmp'); file.rename('%s.tmp', '%s')", cmdfile, cmdfile, cmdfile),
    "t0 <- Sys.time()",
    "while (status()$connections < 1L && Sys.time() - t0 < 40) Sys.sleep(0.1)",
    "r <- mirai(list(ns = Sys.readlink('/proc/self/ns/net'), addrs = system('ip -brief addr', intern = TRUE)))[]",
    "cat('HOSTNS', Sys.readlink('/proc/self/ns/net'), '\\n')",
    "cat('DAEMONNS', r$ns, '\\n')",
    "cat('DAEMONADDR', r$addrs, sep = '|')",
    "cat('\\nURL', prof$url, '\\n')",
    "cat('REFUSED', status()$refused, '\\n')",
    "daemons(0)",
    "cat('DONE\\n')"
  ), host)
  env <- c("current", R_LIBS = libs)
  hp <- processx::process$new("ip", c("netns", "exec", A, rscript, host), stdout = "|", stderr = "2>&1", env = env)
  procs[[1]] <- hp
  expect_true(wait_until(function() file.exists(cmdfile), 30))
  cmd <- readLines(cmdfile)
  expect_match(cmd[[1L]], sprintf("mirai::daemon(\"tls+tcp://%s:", ipA), fixed = TRUE)
  expect_match(cmd[[1L]], "tlscert=c(\"-----BEGIN CERTIFICATE-----", fixed = TRUE)
  # The daemon, in B: the internal launch command, the secret in its environment.
  dp <- processx::process$new("ip", c("netns", "exec", B, rscript, "-e", cmd[[1L]]), stdout = "|",
                              stderr = "2>&1", env = c(env, MIRAI_SECRET = cmd[[2L]]))
  procs[[2]] <- dp
  out <- ""
  expect_true(wait_until(function() { out <<- paste0(out, hp$read_output()); grepl("DONE", out) }, 60))
  hostns <- sub(".*HOSTNS (\\S+).*", "\\1", out)
  dns <- sub(".*DAEMONNS (\\S+).*", "\\1", out)
  expect_match(hostns, "^net:\\[")
  expect_match(dns, "^net:\\[")
  expect_false(identical(hostns, dns))
  expect_match(out, ipB, fixed = TRUE)
  expect_match(out, "REFUSED 0", fixed = TRUE)
  expect_true(wait_until(function() !dp$is_alive(), 15))
})
