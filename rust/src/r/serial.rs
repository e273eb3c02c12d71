//! R serialization straight into an outgoing frame buffer, and back out of a
//! received one, with no intermediate raw vector. Native binary format
//! (version 3): both ends are mirai, and it skips XDR byte swapping, which
//! costs seconds on large numeric vectors. The handshake checks endianness.
//!
//! Custom serialization (`serial_config()`) rides on R's persistent-reference
//! hooks, which R consults for reference objects only: environments (other
//! than the global, base, namespace and package ones), external pointers and
//! weak references. A config is an R list `list(classes, sfuncs, ufuncs)`;
//! the class `""` (the older `serialization(refhook =)` form) stands for
//! every external pointer.
//!
//! Writing: when an object inherits a configured class, the out-hook calls
//! its `sfunc`, keeps the raw vector it returns, and hands R the reference
//! `c("<class index>", "<blob index>")`, which R writes after a PERSISTSXP
//! marker. The raw vectors go after the end of R's stream, followed by a
//! trailer: each blob's length (u64 LE), their count (u64 LE), then `MAGIC`.
//! R stops reading at the end of its own stream, so the tail is invisible
//! to it, and each blob is copied once, from R's vector into the frame. An
//! object referred to several times is packed once and arrives as one object.
//!
//! Reading: a PERSISTSXP marker is only ever written together with a
//! trailer, so the trailer is located (from the end of the payload) the first
//! time the in-hook runs, never otherwise; the in-hook copies the blob into a
//! fresh raw vector and returns `ufunc(raw)`.
//!
//! An R error (or interrupt) inside `sfunc`/`ufunc` is caught in the hook and
//! re-raised as a plain R error from a frame that owns nothing, so it unwinds
//! to the `try_r` around `R_Serialize`/`R_Unserialize` and comes back as
//! `Err`; it never longjmps over a Rust frame with live values.

use super::call::{try_r, RError};
use super::ffi::*;
use super::value::is_null;
use std::collections::HashMap;
use std::ffi::{c_int, c_void, CStr};

const MAGIC: &[u8; 8] = b"mirai\x00rb";

/// Makes room for `n` more bytes, doubling as a Vec would. Out of memory
/// is an R error (caught by the try_r around R_Serialize, as R's own
/// serialize() reports it), never Rust's abort of the whole process. This
/// frame owns nothing, so the longjmp skips no destructor.
unsafe fn room(buf: &mut Vec<u8>, n: usize) {
    if buf.capacity() - buf.len() >= n {
        return;
    }
    let want = buf.len().saturating_add(n).max(buf.capacity().saturating_mul(2));
    if buf.try_reserve_exact(want - buf.len()).is_err() && buf.try_reserve_exact(n).is_err() {
        Rf_errorcall(R_NilValue, c"cannot allocate memory to serialize the object".as_ptr());
    }
}

unsafe extern "C" fn out_char(s: *mut R_outpstream_st, c: c_int) {
    let buf = &mut *((*s).data as *mut Vec<u8>);
    room(buf, 1);
    buf.push(c as u8);
}

unsafe extern "C" fn out_bytes(s: *mut R_outpstream_st, p: *mut c_void, n: c_int) {
    let buf = &mut *((*s).data as *mut Vec<u8>);
    let n = n.max(0) as usize;
    room(buf, n);
    buf.extend_from_slice(std::slice::from_raw_parts(p as *const u8, n));
}

/// Appends the serialization of `obj` to `buf`. An R error inside (from a
/// serialization hook, say) comes back as `Err` (see `try_r`); `buf` is then
/// truncated to where it was.
pub fn serialize_into(obj: SEXP, buf: &mut Vec<u8>) -> Result<(), RError> {
    let start = buf.len();
    let bufp = buf as *mut Vec<u8>;
    let res = try_r(|| unsafe {
        let mut st: R_outpstream_st = std::mem::zeroed();
        R_InitOutPStream(
            &mut st,
            bufp as *mut c_void,
            R_pstream_format_t::R_pstream_binary_format,
            3,
            Some(out_char),
            Some(out_bytes),
            None,
            R_NilValue,
        );
        R_Serialize(obj, &mut st);
        R_NilValue
    });
    if res.is_err() {
        buf.truncate(start);
    }
    res.map(|_| ())
}

