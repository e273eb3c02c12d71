//! `.Call`s for mirai: reading a value, waiting, racing, cancelling.

use crate::r::layer::call::{run_slice_hook, wait_interruptibly, RError, RResult};
use crate::r::layer::ffi::SEXP;
use crate::r::layer::global::MainThread;
use crate::r::layer::handle::{handle, kept, Held};
use crate::r::layer::later;
use crate::r::layer::object;
use super::profile::{Aio, Profile};
use super::shared::{error_value, mirai_error};
use crate::r::layer::serial;
use crate::r::layer::value::*;
use crate::host::aio::{wait_any, Doorbell, Outcome, Slot};
use crate::host::sched::ERR_CANCELED;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// The profile whose host keeps R's thread's claims after a cluster's
/// receive (`Host::linger_read`), and the process that left them
/// (`sys::fork`).
static LINGERING: MainThread<Option<(Weak<Profile>, u32)>> = MainThread::new(None);

/// Gives back the claims a cluster's receive left lingering (see `Claim` in
/// host/mod.rs), unless they are `keep`'s: a wait or a check that does not
/// read those daemons itself would otherwise find their replies only once
/// the host's loop thread takes the claims back (up to twice `LINGER`).
pub(super) fn settle_claims(keep: Option<&Arc<Profile>>) {
    // A forked child's copy of its parent's claims is not its own to give
    // back (the parent's loop thread holds them, in the parent).
    let here = crate::sys::fork::pid();
    let p = LINGERING.with(|l| l.as_ref().filter(|(_, pid)| *pid == here).and_then(|(w, _)| w.upgrade()));
    if p.as_ref().zip(keep).is_some_and(|(p, k)| Arc::ptr_eq(p, k)) {
        return;
    }
    LINGERING.with(|l| *l = None);
    if let Some(p) = p {
        p.host.settle();
    }
}

/// Ends a cluster receive's reading, keeping its claims (see above).
fn linger(profile: &Arc<Profile>) {
    profile.host.linger_read();
    LINGERING.with(|l| *l = Some((Arc::downgrade(profile), crate::sys::fork::pid())));
}

pub(super) fn aio(s: &impl Held) -> Result<&Aio, RError> {
    handle::<Aio>(s, "aio")
}

/// `.onLoad`: the data function (`aio_data`) and the 'unresolved' value.
pub fn mirai_r_init(data_fn: SEXP, unresolved: SEXP, free_fn: SEXP) -> RResult {
    object::init(data_fn, unresolved)?;
    crate::r::layer::handle::init_r_finalizer(free_fn)?;
    Ok(Owned::nil())
}

/// A mirai resolved to `value` from the start (sync mode).
pub fn mirai_resolved(value: SEXP) -> RResult {
    object::new_mirai(nil(), Some(value))
}

/// The converted value of the mirai behind aio handle `h`, if cached.
pub(super) fn cached(h: SEXP) -> Result<Option<SEXP>, RError> {
    object::cached_in_handle(h)
}

/// Caches `v` as the value of the mirai behind aio handle `h`.
pub(super) fn cache(h: SEXP, v: SEXP) -> Result<(), RError> {
    object::cache_in_handle(h, v)
}

/// The cached value of mirai `env` (NULL if none): with its handle, or as
/// `value` for one resolved from the start.
pub(super) fn cached_of(env: SEXP) -> Result<SEXP, RError> {
    let h = object::aio_of(env)?;
    if is_null(h) {
        return object::cached_value(env);
    }
    aio(&h)?;
    Ok(cached(h)?.unwrap_or_else(nil))
}

pub(super) fn outcome_to_sexp(o: Outcome, cfg: SEXP) -> RResult {
    match o {
        Outcome::Error(code) => error_value(code),
        Outcome::Value { body, offset } => match serial::unserialize_with(&body[offset..], cfg) {
            Ok(v) => Ok(v),
            Err(msg) => {
                drop(body);
                mirai_error(&format!("result could not be unserialized: {msg}"))
            }
        },
    }
}

/// Resolved: converts the outcome once, caches it with the handle and
/// returns it. Unresolved: the 'unresolved' value.
fn aio_data(a: &Aio, h: SEXP) -> RResult {
    if let Some(v) = cached(h)? {
        return Ok(Owned::reachable(v));
    }
    if !a.slot.is_done() {
        return Ok(Owned::reachable(object::unresolved()?));
    }
    match a.slot.take() {
        Some(o) => {
            let v = outcome_to_sexp(o, kept(h))?;
            cache(h, v.sexp())?;
            Ok(v)
        }
        None => Err("internal error in mirai: a resolved mirai lost its value".into()),
    }
}

