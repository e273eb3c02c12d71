//! `.Call`s for a cluster's nodes (R/cluster.R): the hot path of parallel's
//! functions. One call sends a task, one receives a result; no mirai object
//! and no R-level bookkeeping is made per task, because on a load-balanced
//! call (`clusterApplyLB()`: one round trip per element) the host's R
//! thread is the bottleneck.
//!
//! A node is an environment. It keeps its outstanding tasks in order:
//! `head` (an aio handle, or NULL) with parallel's tag for it as
//! `head_tag`, then `rest`, a list of `list(aio, tag)` (used only when a
//! caller sends a node several tasks before receiving). `pending` holds
//! messages already received but not yet handed out (future's relayed
//! conditions), which R hands out itself.
//!
//! A node task's payload is `list(._node_. = fun, ._args_. = args)`; the
//! daemon runs it natively (see `daemon::run_node`).

use super::call::{entry, preserved_strings, try_r, MainOnce, RError};
use super::ffi::*;
use super::handle::{kept, new_handle};
use super::mirai::{aio, outcome_to_sexp, race, wait_slot};
use super::profile::submit_node;
use super::value::*;
use crate::sched::ERR_CANCELED;
use std::ffi::CStr;

/// Symbols and constant vectors, made once (R's main thread only).
struct Syms {
    prof: SEXP,
    active: SEXP,
    host: SEXP,
    head: SEXP,
    head_tag: SEXP,
    rest: SEXP,
    pending: SEXP,
    node: SEXP,
    /// c("type", "value", "tag"): a received message.
    msg_names: SEXP,
    /// c("node", "value"): what recvOneData() returns.
    one_names: SEXP,
    /// "VALUE", the message type.
    value_type: SEXP,
    /// c("._node_.", "._args_."): a node task's payload.
    payload_names: SEXP,
}

static SYMS: MainOnce<Syms> = MainOnce::new();

fn syms() -> Result<&'static Syms, RError> {
    SYMS.get(|| {
        let sym = |c: &CStr| unsafe { Rf_install(c.as_ptr()) };
        Syms {
            prof: sym(c"prof"),
            active: sym(c"active"),
            host: sym(c"host"),
            head: sym(c"head"),
            head_tag: sym(c"head_tag"),
            rest: sym(c"rest"),
            pending: sym(c"pending"),
            node: sym(c"node"),
            msg_names: preserved_strings(&[c"type", c"value", c"tag"]),
            one_names: preserved_strings(&[c"node", c"value"]),
            value_type: preserved_strings(&[c"VALUE"]),
            payload_names: preserved_strings(&[c"._node_.", c"._args_."]),
        }
    })
}

/// Binding `sym` of environment `env`; NULL if unbound. Never allocates
/// (no active bindings are read here).
fn var(env: SEXP, sym: SEXP) -> SEXP {
    unsafe {
        let v = Rf_findVarInFrame(env, sym);
        if v == R_UnboundValue {
            R_NilValue
        } else {
            v
        }
    }
}

fn check_node(node: SEXP) -> Result<(), RError> {
    if unsafe { TYPEOF(node) } != ENVSXP {
        return Err("`node` must be a 'miraiNode'".into());
    }
    Ok(())
}

/// The node's number in its cluster (from 1), its attribute `node`.
fn node_number(node: SEXP, s: &Syms) -> Result<usize, RError> {
    let n = f64_arg(unsafe { Rf_getAttrib(node, s.node) }, "node")?;
    if !(1.0..=u32::MAX as f64).contains(&n) || n.fract() != 0.0 {
        return Err("`node` has no valid node number".into());
    }
    Ok(n as usize)
}

fn is_true(x: SEXP) -> bool {
    unsafe { TYPEOF(x) == LGLSXP && Rf_xlength(x) == 1 && *LOGICAL(x) == 1 }
}

/// `sendData()` on a node: `data` is parallel's message, whose `data` holds
/// `fun`, `args` and `tag`. The task goes to the node's daemon (waiting,
/// interruptibly, for it to join) and is put on the node's record; should
/// recording fail, the task is cancelled rather than left unreachable.
#[no_mangle]
pub extern "C" fn mirai_node_send(node: SEXP, data: SEXP) -> SEXP {
    entry(|| {
        let s = syms()?;
        check_node(node)?;
        let prof = var(node, s.prof);
        if unsafe { TYPEOF(prof) } != ENVSXP || !is_true(var(prof, s.active)) {
            return Err("cluster is no longer active".into());
        }
        let p = var(prof, s.host);
        let number = node_number(node, s)?;
        let d = list_get(data, "data");
        let (fun, args, tag) = (list_get(d, "fun"), list_get(d, "args"), list_get(d, "tag"));
        let mut keep = Protect::new();
        let payload = keep.keep(try_r(|| unsafe {
            let v = Rf_protect(Rf_allocVector(SEXPTYPE::VECSXP, 2));
            SET_VECTOR_ELT(v, 0, fun);
            SET_VECTOR_ELT(v, 1, args);
            Rf_setAttrib(v, R_NamesSymbol, s.payload_names);
            Rf_unprotect(1);
            v
        })?);
        let a = submit_node(p, payload, number - 1)?;
        let (id, profile) = (a.id, a.profile.clone());
        let recorded = new_handle(a, kept(p)).and_then(|h| {
            let h = keep.keep(h);
            try_r(|| unsafe {
                if var(node, s.head) == R_NilValue {
                    Rf_defineVar(s.head, h, node);
                    Rf_defineVar(s.head_tag, tag, node);
                } else {
                    let rest = var(node, s.rest);
                    let n = if TYPEOF(rest) == VECSXP { Rf_xlength(rest) } else { 0 };
                    let entry = Rf_protect(Rf_allocVector(SEXPTYPE::VECSXP, 2));
                    SET_VECTOR_ELT(entry, 0, h);
                    SET_VECTOR_ELT(entry, 1, tag);
                    let grown = Rf_protect(Rf_allocVector(SEXPTYPE::VECSXP, n + 1));
                    for i in 0..n {
                        SET_VECTOR_ELT(grown, i, VECTOR_ELT(rest, i));
                    }
                    SET_VECTOR_ELT(grown, n, entry);
                    Rf_defineVar(s.rest, grown, node);
                    Rf_unprotect(2);
                }
                R_NilValue
            })
        });
        if let Err(e) = recorded {
            profile.host.cancel(id, ERR_CANCELED);
            return Err(e);
        }
        Ok(nil())
    })
}

