//! The completion slot behind every mirai.
//!
//! The host's I/O thread stores a reply's bytes here; R's main thread later
//! unserializes them. Completion is first-wins, so a reply racing a timeout
//! or a cancellation resolves the mirai exactly once.
//!
//! A slot may also carry completion hooks (promises waiting on the mirai):
//! they run on whichever thread completes the slot, right after the
//! outcome is stored, outside the slot's lock.

use crate::sys::threads::lock;
use crossbeam_channel::{bounded, Receiver, Select, Sender};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

pub enum Outcome {
    /// A reply frame; the R-serialized value starts at `offset`.
    Value { body: Vec<u8>, offset: usize },
    /// An error value code (5 timed out, 19 connection reset, 20 canceled).
    Error(i32),
}

/// A profile's completion doorbell, for waits on "any of these" (possibly
/// across profiles). Every completion rings it; a ring while one is already
/// pending is dropped, so it never holds more than one. A waiter drains it,
/// looks at the slots, then blocks on it: a completion after the drain rings
/// again, so no wake-up is missed. A bounded channel is the tool: waiting on
/// several profiles is a `Select` over their doorbells, with no polling.
pub struct Doorbell {
    tx: Sender<()>,
    rx: Receiver<()>,
}

impl Default for Doorbell {
    fn default() -> Self {
        let (tx, rx) = bounded(1);
        Doorbell { tx, rx }
    }
}

impl Doorbell {
    pub fn ring(&self) {
        let _ = self.tx.try_send(());
    }

    fn drain(&self) {
        while self.rx.try_recv().is_ok() {}
    }
}

/// Waits up to `slice` for any of `slots` to resolve; the index of the
/// first resolved one. `bells`: the doorbells of the slots' profiles (each
/// once).
pub fn wait_any(slots: &[Arc<Slot>], bells: &[Arc<Doorbell>], slice: Duration) -> Option<usize> {
    bells.iter().for_each(|b| b.drain());
    if let Some(i) = slots.iter().position(|s| s.is_done()) {
        return Some(i);
    }
    let mut sel = Select::new();
    for b in bells {
        sel.recv(&b.rx);
    }
    // Readiness only: the next call drains.
    let _ = sel.ready_timeout(slice);
    slots.iter().position(|s| s.is_done())
}

pub struct Slot {
    done: AtomicBool,
    /// R let go of the task's handle (see `relay::Inbox::abandon`).
    abandoned: AtomicBool,
    inner: Mutex<SlotState>,
    cv: Condvar,
    bell: Arc<Doorbell>,
}

/// Run once, on the completing thread; it must not call R.
pub type Hook = Box<dyn FnOnce() + Send>;

/// Kept small: a slot is made for every task, queued ones included.
#[derive(Default)]
struct SlotState {
    stored: Stored,
    waiters: u32,
    /// A waiter is to wake without the slot being done (`poke`).
    poked: bool,
}

/// What a slot holds, one thing at a time: hooks before it completes, the
/// outcome after, until taken. In 24 bytes (an `Option<Outcome>` and the
/// hooks beside it took 40), so that the slot with its Arc's counts fits
/// glibc's 80-byte chunk rather than a 96-byte one: one per queued task.
#[allow(clippy::box_collection)]
enum Stored {
    /// Usually none; boxed, as most slots never have one (8 bytes here
    /// rather than a Vec's 24). Never replaced, as each may hold a resource
    /// (a preserved R object) only its running releases.
    Pending(Option<Box<Vec<Hook>>>),
    /// `Outcome::Value`, its body trimmed to its length (a realloc in
    /// place, or an mremap: never a copy) and its offset (an envelope's
    /// length) in 32 bits.
    Value(Box<[u8]>, u32),
    Error(i32),
    Taken,
}

impl Default for Stored {
    fn default() -> Self {
        Stored::Pending(None)
    }
}

