//! The daemon's end of a connection: blocking I/O on R's main thread (no
//! thread hand-off on the hot path), plus a watcher thread for the time R is
//! busy evaluating.
//!
//! Reading is shared: R's thread reads while it waits for a task; while a
//! task runs, the watcher reads instead (the `Reader` mutex and the
//! `evaluating` id decide who). The watcher acts on a cancel for the running
//! task by raising SIGINT in this process (R turns it into an interrupt of
//! the evaluation), queues any other message for R's thread (tasks pipelined
//! without a dispatcher, an exit request), and with autoexit ends the
//! process when the host goes away mid-task.
//!
//! Reads never block (recv with MSG_DONTWAIT): a host that sends part of a frame and
//! stalls leaves R's thread waiting in poll slices, where the daemon's idle
//! and wall time limits and user interrupts still apply. Bodies grow as
//! bytes arrive, up to the daemon's message limit.

use crate::wire::auth::{self, Prover};
use crate::wire::decoder::Decoder;
use crate::wire::frame::{strip_hop, Framing, SP_HEADER};
use crate::wire::proto::{self, Msg, PROTOCOL_VERSION};
use crate::daemon::launched::Launched;
use crate::sys::threads::{self, lock};
use crate::wire::transport::{dial_with, wait_readable, BlockingStream};
use crate::wire::url::Address;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The poll event for "the peer closed its end": POLLRDHUP on Linux; only
/// POLLHUP (reported whatever is asked) elsewhere.
#[cfg(target_os = "linux")]
const HANGUP: libc::c_short = libc::POLLRDHUP;
#[cfg(not(target_os = "linux"))]
const HANGUP: libc::c_short = 0;

pub enum Incoming {
    /// A task; `sid`: for a map's element (`Msg::Item`), its share;
    /// `bare`: its payload lacks R's serialization header (`Msg::Bare`).
    Task { id: u64, body: Vec<u8>, offset: usize, sid: Option<u64>, bare: bool },
    /// A map's shared part, for cache slot `slot` (`Msg::Share`).
    Share { sid: u64, slot: u8, body: Vec<u8>, offset: usize },
    /// The host closed the connection.
    Closed,
    /// The host asked this daemon to exit (`daemons(NULL)`).
    Exit,
    /// Nothing arrived within the wait slice.
    Nothing,
    /// The host broke the protocol (a malformed or unexpected message, one
    /// over the size limit): why. The daemon must not go on.
    Broken(String),
}

struct Reader {
    stream: BlockingStream,
    dec: Decoder,
    /// Messages the watcher read while R was evaluating.
    pending: VecDeque<Incoming>,
    /// The watcher saw the end of the stream.
    eof: bool,
    /// Why the stream ended, if the host broke the protocol.
    broken: Option<String>,
}

struct Shared {
    reader: Mutex<Reader>,
    /// Id of the task R is evaluating; 0 when idle (task ids start at 1).
    evaluating: AtomicU64,
    /// SIGINT was raised for the running task.
    cancel_sent: AtomicBool,
    closed: AtomicBool,
}

pub struct ClientConn {
    stream: BlockingStream,
    /// The process that connected. A process forked from it (a task's
    /// `mcparallel()`) shares the socket: should it run R's exit code (its
    /// expression calls `quit()`), dropping its copy must not shut down the
    /// connection, which is the daemon's (the host lost the daemon, and the
    /// task its result).
    owner: u32,
    shared: Arc<Shared>,
    pub framing: Framing,
    pub limits: Limits,
    /// From the host's Init: this daemon's RNG stream, if assigned, and the
    /// profile's R-serialized settings (empty for none), which R's main
    /// thread reads once after connecting.
    pub init_stream: Option<[i32; 7]>,
    pub init_settings: Vec<u8>,
    /// The share held in each cache slot (0: none), as the host placed
    /// them (`Msg::Share`); the values themselves are R objects, kept by
    /// R's side of the loop.
    pub shares: [u64; proto::SHARE_SLOTS],
    /// What the running task may still relay.
    relayed: RelayBudget,
    /// When this daemon last sent its host something (a result, mostly).
    sent_at: Option<Instant>,
    /// Whether the last task R's side ran was an `everywhere()` task whose
    /// changes stay (set and read there).
    pub keeping: bool,
    /// Whether to spin for the next message before blocking (`IDLE_SPIN`).
    spin: bool,
}

