//! Challenge-response proof that a daemon holds its host's secret, so the
//! secret itself never crosses the network.
//!
//! On accept the host sends a fresh random nonce (`Msg::Challenge`); the
//! daemon's Hello carries HMAC-SHA256(secret, CONTEXT || nonce). A recorded
//! Hello is useless on another connection (its nonce differs), and the MAC
//! reveals nothing usable about the secret. The host checks the MAC with
//! ring's constant-time verification.

use crate::proto::{MAC_LEN, NONCE_LEN};
use ring::hmac;

/// Binds a MAC to this use (and protocol generation), so a MAC computed
/// with the same secret for anything else cannot stand in for a Hello.
const CONTEXT: &[u8] = b"mirai daemon hello v3\0";

/// A fresh nonce from the kernel's random source.
pub fn nonce() -> std::io::Result<[u8; NONCE_LEN]> {
    let b = crate::url::random_bytes(NONCE_LEN)?;
    let mut n = [0u8; NONCE_LEN];
    n.copy_from_slice(&b);
    Ok(n)
}

/// The daemon's answer to the host's challenge.
pub fn prove(secret: &[u8], nonce: &[u8; NONCE_LEN]) -> [u8; MAC_LEN] {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(CONTEXT);
    ctx.update(nonce);
    let tag = ctx.sign();
    let mut out = [0u8; MAC_LEN];
    out.copy_from_slice(tag.as_ref());
    out
}

/// True if `mac` answers `nonce` for `secret`; constant time in the MAC.
pub fn verify(secret: &[u8], nonce: &[u8; NONCE_LEN], mac: &[u8; MAC_LEN]) -> bool {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut msg = Vec::with_capacity(CONTEXT.len() + NONCE_LEN);
    msg.extend_from_slice(CONTEXT);
    msg.extend_from_slice(nonce);
    hmac::verify(&key, &msg, mac).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proof_verifies_only_for_its_secret_and_nonce() {
        let n1 = nonce().unwrap();
        let n2 = nonce().unwrap();
        assert_ne!(n1, n2);
        let mac = prove(b"s3cret", &n1);
        assert!(verify(b"s3cret", &n1, &mac));
        assert!(!verify(b"s3cret", &n2, &mac));
        assert!(!verify(b"s3creT", &n1, &mac));
        assert!(!verify(b"", &n1, &mac));
        let mut bad = mac;
        bad[31] ^= 1;
        assert!(!verify(b"s3cret", &n1, &bad));
    }

    #[test]
    fn matches_an_independent_implementation() {
        // HMAC-SHA256 of the context and an all-zero nonce under key "key",
        // computed independently with `openssl dgst -sha256 -mac HMAC`.
        let mac = prove(b"key", &[0u8; NONCE_LEN]);
        let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, REFERENCE);
    }

    const REFERENCE: &str = "ed042369a48d0f290bc741c92537a7d29a35df2110ee91261d598a705b975d7f";
}
