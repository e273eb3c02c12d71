//! Property tests of everything a WebSocket peer reaches before it has
//! authenticated: the frame reader (`WsReader`, server and client modes),
//! the server's upgrade (`ServerHandshake::advance`), the client's check of
//! the response (`client_response`), and the writer's pong queue
//! (`WsWriter`), in the style of tests/fuzz.rs (the SP decoder's).
//!
//! The harness (counting allocator, `MIRAI_FUZZ_CASES`, watchdog, tallies,
//! mutations, the chunked reader) is a copy of fuzz.rs's, extended to
//! count live bytes: integration tests are separate crates, and a shared
//! module would mean reworking fuzz.rs, which other work is changing.
//!
//! Case counts. `MIRAI_FUZZ_CASES` multiplies every count below (default
//! 1; `bench/fuzz.sh` runs this file with fuzz.rs at 30x):
//!
//! | test                               | cases at 1x |
//! | ---------------------------------- | ----------- |
//! | `reader_random_bytes`              | 25 000      |
//! | `reader_valid_then_mutated`        | 35 000      |
//! | `reader_length_fields`             | 30 000      |
//! | `reader_fragment_flood`            | 5 000       |
//! | `handshake_server_requests`        | 25 000      |
//! | `handshake_client_responses`       | 15 000      |
//! | `writer_pongs_stay_bounded`        | 5 000       |
//!
//! 140 000 cases by default: about 5 s in release mode on 2 cores (the
//! flood test, 4.6 s of it, is the slowest). Each test prints (with
//! `--nocapture`) its case count, time, a memory figure (what it held beyond
//! the bound's variable part, or in all) and a tally of the paths its cases
//! reached; at 10 000 cases or more, a path a test is meant to reach and
//! did not fails it (generator rot).
//!
//! Properties, each asserted below:
//!
//! Reader (`WsReader`), over any bytes, any message limit (with or without
//! a raise after the first message, as the host raises it after a Hello),
//! any split between input pushed after the HTTP head and the socket, any
//! chunking with `WouldBlock` and `Interrupted` between chunks, and any
//! size of the caller's buffer:
//! - no panic, no hang (a watchdog aborts a case that runs for 60 s);
//! - its output equals an independent model's (`ws_model`): the SP header,
//!   then each message's length and bytes (a frame's bytes as they arrive
//!   when it is unfragmented, a fragmented message once complete), up to
//!   the end: the socket's end (`Ok(0)`), a close frame (`Ok(0)`, having
//!   read nothing past it) or a protocol error (`InvalidData`, having read
//!   nothing past the offending header, and every later read an error);
//!   valid streams give exactly the messages they were built from;
//! - the latest ping's payload is the pong it asks for;
//! - memory: at every moment of every `read` (live bytes, counted by the
//!   allocator), what the reader holds is at most
//!   `min(limit, MAX_FRAGMENTED) + P + 512`,
//!   where P is the input pushed after the HTTP head (under
//!   MAX_HTTP_HEADER, and 0 unless a peer pipelines), and 512 is an error
//!   value: `io::Error`'s box and its message, which quotes numbers and at
//!   most 80 bytes of peer text (measured: at most 205 bytes).
//!   Pings, pongs and the synthetic SP bytes use fixed arrays. It is also at
//!   most max(256, 2 x bytes consumed) + P + 512: memory follows the bytes
//!   that arrived, never a length a header claims.
//!
//! Handshake (`ServerHandshake::advance`, `client_response`), over random
//! bytes, generated requests and responses (every rule varied: method,
//! version, path and query, header case and whitespace, token lists,
//! duplicated headers, key lengths, subprotocols, status lines), mutated,
//! padded so the head ends just under, at and just over MAX_HTTP_HEADER,
//! followed by frames or junk, and chunked as above:
//! - no panic; the result equals an independent model's: the 101 response
//!   byte for byte (accept key, subprotocol), or the HTTP error reply
//!   (400, 404, 426) byte for byte, or an error with no reply (not text, a
//!   header line without a colon), or "too long", or `UnexpectedEof`;
//! - at most MAX_HTTP_HEADER bytes are ever read, and the bytes returned as
//!   read past the head are exactly those that follow it on the wire;
//! - memory: the most held at any moment, the handshake state and what it
//!   returns included, is at most MAX_HTTP_HEADER + 1024 (the response or
//!   reply, the accept key's computation and an error value; measured: at
//!   most 8 511 bytes, 319 over MAX_HTTP_HEADER).
//!
//! Writer (`WsWriter`): whatever mix of data, pongs queued and flushes into
//! a socket that blocks at random, its buffers hold at most two pongs
//! (2 x MAX_CONTROL_FRAME = 262 bytes: one on its way, one waiting) while
//! no data is written, and 2 x (64 KiB + 512) with data; so a peer that
//! pings and never reads grows nothing. Data reaches the wire intact with
//! pongs only between messages; the pongs sent are queued ones, in order,
//! and the last is the latest queued.
//!
//! And over a real socket, a daemon (`ClientConn::connect`) against a host
//! played by hand: until the host's Init it is held to HANDSHAKE_LIMIT (a
//! fragmented 1 MiB message is refused, the daemon holding under 92 KiB),
//! after it to its own limit (a 100 KB task arrives), frames that come in
//! the same segment as the 101 are read, it answers no ping before the
//! host has proved itself, and it reads only `PRE_AUTH_BYTES` from a host
//! that streams pings instead.

use mirai::wire::frame::SP_HEADER;
use mirai::wire::proto::HANDSHAKE_LIMIT;
use mirai::wire::ws::{
    self, client_response, ServerHandshake, WsReader, WsWriter, MAX_CONTROL, MAX_CONTROL_FRAME, MAX_FRAGMENTED, MAX_HTTP_HEADER,
    SP_SUBPROTOCOL,
};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestRunner};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The reader's constant beyond the limit and the pushed input.
const READER_SLACK: u64 = 512;
/// The handshake's constant beyond MAX_HTTP_HEADER.
const HANDSHAKE_SLACK: u64 = 1024;

// ------------------------------------------------------------------ allocator

/// Counts, on the current thread only and only while `TRACKING` is set, the
/// live bytes allocated since tracking began and their peak. Const-
/// initialised thread locals without destructors: touching them never
/// allocates. `realloc` counts as one step (new size minus old), as the
/// allocator API has it.
struct Counting;

thread_local! {
    static TRACKING: Cell<bool> = const { Cell::new(false) };
    static LIVE: Cell<i64> = const { Cell::new(0) };
    static PEAK: Cell<i64> = const { Cell::new(0) };
}

#[inline]
fn note(delta: i64) {
    let _ = TRACKING.try_with(|t| {
        if t.get() {
            let _ = LIVE.try_with(|l| {
                let v = l.get() + delta;
                l.set(v);
                let _ = PEAK.try_with(|p| p.set(p.get().max(v)));
            });
        }
    });
}

