//! The dispatcher-mode state machine at scale: 10,000 simulated daemons and
//! 1,000,000 tasks (and the no-dispatcher pick among 10,000 daemons), with the cost of each scheduling decision and the memory
//! each queued task holds. No I/O, so the figures are the scheduler's own,
//! a floor under what the host's event loop can do.
//!
//! One test function only: the allocation counter is process-wide, and a
//! second test running in parallel would allocate into the measurement and
//! compete for the two cores during the timing.
//!
//! `cargo test --release --test sched_scale -- --nocapture` prints the
//! details; a one-line summary is written past the test harness's capture so
//! it shows in a normal run too.

use mirai::host::sched::{Action, DaemonId, Sched, TaskId};
use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::Instant;

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(n: usize) {
    let now = LIVE.fetch_add(n, Relaxed) + n;
    PEAK.fetch_max(now, Relaxed);
}

// SAFETY: every method passes its arguments on to the system allocator
// unchanged and returns what it returns; the bookkeeping around it neither
// allocates nor unwinds.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for this method, passed on.
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            grew(l.size());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for this method, passed on.
        let p = unsafe { System.alloc_zeroed(l) };
        if !p.is_null() {
            grew(l.size());
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: the caller's contract for this method, passed on.
        unsafe { System.dealloc(p, l) };
        LIVE.fetch_sub(l.size(), Relaxed);
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        // SAFETY: the caller's contract for this method, passed on.
        let q = unsafe { System.realloc(p, l, new) };
        if !q.is_null() {
            if new >= l.size() {
                grew(new - l.size());
            } else {
                LIVE.fetch_sub(l.size() - new, Relaxed);
            }
        }
        q
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Debug builds only check correctness, on a tenth of the load.
const RELEASE: bool = !cfg!(debug_assertions);
const DAEMONS: u64 = if RELEASE { 10_000 } else { 1_000 };
const TASKS: u64 = if RELEASE { 1_000_000 } else { 100_000 };
/// A scan over 10,000 daemons would cost about 1,000 times one over 10; a
/// tree or an index a few times as much. The larger working set misses the
/// cache more when other processes compete for it: the no-dispatcher pick
/// measured 2.4x idle, 4.5x at load 8 and 5.5x at load 19 on two cores
/// (best of five each), so the ceiling leaves room for load and still
/// catches a scan by two orders of magnitude.
const MAX_SLOWDOWN: f64 = 10.0;

fn sends(acts: &[Action]) -> impl Iterator<Item = (DaemonId, TaskId)> + '_ {
    acts.iter().filter_map(|a| match *a {
        Action::Send { daemon, task } => Some((daemon, task)),
        _ => None,
    })
}

