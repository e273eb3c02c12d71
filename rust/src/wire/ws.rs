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
//! without being gathered, except for the rare fragmented message. Like
//! `tls::Tls`, both are state machines over a socket the caller passes in,
//! never blocking by themselves.
//!
//! Hostile peers: the HTTP head (request or response) may take at most
//! `MAX_HTTP_HEADER` bytes, read in chunks (the caller's handshake deadline
//! bounds its time); bytes read past its end are kept for the frames. The
//! reader has a message limit, settable at run time, that every data
//! frame's length and every fragmented message's running total are checked
//! against when its header arrives, before any byte of it is buffered
//! (fragmented messages also stay within `MAX_FRAGMENTED`): callers start
//! it at `proto::HANDSHAKE_LIMIT` and raise it once the peer has
//! authenticated. Control frames live in fixed arrays, and at most one pong
//! waits to be sent (the latest ping's), so pings from a peer that never
//! reads grow nothing. What a reader holds is at most min(limit,
//! `MAX_FRAGMENTED`) plus the bytes read past the HTTP head (under
//! `MAX_HTTP_HEADER`) plus an error value; tests/ws_fuzz.rs checks it, and
//! that it follows the bytes that arrived, not the lengths claimed. Every
//! malformed input is an `InvalidData` error value.

use crate::wire::frame::SP_HEADER;
use std::io::{self, Read, Write};

/// Largest HTTP request or response head accepted in the handshake, and
/// the most bytes read while looking for its end.
pub const MAX_HTTP_HEADER: usize = 8192;
/// Largest message accepted in fragments (they must be gathered before
/// their length is known), whatever the reader's message limit;
/// unfragmented messages stream, within the limit.
pub const MAX_FRAGMENTED: u64 = 64 << 20;
/// Largest control frame payload (RFC 6455 5.5).
pub const MAX_CONTROL: usize = 125;
/// Largest control frame: header (2), mask (4), payload.
pub const MAX_CONTROL_FRAME: usize = 6 + MAX_CONTROL;
/// The subprotocol NNG's pair1 over WebSocket negotiates.
pub const SP_SUBPROTOCOL: &str = "pair1.sp.nanomsg.org";
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// Output gathered per `write` call before it goes to the socket.
const CHUNK: usize = 64 * 1024;
/// Bytes asked of the socket per read of an HTTP head: a typical request
/// or response (200-500 bytes) arrives in one read, where it used to take
/// one recv per byte.
const HEAD_READ: usize = 1024;
/// Most bytes of a peer's text (a request line, a path) quoted in an error.
const QUOTED: usize = 80;

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("WebSocket: {}", msg.into()))
}

/// A peer's text as an error quotes it: cut at `QUOTED` bytes (on a
/// character boundary), so an error value stays small whatever was sent.
fn quoted(s: &str) -> String {
    if s.len() <= QUOTED {
        return s.to_string();
    }
    let mut end = QUOTED;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

/// Makes room for `extra` more bytes in `v`: its capacity doubles as bytes
/// arrive (so memory follows what was received, not what was claimed) but
/// never passes `most`, which must be at least `v.len() + extra`. An
/// allocation failure is an error value, not an abort.
fn reserve_within(v: &mut Vec<u8>, extra: usize, most: usize) -> io::Result<()> {
    let need = v.len() + extra;
    if need <= v.capacity() {
        return Ok(());
    }
    let target = v.capacity().saturating_mul(2).max(need).max(256).min(most.max(need));
    v.try_reserve_exact(target - v.len())
        .map_err(|_| io::Error::new(io::ErrorKind::OutOfMemory, "WebSocket: out of memory"))
}

fn base64(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// `Sec-WebSocket-Accept` for a client's `Sec-WebSocket-Key`.
pub fn accept_key(key: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, format!("{key}{GUID}").as_bytes());
    base64(d.as_ref())
}

/// HTTP's optional whitespace around a header value (RFC 9110 5.6.3).
fn trim_ows(s: &str) -> &str {
    s.trim_matches([' ', '\t'])
}

/// The HTTP head of a message, borrowed from the bytes read: its first
/// line and its header lines, parsed when asked (nothing is allocated, so
/// a head of thousands of tiny headers costs no memory).
struct Head<'a> {
    first: &'a str,
    rest: &'a str,
}

