//! The edge of every `.Call`: how Rust results become R values or R
//! conditions, how code that calls R is kept from longjmping over Rust, and
//! how the routines are registered.
//!
//! Three rules keep the boundary sound:
//! 1. only R's main thread calls R;
//! 2. R code that may raise an error (any allocation can) runs inside
//!    `try_r`, whose closure holds no value with a destructor: a longjmp
//!    then stops in C (src/entrypoint.c) and comes back as
//!    `Err(RError::Unwind(_))`, which carries what is needed to continue it.
//!    Calls that may longjmp are methods of `InR`, which only `try_r` hands
//!    out, so they cannot be made outside one;
//! 3. errors are raised by `entry` alone, after the body's values are gone.
//!
//! Routines are plain Rust functions of `SEXP` arguments returning a
//! `Result`; `Routine` makes the C entry point R calls for each (wrapping
//! it in `entry`) and counts its arguments from its signature, and
//! `routines!` (lib.rs) builds the registration table from a list of them.

use super::ffi::*;
use super::global::{MainThread, CHECKED};
use super::value::Owned;
use std::cell::Cell;
use std::ffi::{c_char, c_int, c_void, CStr};

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
        // (`try_r`); Caught holds a SEXP, so it is !Send and is dropped on
        // R's main thread, where it was made. Releasing allocates nothing.
        unsafe { R_ReleaseObject(self.0) }
    }
}

impl<T: Into<String>> From<T> for RError {
    fn from(s: T) -> Self {
        RError::Msg(s.into())
    }
}

pub type RResult<T = Owned> = Result<T, RError>;

/// What a routine hands back to R.
pub trait IntoR {
    fn into_r(self) -> SEXP;
}

impl IntoR for Owned {
    fn into_r(self) -> SEXP {
        self.into_sexp()
    }
}

/// A value that something else keeps alive for the rest of the call (an
/// argument, a preserved constant, NULL).
impl IntoR for SEXP {
    fn into_r(self) -> SEXP {
        self
    }
}

/// The message of the R error being raised: it must outlive the longjmp,
/// which skips the raising frame.
static ERRBUF: MainThread<[u8; 8192]> = MainThread::new([0; 8192]);

/// Runs a `.Call` body: panics become R errors, `Err` becomes an R error or
/// a re-raised condition, raised after the body's values are dropped. In
/// checked builds, a body that leaves a value rooted is an error too.
pub fn entry<T: IntoR>(f: impl FnOnce() -> RResult<T>) -> SEXP {
    let roots_before = if CHECKED { super::value::live_roots() } else { 0 };
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    let err = match r {
        Ok(Ok(v)) => {
            let s = v.into_r();
            match check_roots(roots_before) {
                None => return s,
                Some(e) => e,
            }
        }
        Ok(Err(e)) => e,
        Err(p) => RError::Msg(format!("internal error in mirai: {}", crate::sys::threads::panic_message(&*p))),
    };
    raise(err)
}

/// In checked builds: an error if the roots are not back to `before` (a
/// value outlived its call) or a root was released out of place.
fn check_roots(before: usize) -> Option<RError> {
    if !CHECKED {
        return None;
    }
    if let Some(why) = super::value::take_root_violation() {
        return Some(format!("internal error in mirai: {why}").into());
    }
    let now = super::value::live_roots();
    (now != before).then(|| format!("internal error in mirai: {} rooted value(s) outlived their .Call", now as isize - before as isize).into())
}

/// The token of the last unwind continued by `raise`, kept preserved until
/// the next one (see there).
static RAISED: MainThread<SEXP> = MainThread::new(std::ptr::null_mut());

fn raise(e: RError) -> ! {
    match e {
        RError::Unwind(c) => {
            // The token must stay reachable while R continues the unwind
            // (it runs on.exit code that may collect garbage): it stays
            // preserved, as the last one raised, until the next raise.
            let tok = c.0;
            std::mem::forget(c);
            let last = RAISED.replace(tok);
            if !last.is_null() {
                // SAFETY: `last` was preserved by the try_r that caught it
                // and has been continued already; main thread (a .Call).
                unsafe { R_ReleaseObject(last) };
            }
            // SAFETY: `tok` holds an unwind caught by R_UnwindProtect and
            // not yet continued. Every Rust value of this call has been
            // dropped or forgotten: the longjmp skips no destructor.
            unsafe { R_ContinueUnwind(tok) }
        }
        RError::Interrupt => {
            // SAFETY: R's main thread; R_CheckUserInterrupt then handles
            // the interrupt flag just set, longjmping over frames that own
            // nothing (the body's values are gone).
            unsafe {
                R_interrupts_pending = 1;
                R_CheckUserInterrupt();
            }
            // SAFETY: as above; reached only should R not act on it.
            unsafe { Rf_errorcall(R_NilValue, c"interrupted".as_ptr()) }
        }
        RError::Msg(m) => {
            // At most the buffer's worth, cut at a character boundary,
            // with no NULs (neither C strings nor R's CHARSXPs hold them).
            let (buf, n) = ERRBUF.with(|buf| {
                let m = m.replace('\0', "");
                let mut n = m.len().min(buf.len() - 1);
                while !m.is_char_boundary(n) {
                    n -= 1;
                }
                buf[..n].copy_from_slice(&m.as_bytes()[..n]);
                buf[n] = 0;
                (buf.as_ptr() as *const c_char, n)
            });
            drop(m);
            raise_in_r(buf, n);
            // SAFETY: `buf` is a NUL-terminated static buffer, alive after
            // the longjmp; nothing in this frame has a destructor left.
            unsafe { Rf_errorcall(R_NilValue, c"%s".as_ptr(), buf) }
        }
    }
}

