//! The 'mirai' object, built in one place.
//!
//! A mirai is an environment of class `c("mirai", "recvAio")` holding the
//! aio handle as `aio` (NULL once resolved in sync mode), the value once
//! converted as `value`, and an active binding `data` whose function calls
//! `.Call(<data routine>, aio, env)` with both embedded as constants, so
//! reading `$data` needs no variable lookups. Built in R, it was a large
//! share of the host's cost per task.

use super::call::{try_r, InR, RError};
use super::ffi::*;
use super::global::MainThread;
use super::lang::is_env;
use super::value::*;

/// R objects the constructor reuses, set once at load (preserved for the
/// session).
#[derive(Clone, Copy)]
struct Globals {
    dot_call: SEXP,
    data_routine: SEXP,
    unresolved: SEXP,
    class: SEXP,
    aio: SEXP,
    data: SEXP,
    value: SEXP,
    id: SEXP,
}

static GLOBALS: MainThread<Option<Globals>> = MainThread::new(None);

fn globals() -> Result<Globals, RError> {
    GLOBALS.get().ok_or_else(|| "mirai is not initialised; reload the package".into())
}

/// Records the data routine and the 'unresolved' value (from `.onLoad`).
pub fn init(data_routine: SEXP, unresolved: SEXP) -> Result<(), RError> {
    let mut g = None;
    // SAFETY: the closure owns nothing with a destructor (an Option of
    // Copy values, written last).
    unsafe {
        try_r(|r| {
            let base = base_env();
            g = Some(Globals {
                dot_call: r.preserve(r.find_fun(r.install(c".Call"), base)),
                data_routine: r.preserve(data_routine),
                unresolved: r.preserve(unresolved),
                class: r.preserve(r.strings(&["mirai", "recvAio"])),
                aio: r.install(c"aio"),
                data: r.install(c"data"),
                value: r.install(c"value"),
                id: r.install(c"id"),
            });
            nil()
        })
    }?;
    GLOBALS.set(g);
    Ok(())
}

fn base_env() -> SEXP {
    // SAFETY: a constant R sets up at start-up.
    unsafe { R_BaseEnv }
}

fn empty_env() -> SEXP {
    // SAFETY: a constant R sets up at start-up.
    unsafe { R_EmptyEnv }
}

fn unbound() -> SEXP {
    // SAFETY: a constant R sets up at start-up.
    unsafe { R_UnboundValue }
}

/// src/entrypoint.c's `mirai_closure(body, env)`: `function() body`
/// enclosed by `env`, through R_mkClosure where R has it (see there).
pub type ClosureFn = unsafe extern "C" fn(SEXP, SEXP) -> SEXP;

static CLOSURE: MainThread<Option<ClosureFn>> = MainThread::new(None);

/// Records mirai_closure (src/entrypoint.c), once at load.
pub fn init_closure(f: ClosureFn) {
    CLOSURE.set(Some(f));
}

/// The 'unresolved' value (`$data` of an unresolved mirai).
pub fn unresolved() -> Result<SEXP, RError> {
    Ok(globals()?.unresolved)
}

/// A new mirai for aio handle `aio` (NULL for a resolved one) and task id.
/// With `value` (sync mode), the mirai is resolved to it from the start.
pub fn new_mirai(aio: SEXP, id: u64, value: Option<SEXP>) -> Result<Owned, RError> {
    let g = globals()?;
    let closure = CLOSURE.get().ok_or("mirai: native library not initialised by R")?;
    let id = id.min(i32::MAX as u64) as i32;
    let empty = empty_env();
    let make = |r: &InR| {
        let env = r.protect(r.new_env(empty));
        r.define_var(g.aio, aio, env);
        if let Some(v) = value {
            r.define_var(g.value, v, env);
        }
        let body = r.protect(r.lang4(g.dot_call, g.data_routine, aio, env));
        // SAFETY: mirai_closure takes a call and an environment, and may
        // allocate: inside try_r, as its C definition asks.
        let fun = r.protect(unsafe { closure(body, env) });
        r.make_active_binding(g.data, fun, env);
        r.set_attrib(env, g.id, r.scalar_int(id));
        r.set_attrib(env, class_symbol(), g.class);
        env
    };
    // SAFETY: the closure owns nothing with a destructor.
    unsafe { rooted(make) }
}

/// The value of plain binding `sym` in mirai `env`, or NULL. A mirai's
/// bindings other than `data` are plain ones (we make them), so reading one
/// runs no R code and allocates nothing; and `env` (an argument) keeps the
/// value alive.
fn plain_binding(env: SEXP, sym: SEXP) -> Result<SEXP, RError> {
    check_env(env)?;
    // SAFETY: `env` is an environment; for a plain binding, the lookup
    // only reads the frame.
    let v = unsafe { Rf_findVarInFrame(env, sym) };
    Ok(if v == unbound() { nil() } else { v })
}

/// The aio handle of mirai `env`, or NULL.
pub fn aio_of(env: SEXP) -> Result<SEXP, RError> {
    plain_binding(env, globals()?.aio)
}

pub fn check_env(env: SEXP) -> Result<(), RError> {
    if !is_env(env) {
        return Err("`x` is not a mirai".into());
    }
    Ok(())
}

/// The cached value of mirai `env`, or NULL if none yet.
pub fn cached_value(env: SEXP) -> Result<SEXP, RError> {
    plain_binding(env, globals()?.value)
}

/// Caches `v` as mirai `env`'s value.
pub fn cache_value(env: SEXP, v: SEXP) -> Result<(), RError> {
    let g = globals()?;
    check_env(env)?;
    // SAFETY: the closure owns nothing with a destructor.
    unsafe {
        try_r(|r| {
            r.define_var(g.value, v, env);
            nil()
        })
    }?;
    Ok(())
}