struct Input<'a> {
    data: &'a [u8],
    pos: usize,
}

unsafe extern "C" fn in_char(s: *mut R_inpstream_st) -> c_int {
    let inp = &mut *((*s).data as *mut Input);
    if inp.pos >= inp.data.len() {
        return -1;
    }
    inp.pos += 1;
    inp.data[inp.pos - 1] as c_int
}

unsafe extern "C" fn in_bytes(s: *mut R_inpstream_st, p: *mut c_void, n: c_int) {
    let inp = &mut *((*s).data as *mut Input);
    // A negative count or a read past the end means the data is not what
    // it claims to be: an R error (caught by the try_r around
    // R_Unserialize), never a read of memory we do not own or made-up zeros.
    let avail = inp.data.len().saturating_sub(inp.pos);
    if n < 0 || n as usize > avail {
        Rf_errorcall(R_NilValue, c"serialized data is truncated or corrupt".as_ptr());
    }
    let n = n as usize;
    std::ptr::copy_nonoverlapping(inp.data.as_ptr().add(inp.pos), p as *mut u8, n);
    inp.pos += n;
}

/// Unserializes one object from `data`. The result is unprotected: protect
/// it before the next allocation.
pub fn unserialize(data: &[u8]) -> Result<SEXP, RError> {
    if data.len() < 14 {
        return Err("serialized data is truncated".into());
    }
    let mut inp = Input { data, pos: 0 };
    let inpp = &mut inp as *mut Input as *mut c_void;
    try_r(|| unsafe {
        let mut st: R_inpstream_st = std::mem::zeroed();
        R_InitInPStream(
            &mut st,
            inpp,
            R_pstream_format_t::R_pstream_any_format,
            Some(in_char),
            Some(in_bytes),
            None,
            R_NilValue,
        );
        R_Unserialize(&mut st)
    })
}

// ---- custom serialization (serial_config) -------------------------------

/// Checks that `cfg` is NULL or `list(<character>, <list of functions>,
/// <list of functions>)` of matching lengths, so the hooks can index it
/// without further checks.
pub fn check_config(cfg: SEXP) -> Result<(), String> {
    if is_null(cfg) {
        return Ok(());
    }
    let bad = || Err("`serial` must be a serialization config from serial_config(), or NULL".to_string());
    unsafe {
        if TYPEOF(cfg) != VECSXP || Rf_xlength(cfg) != 3 {
            return bad();
        }
        let (cls, sf, uf) = (VECTOR_ELT(cfg, 0), VECTOR_ELT(cfg, 1), VECTOR_ELT(cfg, 2));
        if TYPEOF(cls) != STRSXP || TYPEOF(sf) != VECSXP || TYPEOF(uf) != VECSXP {
            return bad();
        }
        let n = Rf_xlength(cls);
        if Rf_xlength(sf) != n || Rf_xlength(uf) != n {
            return bad();
        }
        for i in 0..n {
            for f in [VECTOR_ELT(sf, i), VECTOR_ELT(uf, i)] {
                if !matches!(TYPEOF(f), CLOSXP | SPECIALSXP | BUILTINSXP) {
                    return bad();
                }
            }
        }
    }
    Ok(())
}

