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

use super::call::{try_r, InR, RError};
use super::ffi::*;
use super::value::*;
use std::collections::HashMap;
use std::ffi::{c_int, c_void};

const MAGIC: &[u8; 8] = b"mirai\x00rb";

/// Makes room for `n` more bytes, doubling as a Vec would. Out of memory
/// is an R error (caught by the try_r around R_Serialize, as R's own
/// serialize() reports it), never Rust's abort of the whole process. This
/// frame owns nothing, so the longjmp skips no destructor.
fn room(r: &InR, buf: &mut Vec<u8>, n: usize) {
    if buf.capacity() - buf.len() >= n {
        return;
    }
    let want = buf.len().saturating_add(n).max(buf.capacity().saturating_mul(2));
    if buf.try_reserve_exact(want - buf.len()).is_err() && buf.try_reserve_exact(n).is_err() {
        r.error(c"cannot allocate memory to serialize the object");
    }
}

/// The output buffer of stream `s`.
///
/// # Safety
/// `s` is a stream made by `out_stream`, whose data is a `Vec<u8>` that
/// outlives the serialization and that nothing else borrows meanwhile.
unsafe fn out_buf<'a>(s: *mut R_outpstream_st) -> &'a mut Vec<u8> {
    // SAFETY: the caller's promise.
    unsafe { &mut *((*s).data as *mut Vec<u8>) }
}

unsafe extern "C" fn out_char(s: *mut R_outpstream_st, c: c_int) {
    // SAFETY: R calls this only on our streams (see `out_stream`), inside
    // R_Serialize, inside try_r, over frames that own nothing.
    let (buf, r) = unsafe { (out_buf(s), InR::assume()) };
    room(&r, buf, 1);
    buf.push(c as u8);
}

unsafe extern "C" fn out_bytes(s: *mut R_outpstream_st, p: *mut c_void, n: c_int) {
    // SAFETY: as in `out_char`.
    let (buf, r) = unsafe { (out_buf(s), InR::assume()) };
    let n = n.max(0) as usize;
    room(&r, buf, n);
    // SAFETY: R hands us `n` readable bytes at `p`.
    buf.extend_from_slice(unsafe { std::slice::from_raw_parts(p as *const u8, n) });
}

/// An output stream writing into `buf` (R's native binary format, version
/// 3), with out-hook `hook` given `pdata` (R_NilValue for none).
fn out_stream(buf: *mut Vec<u8>, hook: Option<unsafe extern "C" fn(SEXP, SEXP) -> SEXP>, pdata: SEXP) -> R_outpstream_st {
    // SAFETY: a plain C struct of pointers and integers, all of which
    // R_InitOutPStream sets; it allocates nothing and keeps `buf` as
    // opaque data for our callbacks.
    unsafe {
        let mut st: R_outpstream_st = std::mem::zeroed();
        R_InitOutPStream(
            &mut st,
            buf as *mut c_void,
            R_pstream_format_t::R_pstream_binary_format,
            3,
            Some(out_char),
            Some(out_bytes),
            hook,
            pdata,
        );
        st
    }
}

/// Appends the serialization of `obj` to `buf`. An R error inside (from a
/// serialization hook, say) comes back as `Err` (see `try_r`); `buf` is then
/// truncated to where it was.
pub fn serialize_into(obj: SEXP, buf: &mut Vec<u8>) -> Result<(), RError> {
    // A plain value is written natively (see `plain`); R writes the rest.
    if let Ok(true) = super::plain::write(obj, buf) {
        return Ok(());
    }
    serialize_by_r(obj, buf)
}

/// `serialize_into`, always through R_Serialize.
pub fn serialize_by_r(obj: SEXP, buf: &mut Vec<u8>) -> Result<(), RError> {
    let start = buf.len();
    let bufp = buf as *mut Vec<u8>;
    // SAFETY: the closure owns nothing with a destructor (the stream is a
    // C struct); `buf` is not touched here until R_Serialize is done.
    let res = unsafe {
        try_r(|r| {
            let mut st = out_stream(bufp, None, nil());
            r.serialize(obj, &mut st);
            nil()
        })
    };
    if res.is_err() {
        buf.truncate(start);
    }
    res.map(|_| ())
}

struct Input<'a> {
    data: &'a [u8],
    pos: usize,
}

/// The input of stream `s`.
///
/// # Safety
/// `s` is a stream made by `in_stream`, whose data is an `Input` that
/// outlives the unserialization and that nothing else borrows meanwhile.
unsafe fn input<'a>(s: *mut R_inpstream_st) -> &'a mut Input<'a> {
    // SAFETY: the caller's promise.
    unsafe { &mut *((*s).data as *mut Input) }
}

