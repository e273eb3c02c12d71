//! The host side of a compute profile (submodules: `sched`, the pure
//! scheduling state machine; `wqueue`, a connection's write queue; `aio`,
//! completion slots shared with R and the doorbells that wait on several;
//! `rng`, the RNG streams given to daemons; `pool`, the local daemons a
//! profile launched, replaced when they die; `monitor`, what each daemon
//! did, for users and for the pool): the listener, every daemon connection
//! and the pure scheduler (`sched`), kept in one `Core` behind a mutex.
//!
//! Two threads drive the core. R's main thread submits and cancels directly:
//! it runs the scheduler and writes the task frame to the daemon's socket
//! itself, so a submit wakes no other thread. A background thread runs the
//! mio event loop for everything that arrives (connections, results), for
//! writes the socket could not take at once (it sees the writable edge), and
//! for timers. R's thread wakes it (mio Waker) only for a new deadline or for
//! shutdown. While R's thread spins for a task's result it also reads that
//! task's daemon itself (`Host::read_for`; a cluster's nodes:
//! `read_for_any`), whenever the loop thread does not hold the core: a
//! tiny round trip then does not wait for the loop thread to be scheduled.
//! Meanwhile the poll does not report that daemon's data to the loop
//! thread, which would only wake to find it read (`Claim`, `Core::quiet`).
//!
//! Write queues (`wqueue`): what a daemon's socket has not taken yet waits
//! in its connection's queue. Without a dispatcher the host tells the
//! scheduler each daemon's unwritten bytes after writing (only when the
//! figure changed or a frame was queued since), and only a daemon with
//! none takes a task; the others wait in the scheduler's queue. A task
//! resolved on a daemon (cancelled, timed out) is withdrawn from the queue
//! (`Action::Withdraw`) and its frame released at once, so a daemon that
//! stopped reading pins no memory.
//!
//! Freed memory: glibc serves frames of a few MB from its heap once it has
//! freed one mmapped block of that size (its mmap threshold rises, up to
//! 32 MiB), and keeps freed heap memory in the process. That reuse is what
//! makes a stream of large tasks fast, so the host lets glibc be and only
//! hands the memory back (`malloc_trim`) when the frames alive have fallen
//! well below a large peak (`FrameMemory`): after a burst, not during one.
//!
//! Memory cap: the scheduler counts the bytes of queued task frames and
//! `Stats` publishes them, so R's thread reads them without the core's lock.
//! Whichever thread moves the count below the cap (R's own thread sending a
//! task, or the loop thread when a daemon frees up) signals `Stats`'
//! condvar, on which a blocked `mirai()` waits.
//!
//! Handshake (`auth`): on accept the host sends its SP header and a
//! `Challenge` with a fresh nonce; the daemon's Hello carries its own nonce
//! and its proof of the profile secret over both; once that checks out the
//! host sends its own proof (`Welcome`), then the Init. The secret never
//! crosses the network, and no proof is good on another connection.
//!
//! Hostile peers: until a peer's Hello is accepted it may send only an
//! envelope-sized message (over TLS or WebSocket, `proto::PRE_AUTH_BYTES`
//! in all),
//! must send it within `HELLO_TIMEOUT`, and at most `MAX_PENDING` such
//! peers are held (a newer one takes the place of the oldest, or, when
//! one source holds more than a quarter of the places, of that source's
//! oldest, so that a flood from one address cannot keep out a daemon from
//! another); a refused peer
//! is read no further. Every peer dropped before it is accepted, and every accepted one
//! dropped for a protocol error, counts in `Stats::refused`. Message bodies
//! grow as bytes arrive (see `decoder`), up to `HostOptions::max_message`.
//!
//! Failure: a panic on either thread while it works on the core makes the
//! core dead (`Core::die`): every pending task resolves to "connection
//! reset" at once, connections close, and every later call on the host
//! returns the reason as an error.

pub mod aio;
pub mod idmap;
pub mod monitor;
pub mod pool;
pub mod relay;
pub mod rng;
pub mod sched;
pub mod wqueue;

use crate::host::aio::{Doorbell, Outcome, Slot};
use crate::host::monitor::{DaemonRow, End, HealthBook, Span, Timeline};
use crate::wire::auth::{self, Prover};
use crate::wire::decoder::Decoder;
use crate::wire::frame::{strip_hop, Framing, SP_HEADER, TASK_WHOLE};
use crate::wire::proto::{self, Msg, NONCE_LEN, PROTOCOL_VERSION, SHARE_SLOTS};
use crate::sys::threads::{self, lock};
use crate::host::sched::{Action, Counters, Sched, TaskId, ERR_RESET, ERR_TIMEOUT};
use crate::wire::transport::{Listener, Source, Stream};
use crate::wire::url::Address;
use crate::host::wqueue::{WriteQueue, Withdrawn, NO_TASK};
use mio::{Events, Interest, Poll, Token, Waker};
use std::cmp::Reverse;
use idmap::IdMap;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);
/// Time a peer has, from being accepted, to complete its Hello.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// Most peers held at once that have not completed their Hello.
pub const MAX_PENDING: usize = 64;
/// `everywhere()` calls a host keeps, to send again to each daemon the
/// pool launches in place of a dead one, and their bytes: beyond either,
/// it keeps none (see `Core::replay`).
pub const REPLAY_CALLS: usize = 100;
pub const REPLAY_BYTES: usize = 64 << 20;
/// Task ids of those replays, counted down from here: never a mirai's id,
/// and never reported to R.
const REPLAY_IDS: u64 = u64::MAX;
/// When accept fails for want of resources (EMFILE, ENFILE, ENOBUFS), the
/// waiting connections raise no new readiness edge: retry on a timer.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

#[derive(Default)]
pub struct Stats {
    pub connections: AtomicU64,
    pub cumulative: AtomicU64,
    pub awaiting: AtomicU64,
    pub executing: AtomicU64,
    pub completed: AtomicU64,
    pub retried: AtomicU64,
    pub refused: AtomicU64,
    pub queued_bytes: AtomicU64,
    pub peak_bytes: AtomicU64,
    /// Bytes of frames handed to daemons' sockets (all of them, control
    /// frames and shares too), for benchmarks.
    pub sent_bytes: AtomicU64,
    /// The memory cap in bytes, 0 for none; fixed when the host starts.
    pub cap_bytes: u64,
    room_lock: Mutex<()>,
    room: Condvar,
    /// Signalled whenever `connections` changes.
    joined: Condvar,
    /// Batches of slots the event loop took out of the core to complete
    /// with the lock released (counted under the lock), and the last batch
    /// it has completed: see `Host::await_deliveries`.
    handed: AtomicU64,
    delivered: AtomicU64,
}

impl Stats {
    /// The counters `info()` and `status()` show, by the names they show
    /// them under (R reads them by name).
    pub fn counters(&self) -> [(&'static str, u64); 7] {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        [
            ("connections", get(&self.connections)),
            ("cumulative", get(&self.cumulative)),
            ("awaiting", get(&self.awaiting)),
            ("executing", get(&self.executing)),
            ("completed", get(&self.completed)),
            ("refused", get(&self.refused)),
            ("retried", get(&self.retried)),
        ]
    }

    fn publish(&self, c: Counters) {
        if self.connections.swap(c.connections, Ordering::Relaxed) != c.connections {
            drop(lock(&self.room_lock));
            self.joined.notify_all();
        }
        self.cumulative.store(c.cumulative, Ordering::Relaxed);
        self.awaiting.store(c.awaiting, Ordering::Relaxed);
        self.executing.store(c.executing, Ordering::Relaxed);
        self.completed.store(c.completed, Ordering::Relaxed);
        self.retried.store(c.retried, Ordering::Relaxed);
        self.peak_bytes.store(c.peak_bytes, Ordering::Relaxed);
        let before = self.queued_bytes.swap(c.queued_bytes, Ordering::Relaxed);
        // Only a crossing below the cap can release a waiter. Taking the
        // lock after the store means a waiter either saw the new count or
        // is already waiting when notified: no wake-up is lost.
        if self.cap_bytes != 0 && before >= self.cap_bytes && c.queued_bytes < self.cap_bytes {
            drop(lock(&self.room_lock));
            self.room.notify_all();
        }
    }

    /// True if another task may be queued: no cap, or the queue is below it.
    pub fn has_room(&self) -> bool {
        self.cap_bytes == 0 || self.queued_bytes.load(Ordering::Relaxed) < self.cap_bytes
    }

    /// Waits up to `slice` for at least `n` daemons; true once connected.
    pub fn wait_connections(&self, n: u64, slice: Duration) -> bool {
        let have = || self.connections.load(Ordering::Relaxed) >= n;
        let g = lock(&self.room_lock);
        let _g = self.joined.wait_timeout_while(g, slice, |_| !have()).unwrap_or_else(|e| e.into_inner());
        have()
    }

    /// Waits up to `slice` until at least `n` daemons have ever joined;
    /// true once they have.
    pub fn wait_joined(&self, n: u64, slice: Duration) -> bool {
        let have = || self.cumulative.load(Ordering::Relaxed) >= n;
        let g = lock(&self.room_lock);
        let _g = self.joined.wait_timeout_while(g, slice, |_| !have()).unwrap_or_else(|e| e.into_inner());
        have()
    }

    /// Waits up to `slice` for room in the queue; true once there is.
    pub fn wait_room(&self, slice: Duration) -> bool {
        let g = lock(&self.room_lock);
        let _g = self.room.wait_timeout_while(g, slice, |_| !self.has_room()).unwrap_or_else(|e| e.into_inner());
        self.has_room()
    }
}

pub struct HostOptions {
    pub dispatcher: bool,
    /// Shared secret daemons must present; None turns the check off.
    pub secret: Option<String>,
    /// Stop once every submitted task has resolved (ephemeral mirai).
    pub oneshot: bool,
    /// If set, the i-th daemon accepted gets the i-th stream after this one
    /// in its Init (a stream per daemon).
    pub rng_stream: Option<rng::Stream>,
    /// Profile settings (R-serialized on R's main thread) sent to every
    /// daemon in its Init; empty for none. Bytes only: this thread never
    /// touches R.
    pub settings: Vec<u8>,
    /// Cap on the bytes of queued tasks (0: none). Submitters check it
    /// themselves (`Stats::has_room`): the host never refuses a task.
    pub memory_cap: u64,
    /// Largest message accepted from an authenticated daemon; a longer
    /// claim closes that connection (a counted refusal).
    pub max_message: u64,
}

pub struct Host {
    pub url: String,
    pub framing: Framing,
    pub dispatcher: bool,
    pub stats: Arc<Stats>,
    pub bell: Arc<Doorbell>,
    /// What the host saw each daemon process do (shared with the pool).
    pub health: Arc<HealthBook>,
    /// Conditions relayed from running tasks (see `relay`).
    pub relay: Arc<relay::Inbox>,
    core: Arc<Mutex<Core>>,
    /// The daemon R's thread is reading while it spins (`read_for`).
    claim: Arc<Claim>,
    thread: Mutex<Option<JoinHandle<()>>>,
    next_id: AtomicU64,
}