/// Calls `f(x)` on R's main thread, catching R errors and interrupts. The
/// result is unprotected.
unsafe fn call_caught(f: SEXP, x: SEXP) -> Result<SEXP, String> {
    struct Call {
        f: SEXP,
        x: SEXP,
    }
    unsafe extern "C" fn body(d: *mut c_void) -> SEXP {
        let c = &*(d as *const Call);
        let call = Rf_protect(Rf_lang2(c.f, c.x));
        let v = Rf_eval(call, R_GlobalEnv);
        Rf_unprotect(1);
        v
    }
    unsafe extern "C" fn handler(cond: SEXP, d: *mut c_void) -> SEXP {
        *(d as *mut bool) = true;
        cond
    }
    let mut call = Call { f, x };
    let mut failed = false;
    let conds = Rf_protect(Rf_allocVector(SEXPTYPE::STRSXP, 2));
    SET_STRING_ELT(conds, 0, mk_char("error"));
    SET_STRING_ELT(conds, 1, mk_char("interrupt"));
    let res = R_tryCatch(
        body,
        &mut call as *mut Call as *mut c_void,
        conds,
        handler,
        &mut failed as *mut bool as *mut c_void,
        None,
        std::ptr::null_mut(),
    );
    Rf_unprotect(1);
    if !failed {
        return Ok(res);
    }
    if Rf_inherits(res, c"interrupt".as_ptr()) != Rboolean::FALSE {
        return Err("interrupted".into());
    }
    if TYPEOF(res) == VECSXP && Rf_xlength(res) > 0 {
        let m = VECTOR_ELT(res, 0);
        if TYPEOF(m) == STRSXP && Rf_xlength(m) > 0 {
            return Err(CStr::from_ptr(R_CHAR(STRING_ELT(m, 0))).to_string_lossy().into_owned());
        }
    }
    Err("unknown R error".into())
}

unsafe fn class_name(cfg: SEXP, i: isize) -> String {
    CStr::from_ptr(R_CHAR(STRING_ELT(VECTOR_ELT(cfg, 0), i))).to_string_lossy().into_owned()
}

/// Per-call state of the hooks, reached through the hook data (an external
/// pointer to it, alive for the duration of one R_Serialize/R_Unserialize).
///
/// R asks the out-hook about every occurrence of a reference object, before
/// looking it up among those already written, so an object met twice would
/// be packed twice and arrive as two objects. `seen` and `made` make each
/// object one blob and one `sfunc`/`ufunc` call, and keep shared references
/// shared. Keys are addresses of objects that stay reachable (hence alive
/// and unmoved) for the whole call.
struct OutHook {
    cfg: SEXP,
    blobs: usize,
    seen: HashMap<usize, (isize, usize)>,
    error: Option<String>,
}

struct InHook<'a> {
    cfg: SEXP,
    data: &'a [u8],
    table: Option<Vec<(usize, usize)>>,
    made: HashMap<usize, SEXP>,
    error: Option<String>,
}

/// Keeps `x` alive for as long as the hook data `pdata` is.
unsafe fn mk_char(s: &str) -> SEXP {
    Rf_mkCharLenCE(s.as_ptr() as *const std::ffi::c_char, s.len() as c_int, cetype_t::CE_UTF8)
}

unsafe fn keep(pdata: SEXP, x: SEXP) {
    Rf_protect(x);
    R_SetExternalPtrProtected(pdata, Rf_cons(x, R_ExternalPtrProtected(pdata)));
    Rf_unprotect(1);
}

/// Writes `n` in decimal into `buf`; the digits written. (No heap String:
/// the allocations below may longjmp, which must skip no destructor.)
fn decimal(mut n: usize, buf: &mut [u8; 20]) -> &str {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    std::str::from_utf8(&buf[i..]).unwrap_or("0")
}

unsafe fn reference(ci: isize, bi: usize) -> SEXP {
    let (mut a, mut b) = ([0u8; 20], [0u8; 20]);
    let r = Rf_protect(Rf_allocVector(SEXPTYPE::STRSXP, 2));
    SET_STRING_ELT(r, 0, mk_char(decimal(ci as usize, &mut a)));
    SET_STRING_ELT(r, 1, mk_char(decimal(bi, &mut b)));
    Rf_unprotect(1);
    r
}

