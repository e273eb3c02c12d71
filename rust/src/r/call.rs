//! The edge of every `.Call`: how Rust results become R values or R
//! conditions, and how code that calls R is kept from longjmping over Rust.
//!
//! Three rules keep the boundary sound:
//! 1. only R's main thread calls R;
//! 2. R code that may raise an error (any allocation can) runs inside
//!    `try_r`, whose closure holds no value with a destructor: a longjmp
//!    then stops in C (src/entrypoint.c) and comes back as
//!    `Err(RError::Unwind(_))`, which carries what is needed to continue it;
//! 3. errors are raised by `entry` alone, after the body's values are gone.

use super::ffi::*;
use std::ffi::{c_char, c_int, c_void};

/// An error to raise in R once the Rust side of a call has unwound.
pub enum RError {
    Msg(String),
    Interrupt,
    /// An R condition caught by `try_r`, to be continued (re-raised as is).
    Unwind(Caught),
}

/// A caught R unwind: the continuation token R recorded its target and
/// value in (preserved). R_UnwindProtect writes every successful body's
/// result into its token, so each caught unwind keeps the token it was
/// caught with, and `try_r` takes a fresh one: later protected calls
/// cannot change what continuing this one delivers. Dropped, it is
/// released (the condition is swallowed).
pub struct Caught(SEXP);

impl Drop for Caught {
    fn drop(&mut self) {
        // SAFETY: the token was preserved when it became this Caught's
        // (`try_r`), on R's main thread, where Caught values live and die.
        unsafe { R_ReleaseObject(self.0) }
    }
}

impl<T: Into<String>> From<T> for RError {
    fn from(s: T) -> Self {
        RError::Msg(s.into())
    }
}

pub type RResult = Result<SEXP, RError>;

static mut ERRBUF: [u8; 8192] = [0; 8192];

/// Runs a `.Call` body: panics become R errors, `Err` becomes an R error or
/// a re-raised condition, raised after the body's values are dropped.
pub fn entry(f: impl FnOnce() -> RResult) -> SEXP {
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    let err = match r {
        Ok(Ok(s)) => return s,
        Ok(Err(e)) => e,
        Err(p) => RError::Msg(format!("internal error in mirai: {}", crate::threads::panic_message(&*p))),
    };
    unsafe { raise(err) }
}

unsafe fn raise(e: RError) -> ! {
    match e {
        RError::Unwind(c) => {
            // The token must stay reachable while R continues the unwind
            // (it runs on.exit code that may collect garbage): it stays
            // preserved, as the last one raised, until the next raise.
            let tok = c.0;
            std::mem::forget(c);
            let last = std::ptr::addr_of_mut!(RAISED);
            if !(*last).is_null() {
                R_ReleaseObject(*last);
            }
            *last = tok;
            R_ContinueUnwind(tok)
        }
        RError::Interrupt => {
            R_interrupts_pending = 1;
            R_CheckUserInterrupt();
            Rf_errorcall(R_NilValue, c"interrupted".as_ptr())
        }
        RError::Msg(m) => {
            // The message must outlive the longjmp, which skips this frame:
            // at most the buffer's worth, cut at a character boundary, with
            // no NULs (neither C strings nor R's CHARSXPs hold them).
            let buf = &mut *std::ptr::addr_of_mut!(ERRBUF);
            let m = m.replace('\0', "");
            let mut n = m.len().min(buf.len() - 1);
            while !m.is_char_boundary(n) {
                n -= 1;
            }
            buf[..n].copy_from_slice(&m.as_bytes()[..n]);
            buf[n] = 0;
            drop(m);
            raise_in_r(buf.as_ptr() as *const c_char, n);
            Rf_errorcall(R_NilValue, c"%s".as_ptr(), buf.as_ptr() as *const c_char)
        }
    }
}

