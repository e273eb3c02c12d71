//! The `.Call` surface: argument decoding, external pointers, and nothing
//! else. Every function here runs on R's main thread.

use crate::aio::{Notifier, Outcome, Slot};
use crate::client::{ClientConn, Incoming};
use crate::host::{Host, HostOptions, Stats};
use crate::proto::{self, Msg};
use crate::rapi::*;
use crate::rng;
use crate::serial;
use extendr_ffi::{R_ExternalPtrProtected, R_SetExternalPtrProtected};
use crate::spawn::{self, Child};
use crate::threads::lock;
use crate::url::Address;
use std::ffi::{c_int, c_void};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct Profile {
    pub host: Host,
    pub children: Mutex<Vec<Child>>,
}

pub struct Aio {
    pub slot: Arc<Slot>,
    pub id: u64,
    pub profile: Arc<Profile>,
}

/// Types that live behind an R external pointer, told apart by their tag.
trait Tagged: Sized + 'static {
    const TAG: &'static std::ffi::CStr;
}
impl Tagged for Arc<Profile> {
    const TAG: &'static std::ffi::CStr = c"mirai_profile";
}
impl Tagged for Aio {
    const TAG: &'static std::ffi::CStr = c"mirai_aio";
}
impl Tagged for Mutex<Option<ClientConn>> {
    const TAG: &'static std::ffi::CStr = c"mirai_conn";
}

/// Drops the Rust value when R collects its pointer. A panic in a `Drop`
/// must not unwind into R's garbage collector: it is caught and ignored.
unsafe extern "C" fn finalize<T: Tagged>(s: SEXP) {
    let p = R_ExternalPtrAddr(s) as *mut T;
    if !p.is_null() {
        R_ClearExternalPtr(s);
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(Box::from_raw(p))));
    }
}

fn new_xptr<T: Tagged>(v: T) -> SEXP {
    new_xptr_prot(v, unsafe { R_NilValue })
}

/// An external pointer that also keeps `prot` alive. Profiles, aios and
/// daemon connections keep their serialization config there: it is an R
/// object, so R's GC owns it and no Rust value ever holds a SEXP.
fn new_xptr_prot<T: Tagged>(v: T, prot: SEXP) -> SEXP {
    unsafe {
        let tag = Rf_install(T::TAG.as_ptr());
        let p = Rf_protect(R_MakeExternalPtr(Box::into_raw(Box::new(v)) as *mut c_void, tag, prot));
        R_RegisterCFinalizerEx(p, finalize::<T>, Rboolean::TRUE);
        Rf_unprotect(1);
        p
    }
}

fn get<'a, T: Tagged>(s: SEXP, what: &str) -> Result<&'a T, RError> {
    unsafe {
        const EXTPTRSXP: c_int = 22;
        if TYPEOF(s) != EXTPTRSXP || R_ExternalPtrTag(s) != Rf_install(T::TAG.as_ptr()) {
            return Err(format!("`{what}` is not a valid mirai handle").into());
        }
        let p = R_ExternalPtrAddr(s) as *const T;
        if p.is_null() {
            return Err(format!("`{what}` is no longer valid (it was closed or saved and reloaded)").into());
        }
        Ok(&*p)
    }
}

fn lgl(b: bool) -> SEXP {
    unsafe { Rf_ScalarLogical(b as c_int) }
}

fn opt_timeout(s: SEXP) -> Result<Option<Duration>, RError> {
    if is_null(s) {
        return Ok(None);
    }
    let ms = sexp_f64(s, ".timeout")?;
    if ms.is_nan() || ms < 0.0 {
        return Err("`.timeout` must be a non-negative number of milliseconds or NULL".into());
    }
    Ok(if ms.is_infinite() { None } else { Some(Duration::from_micros((ms * 1000.0) as u64)) })
}

fn error_value(code: i32) -> SEXP {
    unsafe {
        let v = Rf_protect(Rf_ScalarInteger(code));
        let cls = Rf_protect(Rf_allocVector(STRSXP, 2));
        SET_STRING_ELT(cls, 0, STRING_ELT(mk_string("errorValue"), 0));
        SET_STRING_ELT(cls, 1, STRING_ELT(mk_string("try-error"), 0));
        Rf_setAttrib(v, R_ClassSymbol, cls);
        Rf_unprotect(2);
        v
    }
}

fn outcome_to_sexp(o: Outcome, serial_cfg: SEXP) -> SEXP {
    match o {
        Outcome::Error(code) => error_value(code),
        Outcome::Value { body, offset } => match serial::unserialize_with(&body[offset..], serial_cfg) {
            Ok(v) => v,
            Err(msg) => unsafe {
                let msg = format!("result could not be unserialized: {msg}");
                let v = Rf_protect(mk_string(&format!("Error: {msg}")));
                let m = Rf_protect(mk_string(&msg));
                Rf_setAttrib(v, Rf_install(c"message".as_ptr()), m);
                let cls = Rf_protect(Rf_allocVector(STRSXP, 3));
                for (i, c) in ["miraiError", "errorValue", "try-error"].iter().enumerate() {
                    SET_STRING_ELT(cls, i as isize, STRING_ELT(mk_string(c), 0));
                }
                Rf_setAttrib(v, R_ClassSymbol, cls);
                Rf_unprotect(3);
                v
            },
        },
    }
}