/// A hook that fails records why and returns NULL ("not a reference") so
/// R finishes its stream without an R error: an R error here would also be
/// seen by calling handlers outside (a user's withCallingHandlers, say)
/// even where the failure ends up as an error value. The caller checks
/// `error` once R is done and discards the output.
fn record(slot: &mut Option<String>, msg: String) -> SEXP {
    if slot.is_none() {
        *slot = Some(msg);
    }
    unsafe { R_NilValue }
}

unsafe extern "C" fn out_hook(s: SEXP, pdata: SEXP) -> SEXP {
    let st = R_ExternalPtrAddr(pdata) as *mut OutHook;
    if (*st).error.is_some() {
        return R_NilValue;
    }
    match out_hook_impl(s, pdata, &mut *st) {
        Ok(v) => v,
        Err(m) => record(&mut (*st).error, m),
    }
}

unsafe fn out_hook_impl(s: SEXP, pdata: SEXP, st: &mut OutHook) -> Result<SEXP, String> {
    if let Some(&(ci, bi)) = st.seen.get(&(s as usize)) {
        return Ok(reference(ci, bi));
    }
    let classes = VECTOR_ELT(st.cfg, 0);
    let is_xptr = TYPEOF(s) == EXTPTRSXP;
    for i in 0..Rf_xlength(classes) {
        let cls = R_CHAR(STRING_ELT(classes, i));
        let hit = if *cls == 0 { is_xptr } else { Rf_inherits(s, cls) != Rboolean::FALSE };
        if !hit {
            continue;
        }
        let raw = call_caught(VECTOR_ELT(VECTOR_ELT(st.cfg, 1), i), s)
            .map_err(|e| format!("serialization function for class '{}' failed: {e}", class_name(st.cfg, i)))?;
        if TYPEOF(raw) != RAWSXP {
            return Err(format!(
                "serialization function for class '{}' must return a raw vector",
                class_name(st.cfg, i)
            ));
        }
        // Kept alive by the hook data until R_Serialize is done and the
        // blob has been copied into the frame.
        keep(pdata, raw);
        let bi = st.blobs;
        st.blobs += 1;
        st.seen.insert(s as usize, (i, bi));
        return Ok(reference(i, bi));
    }
    Ok(R_NilValue)
}

unsafe extern "C" fn in_hook(s: SEXP, pdata: SEXP) -> SEXP {
    let st = R_ExternalPtrAddr(pdata) as *mut InHook;
    if (*st).error.is_some() {
        return R_NilValue;
    }
    match in_hook_impl(s, pdata, &mut *st) {
        Ok(v) => v,
        Err(m) => record(&mut (*st).error, m),
    }
}

unsafe fn in_hook_impl(s: SEXP, pdata: SEXP, st: &mut InHook) -> Result<SEXP, String> {
    let bad = || "malformed custom-serialized reference".to_string();
    if TYPEOF(s) != STRSXP || Rf_xlength(s) != 2 {
        return Err(bad());
    }
    let num = |j: isize| -> Result<usize, String> {
        CStr::from_ptr(R_CHAR(STRING_ELT(s, j))).to_str().ok().and_then(|t| t.parse().ok()).ok_or_else(bad)
    };
    let (ci, bi) = (num(0)?, num(1)?);
    if let Some(&v) = st.made.get(&bi) {
        return Ok(v);
    }
    if st.table.is_none() {
        st.table = Some(parse_trailer(st.data)?);
    }
    let &(start, len) = st.table.as_ref().unwrap().get(bi).ok_or_else(bad)?;
    if ci as isize >= Rf_xlength(VECTOR_ELT(st.cfg, 0)) {
        return Err("no unserialization function for this object: the serialization configs of the two sides differ".into());
    }
    let raw = Rf_protect(Rf_allocVector(SEXPTYPE::RAWSXP, len as isize));
    std::ptr::copy_nonoverlapping(st.data.as_ptr().add(start), RAW(raw), len);
    let res = call_caught(VECTOR_ELT(VECTOR_ELT(st.cfg, 2), ci as isize), raw);
    Rf_unprotect(1);
    let v = res
        .map_err(|e| format!("unserialization function for class '{}' failed: {e}", class_name(st.cfg, ci as isize)))?;
    keep(pdata, v);
    st.made.insert(bi, v);
    Ok(v)
}

