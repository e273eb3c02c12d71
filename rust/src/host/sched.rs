//! Scheduling as a pure state machine: events in, actions out, no I/O.
//!
//! Two policies share it. With a dispatcher, tasks wait in one FIFO queue and
//! each goes to an idle daemon, one task in flight per daemon. Without one,
//! a task goes to a daemon that can take it now and may queue behind that
//! daemon's current task:
//!
//! - Only a daemon with no bytes left to write to it takes a task (the host
//!   reports each daemon's unwritten bytes after it writes, `unwritten`; a
//!   daemon just given a task counts as having its frame unwritten until
//!   the host says otherwise). If every daemon has bytes unwritten, tasks
//!   wait in the FIFO queue for the first whose socket drains, as NNG does
//!   with a pipe that is not ready for a message.
//! - Among those, the one holding the fewest abandoned tasks (resolved on
//!   the host, timed out or cancelled, but not yet answered: nobody waits
//!   for them, and a stopped or hung daemon holds them for ever), then the
//!   fewest outstanding tasks, then the one given a task longest ago (round
//!   robin among equals).
//!
//! Why: a stopped daemon holds a frame that will never be written, so it
//! takes nothing after its first task, with or without timeouts, and a
//! healthy daemon still reading its last large frame is not mistaken for
//! one that can take the next: the task waits for whichever daemon drains
//! first rather than being committed to a socket that is full. Abandoned
//! tasks before outstanding ones keep tasks off a daemon that has stopped
//! answering but whose socket still takes bytes (tiny tasks). For tiny
//! tasks every socket drains at once and the pick is the least outstanding.
//! Daemons are kept ordered by (unwritten, abandoned, outstanding, last
//! pick, id) in a B-tree, so a pick costs O(log n).
//!
//! A task resolved while its frame is still in the host's write queue is
//! withdrawn (`Action::Withdraw`): the host drops the frame if none of it
//! was written yet and says so (`unsent`), which ends the task here as if
//! answered; a frame already partly written is finished with filler and
//! the daemon answers it.
//!
//! The scheduler also counts the bytes of the tasks waiting in the queue
//! (not those on a daemon), for the host's memory cap: it alone knows
//! exactly when a task enters or leaves the queue.
//!
//! A task may instead be pinned to one daemon (`submit_to`), which is how
//! `everywhere()` reaches each connected daemon exactly once. A pinned task
//! never runs anywhere else: with a dispatcher it waits for its daemon to be
//! idle and then goes ahead of the FIFO queue (so a daemon with pinned work
//! waiting is never idle); without one it is written to that daemon at once.
//! If its daemon goes away first, it fails with "connection reset" rather
//! than being requeued. A task may also be pinned to a daemon that has yet
//! to connect (`submit_to_next`): each such task goes to a different newly
//! connected daemon, ahead of the queue.
//!
//! Retry: a task may be submitted with a number of retries
//! (`submit_retrying`). When the daemon running it is lost (`disconnect`)
//! and it has retries left, it goes back to the front of the queue, one
//! retry fewer, instead of failing with "connection reset"; with none left
//! it fails as any other. Only a lost daemon triggers a retry: a task that
//! timed out or was cancelled is resolved already and stays so, and a
//! pinned task never moves to another daemon.

use super::idmap::IdMap;
use std::collections::{BTreeSet, HashSet, VecDeque};

pub type TaskId = u64;
pub type DaemonId = u64;

/// The error values a task resolves to (the reference's, which are NNG's
/// error codes): a `.timeout` passed, its daemon went away (or the profile
/// was reset), `stop_mirai()`. Handed to R at load by these names
/// (`r::helpers::mirai_constants`).
pub const ERR_TIMEOUT: i32 = 5;
pub const ERR_RESET: i32 = 19;
pub const ERR_CANCELED: i32 = 20;
pub const ERROR_VALUES: [(&str, i32); 3] = [("timeout", ERR_TIMEOUT), ("reset", ERR_RESET), ("canceled", ERR_CANCELED)];

/// What each error value means, as NNG words it: the text of code `c` is
/// `ERROR_TEXTS[c - 1]` (R prints an 'errorValue' with it).
pub const ERROR_TEXTS: [&str; 31] = [
    "Interrupted", "Out of memory", "Invalid argument", "Resource busy", "Timed out",
    "Connection refused", "Object closed", "Try again", "Not supported", "Address in use",
    "Incorrect state", "Entry not found", "Protocol error", "Destination unreachable", "Address invalid",
    "Permission denied", "Message too large", "Connection aborted", "Connection reset", "Operation canceled",
    "Out of files", "Out of space", "Resource already exists", "Read only resource", "Write only resource",
    "Cryptographic error", "Peer could not be authenticated", "Option requires argument", "Ambiguous option",
    "Incorrect type", "Connection shutdown",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Write task to daemon.
    Send { daemon: DaemonId, task: TaskId },
    /// The reply just received resolves task.
    Deliver { task: TaskId },
    /// Task resolves to this error value.
    Fail { task: TaskId, code: i32 },
    /// Ask daemon to interrupt task.
    Interrupt { daemon: DaemonId, task: TaskId },
    /// Daemon sent its last reply: close its connection once flushed.
    Retire { daemon: DaemonId },
    /// Forget the task's payload; nothing refers to it any more.
    Drop { task: TaskId },
    /// Task is resolved but on daemon: if none of its frame has been written
    /// to the daemon yet, take it out of the write queue and report
    /// `unsent`; if part of it has, finish the frame without its payload
    /// (the daemon answers it, and the answer is dropped). Either way the
    /// host may release the frame's memory now.
    Withdraw { daemon: DaemonId, task: TaskId },
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    pub connections: u64,
    pub cumulative: u64,
    pub awaiting: u64,
    pub executing: u64,
    pub completed: u64,
    /// Tasks sent back to the queue after their daemon was lost.
    pub retried: u64,
    /// Bytes of the tasks waiting in the queue, and their high-water mark.
    pub queued_bytes: u64,
    pub peak_bytes: u64,
}

/// Kept for every queued task, so kept to 24 bytes: one daemon id serves
/// both as the daemon it was sent to and as the one it is pinned to (a
/// pinned task is only ever sent to its pin), told apart by two flags
/// (separate `Option<DaemonId>`s took 32 bytes in all).
#[derive(Debug)]
struct Task {
    /// Its daemon, if `sent` or `pinned`.
    daemon: DaemonId,
    bytes: u64,
    /// Times it may still be requeued after losing its daemon.
    retries: u32,
    resolved: bool,
    /// Written to `daemon`, and not since requeued.
    sent: bool,
    /// Runs on `daemon` and nowhere else.
    pinned: bool,
}

