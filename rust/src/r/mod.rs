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
//! Two parts: `layer`, the unsafe layer over R's C API, and `glue`, the
//! safe routines R calls, built on it (no `unsafe` in the glue).


// A SEXP here is always a value R handed us (a `.Call` argument, or one we
// built and keep reachable): the layer's functions take them as plain
// arguments, as R's own C API does, rather than marking every one unsafe.
#![allow(clippy::not_unsafe_ptr_arg_deref)]

pub mod glue;
pub mod layer;
