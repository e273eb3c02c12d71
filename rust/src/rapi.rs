//! The slice of R's C API we call, plus the three rules that keep the FFI
//! boundary sound:
//! 1. only R's main thread calls anything here;
//! 2. code that may raise an R error runs inside `try_r`, so R's longjmp never
//!    crosses a Rust frame that owns something;
//! 3. R errors and interrupts are raised by `raise` only after every Rust
//!    value of the call has been dropped.

#![allow(non_snake_case, non_upper_case_globals, improper_ctypes, clashing_extern_declarations)]

pub use extendr_ffi::{R_inpstream_st, R_outpstream_st, R_pstream_format_t, Rboolean, SEXP};
pub type SEXPTYPE = std::ffi::c_uint;
use std::ffi::{c_char, c_int, c_void, CStr};

extern "C" {
    pub static R_NilValue: SEXP;
    pub static R_EmptyEnv: SEXP;
    pub static R_BaseEnv: SEXP;
    pub static R_UnboundValue: SEXP;
    pub static R_GlobalEnv: SEXP;
    pub static R_NaInt: c_int;
    pub static R_NamesSymbol: SEXP;
    pub static R_ClassSymbol: SEXP;
    pub static mut R_interrupts_pending: c_int;

    pub fn Rf_protect(s: SEXP) -> SEXP;
    pub fn Rf_unprotect(n: c_int);
    pub fn R_PreserveObject(s: SEXP);
    pub fn R_ReleaseObject(s: SEXP);
    pub fn Rf_allocVector(t: SEXPTYPE, n: isize) -> SEXP;
    pub fn Rf_xlength(s: SEXP) -> isize;
    pub fn TYPEOF(s: SEXP) -> c_int;
    pub fn INTEGER(s: SEXP) -> *mut c_int;
    pub fn LOGICAL(s: SEXP) -> *mut c_int;
    pub fn REAL(s: SEXP) -> *mut f64;
    pub fn RAW(s: SEXP) -> *mut u8;
    pub fn STRING_ELT(s: SEXP, i: isize) -> SEXP;
    pub fn SET_STRING_ELT(s: SEXP, i: isize, v: SEXP);
    pub fn VECTOR_ELT(s: SEXP, i: isize) -> SEXP;
    pub fn SET_VECTOR_ELT(s: SEXP, i: isize, v: SEXP) -> SEXP;
    pub fn R_CHAR(s: SEXP) -> *const c_char;
    pub fn Rf_mkCharLenCE(s: *const c_char, len: c_int, enc: c_int) -> SEXP;
    pub fn Rf_ScalarInteger(x: c_int) -> SEXP;
    pub fn Rf_ScalarLogical(x: c_int) -> SEXP;
    pub fn Rf_ScalarReal(x: f64) -> SEXP;
    pub fn Rf_setAttrib(s: SEXP, name: SEXP, val: SEXP) -> SEXP;
    pub fn Rf_install(s: *const c_char) -> SEXP;
    pub fn Rf_defineVar(sym: SEXP, val: SEXP, env: SEXP);
    pub fn R_MakeExternalPtr(p: *mut c_void, tag: SEXP, prot: SEXP) -> SEXP;
    pub fn R_ExternalPtrAddr(s: SEXP) -> *mut c_void;
    pub fn R_ExternalPtrTag(s: SEXP) -> SEXP;
    pub fn R_ClearExternalPtr(s: SEXP);
    pub fn R_RegisterCFinalizerEx(s: SEXP, f: unsafe extern "C" fn(SEXP), onexit: Rboolean);
    pub fn Rf_errorcall(call: SEXP, fmt: *const c_char, ...) -> !;
    pub fn R_CheckUserInterrupt();
    pub fn R_ToplevelExec(f: unsafe extern "C" fn(*mut c_void), data: *mut c_void) -> Rboolean;
    pub fn R_MakeUnwindCont() -> SEXP;
    pub fn R_NewEnv(enclos: SEXP, hash: c_int, size: c_int) -> SEXP;
    pub fn R_MakeActiveBinding(sym: SEXP, fun: SEXP, env: SEXP);
    pub fn Rf_findVarInFrame(env: SEXP, sym: SEXP) -> SEXP;
    pub fn Rf_findFun(sym: SEXP, env: SEXP) -> SEXP;
    pub fn Rf_allocSExp(t: SEXPTYPE) -> SEXP;
    pub fn SET_FORMALS(x: SEXP, v: SEXP);
    pub fn SET_BODY(x: SEXP, v: SEXP);
    pub fn SET_CLOENV(x: SEXP, v: SEXP);
    pub fn Rf_lang4(a: SEXP, b: SEXP, c: SEXP, d: SEXP) -> SEXP;
    pub fn R_ContinueUnwind(cont: SEXP) -> !;
    pub fn R_InitOutPStream(
        stream: *mut R_outpstream_st,
        data: *mut c_void,
        kind: R_pstream_format_t,
        version: c_int,
        out_char: Option<unsafe extern "C" fn(*mut R_outpstream_st, c_int)>,
        out_bytes: Option<unsafe extern "C" fn(*mut R_outpstream_st, *mut c_void, c_int)>,
        phook: Option<unsafe extern "C" fn(SEXP, SEXP) -> SEXP>,
        pdata: SEXP,
    );
    pub fn R_InitInPStream(
        stream: *mut R_inpstream_st,
        data: *mut c_void,
        kind: R_pstream_format_t,
        in_char: Option<unsafe extern "C" fn(*mut R_inpstream_st) -> c_int>,
        in_bytes: Option<unsafe extern "C" fn(*mut R_inpstream_st, *mut c_void, c_int)>,
        phook: Option<unsafe extern "C" fn(SEXP, SEXP) -> SEXP>,
        pdata: SEXP,
    );
    pub fn R_Serialize(s: SEXP, ops: *mut R_outpstream_st);
    pub fn R_Unserialize(ips: *mut R_inpstream_st) -> SEXP;
}

