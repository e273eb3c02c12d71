//! Environments, symbols, small lists, and building and evaluating calls,
//! safely: what the cluster-node path needs from R (`node`, and `daemon`'s
//! native evaluation of node tasks).
//!
//! As in `value`, anything that may allocate or run R code runs inside
//! `try_r`, so it returns `Err(RError::Unwind(_))` instead of longjmping.
//! Values made here come back as `Owned`; a bare SEXP returned is a symbol
//! or a preserved constant.

use super::call::{try_r, InR, RError};
use super::ffi::*;
pub use super::global::MainOnce;
use super::global::MainThread;
use super::value::*;
use std::ffi::{c_int, CStr};

/// The symbol `name` (symbols live for the session).
pub fn install(name: &CStr) -> Result<SEXP, RError> {
    // SAFETY: the closure owns nothing with a destructor.
    unsafe { try_r(|r| r.install(name)) }
}

/// A character vector of `v`, preserved for the session.
pub fn preserved_strings(v: &[&CStr]) -> Result<SEXP, RError> {
    let bytes: Vec<&[u8]> = v.iter().map(|c| c.to_bytes()).collect();
    let bytes = bytes.as_slice();
    // SAFETY: the closure owns nothing with a destructor (`bytes` is
    // borrowed).
    unsafe { try_r(|r| r.preserve(r.strings(bytes))) }
}

/// The call `fun()` of base function `fun`, preserved for the session.
pub fn preserved_base_call(fun: &CStr) -> Result<SEXP, RError> {
    // SAFETY: the closure owns nothing with a destructor.
    unsafe { try_r(|r| r.preserve(r.lang1(r.find_fun(r.install(fun), base_env())))) }
}

fn base_env() -> SEXP {
    // SAFETY: a constant R sets up at start-up.
    unsafe { R_BaseEnv }
}

fn global_env() -> SEXP {
    // SAFETY: a constant R sets up at start-up.
    unsafe { R_GlobalEnv }
}

fn unbound() -> SEXP {
    // SAFETY: a constant R sets up at start-up.
    unsafe { R_UnboundValue }
}

pub fn is_env(x: SEXP) -> bool {
    type_of(x) == ENVSXP
}

/// Whether `x` has class `class` (among others). Reads the class attribute
/// only: no allocation, no dispatch.
pub fn inherits(x: SEXP, class: &CStr) -> bool {
    // SAFETY: Rf_inherits reads `x`'s class attribute and compares
    // strings; it allocates nothing.
    unsafe { Rf_inherits(x, class.as_ptr()) != Rboolean::FALSE }
}

/// The value bound to `sym` in `env` itself (not its parents), NULL if
/// unbound. An active binding runs its function, hence `try_r`.
pub fn env_get(env: SEXP, sym: SEXP) -> Result<Owned, RError> {
    if !is_env(env) {
        return Err("internal error in mirai: an environment was expected".into());
    }
    // SAFETY: the closure owns nothing with a destructor.
    unsafe {
        rooted(|r| {
            let v = r.find_var_in_frame(env, sym);
            if v == unbound() {
                nil()
            } else {
                v
            }
        })
    }
}

pub fn env_set(env: SEXP, sym: SEXP, value: SEXP) -> Result<(), RError> {
    if !is_env(env) {
        return Err("internal error in mirai: an environment was expected".into());
    }
    // SAFETY: the closure owns nothing with a destructor.
    unsafe {
        try_r(|r| {
            r.define_var(sym, value, env);
            nil()
        })
    }?;
    Ok(())
}

/// Attribute `sym` of `x` (NULL if none).
pub fn attr(x: SEXP, sym: SEXP) -> Result<Owned, RError> {
    // SAFETY: the closure owns nothing with a destructor.
    unsafe { rooted(|r| r.get_attrib(x, sym)) }
}

/// A list of `items` with names `names` (a preserved character vector)
/// and, unless NULL, class `class`.
pub fn list_named(items: &[SEXP], names: SEXP, class: SEXP) -> Result<Owned, RError> {
    // SAFETY: the closure owns nothing with a destructor.
    unsafe {
        rooted(|r| {
            let v = r.protect(r.alloc(SEXPTYPE::VECSXP, items.len()));
            for (i, x) in items.iter().enumerate() {
                r.set_elt(v, i, *x);
            }
            r.set_attrib(v, names_sym(), names);
            if !is_null(class) {
                r.set_attrib(v, class_symbol(), class);
            }
            v
        })
    }
}