/// How long an idle daemon spins for its next task before it blocks, when
/// its last task came that soon after its previous result (a caller going
/// task by task, or a queue kept full). Blocked, the daemon's CPU goes idle,
/// and on a virtual machine its wake-up for the next task is the largest
/// part of a tiny round trip (bench/floor: ~17 us each way here). A daemon
/// whose tasks come further apart blocks at once, as always, and spends no
/// CPU on waiting. 250 us rather than 100: a node of a 2-node cluster
/// under parallel's `clusterApplyLB()` gets its next task 100-200 us after
/// its result (R's thread handles the other node's in between), so at 100
/// it was mostly asleep, and waking it was a tenth of R's thread (measured:
/// 17,000 tasks/s at 100, 20,800 at 250, medians of 8 interleaved runs).
const IDLE_SPIN: Duration = Duration::from_micros(250);

/// Waits up to `IDLE_SPIN` for `fd` to be readable, yielding the CPU
/// between looks; true if it is.
fn spin_readable(fd: std::os::fd::RawFd) -> bool {
    let until = Instant::now() + IDLE_SPIN;
    loop {
        if wait_readable(fd, Duration::ZERO) {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        std::thread::yield_now();
    }
}

/// How many conditions a task may relay at once, and how many a second
/// after that. The host shows each one in R, at 60-120 microseconds each
/// of its R thread (measured): a task relaying without pause at 1,000 a
/// second took 7.5% of a core from the host, and slowed other tasks'
/// results by as much; at 100 a second, about 1%. A progress bar needs a
/// few updates a second, a log readable by a person not many more. Beyond
/// the budget a condition takes its way as without relay, and is counted
/// for the task's drop note.
pub const RELAY_BURST: f64 = 1000.0;
pub const RELAY_RATE: f64 = 100.0;

/// A token bucket per task: full when a task starts relaying.
pub struct RelayBudget {
    task: u64,
    /// Conditions sent for `task` (the `seq` of the last).
    sent: u64,
    tokens: f64,
    at: Instant,
    dropped: u64,
}

impl RelayBudget {
    pub fn new(now: Instant) -> Self {
        RelayBudget { task: 0, sent: 0, tokens: RELAY_BURST, at: now, dropped: 0 }
    }

    fn start(&mut self, task: u64, now: Instant) {
        if self.task != task {
            *self = RelayBudget { task, ..RelayBudget::new(now) };
        }
    }

    /// The `seq` of a condition `task` may send now, or None (counted for
    /// the drop note if `counted`). `force`: a drop note, sent whatever the
    /// budget.
    pub fn take(&mut self, task: u64, now: Instant, force: bool, counted: bool) -> Option<u64> {
        self.refill(task, now);
        if !force {
            if self.tokens < 1.0 {
                self.dropped += counted as u64;
                return None;
            }
            self.tokens -= 1.0;
        }
        self.sent += 1;
        Some(self.sent)
    }

    fn refill(&mut self, task: u64, now: Instant) {
        self.start(task, now);
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = now;
        self.tokens = (self.tokens + elapsed * RELAY_RATE).min(RELAY_BURST);
    }

    /// Whether `task` may send a condition now (nothing taken).
    pub fn room(&mut self, task: u64, now: Instant) -> bool {
        self.refill(task, now);
        self.tokens >= 1.0
    }

    /// The conditions of `task` dropped so far, counted once.
    pub fn take_dropped(&mut self, task: u64) -> u64 {
        if self.task != task {
            return 0;
        }
        std::mem::take(&mut self.dropped)
    }
}

/// The daemon's own limits, kept here so the receive-evaluate-reply loop
/// needs no clock arithmetic in R.
pub struct Limits {
    pub idle: Option<Duration>,
    pub wall_until: Option<Instant>,
    pub tasks_left: f64,
    pub done: u64,
    pub last_active: Instant,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { idle: None, wall_until: None, tasks_left: f64::INFINITY, done: 0, last_active: Instant::now() }
    }
}

