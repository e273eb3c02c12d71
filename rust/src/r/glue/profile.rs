//! `.Call`s for a compute profile: its host (listener, dispatcher, daemon
//! connections) and the local daemons it launched.

use crate::r::layer::call::{console_message, wait_interruptibly, RError, RResult};
use crate::r::layer::ffi::{INTSXP, REALSXP, SEXP, STRSXP, VECSXP};
use crate::r::layer::global::MainOnce;
use crate::r::layer::handle::{handle, kept, new_handle, Held, Tagged};
use crate::r::layer::lang::{env_get, eval_in, install, is_env, symbol_at};
use crate::r::layer::object;
use crate::r::layer::serial;
use crate::r::layer::value::*;
use crate::host::aio::Slot;
use super::shared::max_message;
use crate::host::{exact_frame, item_head_into, put_scratch, take_scratch, Host, HostOptions};
use crate::wire::frame::TASK_WHOLE;
use crate::host::pool::{oversubscribed_nice, Pool, Spec};
use crate::wire::url::Address;
use std::ffi::CStr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a mirai's aio handle owns: its completion slot, its task id, and
/// its profile (kept alive while any of its mirai is).
pub struct Aio {
    pub slot: Arc<Slot>,
    pub id: u64,
    pub profile: Arc<Profile>,
}

impl Aio {
    pub fn new(slot: Arc<Slot>, id: u64, profile: Arc<Profile>) -> Aio {
        #[cfg(feature = "test-hooks")]
        LIVE_AIOS.fetch_add(1, Ordering::Relaxed);
        Aio { slot, id, profile }
    }
}

/// Aio values alive, for tests of their finalizer (test builds only).
#[cfg(feature = "test-hooks")]
static LIVE_AIOS: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);

/// For tests: how many aio handles' values are alive. Only in a build
/// with the `test-hooks` feature.
#[cfg(feature = "test-hooks")]
pub fn mirai_test_live_aios() -> RResult {
    real(LIVE_AIOS.load(Ordering::Relaxed) as f64)
}

/// Conditions held for a cluster node's task (`Inbox::take_held`) are only
/// taken by a receive on that node: once the task's handle is gone (its
/// mirai collected, a receive interrupted and the node's tasks dropped)
/// nothing ever will, and held conditions would fill the profile's inbox
/// for good, so that every later relay were dropped: those held go, and a
/// task still running holds no more (`Inbox::abandon`).
impl Drop for Aio {
    fn drop(&mut self) {
        #[cfg(feature = "test-hooks")]
        LIVE_AIOS.fetch_sub(1, Ordering::Relaxed);
        let inbox = &self.profile.host.relay;
        if inbox.enabled() {
            inbox.abandon(self.id, &self.slot);
        }
    }
}

impl Tagged for Aio {
    const TAG: &'static CStr = c"mirai_aio";
    const R_FINALIZED: bool = true;
    // Even a resolved one: its cancel, its cluster node's drop and the
    // claims of its reads reach the parent's host and sockets.
    const REFUSED_IN_FORK: bool = true;
}

/// The R finalizer of aio handles (`aio_free` in R/mirai-package.R).
pub fn mirai_aio_free(h: SEXP) -> RResult {
    crate::r::layer::handle::free_handle::<Aio>(h);
    Ok(Owned::nil())
}

/// A new mirai object around `a`; `cfg` is the serialization config its
/// value will be read with.
pub fn new_aio(a: Aio, cfg: SEXP) -> RResult {
    let h = new_handle(a, cfg)?;
    object::new_mirai(h.sexp(), None)
}

/// What a profile handle owns.
pub struct Profile {
    pub host: Host,
    /// The local daemons it launched (and keeps at their number).
    pub pool: Arc<Pool>,
    /// `tls+tcp://`: the PEM certificate chain daemons verify the host with.
    pub tlscert: Option<String>,
}

impl Drop for Profile {
    fn drop(&mut self) {
        // Before the host goes: no replacement is launched for a daemon
        // that exits because its host closed.
        self.pool.close();
    }
}

impl Tagged for Arc<Profile> {
    const TAG: &'static CStr = c"mirai_profile";
    const REFUSED_IN_FORK: bool = true;
}

