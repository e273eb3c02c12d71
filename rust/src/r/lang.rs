//! Environments, symbols, small lists, and building and evaluating calls,
//! safely: what the cluster-node path needs from R (`node`, and `daemon`'s
//! native evaluation of node tasks).
//!
//! As in `value`, anything that may allocate or run R code runs inside
//! `try_r`, so it returns `Err(RError::Unwind(_))` instead of longjmping.
//! Returned values are unprotected.

use super::call::{try_r, RError};
use super::ffi::*;
use std::ffi::{c_char, c_int, c_void, CStr};

/// R objects made once and kept for the session (symbols, preserved
/// constants), made on first use by R's main thread, the only thread that
/// touches them.
pub struct MainOnce<T>(std::cell::UnsafeCell<Option<T>>);

// SAFETY: only R's main thread ever reads or writes the cell.
unsafe impl<T> Sync for MainOnce<T> {}

impl<T> Default for MainOnce<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> MainOnce<T> {
    pub const fn new() -> Self {
        MainOnce(std::cell::UnsafeCell::new(None))
    }

    /// The value, made by `make` the first time it succeeds.
    pub fn get(&'static self, make: impl FnOnce() -> Result<T, RError>) -> Result<&'static T, RError> {
        // SAFETY: main thread only, and no reference into the cell is held
        // across a call that could re-enter this function.
        let cell = unsafe { &mut *self.0.get() };
        if cell.is_none() {
            *cell = Some(make()?);
        }
        cell.as_ref().ok_or_else(|| "internal error in mirai: constants unavailable".into())
    }
}

pub fn install(name: &CStr) -> Result<SEXP, RError> {
    try_r(|| unsafe { Rf_install(name.as_ptr()) })
}

/// A character vector of `v`, preserved for the session.
pub fn preserved_strings(v: &[&CStr]) -> Result<SEXP, RError> {
    try_r(|| unsafe {
        let s = Rf_protect(Rf_allocVector(SEXPTYPE::STRSXP, v.len() as isize));
        for (i, c) in v.iter().enumerate() {
            let b = c.to_bytes();
            SET_STRING_ELT(s, i as isize, Rf_mkCharLenCE(b.as_ptr() as *const c_char, b.len() as c_int, cetype_t::CE_UTF8));
        }
        R_PreserveObject(s);
        Rf_unprotect(1);
        s
    })
}

/// The call `fun()` of base function `fun`, preserved for the session.
pub fn preserved_base_call(fun: &CStr) -> Result<SEXP, RError> {
    try_r(|| unsafe {
        let call = Rf_lang1(Rf_findFun(Rf_install(fun.as_ptr()), R_BaseEnv));
        R_PreserveObject(call);
        call
    })
}

pub fn is_env(x: SEXP) -> bool {
    unsafe { TYPEOF(x) == ENVSXP }
}

/// Whether `x` has class `class` (among others). Reads the class attribute
/// only: no allocation, no dispatch.
pub fn inherits(x: SEXP, class: &CStr) -> bool {
    unsafe { Rf_inherits(x, class.as_ptr()) != Rboolean::FALSE }
}

/// TRUE (a logical scalar).
pub fn is_true(x: SEXP) -> bool {
    unsafe { TYPEOF(x) == LGLSXP && Rf_xlength(x) == 1 && *LOGICAL(x) == 1 }
}

/// Whether the first name of list `x` is the first string of `names`
/// (a preserved character vector: R's cache of strings makes equal strings
/// one object, so this is a pointer comparison).
pub fn first_name_is(x: SEXP, names: SEXP) -> bool {
    unsafe {
        let nms = Rf_getAttrib(x, R_NamesSymbol);
        TYPEOF(nms) == STRSXP && Rf_xlength(nms) > 0 && STRING_ELT(nms, 0) == STRING_ELT(names, 0)
    }
}

/// The value bound to `sym` in `env` itself (not its parents), NULL if
/// unbound. An active binding runs its function, hence `try_r`.
pub fn env_get(env: SEXP, sym: SEXP) -> Result<SEXP, RError> {
    if !is_env(env) {
        return Err("internal error in mirai: an environment was expected".into());
    }
    try_r(|| unsafe {
        let v = Rf_findVarInFrame(env, sym);
        if v == R_UnboundValue {
            R_NilValue
        } else {
            v
        }
    })
}

pub fn env_set(env: SEXP, sym: SEXP, value: SEXP) -> Result<(), RError> {
    if !is_env(env) {
        return Err("internal error in mirai: an environment was expected".into());
    }
    try_r(|| unsafe {
        Rf_defineVar(sym, value, env);
        R_NilValue
    })?;
    Ok(())
}

/// Attribute `sym` of `x` (NULL if none).
pub fn attr(x: SEXP, sym: SEXP) -> Result<SEXP, RError> {
    try_r(|| unsafe { Rf_getAttrib(x, sym) })
}

/// A list of `items` (each protected by the caller) with names `names` (a
/// preserved character vector) and, unless NULL, class `class`.
pub fn list_named(items: &[SEXP], names: SEXP, class: SEXP) -> Result<SEXP, RError> {
    try_r(|| unsafe {
        let v = Rf_protect(Rf_allocVector(SEXPTYPE::VECSXP, items.len() as isize));
        for (i, x) in items.iter().enumerate() {
            SET_VECTOR_ELT(v, i as isize, *x);
        }
        Rf_setAttrib(v, R_NamesSymbol, names);
        if class != R_NilValue {
            Rf_setAttrib(v, R_ClassSymbol, class);
        }
        Rf_unprotect(1);
        v
    })
}

/// List `x` (or NULL) with `item` appended: a new list.
pub fn list_append(x: SEXP, item: SEXP) -> Result<SEXP, RError> {
    try_r(|| unsafe {
        let n = if TYPEOF(x) == VECSXP { Rf_xlength(x) } else { 0 };
        let v = Rf_allocVector(SEXPTYPE::VECSXP, n + 1);
        for i in 0..n {
            SET_VECTOR_ELT(v, i, VECTOR_ELT(x, i));
        }
        SET_VECTOR_ELT(v, n, item);
        v
    })
}

/// List `x` without its first element: a new list.
pub fn list_rest(x: SEXP) -> Result<SEXP, RError> {
    try_r(|| unsafe {
        let n = if TYPEOF(x) == VECSXP { Rf_xlength(x) } else { 0 };
        let v = Rf_allocVector(SEXPTYPE::VECSXP, (n - 1).max(0));
        for i in 1..n {
            SET_VECTOR_ELT(v, i - 1, VECTOR_ELT(x, i));
        }
        v
    })
}

/// Whether closures (or any objects) `a` and `b` are identical as
/// `identical()` sees them by default (environments compared, byte code
/// and source references ignored).
pub fn identical(a: SEXP, b: SEXP) -> bool {
    const IDENTICAL_DEFAULT: c_int = 16;
    unsafe { R_compute_identical(a, b, IDENTICAL_DEFAULT) != Rboolean::FALSE }
}

/// Whether closures `a` and `b`, identical but for source references,
/// carry the same ones: no `srcref` attribute on either, or the same
/// positions in source files with the same contents. (`identical()` cannot
/// tell: each unserialized copy of a function has its own source file
/// environment, and environments compare by address.) When in doubt, no:
/// the cost of a wrong no is one compilation of the function.
pub fn same_source(a: SEXP, b: SEXP) -> Result<bool, RError> {
    let same = try_r(|| unsafe {
        let srcref = Rf_install(c"srcref".as_ptr());
        let (sa, sb) = (Rf_getAttrib(a, srcref), Rf_getAttrib(b, srcref));
        if sa == R_NilValue || sb == R_NilValue {
            return Rf_ScalarLogical((sa == sb) as c_int);
        }
        let n = Rf_xlength(sa);
        if TYPEOF(sa) != INTSXP || TYPEOF(sb) != INTSXP || n != Rf_xlength(sb) {
            return Rf_ScalarLogical(0);
        }
        let (pa, pb) = (INTEGER(sa), INTEGER(sb));
        if (0..n).any(|i| *pa.offset(i) != *pb.offset(i)) {
            return Rf_ScalarLogical(0);
        }
        let srcfile = Rf_install(c"srcfile".as_ptr());
        Rf_ScalarLogical(same_frame(Rf_getAttrib(sa, srcfile), Rf_getAttrib(sb, srcfile)) as c_int)
    })?;
    Ok(is_true(same))
}

/// Whether environments (or other objects) `a` and `b` hold identical
/// bindings. An active binding counts as a difference: reading it would
/// run R code (which may fail) where none is expected. May allocate: call
/// inside `try_r`.
unsafe fn same_frame(a: SEXP, b: SEXP) -> bool {
    if a == b {
        return true;
    }
    if !is_env(a) || !is_env(b) {
        return identical(a, b);
    }
    let names = Rf_protect(R_lsInternal3(a, Rboolean::TRUE, Rboolean::TRUE));
    let same = identical(names, R_lsInternal3(b, Rboolean::TRUE, Rboolean::TRUE))
        && (0..Rf_xlength(names)).all(|i| {
            let sym = Rf_installTrChar(STRING_ELT(names, i));
            R_BindingIsActive(sym, a) == Rboolean::FALSE
                && R_BindingIsActive(sym, b) == Rboolean::FALSE
                && identical(Rf_findVarInFrame(a, sym), Rf_findVarInFrame(b, sym))
        });
    Rf_unprotect(1);
    same
}

/// The head of the call `do.call(fun, ...)` makes: `fun` itself if a
/// function, the symbol it names if a string; None for anything else,
/// which do.call() refuses.
pub fn call_head(fun: SEXP) -> Result<Option<SEXP>, RError> {
    match unsafe { TYPEOF(fun) } {
        CLOSXP | BUILTINSXP | SPECIALSXP => Ok(Some(fun)),
        STRSXP if unsafe { Rf_xlength(fun) } == 1 => try_r(|| unsafe { Rf_installTrChar(STRING_ELT(fun, 0)) }).map(Some),
        _ => Ok(None),
    }
}

/// Whether do.call() takes `args` as its arguments (`is.list()`: a list or
/// a pairlist).
pub fn is_arg_list(args: SEXP) -> bool {
    matches!(unsafe { TYPEOF(args) }, VECSXP | LISTSXP)
}

/// Base R's `eval` closure and the `quote` primitive, preserved: calls
/// built with the objects themselves as heads cannot be masked by a
/// global `eval` or `quote`.
struct EvalHeads {
    eval: SEXP,
    quote: SEXP,
    /// The call `base::quote`.
    base_quote: SEXP,
}

static HEADS: MainOnce<EvalHeads> = MainOnce::new();

fn heads() -> Result<&'static EvalHeads, RError> {
    HEADS.get(|| {
        let preserved = |f: &dyn Fn() -> SEXP| {
            try_r(|| unsafe {
                let x = f();
                R_PreserveObject(x);
                x
            })
        };
        Ok(EvalHeads {
            eval: preserved(&|| unsafe { Rf_findFun(Rf_install(c"eval".as_ptr()), R_BaseEnv) })?,
            quote: preserved(&|| unsafe { Rf_findFun(Rf_install(c"quote".as_ptr()), R_BaseEnv) })?,
            base_quote: preserved(&|| unsafe {
                Rf_lang3(R_DoubleColonSymbol, R_BaseSymbol, Rf_install(c"quote".as_ptr()))
            })?,
        })
    })
}