/// The daemon connections R's thread reads while it spins for a reply
/// (`read_for`), so that the loop thread, woken by the same reply, leaves
/// them alone: it took the core's lock only to find the socket already
/// read, and R's thread, going on to submit its next task, then had to
/// wake it (strace: three futex calls and a thread switch on every tiny
/// round trip).
///
/// Nothing is lost: the poll reports a socket's readiness once (edge), so
/// an edge the loop passes over is recorded in `missed` before the loop
/// reads `conns`, and R's thread, releasing its claims, reads `missed` after
/// clearing `conns` (both sequentially consistent). Either the loop saw the
/// claim gone and reads itself, or R's thread sees `missed` and reads.
/// Claims are only added during one spin, never swapped for others: a
/// connection let go of before the end of the spin could hold an edge the
/// loop passed over.
///
/// A cluster's receive keeps its claims when it ends (`linger_read`): the
/// next receive, a few microseconds of parallel's R code later, reads the
/// same nodes. Let go of at each receive, a node's reply coming back
/// meanwhile woke the loop thread, which contended for the core's lock
/// with R's thread (measured: 0.85 loop wake-ups per `clusterApplyLB()`
/// task, and 2-4 `epoll_ctl` calls). The loop thread takes back each
/// lingering claim that R's thread has not read for `LINGER` (a node no
/// receive waits on), and R's thread gives them all back before any other
/// wait (`settle`; r/glue/mirai.rs `settle_claims`).
///
/// Claims are added, and taken back, only under the core's lock, so the
/// thread that takes a claim back reads it if an edge was missed.
#[derive(Default)]
struct Claim {
    /// Tokens of the claimed connections, 0 for a free place.
    conns: [std::sync::atomic::AtomicUsize; CLAIM_MAX],
    /// Per place: bumped each time R's thread reads that place's daemon
    /// (`read_for_any`), so the loop thread sees which claims are in use.
    touched: [AtomicU64; CLAIM_MAX],
    missed: std::sync::atomic::AtomicBool,
    /// The claims outlive the wait that made them (`linger_read`).
    lingering: std::sync::atomic::AtomicBool,
}

/// How long lingering claims may go unused before the loop thread takes
/// them back: the longest a reply then waits for a reader, at most twice
/// this. The loop wakes once per `LINGER` while claims linger.
const LINGER: Duration = Duration::from_millis(2);

/// How long the loop thread polls without blocking (yielding the CPU
/// between looks) after a turn that completed tasks, while two or more tasks
/// run on daemons: their replies then find it awake, and a daemon's send
/// does not wake a sleeping thread, which on this 2-core virtual machine
/// was 11-15% of a daemon's CPU per tiny task. Measured in one process,
/// 5,000 tiny tasks, 7 interleaved rounds: 16 daemons without a
/// dispatcher 283 -> 240 ms, with one 361 -> 326 ms; 2 daemons 207 -> 214
/// and 251 -> 236 ms; a single round trip (one task running) unchanged.
/// One task at a time (a round trip, R's thread reading the reply
/// itself) does not spin.
const LOOP_SPIN: Duration = Duration::from_micros(200);

/// The most daemons R's thread reads at once while it spins (a cluster's
/// nodes, say); a wait on more leaves the rest to the loop thread.
const CLAIM_MAX: usize = 8;

impl Claim {
    /// From the loop thread, for a readiness event on `t` that is only
    /// "readable": true if R's thread has it, so the loop may pass over it.
    ///
    /// `missed` is never cleared here: an edge passed over in an earlier
    /// poll must still be read by R's thread after later events for other
    /// daemons (clearing it then lost a reply, and a wait hung). At worst
    /// R's thread reads its daemons once more for nothing.
    fn passes(&self, t: Token) -> bool {
        self.missed.store(true, Ordering::SeqCst);
        self.conns.iter().any(|c| c.load(Ordering::SeqCst) == t.0)
    }

    /// Lets go of every claim (under the core's lock): the tokens held (0
    /// for none), and whether the loop passed over an edge meanwhile; None
    /// if nothing was held.
    fn take(&self) -> Option<([usize; CLAIM_MAX], bool)> {
        self.lingering.store(false, Ordering::SeqCst);
        let mut held = [0usize; CLAIM_MAX];
        for (h, c) in held.iter_mut().zip(&self.conns) {
            *h = c.swap(0, Ordering::SeqCst);
        }
        if held.iter().all(|&t| t == 0) {
            return None;
        }
        Some((held, self.missed.swap(false, Ordering::SeqCst)))
    }

    fn holds_any(&self) -> bool {
        self.conns.iter().any(|c| c.load(Ordering::SeqCst) != 0)
    }

    /// From R's thread, under the core's lock: claims `t` if there is
    /// room, and counts it as read (`touched`). None if not claimed,
    /// Some(true) if claimed now, Some(false) if it already was.
    fn add(&self, t: usize) -> Option<bool> {
        let mut free = None;
        for (i, c) in self.conns.iter().enumerate() {
            match c.load(Ordering::Relaxed) {
                x if x == t => {
                    self.touched[i].fetch_add(1, Ordering::SeqCst);
                    return Some(false);
                }
                0 if free.is_none() => free = Some(i),
                _ => {}
            }
        }
        free.map(|i| {
            self.conns[i].store(t, Ordering::SeqCst);
            self.touched[i].fetch_add(1, Ordering::SeqCst);
            true
        })
    }
}

impl Host {
    pub fn start(addr: &Address, opts: HostOptions) -> Result<Host, String> {
        Self::start_with(addr, opts, None)
    }

