//! R serialization straight into an outgoing frame buffer, and back out of a
//! received one, with no intermediate raw vector. Native binary format
//! (version 3): both ends are mirai, and it skips XDR byte swapping, which
//! costs seconds on large numeric vectors. The handshake checks endianness.

use crate::rapi::*;
use std::ffi::{c_int, c_void};

unsafe extern "C" fn out_char(s: *mut R_outpstream_st, c: c_int) {
    let buf = &mut *((*s).data as *mut Vec<u8>);
    buf.push(c as u8);
}

unsafe extern "C" fn out_bytes(s: *mut R_outpstream_st, p: *mut c_void, n: c_int) {
    let buf = &mut *((*s).data as *mut Vec<u8>);
    buf.extend_from_slice(std::slice::from_raw_parts(p as *const u8, n as usize));
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
    let n = n as usize;
    let avail = inp.data.len().saturating_sub(inp.pos);
    let take = n.min(avail);
    std::ptr::copy_nonoverlapping(inp.data.as_ptr().add(inp.pos), p as *mut u8, take);
    if take < n {
        // Truncated input: zero-fill; R's own checks then fail cleanly.
        std::ptr::write_bytes((p as *mut u8).add(take), 0, n - take);
    }
    inp.pos += take;
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
