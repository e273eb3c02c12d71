//! R values owned by Rust (`Owned`), reading `.Call` arguments, and
//! building R values, safely.
//!
//! Readers never allocate in R, so they cannot longjmp. Builders allocate,
//! each inside one `try_r`: they return `Err(RError::Unwind(_))` instead of
//! longjmping, so callers may hold Rust values across them, and they return
//! `Owned` values, which stay protected until dropped: no caller protects
//! anything by hand.
//!
//! `Owned` roots its value in a slot of one preserved list (the roots)
//! rather than on R's protect stack: a stack must be popped in the order
//! it was pushed, which Rust's drop order does not follow (a Vec drops its
//! elements first to last, a reassigned variable drops its old value after
//! the new one is made). A slot is taken and freed in O(1), with no
//! allocation (the list doubles when full, before the value is made), so
//! rooting costs about what a PROTECT does. In checked builds a freed slot
//! must hold the value it rooted, and `entry` checks that every value
//! rooted during a call was freed by its end.

use super::call::{try_r, InR, RError};
use super::ffi::*;
use super::global::{MainThread, CHECKED};
use std::ffi::{c_int, CStr};

// ---- Owned values ------------------------------------------------------

/// An R value kept alive for as long as this exists. Holds a SEXP, so it is
/// neither Send nor Sync: it lives and dies on R's main thread.
pub struct Owned {
    sexp: SEXP,
    /// Its slot in the roots, or `UNROOTED` for a value something else
    /// keeps alive (NULL, an argument, a preserved constant).
    slot: u32,
}

const UNROOTED: u32 = u32::MAX;

impl Owned {
    /// The value. It stays protected only while `self` lives: do not keep
    /// the SEXP beyond that.
    pub fn sexp(&self) -> SEXP {
        self.sexp
    }

    /// The value, by reference (see `sexp`).
    pub fn sexp_ref(&self) -> &SEXP {
        &self.sexp
    }

    /// R's NULL.
    pub fn nil() -> Owned {
        Owned { sexp: nil(), slot: UNROOTED }
    }

    /// A value that something else keeps alive for the rest of the call: a
    /// `.Call` argument, or an element of one, a preserved constant, a
    /// symbol. Nothing is rooted.
    pub fn reachable(s: SEXP) -> Owned {
        Owned { sexp: s, slot: UNROOTED }
    }

    /// Hands the value to R as a `.Call`'s result: unrooted, so nothing
    /// may allocate between this and the return to R (`entry` does it last).
    pub fn into_sexp(self) -> SEXP {
        let s = self.sexp;
        drop(self);
        s
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        if self.slot != UNROOTED {
            unroot(self.slot, self.sexp);
        }
    }
}

struct Roots {
    /// The preserved list; null until first needed.
    list: SEXP,
    len: usize,
    free: Vec<u32>,
    live: usize,
    /// A release that did not match its root (checked builds), for `entry`
    /// to report.
    violation: Option<&'static str>,
}

static ROOTS: MainThread<Roots> =
    MainThread::new(Roots { list: std::ptr::null_mut(), len: 0, free: Vec::new(), live: 0, violation: None });

/// A preserved list twice as long as `old` (at least 64), holding `old`'s
/// elements, and its length; `old` (preserved, or null) is released. For
/// index-addressed lists of values kept alive, with a free list: one
/// preserved object rather than one `R_PreserveObject` each (R keeps those
/// in a linked list, so releasing one walks all the others).
pub(super) fn grow_preserved(old: SEXP, old_len: usize) -> Result<(SEXP, usize), RError> {
    let new_len = (old_len * 2).max(64);
    // SAFETY: the closure owns nothing with a destructor.
    let list = unsafe {
        try_r(|r| {
            let l = r.protect(r.alloc(SEXPTYPE::VECSXP, new_len));
            for i in 0..old_len {
                r.set_elt(l, i, list_at(old, i));
            }
            r.preserve(l)
        })
    }?;
    if !old.is_null() {
        // SAFETY: `old` was preserved by the last growth; its values are in
        // the new list. Main thread; allocates nothing.
        unsafe { R_ReleaseObject(old) };
    }
    Ok((list, new_len))
}

