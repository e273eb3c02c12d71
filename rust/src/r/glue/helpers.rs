//! `.Call`s for small helpers: random hex, this machine's addresses, RNG
//! streams, URLs' parts, and the constants R takes from here at load.

use crate::r::layer::call::{advance_rng, RResult};
use crate::r::layer::ffi::SEXP;
use crate::r::layer::value::*;
use crate::daemon::client::ExitCode;
use crate::host::rng;
use super::daemon::Received;
use crate::wire::url::{Address, SshTarget};

/// `n` random bytes from the system's random source, as hex.
pub fn mirai_random_hex(n: SEXP) -> RResult {
    let n = f64_arg(n, "n")?;
    if !(0.0..=4096.0).contains(&n) {
        return Err("`n` must be a number of bytes from 0 to 4096".into());
    }
    let bytes = crate::sys::random::random_bytes(n as usize).map_err(|e| format!("cannot read random bytes: {e}"))?;
    string(&bytes.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

/// Named IPv4 addresses of this machine's interfaces, loopback excluded.
pub fn mirai_ip_addr() -> RResult {
    let found = crate::sys::net::interface_addresses();
    let ips: Vec<&str> = found.iter().map(|(_, ip)| ip.as_str()).collect();
    let names: Vec<&str> = found.iter().map(|(n, _)| n.as_str()).collect();
    named_strings(&ips, &names)
}

/// `parallel::nextRNGStream()`.
pub fn mirai_next_stream(s: SEXP) -> RResult {
    ints(&rng::next_stream(&ints_arg::<7>(s, "stream")?))
}

/// Moves this session's RNG on by one exponential draw, so that profiles
/// set up one after the other start from different streams.
pub fn mirai_rng_advance() -> RResult {
    advance_rng()?;
    Ok(Owned::nil())
}

/// What R takes from here once, at load (`.onLoad` in
/// R/mirai-package.R), so that it restates none of it: a list of
/// - `exit_codes`: the daemon's exit codes (`ExitCode`), by name;
/// - `error_codes`: the error values tasks resolve to, by name, and
///   `error_texts`, what each code means (`sched::ERROR_VALUES`,
///   `sched::ERROR_TEXTS`);
/// - `recv_kinds`: the kinds of what the daemon's loop receives
///   (`daemon::Received`);
/// - `wildcard_hosts`: the hosts that listen on every interface
///   (`url::WILDCARD_HOSTS`);
/// - `limits`: the timeouts and limits R checks arguments against or its
///   documentation quotes, each in the unit its name ends with.
pub fn mirai_constants() -> RResult {
    use crate::host::sched::{ERROR_TEXTS, ERROR_VALUES};
    let secs = |d: std::time::Duration| d.as_secs_f64();
    let limits: [(&str, f64); 18] = [
        ("hello_timeout_s", secs(crate::host::HELLO_TIMEOUT)),
        ("max_pending", crate::host::MAX_PENDING as f64),
        ("dead_peer_s", crate::wire::transport::DEAD_PEER_MS as f64 / 1000.0),
        ("dial_timeout_s", secs(crate::daemon::client::DIAL_TIMEOUT)),
        ("pre_auth_bytes", crate::wire::proto::PRE_AUTH_BYTES as f64),
        ("max_message_bytes", crate::wire::frame::MAX_MESSAGE as f64),
        ("min_max_message_bytes", crate::wire::frame::MIN_MAX_MESSAGE as f64),
        ("max_everywhere", super::profile::MAX_EVERYWHERE),
        ("wait_note_s", secs(super::profile::WAIT_NOTE)),
        ("timeline_tasks", crate::host::monitor::TIMELINE_CAP as f64),
        ("replay_calls", crate::host::REPLAY_CALLS as f64),
        ("replay_bytes", crate::host::REPLAY_BYTES as f64),
        ("relay_max_items", crate::host::relay::MAX_ITEMS as f64),
        ("relay_max_bytes", crate::host::relay::MAX_BYTES as f64),
        ("relay_limit_bytes", crate::wire::proto::RELAY_LIMIT as f64),
        ("relay_rate", crate::daemon::client::RELAY_RATE),
        ("relay_burst", crate::daemon::client::RELAY_BURST),
        // For the tests that play a host or a daemon by hand.
        ("protocol_version", crate::wire::proto::PROTOCOL_VERSION as f64),
    ];
    let exit_codes = named_ints(&ExitCode::ALL.map(|c| c as i32), &ExitCode::ALL.map(|c| c.name()))?;
    let error_codes = named_ints(&ERROR_VALUES.map(|(_, c)| c), &ERROR_VALUES.map(|(n, _)| n))?;
    let error_texts = strings(&ERROR_TEXTS)?;
    let recv_kinds = strings(&Received::ALL.map(|k| k.name()))?;
    let wildcard_hosts = strings(&crate::wire::url::WILDCARD_HOSTS)?;
    let limits = named_reals(&limits.map(|(_, v)| v), &limits.map(|(n, _)| n))?;
    list(
        &[exit_codes.sexp(), error_codes.sexp(), error_texts.sexp(), recv_kinds.sexp(), wildcard_hosts.sexp(), limits.sexp()],
        &["exit_codes", "error_codes", "error_texts", "recv_kinds", "wildcard_hosts", "limits"],
    )
}

/// The parts of `url`, as R reads them: for the URLs hosts listen at and
/// daemons dial, `list(scheme, host, port, path, tls)` (`host` the socket's
/// name or path for `abstract://` and `ipc://`, whose `port` is NULL;
/// `path` NULL but for WebSocket); for `ssh://` URLs, `list(scheme, user,
/// host, port)` (`user` NULL if none), asked for by `ssh` TRUE. An error,
/// saying why, for anything else.
pub fn mirai_url_parts(url: SEXP, ssh: SEXP) -> RResult {
    let url = str_arg(url, "url")?;
    let opt = |s: Option<&str>| s.map_or(Ok(Owned::nil()), string);
    if bool_arg(ssh, "ssh")? {
        let t = SshTarget::parse(&url)?;
        let (scheme, user, host, port) = (string("ssh")?, opt(t.user.as_deref())?, string(&t.host)?, int(t.port as i32)?);
        return list(&[scheme.sexp(), user.sexp(), host.sexp(), port.sexp()], &["scheme", "user", "host", "port"]);
    }
    let addr = Address::parse(&url)?;
    let scheme = string(url.split_once("://").map_or("", |(s, _)| s))?;
    let (host, port, path, tls) = match &addr {
        Address::Tcp { host, port, tls, ws } => (string(host)?, int(*port as i32)?, opt(ws.as_deref())?, *tls),
        Address::Abstract(name) | Address::Ipc(name) => (string(name)?, Owned::nil(), Owned::nil(), false),
    };
    let tls = lgl(tls)?;
    list(&[scheme.sexp(), host.sexp(), port.sexp(), path.sexp(), tls.sexp()], &["scheme", "host", "port", "path", "tls"])
}

/// For tests: `list(plain, value)`, what the native reader of plain values
/// (`plain::read`) makes of the raw vector `x` (R's binary serialization):
/// plain FALSE and value NULL when it leaves `x` to R. Only in a build
/// with the `test-hooks` feature.
#[cfg(feature = "test-hooks")]
pub fn mirai_test_plain_read(x: SEXP) -> RResult {
    if type_of(x) != crate::r::layer::ffi::RAWSXP {
        return Err("`x` must be a raw vector".into());
    }
    let bytes = with_raw(x, |b| b.to_vec());
    let got = crate::r::layer::plain::read(&bytes)?;
    let plain = lgl(got.is_some())?;
    let value = got.unwrap_or_else(Owned::nil);
    list(&[plain.sexp(), value.sexp()], &[])
}

/// For tests: bytes the C heap has in use (`sys::heap::in_use`), NA
/// where that is not known. Only in a build with the `test-hooks` feature.
#[cfg(feature = "test-hooks")]
pub fn mirai_test_heap_bytes() -> RResult {
    real(crate::sys::heap::in_use().map_or_else(na_real, |b| b as f64))
}

/// For tests: the native writer of plain values (`plain::write`) on `x`:
/// the bytes it writes (R's binary serialization), or NULL when it leaves
/// `x` to R_Serialize. Only in a build with the `test-hooks` feature.
#[cfg(feature = "test-hooks")]
pub fn mirai_test_plain_write(x: SEXP) -> RResult {
    let mut buf = Vec::new();
    if !crate::r::layer::plain::write(x, &mut buf)? {
        return Ok(Owned::nil());
    }
    raw_vec(&buf)
}
