//! The host side of a compute profile: one thread running a mio event loop
//! that owns the listener and every daemon connection, driven by the pure
//! scheduler in `sched`. R's main thread talks to it only through a channel
//! and a waker, and reads results from completion slots.

use crate::aio::{Notifier, Outcome, Slot};
use crate::decoder::Decoder;
use crate::frame::{strip_hop, Framing, SP_HEADER};
use crate::proto::{self, Msg, PROTOCOL_VERSION};
use crate::rng;
use crate::sched::{Action, Counters, Sched, TaskId, ERR_RESET, ERR_TIMEOUT};
use crate::transport::{Listener, Stream};
use crate::url::Address;
use crossbeam_channel::{unbounded, Receiver, Sender};
use mio::{Events, Interest, Poll, Token, Waker};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::io::{self, Write};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);

#[derive(Default)]
pub struct Stats {
    pub connections: AtomicU64,
    pub cumulative: AtomicU64,
    pub awaiting: AtomicU64,
    pub executing: AtomicU64,
    pub completed: AtomicU64,
    pub refused: AtomicU64,
}

impl Stats {
    fn publish(&self, c: Counters) {
        self.connections.store(c.connections, Ordering::Relaxed);
        self.cumulative.store(c.cumulative, Ordering::Relaxed);
        self.awaiting.store(c.awaiting, Ordering::Relaxed);
        self.executing.store(c.executing, Ordering::Relaxed);
        self.completed.store(c.completed, Ordering::Relaxed);
    }
}

pub enum Cmd {
    Submit { id: TaskId, frame: Vec<u8>, slot: Arc<Slot>, deadline: Option<Instant> },
    Cancel { id: TaskId, code: i32, found: Sender<bool> },
    Shutdown { signal: bool },
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
}

