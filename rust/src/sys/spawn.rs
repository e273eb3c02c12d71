//! Child processes for local daemons and ephemeral mirai. We are their
//! parent, so we reap them (one small thread each, blocked in wait): no
//! zombies. Each goes in its own process group, so a Ctrl-C typed at the
//! host's terminal interrupts the host, not its daemons.

use crate::sys::threads::{self, lock};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

pub struct Child {
    pub pid: u32,
    /// Launched to outlive its host (`autoexit = FALSE`): never killed by
    /// a reset, and not waited for.
    pub persistent: bool,
    status: Arc<Mutex<Option<i32>>>,
}

impl Child {
    /// Exit status once the process has ended.
    pub fn exited(&self) -> Option<i32> {
        *lock(&self.status)
    }

    pub fn kill(&self) {
        if self.exited().is_none() {
            // SAFETY: a plain syscall. The pid is our unreaped child's (its
            // reaper has not recorded an exit), so it names no other process.
            unsafe { libc::kill(self.pid as i32, libc::SIGKILL) };
        }
    }
}

/// Marks every descriptor above stderr close-on-exec, in a forked child.
/// R's connections (sockets, files) are not close-on-exec, so without this
/// a daemon would hold copies of whatever the session had open when it was
/// launched: a socket the user closes would stay open while daemons live.
/// Marking rather than closing keeps std's own exec-error pipe working.
fn cloexec_inherited() {
    #[cfg(target_os = "linux")]
    // SAFETY: close_range takes plain integers; it only sets flags on
    // descriptors of this (child) process.
    if unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, libc::CLOSE_RANGE_CLOEXEC) } == 0 {
        return;
    }
    // Kernels before 5.11: one fcntl per possible descriptor.
    // SAFETY: rlimit is a plain C struct, valid all zero; getrlimit writes
    // into it.
    let (rc, lim) = unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        (libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), lim)
    };
    let max = if rc == 0 { lim.rlim_cur.min(1 << 16) } else { 1024 };
    for fd in 3..max as i32 {
        // SAFETY: fcntl on a descriptor number; one that is not open fails
        // with EBADF and changes nothing.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags >= 0 {
                libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
            }
        }
    }
}

pub fn launch(program: &str, args: &[String], env: &[(String, String)], persistent: bool) -> Result<Child, String> {
    let mut cmd = Command::new(program);
    cmd.args(args).stdin(Stdio::null()).process_group(0);
    // SAFETY: the hook runs in the forked child before exec and calls only
    // async-signal-safe functions (close_range, fcntl, getrlimit).
    unsafe {
        cmd.pre_exec(|| {
            cloexec_inherited();
            Ok(())
        })
    };
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().map_err(|e| format!("cannot start '{program}': {e}"))?;
    let pid = child.id();
    let status = Arc::new(Mutex::new(None));
    let st = status.clone();
    let st2 = status.clone();
    let reap = move || {
        let code = match child.wait() {
            Ok(s) => s.code().unwrap_or(-1),
            Err(_) => -1,
        };
        *lock(&st) = Some(code);
    };
    // Unreachable in practice; should it happen, the child counts as gone
    // rather than as running forever.
    let on_panic = move |_msg: String| *lock(&st2) = Some(-1);
    threads::spawn("mirai-reaper", reap, on_panic).map_err(|e| e.to_string())?;
    Ok(Child { pid, persistent, status })
}