    /// `start`, with the TLS configuration a `tls+tcp://` address needs.
    pub fn start_with(addr: &Address, opts: HostOptions, tls: Option<Arc<rustls::ServerConfig>>) -> Result<Host, String> {
        let (mut listener, real) =
            Listener::bind_with(addr, tls).map_err(|e| format!("cannot listen at '{addr}': {e}"))?;
        let framing = if real.is_ipc() { Framing::Ipc } else { Framing::Tcp };
        let poll = Poll::new().map_err(|e| e.to_string())?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)
            .map_err(|e| e.to_string())?;
        let waker = Waker::new(poll.registry(), WAKER).map_err(|e| e.to_string())?;
        let registry = poll.registry().try_clone().map_err(|e| e.to_string())?;
        let stats = Arc::new(Stats { cap_bytes: opts.memory_cap, ..Stats::default() });
        let bell = Arc::new(Doorbell::default());
        let health = Arc::new(HealthBook::default());
        let relay = Arc::new(relay::Inbox::default());
        let core = Arc::new(Mutex::new(Core {
            health: health.clone(),
            timeline: Timeline::default(),
            reply_error: false,
            replay: Some(Vec::new()),
            replay_bytes: 0,
            next_replay_id: REPLAY_IDS,
            relay: relay.clone(),
            bell: bell.clone(),
            registry: Some(registry),
            waker: Some(waker),
            listener: Some(listener),
            framing,
            conns: IdMap::default(),
            next_token: 2,
            sched: Sched::new(opts.dispatcher),
            tasks: IdMap::default(),
            completions: Vec::new(),
            defer_completions: false,
            #[cfg(feature = "test-hooks")]
            delivery_delay: Duration::ZERO,
            frames: FrameMemory::default(),
            joined: Vec::new(),
            timers: BinaryHeap::new(),
            stats: stats.clone(),
            secret: opts.secret,
            oneshot: opts.oneshot,
            submitted: false,
            shutdown: None,
            stopped: false,
            rng_stream: opts.rng_stream,
            settings: opts.settings,
            max_message: opts.max_message,
            pending: BTreeMap::new(),
            hello_deadlines: VecDeque::new(),
            accept_retry: None,
            dead: None,
            fault: false,
            report_unwritten: !opts.dispatcher,
            shares: HashMap::new(),
            next_sid: 1,
            share_clock: 0,
        }));
        let claim = Arc::new(Claim::default());
        let lp = EventLoop { poll, core: core.clone(), claim: claim.clone() };
        let on_panic = {
            let core = core.clone();
            move |msg: String| lock(&core).die(format!("the host's event loop stopped ({msg})"))
        };
        let thread = threads::spawn("mirai-host", move || lp.run(), on_panic).map_err(|e| e.to_string())?;
        Ok(Host {
            url: real.to_string(),
            framing,
            dispatcher: opts.dispatcher,
            stats,
            bell,
            health,
            relay,
            core,
            claim,
            thread: Mutex::new(Some(thread)),
            next_id: AtomicU64::new(1),
        })
    }

    pub fn next_task_id(&self) -> TaskId {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// The first of `n` consecutive task ids, all taken (a map's).
    pub fn next_task_ids(&self, n: usize) -> TaskId {
        self.next_id.fetch_add(n as TaskId, Ordering::Relaxed)
    }

    /// Builds a task frame: the frame prefix and envelope for task `id`,
    /// the payload `write` appends (R's serialization, written straight
    /// into the frame), then the completion mark (`frame::TASK_WHOLE`).
    /// `submit` patches the length.
    pub fn task_frame<E: From<String>>(
        &self,
        id: TaskId,
        write: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
    ) -> Result<Vec<u8>, E> {
        let mut frame = take_scratch();
        task_head_into(self.framing, id, &mut frame);
        let done = write(&mut frame).and_then(|_| {
            // A serializer short of memory fills its buffer exactly: the
            // byte more must not double it, nor abort the session if it
            // cannot.
            if frame.try_reserve_exact(1).is_err() {
                return Err(E::from("cannot allocate memory to serialize the task".to_string()));
            }
            frame.push(TASK_WHOLE);
            Ok(())
        });
        let exact = done.map(|_| exact_frame(&mut frame));
        put_scratch(frame);
        exact
    }

    /// Runs `f` on the core under its lock. Err if the core is dead, or
    /// dies now: a panic inside `f` resolves every pending task and closes
    /// every connection (`Core::die`) rather than leaving half-done state.
    fn with_core<R>(&self, f: impl FnOnce(&mut Core) -> R) -> Result<R, String> {
        let mut core = lock(&self.core);
        if let Some(why) = &core.dead {
            return Err(why.clone());
        }
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&mut core))) {
            Ok(r) => Ok(r),
            Err(p) => {
                let why = format!("the host failed ({})", threads::panic_message(&*p));
                core.die(why.clone());
                Err(why)
            }
        }
    }

    /// From R's thread while it waits for task `id`: reads what the task's
    /// daemon sent, unless the loop thread holds the core (it is reading
    /// then). The reply then resolves the task on this thread, without
    /// waiting for the loop thread to wake. Call `end_read` when the wait
    /// ends.
    pub fn read_for(&self, id: TaskId) {
        self.read_for_any(&[id], || false);
    }

    /// `read_for`, for whichever of tasks `ids` resolves first (a
    /// cluster's nodes): reads their daemons (at most `CLAIM_MAX`) in the
    /// order of `ids`, until `enough` says one has resolved. Given oldest
    /// first, the daemon likeliest to have answered is read first, and a
    /// receive that finds its reply there makes no read that comes back
    /// empty (in `clusterApplyLB()` on 2 nodes, one `recv` call in two).
    pub fn read_for_any(&self, ids: &[TaskId], enough: impl Fn() -> bool) {
        let mut core = match self.core.try_lock() {
            Ok(c) => c,
            Err(std::sync::TryLockError::WouldBlock) => return,
            Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
        };
        if core.dead.is_some() {
            return;
        }
        for &id in ids {
            let Some(d) = core.sched.daemon_of(id) else { continue };
            match self.claim.add(d as usize) {
                None => continue,
                Some(true) => core.quiet(Token(d as usize), true),
                Some(false) => {}
            }
            if let Err(p) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| core.read_conn(Token(d as usize), false))) {
                core.die(format!("the host failed ({})", threads::panic_message(&*p)));
                return;
            }
            if enough() {
                break;
            }
        }
        // A one-shot host stops from its loop once nothing is pending; the
        // loop may have no event of its own left to wake for (R's thread
        // read the reply, or the daemon's end, here).
        if core.oneshot && core.submitted && core.sched.pending_tasks() == 0 {
            core.wake();
        }
    }

    /// Ends what `read_for` began: from here on the loop thread reads those
    /// daemons again, and what it passed over in the meantime is read now.
    pub fn end_read(&self) {
        // Only R's thread adds claims: none now means none to take back.
        if !self.claim.holds_any() {
            self.claim.lingering.store(false, Ordering::SeqCst);
            return;
        }
        let _ = self.with_core(|core| {
            if let Some((held, missed)) = self.claim.take() {
                if !core.stopped {
                    core.release(&held, missed);
                }
            }
        });
    }

    /// Ends what `read_for_any` began, but keeps the claims for the next
    /// wait on the same daemons (a cluster's next receive): see `Claim`.
    /// The loop thread is woken when claims start to linger, so that it
    /// wakes again to take them back if they go unused.
    pub fn linger_read(&self) {
        if self.claim.holds_any() && !self.claim.lingering.swap(true, Ordering::SeqCst) {
            let _ = self.with_core(|core| core.wake());
        }
    }

    /// Lets go of lingering claims now (`end_read`): before a check or a
    /// wait that relies on the loop thread having read what came (R's
    /// thread; r/glue/mirai.rs `settle_claims`).
    pub fn settle(&self) {
        if self.claim.lingering.load(Ordering::SeqCst) {
            self.end_read();
        }
    }

    /// Why the host stopped working, if it failed (not if it was shut down).
    pub fn failure(&self) -> Option<String> {
        lock(&self.core).dead.clone()
    }

    /// Queues a frame built by `task_frame` and, when a daemon is free,
    /// writes it straight to that daemon's socket from the calling thread.
    /// If the host has been shut down the task fails at once with
    /// "connection reset"; if it failed, the reason comes back as Err.
    pub fn submit(&self, id: TaskId, frame: Vec<u8>, slot: Arc<Slot>, timeout: Option<Duration>) -> Result<(), String> {
        self.submit_for(id, frame, slot, timeout, None, 0)
    }

    /// `submit`, for a task sent again, up to `retries` times, to another
    /// daemon when the one running it is lost (see `Sched::submit_retrying`).
    pub fn submit_retrying(
        &self,
        id: TaskId,
        frame: Vec<u8>,
        slot: Arc<Slot>,
        timeout: Option<Duration>,
        retries: u32,
    ) -> Result<(), String> {
        self.submit_for(id, frame, slot, timeout, None, retries)
    }

    /// Like `submit`, but the task runs on the `node`-th daemon to have
    /// joined this host (from 0) and nowhere else (see `Sched::submit_to`):
    /// the nodes of a cluster, each bound to one daemon as base R's
    /// parallel expects. If that daemon has gone, or has not joined, the
    /// task fails with "connection reset" at once.
    pub fn submit_to_node(&self, id: TaskId, frame: Vec<u8>, slot: Arc<Slot>, node: usize) -> Result<(), String> {
        self.submit_for(id, frame, slot, None, Some(node), 0)
    }

    fn submit_for(
        &self,
        id: TaskId,
        mut frame: Vec<u8>,
        slot: Arc<Slot>,
        timeout: Option<Duration>,
        node: Option<usize>,
        retries: u32,
    ) -> Result<(), String> {
        let deadline = timeout.map(|t| Instant::now() + t);
        self.with_core(|core| {
            if core.stopped || core.shutdown.is_some() {
                slot.complete(Outcome::Error(ERR_RESET));
                return;
            }
            core.framing.finish(&mut frame);
            let bytes = frame.len() as u64;
            core.frames.hold(bytes);
            core.tasks.insert(id, TaskEntry { frame: TaskFrame::queued(frame), shared: None, slot, span: 0 });
            core.submitted = true;
            let acts = match node {
                None => core.sched.submit_retrying(id, bytes, retries),
                Some(n) => match core.joined.get(n) {
                    Some(&d) => core.sched.submit_to(id, d),
                    None => {
                        if let Some(te) = core.tasks.remove(&id) {
                            core.frames.release(te.held());
                            te.slot.complete(Outcome::Error(ERR_RESET));
                        }
                        Vec::new()
                    }
                },
            };
            core.apply(acts, None);
            if let Some(d) = deadline {
                core.timers.push(Reverse((d, id)));
                // The loop thread must recompute its poll timeout.
                core.wake();
            }
        })
    }

    /// The share id of content with SHA-256 `hash` (see `submit_map`): the
    /// same content keeps its id while the host remembers it (the last
    /// `SHARE_TABLE` contents), so daemons holding it are not sent it again.
    pub fn share_id(&self, hash: [u8; 32]) -> Result<u64, String> {
        self.with_core(|core| {
            if let Some((sid, _)) = core.shares.get(&hash) {
                return *sid;
            }
            if core.shares.len() >= SHARE_TABLE {
                core.shares.retain(|_, (_, w)| w.strong_count() > 0);
                if core.shares.len() >= SHARE_TABLE {
                    // Forgotten ids are never reused: a daemon that holds
                    // one is sent the content again, under a new id.
                    core.shares.clear();
                }
            }
            let sid = core.next_sid;
            core.next_sid += 1;
            core.shares.insert(hash, (sid, std::rc::Weak::new()));
            sid
        })
    }

    /// `mirai_map()`: queues a map's elements at once, under one lock.
    /// `shared` is the payload every element needs (its function, `.args`
    /// and globals, R-serialized), `hash` its SHA-256: it travels to each
    /// daemon once, before the first of the map's elements that daemon
    /// takes, and not at all to a daemon that still holds the same content
    /// from an earlier map. `items`: each element's id, frame (an `Item`
    /// envelope from `item_head_into`, then the element's payload, as
    /// `task_frame` builds a task's) and slot.
    /// `sid`: from `share_id(hash)`.
    pub fn submit_map(
        &self,
        shared: Vec<u8>,
        hash: [u8; 32],
        sid: u64,
        items: Vec<(TaskId, Vec<u8>, Arc<Slot>)>,
        retries: u32,
    ) -> Result<(), String> {
        self.with_core(|core| {
            if core.stopped || core.shutdown.is_some() {
                for (_, _, slot) in &items {
                    slot.complete(Outcome::Error(ERR_RESET));
                }
                return;
            }
            let part = core.share_part(hash, sid, || shared);
            core.submitted = true;
            // Room for the whole map at once: grown element by element, the
            // tables left their outgrown copies as free memory in the process.
            core.tasks.reserve(items.len());
            core.sched.reserve(items.len());
            let mut acts = Vec::new();
            for (id, mut frame, slot) in items {
                core.framing.finish(&mut frame);
                let bytes = frame.len() as u64;
                core.frames.hold(bytes);
                core.tasks.insert(
                    id,
                    TaskEntry { frame: TaskFrame::queued(frame), shared: Some(part.clone()), slot, span: 0 },
                );
                acts.extend(core.sched.submit_retrying(id, bytes, retries));
            }
            core.apply(acts, None);
        })
    }

    /// A cluster node's task whose function travels as share `sid` (content
    /// `hash`), as a map's shared part does (see `submit_map`): `frame` is
    /// an `Item` envelope from `item_head_into` with the task's own
    /// payload, pinned to the `node`-th daemon to have joined, as
    /// `submit_to_node`. The share is written before the frame unless that
    /// daemon holds it already. `share` makes the share's payload (without
    /// the completion mark) only if no queued or running task holds the
    /// same content: on a load-balanced call, another node's task usually
    /// does, so the caller's copy is rarely made.
    #[allow(clippy::too_many_arguments)]
    pub fn submit_node_item(
        &self,
        id: TaskId,
        mut frame: Vec<u8>,
        slot: Arc<Slot>,
        node: usize,
        hash: [u8; 32],
        sid: u64,
        share: impl FnOnce() -> Vec<u8>,
    ) -> Result<(), String> {
        self.with_core(|core| {
            if core.stopped || core.shutdown.is_some() {
                slot.complete(Outcome::Error(ERR_RESET));
                return;
            }
            let Some(&d) = core.joined.get(node) else {
                slot.complete(Outcome::Error(ERR_RESET));
                return;
            };
            let part = core.share_part(hash, sid, share);
            core.framing.finish(&mut frame);
            core.frames.hold(frame.len() as u64);
            core.tasks.insert(id, TaskEntry { frame: TaskFrame::queued(frame), shared: Some(part), slot, span: 0 });
            core.submitted = true;
            let acts = core.sched.submit_to(id, d);
            core.apply(acts, None);
        })
    }

    /// For tests: how many daemons R's thread has claimed, and whether
    /// the claims linger (`linger_read`).
    #[cfg(feature = "test-hooks")]
    pub fn claims(&self) -> (usize, bool) {
        let n = self.claim.conns.iter().filter(|c| c.load(Ordering::SeqCst) != 0).count();
        (n, self.claim.lingering.load(Ordering::SeqCst))
    }

    /// Makes the event loop thread panic, as a bug would: for tests of what
    /// a failed host does (pending tasks resolve, later calls error).
    pub fn inject_fault(&self) {
        let mut core = lock(&self.core);
        core.fault = true;
        core.wake();
    }

    /// `everywhere()`: one task per connected daemon, each pinned to its
    /// daemon (see `Sched::submit_to`). The daemons are read and the tasks
    /// queued under one lock, so a daemon connecting meanwhile gets none
    /// and none is counted twice. The R-serialized `payload` is shared by
    /// all the frames rather than copied per daemon: it may be large data
    /// meant for every daemon. Returns each task's id and slot.
    /// With fewer than `min` daemons connected, the difference goes as
    /// tasks for the next daemons to connect, one each.
    pub fn broadcast(&self, payload: Vec<u8>, min: usize) -> Result<Vec<(TaskId, Arc<Slot>)>, String> {
        self.with_core(|core| self.broadcast_locked(core, payload, min))
    }

    fn broadcast_locked(&self, core: &mut Core, payload: Vec<u8>, min: usize) -> Vec<(TaskId, Arc<Slot>)> {
        if core.stopped || core.shutdown.is_some() {
            return Vec::new();
        }
        let mut payload = payload;
        payload.push(TASK_WHOLE);
        let payload = Rc::new(payload);
        core.replay_bytes += payload.len();
        if let Some(r) = &mut core.replay {
            if r.len() < REPLAY_CALLS && core.replay_bytes <= REPLAY_BYTES {
                r.push(payload.clone());
            } else {
                core.replay = None;
            }
        }
        let tail = Rc::new(Shared { share: None, payload: payload.clone() });
        let mut out = Vec::new();
        let ids = core.sched.daemon_ids();
        let later = min.saturating_sub(ids.len());
        let targets = ids.into_iter().map(Some).chain(std::iter::repeat_n(None, later));
        for d in targets {
            let id = self.next_task_id();
            let mut head = task_head(core.framing, id);
            core.framing.finish_with_tail(&mut head, payload.len());
            let slot = Slot::new(self.bell.clone());
            // Counted per task although shared: the count only decides when
            // to hand memory back, and a large broadcast is worth it.
            let bytes = (head.len() + payload.len()) as u64;
            core.frames.hold(bytes);
            core.tasks.insert(
                id,
                TaskEntry { frame: TaskFrame::queued(head), shared: Some(tail.clone()), slot: slot.clone(), span: 0 },
            );
            let acts = match d {
                Some(d) => core.sched.submit_to(id, d),
                None => core.sched.submit_to_next(id),
            };
            core.apply(acts, None);
            out.push((id, slot));
        }
        core.submitted = true;
        out
    }

    /// Cancels a task; true if it was found unresolved. A failed host has
    /// already resolved every task: false.
    ///
    /// When false, whatever outcome the host had already taken for the task
    /// is in its slot on return: the event loop completes slots after
    /// releasing the lock, so a task it has just resolved is gone from the
    /// scheduler while its slot is not yet done. The caller, resolving the
    /// slot to "canceled" on false, would otherwise discard a result that
    /// arrived (and say the task was not found).
    pub fn cancel(&self, id: TaskId, code: i32) -> bool {
        self.cancel_with(false, |ok| !ok, |sched| sched.cancel(id, code))
    }

    /// Runs scheduler cancel `f` under the lock (`stopped`: its answer on a
    /// stopped host); when `missed` says a task was not found, waits for
    /// the deliveries in flight (see `cancel`).
    fn cancel_with<T: Clone>(&self, stopped: T, missed: impl Fn(&T) -> bool, f: impl FnOnce(&mut Sched) -> (T, Vec<Action>)) -> T {
        let (found, batch) = self
            .with_core(|core| {
                let batch = core.stats.handed.load(Ordering::Relaxed);
                if core.stopped {
                    return (stopped.clone(), batch);
                }
                let (found, acts) = f(&mut core.sched);
                core.apply(acts, None);
                (found, batch)
            })
            .unwrap_or_else(|_| (stopped.clone(), 0));
        if missed(&found) {
            self.await_deliveries(batch);
        }
        found
    }

    /// Waits until the event loop has completed its batch `batch` of slots
    /// (read under the lock), or has failed. Short: the loop completes a
    /// batch without taking any lock.
    fn await_deliveries(&self, batch: u64) {
        let mut spins = 0u32;
        while self.stats.delivered.load(Ordering::Acquire) < batch {
            spins += 1;
            if spins % 64 == 0 {
                if lock(&self.core).dead.is_some() || lock(&self.thread).as_ref().is_none_or(|h| h.is_finished()) {
                    return;
                }
                std::thread::sleep(Duration::from_micros(50));
            } else {
                std::thread::yield_now();
            }
        }
    }

    /// Makes the event loop wait `d` between taking resolved slots out of
    /// the core and completing them (tests of that window).
    #[cfg(feature = "test-hooks")]
    pub fn delay_deliveries(&self, d: Duration) {
        lock(&self.core).delivery_delay = d;
    }

    /// `cancel` for many tasks at once (`stop_mirai()` on a map), under
    /// one lock and one pass over the queue; for each, whether found.
    pub fn cancel_many(&self, ids: &[TaskId], code: i32) -> Vec<bool> {
        self.cancel_with(vec![false; ids.len()], |found| found.iter().any(|f| !f), |sched| sched.cancel_many(ids, code))
    }

    /// The counters of each connected daemon, in the order they joined.
    pub fn daemon_rows(&self) -> Result<Vec<DaemonRow>, String> {
        self.with_core(|core| {
            let mut rows: Vec<DaemonRow> = core.conns.values().filter(|c| c.ready).map(|c| c.row).collect();
            rows.sort_by_key(|r| r.id);
            rows
        })
    }

    /// The timeline's spans, oldest first (of the tasks in `only` if given),
    /// and its origin as seconds since the Unix epoch.
    pub fn timeline(&self, only: Option<&std::collections::HashSet<u64>>) -> Result<(Vec<Span>, f64), String> {
        self.with_core(|core| {
            let keep = |s: &&Span| only.is_none_or(|o| o.contains(&s.task));
            (core.timeline.spans().filter(keep).copied().collect(), core.timeline.origin_unix)
        })
    }

    pub fn shutdown(&self, signal: bool) {
        let handle = lock(&self.thread).take();
        if let Some(h) = handle {
            {
                let mut core = lock(&self.core);
                core.shutdown = Some(signal);
                core.wake();
            }
            let _ = h.join();
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.shutdown(false);
    }
}

