//! The R boundary: everything R calls, and every call into R.
//!
//! The `.Call` surface is written against R's C API (declared from
//! extendr-ffi in `ffi`) rather than through extendr-api's macros: every
//! entry point must control exactly when an R error or interrupt may
//! longjmp, which must be after all the call's Rust values are dropped, and
//! the hot path (a submit, a value) is tuned to microseconds. extendr-api
//! decides both for us; extendr-ffi gives us the declarations and nothing
//! else.
//!
//! The layer under the glue, where all of the `unsafe` lives:
//! - `ffi`: every C API declaration;
//! - `call`: the `.Call` edge (`entry`, `try_r` and the `InR` capability
//!   it lends, interrupts, routine registration);
//! - `global`: `MainThread`/`MainOnce`, the one kind of static the layer
//!   keeps (checked to be touched on R's main thread in checked builds);
//! - `value`: `Owned` (a value kept alive until dropped), reading
//!   arguments and building R values without longjmps;
//! - `handle`: Rust values behind external pointers;
//! - `object`: the 'mirai' object (an environment with an active binding);
//! - `lang`: environments, symbols, small lists, building and evaluating
//!   calls (the cluster-node path);
//! - `serial`: R serialization into and out of message buffers;
//! - `later`: settling promises through the 'later' package's C API.
//!
//! The glue, one module per R area, in safe code: each routine is a plain
//! function of `SEXP` arguments returning `RResult`; lib.rs registers it.
//! - `profile`: a compute profile's host and its local children;
//! - `mirai`: mirai handles, values, waits, races, cancellation;
//! - `node`: a cluster node's tasks (parallel's hot path);
//! - `daemon`: the daemon's receive-evaluate-reply loop;
//! - `helpers`: random hex, addresses, RNG streams, constants.

// A SEXP here is always a value R handed us (a `.Call` argument, or one we
// built and keep reachable): the layer's functions take them as plain
// arguments, as R's own C API does, rather than marking every one unsafe.
#![allow(clippy::not_unsafe_ptr_arg_deref)]

pub mod call;
pub mod daemon;
pub mod ffi;
pub mod global;
pub mod handle;
pub mod helpers;
pub mod lang;
pub mod later;
pub mod mirai;
pub mod node;
pub mod object;
pub mod profile;
pub mod serial;
pub mod value;