/// Blob positions, in write order, from the trailer at the end of `data`.
fn parse_trailer(data: &[u8]) -> Result<Vec<(usize, usize)>, String> {
    let bad = || "custom-serialized data is missing or corrupt".to_string();
    let n = data.len();
    if n < 16 || &data[n - 8..] != MAGIC {
        return Err(bad());
    }
    let u64_at = |p: usize| u64::from_le_bytes(data[p..p + 8].try_into().unwrap());
    let count = u64_at(n - 16);
    let lens_at = (n - 16).checked_sub(count.checked_mul(8).ok_or_else(bad)? as usize).ok_or_else(bad)?;
    let lens: Vec<u64> = (0..count as usize).map(|i| u64_at(lens_at + 8 * i)).collect();
    let total = lens.iter().try_fold(0u64, |a, &l| a.checked_add(l)).ok_or_else(bad)?;
    let mut pos = (lens_at as u64).checked_sub(total).ok_or_else(bad)? as usize;
    Ok(lens
        .into_iter()
        .map(|l| {
            let p = pos;
            pos += l as usize;
            (p, l as usize)
        })
        .collect())
}

/// `serialize_into` with a custom serialization config (NULL for none).
/// An R error inside comes back as `RError::Unwind` carrying the original
/// condition; a failing `sfunc` as `RError::Msg`.
pub fn serialize_with(obj: SEXP, buf: &mut Vec<u8>, cfg: SEXP) -> Result<(), RError> {
    if is_null(cfg) {
        return serialize_into(obj, buf);
    }
    let start = buf.len();
    let bufp = buf as *mut Vec<u8>;
    let mut st = OutHook { cfg, blobs: 0, seen: HashMap::new(), error: None };
    let stp = &mut st as *mut OutHook as *mut c_void;
    let res = try_r(|| unsafe {
        let pdata = Rf_protect(R_MakeExternalPtr(stp, R_NilValue, R_NilValue));
        let mut os: R_outpstream_st = std::mem::zeroed();
        R_InitOutPStream(
            &mut os,
            bufp as *mut c_void,
            R_pstream_format_t::R_pstream_binary_format,
            3,
            Some(out_char),
            Some(out_bytes),
            Some(out_hook),
            pdata,
        );
        R_Serialize(obj, &mut os);
        if (*(stp as *mut OutHook)).blobs > 0 {
            append_blobs(&mut *bufp, R_ExternalPtrProtected(pdata));
        }
        Rf_unprotect(1);
        R_NilValue
    });
    let res = match (res, st.error) {
        (Ok(_), None) => return Ok(()),
        (Err(e), _) => Err(e),
        (Ok(_), Some(m)) if m.ends_with("interrupted") => Err(RError::Interrupt),
        (Ok(_), Some(m)) => Err(RError::Msg(m)),
    };
    buf.truncate(start);
    res
}