pub(super) fn profile(p: &impl Held) -> Result<&Arc<Profile>, RError> {
    handle::<Arc<Profile>>(p, "profile")
}

/// The R error for a call on a profile whose host failed.
pub fn host_failed(why: String) -> RError {
    let reset = crate::host::sched::ERR_RESET;
    format!("this compute profile's host has failed: {why}; its pending mirai resolved to errorValue {reset}. Reset it with daemons(0)").into()
}

/// Most tasks one `everywhere()` call may create for daemons yet to connect
/// (R checks `.min` against it).
pub const MAX_EVERYWHERE: f64 = 1e5;

/// The cap on queued bytes, as R's memory_bytes() gave it (0: none).
fn memory_cap(s: SEXP) -> Result<u64, RError> {
    let b = f64_arg(s, "memory")?;
    Ok(if b.is_finite() && b > 0.0 { b.ceil() as u64 } else { 0 })
}

/// `.timeout` as mirai() checked it: NULL or Inf for none.
fn opt_timeout(s: SEXP) -> Result<Option<Duration>, RError> {
    if is_null(s) {
        return Ok(None);
    }
    let ms = f64_arg(s, ".timeout")?;
    Ok(if ms.is_finite() { Some(Duration::from_micros((ms.max(0.0) * 1000.0) as u64)) } else { None })
}

/// `.retry` as check_retry() (R/mirai.R) checked it, the one check with
/// the user's message: how many times a task is resent when its daemon
/// dies.
pub fn retries(s: SEXP) -> Result<u32, RError> {
    let k = f64_arg(s, ".retry")?;
    if !(0.0..=1e6).contains(&k) || k.fract() != 0.0 {
        return Err("internal error in mirai: `.retry` reached the native side unchecked".into());
    }
    Ok(k as u32)
}

pub(super) fn serialize_task(data: SEXP, cfg: SEXP, buf: &mut Vec<u8>) -> Result<(), RError> {
    serial::serialize_with(data, buf, cfg).map_err(|e| match e {
        RError::Msg(m) => RError::Msg(format!("cannot serialize the task: {m}")),
        e => e,
    })
}

/// Starts a profile's host. `stream`: NULL, or the profile's L'Ecuyer-CMRG
/// stream, from which each accepted daemon gets the next one in its Init.
/// `settings`: NULL, or a list sent (serialized here, on R's main thread)
/// to every daemon in its Init; its `serial` element is also the host's
/// serialization config. `memory`: cap in bytes on the queued tasks, 0 for
/// none. `max_msg`: the message size cap (NULL: default). `tls`: for a
/// `tls+tcp://` URL, NULL to generate a self-signed certificate for the
/// URL's host, or PEM text (certificate, chain, key); `pass` the key's
/// password (NULL: none).
#[allow(clippy::too_many_arguments)]
pub fn mirai_host_start(
    url: SEXP,
    dispatcher: SEXP,
    secret: SEXP,
    oneshot: SEXP,
    stream: SEXP,
    settings: SEXP,
    memory: SEXP,
    max_msg: SEXP,
    tls: SEXP,
    pass: SEXP,
) -> RResult {
    let url = str_arg(url, "url")?;
    let addr = Address::parse(&url)?;
    let creds = match &addr {
        Address::Tcp { tls: true, host, .. } if is_null(tls) => Some(crate::wire::tls::generated_creds(host)?),
        Address::Tcp { tls: true, .. } => {
            let pem = strs_arg(tls, "tls")?.join("\n");
            let pass = if is_null(pass) { None } else { Some(str_arg(pass, "pass")?) };
            Some(crate::wire::tls::server_creds(&pem, pass.as_deref())?)
        }
        _ => None,
    };
    let rng_stream = if is_null(stream) { None } else { Some(ints_arg::<7>(stream, "stream")?) };
    let serial_cfg = list_get(settings, "serial");
    serial::check_config(serial_cfg)?;
    let mut blob = Vec::new();
    if !is_null(settings) {
        serial::serialize_into(settings, &mut blob)?;
    }
    let opts = HostOptions {
        dispatcher: bool_arg(dispatcher, "dispatcher")?,
        secret: if is_null(secret) { None } else { Some(str_arg(secret, "secret")?) },
        oneshot: bool_arg(oneshot, "oneshot")?,
        rng_stream,
        settings: blob,
        memory_cap: memory_cap(memory)?,
        max_message: max_message(max_msg)?,
    };
    let host = Host::start_with(&addr, opts, creds.as_ref().map(|c| c.config.clone()))?;
    let tlscert = creds.map(|c| c.chain_pem);
    let pool = Arc::new(Pool::new(host.health.clone()));
    new_handle(Arc::new(Profile { host, pool, tlscert }), serial_cfg)
}

