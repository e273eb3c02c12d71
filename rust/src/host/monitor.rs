//! What a profile's daemons did: per-daemon counters (`daemons_table()`),
//! the timeline of recent tasks (`daemons_timeline()`), and, per process id,
//! whether a daemon ever ran or finished a task (`HealthBook`, which the
//! pool's crash-loop rule reads when a local daemon dies).
//!
//! Cost on the task path: the counters are plain integers in the
//! connection, bumped under the core's lock the host already holds; a task
//! adds one timeline entry when it is sent and sets its end when its result
//! arrives (two clock reads). The `HealthBook`'s lock is taken only when a
//! daemon connects, is sent its first task and sends its first result.

use crate::sys::threads::lock;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Instant, SystemTime};

/// Tasks the timeline keeps: the most recent ones (about 40 bytes each).
pub const TIMELINE_CAP: usize = 100_000;

/// One connected daemon's counters.
#[derive(Debug, Clone, Copy)]
pub struct DaemonRow {
    /// Its place in the order daemons joined this host, from 1 (the node
    /// number of a cluster).
    pub id: u32,
    /// Its process id: the kernel's for a peer on a Unix socket, else as
    /// it reported it (on its own machine).
    pub pid: u32,
    pub since: SystemTime,
    /// Tasks sent to it (less those taken back unsent), and results it sent.
    pub assigned: u64,
    pub completed: u64,
    /// Bytes of whole frames read from it and written to it.
    pub bytes_in: u64,
    pub bytes_out: u64,
}

impl DaemonRow {
    pub fn new(id: u32, pid: u32) -> Self {
        DaemonRow { id, pid, since: SystemTime::now(), assigned: 0, completed: 0, bytes_in: 0, bytes_out: 0 }
    }

    /// A task is on it (sent or about to be, its result not yet back).
    pub fn busy(&self) -> bool {
        self.assigned > self.completed
    }
}

/// What the host saw a daemon process do.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Health {
    pub connected: bool,
    /// It was sent a task.
    pub given_task: bool,
    /// It sent back a result.
    pub completed_task: bool,
    /// It was sent the profile's earlier `everywhere()` calls on
    /// connecting (a replacement), ahead of any task.
    pub replayed: bool,
}

/// `Health` by process id, shared by the host (which writes it) and the
/// pool (which reads it when one of its children dies). A daemon on a Unix
/// socket (the pool's children) is known by the pid the kernel gives for
/// the socket, so no peer can stand in for a child; a remote daemon reports
/// the pid it has on its own machine, over TCP, where no healing child
/// connects (heal only launches onto a host listening on a Unix socket).
#[derive(Debug, Default)]
pub struct HealthBook {
    inner: Mutex<HealthInner>,
}

#[derive(Debug, Default)]
struct HealthInner {
    pids: HashMap<u32, Health>,
    /// Local daemons launched by the pool in place of dead ones, not yet
    /// connected: they are sent the profile's earlier `everywhere()` calls.
    replacements: std::collections::HashSet<u32>,
    /// Daemons that have sent their first result.
    healthy: u64,
}

impl HealthBook {
    pub fn connected(&self, pid: u32) {
        // A new process under a reused pid starts afresh.
        lock(&self.inner).pids.insert(pid, Health { connected: true, ..Health::default() });
    }

    /// `pid` was launched to replace a dead daemon.
    pub fn replacement(&self, pid: u32) {
        lock(&self.inner).replacements.insert(pid);
    }

    /// Whether `pid` was launched to replace a dead daemon (asked once,
    /// when it connects: the mark goes).
    pub fn take_replacement(&self, pid: u32) -> bool {
        lock(&self.inner).replacements.remove(&pid)
    }

    pub fn given_task(&self, pid: u32) {
        lock(&self.inner).pids.entry(pid).or_default().given_task = true;
    }

    pub fn replayed(&self, pid: u32) {
        lock(&self.inner).pids.entry(pid).or_default().replayed = true;
    }

    pub fn completed_task(&self, pid: u32) {
        let mut g = lock(&self.inner);
        g.pids.entry(pid).or_default().completed_task = true;
        g.healthy += 1;
    }

    pub fn get(&self, pid: u32) -> Health {
        lock(&self.inner).pids.get(&pid).copied().unwrap_or_default()
    }

    /// How many daemons have completed a task so far (it only grows).
    pub fn healthy(&self) -> u64 {
        lock(&self.inner).healthy
    }
}

/// How a task's time on a daemon ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Not yet (or never: its daemon was lost and the task sent elsewhere).
    Open = 0,
    Value = 1,
    /// The daemon's result is an error (a miraiError or other error value).
    Error = 2,
    /// Resolved on the host without a result: timed out, cancelled, lost.
    Failed = 3,
}

/// One task's stay on a daemon; times in nanoseconds since the timeline's
/// origin.
#[derive(Debug, Clone, Copy)]
pub struct Span {
    pub task: u64,
    pub daemon: u32,
    pub end: End,
    pub start_ns: u64,
    pub end_ns: u64,
}

