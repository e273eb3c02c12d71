//! Reads R's binary serialization (format version 3, as `serial` writes
//! it) of plain values without R_Unserialize: NULL, logical, integer,
//! double and raw vectors, character vectors, lists (each of them bare or
//! with names only), calls, pairlists and symbols. R_Unserialize allocates
//! a reference table for every call and reads through R's stream
//! callbacks: for the small values of most tasks and results that is most
//! of its 1-2 us (measured here: 1.0 us for "hello", 1.8 us for a task's
//! payload, when it still was the named `list(._expr_., ._globals_.,
//! ._args_.)`).
//!
//! Anything else is left to R (`read` gives None, `write` false): other
//! attributes, S4 or classed objects, environments other than the three
//! special ones, closures, references other than to symbols, ALTREP
//! forms, complex vectors, strings in the native encoding that are not
//! ASCII (the session's encoding may change: R translates them), a
//! stream written by another R version or in another native encoding (its
//! header differs from ours), and for the writer, values over its bounds. The bytes are those of a peer
//! that has authenticated, but are still read as hostile: every length is
//! checked against the bytes that remain before anything is allocated,
//! nesting is bounded, and nothing panics.

use super::call::{try_r, InR, RError};
use super::ffi::*;
use super::serial;
use super::value::{len, nil, rooted, type_of, Owned};
use std::sync::OnceLock;

const NILVALUE: u32 = 254;
const GLOBALENV: u32 = 253;
const MISSINGARG: u32 = 251;
const EMPTYENV: u32 = 242;
const BASEENV: u32 = 241;
const REFSXP: u32 = 255;
const SYM: u32 = 1;
const LIST: u32 = 2;
const LANG: u32 = 6;
const CHAR: u32 = 9;
const LGL: u32 = 10;
const INT: u32 = 13;
const REAL: u32 = 14;
const STR: u32 = 16;
const VEC: u32 = 19;
const EXPR: u32 = 20;
const RAW: u32 = 24;

const IS_OBJECT: u32 = 1 << 8;
const HAS_ATTR: u32 = 1 << 9;
const HAS_TAG: u32 = 1 << 10;

/// CHARSXP levels: how R marks a string's encoding.
const UTF8_MASK: u32 = 1 << 3;
const LATIN1_MASK: u32 = 1 << 2;
const BYTES_MASK: u32 = 1 << 1;

/// Deeper nesting is left to R.
const MAX_DEPTH: u32 = 256;

/// The header R writes in this session (format, version, R's version, the
/// native encoding): a stream with another one goes to R.
pub fn header() -> Result<&'static [u8], RError> {
    static HEADER: OnceLock<Vec<u8>> = OnceLock::new();
    if let Some(h) = HEADER.get() {
        return Ok(h);
    }
    let mut b = Vec::new();
    serial::serialize_by_r(nil(), &mut b)?;
    // NULL is the last 4 bytes.
    b.truncate(b.len().saturating_sub(4));
    Ok(HEADER.get_or_init(|| b))
}

/// The value `data` serializes, if it is plain (see the module); None for
/// R_Unserialize to read. Err only when R itself failed (out of memory).
pub fn read(data: &[u8]) -> Result<Option<Owned>, RError> {
    let h = header()?;
    let Some(body) = data.strip_prefix(h) else { return Ok(None) };
    let mut cur = Cursor { data: body, pos: 0, syms: Vec::new(), plain: true };
    let curp = &mut cur as *mut Cursor;
    // SAFETY: the closure owns nothing with a destructor: the cursor (and
    // its Vec) lives out here and is reached through a raw pointer that
    // nothing else uses until `rooted` returns.
    let v = unsafe {
        rooted(|r| {
            let cur = &mut *curp;
            match cur.item(r, 0) {
                Some(v) if cur.pos == cur.data.len() => v,
                _ => {
                    cur.plain = false;
                    nil()
                }
            }
        })
    }?;
    Ok(cur.plain.then_some(v))
}

struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
    /// Symbols in the order read: R's reference table, as far as plain
    /// values use it (a symbol's later uses refer back to its first).
    syms: Vec<SEXP>,
    /// False once something not plain was met.
    plain: bool,
}

impl Cursor<'_> {
    fn left(&self) -> usize {
        self.data.len() - self.pos
    }

    fn bytes(&mut self, n: usize) -> Option<&[u8]> {
        if n > self.left() {
            return None;
        }
        let b = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Some(b)
    }

    fn int(&mut self) -> Option<i32> {
        let b = self.bytes(4)?;
        Some(i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A vector's length, if its `width`-byte elements can all be in the
    /// bytes that remain (so nothing is allocated on a length's word).
    fn length(&mut self, width: usize) -> Option<usize> {
        let n = match self.int()? {
            -1 => {
                let (hi, lo) = (self.int()? as u32 as u64, self.int()? as u32 as u64);
                usize::try_from((hi << 32) | lo).ok()?
            }
            n if n >= 0 => n as usize,
            _ => return None,
        };
        (n.checked_mul(width)? <= self.left()).then_some(n)
    }

    fn item(&mut self, r: &InR, depth: u32) -> Option<SEXP> {
        let flags = self.int()? as u32;
        self.item_with(r, flags, depth)
    }

    fn item_with(&mut self, r: &InR, flags: u32, depth: u32) -> Option<SEXP> {
        if depth > MAX_DEPTH {
            return None;
        }
        let ty = flags & 0xFF;
        match ty {
            NILVALUE => Some(nil()),
            // SAFETY: R's constants, set before any package loads.
            GLOBALENV => Some(unsafe { R_GlobalEnv }),
            // SAFETY: as above.
            EMPTYENV => Some(unsafe { R_EmptyEnv }),
            // SAFETY: as above.
            BASEENV => Some(unsafe { R_BaseEnv }),
            // SAFETY: as above.
            MISSINGARG => Some(unsafe { R_MissingArg }),
            REFSXP => {
                let i = match flags >> 8 {
                    0 => usize::try_from(self.int()?).ok()?,
                    i => i as usize,
                };
                self.syms.get(i.checked_sub(1)?).copied()
            }
            SYM => {
                let c = self.charsxp(r)?;
                let s = r.scoped(|r| {
                    let c = r.protect(c);
                    r.install_char(c)
                });
                self.syms.push(s);
                Some(s)
            }
            LIST | LANG if flags & (IS_OBJECT | HAS_ATTR) == 0 && flags >> 12 == 0 => self.pairlist(r, flags, depth),
            LGL | INT | REAL | RAW | STR | VEC | EXPR if flags & IS_OBJECT == 0 && flags >> 12 == 0 => {
                r.scoped(|r| {
                    let v = r.protect(self.vector(r, ty, depth)?);
                    if flags & HAS_ATTR != 0 {
                        self.names(r, v, depth)?;
                    }
                    Some(v)
                })
            }
            _ => None,
        }
    }

    fn vector(&mut self, r: &InR, ty: u32, depth: u32) -> Option<SEXP> {
        let (t, width) = match ty {
            LGL => (SEXPTYPE::LGLSXP, 4),
            INT => (SEXPTYPE::INTSXP, 4),
            REAL => (SEXPTYPE::REALSXP, 8),
            RAW => (SEXPTYPE::RAWSXP, 1),
            STR => (SEXPTYPE::STRSXP, 4),
            VEC => (SEXPTYPE::VECSXP, 4),
            _ => (SEXPTYPE::EXPRSXP, 4),
        };
        let n = self.length(width)?;
        match ty {
            LGL | INT | REAL | RAW => {
                let src = self.bytes(n * width)?.as_ptr();
                let v = r.alloc(t, n);
                if n > 0 {
                    // SAFETY: `v` is a fresh vector of `n` elements of
                    // `width` bytes (not ALTREP: just allocated), `src` has
                    // n * width readable bytes (checked); byte copy, so no
                    // alignment is assumed of `src`.
                    unsafe {
                        let dst: *mut u8 = match ty {
                            LGL => LOGICAL(v).cast(),
                            INT => INTEGER(v).cast(),
                            REAL => super::ffi::REAL(v).cast(),
                            _ => super::ffi::RAW(v).cast(),
                        };
                        std::ptr::copy_nonoverlapping(src, dst, n * width);
                    }
                }
                Some(v)
            }
            STR => r.scoped(|r| {
                let v = r.protect(r.alloc(t, n));
                for i in 0..n {
                    let c = self.charsxp(r)?;
                    r.set_str(v, i, c);
                }
                Some(v)
            }),
            _ => r.scoped(|r| {
                let v = r.protect(r.alloc(t, n));
                for i in 0..n {
                    let x = self.item(r, depth + 1)?;
                    r.set_elt(v, i, x);
                }
                Some(v)
            }),
        }
    }

    /// A string element: NA, or bytes with their encoding mark.
    fn charsxp(&mut self, r: &InR) -> Option<SEXP> {
        let flags = self.int()? as u32;
        if flags & 0xFF != CHAR || flags & (IS_OBJECT | HAS_ATTR | HAS_TAG) != 0 {
            return None;
        }
        let levels = flags >> 12;
        let n = self.int()?;
        if n == -1 {
            // SAFETY: R's constant.
            return Some(unsafe { R_NaString });
        }
        let b = self.bytes(usize::try_from(n).ok()?)?;
        let ce = if levels & UTF8_MASK != 0 {
            cetype_t::CE_UTF8
        } else if levels & LATIN1_MASK != 0 {
            cetype_t::CE_LATIN1
        } else if levels & BYTES_MASK != 0 {
            cetype_t::CE_BYTES
        } else if levels & ASCII_MASK != 0 || b.is_ascii() {
            cetype_t::CE_NATIVE
        } else {
            // Unmarked, so in the writer's native encoding: R translates
            // it, and knows the session's encoding now (a task may have
            // changed the locale since the header was taken).
            return None;
        };
        Some(r.mk_char_ce(b, ce))
    }

    /// The attributes of `v`: only names (a character vector as long as
    /// `v`) are plain.
    fn names(&mut self, r: &InR, v: SEXP, depth: u32) -> Option<()> {
        let flags = self.int()? as u32;
        if flags & 0xFF != LIST || flags & (IS_OBJECT | HAS_ATTR) != 0 || flags & HAS_TAG == 0 || flags >> 12 != 0 {
            return None;
        }
        // SAFETY: R's constant.
        let names_sym = unsafe { R_NamesSymbol };
        if self.item(r, depth + 1)? != names_sym {
            return None;
        }
        let nm = self.item(r, depth + 1)?;
        if type_of(nm) != STRSXP || len(nm) != len(v) || self.int()? as u32 != NILVALUE {
            return None;
        }
        r.scoped(|r| {
            let nm = r.protect(nm);
            r.set_attrib(v, names_sym, nm);
        });
        Some(())
    }

    /// A pairlist or call whose first cell's flags are `flags`: its cells
    /// are read in a loop (not recursively), each with its tag and head.
    fn pairlist(&mut self, r: &InR, flags: u32, depth: u32) -> Option<SEXP> {
        r.scoped(|r| {
            let mut head = nil();
            let mut tail = nil();
            let mut flags = flags;
            loop {
                let tag = if flags & HAS_TAG != 0 {
                    let t = self.item(r, depth + 1)?;
                    if type_of(t) != SYMSXP {
                        return None;
                    }
                    t
                } else {
                    nil()
                };
                let car = self.item(r, depth + 1)?;
                let cell = r.scoped(|r| {
                    let car = r.protect(car);
                    if head == nil() && flags & 0xFF == LANG {
                        r.lcons(car, nil())
                    } else {
                        r.cons(car, nil())
                    }
                });
                if tag != nil() {
                    r.set_cell(cell, car, tag);
                }
                if head == nil() {
                    head = r.protect(cell);
                } else {
                    r.set_cdr(tail, cell);
                }
                tail = cell;
                flags = self.int()? as u32;
                match flags & 0xFF {
                    NILVALUE => return Some(head),
                    LIST if flags & (IS_OBJECT | HAS_ATTR) == 0 && flags >> 12 == 0 => {}
                    _ => return None,
                }
            }
        })
    }
}

// ---- writing -------------------------------------------------------------

/// Larger values go to R: its reference table then costs little beside
/// the rest, while the checks below cost a copy of each vector, and a walk
/// of the rest of a pairlist per cell (R's identical() follows the tail).
/// Measured by an adversarial review: with 4,096 as every bound, a call of
/// 500 arguments took 480 us (R: 20) and 8 vectors of 4,000 doubles 157 us
/// (R: 43); within these bounds the native writer is the faster.
const WRITE_MAX_BYTES: usize = 1024;
const WRITE_MAX_ELTS: usize = 256;
const WRITE_MAX_CELLS: usize = 64;
const WRITE_MAX_PARTS: usize = 512;

const ASCII_MASK: u32 = 1 << 6;

/// Appends R's binary serialization (version 3, as R_Serialize writes
/// it) of `x` to `buf` if `x` is plain (see the module) and small; true
/// if written. False leaves `buf` as it was, for R_Serialize.
///
/// Whether a value carries attributes other than names cannot be asked of
/// R's API (ATTRIB is not part of it): each vector and pairlist cell is
/// compared, with `identical()`, to a fresh copy that has its names and
/// nothing else, which costs a small allocation per part but no 8.8 KB
/// reference table per call, as R_Serialize allocates. Measured here: a
/// task's payload (then the named `list(._expr_., ._globals_., ._args_.)`)
/// ~1 us, by R ~4 us.
pub fn write(x: SEXP, buf: &mut Vec<u8>) -> Result<bool, RError> {
    let h = header()?;
    let start = buf.len();
    buf.extend_from_slice(h);
    let mut out = Out { buf, syms: Vec::new(), parts: 0, plain: true };
    let outp = &mut out as *mut Out;
    // SAFETY: the closure owns nothing with a destructor: `out` (and the
    // Vecs it holds or borrows) lives out here and is reached through a raw
    // pointer that nothing else uses until try_r returns.
    let res = unsafe {
        try_r(|r| {
            let out = &mut *outp;
            if !out.item(r, x, 0) {
                out.plain = false;
            }
            nil()
        })
    };
    let plain = out.plain;
    if res.is_err() || !plain {
        buf.truncate(start);
    }
    res.map(|_| plain)
}

struct Out<'a> {
    buf: &'a mut Vec<u8>,
    /// Symbols in the order written: R's reference table for them.
    syms: Vec<SEXP>,
    parts: usize,
    plain: bool,
}

