//! mirai's native core.
//!
//! - `url`, `frame`, `decoder`, `proto`, `transport`: the wire (NNG's SP
//!   format, pair1, over Unix sockets and TCP) and our message envelope.
//! - `auth`: the challenge-response proof of a daemon's secret.
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

use r::call::{c_routine3, register, routine, CRoutine3, ProtectFn};
use r::ffi::{DllInfo, R_CallMethodDef};
use r::object::ClosureFn;

/// The registration table of the `.Call` routines, each named after its
/// function, with the arity its signature has (see `r::call::Routine`).
macro_rules! routines {
    ($($module:ident :: $name:ident),* $(,)?) => {
        vec![$(routine(
            // The name R knows it by: the function's own.
            match std::ffi::CStr::from_bytes_with_nul(concat!(stringify!($name), "\0").as_bytes()) {
                Ok(c) => c,
                Err(_) => unreachable!(),
            },
            r::$module::$name,
        )),*]
    };
}

/// Called from the package's C entry point `R_init_mirai`, once, on R's main
/// thread.
///
/// # Safety
/// `dll` must be the DllInfo R passed to `R_init_mirai`; `protect`, `eval`
/// and `closure` the C routines of src/entrypoint.c.
#[no_mangle]
pub unsafe extern "C" fn mirai_rust_init(dll: *mut DllInfo, protect: ProtectFn, eval: CRoutine3, closure: ClosureFn) {
    threads::record_main_thread();
    r::call::init_protect(protect);
    r::lang::init_guarded_eval(eval);
    r::object::init_closure(closure);
    // R errors are reported through R; Rust's default panic message would
    // only add noise (panics are caught and turned into R errors).
    std::panic::set_hook(Box::new(|_| {}));
    let _ = r::handle::init_tags(&[c"mirai_profile", c"mirai_aio", c"mirai_conn"]);
    let mut table: Vec<R_CallMethodDef> = routines![
        profile::mirai_host_start,
        profile::mirai_host_tlscert,
        profile::mirai_tls_check,
        profile::mirai_host_url,
        profile::mirai_host_submit,
        profile::mirai_host_broadcast,
        profile::mirai_host_info,
        profile::mirai_host_room,
        profile::mirai_host_memory,
        profile::mirai_host_close,
        profile::mirai_host_launch,
        profile::mirai_host_wait_ready,
        profile::mirai_host_children,
        mirai::mirai_r_init,
        mirai::mirai_resolved,
        mirai::mirai_aio_collect,
        mirai::mirai_aio_wait,
        mirai::mirai_aio_cancel,
        mirai::mirai_aio_data,
        mirai::mirai_value,
        mirai::mirai_race,
        mirai::mirai_aio_done,
        mirai::mirai_on_resolve,
        node::mirai_node_send,
        node::mirai_node_recv,
        node::mirai_cluster_recv,
        node::mirai_cluster_drop,
        daemon::mirai_dial,
        daemon::mirai_daemon_limits,
        daemon::mirai_daemon_recv,
        daemon::mirai_daemon_send,
        daemon::mirai_daemon_linger,
        daemon::mirai_daemon_current,
        daemon::mirai_daemon_close,
        daemon::mirai_daemon_init,
        helpers::mirai_random_hex,
        helpers::mirai_ip_addr,
        helpers::mirai_next_stream,
        helpers::mirai_rng_advance,
        helpers::mirai_exit_codes,
    ];
    // Test-only routines (fault injection): built only with the
    // `test-hooks` feature, which tools/test.sh turns on for its install
    // (MIRAI_TEST_HOOKS=1, read by src/Makevars).
    #[cfg(feature = "test-hooks")]
    table.extend(routines![profile::mirai_host_inject_fault]);
    // Defined in C (src/entrypoint.c): it needs setjmp and a C-level
    // calling handler.
    table.push(c_routine3(c"mirai_eval", eval));
    // SAFETY: the caller's promise about `dll`; R's main thread.
    unsafe { register(dll, table) };
}
