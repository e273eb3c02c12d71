//! The message envelope: a small bincode-encoded header, then (for tasks and
//! results) the raw R-serialized payload, which is never re-encoded.
//!
//! Decoding is bounded by the bytes received: strings borrow from the frame
//! (a length field larger than what follows is an error, never an
//! allocation), and bincode runs with a limit of `ENVELOPE_LIMIT` bytes.

use serde::{Deserialize, Serialize};

/// Bumped whenever the envelope or its meaning changes. 3: the daemon
/// answers a `Challenge` with an HMAC instead of sending the secret. 4: the
/// host proves itself too (`Welcome`), both proofs over both sides' nonces;
/// a task's body ends in `frame::TASK_WHOLE`. 5: `Share` and `Item`, a
/// map's shared part sent once per daemon and its elements. 6: a `Result`
/// says whether its value is an error. 7: `Relay`, conditions a running
/// task signals, sent as they happen. 8: `Bare`, an element sent without
/// R's serialization header. 9: `mirai()`'s task is `list(expr, globals,
/// args)` without names (a daemon of 8 would read it as NULL parts). 10:
/// a map's element may be a row number in a list of one, its row taken
/// from the data frame in the shared part by the daemon's native
/// `mirai_map_apply` (of four arguments), and `map_call()`, sent in the
/// shared part, calls that routine (a daemon of 9 failed those elements).
pub const PROTOCOL_VERSION: u32 = 10;

/// Bytes of the host's challenge nonce and of the daemon's HMAC-SHA256.
pub const NONCE_LEN: usize = 32;
pub const MAC_LEN: usize = 32;

/// The most bytes an envelope may take (the payload is not part of it).
pub const ENVELOPE_LIMIT: usize = 4096;

/// The largest message either side accepts from a peer that has not yet
/// proved it holds the secret: an envelope and the pair1 hop count. Every
/// layer that buffers bytes before authentication (the SP decoder, a
/// WebSocket's frames and fragments) is held to it.
pub const HANDSHAKE_LIMIT: u64 = (ENVELOPE_LIMIT + crate::wire::frame::HOP_LEN) as u64;

