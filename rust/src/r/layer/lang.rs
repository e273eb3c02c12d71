//! Environments, symbols, small lists, and building and evaluating calls,
//! safely: general primitives, each one R operation or one value built in
//! one go. Which calls mirai builds from them (a node task's `do.call`) is
//! the glue's (`glue::call`).
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

/// The names bound in environment `env`, sorted.
pub fn env_names(env: SEXP) -> Result<Owned, RError> {
    if !is_env(env) {
        return Err("internal error in mirai: an environment was expected".into());
    }
    // SAFETY: the closure owns nothing with a destructor.
    unsafe { rooted(|r| r.env_names(env)) }
}

/// The names bound in the global environment, in its frame's order (as
/// `names(.GlobalEnv)`).
pub fn global_names() -> Result<Owned, RError> {
    // SAFETY: the closure owns nothing with a destructor.
    unsafe { rooted(|r| r.env_names_unsorted(global_env())) }
}

/// Whether the global environment binds exactly the names of symbols
/// `syms`, in any order: as many bindings, each of them bound (so no other
/// name). Allocates nothing, where listing the names makes a vector.
pub fn globals_are(syms: &[SEXP]) -> bool {
    let g = global_env();
    // SAFETY: R_existsVarInFrame reads a frame (an environment's own
    // bindings, without running active ones); it allocates nothing.
    len(g) == syms.len() && syms.iter().all(|&s| unsafe { R_existsVarInFrame(g, s) != Rboolean::FALSE })
}

/// Whether the global environment is locked (no binding can be removed).
pub fn global_env_locked() -> bool {
    // SAFETY: reads a flag of an environment; allocates nothing.
    unsafe { R_EnvironmentIsLocked(global_env()) != Rboolean::FALSE }
}

/// Removes the global binding named by CHARSXP `name` (an R error, such as
/// for a locked global environment, comes back as Err).
pub fn remove_global(name: SEXP) -> Result<(), RError> {
    debug_assert!(type_of(name) == CHARSXP);
    // SAFETY: the closure owns nothing with a destructor.
    unsafe {
        try_r(|r| {
            r.remove_var(r.install_char(name), global_env());
            nil()
        })
    }?;
    Ok(())
}

/// The value of `sym` in base's frame (R_UnboundValue if none), running
/// nothing for a plain binding.
pub fn base_binding(sym: SEXP) -> Result<SEXP, RError> {
    // SAFETY: the closure owns nothing with a destructor; what it returns
    // is kept alive by its binding in base.
    unsafe { try_r(|r| r.find_var_in_frame(base_env(), sym)) }
}

/// Whether pairlists `a` and `b` are made of the same values under the
/// same tags, compared by pointer: an unchanged `.Options` against a copy
/// of its cells, with none of identical()'s descent into the values.
pub fn same_cells(mut a: SEXP, mut b: SEXP) -> bool {
    loop {
        match (type_of(a), type_of(b)) {
            (NILSXP, NILSXP) => return true,
            (LISTSXP, LISTSXP) => {}
            _ => return false,
        }
        // SAFETY: field reads of pairlist cells; allocates nothing.
        let same = unsafe { CAR(a) == CAR(b) && TAG(a) == TAG(b) };
        if !same {
            return false;
        }
        a = pairlist_next(a);
        b = pairlist_next(b);
    }
}

/// A binding of an environment's own frame, read without running it.
pub enum Binding {
    Unbound,
    /// An active binding (reading it would run its function).
    Active,
    Value(Owned),
}

/// The binding of `sym` in `env` itself (not its parents).
pub fn binding(env: SEXP, sym: SEXP) -> Result<Binding, RError> {
    if !is_env(env) {
        return Err("internal error in mirai: an environment was expected".into());
    }
    let active = std::cell::Cell::new(false);
    // SAFETY: the closure owns nothing with a destructor (`active` is
    // borrowed).
    let v = unsafe {
        rooted(|r| {
            if !r.exists_in_frame(env, sym) {
                unbound()
            } else if r.binding_is_active(sym, env) {
                active.set(true);
                nil()
            } else {
                r.find_var_in_frame(env, sym)
            }
        })
    }?;
    Ok(if active.get() {
        Binding::Active
    } else if v.sexp() == unbound() {
        Binding::Unbound
    } else {
        Binding::Value(v)
    })
}