/// xorshift64: a fixed, cheap sequence so both sizes do identical work.
fn xorshift(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

/// ns per submit+reply cycle with `daemons` connected and all idle: each
/// submit picks one idle daemon, each reply returns it.
fn idle_pick_ns(daemons: u64, iters: u64) -> f64 {
    let mut s = Sched::new(true);
    for d in 0..daemons {
        s.connect(d);
    }
    assert_eq!(s.idle_count() as u64, daemons);
    let t0 = Instant::now();
    for t in 0..iters {
        let a = s.submit(t);
        let (d, _) = sends(&a).next().expect("an idle daemon takes the task at once");
        s.reply(d, t, false);
    }
    t0.elapsed().as_nanos() as f64 / iters as f64
}

/// ns per reply→next-send with every daemon busy and a deep queue: the daemon
/// that replies, chosen at random, is the only idle one, so finding it by
/// scanning would cost O(daemons) per decision.
fn busy_pick_ns(daemons: u64, iters: u64) -> f64 {
    let mut s = Sched::new(true);
    let mut running = vec![0 as TaskId; daemons as usize];
    for t in 0..daemons + iters {
        s.submit(t);
    }
    for d in 0..daemons {
        let a = s.connect(d);
        running[d as usize] = sends(&a).next().unwrap().1;
    }
    let mut x = 0x2545_f491_4f6c_dd1d;
    let t0 = Instant::now();
    for _ in 0..iters {
        let d = xorshift(&mut x) % daemons;
        let a = s.reply(d, running[d as usize], false);
        running[d as usize] = sends(&a).next().expect("queue is deep enough").1;
    }
    t0.elapsed().as_nanos() as f64 / iters as f64
}

/// ns per submit+reply cycle without a dispatcher (least loaded daemon),
/// with `daemons` connected and each holding one task: a pick, the host's
/// report that the frame was written, and the reply each move a daemon in
/// the ordered set, as on the host's hot path.
fn least_loaded_pick_ns(daemons: u64, iters: u64) -> f64 {
    let mut s = Sched::new(false);
    for d in 0..daemons {
        s.connect(d);
    }
    for t in 0..daemons {
        let a = s.submit(t);
        let (d, _) = sends(&a).next().expect("a daemon takes the task at once");
        s.unwritten(d, 0);
    }
    let t0 = Instant::now();
    for t in daemons..daemons + iters {
        let a = s.submit(t);
        let (d, _) = sends(&a).next().expect("a daemon takes the task at once");
        s.unwritten(d, 0);
        s.reply(d, t, false);
    }
    t0.elapsed().as_nanos() as f64 / iters as f64
}

/// Best of several runs: on a shared machine the minimum is the figure least
/// disturbed by other work.
fn best(runs: usize, f: impl Fn() -> f64) -> f64 {
    (0..runs).map(|_| f()).fold(f64::INFINITY, f64::min)
}

#[test]
fn ten_thousand_daemons_one_million_tasks() {
    let started = Instant::now();
    let mut s = Sched::new(true);

    // Everything queues: no daemon yet.
    let base = LIVE.load(Relaxed);
    PEAK.store(base, Relaxed);
    let t0 = Instant::now();
    for t in 0..TASKS {
        assert!(s.submit(t).is_empty());
    }
    let submit_ns = t0.elapsed().as_nanos() as f64 / TASKS as f64;
    let queued_bytes = LIVE.load(Relaxed) - base;
    let peak_bytes = PEAK.load(Relaxed) - base;
    let per_task = queued_bytes as f64 / TASKS as f64;
    assert_eq!(s.counters().awaiting, TASKS);

    // Each daemon that connects takes the next task.
    let mut running: Vec<Option<TaskId>> = vec![None; DAEMONS as usize];
    let mut delivered = vec![0u8; TASKS as usize];
    let mut next_expected: TaskId = 0;
    let t0 = Instant::now();
    for d in 0..DAEMONS {
        let a = s.connect(d);
        let (to, t) = sends(&a).next().expect("a new daemon takes a queued task");
        assert_eq!((to, t), (d, next_expected), "FIFO on connect");
        next_expected += 1;
        running[d as usize] = Some(t);
    }
    let connect_ns = t0.elapsed().as_nanos() as f64 / DAEMONS as f64;
    let c = s.counters();
    assert_eq!((c.connections, c.executing, c.awaiting), (DAEMONS, DAEMONS, TASKS - DAEMONS));
    assert_eq!(s.idle_count(), 0);

    // Replies arrive from daemons in a scattered order (a stride coprime to
    // the daemon count), each freeing its daemon for the next queued task.
    let stride = 7_919; // prime, coprime to 10,000 and 1,000
    let (mut replies, mut decisions) = (0u64, 0u64);
    let t0 = Instant::now();
    loop {
        let mut any = false;
        for i in 0..DAEMONS {
            let d = (i * stride) % DAEMONS;
            let Some(t) = running[d as usize].take() else { continue };
            any = true;
            replies += 1;
            for a in s.reply(d, t, false) {
                match a {
                    Action::Deliver { task } => delivered[task as usize] += 1,
                    Action::Send { daemon, task } => {
                        assert_eq!((daemon, task), (d, next_expected), "FIFO, to the daemon that just replied");
                        next_expected += 1;
                        decisions += 1;
                        running[daemon as usize] = Some(task);
                    }
                    Action::Drop { .. } => {}
                    other => panic!("unexpected {other:?}"),
                }
            }
        }
        if !any {
            break;
        }
    }
    let reply_ns = t0.elapsed().as_nanos() as f64 / replies as f64;

    assert_eq!(replies, TASKS);
    assert_eq!(decisions, TASKS - DAEMONS);
    let wrong: Vec<usize> = (0..delivered.len()).filter(|&i| delivered[i] != 1).take(5).collect();
    assert!(wrong.is_empty(), "tasks not delivered exactly once, e.g. {wrong:?}");
    let c = s.counters();
    assert_eq!((c.completed, c.awaiting, c.executing), (TASKS, 0, 0));
    assert_eq!((s.pending_tasks(), s.tracked_tasks()), (0, 0));
    assert_eq!(s.idle_count() as u64, DAEMONS);
    drop(s);

    // O(1) pick: the cost per decision must not grow with the daemon count.
    let iters = if RELEASE { 200_000 } else { 20_000 };
    let idle_small = best(5, || idle_pick_ns(10, iters));
    let idle_large = best(5, || idle_pick_ns(DAEMONS, iters));
    let busy_small = best(5, || busy_pick_ns(10, iters));
    let busy_large = best(5, || busy_pick_ns(DAEMONS, iters));
    let least_small = best(5, || least_loaded_pick_ns(10, iters));
    let least_large = best(5, || least_loaded_pick_ns(DAEMONS, iters));

    let total = started.elapsed().as_secs_f64();
    println!("sched scale ({} build): {DAEMONS} daemons, {TASKS} tasks", if RELEASE { "release" } else { "debug" });
    println!("  submit (queue only)        {submit_ns:8.1} ns/task");
    println!("  connect (takes a task)     {connect_ns:8.1} ns/daemon");
    println!("  reply -> next send         {reply_ns:8.1} ns/reply (deliver + drop + send)");
    println!(
        "  queued task memory         {per_task:8.1} B/task ({queued_bytes} B live for {TASKS} queued; peak {:.1} B/task while growing)",
        peak_bytes as f64 / TASKS as f64
    );
    println!(
        "  submit+reply, all idle     {idle_small:8.1} ns with 10 daemons, {idle_large:8.1} ns with {DAEMONS} ({:.2}x)",
        idle_large / idle_small
    );
    println!(
        "  reply->send, all busy      {busy_small:8.1} ns with 10 daemons, {busy_large:8.1} ns with {DAEMONS} ({:.2}x)",
        busy_large / busy_small
    );
    println!(
        "  no dispatcher, submit+reply {least_small:7.1} ns with 10 daemons, {least_large:8.1} ns with {DAEMONS} ({:.2}x)",
        least_large / least_small
    );
    println!("  total                      {total:8.2} s");
    // Written to the stream itself, not through eprintln!, which the test
    // harness captures like println!.
    let _ = writeln!(
        std::io::stderr(),
        "sched_scale: {TASKS} tasks / {DAEMONS} daemons: submit {submit_ns:.0} ns, reply->send {reply_ns:.0} ns, \
         {per_task:.0} B per queued task; pick with {DAEMONS} vs 10 daemons: idle {:.2}x, busy {:.2}x, \
         no dispatcher {:.2}x ({least_small:.0} ns); {total:.1} s",
        idle_large / idle_small,
        busy_large / busy_small,
        least_large / least_small
    );

    if RELEASE {
        assert!(
            idle_large < MAX_SLOWDOWN * idle_small,
            "picking among {DAEMONS} idle daemons costs {idle_large:.0} ns vs {idle_small:.0} ns among 10"
        );
        assert!(
            busy_large < MAX_SLOWDOWN * busy_small,
            "finding the one idle daemon among {DAEMONS} costs {busy_large:.0} ns vs {busy_small:.0} ns among 10"
        );
        // O(log n): 4x the levels of a tree of 10 at most, and no scan.
        assert!(
            least_large < MAX_SLOWDOWN * least_small,
            "picking the least loaded of {DAEMONS} daemons costs {least_large:.0} ns vs {least_small:.0} ns among 10"
        );
        // A task waiting in the queue is an id in the queue plus one map
        // entry; a per-task heap object would show up here.
        assert!(per_task < 160.0, "{per_task:.0} bytes per queued task");
    }
}
