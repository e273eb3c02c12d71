//! The local daemons one compute profile launched, kept at their number.
//!
//! Every launched child is listed here (so that a reset can find and end
//! it). A child launched to heal (`daemons(n)`'s own daemons) that dies
//! with a failure (a signal such as SIGKILL from a user or the OOM killer,
//! SIGSEGV, or a non-zero exit status such as an R error) is launched again
//! at once, from the reaper thread that saw it die, with the same command.
//! A daemon that returns from `daemon()` exits with status 0 (its host
//! closed, or its own `idletime`, `walltime` or `maxtasks`): that is not a
//! death, and is left alone. Nothing here touches R: what R must hear (the
//! replacing stopped) waits in `notice` for R's main thread to take.
//!
//! Crash loops: the decision is the pure `Healer`. A daemon that dies
//! within `QUICK_DEATH` of its launch without ever having been sent a task
//! died of starting (a broken R profile or library path, a package that
//! will not load): `CRASH_LOOP` such deaths in a row stop the replacing for
//! the life of the profile, with a warning saying why, rather than launching
//! a process every few hundred milliseconds for ever. A daemon that was sent
//! a task and died running it was killed by its task (or by the user), not
//! by its start: its death neither counts nor breaks the row, so a task that
//! kills every daemon it runs on (retried with `.retry`) cannot stop the
//! healing. The row starts again when a daemon dies after living longer than
//! `QUICK_DEATH`, and when any daemon sends its first result (it became
//! healthy). What the host saw each daemon do comes from the `HealthBook`
//! it shares with the pool, by process id.
//!
//! A replacement is sent the profile's earlier `everywhere()` calls before
//! any task: one of them that ends the daemon ends every replacement, a
//! crash loop all the same, but not one of starting, so the warning then
//! says the dead had been sent those calls.
//!
//! Random-number streams: a daemon launched with its own stream (no
//! dispatcher, no seed: the launch command carries `rs`) is replaced by one
//! on the next substream of that stream (`rng::next_substream`), which the
//! dead daemon never reached, and which no other daemon's stream overlaps.

use crate::host::monitor::{Health, HealthBook};
use crate::host::rng::{self, Stream};
use crate::sys::scratch::{Base, Scratch};
use crate::sys::spawn::{self, Child, Exit};
use crate::sys::threads::lock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A death this soon after launch counts towards a crash loop.
pub const QUICK_DEATH: Duration = Duration::from_secs(5);
/// Quick deaths in a row that stop the replacing.
pub const CRASH_LOOP: u32 = 3;

/// What to do about a healing daemon that ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Launch another in its place.
    Replace,
    /// Nothing: it ended normally, or the replacing has stopped.
    Ignore,
    /// Stop replacing, and tell the user this.
    GiveUp(String),
}

/// The crash-loop policy: events in (a daemon ended: how, after how long,
/// what the host saw it do, and how many daemons have become healthy so
/// far), verdicts out; no clock or process of its own.
#[derive(Debug, Default)]
pub struct Healer {
    quick_in_a_row: u32,
    /// Of those, the daemons that had been sent the replayed `everywhere()`
    /// calls: the warning says so, as they ran code of the user's.
    replayed_in_a_row: u32,
    /// `HealthBook::healthy` when the row was last counted.
    healthy_seen: u64,
    stopped: bool,
}

impl Healer {
    pub fn exited(&mut self, exit: Exit, lived: Duration, seen: Health, healthy: u64) -> Verdict {
        if self.stopped || !exit.is_failure() {
            return Verdict::Ignore;
        }
        if healthy != self.healthy_seen {
            // A daemon has run a task to the end since: the pool works.
            self.healthy_seen = healthy;
            self.quick_in_a_row = 0;
            self.replayed_in_a_row = 0;
        }
        if lived >= QUICK_DEATH {
            self.quick_in_a_row = 0;
            self.replayed_in_a_row = 0;
            return Verdict::Replace;
        }
        if seen.given_task {
            return Verdict::Replace;
        }
        self.quick_in_a_row += 1;
        self.replayed_in_a_row += seen.replayed as u32;
        if self.quick_in_a_row < CRASH_LOOP {
            return Verdict::Replace;
        }
        self.stopped = true;
        let secs = QUICK_DEATH.as_secs();
        Verdict::GiveUp(match self.replayed_in_a_row {
            0 => format!(
                "{CRASH_LOOP} local daemons in a row died within {secs} s of their launch without running a task \
                 (the last with {exit}), so dead daemons are no longer replaced; run the command launch_remote() \
                 prints to see why, then set daemons() again"
            ),
            // What is known: the replayed calls were sent, no task was.
            r => format!(
                "{CRASH_LOOP} local daemons in a row died within {secs} s of their launch (the last with {exit}), \
                 {} been sent no task but the everywhere() calls that every replacement evaluates first, so dead \
                 daemons are no longer replaced; one of those calls may end a daemon: check them, then set \
                 daemons() again",
                if r == CRASH_LOOP { "each having".to_string() } else { format!("{r} of them having") }
            ),
        })
    }

