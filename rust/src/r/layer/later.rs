//! Settling promises from the thread that completes a mirai, through the
//! 'later' package's C entry point `execLaterNative2` (safe to call from any
//! thread, TOOLCHAIN.md).
//!
//! A promise waiting on a mirai registers its settle function (an R
//! closure, preserved) as the slot's completion hook. The hook runs on the
//! completing thread (the host's I/O thread for a reply, R's thread for a
//! cancel): it queues the closure on a channel and, unless a drain is
//! already scheduled, schedules one on later's global loop. The drain runs
//! on R's main thread, when later runs its callbacks, and calls every
//! queued closure: one later callback serves however many replies arrived
//! meanwhile, and nothing polls.

use super::call::{try_r, RError};
use super::ffi::*;
use super::global::MainThread;
use super::value::*;
use crate::host::aio::Slot;
use crossbeam_channel::{unbounded, Receiver, Sender};
use std::ffi::{c_int, c_void};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::LazyLock;

type ExecLater = unsafe extern "C" fn(Option<unsafe extern "C" fn(*mut c_void)>, *mut c_void, f64, c_int);

/// later's global loop, the one Shiny, plumber and promises run.
const GLOBAL_LOOP: c_int = 0;

static EXEC_LATER: MainThread<Option<ExecLater>> = MainThread::new(None);

/// A settle closure waiting for its mirai: its index in the registry.
/// Other threads only carry the number; R's main thread alone reads the
/// registry.
struct Settle(usize);

/// The settle closures of pending promises, kept reachable in one preserved
/// list (index-addressed, with a free list) rather than one
/// `R_PreserveObject` each: R keeps preserved objects in a linked list, so
/// releasing one costs a walk of all the others, and thousands of pending
/// promises made settling quadratic.
struct Registry {
    list: SEXP,
    free: Vec<usize>,
}

static REGISTRY: MainThread<Registry> = MainThread::new(Registry { list: std::ptr::null_mut(), free: Vec::new() });

/// Stores `f` in the registry; its index.
fn keep(f: SEXP) -> Result<usize, RError> {
    let (old, full) = REGISTRY.with(|reg| (reg.list, reg.free.is_empty()));
    if full {
        let old_len = if old.is_null() { 0 } else { len(old) };
        let (list, new_len) = grow_preserved(old, old_len)?;
        REGISTRY.with(|reg| {
            reg.list = list;
            reg.free.extend((old_len..new_len).rev());
        });
    }
    REGISTRY.with(|reg| {
        let i = reg.free.pop().ok_or("promise registry: no free slot")?;
        store(reg.list, i, f);
        Ok(i)
    })
}

/// Sets element `i` of the registry's list `list` (`i` < its length).
fn store(list: SEXP, i: usize, f: SEXP) {
    assert!(i < len(list), "promise registry index out of range");
    // SAFETY: the preserved registry list and an index in range; a store
    // allocates nothing.
    unsafe { SET_VECTOR_ELT(list, i as isize, f) };
}

/// Takes closure `i` out of the registry, rooted.
fn take(i: usize) -> Result<Owned, RError> {
    // Made before the closure leaves the registry: rooting it then
    // allocates nothing.
    reserve_root()?;
    Ok(REGISTRY.with(|reg| {
        let f = root_reserved(list_at(reg.list, i));
        store(reg.list, i, nil());
        reg.free.push(i);
        f
    }))
}

struct Queue {
    tx: Sender<Settle>,
    rx: Receiver<Settle>,
    /// A drain is scheduled and has not started yet.
    armed: AtomicBool,
}

static QUEUE: LazyLock<Queue> = LazyLock::new(|| {
    let (tx, rx) = unbounded();
    Queue { tx, rx, armed: AtomicBool::new(false) }
});