/// Raises the error with message `msg` (`n` bytes of UTF-8) as the R side
/// raises its own: `mirai:::native_error(msg)` (R/errors.R) names the
/// user's call that led to this `.Call` (`daemons(url = "foo://x")`, not a
/// bare "Error:") and styles it with cli where installed. It longjmps and
/// does not return; should R fail to even make the call (out of memory),
/// the error for that is raised instead.
unsafe fn raise_in_r(msg: *const c_char, n: usize) {
    let s = Rf_protect(Rf_allocVector(SEXPTYPE::STRSXP, 1));
    SET_STRING_ELT(s, 0, Rf_mkCharLenCE(msg, n as c_int, cetype_t::CE_UTF8));
    let f = Rf_protect(Rf_lang3(Rf_install(c":::".as_ptr()), Rf_install(c"mirai".as_ptr()), Rf_install(c"native_error".as_ptr())));
    let call = Rf_protect(Rf_lang2(f, s));
    Rf_eval(call, R_BaseEnv);
    Rf_unprotect(3);
}

/// The C helper in src/entrypoint.c that runs a body under R_UnwindProtect.
pub type ProtectFn =
    unsafe extern "C" fn(unsafe extern "C" fn(*mut c_void) -> SEXP, *mut c_void, SEXP, *mut SEXP) -> c_int;

static mut PROTECT: Option<ProtectFn> = None;
/// The continuation token the next `try_r` runs with, preserved; null
/// when a fresh one could not be made (out of memory), to be made again by
/// the next `try_r`. Calls to `try_r` do not nest.
static mut TOKEN: SEXP = std::ptr::null_mut();
/// The token of the last unwind continued by `raise`, kept preserved until
/// the next one (see there).
static mut RAISED: SEXP = std::ptr::null_mut();

pub fn init_protect(f: ProtectFn) {
    unsafe {
        PROTECT = Some(f);
        TOKEN = fresh_token();
    }
}

/// A new preserved continuation token, or null if R could not allocate it:
/// made under R_ToplevelExec, so an allocation error returns here instead
/// of longjmping over Rust frames.
fn fresh_token() -> SEXP {
    unsafe extern "C" fn make(p: *mut c_void) {
        let t = R_MakeUnwindCont();
        R_PreserveObject(t);
        *(p as *mut SEXP) = t;
    }
    let mut t: SEXP = std::ptr::null_mut();
    // SAFETY: R's main thread (every caller is); `make` writes only `t`.
    unsafe { R_ToplevelExec(make, &mut t as *mut SEXP as *mut c_void) };
    t
}

/// Runs `f` (which calls R). An R error or interrupt inside stops at the C
/// helper instead of longjmping through Rust, and comes back as
/// `Err(RError::Unwind(_))`: returning that from a `.Call` body re-raises
/// the original condition once the body's values are dropped, whatever
/// other protected calls ran in between; dropping it instead swallows the
/// condition. `f` must own nothing with a destructor (the longjmp skips its
/// frame) and must not call `try_r` itself. The SEXP `f` returns is
/// unprotected.
pub fn try_r<F: FnMut() -> SEXP>(mut f: F) -> Result<SEXP, RError> {
    unsafe extern "C" fn body<F: FnMut() -> SEXP>(d: *mut c_void) -> SEXP {
        (*(d as *mut F))()
    }
    unsafe {
        let protect = (*std::ptr::addr_of!(PROTECT)).expect("mirai: native library not initialised by R");
        let token = std::ptr::addr_of_mut!(TOKEN);
        if (*token).is_null() {
            *token = fresh_token();
            if (*token).is_null() {
                return Err(RError::Msg("R is out of memory".into()));
            }
        }
        let mut out = R_NilValue;
        if protect(body::<F>, &mut f as *mut F as *mut c_void, *token, &mut out) != 0 {
            // The caught unwind keeps its token; the next call gets a new one.
            let caught = Caught(*token);
            *token = fresh_token();
            return Err(RError::Unwind(caught));
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

/// Forgets an interrupt that arrived after the code it was meant for.
pub fn clear_interrupt() {
    unsafe { R_interrupts_pending = 0 };
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

/// Writes a line to R's console (stderr), as `message()` would, from R's
/// main thread; never longjmps.
pub fn console_message(line: &str) {
    let mut c = line.replace('\0', "").into_bytes();
    c.extend_from_slice(b"\n\0");
    unsafe { REprintf(c"%s".as_ptr(), c.as_ptr() as *const c_char) };
}


