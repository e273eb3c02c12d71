//! The host side of a compute profile: the listener, every daemon connection
//! and the pure scheduler (`sched`), kept in one `Core` behind a mutex.
//!
//! Two threads drive the core. R's main thread submits and cancels directly:
//! it runs the scheduler and writes the task frame to the daemon's socket
//! itself, so a submit wakes no other thread. A background thread runs the
//! mio event loop for everything that arrives (connections, results), for
//! writes the socket could not take at once (it sees the writable edge), and
//! for timers. R's thread wakes it (mio Waker) only for a new deadline or for
//! shutdown.
//!
//! Memory cap: the scheduler counts the bytes of queued task frames and
//! `Stats` publishes them, so R's thread reads them without the core's lock.
//! Whichever thread moves the count below the cap (R's own thread sending a
//! task, or the loop thread when a daemon frees up) signals `Stats`'
//! condvar, on which a blocked `mirai()` waits.

use crate::aio::{Notifier, Outcome, Slot};
use crate::decoder::Decoder;
use crate::frame::{strip_hop, Framing, MAX_MESSAGE, SP_HEADER};
use crate::proto::{self, Msg, PROTOCOL_VERSION};
use crate::rng;
use crate::sched::{Action, Counters, Sched, TaskId, ERR_RESET, ERR_TIMEOUT};
use crate::transport::{Listener, Stream};
use crate::url::Address;
use mio::{Events, Interest, Poll, Token, Waker};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::io::{self, Write};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const LISTENER: Token = Token(0);
const HELLO_LIMIT: u64 = 64 * 1024;
const WAKER: Token = Token(1);

#[derive(Default)]
pub struct Stats {
    pub connections: AtomicU64,
    pub cumulative: AtomicU64,
    pub awaiting: AtomicU64,
    pub executing: AtomicU64,
    pub completed: AtomicU64,
    pub refused: AtomicU64,
    pub queued_bytes: AtomicU64,
    pub peak_bytes: AtomicU64,
    /// The memory cap in bytes, 0 for none; fixed when the host starts.
    pub cap_bytes: u64,
    room_lock: Mutex<()>,
    room: Condvar,
}

impl Stats {
    fn publish(&self, c: Counters) {
        self.connections.store(c.connections, Ordering::Relaxed);
        self.cumulative.store(c.cumulative, Ordering::Relaxed);
        self.awaiting.store(c.awaiting, Ordering::Relaxed);
        self.executing.store(c.executing, Ordering::Relaxed);
        self.completed.store(c.completed, Ordering::Relaxed);
        self.peak_bytes.store(c.peak_bytes, Ordering::Relaxed);
        let before = self.queued_bytes.swap(c.queued_bytes, Ordering::Relaxed);
        // Only a crossing below the cap can release a waiter. Taking the
        // lock after the store means a waiter either saw the new count or
        // is already waiting when notified: no wake-up is lost.
        if self.cap_bytes != 0 && before >= self.cap_bytes && c.queued_bytes < self.cap_bytes {
            drop(self.room_lock.lock().unwrap());
            self.room.notify_all();
        }
    }

    /// True if another task may be queued: no cap, or the queue is below it.
    pub fn has_room(&self) -> bool {
        self.cap_bytes == 0 || self.queued_bytes.load(Ordering::Relaxed) < self.cap_bytes
    }

