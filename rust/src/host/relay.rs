//! Conditions relayed from running tasks (`Msg::Relay`, `daemons(relay =
//! TRUE)`): a profile's bounded inbox, filled by its event-loop thread and
//! emptied by R's main thread, and the process-wide list of inboxes that
//! hold something for R.
//!
//! Bounds: an inbox holds at most `MAX_ITEMS` conditions and `MAX_BYTES`
//! of them at once; what arrives beyond that (or larger than
//! `proto::RELAY_LIMIT`, or for a task the profile does not have) is
//! dropped and counted, per task for the notice R shows and in all for
//! `status()`. A task flooding the host thus costs it at most those bytes,
//! and the event loop's work per relay is a push: other tasks' replies are
//! read between a flood's frames as before.
//!
//! Waking R: the first item into an empty inbox puts the inbox on the
//! `READY` list and, when a notifier is set (later's event loop, see
//! `r::layer::later::relay_notifier`), schedules one drain; waits in R check
//! `any_ready()` between slices, and the event loop pokes the slot of the
//! task that relayed so that a wait on that very task wakes at once.
//! Conditions for a cluster node's `master` (`held`) are kept per task
//! instead, for the node to hand out in order before the task's value;
//! only through the task's handle, so once R lets that go (`abandon`) its
//! task holds nothing more.
//!
//! A reset (`close`) empties the inbox for good: task ids are numbered per
//! profile, so nothing of a reset profile may be shown once a new profile
//! of the same name may have tasks of the same ids.

use crate::host::aio::Slot;
use crate::sys::threads::lock;
use crate::wire::proto::RELAY_LIMIT;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// The most conditions an inbox holds at once.
pub const MAX_ITEMS: usize = 10_000;
/// The most payload bytes an inbox holds at once.
pub const MAX_BYTES: usize = 8 * 1024 * 1024;
/// The most tasks whose drops are counted one by one (the total is always
/// counted).
const MAX_DROP_NOTES: usize = 1024;

/// One relayed condition: its task, its number among the task's relays,
/// and its R serialization.
pub struct Relayed {
    pub id: u64,
    pub seq: u64,
    pub payload: Vec<u8>,
}

#[derive(Default)]
struct State {
    shown: VecDeque<Relayed>,
    held: HashMap<u64, VecDeque<Relayed>>,
    items: usize,
    bytes: usize,
    /// Drops per task since R last took them.
    drops: HashMap<u64, u64>,
    /// On the `READY` list.
    listed: bool,
}

pub struct Inbox {
    state: Mutex<State>,
    /// Set by `daemons(relay = TRUE)`; relays to a profile without it are
    /// dropped (its daemons do not send any).
    enabled: AtomicBool,
    /// The profile was reset: a new one of the same name numbers its tasks
    /// afresh, so this one's task ids name none of them.
    closed: AtomicBool,
    /// Every condition dropped so far.
    pub dropped: AtomicU64,
    /// The compute profile's name, for tags.
    name: OnceLock<String>,
}

impl Default for Inbox {
    fn default() -> Self {
        Inbox {
            state: Mutex::default(),
            enabled: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            dropped: AtomicU64::new(0),
            name: OnceLock::new(),
        }
    }
}

/// What R takes from an inbox in one go.
pub struct Taken {
    pub shown: Vec<Relayed>,
    /// (task, conditions dropped), in task order.
    pub drops: Vec<(u64, u64)>,
}

static READY: Mutex<Vec<Arc<Inbox>>> = Mutex::new(Vec::new());
static ANY_READY: AtomicBool = AtomicBool::new(false);
/// A drain is scheduled through the notifier and has not started.
static ARMED: AtomicBool = AtomicBool::new(false);
type Notifier = Box<dyn Fn() + Send + Sync>;
static NOTIFIER: OnceLock<Notifier> = OnceLock::new();