/// The most bytes a host reads from a peer through TLS or WebSocket before
/// the peer authenticates (records, the HTTP upgrade, frames, pings), and
/// a daemon through WebSocket from a host that has not proved itself. Over
/// plain SP a peer can send only its SP header and one message before it
/// is accepted, or refused and read no further; these layers carry more:
/// rustls gathers a handshake message of up to 64 KiB before it parses it,
/// and WebSocket control frames can stream without end (holding the
/// reader, the host's loop or the daemon's handshake, while they do). A
/// daemon's TLS handshake, upgrade and Hello take under 2 KiB, a host's
/// 101, Challenge and Welcome under 1 KiB; a largest WebSocket request
/// head (8 KiB) still fits.
pub const PRE_AUTH_BYTES: usize = 16 * 1024;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Msg<'a> {
    /// Daemon to host, its answer to the `Challenge`: its own fresh
    /// `nonce`, and `mac`, its proof over both nonces keyed by the profile
    /// secret (see `auth`). `version` stays the first field (and Hello the
    /// first variant) so a host of any version can tell a daemon of another
    /// version why it is refused (`peek_version`).
    Hello { version: u32, nonce: [u8; NONCE_LEN], mac: [u8; MAC_LEN], pid: u32 },
    /// Host to daemon, first message. `version` stays the first field so a
    /// daemon of any version can read it. `stream`: this daemon's
    /// L'Ecuyer-CMRG `.Random.seed`, if the host assigns one. The payload,
    /// if not empty, is the profile's R-serialized settings list (e.g.
    /// `list(serial = <serial_config>)`), the same for every daemon.
    Init { version: u32, stream: Option<[i32; 7]> },
    /// Host to daemon: this daemon is not accepted; it should exit.
    Refused { reason: &'a str },
    /// Host to daemon: evaluate the payload.
    Task { id: u64 },
    /// Daemon to host: the payload is the result of task `id`. `last` marks
    /// the daemon's final reply (task, idle or wall time limit reached);
    /// `error` an error value (for the host's timeline of tasks).
    Result { id: u64, last: bool, error: bool },
    /// Host to daemon: interrupt task `id` if it is running.
    Cancel { id: u64 },
    /// Host to daemon: exit now (`daemons(NULL)`).
    Exit,
    /// Host to daemon, first message, sent on accept: a fresh nonce the
    /// daemon must answer (Hello). `version` first, as in Init.
    Challenge { version: u32, nonce: [u8; NONCE_LEN] },
    /// Host to daemon, once the daemon's Hello checked out, before the
    /// Init: the host's proof over both nonces (see `auth`); None when the
    /// host runs without authentication (`auth = FALSE`), which a daemon
    /// that holds a secret refuses.
    Welcome { mac: Option<[u8; MAC_LEN]> },
    /// Host to daemon: keep the payload (the R-serialized shared part of
    /// a map: function, `.args`, globals; ending in `frame::TASK_WHOLE`) as
    /// share `sid`, in cache slot `slot` (below `SHARE_SLOTS`), replacing
    /// what that slot held. The host decides which slot each share takes,
    /// so both ends agree on what the daemon holds without a reply.
    Share { sid: u64, slot: u8 },
    /// Host to daemon: evaluate element `id` of a map whose shared part is
    /// share `sid`, sent earlier on this connection; the payload is the
    /// element (R-serialized, ending in `frame::TASK_WHOLE`).
    Item { id: u64, sid: u64 },
    /// Daemon to host, while task `id` runs (only with `daemons(relay =
    /// TRUE)`): the payload is a condition the task signalled (a message,
    /// a progress update), R-serialized without the profile's custom
    /// serializers, at most `RELAY_LIMIT` bytes. `seq` counts the task's
    /// relays from 1, so the host can tell what it dropped. `held`: for a
    /// cluster node's task, a condition future's code sent to `master`,
    /// kept for the node to hand out (see R/cluster.R) rather than shown.
    Relay { id: u64, seq: u64, held: bool },
    /// Host to daemon: as `Item`, but the payload lacks R's serialization
    /// header (format, versions, native encoding), which the daemon puts
    /// back as its own R writes it. Sent only for an element with no
    /// string in it (a logical, integer or double vector), whose bytes do
    /// not depend on the header's encoding: the header was a third of a
    /// small element's frame, and so of the host's memory for each queued
    /// element.
    Bare { id: u64, sid: u64 },
}

/// The most payload bytes a `Relay` carries: a daemon sends none larger,
/// and a host drops (and counts) any that is.
pub const RELAY_LIMIT: usize = 64 * 1024;

/// Shares a daemon keeps at once (per connection).
pub const SHARE_SLOTS: usize = 4;

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<ENVELOPE_LIMIT>()
}

/// Appends the encoded envelope to `buf` (which already holds a frame prefix).
pub fn encode_into(msg: &Msg, buf: &mut Vec<u8>) {
    bincode::serde::encode_into_std_write(msg, buf, config()).expect("writing to a Vec cannot fail");
}

/// Decodes an envelope; returns it and the offset where the payload starts.
pub fn decode(body: &[u8]) -> Result<(Msg<'_>, usize), String> {
    bincode::serde::borrow_decode_from_slice(body, config()).map_err(|e| format!("malformed message: {e}"))
}

