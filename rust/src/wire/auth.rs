//! Mutual challenge-response: host and daemon each prove that they hold the
//! profile's secret, so the secret itself never crosses the network and
//! neither side acts on anything from a peer that has not proved it.
//!
//! 1. On accept the host sends a fresh random nonce `Nh` (`Msg::Challenge`).
//! 2. The daemon answers with its own fresh nonce `Nd` and
//!    HMAC-SHA256(secret, DAEMON || Nh || Nd) (`Msg::Hello`).
//! 3. Only once that checks out does the host send
//!    HMAC-SHA256(secret, HOST || Nh || Nd) (`Msg::Welcome`), then the Init.
//!    The daemon reads nothing more until it has checked that proof.
//!
//! Each proof covers both nonces, so one recorded on any other connection
//! is useless (the other side's nonce differs), and its direction, so a
//! peer cannot reflect a daemon's proof back as the host's. The host proves
//! itself second, so it is never an oracle for a peer that has not proved
//! itself first. Checks are constant-time (ring's `hmac::verify`).
//!
//! What this does not give: secrecy or integrity of what follows. A peer
//! that sits between a daemon and its real host and relays both ways sees
//! and may alter the traffic; TLS (`tls+tcp://`, `wss://`) is the answer to
//! an untrusted network.

use crate::wire::proto::{MAC_LEN, NONCE_LEN};
use ring::hmac;

/// Who proves: binds a MAC to its direction (and the protocol generation),
/// so a MAC made for one use cannot stand in for another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prover {
    Daemon,
    Host,
}

impl Prover {
    fn context(self) -> &'static [u8] {
        match self {
            Prover::Daemon => b"mirai v4 daemon to host\0",
            Prover::Host => b"mirai v4 host to daemon\0",
        }
    }
}

pub type Nonce = [u8; NONCE_LEN];
pub type Mac = [u8; MAC_LEN];

/// A fresh nonce from the system's random source.
pub fn nonce() -> std::io::Result<Nonce> {
    let mut n = [0u8; NONCE_LEN];
    crate::sys::random::fill_random(&mut n)?;
    Ok(n)
}

fn message(who: Prover, host_nonce: &Nonce, daemon_nonce: &Nonce) -> Vec<u8> {
    let ctx = who.context();
    let mut m = Vec::with_capacity(ctx.len() + 2 * NONCE_LEN);
    m.extend_from_slice(ctx);
    m.extend_from_slice(host_nonce);
    m.extend_from_slice(daemon_nonce);
    m
}

/// `who`'s proof for the connection whose nonces are given.
pub fn prove(secret: &[u8], who: Prover, host_nonce: &Nonce, daemon_nonce: &Nonce) -> Mac {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let tag = hmac::sign(&key, &message(who, host_nonce, daemon_nonce));
    let mut out = [0u8; MAC_LEN];
    out.copy_from_slice(tag.as_ref());
    out
}

/// True if `mac` is `who`'s proof for these nonces under `secret`; constant
/// time in the MAC.
pub fn verify(secret: &[u8], who: Prover, host_nonce: &Nonce, daemon_nonce: &Nonce, mac: &Mac) -> bool {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    hmac::verify(&key, &message(who, host_nonce, daemon_nonce), mac).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proof_verifies_only_for_its_secret_nonces_and_direction() {
        let (h, d) = (nonce().unwrap(), nonce().unwrap());
        let h2 = nonce().unwrap();
        assert_ne!(h, h2);
        let mac = prove(b"s3cret", Prover::Daemon, &h, &d);
        assert!(verify(b"s3cret", Prover::Daemon, &h, &d, &mac));
        // Another connection (either nonce differs), another secret, or the
        // other direction: refused.
        assert!(!verify(b"s3cret", Prover::Daemon, &h2, &d, &mac));
        assert!(!verify(b"s3cret", Prover::Daemon, &h, &h2, &mac));
        assert!(!verify(b"s3cret", Prover::Daemon, &d, &h, &mac));
        assert!(!verify(b"s3creT", Prover::Daemon, &h, &d, &mac));
        assert!(!verify(b"", Prover::Daemon, &h, &d, &mac));
        assert!(!verify(b"s3cret", Prover::Host, &h, &d, &mac));
        let mut bad = mac;
        bad[31] ^= 1;
        assert!(!verify(b"s3cret", Prover::Daemon, &h, &d, &bad));
        let host = prove(b"s3cret", Prover::Host, &h, &d);
        assert_ne!(host, mac);
        assert!(verify(b"s3cret", Prover::Host, &h, &d, &host));
    }

    #[test]
    fn matches_an_independent_implementation() {
        // HMAC-SHA256 under key "key" of the context, an all-zero host nonce
        // and an all-0x01 daemon nonce, computed independently with
        // `openssl dgst -sha256 -mac HMAC -macopt key:key` (tests/testthat
        // check the same against openssl at run time).
        let hex = |m: Mac| m.iter().map(|b| format!("{b:02x}")).collect::<String>();
        let (h, d) = ([0u8; NONCE_LEN], [1u8; NONCE_LEN]);
        assert_eq!(hex(prove(b"key", Prover::Daemon, &h, &d)), DAEMON_REFERENCE);
        assert_eq!(hex(prove(b"key", Prover::Host, &h, &d)), HOST_REFERENCE);
    }

    const DAEMON_REFERENCE: &str = "1786ce196bb9d94a7e76824cabcf42edd68d90bcc6f9dac16c9f90d0c356a612";
    const HOST_REFERENCE: &str = "5642cf4bc996f83ebfe9b4095abb3262d65af9f0b37e10cd28181c836bb37c01";
}