/// Makes sure a slot is free, growing the roots if not. May allocate (in
/// R, inside try_r), so it runs before the value to root is made.
pub(super) fn reserve_root() -> Result<(), RError> {
    let (old, old_len) = ROOTS.with(|r| (r.list, r.len));
    if ROOTS.with(|r| !r.free.is_empty()) {
        return Ok(());
    }
    let (list, new_len) = grow_preserved(old, old_len)?;
    ROOTS.with(|r| {
        r.list = list;
        r.len = new_len;
        r.free.extend((old_len as u32..new_len as u32).rev());
    });
    Ok(())
}

/// Roots `s` in the slot `reserve_root` made free. Allocates nothing.
pub(super) fn root_reserved(s: SEXP) -> Owned {
    let slot = ROOTS.with(|r| {
        let slot = r.free.pop().expect("mirai: a root was not reserved");
        // SAFETY: `list` is the preserved roots list and `slot` < its
        // length; storing allocates nothing (write barrier only).
        unsafe { SET_VECTOR_ELT(r.list, slot as isize, s) };
        r.live += 1;
        slot
    });
    Owned { sexp: s, slot }
}

fn unroot(slot: u32, s: SEXP) {
    ROOTS.with(|r| {
        // SAFETY: as in `root`: a slot of the preserved list.
        if CHECKED && unsafe { VECTOR_ELT(r.list, slot as isize) } != s {
            r.violation.get_or_insert("a root was released that it did not hold");
        }
        // SAFETY: as in `root`.
        unsafe { SET_VECTOR_ELT(r.list, slot as isize, R_NilValue) };
        r.free.push(slot);
        r.live -= 1;
    });
}

/// How many values are rooted now (for `entry`'s check).
pub(super) fn live_roots() -> usize {
    ROOTS.with(|r| r.live)
}

/// A release that did not match its root, if any (checked builds).
pub(super) fn take_root_violation() -> Option<&'static str> {
    ROOTS.with(|r| r.violation.take())
}

/// Runs builder `f` under `try_r` and roots what it makes.
///
/// # Safety
/// As for `try_r`: `f` owns nothing with a destructor.
pub(super) unsafe fn rooted(f: impl FnMut(&InR) -> SEXP) -> Result<Owned, RError> {
    reserve_root()?;
    // SAFETY: the caller's promise.
    let s = unsafe { try_r(f) }?;
    Ok(root_reserved(s))
}

// ---- reading ---------------------------------------------------------------
// Each reads a value R handed us (or one we keep alive), allocating nothing:
// none can longjmp. SEXPs exist only on R's main thread (they are !Send).

pub fn nil() -> SEXP {
    // SAFETY: a constant R sets up at start-up.
    unsafe { R_NilValue }
}

/// R's empty symbol, the value of a missing argument.
pub fn missing_arg() -> SEXP {
    // SAFETY: a constant R sets up at start-up.
    unsafe { R_MissingArg }
}

/// R's NA for doubles (a NaN with a particular payload).
pub fn na_real() -> f64 {
    // SAFETY: a constant R sets up at start-up.
    unsafe { R_NaReal }
}

/// R's type code of `s` (ffi's constants: NILSXP, VECSXP, ...).
pub fn type_of(s: SEXP) -> c_int {
    // SAFETY: reads the header of a live object.
    unsafe { TYPEOF(s) }
}

pub fn is_null(s: SEXP) -> bool {
    type_of(s) == NILSXP
}

pub fn is_list(s: SEXP) -> bool {
    type_of(s) == VECSXP
}

pub fn is_function(s: SEXP) -> bool {
    matches!(type_of(s), CLOSXP | BUILTINSXP | SPECIALSXP)
}

/// Length of a vector or list.
pub fn len(s: SEXP) -> usize {
    // SAFETY: reads the header of a live object (any type: R answers 1 or
    // 0 for non-vectors, and does not error).
    unsafe { Rf_xlength(s) as usize }
}

/// Element `i` of a list (`i` < `len`).
pub fn list_at(s: SEXP, i: usize) -> SEXP {
    assert!(is_list(s) && i < len(s), "list index out of range");
    // SAFETY: a list, and an index in range (asserted): a plain read.
    unsafe { VECTOR_ELT(s, i as isize) }
}