impl Stored {
    fn from_outcome(o: Outcome) -> Stored {
        match o {
            Outcome::Error(c) => Stored::Error(c),
            Outcome::Value { mut body, offset } => {
                let offset = match u32::try_from(offset) {
                    Ok(k) => k,
                    // Never so (an offset is a header's length), but then
                    // the value itself is kept, not a wrong slice of it.
                    Err(_) => {
                        body.drain(..offset.min(body.len()));
                        0
                    }
                };
                Stored::Value(body.into_boxed_slice(), offset)
            }
        }
    }
}

impl Slot {
    pub fn new(bell: Arc<Doorbell>) -> Arc<Slot> {
        Arc::new(Slot {
            done: AtomicBool::new(false),
            abandoned: AtomicBool::new(false),
            inner: Mutex::default(),
            cv: Condvar::new(),
            bell,
        })
    }

    /// Stores the outcome unless one is already there. True if stored.
    pub fn complete(&self, o: Outcome) -> bool {
        let (waiters, hooks) = {
            let mut g = lock(&self.inner);
            if self.done.load(Ordering::Acquire) {
                return false;
            }
            let hooks = match std::mem::replace(&mut g.stored, Stored::from_outcome(o)) {
                Stored::Pending(h) => h,
                _ => None,
            };
            self.done.store(true, Ordering::Release);
            (g.waiters, hooks)
        };
        for h in hooks.into_iter().flat_map(|b| *b) {
            h();
        }
        // Most results are collected by a spinning or later reader, so the
        // wake-up syscall is skipped unless someone waits.
        if waiters > 0 {
            self.cv.notify_all();
        }
        self.bell.ring();
        true
    }

    /// Arranges for `hook` to run when the slot completes. Registration and
    /// completion take the same lock, so a hook registered at the very
    /// moment of completion either runs from `complete` or comes back here
    /// as `Err` (already resolved: the caller acts at once); it is never
    /// lost. Every hook registered runs, in order.
    pub fn on_complete(&self, hook: Hook) -> Result<(), Hook> {
        let mut g = lock(&self.inner);
        if self.done.load(Ordering::Acquire) {
            return Err(hook);
        }
        match &mut g.stored {
            Stored::Pending(h) => h.get_or_insert_with(Box::default).push(hook),
            // Not done, so still pending.
            _ => return Err(hook),
        }
        Ok(())
    }

    /// The doorbell this slot rings on completion (its profile's).
    pub fn bell(&self) -> &Arc<Doorbell> {
        &self.bell
    }

    pub fn is_done(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }

    pub fn abandon(&self) {
        self.abandoned.store(true, Ordering::Release);
    }

    pub fn abandoned(&self) -> bool {
        self.abandoned.load(Ordering::Acquire)
    }

    /// Blocks up to `slice`; true once resolved. A `poke` ends the wait
    /// early (false).
    pub fn wait(&self, slice: Duration) -> bool {
        if self.is_done() {
            return true;
        }
        let mut g = lock(&self.inner);
        g.waiters += 1;
        let (mut g, _) = self
            .cv
            .wait_timeout_while(g, slice, |st| !st.poked && !self.done.load(Ordering::Acquire))
            .unwrap_or_else(|e| e.into_inner());
        g.waiters -= 1;
        g.poked = false;
        self.is_done()
    }

    /// Wakes whoever waits on this slot without completing it: the task
    /// relayed a condition, which the waiter's R thread is to show now.
    pub fn poke(&self) {
        let mut g = lock(&self.inner);
        if g.waiters > 0 {
            g.poked = true;
            drop(g);
            self.cv.notify_all();
        }
    }

