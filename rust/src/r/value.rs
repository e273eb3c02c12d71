//! Reading `.Call` arguments and building R values, safely.
//!
//! Readers never allocate in R, so they cannot longjmp. Builders allocate,
//! each inside one `try_r`: they return `Err(RError::Unwind(_))` instead of
//! longjmping, so callers may hold Rust values across them. A built value
//! is unprotected: keep it in a `Protect` scope before the next allocation.

use super::call::{try_r, RError};
use super::ffi::*;
use std::ffi::{c_char, c_int, CStr};

/// Protects values for as long as the scope lives.
#[derive(Default)]
pub struct Protect {
    n: c_int,
}

impl Protect {
    pub fn new() -> Self {
        Protect::default()
    }
    pub fn keep(&mut self, s: SEXP) -> SEXP {
        unsafe { Rf_protect(s) };
        self.n += 1;
        s
    }
}

impl Drop for Protect {
    fn drop(&mut self) {
        if self.n > 0 {
            unsafe { Rf_unprotect(self.n) };
        }
    }
}

// ---- reading ---------------------------------------------------------------

pub fn nil() -> SEXP {
    unsafe { R_NilValue }
}

/// R's NA for doubles (a NaN with a particular payload).
pub fn na_real() -> f64 {
    unsafe { R_NaReal }
}

pub fn is_null(s: SEXP) -> bool {
    unsafe { TYPEOF(s) == NILSXP }
}

pub fn is_list(s: SEXP) -> bool {
    unsafe { TYPEOF(s) == VECSXP }
}

pub fn is_function(s: SEXP) -> bool {
    matches!(unsafe { TYPEOF(s) }, CLOSXP | BUILTINSXP | SPECIALSXP)
}

/// Length of a vector or list.
pub fn len(s: SEXP) -> usize {
    unsafe { Rf_xlength(s) as usize }
}

/// Element `i` of a list (`i` < `len`).
pub fn list_at(s: SEXP, i: usize) -> SEXP {
    debug_assert!(is_list(s) && i < len(s));
    unsafe { VECTOR_ELT(s, i as isize) }
}

/// Element `name` of list `x`, or NULL.
pub fn list_get(x: SEXP, name: &str) -> SEXP {
    unsafe {
        if TYPEOF(x) != VECSXP {
            return R_NilValue;
        }
        let nms = Rf_getAttrib(x, R_NamesSymbol);
        if TYPEOF(nms) != STRSXP {
            return R_NilValue;
        }
        for i in 0..Rf_xlength(x).min(Rf_xlength(nms)) {
            if CStr::from_ptr(R_CHAR(STRING_ELT(nms, i))).to_bytes() == name.as_bytes() {
                return VECTOR_ELT(x, i);
            }
        }
        R_NilValue
    }
}

pub fn str_arg(s: SEXP, what: &str) -> Result<String, RError> {
    unsafe {
        if TYPEOF(s) != STRSXP || Rf_xlength(s) < 1 {
            return Err(format!("`{what}` must be a character string").into());
        }
        Ok(CStr::from_ptr(R_CHAR(STRING_ELT(s, 0))).to_string_lossy().into_owned())
    }
}

/// A character vector (NULL: empty).
pub fn strs_arg(s: SEXP, what: &str) -> Result<Vec<String>, RError> {
    if is_null(s) {
        return Ok(Vec::new());
    }
    unsafe {
        if TYPEOF(s) != STRSXP {
            return Err(format!("`{what}` must be a character vector").into());
        }
        Ok((0..Rf_xlength(s))
            .map(|i| CStr::from_ptr(R_CHAR(STRING_ELT(s, i))).to_string_lossy().into_owned())
            .collect())
    }
}