/// Why a daemon's receive loop ends: the one definition of these codes,
/// handed to R at load (`r::helpers::mirai_constants`). Non-negative codes are what
/// `daemon()` returns and `nextcode()` describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum ExitCode {
    /// The host closed the connection.
    Closed = 0,
    /// `idletime` passed with no task.
    Idle = 1,
    /// `walltime` reached.
    Wall = 2,
    /// `maxtasks` done.
    Tasks = 3,
    /// The host asked this daemon to exit (`daemons(NULL)`).
    ExitRequested = -1,
    /// A reply could not be sent: the host is gone.
    HostGone = -2,
}

impl ExitCode {
    pub const ALL: [ExitCode; 6] =
        [ExitCode::Closed, ExitCode::Idle, ExitCode::Wall, ExitCode::Tasks, ExitCode::ExitRequested, ExitCode::HostGone];

    /// The name R knows the code by.
    pub fn name(self) -> &'static str {
        match self {
            ExitCode::Closed => "closed",
            ExitCode::Idle => "idle",
            ExitCode::Wall => "wall",
            ExitCode::Tasks => "tasks",
            ExitCode::ExitRequested => "exit",
            ExitCode::HostGone => "gone",
        }
    }
}

impl Limits {
    /// How long to wait for the next task, or why not to wait at all.
    pub fn wait(&self, now: Instant) -> Result<Option<Duration>, ExitCode> {
        if self.wall_until.is_some_and(|w| now >= w) {
            return Err(ExitCode::Wall);
        }
        let idle_left = match self.idle {
            Some(i) => {
                let left = (self.last_active + i).saturating_duration_since(now);
                if left.is_zero() {
                    return Err(ExitCode::Idle);
                }
                Some(left)
            }
            None => None,
        };
        let wall_left = self.wall_until.map(|w| w.saturating_duration_since(now));
        Ok(match (idle_left, wall_left) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        })
    }

    /// Records a finished task; the exit code if it was the last one.
    pub fn finish_task(&mut self, now: Instant) -> Option<ExitCode> {
        self.done += 1;
        self.last_active = now;
        if self.done as f64 >= self.tasks_left {
            Some(ExitCode::Tasks)
        } else if self.wall_until.is_some_and(|w| now >= w) {
            Some(ExitCode::Wall)
        } else {
            None
        }
    }
}

fn write_frame(stream: &mut BlockingStream, framing: Framing, msg: &Msg, prefix: &[u8]) -> io::Result<()> {
    let mut b = Vec::with_capacity(64);
    framing.begin(&mut b);
    proto::encode_into(msg, &mut b);
    framing.finish(&mut b);
    if !prefix.is_empty() {
        let mut all = prefix.to_vec();
        all.extend_from_slice(&b);
        b = all;
    }
    stream.write_all(&b)
}

impl ClientConn {
    /// Dials `addr`, completes the mutual handshake and waits for the host's
    /// Init. `retry_until`: keep retrying a refused dial until then.
    pub fn connect(
        addr: &Address,
        secret: &str,
        max_message: u64,
        retry_until: Option<Instant>,
        keep_going: impl FnMut() -> bool,
    ) -> Result<ClientConn, String> {
        Self::connect_with(addr, None, secret, max_message, retry_until, false, keep_going)
    }

