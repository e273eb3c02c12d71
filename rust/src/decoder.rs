//! Incremental frame reader shared by the blocking (daemon) and non-blocking
//! (host event loop) sides. State survives `WouldBlock`, so the event loop
//! can resume mid-frame; large bodies are read straight into their final
//! buffer, never through the staging buffer.

use crate::frame::{check_sp_header, Framing, MAX_MESSAGE, SP_HEADER};
use std::io::{self, Read};

/// Size of the staging buffer once a peer may send large messages.
const STAGING: usize = 64 * 1024;
/// The first allocation for a message body. Later ones double the buffer,
/// never past the claimed length: memory follows the bytes that arrived,
/// and a large body is moved at most a few times (glibc grows large blocks
/// with mremap, without copying).
const FIRST_CHUNK: usize = 64 * 1024;

pub struct Decoder {
    framing: Framing,
    /// Staging for headers and small messages; allocated on first read.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    need_header: bool,
    /// The body being read: `body.len()` bytes are allocated, `filled` of
    /// them have arrived, `claimed` is the length the peer announced.
    body: Vec<u8>,
    filled: usize,
    claimed: usize,
    in_body: bool,
    limit: u64,
    /// The last read found no bytes (WouldBlock): what is buffered is not
    /// enough, so the caller must wait for the socket before calling again.
    starved: bool,
}

