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

/// A settle closure waiting for its mirai: its index in the registry.
/// Other threads only carry the number; R's main thread alone reads the
/// registry.
struct Settle(usize);

/// The settle closures of pending promises, kept reachable in one preserved
/// list (index-addressed, with a free list) rather than one
/// `R_PreserveObject` each: R keeps preserved objects in a linked list, so
/// releasing one costs a walk of all the others, and thousands of pending
/// promises made settling quadratic. Main thread only.
struct Registry {
    list: SEXP,
    free: Vec<usize>,
}

static mut REGISTRY: Registry = Registry { list: std::ptr::null_mut(), free: Vec::new() };

fn registry() -> &'static mut Registry {
    // SAFETY: only R's main thread calls this (from a .Call or from later's
    // callback), one call at a time.
    unsafe { &mut *std::ptr::addr_of_mut!(REGISTRY) }
}

/// Stores `f` in the registry; its index.
fn keep(f: SEXP) -> Result<usize, RError> {
    let reg = registry();
    if reg.free.is_empty() {
        let old = reg.list;
        let old_len = if old.is_null() { 0 } else { unsafe { Rf_xlength(old) as usize } };
        let new_len = (old_len * 2).max(64);
        let list = try_r(|| unsafe {
            let l = Rf_protect(Rf_allocVector(SEXPTYPE::VECSXP, new_len as isize));
            for i in 0..old_len {
                SET_VECTOR_ELT(l, i as isize, VECTOR_ELT(old, i as isize));
            }
            R_PreserveObject(l);
            Rf_unprotect(1);
            l
        })?;
        if !old.is_null() {
            unsafe { R_ReleaseObject(old) };
        }
        reg.list = list;
        reg.free.extend((old_len..new_len).rev());
    }
    let Some(i) = reg.free.pop() else { return Err("promise registry: no free slot".into()) };
    unsafe { SET_VECTOR_ELT(reg.list, i as isize, f) };
    Ok(i)
}

/// Takes closure `i` out of the registry (the caller protects it).
fn take(i: usize) -> SEXP {
    let reg = registry();
    let f = unsafe { VECTOR_ELT(reg.list, i as isize) };
    unsafe { SET_VECTOR_ELT(reg.list, i as isize, R_NilValue) };
    reg.free.push(i);
    f
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
    while let Ok(Settle(i)) = q.rx.try_recv() {
        let f = unsafe { Rf_protect(take(i)) };
        // An error in the closure is R's to report; it must not unwind
        // through later's frames, nor stop the others from settling.
        let _ = try_r(|| unsafe {
            let call = Rf_protect(Rf_lang1(f));
            Rf_eval(call, R_GlobalEnv);
            Rf_unprotect(1);
            R_NilValue
        });
        unsafe { Rf_unprotect(1) };
    }
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
            take(i);
            Ok(false)
        }
    }
}