    /// `connect`, verifying a `tls+tcp://` or `wss://` host with `tls`. With
    /// `persist`, a connection whose handshake fails (a peer that cannot
    /// prove it holds the secret, that says nothing, or that speaks
    /// garbage) is dropped and the address dialled again until
    /// `retry_until`: what a daemon that outlives its host does
    /// (`autoexit = FALSE`), so that whoever takes the address next is
    /// tried, and run for only if it proves itself.
    pub fn connect_with(
        addr: &Address,
        tls: Option<&std::sync::Arc<rustls::ClientConfig>>,
        secret: &str,
        max_message: u64,
        retry_until: Option<Instant>,
        persist: bool,
        mut keep_going: impl FnMut() -> bool,
    ) -> Result<ClientConn, String> {
        let mut backoff = Duration::from_millis(10);
        // Persisting, the daemon ends by `retry_until` (its idle and wall
        // time limits): no handshake with a peer at the address, which may
        // be a squatter that stalls, goes on past it.
        let end_by = if persist { retry_until } else { None };
        loop {
            let (stream, framing) = dial_with(addr, tls, retry_until, end_by, &mut keep_going)
                .map_err(|e| format!("cannot connect to '{addr}': {e}"))?;
            match handshake(stream, framing, addr, secret, max_message, end_by) {
                Ok(c) => return Ok(c),
                Err(e) => {
                    let time_left = retry_until.is_some_and(|d| Instant::now() + backoff < d);
                    if !(persist && time_left && keep_going()) {
                        return Err(e);
                    }
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_millis(500));
                }
            }
        }
    }

    /// Waits up to `slice` for the next message.
    pub fn recv(&mut self, slice: Duration) -> Result<Incoming, String> {
        let sh = &*self.shared;
        let mut r = lock(&sh.reader);
        loop {
            let next = match r.pending.pop_front() {
                Some(m) => m,
                None if r.eof => r.broken.take().map_or(Incoming::Closed, Incoming::Broken),
                None => {
                    let fd = r.stream.as_raw_fd();
                    let ready = buffered(&r.dec, &r.stream) || (self.spin && spin_readable(fd)) || wait_readable(fd, slice);
                    if !ready {
                        self.spin = false;
                        return Ok(Incoming::Nothing);
                    }
                    let Reader { stream, dec, .. } = &mut *r;
                    match next_msg(dec, stream) {
                        Ok(body) => match classify(body) {
                            Ok(Some(m)) => m,
                            // A cancel for a task that already finished.
                            Ok(None) => continue,
                            Err(why) => Incoming::Broken(why),
                        },
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        // Part of a frame: wait for the rest in the next slice.
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Incoming::Nothing),
                        Err(e) => match broken_stream(&e) {
                            Some(why) => Incoming::Broken(why),
                            None => Incoming::Closed,
                        },
                    }
                }
            };
            match &next {
                Incoming::Task { id, .. } => {
                    sh.evaluating.store(*id, Ordering::Release);
                    self.spin = self.sent_at.is_some_and(|t| t.elapsed() <= IDLE_SPIN);
                }
                Incoming::Closed | Incoming::Exit | Incoming::Broken(_) => sh.closed.store(true, Ordering::Release),
                Incoming::Nothing | Incoming::Share { .. } => {}
            }
            return Ok(next);
        }
    }

    /// Starts a reply frame for task `id` (`error`: its value is an error);
    /// append the payload, then `send`.
    pub fn begin_result(&self, id: u64, last: bool, error: bool) -> Vec<u8> {
        let mut b = Vec::new();
        self.framing.begin(&mut b);
        proto::encode_into(&Msg::Result { id, last, error }, &mut b);
        b
    }

    /// Starts a relay frame (`Msg::Relay`) for the running task; append
    /// the payload, then `send`. None when no task runs. `held`: see
    /// `Msg::Relay`.
    /// None too when the task's relay budget is spent (see
    /// `RelayBudget`), unless `force` (a drop note). A held condition
    /// refused is not counted as dropped: a node's `master` keeps it to go
    /// with the task's value (see sendData.miraiRelay in R/cluster.R).
    pub fn begin_relay(&mut self, held: bool, force: bool) -> Option<Vec<u8>> {
        let id = self.current();
        if id == 0 {
            return None;
        }
        let seq = self.relayed.take(id, Instant::now(), force, !held)?;
        let mut b = Vec::new();
        self.framing.begin(&mut b);
        proto::encode_into(&Msg::Relay { id, seq, held }, &mut b);
        Some(b)
    }

    /// Whether the running task's relay budget would take a condition now.
    pub fn relay_room(&mut self) -> bool {
        let id = self.current();
        id != 0 && self.relayed.room(id, Instant::now())
    }

    /// How many of the running task's conditions the budget dropped since
    /// last asked.
    pub fn relay_dropped(&mut self) -> u64 {
        let id = self.current();
        if id == 0 {
            return 0;
        }
        self.relayed.take_dropped(id)
    }

    pub fn send(&mut self, mut frame: Vec<u8>) -> Result<(), String> {
        self.framing.finish(&mut frame);
        self.sent_at = Some(Instant::now());
        self.stream.write_all(&frame).map_err(|e| format!("cannot send result to host: {e}"))
    }

    /// The task R is evaluating (0: none).
    pub fn current(&self) -> u64 {
        self.shared.evaluating.load(Ordering::Acquire)
    }

    /// Ends the running task's watch. True if a cancel raised SIGINT for it:
    /// the caller then clears R's pending interrupt, in case the evaluation
    /// finished before R acted on it.
    pub fn done_evaluating(&self) -> bool {
        let _r = lock(&self.shared.reader);
        self.shared.evaluating.store(0, Ordering::Release);
        self.shared.cancel_sent.swap(false, Ordering::AcqRel)
    }

    /// Starts the watcher thread. With `exit_on_hangup` (autoexit = TRUE), a
    /// host that disappears while R evaluates ends this process (SIGTERM
    /// after a 200 ms grace period, see `Launched::end`); when R is idle its own read sees the end
    /// of stream and `daemon()` returns normally.
    pub fn watch_host(&self, exit_on_hangup: bool, quiet: bool, launched: &'static Launched) -> io::Result<()> {
        let sh = self.shared.clone();
        let fd = self.stream.as_raw_fd();
        let body = move || {
            loop {
                let task = sh.evaluating.load(Ordering::Acquire);
                if task != 0 {
                    // A cancel that arrived in the same read as its task sits
                    // in the decoder's buffer: poll would never report it.
                    watch_read(&sh);
                }
                // Idle: R's thread reads, so only a hang-up is of interest.
                let events = if task != 0 { libc::POLLIN | HANGUP } else { HANGUP };
                let mut p = libc::pollfd { fd, events, revents: 0 };
                // SAFETY: poll reads and writes the one pollfd it is given.
                let rc = unsafe { libc::poll(&mut p, 1, 100) };
                if sh.closed.load(Ordering::Acquire) {
                    return;
                }
                if rc <= 0 {
                    continue;
                }
                if task != 0 && p.revents & libc::POLLIN != 0 {
                    watch_read(&sh);
                }
                if p.revents & (HANGUP | libc::POLLHUP | libc::POLLERR) != 0 {
                    if exit_on_hangup {
                        std::thread::sleep(Duration::from_millis(200));
                        if sh.evaluating.load(Ordering::Acquire) != 0 && !sh.closed.load(Ordering::Acquire) {
                            // Straight to the process's stderr: R's sinks
                            // are R's, and R is busy with the task. Not
                            // with output = FALSE, which discards what a
                            // daemon writes (the reference's daemon
                            // writes to /dev/null then).
                            if !quiet {
                                eprintln!("mirai daemon: the host went away during a task; ending it (autoexit = TRUE)");
                            }
                            launched.end();
                        }
                    }
                    return;
                }
            }
        };
        // Should the watcher ever fail, the daemon must not go on without
        // anyone to act on cancels or a lost host: with autoexit it ends.
        let on_panic = move |msg: String| {
            if exit_on_hangup {
                eprintln!("mirai daemon: its connection watcher failed ({msg}); ending (autoexit = TRUE)");
                launched.end();
            }
        };
        threads::spawn("mirai-watch", body, on_panic)?;
        Ok(())
    }

    pub fn close(&mut self) {
        self.shared.closed.store(true, Ordering::Release);
        if std::process::id() == self.owner {
            self.stream.shutdown();
        }
    }
}