// SAFETY: every method passes its arguments on to the system allocator
// unchanged and returns what it returns; the bookkeeping around it neither
// allocates nor unwinds.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        note(l.size() as i64);
        // SAFETY: the caller's contract for this method, passed on.
        unsafe { System.alloc(l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        note(l.size() as i64);
        // SAFETY: the caller's contract for this method, passed on.
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        note(new as i64 - l.size() as i64);
        // SAFETY: the caller's contract for this method, passed on.
        unsafe { System.realloc(p, l, new) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        note(-(l.size() as i64));
        // SAFETY: the caller's contract for this method, passed on.
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Runs `f` with tracking on: (result, peak live bytes above the start).
fn measure<R>(f: impl FnOnce() -> R) -> (R, u64) {
    /// Turns tracking off even if `f` panics (proptest goes on shrinking).
    struct Off;
    impl Drop for Off {
        fn drop(&mut self) {
            TRACKING.with(|t| t.set(false));
        }
    }
    LIVE.with(|l| l.set(0));
    PEAK.with(|p| p.set(0));
    TRACKING.with(|t| t.set(true));
    let off = Off;
    let r = f();
    drop(off);
    (r, PEAK.with(|p| p.get()).max(0) as u64)
}

// ------------------------------------------------------------------ harness

/// The `MIRAI_FUZZ_CASES` multiplier (default 1).
fn multiplier() -> f64 {
    match std::env::var("MIRAI_FUZZ_CASES") {
        Ok(s) => match s.trim().parse::<f64>() {
            Ok(m) if m > 0.0 && m.is_finite() => m,
            _ => panic!("MIRAI_FUZZ_CASES must be a positive number (a multiplier), got '{s}'"),
        },
        Err(_) => 1.0,
    }
}

fn scaled(base: u32) -> u32 {
    ((base as f64 * multiplier()).round() as u32).max(1)
}

fn config(base: u32) -> ProptestConfig {
    ProptestConfig {
        cases: scaled(base),
        failure_persistence: None,
        max_shrink_iters: 20_000,
        max_shrink_time: 60_000,
        ..ProptestConfig::default()
    }
}

/// Aborts the process if no case starts for 60 s: a hang fails loudly
/// instead of stalling the suite.
struct Watchdog {
    last: Arc<AtomicU64>,
    done: Arc<AtomicBool>,
    t0: Instant,
}

impl Watchdog {
    fn new(name: &'static str) -> Watchdog {
        let limit = Duration::from_secs(60);
        let last = Arc::new(AtomicU64::new(0));
        let done = Arc::new(AtomicBool::new(false));
        let t0 = Instant::now();
        let (l, d) = (last.clone(), done.clone());
        std::thread::spawn(move || {
            while !d.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(250));
                let since = (t0.elapsed().as_millis() as u64).saturating_sub(l.load(Ordering::Relaxed));
                if since > limit.as_millis() as u64 && !d.load(Ordering::Relaxed) {
                    eprintln!("ws fuzz watchdog: one case of {name} ran for over {limit:?}: hang");
                    std::process::abort();
                }
            }
        });
        Watchdog { last, done, t0 }
    }
    fn tick(&self) {
        self.last.store(self.t0.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
    }
}

/// What the cases exercised, by tag, and the largest of a figure each test
/// reports (a memory figure: see each test).
#[derive(Default)]
struct Tally {
    tags: std::sync::Mutex<std::collections::BTreeMap<&'static str, u64>>,
    figure: AtomicU64,
}

impl Tally {
    fn hit(&self, tag: &'static str) {
        *self.tags.lock().unwrap_or_else(|e| e.into_inner()).entry(tag).or_default() += 1;
    }
    fn get(&self, tag: &str) -> u64 {
        self.tags.lock().unwrap_or_else(|e| e.into_inner()).get(tag).copied().unwrap_or(0)
    }
    fn figure(&self, bytes: u64) {
        self.figure.fetch_max(bytes, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.tags.lock().unwrap_or_else(|e| e.into_inner()).fmt(f)
    }
}

/// Runs `base` (times the multiplier) cases of `test` over `strategy` under
/// a watchdog; a failure panics with the shrunk input. Then, for runs of
/// 10 000 cases or more, every tag in `must` must have been hit.
fn fuzz<S: Strategy>(
    name: &'static str,
    base: u32,
    figure: &str,
    strategy: S,
    must: &[&str],
    test: impl Fn(S::Value, &Tally) -> Result<(), TestCaseError>,
) {
    let cfg = config(base);
    let cases = cfg.cases;
    let mut runner = TestRunner::new(cfg);
    let tally = Tally::default();
    let dog = Watchdog::new(name);
    let t0 = Instant::now();
    let result = runner.run(&strategy, |v| {
        dog.tick();
        test(v, &tally)
    });
    drop(dog);
    if let Err(e) = result {
        panic!("{name}: {e}");
    }
    eprintln!("{name}: {cases} cases in {:.1?}; {figure}: {} bytes; {tally:?}", t0.elapsed(), tally.figure.load(Ordering::Relaxed));
    if cases >= 10_000 {
        for tag in must {
            assert!(tally.get(tag) > 0, "{name}: no case reached '{tag}' ({tally:?})");
        }
    }
}

/// Fast deterministic bytes (xorshift64*).
fn fill(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip { at: u64, bit: u8 },
    Truncate { at: u64 },
    Insert { at: u64, bytes: Vec<u8> },
    Set { at: u64, value: u8 },
    Delete { at: u64 },
}

/// Picks a position: half the time among the first 64 bytes (headers and
/// length fields live there), otherwise anywhere.
fn pick(at: u64, len: usize) -> usize {
    if len == 0 {
        return 0;
    }
    let span = if at & 1 == 0 { len.min(64) } else { len };
    ((at >> 1) % span as u64) as usize
}

fn apply(wire: &mut Vec<u8>, muts: &[Mutation]) {
    for m in muts {
        let len = wire.len();
        match m {
            Mutation::Flip { at, bit } => {
                if len > 0 {
                    let i = pick(*at, len);
                    wire[i] ^= 1 << (bit % 8);
                }
            }
            Mutation::Truncate { at } => {
                let i = pick(*at, len + 1);
                wire.truncate(i);
            }
            Mutation::Insert { at, bytes } => {
                let i = pick(*at, len + 1);
                wire.splice(i..i, bytes.iter().copied());
            }
            Mutation::Set { at, value } => {
                if len > 0 {
                    let i = pick(*at, len);
                    wire[i] = *value;
                }
            }
            Mutation::Delete { at } => {
                if len > 0 {
                    let i = pick(*at, len);
                    wire.remove(i);
                }
            }
        }
    }
}

fn mutation() -> impl Strategy<Value = Mutation> {
    // Bytes that mean something in a frame header or an HTTP head.
    let special = prop_oneof![
        any::<u8>(), Just(0u8), Just(0x02), Just(0x80), Just(0x82), Just(0x89), Just(0x7e), Just(0x7f), Just(0xfe),
        Just(0xff), Just(b'\r'), Just(b'\n'), Just(b':'), Just(b' '), Just(b'\t'), Just(b',')
    ];
    prop_oneof![
        4 => (any::<u64>(), any::<u8>()).prop_map(|(at, bit)| Mutation::Flip { at, bit }),
        2 => any::<u64>().prop_map(|at| Mutation::Truncate { at }),
        2 => (any::<u64>(), vec(any::<u8>(), 1..12)).prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        3 => (any::<u64>(), special).prop_map(|(at, value)| Mutation::Set { at, value }),
        1 => any::<u64>().prop_map(|at| Mutation::Delete { at }),
    ]
}

#[derive(Debug, Clone)]
struct Chunking {
    seed: u64,
    /// 0: one byte per read (for the first 4 KiB, then as 2), 1: 1..=16
    /// bytes, 2: 1..=the buffer, 3: as much as fits.
    mode: u8,
    /// Per-read chance, in percent, of a `WouldBlock`.
    block_pct: u8,
    /// Most `WouldBlock`s and `Interrupted`s handed out.
    blocks: u32,
    interrupts: u32,
}

fn chunking() -> impl Strategy<Value = Chunking> {
    (any::<u64>(), 0u8..4, prop_oneof![Just(0u8), 1u8..60, Just(100)], 0u32..64, 0u32..6).prop_map(
        |(seed, mode, block_pct, blocks, interrupts)| Chunking { seed, mode, block_pct, blocks, interrupts },
    )
}

/// A finite socket: bytes in random chunks, with random `WouldBlock`s and
/// `Interrupted`s, then end of stream.
struct Chunky<'a> {
    data: &'a [u8],
    pos: usize,
    rng: Rng,
    c: Chunking,
    blocks_given: u32,
    interrupts_given: u32,
    reads: u64,
    empty_reads: u64,
    eofs: u64,
}

impl<'a> Chunky<'a> {
    fn new(data: &'a [u8], c: Chunking) -> Self {
        Chunky { data, pos: 0, rng: Rng(c.seed | 1), c, blocks_given: 0, interrupts_given: 0, reads: 0, empty_reads: 0, eofs: 0 }
    }
    /// Reads a correct reader can make: one per byte, per `WouldBlock` or
    /// `Interrupted`, plus the one that sees the end.
    fn read_budget(&self) -> u64 {
        self.data.len() as u64 + self.c.blocks as u64 + self.c.interrupts as u64 + 1
    }
}

impl Read for Chunky<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        self.reads += 1;
        assert!(self.reads <= self.read_budget(), "read {} times from a {}-byte stream", self.reads, self.data.len());
        if out.is_empty() {
            self.empty_reads += 1;
            return Ok(0);
        }
        if self.blocks_given < self.c.blocks && self.rng.below(100) < self.c.block_pct as u64 {
            self.blocks_given += 1;
            return Err(io::ErrorKind::WouldBlock.into());
        }
        if self.interrupts_given < self.c.interrupts && self.rng.below(8) == 0 {
            self.interrupts_given += 1;
            return Err(io::ErrorKind::Interrupted.into());
        }
        let left = self.data.len() - self.pos;
        if left == 0 {
            self.eofs += 1;
            return Ok(0);
        }
        let most = out.len().min(left);
        let mode = if self.c.mode == 0 && self.pos >= 4096 { 2 } else { self.c.mode };
        let n = match mode {
            0 => 1,
            1 => 1 + self.rng.below(16) as usize,
            2 => 1 + self.rng.below(most as u64) as usize,
            _ => most,
        }
        .min(most);
        out[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

fn retry(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted)
}

// ------------------------------------------------------------------ frames

/// How a frame's length is written: the shortest form for its value (RFC
/// 6455), or the 16-bit or 64-bit form whatever the value (the reader
/// accepts longer forms than needed, and so does the model), or the 7-bit
/// field set to the value's low 7 bits (126 and 127 then announce a longer
/// form).
#[derive(Debug, Clone, Copy)]
enum Form {
    Shortest,
    Sixteen,
    SixtyFour,
    Seven,
}

/// A frame as written on the wire: its first byte (FIN, RSV, opcode), its
/// payload, the length its header claims (the payload's unless set), and
/// its mask (clients mask, servers do not).
#[derive(Debug, Clone)]
struct Frame {
    b0: u8,
    payload: Vec<u8>,
    claim: Option<u64>,
    form: Form,
    mask: Option<[u8; 4]>,
}

fn encode(frames: &[Frame]) -> Vec<u8> {
    let mut w = Vec::new();
    for f in frames {
        encode_one(&mut w, f);
    }
    w
}

fn encode_one(w: &mut Vec<u8>, f: &Frame) {
    let v = f.claim.unwrap_or(f.payload.len() as u64);
    let m = if f.mask.is_some() { 0x80u8 } else { 0 };
    w.push(f.b0);
    let form = match f.form {
        Form::Shortest if v < 126 => Form::Seven,
        Form::Shortest if v <= 0xffff => Form::Sixteen,
        Form::Shortest => Form::SixtyFour,
        Form::Sixteen if v > 0xffff => Form::SixtyFour,
        other => other,
    };
    match form {
        Form::Seven => w.push(m | (v as u8 & 0x7f)),
        Form::Sixteen => {
            w.push(m | 126);
            w.extend_from_slice(&(v as u16).to_be_bytes());
        }
        _ => {
            w.push(m | 127);
            w.extend_from_slice(&v.to_be_bytes());
        }
    }
    if let Some(k) = f.mask {
        w.extend_from_slice(&k);
        w.extend(f.payload.iter().enumerate().map(|(i, b)| b ^ k[i % 4]));
    } else {
        w.extend_from_slice(&f.payload);
    }
}

/// The SP-over-TCP stream of `msgs`, as the reader must hand it out.
fn sp_stream(msgs: &[Vec<u8>]) -> Vec<u8> {
    let mut v = SP_HEADER.to_vec();
    for m in msgs {
        v.extend_from_slice(&(m.len() as u64).to_be_bytes());
        v.extend_from_slice(m);
    }
    v
}

// ------------------------------------------------------------------ reader: model

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WsEnd {
    /// The stream ended (anywhere: between frames, in a header or payload).
    Eof,
    /// A close frame, which ends at `at`.
    Close,
    /// A protocol error in the header that ends at `at`; why.
    Invalid(&'static str),
}

struct WsModel {
    out: Vec<u8>,
    end: WsEnd,
    /// Where a close frame or the offending header ends.
    at: usize,
    last_ping: Option<Vec<u8>>,
    /// Data messages completed.
    messages: usize,
    /// Some message was fragmented, and completed.
    fragmented: bool,
    control_between_fragments: bool,
}

/// An independent reading of RFC 6455 framing as this crate applies it:
/// binary messages only, no extensions, a server wants masked frames and a
/// client unmasked ones, control frames are FIN and at most 125 bytes, a
/// data frame over `limit` (`limit2` from the second message on, when set)
/// is refused, and so is a fragmented message whose frames' lengths add up
/// to more than min(limit, MAX_FRAGMENTED).
fn ws_model(wire: &[u8], server: bool, limit: u64, limit2: Option<u64>) -> WsModel {
    let mut m = WsModel {
        out: SP_HEADER.to_vec(),
        end: WsEnd::Eof,
        at: wire.len(),
        last_ping: None,
        messages: 0,
        fragmented: false,
        control_between_fragments: false,
    };
    let mut pos = 0usize;
    // The fragmented message in progress: its bytes, the frames' claims.
    let mut frag: Option<(Vec<u8>, u64)> = None;
    let mut frags_seen = 0;
    loop {
        let rest = &wire[pos..];
        if rest.len() < 2 {
            return m;
        }
        let (b0, b1) = (rest[0], rest[1]);
        let masked = b1 & 0x80 != 0;
        let ext = match b1 & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let hlen = 2 + ext + if masked { 4 } else { 0 };
        if rest.len() < hlen {
            return m;
        }
        let len: u64 = match ext {
            0 => (b1 & 0x7f) as u64,
            2 => ((rest[2] as u64) << 8) | rest[3] as u64,
            _ => rest[2..10].iter().fold(0u64, |a, &b| (a << 8) | b as u64),
        };
        let key = masked.then(|| [rest[hlen - 4], rest[hlen - 3], rest[hlen - 2], rest[hlen - 1]]);
        let (fin, rsv, op) = (b0 & 0x80 != 0, b0 & 0x70, b0 & 0x0f);
        let header_end = pos + hlen;
        let invalid = |m: &mut WsModel, why| {
            m.end = WsEnd::Invalid(why);
            m.at = header_end;
        };
        if rsv != 0 {
            invalid(&mut m, "rsv");
            return m;
        }
        if masked != server {
            invalid(&mut m, "mask");
            return m;
        }
        if len >= 1 << 63 {
            invalid(&mut m, "length msb");
            return m;
        }
        let limit_now = if m.messages > 0 { limit2.unwrap_or(limit) } else { limit };
        let avail = (wire.len() - header_end) as u64;
        let take = len.min(avail) as usize;
        let mut payload = wire[header_end..header_end + take].to_vec();
        if let Some(k) = key {
            for (i, b) in payload.iter_mut().enumerate() {
                *b ^= k[i % 4];
            }
        }
        let complete = take as u64 == len;
        match op {
            0x8..=0xa => {
                if !fin || len > 125 {
                    invalid(&mut m, "control");
                    return m;
                }
                if !complete {
                    return m;
                }
                if frag.is_some() {
                    m.control_between_fragments = true;
                }
                match op {
                    0x8 => {
                        m.end = WsEnd::Close;
                        m.at = header_end + take;
                        return m;
                    }
                    0x9 => m.last_ping = Some(payload),
                    _ => {}
                }
            }
            0x1 => {
                invalid(&mut m, "text");
                return m;
            }
            0x0 | 0x2 => {
                if op == 0x2 && frag.is_some() {
                    invalid(&mut m, "nested");
                    return m;
                }
                if op == 0x0 && frag.is_none() {
                    invalid(&mut m, "continuation");
                    return m;
                }
                if op == 0x2 && fin {
                    if len > limit_now {
                        invalid(&mut m, "limit");
                        return m;
                    }
                    m.out.extend_from_slice(&len.to_be_bytes());
                    m.out.extend_from_slice(&payload);
                    if !complete {
                        return m;
                    }
                    m.messages += 1;
                } else {
                    let (bytes, claimed) = frag.get_or_insert_with(|| (Vec::new(), 0));
                    let total = claimed.saturating_add(len);
                    if total > limit_now.min(MAX_FRAGMENTED) {
                        invalid(&mut m, "fragment limit");
                        return m;
                    }
                    *claimed = total;
                    if !complete {
                        return m;
                    }
                    bytes.extend_from_slice(&payload);
                    frags_seen += 1;
                    if fin {
                        let (bytes, _) = frag.take().unwrap_or_default();
                        m.out.extend_from_slice(&(bytes.len() as u64).to_be_bytes());
                        m.out.extend_from_slice(&bytes);
                        m.messages += 1;
                        if frags_seen > 1 {
                            m.fragmented = true;
                        }
                        frags_seen = 0;
                    }
                }
            }
            _ => {
                invalid(&mut m, "opcode");
                return m;
            }
        }
        pos = header_end + take;
    }
}

// ------------------------------------------------------------------ reader: harness

/// Message limits: fixed, or raised (or lowered) once the first message is
/// out, as the host raises a connection's after its Hello.
#[derive(Debug, Clone, Copy)]
enum Setup {
    Limit(u64),
    Raise(u64, u64),
}

impl Setup {
    fn first(self) -> u64 {
        match self {
            Setup::Limit(l) | Setup::Raise(l, _) => l,
        }
    }
    fn second(self) -> Option<u64> {
        match self {
            Setup::Limit(_) => None,
            Setup::Raise(_, l) => Some(l),
        }
    }
}

fn limit_value() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        0u64..300,
        Just(HANDSHAKE_LIMIT),
        (HANDSHAKE_LIMIT - 2)..(HANDSHAKE_LIMIT + 3),
        60_000u64..140_000,
        Just(MAX_FRAGMENTED),
        Just(u64::MAX),
        any::<u64>(),
    ]
}

fn setup() -> impl Strategy<Value = Setup> {
    prop_oneof![
        5 => limit_value().prop_map(Setup::Limit),
        2 => (prop_oneof![Just(HANDSHAKE_LIMIT), 0u64..300], limit_value()).prop_map(|(a, b)| Setup::Raise(a, b)),
    ]
}

/// How the bytes reach the reader: some pushed as read past the HTTP head
/// (`push_input`), the rest through the chunked socket, into a caller's
/// buffer of some size.
#[derive(Debug, Clone)]
struct Delivery {
    pushed: u64,
    chunks: Chunking,
    bufsize: usize,
}

fn delivery() -> impl Strategy<Value = Delivery> {
    let pushed = prop_oneof![3 => Just(0u64), 1 => any::<u64>()];
    let bufsize = prop_oneof![Just(1usize), Just(2), Just(7), Just(8), Just(9), Just(16), Just(100), Just(4096), Just(16 * 1024), Just(64 * 1024)];
    (pushed, chunking(), bufsize).prop_map(|(pushed, chunks, bufsize)| Delivery { pushed, chunks, bufsize })
}

/// Runs the reader over `wire` and checks it against the model (see the
/// file's doc). `expect`: the messages, when the wire is known valid.
fn check_reader(server: bool, setup: Setup, wire: &[u8], d: &Delivery, expect: Option<&[Vec<u8>]>, t: &Tally) -> Result<(), TestCaseError> {
    let model = ws_model(wire, server, setup.first(), setup.second());
    // Pushed input is at most what a head's reader can read past it.
    let pushed = if d.pushed == 0 { 0 } else { (d.pushed % (wire.len().min(MAX_HTTP_HEADER) as u64 + 1)) as usize };
    let mut r = WsReader::new(server, setup.first());
    r.push_input(wire[..pushed].to_vec());
    let mut sock = Chunky::new(&wire[pushed..], d.chunks.clone());
    let mut buf = vec![0u8; d.bufsize];
    let mut out = Vec::new();
    let mut last_pong = None;
    let mut raised = false;
    let mut calls = 0u64;
    let max_calls = model.out.len() as u64 + d.chunks.blocks as u64 + d.chunks.interrupts as u64 + 2;
    let end = loop {
        calls += 1;
        prop_assert!(calls <= max_calls, "read() called {} times without finishing", calls);
        let before = r.allocated() as u64;
        let (res, peak) = measure(|| r.read(&mut sock, &mut buf));
        let held = before + peak;
        // The stated bound, and memory following what arrived.
        let limit = match setup {
            Setup::Raise(a, b) if raised => a.max(b),
            s => s.first(),
        };
        let variable = limit.min(MAX_FRAGMENTED) + pushed as u64;
        prop_assert!(held <= variable + READER_SLACK, "held {} > min(limit {}, MAX_FRAGMENTED) + pushed {} + {}", held, limit, pushed, READER_SLACK);
        let consumed = pushed as u64 + sock.pos as u64;
        let arrived = (2 * consumed).max(256) + pushed as u64;
        prop_assert!(held <= arrived + READER_SLACK, "held {} with {} bytes consumed", held, consumed);
        t.figure(held.saturating_sub(variable.min(arrived)));
        if let Some(p) = r.take_pong() {
            prop_assert!(p.payload().len() <= MAX_CONTROL);
            last_pong = Some(p.payload().to_vec());
        }
        match res {
            Ok(0) => break Ok(()),
            Ok(n) => {
                prop_assert!(n <= buf.len());
                out.extend_from_slice(&buf[..n]);
                if let (Setup::Raise(_, l2), false) = (setup, raised) {
                    // The first message is out: the host's Hello accepted.
                    if out.len() >= 16 && (out.len() - 16) as u64 >= u64::from_be_bytes(out[8..16].try_into().unwrap()) {
                        r.set_message_limit(l2);
                        raised = true;
                    }
                }
            }
            Err(e) if retry(&e) => {}
            Err(e) => break Err(e),
        }
    };
    prop_assert_eq!(sock.empty_reads, 0, "the reader read into an empty buffer");
    prop_assert!(sock.eofs <= 1, "the reader read past the end {} times", sock.eofs);
    prop_assert!(out == model.out, "output differs from the model's ({} vs {} bytes; end {:?})", out.len(), model.out.len(), model.end);
    prop_assert_eq!(&last_pong, &model.last_ping);
    // Nothing read past a close frame or an offending header: the socket
    // is read only once the pushed input is used up.
    let read_to = |at: usize| at.saturating_sub(pushed);
    match model.end {
        WsEnd::Eof => {
            prop_assert!(end.is_ok(), "expected the end of stream, got {:?}", end);
            prop_assert_eq!(sock.pos, wire.len() - pushed);
            t.hit("eof");
        }
        WsEnd::Close => {
            prop_assert!(end.is_ok(), "expected a close, got {:?}", end);
            prop_assert_eq!(sock.pos, read_to(model.at));
            t.hit("close");
        }
        WsEnd::Invalid(why) => {
            let e = end.err().ok_or_else(|| TestCaseError::fail(format!("expected an error ({why})")))?;
            prop_assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{}", e);
            prop_assert!(e.to_string().len() <= 200, "a long error: {}", e);
            prop_assert_eq!(sock.pos, read_to(model.at));
            // Every later read is an error too.
            let again = r.read(&mut io::Cursor::new(vec![0x82u8, 0x80, 0, 0, 0, 0]), &mut [0u8; 16]);
            prop_assert!(again.is_err());
            t.hit(match why {
                "limit" => "invalid: limit",
                "fragment limit" => "invalid: fragment limit",
                "length msb" => "invalid: length msb",
                "control" => "invalid: control",
                "mask" => "invalid: mask",
                _ => "invalid: other",
            });
        }
    }
    if let Some(msgs) = expect {
        prop_assert!(model.out == sp_stream(msgs), "the model disagrees with the builder");
        t.hit(if msgs.len() > 1 { "exact multi" } else { "exact" });
    }
    if model.fragmented {
        t.hit("fragmented message");
    }
    if model.control_between_fragments {
        t.hit("control between fragments");
    }
    if model.last_ping.is_some() {
        t.hit("ping");
    }
    if raised {
        t.hit("raised");
    }
    if pushed > 0 {
        t.hit("pushed input");
    }
    if sock.blocks_given > 0 {
        t.hit("would block");
    }
    if sock.interrupts_given > 0 {
        t.hit("interrupted");
    }
    if model.out.len() > 100_000 {
        t.hit("big message");
    }
    Ok(())
}

// ------------------------------------------------------------------ reader: generators

#[derive(Debug, Clone)]
struct CtrlSpec {
    op: u8,
    len: usize,
    seed: u64,
}

fn ctrl_spec() -> impl Strategy<Value = CtrlSpec> {
    (prop_oneof![3 => Just(0x9u8), 1 => Just(0xa)], prop_oneof![0usize..8, 100usize..=125], any::<u64>())
        .prop_map(|(op, len, seed)| CtrlSpec { op, len, seed })
}

/// A message: its length, its fragments (cut points, none for one frame)
/// and control frames between them.
#[derive(Debug, Clone)]
struct MsgSpec {
    len: usize,
    seed: u64,
    cuts: Vec<u64>,
    ctrl: Vec<Option<CtrlSpec>>,
}

fn msg_spec() -> impl Strategy<Value = MsgSpec> {
    let len = prop_oneof![
        40 => 0usize..40,
        12 => 0usize..700,
        3 => (HANDSHAKE_LIMIT as usize - 40)..(HANDSHAKE_LIMIT as usize + 40),
        1 => 60_000usize..140_000,
    ];
    let cuts = prop_oneof![3 => Just(Vec::new()), 2 => vec(any::<u64>(), 1..6)];
    (len, any::<u64>(), cuts, vec(prop::option::weighted(0.3, ctrl_spec()), 0..6))
        .prop_map(|(len, seed, cuts, ctrl)| MsgSpec { len, seed, cuts, ctrl })
}

#[derive(Debug, Clone)]
enum Item {
    Msg(MsgSpec),
    Ctrl(CtrlSpec),
}

#[derive(Debug, Clone)]
struct Plan {
    items: Vec<Item>,
    /// Lengths in 16- or 64-bit form more than needed.
    long_forms: u64,
    mask_seed: u64,
    /// A close frame at the end, then junk the reader must not read.
    close: Option<(usize, Vec<u8>)>,
}

fn plan() -> impl Strategy<Value = Plan> {
    let item = prop_oneof![5 => msg_spec().prop_map(Item::Msg), 1 => ctrl_spec().prop_map(Item::Ctrl)];
    let close = prop::option::weighted(0.3, (0usize..10, vec(any::<u8>(), 0..20)));
    (vec(item, 0..5), any::<u64>(), any::<u64>(), close).prop_map(|(items, long_forms, mask_seed, close)| Plan { items, long_forms, mask_seed, close })
}

/// The plan's frames (masked when the reader is a server) and messages.
fn build_frames(p: &Plan, server: bool) -> (Vec<Frame>, Vec<Vec<u8>>) {
    let mut rng = Rng(p.mask_seed | 1);
    let mut frames = Vec::new();
    let mut msgs = Vec::new();
    let frame = |b0: u8, payload: Vec<u8>, rng: &mut Rng| {
        let form = match rng.below(10) {
            0 => Form::Sixteen,
            1 => Form::SixtyFour,
            _ => Form::Shortest,
        };
        let form = if p.long_forms & 1 == 0 { Form::Shortest } else { form };
        let mask = server.then(|| (rng.next() as u32).to_be_bytes());
        Frame { b0, payload, claim: None, form, mask }
    };
    let ctrl = |c: &CtrlSpec| (0x80 | c.op, fill(c.len, c.seed));
    for it in &p.items {
        match it {
            Item::Ctrl(c) => {
                let (b0, pl) = ctrl(c);
                frames.push(frame(b0, pl, &mut rng));
            }
            Item::Msg(m) => {
                let data = fill(m.len, m.seed);
                let mut cuts: Vec<usize> = m.cuts.iter().map(|c| (*c % (m.len as u64 + 1)) as usize).collect();
                cuts.sort_unstable();
                let mut start = 0;
                let n = cuts.len() + 1;
                for i in 0..n {
                    let end = cuts.get(i).copied().unwrap_or(m.len);
                    let op = if i == 0 { 0x2 } else { 0x0 };
                    let fin = if i == n - 1 { 0x80 } else { 0 };
                    frames.push(frame(fin | op, data[start..end].to_vec(), &mut rng));
                    start = end;
                    if i < n - 1 {
                        if let Some(Some(c)) = m.ctrl.get(i) {
                            let (b0, pl) = ctrl(c);
                            frames.push(frame(b0, pl, &mut rng));
                        }
                    }
                }
                msgs.push(data);
            }
        }
    }
    if let Some((len, _)) = &p.close {
        frames.push(frame(0x88, fill(*len, 7), &mut rng));
    }
    (frames, msgs)
}

fn fits(setup: Setup, msgs: &[Vec<u8>], frames_fragmented: bool) -> bool {
    msgs.iter().enumerate().all(|(i, m)| {
        let l = if i > 0 { setup.second().unwrap_or(setup.first()) } else { setup.first() };
        let l = if frames_fragmented { l.min(MAX_FRAGMENTED) } else { l };
        m.len() as u64 <= l
    })
}

type ReaderCase<T> = (bool, Setup, T, Delivery);

fn mode() -> impl Strategy<Value = bool> {
    any::<bool>()
}

/// Random bytes, alone or after a plausible first header byte (a binary
/// frame, FIN or not, masked as the mode wants, so random lengths and
/// payloads are read).
#[test]
fn reader_random_bytes() {
    let strategy = (mode(), setup(), (0u8..3, vec(any::<u8>(), 0..200)), delivery());
    let must = ["eof", "invalid: mask", "invalid: other", "invalid: limit", "invalid: control", "would block"];
    fuzz("reader_random_bytes", 25_000, "most held beyond min(limit, MAX_FRAGMENTED) + pushed input", strategy, &must, |(server, setup, (head, bytes), d): ReaderCase<(u8, Vec<u8>)>, t| {
        let mut wire = Vec::new();
        if head >= 1 {
            wire.push(if head == 1 { 0x82 } else { 0x02 });
            wire.push(if server { 0x80 } else { 0 } | bytes.first().map_or(0, |b| b & 0x7f));
        }
        wire.extend_from_slice(&bytes);
        check_reader(server, setup, &wire, &d, None, t)
    });
}

/// Valid streams (messages, some fragmented with pings and pongs between
/// fragments, control frames between messages, a close then junk), then
/// 0-4 mutations. Unmutated streams within the limits give exactly their
/// messages, whatever the chunking.
#[test]
fn reader_valid_then_mutated() {
    let muts = prop_oneof![2 => Just(Vec::new()), 5 => vec(mutation(), 1..5)];
    let strategy = (mode(), setup(), (plan(), muts), delivery());
    let must = [
        "exact", "exact multi", "fragmented message", "control between fragments", "ping", "close", "raised", "pushed input",
        "would block", "interrupted", "big message", "eof", "invalid: limit", "invalid: fragment limit", "invalid: mask",
        "invalid: other",
    ];
    fuzz("reader_valid_then_mutated", 35_000, "most held beyond min(limit, MAX_FRAGMENTED) + pushed input", strategy, &must, |(server, setup, (p, muts), d): ReaderCase<(Plan, Vec<Mutation>)>, t| {
        let (frames, msgs) = build_frames(&p, server);
        let mut wire = encode(&frames);
        if let Some((_, junk)) = &p.close {
            wire.extend_from_slice(junk);
        }
        let fragmented = frames.iter().any(|f| f.b0 & 0x80 == 0);
        let valid = muts.is_empty() && fits(setup, &msgs, fragmented);
        apply(&mut wire, &muts);
        check_reader(server, setup, &wire, &d, valid.then_some(&msgs[..]), t)
    });
}

/// Every length field at its edges: 0, 1, 125, 126, 127, 65535, 65536,
/// the payload's length and one either side, the limit and one more, the
/// handshake limit and one more, MAX_FRAGMENTED and one more, 2^63 - 1,
/// 2^63, u64::MAX; written in each form (7-bit field, 16-bit, 64-bit, the
/// shortest), in one frame or all of them, with trailing bytes (so a large
/// claim gets data to buffer) and optional truncation.
#[derive(Debug, Clone)]
struct LengthAttack {
    plan: Plan,
    which: u64,
    claim: usize,
    form: u8,
    all: bool,
    trailing: usize,
    seed: u64,
    truncate: Option<u64>,
}

fn length_claims(n: u64, limit: u64) -> [u64; 19] {
    [
        0,
        1,
        125,
        126,
        127,
        65_535,
        65_536,
        n,
        n.wrapping_sub(1),
        n + 1,
        limit,
        limit.wrapping_add(1),
        HANDSHAKE_LIMIT,
        HANDSHAKE_LIMIT + 1,
        MAX_FRAGMENTED,
        MAX_FRAGMENTED + 1,
        (1 << 63) - 1,
        1 << 63,
        u64::MAX,
    ]
}

#[test]
fn reader_length_fields() {
    let attack = (
        plan(),
        any::<u64>(),
        0usize..19,
        0u8..4,
        prop::bool::weighted(0.15),
        prop_oneof![8 => Just(0usize), 4 => 0usize..64, 1 => 60_000usize..200_000],
        any::<u64>(),
        prop_oneof![3 => Just(None), 1 => any::<u64>().prop_map(Some)],
    )
        .prop_map(|(plan, which, claim, form, all, trailing, seed, truncate)| LengthAttack { plan, which, claim, form, all, trailing, seed, truncate });
    let strategy = (mode(), setup(), attack, delivery());
    let must = ["invalid: limit", "invalid: fragment limit", "invalid: length msb", "invalid: control", "eof", "exact"];
    fuzz("reader_length_fields", 30_000, "most held beyond min(limit, MAX_FRAGMENTED) + pushed input", strategy, &must, |(server, setup, a, d): ReaderCase<LengthAttack>, t| {
        let (mut frames, mut msgs) = build_frames(&a.plan, server);
        if frames.is_empty() {
            // A lone binary frame to attack.
            msgs.push(fill(10, a.seed));
            frames.push(Frame { b0: 0x82, payload: msgs[0].clone(), claim: None, form: Form::Shortest, mask: server.then_some([1, 2, 3, 4]) });
        }
        let n = frames.len();
        let targets: Vec<usize> = if a.all { (0..n).collect() } else { vec![(a.which % n as u64) as usize] };
        let mut changed = false;
        for &i in &targets {
            let v = length_claims(frames[i].payload.len() as u64, setup.first())[a.claim];
            changed |= v != frames[i].payload.len() as u64;
            frames[i].claim = Some(v);
            frames[i].form = [Form::Shortest, Form::Sixteen, Form::SixtyFour, Form::Seven][a.form as usize];
        }
        let mut wire = encode(&frames);
        wire.extend_from_slice(&fill(a.trailing, a.seed));
        let mut valid = !changed && a.trailing == 0 && a.truncate.is_none() && a.plan.close.is_none();
        if let Some(tr) = a.truncate {
            let at = pick(tr, wire.len() + 1);
            wire.truncate(at);
        }
        // A 7-bit field cannot say 126 or more (it names a longer form).
        if !matches!(a.form, 0 | 3) || frames.iter().any(|f| f.payload.len() >= 126 && matches!(f.form, Form::Seven)) {
            valid = false;
        }
        let fragmented = frames.iter().any(|f| f.b0 & 0x80 == 0);
        let valid = valid && fits(setup, &msgs, fragmented);
        check_reader(server, setup, &wire, &d, valid.then_some(&msgs[..]), t)
    });
}

/// The attack: an unauthenticated peer sends one message in many
/// fragments (1 byte to 64 KiB each, pings between some), never ending it.
/// Refused at the header that takes the message past the limit; held memory
/// stays within the bound throughout.
#[test]
fn reader_fragment_flood() {
    let strategy = (
        mode(),
        prop_oneof![4 => Just(HANDSHAKE_LIMIT), 1 => 0u64..300, 1 => 60_000u64..140_000],
        prop_oneof![Just(1usize), Just(100), Just(1000), Just(4096), Just(65_536), 1usize..70_000],
        0u32..4,
        any::<u64>(),
        delivery(),
    );
    let must = ["invalid: fragment limit", "control between fragments", "would block"];
    fuzz("reader_fragment_flood", 5_000, "most held beyond min(limit, MAX_FRAGMENTED) + pushed input", strategy, &must, |(server, limit, size, ping_every, seed, d), t| {
        let mut rng = Rng(seed | 1);
        let mut frames = Vec::new();
        let mut total = 0u64;
        let mut i = 0;
        // Up to two fragments past the limit (the reader must stop at the
        // first), and never a FIN.
        while total <= limit.saturating_add(2 * size as u64) && frames.len() < 5_000 {
            let op = if i == 0 { 0x2 } else { 0x0 };
            let mask = server.then(|| (rng.next() as u32).to_be_bytes());
            frames.push(Frame { b0: op, payload: fill(size, rng.next()), claim: None, form: Form::Shortest, mask });
            if ping_every > 0 && i % ping_every as usize == 0 {
                let mask = server.then(|| (rng.next() as u32).to_be_bytes());
                frames.push(Frame { b0: 0x89, payload: fill(4, i as u64), claim: None, form: Form::Shortest, mask });
            }
            total += size as u64;
            i += 1;
        }
        let wire = encode(&frames);
        check_reader(server, Setup::Limit(limit), &wire, &d, None, t)
    });
}

// ------------------------------------------------------------------ handshake: model

/// What a handshake does with a wire, by an independent reading of the rules.
#[derive(Debug, PartialEq, Eq)]
enum HsEnd {
    /// Accepted; the server's response (server side only), and where the
    /// head ends.
    Accept(Vec<u8>, usize),
    /// Refused with this HTTP reply (server side).
    Refuse(Vec<u8>),
    /// Refused with no reply: why.
    NoReply(&'static str),
    TooLong,
    Eof,
}

/// Where the head ends (after its blank line) within the first
/// MAX_HTTP_HEADER bytes; Err(end) otherwise.
fn head_end(wire: &[u8]) -> Result<usize, HsEnd> {
    let span = &wire[..wire.len().min(MAX_HTTP_HEADER)];
    for i in 0..span.len().saturating_sub(3) {
        if &span[i..i + 4] == b"\r\n\r\n" {
            return Ok(i + 4);
        }
    }
    Err(if wire.len() >= MAX_HTTP_HEADER { HsEnd::TooLong } else { HsEnd::Eof })
}

/// The head's first line and its (name, value) header lines, trimmed of
/// spaces and tabs; Err for a head that is not UTF-8 or has a non-empty
/// line without a colon.
fn head_lines(head: &[u8]) -> Result<(String, Vec<(String, String)>), HsEnd> {
    let text = std::str::from_utf8(head).map_err(|_| HsEnd::NoReply("not text"))?;
    let lines: Vec<&str> = text.split("\r\n").collect();
    let mut headers = Vec::new();
    for l in &lines[1..] {
        if l.is_empty() {
            continue;
        }
        let Some(c) = l.find(':') else { return Err(HsEnd::NoReply("no colon")) };
        let ows = |s: &str| s.trim_matches(|ch| ch == ' ' || ch == '\t').to_string();
        headers.push((ows(&l[..c]).to_ascii_lowercase(), ows(&l[c + 1..])));
    }
    Ok((lines[0].to_string(), headers))
}

fn first_header<'a>(h: &'a [(String, String)], name: &str) -> Option<&'a str> {
    h.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

fn lists(h: &[(String, String)], name: &str, token: &str) -> bool {
    h.iter().any(|(k, v)| k == name && v.split(',').any(|t| t.trim_matches(|c| c == ' ' || c == '\t').eq_ignore_ascii_case(token)))
}

/// RFC 6455 4.2.2's accept key, computed here without the crate's code.
fn accept_for(key: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, format!("{key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11").as_bytes());
    b64(d.as_ref())
}