impl Task {
    fn queued(bytes: u64, retries: u32) -> Task {
        Task { daemon: 0, bytes, retries, resolved: false, sent: false, pinned: false }
    }

    fn pinned_to(d: DaemonId) -> Task {
        Task { daemon: d, bytes: 0, retries: 0, resolved: false, sent: false, pinned: true }
    }

    /// The daemon it was sent to.
    fn on(&self) -> Option<DaemonId> {
        self.sent.then_some(self.daemon)
    }

    /// The daemon it is pinned to.
    fn pin(&self) -> Option<DaemonId> {
        self.pinned.then_some(self.daemon)
    }
}

#[derive(Debug, Default)]
struct Daemon {
    inflight: VecDeque<TaskId>,
    /// Pinned tasks waiting for this daemon to be idle (dispatcher only).
    pinned: VecDeque<TaskId>,
    /// Tasks in `inflight` already resolved (timed out, cancelled).
    abandoned: u64,
    /// Bytes the host has yet to write to it: as last reported, plus the
    /// frames of tasks sent since (at least 1 byte each).
    unwritten: u64,
    /// `Sched::picks` when it was last given a task; 0 for never.
    last_pick: u64,
    /// Its key in `Sched::by_load` (without a dispatcher).
    load: Option<Load>,
}

/// A daemon's place in the no-dispatcher order: unwritten bytes, abandoned
/// tasks, outstanding tasks, last pick, then the id (see the module docs).
type Load = (u64, u64, usize, u64, DaemonId);

/// Set with O(1) insert, remove and pick.
#[derive(Debug, Default)]
struct IdleSet {
    items: Vec<DaemonId>,
    pos: IdMap<DaemonId, usize>,
}

impl IdleSet {
    fn insert(&mut self, d: DaemonId) {
        if !self.pos.contains_key(&d) {
            self.pos.insert(d, self.items.len());
            self.items.push(d);
        }
    }
    fn remove(&mut self, d: DaemonId) {
        if let Some(i) = self.pos.remove(&d) {
            let last = self.items.pop().unwrap();
            if last != d {
                self.items[i] = last;
                self.pos.insert(last, i);
            }
        }
    }
    fn pop(&mut self) -> Option<DaemonId> {
        let d = self.items.pop()?;
        self.pos.remove(&d);
        Some(d)
    }
    fn len(&self) -> usize {
        self.items.len()
    }
}

pub struct Sched {
    dispatcher: bool,
    queue: VecDeque<TaskId>,
    tasks: IdMap<TaskId, Task>,
    daemons: IdMap<DaemonId, Daemon>,
    idle: IdleSet,
    /// Without a dispatcher: every connected daemon, least loaded first.
    by_load: BTreeSet<Load>,
    /// Tasks given to daemons so far (the clock of `Daemon::last_pick`).
    picks: u64,
    /// Sum of every daemon's `pinned` length: `counters()` runs after each
    /// event and should not walk the daemons for it.
    pinned_waiting: usize,
    /// Tasks each waiting for a daemon that has not connected yet.
    for_next: VecDeque<TaskId>,
    /// Sum of every daemon's `inflight` length, kept for the same reason.
    executing: usize,
    counters: Counters,
    queued_bytes: u64,
    peak_bytes: u64,
}

impl Sched {
    pub fn new(dispatcher: bool) -> Self {
        Sched {
            dispatcher,
            queue: VecDeque::new(),
            tasks: IdMap::default(),
            daemons: IdMap::default(),
            idle: IdleSet::default(),
            by_load: BTreeSet::new(),
            picks: 0,
            pinned_waiting: 0,
            for_next: VecDeque::new(),
            executing: 0,
            counters: Counters::default(),
            queued_bytes: 0,
            peak_bytes: 0,
        }
    }

    pub fn counters(&self) -> Counters {
        let mut c = self.counters;
        c.connections = self.daemons.len() as u64;
        c.awaiting = (self.queue.len() + self.pinned_waiting + self.for_next.len()) as u64;
        c.executing = self.executing as u64;
        c.queued_bytes = self.queued_bytes;
        c.peak_bytes = self.peak_bytes;
        c
    }

    /// Tasks a daemon is running now.
    pub fn executing_count(&self) -> usize {
        self.executing
    }

    pub fn idle_count(&self) -> usize {
        self.idle.len()
    }

    pub fn pending_tasks(&self) -> usize {
        self.tasks.values().filter(|t| !t.resolved).count()
    }

    /// Tasks the scheduler still holds state for: unresolved ones, and
    /// resolved ones a daemon is still running. Anything beyond those is a
    /// task it forgot to drop, which tests check for.
    pub fn tracked_tasks(&self) -> usize {
        self.tasks.len()
    }

    pub fn submit(&mut self, task: TaskId) -> Vec<Action> {
        self.submit_sized(task, 0)
    }

    /// Submits a task whose payload is `bytes` long. The peak is taken after
    /// the task had its chance to go straight to a daemon: one that never
    /// waited never counts.
    pub fn submit_sized(&mut self, task: TaskId, bytes: u64) -> Vec<Action> {
        self.submit_retrying(task, bytes, 0)
    }

    /// `submit_sized` for a task that is requeued up to `retries` times
    /// when the daemon running it is lost (see the module docs).
    pub fn submit_retrying(&mut self, task: TaskId, bytes: u64, retries: u32) -> Vec<Action> {
        self.tasks.insert(task, Task::queued(bytes, retries));
        self.queue.push_back(task);
        self.queued_bytes += bytes;
        let mut out = Vec::new();
        self.pump(&mut out);
        self.peak_bytes = self.peak_bytes.max(self.queued_bytes);
        out
    }

    /// Makes room for `n` more tasks at once (a map's elements), so that
    /// the tables do not grow step by step, each step leaving the table it
    /// outgrew as free memory in the process.
    pub fn reserve(&mut self, n: usize) {
        self.tasks.reserve(n);
        self.queue.reserve(n);
    }