/// The next message, never blocking: received straight from the
/// descriptor, or decrypted (TLS).
fn next_msg(dec: &mut Decoder, stream: &mut BlockingStream) -> io::Result<Vec<u8>> {
    if stream.is_layered() {
        dec.next(stream)
    } else {
        dec.next_fd(stream.as_raw_fd(), libc::MSG_DONTWAIT)
    }
}

/// Bytes are at hand that polling the descriptor would not report.
fn buffered(dec: &Decoder, stream: &BlockingStream) -> bool {
    dec.has_buffered() || stream.has_buffered()
}

fn version_mismatch(host: u32) -> String {
    format!("protocol version mismatch: host speaks {host}, daemon speaks {PROTOCOL_VERSION}; install the same mirai version on both")
}

/// How long `daemon(asyncdial = FALSE)` keeps dialling a host that is not
/// listening (yet) before it gives up.
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(3);

/// How long the handshake may take, from the connect to the Init.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// The daemon's side of the handshake (see `auth`) over a new connection:
/// Challenge in, Hello out, then the host's proof (Welcome), checked before
/// anything else from the host is read, then the Init. Until the host has
/// proved itself it may send only `HANDSHAKE_LIMIT` bytes a message. It
/// takes `HANDSHAKE_TIMEOUT` at most, and ends by `end_by` if given.
fn handshake(
    mut stream: BlockingStream,
    framing: Framing,
    addr: &Address,
    secret: &str,
    max_message: u64,
    end_by: Option<Instant>,
) -> Result<ClientConn, String> {
    stream.write_all(&SP_HEADER).map_err(|e| format!("cannot greet host: {e}"))?;
    let mut rd = stream.try_clone().map_err(|e| format!("cannot connect to '{addr}': {e}"))?;
    let mut dec = Decoder::with_limit(framing, proto::HANDSHAKE_LIMIT);
    let start = Instant::now();
    let deadline = end_by.map_or(start + HANDSHAKE_TIMEOUT, |e| e.min(start + HANDSHAKE_TIMEOUT));
    let deadline = (start, deadline);
    let body = handshake_read(&mut dec, &mut rd, addr, deadline)?;
    let hop = strip_hop(&body)?;
    let host_nonce = match proto::decode(&body[hop..]) {
        Ok((Msg::Challenge { version, nonce }, _)) if version == PROTOCOL_VERSION => nonce,
        Ok((Msg::Refused { reason }, _)) => return Err(refused(reason)),
        _ => match proto::peek_version(&body[hop..]) {
            // A Challenge (variant 7) of another generation.
            Some((7, version)) if version != PROTOCOL_VERSION => return Err(version_mismatch(version)),
            _ => return Err(format!("unexpected first message from host at '{addr}'; is it a mirai host of the same version?")),
        },
    };
    let ours = auth::nonce().map_err(|e| format!("cannot make a nonce: {e}"))?;
    let mac = auth::prove(secret.as_bytes(), Prover::Daemon, &host_nonce, &ours);
    let hello = Msg::Hello { version: PROTOCOL_VERSION, nonce: ours, mac, pid: std::process::id() };
    write_frame(&mut stream, framing, &hello, &[]).map_err(|e| format!("cannot greet host: {e}"))?;
    let body = handshake_read(&mut dec, &mut rd, addr, deadline)?;
    let hop = strip_hop(&body)?;
    let host_mac = match proto::decode(&body[hop..]) {
        Ok((Msg::Welcome { mac }, _)) => mac,
        Ok((Msg::Refused { reason }, _)) => return Err(refused(reason)),
        _ => return Err(format!("the host at '{addr}' did not answer the handshake as a mirai host does")),
    };
    // A daemon given no secret (one started by hand for a host with
    // `auth = FALSE`) has nothing to check the host against.
    if !secret.is_empty() {
        let proved = host_mac.is_some_and(|m| auth::verify(secret.as_bytes(), Prover::Host, &host_nonce, &ours, &m));
        if !proved {
            let hint = if host_mac.is_none() {
                " (it runs without authentication, daemons(auth = FALSE): its daemons take no MIRAI_SECRET)"
            } else {
                ""
            };
            return Err(format!(
                "the host at '{addr}' did not prove that it holds this daemon's secret{hint}: it is not the host \
                 that launched this daemon, and nothing it sends is run"
            ));
        }
    }
    // The host is who it says: its messages may now be as large as the
    // daemon accepts (the Init carries the profile's settings).
    dec.set_limit(max_message);
    stream.host_proved(max_message);
    let body = handshake_read(&mut dec, &mut rd, addr, deadline)?;
    let hop = strip_hop(&body)?;
    let (msg, off) = proto::decode(&body[hop..])?;
    match msg {
        Msg::Init { version, stream: rng } if version == PROTOCOL_VERSION => Ok(ClientConn {
            owner: std::process::id(),
            stream,
            shared: Arc::new(Shared {
                reader: Mutex::new(Reader { stream: rd, dec, pending: VecDeque::new(), eof: false, broken: None }),
                evaluating: AtomicU64::new(0),
                cancel_sent: AtomicBool::new(false),
                closed: AtomicBool::new(false),
            }),
            framing,
            limits: Limits::default(),
            init_stream: rng,
            init_settings: body[hop + off..].to_vec(),
            shares: [0; proto::SHARE_SLOTS],
            relayed: RelayBudget::new(Instant::now()),
            sent_at: None,
            spin: false,
            keeping: false,
        }),
        Msg::Init { version, .. } => Err(version_mismatch(version)),
        m => Err(format!("unexpected message from host during the handshake: {}", kind(&m))),
    }
}