impl Out<'_> {
    fn int(&mut self, v: i32) {
        self.buf.extend_from_slice(&v.to_ne_bytes());
    }

    fn flags(&mut self, f: u32) {
        self.int(f as i32);
    }

    fn length(&mut self, n: usize) {
        // Only short vectors are written here (WRITE_MAX_ELTS).
        self.int(n as i32);
    }

    fn item(&mut self, r: &InR, x: SEXP, depth: u32) -> bool {
        self.parts += 1;
        if depth > MAX_DEPTH || self.parts > WRITE_MAX_PARTS {
            return false;
        }
        if x == nil() {
            self.flags(NILVALUE);
            return true;
        }
        // SAFETY: R's constants, set before any package loads.
        let (global, empty, base, missing) = unsafe { (R_GlobalEnv, R_EmptyEnv, R_BaseEnv, R_MissingArg) };
        let special = [(global, GLOBALENV), (empty, EMPTYENV), (base, BASEENV), (missing, MISSINGARG)];
        if let Some(&(_, code)) = special.iter().find(|(s, _)| *s == x) {
            self.flags(code);
            return true;
        }
        match type_of(x) as u32 {
            SYM => self.symbol(x),
            ty @ (LGL | INT | REAL | RAW | STR | VEC | EXPR) => self.vector(r, x, ty, depth),
            ty @ (LIST | LANG) => self.pairlist(r, x, ty, depth),
            _ => false,
        }
    }

    fn symbol(&mut self, s: SEXP) -> bool {
        if let Some(i) = self.syms.iter().position(|&k| k == s) {
            // References count from 1; these tables are short, so the
            // index always packs into the flags.
            self.flags(((i as u32 + 1) << 8) | REFSXP);
            return true;
        }
        self.syms.push(s);
        self.flags(SYM);
        // SAFETY: a symbol's print name, a CHARSXP it keeps alive.
        let name = unsafe { PRINTNAME(s) };
        self.charsxp(name)
    }

    fn charsxp(&mut self, c: SEXP) -> bool {
        // SAFETY: R's constant.
        if c == unsafe { R_NaString } {
            self.flags(CHAR);
            self.int(-1);
            return true;
        }
        // SAFETY: `c` is a live CHARSXP (an element of a character vector
        // or a print name): LENGTH bytes at R_CHAR; getCharCE reads its mark.
        let (bytes, ce) = unsafe {
            let n = LENGTH(c) as usize;
            (std::slice::from_raw_parts(R_CHAR(c) as *const u8, n), Rf_getCharCE(c))
        };
        let levels = if bytes.is_ascii() {
            ASCII_MASK
        } else {
            match ce {
                cetype_t::CE_UTF8 => UTF8_MASK,
                cetype_t::CE_LATIN1 => LATIN1_MASK,
                cetype_t::CE_BYTES => BYTES_MASK,
                // In the native encoding, which a task may have changed
                // since the header was taken: R writes the one in force.
                _ => return false,
            }
        };
        self.flags(CHAR | levels << 12);
        self.length(bytes.len());
        self.buf.extend_from_slice(bytes);
        true
    }

    /// A vector, if it carries no attribute but names.
    fn vector(&mut self, r: &InR, x: SEXP, ty: u32, depth: u32) -> bool {
        let n = len(x);
        let width = match ty {
            REAL => 8,
            RAW => 1,
            LGL | INT => 4,
            _ => 0,
        };
        // An ALTREP vector (1:n, deferred strings, ...) is R's to write: it
        // writes the compact form, where reading the data here would expand
        // it (or fail, for one that gives no data pointer).
        // SAFETY: a type test of a live object.
        if n > WRITE_MAX_ELTS || n * width > WRITE_MAX_BYTES || unsafe { ALTREP(x) } != 0 {
            return false;
        }
        // SAFETY: R's constant.
        let names_sym = unsafe { R_NamesSymbol };
        let names = r.get_attrib(x, names_sym);
        if !r.scoped(|r| {
            let names = r.protect(names);
            let t = match ty {
                LGL => SEXPTYPE::LGLSXP,
                INT => SEXPTYPE::INTSXP,
                REAL => SEXPTYPE::REALSXP,
                RAW => SEXPTYPE::RAWSXP,
                STR => SEXPTYPE::STRSXP,
                VEC => SEXPTYPE::VECSXP,
                _ => SEXPTYPE::EXPRSXP,
            };
            let copy = r.protect(r.alloc(t, n));
            match ty {
                STR => (0..n).for_each(|i| r.set_str(copy, i, string_elt(x, i))),
                VEC | EXPR => (0..n).for_each(|i| r.set_elt(copy, i, list_elt(x, i))),
                _ if n > 0 => {
                    // SAFETY: both are vectors of `n` elements of this type
                    // (`copy` fresh, so not ALTREP; `x`'s data pointer may
                    // materialise an ALTREP vector, an allocation R may
                    // fail with an error, caught).
                    unsafe { std::ptr::copy_nonoverlapping(data_of(x, ty), data_of(copy, ty), n * width) };
                }
                _ => {}
            }
            if names != nil() {
                r.set_attrib(copy, names_sym, names);
            }
            r.identical_strict(x, copy)
        }) {
            return false;
        }
        let has_names = names != nil();
        self.flags(ty | if has_names { HAS_ATTR } else { 0 });
        self.length(n);
        let ok = match ty {
            STR => (0..n).all(|i| self.charsxp(string_elt(x, i))),
            VEC | EXPR => (0..n).all(|i| self.item(r, list_elt(x, i), depth + 1)),
            _ => {
                if n > 0 {
                    // SAFETY: `x` holds n elements of `width` bytes (read
                    // above, so any ALTREP form is materialised already).
                    let b = unsafe { std::slice::from_raw_parts(data_of(x, ty), n * width) };
                    self.buf.extend_from_slice(b);
                }
                true
            }
        };
        if !ok {
            return false;
        }
        if has_names {
            self.flags(LIST | HAS_TAG);
            if !self.symbol(names_sym) || !self.item(r, names, depth + 1) {
                return false;
            }
            self.flags(NILVALUE);
        }
        true
    }

    /// A pairlist or call, if no cell carries attributes: a cell at a time.
    fn pairlist(&mut self, r: &InR, x: SEXP, ty: u32, depth: u32) -> bool {
        let mut cell = x;
        let mut ty = ty;
        for _ in 0..WRITE_MAX_CELLS {
            // SAFETY: `cell` is a live pairlist or call cell: field reads.
            let (car, cdr, tag) = unsafe { (CAR(cell), CDR(cell), TAG(cell)) };
            let bare = r.scoped(|r| {
                let copy = r.protect(if ty == LANG { r.lcons(car, cdr) } else { r.cons(car, cdr) });
                if tag != nil() {
                    r.set_cell(copy, car, tag);
                }
                r.identical_strict(cell, copy)
            });
            if !bare || (tag != nil() && type_of(tag) != SYMSXP) {
                return false;
            }
            self.flags(ty | if tag != nil() { HAS_TAG } else { 0 });
            if tag != nil() && !self.symbol(tag) {
                return false;
            }
            if !self.item(r, car, depth + 1) {
                return false;
            }
            if cdr == nil() {
                self.flags(NILVALUE);
                return true;
            }
            if type_of(cdr) as u32 != LIST {
                return false;
            }
            cell = cdr;
            ty = LIST;
        }
        false
    }
}

fn string_elt(x: SEXP, i: usize) -> SEXP {
    // SAFETY: `x` is a live character vector and `i` is in range (callers
    // loop below its length).
    unsafe { STRING_ELT(x, i as isize) }
}

fn list_elt(x: SEXP, i: usize) -> SEXP {
    // SAFETY: `x` is a live list and `i` is in range (as above).
    unsafe { VECTOR_ELT(x, i as isize) }
}

/// The data of logical, integer, double or raw vector `x`, as bytes.
///
/// # Safety
/// `x` is a live vector of type `ty`; R may allocate (ALTREP), so only
/// inside try_r.
unsafe fn data_of(x: SEXP, ty: u32) -> *mut u8 {
    // SAFETY: the caller's promise.
    unsafe {
        match ty {
            LGL => LOGICAL(x).cast(),
            INT => INTEGER(x).cast(),
            REAL => super::ffi::REAL(x).cast(),
            _ => super::ffi::RAW(x).cast(),
        }
    }
}