/// Takes the result of the node's head task (resolved), moves the queue on
/// and returns parallel's message `list(type = "VALUE", value, tag)`.
fn pop_result(node: SEXP, s: &Syms) -> Result<SEXP, RError> {
    let h = var(node, s.head);
    let outcome = aio(&h)?.slot.take().ok_or("internal error in mirai: a node's result was taken twice")?;
    let mut keep = Protect::new();
    let value = keep.keep(outcome_to_sexp(outcome, kept(h))?);
    let tag = keep.keep(var(node, s.head_tag));
    try_r(|| unsafe {
        let rest = var(node, s.rest);
        let n = if TYPEOF(rest) == VECSXP { Rf_xlength(rest) } else { 0 };
        if n > 0 {
            let next = VECTOR_ELT(rest, 0);
            Rf_defineVar(s.head, VECTOR_ELT(next, 0), node);
            Rf_defineVar(s.head_tag, VECTOR_ELT(next, 1), node);
            let shrunk = Rf_protect(Rf_allocVector(SEXPTYPE::VECSXP, n - 1));
            for i in 1..n {
                SET_VECTOR_ELT(shrunk, i - 1, VECTOR_ELT(rest, i));
            }
            Rf_defineVar(s.rest, shrunk, node);
            Rf_unprotect(1);
        } else {
            Rf_defineVar(s.head, R_NilValue, node);
            Rf_defineVar(s.head_tag, R_NilValue, node);
        }
        let msg = Rf_protect(Rf_allocVector(SEXPTYPE::VECSXP, 3));
        SET_VECTOR_ELT(msg, 0, s.value_type);
        SET_VECTOR_ELT(msg, 1, value);
        SET_VECTOR_ELT(msg, 2, tag);
        Rf_setAttrib(msg, R_NamesSymbol, s.msg_names);
        Rf_unprotect(1);
        msg
    })
}

/// `recvData()` on a node: waits (interruptibly) for its oldest task and
/// returns parallel's message for it.
#[no_mangle]
pub extern "C" fn mirai_node_recv(node: SEXP) -> SEXP {
    entry(|| {
        let s = syms()?;
        check_node(node)?;
        let h = var(node, s.head);
        if is_null(h) {
            return Err(format!("node {} of the cluster has no task to receive", node_number(node, s)?).into());
        }
        wait_slot(&aio(&h)?.slot)?;
        pop_result(node, s)
    })
}

/// `recvOneData()` on a cluster (a list of nodes): the number of the first
/// node holding messages already received (R hands those out), else waits
/// (interruptibly) for whichever node's oldest task resolves first and
/// returns `list(node, value = message)`.
#[no_mangle]
pub extern "C" fn mirai_cluster_recv(cl: SEXP) -> SEXP {
    entry(|| {
        let s = syms()?;
        if !is_list(cl) {
            return Err("`cl` must be a 'miraiCluster'".into());
        }
        let mut slots = Vec::with_capacity(len(cl));
        let mut which = Vec::with_capacity(len(cl));
        for i in 0..len(cl) {
            let node = list_at(cl, i);
            check_node(node)?;
            if len(var(node, s.pending)) > 0 {
                return int(i as i32 + 1);
            }
            let h = var(node, s.head);
            if !is_null(h) {
                slots.push(aio(&h)?.slot.clone());
                which.push(i);
            }
        }
        if slots.is_empty() {
            return Err("no node of the cluster has a task to receive".into());
        }
        let i = which[race(&slots)?];
        let mut keep = Protect::new();
        let msg = keep.keep(pop_result(list_at(cl, i), s)?);
        let number = keep.keep(int(i as i32 + 1)?);
        try_r(|| unsafe {
            let out = Rf_protect(Rf_allocVector(SEXPTYPE::VECSXP, 2));
            SET_VECTOR_ELT(out, 0, number);
            SET_VECTOR_ELT(out, 1, msg);
            Rf_setAttrib(out, R_NamesSymbol, s.one_names);
            Rf_unprotect(1);
            out
        })
    })
}