fn b64(data: &[u8]) -> String {
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = String::new();
    for &b in data {
        bits = bits << 8 | b as u32;
        n += 8;
        while n >= 6 {
            n -= 6;
            out.push(alphabet[(bits >> n & 63) as usize] as char);
        }
    }
    if n > 0 {
        out.push(alphabet[(bits << (6 - n) & 63) as usize] as char);
    }
    while out.len() % 4 != 0 {
        out.push('=');
    }
    out
}

fn server_model(wire: &[u8], path: &str) -> HsEnd {
    let end = match head_end(wire) {
        Ok(e) => e,
        Err(e) => return e,
    };
    let (first, h) = match head_lines(&wire[..end]) {
        Ok(x) => x,
        Err(e) => return e,
    };
    let reply = |status: &str| HsEnd::Refuse(format!("HTTP/1.1 {status}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n").into_bytes());
    let words: Vec<&str> = first.split(' ').collect();
    if words.first() != Some(&"GET") || words.get(2) != Some(&"HTTP/1.1") {
        return reply("400 Bad Request");
    }
    let target = words.get(1).copied().unwrap_or("");
    if target.split('?').next() != Some(path) {
        return reply("404 Not Found");
    }
    if !lists(&h, "upgrade", "websocket") || !lists(&h, "connection", "upgrade") {
        return reply("400 Bad Request");
    }
    if first_header(&h, "sec-websocket-version") != Some("13") {
        return HsEnd::Refuse(b"HTTP/1.1 426 Upgrade Required\r\nSec-WebSocket-Version: 13\r\nContent-Length: 0\r\n\r\n".to_vec());
    }
    let key = match first_header(&h, "sec-websocket-key") {
        Some(k) if k.len() == 24 => k,
        _ => return reply("400 Bad Request"),
    };
    let mut resp = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n",
        accept_for(key)
    );
    if lists(&h, "sec-websocket-protocol", SP_SUBPROTOCOL) {
        resp += "Sec-WebSocket-Protocol: pair1.sp.nanomsg.org\r\n";
    }
    resp += "\r\n";
    HsEnd::Accept(resp.into_bytes(), end)
}

