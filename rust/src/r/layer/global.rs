//! Statics that only R's main thread touches: the C entry points recorded
//! at load, cached symbols and preserved constants, and the layer's own
//! bookkeeping (roots, the promise registry, continuation tokens). Every
//! one lives in a `MainThread` or `MainOnce` cell; there is no `static mut`
//! in the layer.
//!
//! In checked builds (debug, or the `test-hooks` feature that
//! tools/test.sh builds the package with) every access asserts that it is
//! made on R's main thread, as recorded at load
//! (`threads::record_main_thread`). Release builds trust the rule: these
//! cells are reached only from `.Call`s and R's callbacks, which R makes on
//! its main thread.

use super::call::RError;
use std::cell::{Cell, UnsafeCell};

/// Whether this build checks the boundary's rules at run time (debug
/// builds, and the test build of the package).
pub const CHECKED: bool = cfg!(any(debug_assertions, feature = "test-hooks"));

/// Asserts, in checked builds, that the caller is R's main thread.
#[inline(always)]
pub fn assert_main_thread(what: &str) {
    if CHECKED {
        assert!(crate::sys::threads::on_main_thread(), "mirai: {what} touched off R's main thread");
    }
}

/// A value that R's main thread alone reads and writes.
pub struct MainThread<T> {
    value: UnsafeCell<T>,
    /// Set while `with` lends the value out: a re-entrant `with` (a
    /// finalizer reaching the same cell, say) is refused rather than
    /// handed a second `&mut`.
    lent: Cell<bool>,
}

// SAFETY: the cells are reached only from R's main thread (asserted in
// checked builds), so no two threads ever share one; `lent` keeps that
// one thread from holding two `&mut` to the value.
unsafe impl<T> Sync for MainThread<T> {}

impl<T> MainThread<T> {
    pub const fn new(v: T) -> Self {
        MainThread { value: UnsafeCell::new(v), lent: Cell::new(false) }
    }

    /// Runs `f` with the value. `f` must not reach this cell again (it
    /// would panic); keep R calls that may run arbitrary code (allocation,
    /// evaluation) out of it.
    pub fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        assert_main_thread("a main-thread static");
        assert!(!self.lent.replace(true), "mirai: a main-thread static was re-entered");
        struct Return<'a>(&'a Cell<bool>);
        impl Drop for Return<'_> {
            fn drop(&mut self) {
                self.0.set(false);
            }
        }
        let _back = Return(&self.lent);
        // SAFETY: one thread (above), and `lent` was false: no other
        // reference to the value exists until `_back` clears it.
        f(unsafe { &mut *self.value.get() })
    }
}

impl<T: Copy> MainThread<T> {
    pub fn get(&self) -> T {
        assert_main_thread("a main-thread static");
        assert!(!self.lent.get(), "mirai: a main-thread static was read while lent");
        // SAFETY: one thread, and no `&mut` is lent out (checked above):
        // a plain copy out of the cell.
        unsafe { *self.value.get() }
    }

    pub fn set(&self, v: T) {
        assert_main_thread("a main-thread static");
        assert!(!self.lent.get(), "mirai: a main-thread static was written while lent");
        // SAFETY: as in `get`: no reference into the cell is alive.
        unsafe { *self.value.get() = v }
    }

    /// Sets the value and returns the old one.
    pub fn replace(&self, v: T) -> T {
        let old = self.get();
        self.set(v);
        old
    }
}

/// A value made once, on first use, by R's main thread, and never changed
/// after (cached symbols, preserved constants).
pub struct MainOnce<T> {
    value: UnsafeCell<Option<T>>,
    making: Cell<bool>,
}

// SAFETY: as for MainThread: one thread. The value is written once, while
// no reference to it exists (`making` refuses re-entry during `make`),
// and only read afterwards, so the `&'static T` handed out stay valid.
unsafe impl<T> Sync for MainOnce<T> {}

impl<T> Default for MainOnce<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> MainOnce<T> {
    pub const fn new() -> Self {
        MainOnce { value: UnsafeCell::new(None), making: Cell::new(false) }
    }

    /// The value, made by `make` the first time it succeeds.
    pub fn get(&'static self, make: impl FnOnce() -> Result<T, RError>) -> Result<&'static T, RError> {
        assert_main_thread("a main-thread constant");
        // SAFETY: one thread; once Some the value is never written again,
        // so this shared reference cannot be invalidated.
        if let Some(v) = unsafe { (*self.value.get()).as_ref() } {
            return Ok(v);
        }
        if self.making.replace(true) {
            return Err("internal error in mirai: a constant is needed to make itself".into());
        }
        let made = make();
        self.making.set(false);
        let v = made?;
        // SAFETY: the cell is still None (nothing set it while `make` ran:
        // re-entry is refused above), so no reference into it exists.
        unsafe { *self.value.get() = Some(v) };
        // SAFETY: just written, never written again.
        unsafe { (*self.value.get()).as_ref() }.ok_or_else(|| "internal error in mirai: constants unavailable".into())
    }
}