    /// Takes the outcome out (R caches the converted value itself).
    pub fn take(&self) -> Option<Outcome> {
        if !self.is_done() {
            return None;
        }
        let mut g = lock(&self.inner);
        match std::mem::replace(&mut g.stored, Stored::Taken) {
            Stored::Value(body, offset) => Some(Outcome::Value { body: body.into_vec(), offset: offset as usize }),
            Stored::Error(c) => Some(Outcome::Error(c)),
            other => {
                g.stored = other;
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_stays_small() {
        // With its Arc's counts, 72 bytes: glibc's 80-byte chunk, one per
        // task, queued ones included (it was 112, then 96).
        assert!(std::mem::size_of::<Slot>() <= 56, "{}", std::mem::size_of::<Slot>());
    }

    #[test]
    fn a_value_comes_back_whole_once() {
        let s = Slot::new(Arc::default());
        let mut body = Vec::with_capacity(100);
        body.extend_from_slice(b"headvalue");
        assert!(s.complete(Outcome::Value { body, offset: 4 }));
        match s.take() {
            Some(Outcome::Value { body, offset }) => assert_eq!(&body[offset..], b"value"),
            _ => panic!("the value was lost"),
        }
        assert!(s.take().is_none());
        assert!(s.is_done());
    }

    #[test]
    fn first_completion_wins() {
        let s = Slot::new(Arc::default());
        assert!(!s.is_done());
        assert!(s.complete(Outcome::Error(5)));
        assert!(!s.complete(Outcome::Error(19)));
        assert!(matches!(s.take(), Some(Outcome::Error(5))));
    }

    #[test]
    fn a_hook_runs_once_or_comes_back_never_lost() {
        use std::sync::atomic::AtomicUsize;
        // Registration racing completion, many times: each hook runs
        // exactly once, either from complete() or by its registrant.
        for _ in 0..2000 {
            let s = Slot::new(Arc::default());
            let ran = Arc::new(AtomicUsize::new(0));
            let s2 = s.clone();
            let t = std::thread::spawn(move || s2.complete(Outcome::Error(19)));
            let r = ran.clone();
            match s.on_complete(Box::new(move || {
                r.fetch_add(1, Ordering::SeqCst);
            })) {
                Ok(()) => {}
                Err(h) => h(),
            }
            t.join().unwrap();
            assert_eq!(ran.load(Ordering::SeqCst), 1);
        }
    }

    #[test]
    fn every_hook_registered_runs() {
        use std::sync::atomic::AtomicUsize;
        let s = Slot::new(Arc::default());
        let ran = Arc::new(AtomicUsize::new(0));
        for k in [1, 10] {
            let r = ran.clone();
            assert!(s
                .on_complete(Box::new(move || {
                    r.fetch_add(k, Ordering::SeqCst);
                }))
                .is_ok());
        }
        assert!(s.complete(Outcome::Error(19)));
        assert_eq!(ran.load(Ordering::SeqCst), 11);
    }

    #[test]
    fn wait_any_wakes_across_doorbells_without_polling() {
        let (a, b): (Arc<Doorbell>, Arc<Doorbell>) = (Arc::default(), Arc::default());
        let slots = [Slot::new(a.clone()), Slot::new(b.clone())];
        assert_eq!(wait_any(&slots, &[a.clone(), b.clone()], Duration::from_millis(5)), None);
        let s1 = slots[1].clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            s1.complete(Outcome::Error(20));
        });
        // One long slice: only the doorbell can end it this soon.
        let start = std::time::Instant::now();
        assert_eq!(wait_any(&slots, &[a, b], Duration::from_secs(20)), Some(1));
        assert!(start.elapsed() < Duration::from_secs(5));
        t.join().unwrap();
    }

    #[test]
    fn a_poke_ends_a_wait_without_completing() {
        let s = Slot::new(Arc::default());
        let s2 = s.clone();
        let t = std::thread::spawn(move || {
            for _ in 0..500 {
                std::thread::sleep(Duration::from_millis(10));
                s2.poke();
            }
        });
        let start = std::time::Instant::now();
        assert!(!s.wait(Duration::from_secs(20)));
        assert!(start.elapsed() < Duration::from_secs(5));
        assert!(!s.is_done());
        t.join().unwrap();
    }

    #[test]
    fn wait_wakes_on_completion_from_another_thread() {
        let n: Arc<Doorbell> = Arc::default();
        let s = Slot::new(n.clone());
        let s2 = s.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            s2.complete(Outcome::Error(20));
        });
        let mut spins = 0;
        while !s.wait(Duration::from_millis(500)) {
            spins += 1;
        }
        assert!(spins < 2);
        t.join().unwrap();
    }
}