fn client_model(wire: &[u8], key: &str) -> HsEnd {
    let end = match head_end(wire) {
        Ok(e) => e,
        Err(e) => return e,
    };
    let (first, h) = match head_lines(&wire[..end]) {
        Ok(x) => x,
        Err(e) => return e,
    };
    let status_ok = first == "HTTP/1.1 101" || first.starts_with("HTTP/1.1 101 ");
    if !status_ok {
        return HsEnd::NoReply("status");
    }
    if first_header(&h, "sec-websocket-accept") != Some(&accept_for(key)) {
        return HsEnd::NoReply("accept");
    }
    if first_header(&h, "sec-websocket-protocol").is_some_and(|p| p != SP_SUBPROTOCOL) {
        return HsEnd::NoReply("protocol");
    }
    HsEnd::Accept(Vec::new(), end)
}

// ------------------------------------------------------------------ handshake: generators

/// A header name in some case.
fn cased(name: &str, how: u64) -> String {
    match how % 4 {
        0 => name.to_string(),
        1 => name.to_ascii_lowercase(),
        2 => name.to_ascii_uppercase(),
        _ => name.chars().enumerate().map(|(i, c)| if i % 2 == 0 { c.to_ascii_uppercase() } else { c.to_ascii_lowercase() }).collect(),
    }
}