/// `f` of the bytes of string `i` of character vector `s` (`i` < `len`).
pub fn with_str_at<T>(s: SEXP, i: usize, f: impl FnOnce(&[u8]) -> T) -> T {
    assert!(type_of(s) == STRSXP && i < len(s), "string index out of range");
    // SAFETY: a character vector and an index in range (asserted); R's
    // CHARSXPs are NUL-terminated, immutable and never move, and `s`
    // (live) keeps this one alive while `f` borrows it.
    f(unsafe { CStr::from_ptr(R_CHAR(STRING_ELT(s, i as isize))) }.to_bytes())
}

/// String `i` of character vector `s` (`i` < `len`), invalid UTF-8 replaced.
pub fn string_at(s: SEXP, i: usize) -> String {
    with_str_at(s, i, |b| String::from_utf8_lossy(b).into_owned())
}

/// The CHARSXP of string `i` of character vector `s` (`i` < `len`).
pub fn char_at(s: SEXP, i: usize) -> SEXP {
    assert!(type_of(s) == STRSXP && i < len(s), "string index out of range");
    // SAFETY: as in `with_str_at`.
    unsafe { STRING_ELT(s, i as isize) }
}

/// R's message when string `i` of `s` cannot name a variable or an
/// argument: non-ASCII in "bytes" encoding, which R refuses to translate
/// (`Rf_installTrChar` raises this error). Checked before R is asked, so
/// that a task with such a name fails as a task: R's own error, raised
/// where no handler waits, is printed on the daemon's stderr first, and
/// in a daemon's loop it ended the daemon.
pub fn untranslatable_at(s: SEXP, i: usize) -> Option<&'static str> {
    let c = char_at(s, i);
    // SAFETY: a CHARSXP (an element of a character vector).
    let bytes = unsafe { Rf_getCharCE(c) } == cetype_t::CE_BYTES;
    (bytes && with_str_at(s, i, |b| !b.is_ascii())).then_some("translating strings with \"bytes\" encoding is not allowed")
}

/// Attribute `sym` of `x` as stored (NULL if none), read without
/// allocating. `names` and `row.names`, whose values R may compute, are
/// not read here (NULL), nor attributes of a CHARSXP (it has none).
pub fn stored_attr(x: SEXP, sym: SEXP) -> SEXP {
    // SAFETY: constants R sets up at start-up.
    let computed = unsafe { sym == R_NamesSymbol || sym == R_RowNamesSymbol };
    if computed || type_of(sym) != SYMSXP || type_of(x) == CHARSXP {
        return nil();
    }
    // SAFETY: for a symbol other than those two and an object other than a
    // CHARSXP, Rf_getAttrib looks the attribute up in `x`'s list and
    // neither allocates nor errors.
    unsafe { Rf_getAttrib(x, sym) }
}

/// `x`'s class attribute as stored (NULL if none). Reads it only.
pub fn class_attr(x: SEXP) -> SEXP {
    stored_attr(x, class_symbol())
}

/// Whether `x` has a class attribute (S3 or S4): R functions such as `[[`
/// dispatch on it. Reads the attribute only.
pub fn has_class(x: SEXP) -> bool {
    !is_null(class_attr(x))
}

/// The names of `x` if it is a list with a character vector of names.
/// Reads the attribute only: for a list, R makes nothing.
pub fn list_names(x: SEXP) -> Option<SEXP> {
    if !is_list(x) {
        return None;
    }
    // SAFETY: the names attribute of a list is stored, not computed (only
    // pairlists' are made afresh), so this allocates nothing.
    let nms = unsafe { Rf_getAttrib(x, R_NamesSymbol) };
    (type_of(nms) == STRSXP).then_some(nms)
}

/// Whether every element of list `x` has a name, none of them NA or empty
/// (R's named_list() check, in R/mirai.R); an empty list passes.
pub fn all_named(x: SEXP) -> bool {
    if !is_list(x) {
        return false;
    }
    if len(x) == 0 {
        return true;
    }
    let Some(nms) = list_names(x) else { return false };
    // SAFETY: R's constant.
    let na = unsafe { R_NaString };
    len(nms) == len(x) && (0..len(x)).all(|i| char_at(nms, i) != na && with_str_at(nms, i, |b| !b.is_empty()))
}

/// Element `name` of list `x`, or NULL.
pub fn list_get(x: SEXP, name: &str) -> SEXP {
    let Some(nms) = list_names(x) else { return nil() };
    (0..len(x).min(len(nms))).find(|&i| with_str_at(nms, i, |b| b == name.as_bytes())).map_or(nil(), |i| list_at(x, i))
}

