//! What a local daemon's launcher (`sys::spawn`) told it through its
//! environment: that it leads a process group made for it, and the
//! directory made for its temporary files (its `TMPDIR`, in which R made
//! `tempdir()`).
//!
//! Taken once, on R's thread, before the daemon first dials its host, and
//! then removed from the environment, with `TMPDIR` set back to the launcher's:
//! what the daemon's tasks start must not inherit them. A process that
//! outlives the daemon (started in the background, or a persistent daemon
//! launched by a task) would otherwise keep a `TMPDIR` that goes with the
//! daemon, and a daemon such a task starts by hand under a shell's job
//! control would take its job's group for one made for it.
//!
//! The directory goes however the daemon ends: removed by the launcher
//! once it reaps the daemon; when the daemon ends itself (its host gone
//! during a task, so no launcher is left to do it), by a small process it
//! starts outside its group just before, which waits for the group to end
//! (removing the directory while the task may still write into it would
//! leave what it wrote meanwhile); on a normal exit, once R has removed
//! `tempdir()` inside it (an `atexit` handler, which runs after R's own
//! clean-up).
//!
//! A process forked from the daemon (`mcparallel()`) inherits what was
//! taken; `mine()` keeps it from acting on the daemon's directory or
//! group.

use crate::sys::spawn::{GROUP_ENV, OUTER_TMPDIR_ENV, SCRATCH_ENV};
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
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
        // Only a directory that is what the launcher makes: anything else
        // named there (the variable inherited by mistake) is left alone.
        let scratch = std::env::var_os(SCRATCH_ENV)
            .map(PathBuf::from)
            .filter(|dir| std::env::var_os("TMPDIR").is_some_and(|t| t == dir.as_os_str()) && made_by_launcher(dir));
        if scratch.is_some() {
            match std::env::var_os(OUTER_TMPDIR_ENV) {
                Some(t) => std::env::set_var("TMPDIR", t),
                None => std::env::remove_var("TMPDIR"),
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

    /// Ends this daemon with SIGTERM, its directory to be removed once it
    /// has ended. A daemon still leading the group its launcher made for
    /// it ends the group: the processes its task forked (`mclapply()`,
    /// `mcparallel()`) would otherwise run on, orphaned, after their host
    /// and daemon are gone.
    pub fn end(&self) {
        let mine = self.mine();
        if mine {
            if let Some(dir) = &self.scratch {
                remove_once_ended(self.pid, dir);
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

/// Whether `dir` is a directory the launcher made (`sys::scratch`): named
/// so, not a link, this user's, open to it only.
fn made_by_launcher(dir: &std::path::Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let named = dir.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(crate::sys::scratch::PREFIX));
    // SAFETY: a plain syscall.
    let uid = unsafe { libc::getuid() };
    named && std::fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir() && m.uid() == uid && m.mode() & 0o777 == 0o700)
}

/// Starts a process, in a group of its own, that waits (at most 10 s) for
/// group `pid` (this daemon's, or this daemon alone) to end, then removes
/// `dir`. Should it not start, the directory is removed now.
fn remove_once_ended(pid: i32, dir: &std::path::Path) {
    const WAIT: &str = "i=0; while [ $i -lt 200 ] && { kill -0 -\"$1\" || kill -0 \"$1\"; } 2>/dev/null; \
                        do sleep 0.05; i=$((i+1)); done; rm -rf -- \"$2\"";
    let started = std::process::Command::new("/bin/sh")
        .args(["-c", WAIT, "sh", &pid.to_string()])
        .arg(dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn();
    if started.is_err() {
        let _ = std::fs::remove_dir_all(dir);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::scratch::{Base, Scratch};
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn only_a_directory_the_launcher_makes_is_taken_for_one() {
        let s = Scratch::create(&Base { dir: std::env::temp_dir(), tmpdir: None }).unwrap();
        assert!(made_by_launcher(s.path()));
        // Open to others, or named otherwise, or a link to one: not ours.
        std::fs::set_permissions(s.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(!made_by_launcher(s.path()));
        std::fs::set_permissions(s.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let other = std::env::temp_dir().join(format!("victim-{}", std::process::id()));
        std::fs::create_dir(&other).unwrap();
        std::fs::set_permissions(&other, std::fs::Permissions::from_mode(0o700)).unwrap();
        assert!(!made_by_launcher(&other));
        let link = s.path().with_file_name(format!("{}link{}", crate::sys::scratch::PREFIX, std::process::id()));
        std::os::unix::fs::symlink(s.path(), &link).unwrap();
        assert!(!made_by_launcher(&link));
        std::fs::remove_file(&link).unwrap();
        std::fs::remove_dir(&other).unwrap();
        s.remove();
    }

    #[test]
    fn a_directory_is_removed_once_its_group_has_ended() {
        let s = Scratch::create(&Base { dir: std::env::temp_dir(), tmpdir: None }).unwrap();
        let dir = s.path().to_path_buf();
        std::fs::write(dir.join("f"), b"x").unwrap();
        // A process standing for the daemon, leading its own group.
        let mut daemon = std::process::Command::new("sleep").arg("1").process_group(0).spawn().unwrap();
        remove_once_ended(daemon.id() as i32, &dir);
        std::thread::sleep(std::time::Duration::from_millis(300));
        assert!(dir.join("f").exists(), "removed while the group lives");
        daemon.wait().unwrap();
        let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while dir.exists() && std::time::Instant::now() < until {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(!dir.exists());
    }
}
