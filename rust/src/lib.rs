//! mirai's native core, in layers (each imports only from layers below it):
//!
//! - `sys`: the operating system: child processes we launch and reap,
//!   threads we start (signals blocked, panics contained), random bytes and
//!   interface addresses.
//! - `wire`: what crosses a connection: URLs, NNG's SP framing (pair1) and
//!   our message envelope, the authentication proof, TLS and WebSocket, and
//!   the transport stacks that carry them.
//! - `host`: the host's side: the scheduling state machine (pure, no I/O),
//!   the per-profile event loop that drives it, write queues, completion
//!   slots shared with R, RNG streams for daemons, and the pool of local
//!   daemons (replaced when they die).
//! - `daemon`: the daemon's end of a connection.
//! - `r`: the R boundary (R's main thread only): an unsafe `layer` over R's
//!   C API and safe `glue`, one module per R area; see its module docs for
//!   why it is written against extendr-ffi rather than extendr-api.

pub mod daemon;
pub mod host;
pub mod r;
pub mod sys;
pub mod wire;

use r::layer::call::{c_routine3, register, routine, CRoutine3, ProtectFn};
use r::layer::ffi::{DllInfo, R_CallMethodDef};
use r::layer::object::ClosureFn;

/// The registration table of the `.Call` routines, each named after its
/// function, with the arity its signature has (see `r::layer::call::Routine`).
macro_rules! routines {
    ($($module:ident :: $name:ident),* $(,)?) => {
        vec![$(routine(
            // The name R knows it by: the function's own.
            match std::ffi::CStr::from_bytes_with_nul(concat!(stringify!($name), "\0").as_bytes()) {
                Ok(c) => c,
                Err(_) => unreachable!(),
            },
            r::glue::$module::$name,
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
    sys::threads::record_main_thread();
    sys::fork::init();
    r::layer::call::init_protect(protect);
    r::layer::lang::init_guarded_eval(eval);
    r::layer::object::init_closure(closure);
    // R errors are reported through R; Rust's default panic message would
    // only add noise (panics are caught and turned into R errors).
    std::panic::set_hook(Box::new(|_| {}));
    let _ = r::layer::handle::init_tags(&[c"mirai_profile", c"mirai_aio", c"mirai_conn", c"mirai_map", c"mirai_node_funs"]);
    let mut table: Vec<R_CallMethodDef> = routines![
        profile::mirai_aio_free,
        profile::mirai_host_start,
        profile::mirai_host_tlscert,
        profile::mirai_tls_check,
        profile::mirai_host_url,
        profile::mirai_host_submit,
        profile::mirai_submit_fast,
        profile::mirai_host_broadcast,
        profile::mirai_host_info,
        profile::mirai_host_room,
        profile::mirai_host_memory,
        profile::mirai_host_sent,
        profile::mirai_host_close,
        profile::mirai_host_foreign,
        profile::mirai_host_launch,
        profile::mirai_host_wait_ready,
        profile::mirai_host_children,
        profile::mirai_host_notice,
        profile::mirai_host_daemons,
        profile::mirai_host_timeline,
        mirai::mirai_r_init,
        mirai::mirai_resolved,
        mirai::mirai_aio_collect,
        mirai::mirai_aio_wait,
        mirai::mirai_aio_cancel,
        mirai::mirai_aio_data,
        mirai::mirai_value,
        mirai::mirai_race,
        mirai::mirai_aio_done,
        mirai::mirai_aio_id,
        mirai::mirai_on_resolve,
        map::mirai_map_submit,
        map::mirai_map_plain_rows,
        map::mirai_map_apply,
        map::mirai_map_collect,
        map::mirai_map_value,
        map::mirai_map_element,
        map::mirai_map_resolved,
        map::mirai_map_done,
        map::mirai_map_ids,
        map::mirai_map_wait,
        map::mirai_map_cancel,
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
        daemon::mirai_daemon_answered,
        daemon::mirai_daemon_keeping,
        daemon::mirai_daemon_tidy,
        daemon::mirai_daemon_close,
        daemon::mirai_daemon_init,
        daemon::mirai_daemon_relay,
        daemon::mirai_daemon_relay_flush,
        daemon::mirai_daemon_relay_room,
        relay::mirai_host_relay,
        relay::mirai_host_relay_dropped,
        relay::mirai_host_relay_count,
        relay::mirai_host_relay_idle,
        relay::mirai_node_held,
        relay::mirai_node_held_any,
        relay::mirai_node_wait_held,
        relay::mirai_relay_of,
        helpers::mirai_random_hex,
        helpers::mirai_ip_addr,
        helpers::mirai_next_stream,
        helpers::mirai_rng_advance,
        helpers::mirai_constants,
        helpers::mirai_url_parts,
    ];
    // Test-only routines (fault injection): built only with the
    // `test-hooks` feature, which tools/test.sh turns on for its install
    // (MIRAI_TEST_HOOKS=1, read by src/Makevars).
    #[cfg(feature = "test-hooks")]
    table.extend(routines![profile::mirai_host_inject_fault, helpers::mirai_test_plain_read, helpers::mirai_test_plain_write, profile::mirai_test_live_aios, profile::mirai_test_claims, helpers::mirai_test_heap_bytes]);
    // Defined in C (src/entrypoint.c): it needs setjmp and a C-level
    // calling handler.
    table.push(c_routine3(c"mirai_eval", eval));
    // SAFETY: the caller's promise about `dll`; R's main thread.
    unsafe { register(dll, table) };
}
