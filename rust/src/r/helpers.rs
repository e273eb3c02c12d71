//! `.Call`s for small helpers: random hex, this machine's addresses, RNG
//! streams, URLs' parts, and the constants R takes from here at load.

use super::call::{entry, try_r};
use super::daemon::Received;
use super::ffi::{exp_rand, GetRNGstate, PutRNGstate, SEXP};
use super::value::*;
use crate::client::ExitCode;
use crate::rng;
use crate::url::{Address, SshTarget};

/// `n` random bytes from the system's random source, as hex.
#[no_mangle]
pub extern "C" fn mirai_random_hex(n: SEXP) -> SEXP {
    entry(|| {
        let n = f64_arg(n, "n")?;
        if !(0.0..=4096.0).contains(&n) {
            return Err("`n` must be a number of bytes from 0 to 4096".into());
        }
        let bytes = crate::auth::random_bytes(n as usize).map_err(|e| format!("cannot read random bytes: {e}"))?;
        string(&bytes.iter().map(|b| format!("{b:02x}")).collect::<String>())
    })
}

/// Named IPv4 addresses of this machine's interfaces, loopback excluded.
#[no_mangle]
pub extern "C" fn mirai_ip_addr() -> SEXP {
    entry(|| {
        let found = crate::url::interface_addresses();
        let ips: Vec<&str> = found.iter().map(|(_, ip)| ip.as_str()).collect();
        let names: Vec<&str> = found.iter().map(|(n, _)| n.as_str()).collect();
        named_strings(&ips, &names)
    })
}

/// `parallel::nextRNGStream()`.
#[no_mangle]
pub extern "C" fn mirai_next_stream(s: SEXP) -> SEXP {
    entry(|| ints(&rng::next_stream(&ints_arg::<7>(s, "stream")?)))
}

/// Moves this session's RNG on by one exponential draw, so that profiles
/// set up one after the other start from different streams.
#[no_mangle]
pub extern "C" fn mirai_rng_advance() -> SEXP {
    entry(|| {
        try_r(|| unsafe {
            GetRNGstate();
            exp_rand();
            PutRNGstate();
            nil()
        })?;
        Ok(nil())
    })
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
#[no_mangle]
pub extern "C" fn mirai_constants() -> SEXP {
    entry(|| {
        use crate::sched::{ERROR_TEXTS, ERROR_VALUES};
        let secs = |d: std::time::Duration| d.as_secs_f64();
        let limits: [(&str, f64); 8] = [
            ("hello_timeout_s", secs(crate::host::HELLO_TIMEOUT)),
            ("max_pending", crate::host::MAX_PENDING as f64),
            ("dead_peer_s", crate::transport::DEAD_PEER_MS as f64 / 1000.0),
            ("dial_timeout_s", secs(crate::client::DIAL_TIMEOUT)),
            ("pre_auth_bytes", crate::proto::PRE_AUTH_BYTES as f64),
            ("max_message_bytes", crate::frame::MAX_MESSAGE as f64),
            ("min_max_message_bytes", crate::frame::MIN_MAX_MESSAGE as f64),
            ("max_everywhere", super::profile::MAX_EVERYWHERE),
        ];
        let mut keep = Protect::new();
        let exit_codes = keep.keep(named_ints(
            &ExitCode::ALL.map(|c| c as i32),
            &ExitCode::ALL.map(|c| c.name()),
        )?);
        let error_codes = keep.keep(named_ints(&ERROR_VALUES.map(|(_, c)| c), &ERROR_VALUES.map(|(n, _)| n))?);
        let error_texts = keep.keep(strings(&ERROR_TEXTS)?);
        let recv_kinds = keep.keep(strings(&Received::ALL.map(|k| k.name()))?);
        let wildcard_hosts = keep.keep(strings(&crate::url::WILDCARD_HOSTS)?);
        let limits = keep.keep(named_reals(&limits.map(|(_, v)| v), &limits.map(|(n, _)| n))?);
        list(
            &[exit_codes, error_codes, error_texts, recv_kinds, wildcard_hosts, limits],
            &["exit_codes", "error_codes", "error_texts", "recv_kinds", "wildcard_hosts", "limits"],
        )
    })
}

/// The parts of `url`, as R reads them: for the URLs hosts listen at and
/// daemons dial, `list(scheme, host, port, path, tls)` (`host` the socket's
/// name or path for `abstract://` and `ipc://`, whose `port` is NULL;
/// `path` NULL but for WebSocket); for `ssh://` URLs, `list(scheme, user, host, port)`
/// (`user` NULL if none), asked for by `ssh` TRUE. An error, saying why,
/// for anything else.
#[no_mangle]
pub extern "C" fn mirai_url_parts(url: SEXP, ssh: SEXP) -> SEXP {
    entry(|| {
        let url = str_arg(url, "url")?;
        let mut keep = Protect::new();
        if bool_arg(ssh, "ssh")? {
            let t = SshTarget::parse(&url)?;
            let scheme = keep.keep(string("ssh")?);
            let user = match &t.user {
                Some(u) => keep.keep(string(u)?),
                None => nil(),
            };
            let host = keep.keep(string(&t.host)?);
            let port = keep.keep(int(t.port as i32)?);
            return list(&[scheme, user, host, port], &["scheme", "user", "host", "port"]);
        }
        let addr = Address::parse(&url)?;
        let scheme = keep.keep(string(url.split_once("://").map_or("", |(s, _)| s))?);
        let (host, port, path, tls) = match &addr {
            Address::Tcp { host, port, tls, ws } => {
                (keep.keep(string(host)?), keep.keep(int(*port as i32)?), ws.as_deref().map(string).transpose()?, *tls)
            }
            Address::Abstract(name) | Address::Ipc(name) => (keep.keep(string(name)?), nil(), None, false),
        };
        let path = match path {
            Some(p) => keep.keep(p),
            None => nil(),
        };
        let tls = keep.keep(lgl(tls)?);
        list(&[scheme, host, port, path, tls], &["scheme", "host", "port", "path", "tls"])
    })
}