    /// Connected daemons, in a stable order: the targets of a broadcast.
    pub fn daemon_ids(&self) -> Vec<DaemonId> {
        let mut v: Vec<DaemonId> = self.daemons.keys().copied().collect();
        v.sort_unstable();
        v
    }

    /// Submits a task that must run on daemon `d` and nowhere else. A
    /// daemon that is not (or no longer) connected fails it at once.
    pub fn submit_to(&mut self, task: TaskId, d: DaemonId) -> Vec<Action> {
        let mut out = Vec::new();
        // Pinned tasks bypass the memory gate (everywhere()), so they are
        // not counted as queued bytes.
        self.tasks.insert(task, Task::pinned_to(d));
        let Some(dm) = self.daemons.get_mut(&d) else {
            self.fail(task, ERR_RESET, &mut out);
            self.tasks.remove(&task);
            out.push(Action::Drop { task });
            return out;
        };
        if self.dispatcher && !dm.inflight.is_empty() {
            dm.pinned.push_back(task);
            self.pinned_waiting += 1;
        } else {
            self.idle.remove(d);
            self.start(task, d, &mut out);
        }
        out
    }

    /// Submits a task for the next daemon to connect that has not had one
    /// of these (each such task goes to a different daemon).
    pub fn submit_to_next(&mut self, task: TaskId) -> Vec<Action> {
        self.tasks.insert(task, Task::queued(0, 0));
        self.for_next.push_back(task);
        Vec::new()
    }

    pub fn connect(&mut self, d: DaemonId) -> Vec<Action> {
        self.daemons.insert(d, Daemon::default());
        self.counters.cumulative += 1;
        // Nothing queued and never picked: first among the least loaded.
        self.rekey(d);
        let mut out = Vec::new();
        if let Some(task) = self.for_next.pop_front() {
            let t = self.tasks.get_mut(&task).unwrap();
            t.daemon = d;
            t.pinned = true;
            self.start(task, d, &mut out);
        } else {
            self.idle.insert(d);
        }
        self.pump(&mut out);
        out
    }

    /// The daemon's connection is gone. Its running task fails with
    /// "connection reset", unless it has a retry left: then it goes back to
    /// the front of the queue with the tasks queued behind it, which never
    /// started.
    pub fn disconnect(&mut self, d: DaemonId) -> Vec<Action> {
        let mut out = Vec::new();
        if let Some(dm) = self.remove_daemon(d) {
            let mut inflight = dm.inflight;
            if let Some(&running) = inflight.front() {
                if !self.take_retry(running) {
                    inflight.pop_front();
                    self.fail(running, ERR_RESET, &mut out);
                    // No reply will ever come to drop it, so drop it now or
                    // its payload stays in the host for the life of the
                    // profile.
                    if self.tasks.remove(&running).is_some() {
                        out.push(Action::Drop { task: running });
                    }
                }
            }
            self.requeue(inflight.into_iter(), &mut out);
            self.orphan_pinned(dm.pinned, &mut out);
        }
        self.pump(&mut out);
        out
    }

    /// The daemon `task` was last sent to, while it is unresolved.
    pub fn daemon_of(&self, task: TaskId) -> Option<DaemonId> {
        self.tasks.get(&task).and_then(|t| t.on())
    }

    /// Whether daemon `d` is running `task` now (the oldest it was sent
    /// and has not answered): the one task it may relay conditions for.
    pub fn runs(&self, d: DaemonId, task: TaskId) -> bool {
        self.daemons.get(&d).is_some_and(|dm| dm.inflight.front() == Some(&task))
    }

    /// A reply for `task` arrived from `d`.
    pub fn reply(&mut self, d: DaemonId, task: TaskId, last: bool) -> Vec<Action> {
        let mut out = Vec::new();
        if self.leave_daemon(d, task) {
            let t = self.tasks.get_mut(&task).unwrap();
            if !t.resolved {
                t.resolved = true;
                self.counters.completed += 1;
                out.push(Action::Deliver { task });
            }
            self.tasks.remove(&task);
            out.push(Action::Drop { task });
        }
        if last {
            if let Some(dm) = self.remove_daemon(d) {
                self.requeue(dm.inflight.into_iter(), &mut out);
                self.orphan_pinned(dm.pinned, &mut out);
            }
            out.push(Action::Retire { daemon: d });
        } else if self.dispatcher {
            self.settle(d, &mut out);
        }
        self.pump(&mut out);
        out
    }

    /// The host took `task`'s frame out of daemon `d`'s write queue before
    /// any of it was written (see `Action::Withdraw`): the daemon will never
    /// see it, so the task ends here as if answered.
    pub fn unsent(&mut self, d: DaemonId, task: TaskId) -> Vec<Action> {
        let mut out = Vec::new();
        // Only a resolved task is withdrawn; anything else is a stale report.
        if !self.tasks.get(&task).is_some_and(|t| t.resolved && t.on() == Some(d)) {
            return out;
        }
        if self.leave_daemon(d, task) {
            self.tasks.remove(&task);
            out.push(Action::Drop { task });
            if self.dispatcher {
                self.settle(d, &mut out);
            }
            self.pump(&mut out);
        }
        out
    }

    /// The host has `bytes` still to write to daemon `d`: reported after a
    /// write when the figure changed or a frame was queued since the last
    /// report. Only the no-dispatcher policy uses it; a daemon that drained
    /// takes the next waiting task.
    pub fn unwritten(&mut self, d: DaemonId, bytes: u64) -> Vec<Action> {
        let mut out = Vec::new();
        if let Some(dm) = self.daemons.get_mut(&d) {
            if dm.unwritten != bytes {
                dm.unwritten = bytes;
                self.rekey(d);
                if bytes == 0 && !self.dispatcher {
                    self.pump(&mut out);
                }
            }
        }
        out
    }

    /// User cancellation. Returns whether the task was found unresolved.
    pub fn cancel(&mut self, task: TaskId, code: i32) -> (bool, Vec<Action>) {
        let (found, out) = self.cancel_many(&[task], code);
        (found[0], out)
    }

