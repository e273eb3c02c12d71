//! Child processes for local daemons and ephemeral mirai. We are their
//! parent, so we reap them (one small thread each, blocked in wait): no
//! zombies. Each goes in its own process group, so a Ctrl-C typed at the
//! host's terminal interrupts the host, not its daemons; the group also
//! holds the processes a daemon's tasks fork (`mclapply()`), so that a kill
//! reaches them too (see `Child::kill` and `GROUP_ENV`). A child may be
//! given a directory of its own for temporary files (`Scratch`), removed
//! once it is reaped.

use crate::sys::scratch::Scratch;
use crate::sys::threads::{self, lock};
use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How a child process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// It exited with this status.
    Code(i32),
    /// A signal ended it (SIGKILL from the user or the OOM killer, SIGSEGV).
    Signal(i32),
}

impl Exit {
    /// A daemon that returned from `daemon()` exits with status 0 (its host
    /// closed, or its own idletime, walltime or maxtasks); anything else
    /// (an R error, a signal) is a failure.
    pub fn is_failure(self) -> bool {
        self != Exit::Code(0)
    }
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Code(c) => write!(f, "exit status {c}"),
            Exit::Signal(s) => write!(f, "signal {s}"),
        }
    }
}

/// Called on the child's reaper thread once it has ended, with its pid, how
/// it ended and how long after its launch.
pub type OnExit = Box<dyn FnOnce(u32, Exit, Duration) + Send>;

pub struct Child {
    pub pid: u32,
    /// Launched to outlive its host (`autoexit = FALSE`): never killed by
    /// a reset, and not waited for.
    pub persistent: bool,
    /// When it was launched.
    pub started: Instant,
    state: Arc<Mutex<ProcState>>,
}

#[derive(Default)]
struct ProcState {
    /// Its reaper has collected it: the pid may already name another
    /// process. Set under the lock in the same step as the reaping, so a
    /// `kill` either comes before the reaping (the pid is still ours, at
    /// worst a zombie) or sees this.
    reaped: bool,
    /// Exit status, recorded once the exit hook has run.
    status: Option<i32>,
}

impl Child {
    /// Exit status once the process has ended (and its exit hook has run).
    pub fn exited(&self) -> Option<i32> {
        lock(&self.state).status
    }

    /// Sends SIGKILL to the child's process group (the child and what it
    /// forked) unless the child has been reaped; true if it was sent.
    pub fn kill(&self) -> bool {
        let st = lock(&self.state);
        if st.reaped {
            return false;
        }
        // SAFETY: plain syscalls. Not reaped, and the reaper cannot reap
        // while we hold the lock: the pid is still our child's, and so is
        // the process group it leads (launched with process_group(0); a
        // group's id is not reused while a member lives). Should the child
        // have left its group, only the child is signalled.
        unsafe {
            if libc::kill(-(self.pid as i32), libc::SIGKILL) != 0 {
                libc::kill(self.pid as i32, libc::SIGKILL);
            }
        }
        true
    }
}

/// Blocks until child `pid` has exited, without reaping it (the reaper then
/// reaps it under the child's lock; see `ProcState::reaped`); true if a
/// signal ended it.
fn wait_exited(pid: u32) -> bool {
    loop {
        // SAFETY: siginfo_t is a plain C struct, valid all zero; waitid
        // writes into it and changes nothing else (WNOWAIT: the child stays
        // waitable).
        let (rc, info) = unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            (libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, libc::WEXITED | libc::WNOWAIT), info)
        };
        if rc == 0 {
            return matches!(info.si_code, libc::CLD_KILLED | libc::CLD_DUMPED);
        }
        if io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            return false;
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

/// Clears the signal mask, in a forked child. A child inherits the mask of
/// the thread that forked it, and exec keeps it: launched from one of our
/// threads (a replacement daemon, from its reaper), which block R's signals
/// (`threads::spawn`), the daemon would start with SIGINT blocked and could
/// never be interrupted (a timed-out or stopped task would run on).
fn unblock_signals() {
    // SAFETY: sigset_t is a plain C type, valid all zero; the calls only
    // write `set` and this (child) thread's signal mask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
}

/// Set to "1" in a child's environment: it leads a process group of its
/// own, made for it by its launcher. A daemon ending itself (its host gone
/// during a task) then signals the whole group, as the launcher would; a
/// daemon launched otherwise (by hand, by a scheduler) may share its group
/// with processes that are not its own, and signals only itself.
pub const GROUP_ENV: &str = "MIRAI_OWN_PROCESS_GROUP";

/// The child's own directory (`Scratch`), also given as its `TMPDIR`.
pub const SCRATCH_ENV: &str = "MIRAI_SCRATCH_DIR";

