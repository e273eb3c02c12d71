//! `.Call`s for conditions relayed from running tasks (`daemons(relay =
//! TRUE)`, R/relay.R), and the drain that hands them to R: between the
//! slices of any wait (`wait_interruptibly`'s hook) and from later's loop
//! when R is not waiting. Each goes to R's `relay_show()` (registered when
//! relay is first turned on), which signals them on the host.

use crate::host::relay::{self, Inbox};
use crate::r::layer::call::{on_wait_error, set_slice_hook, wait_interruptibly, RError, RResult};
use crate::r::layer::ffi::SEXP;
use crate::r::layer::lang::{apply2, preserved};
use crate::r::layer::later;
use crate::r::layer::serial;
use crate::r::layer::value::*;
use super::mirai::aio;
use super::profile::profile;
use crate::r::layer::lang::MainOnce;
use crate::r::layer::global::MainThread;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// R's `relay_show()`, preserved; set once.
static SHOW: MainThread<Option<SEXP>> = MainThread::new(None);
/// A drain is running: a handler that waits on a mirai meanwhile must
/// not start another (it would show conditions out of order).
static DRAINING: MainThread<bool> = MainThread::new(false);
/// The notifier is set (or later is not there to set it with).
static SETUP: MainOnce<()> = MainOnce::new();

/// Turns relay on for profile `p`, named `name`: its daemons' conditions
/// are kept (bounded) and shown through `show`, R's `relay_show()`.
/// `use_later`: later is installed and loaded, so conditions are also shown
/// when R is not waiting.
pub fn mirai_host_relay(p: SEXP, name: SEXP, show: SEXP, use_later: SEXP) -> RResult {
    let prof = profile(&p)?;
    let name = str_arg(name, "name")?;
    let use_later = bool_arg(use_later, "use_later")?;
    if !is_function(show) {
        return Err("internal error in mirai: `show` must be a function".into());
    }
    SETUP.get(|| {
        SHOW.set(Some(preserved(show)?));
        set_slice_hook(relay::any_ready, || drain(false));
        Ok(())
    })?;
    if use_later {
        let notify = later::relay_notifier(drain_from_later)?;
        // Set once per process: a later call finds it set, which is as good.
        let _ = relay::set_notifier(Box::new(notify));
    }
    prof.host.relay.enable(&name);
    Ok(Owned::nil())
}

fn drain_from_later() {
    relay::disarm();
    // As a promise's settle: an error in a handler is R's to report, and
    // must not unwind through later's frames.
    let _ = drain(true);
}

/// Shows every condition waiting in any profile's inbox, in order per
/// task, then tells of any dropped. `from_later`: from later's loop, where
/// R's handler stack is empty (see `relay_show()`).
fn drain(from_later: bool) -> Result<(), RError> {
    if DRAINING.get() {
        return Ok(());
    }
    let Some(show) = SHOW.get() else { return Ok(()) };
    DRAINING.set(true);
    let res = drain_into(show, from_later);
    DRAINING.set(false);
    res
}

fn drain_into(show: SEXP, from_later: bool) -> Result<(), RError> {
    while relay::any_ready() {
        let ready = relay::take_ready();
        for (i, inbox) in ready.iter().enumerate() {
            // A handler's error ends the drain: the inboxes not yet taken
            // go back on the ready list (still marked listed, so no relay
            // would ever put them back, and theirs would never be shown).
            if let Err(e) = show_inbox(show, inbox, from_later) {
                for rest in &ready[i + 1..] {
                    rest.relist();
                }
                return Err(e);
            }
        }
    }
    Ok(())
}

/// Hands what `inbox` holds to R's `relay_show()`.
fn show_inbox(show: SEXP, inbox: &Arc<Inbox>, from_later: bool) -> Result<(), RError> {
    let taken = inbox.take();
    if taken.shown.is_empty() && taken.drops.is_empty() {
        return Ok(());
    }
    let items = new_list(taken.shown.len() + taken.drops.len())?;
    let compute = string(inbox.name())?;
    let mut k = 0;
    for r in &taken.shown {
        // A condition R cannot read back is skipped: it came from
        // an authenticated daemon, but nothing it holds is worth
        // failing a wait for.
        let Ok(cond) = serial::unserialize(&r.payload) else { continue };
        let (id, seq) = (real(r.id as f64)?, real(r.seq as f64)?);
        let item = list(&[compute.sexp(), id.sexp(), seq.sexp(), cond.sexp()], &["compute", "id", "seq", "cond"])?;
        set_list_elt(&items, k, item.sexp());
        k += 1;
    }
    for &(id, n) in &taken.drops {
        let (id, n) = (real(id as f64)?, real(n as f64)?);
        let item = list(&[compute.sexp(), id.sexp(), n.sexp()], &["compute", "id", "dropped"])?;
        set_list_elt(&items, k, item.sexp());
        k += 1;
    }
    apply2(show, items.sexp(), lgl(from_later)?.sexp())?;
    Ok(())
}