// ---- host ------------------------------------------------------------------

/// `stream`: NULL, or the profile's L'Ecuyer-CMRG stream, from which each
/// accepted daemon gets the next one in its Init. `settings`: NULL, or a
/// list sent (serialized here, on R's main thread) to every daemon in its
/// Init; its `serial` element is also the host's serialization config.
/// `memory`: cap in bytes on the queued tasks, 0 for none.
#[no_mangle]
pub extern "C" fn mirai_host_start(
    url: SEXP,
    dispatcher: SEXP,
    secret: SEXP,
    oneshot: SEXP,
    stream: SEXP,
    settings: SEXP,
    memory: SEXP,
    max_msg: SEXP,
) -> SEXP {
    entry(|| {
        let url = sexp_str(url, "url")?;
        let addr = Address::parse(&url)?;
        if let Address::Tcp { tls: true, .. } = addr {
            return Err("tls+tcp:// is not available in this build yet; use tcp:// (or an SSH tunnel)".into());
        }
        let rng_stream = if is_null(stream) { None } else { Some(sexp_stream(stream)?) };
        let serial_cfg = list_elt(settings, "serial");
        serial::check_config(serial_cfg)?;
        let mut blob = Vec::new();
        if !is_null(settings) {
            serial::serialize_into(settings, &mut blob)?;
        }
        let opts = HostOptions {
            max_message: max_message(max_msg)?,
            dispatcher: sexp_f64(dispatcher, "dispatcher")? != 0.0,
            secret: if is_null(secret) { None } else { Some(sexp_str(secret, "secret")?) },
            oneshot: sexp_f64(oneshot, "oneshot")? != 0.0,
            rng_stream,
            settings: blob,
            memory_cap: memory_cap(memory)?,
        };
        let host = Host::start(&addr, opts)?;
        Ok(new_xptr_prot(Arc::new(Profile { host, children: Mutex::new(Vec::new()) }), serial_cfg))
    })
}

/// The message size cap in bytes (R validates it; NULL: the default).
fn max_message(s: SEXP) -> Result<u64, RError> {
    if is_null(s) {
        return Ok(crate::frame::MAX_MESSAGE);
    }
    let b = sexp_f64(s, "mirai.max_message")?;
    if b.is_nan() || b < 1024.0 {
        return Err("option `mirai.max_message` must be a number of bytes of at least 1024".into());
    }
    Ok(if b >= u64::MAX as f64 { u64::MAX } else { b as u64 })
}

/// R validates `memory`; this only refuses what would not be a byte count.
fn memory_cap(s: SEXP) -> Result<u64, RError> {
    let b = sexp_f64(s, "memory")?;
    if b.is_nan() || b < 0.0 {
        return Err("`memory` must be a non-negative number of bytes".into());
    }
    Ok(if b.is_infinite() { 0 } else { b.ceil() as u64 })
}

#[no_mangle]
pub extern "C" fn mirai_host_url(p: SEXP) -> SEXP {
    entry(|| Ok(mk_string(&get::<Arc<Profile>>(p, "profile")?.host.url)))
}

#[no_mangle]
pub extern "C" fn mirai_host_submit(p: SEXP, data: SEXP, timeout: SEXP) -> SEXP {
    entry(|| {
        let prof = get::<Arc<Profile>>(p, "profile")?.clone();
        let timeout = opt_timeout(timeout)?;
        if !prof.host.stats.has_room() {
            wait_room(&prof.host.stats)?;
        }
        let id = prof.host.next_task_id();
        let mut frame = Vec::new();
        prof.host.framing.begin(&mut frame);
        proto::encode_into(&Msg::Task { id }, &mut frame);
        let serial_cfg = unsafe { R_ExternalPtrProtected(p) };
        serial::serialize_with(data, &mut frame, serial_cfg).map_err(|e| match e {
            RError::Msg(m) => RError::Msg(format!("cannot serialize the task: {m}")),
            e => e,
        })?;
        let slot = Slot::new(prof.host.notifier.clone());
        prof.host.submit(id, frame, slot.clone(), timeout).map_err(host_failed)?;
        Ok(make_mirai(new_xptr_prot(Aio { slot, id, profile: prof }, serial_cfg), id))
    })
}

/// The R error for a call on a profile whose host failed.
fn host_failed(why: String) -> RError {
    format!("this compute profile's host has failed: {why}; its pending mirai resolved to errorValue 19. Reset it with daemons(0)").into()
}

/// Blocks, interruptibly, until the queue is below the memory cap. Nothing
/// has been serialized or queued yet, so an interrupt leaves no trace.
fn wait_room(stats: &Stats) -> Result<(), RError> {
    wait_interruptibly(|slice| stats.wait_room(slice))
}

/// `try_mirai()`'s check: TRUE if a task may be queued now without waiting.
#[no_mangle]
pub extern "C" fn mirai_host_room(p: SEXP) -> SEXP {
    entry(|| Ok(lgl(get::<Arc<Profile>>(p, "profile")?.host.stats.has_room())))
}

