//! The completion slot behind every mirai.
//!
//! The host's I/O thread stores a reply's bytes here; R's main thread later
//! unserializes them. Completion is first-wins, so a reply racing a timeout
//! or a cancellation resolves the mirai exactly once.

use crate::threads::lock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

pub enum Outcome {
    /// A reply frame; the R-serialized value starts at `offset`.
    Value { body: Vec<u8>, offset: usize },
    /// An error value code (5 timed out, 19 connection reset, 20 canceled).
    Error(i32),
}

/// Profile-wide completion signal, for waits on "any of these".
#[derive(Default)]
pub struct Notifier {
    state: Mutex<NotifierState>,
    cv: Condvar,
}

#[derive(Default)]
struct NotifierState {
    count: u64,
    waiters: usize,
}

impl Notifier {
    pub fn bump(&self) {
        let waiters = {
            let mut g = lock(&self.state);
            g.count += 1;
            g.waiters
        };
        // Every reply completes a slot: wake (a syscall) only when someone
        // actually waits. Waiters register under the lock before sleeping,
        // so none is missed.
        if waiters > 0 {
            self.cv.notify_all();
        }
    }
    pub fn current(&self) -> u64 {
        lock(&self.state).count
    }
    /// Waits until the count moves past `seen` or `slice` passes.
    pub fn wait_past(&self, seen: u64, slice: Duration) -> u64 {
        let mut g = lock(&self.state);
        g.waiters += 1;
        let (mut g, _) = self.cv.wait_timeout_while(g, slice, |st| st.count == seen).unwrap_or_else(|e| e.into_inner());
        g.waiters -= 1;
        g.count
    }
}

pub struct Slot {
    done: AtomicBool,
    inner: Mutex<SlotState>,
    cv: Condvar,
    notifier: Arc<Notifier>,
}

#[derive(Default)]
struct SlotState {
    outcome: Option<Outcome>,
    waiters: usize,
}

impl Slot {
    pub fn new(notifier: Arc<Notifier>) -> Arc<Slot> {
        Arc::new(Slot { done: AtomicBool::new(false), inner: Mutex::default(), cv: Condvar::new(), notifier })
    }

    /// Stores the outcome unless one is already there. True if stored.
    pub fn complete(&self, o: Outcome) -> bool {
        let waiters = {
            let mut g = lock(&self.inner);
            if self.done.load(Ordering::Acquire) {
                return false;
            }
            g.outcome = Some(o);
            self.done.store(true, Ordering::Release);
            g.waiters
        };
        // As for the notifier: most results are collected by a spinning or
        // later reader, so the wake-up syscall is skipped unless needed.
        if waiters > 0 {
            self.cv.notify_all();
        }
        self.notifier.bump();
        true
    }

    pub fn is_done(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }

    /// Blocks up to `slice`; true once resolved.
    pub fn wait(&self, slice: Duration) -> bool {
        if self.is_done() {
            return true;
        }
        let mut g = lock(&self.inner);
        g.waiters += 1;
        let (mut g, _) = self.cv.wait_timeout_while(g, slice, |_| !self.done.load(Ordering::Acquire)).unwrap_or_else(|e| e.into_inner());
        g.waiters -= 1;
        self.is_done()
    }

    /// Takes the outcome out (R caches the converted value itself).
    pub fn take(&self) -> Option<Outcome> {
        if !self.is_done() {
            return None;
        }
        lock(&self.inner).outcome.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_completion_wins() {
        let s = Slot::new(Arc::default());
        assert!(!s.is_done());
        assert!(s.complete(Outcome::Error(5)));
        assert!(!s.complete(Outcome::Error(19)));
        assert!(matches!(s.take(), Some(Outcome::Error(5))));
    }

    #[test]
    fn wait_wakes_on_completion_from_another_thread() {
        let n: Arc<Notifier> = Arc::default();
        let s = Slot::new(n.clone());
        let s2 = s.clone();
        let seen = n.current();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            s2.complete(Outcome::Error(20));
        });
        let mut spins = 0;
        while !s.wait(Duration::from_millis(500)) {
            spins += 1;
        }
        assert!(spins < 2);
        assert!(n.wait_past(seen, Duration::from_millis(10)) > seen);
        t.join().unwrap();
    }
}
