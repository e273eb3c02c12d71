//! What the host's glue and the daemon's glue share: the message size limit
//! both enforce and the names that mark a cluster node's task. The daemon's
//! glue imports only from here, never from the host's modules.

use crate::r::layer::call::RError;
use crate::r::layer::ffi::SEXP;
use crate::r::layer::global::MainOnce;
use crate::r::layer::lang::preserved_strings;
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