/// `$data` (the body of every mirai's active binding, `aio` found in the
/// mirai): the value, or 'unresolved'. A mirai resolved from the start
/// (sync mode) has a plain `value` and no handle, so no active `data`
/// reads through here with NULL.
pub fn mirai_aio_data(h: SEXP) -> RResult {
    aio_data(aio(&h)?, h)
}

/// How long a wait spins before it blocks. A reply that comes back within
/// it costs no futex wake-up of R's thread, and the CPU stays out of its
/// idle state, whose exit dominates a small round trip on this kind of
/// (virtualised) machine: measured here, 80 us of spinning took the tiny
/// round trip from 0.77-0.80x PSOCK's to 0.34-0.45x. The price is at most
/// this much CPU per wait that outlasts it.
const SPIN: Duration = Duration::from_micros(150);

/// Spins (at most `SPIN`) until `ready()` gives Some; its last answer.
/// Each turn yields the CPU: on 2 cores the spinner otherwise holds one that
/// the daemon, the host's I/O thread or another process needs to produce
/// the very reply it waits for. Measured here in one process, batches
/// interleaved (load 4-8), the tiny round trip took 115-129 us spinning
/// 80 us without yielding, 88-93 us yielding (80-300 us alike); a spin of
/// 20 us without yielding, 112-123 us.
fn spin<T>(mut ready: impl FnMut() -> Option<T>) -> Option<T> {
    let until = Instant::now() + SPIN;
    loop {
        let r = ready();
        if r.is_some() || Instant::now() >= until {
            return r;
        }
        std::thread::yield_now();
    }
}

/// Waits for a mirai: as `wait_slot`, but while it spins it also reads the
/// reply from the task's daemon itself (`Host::read_for`), so the reply need
/// not wait for the host's loop thread to be woken and scheduled, then wake
/// this one. Measured here in one process, batches interleaved: the tiny
/// round trip 5-20% faster than spinning on the slot alone (5 of 6 runs).
pub(super) fn wait_aio(a: &Aio) -> Result<(), RError> {
    wait_reading(a, false)
}

/// `wait_aio` for a cluster node's receive: the claim on its daemon is
/// kept for parallel's next receive (see `Host::linger_read`).
pub(super) fn wait_node(a: &Aio) -> Result<(), RError> {
    wait_reading(a, true)
}

fn wait_reading(a: &Aio, keep: bool) -> Result<(), RError> {
    settle_claims(keep.then_some(&a.profile));
    let host = &a.profile.host;
    let read = || {
        if !a.slot.is_done() {
            host.read_for(a.id);
        }
        a.slot.is_done().then_some(())
    };
    let spun = spin(read);
    if spun.is_some() && keep {
        linger(&a.profile);
    } else {
        host.end_read();
    }
    if spun.is_some() {
        return run_slice_hook();
    }
    wait_interruptibly(|slice| a.slot.wait(slice))
}

pub(super) fn wait_slot(slot: &Slot) -> Result<(), RError> {
    settle_claims(None);
    if spin(|| slot.is_done().then_some(())).is_some() {
        return run_slice_hook();
    }
    wait_interruptibly(|slice| slot.wait(slice))
}

/// The index of the first of `slots` to resolve: spins, then blocks on the
/// doorbells of their profiles (one `Select`, also across profiles), so an
/// idle wait costs nothing; slices only exist to notice a user interrupt.
pub(super) fn race(slots: &[Arc<Slot>]) -> Result<usize, RError> {
    settle_claims(None);
    let done = || slots.iter().position(|s| s.is_done());
    if let Some(i) = spin(done) {
        run_slice_hook()?;
        return Ok(i);
    }
    race_blocking(slots)
}

/// `race` over the tasks `aios` of one profile (a cluster's nodes): while
/// it spins it also reads their daemons itself, as `wait_aio` does for one.
/// Measured here (bench/parallel.R, runs one after the other):
/// clusterApplyLB() on 2 nodes 21,500-23,000 tasks/s spinning on the slots
/// alone, 25,000-27,200 reading too (PSOCK: 7,300-8,600).
pub(super) fn race_reading(aios: &[&Aio]) -> Result<usize, RError> {
    let slots: Vec<Arc<Slot>> = aios.iter().map(|a| a.slot.clone()).collect();
    let Some(first) = aios.first() else { return race(&slots) };
    if aios.iter().any(|a| !Arc::ptr_eq(&a.profile, &first.profile)) {
        return race(&slots);
    }
    settle_claims(Some(&first.profile));
    let host = &first.profile.host;
    // Oldest first: the likeliest to have resolved (`Host::read_for_any`).
    let mut ids: Vec<u64> = aios.iter().map(|a| a.id).collect();
    ids.sort_unstable();
    let done = || slots.iter().position(|s| s.is_done());
    let read = || {
        done().or_else(|| {
            host.read_for_any(&ids, || done().is_some());
            done()
        })
    };
    let spun = spin(read);
    if let Some(i) = spun {
        // parallel's next receive reads the same nodes (see `Claim`).
        linger(&first.profile);
        run_slice_hook()?;
        return Ok(i);
    }
    host.end_read();
    race_blocking(&slots)
}