/// Checks a user's TLS credentials (PEM text of the certificate chain and
/// key; the key's password or NULL) as `mirai_host_start` would read them,
/// so that `daemons()` can refuse them before it resets a profile. NULL, or
/// an error naming `tls` or `pass`.
pub fn mirai_tls_check(tls: SEXP, pass: SEXP) -> RResult {
    let pem = strs_arg(tls, "tls")?.join("\n");
    let pass = if is_null(pass) { None } else { Some(str_arg(pass, "pass")?) };
    crate::wire::tls::server_creds(&pem, pass.as_deref())?;
    Ok(Owned::nil())
}

/// The PEM certificate chain daemons verify a `tls+tcp://` host with; NULL
/// for other URLs.
pub fn mirai_host_tlscert(p: SEXP) -> RResult {
    match &profile(&p)?.tlscert {
        Some(pem) => string(pem),
        None => Ok(Owned::nil()),
    }
}

pub fn mirai_host_url(p: SEXP) -> RResult {
    string(&profile(&p)?.host.url)
}

/// Submits a task; returns its mirai. Waits (interruptibly) first while the
/// queue is at the memory cap: nothing has been serialized or queued yet,
/// so an interrupt leaves no trace.
pub fn mirai_host_submit(p: SEXP, data: SEXP, timeout: SEXP, retry: SEXP) -> RResult {
    let timeout = opt_timeout(timeout)?;
    let retries = retries(retry)?;
    submit_task(p, data, timeout, retries)
}

/// Submits task `data` on profile handle `p`, once the dispatcher's queue
/// has room for it (`daemons(memory =)`), and returns its mirai.
fn submit_task(p: SEXP, data: SEXP, timeout: Option<Duration>, retries: u32) -> RResult {
    let prof = profile(&p)?;
    let stats = &prof.host.stats;
    if !stats.has_room() {
        // Room comes as the loop thread reads replies.
        super::mirai::settle_claims(None);
        wait_interruptibly(|slice| stats.wait_room(slice))?;
    }
    let a = submit_with(prof, p, data, |host, id, frame, slot| host.submit_retrying(id, frame, slot, timeout, retries))?;
    new_aio(a, kept(p))
}

