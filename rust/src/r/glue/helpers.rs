//! `.Call`s for small helpers: random hex, this machine's addresses, RNG
//! streams, and constants R takes from here at load.

use crate::r::layer::call::{advance_rng, RResult};
use crate::r::layer::ffi::SEXP;
use crate::r::layer::value::*;
use crate::daemon::client::ExitCode;
use crate::host::rng;

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

/// The daemon exit codes (`ExitCode`), as a named integer vector.
pub fn mirai_exit_codes() -> RResult {
    let vals: Vec<i32> = ExitCode::ALL.iter().map(|&c| c as i32).collect();
    let names: Vec<&str> = ExitCode::ALL.iter().map(|c| c.name()).collect();
    named_ints(&vals, &names)
}