/// Raises the error with message `msg` (`n` bytes of UTF-8) as the R side
/// raises its own: `mirai:::native_error(msg)` (R/errors.R) names the
/// user's call that led to this `.Call` (`daemons(url = "foo://x")`, not a
/// bare "Error:") and styles it with cli where installed. It longjmps and
/// does not return; should R fail to even make the call (out of memory),
/// the error for that is raised instead.
fn raise_in_r(msg: *const c_char, n: usize) {
    // SAFETY: called by `raise` alone, once the call's Rust values are
    // gone, so any longjmp from here (the intended one included) skips no
    // destructor. `msg` points at `n` valid bytes in a static buffer.
    unsafe {
        let s = Rf_protect(Rf_allocVector(SEXPTYPE::STRSXP, 1));
        SET_STRING_ELT(s, 0, Rf_mkCharLenCE(msg, n as c_int, cetype_t::CE_UTF8));
        let f = Rf_protect(Rf_lang3(Rf_install(c":::".as_ptr()), Rf_install(c"mirai".as_ptr()), Rf_install(c"native_error".as_ptr())));
        let call = Rf_protect(Rf_lang2(f, s));
        Rf_eval(call, R_BaseEnv);
        Rf_unprotect(3);
    }
}

/// The C helper in src/entrypoint.c that runs a body under R_UnwindProtect.
pub type ProtectFn =
    unsafe extern "C" fn(unsafe extern "C" fn(*mut c_void) -> SEXP, *mut c_void, SEXP, *mut SEXP) -> c_int;

static PROTECT: MainThread<Option<ProtectFn>> = MainThread::new(None);
/// A spare continuation token for the next `try_r`, preserved; null when
/// there is none (in use by a running `try_r`, or R could not allocate
/// one). A `try_r` takes the token out while it runs, so one that runs
/// inside another (R code evaluated in the first calls a routine that
/// calls the second) gets a token of its own.
static TOKEN: MainThread<SEXP> = MainThread::new(std::ptr::null_mut());

/// Records src/entrypoint.c's `mirai_protect`, once at load.
pub fn init_protect(f: ProtectFn) {
    PROTECT.set(Some(f));
    TOKEN.set(fresh_token());
}

/// A new preserved continuation token, or null if R could not allocate it:
/// made under R_ToplevelExec, so an allocation error returns here instead
/// of longjmping over Rust frames.
fn fresh_token() -> SEXP {
    unsafe extern "C" fn make(p: *mut c_void) {
        // SAFETY: run by R_ToplevelExec (an error ends it there) with `p`
        // the `t` below; this frame owns nothing.
        unsafe {
            let t = R_MakeUnwindCont();
            R_PreserveObject(t);
            *(p as *mut SEXP) = t;
        }
    }
    let mut t: SEXP = std::ptr::null_mut();
    // SAFETY: R's main thread (every caller is); `make` writes only `t`.
    unsafe { R_ToplevelExec(make, &mut t as *mut SEXP as *mut c_void) };
    t
}

/// The capability to call R where it may longjmp: lent by `try_r` to its
/// closure (and, through `InR::assume`, to R's callbacks that run inside
/// one). Values it protects stay protected until the closure returns;
/// `try_r` then pops exactly as many, so a body cannot unbalance R's
/// protect stack. Every method is one R API call.
pub struct InR {
    protected: Cell<c_int>,
}

// The methods below share one safety argument, stated once here rather
// than in every block: an `InR` exists only while a `try_r` closure (or an
// R callback running inside one) runs, on R's main thread, so an R error or
// interrupt raised by the call longjmps to try_r's C helper, over frames
// that own nothing with a destructor (try_r's contract); and every SEXP
// passed in is a live R object (rule of the layer: reachable from a .Call
// argument, a root, a preserved constant or this closure's protections).
// Each block notes what the call needs beyond that.
impl InR {
    /// # Safety
    /// Only for an R callback (a serialization hook, say) that R runs
    /// inside a `try_r` closure, from frames that own nothing with a
    /// destructor at any point where a method may longjmp. Its protections
    /// must be popped by the callback (`scoped`).
    pub unsafe fn assume() -> InR {
        InR { protected: Cell::new(0) }
    }

    /// Runs `f`, popping what it protected once it returns (a longjmp out
    /// of it pops them anyway: R resets its stack to try_r's context).
    pub fn scoped<T>(&self, f: impl FnOnce(&InR) -> T) -> T {
        let inner = InR { protected: Cell::new(0) };
        let v = f(&inner);
        inner.pop();
        v
    }

    fn pop(&self) {
        let n = self.protected.replace(0);
        if n > 0 {
            // SAFETY: pops exactly the `n` values this InR pushed, which
            // are on top: pushes made after them by calls nested inside
            // were popped by those calls (R's own discipline, and `scoped`
            // for ours). Allocates nothing.
            unsafe { Rf_unprotect(n) }
        }
    }

    /// Protects `s` until the closure returns.
    pub fn protect(&self, s: SEXP) -> SEXP {
        // SAFETY: see the impl. Errors only when the protect stack is full.
        unsafe { Rf_protect(s) };
        self.protected.set(self.protected.get() + 1);
        s
    }