impl<'a> Head<'a> {
    /// `raw` is the head up to and including its blank line.
    fn parse(raw: &'a [u8]) -> io::Result<Head<'a>> {
        let text = std::str::from_utf8(raw).map_err(|_| bad("the HTTP head is not text"))?;
        let (first, rest) = text.split_once("\r\n").unwrap_or((text, ""));
        if rest.split("\r\n").any(|l| !l.is_empty() && !l.contains(':')) {
            return Err(bad("malformed HTTP header line"));
        }
        Ok(Head { first, rest })
    }

    /// (name, value) of every header line, trimmed, in order.
    fn headers(&self) -> impl Iterator<Item = (&'a str, &'a str)> {
        self.rest.split("\r\n").filter_map(|l| l.split_once(':')).map(|(k, v)| (trim_ows(k), trim_ows(v)))
    }

    /// The first header called `name` (case-insensitive).
    fn get(&self, name: &str) -> Option<&'a str> {
        self.headers().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v)
    }

    /// A header called `name` lists `token` (comma-separated,
    /// case-insensitive).
    fn has_token(&self, name: &str, token: &str) -> bool {
        self.headers()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .any(|(_, v)| v.split(',').any(|t| trim_ows(t).eq_ignore_ascii_case(token)))
    }
}

/// Reads an HTTP head in chunks of up to `HEAD_READ` bytes, resumable
/// across `WouldBlock` (the bytes so far stay in `buf`). Ok(n) once the
/// head is complete: it is `buf[..n]`, blank line included, and the bytes
/// after it (a client's pipelined frames, a server's first frames sent with
/// its response) were read too and belong to the WebSocket reader. At most
/// `MAX_HTTP_HEADER` bytes are ever read or held.
fn read_head<S: Read>(sock: &mut S, buf: &mut Vec<u8>) -> io::Result<usize> {
    let mut chunk = [0u8; HEAD_READ];
    loop {
        if buf.len() >= MAX_HTTP_HEADER {
            return Err(bad(format!("HTTP head longer than {MAX_HTTP_HEADER} bytes")));
        }
        let want = (MAX_HTTP_HEADER - buf.len()).min(HEAD_READ);
        let n = match sock.read(&mut chunk[..want])? {
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            n => n,
        };
        // The blank line may straddle the previous read.
        let from = buf.len().saturating_sub(3);
        reserve_within(buf, n, MAX_HTTP_HEADER)?;
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf[from..].windows(4).position(|w| w == b"\r\n\r\n") {
            return Ok(from + i + 4);
        }
    }
}

/// Takes the bytes after a complete head out of `buf` (moved to the
/// front, in its own allocation: nothing new is allocated) and frees `buf`
/// if none are left.
fn after_head(buf: &mut Vec<u8>, head_len: usize) -> Vec<u8> {
    buf.drain(..head_len);
    let rest = std::mem::take(buf);
    if rest.is_empty() {
        Vec::new()
    } else {
        rest
    }
}

/// A completed server handshake.
#[derive(Debug)]
pub struct Upgrade {
    /// The 101 response, to be sent before any frame.
    pub response: Vec<u8>,
    /// Bytes the client sent after its request (pipelined frames): the
    /// WebSocket reader must take them first (`WsReader::push_input`).
    pub rest: Vec<u8>,
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

    /// Reads the request: Err(WouldBlock) until it is complete, then
    /// Ok(Upgrade) if it is valid. A refusal is Err(InvalidData), with the
    /// HTTP error response to send in `reply` (fixed text, whatever the
    /// request said); a head that is not text, has a line without a colon,
    /// or is too long is refused with no reply.
    pub fn advance<S: Read>(&mut self, sock: &mut S, reply: &mut Vec<u8>) -> io::Result<Upgrade> {
        let end = read_head(sock, &mut self.buf)?;
        let resp = {
            let head = Head::parse(&self.buf[..end])?;
            Self::respond(&head, &self.path, reply)?
        };
        Ok(Upgrade { response: resp.into_bytes(), rest: after_head(&mut self.buf, end) })
    }

