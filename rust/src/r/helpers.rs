//! `.Call`s for small helpers: random hex, this machine's addresses, RNG
//! streams, and constants R takes from here at load.

use super::call::{entry, try_r};
use super::ffi::{exp_rand, GetRNGstate, PutRNGstate, SEXP};
use super::value::*;
use crate::client::ExitCode;
use crate::rng;

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

/// The daemon exit codes (`ExitCode`), as a named integer vector.
#[no_mangle]
pub extern "C" fn mirai_exit_codes() -> SEXP {
    entry(|| {
        let vals: Vec<i32> = ExitCode::ALL.iter().map(|&c| c as i32).collect();
        let names: Vec<&str> = ExitCode::ALL.iter().map(|c| c.name()).collect();
        named_ints(&vals, &names)
    })
}