/// Optional whitespace as a peer might put it.
fn ows(how: u64) -> &'static str {
    ["", " ", "  ", "\t", " \t "][(how % 5) as usize]
}

#[derive(Debug, Clone)]
struct HeadSpec {
    /// Index into each rule's choices (first line, each header's value).
    choices: [u8; 6],
    style: u64,
    extra: Vec<(String, String)>,
    /// Headers in another order.
    shuffle: u64,
    /// Pad the head to exactly this many bytes, if it can be.
    pad_to: Option<usize>,
    after: Vec<u8>,
    after_frames: u8,
}

fn head_spec() -> impl Strategy<Value = HeadSpec> {
    let name = "[A-Za-z-]{1,12}";
    let value = "[ -~]{0,30}";
    let pad = prop_oneof![
        4 => Just(None),
        1 => prop_oneof![
            Just(MAX_HTTP_HEADER - 1), Just(MAX_HTTP_HEADER), Just(MAX_HTTP_HEADER + 1), Just(MAX_HTTP_HEADER + 2),
            Just(MAX_HTTP_HEADER + 3), 1000usize..MAX_HTTP_HEADER + 10
        ].prop_map(Some),
    ];
    // Choice 7 is the valid one in every slot: weighted so that a fair
    // share of heads pass every rule.
    let choice = || prop_oneof![2 => Just(7u8), 1 => 0u8..8];
    (
        [choice(), choice(), choice(), choice(), choice(), choice()],
        any::<u64>(),
        vec((name, value), 0..4),
        any::<u64>(),
        pad,
        vec(any::<u8>(), 0..40),
        0u8..3,
    )
        .prop_map(|(choices, style, extra, shuffle, pad_to, after, after_frames)| HeadSpec { choices, style, extra, shuffle, pad_to, after, after_frames })
}