struct Conn {
    stream: Stream,
    dec: Decoder,
    wq: WriteQueue,
    /// Its Hello was accepted: it is a daemon of this host.
    ready: bool,
    /// The challenge sent on accept, which its Hello must answer.
    nonce: [u8; NONCE_LEN],
    retiring: bool,
    /// The share in each of the daemon's cache slots, and when it was last
    /// used (`Core::share_clock`; 0: empty). The daemon fills its slots as
    /// the `Share` frames say, in stream order, so this is what it holds.
    shares: [(u64, u64); SHARE_SLOTS],
    /// Its counters (id and pid set once its Hello is accepted).
    row: DaemonRow,
    /// Registered for writability too (see `watch_writable`).
    writable: bool,
}

impl Conn {
    /// Queues a frame that belongs to no task (a control message).
    fn push(&mut self, frame: Rc<Vec<u8>>) {
        self.wq.push(frame, NO_TASK);
    }

    /// Makes sure the daemon holds share `sh` before the next frame: if
    /// none of its slots does, the least recently used one gets it (a
    /// `Share` frame, its payload shared by every daemon's queue).
    fn hold_share(&mut self, sid: u64, payload: &Rc<Vec<u8>>, framing: Framing, clock: u64) {
        if let Some(k) = self.shares.iter().position(|s| s.0 == sid) {
            self.shares[k].1 = clock;
            return;
        }
        let k = (0..SHARE_SLOTS).min_by_key(|&k| self.shares[k].1).unwrap_or(0);
        self.shares[k] = (sid, clock);
        let mut head = Vec::with_capacity(32);
        framing.begin(&mut head);
        proto::encode_into(&Msg::Share { sid, slot: k as u8 }, &mut head);
        framing.finish_with_tail(&mut head, payload.len());
        self.push(Rc::new(head));
        self.wq.push_tail(payload.clone(), NO_TASK);
    }

    /// Writes as much as the socket takes. Err means the peer is gone.
    fn flush(&mut self) -> io::Result<()> {
        self.wq.flush(&mut self.stream)?;
        // TLS: records encrypted above but not yet taken by the socket.
        match self.stream.flush() {
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => Err(e),
            _ => Ok(()),
        }
    }

    /// Asks the loop to be told of writability only while bytes wait for
    /// the socket. Registered for it all along, the loop thread woke once
    /// more per task for nothing: a Unix socket (or TCP, on an ACK) signals
    /// room to write each time the daemon reads a frame, and on 2 cores
    /// that wake-up competes with the waiting R thread and the daemon
    /// (strace: 2 epoll_wait returns per round trip, now 1). TLS and
    /// WebSocket streams stay registered for both: their layers may want
    /// to write whatever the queue holds. Changing the interest re-polls
    /// the socket, so room that came meanwhile is not missed.
    fn watch_writable(&mut self, registry: Option<&mio::Registry>, t: Token) {
        let want = !self.drained();
        if want == self.writable || self.stream.is_layered() {
            return;
        }
        let interest = if want { Interest::READABLE | Interest::WRITABLE } else { Interest::READABLE };
        if let Some(r) = registry {
            if r.reregister(&mut self.stream, t, interest).is_ok() {
                self.writable = want;
            }
        }
    }

    /// Everything queued has reached the socket.
    fn drained(&self) -> bool {
        self.wq.is_empty() && !self.stream.wants_write()
    }

    /// The next message: straight from the descriptor, or through TLS.
    fn next_msg(&mut self) -> io::Result<Vec<u8>> {
        if self.stream.is_layered() {
            self.dec.next(&mut self.stream)
        } else {
            self.dec.next_fd(self.stream.as_raw_fd(), 0)
        }
    }
}

/// Frames alive above this peak are worth handing back once freed.
const GIVE_BACK_PEAK: u64 = 64 << 20;

/// The bytes of the task frames alive, and their peak since freed memory
/// was last handed back: once they fall to an eighth of a peak of at least
/// `GIVE_BACK_PEAK`, a burst is over and its memory should leave the
/// process. A steady stream never gets there, and keeps glibc's reuse.
#[derive(Debug, Default)]
struct FrameMemory {
    live: u64,
    peak: u64,
}

impl FrameMemory {
    fn hold(&mut self, bytes: u64) {
        self.live += bytes;
        self.peak = self.peak.max(self.live);
    }

    fn release(&mut self, bytes: u64) {
        self.live = self.live.saturating_sub(bytes);
    }

    /// True once after each burst (the peak starts again from what is left).
    fn should_give_back(&mut self) -> bool {
        let burst_over = self.peak >= GIVE_BACK_PEAK && self.live <= self.peak / 8;
        if burst_over {
            self.peak = self.live;
        }
        burst_over
    }
}

/// Hands the free memory of every malloc arena back to the system. Costs a
/// walk over the free chunks (milliseconds for a heap of hundreds of MB).
fn give_back_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// A task's frame: owned alone, in exactly its bytes, while it waits in
/// the queue; shared with a write queue once sent. A queued task thus costs
/// one allocation, not a Vec's (with the spare room its growth left) plus
/// an Rc's 40 bytes: tasks queued by the 100,000 made that 48 bytes each.
/// Sent tasks are few (about one per daemon), so the Rc is made then.
/// None (a resolved task is never sent again, so its memory goes as soon
/// as no write queue holds it either) is an empty frame: a frame always has
/// a head, and the enum stays 16 bytes, where an Option around it takes 24.
enum TaskFrame {
    Queued(Box<[u8]>),
    Sent(Rc<Vec<u8>>),
}