/// Whether the first name of list `x` is the first string of `names`
/// (R's cache of strings makes equal strings one object, so this is a
/// pointer comparison).
pub fn first_name_is(x: SEXP, names: SEXP) -> bool {
    list_names(x).is_some_and(|nms| len(nms) > 0 && char_at(nms, 0) == char_at(names, 0))
}

pub fn str_arg(s: SEXP, what: &str) -> Result<String, RError> {
    if type_of(s) != STRSXP || len(s) < 1 {
        return Err(format!("`{what}` must be a character string").into());
    }
    Ok(string_at(s, 0))
}

/// A character vector (NULL: empty).
pub fn strs_arg(s: SEXP, what: &str) -> Result<Vec<String>, RError> {
    if is_null(s) {
        return Ok(Vec::new());
    }
    if type_of(s) != STRSXP {
        return Err(format!("`{what}` must be a character vector").into());
    }
    Ok((0..len(s)).map(|i| string_at(s, i)).collect())
}

/// The first element of a numeric, integer or logical vector (NA as NaN).
pub fn f64_arg(s: SEXP, what: &str) -> Result<f64, RError> {
    if len(s) < 1 {
        return Err(format!("`{what}` must be numeric").into());
    }
    // Each arm reads the data of a vector of the matching type with at
    // least one element (checked above), once.
    let v = match type_of(s) {
        // SAFETY: see above.
        REALSXP => return Ok(unsafe { *REAL(s) }),
        // SAFETY: see above.
        INTSXP => unsafe { *INTEGER(s) },
        // SAFETY: see above.
        LGLSXP => unsafe { *LOGICAL(s) },
        _ => return Err(format!("`{what}` must be numeric").into()),
    };
    // SAFETY: a constant R sets up at start-up.
    Ok(if v == unsafe { R_NaInt } { f64::NAN } else { v as f64 })
}

/// Every element of a double vector.
pub fn reals_arg(s: SEXP, what: &str) -> Result<Vec<f64>, RError> {
    if type_of(s) != REALSXP {
        return Err(format!("`{what}` must be a double vector").into());
    }
    let n = len(s);
    if n == 0 {
        return Ok(Vec::new());
    }
    // SAFETY: the data of a double vector of n > 0 elements, copied out.
    Ok(unsafe { std::slice::from_raw_parts(REAL(s), n) }.to_vec())
}

/// A flag: TRUE, or any non-zero number.
pub fn bool_arg(s: SEXP, what: &str) -> Result<bool, RError> {
    Ok(f64_arg(s, what)? != 0.0)
}

/// TRUE (a logical scalar).
pub fn is_true(x: SEXP) -> bool {
    // SAFETY: the data of a logical vector of length 1 (checked first).
    type_of(x) == LGLSXP && len(x) == 1 && unsafe { *LOGICAL(x) } == 1
}

/// An integer vector of exactly `N` elements.
pub fn ints_arg<const N: usize>(s: SEXP, what: &str) -> Result<[i32; N], RError> {
    if type_of(s) != INTSXP || len(s) != N {
        return Err(format!("`{what}` must be an integer vector of length {N}").into());
    }
    let mut out = [0i32; N];
    // SAFETY: the data of an integer vector of exactly N elements.
    out.copy_from_slice(unsafe { std::slice::from_raw_parts(INTEGER(s), N) });
    Ok(out)
}

/// Whether `a` and `b` are integer vectors with the same elements.
pub fn same_ints(a: SEXP, b: SEXP) -> bool {
    if type_of(a) != INTSXP || type_of(b) != INTSXP || len(a) != len(b) {
        return false;
    }
    let n = len(a);
    // SAFETY: the data of two integer vectors of n elements each (checked);
    // nothing allocates while the slices are borrowed.
    n == 0 || unsafe { std::slice::from_raw_parts(INTEGER(a), n) == std::slice::from_raw_parts(INTEGER(b), n) }
}

/// `f` of the bytes of a raw vector.
pub fn with_raw<T>(s: SEXP, f: impl FnOnce(&[u8]) -> T) -> T {
    assert!(type_of(s) == RAWSXP, "a raw vector was expected");
    let n = len(s);
    if n == 0 {
        return f(&[]);
    }
    // SAFETY: the data of a raw vector of n > 0 bytes, which `s` (live)
    // keeps in place while `f` borrows it.
    f(unsafe { std::slice::from_raw_parts(RAW(s), n) })
}

