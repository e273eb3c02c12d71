//! The 'mirai' object, built in one place.
//!
//! A mirai is an environment of class `c("mirai", "recvAio")` holding the
//! aio handle as `aio` and an active binding `data`. The binding's function
//! is the one thing made per mirai: its body, `.Call(<data routine>, aio)`,
//! is one call object shared by every mirai (`aio` is found in the mirai,
//! the function's enclosure), and the converted value is cached with the
//! aio handle (`cache_in_handle`), not in the environment. A queued task
//! is held in R by an environment, two bindings, a closure, the handle and
//! its finalizer: a body per mirai (a 4-cell call) and a task id attribute
//! took 336 more bytes of R's heap each. A mirai with no handle (resolved
//! from the start, as in sync mode) keeps its value as `value`.

use super::call::{try_r, InR, RError};
use super::ffi::*;
use super::global::MainThread;
use super::handle::{kept, set_kept};
use super::lang::is_env;
use super::value::*;

/// R objects the constructor reuses, set once at load (preserved for the
/// session).
#[derive(Clone, Copy)]
struct Globals {
    /// `<aio_data>(aio)`, the namespace's function itself: the body of
    /// every mirai's `data`.
    data_body: SEXP,
    unresolved: SEXP,
    class: SEXP,
    aio: SEXP,
    data: SEXP,
    value: SEXP,
}

static GLOBALS: MainThread<Option<Globals>> = MainThread::new(None);

fn globals() -> Result<Globals, RError> {
    GLOBALS.get().ok_or_else(|| "mirai is not initialised; reload the package".into())
}

/// Records the data function (R's `aio_data`) and the 'unresolved' value
/// (from `.onLoad`).
pub fn init(data_fn: SEXP, unresolved: SEXP) -> Result<(), RError> {
    let mut g = None;
    // SAFETY: the closure owns nothing with a destructor (an Option of
    // Copy values, written last).
    unsafe {
        try_r(|r| {
            let aio = r.install(c"aio");
            // The function itself, not its name: a mirai's enclosure is the
            // empty environment. An R function (of the namespace), not the
            // native routine: a mirai saved and read back carries the
            // function as a reference to the namespace, where a routine's
            // address would come back NULL.
            g = Some(Globals {
                data_body: r.preserve(r.lang2(data_fn, aio)),
                unresolved: r.preserve(unresolved),
                class: r.preserve(r.strings(&["mirai", "recvAio"])),
                aio,
                data: r.install(c"data"),
                value: r.install(c"value"),
            });
            nil()
        })
    }?;
    GLOBALS.set(g);
    Ok(())
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

/// A new mirai for aio handle `aio`; or, with `aio` NULL, a mirai resolved
/// to `value` from the start (sync mode). A handle's value is cached with
/// the handle by the caller (`value` is then ignored).
pub fn new_mirai(aio: SEXP, value: Option<SEXP>) -> Result<Owned, RError> {
    let g = globals()?;
    let closure = CLOSURE.get().ok_or("mirai: native library not initialised by R")?;
    let empty = empty_env();
    let make = |r: &InR| {
        let env = r.protect(r.new_env(empty));
        r.define_var(g.aio, aio, env);
        match value {
            // Nothing left to resolve: `data` is a plain binding.
            Some(v) if is_null(aio) => {
                r.define_var(g.value, v, env);
                r.define_var(g.data, v, env);
            }
            _ => {
                // SAFETY: mirai_closure takes a call and an environment, and
                // may allocate: inside try_r, as its C definition asks.
                let fun = r.protect(unsafe { closure(g.data_body, env) });
                r.make_active_binding(g.data, fun, env);
            }
        }
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

/// Caches `v`, the converted value of the mirai behind aio handle `h`, with
/// the handle. It takes the place of the serialization config the handle
/// kept for the conversion, needed no more, wrapped in a pairlist cell
/// tagged `value` (a config is NULL or a list, never such a cell): so a
/// queued mirai carries no field for a value it does not have yet.
pub fn cache_in_handle(h: SEXP, v: SEXP) -> Result<(), RError> {
    let g = globals()?;
    // SAFETY: the closure owns nothing with a destructor.
    let cell = unsafe {
        rooted(|r| {
            let cell = r.cons(v, nil());
            r.set_cell(cell, v, g.value);
            cell
        })
    }?;
    set_kept(h, cell.sexp())
}

/// The value `cache_in_handle` cached with aio handle `h`, if any.
pub fn cached_in_handle(h: SEXP) -> Result<Option<SEXP>, RError> {
    let g = globals()?;
    let p = kept(h);
    // SAFETY: field reads of a pairlist cell (its type checked first).
    Ok(unsafe { (type_of(p) == LISTSXP && TAG(p) == g.value).then(|| CAR(p)) })
}