impl TaskFrame {
    /// A frame to queue, trimmed to its length (serialization grows its
    /// buffer by doubling; giving back the spare room is a realloc that
    /// shrinks in place, or an mremap for a large frame: no copy).
    fn queued(frame: Vec<u8>) -> TaskFrame {
        TaskFrame::Queued(frame.into_boxed_slice())
    }

    fn none() -> TaskFrame {
        TaskFrame::Queued(Box::default())
    }

    fn len(&self) -> usize {
        match self {
            TaskFrame::Queued(b) => b.len(),
            TaskFrame::Sent(r) => r.len(),
        }
    }

    fn is_some(&self) -> bool {
        self.len() > 0
    }

    /// The frame to hand a write queue (None if resolved): shared from now.
    fn for_sending(&mut self) -> Option<Rc<Vec<u8>>> {
        if let TaskFrame::Queued(b) = self {
            if b.is_empty() {
                return None;
            }
            *self = TaskFrame::Sent(Rc::new(Vec::from(std::mem::take(b))));
        }
        match self {
            TaskFrame::Sent(r) => Some(r.clone()),
            TaskFrame::Queued(_) => None,
        }
    }
}

struct TaskEntry {
    frame: TaskFrame,
    /// What its frame is sent with, if anything (one for all the tasks of
    /// a map or a broadcast).
    shared: Option<Rc<Shared>>,
    slot: Arc<Slot>,
    /// Its latest span in the timeline, plus one (0: none yet).
    span: u64,
}

impl TaskEntry {
    /// Bytes of `frame` and a broadcast's tail as counted in `FrameMemory`
    /// while the frame is held (none once resolved). Worked out rather than kept: an
    /// entry is kept per queued task.
    fn held(&self) -> u64 {
        match self.frame.len() {
            0 => 0,
            n => (n + self.shared.as_ref().filter(|s| s.share.is_none()).map_or(0, |s| s.payload.len())) as u64,
        }
    }
}

/// A payload the frames of several tasks share, one buffer for them all,
/// and one Rc in each task's entry (a field for each kind took 16 bytes an
/// entry, with every queued task paying for both): with `share`, a map's
/// shared part (see `Host::submit_map`), the payload of the `Share` frame
/// the task's daemon must have had first; without, the rest of each frame
/// of a broadcast, written right after the task's own head.
struct Shared {
    share: Option<u64>,
    payload: Rc<Vec<u8>>,
}

/// Most content hashes the host remembers the share ids of.
const SHARE_TABLE: usize = 64;

// Rc inside: the Core is only ever touched under its mutex, one thread at
// a time, so the frames it shares between queues never cross threads
// concurrently.
struct Core {
    health: Arc<HealthBook>,
    /// Recent tasks: which daemon ran each, from when to when.
    timeline: Timeline,
    /// The result being applied is an error value (its `Result` said so).
    reply_error: bool,
    /// The payloads of the `everywhere()` calls so far, in order, sent to
    /// a replacement daemon before anything else; None once they went past
    /// `REPLAY_CALLS` or `REPLAY_BYTES`: then none is replayed, as a
    /// replacement that evaluated only some of them would be in a state no
    /// other daemon is in.
    replay: Option<Vec<Rc<Vec<u8>>>>,
    replay_bytes: usize,
    next_replay_id: u64,
    /// The loop's registry and waker; None once stopped, so that their
    /// descriptors close with the loop rather than when R collects the
    /// profile's handle.
    registry: Option<mio::Registry>,
    waker: Option<Waker>,
    /// None once stopped: the address is free again at once (a new host
    /// may bind it while R still holds this one's handle).
    listener: Option<Listener>,
    framing: Framing,
    conns: IdMap<Token, Conn>,
    next_token: usize,
    sched: Sched,
    tasks: IdMap<TaskId, TaskEntry>,
    /// Slots resolved by the actions being applied, completed only once the
    /// counters are published (`publish_then_complete`).
    completions: Vec<(Arc<Slot>, Outcome)>,
    /// Set by the event loop while it holds the lock: it completes the
    /// slots itself once the lock is released (see `EventLoop::run`).
    defer_completions: bool,
    /// Bytes of the task frames alive (see the module docs).
    frames: FrameMemory,
    /// Every daemon ever accepted, in the order they joined: node i of a
    /// cluster is `joined[i]`.
    joined: Vec<u64>,
    timers: BinaryHeap<Reverse<(Instant, TaskId)>>,
    stats: Arc<Stats>,
    secret: Option<String>,
    oneshot: bool,
    submitted: bool,
    rng_stream: Option<rng::Stream>,
    settings: Vec<u8>,
    /// Set by `Host::shutdown`: Some(send the exit signal).
    shutdown: Option<bool>,
    stopped: bool,
    max_message: u64,
    /// Connections not yet authenticated (at most `MAX_PENDING`), with
    /// where each came from, oldest first (tokens are given in accept
    /// order); and their Hello deadlines in accept order (tokens are never
    /// reused, so stale entries are inert).
    pending: BTreeMap<Token, Source>,
    hello_deadlines: VecDeque<(Instant, Token)>,
    accept_retry: Option<Instant>,
    /// Why the core stopped working (a caught panic); see `die`.
    dead: Option<String>,
    /// Set by `Host::inject_fault`.
    fault: bool,
    /// Set by `Host::delay_deliveries` (tests only).
    #[cfg(feature = "test-hooks")]
    delivery_delay: Duration,
    /// Tell the scheduler each daemon's unwritten bytes (it uses them only
    /// without a dispatcher).
    report_unwritten: bool,
    /// Share ids by the SHA-256 of their content, with the content while a
    /// task holds it: the same shared part gets the same id, so a daemon
    /// that holds it is not sent it again.
    shares: HashMap<[u8; 32], (u64, std::rc::Weak<Vec<u8>>)>,
    next_sid: u64,
    /// Orders the uses of daemons' share slots (least recently used goes).
    share_clock: u64,
    /// Where relayed conditions go (`Host::relay`), and the doorbell rung
    /// for them so that waits on any of several tasks see them.
    relay: Arc<relay::Inbox>,
    bell: Arc<Doorbell>,
}

// SAFETY: see the comment on Core: all access is serialized by the mutex.
unsafe impl Send for Core {}

struct EventLoop {
    poll: Poll,
    core: Arc<Mutex<Core>>,
    claim: Arc<Claim>,
}

impl EventLoop {
    fn run(mut self) {
        let mut events = Events::with_capacity(256);
        let mut resolved = Vec::new();
        let stats = lock(&self.core).stats.clone();
        // The next timer, as of the last turn; a turn passed over (below)
        // does not take the lock to learn it again.
        let mut deadline: Option<Instant> = None;
        let mut passed = false;
        // Per claim place: the last `touched` seen, and since when.
        let mut seen = [(0u64, Instant::now()); CLAIM_MAX];
        // Until when to poll without blocking (see `LOOP_SPIN`).
        let mut spin_until: Option<Instant> = None;
        loop {
            let spinning = spin_until.is_some_and(|t| Instant::now() < t);
            let mut timeout = if passed {
                deadline.map(|d| d.saturating_duration_since(Instant::now()))
            } else {
                let core = lock(&self.core);
                if core.dead.is_some() {
                    return;
                }
                let t = core.next_timeout();
                deadline = t.map(|t| Instant::now() + t);
                t
            };
            if self.claim.lingering.load(Ordering::SeqCst) {
                timeout = Some(timeout.map_or(LINGER, |t| t.min(LINGER)));
            }
            if spinning {
                timeout = Some(Duration::ZERO);
            }
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    lock(&self.core).die(format!("the host's event loop stopped (poll failed: {e})"));
                    return;
                }
            }
            // Nothing yet, no timer due: look again, without the lock.
            if spinning
                && events.is_empty()
                && deadline.is_none_or(|d| d > Instant::now())
                && !self.claim.lingering.load(Ordering::SeqCst)
            {
                passed = true;
                std::thread::yield_now();
                continue;
            }
            // Woken only by a reply that R's thread, spinning for it, reads
            // itself: nothing to do, and no lock to take from that thread.
            let stale = self.unused_claims(&mut seen);
            passed = !stale
                && !events.is_empty()
                && events.iter().all(|ev| self.for_r_thread(ev))
                && deadline.is_none_or(|d| d > Instant::now());
            if passed {
                continue;
            }
            let end = {
                let mut core = lock(&self.core);
                if core.dead.is_some() {
                    return;
                }
                core.defer_completions = true;
                if stale {
                    self.take_back(&mut core, &seen);
                }
                let end = core.turn(&events);
                core.defer_completions = false;
                // Swapped, so both Vecs keep their room between turns.
                std::mem::swap(&mut resolved, &mut core.completions);
                // Counted under the lock: a cancel that misses a task reads
                // it there and waits for this batch (`await_deliveries`).
                let batch = (!resolved.is_empty()).then(|| core.stats.handed.fetch_add(1, Ordering::Relaxed) + 1);
                #[cfg(feature = "test-hooks")]
                let delay = core.delivery_delay;
                #[cfg(not(feature = "test-hooks"))]
                let delay = Duration::ZERO;
                let busy = core.sched.executing_count() > 1;
                (end, batch, delay, busy)
            };
            let (end, batch, delay, busy) = end;
            // Only after results: a relayed condition or a wake-up from R's
            // thread says nothing of replies to come.
            spin_until = (busy && batch.is_some()).then(|| Instant::now() + LOOP_SPIN);
            if batch.is_some() && !delay.is_zero() {
                std::thread::sleep(delay);
            }
            // Slots are completed with the core unlocked: R's thread, often
            // spinning on the slot, goes straight on to submit its next task,
            // which takes this lock. Completed inside it, R's thread found it
            // still held (strace: a futex wait and wake on nearly every round
            // trip, and a thread switch each). The counters were published
            // under the lock, before these stores, as `apply` has it.
            for (slot, outcome) in resolved.drain(..) {
                slot.complete(outcome);
            }
            if let Some(b) = batch {
                stats.delivered.store(b, Ordering::Release);
            }
            if end {
                return;
            }
        }
    }
}

impl EventLoop {
    /// Whether R's thread has left a lingering claim unread for `LINGER`
    /// (`seen`: per place, the last `Claim::touched` read, and when).
    fn unused_claims(&self, seen: &mut [(u64, Instant); CLAIM_MAX]) -> bool {
        if !self.claim.lingering.load(Ordering::SeqCst) {
            return false;
        }
        if !self.claim.holds_any() {
            // `linger_read` set the flag as the last claim was taken back:
            // `take_back` clears it, under the lock (R's thread claims only
            // under it), so that the loop stops waking for nothing.
            return true;
        }
        let now = Instant::now();
        let mut any = false;
        for (i, s) in seen.iter_mut().enumerate() {
            let t = self.claim.touched[i].load(Ordering::SeqCst);
            if t != s.0 {
                *s = (t, now);
            } else if self.claim.conns[i].load(Ordering::SeqCst) != 0 && now.duration_since(s.1) >= LINGER {
                any = true;
            }
        }
        any
    }