    pub fn stopped(&self) -> bool {
        self.stopped
    }
}

/// How to launch one daemon.
#[derive(Debug, Clone)]
pub struct Spec {
    pub program: String,
    /// Its arguments; the last is the R code to run, `mirai::daemon(...)`.
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Launched with `autoexit = FALSE`: never killed by a reset.
    pub persistent: bool,
    /// Its own random-number stream, added to the call as `rs`.
    pub stream: Option<Stream>,
    /// Its nice increment (see `oversubscribed_nice`); replacements too.
    pub nice: i32,
    /// Where to make each daemon's own temporary directory (see
    /// `sys::scratch`); None: the daemon uses the launcher's `TMPDIR`, as a
    /// persistent daemon must (it outlives whoever would remove it).
    pub scratch_in: Option<Base>,
}

/// The nice increment for each of `n` local daemons launched together on
/// a machine where this process may use `cores` CPUs: 0 up to one daemon
/// per core; beyond, as many steps (each 1.25x less CPU weight) as make
/// the daemons together weigh what `cores` ordinary processes weigh.
///
/// Why: the scheduler shares a CPU by weight, so `n` daemons at full
/// weight left the host (the R thread submitting, the event loop feeding
/// them) `2/(n + 2)` of it. Measured on 2 cores with 16 daemons: the host
/// starved, each daemon woke for one tiny task at a time and ran it with
/// cold caches (about 100 us of CPU a task instead of 35), and 5,000 tiny
/// tasks went at half the rate of 2 daemons. At this weight the host keeps
/// the share it has with one daemon per core, and the daemons drain their
/// queues in turn. Daemons only give way to processes of the same
/// scheduling group (with autogroup, the host's session), never below the
/// lowest priority.
pub fn oversubscribed_nice(n: u64, cores: u64) -> i32 {
    if cores == 0 || n <= cores {
        return 0;
    }
    let steps = (n as f64 / cores as f64).ln() / 1.25f64.ln();
    (steps.round() as i32).clamp(0, 19)
}

impl Spec {
    /// The arguments, with the stream (if any) as the call's last argument.
    fn argv(&self) -> Result<Vec<String>, String> {
        let mut argv = self.args.clone();
        if let Some(s) = self.stream {
            let code = argv.last_mut().filter(|c| c.ends_with(')')).ok_or("the launch command must end with a call")?;
            code.pop();
            let ints: Vec<String> = s.iter().map(|i| format!("{i}L")).collect();
            code.push_str(&format!(",rs=c({}))", ints.join(",")));
        }
        Ok(argv)
    }

    /// The spec of the daemon that replaces this one.
    fn successor(&self) -> Spec {
        Spec { stream: self.stream.map(|s| rng::next_substream(&s)), ..self.clone() }
    }
}

#[derive(Default)]
struct State {
    children: Vec<Child>,
    /// Set at reset: nothing more is launched.
    closed: bool,
    healer: Healer,
    notice: Option<String>,
}

#[derive(Default)]
pub struct Pool {
    state: Mutex<State>,
    /// What the host saw each daemon do, by pid (written by the host).
    health: Arc<HealthBook>,
    /// A notice waits (checked without the lock on every call that may
    /// surface it).
    has_notice: AtomicBool,
    replaced: AtomicU64,
}

impl Pool {
    /// A pool whose crash-loop rule reads what the host saw in `health`.
    pub fn new(health: Arc<HealthBook>) -> Self {
        Pool {
            state: Mutex::default(),
            health,
            has_notice: AtomicBool::new(false),
            replaced: AtomicU64::new(0),
        }
    }

    /// Launches a daemon; its pid. With `heal`, it (and whoever replaces
    /// it) is replaced when it dies (see the module docs).
    pub fn launch(self: &Arc<Self>, spec: Spec, heal: bool) -> Result<u32, String> {
        let mut st = lock(&self.state);
        if st.closed {
            return Err("the compute profile has been reset".into());
        }
        self.launch_locked(&mut st, spec, heal)
    }

