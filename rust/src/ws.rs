//! WebSocket (RFC 6455) for `ws://` and `wss://`, as NNG's ws transport
//! does it: an HTTP/1.1 Upgrade handshake (offering and accepting the
//! `pair1.sp.nanomsg.org` subprotocol), then one binary WebSocket message
//! per SP message, with no SP connection header on the wire.
//!
//! The rest of the crate speaks SP over TCP framing (8-byte header, then
//! u64-length-prefixed messages). Rather than teach every reader and writer
//! a second framing, `WsWriter` turns that byte stream into WebSocket frames
//! as it goes (dropping the SP header, a frame header in place of each
//! length) and `WsReader` turns frames back into it (a synthetic SP header
//! first, a length before each message). Payload bytes stream through
//! without being gathered, except for the rare fragmented message (bounded
//! by `MAX_FRAGMENTED`). Like `tls::Tls`, both are state machines over a
//! socket the caller passes in, never blocking by themselves.
//!
//! Hostile peers: the upgrade request may take at most `MAX_HTTP_HEADER`
//! bytes (the caller's handshake deadline bounds its time), a frame's
//! length is checked before any byte of it is buffered, and every malformed
//! input is an `InvalidData` error value.

use crate::frame::SP_HEADER;
use std::io::{self, Read, Write};

/// Largest HTTP request or response head accepted in the handshake.
pub const MAX_HTTP_HEADER: usize = 8192;
/// Largest message accepted in fragments (they must be gathered before
/// their length is known); unfragmented messages stream and are bounded by
/// the decoder's limit only.
pub const MAX_FRAGMENTED: u64 = 64 << 20;
/// The subprotocol NNG's pair1 over WebSocket negotiates.
pub const SP_SUBPROTOCOL: &str = "pair1.sp.nanomsg.org";
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// Output gathered per `write` call before it goes to the socket.
const CHUNK: usize = 64 * 1024;

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("WebSocket: {}", msg.into()))
}

pub fn base64(data: &[u8]) -> String {
    const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for ch in data.chunks(3) {
        let n = (ch[0] as u32) << 16 | (*ch.get(1).unwrap_or(&0) as u32) << 8 | *ch.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            out.push(if i <= ch.len() { B64[(n >> (18 - 6 * i) & 63) as usize] as char } else { '=' });
        }
    }
    out
}

/// `Sec-WebSocket-Accept` for a client's `Sec-WebSocket-Key`.
pub fn accept_key(key: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, format!("{key}{GUID}").as_bytes());
    base64(d.as_ref())
}

/// The HTTP head of a message: its first line and its headers (names in
/// lower case).
struct Head {
    first: String,
    headers: Vec<(String, String)>,
}

impl Head {
    fn parse(raw: &[u8]) -> io::Result<Head> {
        let text = std::str::from_utf8(raw).map_err(|_| bad("the HTTP head is not text"))?;
        let mut lines = text.split("\r\n");
        let first = lines.next().unwrap_or_default().to_string();
        let mut headers = Vec::new();
        for l in lines.filter(|l| !l.is_empty()) {
            let (k, v) = l.split_once(':').ok_or_else(|| bad("malformed HTTP header line"))?;
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
        Ok(Head { first, headers })
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// The header lists `token` (comma-separated, case-insensitive).
    fn has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(k, _)| k == name)
            .any(|(_, v)| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    }
}

/// Reads an HTTP head, one byte at a time so that nothing after it is
/// consumed; resumable across `WouldBlock`. Ok(true) once complete.
fn read_head<S: Read>(sock: &mut S, buf: &mut Vec<u8>) -> io::Result<bool> {
    let mut b = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if buf.len() >= MAX_HTTP_HEADER {
            return Err(bad(format!("HTTP head longer than {MAX_HTTP_HEADER} bytes")));
        }
        match sock.read(&mut b)? {
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            _ => buf.push(b[0]),
        }
    }
    Ok(true)
}