/// A refusal's reason, from a host that has not proved itself: printable
/// characters only, and not too many of them.
fn refused(reason: &str) -> String {
    let clean: String = reason.chars().filter(|c| !c.is_control()).take(400).collect();
    format!("connection refused by host: {clean}")
}

/// A message's kind, for errors (never its contents, which a hostile peer
/// chose).
fn kind(m: &Msg) -> &'static str {
    match m {
        Msg::Hello { .. } => "Hello",
        Msg::Init { .. } => "Init",
        Msg::Refused { .. } => "Refused",
        Msg::Task { .. } => "Task",
        Msg::Result { .. } => "Result",
        Msg::Cancel { .. } => "Cancel",
        Msg::Exit => "Exit",
        Msg::Challenge { .. } => "Challenge",
        Msg::Welcome { .. } => "Welcome",
        Msg::Share { .. } => "Share",
        Msg::Item { .. } => "Item",
        Msg::Relay { .. } => "Relay",
        Msg::Bare { .. } => "Bare",
    }
}

/// Reads one handshake message, waiting no later than `deadline`, the
/// handshake's (start, end).
fn handshake_read(
    dec: &mut Decoder,
    rd: &mut BlockingStream,
    addr: &Address,
    (start, deadline): (Instant, Instant),
) -> Result<Vec<u8>, String> {
    loop {
        if Instant::now() > deadline {
            return Err(format!(
                "no reply from host at '{addr}' within {:.0} s; is it a mirai host?",
                (deadline - start).as_secs_f64()
            ));
        }
        if !buffered(dec, rd) && !wait_readable(rd.as_raw_fd(), Duration::from_millis(200)) {
            continue;
        }
        return match next_msg(dec, rd) {
            Ok(b) => Ok(b),
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => continue,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                // A TLS host drops a plain peer once its bytes fail to parse as TLS.
                let hint = if rd.is_layered() { "" } else { " (if the host listens with TLS, use its tls+tcp:// URL)" };
                Err(format!("host at '{addr}' closed the connection during the handshake{hint}"))
            }
            Err(e) if e.kind() == io::ErrorKind::InvalidData && !rd.is_layered() => Err(format!(
                "handshake with '{addr}' failed: {e} (if the host listens with TLS, use its tls+tcp:// URL)"
            )),
            Err(e) => Err(format!("handshake with '{addr}' failed: {e}")),
        };
    }
}