/// Evaluates in `env` the call of `fun` (a symbol) with the elements of
/// lists (or pairlists) `a`, then `b`, as its arguments, each named by its
/// name unless that is "", and each symbol, call or expression vector
/// wrapped in `quote()` so that it arrives as it is: what R's
/// `do.call("fun", c(a, b), envir = env)` does with those quoted (see
/// map_call() in R/map.R), without the closure calls. An error in the call
/// is R's, continued as it was raised.
pub fn call_with(fun: SEXP, a: SEXP, b: SEXP, env: SEXP) -> Result<Owned, RError> {
    let listish = |x: SEXP| is_list(x) || matches!(type_of(x), LISTSXP | NILSXP);
    if !listish(a) || !listish(b) || !is_env(env) {
        return Err("internal error in mirai: a map element's arguments are not lists".into());
    }
    let quote = install(c"quote")?;
    // SAFETY: the closure owns nothing with a destructor.
    unsafe {
        rooted(|r| {
            let as_list = |x: SEXP| if is_list(x) { x } else { r.protect(r.pairlist_to_list(x)) };
            let (a, b) = (as_list(a), as_list(b));
            let n = len(a) + len(b);
            let args = r.protect(r.alloc_pairlist(n));
            let mut cell = args;
            for x in [a, b] {
                let names = list_names(x);
                for i in 0..len(x) {
                    // The tag first: a symbol is never collected, while
                    // the quote() call is unprotected until it is set.
                    let tag = match names {
                        Some(m) if i < len(m) && !with_str_at(m, i, |s| s.is_empty()) => r.install_char(char_at(m, i)),
                        _ => nil(),
                    };
                    let v = list_at(x, i);
                    let v = if matches!(type_of(v), SYMSXP | LANGSXP | EXPRSXP) { r.lang2(quote, v) } else { v };
                    r.set_cell(cell, v, tag);
                    cell = pairlist_next(cell);
                }
            }
            let call = r.protect(r.lcons(fun, args));
            r.eval(call, env)
        })
    }
}

/// The symbol named by element `i` of character vector `x` (translated to
/// the native encoding; symbols live for the session).
pub fn symbol_at(x: SEXP, i: usize) -> Result<SEXP, RError> {
    if type_of(x) != STRSXP || i >= len(x) {
        return Err("internal error in mirai: a name was expected".into());
    }
    // SAFETY: the closure owns nothing with a destructor.
    unsafe { try_r(|r| r.install_char(char_at(x, i))) }
}

/// `x` as a list: a pairlist's elements in a new list, anything else as it
/// is (`x` must stay reachable while the result is used).
pub fn pairlist_as_list(x: SEXP) -> Result<Owned, RError> {
    if type_of(x) != LISTSXP {
        return Ok(Owned::reachable(x));
    }
    // SAFETY: the closure owns nothing with a destructor.
    unsafe { rooted(|r| r.pairlist_to_list(x)) }
}

/// Base R's function `name` (a closure, builtin or special), preserved for
/// the session.
pub fn base_function(name: &CStr) -> Result<SEXP, RError> {
    // SAFETY: the closure owns nothing with a destructor.
    unsafe { try_r(|r| r.preserve(r.find_fun(r.install(name), base_env()))) }
}

/// Keeps `v` alive for the session (a constant made once).
pub fn preserve(v: Owned) -> Result<SEXP, RError> {
    let s = v.sexp();
    // SAFETY: the closure owns nothing with a destructor (`v` is held by
    // this frame, outside the closure).
    unsafe { try_r(|r| r.preserve(s)) }
}

/// A new environment enclosed by the global one, binding `sym` to `value`.
pub fn new_env_in_global(sym: SEXP, value: SEXP) -> Result<Owned, RError> {
    // SAFETY: the closure owns nothing with a destructor.
    unsafe {
        rooted(|r| {
            let env = r.protect(r.new_env(global_env()));
            r.define_var(sym, value, env);
            env
        })
    }
}

/// A language object to build: `Value`s as they are, `Call`s made calls.
pub enum Lang {
    Value(SEXP),
    /// `head(args)`: each argument with its tag, which is a symbol, a
    /// CHARSXP (an element of a character vector: made the symbol it
    /// names), or NULL for none.
    Call(SEXP, Vec<(SEXP, Lang)>),
}