    /// A new vector (unprotected).
    pub fn alloc(&self, t: SEXPTYPE, n: usize) -> SEXP {
        // SAFETY: see the impl; a length that does not fit is R's error.
        unsafe { Rf_allocVector(t, n as isize) }
    }

    /// A CHARSXP of `b` in UTF-8 (unprotected).
    pub fn mk_char(&self, b: &[u8]) -> SEXP {
        let n = b.len().min(i32::MAX as usize) as c_int;
        // SAFETY: see the impl; `b` is `n` readable bytes (R copies them).
        unsafe { Rf_mkCharLenCE(b.as_ptr() as *const c_char, n, cetype_t::CE_UTF8) }
    }

    /// A CHARSXP of `b` in encoding `ce` (unprotected).
    pub fn mk_char_ce(&self, b: &[u8], ce: cetype_t) -> SEXP {
        let n = b.len().min(i32::MAX as usize) as c_int;
        // SAFETY: see the impl; `b` is `n` readable bytes (R copies them;
        // an embedded NUL is R's error, caught).
        unsafe { Rf_mkCharLenCE(b.as_ptr() as *const c_char, n, ce) }
    }

    /// A character vector of `vals`, protected.
    pub fn strings<S: AsRef<[u8]>>(&self, vals: &[S]) -> SEXP {
        let v = self.protect(self.alloc(SEXPTYPE::STRSXP, vals.len()));
        for (i, s) in vals.iter().enumerate() {
            self.set_str(v, i, self.mk_char(s.as_ref()));
        }
        v
    }

    /// Sets element `i` of character vector `v` to CHARSXP `c`.
    pub fn set_str(&self, v: SEXP, i: usize, c: SEXP) {
        debug_assert!(super::value::type_of(v) == STRSXP && i < super::value::len(v));
        // SAFETY: see the impl; R checks type and index (an error is
        // caught) and allocates nothing.
        unsafe { SET_STRING_ELT(v, i as isize, c) }
    }

    /// Sets element `i` of list `v`.
    pub fn set_elt(&self, v: SEXP, i: usize, x: SEXP) {
        // SAFETY: see the impl; R checks type and index (an error is
        // caught) and allocates nothing.
        unsafe { SET_VECTOR_ELT(v, i as isize, x) };
    }

    pub fn set_attrib(&self, x: SEXP, sym: SEXP, v: SEXP) {
        // SAFETY: see the impl (names and class values are validated by R,
        // its errors caught).
        unsafe { Rf_setAttrib(x, sym, v) };
    }

    /// Attribute `sym` of `x` (pairlist names are made afresh).
    pub fn get_attrib(&self, x: SEXP, sym: SEXP) -> SEXP {
        // SAFETY: see the impl.
        unsafe { Rf_getAttrib(x, sym) }
    }

    pub fn install(&self, name: &CStr) -> SEXP {
        // SAFETY: see the impl; `name` is NUL-terminated.
        unsafe { Rf_install(name.as_ptr()) }
    }

    /// The symbol named by CHARSXP `c` (translated to the native encoding).
    pub fn install_char(&self, c: SEXP) -> SEXP {
        // SAFETY: see the impl; `c` is a CHARSXP (an element of a STRSXP).
        unsafe { Rf_installTrChar(c) }
    }

    pub fn scalar_int(&self, v: i32) -> SEXP {
        // SAFETY: see the impl.
        unsafe { Rf_ScalarInteger(v) }
    }

    pub fn scalar_real(&self, v: f64) -> SEXP {
        // SAFETY: see the impl.
        unsafe { Rf_ScalarReal(v) }
    }

    pub fn scalar_lgl(&self, v: bool) -> SEXP {
        // SAFETY: see the impl.
        unsafe { Rf_ScalarLogical(v as c_int) }
    }

    /// Keeps `s` alive for the session.
    pub fn preserve(&self, s: SEXP) -> SEXP {
        // SAFETY: see the impl.
        unsafe { R_PreserveObject(s) };
        s
    }

    /// Function `sym` as seen from `env`.
    pub fn find_fun(&self, sym: SEXP, env: SEXP) -> SEXP {
        // SAFETY: see the impl; an unbound function is R's error.
        unsafe { Rf_findFun(sym, env) }
    }

    /// The value bound to `sym` in `env`'s own frame (an active binding
    /// runs its function), or R_UnboundValue.
    pub fn find_var_in_frame(&self, env: SEXP, sym: SEXP) -> SEXP {
        // SAFETY: see the impl; `env` is an environment (callers check).
        unsafe { Rf_findVarInFrame(env, sym) }
    }

    pub fn define_var(&self, sym: SEXP, value: SEXP, env: SEXP) {
        // SAFETY: see the impl; `env` is an environment (callers check).
        unsafe { Rf_defineVar(sym, value, env) }
    }

    /// A new empty environment enclosed by `parent`.
    pub fn new_env(&self, parent: SEXP) -> SEXP {
        // SAFETY: see the impl.
        unsafe { R_NewEnv(parent, 0, 0) }
    }

    pub fn make_active_binding(&self, sym: SEXP, fun: SEXP, env: SEXP) {
        // SAFETY: see the impl; R checks that `fun` is a function.
        unsafe { R_MakeActiveBinding(sym, fun, env) }
    }

    pub fn eval(&self, expr: SEXP, env: SEXP) -> SEXP {
        // SAFETY: see the impl; whatever the R code does ends here or at
        // try_r's helper.
        unsafe { Rf_eval(expr, env) }
    }

