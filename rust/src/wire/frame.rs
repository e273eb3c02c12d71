//! NNG's SP wire format, pair1 protocol.
//!
//! A connection opens with an 8-byte header each way: `00 'S' 'P' 00`, the
//! protocol number as big-endian u16 (pair1 = 0x11), then two zero bytes.
//! Messages then follow as length-prefixed frames: on TCP a big-endian u64
//! length; on IPC (Unix sockets) one type byte `0x01` before that length.
//! The pair1 protocol puts a 4-byte big-endian hop count at the start of every
//! message body; the sender's pipe sets it to 1 and receivers reject > 0xff.
//!
//! Outgoing frames are built in one buffer (header reserved up front, length
//! patched at the end) so each frame leaves in a single write.

pub const PAIR1: u16 = 0x11;
pub const SP_HEADER: [u8; 8] = [0, b'S', b'P', 0, 0, PAIR1 as u8, 0, 0];
pub const HOP_LEN: usize = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Tcp,
    Ipc,
}

impl Framing {
    /// Bytes before the message body: transport prefix.
    pub const fn prefix_len(self) -> usize {
        match self {
            Framing::Tcp => 8,
            Framing::Ipc => 9,
        }
    }

    /// Offset of the application bytes within a frame built by `begin`.
    pub const fn body_offset(self) -> usize {
        self.prefix_len() + HOP_LEN
    }

    /// Starts a frame: reserves the transport prefix and writes the hop count.
    pub fn begin(self, buf: &mut Vec<u8>) {
        buf.clear();
        buf.resize(self.prefix_len(), 0);
        buf.extend_from_slice(&1u32.to_be_bytes());
    }

    /// Patches the length once the body is complete.
    pub fn finish(self, buf: &mut [u8]) {
        self.finish_with_tail(buf, 0);
    }

    /// Patches the length of a frame whose body continues with `tail` more
    /// bytes written separately (a payload shared by several frames).
    pub fn finish_with_tail(self, buf: &mut [u8], tail: usize) {
        let p = self.prefix_len();
        let len = (buf.len() - p + tail) as u64;
        match self {
            Framing::Tcp => buf[..8].copy_from_slice(&len.to_be_bytes()),
            Framing::Ipc => {
                buf[0] = 1;
                buf[1..9].copy_from_slice(&len.to_be_bytes());
            }
        }
    }

    /// Parses a transport prefix; returns the message length.
    pub fn parse_prefix(self, p: &[u8]) -> Result<u64, String> {
        match self {
            Framing::Tcp => Ok(u64::from_be_bytes(p[..8].try_into().unwrap())),
            Framing::Ipc => {
                if p[0] != 1 {
                    return Err(format!("unexpected IPC message type {}", p[0]));
                }
                Ok(u64::from_be_bytes(p[1..9].try_into().unwrap()))
            }
        }
    }
}

/// Checks a peer's connection header: must be SP, and pair1.
pub fn check_sp_header(h: &[u8; 8]) -> Result<(), String> {
    if h[0] != 0 || h[1] != b'S' || h[2] != b'P' || h[3] != 0 {
        return Err("peer is not an SP (NNG) endpoint".into());
    }
    let proto = u16::from_be_bytes([h[4], h[5]]);
    if proto != PAIR1 {
        return Err(format!("peer speaks SP protocol {proto:#x}, expected pair1 (0x11)"));
    }
    Ok(())
}

/// Strips and checks the pair1 hop count from a received message body.
pub fn strip_hop(body: &[u8]) -> Result<usize, String> {
    if body.len() < HOP_LEN {
        return Err("message shorter than the pair1 header".into());
    }
    let hop = u32::from_be_bytes(body[..4].try_into().unwrap());
    if hop > 0xff {
        return Err("malformed pair1 header".into());
    }
    Ok(HOP_LEN)
}

/// The last byte of every task's body: the host wrote the whole frame. A
/// frame the host withdrew after starting to write it (the task was
/// cancelled or timed out meanwhile) is completed with zero bytes instead
/// (see `wqueue`), so it ends in 0, and the daemon must not evaluate it.
pub const TASK_WHOLE: u8 = 1;

/// A task's payload without its final mark; None if the frame was
/// withdrawn (or is malformed), in which case the daemon answers it with an
/// error that the host, which has resolved the task already, drops.
pub fn task_payload(p: &[u8]) -> Option<&[u8]> {
    match p.split_last() {
        Some((&TASK_WHOLE, rest)) => Some(rest),
        _ => None,
    }
}

/// Largest message accepted; guards against a garbage length allocating
/// absurd amounts. 64-bit lengths still allow objects far over 2 GiB.
pub const MAX_MESSAGE: u64 = 1 << 40;
/// The smallest cap option `mirai.max_message` may set.
pub const MIN_MAX_MESSAGE: u64 = 1024;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_frame_layout() {
        let mut b = Vec::new();
        Framing::Tcp.begin(&mut b);
        b.extend_from_slice(b"hello");
        Framing::Tcp.finish(&mut b);
        assert_eq!(&b[..8], &9u64.to_be_bytes());
        assert_eq!(&b[8..12], &[0, 0, 0, 1]);
        assert_eq!(&b[12..], b"hello");
        assert_eq!(Framing::Tcp.parse_prefix(&b).unwrap(), 9);
        assert_eq!(&b[Framing::Tcp.body_offset()..], b"hello");
    }

    #[test]
    fn ipc_frame_layout() {
        let mut b = Vec::new();
        Framing::Ipc.begin(&mut b);
        b.extend_from_slice(b"xy");
        Framing::Ipc.finish(&mut b);
        assert_eq!(b[0], 1);
        assert_eq!(&b[1..9], &6u64.to_be_bytes());
        assert_eq!(Framing::Ipc.parse_prefix(&b).unwrap(), 6);
        let mut bad = b.clone();
        bad[0] = 2;
        assert!(Framing::Ipc.parse_prefix(&bad).is_err());
    }

    #[test]
    fn sp_header_checks() {
        assert!(check_sp_header(&SP_HEADER).is_ok());
        let mut h = SP_HEADER;
        h[5] = 0x10; // pair0
        assert!(check_sp_header(&h).unwrap_err().contains("pair1"));
        assert!(check_sp_header(b"GET / HT").unwrap_err().contains("not an SP"));
    }

    #[test]
    fn task_payload_needs_the_whole_mark() {
        assert_eq!(task_payload(&[7, 8, TASK_WHOLE]), Some(&[7u8, 8][..]));
        assert_eq!(task_payload(&[7, 8, 0]), None);
        assert_eq!(task_payload(&[0, 0, 0]), None);
        assert_eq!(task_payload(&[]), None);
    }

    #[test]
    fn hop_count_validation() {
        assert_eq!(strip_hop(&[0, 0, 0, 1, 9]).unwrap(), 4);
        assert!(strip_hop(&[0, 0, 1, 0]).is_err());
        assert!(strip_hop(&[0, 0]).is_err());
    }
}
