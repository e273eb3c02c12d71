//! The 'mirai' object, built in one place.
//!
//! A mirai is an environment of class `c("mirai", "recvAio")` holding the
//! aio handle as `aio` (NULL once resolved in sync mode), the value once
//! converted as `value`, and an active binding `data` whose function calls
//! `.Call(<data routine>, aio, env)` with both embedded as constants, so
//! reading `$data` needs no variable lookups. Built in R, it was a large
//! share of the host's cost per task.

use super::call::{try_r, RError};
use super::ffi::*;
use std::ffi::c_int;

/// R objects the constructor reuses, set once at load (main thread only,
/// preserved for the session).
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

static mut GLOBALS: Option<Globals> = None;

fn globals() -> Result<&'static Globals, RError> {
    unsafe {
        (*std::ptr::addr_of!(GLOBALS)).as_ref().ok_or_else(|| "mirai is not initialised; reload the package".into())
    }
}

/// Records the data routine and the 'unresolved' value (from `.onLoad`).
pub fn init(data_routine: SEXP, unresolved: SEXP) -> Result<(), RError> {
    try_r(|| unsafe {
        let keep = |s: SEXP| {
            R_PreserveObject(s);
            s
        };
        let class = keep(Rf_allocVector(SEXPTYPE::STRSXP, 2));
        for (i, c) in ["mirai", "recvAio"].iter().enumerate() {
            SET_STRING_ELT(class, i as isize, Rf_mkCharLenCE(c.as_ptr() as *const _, c.len() as c_int, cetype_t::CE_UTF8));
        }
        GLOBALS = Some(Globals {
            dot_call: keep(Rf_findFun(Rf_install(c".Call".as_ptr()), R_BaseEnv)),
            data_routine: keep(data_routine),
            unresolved: keep(unresolved),
            class,
            aio: Rf_install(c"aio".as_ptr()),
            data: Rf_install(c"data".as_ptr()),
            value: Rf_install(c"value".as_ptr()),
            id: Rf_install(c"id".as_ptr()),
        });
        R_NilValue
    })?;
    Ok(())
}

/// src/entrypoint.c's `mirai_closure(body, env)`: `function() body`
/// enclosed by `env`, through R_mkClosure where R has it (see there).
pub type ClosureFn = unsafe extern "C" fn(SEXP, SEXP) -> SEXP;

static mut CLOSURE: Option<ClosureFn> = None;

/// # Safety
/// `f` must be mirai_closure from src/entrypoint.c; called once, at load.
pub unsafe fn init_closure(f: ClosureFn) {
    CLOSURE = Some(f);
}

/// The closure maker: it allocates, so call it only inside `try_r`.
fn closure_fn() -> Result<ClosureFn, RError> {
    // SAFETY: written once at load, before any .Call; read on R's thread.
    unsafe { *std::ptr::addr_of!(CLOSURE) }.ok_or_else(|| "mirai: native library not initialised by R".into())
}

/// The 'unresolved' value (`$data` of an unresolved mirai).
pub fn unresolved() -> Result<SEXP, RError> {
    Ok(globals()?.unresolved)
}

/// A new mirai for aio handle `aio` (NULL for a resolved one) and task id.
/// With `value` (sync mode), the mirai is resolved to it from the start.
pub fn new_mirai(aio: SEXP, id: u64, value: Option<SEXP>) -> Result<SEXP, RError> {
    let g = globals()?;
    let id = id.min(i32::MAX as u64) as c_int;
    let closure = closure_fn()?;
    try_r(|| unsafe {
        let aio = Rf_protect(aio);
        let env = Rf_protect(R_NewEnv(R_EmptyEnv, 0, 0));
        Rf_defineVar(g.aio, aio, env);
        if let Some(v) = value {
            Rf_defineVar(g.value, v, env);
        }
        let body = Rf_protect(Rf_lang4(g.dot_call, g.data_routine, aio, env));
        let fun = Rf_protect(closure(body, env));
        R_MakeActiveBinding(g.data, fun, env);
        Rf_setAttrib(env, g.id, Rf_ScalarInteger(id));
        Rf_setAttrib(env, R_ClassSymbol, g.class);
        Rf_unprotect(4);
        env
    })
}

/// The aio handle of mirai `env`, or NULL.
pub fn aio_of(env: SEXP) -> Result<SEXP, RError> {
    let g = globals()?;
    check_env(env)?;
    unsafe {
        let a = Rf_findVarInFrame(env, g.aio);
        Ok(if a == R_UnboundValue { R_NilValue } else { a })
    }
}

pub fn check_env(env: SEXP) -> Result<(), RError> {
    if unsafe { TYPEOF(env) } != ENVSXP {
        return Err("`x` is not a mirai".into());
    }
    Ok(())
}

/// The cached value of mirai `env`, or NULL if none yet.
pub fn cached_value(env: SEXP) -> Result<SEXP, RError> {
    let g = globals()?;
    check_env(env)?;
    unsafe {
        let v = Rf_findVarInFrame(env, g.value);
        Ok(if v == R_UnboundValue { R_NilValue } else { v })
    }
}

/// Caches `v` as mirai `env`'s value.
pub fn cache_value(env: SEXP, v: SEXP) -> Result<(), RError> {
    let g = globals()?;
    check_env(env)?;
    try_r(|| unsafe {
        Rf_defineVar(g.value, v, env);
        R_NilValue
    })?;
    Ok(())
}