    /// Cancels each of `tasks` as `cancel` does, taking the queued ones
    /// out of the queue in one pass: `stop_mirai()` on a map of a million
    /// elements must not scan the queue once per element. Returns, for
    /// each, whether it was found unresolved.
    pub fn cancel_many(&mut self, tasks: &[TaskId], code: i32) -> (Vec<bool>, Vec<Action>) {
        let mut out = Vec::new();
        let mut found = Vec::with_capacity(tasks.len());
        let mut unqueue = HashSet::new();
        for &task in tasks {
            let Some(t) = self.tasks.get(&task) else {
                found.push(false);
                continue;
            };
            if t.resolved {
                found.push(false);
                continue;
            }
            match t.on() {
                None => {
                    match t.pin() {
                        Some(p) => {
                            if let Some(dm) = self.daemons.get_mut(&p) {
                                let before = dm.pinned.len();
                                dm.pinned.retain(|&q| q != task);
                                self.pinned_waiting -= before - dm.pinned.len();
                            }
                        }
                        None => {
                            unqueue.insert(task);
                            self.queued_bytes -= t.bytes;
                        }
                    }
                    self.fail(task, code, &mut out);
                    self.tasks.remove(&task);
                    out.push(Action::Drop { task });
                }
                Some(d) => {
                    self.fail(task, code, &mut out);
                    out.push(Action::Withdraw { daemon: d, task });
                    if self.dispatcher {
                        out.push(Action::Interrupt { daemon: d, task });
                    }
                }
            }
            found.push(true);
        }
        if !unqueue.is_empty() {
            self.queue.retain(|q| !unqueue.contains(q));
            self.for_next.retain(|q| !unqueue.contains(q));
        }
        (found, out)
    }

    /// Fails every unresolved task (shutdown).
    pub fn fail_all(&mut self, code: i32) -> Vec<Action> {
        let mut out = Vec::new();
        let ids: Vec<TaskId> = self.tasks.iter().filter(|(_, t)| !t.resolved).map(|(&id, _)| id).collect();
        for id in ids {
            self.fail(id, code, &mut out);
        }
        // Queued tasks will never be sent or replied to, so this is their
        // last chance to be dropped; running ones are dropped on reply.
        self.queued_bytes = 0;
        let mut waiting: Vec<TaskId> = std::mem::take(&mut self.queue).into();
        waiting.extend(std::mem::take(&mut self.for_next));
        for dm in self.daemons.values_mut() {
            waiting.extend(dm.pinned.drain(..));
        }
        self.pinned_waiting = 0;
        for task in waiting {
            self.tasks.remove(&task);
            out.push(Action::Drop { task });
        }
        out
    }

    fn fail(&mut self, task: TaskId, code: i32, out: &mut Vec<Action>) {
        if let Some(t) = self.tasks.get_mut(&task) {
            if !t.resolved {
                t.resolved = true;
                out.push(Action::Fail { task, code });
                if let Some(d) = t.on() {
                    if let Some(dm) = self.daemons.get_mut(&d) {
                        dm.abandoned += 1;
                        self.rekey(d);
                    }
                }
            }
        }
    }

    /// Takes `task` off daemon `d` (answered, or never sent); false if it
    /// was not there.
    fn leave_daemon(&mut self, d: DaemonId, task: TaskId) -> bool {
        let Some(dm) = self.daemons.get_mut(&d) else { return false };
        let Some(i) = dm.inflight.iter().position(|&t| t == task) else { return false };
        dm.inflight.remove(i);
        self.executing -= 1;
        if self.tasks.get(&task).is_some_and(|t| t.resolved) {
            dm.abandoned -= 1;
        }
        self.rekey(d);
        true
    }

    /// Puts daemon `d` back in the no-dispatcher order after its load
    /// changed (or first, when it connects).
    fn rekey(&mut self, d: DaemonId) {
        if self.dispatcher {
            return;
        }
        let Some(dm) = self.daemons.get_mut(&d) else { return };
        if let Some(old) = dm.load {
            self.by_load.remove(&old);
        }
        let load = (dm.unwritten, dm.abandoned, dm.inflight.len(), dm.last_pick, d);
        dm.load = Some(load);
        self.by_load.insert(load);
    }

    fn remove_daemon(&mut self, d: DaemonId) -> Option<Daemon> {
        let dm = self.daemons.remove(&d)?;
        self.idle.remove(d);
        if let Some(load) = dm.load {
            self.by_load.remove(&load);
        }
        self.pinned_waiting -= dm.pinned.len();
        self.executing -= dm.inflight.len();
        Some(dm)
    }

    /// Writes `task` to daemon `d` (which the caller has taken out of the
    /// idle set, if it was there).
    fn start(&mut self, task: TaskId, d: DaemonId, out: &mut Vec<Action>) {
        let t = self.tasks.get_mut(&task).unwrap();
        debug_assert!(!t.pinned || t.daemon == d, "a pinned task sent elsewhere");
        t.daemon = d;
        t.sent = true;
        let frame = t.bytes.max(1);
        self.picks += 1;
        let dm = self.daemons.get_mut(&d).unwrap();
        dm.inflight.push_back(task);
        dm.last_pick = self.picks;
        // Unwritten until the host reports otherwise (it reports only
        // without a dispatcher, the one policy that needs it).
        if !self.dispatcher {
            dm.unwritten += frame;
        }
        self.executing += 1;
        self.rekey(d);
        out.push(Action::Send { daemon: d, task });
    }

    /// A dispatcher daemon has nothing in flight: its own pinned work comes
    /// first, otherwise it becomes idle for the FIFO queue.
    fn settle(&mut self, d: DaemonId, out: &mut Vec<Action>) {
        let Some(dm) = self.daemons.get_mut(&d) else { return };
        if !dm.inflight.is_empty() {
            return;
        }
        match dm.pinned.pop_front() {
            Some(task) => {
                self.pinned_waiting -= 1;
                self.start(task, d, out);
            }
            None => self.idle.insert(d),
        }
    }

    /// Pinned tasks of a departed daemon that it never started: they may run
    /// nowhere else, so they fail.
    fn orphan_pinned(&mut self, tasks: VecDeque<TaskId>, out: &mut Vec<Action>) {
        for t in tasks {
            self.fail(t, ERR_RESET, out);
            if self.tasks.remove(&t).is_some() {
                out.push(Action::Drop { task: t });
            }
        }
    }

    /// Uses up one of `task`'s retries, if it is unresolved, not pinned
    /// and has one left; true if so (the caller requeues it).
    fn take_retry(&mut self, task: TaskId) -> bool {
        match self.tasks.get_mut(&task) {
            Some(t) if !t.resolved && t.pin().is_none() && t.retries > 0 => {
                t.retries -= 1;
                self.counters.retried += 1;
                true
            }
            _ => false,
        }
    }