/// `mirai()`'s common case in one call (R/mirai.R): `expr` already
/// substituted, `dots` the `...` arguments as list(...) (NULL for none),
/// `frame` mirai()'s own frame, whose `.args`, `.timeout`, `.retry` and
/// `.compute` are forced here one by one, in that order, each checked
/// before the next is forced (as R's checks did), `state` the package's
/// session state (`.`, with `profiles` and `current`). Submits and returns
/// the mirai when the arguments need no more than a check (named `...`, a
/// plain named or empty `.args`, a `.timeout` of NULL or a number,
/// `.retry = 0L`) and the profile is an ordinary one: set, not sync mode,
/// not seeded, no notice pending for the user. Otherwise NULL, at the
/// first argument that needs more, and R's own path (the same checks, with
/// their messages) runs on: nothing is evaluated twice, and an argument
/// after a wrong one is not evaluated at all. The R code this replaces
/// cost about 4 us of a tiny task's 45-50 us round trip.
pub fn mirai_submit_fast(expr: SEXP, dots: SEXP, frame: SEXP, state: SEXP) -> RResult {
    let k = fast_consts()?;
    // An argument's symbol evaluated in the frame forces its promise as R
    // does (an error in it is R's, continued as it was raised).
    let force_arg = |sym: SEXP| eval_in(sym, frame);
    let plain_list = |x: SEXP| type_of(x) == VECSXP && !has_class(x) && all_named(x);
    if !(is_null(dots) || plain_list(dots)) {
        return Ok(Owned::nil());
    }
    let args = force_arg(k.args)?;
    if !plain_list(args.sexp()) {
        return Ok(Owned::nil());
    }
    let timeout = force_arg(k.timeout)?;
    let t = timeout.sexp();
    let number = (type_of(t) == REALSXP || type_of(t) == INTSXP) && len(t) == 1 && !has_class(t) && f64_arg(t, ".timeout").is_ok_and(|v| v >= 0.0);
    if !(is_null(t) || number) {
        return Ok(Owned::nil());
    }
    let retry = force_arg(k.retry)?;
    let r = retry.sexp();
    if !(type_of(r) == INTSXP && len(r) == 1 && !has_class(r) && ints_arg::<1>(r, ".retry").is_ok_and(|[n]| n == 0)) {
        return Ok(Owned::nil());
    }
    let compute = force_arg(k.compute)?;
    let Some(prof) = current_profile(compute.sexp(), state)? else { return Ok(Owned::nil()) };
    let p = env_get(prof.sexp(), k.host)?;
    if is_true(env_get(prof.sexp(), k.sync)?.sexp()) || !is_null(env_get(prof.sexp(), k.seed)?.sexp()) || is_null(p.sexp()) {
        return Ok(Owned::nil());
    }
    if profile(&p)?.pool.has_notice() {
        return Ok(Owned::nil());
    }
    let globals = if is_null(dots) { new_list(0)? } else { Owned::reachable(dots) };
    let data = list(&[expr, globals.sexp(), args.sexp()], &[])?;
    submit_task(p.sexp(), data.sexp(), opt_timeout(t)?, 0)
}

/// The profile `compute` names (NULL: the current one) as `profile_of()`
/// finds it, None if it is not set (or `state` is not as expected).
fn current_profile(compute: SEXP, state: SEXP) -> Result<Option<Owned>, RError> {
    let k = fast_consts()?;
    if !is_env(state) {
        return Ok(None);
    }
    let profiles = env_get(state, k.profiles)?;
    let current;
    let name = if is_null(compute) {
        current = env_get(state, k.current)?;
        current.sexp()
    } else {
        compute
    };
    // SAFETY: R's constant.
    let na = unsafe { crate::r::layer::ffi::R_NaString };
    if type_of(name) != STRSXP || len(name) != 1 || char_at(name, 0) == na || !is_env(profiles.sexp()) {
        return Ok(None);
    }
    // A name R cannot translate is left to R's path, and its message.
    let Ok(sym) = symbol_at(name, 0) else { return Ok(None) };
    let prof = env_get(profiles.sexp(), sym)?;
    Ok(is_env(prof.sexp()).then_some(prof))
}

struct FastConsts {
    args: SEXP,
    timeout: SEXP,
    retry: SEXP,
    compute: SEXP,
    profiles: SEXP,
    current: SEXP,
    host: SEXP,
    sync: SEXP,
    seed: SEXP,
}

static FAST: MainOnce<FastConsts> = MainOnce::new();

fn fast_consts() -> Result<&'static FastConsts, RError> {
    FAST.get(|| {
        Ok(FastConsts {
            args: install(c".args")?,
            timeout: install(c".timeout")?,
            retry: install(c".retry")?,
            compute: install(c".compute")?,
            profiles: install(c"profiles")?,
            current: install(c"current")?,
            host: install(c"host")?,
            sync: install(c"sync")?,
            seed: install(c"seed")?,
        })
    })
}

/// Serializes task `data` into a frame, hands it to the host with `send`,
/// and returns the task's aio.
fn submit_with(
    prof: &Arc<Profile>,
    p: SEXP,
    data: SEXP,
    send: impl FnOnce(&Host, u64, Vec<u8>, Arc<Slot>) -> Result<(), String>,
) -> Result<Aio, RError> {
    let cfg = kept(p);
    let id = prof.host.next_task_id();
    let frame = prof.host.task_frame(id, |buf| serialize_task(data, cfg, buf))?;
    let slot = Slot::new(prof.host.bell.clone());
    send(&prof.host, id, frame, slot.clone()).map_err(host_failed)?;
    Ok(Aio::new(slot, id, prof.clone()))
}