/// Decodes a message from the host; None for one to ignore.
fn classify(body: Vec<u8>) -> Result<Option<Incoming>, String> {
    let hop = strip_hop(&body).map_err(|e| format!("the host sent a malformed message ({e})"))?;
    let (msg, off) = proto::decode(&body[hop..]).map_err(|e| format!("the host sent a {e}"))?;
    Ok(match msg {
        Msg::Task { id } => Some(Incoming::Task { id, body, offset: hop + off, sid: None, bare: false }),
        Msg::Item { id, sid } => Some(Incoming::Task { id, body, offset: hop + off, sid: Some(sid), bare: false }),
        Msg::Bare { id, sid } => Some(Incoming::Task { id, body, offset: hop + off, sid: Some(sid), bare: true }),
        Msg::Share { sid, slot } if (slot as usize) < proto::SHARE_SLOTS => {
            Some(Incoming::Share { sid, slot, body, offset: hop + off })
        }
        Msg::Exit => Some(Incoming::Exit),
        Msg::Cancel { .. } => None,
        m => return Err(format!("the host sent an unexpected message ({})", kind(&m))),
    })
}

/// Why a read error means the host broke the protocol (bytes that are not
/// a frame, a frame over the size limit), rather than that the connection
/// ended: None for an ending.
fn broken_stream(e: &io::Error) -> Option<String> {
    matches!(e.kind(), io::ErrorKind::InvalidData | io::ErrorKind::OutOfMemory)
        .then(|| format!("the host sent bytes that are not a valid message ({e})"))
}