/// The server's side of the upgrade, fed the bytes that arrive.
pub struct ServerHandshake {
    path: String,
    buf: Vec<u8>,
}

impl ServerHandshake {
    pub fn new(path: &str) -> Self {
        ServerHandshake { path: path.to_string(), buf: Vec::new() }
    }

    /// Reads the request. Ok(Some(response)) once it is complete and
    /// valid: the response must be sent before any frame. A refusal is
    /// Err(InvalidData), with the HTTP error response to send in `reply`.
    pub fn advance<S: Read>(&mut self, sock: &mut S, reply: &mut Vec<u8>) -> io::Result<Option<Vec<u8>>> {
        read_head(sock, &mut self.buf)?;
        let head = Head::parse(&self.buf)?;
        let refuse = |reply: &mut Vec<u8>, status: &str, why: String| {
            reply.extend_from_slice(format!("HTTP/1.1 {status}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n").as_bytes());
            Err(bad(why))
        };
        let mut parts = head.first.split(' ');
        let (method, target, version) = (parts.next(), parts.next(), parts.next());
        if method != Some("GET") || version != Some("HTTP/1.1") {
            return refuse(reply, "400 Bad Request", format!("not a WebSocket upgrade request: '{}'", head.first));
        }
        let target = target.unwrap_or_default();
        let path = target.split('?').next().unwrap_or_default();
        if path != self.path {
            return refuse(reply, "404 Not Found", format!("request for path '{path}', listening at '{}'", self.path));
        }
        if !head.has_token("upgrade", "websocket") || !head.has_token("connection", "upgrade") {
            return refuse(reply, "400 Bad Request", "the request does not ask for a WebSocket upgrade".into());
        }
        if head.get("sec-websocket-version") != Some("13") {
            reply.extend_from_slice(b"HTTP/1.1 426 Upgrade Required\r\nSec-WebSocket-Version: 13\r\nContent-Length: 0\r\n\r\n");
            return Err(bad("unsupported WebSocket version"));
        }
        let Some(key) = head.get("sec-websocket-key").filter(|k| k.len() == 24) else {
            return refuse(reply, "400 Bad Request", "missing or malformed Sec-WebSocket-Key".into());
        };
        let mut resp = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n",
            accept_key(key)
        );
        if head.has_token("sec-websocket-protocol", SP_SUBPROTOCOL) {
            resp.push_str(&format!("Sec-WebSocket-Protocol: {SP_SUBPROTOCOL}\r\n"));
        }
        resp.push_str("\r\n");
        self.buf = Vec::new();
        Ok(Some(resp.into_bytes()))
    }
}

/// The client's upgrade request for `host` (as the Host header gives it)
/// and `path`, with a fresh key; returns the request and the key.
pub fn client_request(host: &str, path: &str) -> io::Result<(Vec<u8>, String)> {
    let key = base64(&crate::url::random_bytes(16)?);
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: {SP_SUBPROTOCOL}\r\n\r\n"
    );
    Ok((req.into_bytes(), key))
}

/// Reads and checks the server's response to `client_request` (resumable
/// across `WouldBlock`, like `read_head`). Ok(true) once accepted.
pub fn client_response<S: Read>(sock: &mut S, buf: &mut Vec<u8>, key: &str) -> io::Result<bool> {
    read_head(sock, buf)?;
    let head = Head::parse(buf)?;
    if !head.first.starts_with("HTTP/1.1 101") {
        return Err(bad(format!("the server refused the upgrade: '{}'", head.first)));
    }
    if head.get("sec-websocket-accept") != Some(accept_key(key).as_str()) {
        return Err(bad("the server's Sec-WebSocket-Accept does not match"));
    }
    if let Some(p) = head.get("sec-websocket-protocol") {
        if p != SP_SUBPROTOCOL {
            return Err(bad(format!("the server chose subprotocol '{p}'")));
        }
    }
    Ok(true)
}

/// A small PRNG for frame masks (RFC 6455 wants them unpredictable to
/// third parties; masking is not a secrecy measure), seeded from the
/// system's random source.
struct MaskGen(u64);