/// `status()$memory`: queued bytes, their peak and the cap, in MB (1e6
/// bytes); the cap is NA when there is none.
#[no_mangle]
pub extern "C" fn mirai_host_memory(p: SEXP) -> SEXP {
    entry(|| {
        let s = &get::<Arc<Profile>>(p, "profile")?.host.stats;
        let mb = |b: u64| b as f64 / 1e6;
        let cap = if s.cap_bytes == 0 { unsafe { extendr_ffi::R_NaReal } } else { mb(s.cap_bytes) };
        let vals = [mb(s.queued_bytes.load(Ordering::Relaxed)), mb(s.peak_bytes.load(Ordering::Relaxed)), cap];
        unsafe {
            let v = Rf_protect(Rf_allocVector(REALSXP, 3));
            std::ptr::copy_nonoverlapping(vals.as_ptr(), REAL(v), 3);
            let nms = Rf_protect(Rf_allocVector(STRSXP, 3));
            for (i, n) in ["used", "peak", "capacity"].iter().enumerate() {
                SET_STRING_ELT(nms, i as isize, STRING_ELT(mk_string(n), 0));
            }
            Rf_setAttrib(v, R_NamesSymbol, nms);
            Rf_unprotect(2);
            Ok(v)
        }
    })
}

/// `everywhere()`: the payload once to every connected daemon; a list of
/// mirai, one per daemon (empty if none is connected).
#[no_mangle]
pub extern "C" fn mirai_host_broadcast(p: SEXP, data: SEXP, min: SEXP) -> SEXP {
    entry(|| {
        let prof = get::<Arc<Profile>>(p, "profile")?.clone();
        let serial_cfg = unsafe { R_ExternalPtrProtected(p) };
        let mut payload = Vec::new();
        serial::serialize_with(data, &mut payload, serial_cfg).map_err(|e| match e {
            RError::Msg(m) => RError::Msg(format!("cannot serialize the task: {m}")),
            e => e,
        })?;
        let min = sexp_f64(min, ".min")?;
        let tasks = prof
            .host
            .broadcast(payload, if min.is_finite() && min > 0.0 { min as usize } else { 0 })
            .map_err(host_failed)?;
        unsafe {
            let out = Rf_protect(Rf_allocVector(VECSXP, tasks.len() as isize));
            for (i, (id, slot)) in tasks.into_iter().enumerate() {
                let aio = new_xptr_prot(Aio { slot, id, profile: prof.clone() }, serial_cfg);
                SET_VECTOR_ELT(out, i as isize, make_mirai(aio, id));
            }
            Rf_unprotect(1);
            Ok(out)
        }
    })
}

#[no_mangle]
pub extern "C" fn mirai_host_info(p: SEXP) -> SEXP {
    entry(|| {
        let prof = get::<Arc<Profile>>(p, "profile")?;
        let s = &prof.host.stats;
        let vals = [&s.connections, &s.cumulative, &s.awaiting, &s.executing, &s.completed, &s.refused];
        unsafe {
            let v = Rf_allocVector(INTSXP, vals.len() as isize);
            for (i, a) in vals.iter().enumerate() {
                *INTEGER(v).add(i) = a.load(Ordering::Relaxed).min(i32::MAX as u64) as c_int;
            }
            Ok(v)
        }
    })
}

/// For tests: makes the profile's event loop fail as a bug would.
#[no_mangle]
pub extern "C" fn mirai_host_inject_fault(p: SEXP) -> SEXP {
    entry(|| {
        get::<Arc<Profile>>(p, "profile")?.host.inject_fault();
        Ok(unsafe { R_NilValue })
    })
}

/// Why the profile's host failed, or NULL if it has not.
#[no_mangle]
pub extern "C" fn mirai_host_failure(p: SEXP) -> SEXP {
    entry(|| {
        let why = get::<Arc<Profile>>(p, "profile")?.host.failure();
        Ok(why.map_or(unsafe { R_NilValue }, |w| mk_string(&w)))
    })
}

#[no_mangle]
pub extern "C" fn mirai_host_close(p: SEXP, signal: SEXP) -> SEXP {
    entry(|| {
        let prof = get::<Arc<Profile>>(p, "profile")?;
        prof.host.shutdown(sexp_f64(signal, "signal")? != 0.0);
        Ok(unsafe { R_NilValue })
    })
}

fn str_vec(s: SEXP, what: &str) -> Result<Vec<String>, RError> {
    unsafe {
        if is_null(s) {
            return Ok(Vec::new());
        }
        if TYPEOF(s) != STRSXP as c_int {
            return Err(format!("`{what}` must be a character vector").into());
        }
        Ok((0..Rf_xlength(s))
            .map(|i| std::ffi::CStr::from_ptr(R_CHAR(STRING_ELT(s, i))).to_string_lossy().into_owned())
            .collect())
    }
}

#[no_mangle]
pub extern "C" fn mirai_host_launch(
    p: SEXP,
    program: SEXP,
    args: SEXP,
    env_names: SEXP,
    env_values: SEXP,
    persistent: SEXP,
) -> SEXP {
    entry(|| {
        let prof = get::<Arc<Profile>>(p, "profile")?;
        let program = sexp_str(program, "rscript")?;
        let args = str_vec(args, "args")?;
        let env: Vec<(String, String)> =
            str_vec(env_names, "env")?.into_iter().zip(str_vec(env_values, "env")?).collect();
        let persistent = sexp_f64(persistent, "persistent")? != 0.0;
        let child = spawn::launch(&program, &args, &env, persistent)?;
        let pid = child.pid;
        lock(&prof.children).push(child);
        Ok(unsafe { Rf_ScalarInteger(pid as c_int) })
    })
}