// ---- building --------------------------------------------------------------
// Every builder's closure owns nothing with a destructor (try_r's contract):
// it captures only references and Copy values, and makes none.

pub fn int(v: i32) -> Result<Owned, RError> {
    // SAFETY: see above.
    unsafe { rooted(|r| r.scalar_int(v)) }
}

pub fn real(v: f64) -> Result<Owned, RError> {
    // SAFETY: see above.
    unsafe { rooted(|r| r.scalar_real(v)) }
}

pub fn lgl(v: bool) -> Result<Owned, RError> {
    // SAFETY: see above.
    unsafe { rooted(|r| r.scalar_lgl(v)) }
}

pub fn string(s: &str) -> Result<Owned, RError> {
    // SAFETY: see above.
    unsafe { rooted(|r| r.strings(&[s])) }
}

/// A character vector.
pub fn strings(vals: &[&str]) -> Result<Owned, RError> {
    // SAFETY: see above.
    unsafe { rooted(|r| r.strings(vals)) }
}

pub fn ints(vals: &[i32]) -> Result<Owned, RError> {
    let make = |r: &InR| {
        let v = r.alloc(SEXPTYPE::INTSXP, vals.len());
        if !vals.is_empty() {
            // SAFETY: `v` is a new integer vector of vals.len() elements.
            unsafe { std::ptr::copy_nonoverlapping(vals.as_ptr(), INTEGER(v), vals.len()) };
        }
        v
    };
    // SAFETY: see above.
    unsafe { rooted(make) }
}

/// A double vector.
pub fn reals(vals: &[f64]) -> Result<Owned, RError> {
    let make = |r: &InR| {
        let v = r.alloc(SEXPTYPE::REALSXP, vals.len());
        if !vals.is_empty() {
            // SAFETY: `v` is a new double vector of vals.len() elements.
            unsafe { std::ptr::copy_nonoverlapping(vals.as_ptr(), REAL(v), vals.len()) };
        }
        v
    };
    // SAFETY: see above.
    unsafe { rooted(make) }
}

/// Whether `x` is a logical, integer, double or character vector: what
/// `copy_atomic_elt` copies from.
pub fn is_plain_atomic(x: SEXP) -> bool {
    matches!(type_of(x), LGLSXP | INTSXP | REALSXP | STRSXP)
}

/// A new vector of `x`'s type and length 1 (see `copy_atomic_elt`).
pub fn atomic_holder(x: SEXP) -> Result<Owned, RError> {
    let t = match type_of(x) {
        LGLSXP => SEXPTYPE::LGLSXP,
        INTSXP => SEXPTYPE::INTSXP,
        REALSXP => SEXPTYPE::REALSXP,
        STRSXP => SEXPTYPE::STRSXP,
        _ => return Err("internal error in mirai: an atomic vector was expected".into()),
    };
    // SAFETY: see above.
    unsafe { rooted(|r| r.alloc(t, 1)) }
}

/// Sets `dst` (made by `atomic_holder(src)`) to element `i` of `src`,
/// read through R's element accessors (an ALTREP vector, such as `1:n`, is
/// not expanded).
pub fn copy_atomic_elt(dst: &Owned, src: SEXP, i: usize) -> Result<(), RError> {
    let d = dst.sexp();
    if type_of(d) != type_of(src) || len(d) != 1 || i >= len(src) || !is_plain_atomic(src) {
        return Err("internal error in mirai: element copy out of range".into());
    }
    let k = i as isize;
    // SAFETY: the closure owns nothing with a destructor. `d` and `src`
    // are vectors of the same type (checked), `d` of length 1 and `i` in
    // range; an ALTREP accessor that errors longjmps into try_r.
    unsafe {
        try_r(|_| {
            match type_of(d) {
                LGLSXP => *LOGICAL(d) = LOGICAL_ELT(src, k),
                INTSXP => *INTEGER(d) = INTEGER_ELT(src, k),
                REALSXP => *REAL(d) = REAL_ELT(src, k),
                _ => {
                    SET_STRING_ELT(d, 0, STRING_ELT(src, k));
                }
            }
            nil()
        })
    }?;
    Ok(())
}