    /// Under the core's lock: takes back the claims still unread since
    /// `unused_claims` saw them (R's thread reads, and touches, only under
    /// the lock), reading each if an edge was missed. Once none is left the
    /// claims no longer linger.
    fn take_back(&self, core: &mut Core, seen: &[(u64, Instant); CLAIM_MAX]) {
        let now = Instant::now();
        let mut freed = [0usize; CLAIM_MAX];
        for (i, f) in freed.iter_mut().enumerate() {
            let (t, since) = seen[i];
            if self.claim.touched[i].load(Ordering::SeqCst) == t && now.duration_since(since) >= LINGER {
                *f = self.claim.conns[i].swap(0, Ordering::SeqCst);
            }
        }
        // `missed` stays set for the claims R's thread still holds.
        let missed = if self.claim.holds_any() {
            self.claim.missed.load(Ordering::SeqCst)
        } else {
            self.claim.lingering.store(false, Ordering::SeqCst);
            self.claim.missed.swap(false, Ordering::SeqCst)
        };
        if !core.stopped {
            core.release(&freed, missed);
        }
    }

    /// Whether `ev` only says that the daemon R's thread is reading has
    /// sent something (see `Claim`).
    fn for_r_thread(&self, ev: &mio::event::Event) -> bool {
        let t = ev.token();
        t != LISTENER
            && t != WAKER
            && ev.is_readable()
            && !(ev.is_read_closed() || ev.is_error() || ev.is_writable())
            && self.claim.passes(t)
    }
}

impl Core {
    /// One turn of the loop on `events`, under the core's lock. True if the
    /// loop must end.
    fn turn(&mut self, events: &Events) -> bool {
        if self.fault {
            self.fault = false;
            panic!("fault injected for testing");
        }
        for ev in events.iter() {
            match ev.token() {
                LISTENER => self.accept_all(),
                WAKER => {}
                t => {
                    if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                        self.read_conn(t, ev.is_read_closed() || ev.is_error());
                    }
                    if ev.is_writable() {
                        self.flush_conn(t);
                    }
                }
            }
        }
        self.expire_timers();
        self.expire_handshakes();
        if self.accept_retry.is_some_and(|t| t <= Instant::now()) {
            self.accept_all();
        }
        if let Some(signal) = self.shutdown {
            self.stop(signal);
            return true;
        }
        if self.oneshot && self.submitted && self.sched.pending_tasks() == 0 {
            self.stop(false);
            return true;
        }
        false
    }
}

/// A frame's prefix and the envelope of task `id`; the payload follows.
fn task_head(framing: Framing, id: TaskId) -> Vec<u8> {
    let mut b = Vec::with_capacity(32);
    task_head_into(framing, id, &mut b);
    b
}

/// `task_head`, written over `b`.
fn task_head_into(framing: Framing, id: TaskId, b: &mut Vec<u8>) {
    framing.begin(b);
    proto::encode_into(&Msg::Task { id }, b);
}

/// Frames up to this size are built in a buffer kept from one to the next
/// (`take_scratch`) and copied out at their exact size (`exact_frame`): one
/// allocation per task, where growing its own buffer took four or five
/// (a small task's serialization doubles it from 32 bytes), and trimming
/// it after left a sliver of free memory beside every queued frame. Larger
/// frames keep their own buffer (trimmed in place, never copied).
const SCRATCH_FRAME: usize = 64 << 10;