    fn respond(head: &Head, path: &str, reply: &mut Vec<u8>) -> io::Result<String> {
        let refuse = |reply: &mut Vec<u8>, status: &str, why: String| {
            reply.extend_from_slice(format!("HTTP/1.1 {status}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n").as_bytes());
            Err(bad(why))
        };
        let mut parts = head.first.split(' ');
        let (method, target, version) = (parts.next(), parts.next(), parts.next());
        if method != Some("GET") || version != Some("HTTP/1.1") {
            return refuse(reply, "400 Bad Request", format!("not a WebSocket upgrade request: '{}'", quoted(head.first)));
        }
        let target = target.unwrap_or_default();
        let asked = target.split('?').next().unwrap_or_default();
        if asked != path {
            return refuse(reply, "404 Not Found", format!("request for path '{}', listening at '{path}'", quoted(asked)));
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
        Ok(resp)
    }
}

/// The client's upgrade request for `host` (as the Host header gives it)
/// and `path`, with a fresh key; returns the request and the key.
pub fn client_request(host: &str, path: &str) -> io::Result<(Vec<u8>, String)> {
    let key = base64(&crate::sys::random::random_bytes(16)?);
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: {SP_SUBPROTOCOL}\r\n\r\n"
    );
    Ok((req.into_bytes(), key))
}

/// Reads and checks the server's response to `client_request`, resumable
/// across `WouldBlock` like `read_head` (`buf` keeps the bytes so far).
/// Ok(rest) once accepted: `rest` are the bytes the server sent after its
/// response (its first frames, often in the same segment), which the
/// WebSocket reader must take first (`WsReader::push_input`).
pub fn client_response<S: Read>(sock: &mut S, buf: &mut Vec<u8>, key: &str) -> io::Result<Vec<u8>> {
    let end = read_head(sock, buf)?;
    {
        let head = Head::parse(&buf[..end])?;
        // "HTTP/1.1 101", then the end or a reason phrase ("1010" is no 101).
        let status = head.first.strip_prefix("HTTP/1.1 101");
        if !status.is_some_and(|r| r.is_empty() || r.starts_with(' ')) {
            return Err(bad(format!("the server refused the upgrade: '{}'", quoted(head.first))));
        }
        if head.get("sec-websocket-accept") != Some(accept_key(key).as_str()) {
            return Err(bad("the server's Sec-WebSocket-Accept does not match"));
        }
        if let Some(p) = head.get("sec-websocket-protocol") {
            if p != SP_SUBPROTOCOL {
                return Err(bad(format!("the server chose subprotocol '{}'", quoted(p))));
            }
        }
    }
    Ok(after_head(buf, end))
}

/// A small PRNG for frame masks (RFC 6455 wants them unpredictable to
/// third parties; masking is not a secrecy measure), seeded from the
/// system's random source.
struct MaskGen(u64);