fn names_sym() -> SEXP {
    // SAFETY: a constant R sets up at start-up.
    unsafe { R_NamesSymbol }
}

/// List `x` (or NULL) with `item` appended: a new list.
pub fn list_append(x: SEXP, item: SEXP) -> Result<Owned, RError> {
    let n = if is_list(x) { len(x) } else { 0 };
    // SAFETY: the closure owns nothing with a destructor.
    unsafe {
        rooted(|r| {
            let v = r.alloc(SEXPTYPE::VECSXP, n + 1);
            for i in 0..n {
                r.set_elt(v, i, list_at(x, i));
            }
            r.set_elt(v, n, item);
            v
        })
    }
}

/// List `x` without its first element: a new list.
pub fn list_rest(x: SEXP) -> Result<Owned, RError> {
    let n = if is_list(x) { len(x) } else { 0 };
    // SAFETY: the closure owns nothing with a destructor.
    unsafe {
        rooted(|r| {
            let v = r.alloc(SEXPTYPE::VECSXP, n.saturating_sub(1));
            for i in 1..n {
                r.set_elt(v, i - 1, list_at(x, i));
            }
            v
        })
    }
}

/// Whether closures (or any objects) `a` and `b` are identical as
/// `identical()` sees them by default (environments compared, byte code
/// and source references ignored).
pub fn identical(a: SEXP, b: SEXP) -> bool {
    const IDENTICAL_DEFAULT: c_int = 16;
    // SAFETY: R_compute_identical compares objects without allocating or
    // evaluating (it does not read active bindings' values).
    unsafe { R_compute_identical(a, b, IDENTICAL_DEFAULT) != Rboolean::FALSE }
}

/// Whether closures `a` and `b`, identical but for source references,
/// carry the same ones: no `srcref` attribute on either, or the same
/// positions in source files with the same contents. (`identical()` cannot
/// tell: each unserialized copy of a function has its own source file
/// environment, and environments compare by address.) When in doubt, no:
/// the cost of a wrong no is one compilation of the function.
pub fn same_source(a: SEXP, b: SEXP) -> Result<bool, RError> {
    // SAFETY: the closure owns nothing with a destructor.
    let same = unsafe {
        try_r(|r| {
            let srcref = r.install(c"srcref");
            let (sa, sb) = (r.get_attrib(a, srcref), r.get_attrib(b, srcref));
            if is_null(sa) || is_null(sb) {
                return r.scalar_lgl(sa == sb);
            }
            if !same_ints(sa, sb) {
                return r.scalar_lgl(false);
            }
            let srcfile = r.install(c"srcfile");
            let (fa, fb) = (r.protect(r.get_attrib(sa, srcfile)), r.protect(r.get_attrib(sb, srcfile)));
            r.scalar_lgl(same_frame(r, fa, fb))
        })
    }?;
    Ok(is_true(same))
}

/// Whether environments (or other objects) `a` and `b` hold identical
/// bindings. An active binding counts as a difference: reading it would
/// run R code (which may fail) where none is expected.
fn same_frame(r: &InR, a: SEXP, b: SEXP) -> bool {
    if a == b {
        return true;
    }
    if !is_env(a) || !is_env(b) {
        return identical(a, b);
    }
    r.scoped(|r| {
        let names = r.protect(r.env_names(a));
        identical(names, r.env_names(b))
            && (0..len(names)).all(|i| {
                let sym = r.install_char(char_at(names, i));
                !r.binding_is_active(sym, a)
                    && !r.binding_is_active(sym, b)
                    && identical(r.find_var_in_frame(a, sym), r.find_var_in_frame(b, sym))
            })
    })
}

/// The head of the call `do.call(fun, ...)` makes: `fun` itself if a
/// function, the symbol it names if a string; None for anything else,
/// which do.call() refuses.
pub fn call_head(fun: SEXP) -> Result<Option<SEXP>, RError> {
    match type_of(fun) {
        CLOSXP | BUILTINSXP | SPECIALSXP => Ok(Some(fun)),
        // SAFETY: the closure owns nothing with a destructor.
        STRSXP if len(fun) == 1 => unsafe { try_r(|r| r.install_char(char_at(fun, 0))) }.map(Some),
        _ => Ok(None),
    }
}

