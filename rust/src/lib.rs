//! mirai's native core.
//!
//! - `url`, `frame`, `decoder`, `proto`, `transport`: the wire (NNG's SP
//!   format, pair1, over Unix sockets and TCP) and our message envelope.
//! - `auth`: the challenge-response proof of a daemon's secret (and the
//!   system's random bytes it and the rest use).
//! - `sched`: the scheduling state machine (pure, no I/O).
//! - `host`: the per-profile event loop thread that drives `sched`;
//!   `wqueue`: a connection's write queue there.
//! - `aio`: completion slots shared between that thread and R, and the
//!   doorbells that wait on several of them.
//! - `client`: the daemon's end of a connection.
//! - `spawn`: child processes we launch and reap.
//! - `threads`: the threads we start (signals blocked, panics contained).
//! - `r`: the R boundary (R's main thread only), see its module docs for
//!   why it is written against extendr-ffi rather than extendr-api.

pub mod aio;
pub mod auth;
pub mod client;
pub mod decoder;
pub mod frame;
pub mod host;
pub mod proto;
pub mod r;
pub mod rng;
pub mod sched;
pub mod spawn;
pub mod threads;
pub mod tls;
pub mod transport;
pub mod url;
pub mod wqueue;
pub mod ws;

use r::ffi::{DllInfo, R_CallMethodDef, R_forceSymbols, R_registerRoutines, R_useDynamicSymbols, Rboolean};
use std::ffi::{c_char, c_void};

macro_rules! routines {
    ($($module:ident :: $name:ident / $n:expr),* $(,)?) => {
        [
            $(R_CallMethodDef {
                name: concat!(stringify!($name), "\0").as_ptr() as *const c_char,
                fun: Some(unsafe { std::mem::transmute::<*const (), unsafe extern "C" fn() -> *mut c_void>(r::$module::$name as *const ()) }),
                numArgs: $n,
            },)*
        ]
    };
}

/// Called from the package's C entry point `R_init_mirai`, once, on R's main
/// thread.
///
/// # Safety
/// `dll` must be the DllInfo R passed to `R_init_mirai`, `protect`,
/// `eval` and `closure` the C routines of src/entrypoint.c.
#[no_mangle]
pub unsafe extern "C" fn mirai_rust_init(
    dll: *mut DllInfo,
    protect: r::call::ProtectFn,
    eval: *const c_void,
    closure: r::object::ClosureFn,
) {
    r::call::init_protect(protect);
    r::lang::init_guarded_eval(eval);
    r::object::init_closure(closure);
    threads::record_main_thread();
    // R errors are reported through R; Rust's default panic message would
    // only add noise (panics are caught and turned into R errors).
    std::panic::set_hook(Box::new(|_| {}));
    let _ = r::handle::init_tags(&[c"mirai_profile", c"mirai_aio", c"mirai_conn"]);
    let mut table = Vec::from(routines![
        profile::mirai_host_start / 10,
        profile::mirai_host_tlscert / 1,
        profile::mirai_tls_check / 2,
        profile::mirai_host_url / 1,
        profile::mirai_host_submit / 3,
        profile::mirai_host_broadcast / 3,
        profile::mirai_host_info / 1,
        profile::mirai_host_room / 1,
        profile::mirai_host_memory / 1,
        profile::mirai_host_close / 2,
        profile::mirai_host_launch / 6,
        profile::mirai_host_wait_ready / 3,
        profile::mirai_host_children / 2,
        profile::mirai_host_inject_fault / 1,
        profile::mirai_host_failure / 1,
        mirai::mirai_r_init / 2,
        mirai::mirai_resolved / 1,
        mirai::mirai_aio_collect / 2,
        mirai::mirai_aio_wait / 1,
        mirai::mirai_aio_cancel / 1,
        mirai::mirai_aio_data / 2,
        mirai::mirai_value / 1,
        mirai::mirai_race / 1,
        mirai::mirai_aio_done / 1,
        mirai::mirai_on_resolve / 2,
        node::mirai_node_send / 2,
        node::mirai_node_recv / 1,
        node::mirai_cluster_recv / 1,
        node::mirai_cluster_drop / 1,
        daemon::mirai_dial / 7,
        daemon::mirai_daemon_limits / 4,
        daemon::mirai_daemon_recv / 4,
        daemon::mirai_daemon_send / 3,
        daemon::mirai_daemon_linger / 1,
        daemon::mirai_daemon_current / 1,
        daemon::mirai_daemon_close / 1,
        daemon::mirai_daemon_init / 1,
        helpers::mirai_random_hex / 1,
        helpers::mirai_ip_addr / 0,
        helpers::mirai_next_stream / 1,
        helpers::mirai_rng_advance / 0,
        helpers::mirai_constants / 0,
        helpers::mirai_url_parts / 2,
    ]);
    // Defined in C (src/entrypoint.c): it needs setjmp and a C-level
    // calling handler.
    table.push(R_CallMethodDef {
        name: c"mirai_eval".as_ptr(),
        fun: Some(unsafe { std::mem::transmute::<*const c_void, unsafe extern "C" fn() -> *mut c_void>(eval) }),
        numArgs: 3,
    });
    table.push(R_CallMethodDef { name: std::ptr::null(), fun: None, numArgs: 0 });
    let table = Box::leak(table.into_boxed_slice());
    unsafe {
        R_registerRoutines(dll, std::ptr::null(), table.as_ptr(), std::ptr::null(), std::ptr::null());
        R_useDynamicSymbols(dll, Rboolean::FALSE);
        R_forceSymbols(dll, Rboolean::TRUE);
    }
}
