//! The daemon's end of a connection: blocking I/O on R's main thread (no
//! thread hand-off on the hot path), plus a watcher thread that notices the
//! host going away while R is busy evaluating.

use crate::decoder::Decoder;
use crate::frame::{strip_hop, Framing, SP_HEADER};
use crate::proto::{self, Msg, PROTOCOL_VERSION};
use crate::transport::{dial, wait_readable, BlockingStream};
use crate::url::Address;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub enum Incoming {
    Task { id: u64, body: Vec<u8>, offset: usize },
    /// The host closed the connection.
    Closed,
    /// The host asked this daemon to exit (`daemons(NULL)`).
    Exit,
    /// Nothing arrived within the wait slice.
    Nothing,
}

pub struct ClientConn {
    stream: BlockingStream,
    dec: Decoder,
    pub framing: Framing,
    evaluating: Arc<AtomicBool>,
    closed: Arc<AtomicBool>,
    pub limits: Limits,
    /// From the host's Init: this daemon's RNG stream, if assigned, and the
    /// profile's R-serialized settings (empty for none), which R's main
    /// thread reads once after connecting.
    pub init_stream: Option<[i32; 7]>,
    pub init_settings: Vec<u8>,
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

/// Why the daemon stops waiting for tasks (codes as `nextcode()` numbers them).
pub enum Stop {
    Idle = 1,
    Wall = 2,
}

impl Limits {
    /// How long to wait for the next task, or why not to wait at all.
    pub fn wait(&self, now: Instant) -> Result<Option<Duration>, Stop> {
        if self.wall_until.is_some_and(|w| now >= w) {
            return Err(Stop::Wall);
        }
        let idle_left = match self.idle {
            Some(i) => {
                let left = (self.last_active + i).saturating_duration_since(now);
                if left.is_zero() {
                    return Err(Stop::Idle);
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
    pub fn finish_task(&mut self, now: Instant) -> Option<i32> {
        self.done += 1;
        self.last_active = now;
        if self.done as f64 >= self.tasks_left {
            Some(3)
        } else if self.wall_until.is_some_and(|w| now >= w) {
            Some(2)
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
    /// Dials `addr`, introduces itself and waits for the host's Init.
    /// `retry_until`: keep retrying a refused dial until then.
    pub fn connect(
        addr: &Address,
        secret: &str,
        retry_until: Option<Instant>,
        keep_going: impl FnMut() -> bool,
    ) -> Result<ClientConn, String> {
        let (mut stream, framing) =
            dial(addr, retry_until, keep_going).map_err(|e| format!("cannot connect to '{addr}': {e}"))?;
        let hello = Msg::Hello { version: PROTOCOL_VERSION, secret: secret.to_string(), pid: std::process::id() };
        write_frame(&mut stream, framing, &hello, &SP_HEADER).map_err(|e| format!("cannot greet host: {e}"))?;
        let mut c = ClientConn {
            stream,
            dec: Decoder::new(framing),
            framing,
            evaluating: Arc::new(AtomicBool::new(false)),
            closed: Arc::new(AtomicBool::new(false)),
            limits: Limits::default(),
            init_stream: None,
            init_settings: Vec::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if Instant::now() > deadline {
                return Err(format!("no reply from host at '{addr}' within 30 s; is it a mirai host?"));
            }
            if !c.dec.has_buffered() && !wait_readable(c.stream.as_raw_fd(), Duration::from_millis(200)) {
                continue;
            }
            let body = c.dec.next(&mut c.stream).map_err(|e| match e.kind() {
                io::ErrorKind::UnexpectedEof => format!("host at '{addr}' closed the connection during the handshake"),
                _ => format!("handshake with '{addr}' failed: {e}"),
            })?;
            let hop = strip_hop(&body)?;
            let (msg, off) = proto::decode(&body[hop..])?;
            return match msg {
                Msg::Init { version, stream } if version == PROTOCOL_VERSION => {
                    c.init_stream = stream;
                    c.init_settings = body[hop + off..].to_vec();
                    Ok(c)
                }
                Msg::Init { version, .. } => Err(format!(
                    "protocol version mismatch: host speaks {version}, daemon speaks {PROTOCOL_VERSION}; install the same mirai version on both"
                )),
                Msg::Refused { reason } => Err(format!("connection refused by host: {reason}")),
                m => Err(format!("unexpected first message from host: {m:?}")),
            };
        }
    }

    /// Waits up to `slice` for the next message.
    pub fn recv(&mut self, slice: Duration) -> Result<Incoming, String> {
        loop {
            if !self.dec.has_buffered() && !wait_readable(self.stream.as_raw_fd(), slice) {
                return Ok(Incoming::Nothing);
            }
            let body = match self.dec.next(&mut self.stream) {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.closed.store(true, Ordering::Release);
                    return Ok(Incoming::Closed);
                }
            };
            let hop = strip_hop(&body)?;
            let (msg, off) = proto::decode(&body[hop..])?;
            match msg {
                Msg::Task { id } => {
                    self.evaluating.store(true, Ordering::Release);
                    return Ok(Incoming::Task { id, body, offset: hop + off });
                }
                Msg::Exit => {
                    self.closed.store(true, Ordering::Release);
                    return Ok(Incoming::Exit);
                }
                // A cancel for a task that already finished: nothing to do.
                Msg::Cancel { .. } => continue,
                m => return Err(format!("unexpected message from host: {m:?}")),
            }
        }
    }

    /// Starts a reply frame for task `id`; append the payload, then `send`.
    pub fn begin_result(&self, id: u64, last: bool) -> Vec<u8> {
        let mut b = Vec::new();
        self.framing.begin(&mut b);
        proto::encode_into(&Msg::Result { id, last }, &mut b);
        b
    }

    pub fn send(&mut self, mut frame: Vec<u8>) -> Result<(), String> {
        self.framing.finish(&mut frame);
        self.evaluating.store(false, Ordering::Release);
        self.stream.write_all(&frame).map_err(|e| format!("cannot send result to host: {e}"))
    }

    pub fn done_evaluating(&self) {
        self.evaluating.store(false, Ordering::Release);
    }

    /// With autoexit, a host that disappears while R evaluates ends this
    /// process (SIGTERM after a 200 ms grace period); when R is idle its own
    /// read sees the end of stream and `daemon()` returns normally.
    pub fn watch_host(&self) -> io::Result<()> {
        let fd = self.stream.try_clone()?;
        let evaluating = self.evaluating.clone();
        let closed = self.closed.clone();
        std::thread::Builder::new().name("mirai-watch".into()).spawn(move || {
            let mut p = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLRDHUP, revents: 0 };
            loop {
                p.revents = 0;
                let rc = unsafe { libc::poll(&mut p, 1, 1000) };
                if closed.load(Ordering::Acquire) {
                    return;
                }
                if rc > 0 && p.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0 {
                    break;
                }
            }
            std::thread::sleep(Duration::from_millis(200));
            if evaluating.load(Ordering::Acquire) && !closed.load(Ordering::Acquire) {
                unsafe { libc::kill(libc::getpid(), libc::SIGTERM) };
            }
        })?;
        Ok(())
    }

    pub fn close(&mut self) {
        self.closed.store(true, Ordering::Release);
        self.stream.shutdown();
    }
}

impl Drop for ClientConn {
    fn drop(&mut self) {
        self.close();
    }
}