impl MaskGen {
    fn new() -> Self {
        let seed = crate::url::random_bytes(8).ok().and_then(|b| b.try_into().ok()).map(u64::from_le_bytes);
        MaskGen(seed.unwrap_or(0x9e37_79b9_7f4a_7c15) | 1)
    }
    fn next(&mut self) -> [u8; 4] {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        ((self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) as u32).to_le_bytes()
    }
}

fn apply_mask(data: &mut [u8], mask: [u8; 4], pos: usize) {
    let m = [mask[pos % 4], mask[(pos + 1) % 4], mask[(pos + 2) % 4], mask[(pos + 3) % 4]];
    let word = u32::from_ne_bytes(m);
    let mut chunks = data.chunks_exact_mut(4);
    for c in &mut chunks {
        let v = u32::from_ne_bytes([c[0], c[1], c[2], c[3]]) ^ word;
        c.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= m[i];
    }
}

fn frame_header(out: &mut Vec<u8>, opcode: u8, len: u64, mask: Option<[u8; 4]>) {
    out.push(0x80 | opcode);
    let m = if mask.is_some() { 0x80 } else { 0 };
    if len < 126 {
        out.push(m | len as u8);
    } else if len <= u16::MAX as u64 {
        out.push(m | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(m | 127);
        out.extend_from_slice(&len.to_be_bytes());
    }
    if let Some(k) = mask {
        out.extend_from_slice(&k);
    }
}

/// SP-over-TCP bytes in, WebSocket frames out.
pub struct WsWriter {
    masks: Option<MaskGen>,
    mask: [u8; 4],
    mask_pos: usize,
    /// Bytes of the SP header still to drop.
    sp_skip: usize,
    len_buf: [u8; 8],
    len_have: usize,
    body_left: u64,
    out: Vec<u8>,
    out_pos: usize,
    /// Control frames waiting for a message boundary.
    ctrl: Vec<u8>,
    /// Frames may go out (the handshake is done).
    pub ready: bool,
}

impl WsWriter {
    /// `client`: frames are masked, as RFC 6455 requires of clients.
    pub fn new(client: bool) -> Self {
        WsWriter {
            masks: client.then(MaskGen::new),
            mask: [0; 4],
            mask_pos: 0,
            sp_skip: SP_HEADER.len(),
            len_buf: [0; 8],
            len_have: 0,
            body_left: 0,
            out: Vec::new(),
            out_pos: 0,
            ctrl: Vec::new(),
            ready: false,
        }
    }

    /// Queues raw bytes (the handshake response) ahead of everything.
    pub fn push_raw(&mut self, b: &[u8]) {
        self.out.extend_from_slice(b);
    }

    /// Queues a control frame (a pong, say); it goes out between messages.
    pub fn queue_control(&mut self, opcode: u8, payload: &[u8]) {
        let mask = self.masks.as_mut().map(MaskGen::next);
        let mut f = Vec::with_capacity(payload.len() + 14);
        frame_header(&mut f, opcode, payload.len() as u64, mask);
        let start = f.len();
        f.extend_from_slice(payload);
        if let Some(k) = mask {
            apply_mask(&mut f[start..], k, 0);
        }
        self.ctrl.extend_from_slice(&f);
    }

    fn at_boundary(&self) -> bool {
        self.body_left == 0 && self.len_have == 0
    }

    pub fn wants_write(&self) -> bool {
        self.out_pos < self.out.len() || (!self.ctrl.is_empty() && self.ready)
    }

    /// Sends what is queued; `WouldBlock` if the socket would not take it all.
    pub fn flush<S: Write>(&mut self, sock: &mut S) -> io::Result<()> {
        if self.ready && self.at_boundary() && !self.ctrl.is_empty() {
            let c = std::mem::take(&mut self.ctrl);
            self.out.extend_from_slice(&c);
        }
        while self.out_pos < self.out.len() {
            match sock.write(&self.out[self.out_pos..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.out_pos += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.out.clear();
        self.out_pos = 0;
        sock.flush()
    }

    /// Takes SP-over-TCP bytes; returns how many were taken into frames.
    pub fn write<S: Write>(&mut self, sock: &mut S, buf: &[u8]) -> io::Result<usize> {
        match self.flush(sock) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Err(e),
            Err(e) => return Err(e),
        }
        let mut used = 0;
        while used < buf.len() && self.out.len() < CHUNK {
            let rest = &buf[used..];
            if self.sp_skip > 0 {
                let n = self.sp_skip.min(rest.len());
                self.sp_skip -= n;
                used += n;
            } else if self.body_left == 0 {
                if !self.ready {
                    break;
                }
                if self.len_have == 0 && !self.ctrl.is_empty() {
                    let c = std::mem::take(&mut self.ctrl);
                    self.out.extend_from_slice(&c);
                }
                let n = (8 - self.len_have).min(rest.len());
                self.len_buf[self.len_have..self.len_have + n].copy_from_slice(&rest[..n]);
                self.len_have += n;
                used += n;
                if self.len_have == 8 {
                    self.len_have = 0;
                    let len = u64::from_be_bytes(self.len_buf);
                    let mask = self.masks.as_mut().map(MaskGen::next);
                    frame_header(&mut self.out, 0x2, len, mask);
                    self.mask = mask.unwrap_or_default();
                    self.mask_pos = 0;
                    self.body_left = len;
                }
            } else {
                let n = (self.body_left.min(rest.len() as u64) as usize).min(CHUNK - self.out.len());
                let start = self.out.len();
                self.out.extend_from_slice(&rest[..n]);
                if self.masks.is_some() {
                    apply_mask(&mut self.out[start..], self.mask, self.mask_pos);
                    self.mask_pos = (self.mask_pos + n) % 4;
                }
                self.body_left -= n as u64;
                used += n;
            }
        }
        match self.flush(sock) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
        if used == 0 && !buf.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(used)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Payload {
    /// An unfragmented data message: straight to the caller.
    Direct,
    /// Part of a fragmented message: gathered.
    Gather,
    /// A control frame's payload: gathered (at most 125 bytes).
    Control(u8),
}

/// WebSocket frames in, SP-over-TCP bytes out.
pub struct WsReader {
    /// A server expects masked frames, a client unmasked ones.
    server: bool,
    syn: Vec<u8>,
    syn_pos: usize,
    hdr: [u8; 14],
    hdr_have: usize,
    left: u64,
    mask: Option<[u8; 4]>,
    mask_pos: usize,
    kind: Payload,
    fin: bool,
    frag: Option<Vec<u8>>,
    ctrl: Vec<u8>,
    /// A ping's payload, to be answered with a pong by the writer.
    pub pong: Option<Vec<u8>>,
    closed: bool,
}

impl WsReader {
    pub fn new(server: bool) -> Self {
        WsReader {
            server,
            syn: SP_HEADER.to_vec(),
            syn_pos: 0,
            hdr: [0; 14],
            hdr_have: 0,
            left: 0,
            mask: None,
            mask_pos: 0,
            kind: Payload::Direct,
            fin: true,
            frag: None,
            ctrl: Vec::new(),
            pong: None,
            closed: false,
        }
    }

    /// Bytes are ready without reading the socket.
    pub fn has_buffered(&self) -> bool {
        self.syn_pos < self.syn.len()
    }

    fn emit(&mut self, b: &[u8]) {
        if self.syn_pos == self.syn.len() {
            self.syn.clear();
            self.syn_pos = 0;
        }
        self.syn.extend_from_slice(b);
    }

    fn unmask(&mut self, data: &mut [u8]) {
        if let Some(k) = self.mask {
            apply_mask(data, k, self.mask_pos);
            self.mask_pos = (self.mask_pos + data.len()) % 4;
        }
    }

    /// Reads SP-over-TCP bytes; Ok(0) at the end of the stream (a close
    /// frame or the socket's end).
    pub fn read<S: Read>(&mut self, sock: &mut S, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if self.syn_pos < self.syn.len() {
                let n = (self.syn.len() - self.syn_pos).min(buf.len());
                buf[..n].copy_from_slice(&self.syn[self.syn_pos..self.syn_pos + n]);
                self.syn_pos += n;
                return Ok(n);
            }
            if self.closed {
                return Ok(0);
            }
            if self.left > 0 {
                if self.kind == Payload::Direct {
                    let want = self.left.min(buf.len() as u64) as usize;
                    let n = sock.read(&mut buf[..want])?;
                    if n == 0 {
                        return Ok(0);
                    }
                    self.unmask(&mut buf[..n]);
                    self.left -= n as u64;
                    return Ok(n);
                }
                let mut tmp = [0u8; 16 * 1024];
                let want = self.left.min(tmp.len() as u64) as usize;
                let n = sock.read(&mut tmp[..want])?;
                if n == 0 {
                    return Ok(0);
                }
                self.unmask(&mut tmp[..n]);
                self.left -= n as u64;
                match self.kind {
                    Payload::Gather => {
                        let f = self.frag.get_or_insert_with(Vec::new);
                        f.try_reserve(n).map_err(|_| bad("out of memory for a fragmented message"))?;
                        f.extend_from_slice(&tmp[..n]);
                    }
                    _ => self.ctrl.extend_from_slice(&tmp[..n]),
                }
                if self.left == 0 {
                    self.end_frame()?;
                }
                continue;
            }
            if !self.read_header(sock)? {
                return Ok(0);
            }
        }
    }

    /// Reads and checks a frame header. Ok(false) at the socket's end.
    fn read_header<S: Read>(&mut self, sock: &mut S) -> io::Result<bool> {
        loop {
            let need = if self.hdr_have < 2 {
                2
            } else {
                let ext = match self.hdr[1] & 0x7f {
                    126 => 2,
                    127 => 8,
                    _ => 0,
                };
                2 + ext + if self.hdr[1] & 0x80 != 0 { 4 } else { 0 }
            };
            if self.hdr_have == need {
                break;
            }
            let n = sock.read(&mut self.hdr[self.hdr_have..need])?;
            if n == 0 {
                return Ok(false);
            }
            self.hdr_have += n;
        }
        let h = self.hdr;
        let size = self.hdr_have;
        self.hdr_have = 0;
        let fin = h[0] & 0x80 != 0;
        let opcode = h[0] & 0x0f;
        if h[0] & 0x70 != 0 {
            return Err(bad("reserved bits set (no extension was negotiated)"));
        }
        let masked = h[1] & 0x80 != 0;
        if masked != self.server {
            return Err(bad(if self.server { "a client frame is not masked" } else { "a server frame is masked" }));
        }
        let (len, at) = match h[1] & 0x7f {
            126 => (u16::from_be_bytes([h[2], h[3]]) as u64, 4),
            127 => (u64::from_be_bytes(h[2..10].try_into().unwrap_or_default()), 10),
            l => (l as u64, 2),
        };
        if len >> 63 != 0 {
            return Err(bad("frame length out of range"));
        }
        self.mask = masked.then(|| [h[at], h[at + 1], h[at + 2], h[at + 3]]);
        debug_assert_eq!(size, at + if masked { 4 } else { 0 });
        self.mask_pos = 0;
        self.left = len;
        self.fin = fin;
        match opcode {
            0x8..=0xa => {
                if !fin || len > 125 {
                    return Err(bad("malformed control frame"));
                }
                self.kind = Payload::Control(opcode);
                self.ctrl.clear();
            }
            0x2 if self.frag.is_some() => return Err(bad("a new message inside a fragmented one")),
            0x2 if fin => {
                self.kind = Payload::Direct;
                self.emit(&len.to_be_bytes());
            }
            0x2 => {
                self.kind = Payload::Gather;
                self.frag = Some(Vec::new());
            }
            0x0 if self.frag.is_none() => return Err(bad("a continuation frame outside a message")),
            0x0 => self.kind = Payload::Gather,
            0x1 => return Err(bad("a text frame (SP messages are binary)")),
            op => return Err(bad(format!("unknown opcode {op:#x}"))),
        }
        if self.kind == Payload::Gather {
            let have = self.frag.as_ref().map_or(0, |f| f.len() as u64);
            if have.saturating_add(len) > MAX_FRAGMENTED {
                return Err(bad(format!("fragmented message over {MAX_FRAGMENTED} bytes")));
            }
        }
        if len == 0 {
            self.end_frame()?;
        }
        Ok(true)
    }

    fn end_frame(&mut self) -> io::Result<()> {
        match self.kind {
            Payload::Direct => {}
            Payload::Gather if self.fin => {
                let f = self.frag.take().unwrap_or_default();
                self.emit(&(f.len() as u64).to_be_bytes());
                self.emit(&f);
            }
            Payload::Gather => {}
            Payload::Control(0x8) => self.closed = true,
            Payload::Control(0x9) => self.pong = Some(std::mem::take(&mut self.ctrl)),
            Payload::Control(_) => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    /// An SP-over-TCP byte stream: the header, then the messages.
    fn sp_stream(msgs: &[&[u8]]) -> Vec<u8> {
        let mut v = SP_HEADER.to_vec();
        for m in msgs {
            v.extend_from_slice(&(m.len() as u64).to_be_bytes());
            v.extend_from_slice(m);
        }
        v
    }

    /// A writer taking at most `cap` bytes per call.
    struct Slow {
        out: Vec<u8>,
        cap: usize,
        block: bool,
    }
    impl Write for Slow {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.block = !self.block;
            if self.block {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = b.len().min(self.cap);
            self.out.extend_from_slice(&b[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn write_all_ws(w: &mut WsWriter, sock: &mut Slow, data: &[u8]) {
        let mut used = 0;
        let mut spins = 0;
        while used < data.len() {
            spins += 1;
            assert!(spins < 10_000_000);
            match w.write(sock, &data[used..]) {
                Ok(n) => used += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
        }
        while w.wants_write() {
            let _ = w.flush(sock);
        }
    }

    fn read_all(r: &mut WsReader, wire: Vec<u8>, chunk: usize) -> Vec<u8> {
        let mut c = Cursor::new(wire);
        let mut out = Vec::new();
        let mut buf = vec![0u8; chunk];
        loop {
            match r.read(&mut c, &mut buf) {
                Ok(0) => return out,
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) => panic!("{e}"),
            }
        }
    }

    #[test]
    fn accept_key_matches_rfc_6455_example() {
        assert_eq!(accept_key("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert_eq!(base64(b"foob"), "Zm9vYg==");
        assert_eq!(base64(b"fooba"), "Zm9vYmE=");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn frames_round_trip_masked_and_not_through_partial_io() {
        let big: Vec<u8> = (0..200_000u32).map(|i| (i % 247) as u8).collect();
        let mid = vec![3u8; 300];
        let msgs: [&[u8]; 4] = [b"", b"hello", &mid, &big];
        let stream = sp_stream(&msgs);
        for client in [true, false] {
            let mut w = WsWriter::new(client);
            w.ready = true;
            let mut sock = Slow { out: Vec::new(), cap: 1000, block: false };
            write_all_ws(&mut w, &mut sock, &stream);
            // No SP header on the wire; each message is one FIN binary frame.
            assert_eq!(sock.out[0], 0x82);
            assert_eq!(sock.out[1] & 0x80 != 0, client);
            let mut r = WsReader::new(client);
            for chunk in [1, 7, 65536] {
                let mut r2 = WsReader::new(client);
                assert_eq!(read_all(&mut r2, sock.out.clone(), chunk), stream, "chunk {chunk}");
            }
            assert_eq!(read_all(&mut r, sock.out, 4096), stream);
        }
    }

    #[test]
    fn fragments_are_gathered_and_pings_answered() {
        // Server view: masked client frames, "ab" + "cd" as fragments with a
        // ping between them, then a close.
        let mut wire = Vec::new();
        let k = [1, 2, 3, 4];
        for (op, fin, p) in [(0x2u8, false, &b"ab"[..]), (0x9, true, b"hi"), (0x0, true, b"cd"), (0x8, true, b"")] {
            let mut f = Vec::new();
            frame_header(&mut f, op, p.len() as u64, Some(k));
            if !fin {
                f[0] &= 0x7f;
            }
            let s = f.len();
            f.extend_from_slice(p);
            apply_mask(&mut f[s..], k, 0);
            wire.extend(f);
        }
        let mut r = WsReader::new(true);
        let out = read_all(&mut r, wire, 3);
        assert_eq!(out, sp_stream(&[b"abcd"]));
        assert_eq!(r.pong.as_deref(), Some(&b"hi"[..]));
    }

    #[test]
    fn protocol_violations_are_errors() {
        let cases: Vec<(bool, Vec<u8>)> = vec![
            (true, vec![0x82, 0x05, b'h', b'e', b'l', b'l', b'o']), // unmasked to a server
            (false, vec![0x82, 0x81, 0, 0, 0, 0, 1]),               // masked to a client
            (false, vec![0x81, 0x01, b'x']),                        // text
            (false, vec![0xc2, 0x00]),                              // RSV1
            (false, vec![0x80, 0x00]),                              // stray continuation
            (false, vec![0x89, 126, 0, 200]),                       // long control frame
            (false, vec![0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 0]),    // 2^63
            (false, vec![0x8f, 0x00]),                              // unknown opcode
            (false, vec![0x02, 127, 0, 0, 0, 1, 0, 0, 0, 0]),       // fragment over the cap
        ];
        for (server, wire) in cases {
            let mut r = WsReader::new(server);
            let mut buf = [0u8; 64];
            let mut c = Cursor::new(wire.clone());
            let mut res = Ok(1);
            while matches!(res, Ok(n) if n > 0) {
                res = r.read(&mut c, &mut buf);
            }
            let e = res.expect_err(&format!("{wire:?}"));
            assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{wire:?}: {e}");
        }
    }

    #[test]
    fn handshake_accepts_a_valid_request_and_refuses_others() {
        let (req, key) = client_request("127.0.0.1:5555", "/p").unwrap();
        let mut hs = ServerHandshake::new("/p");
        let mut reply = Vec::new();
        let resp = hs.advance(&mut Cursor::new(req.clone()), &mut reply).unwrap().unwrap();
        let text = String::from_utf8(resp.clone()).unwrap();
        assert!(text.contains("Sec-WebSocket-Protocol: pair1.sp.nanomsg.org"));
        let mut buf = Vec::new();
        assert!(client_response(&mut Cursor::new(resp), &mut buf, &key).unwrap());
        // Wrong path: 404; not an upgrade: 400; too long: refused.
        let mut reply = Vec::new();
        let e = ServerHandshake::new("/other").advance(&mut Cursor::new(req), &mut reply).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(String::from_utf8_lossy(&reply).starts_with("HTTP/1.1 404"));
        let mut reply = Vec::new();
        let get = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
        assert!(ServerHandshake::new("/").advance(&mut Cursor::new(get), &mut reply).is_err());
        assert!(String::from_utf8_lossy(&reply).starts_with("HTTP/1.1 400"));
        let long = vec![b'a'; MAX_HTTP_HEADER + 10];
        let e = ServerHandshake::new("/").advance(&mut Cursor::new(long), &mut Vec::new()).unwrap_err();
        assert!(e.to_string().contains("longer"));
        let e = ServerHandshake::new("/").advance(&mut Cursor::new(vec![0xff; 40]), &mut Vec::new()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        // A response with the wrong accept key is refused by the client.
        let bad = b"HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: xyz\r\n\r\n".to_vec();
        assert!(client_response(&mut Cursor::new(bad), &mut Vec::new(), &key).is_err());
    }
}