/// Whether any inbox holds conditions for R (a cheap check for waits).
pub fn any_ready() -> bool {
    ANY_READY.load(Ordering::Acquire)
}

/// Sets, once per process, how to have R's main thread drain when it is
/// not waiting (later's loop); `Err` if one is set already.
pub fn set_notifier(f: Notifier) -> Result<(), Notifier> {
    NOTIFIER.set(f)
}

/// Called at the start of a notifier's drain: a relay from now on
/// schedules another.
pub fn disarm() {
    ARMED.store(false, Ordering::Release);
}

/// The inboxes holding conditions for R, each once; the list is emptied.
pub fn take_ready() -> Vec<Arc<Inbox>> {
    ANY_READY.store(false, Ordering::Release);
    std::mem::take(&mut *lock(&READY))
}

impl Inbox {
    pub fn enable(&self, name: &str) {
        let _ = self.name.set(name.to_string());
        self.enabled.store(true, Ordering::Release);
    }

    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Acquire)
    }

    /// The profile is reset: what is kept goes, and nothing more is. A new
    /// profile of the same name numbers its tasks afresh, so a condition
    /// of this one's task, shown later, would be taken for that of the new
    /// one's task of the same id (its `on_relay()` handler, its map's
    /// progress). The flag is set before the lock is taken: an `offer`
    /// holding the lock now is cleared away, a later one sees the flag.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        let mut st = lock(&self.state);
        st.shown.clear();
        st.held.clear();
        st.drops.clear();
        st.items = 0;
        st.bytes = 0;
    }

    pub fn closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    pub fn name(&self) -> &str {
        self.name.get().map_or("default", String::as_str)
    }

    fn drop_one(st: &mut State, dropped: &AtomicU64, id: u64) {
        dropped.fetch_add(1, Ordering::Relaxed);
        if st.drops.len() < MAX_DROP_NOTES || st.drops.contains_key(&id) {
            *st.drops.entry(id).or_default() += 1;
        }
    }

    /// Takes a relay from the event loop (`task`: the slot of task `id`,
    /// if the profile has it). True if it was kept for R.
    pub fn offer(self: &Arc<Self>, id: u64, seq: u64, held: bool, payload: &[u8], task: Option<&Slot>) -> bool {
        let known = task.is_some();
        let mut st = lock(&self.state);
        let fits = payload.len() <= RELAY_LIMIT
            && st.items < MAX_ITEMS
            && st.bytes + payload.len() <= MAX_BYTES;
        if self.closed() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        if task.is_some_and(Slot::is_done) {
            // Resolved on the host (timed out, cancelled) while it still
            // runs until the cancel lands: what it relays now would come
            // after its value, out of order, past its `on_relay()` handler.
            // Counted, not noted per task (its value is given already).
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        if held && task.is_some_and(Slot::abandoned) {
            // Not a drop: nobody wants it (as `abandon` forgets, uncounted).
            return false;
        }
        if !(known && self.enabled() && fits) {
            // Drops of an unknown task's relays are not noted per task: a
            // peer could name any number of them.
            if known {
                Self::drop_one(&mut st, &self.dropped, id);
                let first = !std::mem::replace(&mut st.listed, true);
                drop(st);
                if first {
                    self.list();
                }
            } else {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
            return false;
        }
        st.items += 1;
        st.bytes += payload.len();
        let item = Relayed { id, seq, payload: payload.to_vec() };
        if held {
            st.held.entry(id).or_default().push_back(item);
        } else {
            st.shown.push_back(item);
            let first = !std::mem::replace(&mut st.listed, true);
            drop(st);
            if first {
                self.list();
            }
        }
        true
    }

    /// Puts this inbox on the ready list and wakes R, once per time it
    /// was emptied (`State::listed`, set by the caller). Outside the
    /// inbox's lock: the notifier takes later's, which R's thread may hold
    /// while it drains.
    fn list(self: &Arc<Self>) {
        lock(&READY).push(self.clone());
        ANY_READY.store(true, Ordering::Release);
        if let Some(notify) = NOTIFIER.get() {
            if !ARMED.swap(true, Ordering::AcqRel) {
                notify();
            }
        }
    }

    /// Puts an inbox taken off the ready list (`take_ready`) but not
    /// emptied back on it, and wakes R for it.
    pub fn relist(self: &Arc<Self>) {
        self.list();
    }

    /// Everything for R to show, and the drops to tell of.
    pub fn take(&self) -> Taken {
        let mut st = lock(&self.state);
        st.listed = false;
        let shown: Vec<Relayed> = st.shown.drain(..).collect();
        st.items -= shown.len();
        st.bytes -= shown.iter().map(|r| r.payload.len()).sum::<usize>();
        let mut drops: Vec<(u64, u64)> = st.drops.drain().collect();
        drops.sort_unstable();
        Taken { shown, drops }
    }

    /// Whether nothing waits here for R to show (what a drain under way
    /// has taken, it shows).
    pub fn idle(&self) -> bool {
        let st = lock(&self.state);
        st.shown.is_empty() && st.drops.is_empty()
    }

    /// The conditions held for task `id` (a node's), in order.
    pub fn take_held(&self, id: u64) -> Vec<Relayed> {
        let mut st = lock(&self.state);
        let Some(q) = st.held.remove(&id) else { return Vec::new() };
        st.items -= q.len();
        st.bytes -= q.iter().map(|r| r.payload.len()).sum::<usize>();
        q.into()
    }

    /// Whether conditions are held for task `id`.
    pub fn has_held(&self, id: u64) -> bool {
        lock(&self.state).held.get(&id).is_some_and(|q| !q.is_empty())
    }

    /// R let go of the handle of task `id`, whose `slot` it was: what is
    /// held for it goes, and, while it runs, what it would hold is not kept
    /// (held conditions are only taken through the handle). Under the lock,
    /// as `offer` checks: a condition is either kept before, and goes here,
    /// or finds the task abandoned.
    pub fn abandon(&self, id: u64, slot: &Slot) {
        let mut st = lock(&self.state);
        slot.abandon();
        if let Some(q) = st.held.remove(&id) {
            st.items -= q.len();
            st.bytes -= q.iter().map(|r| r.payload.len()).sum::<usize>();
        }
    }

    /// Forgets what is held for tasks no longer wanted (a node's tasks
    /// dropped by an interrupted wait).
    pub fn forget_held(&self, ids: &[u64]) {
        let mut st = lock(&self.state);
        for id in ids {
            if let Some(q) = st.held.remove(id) {
                st.items -= q.len();
                st.bytes -= q.iter().map(|r| r.payload.len()).sum::<usize>();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::aio::Doorbell;

    fn slot() -> Arc<Slot> {
        Slot::new(Arc::new(Doorbell::default()))
    }

    #[test]
    fn a_flood_is_bounded_and_its_drops_are_counted_per_task() {
        let inbox = Arc::new(Inbox::default());
        let t = slot();
        inbox.enable("p");
        let big = vec![0u8; 1024];
        let mut kept = 0;
        for seq in 1..=20_000u64 {
            kept += inbox.offer(1, seq, false, &big, Some(&t)) as usize;
        }
        assert!(kept <= MAX_ITEMS && kept * 1024 <= MAX_BYTES, "{kept}");
        assert_eq!(inbox.dropped.load(Ordering::Relaxed), 20_000 - kept as u64);
        // Too large, unknown task: dropped.
        assert!(!inbox.offer(2, 1, false, &vec![0u8; RELAY_LIMIT + 1], Some(&t)));
        assert!(!inbox.offer(99, 1, false, b"x", None));
        let taken = inbox.take();
        assert_eq!(taken.shown.len(), kept);
        assert!(taken.shown.windows(2).all(|w| w[1].seq == w[0].seq + 1));
        assert_eq!(taken.drops, vec![(1, 20_000 - kept as u64), (2, 1)]);
        // Room again once taken.
        assert!(inbox.offer(1, 20_001, false, b"x", Some(&t)));
    }

    #[test]
    fn a_closed_inbox_keeps_nothing_it_held_and_takes_nothing_more() {
        let inbox = Arc::new(Inbox::default());
        let t = slot();
        inbox.enable("p");
        assert!(inbox.offer(1, 1, false, b"shown", Some(&t)));
        assert!(inbox.offer(2, 1, true, b"held", Some(&t)));
        assert!(!inbox.offer(3, 1, false, &vec![0u8; RELAY_LIMIT + 1], Some(&t)));
        inbox.close();
        assert!(!inbox.offer(1, 2, false, b"late", Some(&t)));
        assert!(!inbox.offer(2, 2, true, b"late", Some(&t)));
        let t = inbox.take();
        assert!(t.shown.is_empty() && t.drops.is_empty());
        assert!(inbox.idle() && !inbox.has_held(2));
        let st = lock(&inbox.state);
        assert_eq!((st.items, st.bytes), (0, 0));
    }

    #[test]
    fn an_abandoned_task_holds_nothing_more() {
        let inbox = Arc::new(Inbox::default());
        let t = slot();
        inbox.enable("p");
        let (running, other) = (t, slot());
        assert!(inbox.offer(1, 1, true, b"before", Some(&running)));
        inbox.abandon(1, &running);
        assert!(!inbox.has_held(1));
        assert!(!inbox.offer(1, 2, true, b"after", Some(&running)));
        assert!(!inbox.has_held(1));
        // Not counted as dropped; its shown conditions, and other tasks'
        // held ones, are not affected.
        assert_eq!(inbox.dropped.load(Ordering::Relaxed), 0);
        assert!(inbox.offer(1, 3, false, b"shown", Some(&running)));
        assert!(inbox.offer(2, 1, true, b"other", Some(&other)));
        let st = lock(&inbox.state);
        assert_eq!((st.items, st.bytes), (2, 10));
    }

    #[test]
    fn a_task_resolved_on_the_host_relays_nothing_more() {
        // Timed out or cancelled: it runs on until the cancel lands.
        let inbox = Arc::new(Inbox::default());
        let t = slot();
        inbox.enable("p");
        assert!(inbox.offer(1, 1, false, b"before", Some(&t)));
        t.complete(crate::host::aio::Outcome::Error(5));
        assert!(!inbox.offer(1, 2, false, b"after", Some(&t)));
        assert!(!inbox.offer(1, 3, true, b"held after", Some(&t)));
        assert_eq!(inbox.dropped.load(Ordering::Relaxed), 2);
        let st = lock(&inbox.state);
        assert_eq!((st.items, st.bytes), (1, 6));
    }

    #[test]
    fn relays_to_a_profile_without_relay_are_dropped() {
        let inbox = Arc::new(Inbox::default());
        let t = slot();
        assert!(!inbox.offer(1, 1, false, b"x", Some(&t)));
        assert_eq!(inbox.dropped.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn held_conditions_stay_with_their_task() {
        let inbox = Arc::new(Inbox::default());
        let t = slot();
        inbox.enable("p");
        assert!(inbox.offer(5, 1, true, b"a", Some(&t)));
        assert!(inbox.offer(6, 1, true, b"b", Some(&t)));
        assert!(inbox.offer(5, 2, true, b"c", Some(&t)));
        assert!(inbox.has_held(5));
        let got: Vec<Vec<u8>> = inbox.take_held(5).into_iter().map(|r| r.payload).collect();
        assert_eq!(got, [b"a".to_vec(), b"c".to_vec()]);
        assert!(!inbox.has_held(5));
        inbox.forget_held(&[6]);
        assert!(!inbox.has_held(6));
        let st = lock(&inbox.state);
        assert_eq!((st.items, st.bytes), (0, 0));
    }
}