/// Lays out a head: `first`, then the headers (shuffled, cased and spaced
/// per the spec), then padding, then the blank line and what follows.
fn lay_out(first: &str, mut headers: Vec<(String, String)>, s: &HeadSpec, server: bool) -> Vec<u8> {
    headers.extend(s.extra.iter().cloned());
    let mut rng = Rng(s.shuffle | 1);
    if s.shuffle % 3 == 0 {
        for i in (1..headers.len()).rev() {
            let j = rng.below(i as u64 + 1) as usize;
            headers.swap(i, j);
        }
    }
    let mut h = format!("{first}\r\n");
    for (i, (k, v)) in headers.iter().enumerate() {
        let st = s.style.rotate_left(i as u32 * 7);
        h += &format!("{}{}:{}{}{}\r\n", cased(k, st), ows(st >> 3 & 1), ows(st >> 5), v, ows(st >> 9));
    }
    let mut out = h.into_bytes();
    if let Some(target) = s.pad_to {
        // "X-Pad: " + padding + "\r\n", then the final "\r\n".
        let fixed = out.len() + 7 + 2 + 2;
        if target > fixed {
            out.extend_from_slice(b"X-Pad: ");
            out.resize(out.len() + target - fixed, b'p');
            out.extend_from_slice(b"\r\n");
        }
    }
    out.extend_from_slice(b"\r\n");
    for i in 0..s.after_frames {
        let mask = (!server).then_some([i, 1, 2, 3]);
        encode_one(&mut out, &Frame { b0: 0x82, payload: fill(i as usize * 50, 3), claim: None, form: Form::Shortest, mask });
    }
    out.extend_from_slice(&s.after);
    out
}

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// A request, every rule varied by `s.choices`.
fn request(s: &HeadSpec, path: &str) -> Vec<u8> {
    let c = s.choices;
    let target = [path.to_string(), format!("{path}?x=1"), "/other".into(), "".into(), format!("{path}/"), path.to_string(), path.to_string(), path.to_string()][c[0] as usize].clone();
    let first = match c[1] {
        0 => format!("POST {target} HTTP/1.1"),
        1 => format!("GET {target} HTTP/1.0"),
        2 => format!("get {target} HTTP/1.1"),
        3 => format!("GET  {target} HTTP/1.1"),
        4 => format!("GET {target}"),
        _ => format!("GET {target} HTTP/1.1"),
    };
    let mut h: Vec<(String, String)> = vec![("Host".into(), "127.0.0.1:5555".into())];
    // None: the header is left out.
    let pick = |i: usize, opts: [Option<&str>; 8]| opts[c[i] as usize % 8].map(|v| v.to_string());
    let upgrade = [Some("websocket"), Some("WebSocket"), Some("h2c, websocket"), Some("h2c"), None, Some("websocket,"), Some(""), Some("websocket")];
    if let Some(v) = pick(2, upgrade) {
        h.push(("Upgrade".into(), v));
    }
    let connection = [Some("Upgrade"), Some("keep-alive, Upgrade"), Some("close"), Some("upgrade"), None, Some("keep-alive"), Some("Upgrade"), Some("Upgrade")];
    if let Some(v) = pick(3, connection) {
        h.push(("Connection".into(), v));
    }
    let version = [Some("13"), Some("8"), Some("13 "), None, Some("13, 8"), Some("013"), Some("13"), Some("13")];
    if let Some(v) = pick(4, version) {
        h.push(("Sec-WebSocket-Version".into(), v));
    }
    match c[5] {
        0 => {}
        1 => h.push(("Sec-WebSocket-Key".into(), KEY[..23].into())),
        2 => h.push(("Sec-WebSocket-Key".into(), format!("{KEY}A"))),
        3 => {
            h.push(("Sec-WebSocket-Key".into(), KEY.into()));
            h.push(("Sec-WebSocket-Protocol".into(), SP_SUBPROTOCOL.into()));
        }
        4 => {
            h.push(("Sec-WebSocket-Key".into(), "x".repeat(24)));
            h.push(("Sec-WebSocket-Protocol".into(), format!("chat, {SP_SUBPROTOCOL}")));
        }
        5 => {
            h.push(("Sec-WebSocket-Key".into(), KEY.into()));
            h.push(("Sec-WebSocket-Protocol".into(), "chat".into()));
        }
        _ => h.push(("Sec-WebSocket-Key".into(), KEY.into())),
    }
    lay_out(&first, h, s, true)
}