thread_local! {
    static SCRATCH: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// The thread's frame buffer, empty (taken, so that a frame built while
/// another is, from a serialization hook, gets a buffer of its own).
pub fn take_scratch() -> Vec<u8> {
    let mut b = SCRATCH.with(|s| s.take());
    b.clear();
    b
}

/// Gives the frame buffer back (unless it grew past a small frame's size:
/// a large frame took it, or it would hold that memory for good).
pub fn put_scratch(b: Vec<u8>) {
    if b.capacity() <= SCRATCH_FRAME {
        SCRATCH.with(|s| s.set(b));
    }
}

/// The frame built in `buf`, at its exact size: copied out if small
/// (`buf` is left empty, its room kept), else `buf` itself, trimmed.
pub fn exact_frame(buf: &mut Vec<u8>) -> Vec<u8> {
    if buf.len() <= SCRATCH_FRAME {
        let v = buf.to_vec();
        buf.clear();
        return v;
    }
    let mut v = std::mem::take(buf);
    v.shrink_to_fit();
    v
}

/// A frame's prefix and the envelope of element `id` of a map whose shared
/// part is share `sid`, written over `b`; the payload follows.
pub fn item_head_into(framing: Framing, id: TaskId, sid: u64, b: &mut Vec<u8>) {
    framing.begin(b);
    proto::encode_into(&Msg::Item { id, sid }, b);
}

/// As `item_head_into`, for an element whose payload goes without R's
/// serialization header (`Msg::Bare`).
pub fn bare_head_into(framing: Framing, id: TaskId, sid: u64, b: &mut Vec<u8>) {
    framing.begin(b);
    proto::encode_into(&Msg::Bare { id, sid }, b);
}

/// The length of a task frame's head (transport prefix, hop count,
/// envelope), given its first bytes: what a withdrawn frame keeps.
fn task_head_len(framing: Framing, frame: &[u8]) -> usize {
    let body = framing.body_offset();
    match frame.get(body..).map(proto::decode) {
        Some(Ok((_, off))) => body + off,
        // Not a task frame: keep all of it.
        _ => frame.len(),
    }
}

fn control_frame(framing: Framing, msg: &Msg) -> Rc<Vec<u8>> {
    let mut b = Vec::with_capacity(32);
    framing.begin(&mut b);
    proto::encode_into(msg, &mut b);
    framing.finish(&mut b);
    Rc::new(b)
}

impl Core {
    fn publish(&self) {
        self.stats.publish(self.sched.counters());
    }

    /// How long the loop may sleep: until the next task timeout, Hello
    /// deadline or accept retry.
    fn next_timeout(&self) -> Option<Duration> {
        let now = Instant::now();
        [
            self.timers.peek().map(|Reverse((t, _))| *t),
            self.hello_deadlines.front().map(|(t, _)| *t),
            self.accept_retry,
        ]
        .into_iter()
        .flatten()
        .min()
        .map(|t| t.saturating_duration_since(now))
    }

    /// Resolves everything after a panic left the core's state in doubt:
    /// every task's slot gets "connection reset" (first completion wins, so
    /// resolved ones keep their value), every connection closes, and the
    /// core refuses further work with `reason`.
    fn die(&mut self, reason: String) {
        if self.dead.is_some() {
            return;
        }
        // Counters first, as in `apply`.
        self.stats.publish(Counters::default());
        // Resolved before the failure (their tasks may be gone already):
        // with what resolved them.
        for (slot, outcome) in self.completions.drain(..) {
            slot.complete(outcome);
        }
        for te in self.tasks.values() {
            te.slot.complete(Outcome::Error(ERR_RESET));
        }
        self.tasks.clear();
        self.frames = FrameMemory::default();
        // Closing a socket also takes it out of the poll set.
        self.conns.clear();
        self.close_listener();
        self.timers.clear();
        self.hello_deadlines.clear();
        self.pending.clear();
        self.stopped = true;
        self.dead = Some(reason);
        self.release_io();
    }

    fn wake(&self) {
        if let Some(w) = &self.waker {
            let _ = w.wake();
        }
    }

    fn deregister(&self, s: &mut impl mio::event::Source) {
        if let Some(r) = &self.registry {
            let _ = r.deregister(s);
        }
    }

    /// Wakes the loop (so that it sees why it must end), then lets go of
    /// the loop's descriptors.
    fn release_io(&mut self) {
        self.wake();
        self.registry = None;
        self.waker = None;
    }

    fn close_listener(&mut self) {
        if let Some(mut l) = self.listener.take() {
            self.deregister(&mut l);
        }
    }

    /// The Init for the next accepted daemon. The stream moves on only for
    /// accepted daemons, so the i-th daemon to join gets nextRNGStream^i of
    /// the profile's stream.
    fn init_frame(&mut self) -> Rc<Vec<u8>> {
        let stream = self.rng_stream.map(|s| rng::next_stream(&s));
        if stream.is_some() {
            self.rng_stream = stream;
        }
        let mut b = Vec::with_capacity(64 + self.settings.len());
        self.framing.begin(&mut b);
        proto::encode_into(&Msg::Init { version: PROTOCOL_VERSION, stream }, &mut b);
        b.extend_from_slice(&self.settings);
        self.framing.finish(&mut b);
        Rc::new(b)
    }

    fn accept_all(&mut self) {
        self.accept_retry = None;
        loop {
            let Some(listener) = &self.listener else { return };
            match listener.accept() {
                Ok((mut stream, framing, source)) => {
                    // Without a nonce there is no handshake to offer: the
                    // peer is turned away (the kernel's random source failing
                    // is not something a peer can cause).
                    let Ok(nonce) = auth::nonce() else {
                        self.stats.refused.fetch_add(1, Ordering::Relaxed);
                        continue;
                    };
                    if self.pending.len() >= MAX_PENDING {
                        self.drop_oldest_pending();
                    }
                    let token = Token(self.next_token);
                    self.next_token += 1;
                    let Some(registry) = &self.registry else { return };
                    if registry.register(&mut stream, token, Interest::READABLE | Interest::WRITABLE).is_err() {
                        continue;
                    }
                    let mut c =
                        // Until its Hello is accepted a peer may send only small
                        // messages: a huge length must not make the host
                        // allocate it.
                        Conn { stream, dec: Decoder::with_limit(framing, proto::HANDSHAKE_LIMIT), wq: WriteQueue::default(), ready: false, nonce, retiring: false, shares: [(0, 0); SHARE_SLOTS], row: DaemonRow::new(0, 0), writable: true };
                    c.push(Rc::new(SP_HEADER.to_vec()));
                    c.push(control_frame(framing, &Msg::Challenge { version: PROTOCOL_VERSION, nonce }));
                    self.conns.insert(token, c);
                    self.pending.insert(token, source);
                    self.hello_deadlines.push_back((Instant::now() + HELLO_TIMEOUT, token));
                    self.flush_conn(token);
                    // Anything the peer sent with its connect (its SP header)
                    // is taken now.
                    self.read_conn(token, true);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if matches!(e.kind(), io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted) => {}
                Err(_) => {
                    self.accept_retry = Some(Instant::now() + ACCEPT_RETRY);
                    return;
                }
            }
        }
    }

    /// Makes room for a new peer. When one source holds more than a
    /// quarter of the places (`Source`), the longest-waiting of its peers
    /// goes: a flood from one address then cycles through its own places,
    /// where dropping the longest-waiting of all let it push out every
    /// daemon whose Hello took longer than the flood took to fill them (a
    /// daemon 50 ms away, under a few thousand connections a second).
    /// Otherwise the longest-waiting of all goes, as before: a rule that
    /// always picked the largest source would let an attacker spread over
    /// many addresses push out a burst of daemons launched on one machine.
    fn drop_oldest_pending(&mut self) {
        let mut sources: Vec<Source> = self.pending.values().copied().collect();
        sources.sort_unstable();
        let mut top: Option<(Source, usize)> = None;
        for run in sources.chunk_by(|a, b| a == b) {
            if top.is_none_or(|(_, n)| run.len() > n) {
                top = Some((run[0], run.len()));
            }
        }
        let victim = match top {
            Some((src, n)) if n > MAX_PENDING / 4 => self.pending.iter().find(|(_, s)| **s == src).map(|(t, _)| *t),
            _ => self.pending.keys().next().copied(),
        };
        if let Some(t) = victim {
            self.drop_conn(t, false);
        }
        // Deadlines of peers no longer pending go when they come to the
        // front (the rest when they pass).
        while self.hello_deadlines.front().is_some_and(|(_, t)| !self.pending.contains_key(t)) {
            self.hello_deadlines.pop_front();
        }
    }

    fn expire_handshakes(&mut self) {
        let now = Instant::now();
        while let Some(&(when, t)) = self.hello_deadlines.front() {
            if when > now {
                break;
            }
            self.hello_deadlines.pop_front();
            if self.conns.get(&t).is_some_and(|c| !c.ready) {
                self.drop_conn(t, false);
            }
        }
    }

    /// Share `sid` (content `hash`) for the tasks about to be queued: the
    /// payload a queued or running task already holds, or else the one
    /// `make` gives (without the completion mark), recorded as the live
    /// copy of that content.
    fn share_part(&mut self, hash: [u8; 32], sid: u64, make: impl FnOnce() -> Vec<u8>) -> Rc<Shared> {
        let payload = match self.shares.get(&hash).and_then(|(_, w)| w.upgrade()) {
            Some(p) => p,
            None => {
                let mut p = make();
                p.push(TASK_WHOLE);
                Rc::new(p)
            }
        };
        self.shares.insert(hash, (sid, Rc::downgrade(&payload)));
        Rc::new(Shared { share: Some(sid), payload })
    }

    /// Stops (`on`) or restarts the poll's reports of data from daemon `t`,
    /// on a plain socket, while R's thread reads it itself (`Claim`): each
    /// reply otherwise woke the loop thread for nothing, a thread switch
    /// per round trip (on one CPU, ~a quarter of the host's time). Raw
    /// EPOLL_CTL_MOD under mio, which keeps no state of its own per source
    /// on Linux; the mask given back is the one mio sets (READABLE, plus
    /// WRITABLE while bytes wait: `watch_writable`), and re-arming it
    /// reports data that came meanwhile. Elsewhere (other systems, TLS,
    /// WebSocket) nothing is changed: the loop passes over those reports.
    #[cfg(target_os = "linux")]
    fn quiet(&mut self, t: Token, on: bool) {
        use std::os::fd::AsRawFd;
        let (Some(reg), Some(c)) = (&self.registry, self.conns.get(&t)) else { return };
        if c.stream.is_layered() {
            return;
        }
        let mut events = (libc::EPOLLET | libc::EPOLLRDHUP) as u32;
        if !on {
            events |= libc::EPOLLIN as u32;
        }
        if c.writable {
            events |= libc::EPOLLOUT as u32;
        }
        let mut ev = libc::epoll_event { events, u64: t.0 as u64 };
        // SAFETY: plain syscall on the loop's epoll descriptor and the
        // connection's socket, both open while the core (locked here)
        // holds them; `ev` is valid for the call.
        unsafe { libc::epoll_ctl(reg.as_raw_fd(), libc::EPOLL_CTL_MOD, c.stream.as_raw_fd(), &mut ev) };
    }

    #[cfg(not(target_os = "linux"))]
    fn quiet(&mut self, _t: Token, _on: bool) {}

    /// Gives the connections `held` (tokens, 0 for none) back to the loop
    /// thread's poll, reading each if the loop passed over an edge.
    fn release(&mut self, held: &[usize], missed: bool) {
        for &t in held.iter().filter(|&&t| t != 0) {
            self.quiet(Token(t), false);
            if missed {
                self.read_conn(Token(t), false);
            }
        }
    }

    /// Reads and handles what peer `t` sent. `to_the_end`: read until the
    /// socket has nothing more, as the peer closed its end (or it failed):
    /// that is signalled once, so the end of stream must be read now.
    fn read_conn(&mut self, t: Token, to_the_end: bool) {
        loop {
            let Some(c) = self.conns.get_mut(&t) else { return };
            // A refused peer has had its answer: nothing more it sends is
            // read. Each message would queue another answer, and for one
            // that does not read (its Refused cannot drain) that queue
            // would grow at the peer's rate until its Hello deadline.
            if c.retiring && !c.ready {
                return;
            }
            match c.next_msg() {
                Ok(body) => {
                    c.row.bytes_in += (body.len() + self.framing.prefix_len()) as u64;
                    if let Err(_why) = self.handle_message(t, body) {
                        self.drop_conn(t, true);
                        return;
                    }
                    // A plain socket emptied by the last read: the poll
                    // signals it again when more comes (TLS and WebSocket
                    // layers may hold bytes of their own: read on).
                    if !to_the_end && self.conns.get(&t).is_some_and(|c| !c.stream.is_layered() && c.dec.source_drained()) {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // TLS, WebSocket: a completed handshake lets out what was
                    // queued before it.
                    if c.stream.is_layered() && !c.wq.is_empty() {
                        self.flush_conn(t);
                    }
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let refused = matches!(e.kind(), io::ErrorKind::InvalidData | io::ErrorKind::OutOfMemory);
                    self.drop_conn(t, refused);
                    return;
                }
            }
        }
    }

    fn handle_message(&mut self, t: Token, body: Vec<u8>) -> Result<(), String> {
        let hop = strip_hop(&body)?;
        let ready = self.conns[&t].ready;
        let decoded = proto::decode(&body[hop..]);
        if !ready {
            // A daemon of another protocol version may send a Hello that
            // does not decode as ours: it is still told why it is refused.
            if let Some((0, version)) = proto::peek_version(&body[hop..]).filter(|&(_, v)| v != PROTOCOL_VERSION) {
                self.refuse(t, format!(
                    "protocol version mismatch: host speaks {PROTOCOL_VERSION}, daemon speaks {version}; install the same mirai version on both"
                ));
                return Ok(());
            }
        }
        let (msg, off) = decoded?;
        match (ready, msg) {
            (false, Msg::Hello { nonce: theirs, mac, pid, .. }) => {
                let ours = self.conns[&t].nonce;
                if let Some(s) = &self.secret {
                    if !auth::verify(s.as_bytes(), Prover::Daemon, &ours, &theirs, &mac) {
                        self.refuse(t, "this daemon was not launched for this host: start it with the launch command that mirai prints (launch_remote()), which carries the host's credentials".into());
                        return Ok(());
                    }
                }
                // The host proves itself only to a daemon that has proved
                // itself, so it is nobody's oracle.
                let mac = self.secret.as_ref().map(|s| auth::prove(s.as_bytes(), Prover::Host, &ours, &theirs));
                let welcome = control_frame(self.framing, &Msg::Welcome { mac });
                let init = self.init_frame();
                let c = self.conns.get_mut(&t).ok_or("connection gone")?;
                // The pid a daemon states is its own word: a peer holding
                // the secret could claim a local child's, and take the
                // replay meant for a replacement or change what the pool's
                // crash-loop rule and reset read about that child. On a
                // Unix socket (where the pool's children connect) the
                // kernel's word is taken instead. Over TCP the stated pid is
                // kept for the table: it is another machine's, or a
                // launch_local() daemon's, never a healing child's.
                let pid = c.stream.peer_pid().unwrap_or(pid);
                c.ready = true;
                c.dec.set_limit(self.max_message);
                c.stream.peer_proved(self.max_message);
                self.pending.remove(&t);
                c.push(welcome);
                c.push(init);
                self.joined.push(t.0 as u64);
                let since_bytes = (c.row.bytes_in, c.row.bytes_out);
                c.row = DaemonRow::new(self.joined.len().min(u32::MAX as usize) as u32, pid);
                (c.row.bytes_in, c.row.bytes_out) = since_bytes;
                self.health.connected(pid);
                if self.health.take_replacement(pid) {
                    if let Some(replay) = self.replay.as_ref().filter(|r| !r.is_empty()) {
                        // Should it die before a task of its own, the
                        // pool's crash-loop warning says it was sent these.
                        self.health.replayed(pid);
                        // Straight after its Init, ahead of any task the
                        // scheduler sends it: the daemon evaluates frames in
                        // order. Outside the scheduler, which takes the
                        // answers to unknown ids as stale and drops them.
                        for payload in replay {
                            let mut head = task_head(self.framing, self.next_replay_id);
                            self.next_replay_id -= 1;
                            self.framing.finish_with_tail(&mut head, payload.len());
                            c.push(Rc::new(head));
                            c.wq.push_tail(payload.clone(), NO_TASK);
                            c.row.assigned += 1;
                        }
                    }
                }
                let acts = self.sched.connect(t.0 as u64);
                self.apply(acts, None);
                self.flush_conn(t);
                Ok(())
            }
            (true, Msg::Result { id, last, error }) => {
                if let Some(c) = self.conns.get_mut(&t) {
                    c.row.completed += 1;
                    if c.row.completed == 1 {
                        self.health.completed_task(c.row.pid);
                    }
                }
                self.reply_error = error;
                let acts = self.sched.reply(t.0 as u64, id, last);
                self.apply(acts, Some((body, hop + off)));
                Ok(())
            }
            (true, Msg::Relay { id, seq, held }) => {
                // Only a task this daemon runs may relay: a peer cannot
                // make the host keep conditions for tasks it names.
                let slot = self.tasks.get(&id).filter(|_| self.sched.runs(t.0 as u64, id)).map(|te| te.slot.clone());
                if self.relay.offer(id, seq, held, &body[hop + off..], slot.as_deref()) {
                    if let Some(slot) = slot {
                        slot.poke();
                    }
                    self.bell.ring();
                }
                Ok(())
            }
            (_, m) => Err(format!("unexpected message {m:?}")),
        }
    }

    /// Tells a peer that has not authenticated why it is turned away, then
    /// closes its connection (counted as refused when it is dropped).
    fn refuse(&mut self, t: Token, reason: String) {
        if let Some(c) = self.conns.get_mut(&t) {
            c.push(control_frame(self.framing, &Msg::Refused { reason: &reason }));
            c.retiring = true;
            self.flush_conn(t);
        }
    }

    fn apply(&mut self, acts: Vec<Action>, mut reply: Option<(Vec<u8>, usize)>) {
        let mut acts = acts;
        // Reports of written bytes and of unsent tasks make more actions (a
        // drained daemon takes the next waiting task): applied in turn here
        // rather than recursively, however many tasks wait.
        while !acts.is_empty() {
            acts = self.apply_once(acts, &mut reply);
        }
        self.publish_then_complete();
        // After the completions: nobody waits for this.
        if self.frames.should_give_back() {
            give_back_freed_memory();
        }
    }

    /// Applies `acts` and writes what they queued; returns the actions the
    /// scheduler takes in response to what happened to the write queues.
    fn apply_once(&mut self, acts: Vec<Action>, reply: &mut Option<(Vec<u8>, usize)>) -> Vec<Action> {
        let mut touched = Vec::new();
        let mut unsent = Vec::new();
        for a in acts {
            match a {
                Action::Send { daemon, task } => {
                    let tok = Token(daemon as usize);
                    self.share_clock += 1;
                    let (framing, clock) = (self.framing, self.share_clock);
                    if let (Some(c), Some(te)) = (self.conns.get_mut(&tok), self.tasks.get_mut(&task)) {
                        let now = Instant::now();
                        if te.span != 0 {
                            // Sent again: its daemon was lost with it.
                            self.timeline.end(te.span - 1, task, End::Failed, now);
                        }
                        te.span = self.timeline.start(task, c.row.id, now) + 1;
                        c.row.assigned += 1;
                        if c.row.assigned == 1 {
                            self.health.given_task(c.row.pid);
                        }
                        let shared = te.shared.as_deref();
                        if let (Some(Shared { share: Some(sid), payload }), true) = (shared, te.frame.is_some()) {
                            c.hold_share(*sid, payload, framing, clock);
                        }
                        if let Some(f) = te.frame.for_sending() {
                            c.wq.push(f, task);
                            if let Some(Shared { share: None, payload }) = shared {
                                c.wq.push_tail(payload.clone(), task);
                            }
                        }
                        touched.push(tok);
                    }
                }
                Action::Deliver { task } => {
                    if let (Some(te), Some((body, offset))) = (self.tasks.get(&task), reply.take()) {
                        if te.span != 0 {
                            let how = if self.reply_error { End::Error } else { End::Value };
                            self.timeline.end(te.span - 1, task, how, Instant::now());
                        }
                        self.completions.push((te.slot.clone(), Outcome::Value { body, offset }));
                    }
                }
                Action::Fail { task, code } => {
                    if let Some(te) = self.tasks.get_mut(&task) {
                        if te.span != 0 {
                            self.timeline.end(te.span - 1, task, End::Failed, Instant::now());
                        }
                        self.completions.push((te.slot.clone(), Outcome::Error(code)));
                        self.frames.release(te.held());
                        te.frame = TaskFrame::none();
                        te.shared = None;
                    }
                }
                Action::Withdraw { daemon, task } => {
                    let tok = Token(daemon as usize);
                    let framing = self.framing;
                    if let Some(c) = self.conns.get_mut(&tok) {
                        if c.wq.withdraw(task, |f| task_head_len(framing, f)) == Withdrawn::Unsent {
                            // It never reached the daemon, which will not answer it.
                            c.row.assigned = c.row.assigned.saturating_sub(1);
                            unsent.push((daemon, task));
                        }
                        // Its unwritten bytes changed: reported after the flush.
                        touched.push(tok);
                    }
                }
                Action::Interrupt { daemon, task } => {
                    let tok = Token(daemon as usize);
                    if let Some(c) = self.conns.get_mut(&tok) {
                        c.push(control_frame(self.framing, &Msg::Cancel { id: task }));
                        touched.push(tok);
                    }
                }
                Action::Retire { daemon } => {
                    let tok = Token(daemon as usize);
                    if let Some(c) = self.conns.get_mut(&tok) {
                        c.retiring = true;
                        touched.push(tok);
                    }
                }
                Action::Drop { task } => {
                    if let Some(te) = self.tasks.remove(&task) {
                        self.frames.release(te.held());
                    }
                }
            }
        }
        let mut more = Vec::new();
        for (daemon, task) in unsent {
            more.extend(self.sched.unsent(daemon, task));
        }
        for t in touched {
            more.extend(self.flush_and_report(t));
        }
        more
    }

    /// Publishes the counters, then completes the slots that the actions
    /// just applied resolved. In this order, whoever wakes on a slot (`m[]`,
    /// `unresolved()`, a promise) reads counters that already count its
    /// task: the slot's release store of `done` orders the counters' stores
    /// before it. Every change to the scheduler's state comes with actions
    /// applied here, so the counters are published after every change.
    fn publish_then_complete(&mut self) {
        self.publish();
        if self.defer_completions {
            return;
        }
        for (slot, outcome) in self.completions.drain(..) {
            slot.complete(outcome);
        }
    }

    fn flush_conn(&mut self, t: Token) {
        let acts = self.flush_and_report(t);
        if !acts.is_empty() {
            self.apply(acts, None);
        }
    }

    /// Writes what the socket takes, then tells the scheduler the bytes
    /// left (without a dispatcher, when the figure changed or a frame was
    /// queued since the last report); returns the scheduler's response.
    fn flush_and_report(&mut self, t: Token) -> Vec<Action> {
        let Some(c) = self.conns.get_mut(&t) else { return Vec::new() };
        let before = c.wq.unwritten();
        let flushed = c.flush();
        if flushed.is_ok() {
            c.watch_writable(self.registry.as_ref(), t);
        }
        let written = before.saturating_sub(c.wq.unwritten());
        c.row.bytes_out += written;
        self.stats.sent_bytes.fetch_add(written, Ordering::Relaxed);
        match flushed {
            Ok(()) if c.retiring && c.drained() => self.drop_conn(t, false),
            Ok(()) if self.report_unwritten && c.ready => {
                if let Some(bytes) = c.wq.take_change() {
                    return self.sched.unwritten(t.0 as u64, bytes);
                }
            }
            Ok(()) => {}
            Err(_) => self.drop_conn(t, false),
        }
        Vec::new()
    }

    /// Closes a connection. A peer that never became a daemon of this host,
    /// or that broke the protocol (`protocol_error`), counts as refused.
    fn drop_conn(&mut self, t: Token, protocol_error: bool) {
        if let Some(mut c) = self.conns.remove(&t) {
            self.deregister(&mut c.stream);
            self.pending.remove(&t);
            if !c.ready || protocol_error {
                self.stats.refused.fetch_add(1, Ordering::Relaxed);
            }
            if c.ready {
                // Its tasks' time on it ends now, whether they fail or go
                // to another daemon.
                self.timeline.end_all_on(c.row.id, Instant::now());
                let acts = self.sched.disconnect(t.0 as u64);
                self.apply(acts, None);
            }
        }
    }

    fn expire_timers(&mut self) {
        let now = Instant::now();
        while let Some(Reverse((when, id))) = self.timers.peek().copied() {
            if when > now {
                break;
            }
            self.timers.pop();
            let (_, acts) = self.sched.cancel(id, ERR_TIMEOUT);
            self.apply(acts, None);
        }
    }

    fn stop(&mut self, signal: bool) {
        if signal {
            let exit = control_frame(self.framing, &Msg::Exit);
            let toks: Vec<Token> = self.conns.iter().filter(|(_, c)| c.ready).map(|(t, _)| *t).collect();
            for t in toks {
                if let Some(c) = self.conns.get_mut(&t) {
                    // A frame already partly written must be finished, or
                    // the Exit bytes would land inside it (a task's with
                    // filler: its payload is not needed any more).
                    let framing = self.framing;
                    c.wq.discard_unstarted(|f| task_head_len(framing, f));
                    c.push(exit.clone());
                    let deadline = Instant::now() + Duration::from_millis(500);
                    while !c.drained() && Instant::now() < deadline {
                        if c.flush().is_err() {
                            break;
                        }
                        if !c.drained() {
                            std::thread::sleep(Duration::from_millis(1));
                        }
                    }
                }
            }
        }
        let acts = self.sched.fail_all(ERR_RESET);
        self.apply(acts, None);
        self.close_listener();
        self.conns.clear();
        self.tasks.clear();
        if std::mem::take(&mut self.frames).peak >= GIVE_BACK_PEAK {
            give_back_freed_memory();
        }
        self.pending.clear();
        self.hello_deadlines.clear();
        self.stats.publish(Counters::default());
        // Anything submitted after this point fails at once.
        self.stopped = true;
        self.release_io();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queued(bytes: u64) -> Counters {
        Counters { queued_bytes: bytes, ..Counters::default() }
    }

    #[test]
    fn frames_come_out_at_their_exact_size_and_only_small_ones_are_copied() {
        let mut buf = take_scratch();
        buf.extend_from_slice(&[7u8; 205]);
        let f = exact_frame(&mut buf);
        assert_eq!((f.len(), f.capacity()), (205, 205));
        // The buffer is emptied, its room kept for the next frame.
        assert!(buf.is_empty() && buf.capacity() >= 205);
        put_scratch(buf);
        let mut big = Vec::with_capacity(2 * SCRATCH_FRAME);
        big.resize(SCRATCH_FRAME + 1, 1u8);
        let f = exact_frame(&mut big);
        assert_eq!(f.capacity(), SCRATCH_FRAME + 1);
        assert!(big.capacity() == 0 && f.len() == SCRATCH_FRAME + 1 && f.iter().all(|&b| b == 1));
        // A buffer that grew past a small frame's size is not kept.
        put_scratch(Vec::with_capacity(SCRATCH_FRAME + 1));
        assert!(take_scratch().capacity() <= SCRATCH_FRAME);
        // The size of a queued task's frame, and of its entry.
        assert_eq!(std::mem::size_of::<TaskFrame>(), 16);
        assert!(std::mem::size_of::<TaskEntry>() <= 40, "{}", std::mem::size_of::<TaskEntry>());
    }

    #[test]
    fn freed_memory_goes_back_after_a_burst_not_during_a_stream() {
        let mb = 1 << 20;
        let mut f = FrameMemory::default();
        // A stream of 10 MB tasks, two alive at a time: never.
        for _ in 0..100 {
            f.hold(10 * mb);
            f.hold(10 * mb);
            assert!(!f.should_give_back());
            f.release(10 * mb);
            f.release(10 * mb);
            assert!(!f.should_give_back());
        }
        // A burst of 40: once, when at most an eighth is left.
        (0..40).for_each(|_| f.hold(10 * mb));
        assert!(!f.should_give_back());
        for left in (0..40).rev() {
            f.release(10 * mb);
            assert_eq!(f.should_give_back(), left == 5, "{left} left");
        }
        assert!(!f.should_give_back());
    }

    #[test]
    fn room_opens_below_the_cap_and_wakes_a_waiter() {
        let unbounded = Stats::default();
        unbounded.publish(queued(u64::MAX));
        assert!(unbounded.has_room());

        let s = Arc::new(Stats { cap_bytes: 100, ..Stats::default() });
        s.publish(queued(99));
        assert!(s.has_room());
        s.publish(queued(100));
        assert!(!s.has_room());
        assert!(!s.wait_room(Duration::from_millis(10)));
        let s2 = s.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            s2.publish(queued(40));
        });
        // A long slice: only the notification can end the wait this soon.
        let start = Instant::now();
        assert!(s.wait_room(Duration::from_secs(20)));
        assert!(start.elapsed() < Duration::from_secs(5));
        t.join().unwrap();
    }
}