fn proto_err(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

impl Decoder {
    pub fn new(framing: Framing) -> Self {
        Self::with_limit(framing, MAX_MESSAGE)
    }

    /// A decoder that refuses messages longer than `limit` bytes.
    pub fn with_limit(framing: Framing, limit: u64) -> Self {
        Decoder {
            limit,
            framing,
            buf: Vec::new(),
            start: 0,
            end: 0,
            need_header: true,
            body: Vec::new(),
            filled: 0,
            claimed: 0,
            in_body: false,
            starved: false,
        }
    }

    pub fn set_limit(&mut self, limit: u64) {
        self.limit = limit;
    }

    /// True when `next` may make progress without new bytes from the
    /// socket, so a caller that polls the descriptor before reading must not
    /// wait. False once a read found nothing: polling is then the only way
    /// forward (calling again at once would spin).
    pub fn has_buffered(&self) -> bool {
        !self.starved && (self.end > self.start || self.in_body)
    }

    /// Reads from `r`, recording whether it found nothing.
    fn read_some<R: Read>(&mut self, r: &mut R, into_body: bool) -> io::Result<usize> {
        let res = if into_body { r.read(&mut self.body[self.filled..]) } else { r.read(&mut self.buf[self.end..]) };
        match &res {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.starved = true,
            Ok(_) => self.starved = false,
            Err(_) => {}
        }
        res
    }

    /// Bytes held for the message in progress (staging and body), for tests
    /// that bound what a peer can make us allocate.
    pub fn allocated(&self) -> usize {
        self.buf.capacity() + self.body.capacity()
    }

    /// The staging size for the current limit: a peer held to small
    /// messages (before its handshake) gets a small buffer.
    fn staging_size(&self) -> usize {
        let small = self.limit.saturating_add(SP_HEADER.len() as u64 + 16);
        small.min(STAGING as u64) as usize
    }

    /// Makes room for more of the body: doubles the allocation, capped by
    /// the claimed length. Fails (without aborting) if memory is short.
    fn grow_body(&mut self) -> io::Result<()> {
        let len = self.body.len();
        let target = len.saturating_mul(2).max(FIRST_CHUNK).min(self.claimed);
        self.body.try_reserve_exact(target - len).map_err(|_| {
            io::Error::new(io::ErrorKind::OutOfMemory, format!("cannot allocate {target} bytes for a message"))
        })?;
        self.body.resize(target, 0);
        Ok(())
    }

    /// Reads the next whole message body (pair1 hop header included).
    /// End of stream is `UnexpectedEof`; `WouldBlock` leaves state intact.
    pub fn next<R: Read>(&mut self, r: &mut R) -> io::Result<Vec<u8>> {
        loop {
            if self.in_body {
                while self.filled < self.claimed {
                    if self.filled == self.body.len() {
                        self.grow_body()?;
                    }
                    let avail = self.end - self.start;
                    if avail > 0 {
                        let n = avail.min(self.body.len() - self.filled);
                        self.body[self.filled..self.filled + n]
                            .copy_from_slice(&self.buf[self.start..self.start + n]);
                        self.start += n;
                        self.filled += n;
                        continue;
                    }
                    match self.read_some(r, true) {
                        Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                        Ok(n) => self.filled += n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
                self.in_body = false;
                self.filled = 0;
                return Ok(std::mem::take(&mut self.body));
            }
            let need = if self.need_header { SP_HEADER.len() } else { self.framing.prefix_len() };
            let staging = self.staging_size();
            if self.buf.len() < staging {
                // Exact: Vec's own growth could double past the staging size.
                self.buf.reserve_exact(staging - self.buf.len());
                self.buf.resize(staging, 0);
            }
            while self.end - self.start < need {
                if self.start > 0 {
                    self.buf.copy_within(self.start..self.end, 0);
                    self.end -= self.start;
                    self.start = 0;
                }
                match self.read_some(r, false) {
                    Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                    Ok(n) => self.end += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            let chunk = &self.buf[self.start..self.start + need];
            if self.need_header {
                check_sp_header(chunk.try_into().unwrap()).map_err(proto_err)?;
                self.need_header = false;
            } else {
                let len = self.framing.parse_prefix(chunk).map_err(proto_err)?;
                if len > self.limit {
                    return Err(proto_err(format!(
                        "message of {len} bytes exceeds the limit of {} bytes",
                        self.limit
                    )));
                }
                self.claimed = len as usize;
                self.body = Vec::new();
                self.filled = 0;
                self.in_body = true;
            }
            self.start += need;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn frame(f: Framing, body: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        f.begin(&mut b);
        b.extend_from_slice(body);
        f.finish(&mut b);
        b
    }

    #[test]
    fn decodes_consecutive_frames_both_framings() {
        for f in [Framing::Tcp, Framing::Ipc] {
            let mut wire = SP_HEADER.to_vec();
            wire.extend(frame(f, b"one"));
            wire.extend(frame(f, &vec![7u8; 200_000]));
            wire.extend(frame(f, b""));
            let mut d = Decoder::new(f);
            let mut c = Cursor::new(wire);
            assert_eq!(&d.next(&mut c).unwrap()[4..], b"one");
            assert_eq!(d.next(&mut c).unwrap().len(), 200_004);
            assert_eq!(d.next(&mut c).unwrap(), vec![0, 0, 0, 1]);
            assert_eq!(d.next(&mut c).unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
        }
    }

    /// A reader that yields one byte at a time and WouldBlock in between,
    /// like a non-blocking socket under pressure.
    struct Trickle {
        data: Vec<u8>,
        pos: usize,
        block_next: bool,
    }
    impl Read for Trickle {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            if self.block_next {
                self.block_next = false;
                return Err(io::ErrorKind::WouldBlock.into());
            }
            self.block_next = true;
            if self.pos == self.data.len() {
                return Ok(0);
            }
            out[0] = self.data[self.pos];
            self.pos += 1;
            Ok(1)
        }
    }

    #[test]
    fn resumes_after_would_block() {
        let mut wire = SP_HEADER.to_vec();
        wire.extend(frame(Framing::Ipc, b"abc"));
        wire.extend(frame(Framing::Ipc, b"defg"));
        let mut t = Trickle { data: wire, pos: 0, block_next: false };
        let mut d = Decoder::new(Framing::Ipc);
        let mut got = Vec::new();
        loop {
            match d.next(&mut t) {
                Ok(m) => got.push(m[4..].to_vec()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => {
                    assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
                    break;
                }
            }
        }
        assert_eq!(got, vec![b"abc".to_vec(), b"defg".to_vec()]);
    }

    #[test]
    fn rejects_non_sp_peer_and_huge_lengths() {
        let mut d = Decoder::new(Framing::Tcp);
        let e = d.next(&mut Cursor::new(b"GET / HTTP/1.1\r\n".to_vec())).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        let mut wire = SP_HEADER.to_vec();
        wire.extend(u64::MAX.to_be_bytes());
        let mut d = Decoder::new(Framing::Tcp);
        assert!(d.next(&mut Cursor::new(wire)).unwrap_err().to_string().contains("exceeds"));
    }

    #[test]
    fn a_huge_claim_allocates_only_what_arrives() {
        // 2^39 bytes claimed, 100 KB sent: the body never outgrows twice
        // what arrived (plus the first chunk).
        let mut wire = SP_HEADER.to_vec();
        wire.extend((1u64 << 39).to_be_bytes());
        wire.extend(vec![5u8; 100_000]);
        let mut d = Decoder::new(Framing::Tcp);
        let e = d.next(&mut Cursor::new(wire)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        assert!(d.allocated() <= 2 * 100_000 + FIRST_CHUNK + STAGING, "{}", d.allocated());
    }

    #[test]
    fn a_partial_frame_asks_the_caller_to_wait() {
        let mut wire = SP_HEADER.to_vec();
        wire.extend(frame(Framing::Tcp, b"abcdef"));
        wire.truncate(wire.len() - 2);
        struct ThenBlock(Cursor<Vec<u8>>);
        impl Read for ThenBlock {
            fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
                match self.0.read(b)? {
                    0 => Err(io::ErrorKind::WouldBlock.into()),
                    n => Ok(n),
                }
            }
        }
        let mut r = ThenBlock(Cursor::new(wire));
        let mut d = Decoder::new(Framing::Tcp);
        assert_eq!(d.next(&mut r).unwrap_err().kind(), io::ErrorKind::WouldBlock);
        // Mid-body, but nothing more to go on: the caller must poll.
        assert!(!d.has_buffered());
    }

    #[test]
    fn a_small_limit_keeps_staging_small() {
        let mut d = Decoder::with_limit(Framing::Tcp, 1024);
        let mut wire = SP_HEADER.to_vec();
        wire.extend(frame(Framing::Tcp, b"hi"));
        assert_eq!(&d.next(&mut Cursor::new(wire)).unwrap()[4..], b"hi");
        assert!(d.allocated() <= 1024 + 64, "{}", d.allocated());
    }
}