/// The call `eval(quote(head(base::quote(a1), name = base::quote(a2),
/// ...)), env)` for `args` (a list or pairlist), where `env` is a new
/// environment (enclosed by the global one) binding `sym` to `value`:
/// `do.call(fun, args, quote = TRUE)` (whose quoting is `base::quote`, as
/// `substitute()` and `sys.call()` show) made in a frame that binds `sym`,
/// where code that searches the frames above it (future's, for parallel's
/// `master`) finds it (eval() makes `env` a frame). `head`: see
/// `call_head`. Not a closure `function(sym) head(...)`: R's JIT compiles
/// a new closure with a large body at its first call, at a cost that grows
/// faster than its size (4,000 arguments: 3 s).
pub fn call_binding(head: SEXP, args: SEXP, sym: SEXP, value: SEXP) -> Result<SEXP, RError> {
    let h = heads()?;
    try_r(|| unsafe {
        let args = Rf_protect(if TYPEOF(args) == LISTSXP { Rf_PairToVectorList(args) } else { args });
        let n = if TYPEOF(args) == VECSXP { Rf_xlength(args) } else { 0 };
        let names = Rf_getAttrib(args, R_NamesSymbol);
        let quoted = Rf_protect(Rf_allocList(n as c_int));
        let mut cell = quoted;
        for i in 0..n {
            SETCAR(cell, Rf_lang2(h.base_quote, VECTOR_ELT(args, i)));
            if TYPEOF(names) == STRSXP && *R_CHAR(STRING_ELT(names, i)) != 0 {
                SET_TAG(cell, Rf_installTrChar(STRING_ELT(names, i)));
            }
            cell = CDR(cell);
        }
        let inner = Rf_protect(Rf_lcons(head, quoted));
        let expr = Rf_protect(Rf_lang2(h.quote, inner));
        let env = Rf_protect(R_NewEnv(R_GlobalEnv, 0, 0));
        Rf_defineVar(sym, value, env);
        let call = Rf_lang3(h.eval, expr, env);
        Rf_unprotect(5);
        call
    })
}

