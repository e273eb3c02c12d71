//! What the host's glue and the daemon's glue share: the message size limit
//! both enforce, the names that mark a cluster node's task, and the error
//! values tasks resolve to. The daemon's glue imports only from here, never
//! from the host's modules.

use crate::r::layer::call::RError;
use crate::r::layer::ffi::SEXP;
use crate::r::layer::global::MainOnce;
use crate::r::layer::lang::{eval_in_base, install, lang, preserved_strings, Lang};
use crate::r::layer::value::*;
use crate::wire::frame::MAX_MESSAGE;

/// The message size cap in bytes: option `mirai.max_message` as R's
/// max_message() checked it, NULL for the default.
pub fn max_message(s: SEXP) -> Result<u64, RError> {
    if is_null(s) {
        return Ok(MAX_MESSAGE);
    }
    let b = f64_arg(s, "mirai.max_message")?;
    Ok(if b >= u64::MAX as f64 { u64::MAX } else { b as u64 })
}

/// The names of a node task's payload, which mark it as one.
pub fn node_payload_names() -> Result<SEXP, RError> {
    static NAMES: MainOnce<SEXP> = MainOnce::new();
    NAMES.get(|| preserved_strings(&[c"._node_.", c"._args_."])).copied()
}

/// The name of a cluster node's function sent as a share (see
/// `node::node_fun_share`): the share is `list(._node_. = fun)`, and each
/// task's own payload is its `args`.
pub fn node_share_names() -> Result<SEXP, RError> {
    static NAMES: MainOnce<SEXP> = MainOnce::new();
    NAMES.get(|| preserved_strings(&[c"._node_."])).copied()
}

/// An 'errorValue': the integer `code` classed `c("errorValue", "try-error")`.
pub fn error_value(code: i32) -> Result<Owned, RError> {
    let v = int(code)?;
    set_class(&v, &["errorValue", "try-error"])?;
    Ok(v)
}

/// A 'miraiError' with message `msg` and no call (`"Error: <msg>"`),
/// made by R's one constructor of them, `mirai_error()` in R/daemon.R, so
/// that it has every attribute an error raised in a task has
/// (`condition.class`, `stack.trace`, ...). Runs R code (on the error
/// paths only).
pub fn mirai_error(msg: &str) -> Result<Owned, RError> {
    let m = string(msg)?;
    let f = lang(&Lang::Call(
        install(c":::")?,
        vec![(nil(), Lang::Value(install(c"mirai")?)), (nil(), Lang::Value(install(c"mirai_error")?))],
    ))?;
    let call = lang(&Lang::Call(f.sexp(), vec![(nil(), Lang::Value(m.sexp()))]))?;
    eval_in_base(call.sexp())
}