/// How often a wait for daemons to connect says it is still waiting (here
/// for a cluster node's daemon; in R, `daemons(n)` for its daemons).
pub const WAIT_NOTE: Duration = Duration::from_secs(10);

/// Waits (interruptibly) until the `node`-th daemon (from 0) has joined
/// the host.
pub(super) fn wait_for_node(prof: &Profile, node: usize) -> Result<(), RError> {
    let stats = &prof.host.stats;
    if stats.cumulative.load(Ordering::Relaxed) > node as u64 {
        return Ok(());
    }
    // Remote daemons may take long to join (a scheduler's queue), or
    // never (a failed launch): say what the wait is for, every WAIT_NOTE.
    let start = Instant::now();
    let mut next_note = WAIT_NOTE;
    wait_interruptibly(|slice| {
        let joined = stats.wait_joined(node as u64 + 1, slice);
        if !joined && start.elapsed() >= next_note {
            console_message(&format!(
                "mirai: node {} of the cluster is waiting for its daemon to connect [{} secs elapsed]",
                node + 1,
                start.elapsed().as_secs()
            ));
            next_note += WAIT_NOTE;
        }
        joined
    })
}

/// Submits a cluster node's task (`p` a profile handle): it runs on the
/// `node`-th daemon (from 0) to have joined the host, for which the caller
/// has waited (`wait_for_node`; the host fails the task at once if that
/// daemon has not joined, or has gone).
pub fn submit_node(p: &Owned, data: SEXP, node: usize) -> Result<Aio, RError> {
    let prof = profile(p)?;
    submit_with(prof, p.sexp(), data, |host, id, frame, slot| host.submit_to_node(id, frame, slot, node))
}

/// A share's content as the host keeps it (see `Host::share_id`): its
/// R-serialized bytes, their SHA-256 and its id.
pub struct ShareBytes {
    pub bytes: Vec<u8>,
    pub hash: [u8; 32],
    pub sid: u64,
}

impl ShareBytes {
    /// Serializes `x` as a share of `p`'s host.
    pub fn new(p: &Owned, x: SEXP) -> Result<ShareBytes, RError> {
        let prof = profile(p)?;
        let mut bytes = Vec::new();
        serialize_task(x, kept(p.sexp()), &mut bytes)?;
        let mut hash = [0u8; 32];
        hash.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, &bytes).as_ref());
        let sid = prof.host.share_id(hash).map_err(host_failed)?;
        Ok(ShareBytes { bytes, hash, sid })
    }
}

/// `submit_node` for a task whose function is `share` (made by
/// `ShareBytes::new` on the same profile) and whose own payload (its
/// `args`, R-serialized) `write_args` appends (see `Host::submit_node_item`).
pub fn submit_node_shared(
    p: &Owned,
    share: &ShareBytes,
    write_args: impl FnOnce(&mut Vec<u8>) -> Result<(), RError>,
    node: usize,
) -> Result<Aio, RError> {
    let prof = profile(p)?;
    let host = &prof.host;
    let id = host.next_task_id();
    let mut scratch = take_scratch();
    item_head_into(host.framing, id, share.sid, &mut scratch);
    let built = write_args(&mut scratch).and_then(|_| {
        // As `Host::task_frame`: the byte more must not abort the session.
        scratch.try_reserve_exact(1).map_err(|_| RError::from("cannot allocate memory to serialize the task"))
    });
    let frame = built.map(|_| {
        scratch.push(TASK_WHOLE);
        exact_frame(&mut scratch)
    });
    put_scratch(scratch);
    let frame = frame?;
    let slot = Slot::new(host.bell.clone());
    let copy = || {
        let mut v = Vec::with_capacity(share.bytes.len() + 1);
        v.extend_from_slice(&share.bytes);
        v
    };
    host.submit_node_item(id, frame, slot.clone(), node, share.hash, share.sid, copy).map_err(host_failed)?;
    Ok(Aio::new(slot, id, prof.clone()))
}

/// `try_mirai()`'s check: TRUE if a task may be queued now without waiting.
pub fn mirai_host_room(p: SEXP) -> RResult {
    // Polled by try_mirai(): room comes as the loop thread reads replies.
    super::mirai::settle_claims(None);
    lgl(profile(&p)?.host.stats.has_room())
}

