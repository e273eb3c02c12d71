//! Rust values behind R external pointers ("handles"): profiles, mirai and
//! daemon connections.
//!
//! A handle owns its value (boxed) until R collects it; the finalizer then
//! drops it, catching any panic. Each kind has its own tag, so a handle of
//! one kind is never read as another. A borrowed value's lifetime is tied
//! to the borrowed argument, which lives for the whole `.Call`.
//!
//! A handle also records the process that made it (`sys::fork`). In a
//! forked child a parent's handle is never dropped (its value's threads
//! are the parent's, and dropping it could lock what a parent's thread
//! held at the fork, or close or write to the parent's sockets): it is
//! left for the child's exit. The host's kinds (a profile, a mirai, a map,
//! a cluster's functions: `Tagged::REFUSED_IN_FORK`) are refused there
//! with an error saying why: their uses reach the parent's threads and
//! sockets (a wait reads them, a cancel writes to them). A daemon's
//! connection is not: a task's fork relays its messages over it.

use super::call::{try_r, RError};
use super::ffi::*;
use super::global::MainThread;
use super::value::*;
use crate::sys::fork;
use std::ffi::{c_void, CStr};

/// What a handle's pointer points to: its value, and the process that
/// made it.
struct Boxed<T> {
    pid: u32,
    v: T,
}

/// A type that lives behind an external pointer tagged `TAG`.
pub trait Tagged: Sized + 'static {
    const TAG: &'static CStr;
    /// Freed by the shared R function given to `init_r_finalizer` (which
    /// calls `free_handle`) rather than by a C finalizer: for a kind made
    /// by the hundred thousand (a mirai's), as a C finalizer costs R a raw
    /// vector per object for the function's address, 56 bytes of its heap.
    /// R runs the function at the end of a collection, as it would the C
    /// one, a little slower (an R call).
    const R_FINALIZED: bool = false;
    /// Refused in a process forked from the one that made it (`FORKED`).
    const REFUSED_IN_FORK: bool = false;
    /// Dropped as usual in a forked child, as the value's own `Drop`
    /// handles that (a daemon's connection: a task's fork that quits must
    /// not shut the connection down).
    const DROPPED_IN_FORK: bool = false;
}

static R_FINALIZER: MainThread<Option<SEXP>> = MainThread::new(None);

/// Each kind's tag symbol, once looked up: `handle()` runs several times
/// for every mirai and every cluster task, and `Rf_install` hashes the
/// name and compares strings on each call (under 1% of R's thread in
/// `clusterApplyLB()`, but for nothing).
static TAG_SYMS: MainThread<[Option<(std::any::TypeId, SEXP)>; 8]> = MainThread::new([None; 8]);

fn tag_symbol<T: Tagged>() -> SEXP {
    let kind = std::any::TypeId::of::<T>();
    if let Some(sym) = TAG_SYMS.with(|t| t.iter().flatten().find(|e| e.0 == kind).map(|e| e.1)) {
        return sym;
    }
    // SAFETY: the tag symbol was installed at load (`init_tags`), so this
    // finds it without allocating. Symbols are never collected.
    let sym = unsafe { Rf_install(T::TAG.as_ptr()) };
    TAG_SYMS.with(|t| {
        if let Some(free) = t.iter_mut().find(|e| e.is_none()) {
            *free = Some((kind, sym));
        }
    });
    sym
}

/// Records the R function that frees `R_FINALIZED` handles (preserved).
pub fn init_r_finalizer(f: SEXP) -> Result<(), RError> {
    // SAFETY: the closure owns nothing with a destructor.
    let f = unsafe { try_r(|r| r.preserve(f)) }?;
    R_FINALIZER.set(Some(f));
    Ok(())
}

/// Whether `s` is an external pointer tagged as a handle of kind T.
fn of_kind<T: Tagged>(s: SEXP) -> bool {
    // SAFETY: reading an external pointer's tag allocates nothing
    // (checked to be one first).
    type_of(s) == EXTPTRSXP && unsafe { R_ExternalPtrTag(s) } == tag_symbol::<T>()
}

/// Frees the value behind handle `s` of kind T now (the R finalizer of
/// `R_FINALIZED` kinds); nothing for one already freed or of another kind.
pub fn free_handle<T: Tagged>(s: SEXP) {
    if of_kind::<T>(s) {
        // SAFETY: an external pointer of T's kind, on R's main thread: what
        // `finalize` requires.
        unsafe { finalize::<T>(s) };
    }
}

unsafe extern "C" fn finalize<T: Tagged>(s: SEXP) {
    // SAFETY: R calls a finalizer once, on its main thread, with the
    // external pointer it was registered for (`new_handle`).
    let p = unsafe { R_ExternalPtrAddr(s) } as *mut Boxed<T>;
    if !p.is_null() {
        // SAFETY: as above; clearing allocates nothing.
        unsafe { R_ClearExternalPtr(s) };
        // SAFETY: `p` came from Box::into_raw in `make_handle` and, the
        // pointer now cleared, is reclaimed here once.
        let b = unsafe { Box::from_raw(p) };
        if b.pid != fork::pid() && !T::DROPPED_IN_FORK {
            // A forked child's copy of its parent's value: left alone.
            std::mem::forget(b);
            return;
        }
        // A panic must not unwind into R's garbage collector.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(b)));
    }
}