pub const NILSXP: c_int = 0;
pub const CLOSXP: SEXPTYPE = 3;
pub const ENVSXP: c_int = 4;
pub const LGLSXP: SEXPTYPE = 10;
pub const INTSXP: SEXPTYPE = 13;
pub const REALSXP: SEXPTYPE = 14;
pub const STRSXP: SEXPTYPE = 16;
pub const VECSXP: SEXPTYPE = 19;
pub const RAWSXP: SEXPTYPE = 24;
const CE_UTF8: c_int = 1;

/// An error to raise in R once the Rust side of a call has unwound.
pub enum RError {
    Msg(String),
    Interrupt,
    /// An R condition caught by `try_r`, to be continued (re-raised as is).
    Unwind,
}

impl<T: Into<String>> From<T> for RError {
    fn from(s: T) -> Self {
        RError::Msg(s.into())
    }
}

pub type RResult = Result<SEXP, RError>;

static mut ERRBUF: [u8; 8192] = [0; 8192];

/// Runs a `.Call` body: panics become R errors, `Err` becomes an R error or
/// a re-raised interrupt, raised after the body's values are dropped.
pub fn entry(f: impl FnOnce() -> RResult) -> SEXP {
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    let err = match r {
        Ok(Ok(s)) => return s,
        Ok(Err(e)) => e,
        Err(p) => {
            let m = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown".into());
            RError::Msg(format!("internal error in mirai: {m}"))
        }
    };
    unsafe { raise(err) }
}

unsafe fn raise(e: RError) -> ! {
    match e {
        RError::Unwind => R_ContinueUnwind(TOKEN),
        RError::Interrupt => {
            R_interrupts_pending = 1;
            R_CheckUserInterrupt();
            Rf_errorcall(R_NilValue, c"interrupted".as_ptr())
        }
        RError::Msg(m) => {
            let buf = &mut *std::ptr::addr_of_mut!(ERRBUF);
            let n = m.len().min(buf.len() - 1);
            buf[..n].copy_from_slice(&m.as_bytes()[..n]);
            buf[n] = 0;
            drop(m);
            Rf_errorcall(R_NilValue, c"%s".as_ptr(), buf.as_ptr() as *const c_char)
        }
    }
}