    fn requeue(&mut self, tasks: impl DoubleEndedIterator<Item = TaskId>, out: &mut Vec<Action>) {
        for t in tasks.rev() {
            match self.tasks.get_mut(&t) {
                Some(ts) if !ts.resolved && ts.pin().is_some() => {
                    self.fail(t, ERR_RESET, out);
                    self.tasks.remove(&t);
                    out.push(Action::Drop { task: t });
                }
                Some(ts) if !ts.resolved => {
                    ts.sent = false;
                    self.queue.push_front(t);
                    self.queued_bytes += ts.bytes;
                    self.peak_bytes = self.peak_bytes.max(self.queued_bytes);
                }
                Some(_) => {
                    self.tasks.remove(&t);
                    out.push(Action::Drop { task: t });
                }
                None => {}
            }
        }
    }

    fn pump(&mut self, out: &mut Vec<Action>) {
        loop {
            let Some(&task) = self.queue.front() else { return };
            let d = if self.dispatcher {
                match self.idle.pop() {
                    Some(d) => d,
                    None => return,
                }
            } else {
                match self.by_load.first() {
                    Some(&(0, .., d)) => d,
                    // Every daemon has bytes unwritten (or there is none).
                    _ => return,
                }
            };
            self.queue.pop_front();
            self.queued_bytes -= self.tasks[&task].bytes;
            self.start(task, d, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_stays_small() {
        // One per queued task, in a HashMap whose load keeps about 1.3
        // entries' room for each (8 more bytes for the key).
        assert!(std::mem::size_of::<Task>() <= 24, "{}", std::mem::size_of::<Task>());
    }

    #[test]
    fn error_values_have_nng_texts() {
        let text = |c: i32| ERROR_TEXTS[c as usize - 1];
        assert_eq!(text(ERR_TIMEOUT), "Timed out");
        assert_eq!(text(ERR_RESET), "Connection reset");
        assert_eq!(text(ERR_CANCELED), "Operation canceled");
    }

    fn sends(a: &[Action]) -> Vec<(DaemonId, TaskId)> {
        a.iter()
            .filter_map(|x| match x {
                Action::Send { daemon, task } => Some((*daemon, *task)),
                _ => None,
            })
            .collect()
    }

    /// Without a dispatcher, submits a tiny task and reports it written at
    /// once, as the host does; returns where it went.
    fn submit_tiny(s: &mut Sched, task: TaskId) -> Vec<(DaemonId, TaskId)> {
        let out = sends(&s.submit(task));
        for &(d, _) in &out {
            assert!(s.unwritten(d, 0).is_empty() || s.counters().awaiting > 0);
        }
        out
    }

    #[test]
    fn without_dispatcher_tasks_spread_and_queue_behind_busy_daemons() {
        let mut s = Sched::new(false);
        assert!(s.submit(1).is_empty());
        assert_eq!(sends(&s.connect(10)), vec![(10, 1)]);
        s.unwritten(10, 0);
        s.connect(11);
        assert_eq!(submit_tiny(&mut s, 2), vec![(11, 2)]);
        // Equal loads: the one given a task longer ago (round robin).
        assert_eq!(submit_tiny(&mut s, 3), vec![(10, 3)]);
        assert_eq!(s.counters().executing, 3);
        let a = s.reply(10, 1, false);
        assert!(a.contains(&Action::Deliver { task: 1 }));
        assert_eq!(s.counters().completed, 1);
    }

    #[test]
    fn without_dispatcher_the_least_outstanding_daemon_takes_the_task() {
        let mut s = Sched::new(false);
        for d in [1, 2, 3] {
            s.connect(d);
        }
        for t in 1..=3 {
            submit_tiny(&mut s, t);
        }
        // Daemon 2 answers twice while 1 and 3 are busy: it takes both.
        s.reply(2, 2, false);
        assert_eq!(submit_tiny(&mut s, 4), vec![(2, 4)]);
        s.reply(2, 4, false);
        assert_eq!(submit_tiny(&mut s, 5), vec![(2, 5)]);
        // All at one again: round robin from the least recently given.
        assert_eq!(submit_tiny(&mut s, 6), vec![(1, 6)]);
        assert_eq!(submit_tiny(&mut s, 7), vec![(3, 7)]);
        assert_eq!(submit_tiny(&mut s, 8), vec![(2, 8)]);
    }

    #[test]
    fn a_daemon_with_bytes_unwritten_takes_nothing_until_it_drains() {
        let mut s = Sched::new(false);
        s.connect(1);
        s.connect(2);
        // A task counts as unwritten until the host reports.
        assert_eq!(sends(&s.submit_sized(1, 10_000_000)), vec![(1, 1)]);
        assert_eq!(sends(&s.submit_sized(2, 10_000_000)), vec![(2, 2)]);
        assert!(s.submit_sized(3, 10_000_000).is_empty());
        assert!(s.submit_sized(4, 10_000_000).is_empty());
        assert_eq!(s.counters().awaiting, 2);
        // Partial progress changes nothing; the first to drain takes the
        // next task, in order.
        assert!(s.unwritten(1, 9_000_000).is_empty());
        assert_eq!(sends(&s.unwritten(2, 0)), vec![(2, 3)]);
        assert!(s.unwritten(2, 4_000_000).is_empty());
        assert_eq!(sends(&s.unwritten(2, 0)), vec![(2, 4)]);
        assert_eq!(s.counters().awaiting, 0);
        // Reports for a daemon that is gone are ignored.
        assert!(s.unwritten(99, 0).is_empty());
    }

    #[test]
    fn among_daemons_that_can_take_a_task_abandoned_ones_come_last() {
        let mut s = Sched::new(false);
        s.connect(1);
        s.connect(2);
        assert_eq!(submit_tiny(&mut s, 1), vec![(1, 1)]);
        let (_, a) = s.cancel(1, ERR_TIMEOUT);
        assert_eq!(a, vec![Action::Fail { task: 1, code: ERR_TIMEOUT }, Action::Withdraw { daemon: 1, task: 1 }]);
        // Fully written, so not unsent: the task stays on daemon 1, which
        // now comes after daemon 2 however many tasks daemon 2 has.
        for t in 2..10 {
            assert_eq!(submit_tiny(&mut s, t), vec![(2, t)]);
        }
        // Unless daemon 2 cannot take bytes now.
        s.submit_sized(10, 5_000_000);
        assert_eq!(sends(&s.submit(11)), vec![(1, 11)]);
        s.unwritten(1, 0);
        // Its late answer clears it.
        s.reply(1, 1, false);
        s.reply(1, 11, false);
        assert_eq!(submit_tiny(&mut s, 12), vec![(1, 12)]);
        assert_eq!(s.tracked_tasks(), 10);
    }

    #[test]
    fn an_unsent_task_leaves_its_daemon_at_once() {
        for dispatcher in [false, true] {
            let mut s = Sched::new(dispatcher);
            s.connect(1);
            s.submit(1);
            s.unwritten(1, 0);
            s.submit(2);
            let (found, a) = s.cancel(1, ERR_CANCELED);
            assert!(found);
            assert!(a.contains(&Action::Withdraw { daemon: 1, task: 1 }));
            assert_eq!(a.contains(&Action::Interrupt { daemon: 1, task: 1 }), dispatcher);
            let a = s.unsent(1, 1);
            assert_eq!(a[0], Action::Drop { task: 1 });
            // With a dispatcher the daemon is free for the queued task.
            assert_eq!(sends(&a), if dispatcher { vec![(1, 2)] } else { vec![] });
            assert_eq!(s.counters().executing, 1);
            // Only once, and never for a live task.
            assert!(s.unsent(1, 1).is_empty());
            assert!(s.unsent(1, 2).is_empty());
            assert_eq!(s.tracked_tasks(), 1);
        }
    }

    /// The SIGSTOP scenario as the scheduler sees it: daemon 1 is stopped
    /// (it reads nothing and answers nothing), daemon 2 reads each frame
    /// only after the next submit. Rounds of 40 tasks of 10 MB; at the end
    /// of a round the unanswered ones time out. Only the first task ever
    /// goes to the stopped daemon, timeouts or not.
    #[test]
    fn a_stopped_daemon_gets_one_task_and_no_more() {
        for timeouts in [true, false] {
            let mut s = Sched::new(false);
            s.connect(1);
            s.connect(2);
            let mut next = 1;
            let mut per_round = Vec::new();
            let mut stopped = Vec::new();
            for _round in 0..4 {
                let mut on_stopped = 0;
                let mut pending = Vec::new();
                for _ in 0..40 {
                    let mut sent = sends(&s.submit_sized(next, 10_000_000));
                    next += 1;
                    // The healthy daemon drains its socket: it takes the
                    // next waiting task, if any.
                    sent.extend(sends(&s.unwritten(2, 0)));
                    for (d, t) in sent {
                        if d == 1 {
                            on_stopped += 1;
                            stopped.push(t);
                            s.unwritten(1, 9_800_000);
                        } else {
                            pending.push(t);
                        }
                    }
                    if pending.len() > 1 {
                        s.reply(2, pending.remove(0), false);
                    }
                }
                while let Some(t) = pending.pop() {
                    s.reply(2, t, false);
                    s.unwritten(2, 0);
                }
                per_round.push(on_stopped);
                if timeouts {
                    for t in stopped.drain(..) {
                        s.cancel(t, ERR_TIMEOUT);
                    }
                }
                assert_eq!(s.counters().awaiting, 0);
            }
            assert_eq!(per_round.iter().sum::<usize>(), 1, "timeouts={timeouts}: {per_round:?}");
            assert_eq!(s.counters().completed, 4 * 40 - 1);
        }
    }

    #[test]
    fn dispatcher_sends_only_to_idle_daemons_fifo() {
        let mut s = Sched::new(true);
        s.connect(1);
        assert_eq!(sends(&s.submit(100)), vec![(1, 100)]);
        assert!(sends(&s.submit(101)).is_empty());
        assert!(sends(&s.submit(102)).is_empty());
        assert_eq!(s.counters().awaiting, 2);
        assert_eq!(sends(&s.reply(1, 100, false)), vec![(1, 101)]);
        assert_eq!(sends(&s.connect(2)), vec![(2, 102)]);
    }

    #[test]
    fn disconnect_fails_running_and_requeues_unstarted() {
        let mut s = Sched::new(false);
        s.connect(1);
        s.submit(1);
        s.submit(2);
        let a = s.disconnect(1);
        assert!(a.contains(&Action::Fail { task: 1, code: ERR_RESET }));
        assert_eq!(s.counters().awaiting, 1);
        assert_eq!(sends(&s.connect(2)), vec![(2, 2)]);
    }

    #[test]
    fn last_reply_retires_daemon_and_requeues_rest() {
        let mut s = Sched::new(false);
        s.connect(1);
        s.submit(1);
        s.submit(2);
        let a = s.reply(1, 1, true);
        assert!(a.contains(&Action::Deliver { task: 1 }));
        assert!(a.contains(&Action::Retire { daemon: 1 }));
        assert_eq!(s.counters().connections, 0);
        assert_eq!(s.counters().awaiting, 1);
    }

    #[test]
    fn cancel_and_timeout_resolve_once() {
        let mut s = Sched::new(true);
        s.connect(1);
        s.submit(1);
        s.submit(2);
        let (found, a) = s.cancel(2, ERR_CANCELED);
        assert!(found);
        assert!(a.contains(&Action::Fail { task: 2, code: ERR_CANCELED }));
        let (found, a) = s.cancel(1, ERR_TIMEOUT);
        assert!(found);
        assert!(a.contains(&Action::Interrupt { daemon: 1, task: 1 }));
        assert!(!s.cancel(1, ERR_CANCELED).0);
        // the late reply is not delivered a second time
        let a = s.reply(1, 1, false);
        assert!(!a.contains(&Action::Deliver { task: 1 }));
        assert_eq!(s.pending_tasks(), 0);
    }

    // Found by tests/sched_props.rs: the task a lost daemon was running was
    // failed (or, if already cancelled, left alone) but never dropped, so
    // the host kept its payload until the profile was reset.
    #[test]
    fn lost_daemon_drops_its_running_task() {
        for dispatcher in [true, false] {
            let mut s = Sched::new(dispatcher);
            s.connect(1);
            s.submit(1);
            let a = s.disconnect(1);
            assert_eq!(a, vec![Action::Fail { task: 1, code: ERR_RESET }, Action::Drop { task: 1 }]);
            s.connect(2);
            s.submit(2);
            s.cancel(2, ERR_CANCELED);
            assert_eq!(s.disconnect(2), vec![Action::Drop { task: 2 }]);
            assert_eq!(s.tracked_tasks(), 0);
        }
    }

    #[test]
    fn a_lost_daemon_requeues_a_task_with_retries_left_first_in_line() {
        for dispatcher in [true, false] {
            let mut s = Sched::new(dispatcher);
            s.connect(1);
            assert_eq!(sends(&s.submit_retrying(1, 10, 1)), vec![(1, 1)]);
            s.submit(2);
            // Lost once: back to the front of the queue, nothing failed.
            let a = s.disconnect(1);
            assert!(!a.iter().any(|x| matches!(x, Action::Fail { .. } | Action::Drop { .. })), "{a:?}");
            assert_eq!(s.counters().retried, 1);
            assert_eq!(s.counters().queued_bytes, 10);
            assert_eq!(sends(&s.connect(2))[0], (2, 1));
            // Lost again with no retry left: it fails as any other.
            let a = s.disconnect(2);
            assert!(a.contains(&Action::Fail { task: 1, code: ERR_RESET }));
            assert!(a.contains(&Action::Drop { task: 1 }));
            assert_eq!(s.counters().retried, 1);
            // A timed-out task is not retried, whatever its retries.
            s.connect(3);
            s.reply(3, 2, false);
            s.unwritten(3, 0);
            assert_eq!(sends(&s.submit_retrying(3, 0, 5)), vec![(3, 3)]);
            s.cancel(3, ERR_TIMEOUT);
            let a = s.disconnect(3);
            assert_eq!(a, vec![Action::Drop { task: 3 }]);
            assert_eq!(s.counters().retried, 1);
            assert_eq!(s.tracked_tasks(), 0);
        }
    }

    // Found by tests/sched_props.rs: queued tasks failed by fail_all were
    // never dropped.
    #[test]
    fn cancel_many_is_sequential_cancel_in_one_pass_over_the_queue() {
        // Same actions and answers as one cancel after another: a running
        // task is withdrawn and interrupted, queued ones dropped, unknown
        // and resolved ones not found.
        let build = || {
            let mut s = Sched::new(true);
            s.connect(1);
            for t in 1..=5 {
                s.submit_retrying(t, 10, 2);
            }
            s.cancel(5, ERR_TIMEOUT);
            s
        };
        let ids = [1, 3, 5, 9, 4];
        let mut a = build();
        let (found, acts) = a.cancel_many(&ids, ERR_CANCELED);
        let mut b = build();
        let mut want = (Vec::new(), Vec::new());
        for id in ids {
            let (f, x) = b.cancel(id, ERR_CANCELED);
            want.0.push(f);
            want.1.extend(x);
        }
        assert_eq!((found, acts), want);
        assert_eq!(found_awaiting(&a), 1);
        assert_eq!(a.counters().queued_bytes, 10);
        // The one left (2) still goes next; a cancelled task is never
        // requeued by the loss of its daemon, whatever its retries.
        let acts = a.disconnect(1);
        assert!(sends(&acts).is_empty());
        assert_eq!(a.counters().retried, 0);
        assert_eq!(sends(&a.connect(2)), vec![(2, 2)]);
        // Scale: 200,000 queued tasks cancelled at once, in well under
        // the time one retain per task would take (minutes).
        let mut s = Sched::new(true);
        let n = 200_000u64;
        for t in 1..=n {
            s.submit_retrying(t, 1, 1);
        }
        let ids: Vec<TaskId> = (1..=n).collect();
        let t0 = std::time::Instant::now();
        let (found, _) = s.cancel_many(&ids, ERR_CANCELED);
        assert!(found.iter().all(|&f| f));
        assert_eq!(s.tracked_tasks(), 0);
        assert!(t0.elapsed() < std::time::Duration::from_secs(5), "took {:?}", t0.elapsed());
    }

    fn found_awaiting(s: &Sched) -> u64 {
        s.counters().awaiting
    }

    #[test]
    fn fail_all_drops_queued_tasks() {
        let mut s = Sched::new(true);
        s.submit(1);
        let a = s.fail_all(ERR_RESET);
        assert_eq!(a, vec![Action::Fail { task: 1, code: ERR_RESET }, Action::Drop { task: 1 }]);
        assert_eq!(s.tracked_tasks(), 0);
    }

    #[test]
    fn queued_bytes_count_only_waiting_tasks() {
        let mut s = Sched::new(true);
        let bytes = |s: &Sched| (s.counters().queued_bytes, s.counters().peak_bytes);
        // Nothing to send to: both wait.
        s.submit_sized(1, 100);
        s.submit_sized(2, 50);
        assert_eq!(bytes(&s), (150, 150));
        // A daemon takes the head of the queue.
        s.connect(9);
        assert_eq!(bytes(&s), (50, 150));
        s.submit_sized(3, 30);
        assert_eq!(bytes(&s), (80, 150));
        // Withdrawing a queued task frees its bytes; cancelling the running
        // one changes nothing (it was not counted).
        s.cancel(2, ERR_CANCELED);
        s.cancel(1, ERR_CANCELED);
        assert_eq!(bytes(&s), (30, 150));
        s.submit_sized(4, 500);
        assert_eq!(bytes(&s), (530, 530));
        s.fail_all(ERR_RESET);
        assert_eq!(bytes(&s), (0, 530));
        // A task sent at once never waited, so it leaves no peak.
        let mut s = Sched::new(true);
        s.connect(1);
        s.submit_sized(1, 1000);
        assert_eq!(bytes(&s), (0, 0));
        // The daemon is lost: its running task fails, nothing is requeued.
        s.submit_sized(2, 7);
        s.disconnect(1);
        assert_eq!(bytes(&s), (7, 7));
        s.connect(2);
        assert_eq!(bytes(&s), (0, 7));
    }

    #[test]
    fn tasks_for_next_daemons_go_one_each_to_new_daemons_first() {
        let mut s = Sched::new(true);
        s.connect(1);
        assert_eq!(sends(&s.submit(1)), vec![(1, 1)]);
        s.submit(2);
        assert!(s.submit_to_next(10).is_empty());
        assert!(s.submit_to_next(11).is_empty());
        assert_eq!(s.counters().awaiting, 3);
        // Daemon 1 is not new: it takes the queue, not the pinned ones.
        assert_eq!(sends(&s.reply(1, 1, false)), vec![(1, 2)]);
        assert_eq!(sends(&s.connect(2)), vec![(2, 10)]);
        assert_eq!(sends(&s.connect(3)), vec![(3, 11)]);
        assert_eq!(s.counters().awaiting, 0);
        // Once pinned, a task fails with its daemon rather than moving on.
        let a = s.disconnect(3);
        assert!(a.contains(&Action::Fail { task: 11, code: ERR_RESET }));
        // One still waiting can be cancelled, or fails on shutdown.
        s.submit_to_next(12);
        s.submit_to_next(13);
        assert!(s.cancel(12, ERR_CANCELED).0);
        let a = s.fail_all(ERR_RESET);
        assert!(a.contains(&Action::Fail { task: 13, code: ERR_RESET }));
        assert!(a.contains(&Action::Drop { task: 13 }));
    }

    #[test]
    fn pinned_task_waits_for_its_daemon_and_jumps_the_queue() {
        let mut s = Sched::new(true);
        s.connect(1);
        assert_eq!(sends(&s.submit(1)), vec![(1, 1)]);
        s.connect(2);
        assert_eq!(sends(&s.submit(2)), vec![(2, 2)]);
        s.submit(3);
        assert_eq!(s.daemon_ids(), vec![1, 2]);
        // Both busy: the pinned tasks wait, counted as awaiting.
        assert!(s.submit_to(10, 1).is_empty());
        assert!(s.submit_to(11, 2).is_empty());
        assert_eq!(s.counters().awaiting, 3);
        // Task 3 has waited longer, but daemon 1 runs its pin first.
        assert_eq!(sends(&s.reply(1, 1, false)), vec![(1, 10)]);
        assert_eq!(sends(&s.reply(1, 10, false)), vec![(1, 3)]);
        assert_eq!(sends(&s.reply(2, 2, false)), vec![(2, 11)]);
        assert_eq!(s.counters().awaiting, 0);
    }

    #[test]
    fn daemon_of_names_where_a_task_runs_until_it_resolves() {
        let mut s = Sched::new(true);
        s.connect(1);
        assert_eq!(sends(&s.submit(5)), vec![(1, 5)]);
        assert!(sends(&s.submit(6)).is_empty());
        assert_eq!(s.daemon_of(5), Some(1));
        // Queued: on no daemon yet.
        assert_eq!(s.daemon_of(6), None);
        assert_eq!(sends(&s.reply(1, 5, false)), vec![(1, 6)]);
        assert_eq!(s.daemon_of(5), None);
        assert_eq!(s.daemon_of(6), Some(1));
        s.disconnect(1);
        assert_eq!(s.daemon_of(6), None);
    }

    #[test]
    fn pinned_task_on_an_idle_daemon_goes_at_once() {
        let mut s = Sched::new(true);
        s.connect(1);
        s.connect(2);
        assert_eq!(sends(&s.submit_to(5, 2)), vec![(2, 5)]);
        assert_eq!(s.idle_count(), 1);
        // The FIFO queue now only has daemon 1.
        assert_eq!(sends(&s.submit(6)), vec![(1, 6)]);
        assert!(sends(&s.submit(7)).is_empty());
    }

    #[test]
    fn pinned_task_of_a_lost_daemon_fails_and_never_runs_elsewhere() {
        for dispatcher in [true, false] {
            let mut s = Sched::new(dispatcher);
            s.connect(1);
            s.connect(2);
            s.submit_to(1, 1);
            s.submit_to(2, 1);
            let a = s.disconnect(1);
            assert!(a.contains(&Action::Fail { task: 1, code: ERR_RESET }));
            assert!(a.contains(&Action::Fail { task: 2, code: ERR_RESET }));
            assert!(a.contains(&Action::Drop { task: 2 }));
            assert!(sends(&a).is_empty(), "dispatcher={dispatcher}: {a:?}");
            assert_eq!(s.tracked_tasks(), 0);
            assert_eq!(s.counters().awaiting, 0);
            // A daemon that is already gone fails the task straight away.
            let a = s.submit_to(3, 1);
            assert_eq!(a, vec![Action::Fail { task: 3, code: ERR_RESET }, Action::Drop { task: 3 }]);
        }
    }

    #[test]
    fn round_robin_pinned_tasks_queue_at_their_daemon() {
        let mut s = Sched::new(false);
        s.connect(1);
        assert_eq!(sends(&s.submit(1)), vec![(1, 1)]);
        s.connect(2);
        assert_eq!(sends(&s.submit_to(2, 2)), vec![(2, 2)]);
        assert_eq!(sends(&s.submit_to(3, 1)), vec![(1, 3)]);
        s.submit(4);
        // Daemon 1 retires after task 1: task 4 (queued behind it, if the
        // ring put it there) is requeued, the pinned task 3 fails instead.
        let a = s.reply(1, 1, true);
        assert!(a.contains(&Action::Fail { task: 3, code: ERR_RESET }));
        assert!(!sends(&a).iter().any(|&(_, t)| t == 3));
    }

    #[test]
    fn cancelling_a_waiting_pinned_task_withdraws_it() {
        let mut s = Sched::new(true);
        s.connect(1);
        s.submit(1);
        s.submit_to(2, 1);
        let (found, a) = s.cancel(2, ERR_CANCELED);
        assert!(found);
        assert_eq!(a, vec![Action::Fail { task: 2, code: ERR_CANCELED }, Action::Drop { task: 2 }]);
        assert_eq!(s.counters().awaiting, 0);
        let a = s.reply(1, 1, false);
        assert!(sends(&a).is_empty());
        assert_eq!(s.idle_count(), 1);
    }

    #[test]
    fn fail_all_drops_waiting_pinned_tasks() {
        let mut s = Sched::new(true);
        s.connect(1);
        s.submit(1);
        s.submit_to(2, 1);
        s.fail_all(ERR_RESET);
        assert_eq!(s.counters().awaiting, 0);
        let a = s.reply(1, 1, false);
        assert!(sends(&a).is_empty());
        assert_eq!(s.tracked_tasks(), 0);
    }

    #[test]
    fn idle_set_is_consistent() {
        let mut i = IdleSet::default();
        for d in 0..10 {
            i.insert(d);
        }
        i.remove(3);
        i.remove(9);
        i.insert(3);
        let mut all: Vec<_> = std::iter::from_fn(|| i.pop()).collect();
        all.sort();
        assert_eq!(all, vec![0, 1, 2, 3, 4, 5, 6, 7, 8]);
    }
}
