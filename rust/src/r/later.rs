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
use crate::aio::Slot;
use crossbeam_channel::{unbounded, Receiver, Sender};
use std::ffi::{c_int, c_void};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{LazyLock, OnceLock};

type ExecLater = unsafe extern "C" fn(Option<unsafe extern "C" fn(*mut c_void)>, *mut c_void, f64, c_int);

/// later's global loop, the one Shiny, plumber and promises run.
const GLOBAL_LOOP: c_int = 0;

static EXEC_LATER: OnceLock<usize> = OnceLock::new();

/// The address of a preserved R closure. Only R's main thread dereferences
/// it (in `drain`); other threads just carry the number.
struct Settle(usize);

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
    if let Some(&f) = EXEC_LATER.get() {
        return Ok(unsafe { std::mem::transmute::<usize, ExecLater>(f) });
    }
    // The pointer is written to `p`, not returned: try_r's result must be
    // an R object (R's unwind protection stores it as one).
    let mut p = 0usize;
    try_r(|| unsafe {
        p = R_GetCCallable(c"later".as_ptr(), c"execLaterNative2".as_ptr()) as usize;
        R_NilValue
    })?;
    if p == 0 {
        return Err("the 'later' package does not provide execLaterNative2: install later >= 1.0".into());
    }
    let f = *EXEC_LATER.get_or_init(|| p);
    Ok(unsafe { std::mem::transmute::<usize, ExecLater>(f) })
}

/// Queues a settle closure from any thread, scheduling a drain if none is.
fn push(s: Settle, exec: ExecLater) {
    let q = &*QUEUE;
    // The receiver lives in the same static: sending cannot fail.
    let _ = q.tx.send(s);
    if !q.armed.swap(true, Ordering::AcqRel) {
        unsafe { exec(Some(drain), std::ptr::null_mut(), 0.0, GLOBAL_LOOP) };
    }
}

/// Runs on R's main thread, from later. Disarms first, so a settle queued
/// while this runs schedules a drain of its own (or is taken by this one):
/// none is left behind.
unsafe extern "C" fn drain(_: *mut c_void) {
    let q = &*QUEUE;
    q.armed.store(false, Ordering::Release);
    while let Ok(Settle(addr)) = q.rx.try_recv() {
        let f = addr as SEXP;
        // An error in the closure is R's to report; it must not unwind
        // through later's frames, nor stop the others from settling.
        let _ = try_r(|| unsafe {
            let call = Rf_protect(Rf_lang1(f));
            Rf_eval(call, R_GlobalEnv);
            Rf_unprotect(1);
            R_NilValue
        });
        unsafe { R_ReleaseObject(f) };
    }
}

/// Arranges for R closure `settle` to be called, on R's main thread
/// through later, once `slot` completes. False if it already has: the
/// caller settles at once.
pub fn on_resolve(slot: &Slot, settle: SEXP) -> Result<bool, RError> {
    let exec = exec_later()?;
    try_r(|| unsafe {
        R_PreserveObject(settle);
        R_NilValue
    })?;
    let s = Settle(settle as usize);
    match slot.on_complete(Box::new(move || push(s, exec))) {
        Ok(()) => Ok(true),
        Err(_) => {
            unsafe { R_ReleaseObject(settle) };
            Ok(false)
        }
    }
}