/// The first element of a numeric, integer or logical vector (NA as NaN).
pub fn f64_arg(s: SEXP, what: &str) -> Result<f64, RError> {
    unsafe {
        let n = Rf_xlength(s);
        match TYPEOF(s) {
            REALSXP if n >= 1 => Ok(*REAL(s)),
            INTSXP | LGLSXP if n >= 1 => {
                let v = if TYPEOF(s) == INTSXP { *INTEGER(s) } else { *LOGICAL(s) };
                Ok(if v == R_NaInt { f64::NAN } else { v as f64 })
            }
            _ => Err(format!("`{what}` must be numeric").into()),
        }
    }
}

/// A flag: TRUE, or any non-zero number.
pub fn bool_arg(s: SEXP, what: &str) -> Result<bool, RError> {
    Ok(f64_arg(s, what)? != 0.0)
}

/// An integer vector of exactly `N` elements.
pub fn ints_arg<const N: usize>(s: SEXP, what: &str) -> Result<[i32; N], RError> {
    unsafe {
        if TYPEOF(s) != INTSXP || Rf_xlength(s) != N as isize {
            return Err(format!("`{what}` must be an integer vector of length {N}").into());
        }
        let mut out = [0i32; N];
        out.copy_from_slice(std::slice::from_raw_parts(INTEGER(s), N));
        Ok(out)
    }
}

// ---- building --------------------------------------------------------------

fn mk_char(s: &str) -> SEXP {
    let n = s.len().min(i32::MAX as usize) as c_int;
    unsafe { Rf_mkCharLenCE(s.as_ptr() as *const c_char, n, cetype_t::CE_UTF8) }
}

fn alloc(t: SEXPTYPE, n: usize) -> SEXP {
    unsafe { Rf_allocVector(t, n as isize) }
}

pub fn int(v: i32) -> Result<SEXP, RError> {
    try_r(|| unsafe { Rf_ScalarInteger(v) })
}

pub fn real(v: f64) -> Result<SEXP, RError> {
    try_r(|| unsafe { Rf_ScalarReal(v) })
}

pub fn lgl(v: bool) -> Result<SEXP, RError> {
    try_r(|| unsafe { Rf_ScalarLogical(v as c_int) })
}

pub fn string(s: &str) -> Result<SEXP, RError> {
    try_r(|| unsafe {
        let v = Rf_protect(alloc(SEXPTYPE::STRSXP, 1));
        SET_STRING_ELT(v, 0, mk_char(s));
        Rf_unprotect(1);
        v
    })
}

fn set_names(v: SEXP, names: &[&str]) {
    unsafe {
        let nm = Rf_protect(alloc(SEXPTYPE::STRSXP, names.len()));
        for (i, n) in names.iter().enumerate() {
            SET_STRING_ELT(nm, i as isize, mk_char(n));
        }
        Rf_setAttrib(v, R_NamesSymbol, nm);
        Rf_unprotect(1);
    }
}

fn set_class(v: SEXP, class: &[&str]) {
    unsafe {
        let cl = Rf_protect(alloc(SEXPTYPE::STRSXP, class.len()));
        for (i, c) in class.iter().enumerate() {
            SET_STRING_ELT(cl, i as isize, mk_char(c));
        }
        Rf_setAttrib(v, R_ClassSymbol, cl);
        Rf_unprotect(1);
    }
}

/// A character vector.
pub fn strings(vals: &[&str]) -> Result<SEXP, RError> {
    try_r(|| unsafe {
        let v = Rf_protect(alloc(SEXPTYPE::STRSXP, vals.len()));
        for (i, s) in vals.iter().enumerate() {
            SET_STRING_ELT(v, i as isize, mk_char(s));
        }
        Rf_unprotect(1);
        v
    })
}

pub fn ints(vals: &[i32]) -> Result<SEXP, RError> {
    try_r(|| unsafe {
        let v = alloc(SEXPTYPE::INTSXP, vals.len());
        std::ptr::copy_nonoverlapping(vals.as_ptr(), INTEGER(v), vals.len());
        v
    })
}

