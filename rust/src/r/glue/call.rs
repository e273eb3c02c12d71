//! The call a daemon evaluates for a cluster node's task (see
//! `daemon::run_node`): parallel's worker runs `do.call(fun, args, quote =
//! TRUE)`; this builds the same call, with the same checks and quoting,
//! and tells when a task's function may be run as the previous task's.

use crate::r::layer::call::RError;
use crate::r::layer::ffi::{SEXP, BUILTINSXP, CLOSXP, LISTSXP, SPECIALSXP, STRSXP, VECSXP};
use crate::r::layer::lang::*;
use crate::r::layer::value::*;

/// The head of the call `do.call(fun, ...)` makes: `fun` itself if a
/// function, the symbol it names if a string; None for anything else,
/// which do.call() refuses.
pub fn call_head(fun: SEXP) -> Result<Option<SEXP>, RError> {
    match type_of(fun) {
        CLOSXP | BUILTINSXP | SPECIALSXP => Ok(Some(fun)),
        STRSXP if len(fun) == 1 => symbol_at(fun, 0).map(Some),
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
        let base_quote = Lang::Call(
            install(c"::")?,
            vec![(nil(), Lang::Value(install(c"base")?)), (nil(), Lang::Value(install(c"quote")?))],
        );
        Ok(EvalHeads {
            eval: base_function(c"eval")?,
            quote: base_function(c"quote")?,
            base_quote: preserve(lang(&base_quote)?)?,
        })
    })
}

/// Base R's `eval` closure and `quote` primitive themselves (for
/// `lang::eval_task`'s `within`).
pub fn eval_and_quote() -> Result<(SEXP, SEXP), RError> {
    let h = heads()?;
    Ok((h.eval, h.quote))
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
    let args = pairlist_as_list(args)?;
    let args = args.sexp();
    let n = if is_list(args) { len(args) } else { 0 };
    let names = list_names(args);
    if let Some(why) = names.and_then(|nms| (0..len(nms)).find_map(|i| untranslatable_at(nms, i))) {
        return Err(why.into());
    }
    let quoted = (0..n)
        .map(|i| {
            let named = names.is_some_and(|nms| i < len(nms) && with_str_at(nms, i, |b| !b.is_empty()));
            let tag = if named { names.map_or(nil(), |nms| char_at(nms, i)) } else { nil() };
            (tag, Lang::Call(h.base_quote, vec![(nil(), Lang::Value(list_at(args, i)))]))
        })
        .collect();
    let env = new_env_in_global(sym, value)?;
    let inner = Lang::Call(h.quote, vec![(nil(), Lang::Call(head, quoted))]);
    lang(&Lang::Call(h.eval, vec![(nil(), inner), (nil(), Lang::Value(env.sexp()))]))
}

/// Whether closures `a` and `b`, identical but for source references,
/// carry the same ones: no `srcref` attribute on either, or the same
/// positions in source files with the same contents. (`identical()` cannot
/// tell: each unserialized copy of a function has its own source file
/// environment, and environments compare by address.) When in doubt, no:
/// the cost of a wrong no is one compilation of the function.
pub fn same_source(a: SEXP, b: SEXP) -> Result<bool, RError> {
    static SYMS: MainOnce<[SEXP; 2]> = MainOnce::new();
    let [srcref, srcfile] = *SYMS.get(|| Ok([install(c"srcref")?, install(c"srcfile")?]))?;
    // `a` and `b` keep their attributes alive.
    let (sa, sb) = (stored_attr(a, srcref), stored_attr(b, srcref));
    if is_null(sa) || is_null(sb) {
        return Ok(sa == sb);
    }
    if !same_ints(sa, sb) {
        return Ok(false);
    }
    same_frame(stored_attr(sa, srcfile), stored_attr(sb, srcfile))
}

/// Whether environments (or other objects) `a` and `b` hold identical
/// bindings. An active binding counts as a difference: reading it would
/// run R code (which may fail) where none is expected.
fn same_frame(a: SEXP, b: SEXP) -> Result<bool, RError> {
    if a == b {
        return Ok(true);
    }
    if !is_env(a) || !is_env(b) {
        return Ok(identical(a, b));
    }
    let names = env_names(a)?;
    if !identical(names.sexp(), env_names(b)?.sexp()) {
        return Ok(false);
    }
    for i in 0..len(names.sexp()) {
        let sym = symbol_at(names.sexp(), i)?;
        match (binding(a, sym)?, binding(b, sym)?) {
            (Binding::Value(x), Binding::Value(y)) if identical(x.sexp(), y.sexp()) => {}
            _ => return Ok(false),
        }
    }
    Ok(true)
}