unsafe extern "C" fn in_char(s: *mut R_inpstream_st) -> c_int {
    // SAFETY: R calls this only on our streams (see `in_stream`).
    let inp = unsafe { input(s) };
    if inp.pos >= inp.data.len() {
        return -1;
    }
    inp.pos += 1;
    inp.data[inp.pos - 1] as c_int
}

unsafe extern "C" fn in_bytes(s: *mut R_inpstream_st, p: *mut c_void, n: c_int) {
    // SAFETY: as in `in_char`; R calls it inside R_Unserialize, inside
    // try_r, over frames that own nothing.
    let (inp, r) = unsafe { (input(s), InR::assume()) };
    // A negative count or a read past the end means the data is not what
    // it claims to be: an R error (caught by the try_r around
    // R_Unserialize), never a read of memory we do not own or made-up zeros.
    let avail = inp.data.len().saturating_sub(inp.pos);
    if n < 0 || n as usize > avail {
        r.error(c"serialized data is truncated or corrupt");
    }
    let n = n as usize;
    // SAFETY: R hands us room for `n` bytes at `p`; `n` bytes remain in
    // `data` from `pos` (checked above).
    unsafe { std::ptr::copy_nonoverlapping(inp.data.as_ptr().add(inp.pos), p as *mut u8, n) };
    inp.pos += n;
}

/// An input stream reading from `inp`, with in-hook `hook` given `pdata`.
fn in_stream(inp: *mut Input, hook: Option<unsafe extern "C" fn(SEXP, SEXP) -> SEXP>, pdata: SEXP) -> R_inpstream_st {
    // SAFETY: as in `out_stream`, for R_InitInPStream.
    unsafe {
        let mut st: R_inpstream_st = std::mem::zeroed();
        R_InitInPStream(
            &mut st,
            inp as *mut c_void,
            R_pstream_format_t::R_pstream_any_format,
            Some(in_char),
            Some(in_bytes),
            hook,
            pdata,
        );
        st
    }
}

/// Unserializes one object from `data`: a plain value natively (`plain`),
/// anything else through R_Unserialize.
pub fn unserialize(data: &[u8]) -> Result<Owned, RError> {
    if data.len() < 14 {
        return Err("serialized data is truncated".into());
    }
    if let Ok(Some(v)) = super::plain::read(data) {
        return Ok(v);
    }
    unserialize_by_r(data)
}

/// `unserialize`, always through R_Unserialize.
pub fn unserialize_by_r(data: &[u8]) -> Result<Owned, RError> {
    if data.len() < 14 {
        return Err("serialized data is truncated".into());
    }
    let mut inp = Input { data, pos: 0 };
    let inpp = &mut inp as *mut Input;
    // SAFETY: the closure owns nothing with a destructor; `inp` outlives
    // the call and is only used through the stream meanwhile.
    unsafe {
        rooted(|r| {
            let mut st = in_stream(inpp, None, nil());
            r.unserialize(&mut st)
        })
    }
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
    if !is_list(cfg) || len(cfg) != 3 {
        return bad();
    }
    let (cls, sf, uf) = (list_at(cfg, 0), list_at(cfg, 1), list_at(cfg, 2));
    if type_of(cls) != STRSXP || !is_list(sf) || !is_list(uf) {
        return bad();
    }
    let n = len(cls);
    if len(sf) != n || len(uf) != n {
        return bad();
    }
    if !(0..n).all(|i| is_function(list_at(sf, i)) && is_function(list_at(uf, i))) {
        return bad();
    }
    Ok(())
}

/// Calls `f(x)` on R's main thread, catching R errors and interrupts. The
/// result is unprotected.
fn call_caught(r: &InR, f: SEXP, x: SEXP) -> Result<SEXP, String> {
    struct Call {
        f: SEXP,
        x: SEXP,
    }
    unsafe extern "C" fn body(d: *mut c_void) -> SEXP {
        // SAFETY: R_tryCatch runs this on the main thread, with `d` the
        // `Call` below, under its own catch (an error does not pass this
        // frame, which owns nothing).
        let (c, r) = unsafe { (&*(d as *const Call), InR::assume()) };
        r.scoped(|r| r.eval(r.protect(r.lang2(c.f, c.x)), global_env()))
    }
    unsafe extern "C" fn handler(cond: SEXP, d: *mut c_void) -> SEXP {
        // SAFETY: `d` is the `failed` flag below.
        unsafe { *(d as *mut bool) = true };
        cond
    }
    let mut call = Call { f, x };
    let mut failed = false;
    let res = r.scoped(|r| {
        let conds = r.strings(&["error", "interrupt"]);
        // SAFETY: main thread, inside try_r (an error R_tryCatch itself
        // raises stops there); `call` and `failed` outlive the call, and
        // `body` and `handler` read them as the types given here.
        unsafe {
            R_tryCatch(
                body,
                &mut call as *mut Call as *mut c_void,
                conds,
                handler,
                &mut failed as *mut bool as *mut c_void,
                None,
                std::ptr::null_mut(),
            )
        }
    });
    if !failed {
        return Ok(res);
    }
    if super::lang::inherits(res, c"interrupt") {
        return Err("interrupted".into());
    }
    if is_list(res) && len(res) > 0 {
        let m = list_at(res, 0);
        if type_of(m) == STRSXP && len(m) > 0 {
            return Err(string_at(m, 0));
        }
    }
    Err("unknown R error".into())
}