/// The launcher's `TMPDIR`, if it had one: the child gives it back to the
/// processes it starts, which may outlive it and its directory.
pub const OUTER_TMPDIR_ENV: &str = "MIRAI_OUTER_TMPDIR";

/// Launches `program`; `nice`: a nice increment for the child (0: it runs
/// at the launcher's priority); `scratch`: a directory to give it as
/// `TMPDIR`, removed once it has been reaped.
pub fn launch(
    program: &str,
    args: &[String],
    env: &[(String, String)],
    persistent: bool,
    nice: i32,
    on_exit: Option<OnExit>,
    scratch: Option<Scratch>,
) -> Result<Child, String> {
    let mut cmd = Command::new(program);
    cmd.args(args).stdin(Stdio::null()).process_group(0).env(GROUP_ENV, "1");
    // SAFETY: the hook runs in the forked child before exec and calls only
    // async-signal-safe functions (close_range, fcntl, getrlimit,
    // sigemptyset, pthread_sigmask, and nice: the getpriority and
    // setpriority system calls).
    unsafe {
        cmd.pre_exec(move || {
            cloexec_inherited();
            unblock_signals();
            if nice > 0 {
                // Only ever lowers the priority, which needs no privilege;
                // should it fail, the daemon runs at the host's priority.
                libc::nice(nice);
            }
            Ok(())
        })
    };
    for (k, v) in env {
        cmd.env(k, v);
    }
    // A child with no directory of its own (persistent) must not take its
    // launcher's for one, should the launcher have inherited the variables.
    cmd.env_remove(SCRATCH_ENV).env_remove(OUTER_TMPDIR_ENV);
    if let Some(dir) = &scratch {
        cmd.env("TMPDIR", dir.path()).env(SCRATCH_ENV, dir.path());
        if let Some(t) = dir.outer_tmpdir() {
            cmd.env(OUTER_TMPDIR_ENV, t);
        }
    }
    let started = Instant::now();
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            if let Some(dir) = scratch {
                dir.remove();
            }
            return Err(format!("cannot start '{program}': {e}"));
        }
    };
    let pid = child.id();
    let state = Arc::new(Mutex::new(ProcState::default()));
    let st = state.clone();
    let st2 = state.clone();
    let reap = move || {
        use std::os::unix::process::ExitStatusExt;
        if wait_exited(pid) {
            // Killed (by a user, the OOM killer, a crash): what it forked
            // would run on, orphaned. Not yet reaped, it still holds its
            // pid, so the group is still its own.
            // SAFETY: a plain syscall, on the group our unreaped child leads.
            unsafe { libc::kill(-(pid as i32), libc::SIGKILL) };
        }
        let waited = {
            let mut g = lock(&st);
            let w = child.wait();
            g.reaped = true;
            w
        };
        // Before the exit counts as recorded: whoever waits for the child
        // to end (a reset) finds its directory gone too.
        if let Some(dir) = scratch {
            dir.remove();
        }
        let exit = match waited {
            Ok(s) => match (s.code(), s.signal()) {
                (Some(c), _) => Exit::Code(c),
                (None, Some(sig)) => Exit::Signal(sig),
                (None, None) => Exit::Code(-1),
            },
            Err(_) => Exit::Code(-1),
        };
        // The hook first: a replacement it launches is listed before this
        // child counts as exited, so that nobody counting launched children
        // (a wait for daemons to connect) sees one fewer alive meanwhile.
        if let Some(f) = on_exit {
            f(pid, exit, started.elapsed());
        }
        lock(&st).status = Some(match exit {
            Exit::Code(c) => c,
            Exit::Signal(_) => -1,
        });
    };
    // Unreachable in practice; should it happen, the child counts as gone
    // rather than as running forever.
    let on_panic = move |_msg: String| lock(&st2).status = Some(-1);
    threads::spawn("mirai-reaper", reap, on_panic).map_err(|e| e.to_string())?;
    Ok(Child { pid, persistent, started, state })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::scratch::Base;

    fn wait(f: impl Fn() -> bool) -> bool {
        let until = Instant::now() + Duration::from_secs(20);
        while !f() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
        f()
    }

    #[test]
    fn a_reaped_child_is_never_signalled() {
        // Exits by itself: once reaped its pid may be reused, so kill must
        // send nothing, even before the exit hook has recorded a status.
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let hook: OnExit = Box::new(move |_, _, _| {
            // Holds the reaper between the reaping and the status.
            let _ = rx.recv_timeout(Duration::from_secs(20));
        });
        let c = launch("sh", &["-c".into(), "exit 0".into()], &[], false, 0, Some(hook), None).unwrap();
        assert!(wait(|| lock(&c.state).reaped));
        assert_eq!(c.exited(), None, "the hook is still running");
        assert!(!c.kill());
        tx.send(()).unwrap();
        assert!(wait(|| c.exited() == Some(0)));
        assert!(!c.kill());
        // A running child is signalled, and its reaper sees the signal.
        let c = launch("sleep", &["30".into()], &[], false, 0, None, None).unwrap();
        assert!(c.kill());
        assert!(wait(|| c.exited().is_some()));
        assert_eq!(c.exited(), Some(-1));
        assert!(!c.kill());
    }

    #[test]
    fn a_child_gets_its_own_temporary_directory_removed_once_it_is_reaped() {
        let base = Base { dir: std::env::temp_dir(), tmpdir: Some("/outer/tmp".into()) };
        let scratch = Scratch::create(&base).unwrap();
        let dir = scratch.path().to_path_buf();
        let out = dir.with_extension("out");
        let script = format!(
            "echo \"$TMPDIR ${SCRATCH_ENV} ${OUTER_TMPDIR_ENV}\" > {}; mkdir \"$TMPDIR/RtmpX\"; touch \"$TMPDIR/RtmpX/f\"",
            out.display()
        );
        let c = launch("sh", &["-c".into(), script], &[], false, 0, None, Some(scratch)).unwrap();
        assert!(wait(|| c.exited().is_some()));
        assert_eq!(c.exited(), Some(0));
        let d = dir.to_str().unwrap();
        assert_eq!(std::fs::read_to_string(&out).unwrap().trim_end(), format!("{d} {d} /outer/tmp"));
        assert!(!dir.exists());
        std::fs::remove_file(&out).unwrap();
        // A program that cannot start leaves no directory behind either.
        let scratch = Scratch::create(&base).unwrap();
        let dir = scratch.path().to_path_buf();
        assert!(launch("/nonexistent/mirai-program", &[], &[], false, 0, None, Some(scratch)).is_err());
        assert!(!dir.exists());
    }

    #[test]
    fn a_kill_reaches_what_the_child_forked_and_a_normal_exit_does_not() {
        let out = std::env::temp_dir().join(format!("mirai-spawn-group-{}", std::process::id()));
        // Running, not a zombie waiting for whoever adopted it.
        let alive = |pid: i32| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            stat.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z'))
        };
        // How the child ends: killed by us, killed by someone else, or
        // exiting by itself (what it left running in the background is
        // then left alone).
        for how in ["kill", "outside", "exit"] {
            let _ = std::fs::remove_file(&out);
            let end = if how == "exit" { "exit 0" } else { "wait" };
            let script = format!("sleep 30 & echo $! > {0}; echo \"${GROUP_ENV}\" >> {0}; {end}", out.display());
            let c = launch("sh", &["-c".into(), script], &[], false, 0, None, None).unwrap();
            let read = || std::fs::read_to_string(&out).unwrap_or_default();
            assert!(wait(|| read().lines().count() == 2));
            let text = read();
            let mut lines = text.lines();
            let grandchild: i32 = lines.next().unwrap().parse().unwrap();
            assert_eq!(lines.next(), Some("1"), "the child is told it leads its own group");
            match how {
                "kill" => assert!(c.kill()),
                // SAFETY: a plain syscall on our own running child.
                "outside" => assert_eq!(unsafe { libc::kill(c.pid as i32, libc::SIGKILL) }, 0),
                _ => {}
            }
            assert!(wait(|| c.exited().is_some()), "{how}");
            if how == "exit" {
                assert!(alive(grandchild));
                // SAFETY: a plain syscall on a process we started.
                unsafe { libc::kill(grandchild, libc::SIGKILL) };
            }
            assert!(wait(|| !alive(grandchild)), "{how}");
        }
        std::fs::remove_file(&out).unwrap();
    }

    /// Priority of process `pid` as its nice value.
    fn nice_of(pid: u32) -> i32 {
        // SAFETY: a plain syscall on our own child (errno is not consulted:
        // the children here have nice values other than -1).
        unsafe { libc::getpriority(libc::PRIO_PROCESS, pid as libc::id_t) }
    }

    #[test]
    fn a_child_runs_at_the_nice_increment_it_is_given() {
        // SAFETY: as in `nice_of`, on this process.
        let ours = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
        let c = launch("sleep", &["30".into()], &[], false, 5, None, None).unwrap();
        assert_eq!(nice_of(c.pid), (ours + 5).min(19));
        assert!(c.kill());
        let c = launch("sleep", &["30".into()], &[], false, 0, None, None).unwrap();
        assert_eq!(nice_of(c.pid), ours);
        assert!(c.kill());
    }
}