/// The language object `tree` describes, built in one go.
pub fn lang(tree: &Lang) -> Result<Owned, RError> {
    // Unprotected on return; its parent stores it at once. Each call's
    // protections are popped when it is built (`scoped`), so nesting depth,
    // not size, bounds the protect stack.
    fn build(r: &InR, t: &Lang) -> SEXP {
        let (head, args) = match t {
            Lang::Value(v) => return *v,
            Lang::Call(head, args) => (head, args),
        };
        r.scoped(|r| {
            let list = r.protect(r.alloc_pairlist(args.len()));
            let mut cell = list;
            for (tag, arg) in args {
                // Symbols are never collected: the tag is made before the
                // argument, which is stored before anything else allocates.
                let tag = if type_of(*tag) == CHARSXP { r.install_char(*tag) } else { *tag };
                let v = build(r, arg);
                r.set_cell(cell, v, tag);
                cell = pairlist_next(cell);
            }
            r.lcons(*head, list)
        })
    }
    // SAFETY: the closure owns nothing with a destructor (`tree` is
    // borrowed).
    unsafe { rooted(|r| build(r, tree)) }
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

/// Evaluates `expr` in `env` (an R error comes back as Err, continued as
/// it was raised when returned to R).
pub fn eval_in(expr: SEXP, env: SEXP) -> Result<Owned, RError> {
    if !is_env(env) {
        return Err("internal error in mirai: an environment was expected".into());
    }
    // SAFETY: the closure owns nothing with a destructor.
    unsafe { rooted(|r| r.eval(expr, env)) }
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

/// A daemon's task: binds the elements of the named list `globals` in the
/// global environment and those of `args` in a new environment enclosed
/// by it (as list2env() does), then evaluates `expr` there as
/// `eval_guarded` does (on a failure, `box` comes back). None, with
/// nothing bound, when either is not a list whose every element has a
/// name (a host of this package never sends one). What is evaluated is
/// `eval(quote(expr), env)`, with `within`'s base R `eval` closure and
/// `quote` (the objects, which a task's globals cannot mask): as the
/// reference evaluates a task, in a function context whose environment is
/// the task's. Exit code registered at the top of `expr` needs one (by
/// `on.exit()` itself, or through `withr::defer()`, `local_*()` and the
/// like, which no look at `expr` can find): without, R ignores it. So do
/// `return()` and `sys.function()` there, and an expression vector is
/// evaluated element by element.
pub fn eval_task(
    expr: SEXP,
    globals: SEXP,
    args: SEXP,
    box_: SEXP,
    within: (SEXP, SEXP),
) -> Result<Option<Owned>, RError> {
    let f = GUARDED_EVAL.get().ok_or("mirai: native library not initialised by R")?;
    if !is_env(box_) {
        return Err("internal error in mirai: `box` must be an environment".into());
    }
    // Absent (NULL) or empty: nothing to bind, as for list2env() of list().
    let named = |x: SEXP| -> Option<SEXP> {
        if x == nil() || (is_list(x) && len(x) == 0) {
            return Some(nil());
        }
        if !is_list(x) {
            return None;
        }
        if !all_named(x) {
            return None;
        }
        list_names(x)
    };
    let (Some(gn), Some(an)) = (named(globals), named(args)) else { return Ok(None) };
    let global = global_env();
    let run = |r: &InR| {
        // Symbols are never collected; each value is held by its list.
        for i in 0..len(globals) {
            r.define_var(r.install_char(char_at(gn, i)), list_at(globals, i), global);
        }
        let env = r.protect(r.new_env(global));
        for i in 0..len(args) {
            r.define_var(r.install_char(char_at(an, i)), list_at(args, i), env);
        }
        let (eval, quote) = within;
        let expr = r.protect(r.lang3(eval, r.protect(r.lang2(quote, expr)), env));
        // SAFETY: mirai_eval is called as its C definition requires: an
        // expression and two environments, on R's main thread, inside
        // try_r, where an error it does not catch itself stops.
        unsafe { f(expr, env, box_) }
    };
    // SAFETY: the closure owns nothing with a destructor.
    unsafe { rooted(run) }.map(Some)
}

/// Calls R function `fun` with the one argument `arg`, in the global
/// environment; an R error (or a condition handler's jump) comes back as
/// Err.
pub fn apply1(fun: SEXP, arg: SEXP) -> Result<Owned, RError> {
    // SAFETY: the closure owns nothing with a destructor.
    unsafe { rooted(|r| r.eval(r.protect(r.lang2(fun, arg)), global_env())) }
}

/// `fun(a, b)`, evaluated in the global environment.
pub fn apply2(fun: SEXP, a: SEXP, b: SEXP) -> Result<Owned, RError> {
    // SAFETY: the closure owns nothing with a destructor.
    unsafe { rooted(|r| r.eval(r.protect(r.lang3(fun, a, b)), global_env())) }
}

/// `x`, preserved for the session.
pub fn preserved(x: SEXP) -> Result<SEXP, RError> {
    // SAFETY: the closure owns nothing with a destructor.
    unsafe { try_r(|r| r.preserve(x)) }
}
