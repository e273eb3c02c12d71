//! The threads mirai starts, and the signals it sends to R's main thread.
//!
//! R's signal handlers (SIGINT above all) longjmp on whatever thread the
//! signal lands on; on one of ours that would be a crash. So every thread
//! we start blocks the signals R handles before it runs anything, and a
//! cancellation is sent to R's main thread by its thread handle
//! (`pthread_kill`), never to the process as a whole.
//!
//! A panic on one of our threads must not vanish silently: `spawn` runs the
//! body inside `catch_unwind` and hands the panic message to the caller's
//! `on_panic`, which resolves whatever depended on the thread.
//!
//! `lock` takes a mutex whether or not a panic poisoned it: every state we
//! guard stays usable (the owners re-establish their invariants on a panic,
//! see `host::Core::die`), and a `Drop` must never panic on a poisoned lock.

use std::sync::{Mutex, MutexGuard, OnceLock};

/// Locks `m`, ignoring poisoning.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The message of a caught panic.
pub fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown panic".into())
}

/// Blocks, in the calling thread, the asynchronous signals that R handles.
fn block_r_signals() {
    // SAFETY: sigset_t is a plain C type, valid all zero and initialised by
    // sigemptyset; the calls only read and write `set` and this thread's
    // signal mask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGINT, libc::SIGUSR1, libc::SIGUSR2, libc::SIGPIPE] {
            libc::sigaddset(&mut set, s);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// Starts a named thread with R's signals blocked. A panic in `body` is
/// caught and passed to `on_panic` (which must not panic itself: it runs
/// inside a second `catch_unwind` whose failure is ignored).
pub fn spawn<F, P>(name: &str, body: F, on_panic: P) -> std::io::Result<std::thread::JoinHandle<()>>
where
    F: FnOnce() + Send + 'static,
    P: FnOnce(String) + Send + 'static,
{
    std::thread::Builder::new().name(name.into()).spawn(move || {
        block_r_signals();
        if let Err(p) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)) {
            let msg = panic_message(&*p);
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| on_panic(msg)));
        }
    })
}

static MAIN_THREAD: OnceLock<libc::pthread_t> = OnceLock::new();

/// Records the calling thread as R's main thread. Called from the package's
/// init routine, which R runs on its main thread.
pub fn record_main_thread() {
    // SAFETY: pthread_self has no preconditions.
    let _ = MAIN_THREAD.set(unsafe { libc::pthread_self() });
}

/// Whether the caller is R's main thread; true while none is recorded (the
/// crate's own tests, which run no R).
pub fn on_main_thread() -> bool {
    match MAIN_THREAD.get() {
        // SAFETY: pthread_self has no preconditions; pthread_equal
        // compares two handles of live threads (R's main thread lives as
        // long as the process).
        Some(&t) => unsafe { libc::pthread_equal(t, libc::pthread_self()) != 0 },
        None => true,
    }
}

/// Raises SIGINT on R's main thread only (R turns it into an interrupt of
/// the running evaluation). False if the main thread is unknown. R's main
/// thread lives as long as the process, so its handle stays valid.
pub fn interrupt_main() -> bool {
    match MAIN_THREAD.get() {
        // SAFETY: `t` is R's main thread, alive as long as the process.
        Some(&t) => unsafe { libc::pthread_kill(t, libc::SIGINT) == 0 },
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_panic_reaches_on_panic_and_locks_survive_poisoning() {
        let m = Arc::new(Mutex::new(1));
        let m2 = m.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let h = spawn(
            "t",
            move || {
                let _g = m2.lock().unwrap();
                panic!("boom");
            },
            move |msg| tx.send(msg).unwrap(),
        )
        .unwrap();
        h.join().unwrap();
        assert_eq!(rx.recv().unwrap(), "boom");
        assert!(m.is_poisoned());
        *lock(&m) += 1;
        assert_eq!(*lock(&m), 2);
    }

    #[test]
    fn spawned_threads_block_sigint() {
        let (tx, rx) = std::sync::mpsc::channel();
        spawn(
            "t",
            // SAFETY: as in block_r_signals: a zeroed sigset_t filled by
            // pthread_sigmask, which only reads this thread's mask.
            move || unsafe {
                let mut cur: libc::sigset_t = std::mem::zeroed();
                libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut cur);
                tx.send(libc::sigismember(&cur, libc::SIGINT)).unwrap();
            },
            |_| {},
        )
        .unwrap()
        .join()
        .unwrap();
        assert_eq!(rx.recv().unwrap(), 1);
    }
}