    /// Waits up to `slice` for room in the queue; true once there is.
    pub fn wait_room(&self, slice: Duration) -> bool {
        let g = self.room_lock.lock().unwrap();
        let _g = self.room.wait_timeout_while(g, slice, |_| !self.has_room()).unwrap();
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
}

pub struct Host {
    pub url: String,
    pub framing: Framing,
    pub dispatcher: bool,
    pub stats: Arc<Stats>,
    pub notifier: Arc<Notifier>,
    core: Arc<Mutex<Core>>,
    waker: Arc<Waker>,
    thread: Mutex<Option<JoinHandle<()>>>,
    next_id: AtomicU64,
}

impl Host {
    pub fn start(addr: &Address, opts: HostOptions) -> Result<Host, String> {
        let (mut listener, real) =
            Listener::bind(addr).map_err(|e| format!("cannot listen at '{addr}': {e}"))?;
        let framing = if real.is_ipc() { Framing::Ipc } else { Framing::Tcp };
        let poll = Poll::new().map_err(|e| e.to_string())?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)
            .map_err(|e| e.to_string())?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER).map_err(|e| e.to_string())?);
        let registry = poll.registry().try_clone().map_err(|e| e.to_string())?;
        let stats = Arc::new(Stats { cap_bytes: opts.memory_cap, ..Stats::default() });
        let notifier = Arc::new(Notifier::default());
        let core = Arc::new(Mutex::new(Core {
            registry,
            listener,
            framing,
            conns: HashMap::new(),
            next_token: 2,
            sched: Sched::new(opts.dispatcher),
            tasks: HashMap::new(),
            timers: BinaryHeap::new(),
            stats: stats.clone(),
            secret: opts.secret,
            oneshot: opts.oneshot,
            submitted: false,
            shutdown: None,
            stopped: false,
            rng_stream: opts.rng_stream,
            settings: opts.settings,
        }));
        let lp = EventLoop { poll, core: core.clone() };
        let thread = std::thread::Builder::new()
            .name("mirai-host".into())
            .spawn(move || lp.run())
            .map_err(|e| e.to_string())?;
        Ok(Host {
            url: real.to_string(),
            framing,
            dispatcher: opts.dispatcher,
            stats,
            notifier,
            core,
            waker,
            thread: Mutex::new(Some(thread)),
            next_id: AtomicU64::new(1),
        })
    }

    pub fn next_task_id(&self) -> TaskId {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Queues a built frame and, when a daemon is free, writes it straight
    /// to that daemon's socket from the calling thread. If the host has
    /// stopped the task fails at once with "connection reset".
    pub fn submit(&self, id: TaskId, mut frame: Vec<u8>, slot: Arc<Slot>, timeout: Option<Duration>) {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut core = self.core.lock().unwrap();
        if core.stopped || core.shutdown.is_some() {
            drop(core);
            slot.complete(Outcome::Error(ERR_RESET));
            return;
        }
        core.framing.finish(&mut frame);
        let bytes = frame.len() as u64;
        core.tasks.insert(id, TaskEntry { frame: Rc::new(frame), tail: None, slot });
        core.submitted = true;
        let acts = core.sched.submit_sized(id, bytes);
        core.apply(acts, None);
        core.publish();
        if let Some(d) = deadline {
            core.timers.push(Reverse((d, id)));
            drop(core);
            // The loop thread must recompute its poll timeout.
            let _ = self.waker.wake();
        }
    }

    /// `everywhere()`: one task per connected daemon, each pinned to its
    /// daemon (see `Sched::submit_to`). The daemons are read and the tasks
    /// queued under one lock, so a daemon connecting meanwhile gets none
    /// and none is counted twice. The R-serialized `payload` is shared by
    /// all the frames rather than copied per daemon: it may be large data
    /// meant for every daemon. Returns each task's id and slot.
    /// With fewer than `min` daemons connected, the difference goes as
    /// tasks for the next daemons to connect, one each.
    pub fn broadcast(&self, payload: Vec<u8>, min: usize) -> Vec<(TaskId, Arc<Slot>)> {
        let mut core = self.core.lock().unwrap();
        if core.stopped || core.shutdown.is_some() {
            return Vec::new();
        }
        let payload = Rc::new(payload);
        let mut out = Vec::new();
        let ids = core.sched.daemon_ids();
        let later = min.saturating_sub(ids.len());
        let targets = ids.into_iter().map(Some).chain(std::iter::repeat(None).take(later));
        for d in targets {
            let id = self.next_task_id();
            let mut head = Vec::with_capacity(32);
            core.framing.begin(&mut head);
            proto::encode_into(&Msg::Task { id }, &mut head);
            core.framing.finish_with_tail(&mut head, payload.len());
            let slot = Slot::new(self.notifier.clone());
            core.tasks.insert(id, TaskEntry { frame: Rc::new(head), tail: Some(payload.clone()), slot: slot.clone() });
            let acts = match d {
                Some(d) => core.sched.submit_to(id, d),
                None => core.sched.submit_to_next(id),
            };
            core.apply(acts, None);
            out.push((id, slot));
        }
        core.submitted = true;
        core.publish();
        out
    }

    /// Cancels a task; true if it was found unresolved.
    pub fn cancel(&self, id: TaskId, code: i32) -> bool {
        let mut core = self.core.lock().unwrap();
        if core.stopped {
            return false;
        }
        let (ok, acts) = core.sched.cancel(id, code);
        core.apply(acts, None);
        core.publish();
        ok
    }

    pub fn shutdown(&self, signal: bool) {
        let handle = self.thread.lock().unwrap().take();
        if let Some(h) = handle {
            self.core.lock().unwrap().shutdown = Some(signal);
            let _ = self.waker.wake();
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
    wq: VecDeque<(Rc<Vec<u8>>, usize)>,
    ready: bool,
    retiring: bool,
}

impl Conn {
    fn push(&mut self, frame: Rc<Vec<u8>>) {
        self.wq.push_back((frame, 0));
    }

    /// Writes as much as the socket takes. Err means the peer is gone.
    fn flush(&mut self) -> io::Result<()> {
        while let Some((buf, off)) = self.wq.front_mut() {
            match self.stream.write(&buf[*off..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    *off += n;
                    if *off == buf.len() {
                        self.wq.pop_front();
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

struct TaskEntry {
    frame: Rc<Vec<u8>>,
    /// The rest of the frame when its payload is shared (a broadcast).
    tail: Option<Rc<Vec<u8>>>,
    slot: Arc<Slot>,
}

// Rc inside: the Core is only ever touched under its mutex, one thread at
// a time, so the frames it shares between queues never cross threads
// concurrently.
struct Core {
    registry: mio::Registry,
    listener: Listener,
    framing: Framing,
    conns: HashMap<Token, Conn>,
    next_token: usize,
    sched: Sched,
    tasks: HashMap<TaskId, TaskEntry>,
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
}

// SAFETY: see the comment on Core: all access is serialized by the mutex.
unsafe impl Send for Core {}

struct EventLoop {
    poll: Poll,
    core: Arc<Mutex<Core>>,
}

impl EventLoop {
    fn run(mut self) {
        let mut events = Events::with_capacity(256);
        loop {
            let timeout = {
                let core = self.core.lock().unwrap();
                core.timers.peek().map(|Reverse((t, _))| t.saturating_duration_since(Instant::now()))
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    self.core.lock().unwrap().stop(false);
                    return;
                }
            }
            let mut core = self.core.lock().unwrap();
            for ev in events.iter() {
                match ev.token() {
                    LISTENER => core.accept_all(),
                    WAKER => {}
                    t => {
                        if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                            core.read_conn(t);
                        }
                        if ev.is_writable() {
                            core.flush_conn(t);
                        }
                    }
                }
            }
            core.expire_timers();
            if let Some(signal) = core.shutdown {
                core.stop(signal);
                return;
            }
            core.publish();
            if core.oneshot && core.submitted && core.sched.pending_tasks() == 0 {
                core.stop(false);
                return;
            }
        }
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
        loop {
            match self.listener.accept() {
                Ok((mut stream, framing)) => {
                    let token = Token(self.next_token);
                    self.next_token += 1;
                    if self
                        .registry
                        .register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)
                        .is_err()
                    {
                        continue;
                    }
                    let mut c =
                        // Until its Hello is accepted a peer may send only small
                        // messages: a huge length must not make the host
                        // allocate it.
                        Conn { stream, dec: Decoder::with_limit(framing, HELLO_LIMIT), wq: VecDeque::new(), ready: false, retiring: false };
                    c.push(Rc::new(SP_HEADER.to_vec()));
                    self.conns.insert(token, c);
                    self.flush_conn(token);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    }

    fn read_conn(&mut self, t: Token) {
        loop {
            let Some(c) = self.conns.get_mut(&t) else { return };
            match c.dec.next(&mut c.stream) {
                Ok(body) => {
                    if let Err(_why) = self.handle_message(t, body) {
                        self.drop_conn(t);
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    if e.kind() == io::ErrorKind::InvalidData {
                        self.stats.refused.fetch_add(1, Ordering::Relaxed);
                    }
                    self.drop_conn(t);
                    return;
                }
            }
        }
    }

    fn handle_message(&mut self, t: Token, body: Vec<u8>) -> Result<(), String> {
        let hop = strip_hop(&body)?;
        let (msg, off) = proto::decode(&body[hop..])?;
        let ready = self.conns[&t].ready;
        match (ready, msg) {
            (false, Msg::Hello { version, secret, .. }) => {
                let refuse = if version != PROTOCOL_VERSION {
                    Some(format!(
                        "protocol version mismatch: host speaks {PROTOCOL_VERSION}, daemon speaks {version}; install the same mirai version on both"
                    ))
                } else if self.secret.as_ref().is_some_and(|s| *s != secret) {
                    Some("this daemon was not launched for this host: start it with the launch command that mirai prints (launch_remote()), which carries the host's credentials".into())
                } else {
                    None
                };
                if let Some(reason) = refuse {
                    let c = self.conns.get_mut(&t).unwrap();
                    self.stats.refused.fetch_add(1, Ordering::Relaxed);
                    c.push(control_frame(self.framing, &Msg::Refused { reason }));
                    c.retiring = true;
                    self.flush_conn(t);
                    return Ok(());
                }
                let init = self.init_frame();
                let c = self.conns.get_mut(&t).unwrap();
                c.ready = true;
                c.dec.set_limit(MAX_MESSAGE);
                c.push(init);
                let acts = self.sched.connect(t.0 as u64);
                self.apply(acts, None);
                self.flush_conn(t);
                Ok(())
            }
            (true, Msg::Result { id, last }) => {
                let acts = self.sched.reply(t.0 as u64, id, last);
                self.apply(acts, Some((body, hop + off)));
                Ok(())
            }
            (_, m) => Err(format!("unexpected message {m:?}")),
        }
    }

    fn apply(&mut self, acts: Vec<Action>, mut reply: Option<(Vec<u8>, usize)>) {
        let mut touched = Vec::new();
        for a in acts {
            match a {
                Action::Send { daemon, task } => {
                    let tok = Token(daemon as usize);
                    if let (Some(c), Some(te)) = (self.conns.get_mut(&tok), self.tasks.get(&task)) {
                        c.push(te.frame.clone());
                        if let Some(t) = &te.tail {
                            c.push(t.clone());
                        }
                        touched.push(tok);
                    }
                }
                Action::Deliver { task } => {
                    if let (Some(te), Some((body, offset))) = (self.tasks.get(&task), reply.take()) {
                        te.slot.complete(Outcome::Value { body, offset });
                    }
                }
                Action::Fail { task, code } => {
                    if let Some(te) = self.tasks.get(&task) {
                        te.slot.complete(Outcome::Error(code));
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
                    self.tasks.remove(&task);
                }
            }
        }
        for t in touched {
            self.flush_conn(t);
        }
    }

    fn flush_conn(&mut self, t: Token) {
        let Some(c) = self.conns.get_mut(&t) else { return };
        match c.flush() {
            Ok(()) if c.retiring && c.wq.is_empty() => self.drop_conn(t),
            Ok(()) => {}
            Err(_) => self.drop_conn(t),
        }
    }

    fn drop_conn(&mut self, t: Token) {
        if let Some(mut c) = self.conns.remove(&t) {
            let _ = self.registry.deregister(&mut c.stream);
            if c.ready {
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
                    // the Exit bytes would land inside it.
                    let keep = c.wq.front().is_some_and(|(_, off)| *off > 0) as usize;
                    c.wq.truncate(keep);
                    c.push(exit.clone());
                    let deadline = Instant::now() + Duration::from_millis(500);
                    while !c.wq.is_empty() && Instant::now() < deadline {
                        if c.flush().is_err() {
                            break;
                        }
                        if !c.wq.is_empty() {
                            std::thread::sleep(Duration::from_millis(1));
                        }
                    }
                }
            }
        }
        let acts = self.sched.fail_all(ERR_RESET);
        self.apply(acts, None);
        self.conns.clear();
        self.tasks.clear();
        self.stats.publish(Counters::default());
        // Anything submitted after this point fails at once.
        self.stopped = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queued(bytes: u64) -> Counters {
        Counters { queued_bytes: bytes, ..Counters::default() }
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