    pub fn lang1(&self, a: SEXP) -> SEXP {
        // SAFETY: see the impl.
        unsafe { Rf_lang1(a) }
    }

    pub fn lang2(&self, a: SEXP, b: SEXP) -> SEXP {
        // SAFETY: see the impl.
        unsafe { Rf_lang2(a, b) }
    }

    pub fn lang3(&self, a: SEXP, b: SEXP, c: SEXP) -> SEXP {
        // SAFETY: see the impl.
        unsafe { Rf_lang3(a, b, c) }
    }

    pub fn lang4(&self, a: SEXP, b: SEXP, c: SEXP, d: SEXP) -> SEXP {
        // SAFETY: see the impl.
        unsafe { Rf_lang4(a, b, c, d) }
    }

    /// The call with head `head` and arguments the pairlist `args`.
    pub fn lcons(&self, head: SEXP, args: SEXP) -> SEXP {
        // SAFETY: see the impl.
        unsafe { Rf_lcons(head, args) }
    }

    /// The pairlist cell `(car . cdr)`.
    pub fn cons(&self, car: SEXP, cdr: SEXP) -> SEXP {
        // SAFETY: see the impl.
        unsafe { Rf_cons(car, cdr) }
    }

    /// Makes `cdr` the rest of pairlist cell `cell`.
    pub fn set_cdr(&self, cell: SEXP, cdr: SEXP) {
        // SAFETY: see the impl; `cell` is a pairlist cell, whose field
        // this sets with the write barrier; allocates nothing.
        unsafe { SETCDR(cell, cdr) };
    }

    /// `identical(a, b)` with numbers and NAs compared bit for bit and
    /// source references not ignored (flags of R_compute_identical).
    pub fn identical_strict(&self, a: SEXP, b: SEXP) -> bool {
        // SAFETY: see the impl; compares without allocating or evaluating.
        unsafe { R_compute_identical(a, b, 1 | 2 | 32) != Rboolean::FALSE }
    }

    /// A pairlist of `n` NULLs.
    pub fn alloc_pairlist(&self, n: usize) -> SEXP {
        // SAFETY: see the impl.
        unsafe { Rf_allocList(n as c_int) }
    }

    /// Sets the head and tag of pairlist cell `cell` (tag: NULL for none).
    pub fn set_cell(&self, cell: SEXP, car: SEXP, tag: SEXP) {
        // SAFETY: see the impl; `cell` is a pairlist cell (from
        // `alloc_pairlist`), whose fields these set, with the write barrier.
        unsafe {
            SETCAR(cell, car);
            if tag != R_NilValue {
                SET_TAG(cell, tag);
            }
        }
    }

    /// A list with the elements of pairlist `x`.
    pub fn pairlist_to_list(&self, x: SEXP) -> SEXP {
        // SAFETY: see the impl; `x` is a pairlist (callers check).
        unsafe { Rf_PairToVectorList(x) }
    }

    /// The names bound in `env`, sorted.
    pub fn env_names(&self, env: SEXP) -> SEXP {
        // SAFETY: see the impl; `env` is an environment (callers check).
        unsafe { R_lsInternal3(env, Rboolean::TRUE, Rboolean::TRUE) }
    }

    /// The names bound in `env`, in its frame's order (as `names(env)`).
    pub fn env_names_unsorted(&self, env: SEXP) -> SEXP {
        // SAFETY: see the impl; `env` is an environment (callers check).
        unsafe { R_lsInternal3(env, Rboolean::TRUE, Rboolean::FALSE) }
    }

    /// Removes `sym`'s binding from `env`'s own frame, as `rm()` does (an
    /// error for a locked environment).
    pub fn remove_var(&self, sym: SEXP, env: SEXP) {
        // SAFETY: see the impl; `env` is an environment (callers check).
        unsafe { R_removeVarFromFrame(sym, env) }
    }

    /// Whether `sym` is bound in `env`'s own frame (running nothing).
    pub fn exists_in_frame(&self, env: SEXP, sym: SEXP) -> bool {
        // SAFETY: see the impl; `env` is an environment (callers check).
        unsafe { R_existsVarInFrame(env, sym) != Rboolean::FALSE }
    }

    /// Whether `sym` is an active binding in `env` (an error if unbound).
    pub fn binding_is_active(&self, sym: SEXP, env: SEXP) -> bool {
        // SAFETY: see the impl; `env` is an environment (callers check).
        unsafe { R_BindingIsActive(sym, env) != Rboolean::FALSE }
    }

    /// An external pointer to `p` tagged `tag`, keeping `prot` alive.
    pub fn external_ptr(&self, p: *mut c_void, tag: SEXP, prot: SEXP) -> SEXP {
        // SAFETY: see the impl; R stores `p` without reading it.
        unsafe { R_MakeExternalPtr(p, tag, prot) }
    }

    /// Sets the object kept alive by external pointer `x`.
    pub fn set_external_protected(&self, x: SEXP, prot: SEXP) {
        // SAFETY: see the impl; `x` is an external pointer (callers check).
        unsafe { R_SetExternalPtrProtected(x, prot) }
    }

    /// Registers `f` as the finalizer of external pointer `x`, also run
    /// when R exits.
    pub fn register_finalizer(&self, x: SEXP, f: unsafe extern "C" fn(SEXP)) {
        // SAFETY: see the impl; R calls `f` with `x` once, on its main
        // thread.
        unsafe { R_RegisterCFinalizerEx(x, Some(f), Rboolean::TRUE) }
    }