    fn launch_locked(self: &Arc<Self>, st: &mut State, spec: Spec, heal: bool) -> Result<u32, String> {
        let argv = spec.argv()?;
        let on_exit: Option<spawn::OnExit> = if heal {
            // Weak: a child outliving its profile must not keep it alive.
            let pool = Arc::downgrade(self);
            let spec = spec.clone();
            Some(Box::new(move |pid, exit, lived| {
                if let Some(pool) = pool.upgrade() {
                    pool.exited(&spec, pid, exit, lived);
                }
            }))
        } else {
            None
        };
        // Should the directory not be made (a full disk), the daemon still
        // starts, with the launcher's TMPDIR.
        let scratch = spec.scratch_in.as_ref().and_then(|base| Scratch::create(base).ok());
        let child = spawn::launch(&spec.program, &argv, &spec.env, spec.persistent, spec.nice, on_exit, scratch)?;
        let pid = child.pid;
        st.children.push(child);
        Ok(pid)
    }

    /// On a healing child's reaper thread, once it has ended. The lock is
    /// held while the replacement launches, so that a reset (`close`) either
    /// comes first, and nothing launches, or finds the replacement listed.
    fn exited(self: &Arc<Self>, spec: &Spec, pid: u32, exit: Exit, lived: Duration) {
        let mut st = lock(&self.state);
        if st.closed {
            return;
        }
        let (seen, healthy) = (self.health.get(pid), self.health.healthy());
        // The dead stay listed: a wait for daemons to connect counts them
        // (a few words each).
        match st.healer.exited(exit, lived, seen, healthy) {
            Verdict::Ignore => {}
            Verdict::Replace => match self.launch_locked(&mut st, spec.successor(), true) {
                Ok(pid) => {
                    // Before it can connect: it starts a second or so later.
                    self.health.replacement(pid);
                    self.replaced.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    st.healer.stopped = true;
                    self.post(&mut st, format!("a local daemon died ({exit}) and could not be replaced: {e}"));
                }
            },
            Verdict::GiveUp(why) => self.post(&mut st, why),
        }
    }

    fn post(&self, st: &mut State, msg: String) {
        st.notice = Some(msg);
        self.has_notice.store(true, Ordering::Release);
    }

    /// Whether a notice waits for the user (`take_notice`), without taking it.
    pub fn has_notice(&self) -> bool {
        self.has_notice.load(Ordering::Acquire)
    }

    /// The notice for the user, once (None most of the time, cheaply).
    pub fn take_notice(&self) -> Option<String> {
        if !self.has_notice.load(Ordering::Acquire) {
            return None;
        }
        let mut st = lock(&self.state);
        self.has_notice.store(false, Ordering::Relaxed);
        st.notice.take()
    }

    /// Daemons launched in place of dead ones.
    pub fn replaced(&self) -> u64 {
        self.replaced.load(Ordering::Relaxed)
    }

    /// True once a crash loop (or a failed launch) stopped the replacing.
    pub fn gave_up(&self) -> bool {
        lock(&self.state).healer.stopped()
    }

    /// Launches nothing more, ever (the profile is being reset).
    pub fn close(&self) {
        lock(&self.state).closed = true;
    }

    /// Kills the children (but persistent ones) that never completed their
    /// handshake with the host: at a reset, once `close` has stopped the
    /// replacing, a daemon still starting would only find the host gone and
    /// fail noisily, and the reset would wait for it. Those that connected
    /// see their connection close and exit by themselves.
    pub fn kill_unconnected(&self) {
        let st = lock(&self.state);
        for c in st.children.iter().filter(|c| !c.persistent && c.exited().is_none()) {
            if !self.health.get(c.pid).connected {
                c.kill();
            }
        }
    }