/// The C helper in src/entrypoint.c that runs a body under R_UnwindProtect.
pub type ProtectFn =
    unsafe extern "C" fn(unsafe extern "C" fn(*mut c_void) -> SEXP, *mut c_void, SEXP, *mut SEXP) -> c_int;

static mut PROTECT: Option<ProtectFn> = None;
/// The continuation token of the unwind held by `try_r`, preserved for the
/// session. One token serves nested calls: each interception re-records the
/// jump's target in it.
static mut TOKEN: SEXP = std::ptr::null_mut();

pub fn init_protect(f: ProtectFn) {
    unsafe {
        PROTECT = Some(f);
        TOKEN = R_MakeUnwindCont();
        R_PreserveObject(TOKEN);
    }
}

/// Runs `f` (which calls R). An R error or interrupt inside stops at the C
/// helper instead of longjmping through Rust, and comes back as
/// `Err(RError::Unwind)`: returning that from a `.Call` body re-raises the
/// original condition once the body's values are dropped; dropping it
/// instead swallows the condition. The SEXP `f` returns is unprotected.
pub fn try_r<F: FnMut() -> SEXP>(mut f: F) -> Result<SEXP, RError> {
    unsafe extern "C" fn body<F: FnMut() -> SEXP>(d: *mut c_void) -> SEXP {
        (*(d as *mut F))()
    }
    unsafe {
        let protect = (*std::ptr::addr_of!(PROTECT)).expect("mirai: native library not initialised by R");
        let mut out = R_NilValue;
        if protect(body::<F>, &mut f as *mut F as *mut c_void, TOKEN, &mut out) != 0 {
            return Err(RError::Unwind);
        }
        Ok(out)
    }
}

/// True if the user has asked to interrupt (Ctrl-C). Never longjmps.
pub fn interrupt_pending() -> bool {
    unsafe extern "C" fn check(_: *mut c_void) {
        R_CheckUserInterrupt();
    }
    unsafe { R_ToplevelExec(check, std::ptr::null_mut()) == Rboolean::FALSE }
}

/// Waits in 100 ms slices on `ready(slice)` (true once done), checking for a
/// user interrupt between slices.
pub fn wait_interruptibly(mut ready: impl FnMut(std::time::Duration) -> bool) -> Result<(), RError> {
    while !ready(std::time::Duration::from_millis(100)) {
        if interrupt_pending() {
            return Err(RError::Interrupt);
        }
    }
    Ok(())
}

pub fn mk_string(s: &str) -> SEXP {
    unsafe {
        let v = Rf_protect(Rf_allocVector(STRSXP, 1));
        SET_STRING_ELT(v, 0, Rf_mkCharLenCE(s.as_ptr() as *const c_char, s.len() as c_int, CE_UTF8));
        Rf_unprotect(1);
        v
    }
}

pub fn sexp_str(s: SEXP, what: &str) -> Result<String, RError> {
    unsafe {
        if TYPEOF(s) != STRSXP as c_int || Rf_xlength(s) < 1 {
            return Err(format!("`{what}` must be a character string").into());
        }
        Ok(CStr::from_ptr(R_CHAR(STRING_ELT(s, 0))).to_string_lossy().into_owned())
    }
}

pub fn sexp_f64(s: SEXP, what: &str) -> Result<f64, RError> {
    unsafe {
        match TYPEOF(s) as SEXPTYPE {
            REALSXP if Rf_xlength(s) >= 1 => Ok(*REAL(s)),
            INTSXP if Rf_xlength(s) >= 1 => {
                let v = *INTEGER(s);
                Ok(if v == R_NaInt { f64::NAN } else { v as f64 })
            }
            LGLSXP if Rf_xlength(s) >= 1 => {
                let v = *LOGICAL(s);
                Ok(if v == R_NaInt { f64::NAN } else { v as f64 })
            }
            _ => Err(format!("`{what}` must be numeric").into()),
        }
    }
}

pub fn is_null(s: SEXP) -> bool {
    unsafe { TYPEOF(s) == NILSXP }
}