/// Evaluates `call` in R's base environment (R errors come back as Err).
pub fn eval_in_base(call: SEXP) -> Result<SEXP, RError> {
    try_r(|| unsafe { Rf_eval(call, R_BaseEnv) })
}

/// mirai_eval (src/entrypoint.c): evaluates an expression, returning its
/// `box` argument instead of longjmping when it fails.
type GuardedEval = unsafe extern "C" fn(SEXP, SEXP, SEXP) -> SEXP;

static mut GUARDED_EVAL: Option<GuardedEval> = None;

/// Records mirai_eval, once at load.
///
/// # Safety
/// `f` must be mirai_eval from src/entrypoint.c.
pub unsafe fn init_guarded_eval(f: *const c_void) {
    GUARDED_EVAL = Some(std::mem::transmute::<*const c_void, GuardedEval>(f));
}

/// Evaluates `call` in the global environment as a daemon evaluates a task:
/// on an error, `box` gets the condition and the calls (`cond`, `calls`)
/// and is returned; on an interrupt, `box` is returned with `cond` NULL.
pub fn eval_guarded(call: SEXP, box_: SEXP) -> Result<SEXP, RError> {
    let f = unsafe { *std::ptr::addr_of!(GUARDED_EVAL) }.ok_or("mirai: native library not initialised by R")?;
    if !is_env(box_) {
        return Err("internal error in mirai: `box` must be an environment".into());
    }
    try_r(|| unsafe { f(call, R_GlobalEnv, box_) })
}