/// Row `k` (0-based) of the columns `cols` as a list named `names`, as
/// `lapply(df, `[[`, k + 1)` gives it for a data frame of such columns: a
/// list column's element itself, an atomic column's element a new vector
/// of length 1 read through R's element accessors (an ALTREP column, such
/// as `1:n`, is not expanded). Made in one `try_r`, which on a daemon's
/// map of small rows costs about as much as the rest of the row (the
/// per-column `atomic_holder` and `copy_atomic_elt` took two each).
pub fn row_list(cols: &[SEXP], k: usize, names: SEXP) -> Result<Owned, RError> {
    if !cols.iter().all(|&c| (is_plain_atomic(c) || is_list(c)) && k < len(c)) || len(names) != cols.len() {
        return Err("internal error in mirai: a row out of range".into());
    }
    let i = k as isize;
    // SAFETY: the closure owns nothing with a destructor. Each column is a
    // plain atomic vector or a list longer than `k` (checked); each holder
    // is made of its column's type and length 1, and set in the protected
    // row before it is filled, so it is reachable when an accessor (an
    // ALTREP method) allocates; an accessor that errors longjmps into
    // try_r.
    unsafe {
        rooted(|r| {
            let row = r.protect(r.alloc(SEXPTYPE::VECSXP, cols.len()));
            for (j, &col) in cols.iter().enumerate() {
                let t = match type_of(col) {
                    LGLSXP => SEXPTYPE::LGLSXP,
                    INTSXP => SEXPTYPE::INTSXP,
                    REALSXP => SEXPTYPE::REALSXP,
                    STRSXP => SEXPTYPE::STRSXP,
                    _ => {
                        r.set_elt(row, j, VECTOR_ELT(col, i));
                        continue;
                    }
                };
                let h = r.alloc(t, 1);
                r.set_elt(row, j, h);
                match t {
                    SEXPTYPE::LGLSXP => *LOGICAL(h) = LOGICAL_ELT(col, i),
                    SEXPTYPE::INTSXP => *INTEGER(h) = INTEGER_ELT(col, i),
                    SEXPTYPE::REALSXP => *REAL(h) = REAL_ELT(col, i),
                    _ => SET_STRING_ELT(h, 0, STRING_ELT(col, i)),
                }
            }
            r.set_attrib(row, names_symbol(), names);
            row
        })
    }
}

/// The bytes `push_binary_elt` writes per element of `x`; None if it reads
/// no element of `x`'s type.
pub fn binary_width(x: SEXP) -> Option<usize> {
    match type_of(x) {
        LGLSXP | INTSXP => Some(4),
        REALSXP => Some(8),
        _ => None,
    }
}

/// Element `i` of logical, integer or double vector `src`, appended to
/// `out` as R's native binary serialization (the format of mirai's frames,
/// `serial`) writes it: in native byte order, 4 bytes (8 for a double, its
/// bits as they are, NA's payload included). Read through R's element
/// accessors, as `copy_atomic_elt`.
pub fn push_binary_elt(src: SEXP, i: usize, out: &mut Vec<u8>) -> Result<(), RError> {
    let t = type_of(src);
    if !matches!(t, LGLSXP | INTSXP | REALSXP) || i >= len(src) {
        return Err("internal error in mirai: element read out of range".into());
    }
    let k = i as isize;
    let mut bits = 0u64;
    // SAFETY: the closure owns nothing with a destructor. `src` is a vector
    // of the type read (checked) and `i` in range; an ALTREP accessor that
    // errors longjmps into try_r.
    unsafe {
        try_r(|_| {
            bits = match t {
                LGLSXP => LOGICAL_ELT(src, k) as u32 as u64,
                INTSXP => INTEGER_ELT(src, k) as u32 as u64,
                _ => REAL_ELT(src, k).to_bits(),
            };
            nil()
        })
    }?;
    if t == REALSXP {
        out.extend_from_slice(&bits.to_ne_bytes());
    } else {
        out.extend_from_slice(&(bits as u32).to_ne_bytes());
    }
    Ok(())
}