/// Looks later's entry point up (once, on R's main thread; the caller has
/// loaded later's namespace).
fn exec_later() -> Result<ExecLater, RError> {
    if let Some(f) = EXEC_LATER.get() {
        return Ok(f);
    }
    // The pointer is written to `p`, not returned: try_r's result must be
    // an R object (R's unwind protection stores it as one).
    let mut p: *const c_void = std::ptr::null();
    // SAFETY: the closure owns nothing with a destructor.
    unsafe {
        try_r(|r| {
            p = r.get_ccallable(c"later", c"execLaterNative2");
            nil()
        })
    }?;
    if p.is_null() {
        return Err("the 'later' package does not provide execLaterNative2: install later >= 1.0".into());
    }
    // SAFETY: later registers execLaterNative2 with exactly this signature
    // (later's inst/include/later.h).
    let f = unsafe { std::mem::transmute::<*const c_void, ExecLater>(p) };
    EXEC_LATER.set(Some(f));
    Ok(f)
}

/// Queues a settle closure from any thread, scheduling a drain if none is.
fn push(s: Settle, exec: ExecLater) {
    let q = &*QUEUE;
    // The receiver lives in the same static: sending cannot fail.
    let _ = q.tx.send(s);
    if !q.armed.swap(true, Ordering::AcqRel) {
        // SAFETY: later documents execLaterNative2 as callable from any
        // thread; `drain` takes no data.
        unsafe { exec(Some(drain), std::ptr::null_mut(), 0.0, GLOBAL_LOOP) };
    }
}

/// Runs on R's main thread, from later. Disarms first, so a settle queued
/// while this runs schedules a drain of its own (or is taken by this one):
/// none is left behind.
unsafe extern "C" fn drain(_: *mut c_void) {
    let q = &*QUEUE;
    q.armed.store(false, Ordering::Release);
    while let Ok(Settle(i)) = q.rx.try_recv() {
        let Ok(f) = take(i) else { continue };
        let f = f.sexp();
        // An error in the closure is R's to report; it must not unwind
        // through later's frames, nor stop the others from settling.
        // SAFETY: the closure owns nothing with a destructor.
        let _ = unsafe {
            try_r(|r| {
                r.eval(r.protect(r.lang1(f)), global_env());
                nil()
            })
        };
    }
}

fn global_env() -> SEXP {
    // SAFETY: a constant R sets up at start-up.
    unsafe { R_GlobalEnv }
}

/// Arranges for R closure `settle` to be called, on R's main thread
/// through later, once `slot` completes. False if it already has: the
/// caller settles at once.
pub fn on_resolve(slot: &Slot, settle: SEXP) -> Result<bool, RError> {
    let exec = exec_later()?;
    let i = keep(settle)?;
    let s = Settle(i);
    match slot.on_complete(Box::new(move || push(s, exec))) {
        Ok(()) => Ok(true),
        Err(_) => {
            take(i)?;
            Ok(false)
        }
    }
}

/// What a relay drain runs on R's main thread (see `relay_notifier`).
static RELAY_DRAIN: MainThread<Option<fn()>> = MainThread::new(None);

/// A notifier, callable from any thread, that has later's global loop run
/// `drain` on R's main thread: how conditions relayed from running tasks
/// reach R when it is not waiting on a mirai (Shiny, plumber, the console
/// at rest). Looked up on R's main thread; later's namespace is loaded.
pub fn relay_notifier(drain: fn()) -> Result<impl Fn() + Send + Sync + 'static, RError> {
    let exec = exec_later()?;
    RELAY_DRAIN.set(Some(drain));
    Ok(move || {
        // SAFETY: later documents execLaterNative2 as callable from any
        // thread; `run_relay_drain` takes no data.
        unsafe { exec(Some(run_relay_drain), std::ptr::null_mut(), 0.0, GLOBAL_LOOP) }
    })
}

unsafe extern "C" fn run_relay_drain(_: *mut c_void) {
    if let Some(f) = RELAY_DRAIN.get() {
        f();
    }
}