    /// Has R call function `f` with `x` once `x` is unreachable, or at
    /// the session's end (as `register_finalizer`).
    pub fn register_r_finalizer(&self, x: SEXP, f: SEXP) {
        // SAFETY: see the impl; `f` is a preserved function.
        unsafe { R_RegisterFinalizerEx(x, f, Rboolean::TRUE) }
    }

    /// Serializes to output stream `st` (initialised, its callbacks ready).
    pub fn serialize(&self, x: SEXP, st: &mut R_outpstream_st) {
        // SAFETY: see the impl; `st` is a stream set up by
        // R_InitOutPStream whose data outlives this call.
        unsafe { R_Serialize(x, st) }
    }

    /// Unserializes from input stream `st` (initialised, callbacks ready).
    pub fn unserialize(&self, st: &mut R_inpstream_st) -> SEXP {
        // SAFETY: see the impl; as for `serialize`.
        unsafe { R_Unserialize(st) }
    }

    /// A C entry point another package registered (NULL if none).
    pub fn get_ccallable(&self, package: &CStr, name: &CStr) -> *const c_void {
        // SAFETY: see the impl; both are NUL-terminated.
        unsafe { R_GetCCallable(package.as_ptr(), name.as_ptr()) }
    }

    /// Raises an R error with message `msg`: it longjmps to try_r's helper.
    pub fn error(&self, msg: &CStr) -> ! {
        // SAFETY: see the impl; "%s" with a NUL-terminated string.
        unsafe { Rf_errorcall(R_NilValue, c"%s".as_ptr(), msg.as_ptr()) }
    }

    /// R's check for a user interrupt, which first runs R's pending events
    /// (time limits among them): an interrupt or an error raised there
    /// longjmps to try_r's helper.
    pub fn check_user_interrupt(&self) {
        // SAFETY: see the impl.
        unsafe { R_CheckUserInterrupt() }
    }

    /// Moves R's random number stream on by one exponential draw.
    pub fn advance_rng(&self) {
        // SAFETY: see the impl; R's documented bracket around its RNG.
        unsafe {
            GetRNGstate();
            exp_rand();
            PutRNGstate();
        }
    }
}

/// Runs `f` (which calls R through the `InR` it is lent). An R error or
/// interrupt inside stops at the C helper instead of longjmping through
/// Rust, and comes back as `Err(RError::Unwind(_))`: returning that from a
/// `.Call` body re-raises the original condition once the body's values
/// are dropped, whatever other protected calls ran in between; dropping it
/// instead swallows the condition. The SEXP `f` returns is unprotected;
/// whatever `f` protected through its `InR` is popped when it returns.
///
/// # Safety
/// `f` must own nothing with a destructor at any point where it calls an
/// `InR` method (a longjmp would skip that frame: undefined behaviour for
/// Rust), and must not call `try_r` itself (R code it evaluates may).
pub unsafe fn try_r<F: FnMut(&InR) -> SEXP>(mut f: F) -> Result<SEXP, RError> {
    struct Body<'a, F> {
        f: &'a mut F,
        r: &'a InR,
    }
    unsafe extern "C" fn body<F: FnMut(&InR) -> SEXP>(d: *mut c_void) -> SEXP {
        // SAFETY: `d` is the `Body` below, alive for the protected call.
        let b = unsafe { &mut *(d as *mut Body<F>) };
        (b.f)(b.r)
    }
    let protect = PROTECT.get().ok_or("mirai: native library not initialised by R")?;
    let mut token = TOKEN.replace(std::ptr::null_mut());
    if token.is_null() {
        token = fresh_token();
        if token.is_null() {
            return Err(RError::Msg("R is out of memory".into()));
        }
    }
    let r = InR { protected: Cell::new(0) };
    let mut b = Body { f: &mut f, r: &r };
    let mut out = super::value::nil();
    // SAFETY: main thread (a .Call, or one of R's callbacks); the helper
    // runs `body` under R_UnwindProtect with a preserved token and stops
    // any longjmp in its own C frame, so none crosses this one; `b` and
    // `out` outlive the call.
    let caught = unsafe { protect(body::<F>, &mut b as *mut Body<F> as *mut c_void, token, &mut out) } != 0;
    if caught {
        // R reset its protect stack on the way out: nothing to pop. The
        // caught unwind keeps the token R recorded it in.
        return Err(RError::Unwind(Caught(token)));
    }
    r.pop();
    // Back as the spare, unless a nested try_r left one there already.
    let spare = TOKEN.replace(token);
    if !spare.is_null() {
        // SAFETY: a preserved token no running try_r holds; main thread.
        unsafe { R_ReleaseObject(spare) };
    }
    Ok(out)
}