/// A raw vector of `bytes`.
pub fn raw_vec(bytes: &[u8]) -> Result<Owned, RError> {
    let make = |r: &InR| {
        let v = r.alloc(SEXPTYPE::RAWSXP, bytes.len());
        if !bytes.is_empty() {
            // SAFETY: `v` is a new raw vector of bytes.len() bytes.
            unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), RAW(v), bytes.len()) };
        }
        v
    };
    // SAFETY: see above.
    unsafe { rooted(make) }
}

/// A logical vector of `vals` (0 FALSE, else TRUE).
pub fn lgls(vals: &[i32]) -> Result<Owned, RError> {
    let make = |r: &InR| {
        let v = r.alloc(SEXPTYPE::LGLSXP, vals.len());
        if !vals.is_empty() {
            // SAFETY: `v` is a new logical vector of vals.len() elements,
            // stored as ints.
            unsafe { std::ptr::copy_nonoverlapping(vals.as_ptr(), LOGICAL(v), vals.len()) };
        }
        v
    };
    // SAFETY: see above.
    unsafe { rooted(make) }
}

/// A double vector with names.
pub fn named_reals(vals: &[f64], names: &[&str]) -> Result<Owned, RError> {
    debug_assert_eq!(vals.len(), names.len());
    let make = |r: &InR| {
        let v = r.protect(r.alloc(SEXPTYPE::REALSXP, vals.len()));
        if !vals.is_empty() {
            // SAFETY: `v` is a new double vector of vals.len() elements.
            unsafe { std::ptr::copy_nonoverlapping(vals.as_ptr(), REAL(v), vals.len()) };
        }
        r.set_attrib(v, names_symbol(), r.strings(names));
        v
    };
    // SAFETY: see above.
    unsafe { rooted(make) }
}

/// An integer vector with names.
pub fn named_ints(vals: &[i32], names: &[&str]) -> Result<Owned, RError> {
    debug_assert_eq!(vals.len(), names.len());
    let v = ints(vals)?;
    // SAFETY: see above.
    unsafe {
        try_r(|r| {
            r.set_attrib(v.sexp(), names_symbol(), r.strings(names));
            nil()
        })
    }?;
    Ok(v)
}

/// A character vector of `vals` named `names`.
pub fn named_strings(vals: &[&str], names: &[&str]) -> Result<Owned, RError> {
    debug_assert_eq!(vals.len(), names.len());
    // SAFETY: see above.
    unsafe {
        rooted(|r| {
            let v = r.strings(vals);
            r.set_attrib(v, names_symbol(), r.strings(names));
            v
        })
    }
}

fn names_symbol() -> SEXP {
    // SAFETY: a constant R sets up at start-up.
    unsafe { R_NamesSymbol }
}

pub(super) fn class_symbol() -> SEXP {
    // SAFETY: a constant R sets up at start-up.
    unsafe { R_ClassSymbol }
}

/// A list of `items`, named if `names` is not empty.
pub fn list(items: &[SEXP], names: &[&str]) -> Result<Owned, RError> {
    // SAFETY: see above.
    unsafe {
        rooted(|r| {
            let v = r.protect(r.alloc(SEXPTYPE::VECSXP, items.len()));
            for (i, x) in items.iter().enumerate() {
                r.set_elt(v, i, *x);
            }
            if !names.is_empty() {
                r.set_attrib(v, names_symbol(), r.strings(names));
            }
            v
        })
    }
}

/// A list of `n` NULLs, to be filled with `set_list_elt`.
pub fn new_list(n: usize) -> Result<Owned, RError> {
    // SAFETY: see above.
    unsafe { rooted(|r| r.alloc(SEXPTYPE::VECSXP, n)) }
}

/// Sets element `i` of `list` (`i` < its length). Allocates nothing.
pub fn set_list_elt(list: &Owned, i: usize, x: SEXP) {
    assert!(is_list(list.sexp()) && i < len(list.sexp()), "list index out of range");
    // SAFETY: a list and an index in range (asserted): R's checks pass, and
    // a store allocates nothing (write barrier only).
    unsafe { SET_VECTOR_ELT(list.sexp(), i as isize, x) };
}

/// Sets the class attribute of `x` (a value just made, not yet shared) to
/// `class`.
pub fn set_class(x: &Owned, class: &[&str]) -> Result<(), RError> {
    let x = x.sexp();
    // SAFETY: see above.
    unsafe {
        try_r(|r| {
            r.set_attrib(x, class_symbol(), r.strings(class));
            x
        })
    }?;
    Ok(())
}