/// Waits up to `ms` for `n` daemons; TRUE once connected. Errors when too
/// many launched daemons have exited for `n` ever to be reached.
#[no_mangle]
pub extern "C" fn mirai_host_wait_ready(p: SEXP, n: SEXP, ms: SEXP) -> SEXP {
    entry(|| {
        let prof = get::<Arc<Profile>>(p, "profile")?;
        let n = sexp_f64(n, "n")? as u64;
        let until = Instant::now() + Duration::from_millis(sexp_f64(ms, "ms")? as u64);
        loop {
            let have = prof.host.stats.connections.load(Ordering::Relaxed);
            if have >= n {
                return Ok(lgl(true));
            }
            {
                let ch = lock(&prof.children);
                let dead: Vec<i32> = ch.iter().filter_map(|c| c.exited()).collect();
                let alive = ch.len() - dead.len();
                if !ch.is_empty() && have + (alive as u64) < n && !dead.is_empty() {
                    return Err(format!(
                        "{} daemon process(es) exited before connecting (exit status {}); run the launch command by hand to see why",
                        dead.len(),
                        dead[0]
                    )
                    .into());
                }
            }
            if Instant::now() >= until {
                return Ok(lgl(false));
            }
            if interrupt_pending() {
                return Err(RError::Interrupt);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    })
}

/// Process ids of launched children still running, except persistent ones
/// (`autoexit = FALSE`). With `kill` TRUE, those are killed (SIGKILL)
/// first; their reapers then collect them.
#[no_mangle]
pub extern "C" fn mirai_host_children(p: SEXP, kill: SEXP) -> SEXP {
    entry(|| {
        let prof = get::<Arc<Profile>>(p, "profile")?;
        let kill = sexp_f64(kill, "kill")? != 0.0;
        // The lock is released before R allocates: an allocation failure
        // must not longjmp past a held guard.
        let pids: Vec<u32> = {
            let ch = lock(&prof.children);
            let mortal = || ch.iter().filter(|c| !c.persistent);
            if kill {
                mortal().for_each(Child::kill);
            }
            mortal().filter(|c| c.exited().is_none()).map(|c| c.pid).collect()
        };
        unsafe {
            let v = Rf_allocVector(INTSXP, pids.len() as isize);
            for (i, pid) in pids.iter().enumerate() {
                *INTEGER(v).add(i) = *pid as c_int;
            }
            Ok(v)
        }
    })
}

// ---- the mirai object ------------------------------------------------------

/// R objects the mirai constructor reuses, set once by `.onLoad` (main
/// thread only, preserved for the session).
struct RGlobals {
    dot_call: SEXP,
    data_routine: SEXP,
    unresolved: SEXP,
    class: SEXP,
    aio: SEXP,
    data: SEXP,
    value: SEXP,
    id: SEXP,
}

static mut RG: Option<RGlobals> = None;

fn rg() -> Result<&'static RGlobals, RError> {
    unsafe { (*std::ptr::addr_of!(RG)).as_ref().ok_or_else(|| "mirai is not initialised; reload the package".into()) }
}

#[no_mangle]
pub extern "C" fn mirai_r_init(data_routine: SEXP, unresolved: SEXP) -> SEXP {
    entry(|| unsafe {
        let keep = |s: SEXP| {
            R_PreserveObject(s);
            s
        };
        let class = keep(Rf_allocVector(STRSXP, 2));
        SET_STRING_ELT(class, 0, STRING_ELT(mk_string("mirai"), 0));
        SET_STRING_ELT(class, 1, STRING_ELT(mk_string("recvAio"), 0));
        RG = Some(RGlobals {
            dot_call: keep(Rf_findFun(Rf_install(c".Call".as_ptr()), R_BaseEnv)),
            data_routine: keep(data_routine),
            unresolved: keep(unresolved),
            class,
            aio: Rf_install(c"aio".as_ptr()),
            data: Rf_install(c"data".as_ptr()),
            value: Rf_install(c"value".as_ptr()),
            id: Rf_install(c"id".as_ptr()),
        });
        Ok(R_NilValue)
    })
}

/// Builds the 'mirai' environment natively (built in R, it was a large
/// share of the host's cost per task): `aio` holds the handle, `data` is an
/// active binding whose function calls `mirai_aio_data(aio, env)` with both
/// embedded as constants, so reading it needs no variable lookups.
fn make_mirai(aio: SEXP, id: u64) -> SEXP {
    let g = match rg() {
        Ok(g) => g,
        Err(_) => return aio,
    };
    unsafe {
        let aio = Rf_protect(aio);
        let env = Rf_protect(R_NewEnv(R_EmptyEnv, 0, 0));
        Rf_defineVar(g.aio, aio, env);
        let body = Rf_protect(Rf_lang4(g.dot_call, g.data_routine, aio, env));
        let fun = Rf_protect(Rf_allocSExp(CLOSXP));
        SET_FORMALS(fun, R_NilValue);
        SET_BODY(fun, body);
        SET_CLOENV(fun, env);
        R_MakeActiveBinding(g.data, fun, env);
        Rf_setAttrib(env, g.id, Rf_ScalarInteger(id.min(i32::MAX as u64) as c_int));
        Rf_setAttrib(env, R_ClassSymbol, g.class);
        Rf_unprotect(4);
        env
    }
}

/// Resolved: converts the outcome once, caches it as `value` in `env` and
/// returns it. Unresolved: the 'unresolved' value.
fn aio_data(a: &Aio, aio: SEXP, env: SEXP) -> Result<SEXP, RError> {
    let g = rg()?;
    if !a.slot.is_done() {
        return Ok(g.unresolved);
    }
    unsafe {
        if let Some(o) = a.slot.take() {
            let v = Rf_protect(outcome_to_sexp(o, R_ExternalPtrProtected(aio)));
            Rf_defineVar(g.value, v, env);
            Rf_unprotect(1);
            return Ok(v);
        }
        let v = Rf_findVarInFrame(env, g.value);
        Ok(if v == R_UnboundValue { R_NilValue } else { v })
    }
}

#[no_mangle]
pub extern "C" fn mirai_aio_data(aio: SEXP, env: SEXP) -> SEXP {
    entry(|| aio_data(get::<Aio>(aio, "aio")?, aio, env))
}

/// How long a wait spins before it blocks. A reply that comes back within
/// it costs no futex wake-up of R's thread, and the CPU stays out of its
/// idle state, whose exit dominates a small round trip on this kind of
/// (virtualised) machine: measured here, 80 us of spinning took the tiny
/// round trip from 0.77-0.80x PSOCK's to 0.34-0.45x. The price is at most
/// this much CPU per wait that outlasts it.
const SPIN: Duration = Duration::from_micros(80);

fn wait_slot(slot: &Slot) -> Result<(), RError> {
    let until = Instant::now() + SPIN;
    while !slot.is_done() && Instant::now() < until {
        std::hint::spin_loop();
    }
    wait_interruptibly(|slice| slot.wait(slice))
}

/// `x[]`: waits (interruptibly) for a mirai and returns its value.
#[no_mangle]
pub extern "C" fn mirai_value(x: SEXP) -> SEXP {
    entry(|| unsafe {
        let g = rg()?;
        if TYPEOF(x) != ENVSXP {
            return Err("`x` is not a mirai".into());
        }
        let aio = Rf_findVarInFrame(x, g.aio);
        if aio == R_UnboundValue || is_null(aio) {
            let v = Rf_findVarInFrame(x, g.value);
            return Ok(if v == R_UnboundValue { R_NilValue } else { v });
        }
        let a = get::<Aio>(aio, "aio")?;
        wait_slot(&a.slot)?;
        aio_data(a, aio, x)
    })
}

// ---- aio -------------------------------------------------------------------

/// `unresolved()`: like reading `$data`, converts and caches the value once
/// resolved; TRUE if resolved.
#[no_mangle]
pub extern "C" fn mirai_aio_collect(aio: SEXP, env: SEXP) -> SEXP {
    entry(|| Ok(lgl(aio_data(get::<Aio>(aio, "aio")?, aio, env)? != rg()?.unresolved)))
}

/// Blocks until resolved; a user interrupt ends the wait and is re-raised.
#[no_mangle]
pub extern "C" fn mirai_aio_wait(aio: SEXP) -> SEXP {
    entry(|| {
        wait_slot(&get::<Aio>(aio, "aio")?.slot)?;
        Ok(unsafe { R_NilValue })
    })
}

/// `race_mirai()`: the 1-based index of the first resolved element of the
/// list `aios` (aio handles, or NULL for a mirai that never had one), 0 for
/// an empty list. Blocks on the profiles' completion notifiers, so an idle
/// wait costs nothing; slices only exist to notice a user interrupt. When
/// the list mixes profiles, each notifier is watched in turn in shorter
/// slices, as a completion bumps only its own profile's notifier.
#[no_mangle]
pub extern "C" fn mirai_race(aios: SEXP) -> SEXP {
    entry(|| {
        if unsafe { TYPEOF(aios) } != VECSXP as c_int {
            return Err("`x` must be a list".into());
        }
        let n = unsafe { Rf_xlength(aios) };
        let mut slots: Vec<Arc<Slot>> = Vec::with_capacity(n as usize);
        let mut notifiers: Vec<Arc<Notifier>> = Vec::new();
        for i in 0..n {
            let s = unsafe { VECTOR_ELT(aios, i) };
            if is_null(s) {
                return Ok(unsafe { Rf_ScalarInteger(i as c_int + 1) });
            }
            let a = get::<Aio>(s, "aio")?;
            let nt = &a.profile.host.notifier;
            if !notifiers.iter().any(|x| Arc::ptr_eq(x, nt)) {
                notifiers.push(nt.clone());
            }
            slots.push(a.slot.clone());
        }
        if slots.is_empty() {
            return Ok(unsafe { Rf_ScalarInteger(0) });
        }
        let slice = Duration::from_millis(if notifiers.len() == 1 { 100 } else { 10 });
        let mut turn = 0;
        loop {
            let nt = &notifiers[turn % notifiers.len()];
            // Read the count before looking at the slots: a completion after
            // the look then moves the count, so its wake-up cannot be missed.
            let seen = nt.current();
            if let Some(i) = slots.iter().position(|s| s.is_done()) {
                return Ok(unsafe { Rf_ScalarInteger(i as c_int + 1) });
            }
            nt.wait_past(seen, slice);
            if interrupt_pending() {
                return Err(RError::Interrupt);
            }
            turn += 1;
        }
    })
}

/// Resolves the mirai to "operation canceled" at once. TRUE if the
/// dispatcher found the task and withdrew or interrupted it.
#[no_mangle]
pub extern "C" fn mirai_aio_cancel(aio: SEXP) -> SEXP {
    entry(|| {
        let a = get::<Aio>(aio, "aio")?;
        // The host forgets the task either way (an ephemeral host can then
        // stop); only a dispatcher also interrupts it on its daemon.
        let found = a.profile.host.cancel(a.id, crate::sched::ERR_CANCELED) && a.profile.host.dispatcher;
        a.slot.complete(Outcome::Error(crate::sched::ERR_CANCELED));
        Ok(lgl(found))
    })
}

// ---- daemon ----------------------------------------------------------------

#[no_mangle]
pub extern "C" fn mirai_dial(url: SEXP, secret: SEXP, asyncdial: SEXP, autoexit: SEXP, max_msg: SEXP) -> SEXP {
    entry(|| {
        let url = sexp_str(url, "url")?;
        let addr = Address::parse(&url)?;
        let max_message = max_message(max_msg)?;
        let secret = if is_null(secret) { String::new() } else { sexp_str(secret, "secret")? };
        // How long to keep retrying a refused dial, in ms (Inf: a year).
        let retry_ms = sexp_f64(asyncdial, "asyncdial")?;
        let autoexit = sexp_f64(autoexit, "autoexit")?;
        let retry = if retry_ms.is_finite() {
            Duration::from_millis(retry_ms.max(0.0) as u64)
        } else {
            Duration::from_secs(86400 * 365)
        };
        let mut interrupted = false;
        let conn = ClientConn::connect(&addr, &secret, max_message, Some(Instant::now() + retry), || {
            interrupted = interrupt_pending();
            !interrupted
        });
        if interrupted {
            return Err(RError::Interrupt);
        }
        let conn = conn?;
        conn.watch_host(autoexit == 1.0).map_err(|e| e.to_string())?;
        Ok(new_xptr(Mutex::new(Some(conn))))
    })
}

fn opt_ms(s: SEXP, what: &str) -> Result<Option<Duration>, RError> {
    let ms = sexp_f64(s, what)?;
    Ok(if ms.is_finite() { Some(Duration::from_micros((ms.max(0.0) * 1000.0) as u64)) } else { None })
}

/// Sets the daemon's limits for this connection: idle time (ms), wall time
/// left (ms) and tasks left.
#[no_mangle]
pub extern "C" fn mirai_daemon_limits(conn: SEXP, idle: SEXP, wall: SEXP, tasks: SEXP) -> SEXP {
    entry(|| {
        let cell = get::<Mutex<Option<ClientConn>>>(conn, "conn")?;
        let mut g = lock(cell);
        let c = g.as_mut().ok_or("connection is closed")?;
        let now = Instant::now();
        c.limits.idle = opt_ms(idle, "idletime")?;
        c.limits.wall_until = opt_ms(wall, "walltime")?.map(|d| now + d);
        c.limits.tasks_left = sexp_f64(tasks, "maxtasks")?;
        c.limits.last_active = now;
        Ok(unsafe { R_NilValue })
    })
}

/// Next task as `list(id, data)`, or an integer code when there is none: 0
/// the host closed the connection, -1 it asked us to exit, 1 idle time or
/// 2 wall time reached.
#[no_mangle]
pub extern "C" fn mirai_daemon_recv(conn: SEXP) -> SEXP {
    enum Got {
        Task(u64, Vec<u8>, usize),
        Code(c_int),
    }
    entry(|| {
        // The connection's lock is released before anything allocates in R,
        // so not even an out-of-memory longjmp can leave it held.
        let got = {
            let cell = get::<Mutex<Option<ClientConn>>>(conn, "conn")?;
            let mut g = lock(cell);
            let c = g.as_mut().ok_or("connection is closed")?;
            loop {
                let slice = match c.limits.wait(Instant::now()) {
                    Err(stop) => break Got::Code(stop as c_int),
                    Ok(Some(d)) => d.min(Duration::from_millis(200)),
                    Ok(None) => Duration::from_millis(200),
                };
                match c.recv(slice)? {
                    Incoming::Task { id, body, offset } => break Got::Task(id, body, offset),
                    Incoming::Closed => break Got::Code(0),
                    Incoming::Exit => break Got::Code(-1),
                    Incoming::Nothing => {
                        if interrupt_pending() {
                            return Err(RError::Interrupt);
                        }
                    }
                }
            }
        };
        let (id, body, offset) = match got {
            Got::Code(v) => return Ok(unsafe { Rf_ScalarInteger(v) }),
            Got::Task(id, body, offset) => (id, body, offset),
        };
        let data = serial::unserialize_with(&body[offset..], unsafe { R_ExternalPtrProtected(conn) });
        drop(body);
        unsafe {
            // A task that cannot be read (a failing custom unserializer, say)
            // is answered with an error rather than ending the daemon:
            // list(id, NULL, msg).
            let (d, err) = match data {
                Ok(d) => (Rf_protect(d), None),
                Err(e) => (Rf_protect(R_NilValue), Some(format!("cannot unserialize task: {e}"))),
            };
            let out = Rf_protect(Rf_allocVector(VECSXP, if err.is_some() { 3 } else { 2 }));
            SET_VECTOR_ELT(out, 0, Rf_ScalarReal(id as f64));
            SET_VECTOR_ELT(out, 1, d);
            if let Some(e) = err {
                SET_VECTOR_ELT(out, 2, mk_string(&e));
            }
            Rf_unprotect(2);
            Ok(out)
        }
    })
}

/// Sends the result of task `id`. Returns 0, or the exit code (2 wall time,
/// 3 task limit) when this was the daemon's last task, in which case the
/// reply carries the marker; -2 if the host has gone. A message if `value`
/// could not be serialized: nothing was sent, and the caller sends an error
/// value instead.
#[no_mangle]
pub extern "C" fn mirai_daemon_send(conn: SEXP, id: SEXP, value: SEXP) -> SEXP {
    enum Sent {
        Code(c_int),
        NotSerialized(String),
    }
    entry(|| {
        let id = sexp_f64(id, "id")? as u64;
        let serial_cfg = unsafe { R_ExternalPtrProtected(conn) };
        // Everything that needs the connection's lock happens in this block;
        // R allocates only after the guard is gone (R_Serialize inside runs
        // under try_r, which stops any longjmp short of these frames).
        let sent = {
            let cell = get::<Mutex<Option<ClientConn>>>(conn, "conn")?;
            let mut g = lock(cell);
            let c = g.as_mut().ok_or("connection is closed")?;
            if c.done_evaluating() {
                // The cancel's SIGINT may have landed after the evaluation
                // ended; it must not interrupt whatever R does next.
                unsafe { R_interrupts_pending = 0 };
            }
            let now = Instant::now();
            // Decide "last" before serializing: the marker travels in the header.
            let before = (c.limits.done, c.limits.last_active);
            let last = c.limits.finish_task(now);
            let mut frame = c.begin_result(id, last.is_some());
            match serial::serialize_with(value, &mut frame, serial_cfg) {
                // Any R condition is dropped: the caller sends a miraiError
                // with this message in its place.
                Err(e) => {
                    (c.limits.done, c.limits.last_active) = before;
                    Sent::NotSerialized(match e {
                        RError::Msg(m) => m,
                        RError::Interrupt => "interrupted".into(),
                        RError::Unwind => "R could not serialize the value".into(),
                    })
                }
                // The host is gone: the loop ends as for a closed connection
                // (and reconnects with autoexit = FALSE).
                Ok(()) => match c.send(frame) {
                    Err(_) => Sent::Code(-2),
                    Ok(()) => Sent::Code(last.unwrap_or(0)),
                },
            }
        };
        Ok(match sent {
            Sent::Code(v) => unsafe { Rf_ScalarInteger(v) },
            Sent::NotSerialized(m) => mk_string(&m),
        })
    })
}

/// Id of the task being evaluated, 0 if none (as a double: ids are u64).
#[no_mangle]
pub extern "C" fn mirai_daemon_current(conn: SEXP) -> SEXP {
    entry(|| {
        let cell = get::<Mutex<Option<ClientConn>>>(conn, "conn")?;
        let id = lock(cell).as_ref().map_or(0, |c| c.current());
        Ok(unsafe { Rf_ScalarReal(id as f64) })
    })
}

/// After a last reply: waits (up to `ms`) for the host to close, so the
/// reply is read before this process exits.
#[no_mangle]
pub extern "C" fn mirai_daemon_linger(conn: SEXP, ms: SEXP) -> SEXP {
    entry(|| {
        let cell = get::<Mutex<Option<ClientConn>>>(conn, "conn")?;
        let ms = sexp_f64(ms, "ms")?;
        let mut g = lock(cell);
        if let Some(c) = g.as_mut() {
            let until = Instant::now() + Duration::from_millis(ms as u64);
            while Instant::now() < until {
                match c.recv(Duration::from_millis(100))? {
                    Incoming::Closed | Incoming::Exit => break,
                    _ => {}
                }
            }
        }
        Ok(unsafe { R_NilValue })
    })
}

/// Closes the connection; returns the number of tasks it completed.
#[no_mangle]
pub extern "C" fn mirai_daemon_close(conn: SEXP) -> SEXP {
    entry(|| {
        let cell = get::<Mutex<Option<ClientConn>>>(conn, "conn")?;
        let done = lock(cell).take().map_or(0, |c| c.limits.done);
        Ok(unsafe { Rf_ScalarReal(done as f64) })
    })
}

// ---- utilities -------------------------------------------------------------

#[no_mangle]
pub extern "C" fn mirai_random_hex(n: SEXP) -> SEXP {
    entry(|| {
        let n = sexp_f64(n, "n")? as usize;
        let mut bytes = vec![0u8; n];
        let rc = unsafe { libc::getrandom(bytes.as_mut_ptr() as *mut c_void, n, 0) };
        if rc != n as isize {
            return Err("cannot read random bytes".into());
        }
        Ok(mk_string(&bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()))
    })
}

/// Named IPv4 addresses of this machine's interfaces, loopback excluded.
#[no_mangle]
pub extern "C" fn mirai_ip_addr() -> SEXP {
    entry(|| {
        let mut out: Vec<(String, String)> = Vec::new();
        unsafe {
            let mut ifa: *mut libc::ifaddrs = std::ptr::null_mut();
            if libc::getifaddrs(&mut ifa) == 0 {
                let mut p = ifa;
                while !p.is_null() {
                    let a = (*p).ifa_addr;
                    if !a.is_null() && (*a).sa_family as c_int == libc::AF_INET {
                        let sin = &*(a as *const libc::sockaddr_in);
                        let ip = std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
                        if !ip.is_loopback() {
                            let name = std::ffi::CStr::from_ptr((*p).ifa_name).to_string_lossy().into_owned();
                            out.push((name, ip.to_string()));
                        }
                    }
                    p = (*p).ifa_next;
                }
                libc::freeifaddrs(ifa);
            }
            let v = Rf_protect(Rf_allocVector(STRSXP, out.len() as isize));
            let nm = Rf_protect(Rf_allocVector(STRSXP, out.len() as isize));
            for (i, (n, ip)) in out.iter().enumerate() {
                SET_STRING_ELT(v, i as isize, STRING_ELT(mk_string(ip), 0));
                SET_STRING_ELT(nm, i as isize, STRING_ELT(mk_string(n), 0));
            }
            Rf_setAttrib(v, R_NamesSymbol, nm);
            Rf_unprotect(2);
            Ok(v)
        }
    })
}

// ---- per-profile settings: RNG streams, serialization config -------------

fn sexp_stream(s: SEXP) -> Result<rng::Stream, RError> {
    unsafe {
        if TYPEOF(s) != INTSXP as c_int || Rf_xlength(s) != 7 {
            return Err("an L'Ecuyer-CMRG stream must be an integer vector of length 7".into());
        }
        let mut out = [0i32; 7];
        out.copy_from_slice(std::slice::from_raw_parts(INTEGER(s), 7));
        Ok(out)
    }
}

fn stream_sexp(s: &rng::Stream) -> SEXP {
    unsafe {
        let v = Rf_allocVector(INTSXP, 7);
        std::ptr::copy_nonoverlapping(s.as_ptr(), INTEGER(v), 7);
        v
    }
}

/// Element `name` of list `x`, or NULL.
fn list_elt(x: SEXP, name: &str) -> SEXP {
    unsafe {
        if TYPEOF(x) != VECSXP as c_int {
            return R_NilValue;
        }
        let nms = extendr_ffi::Rf_getAttrib(x, R_NamesSymbol);
        if TYPEOF(nms) != STRSXP as c_int {
            return R_NilValue;
        }
        for i in 0..Rf_xlength(x).min(Rf_xlength(nms)) {
            if std::ffi::CStr::from_ptr(R_CHAR(STRING_ELT(nms, i))).to_bytes() == name.as_bytes() {
                return VECTOR_ELT(x, i);
            }
        }
        R_NilValue
    }
}

/// `parallel::nextRNGStream()`.
#[no_mangle]
pub extern "C" fn mirai_next_stream(s: SEXP) -> SEXP {
    entry(|| Ok(stream_sexp(&rng::next_stream(&sexp_stream(s)?))))
}

/// Moves this session's RNG on by one exponential draw, so that profiles
/// set up one after the other start from different streams.
#[no_mangle]
pub extern "C" fn mirai_rng_advance() -> SEXP {
    extern "C" {
        fn exp_rand() -> f64;
    }
    entry(|| {
        try_r(|| unsafe {
            extendr_ffi::GetRNGstate();
            exp_rand();
            extendr_ffi::PutRNGstate();
            R_NilValue
        })?;
        Ok(unsafe { R_NilValue })
    })
}

/// The settings from the host's Init, as `list(stream =, config =)` (each
/// NULL if not sent). Installs `config$serial` as this connection's
/// serialization config for both directions.
#[no_mangle]
pub extern "C" fn mirai_daemon_init(conn: SEXP) -> SEXP {
    entry(|| {
        let cell = get::<Mutex<Option<ClientConn>>>(conn, "conn")?;
        let (stream, settings) = {
            let g = lock(cell);
            let c = g.as_ref().ok_or("connection is closed")?;
            (c.init_stream, c.init_settings.clone())
        };
        unsafe {
            let cfg = if settings.is_empty() {
                R_NilValue
            } else {
                serial::unserialize(&settings)?
            };
            let cfg = Rf_protect(cfg);
            let serial_cfg = list_elt(cfg, "serial");
            if let Err(e) = serial::check_config(serial_cfg) {
                Rf_unprotect(1);
                return Err(format!("host sent an invalid serialization config: {e}").into());
            }
            R_SetExternalPtrProtected(conn, serial_cfg);
            let out = Rf_protect(Rf_allocVector(VECSXP, 2));
            SET_VECTOR_ELT(out, 0, stream.as_ref().map_or(R_NilValue, stream_sexp));
            SET_VECTOR_ELT(out, 1, cfg);
            let nms = Rf_protect(Rf_allocVector(STRSXP, 2));
            SET_STRING_ELT(nms, 0, STRING_ELT(mk_string("stream"), 0));
            SET_STRING_ELT(nms, 1, STRING_ELT(mk_string("config"), 0));
            Rf_setAttrib(out, R_NamesSymbol, nms);
            Rf_unprotect(3);
            Ok(out)
        }
    })
}