/// Checks for a user interrupt (Ctrl-C) as R's own loops do, never
/// longjmping over Rust: `Err(RError::Interrupt)` for one. R's check also
/// runs R's pending events, and those may raise an R error: R's own
/// "reached elapsed time limit" of `setTimeLimit()` is raised there. Such
/// an error comes back as `Err(RError::Unwind(_))`, so that, re-raised at
/// the `.Call`'s edge, it reaches the caller's handlers as the same error
/// (it was signalled with them in place; R_ToplevelExec would hide them
/// and swallow the error).
pub fn check_interrupt() -> Result<(), RError> {
    // SAFETY: R's own flags, read on its main thread (a .Call).
    let (pending, suspended) = unsafe { (R_interrupts_pending != 0, R_interrupts_suspended != Rboolean::FALSE) };
    // An interrupt already flagged is raised where it always was, by
    // `raise`, after the body's values are gone: the check below would
    // raise it too, but as an `Unwind`, which callers that stop on an
    // interrupt (the daemon's loop) could not tell from an error.
    if pending && !suspended {
        // The interrupt is signalled once this wait has returned, its
        // hook's guard gone: a calling handler of it that used what the wait
        // was for would get the wait's call's results. The wait ends here
        // either way, so its hook runs now, before any handler.
        if let Some(at) = live_wait_hook() {
            spend_wait_hook(at);
        }
        return Err(RError::Interrupt);
    }
    let hook = live_wait_hook();
    // SAFETY: the closure owns nothing with a destructor.
    unsafe {
        try_r(|r| {
            match hook {
                None => r.check_user_interrupt(),
                Some(at) => check_user_interrupt_then(at),
            }
            super::value::nil()
        })
    }?;
    Ok(())
}

/// What a wait must undo before any handler of the caller sees an error
/// raised in it (`check_interrupt`): a function and its argument, an R
/// object the wait's caller keeps alive.
type WaitErrorHook = (fn(SEXP), SEXP);

/// A wait's hook on the stack below: the hook, whether it has run (spent),
/// and, while its wait runs (`WaitErrorGuard::armed`), `WAIT_DEPTH` then
/// (the wait's `wait_interruptibly` checks one deeper). Unarmed, R code the
/// wait's caller runs beside it (a serialization hook) may wait too.
#[derive(Clone, Copy)]
struct HookEntry {
    hook: WaitErrorHook,
    spent: bool,
    armed_at: Option<usize>,
}

/// The hooks of the waits in progress, innermost last. A stack, not one
/// hook: a handler run by a wait (a relayed message's) may wait on
/// something else (another cluster), and an error there reaches handlers
/// that may use what the outer wait waits on.
static WAIT_ERROR_HOOKS: MainThread<Vec<HookEntry>> = MainThread::new(Vec::new());

/// How many `wait_interruptibly` calls and runs of its between-slices hook
/// are in progress (nested through handlers that R runs during a wait).
static WAIT_DEPTH: MainThread<usize> = MainThread::new(0);

/// While the guard lives, an R error raised by a wait's check for an
/// interrupt (a time limit running out) first runs `hook(arg)`, as the
/// innermost calling handler: before the caller's own, which may call back
/// into what the wait was for (a calling handler that retries on the same
/// cluster must not receive the interrupted call's results). The guard
/// takes its hook off the stack when it goes.
pub struct WaitErrorGuard(usize);

pub fn on_wait_error(hook: fn(SEXP), arg: SEXP) -> WaitErrorGuard {
    WaitErrorGuard(WAIT_ERROR_HOOKS.with(|s| {
        s.push(HookEntry { hook: (hook, arg), spent: false, armed_at: None });
        s.len() - 1
    }))
}

/// The hook of the wait whose check is running (`check_interrupt`), if it
/// set one and it has not run. Only that wait's: a wait with no hook (a
/// mirai's) inside a handler that an outer cluster wait runs, or in a
/// serialization hook its caller runs, must not drop that call's tasks, as
/// the handler may catch the error itself; if the error goes on to a
/// handler that uses that cluster, `run_wait_hook_if` finds the hook then.
/// Its place on the stack.
fn live_wait_hook() -> Option<usize> {
    let depth = WAIT_DEPTH.get();
    WAIT_ERROR_HOOKS.with(|s| {
        let at = s.len().checked_sub(1)?;
        let e = s[at];
        (!e.spent && e.armed_at.is_some_and(|d| d + 1 == depth)).then_some(at)
    })
}

/// Runs and spends the error hook of a wait in progress for what the caller
/// is about to use (`mine(arg)`), the innermost such that has not run: true
/// if one ran. A caller that uses what a wait further up the stack is
/// waiting on (a handler run by that wait, using the same cluster) would
/// otherwise receive what that wait's call was sent.
pub fn run_wait_hook_if(mine: impl Fn(SEXP) -> bool) -> bool {
    let n = WAIT_ERROR_HOOKS.with(|s| s.len());
    // `mine` reads R objects: not while the stack is lent.
    let found = (0..n).rev().find(|&at| {
        let e = WAIT_ERROR_HOOKS.with(|s| s.get(at).copied());
        e.is_some_and(|e| !e.spent && mine(e.hook.1))
    });
    if let Some(at) = found {
        spend_wait_hook(at);
    }
    found.is_some()
}

/// Marks the hook at place `at` spent, then runs it: so that a wait of the
/// handlers that run next, still within this wait, does not undo this
/// wait's caller's work again. (A place below the top stays put while
/// anything runs above it: guards come and go in order.)
fn spend_wait_hook(at: usize) {
    let Some((f, arg)) = WAIT_ERROR_HOOKS.with(|s| {
        s.get_mut(at).map(|e| {
            e.spent = true;
            e.hook
        })
    }) else {
        return;
    };
    // A panic must not unwind into R; the hook reports nothing.
    let _ = std::panic::catch_unwind(|| f(arg));
}

impl WaitErrorGuard {
    /// Runs `wait`, the wait this guard's hook is for: only an error its
    /// own checks raise runs the hook first (`live_wait_hook`).
    pub fn armed<T>(&self, wait: impl FnOnce() -> T) -> T {
        struct Disarm(usize);
        impl Drop for Disarm {
            fn drop(&mut self) {
                WAIT_ERROR_HOOKS.with(|s| {
                    if let Some(e) = s.get_mut(self.0) {
                        e.armed_at = None;
                    }
                })
            }
        }
        let depth = WAIT_DEPTH.get();
        WAIT_ERROR_HOOKS.with(|s| {
            if let Some(e) = s.get_mut(self.0) {
                e.armed_at = Some(depth);
            }
        });
        let _disarm = Disarm(self.0);
        wait()
    }
}