/// The variant index and first field of an encoded message, for a Hello
/// or Challenge of another protocol version whose other fields may not
/// decode: None if even those do not.
pub fn peek_version(body: &[u8]) -> Option<(u32, u32)> {
    bincode::decode_from_slice::<(u32, u32), _>(body, bincode::config::standard().with_limit::<16>()).ok().map(|(v, _)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_payload() {
        let mut b = vec![9u8; 3];
        encode_into(&Msg::Result { id: 42, last: true, error: false }, &mut b);
        let hdr_end = b.len();
        b.extend_from_slice(b"payload");
        let (m, off) = decode(&b[3..]).unwrap();
        assert_eq!(m, Msg::Result { id: 42, last: true, error: false });
        assert_eq!(3 + off, hdr_end);
        assert_eq!(&b[3 + off..], b"payload");
    }

    #[test]
    fn init_carries_stream_then_settings() {
        let mut b = Vec::new();
        let s = [10407, -1, 2, -3, 4, -5, 6];
        encode_into(&Msg::Init { version: PROTOCOL_VERSION, stream: Some(s) }, &mut b);
        let hdr_end = b.len();
        b.extend_from_slice(b"settings");
        let (m, off) = decode(&b).unwrap();
        assert_eq!(m, Msg::Init { version: PROTOCOL_VERSION, stream: Some(s) });
        assert_eq!(off, hdr_end);
        let mut b = Vec::new();
        encode_into(&Msg::Init { version: PROTOCOL_VERSION, stream: None }, &mut b);
        let (m, off) = decode(&b).unwrap();
        assert_eq!(m, Msg::Init { version: PROTOCOL_VERSION, stream: None });
        assert_eq!(off, b.len());
    }

    #[test]
    fn a_huge_string_length_is_an_error_not_an_allocation() {
        // Refused, then a string whose length says 2^62.
        let mut b = vec![2u8, 0xfd];
        b.extend((1u64 << 62).to_le_bytes());
        b.extend(b"abc");
        assert!(decode(&b).unwrap_err().contains("malformed"));
        let mut b = vec![2u8, 0xfd];
        b.extend(u64::MAX.to_le_bytes());
        assert!(decode(&b).is_err());
    }

    #[test]
    fn challenge_and_hello_have_fixed_sizes() {
        let mut b = Vec::new();
        let nonce = [7u8; NONCE_LEN];
        encode_into(&Msg::Challenge { version: PROTOCOL_VERSION, nonce }, &mut b);
        // Variant, version (one-byte varint), the nonce's bytes as they are.
        assert_eq!(b.len(), 2 + NONCE_LEN);
        assert_eq!(&b[2..], &nonce);
        assert_eq!(decode(&b).unwrap().0, Msg::Challenge { version: PROTOCOL_VERSION, nonce });
        let mut b = Vec::new();
        let mac = [9u8; MAC_LEN];
        encode_into(&Msg::Hello { version: PROTOCOL_VERSION, nonce, mac, pid: 1 }, &mut b);
        assert_eq!(b, [&[0u8, PROTOCOL_VERSION as u8][..], &nonce, &mac, &[1u8]].concat());
        // A Hello cut short is an error.
        assert!(decode(&b[..b.len() - 2]).is_err());
        // Welcome: variant 8, Some (1) and the MAC, or None (0).
        let mut b = Vec::new();
        encode_into(&Msg::Welcome { mac: Some(mac) }, &mut b);
        assert_eq!(b, [&[8u8, 1][..], &mac].concat());
        let mut b = Vec::new();
        encode_into(&Msg::Welcome { mac: None }, &mut b);
        assert_eq!(b, [8u8, 0]);
    }

    #[test]
    fn the_version_of_a_hello_from_another_generation_can_be_read() {
        // A version 3 Hello (no nonce): it does not decode as today's, but
        // its variant and version do.
        let mut v3 = vec![0u8, 3];
        v3.extend([9u8; MAC_LEN]);
        v3.push(1);
        assert!(decode(&v3).is_err());
        assert_eq!(peek_version(&v3), Some((0, 3)));
        assert_eq!(peek_version(&[7, 4]), Some((7, 4)));
        assert_eq!(peek_version(&[0xff, 0xff]), None);
        assert_eq!(peek_version(&[]), None);
    }

    #[test]
    fn relay_round_trips_and_any_bytes_after_its_tag_decode_or_fail_cleanly() {
        let mut b = Vec::new();
        encode_into(&Msg::Relay { id: 7, seq: 3, held: true }, &mut b);
        let hdr = b.len();
        b.extend_from_slice(b"cond");
        let (m, off) = decode(&b).unwrap();
        assert_eq!(m, Msg::Relay { id: 7, seq: 3, held: true });
        assert_eq!((off, &b[off..]), (hdr, &b"cond"[..]));
        // Every truncation, and every byte in every position of a short
        // body after the variant's tag: an error or a value, never a panic.
        for n in 0..hdr {
            let _ = decode(&b[..n]);
        }
        let mut x = [11u8, 0, 0, 0, 0, 0];
        for i in 1..x.len() {
            for v in 0..=255u8 {
                x[i] = v;
                let _ = decode(&x);
            }
        }
        // A bool other than 0 or 1 is malformed.
        assert!(decode(&[11, 1, 1, 2]).is_err());
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(decode(&[0xff, 0xff, 0xff]).is_err());
        assert!(decode(&[]).is_err());
    }
}