pub struct Host {
    pub url: String,
    pub framing: Framing,
    pub dispatcher: bool,
    pub stats: Arc<Stats>,
    pub notifier: Arc<Notifier>,
    tx: Sender<Cmd>,
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
        let (tx, rx) = unbounded();
        let stats = Arc::new(Stats::default());
        let notifier = Arc::new(Notifier::default());
        let (st, secret) = (stats.clone(), opts.secret);
        let (dispatcher, oneshot) = (opts.dispatcher, opts.oneshot);
        let (rng_stream, settings) = (opts.rng_stream, opts.settings);
        let thread = std::thread::Builder::new()
            .name("mirai-host".into())
            .spawn(move || {
                let mut lp = EventLoop {
                    poll,
                    listener,
                    rx,
                    framing,
                    conns: HashMap::new(),
                    next_token: 2,
                    sched: Sched::new(dispatcher),
                    tasks: HashMap::new(),
                    timers: BinaryHeap::new(),
                    stats: st,
                    secret,
                    oneshot,
                    submitted: false,
                    rng_stream,
                    settings,
                };
                lp.run()
            })
            .map_err(|e| e.to_string())?;
        Ok(Host {
            url: real.to_string(),
            framing,
            dispatcher: opts.dispatcher,
            stats,
            notifier,
            tx,
            waker,
            thread: Mutex::new(Some(thread)),
            next_id: AtomicU64::new(1),
        })
    }

    pub fn next_task_id(&self) -> TaskId {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    fn send(&self, cmd: Cmd) -> bool {
        if self.tx.send(cmd).is_err() {
            return false;
        }
        let _ = self.waker.wake();
        true
    }

    /// Hands a built frame to the loop. If the loop is gone the task fails
    /// at once with "connection reset".
    pub fn submit(&self, id: TaskId, frame: Vec<u8>, slot: Arc<Slot>, timeout: Option<Duration>) {
        let deadline = timeout.map(|t| Instant::now() + t);
        if !self.send(Cmd::Submit { id, frame, slot: slot.clone(), deadline }) {
            slot.complete(Outcome::Error(ERR_RESET));
        }
    }

    /// Cancels a task; true if the loop found it unresolved.
    pub fn cancel(&self, id: TaskId, code: i32) -> bool {
        let (ftx, frx) = crossbeam_channel::bounded(1);
        if !self.send(Cmd::Cancel { id, code, found: ftx }) {
            return false;
        }
        frx.recv_timeout(Duration::from_secs(5)).unwrap_or(false)
    }

    pub fn shutdown(&self, signal: bool) {
        let handle = self.thread.lock().unwrap().take();
        if let Some(h) = handle {
            self.send(Cmd::Shutdown { signal });
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
    slot: Arc<Slot>,
}

struct EventLoop {
    poll: Poll,
    listener: Listener,
    rx: Receiver<Cmd>,
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
}

fn control_frame(framing: Framing, msg: &Msg) -> Rc<Vec<u8>> {
    let mut b = Vec::with_capacity(32);
    framing.begin(&mut b);
    proto::encode_into(msg, &mut b);
    framing.finish(&mut b);
    Rc::new(b)
}

impl EventLoop {
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

    fn run(&mut self) {
        let mut events = Events::with_capacity(256);
        loop {
            let timeout = self.timers.peek().map(|Reverse((t, _))| t.saturating_duration_since(Instant::now()));
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    break;
                }
            }
            for ev in events.iter() {
                match ev.token() {
                    LISTENER => self.accept_all(),
                    WAKER => {}
                    t => {
                        if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                            self.read_conn(t);
                        }
                        if ev.is_writable() {
                            self.flush_conn(t);
                        }
                    }
                }
            }
            self.expire_timers();
            if !self.drain_commands() {
                return;
            }
            self.stats.publish(self.sched.counters());
            if self.oneshot && self.submitted && self.sched.pending_tasks() == 0 {
                self.stop(false);
                return;
            }
        }
        self.stop(false);
    }

    fn accept_all(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((mut stream, framing)) => {
                    let token = Token(self.next_token);
                    self.next_token += 1;
                    if self
                        .poll
                        .registry()
                        .register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)
                        .is_err()
                    {
                        continue;
                    }
                    let mut c =
                        Conn { stream, dec: Decoder::new(framing), wq: VecDeque::new(), ready: false, retiring: false };
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
            let _ = self.poll.registry().deregister(&mut c.stream);
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

    /// Returns false when asked to shut down.
    fn drain_commands(&mut self) -> bool {
        while let Ok(cmd) = self.rx.try_recv() {
            match cmd {
                Cmd::Submit { id, mut frame, slot, deadline } => {
                    self.framing.finish(&mut frame);
                    self.tasks.insert(id, TaskEntry { frame: Rc::new(frame), slot });
                    if let Some(d) = deadline {
                        self.timers.push(Reverse((d, id)));
                    }
                    self.submitted = true;
                    let acts = self.sched.submit(id);
                    self.apply(acts, None);
                }
                Cmd::Cancel { id, code, found } => {
                    let (ok, acts) = self.sched.cancel(id, code);
                    self.apply(acts, None);
                    let _ = found.send(ok);
                }
                Cmd::Shutdown { signal } => {
                    self.stop(signal);
                    return false;
                }
            }
        }
        true
    }

    fn stop(&mut self, signal: bool) {
        if signal {
            let exit = control_frame(self.framing, &Msg::Exit);
            let toks: Vec<Token> = self.conns.iter().filter(|(_, c)| c.ready).map(|(t, _)| *t).collect();
            for t in toks {
                if let Some(c) = self.conns.get_mut(&t) {
                    c.wq.clear();
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
        while let Ok(cmd) = self.rx.try_recv() {
            match cmd {
                Cmd::Submit { slot, .. } => {
                    slot.complete(Outcome::Error(ERR_RESET));
                }
                Cmd::Cancel { found, .. } => {
                    let _ = found.send(false);
                }
                Cmd::Shutdown { .. } => {}
            }
        }
    }
}