/// Bytes the host has written to its daemons' sockets so far (a double).
pub fn mirai_host_sent(p: SEXP) -> RResult {
    real(profile(&p)?.host.stats.sent_bytes.load(Ordering::Relaxed) as f64)
}

/// `status()$memory`: queued bytes, their peak and the cap, in MB (1e6
/// bytes); the cap is NA when there is none.
pub fn mirai_host_memory(p: SEXP) -> RResult {
    let s = &profile(&p)?.host.stats;
    let mb = |b: u64| b as f64 / 1e6;
    let cap = if s.cap_bytes == 0 { na_real() } else { mb(s.cap_bytes) };
    let vals = [mb(s.queued_bytes.load(Ordering::Relaxed)), mb(s.peak_bytes.load(Ordering::Relaxed)), cap];
    named_reals(&vals, &["used", "peak", "capacity"])
}

/// `everywhere()`: the payload once to every connected daemon (and to the
/// next ones to connect, up to `min`); a list of mirai, one per task.
pub fn mirai_host_broadcast(p: SEXP, data: SEXP, min: SEXP) -> RResult {
    let prof = profile(&p)?;
    let cfg = kept(p);
    let mut payload = Vec::new();
    serialize_task(data, cfg, &mut payload)?;
    // Checked by everywhere(), against MAX_EVERYWHERE.
    let min = f64_arg(min, ".min")?.clamp(0.0, MAX_EVERYWHERE) as usize;
    let tasks = prof.host.broadcast(payload, min).map_err(host_failed)?;
    // Every queued task must reach R as a mirai: should R fail to build
    // one, the tasks not yet handed over are cancelled, not left queued
    // where nothing could collect them.
    let mut built = 0;
    let res = (|| {
        let out = new_list(tasks.len())?;
        for (i, (id, slot)) in tasks.iter().enumerate() {
            let m = new_aio(Aio::new(slot.clone(), *id, prof.clone()), cfg)?;
            set_list_elt(&out, i, m.sexp());
            built += 1;
        }
        Ok(out)
    })();
    if res.is_err() {
        for (id, _) in &tasks[built..] {
            prof.host.cancel(*id, crate::host::sched::ERR_CANCELED);
        }
    }
    res
}

/// The counters (`Stats::counters`), and `replaced` (daemons the pool
/// launched in place of dead ones), as a named integer vector.
pub fn mirai_host_info(p: SEXP) -> RResult {
    let prof = profile(&p)?;
    let counters = prof.host.stats.counters();
    let mut vals: Vec<i32> = counters.iter().map(|(_, v)| (*v).min(i32::MAX as u64) as i32).collect();
    let mut names: Vec<&str> = counters.iter().map(|(n, _)| *n).collect();
    vals.push(prof.pool.replaced().min(i32::MAX as u64) as i32);
    names.push("replaced");
    named_ints(&vals, &names)
}

/// What the profile's daemon pool has to tell the user (the replacing of
/// dead daemons stopped, and why), once; NULL if nothing.
pub fn mirai_host_notice(p: SEXP) -> RResult {
    match profile(&p)?.pool.take_notice() {
        Some(msg) => string(&msg),
        None => Ok(Owned::nil()),
    }
}

/// For tests: makes the profile's event loop fail as a bug would. Only in
/// a build with the `test-hooks` feature.
#[cfg(feature = "test-hooks")]
pub fn mirai_host_inject_fault(p: SEXP) -> RResult {
    profile(&p)?.host.inject_fault();
    Ok(Owned::nil())
}

/// For tests: `c(claimed, lingering)`, the daemons of the profile's host
/// R's thread reads itself and whether those claims outlive their wait
/// (see `Claim` in host/mod.rs). Only in a build with the `test-hooks`
/// feature.
#[cfg(feature = "test-hooks")]
pub fn mirai_test_claims(p: SEXP) -> RResult {
    let (n, lingering) = profile(&p)?.host.claims();
    ints(&[n as i32, lingering as i32])
}

/// Whether profile handle `p` was made by the process this one was forked
/// from (see `sys::fork`): its reset then only forgets it.
pub fn mirai_host_foreign(p: SEXP) -> RResult {
    lgl(crate::r::layer::handle::foreign::<Arc<Profile>>(p))
}

