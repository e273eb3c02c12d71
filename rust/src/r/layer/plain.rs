//! Reads R's binary serialization (format version 3, as `serial` writes
//! it) of plain values without R_Unserialize: NULL, logical, integer,
//! double and raw vectors, character vectors, lists (each of them bare or
//! with names only), calls, pairlists and symbols. R_Unserialize allocates
//! a reference table for every call and reads through R's stream
//! callbacks: for the small values of most tasks and results that is most
//! of its 1-2 us (measured here: 1.0 us for "hello", 1.8 us for a task's
//! `list(._expr_., ._globals_., ._args_.)`).
//!
//! Anything else is left to R (`read` gives None): other attributes, S4
//! or classed objects, environments other than the three special ones,
//! closures, references other than to symbols, ALTREP forms, complex
//! vectors, a stream written by another R version or in another native
//! encoding (its header differs from ours). The bytes are those of a peer
//! that has authenticated, but are still read as hostile: every length is
//! checked against the bytes that remain before anything is allocated,
//! nesting is bounded, and nothing panics.

use super::call::{InR, RError};
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
fn header() -> Result<&'static [u8], RError> {
    static HEADER: OnceLock<Vec<u8>> = OnceLock::new();
    if let Some(h) = HEADER.get() {
        return Ok(h);
    }
    let mut b = Vec::new();
    serial::serialize_into(nil(), &mut b)?;
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
        } else {
            // ASCII, or the native encoding, which is ours (the header).
            cetype_t::CE_NATIVE
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
