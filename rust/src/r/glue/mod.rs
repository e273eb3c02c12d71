//! The glue, one module per R area, in safe code: each routine is a plain
//! function of `SEXP` arguments returning `RResult`; lib.rs registers it.
//! - `profile`: a compute profile's host and its local children;
//! - `mirai`: mirai handles, values, waits, races, cancellation;
//! - `map`: `mirai_map()`, a whole map in one handle;
//! - `node`: a cluster node's tasks (parallel's hot path);
//! - `call`: the call a daemon evaluates for a node's task;
//! - `daemon`: the daemon's receive-evaluate-reply loop;
//! - `relay`: conditions relayed from running tasks, shown on the host;
//! - `helpers`: random hex, addresses, RNG streams, URLs' parts, and the
//!   constants R takes at load.
//! - `shared`: what the host's and the daemon's glue share, among it the
//!   error values tasks resolve to (the daemon's glue imports from no
//!   host-side module).

pub mod call;
pub mod daemon;
pub mod helpers;
pub mod map;
pub mod mirai;
pub mod node;
pub mod profile;
pub mod relay;
pub mod shared;
