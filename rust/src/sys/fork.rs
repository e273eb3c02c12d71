//! Which process this is, across `fork()`. A forked child (parallel's
//! `mcparallel()` and `mclapply()`) starts as a copy of its parent's memory,
//! the parent's handles in it (profiles, mirai, daemon connections), but
//! with none of the threads that serve them: a mirai submitted there was
//! queued for an event loop that does not exist, and waiting for it hung
//! for ever. Handles record the process that made them (`layer::handle`),
//! which refuses them anywhere else.
//!
//! The pid is kept here, renewed in the child by a `pthread_atfork`
//! handler, rather than asked for on each look: `getpid()` is a system call
//! (glibc no longer caches it), and a handle is looked at several times
//! per task.

use std::sync::atomic::{AtomicU32, Ordering};

static PID: AtomicU32 = AtomicU32::new(0);

extern "C" fn in_child() {
    // SAFETY: getpid() is async-signal-safe, as a fork handler must be.
    PID.store(unsafe { libc::getpid() } as u32, Ordering::Relaxed);
}

/// Records this process, and has every forked child record itself. Called
/// once at load; the handler goes with the library if R unloads it (glibc
/// unregisters a shared object's fork handlers when it is closed).
pub fn init() {
    in_child();
    // SAFETY: registers a handler that only stores getpid()'s value.
    unsafe { libc::pthread_atfork(None, None, Some(in_child)) };
}

/// This process's id.
pub fn pid() -> u32 {
    PID.load(Ordering::Relaxed)
}