impl MaskGen {
    fn new() -> Self {
        let seed = crate::sys::random::random_bytes(8).ok().and_then(|b| b.try_into().ok()).map(u64::from_le_bytes);
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
    /// Frames on their way to the socket: at most `CHUNK` of a message, a
    /// frame header and one control frame (see `flush` and `write`).
    out: Vec<u8>,
    out_pos: usize,
    /// At most one control frame (a pong) waiting for a message boundary.
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

    /// Queues a pong answering a ping with `payload` (at most
    /// `MAX_CONTROL` bytes; longer is cut); it goes out between messages.
    /// A pong not yet sent is replaced, as RFC 6455 5.5.3 allows: a peer
    /// that pings and never reads gets one pong, not a growing queue.
    pub fn queue_pong(&mut self, payload: &[u8]) {
        let payload = &payload[..payload.len().min(MAX_CONTROL)];
        let mask = self.masks.as_mut().map(MaskGen::next);
        self.ctrl.clear();
        // Sized once for the largest pong, so it never grows by doubling.
        self.ctrl.reserve_exact(MAX_CONTROL_FRAME);
        frame_header(&mut self.ctrl, 0xa, payload.len() as u64, mask);
        let start = self.ctrl.len();
        self.ctrl.extend_from_slice(payload);
        if let Some(k) = mask {
            apply_mask(&mut self.ctrl[start..], k, 0);
        }
    }

    fn at_boundary(&self) -> bool {
        self.body_left == 0 && self.len_have == 0
    }

    /// Bytes wait for the socket (the handshake response, frames, a pong).
    pub fn wants_write(&self) -> bool {
        self.out_pos < self.out.len() || (!self.ctrl.is_empty() && self.ready)
    }

    /// Bytes allocated for output. Pings alone make it hold at most two
    /// pongs (`MAX_CONTROL_FRAME` each): one on its way, one waiting.
    /// With data, `out` holds at most `CHUNK` bytes of what this side
    /// writes, a frame header and a pong, whatever the peer sends
    /// (tests/ws_fuzz.rs).
    pub fn allocated(&self) -> usize {
        self.out.capacity() + self.ctrl.capacity()
    }

    /// Sends what is queued; `WouldBlock` if the socket would not take it all.
    pub fn flush<S: Write>(&mut self, sock: &mut S) -> io::Result<()> {
        loop {
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
            // The pending pong goes out only once `out` has drained: moved
            // in while `out` still held an earlier one, every ping from a
            // peer that never reads would add a frame.
            if self.ready && self.at_boundary() && !self.ctrl.is_empty() {
                self.out.reserve_exact(self.ctrl.len());
                self.out.extend_from_slice(&self.ctrl);
                self.ctrl.clear();
                continue;
            }
            return sock.flush();
        }
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
                    // `flush` above emptied `out` of earlier pongs.
                    self.out.extend_from_slice(&self.ctrl);
                    self.ctrl.clear();
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

/// A ping's payload, for the writer's pong: a fixed array, so pings cost
/// no allocation.
#[derive(Clone, Copy)]
pub struct Pong {
    buf: [u8; MAX_CONTROL],
    len: usize,
}

impl Pong {
    pub fn payload(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// Bytes read past the end of the HTTP head, taken before the socket.
#[derive(Default)]
struct Input {
    pre: Vec<u8>,
    pos: usize,
}

impl Input {
    fn read<S: Read>(&mut self, sock: &mut S, out: &mut [u8]) -> io::Result<usize> {
        if self.pos < self.pre.len() {
            let n = (self.pre.len() - self.pos).min(out.len());
            out[..n].copy_from_slice(&self.pre[self.pos..self.pos + n]);
            self.pos += n;
            if self.pos == self.pre.len() {
                *self = Input::default();
            }
            return Ok(n);
        }
        sock.read(out)
    }

    fn pending(&self) -> bool {
        self.pos < self.pre.len()
    }
}

/// WebSocket frames in, SP-over-TCP bytes out.
pub struct WsReader {
    /// A server expects masked frames, a client unmasked ones.
    server: bool,
    /// The largest message accepted (see `set_message_limit`).
    limit: u64,
    input: Input,
    /// Synthetic bytes for the caller (the SP header, a length prefix):
    /// `syn[syn_pos..syn_len]`, never more than 16 bytes.
    syn: [u8; 16],
    syn_pos: usize,
    syn_len: usize,
    /// A completed fragmented message, handed out after its length prefix.
    gathered: Vec<u8>,
    gathered_pos: usize,
    hdr: [u8; 14],
    hdr_have: usize,
    left: u64,
    mask: Option<[u8; 4]>,
    mask_pos: usize,
    kind: Payload,
    fin: bool,
    /// The fragmented message being gathered; Some between its first
    /// frame and its last.
    frag: Option<Vec<u8>>,
    /// Its length when complete, as far as the headers so far tell.
    frag_claimed: u64,
    ctrl: [u8; MAX_CONTROL],
    ctrl_len: usize,
    pong: Option<Pong>,
    closed: bool,
    /// A protocol error was returned: every later read returns one too
    /// (the state it left is not to be read on from).
    broken: bool,
}

impl WsReader {
    /// `limit`: the largest message accepted until `set_message_limit`
    /// says otherwise; `proto::HANDSHAKE_LIMIT` for a peer that has not
    /// authenticated.
    pub fn new(server: bool, limit: u64) -> Self {
        let mut syn = [0u8; 16];
        syn[..SP_HEADER.len()].copy_from_slice(&SP_HEADER);
        WsReader {
            server,
            limit,
            input: Input::default(),
            syn,
            syn_pos: 0,
            syn_len: SP_HEADER.len(),
            gathered: Vec::new(),
            gathered_pos: 0,
            hdr: [0; 14],
            hdr_have: 0,
            left: 0,
            mask: None,
            mask_pos: 0,
            kind: Payload::Direct,
            fin: true,
            frag: None,
            frag_claimed: 0,
            ctrl: [0; MAX_CONTROL],
            ctrl_len: 0,
            pong: None,
            closed: false,
            broken: false,
        }
    }

    /// The largest message accepted from now on: a data frame longer, or a
    /// fragmented message whose frames add up to more (or to more than
    /// `MAX_FRAGMENTED`), is an error when its header arrives. A frame
    /// already under way is not checked again.
    pub fn set_message_limit(&mut self, limit: u64) {
        self.limit = limit;
    }

    pub fn message_limit(&self) -> u64 {
        self.limit
    }

    /// Bytes that arrived before the reader was made (read past the end of
    /// the HTTP head): they are read before the socket.
    pub fn push_input(&mut self, bytes: Vec<u8>) {
        if !bytes.is_empty() {
            self.input = Input { pre: bytes, pos: 0 };
        }
    }

    /// The payload of the latest ping not yet answered, if any.
    pub fn take_pong(&mut self) -> Option<Pong> {
        self.pong.take()
    }

    /// Bytes are ready, or input waits, without reading the socket (poll
    /// would not report them).
    pub fn has_buffered(&self) -> bool {
        self.syn_pos < self.syn_len || self.gathered_pos < self.gathered.len() || self.input.pending()
    }

    /// Bytes this reader has allocated: a fragmented message (gathered or
    /// being handed out) and input read past the HTTP head.
    pub fn allocated(&self) -> usize {
        self.frag.as_ref().map_or(0, Vec::capacity) + self.gathered.capacity() + self.input.pre.capacity()
    }

    fn emit_len(&mut self, len: u64) {
        if self.syn_pos == self.syn_len {
            self.syn_pos = 0;
            self.syn_len = 0;
        }
        // Room: a length is emitted only once earlier output is handed
        // out, except right after the SP header (8 + 8 bytes).
        self.syn[self.syn_len..self.syn_len + 8].copy_from_slice(&len.to_be_bytes());
        self.syn_len += 8;
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
        if self.broken {
            return Err(bad("the stream broke earlier"));
        }
        let res = self.read_frames(sock, buf);
        if res.as_ref().is_err_and(|e| matches!(e.kind(), io::ErrorKind::InvalidData | io::ErrorKind::OutOfMemory)) {
            self.broken = true;
            self.frag = None;
        }
        res
    }

    fn read_frames<S: Read>(&mut self, sock: &mut S, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if self.syn_pos < self.syn_len {
                let n = (self.syn_len - self.syn_pos).min(buf.len());
                buf[..n].copy_from_slice(&self.syn[self.syn_pos..self.syn_pos + n]);
                self.syn_pos += n;
                return Ok(n);
            }
            if self.gathered_pos < self.gathered.len() {
                let n = (self.gathered.len() - self.gathered_pos).min(buf.len());
                buf[..n].copy_from_slice(&self.gathered[self.gathered_pos..self.gathered_pos + n]);
                self.gathered_pos += n;
                if self.gathered_pos == self.gathered.len() {
                    self.gathered = Vec::new();
                    self.gathered_pos = 0;
                }
                return Ok(n);
            }
            if self.closed {
                return Ok(0);
            }
            if self.left > 0 {
                if self.kind == Payload::Direct {
                    let want = self.left.min(buf.len() as u64) as usize;
                    let n = self.input.read(sock, &mut buf[..want])?;
                    if n == 0 {
                        return Ok(0);
                    }
                    self.unmask(&mut buf[..n]);
                    self.left -= n as u64;
                    return Ok(n);
                }
                let mut tmp = [0u8; 16 * 1024];
                let want = self.left.min(tmp.len() as u64) as usize;
                let n = self.input.read(sock, &mut tmp[..want])?;
                if n == 0 {
                    return Ok(0);
                }
                self.unmask(&mut tmp[..n]);
                self.left -= n as u64;
                match self.kind {
                    Payload::Gather => {
                        let f = self.frag.get_or_insert_with(Vec::new);
                        // Never past this frame's end, which the header
                        // check kept within the limit.
                        let frame_end = (f.len() + n).saturating_add(self.left as usize);
                        reserve_within(f, n, frame_end)?;
                        f.extend_from_slice(&tmp[..n]);
                    }
                    _ => {
                        // `left` started at most MAX_CONTROL (checked in
                        // the header): this fits.
                        let end = (self.ctrl_len + n).min(MAX_CONTROL);
                        self.ctrl[self.ctrl_len..end].copy_from_slice(&tmp[..end - self.ctrl_len]);
                        self.ctrl_len = end;
                    }
                }
                if self.left == 0 {
                    self.end_frame();
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
            let n = self.input.read(sock, &mut self.hdr[self.hdr_have..need])?;
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
            127 => (u64::from_be_bytes([h[2], h[3], h[4], h[5], h[6], h[7], h[8], h[9]]), 10),
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
                if !fin || len > MAX_CONTROL as u64 {
                    return Err(bad("malformed control frame"));
                }
                self.kind = Payload::Control(opcode);
                self.ctrl_len = 0;
            }
            0x2 if self.frag.is_some() => return Err(bad("a new message inside a fragmented one")),
            0x2 if fin => {
                if len > self.limit {
                    return Err(bad(format!("a message of {len} bytes, over the limit of {}", self.limit)));
                }
                self.kind = Payload::Direct;
                self.emit_len(len);
            }
            0x2 => {
                self.kind = Payload::Gather;
                self.frag_claimed = 0;
                self.frag = Some(Vec::new());
            }
            0x0 if self.frag.is_none() => return Err(bad("a continuation frame outside a message")),
            0x0 => self.kind = Payload::Gather,
            0x1 => return Err(bad("a text frame (SP messages are binary)")),
            op => return Err(bad(format!("unknown opcode {op:#x}"))),
        }
        if self.kind == Payload::Gather {
            // Checked on the running total of the headers' claims, before
            // any of this frame's bytes arrive: memory for a fragmented
            // message stays within the limit however it is cut up.
            let cap = self.limit.min(MAX_FRAGMENTED);
            let total = self.frag_claimed.saturating_add(len);
            if total > cap {
                return Err(bad(format!("a fragmented message of {total} bytes or more, over the limit of {cap}")));
            }
            self.frag_claimed = total;
        }
        if len == 0 {
            self.end_frame();
        }
        Ok(true)
    }

    fn end_frame(&mut self) {
        match self.kind {
            Payload::Direct => {}
            Payload::Gather if self.fin => {
                let f = self.frag.take().unwrap_or_default();
                self.emit_len(f.len() as u64);
                // Handed out from its own buffer: no second copy.
                self.gathered = f;
                self.gathered_pos = 0;
            }
            Payload::Gather => {}
            Payload::Control(0x8) => self.closed = true,
            Payload::Control(0x9) => {
                let mut p = Pong { buf: [0; MAX_CONTROL], len: self.ctrl_len };
                p.buf[..self.ctrl_len].copy_from_slice(&self.ctrl[..self.ctrl_len]);
                self.pong = Some(p);
            }
            Payload::Control(_) => {}
        }
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
            let mut r = WsReader::new(client, u64::MAX);
            for chunk in [1, 7, 65536] {
                let mut r2 = WsReader::new(client, u64::MAX);
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
        let mut r = WsReader::new(true, u64::MAX);
        let out = read_all(&mut r, wire, 3);
        assert_eq!(out, sp_stream(&[b"abcd"]));
        assert_eq!(r.take_pong().map(|p| p.payload().to_vec()), Some(b"hi".to_vec()));
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
            let mut r = WsReader::new(server, u64::MAX);
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
        let up = hs.advance(&mut Cursor::new(req.clone()), &mut reply).unwrap();
        assert!(up.rest.is_empty());
        let resp = up.response;
        let text = String::from_utf8(resp.clone()).unwrap();
        assert!(text.contains("Sec-WebSocket-Protocol: pair1.sp.nanomsg.org"));
        let mut buf = Vec::new();
        assert!(client_response(&mut Cursor::new(resp), &mut buf, &key).unwrap().is_empty());
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

    /// Masked client frames (server view) with mask `k`.
    fn client_frames(frames: &[(u8, bool, &[u8])]) -> Vec<u8> {
        let k = [9, 8, 7, 6];
        let mut wire = Vec::new();
        for &(op, fin, p) in frames {
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
        wire
    }

    fn read_until_err(r: &mut WsReader, wire: Vec<u8>) -> (Vec<u8>, io::Result<usize>) {
        let mut c = Cursor::new(wire);
        let mut out = Vec::new();
        let mut buf = [0u8; 100];
        loop {
            match r.read(&mut c, &mut buf) {
                Ok(0) => return (out, Ok(0)),
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) => return (out, Err(e)),
            }
        }
    }

    #[test]
    fn the_message_limit_holds_for_frames_and_fragments_and_can_be_raised() {
        let m = [5u8; 10];
        // Unfragmented: 10 bytes pass a limit of 10, not of 9; the header
        // alone is refused (no payload needed).
        let (out, end) = read_until_err(&mut WsReader::new(true, 10), client_frames(&[(0x2, true, &m)]));
        assert_eq!((out, end.unwrap()), (sp_stream(&[&m]), 0));
        let mut hdr = client_frames(&[(0x2, true, &m)]);
        hdr.truncate(6);
        let (_, end) = read_until_err(&mut WsReader::new(true, 9), hdr);
        assert!(end.unwrap_err().to_string().contains("over the limit of 9"));
        // Fragmented: 4 + 4 + 2 passes 10; 4 + 4 + 3 is refused at the
        // third header, whatever pings come between.
        let ok = client_frames(&[(0x2, false, &m[..4]), (0x9, true, b"p"), (0x0, false, &m[..4]), (0x0, true, &m[..2])]);
        let (out, end) = read_until_err(&mut WsReader::new(true, 10), ok);
        assert_eq!((out, end.unwrap()), (sp_stream(&[&m]), 0));
        let mut over = client_frames(&[(0x2, false, &m[..4]), (0x0, false, &m[..4]), (0x0, true, &m[..3])]);
        over.truncate(over.len() - 3);
        let mut r = WsReader::new(true, 10);
        let (out, end) = read_until_err(&mut r, over);
        assert_eq!(out, SP_HEADER);
        assert!(end.unwrap_err().to_string().contains("over the limit of 10"));
        assert_eq!(r.allocated(), 0);
        // Later reads stay errors.
        assert!(r.read(&mut Cursor::new(vec![0x82, 0x80, 0, 0, 0, 0]), &mut [0u8; 8]).is_err());
        // MAX_FRAGMENTED caps fragments whatever the limit.
        let mut r = WsReader::new(false, u64::MAX);
        let mut wire = vec![0x02, 127];
        wire.extend((MAX_FRAGMENTED + 1).to_be_bytes());
        assert!(read_until_err(&mut r, wire).1.is_err());
        // Raised after the first message: the second may be longer.
        let big = [1u8; 50];
        let wire = client_frames(&[(0x2, true, &m), (0x2, true, &big)]);
        let mut r = WsReader::new(true, 10);
        let mut c = Cursor::new(wire);
        let mut out = Vec::new();
        let mut buf = [0u8; 64];
        while out.len() < 8 + 8 + 10 {
            let n = r.read(&mut c, &mut buf).unwrap();
            out.extend_from_slice(&buf[..n]);
        }
        r.set_message_limit(50);
        loop {
            match r.read(&mut c, &mut buf).unwrap() {
                0 => break,
                n => out.extend_from_slice(&buf[..n]),
            }
        }
        assert_eq!(out, sp_stream(&[&m, &big]));
    }

    #[test]
    fn bytes_after_the_http_head_reach_the_reader() {
        let (req, key) = client_request("h:1", "/").unwrap();
        let frames = client_frames(&[(0x2, true, b"hello"), (0x2, true, b"again")]);
        // Server side: a client that pipelines its first frames.
        let mut wire = req.clone();
        wire.extend_from_slice(&frames);
        let mut sock = Cursor::new(wire);
        let up = ServerHandshake::new("/").advance(&mut sock, &mut Vec::new()).unwrap();
        assert!(!up.rest.is_empty());
        let mut r = WsReader::new(true, 100);
        r.push_input(up.rest);
        assert!(r.has_buffered());
        let mut out = Vec::new();
        let mut buf = [0u8; 3];
        loop {
            match r.read(&mut sock, &mut buf).unwrap() {
                0 => break,
                n => out.extend_from_slice(&buf[..n]),
            }
        }
        assert_eq!(out, sp_stream(&[b"hello", b"again"]));
        // Client side: the host's first frame in the response's segment.
        let mut resp = ServerHandshake::new("/").advance(&mut Cursor::new(req), &mut Vec::new()).unwrap().response;
        resp.extend_from_slice(&[0x82, 2, b'h', b'i']);
        let rest = client_response(&mut Cursor::new(resp), &mut Vec::new(), &key).unwrap();
        assert_eq!(rest, [0x82, 2, b'h', b'i']);
    }

    #[test]
    fn the_http_head_is_read_in_chunks() {
        struct Counted(Cursor<Vec<u8>>, usize);
        impl Read for Counted {
            fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
                self.1 += 1;
                self.0.read(b)
            }
        }
        let (req, _) = client_request("127.0.0.1:5555", "/p").unwrap();
        let mut sock = Counted(Cursor::new(req), 0);
        ServerHandshake::new("/p").advance(&mut sock, &mut Vec::new()).unwrap();
        assert_eq!(sock.1, 1);
        // A head of exactly MAX_HTTP_HEADER bytes passes; one more does not.
        let pad = |n: usize| {
            let mut h = b"GET /p HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
                Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nX: "
                .to_vec();
            h.resize(n - 4, b'x');
            h.extend_from_slice(b"\r\n\r\n");
            h
        };
        assert!(ServerHandshake::new("/p").advance(&mut Cursor::new(pad(MAX_HTTP_HEADER)), &mut Vec::new()).is_ok());
        let e = ServerHandshake::new("/p").advance(&mut Cursor::new(pad(MAX_HTTP_HEADER + 1)), &mut Vec::new());
        assert!(e.err().unwrap().to_string().contains("longer"));
    }

    #[test]
    fn a_peer_that_pings_and_never_reads_gets_one_pending_pong() {
        struct Stuck(bool, Vec<u8>);
        impl Write for Stuck {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                if self.0 {
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                self.1.extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        for client in [false, true] {
            let mut w = WsWriter::new(client);
            w.ready = true;
            let mut sock = Stuck(true, Vec::new());
            for i in 0..10_000u32 {
                w.queue_pong(&[i as u8; MAX_CONTROL]);
                assert!(w.flush(&mut sock).is_err());
                assert!(w.allocated() <= 2 * MAX_CONTROL_FRAME, "{}", w.allocated());
            }
            w.queue_pong(b"last");
            sock.0 = false;
            w.flush(&mut sock).unwrap();
            // The pong that was on its way when the socket stuck, then the
            // latest alone.
            let (mut pongs, mut at) = (Vec::new(), 0);
            while at < sock.1.len() {
                let f = &sock.1[at..];
                assert_eq!(f[0], 0x8a);
                let (len, masked) = ((f[1] & 0x7f) as usize, f[1] & 0x80 != 0);
                let start = 2 + if masked { 4 } else { 0 };
                let mut p = f[start..start + len].to_vec();
                if masked {
                    apply_mask(&mut p, [f[2], f[3], f[4], f[5]], 0);
                }
                pongs.push(p);
                at += start + len;
            }
            assert_eq!(pongs, [vec![0u8; MAX_CONTROL], b"last".to_vec()]);
        }
    }
}
