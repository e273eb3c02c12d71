//! mirai's native core.
//!
//! - `url`, `frame`, `decoder`, `proto`, `transport`: the wire (NNG's SP
//!   format, pair1, over Unix sockets and TCP) and our message envelope.
//! - `sched`: the scheduling state machine (pure, no I/O).
//! - `host`: the per-profile event loop thread that drives `sched`.
//! - `aio`: completion slots shared between that thread and R.
//! - `client`: the daemon's end of a connection.
//! - `spawn`: child processes we launch and reap.
//! - `rapi`, `serial`, `api`: the R boundary (R's main thread only).
//!
//! The `.Call` layer is written against R's C API directly (declarations
//! from extendr-ffi plus `rapi`) rather than through extendr-api's macros:
//! every entry point needs exact control over when an R error or interrupt
//! longjmps, which must be after all Rust values of the call are dropped.

pub mod aio;
pub mod api;
pub mod client;
pub mod decoder;
pub mod frame;
pub mod host;
pub mod proto;
pub mod rng;
pub mod rapi;
pub mod sched;
pub mod serial;
pub mod spawn;
pub mod threads;
pub mod transport;
pub mod url;

use std::ffi::{c_char, c_int, c_void};

#[repr(C)]
struct CallMethodDef {
    name: *const c_char,
    fun: *const c_void,
    num_args: c_int,
}

extern "C" {
    fn R_registerRoutines(
        info: *mut c_void,
        c: *const c_void,
        call: *const CallMethodDef,
        f: *const c_void,
        e: *const c_void,
    ) -> c_int;
    fn R_useDynamicSymbols(info: *mut c_void, value: c_int) -> c_int;
    fn R_forceSymbols(info: *mut c_void, value: c_int) -> c_int;
}

macro_rules! routines {
    ($($name:ident / $n:expr),* $(,)?) => {
        [
            $(CallMethodDef {
                name: concat!(stringify!($name), "\0").as_ptr() as *const c_char,
                fun: api::$name as *const c_void,
                num_args: $n,
            },)*
            CallMethodDef { name: std::ptr::null(), fun: std::ptr::null(), num_args: 0 },
        ]
    };
}

/// Called from the package's C entry point `R_init_mirai`.
#[no_mangle]
pub extern "C" fn mirai_rust_init(dll: *mut c_void, protect: rapi::ProtectFn, eval: *const c_void) {
    rapi::init_protect(protect);
    threads::record_main_thread();
    // R errors are reported through R; Rust's default panic message would
    // only add noise (panics are caught and turned into R errors).
    std::panic::set_hook(Box::new(|_| {}));
    let mut table = Vec::from(routines![
        mirai_host_start / 8,
        mirai_host_url / 1,
        mirai_host_submit / 3,
        mirai_host_broadcast / 3,
        mirai_host_info / 1,
        mirai_host_room / 1,
        mirai_host_memory / 1,
        mirai_host_close / 2,
        mirai_host_launch / 6,
        mirai_host_wait_ready / 3,
        mirai_host_children / 2,
        mirai_host_inject_fault / 1,
        mirai_host_failure / 1,
        mirai_aio_collect / 2,
        mirai_aio_wait / 1,
        mirai_aio_cancel / 1,
        mirai_aio_data / 2,
        mirai_value / 1,
        mirai_r_init / 2,
        mirai_race / 1,
        mirai_dial / 5,
        mirai_daemon_limits / 4,
        mirai_daemon_recv / 1,
        mirai_daemon_send / 3,
        mirai_daemon_linger / 2,
        mirai_daemon_current / 1,
        mirai_daemon_close / 1,
        mirai_random_hex / 1,
        mirai_ip_addr / 0,
        mirai_next_stream / 1,
        mirai_rng_advance / 0,
        mirai_daemon_init / 1,
    ]);
    // Defined in C (src/entrypoint.c): it needs setjmp and a C-level
    // calling handler.
    let end = table.len() - 1;
    table.insert(end, CallMethodDef { name: c"mirai_eval".as_ptr(), fun: eval, num_args: 3 });
    let table = Box::leak(table.into_boxed_slice());
    unsafe {
        R_registerRoutines(dll, std::ptr::null(), table.as_ptr(), std::ptr::null(), std::ptr::null());
        R_useDynamicSymbols(dll, 0);
        R_forceSymbols(dll, 1);
    }
}