/// The watcher's read while R evaluates: everything that has arrived.
fn watch_read(sh: &Shared) {
    let mut r = lock(&sh.reader);
    loop {
        let task = sh.evaluating.load(Ordering::Acquire);
        if task == 0 || r.eof {
            return;
        }
        if !buffered(&r.dec, &r.stream) && !wait_readable(r.stream.as_raw_fd(), Duration::ZERO) {
            return;
        }
        let Reader { stream, dec, .. } = &mut *r;
        let body = match next_msg(dec, stream) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) => {
                r.broken = broken_stream(&e);
                r.eof = true;
                return;
            }
        };
        let msg = match strip_hop(&body).and_then(|h| proto::decode(&body[h..])) {
            Ok((m, _)) => m,
            Err(e) => {
                r.broken = Some(format!("the host sent a malformed message ({e})"));
                r.eof = true;
                return;
            }
        };
        match msg {
            Msg::Cancel { id } if id == task => {
                if !sh.cancel_sent.swap(true, Ordering::AcqRel) {
                    threads::interrupt_main();
                }
            }
            Msg::Cancel { .. } => {}
            _ => match classify(body) {
                Ok(Some(m)) => r.pending.push_back(m),
                Ok(None) => {}
                Err(why) => {
                    r.broken = Some(why);
                    r.eof = true;
                }
            },
        }
    }
}

impl Drop for ClientConn {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_relays_a_burst_then_at_the_rate_and_counts_the_rest() {
        let t0 = Instant::now();
        let mut b = RelayBudget::new(t0);
        let burst = RELAY_BURST as u64;
        for k in 1..=burst {
            assert_eq!(b.take(7, t0, false, true), Some(k));
        }
        assert_eq!(b.take(7, t0, false, true), None);
        assert_eq!(b.take(7, t0, false, true), None);
        // A drop note goes whatever the budget, next in sequence.
        assert_eq!(b.take(7, t0, true, true), Some(burst + 1));
        assert_eq!(b.take_dropped(7), 2);
        assert_eq!(b.take_dropped(7), 0);
        // Refilled at the rate: 100 ms later, 10 more (of 100 a second).
        let later = t0 + Duration::from_millis(100);
        let sent = (0..100).filter(|_| b.take(7, later, false, true).is_some()).count();
        assert_eq!(sent as f64, (RELAY_RATE * 0.1).floor());
        assert_eq!(b.take_dropped(7), 100 - sent as u64);
        // Asking for room takes nothing.
        let t2 = t0 + Duration::from_secs(10);
        assert!(b.room(8, t2));
        assert!(b.room(8, t2));
        assert_eq!(b.take(8, t2, false, true), Some(1));
        // Never beyond the burst, however long the pause.
        let much_later = t0 + Duration::from_secs(3600);
        let sent = (0..2 * burst).filter(|_| b.take(7, much_later, false, true).is_some()).count();
        assert_eq!(sent as u64, burst);
        // What is refused uncounted (a node's held condition, kept to go
        // with the value) is not in the note.
        b.take_dropped(7);
        assert_eq!(b.take(7, much_later, false, false), None);
        assert_eq!(b.take_dropped(7), 0);
        // A new task starts with a full budget and no drops of its own;
        // the last task's drops are no longer asked for.
        b.take_dropped(7);
        assert_eq!(b.take(8, much_later, false, true), Some(1));
        assert_eq!(b.take_dropped(7), 0);
        assert_eq!(b.take_dropped(8), 0);
    }
}