    /// Runs `f` on the list of children.
    pub fn with_children<T>(&self, f: impl FnOnce(&[Child]) -> T) -> T {
        f(&lock(&self.state).children)
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // Already unreachable from any reaper (they hold it weakly).
        if let Ok(mut st) = self.state.lock() {
            st.closed = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KILL: Exit = Exit::Signal(9);

    /// A daemon the host never saw, and one it sent a task.
    const UNSEEN: Health = Health { connected: false, given_task: false, completed_task: false, replayed: false };
    const TASKED: Health = Health { connected: true, given_task: true, completed_task: false, replayed: false };
    /// A replacement sent the replayed `everywhere()` calls, and no task.
    const REPLAYED: Health = Health { connected: true, given_task: false, completed_task: false, replayed: true };

    #[test]
    fn failures_are_replaced_normal_exits_are_not() {
        let mut h = Healer::default();
        let long = QUICK_DEATH * 2;
        assert_eq!(h.exited(KILL, long, UNSEEN, 0), Verdict::Replace);
        assert_eq!(h.exited(Exit::Code(1), long, UNSEEN, 0), Verdict::Replace);
        assert_eq!(h.exited(Exit::Signal(11), long, TASKED, 0), Verdict::Replace);
        // idletime, walltime, maxtasks, host closed: status 0.
        assert_eq!(h.exited(Exit::Code(0), Duration::ZERO, UNSEEN, 0), Verdict::Ignore);
        // However many deaths, as long as each lived a while.
        for _ in 0..100 {
            assert_eq!(h.exited(KILL, long, UNSEEN, 0), Verdict::Replace);
        }
        assert!(!h.stopped());
    }

    #[test]
    fn three_quick_deaths_in_a_row_without_a_task_stop_the_replacing() {
        let mut h = Healer::default();
        let quick = Duration::from_millis(300);
        assert_eq!(h.exited(Exit::Code(1), quick, UNSEEN, 0), Verdict::Replace);
        assert_eq!(h.exited(Exit::Code(1), quick, UNSEEN, 0), Verdict::Replace);
        // A daemon that lived past the window breaks the row.
        assert_eq!(h.exited(KILL, QUICK_DEATH, UNSEEN, 0), Verdict::Replace);
        assert_eq!(h.exited(KILL, quick, UNSEEN, 0), Verdict::Replace);
        assert_eq!(h.exited(KILL, quick, UNSEEN, 0), Verdict::Replace);
        // A normal exit neither counts nor breaks it.
        assert_eq!(h.exited(Exit::Code(0), quick, UNSEEN, 0), Verdict::Ignore);
        match h.exited(Exit::Code(1), quick, UNSEEN, 0) {
            Verdict::GiveUp(why) => {
                assert!(why.contains("3 local daemons in a row died within 5 s of their launch without running a task"), "{why}");
                assert!(why.contains("exit status 1"), "{why}");
            }
            v => panic!("expected GiveUp, got {v:?}"),
        }
        assert!(h.stopped());
        // For good: even a long-lived daemon's death is not replaced now.
        assert_eq!(h.exited(KILL, QUICK_DEATH * 10, UNSEEN, 0), Verdict::Ignore);
    }

    #[test]
    fn a_crash_loop_of_replacements_sent_the_replayed_calls_is_told_as_such() {
        let quick = Duration::from_millis(300);
        let mut h = Healer::default();
        for _ in 1..CRASH_LOOP {
            assert_eq!(h.exited(Exit::Code(1), quick, REPLAYED, 0), Verdict::Replace);
        }
        match h.exited(Exit::Code(1), quick, REPLAYED, 0) {
            Verdict::GiveUp(why) => {
                assert!(why.contains("3 local daemons in a row died within 5 s of their launch (the last with exit status 1), \
                                      each having been sent no task but the everywhere() calls"), "{why}");
                assert!(!why.contains("without running a task"), "{why}");
            }
            v => panic!("expected GiveUp, got {v:?}"),
        }
        // A row that started with a daemon dying before it connected.
        let mut h = Healer::default();
        assert_eq!(h.exited(Exit::Code(1), quick, UNSEEN, 0), Verdict::Replace);
        assert_eq!(h.exited(Exit::Code(1), quick, REPLAYED, 0), Verdict::Replace);
        match h.exited(Exit::Code(1), quick, REPLAYED, 0) {
            Verdict::GiveUp(why) => assert!(why.contains("2 of them having been sent no task"), "{why}"),
            v => panic!("expected GiveUp, got {v:?}"),
        }
    }

    #[test]
    fn deaths_of_daemons_running_a_task_never_stop_the_replacing() {
        // A task that kills each daemon it runs on, retried: quick deaths,
        // each with a task.
        let mut h = Healer::default();
        let quick = Duration::from_millis(300);
        for _ in 0..50 {
            assert_eq!(h.exited(KILL, quick, TASKED, 0), Verdict::Replace);
        }
        // Nor do they break a row of deaths at start.
        assert_eq!(h.exited(Exit::Code(1), quick, UNSEEN, 0), Verdict::Replace);
        assert_eq!(h.exited(KILL, quick, TASKED, 0), Verdict::Replace);
        assert_eq!(h.exited(Exit::Code(1), quick, UNSEEN, 0), Verdict::Replace);
        // A daemon became healthy (sent a result) since: the row restarts.
        assert_eq!(h.exited(Exit::Code(1), quick, UNSEEN, 1), Verdict::Replace);
        assert_eq!(h.exited(Exit::Code(1), quick, UNSEEN, 1), Verdict::Replace);
        assert!(matches!(h.exited(Exit::Code(1), quick, UNSEEN, 1), Verdict::GiveUp(_)));
    }

    #[test]
    fn daemons_beyond_the_cores_together_weigh_as_much_as_one_process_per_core() {
        for cores in [1, 2, 8] {
            for n in 0..=cores {
                assert_eq!(oversubscribed_nice(n, cores), 0);
            }
        }
        assert_eq!(oversubscribed_nice(16, 0), 0);
        // Each nice step is 1.25x less weight (the kernel's table).
        for (n, cores) in [(3, 2), (4, 2), (16, 2), (64, 8), (100, 4)] {
            let nice = oversubscribed_nice(n, cores);
            let weight = n as f64 * 1.25f64.powi(-nice);
            assert!((weight / cores as f64 - 1.0).abs() < 0.13, "{n} on {cores}: nice {nice}");
        }
        assert_eq!(oversubscribed_nice(16, 2), 9);
        // Never past the lowest priority.
        assert_eq!(oversubscribed_nice(10_000, 1), 19);
    }

    #[test]
    fn a_stream_goes_last_in_the_call_and_moves_to_the_next_substream() {
        let s: Stream = [10407, 1, 2, 3, 4, 5, 6];
        let spec = Spec {
            program: "Rscript".into(),
            args: vec!["-e".into(), "mirai::daemon(\"abstract://x\",dispatcher=FALSE)".into()],
            env: Vec::new(),
            persistent: false,
            stream: Some(s),
            nice: 3,
            scratch_in: None,
        };
        assert_eq!(
            spec.argv().unwrap()[1],
            "mirai::daemon(\"abstract://x\",dispatcher=FALSE,rs=c(10407L,1L,2L,3L,4L,5L,6L))"
        );
        let next = spec.successor();
        assert_eq!(next.stream, Some(rng::next_substream(&s)));
        assert_eq!(next.args, spec.args);
        assert_eq!(next.nice, 3);
        let none = Spec { stream: None, ..spec.clone() };
        assert_eq!(none.argv().unwrap(), spec.args);
        assert_eq!(none.successor().stream, None);
    }

    /// Real processes: a pool of `sh` children that die at once stops
    /// after the third quick death, with a notice; one killed after a
    /// while is replaced.
    #[test]
    fn a_pool_replaces_the_dead_and_stops_a_crash_loop() {
        let spec = |code: &str| Spec {
            program: "sh".into(),
            args: vec!["-c".into(), code.into()],
            env: Vec::new(),
            persistent: false,
            stream: None,
            nice: 0,
            scratch_in: Some(Base { dir: std::env::temp_dir(), tmpdir: None }),
        };
        let wait = |f: &dyn Fn() -> bool| {
            let until = std::time::Instant::now() + Duration::from_secs(20);
            while !f() && std::time::Instant::now() < until {
                std::thread::sleep(Duration::from_millis(10));
            }
            f()
        };
        let pool = Arc::new(Pool::default());
        pool.launch(spec("exit 3"), true).unwrap();
        assert!(wait(&|| pool.gave_up()));
        // Two replacements, then the third death stopped it.
        assert_eq!(pool.replaced(), 2);
        let why = pool.take_notice().expect("a notice");
        assert!(why.contains("exit status 3"), "{why}");
        assert!(pool.take_notice().is_none());
        pool.close();

        let pool = Arc::new(Pool::default());
        let pid = pool.launch(spec("sleep 30"), true).unwrap();
        // SAFETY: a plain syscall on our own child, which is still running.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        assert!(wait(&|| pool.replaced() == 1));
        let alive = || pool.with_children(|c| c.iter().filter(|c| c.exited().is_none()).map(|c| c.pid).collect::<Vec<_>>());
        assert!(wait(&|| alive().len() == 1));
        assert_ne!(alive()[0], pid);
        // Closed: its death is not answered.
        pool.close();
        pool.with_children(|c| c.iter().for_each(|c| { c.kill(); }));
        assert!(wait(&|| alive().is_empty()));
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(pool.replaced(), 1);
        assert!(alive().is_empty());
    }
}