/// Whether do.call() takes `args` as its arguments (`is.list()`: a list or
/// a pairlist).
pub fn is_arg_list(args: SEXP) -> bool {
    matches!(type_of(args), VECSXP | LISTSXP)
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
        let base_fun = |name: &CStr| {
            // SAFETY: the closure owns nothing with a destructor.
            unsafe { try_r(|r| r.preserve(r.find_fun(r.install(name), base_env()))) }
        };
        // SAFETY: constants R sets up at start-up.
        let (dcolon, base) = unsafe { (R_DoubleColonSymbol, R_BaseSymbol) };
        Ok(EvalHeads {
            eval: base_fun(c"eval")?,
            quote: base_fun(c"quote")?,
            // SAFETY: the closure owns nothing with a destructor.
            base_quote: unsafe { try_r(|r| r.preserve(r.lang3(dcolon, base, r.install(c"quote")))) }?,
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
pub fn call_binding(head: SEXP, args: SEXP, sym: SEXP, value: SEXP) -> Result<Owned, RError> {
    let h = heads()?;
    // SAFETY: the closure owns nothing with a destructor.
    unsafe {
        rooted(|r| {
            let args = r.protect(if type_of(args) == LISTSXP { r.pairlist_to_list(args) } else { args });
            let n = if is_list(args) { len(args) } else { 0 };
            let names = r.protect(r.get_attrib(args, names_sym()));
            let quoted = r.protect(r.alloc_pairlist(n));
            let mut cell = quoted;
            for i in 0..n {
                let named = type_of(names) == STRSXP && with_str_at(names, i, |b| !b.is_empty());
                let tag = if named { r.install_char(char_at(names, i)) } else { nil() };
                r.set_cell(cell, r.lang2(h.base_quote, list_at(args, i)), tag);
                cell = pairlist_next(cell);
            }
            let inner = r.protect(r.lcons(head, quoted));
            let expr = r.protect(r.lang2(h.quote, inner));
            let env = r.protect(r.new_env(global_env()));
            r.define_var(sym, value, env);
            r.lang3(h.eval, expr, env)
        })
    }
}

/// The cell after pairlist cell `cell`.
fn pairlist_next(cell: SEXP) -> SEXP {
    debug_assert!(type_of(cell) == LISTSXP);
    // SAFETY: a field read of a pairlist cell; allocates nothing.
    unsafe { CDR(cell) }
}

/// Evaluates `call` in R's base environment (R errors come back as Err).
pub fn eval_in_base(call: SEXP) -> Result<Owned, RError> {
    // SAFETY: the closure owns nothing with a destructor.
    unsafe { rooted(|r| r.eval(call, base_env())) }
}

/// mirai_eval (src/entrypoint.c): evaluates an expression, returning its
/// `box` argument instead of longjmping when it fails.
pub type GuardedEval = super::call::CRoutine3;

static GUARDED_EVAL: MainThread<Option<GuardedEval>> = MainThread::new(None);

/// Records mirai_eval, once at load.
pub fn init_guarded_eval(f: GuardedEval) {
    GUARDED_EVAL.set(Some(f));
}

/// Evaluates `call` in the global environment as a daemon evaluates a task:
/// on an error, `box` gets the condition and the calls (`cond`, `calls`)
/// and is returned; on an interrupt, `box` is returned with `cond` NULL.
pub fn eval_guarded(call: SEXP, box_: SEXP) -> Result<Owned, RError> {
    let f = GUARDED_EVAL.get().ok_or("mirai: native library not initialised by R")?;
    if !is_env(box_) {
        return Err("internal error in mirai: `box` must be an environment".into());
    }
    let global = global_env();
    let eval = |_: &InR| {
        // SAFETY: mirai_eval is called as its C definition requires: an
        // expression and two environments (checked), on R's main thread,
        // inside try_r, where an error it does not catch itself stops.
        unsafe { f(call, global, box_) }
    };
    // SAFETY: the closure owns nothing with a destructor.
    unsafe { rooted(eval) }
}

/// Calls R function `fun` with the one argument `arg`, in the global
/// environment; an R error (or a condition handler's jump) comes back as
/// Err.
pub fn apply1(fun: SEXP, arg: SEXP) -> Result<Owned, RError> {
    // SAFETY: the closure owns nothing with a destructor.
    unsafe { rooted(|r| r.eval(r.protect(r.lang2(fun, arg)), global_env())) }
}

/// `x`, preserved for the session.
pub fn preserved(x: SEXP) -> Result<SEXP, RError> {
    // SAFETY: the closure owns nothing with a destructor.
    unsafe { try_r(|r| r.preserve(x)) }
}