pub fn mirai_host_close(p: SEXP, signal: SEXP) -> RResult {
    let prof = profile(&p)?;
    // First: daemons exit as the host closes, and none is replaced.
    prof.pool.close();
    prof.host.relay.close();
    prof.host.shutdown(bool_arg(signal, "signal")?);
    // A replacement still starting would find no host: it goes now rather
    // than failing (noisily) after the reset had to wait for it.
    prof.pool.kill_unconnected();
    Ok(Owned::nil())
}

/// Launches a local daemon; its pid. `persistent`: launched with
/// `autoexit = FALSE`, so never killed by a reset. `heal`: replaced when it
/// dies (see `pool`). `stream`: NULL, or its own random-number stream, to
/// be added to the call in `args` as `rs`. `together`: how many local
/// daemons are launched with it, which sets its priority when they
/// outnumber the cores (`pool::oversubscribed_nice`).
#[allow(clippy::too_many_arguments)]
pub fn mirai_host_launch(
    p: SEXP,
    program: SEXP,
    args: SEXP,
    env_names: SEXP,
    env_values: SEXP,
    persistent: SEXP,
    heal: SEXP,
    stream: SEXP,
    together: SEXP,
) -> RResult {
    let prof = profile(&p)?;
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get()) as u64;
    let persistent = bool_arg(persistent, "persistent")?;
    let spec = Spec {
        program: str_arg(program, "rscript")?,
        args: strs_arg(args, "args")?,
        env: strs_arg(env_names, "env")?.into_iter().zip(strs_arg(env_values, "env")?).collect(),
        persistent,
        stream: if is_null(stream) { None } else { Some(ints_arg::<7>(stream, "rs")?) },
        nice: oversubscribed_nice(f64_arg(together, "together")? as u64, cores),
        // Read here, on R's thread, where R's own Sys.setenv() runs: a
        // replacement launched later from a reaper thread reuses it.
        scratch_in: if persistent { None } else { crate::sys::scratch::base(|k| std::env::var_os(k)) },
    };
    let pid = prof.pool.launch(spec, bool_arg(heal, "heal")?)?;
    int(pid as i32)
}

/// Waits up to `ms` for `n` daemons; TRUE once connected. Errors when too
/// many launched daemons have exited for `n` ever to be reached.
pub fn mirai_host_wait_ready(p: SEXP, n: SEXP, ms: SEXP) -> RResult {
    let prof = profile(&p)?;
    let n = f64_arg(n, "n")? as u64;
    let until = Instant::now() + Duration::from_millis(f64_arg(ms, "ms")? as u64);
    let mut failed = None;
    let mut timed_out = false;
    wait_interruptibly(|slice| {
        if prof.host.stats.wait_connections(n, slice.min(until.saturating_duration_since(Instant::now()))) {
            return true;
        }
        let have = prof.host.stats.connections.load(Ordering::Relaxed);
        let (launched, dead) = prof.pool.with_children(|ch| (ch.len(), ch.iter().filter_map(|c| c.exited()).collect::<Vec<i32>>()));
        let alive = (launched - dead.len()) as u64;
        if launched > 0 && !dead.is_empty() && have + alive < n {
            failed = Some((dead.len(), dead[0]));
            return true;
        }
        timed_out = Instant::now() >= until;
        timed_out
    })?;
    if let Some((count, status)) = failed {
        let why = prof.pool.take_notice().map(|n| format!(" ({n})")).unwrap_or_default();
        return Err(format!(
            "{count} daemon process(es) exited before connecting (exit status {status}); run the launch command by hand to see why{why}"
        )
        .into());
    }
    lgl(!timed_out)
}

/// Process ids of launched children still running, except persistent ones
/// (`autoexit = FALSE`). With `kill` TRUE, those are killed (SIGKILL)
/// first; their reapers then collect them.
pub fn mirai_host_children(p: SEXP, kill: SEXP) -> RResult {
    let prof = profile(&p)?;
    let kill = bool_arg(kill, "kill")?;
    let pids: Vec<i32> = prof.pool.with_children(|ch| {
        let mortal = || ch.iter().filter(|c| !c.persistent);
        if kill {
            mortal().for_each(|c| {
                c.kill();
            });
        }
        mortal().filter(|c| c.exited().is_none()).map(|c| c.pid as i32).collect()
    });
    ints(&pids)
}