impl Drop for WaitErrorGuard {
    fn drop(&mut self) {
        let at = self.0;
        WAIT_ERROR_HOOKS.with(|s| s.truncate(at));
    }
}

/// R_CheckUserInterrupt with the hook at place `at` (of `WAIT_ERROR_HOOKS`)
/// as the innermost calling error handler.
/// Only inside `try_r`: the error goes on to the caller's handlers and
/// jumps as any other.
unsafe fn check_user_interrupt_then(at: usize) {
    unsafe extern "C" fn body(_: *mut c_void) -> SEXP {
        // SAFETY: R's main thread; a jump is stopped by the try_r this runs
        // in, and this frame owns nothing.
        unsafe { R_CheckUserInterrupt() };
        // SAFETY: R's constant.
        unsafe { R_NilValue }
    }
    unsafe extern "C" fn handler(_cond: SEXP, data: *mut c_void) -> SEXP {
        // SAFETY: `data` points at the hook's place on
        // `check_user_interrupt_then`'s frame, alive while R runs this
        // handler within the call below.
        spend_wait_hook(unsafe { *(data as *const usize) });
        // Returning declines: the error goes on to the caller's handlers.
        // SAFETY: R's constant.
        unsafe { R_NilValue }
    }
    let mut at = at;
    // SAFETY: both callbacks match R's types; `at` outlives the call.
    unsafe { R_withCallingErrorHandler(body, std::ptr::null_mut(), handler, &mut at as *mut usize as *mut c_void) };
}

/// Whether the user has asked to interrupt (Ctrl-C), for a wait that no
/// user code is waiting on (a daemon's, between tasks). R's pending events
/// run too, out of reach of the R handlers in place (the daemon loop's own,
/// which are not there for them): an R error they raise, e.g. a time limit
/// a task left set running out, is printed and dropped, not taken for an
/// interrupt. Never longjmps.
pub fn interrupt_pending_unattended() -> bool {
    unsafe extern "C" fn check(_: *mut c_void) {
        // SAFETY: run by R_ToplevelExec, which stops the longjmp of an
        // error or interrupt; this frame owns nothing.
        unsafe { R_CheckUserInterrupt() }
    }
    // SAFETY: R's own flags, read on its main thread (a .Call).
    let (pending, suspended) = unsafe { (R_interrupts_pending != 0, R_interrupts_suspended != Rboolean::FALSE) };
    if suspended {
        return false;
    }
    if pending {
        return true;
    }
    // SAFETY: main thread (callers are .Call bodies). Its result cannot
    // tell an error from an interrupt, and none was pending just above.
    unsafe { R_ToplevelExec(check, std::ptr::null_mut()) };
    false
}

/// Forgets an interrupt that arrived after the code it was meant for.
pub fn clear_interrupt() {
    // SAFETY: R's own flag, written on its main thread (a .Call), as R's
    // signal handler and R_CheckUserInterrupt do.
    unsafe { R_interrupts_pending = 0 };
}

/// Moves this session's RNG on by one exponential draw.
pub fn advance_rng() -> Result<(), RError> {
    // SAFETY: the closure owns nothing with a destructor.
    unsafe {
        try_r(|r| {
            r.advance_rng();
            super::value::nil()
        })
    }?;
    Ok(())
}

/// Waits in 100 ms slices on `ready(slice)` (true once done), checking for a
/// user interrupt between slices, and running the between-slices hook (set
/// with `set_slice_hook`: conditions relayed from running tasks are shown
/// while R waits) when `due()` says it has work. An error from the hook
/// (a user's handler that stops) ends the wait.
pub fn wait_interruptibly(mut ready: impl FnMut(std::time::Duration) -> bool) -> Result<(), RError> {
    let _deeper = Deeper::new();
    while !ready(std::time::Duration::from_millis(100)) {
        check_interrupt()?;
        run_slice_hook()?;
    }
    run_slice_hook()
}

/// Runs `wait_interruptibly`'s between-slices hook if it has work: also
/// called when a wait ends without blocking, so that a task's relayed
/// conditions are shown before its value is returned.
pub fn run_slice_hook() -> Result<(), RError> {
    if let Some((due, hook)) = SLICE_HOOK.get() {
        if due() {
            // The handlers it runs are a level down from the wait that ran
            // it, also after a wait that ended in its spin (`WAIT_DEPTH`).
            let _deeper = Deeper::new();
            hook()?;
        }
    }
    Ok(())
}

/// One level more of `WAIT_DEPTH` while it lives.
struct Deeper;

impl Deeper {
    fn new() -> Deeper {
        WAIT_DEPTH.set(WAIT_DEPTH.get() + 1);
        Deeper
    }
}

impl Drop for Deeper {
    fn drop(&mut self) {
        WAIT_DEPTH.set(WAIT_DEPTH.get() - 1);
    }
}

/// What `wait_interruptibly` runs between slices: a cheap check, and the
/// work to do when it says so.
type SliceHook = (fn() -> bool, fn() -> Result<(), RError>);

static SLICE_HOOK: super::global::MainThread<Option<SliceHook>> = super::global::MainThread::new(None);