/// A numeric vector of R type `t` (REALSXP for f64, INTSXP for i32) from
/// `vals`, named `names`. `data` gives the vector's first element.
fn named_numbers<T: Copy>(t: SEXPTYPE, data: unsafe fn(SEXP) -> *mut T, vals: &[T], names: &[&str]) -> Result<SEXP, RError> {
    debug_assert_eq!(vals.len(), names.len());
    try_r(|| unsafe {
        let v = Rf_protect(alloc(t, vals.len()));
        std::ptr::copy_nonoverlapping(vals.as_ptr(), data(v), vals.len());
        set_names(v, names);
        Rf_unprotect(1);
        v
    })
}

/// A double vector with names.
pub fn named_reals(vals: &[f64], names: &[&str]) -> Result<SEXP, RError> {
    named_numbers(SEXPTYPE::REALSXP, |v| unsafe { REAL(v) }, vals, names)
}

/// An integer vector with names.
pub fn named_ints(vals: &[i32], names: &[&str]) -> Result<SEXP, RError> {
    named_numbers(SEXPTYPE::INTSXP, |v| unsafe { INTEGER(v) }, vals, names)
}

/// A character vector of `vals` named `names`.
pub fn named_strings(vals: &[&str], names: &[&str]) -> Result<SEXP, RError> {
    debug_assert_eq!(vals.len(), names.len());
    try_r(|| unsafe {
        let v = Rf_protect(alloc(SEXPTYPE::STRSXP, vals.len()));
        for (i, s) in vals.iter().enumerate() {
            SET_STRING_ELT(v, i as isize, mk_char(s));
        }
        set_names(v, names);
        Rf_unprotect(1);
        v
    })
}

/// A list of `items` (each protected by the caller), named if `names` is
/// not empty.
pub fn list(items: &[SEXP], names: &[&str]) -> Result<SEXP, RError> {
    try_r(|| unsafe {
        let v = Rf_protect(alloc(SEXPTYPE::VECSXP, items.len()));
        for (i, x) in items.iter().enumerate() {
            SET_VECTOR_ELT(v, i as isize, *x);
        }
        if !names.is_empty() {
            set_names(v, names);
        }
        Rf_unprotect(1);
        v
    })
}

/// A list of `n` NULLs, to be filled with `set_list_elt`.
pub fn new_list(n: usize) -> Result<SEXP, RError> {
    try_r(|| alloc(SEXPTYPE::VECSXP, n))
}

/// Sets element `i` of `list` (`i` < its length). Allocates nothing.
pub fn set_list_elt(list: SEXP, i: usize, x: SEXP) {
    assert!(is_list(list) && i < len(list), "list index out of range");
    unsafe { SET_VECTOR_ELT(list, i as isize, x) };
}

/// An 'errorValue': the integer `code` classed `c("errorValue", "try-error")`.
pub fn error_value(code: i32) -> Result<SEXP, RError> {
    try_r(|| unsafe {
        let v = Rf_protect(Rf_ScalarInteger(code));
        set_class(v, &["errorValue", "try-error"]);
        Rf_unprotect(1);
        v
    })
}

/// A 'miraiError' with message `msg` and no call (`"Error: <msg>\n"`),
/// made by R's one constructor of them, `mirai_error()` in R/daemon.R, so
/// that it has every attribute an error raised in a task has
/// (`condition.class`, `stack.trace`, ...). Runs R code (the error paths
/// only).
pub fn mirai_error(msg: &str) -> Result<SEXP, RError> {
    let mut keep = Protect::new();
    let m = keep.keep(string(msg)?);
    try_r(|| unsafe {
        let f = Rf_protect(Rf_lang3(Rf_install(c":::".as_ptr()), Rf_install(c"mirai".as_ptr()), Rf_install(c"mirai_error".as_ptr())));
        let call = Rf_protect(Rf_lang2(f, m));
        let v = Rf_eval(call, R_BaseEnv);
        Rf_unprotect(2);
        v
    })
}