/// `daemons_table()`: each connected daemon's counters, as a list of
/// columns (`id`, `pid`, `busy`, `assigned`, `completed`, `connected` in
/// seconds since the Unix epoch, `bytes_in`, `bytes_out`), and `launching`,
/// the pids of local daemons started but not (yet) connected.
pub fn mirai_host_daemons(p: SEXP) -> RResult {
    let prof = profile(&p)?;
    let rows = prof.host.daemon_rows().map_err(host_failed)?;
    let col = |f: &dyn Fn(&crate::host::monitor::DaemonRow) -> f64| rows.iter().map(f).collect::<Vec<f64>>();
    let secs = |t: std::time::SystemTime| t.duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
    let health = &prof.host.health;
    let launching: Vec<i32> = prof.pool.with_children(|ch| {
        ch.iter()
            .filter(|c| !c.persistent && c.exited().is_none() && !health.get(c.pid).connected)
            .map(|c| c.pid as i32)
            .collect()
    });
    let id = ints(&rows.iter().map(|r| r.id.min(i32::MAX as u32) as i32).collect::<Vec<_>>())?;
    let pid = ints(&rows.iter().map(|r| r.pid.min(i32::MAX as u32) as i32).collect::<Vec<_>>())?;
    let busy = lgls(&rows.iter().map(|r| r.busy() as i32).collect::<Vec<_>>())?;
    let assigned = reals(&col(&|r| r.assigned as f64))?;
    let completed = reals(&col(&|r| r.completed as f64))?;
    let since = reals(&col(&|r| secs(r.since)))?;
    let bytes_in = reals(&col(&|r| r.bytes_in as f64))?;
    let bytes_out = reals(&col(&|r| r.bytes_out as f64))?;
    let launching = ints(&launching)?;
    list(
        &[id.sexp(), pid.sexp(), busy.sexp(), assigned.sexp(), completed.sexp(), since.sexp(), bytes_in.sexp(), bytes_out.sexp(), launching.sexp()],
        &["id", "pid", "busy", "assigned", "completed", "connected", "bytes_in", "bytes_out", "launching"],
    )
}

/// `daemons_timeline()`: the recent tasks' spans as a list of columns
/// (`task`, `daemon`, `start` and `end` in seconds since `origin`, `end`
/// NA while open, `error`: 0 a value, 1 an error value, 2 resolved on the
/// host, NA open), and `origin` in seconds since the Unix epoch. `ids`:
/// NULL for all, or the task ids (doubles) to keep.
pub fn mirai_host_timeline(p: SEXP, ids: SEXP) -> RResult {
    use crate::host::monitor::End;
    let prof = profile(&p)?;
    let only = if is_null(ids) {
        None
    } else {
        Some(reals_arg(ids, "x")?.into_iter().map(|v| v as u64).collect::<std::collections::HashSet<u64>>())
    };
    let (spans, origin) = prof.host.timeline(only.as_ref()).map_err(host_failed)?;
    let secs = |ns: u64| ns as f64 / 1e9;
    let task = reals(&spans.iter().map(|s| s.task as f64).collect::<Vec<_>>())?;
    let daemon = ints(&spans.iter().map(|s| s.daemon.min(i32::MAX as u32) as i32).collect::<Vec<_>>())?;
    let start = reals(&spans.iter().map(|s| secs(s.start_ns)).collect::<Vec<_>>())?;
    let end = reals(&spans.iter().map(|s| if s.end == End::Open { na_real() } else { secs(s.end_ns) }).collect::<Vec<_>>())?;
    let na_int = i32::MIN;
    let how = ints(&spans
        .iter()
        .map(|s| match s.end {
            End::Open => na_int,
            End::Value => 0,
            End::Error => 1,
            End::Failed => 2,
        })
        .collect::<Vec<_>>())?;
    let origin = real(origin)?;
    list(
        &[task.sexp(), daemon.sexp(), start.sexp(), end.sexp(), how.sexp(), origin.sexp()],
        &["task", "daemon", "start", "end", "outcome", "origin"],
    )
}