fn global_env() -> SEXP {
    // SAFETY: a constant R sets up at start-up.
    unsafe { R_GlobalEnv }
}

fn class_name(cfg: SEXP, i: usize) -> String {
    string_at(list_at(cfg, 0), i)
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
    seen: HashMap<usize, (usize, usize)>,
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
fn keep(r: &InR, pdata: SEXP, x: SEXP) {
    r.scoped(|r| {
        r.protect(x);
        // SAFETY: `pdata` is the hooks' external pointer; a field read.
        let kept = unsafe { R_ExternalPtrProtected(pdata) };
        r.set_external_protected(pdata, r.cons(x, kept));
    })
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

fn reference(r: &InR, ci: usize, bi: usize) -> SEXP {
    let (mut a, mut b) = ([0u8; 20], [0u8; 20]);
    r.scoped(|r| r.strings(&[decimal(ci, &mut a), decimal(bi, &mut b)]))
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
    nil()
}

/// The hook state behind hook data `pdata`.
///
/// # Safety
/// `pdata` is the external pointer `serialize_with`/`unserialize_with`
/// made for a `T` that outlives the (un)serialization, which reaches it
/// only through the hook meanwhile.
unsafe fn hook_state<'a, T>(pdata: SEXP) -> &'a mut T {
    // SAFETY: the caller's promise.
    unsafe { &mut *(R_ExternalPtrAddr(pdata) as *mut T) }
}

unsafe extern "C" fn out_hook(s: SEXP, pdata: SEXP) -> SEXP {
    // SAFETY: R calls the hook with the data `serialize_with` gave it,
    // inside R_Serialize, inside try_r, over frames that own nothing.
    let (st, r) = unsafe { (hook_state::<OutHook>(pdata), InR::assume()) };
    if st.error.is_some() {
        return nil();
    }
    match out_hook_impl(&r, s, pdata, st) {
        Ok(v) => v,
        Err(m) => record(&mut st.error, m),
    }
}

fn out_hook_impl(r: &InR, s: SEXP, pdata: SEXP, st: &mut OutHook) -> Result<SEXP, String> {
    if let Some(&(ci, bi)) = st.seen.get(&(s as usize)) {
        return Ok(reference(r, ci, bi));
    }
    let classes = list_at(st.cfg, 0);
    let is_xptr = type_of(s) == EXTPTRSXP;
    for i in 0..len(classes) {
        let hit = with_str_at(classes, i, |cls| {
            if cls.is_empty() {
                return is_xptr;
            }
            // SAFETY: Rf_inherits reads `s`'s class attribute, allocating
            // nothing; `cls` is a CHARSXP's NUL-terminated bytes.
            unsafe { Rf_inherits(s, cls.as_ptr() as *const std::ffi::c_char) != Rboolean::FALSE }
        });
        if !hit {
            continue;
        }
        let raw = call_caught(r, list_at(list_at(st.cfg, 1), i), s)
            .map_err(|e| format!("serialization function for class '{}' failed: {e}", class_name(st.cfg, i)))?;
        if type_of(raw) != RAWSXP {
            return Err(format!("serialization function for class '{}' must return a raw vector", class_name(st.cfg, i)));
        }
        // Kept alive by the hook data until R_Serialize is done and the
        // blob has been copied into the frame.
        keep(r, pdata, raw);
        let bi = st.blobs;
        st.blobs += 1;
        st.seen.insert(s as usize, (i, bi));
        return Ok(reference(r, i, bi));
    }
    Ok(nil())
}

unsafe extern "C" fn in_hook(s: SEXP, pdata: SEXP) -> SEXP {
    // SAFETY: R calls the hook with the data `unserialize_with` gave it,
    // inside R_Unserialize, inside try_r, over frames that own nothing.
    let (st, r) = unsafe { (hook_state::<InHook>(pdata), InR::assume()) };
    if st.error.is_some() {
        return nil();
    }
    match in_hook_impl(&r, s, pdata, st) {
        Ok(v) => v,
        Err(m) => record(&mut st.error, m),
    }
}

fn in_hook_impl(r: &InR, s: SEXP, pdata: SEXP, st: &mut InHook) -> Result<SEXP, String> {
    let bad = || "malformed custom-serialized reference".to_string();
    if type_of(s) != STRSXP || len(s) != 2 {
        return Err(bad());
    }
    let num = |j: usize| -> Result<usize, String> {
        with_str_at(s, j, |b| std::str::from_utf8(b).ok().and_then(|t| t.parse().ok())).ok_or_else(bad)
    };
    let (ci, bi) = (num(0)?, num(1)?);
    if let Some(&v) = st.made.get(&bi) {
        return Ok(v);
    }
    if st.table.is_none() {
        st.table = Some(parse_trailer(st.data)?);
    }
    let &(start, n) = st.table.as_ref().and_then(|t| t.get(bi)).ok_or_else(bad)?;
    if ci >= len(list_at(st.cfg, 0)) {
        return Err("no unserialization function for this object: the serialization configs of the two sides differ".into());
    }
    let res = r.scoped(|r| {
        let raw = r.protect(r.alloc(SEXPTYPE::RAWSXP, n));
        if n > 0 {
            // SAFETY: a new raw vector of n bytes; the trailer's table puts
            // `start..start + n` inside `data`.
            unsafe { std::ptr::copy_nonoverlapping(st.data.as_ptr().add(start), RAW(raw), n) };
        }
        call_caught(r, list_at(list_at(st.cfg, 2), ci), raw)
    });
    let v = res.map_err(|e| format!("unserialization function for class '{}' failed: {e}", class_name(st.cfg, ci)))?;
    keep(r, pdata, v);
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
    let stp = &mut st as *mut OutHook;
    let write = |r: &InR| {
        let pdata = r.protect(r.external_ptr(stp as *mut c_void, nil(), nil()));
        let mut os = out_stream(bufp, Some(out_hook), pdata);
        r.serialize(obj, &mut os);
        // SAFETY: R is done with the stream and the hook: these are the
        // only references to `st` and `buf` now; `pdata` is the external
        // pointer made above (a field read).
        unsafe {
            if (*stp).blobs > 0 {
                append_blobs(&mut *bufp, R_ExternalPtrProtected(pdata));
            }
        }
        nil()
    };
    // SAFETY: the closure owns nothing with a destructor (raw pointers and
    // a C struct); `buf` and `st` outlive the call and are reached only
    // through the stream and the hook data until R_Serialize is done.
    let res = unsafe { try_r(write) };
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
/// nothing in R that can fail, and allocates only in Rust: safe to call
/// inside try_r (a Vec of pointers lives here, but nothing here longjmps).
fn append_blobs(buf: &mut Vec<u8>, mut list: SEXP) {
    let mut blobs = Vec::new();
    while !is_null(list) {
        // SAFETY: `list` is the pairlist `keep` built; field reads.
        let (car, cdr) = unsafe { (CAR(list), CDR(list)) };
        blobs.push(car);
        list = cdr;
    }
    blobs.reverse();
    let total: usize = blobs.iter().map(|&b| len(b)).sum();
    buf.reserve(total + 8 * blobs.len() + 16);
    for &b in &blobs {
        with_raw(b, |bytes| buf.extend_from_slice(bytes));
    }
    for &b in &blobs {
        buf.extend_from_slice(&(len(b) as u64).to_le_bytes());
    }
    buf.extend_from_slice(&(blobs.len() as u64).to_le_bytes());
    buf.extend_from_slice(MAGIC);
}

/// `unserialize_with` of a stream sent without its header (`Msg::Bare`):
/// this session's own header is put back first.
pub fn unserialize_bare_with(body: &[u8], cfg: SEXP) -> Result<Owned, String> {
    let h = super::plain::header().map_err(|_| "out of memory".to_string())?;
    let mut data = Vec::new();
    data.try_reserve_exact(h.len() + body.len()).map_err(|_| "out of memory".to_string())?;
    data.extend_from_slice(h);
    data.extend_from_slice(body);
    unserialize_with(&data, cfg)
}

/// `unserialize` with a custom serialization config (NULL for none). Every
/// caller turns a failure into an error value, so an R condition raised
/// inside is dropped here and only its message (when a hook raised it) kept.
pub fn unserialize_with(data: &[u8], cfg: SEXP) -> Result<Owned, String> {
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
    let inpp = &mut inp as *mut Input;
    let mut st = InHook { cfg, data, table: None, made: HashMap::new(), error: None };
    let stp = &mut st as *mut InHook;
    // SAFETY: as in `serialize_with`, for the input side.
    let res = unsafe {
        rooted(|r| {
            let pdata = r.protect(r.external_ptr(stp as *mut c_void, nil(), nil()));
            let mut is = in_stream(inpp, Some(in_hook), pdata);
            r.unserialize(&mut is)
        })
    };
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
