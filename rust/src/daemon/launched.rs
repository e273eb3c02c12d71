//! What a local daemon's launcher (`sys::spawn`) told it through its
//! environment: that it leads a process group made for it, and the
//! directory made for its temporary files (its `TMPDIR`, in which R made
//! `tempdir()`).
//!
//! Taken once, on R's thread, when the daemon first connects, and then
//! removed from the environment, with `TMPDIR` set back to the launcher's:
//! what the daemon's tasks start must not inherit them. A process that
//! outlives the daemon (started in the background, or a persistent daemon
//! launched by a task) would otherwise keep a `TMPDIR` that goes with the
//! daemon, and a daemon such a task starts by hand under a shell's job
//! control would take its job's group for one made for it.
//!
//! The directory goes however the daemon ends: removed by the launcher
//! once it reaps the daemon, by the daemon itself before it ends itself
//! (its host gone during a task, when no launcher is left to do it), or,
//! on a normal exit, once R has removed `tempdir()` inside it (an
//! `atexit` handler, which runs after R's own clean-up).
//!
//! A process forked from the daemon (`mcparallel()`) inherits what was
//! taken; `mine()` keeps it from acting on the daemon's directory or
//! group.

use crate::sys::spawn::{GROUP_ENV, OUTER_TMPDIR_ENV, SCRATCH_ENV};
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::OnceLock;

pub struct Launched {
    /// The daemon's pid when it took these.
    pid: i32,
    own_group: bool,
    scratch: Option<PathBuf>,
}

static LAUNCHED: OnceLock<Launched> = OnceLock::new();

/// What the launcher said, taken from the environment on the first call.
/// Call on R's thread only: it changes the environment, which R reads and
/// writes there (`Sys.getenv()`, `Sys.setenv()`).
pub fn take() -> &'static Launched {
    LAUNCHED.get_or_init(|| {
        let own_group = std::env::var_os(GROUP_ENV).is_some_and(|v| v == "1");
        std::env::remove_var(GROUP_ENV);
        let scratch = std::env::var_os(SCRATCH_ENV).map(PathBuf::from);
        if let Some(dir) = &scratch {
            if std::env::var_os("TMPDIR").is_some_and(|t| t == dir.as_os_str()) {
                match std::env::var_os(OUTER_TMPDIR_ENV) {
                    Some(t) => std::env::set_var("TMPDIR", t),
                    None => std::env::remove_var("TMPDIR"),
                }
            }
            // SAFETY: registers a handler that takes no arguments and
            // only makes system calls (see `remove_empty_scratch`).
            unsafe { libc::atexit(remove_empty_scratch) };
        }
        std::env::remove_var(SCRATCH_ENV);
        std::env::remove_var(OUTER_TMPDIR_ENV);
        // SAFETY: a plain syscall.
        Launched { pid: unsafe { libc::getpid() }, own_group, scratch }
    })
}

impl Launched {
    /// This is the process that took them, not a fork of it.
    fn mine(&self) -> bool {
        // SAFETY: a plain syscall.
        self.pid == unsafe { libc::getpid() }
    }

    /// Ends this daemon with SIGTERM, removing its directory first. A
    /// daemon still leading the group its launcher made for it ends the
    /// group: the processes its task forked (`mclapply()`, `mcparallel()`)
    /// would otherwise run on, orphaned, after their host and daemon are
    /// gone.
    pub fn end(&self) {
        let mine = self.mine();
        if mine {
            if let Some(dir) = &self.scratch {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
        // SAFETY: plain syscalls on this process, or on the process group
        // it leads (whose id is its pid).
        unsafe {
            if mine && self.own_group && libc::getpgrp() == libc::getpid() {
                libc::kill(0, libc::SIGTERM);
            } else {
                libc::kill(libc::getpid(), libc::SIGTERM);
            }
        }
    }
}

/// At exit: the daemon's directory, if R has emptied it (rmdir removes
/// nothing else). A daemon whose launcher is gone (a host that ended
/// without a reset) would otherwise leave it behind, empty.
extern "C" fn remove_empty_scratch() {
    let Some(l) = LAUNCHED.get() else { return };
    let Some(dir) = l.scratch.as_ref().filter(|_| l.mine()) else { return };
    if let Ok(c) = CString::new(dir.as_os_str().as_bytes()) {
        // SAFETY: rmdir reads the NUL-terminated path it is given.
        unsafe { libc::rmdir(c.as_ptr()) };
    }
}