/// The task id of aio `h` and its profile's inbox.
fn inbox_of(h: SEXP) -> Result<(u64, Arc<Inbox>), RError> {
    let a = aio(&h)?;
    Ok((a.id, a.profile.host.relay.clone()))
}

/// Whether conditions are held for the task of aio `h` (a cluster node's).
pub fn mirai_node_held_any(h: SEXP) -> RResult {
    let (id, inbox) = inbox_of(h)?;
    lgl(inbox.has_held(id))
}

/// The conditions held for the task of aio `h`, in order, as a list
/// (empty for none); they are handed out once.
pub fn mirai_node_held(h: SEXP) -> RResult {
    let (id, inbox) = inbox_of(h)?;
    let held = inbox.take_held(id);
    let out = new_list(held.len())?;
    let mut k = 0;
    for r in &held {
        if let Ok(cond) = serial::unserialize(&r.payload) {
            set_list_elt(&out, k, cond.sexp());
            k += 1;
        }
    }
    if k < held.len() {
        let trimmed = new_list(k)?;
        for i in 0..k {
            set_list_elt(&trimmed, i, list_at(out.sexp(), i));
        }
        return Ok(trimmed);
    }
    Ok(out)
}

/// Waits (interruptibly) until the task of aio `h` (a cluster node's) has
/// resolved or has conditions held for it; TRUE for the latter. A PSOCK
/// worker's messages end parallel's receive as they arrive, and future's
/// value() relies on that to signal progress while it waits. `node`: the
/// node, whose cluster's tasks an error in the wait drops first (see
/// `node::drop_on_wait_error`), as does any failure (`node::or_drop`).
pub fn mirai_node_wait_held(h: SEXP, node: SEXP) -> RResult {
    super::node::or_drop(node, wait_held(h, node))
}

fn wait_held(h: SEXP, node: SEXP) -> RResult {
    let undo = on_wait_error(super::node::drop_on_wait_error, node);
    let a = aio(&h)?;
    // This wait reads no daemon itself: the loop thread must.
    super::mirai::settle_claims(None);
    let (id, inbox, slot) = (a.id, a.profile.host.relay.clone(), a.slot.clone());
    let held = || inbox.has_held(id);
    undo.armed(|| wait_interruptibly(|slice| slot.is_done() || held() || slot.wait(slice) || held()))?;
    super::node::still_head(node, h)?;
    lgl(held())
}

/// How many relayed conditions profile `p` has dropped (a double).
pub fn mirai_host_relay_dropped(p: SEXP) -> RResult {
    real(profile(&p)?.host.relay.dropped.load(Ordering::Relaxed) as f64)
}

/// The name of the profile whose daemons ran the task of aio `h` (of map
/// handle `h` with `is_map` TRUE) if that profile relays, else NULL; FALSE
/// if it relayed but was reset since (its task ids may be a new profile's
/// of the same name): `on_relay()` keys its handlers by name and task id.
pub fn mirai_relay_of(h: SEXP, is_map: SEXP) -> RResult {
    let inbox = if bool_arg(is_map, "is_map")? {
        super::map::map_inbox(h)?
    } else {
        aio(&h)?.profile.host.relay.clone()
    };
    if !inbox.enabled() {
        return Ok(Owned::nil());
    }
    if inbox.closed() {
        return lgl(false);
    }
    string(inbox.name())
}

/// Counts `n` conditions a daemon's relay budget dropped (its drop note)
/// in profile `p`'s total.
pub fn mirai_host_relay_count(p: SEXP, n: SEXP) -> RResult {
    let n = f64_arg(n, "n")?;
    if n.is_finite() && n > 0.0 {
        profile(&p)?.host.relay.dropped.fetch_add(n.min(u64::MAX as f64) as u64, Ordering::Relaxed);
    }
    Ok(Owned::nil())
}

/// Whether profile `p`'s inbox holds nothing for R to show.
pub fn mirai_host_relay_idle(p: SEXP) -> RResult {
    lgl(profile(&p)?.host.relay.idle())
}