/// Writes the blobs (a pairlist, newest first) and the trailer. Calls
/// nothing in R that can fail.
unsafe fn append_blobs(buf: &mut Vec<u8>, mut list: SEXP) {
    let mut blobs = Vec::new();
    while !is_null(list) {
        blobs.push(CAR(list));
        list = CDR(list);
    }
    blobs.reverse();
    let total: usize = blobs.iter().map(|&b| Rf_xlength(b) as usize).sum();
    buf.reserve(total + 8 * blobs.len() + 16);
    for &b in &blobs {
        buf.extend_from_slice(std::slice::from_raw_parts(RAW(b), Rf_xlength(b) as usize));
    }
    for &b in &blobs {
        buf.extend_from_slice(&(Rf_xlength(b) as u64).to_le_bytes());
    }
    buf.extend_from_slice(&(blobs.len() as u64).to_le_bytes());
    buf.extend_from_slice(MAGIC);
}

/// `unserialize` with a custom serialization config (NULL for none). Every
/// caller turns a failure into an error value, so an R condition raised
/// inside is dropped here and only its message (when a hook raised it) kept.
pub fn unserialize_with(data: &[u8], cfg: SEXP) -> Result<SEXP, String> {
    if is_null(cfg) {
        return unserialize(data).map_err(|e| match e {
            RError::Msg(m) => m,
            _ => "not a valid R serialization, or out of memory".into(),
        });
    }
    if data.len() < 14 {
        return Err("serialized data is truncated".into());
    }
    let mut inp = Input { data, pos: 0 };
    let inpp = &mut inp as *mut Input as *mut c_void;
    let mut st = InHook { cfg, data, table: None, made: HashMap::new(), error: None };
    let stp = &mut st as *mut InHook as *mut c_void;
    let res = try_r(|| unsafe {
        let pdata = Rf_protect(R_MakeExternalPtr(stp, R_NilValue, R_NilValue));
        let mut is: R_inpstream_st = std::mem::zeroed();
        R_InitInPStream(
            &mut is,
            inpp,
            R_pstream_format_t::R_pstream_any_format,
            Some(in_char),
            Some(in_bytes),
            Some(in_hook),
            pdata,
        );
        let v = R_Unserialize(&mut is);
        Rf_unprotect(1);
        v
    });
    match (res, st.error) {
        (Ok(v), None) => Ok(v),
        (_, Some(m)) => Err(m),
        (Err(RError::Msg(m)), None) => Err(m),
        (Err(_), None) => Err("not a valid R serialization, or out of memory".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_trailer(stream: &[u8], blobs: &[&[u8]]) -> Vec<u8> {
        let mut b = stream.to_vec();
        for x in blobs {
            b.extend_from_slice(x);
        }
        for x in blobs {
            b.extend_from_slice(&(x.len() as u64).to_le_bytes());
        }
        b.extend_from_slice(&(blobs.len() as u64).to_le_bytes());
        b.extend_from_slice(MAGIC);
        b
    }

    #[test]
    fn decimal_writes_digits() {
        let mut b = [0u8; 20];
        assert_eq!(decimal(0, &mut b), "0");
        assert_eq!(decimal(907, &mut b), "907");
        assert_eq!(decimal(usize::MAX, &mut b), usize::MAX.to_string());
    }

    #[test]
    fn trailer_locates_blobs() {
        let d = with_trailer(b"R-stream", &[b"abc", b"", b"defgh"]);
        let t = parse_trailer(&d).unwrap();
        assert_eq!(t.len(), 3);
        let get = |i: usize| &d[t[i].0..t[i].0 + t[i].1];
        assert_eq!(get(0), b"abc");
        assert_eq!(get(1), b"");
        assert_eq!(get(2), b"defgh");
        assert_eq!(t[0].0, 8);
    }

    #[test]
    fn corrupt_trailers_are_errors() {
        assert!(parse_trailer(b"no trailer at all, just data").is_err());
        let mut d = with_trailer(b"x", &[b"abc"]);
        let n = d.len();
        d[n - 16..n - 8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(parse_trailer(&d).is_err());
        let mut d = with_trailer(b"", &[b"abc"]);
        let n = d.len();
        d[n - 24..n - 16].copy_from_slice(&1000u64.to_le_bytes());
        assert!(parse_trailer(&d).is_err());
    }
}