/// The last `TIMELINE_CAP` spans, in a ring.
#[derive(Debug)]
pub struct Timeline {
    spans: Vec<Span>,
    /// Spans ever started; span number k (from 0) is at `k % TIMELINE_CAP`
    /// while `k + TIMELINE_CAP > pushed`.
    pushed: u64,
    origin: Instant,
    /// The origin as wall-clock time (seconds since the Unix epoch).
    pub origin_unix: f64,
}

impl Default for Timeline {
    fn default() -> Self {
        let origin_unix = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
        Timeline { spans: Vec::new(), pushed: 0, origin: Instant::now(), origin_unix }
    }
}

impl Timeline {
    fn ns(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.origin).as_nanos() as u64
    }

    /// Task `task` was sent to daemon `daemon` now; its span's number.
    pub fn start(&mut self, task: u64, daemon: u32, now: Instant) -> u64 {
        let span = Span { task, daemon, end: End::Open, start_ns: self.ns(now), end_ns: 0 };
        let k = self.pushed;
        if self.spans.len() < TIMELINE_CAP {
            self.spans.push(span);
        } else {
            self.spans[(k % TIMELINE_CAP as u64) as usize] = span;
        }
        self.pushed += 1;
        k
    }

    /// Ends span `k` of task `task`, unless the ring has reused its place
    /// or it has ended already.
    pub fn end(&mut self, k: u64, task: u64, how: End, now: Instant) {
        if k + TIMELINE_CAP as u64 <= self.pushed {
            return;
        }
        let ns = self.ns(now);
        if let Some(s) = self.spans.get_mut((k % TIMELINE_CAP as u64) as usize) {
            if s.task == task && s.end == End::Open {
                s.end = how;
                s.end_ns = ns;
            }
        }
    }

    /// Ends, as failed, every open span on daemon `daemon` (it is gone):
    /// a pass over the ring, once per lost connection.
    pub fn end_all_on(&mut self, daemon: u32, now: Instant) {
        let ns = self.ns(now);
        for s in self.spans.iter_mut().filter(|s| s.daemon == daemon && s.end == End::Open) {
            s.end = End::Failed;
            s.end_ns = ns;
        }
    }

    /// The spans kept, oldest first.
    pub fn spans(&self) -> impl Iterator<Item = &Span> {
        let split = if self.spans.len() < TIMELINE_CAP { 0 } else { (self.pushed % TIMELINE_CAP as u64) as usize };
        self.spans[split..].iter().chain(self.spans[..split].iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_timeline_keeps_the_last_spans_and_ends_only_its_own() {
        let mut t = Timeline::default();
        let t0 = t.origin;
        let a = t.start(1, 1, t0 + Duration::from_millis(1));
        let b = t.start(2, 2, t0 + Duration::from_millis(2));
        t.end(b, 2, End::Error, t0 + Duration::from_millis(5));
        // Another task's number, or a second end, changes nothing.
        t.end(a, 99, End::Value, t0 + Duration::from_millis(6));
        t.end(b, 2, End::Value, t0 + Duration::from_millis(7));
        let v: Vec<_> = t.spans().copied().collect();
        assert_eq!(v.len(), 2);
        assert_eq!((v[0].task, v[0].end), (1, End::Open));
        assert_eq!((v[1].task, v[1].end, v[1].start_ns, v[1].end_ns), (2, End::Error, 2_000_000, 5_000_000));
        // Past the cap: the oldest go, in order, and ends for them are inert.
        for i in 0..TIMELINE_CAP as u64 {
            t.start(10 + i, 1, t0);
        }
        t.end(a, 1, End::Value, t0);
        let v: Vec<_> = t.spans().map(|s| s.task).collect();
        assert_eq!(v.len(), TIMELINE_CAP);
        assert_eq!(v[0], 10);
        assert!(v.windows(2).all(|w| w[1] == w[0] + 1));
        assert_eq!(*v.last().unwrap(), 10 + TIMELINE_CAP as u64 - 1);
    }

    #[test]
    fn a_lost_daemon_ends_its_open_spans_only() {
        let mut t = Timeline::default();
        let t0 = t.origin;
        let a = t.start(1, 1, t0);
        t.start(2, 2, t0);
        t.start(3, 1, t0);
        t.end(a, 1, End::Value, t0 + Duration::from_millis(1));
        t.end_all_on(1, t0 + Duration::from_millis(9));
        let v: Vec<_> = t.spans().map(|s| (s.task, s.end, s.end_ns)).collect();
        assert_eq!(v, [(1, End::Value, 1_000_000), (2, End::Open, 0), (3, End::Failed, 9_000_000)]);
    }

    #[test]
    fn the_health_book_counts_first_results() {
        let h = HealthBook::default();
        assert_eq!(h.get(7), Health::default());
        h.connected(7);
        h.given_task(7);
        h.replayed(7);
        assert_eq!(h.get(7), Health { connected: true, given_task: true, completed_task: false, replayed: true });
        assert_eq!(h.healthy(), 0);
        h.completed_task(7);
        assert_eq!(h.healthy(), 1);
        assert!(h.get(7).completed_task);
        // The pid reused by a new daemon.
        h.connected(7);
        assert_eq!(h.get(7), Health { connected: true, ..Health::default() });
    }
}
