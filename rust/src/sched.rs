//! Scheduling as a pure state machine: events in, actions out, no I/O.
//!
//! Two policies share it. With a dispatcher, tasks wait in one FIFO queue and
//! each goes to an idle daemon, one task in flight per daemon. Without one,
//! each task goes straight to the next daemon in a round-robin ring and may
//! queue behind that daemon's current task.
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

use std::collections::{HashMap, VecDeque};

pub type TaskId = u64;
pub type DaemonId = u64;

pub const ERR_TIMEOUT: i32 = 5;
pub const ERR_RESET: i32 = 19;
pub const ERR_CANCELED: i32 = 20;

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
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    pub connections: u64,
    pub cumulative: u64,
    pub awaiting: u64,
    pub executing: u64,
    pub completed: u64,
    /// Bytes of the tasks waiting in the queue, and their high-water mark.
    pub queued_bytes: u64,
    pub peak_bytes: u64,
}

#[derive(Debug)]
struct Task {
    daemon: Option<DaemonId>,
    pin: Option<DaemonId>,
    resolved: bool,
    bytes: u64,
}

#[derive(Debug, Default)]
struct Daemon {
    inflight: VecDeque<TaskId>,
    /// Pinned tasks waiting for this daemon to be idle (dispatcher only).
    pinned: VecDeque<TaskId>,
}