/// The blocking part of `race`, after its spin.
fn race_blocking(slots: &[Arc<Slot>]) -> Result<usize, RError> {
    let mut bells: Vec<Arc<Doorbell>> = Vec::new();
    for s in slots {
        if !bells.iter().any(|b| Arc::ptr_eq(b, s.bell())) {
            bells.push(s.bell().clone());
        }
    }
    let mut first = None;
    wait_interruptibly(|slice| {
        first = wait_any(slots, &bells, slice);
        first.is_some()
    })?;
    first.ok_or_else(|| "internal error in mirai: a race ended with nothing resolved".into())
}

/// `x[]`: waits (interruptibly) for a mirai and returns its value.
pub fn mirai_value(x: SEXP) -> RResult {
    let h = object::aio_of(x)?;
    if is_null(h) {
        return Ok(Owned::reachable(object::cached_value(x)?));
    }
    let a = aio(&h)?;
    if cached(h)?.is_none() {
        wait_aio(a)?;
    }
    aio_data(a, h)
}

/// `unresolved()`: like reading `$data`, converts and caches the value once
/// resolved; TRUE if resolved.
pub fn mirai_aio_collect(h: SEXP) -> RResult {
    // A loop polling unresolved() runs no wait: relayed conditions are
    // shown here too.
    run_slice_hook()?;
    settle_claims(None);
    let v = aio_data(aio(&h)?, h)?;
    lgl(v.sexp() != object::unresolved()?)
}

/// Blocks until resolved; a user interrupt ends the wait and is re-raised.
pub fn mirai_aio_wait(h: SEXP) -> RResult {
    wait_aio(aio(&h)?)?;
    Ok(Owned::nil())
}

/// `race_mirai()`: the 1-based index of the first resolved element of the
/// list `aios` (aio handles, or NULL for a mirai that never had one), 0 for
/// an empty list.
pub fn mirai_race(aios: SEXP) -> RResult {
    if !is_list(aios) {
        return Err("internal error in mirai: race_mirai() passed no list of aio handles".into());
    }
    let mut slots: Vec<Arc<Slot>> = Vec::with_capacity(len(aios));
    for i in 0..len(aios) {
        let s = list_at(aios, i);
        if is_null(s) {
            return int(i as i32 + 1);
        }
        slots.push(aio(&s)?.slot.clone());
    }
    if slots.is_empty() {
        return int(0);
    }
    int(race(&slots)? as i32 + 1)
}

/// The host's number for the task behind aio handle `h` (the timeline's
/// `task`): a double, as task numbers may pass 2^31.
pub fn mirai_aio_id(h: SEXP) -> RResult {
    real(aio(&h)?.id as f64)
}

/// TRUE once the task behind aio handle `h` has resolved.
pub fn mirai_aio_done(h: SEXP) -> RResult {
    let a = aio(&h)?;
    if !a.slot.is_done() {
        // A node's `con` (future's resolved()) polls this between receives.
        settle_claims(None);
    }
    lgl(a.slot.is_done())
}

/// Resolves the mirai to "operation canceled" at once. TRUE if the
/// dispatcher found the task and withdrew or interrupted it.
pub fn mirai_aio_cancel(h: SEXP) -> RResult {
    lgl(cancel(aio(&h)?))
}

/// Resolves `a` to "operation canceled". The host forgets the task either
/// way (an ephemeral host can then stop); only a dispatcher also
/// interrupts it on its daemon, and says whether it found it.
pub(super) fn cancel(a: &Aio) -> bool {
    let found = a.profile.host.cancel(a.id, ERR_CANCELED) && a.profile.host.dispatcher;
    a.slot.complete(Outcome::Error(ERR_CANCELED));
    found
}

/// `as.promise()`: calls R closure `settle` (on R's main thread, through
/// later) once the mirai resolves. FALSE if it already has, so the caller
/// settles at once.
pub fn mirai_on_resolve(h: SEXP, settle: SEXP) -> RResult {
    let a = aio(&h)?;
    if !is_function(settle) {
        return Err("internal error in mirai: as.promise() passed no function to settle with".into());
    }
    lgl(later::on_resolve(&a.slot, settle)?)
}
