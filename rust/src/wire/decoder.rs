//! Incremental frame reader shared by the blocking (daemon) and non-blocking
//! (host event loop) sides. State survives `WouldBlock`, so the event loop
//! can resume mid-frame; large bodies are read straight into their final
//! buffer, never through the staging buffer.
//!
//! Sockets are read with `next_fd`, which receives straight into the body's
//! spare capacity: the kernel writes the bytes, so a body is never zero-filled
//! first (for a 2 GB argument that pass cost as much as 8-15% of the round
//! trip). Any other reader goes through `next`, which zero-fills what it
//! reads into, a little at a time.

use crate::wire::frame::{check_sp_header, Framing, MAX_MESSAGE, SP_HEADER};
use std::io::{self, Read};
use std::os::fd::RawFd;

/// Size of the staging buffer once a peer may send large messages.
const STAGING: usize = 64 * 1024;
/// The first allocation for a message body. Later ones double the buffer,
/// never past the claimed length: memory follows the bytes that arrived,
/// and a large body is moved at most a few times (glibc grows large blocks
/// with mremap, without copying).
const FIRST_CHUNK: usize = 64 * 1024;
/// Most bytes a generic reader is handed at once (each call zero-fills them).
const GENERIC_READ: usize = 16 * 1024;

pub struct Decoder {
    framing: Framing,
    /// Staging for headers and small messages; allocated on first read.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    need_header: bool,
    /// The body being read: `body.len()` bytes have arrived, its capacity is
    /// what is allocated, `claimed` is the length the peer announced.
    body: Vec<u8>,
    claimed: usize,
    in_body: bool,
    limit: u64,
    /// The last read found no bytes (WouldBlock): what is buffered is not
    /// enough, so the caller must wait for the socket before calling again.
    starved: bool,
    /// The last read returned fewer bytes than it asked for: the socket
    /// held no more at that moment (see `source_drained`).
    drained: bool,
}

fn proto_err(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// Where bytes come from: a `Read`, or a socket descriptor read with recv.
trait Source {
    /// Reads into initialised memory (the staging buffer).
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    /// Appends up to `max` bytes to `v`, within its spare capacity.
    fn append(&mut self, v: &mut Vec<u8>, max: usize) -> io::Result<usize>;
}

struct Generic<'a, R: Read>(&'a mut R);

impl<R: Read> Source for Generic<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
    fn append(&mut self, v: &mut Vec<u8>, max: usize) -> io::Result<usize> {
        let start = v.len();
        let n = max.min(GENERIC_READ).min(v.capacity() - start);
        v.resize(start + n, 0);
        let res = self.0.read(&mut v[start..]);
        v.truncate(start + *res.as_ref().unwrap_or(&0));
        res
    }
}

struct Fd {
    fd: RawFd,
    flags: libc::c_int,
}

impl Fd {
    fn recv(&self, p: *mut u8, len: usize) -> io::Result<usize> {
        // SAFETY: callers pass `len` writable bytes at `p` (a slice, or a
        // Vec's spare capacity); recv writes at most that many.
        let n = unsafe { libc::recv(self.fd, p as *mut libc::c_void, len, self.flags) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }
}

impl Source for Fd {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.recv(buf.as_mut_ptr(), buf.len())
    }
    fn append(&mut self, v: &mut Vec<u8>, max: usize) -> io::Result<usize> {
        let spare = v.spare_capacity_mut();
        let len = max.min(spare.len());
        let n = self.recv(spare.as_mut_ptr() as *mut u8, len)?;
        // SAFETY: recv wrote exactly n <= len bytes into the spare capacity.
        unsafe { v.set_len(v.len() + n) };
        Ok(n)
    }
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
            claimed: 0,
            in_body: false,
            starved: false,
            drained: false,
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

    /// Nothing is buffered and the last read emptied the socket: a caller
    /// woken by an edge-triggered poll may stop here rather than read once
    /// more only to be told WouldBlock (a syscall per message saved), since
    /// bytes that arrive later signal the socket again.
    pub fn source_drained(&self) -> bool {
        self.drained && self.end == self.start && !self.in_body
    }

    /// Bytes held for the message in progress (staging and body), for tests
    /// that bound what a peer can make us allocate.
    pub fn allocated(&self) -> usize {
        self.buf.capacity() + self.body.capacity()
    }

    /// Records whether a read found nothing.
    fn note(&mut self, res: io::Result<usize>) -> io::Result<usize> {
        match &res {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.starved = true,
            Ok(_) => self.starved = false,
            Err(_) => {}
        }
        res
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
        let cap = self.body.capacity();
        let target = cap.saturating_mul(2).max(FIRST_CHUNK).min(self.claimed);
        let len = self.body.len();
        self.body.try_reserve_exact(target - len).map_err(|_| {
            io::Error::new(io::ErrorKind::OutOfMemory, format!("cannot allocate {target} bytes for a message"))
        })
    }

    /// Reads the next whole message body (pair1 hop header included) from
    /// any reader. End of stream is `UnexpectedEof`; `WouldBlock` leaves
    /// state intact.
    pub fn next<R: Read>(&mut self, r: &mut R) -> io::Result<Vec<u8>> {
        self.next_from(&mut Generic(r))
    }

    /// `next` for a socket descriptor, read with `recv(fd, .., flags)`
    /// straight into the message's buffer (e.g. `MSG_DONTWAIT` for a
    /// blocking socket that must not block).
    pub fn next_fd(&mut self, fd: RawFd, flags: libc::c_int) -> io::Result<Vec<u8>> {
        self.next_from(&mut Fd { fd, flags })
    }

    fn next_from<S: Source>(&mut self, src: &mut S) -> io::Result<Vec<u8>> {
        loop {
            if self.in_body {
                while self.body.len() < self.claimed {
                    if self.body.len() == self.body.capacity() {
                        self.grow_body()?;
                    }
                    let room = (self.body.capacity() - self.body.len()).min(self.claimed - self.body.len());
                    let avail = self.end - self.start;
                    if avail > 0 {
                        let n = avail.min(room);
                        self.body.extend_from_slice(&self.buf[self.start..self.start + n]);
                        self.start += n;
                        continue;
                    }
                    let res = src.append(&mut self.body, room);
                    match self.note(res) {
                        Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                        Ok(n) => self.drained = n < room,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
                self.in_body = false;
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
                let want = self.buf.len() - self.end;
                let res = src.read(&mut self.buf[self.end..]);
                match self.note(res) {
                    Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                    Ok(n) => {
                        self.drained = n < want;
                        self.end += n;
                    }
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
    fn reads_a_socket_straight_into_the_body_across_partial_writes() {
        use std::io::Write;
        use std::os::fd::AsRawFd;
        let (mut a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let mut wire = SP_HEADER.to_vec();
        wire.extend(frame(Framing::Ipc, b"small"));
        wire.extend(frame(Framing::Ipc, &big));
        let writer = std::thread::spawn(move || {
            for chunk in wire.chunks(7_000) {
                a.write_all(chunk).unwrap();
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        });
        let mut d = Decoder::new(Framing::Ipc);
        let mut got = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while got.len() < 2 && std::time::Instant::now() < deadline {
            match d.next_fd(b.as_raw_fd(), libc::MSG_DONTWAIT) {
                Ok(m) => got.push(m),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    assert!(!d.has_buffered());
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                Err(e) => panic!("{e}"),
            }
        }
        writer.join().unwrap();
        assert_eq!(&got[0][4..], b"small");
        assert_eq!(&got[1][4..], &big[..]);
        // The body's allocation stayed within twice its size.
        assert!(got[1].capacity() <= 2 * got[1].len());
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