/// Set with O(1) insert, remove and pick.
#[derive(Debug, Default)]
struct IdleSet {
    items: Vec<DaemonId>,
    pos: HashMap<DaemonId, usize>,
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
    tasks: HashMap<TaskId, Task>,
    daemons: HashMap<DaemonId, Daemon>,
    idle: IdleSet,
    ring: VecDeque<DaemonId>,
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
            tasks: HashMap::new(),
            daemons: HashMap::new(),
            idle: IdleSet::default(),
            ring: VecDeque::new(),
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
        self.tasks.insert(task, Task { daemon: None, pin: None, resolved: false, bytes });
        self.queue.push_back(task);
        self.queued_bytes += bytes;
        let mut out = Vec::new();
        self.pump(&mut out);
        self.peak_bytes = self.peak_bytes.max(self.queued_bytes);
        out
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
        self.tasks.insert(task, Task { daemon: None, pin: Some(d), resolved: false, bytes: 0 });
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
        self.tasks.insert(task, Task { daemon: None, pin: None, resolved: false, bytes: 0 });
        self.for_next.push_back(task);
        Vec::new()
    }

    pub fn connect(&mut self, d: DaemonId) -> Vec<Action> {
        self.daemons.insert(d, Daemon::default());
        self.counters.cumulative += 1;
        // A new daemon is next in line: it has nothing queued yet.
        self.ring.push_front(d);
        let mut out = Vec::new();
        if let Some(task) = self.for_next.pop_front() {
            self.tasks.get_mut(&task).unwrap().pin = Some(d);
            self.start(task, d, &mut out);
        } else {
            self.idle.insert(d);
        }
        self.pump(&mut out);
        out
    }

    /// The daemon's connection is gone. Its running task fails with
    /// "connection reset"; tasks queued behind it never started, so they go
    /// back to the front of the queue.
    pub fn disconnect(&mut self, d: DaemonId) -> Vec<Action> {
        let mut out = Vec::new();
        if let Some(dm) = self.remove_daemon(d) {
            let mut it = dm.inflight.into_iter();
            if let Some(running) = it.next() {
                self.fail(running, ERR_RESET, &mut out);
                // No reply will ever come to drop it, so drop it now or its
                // payload stays in the host for the life of the profile.
                if self.tasks.remove(&running).is_some() {
                    out.push(Action::Drop { task: running });
                }
            }
            self.requeue(it, &mut out);
            self.orphan_pinned(dm.pinned, &mut out);
        }
        self.pump(&mut out);
        out
    }

    /// A reply for `task` arrived from `d`.
    pub fn reply(&mut self, d: DaemonId, task: TaskId, last: bool) -> Vec<Action> {
        let mut out = Vec::new();
        let known = self.daemons.get_mut(&d).map(|dm| {
            if let Some(i) = dm.inflight.iter().position(|&t| t == task) {
                dm.inflight.remove(i);
                self.executing -= 1;
                true
            } else {
                false
            }
        });
        if known == Some(true) {
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

    /// User cancellation. Returns whether the task was found unresolved.
    pub fn cancel(&mut self, task: TaskId, code: i32) -> (bool, Vec<Action>) {
        let mut out = Vec::new();
        let Some(t) = self.tasks.get(&task) else { return (false, out) };
        if t.resolved {
            return (false, out);
        }
        match t.daemon {
            None => {
                match t.pin {
                    Some(p) => {
                        if let Some(dm) = self.daemons.get_mut(&p) {
                            let before = dm.pinned.len();
                            dm.pinned.retain(|&q| q != task);
                            self.pinned_waiting -= before - dm.pinned.len();
                        }
                    }
                    None => {
                        self.queue.retain(|&q| q != task);
                        self.for_next.retain(|&q| q != task);
                        self.queued_bytes -= t.bytes;
                    }
                }
                self.fail(task, code, &mut out);
                self.tasks.remove(&task);
                out.push(Action::Drop { task });
            }
            Some(d) => {
                self.fail(task, code, &mut out);
                if self.dispatcher {
                    out.push(Action::Interrupt { daemon: d, task });
                }
            }
        }
        (true, out)
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
            }
        }
    }

    fn remove_daemon(&mut self, d: DaemonId) -> Option<Daemon> {
        let dm = self.daemons.remove(&d)?;
        self.idle.remove(d);
        self.ring.retain(|&x| x != d);
        self.pinned_waiting -= dm.pinned.len();
        self.executing -= dm.inflight.len();
        Some(dm)
    }

    /// Writes `task` to daemon `d` (which the caller has taken out of the
    /// idle set, if it was there).
    fn start(&mut self, task: TaskId, d: DaemonId, out: &mut Vec<Action>) {
        self.tasks.get_mut(&task).unwrap().daemon = Some(d);
        self.daemons.get_mut(&d).unwrap().inflight.push_back(task);
        self.executing += 1;
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

    fn requeue(&mut self, tasks: impl DoubleEndedIterator<Item = TaskId>, out: &mut Vec<Action>) {
        for t in tasks.rev() {
            match self.tasks.get_mut(&t) {
                Some(ts) if !ts.resolved && ts.pin.is_some() => {
                    self.fail(t, ERR_RESET, out);
                    self.tasks.remove(&t);
                    out.push(Action::Drop { task: t });
                }
                Some(ts) if !ts.resolved => {
                    ts.daemon = None;
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
                match self.ring.pop_front() {
                    Some(d) => {
                        self.ring.push_back(d);
                        d
                    }
                    None => return,
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

    fn sends(a: &[Action]) -> Vec<(DaemonId, TaskId)> {
        a.iter()
            .filter_map(|x| match x {
                Action::Send { daemon, task } => Some((*daemon, *task)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn round_robin_spreads_and_queues_behind_busy_daemons() {
        let mut s = Sched::new(false);
        assert!(s.submit(1).is_empty());
        assert_eq!(sends(&s.connect(10)), vec![(10, 1)]);
        s.connect(11);
        assert_eq!(sends(&s.submit(2)), vec![(11, 2)]);
        assert_eq!(sends(&s.submit(3)), vec![(10, 3)]);
        assert_eq!(s.counters().executing, 3);
        let a = s.reply(10, 1, false);
        assert!(a.contains(&Action::Deliver { task: 1 }));
        assert_eq!(s.counters().completed, 1);
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

    // Found by tests/sched_props.rs: queued tasks failed by fail_all were
    // never dropped.
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