/// A response to a request made with `KEY`.
fn response(s: &HeadSpec) -> Vec<u8> {
    let c = s.choices;
    let first = ["HTTP/1.1 101 Switching Protocols", "HTTP/1.1 101", "HTTP/1.1 200 OK", "HTTP/1.0 101 Switching Protocols", "HTTP/1.1 1010 x", "HTTP/1.1 101 Switching Protocols", "HTTP/1.1 101 Switching Protocols", "HTTP/1.1 101 Switching Protocols"][c[0] as usize];
    let right = accept_for(KEY);
    let mut h: Vec<(String, String)> = vec![("Upgrade".into(), "websocket".into()), ("Connection".into(), "Upgrade".into())];
    match c[1] {
        0 => {}
        1 => h.push(("Sec-WebSocket-Accept".into(), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=".into())),
        2 => {
            h.push(("Sec-WebSocket-Accept".into(), "wrong".into()));
            h.push(("Sec-WebSocket-Accept".into(), right.clone()));
        }
        _ => h.push(("Sec-WebSocket-Accept".into(), right.clone())),
    }
    match c[2] {
        0 => h.push(("Sec-WebSocket-Protocol".into(), "chat".into())),
        1 | 2 => h.push(("Sec-WebSocket-Protocol".into(), SP_SUBPROTOCOL.into())),
        _ => {}
    }
    lay_out(first, h, s, false)
}

type HsCase = (u8, HeadSpec, Vec<Mutation>, Vec<u8>, Chunking);

fn hs_case() -> impl Strategy<Value = HsCase> {
    let muts = prop_oneof![3 => Just(Vec::new()), 1 => vec(mutation(), 1..4)];
    // 0: random bytes, 1: random bytes then a blank line, 2..: generated.
    (prop_oneof![1 => Just(0u8), 1 => Just(1u8), 8 => Just(2u8)], head_spec(), muts, vec(any::<u8>(), 0..300), chunking())
}

fn tag_end(t: &Tally, e: &HsEnd) {
    t.hit(match e {
        HsEnd::Accept(..) => "accept",
        HsEnd::Refuse(r) if r.starts_with(b"HTTP/1.1 404") => "refuse 404",
        HsEnd::Refuse(r) if r.starts_with(b"HTTP/1.1 426") => "refuse 426",
        HsEnd::Refuse(_) => "refuse 400",
        HsEnd::NoReply("not text") => "not text",
        HsEnd::NoReply("no colon") => "no colon",
        HsEnd::NoReply(_) => "refused",
        HsEnd::TooLong => "too long",
        HsEnd::Eof => "eof",
    });
}

fn hs_wire(kind: u8, spec: &HeadSpec, muts: &[Mutation], random: Vec<u8>, build: impl Fn(&HeadSpec) -> Vec<u8>) -> Vec<u8> {
    let mut wire = match kind {
        0 => random,
        1 => [random, b"\r\n\r\n".to_vec()].concat(),
        _ => build(spec),
    };
    apply(&mut wire, muts);
    wire
}

/// Checks that the head's reader read at most MAX_HTTP_HEADER bytes and
/// returned as read past the head exactly what follows it on the wire.
fn check_rest(wire: &[u8], end: usize, rest: &[u8], sock: &Chunky, t: &Tally) -> Result<(), TestCaseError> {
    prop_assert!(sock.pos <= MAX_HTTP_HEADER, "read {} bytes", sock.pos);
    prop_assert_eq!(sock.pos, end + rest.len());
    prop_assert!(rest == &wire[end..sock.pos]);
    if !rest.is_empty() {
        t.hit("bytes past the head");
    }
    Ok(())
}

#[test]
fn handshake_server_requests() {
    let strategy = (prop_oneof![Just("/"), Just("/mirai/path")], hs_case());
    let must = ["accept", "refuse 400", "refuse 404", "refuse 426", "not text", "no colon", "too long", "eof", "bytes past the head", "would block", "subprotocol"];
    fuzz("handshake_server_requests", 25_000, "most held by a handshake", strategy, &must, |(path, (kind, spec, muts, random, chunks)), t| {
        let wire = hs_wire(kind, &spec, &muts, random, |s| request(s, path));
        let model = server_model(&wire, path);
        let mut sock = Chunky::new(&wire, chunks.clone());
        let max_calls = chunks.blocks as u64 + chunks.interrupts as u64 + 2;
        let ((res, reply, calls), peak) = measure(|| {
            let mut hs = ServerHandshake::new(path);
            let mut reply = Vec::new();
            let mut calls = 0u64;
            loop {
                calls += 1;
                match hs.advance(&mut sock, &mut reply) {
                    Err(e) if retry(&e) && calls <= max_calls => {}
                    r => break (r, reply, calls),
                }
            }
        });
        prop_assert!(calls <= max_calls);
        prop_assert!(peak <= MAX_HTTP_HEADER as u64 + HANDSHAKE_SLACK, "held {} bytes", peak);
        t.figure(peak);
        tag_end(t, &model);
        if sock.blocks_given > 0 {
            t.hit("would block");
        }
        match (&model, res) {
            (HsEnd::Accept(resp, end), Ok(up)) => {
                prop_assert!(&up.response == resp, "response {:?}", String::from_utf8_lossy(&up.response));
                prop_assert!(reply.is_empty());
                check_rest(&wire, *end, &up.rest, &sock, t)?;
                if up.response.windows(6).any(|w| w == b"pair1.") {
                    t.hit("subprotocol");
                }
            }
            (HsEnd::Refuse(want), Err(e)) => {
                prop_assert_eq!(e.kind(), io::ErrorKind::InvalidData);
                prop_assert!(&reply == want, "reply {:?}", String::from_utf8_lossy(&reply));
                prop_assert!(e.to_string().len() <= 200, "a long error: {}", e);
            }
            (HsEnd::NoReply(_), Err(e)) => {
                prop_assert_eq!(e.kind(), io::ErrorKind::InvalidData);
                prop_assert!(reply.is_empty());
            }
            (HsEnd::TooLong, Err(e)) => {
                prop_assert!(e.to_string().contains("longer"), "{}", e);
                prop_assert_eq!(sock.pos, MAX_HTTP_HEADER);
            }
            (HsEnd::Eof, Err(e)) => {
                prop_assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
                prop_assert_eq!(sock.pos, wire.len());
            }
            (m, r) => prop_assert!(false, "model {:?}, got {:?}", m, r.map(|u| u.response).map_err(|e| e.to_string())),
        }
        prop_assert!(sock.pos <= MAX_HTTP_HEADER);
        Ok(())
    });
}

#[test]
fn handshake_client_responses() {
    let must = ["accept", "refused", "not text", "no colon", "too long", "eof", "bytes past the head", "would block"];
    fuzz("handshake_client_responses", 15_000, "most held by a handshake", hs_case(), &must, |(kind, spec, muts, random, chunks), t| {
        let wire = hs_wire(kind, &spec, &muts, random, response);
        let model = client_model(&wire, KEY);
        let mut sock = Chunky::new(&wire, chunks.clone());
        let max_calls = chunks.blocks as u64 + chunks.interrupts as u64 + 2;
        let ((res, calls), peak) = measure(|| {
            let mut buf = Vec::new();
            let mut calls = 0u64;
            loop {
                calls += 1;
                match client_response(&mut sock, &mut buf, KEY) {
                    Err(e) if retry(&e) && calls <= max_calls => {}
                    r => break (r, calls),
                }
            }
        });
        prop_assert!(calls <= max_calls);
        prop_assert!(peak <= MAX_HTTP_HEADER as u64 + HANDSHAKE_SLACK, "held {} bytes", peak);
        t.figure(peak);
        tag_end(t, &model);
        if sock.blocks_given > 0 {
            t.hit("would block");
        }
        match (&model, res) {
            (HsEnd::Accept(_, end), Ok(rest)) => check_rest(&wire, *end, &rest, &sock, t)?,
            (HsEnd::NoReply(_), Err(e)) => {
                prop_assert_eq!(e.kind(), io::ErrorKind::InvalidData);
                prop_assert!(e.to_string().len() <= 200, "a long error: {}", e);
            }
            (HsEnd::TooLong, Err(e)) => prop_assert!(e.to_string().contains("longer"), "{}", e),
            (HsEnd::Eof, Err(e)) => prop_assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof),
            (m, r) => prop_assert!(false, "model {:?}, got {:?}", m, r.map_err(|e| e.to_string())),
        }
        Ok(())
    });
}

// ------------------------------------------------------------------ writer

/// A socket that takes a random amount, or blocks, per write.
struct Stall {
    out: Vec<u8>,
    rng: Rng,
    block_pct: u64,
    blocked: bool,
}

impl Write for Stall {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        if self.blocked || self.rng.below(100) < self.block_pct {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = (1 + self.rng.below(b.len() as u64) as usize).min(b.len());
        self.out.extend_from_slice(&b[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[derive(Debug, Clone)]
enum Op {
    /// Write this many bytes of the SP stream.
    Data(usize),
    Pong(usize),
    Flush,
    /// The peer stops reading (every write blocks), or starts again.
    Stop(bool),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => prop_oneof![1usize..64, 1usize..70_000].prop_map(Op::Data),
        4 => (0usize..=MAX_CONTROL).prop_map(Op::Pong),
        3 => Just(Op::Flush),
        1 => any::<bool>().prop_map(Op::Stop),
    ]
}

/// Parses frames written by a `WsWriter`: data messages and pong payloads,
/// in order; Err if a pong starts inside a data frame's bytes (it cannot:
/// frames are whole) or a frame is malformed.
/// Data messages, then pong payloads.
type Written = (Vec<Vec<u8>>, Vec<Vec<u8>>);

fn parse_written(wire: &[u8], masked: bool) -> Result<Written, String> {
    let m = ws_model(wire, masked, u64::MAX, None);
    if m.end != WsEnd::Eof || m.at != wire.len() {
        return Err(format!("writer output ends {:?} at {} of {}", m.end, m.at, wire.len()));
    }
    let mut msgs = Vec::new();
    let mut pos = 8;
    while pos + 8 <= m.out.len() {
        let n = u64::from_be_bytes(m.out[pos..pos + 8].try_into().unwrap()) as usize;
        msgs.push(m.out[pos + 8..(pos + 8 + n).min(m.out.len())].to_vec());
        pos += 8 + n;
    }
    // Pongs, read with a second pass that notes every 0xa frame.
    let mut pongs = Vec::new();
    let mut at = 0;
    while at + 2 <= wire.len() {
        let b1 = wire[at + 1];
        let ext = match b1 & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let hl = 2 + ext + if masked { 4 } else { 0 };
        let len = match ext {
            0 => (b1 & 0x7f) as usize,
            2 => u16::from_be_bytes([wire[at + 2], wire[at + 3]]) as usize,
            _ => u64::from_be_bytes(wire[at + 2..at + 10].try_into().unwrap()) as usize,
        };
        if wire[at] == 0x8a {
            let mut p = wire[at + hl..at + hl + len].to_vec();
            if masked {
                let k = &wire[at + hl - 4..at + hl];
                for (i, b) in p.iter_mut().enumerate() {
                    *b ^= k[i % 4];
                }
            }
            pongs.push(p);
        }
        at += hl + len;
    }
    Ok((msgs, pongs))
}

#[test]
fn writer_pongs_stay_bounded() {
    let strategy = (any::<bool>(), vec(prop_oneof![0usize..40, 0usize..100_000], 0..4), vec(op(), 0..60), any::<u64>(), 0u64..60);
    fuzz("writer_pongs_stay_bounded", 5_000, "most held by a writer from pings alone", strategy, &[], |(client, sizes, ops, seed, block_pct), t| {
        let msgs: Vec<Vec<u8>> = sizes.iter().enumerate().map(|(i, &n)| fill(n, seed ^ i as u64)).collect();
        let stream = sp_stream(&msgs);
        let mut w = WsWriter::new(client);
        w.ready = true;
        let mut sock = Stall { out: Vec::new(), rng: Rng(seed | 1), block_pct, blocked: false };
        let mut used = 0;
        let mut queued: Vec<Vec<u8>> = Vec::new();
        let mut wrote_data = false;
        for o in &ops {
            match o {
                Op::Data(n) => {
                    let end = (used + n).min(stream.len());
                    if let Ok(k) = w.write(&mut sock, &stream[used..end]) {
                        used += k;
                        wrote_data |= used > 8;
                    }
                }
                Op::Pong(n) => {
                    let p = fill(*n, seed.wrapping_add(queued.len() as u64));
                    w.queue_pong(&p);
                    queued.push(p);
                }
                Op::Flush => {
                    let _ = w.flush(&mut sock);
                }
                Op::Stop(b) => sock.blocked = *b,
            }
            let bound = if wrote_data { 2 * (64 * 1024 + 512) } else { 2 * MAX_CONTROL_FRAME };
            prop_assert!(w.allocated() <= bound, "writer holds {} bytes (data written: {})", w.allocated(), wrote_data);
            if !wrote_data {
                // What pings alone made it hold.
                t.figure(w.allocated() as u64);
            }
        }
        // The peer reads again: everything goes out.
        sock.blocked = false;
        sock.block_pct = 0;
        let mut spins = 0;
        while used < stream.len() || w.wants_write() {
            spins += 1;
            prop_assert!(spins < 1_000_000);
            match w.write(&mut sock, &stream[used..]) {
                Ok(k) => used += k,
                Err(e) if retry(&e) => {}
                Err(e) => return Err(TestCaseError::fail(e.to_string())),
            }
            if used == stream.len() {
                let _ = w.flush(&mut sock);
            }
        }
        let (got, pongs) = parse_written(&sock.out, client).map_err(TestCaseError::fail)?;
        prop_assert!(got == msgs, "data differs ({} vs {} messages)", got.len(), msgs.len());
        // Pongs sent are queued ones, in order, and the last is the latest.
        let mut qi = 0;
        for p in &pongs {
            while qi < queued.len() && &queued[qi] != p {
                qi += 1;
            }
            prop_assert!(qi < queued.len(), "a pong that was never queued, or out of order");
            qi += 1;
        }
        prop_assert_eq!(pongs.last(), queued.last());
        if queued.len() > 3 && pongs.len() < queued.len() {
            t.hit("pongs replaced");
        }
        Ok(())
    });
}

/// The allocator counts what it should: live bytes, with frees.
#[test]
fn counting_allocator_counts_live_bytes() {
    let (_, peak) = measure(|| {
        let a = vec![0u8; 1000];
        drop(a);
        let b = vec![0u8; 600];
        std::hint::black_box(&b);
    });
    assert_eq!(peak, 1000);
    let ((), peak) = measure(|| {
        let mut v: Vec<u8> = Vec::with_capacity(10);
        v.reserve_exact(5000);
        std::hint::black_box(&v);
    });
    assert_eq!(peak, 5000);
}

/// The model and the crate agree on the accept key (RFC 6455's example).
#[test]
fn model_accept_key_matches_rfc_example() {
    assert_eq!(accept_for(KEY), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    assert_eq!(accept_for(KEY), ws::accept_key(KEY));
}

// ------------------------------------------------------------------ a daemon and a hostile host

/// A host's side of a ws:// connection played by hand: accepts one daemon,
/// answers its upgrade with the 101 and `first` in the same write (so the
/// daemon finds frames read past the head), then runs `then`.
fn fake_ws_host(first: Vec<u8>, then: impl FnOnce(&mut std::net::TcpStream) + Send + 'static) -> (String, std::thread::JoinHandle<()>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://127.0.0.1:{}/h", l.local_addr().unwrap().port());
    let t = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let up = ServerHandshake::new("/h").advance(&mut s, &mut Vec::new()).unwrap();
        let mut out = up.response;
        out.extend_from_slice(&first);
        let _ = s.write_all(&out);
        then(&mut s);
    });
    (url, t)
}

/// An SP message as the host frames it over WebSocket: one unmasked
/// binary frame holding the pair1 hop count, the envelope and a payload.
fn host_message(m: &mirai::wire::proto::Msg, payload: &[u8]) -> Vec<u8> {
    let mut body = vec![0, 0, 0, 1];
    mirai::wire::proto::encode_into(m, &mut body);
    body.extend_from_slice(payload);
    let mut w = Vec::new();
    encode_one(&mut w, &Frame { b0: 0x82, payload: body, claim: None, form: Form::Shortest, mask: None });
    w
}

fn challenge() -> Vec<u8> {
    host_message(&mirai::wire::proto::Msg::Challenge { version: mirai::wire::proto::PROTOCOL_VERSION, nonce: [7; 32] }, b"")
}

/// Before the host has proved itself, a daemon holds it to HANDSHAKE_LIMIT: a
/// 1 MiB message in 4000-byte fragments (its first fragment in the same
/// segment as the 101) is refused at the second fragment's header, and the
/// daemon never holds more than its decoder's staging buffer (64 KiB), the
/// limit and the bytes read past the head.
#[test]
fn a_daemon_holds_an_unproven_host_to_the_handshake_limit() {
    let mut flood = Vec::new();
    for i in 0..256 {
        let op = if i == 0 { 0x2 } else { 0x0 };
        encode_one(&mut flood, &Frame { b0: op, payload: vec![1; 4000], claim: None, form: Form::Shortest, mask: None });
    }
    let (url, host) = fake_ws_host(flood[..4004].to_vec(), move |s| {
        let _ = s.write_all(&flood[4004..]);
    });
    let addr = mirai::wire::url::Address::parse(&url).unwrap();
    let (res, peak) = measure(|| mirai::daemon::client::ClientConn::connect(&addr, "s", 1 << 40, None, || true).map(|_| ()));
    let e = res.unwrap_err();
    assert!(e.contains("over the limit of 4100"), "{e}");
    assert!(peak < 64 * 1024 + HANDSHAKE_LIMIT + MAX_HTTP_HEADER as u64 + 16 * 1024, "the daemon held {peak} bytes");
    host.join().unwrap();
}

/// Once the host has proved itself (its Welcome), the daemon takes
/// messages up to its own limit: an Init with 20 KB of settings, then a
/// 100 KB task arrive. The Challenge comes with the 101.
#[test]
fn a_daemon_takes_large_messages_once_the_host_is_accepted() {
    use mirai::wire::auth::{prove, Prover};
    use mirai::wire::proto::{Msg, PROTOCOL_VERSION};
    let (url, host) = fake_ws_host(challenge(), |s| {
        // The daemon's Hello: read it as a server reads a client's frames.
        let mut r = WsReader::new(true, HANDSHAKE_LIMIT);
        let mut got = Vec::new();
        let mut buf = [0u8; 256];
        while got.len() < 16 || got.len() < 16 + u64::from_be_bytes(got[8..16].try_into().unwrap()) as usize {
            match r.read(s, &mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        let hello = &got[16..];
        let (theirs, _) = match mirai::wire::proto::decode(&hello[4..]).unwrap().0 {
            Msg::Hello { nonce, mac, .. } => (nonce, mac),
            m => panic!("not a Hello: {m:?}"),
        };
        let mac = prove(b"s", Prover::Host, &[7; 32], &theirs);
        let mut out = host_message(&Msg::Welcome { mac: Some(mac) }, b"");
        out.extend(host_message(&Msg::Init { version: PROTOCOL_VERSION, stream: None }, &vec![3u8; 20_000]));
        out.extend(host_message(&Msg::Task { id: 1 }, &vec![5u8; 100_000]));
        s.write_all(&out).unwrap();
        // Hold the connection until the daemon has read it all.
        let _ = s.read(&mut buf);
    });
    let addr = mirai::wire::url::Address::parse(&url).unwrap();
    let mut c = mirai::daemon::client::ClientConn::connect(&addr, "s", 1 << 40, None, || true).unwrap();
    assert_eq!(c.init_settings, vec![3u8; 20_000]);
    let deadline = Instant::now() + Duration::from_secs(10);
    let body = loop {
        assert!(Instant::now() < deadline, "no task within 10 s");
        match c.recv(Duration::from_millis(100)).unwrap() {
            mirai::daemon::client::Incoming::Task { id: 1, body, offset } => break body[offset..].to_vec(),
            mirai::daemon::client::Incoming::Nothing => {}
            _ => panic!("the connection ended before the task"),
        }
    };
    assert_eq!(body, vec![5u8; 100_000]);
    drop(c);
    host.join().unwrap();
}

/// A daemon acts on nothing from a host that has not proved itself, pings
/// included: it answers none before the host's Welcome. Pongs are written
/// with blocking sends, so a fake host that pinged and never read could
/// fill the daemon's send buffer and stall it there, past its handshake
/// deadline (measured: an R daemon blocked in send, its deadline of 30 s
/// met only at 38 s, when TCP's user timeout ended the connection). Here
/// 100 pings (within `PRE_AUTH_BYTES`) come before the Challenge, with the
/// 101: the daemon's first frame is its Hello, and it says nothing more
/// before the host's proof.
#[test]
fn a_daemon_answers_no_ping_from_an_unproven_host() {
    let mut first = Vec::new();
    for i in 0..100u8 {
        encode_one(&mut first, &Frame { b0: 0x89, payload: vec![i; 125], claim: None, form: Form::Shortest, mask: None });
    }
    first.extend(challenge());
    let (url, host) = fake_ws_host(first, |s| {
        // Everything the daemon sends in the next second.
        s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        let mut got = Vec::new();
        let until = Instant::now() + Duration::from_secs(1);
        let mut buf = [0u8; 4096];
        while Instant::now() < until {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(_) => {}
            }
        }
        // One masked binary frame (the Hello, under 126 bytes), and nothing else.
        assert!(got.len() >= 2, "the daemon sent no Hello");
        assert_eq!(got[0], 0x82, "the daemon's first frame is not its Hello (opcode {:#x})", got[0] & 0x0f);
        let len = (got[1] & 0x7f) as usize;
        assert_eq!(got.len(), 2 + 4 + len, "the daemon sent more than its Hello: {} bytes", got.len());
    });
    let addr = mirai::wire::url::Address::parse(&url).unwrap();
    let err = mirai::daemon::client::ClientConn::connect(&addr, "s", 1 << 40, None, || true).err();
    host.join().unwrap();
    assert!(err.is_some(), "the daemon accepted a host that did not prove itself");
}

/// A host that has not proved itself gets `PRE_AUTH_BYTES` of the daemon's
/// reading, whatever it sends: WebSocket control frames need no message,
/// so a fake host that streamed pings (here empty ones, as fast as it can)
/// kept the daemon reading them, never back at its handshake deadline
/// (measured with an R daemon: its 30 s deadline held for as long as the
/// pings came, 70 s). The daemon now gives up at once.
#[test]
fn a_daemon_reads_a_few_kib_from_a_host_that_streams_pings() {
    use mirai::wire::proto::PRE_AUTH_BYTES;
    let (url, host) = fake_ws_host(Vec::new(), |s| {
        let pings = [0x89u8, 0].repeat(50_000);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(40) {
            if s.write_all(&pings).is_err() {
                return;
            }
        }
    });
    let addr = mirai::wire::url::Address::parse(&url).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(mirai::daemon::client::ClientConn::connect(&addr, "s", 1 << 40, None, || true).err());
    });
    let err = rx
        .recv_timeout(Duration::from_secs(35))
        .expect("the daemon kept reading pings past its handshake deadline")
        .expect("the daemon connected to a host that never challenged it");
    assert!(err.contains(&format!("more than {PRE_AUTH_BYTES} bytes")), "{err}");
    host.join().unwrap();
}
