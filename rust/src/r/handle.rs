//! Rust values behind R external pointers ("handles"): profiles, mirai and
//! daemon connections.
//!
//! A handle owns its value (boxed) until R collects it; the finalizer then
//! drops it, catching any panic. Each kind has its own tag, so a handle of
//! one kind is never read as another. A borrowed value's lifetime is tied
//! to the borrowed argument, which lives for the whole `.Call`.

use super::call::{try_r, RError};
use super::ffi::*;
use std::ffi::{c_void, CStr};

/// A type that lives behind an external pointer tagged `TAG`.
pub trait Tagged: Sized + 'static {
    const TAG: &'static CStr;
}

unsafe extern "C" fn finalize<T: Tagged>(s: SEXP) {
    let p = R_ExternalPtrAddr(s) as *mut T;
    if !p.is_null() {
        R_ClearExternalPtr(s);
        // A panic must not unwind into R's garbage collector.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(Box::from_raw(p))));
    }
}

/// A new handle owning `v`. `prot` (an R object, or NULL) is kept alive
/// with it: R's GC owns it, and no Rust value ever holds a SEXP. If R
/// cannot allocate, `v` is dropped here and the R error comes back as Err.
pub fn new_handle<T: Tagged>(v: T, prot: SEXP) -> Result<SEXP, RError> {
    let p = Box::into_raw(Box::new(v));
    let made = try_r(|| unsafe {
        let tag = Rf_install(T::TAG.as_ptr());
        let h = Rf_protect(R_MakeExternalPtr(p as *mut c_void, tag, prot));
        R_RegisterCFinalizerEx(h, Some(finalize::<T>), Rboolean::TRUE);
        Rf_unprotect(1);
        h
    });
    if made.is_err() {
        // The pointer was never handed to R (or its finalizer never set).
        drop(unsafe { Box::from_raw(p) });
    }
    made
}

/// Installs the tag symbols of every handle kind, once at load: afterwards
/// `Rf_install` on a tag only looks it up and cannot allocate (or fail).
pub fn init_tags(tags: &[&CStr]) -> Result<(), RError> {
    for t in tags {
        try_r(|| unsafe { Rf_install(t.as_ptr()) })?;
    }
    Ok(())
}

/// The value behind handle `s`, for as long as `s` is borrowed.
pub fn handle<'a, T: Tagged>(s: &'a SEXP, what: &str) -> Result<&'a T, RError> {
    unsafe {
        if TYPEOF(*s) != EXTPTRSXP || R_ExternalPtrTag(*s) != Rf_install(T::TAG.as_ptr()) {
            return Err(format!("`{what}` is not a valid mirai handle").into());
        }
        let p = R_ExternalPtrAddr(*s) as *const T;
        if p.is_null() {
            return Err(format!("`{what}` is no longer valid (it was closed or saved and reloaded)").into());
        }
        Ok(&*p)
    }
}

/// The R object kept with handle `s` (see `new_handle`).
pub fn kept(s: SEXP) -> SEXP {
    unsafe { R_ExternalPtrProtected(s) }
}

/// Replaces the R object kept with handle `s`.
pub fn set_kept(s: SEXP, prot: SEXP) {
    unsafe { R_SetExternalPtrProtected(s, prot) }
}