/// A new handle owning `v`. `prot` (an R object, or NULL) is kept alive
/// with it: R's GC owns it, and no Rust value ever holds a SEXP. If R
/// cannot allocate, `v` is dropped here and the R error comes back as Err.
pub fn new_handle<T: Tagged>(v: T, prot: SEXP) -> Result<Owned, RError> {
    make_handle(v, prot, T::R_FINALIZED)
}

/// `new_handle` with a C finalizer even for an `R_FINALIZED` kind: for a
/// handle made and dropped once per task while few are alive at once (a
/// cluster node's task, one per node at a time under parallel's calls).
/// R calls an R finalizer as a function, about a microsecond at the end of
/// a collection for each handle (1.7-2.4% of R's thread in
/// `clusterApplyLB()`, measured with perf; 0.75% with this); the C one
/// costs 56 bytes of R's heap while the handle lives.
pub fn new_short_handle<T: Tagged>(v: T, prot: SEXP) -> Result<Owned, RError> {
    make_handle(v, prot, false)
}

fn make_handle<T: Tagged>(v: T, prot: SEXP, r_finalized: bool) -> Result<Owned, RError> {
    let p = Box::into_raw(Box::new(Boxed { pid: fork::pid(), v }));
    // SAFETY: the closure owns nothing with a destructor (`p` is a raw
    // pointer).
    let made = unsafe {
        rooted(|r| {
            let h = r.protect(r.external_ptr(p as *mut c_void, tag_symbol::<T>(), prot));
            match R_FINALIZER.get() {
                Some(f) if r_finalized => r.register_r_finalizer(h, f),
                _ => r.register_finalizer(h, finalize::<T>),
            }
            h
        })
    };
    if made.is_err() {
        // SAFETY: the pointer was never handed to R (or its finalizer never
        // set, and the handle is garbage): `p` is still ours alone.
        drop(unsafe { Box::from_raw(p) });
    }
    made
}

/// Installs the tag symbols of every handle kind, once at load: afterwards
/// `Rf_install` on a tag only looks it up and cannot allocate (or fail).
pub fn init_tags(tags: &[&CStr]) -> Result<(), RError> {
    for t in tags {
        // SAFETY: the closure owns nothing with a destructor.
        unsafe { try_r(|r| r.install(t)) }?;
    }
    Ok(())
}

/// Something that holds a live R value: an argument (`SEXP`) or an
/// `Owned`. What a handle holds is borrowed from it.
pub trait Held {
    fn held(&self) -> &SEXP;
}

impl Held for SEXP {
    fn held(&self) -> &SEXP {
        self
    }
}

impl Held for Owned {
    fn held(&self) -> &SEXP {
        self.sexp_ref()
    }
}

/// The value behind handle `s`, for as long as `s` is borrowed.
pub fn handle<'a, T: Tagged>(s: &'a impl Held, what: &str) -> Result<&'a T, RError> {
    let s = s.held();
    if !of_kind::<T>(*s) {
        return Err(format!("`{what}` is not a valid mirai handle").into());
    }
    // SAFETY: an external pointer (checked).
    let p = unsafe { R_ExternalPtrAddr(*s) } as *const Boxed<T>;
    if p.is_null() {
        return Err(format!("`{what}` is no longer valid (it was closed or saved and reloaded)").into());
    }
    // SAFETY: a non-null pointer with T's tag was made by `make_handle::<T>`
    // from a Box<Boxed<T>>, which lives until the finalizer runs; that
    // cannot happen while `s`, an argument of the running .Call, is
    // reachable.
    let b = unsafe { &*p };
    if T::REFUSED_IN_FORK && b.pid != fork::pid() {
        return Err(RError::Msg(FORKED.into()));
    }
    Ok(&b.v)
}

/// Why a handle is refused in a forked child.
pub const FORKED: &str = "mirai's daemons and mirai belong to the process that set them up, not to this forked child \
     (of parallel::mclapply() or mcparallel(), say): set daemons() here, or use mirai_map() or a make_cluster() cluster in place of forking";

/// Whether `s` is a live handle of kind T made in another process (this
/// one is a forked child of it).
pub fn foreign<T: Tagged>(s: SEXP) -> bool {
    if !of_kind::<T>(s) {
        return false;
    }
    // SAFETY: an external pointer of T's kind (checked): null, or made by
    // `make_handle::<T>` and alive while `s` is reachable.
    let p = unsafe { R_ExternalPtrAddr(s) } as *const Boxed<T>;
    // SAFETY: as above, non-null.
    !p.is_null() && unsafe { (*p).pid } != fork::pid()
}

/// The R object kept with handle `s` (see `new_handle`).
pub fn kept(s: SEXP) -> SEXP {
    if type_of(s) != EXTPTRSXP {
        return nil();
    }
    // SAFETY: an external pointer (checked); a field read.
    unsafe { R_ExternalPtrProtected(s) }
}

/// Replaces the R object kept with handle `s`.
pub fn set_kept(s: SEXP, prot: SEXP) -> Result<(), RError> {
    if type_of(s) != EXTPTRSXP {
        return Err("internal error in mirai: a handle was expected".into());
    }
    // SAFETY: the closure owns nothing with a destructor.
    unsafe {
        try_r(|r| {
            r.set_external_protected(s, prot);
            nil()
        })
    }?;
    Ok(())
}