/// Sets the between-slices hook of `wait_interruptibly` (R's main thread).
pub fn set_slice_hook(due: fn() -> bool, hook: fn() -> Result<(), RError>) {
    SLICE_HOOK.set(Some((due, hook)));
}

/// Writes a line to R's console (stderr), as `message()` would, from R's
/// main thread; never longjmps.
pub fn console_message(line: &str) {
    let mut c = line.replace('\0', "").into_bytes();
    c.extend_from_slice(b"\n\0");
    // SAFETY: main thread; `c` is NUL-terminated and passed through "%s".
    unsafe { REprintf(c"%s".as_ptr(), c.as_ptr() as *const c_char) };
}

// ---- registration -------------------------------------------------------

/// A `.Call` routine: a Rust function of `SEXP` arguments returning
/// `RResult<T>`. `Args` is the tuple of its argument types, so that each
/// arity is its own implementation and the compiler picks the one that
/// matches the function's signature: its argument count is read off the
/// signature, never written by hand.
pub trait Routine<Args>: Copy + 'static {
    /// The number of arguments R passes.
    const ARITY: c_int;
    /// The C entry point R calls: `entry` around the function.
    fn c_entry(self) -> DL_FUNC;
}

/// A function item's value, made from nothing: a function item type has
/// exactly one value and no bytes, and `Fn` cannot be implemented by hand,
/// so a zero-sized `F: Fn` is a function item or a closure that captures
/// nothing (`routines!` only passes paths to functions).
fn function_item<F: Copy>() -> F {
    const { assert!(std::mem::size_of::<F>() == 0, "a routine must be a function item") };
    // SAFETY: F is zero-sized (asserted at compile time), so reading one
    // from a dangling, aligned pointer reads no memory; and, as argued
    // above, its single value carries no data or invariant.
    unsafe { std::ptr::NonNull::<F>::dangling().as_ptr().read() }
}

macro_rules! impl_routine {
    ($n:expr; $($a:ident)*) => {
        impl<F, T> Routine<($(impl_routine!(@sexp $a),)*)> for F
        where
            F: Fn($(impl_routine!(@sexp $a)),*) -> RResult<T> + Copy + 'static,
            T: IntoR,
        {
            const ARITY: c_int = $n;
            fn c_entry(self) -> DL_FUNC {
                extern "C" fn call<F, T>($($a: SEXP),*) -> SEXP
                where
                    F: Fn($(impl_routine!(@sexp $a)),*) -> RResult<T> + Copy + 'static,
                    T: IntoR,
                {
                    let f = function_item::<F>();
                    entry(|| f($($a),*))
                }
                let c: extern "C" fn($(impl_routine!(@sexp $a)),*) -> SEXP = call::<F, T>;
                // SAFETY: R calls a routine through a pointer of the
                // generic type DL_FUNC, cast back to the arity it was
                // registered with, which is ARITY: this function's own.
                Some(unsafe { std::mem::transmute::<*const (), unsafe extern "C" fn() -> *mut c_void>(c as *const ()) })
            }
        }
    };
    (@sexp $a:ident) => { SEXP };
}

impl_routine!(0;);
impl_routine!(1; a);
impl_routine!(2; a b);
impl_routine!(3; a b c);
impl_routine!(4; a b c d);
impl_routine!(5; a b c d e);
impl_routine!(6; a b c d e f);
impl_routine!(7; a b c d e f g);
impl_routine!(8; a b c d e f g h);
impl_routine!(9; a b c d e f g h i);
impl_routine!(10; a b c d e f g h i j);

/// The registration of routine `f`, named `name`.
pub fn routine<A, F: Routine<A>>(name: &'static CStr, f: F) -> R_CallMethodDef {
    R_CallMethodDef { name: name.as_ptr(), fun: f.c_entry(), numArgs: F::ARITY }
}

/// A C entry point of three arguments (src/entrypoint.c's `mirai_eval`).
pub type CRoutine3 = unsafe extern "C" fn(SEXP, SEXP, SEXP) -> SEXP;

/// The registration of C routine `f`: its arity comes from its type.
pub fn c_routine3(name: &'static CStr, f: CRoutine3) -> R_CallMethodDef {
    // SAFETY: as in `c_entry`: R casts the pointer back to three SEXP
    // arguments, the arity registered here with it.
    let fun = Some(unsafe { std::mem::transmute::<CRoutine3, unsafe extern "C" fn() -> *mut c_void>(f) });
    R_CallMethodDef { name: name.as_ptr(), fun, numArgs: 3 }
}

/// Registers `table` (each routine once) with R for the package's DLL,
/// and allows only registered, symbol-named calls.
///
/// # Safety
/// `dll` must be the DllInfo R passed to `R_init_mirai`; main thread.
pub unsafe fn register(dll: *mut DllInfo, table: Vec<R_CallMethodDef>) {
    let mut table = table;
    table.push(R_CallMethodDef { name: std::ptr::null(), fun: None, numArgs: 0 });
    // R keeps the table's address: it must live as long as the DLL.
    let table = Box::leak(table.into_boxed_slice());
    // SAFETY: the caller's promise; `table` is null-terminated and never
    // freed. None of these can fail.
    unsafe {
        R_registerRoutines(dll, std::ptr::null(), table.as_ptr(), std::ptr::null(), std::ptr::null());
        R_useDynamicSymbols(dll, Rboolean::FALSE);
        R_forceSymbols(dll, Rboolean::TRUE);
    }
}
