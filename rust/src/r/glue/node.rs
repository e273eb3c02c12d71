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
//! daemon runs it natively (see `daemon::run_node`). parallel sends the
//! same function with every task; R-serializing it each time was most of
//! the host's cost of a tiny task beyond parallel's own (a closure, with
//! its source references in an interactive session, plus R's reference
//! table of 8.8 KB made per serialization: 4-10 us a task). So a
//! function whose serialized form cannot change while it is the same
//! object travels as a share instead, as a map's shared part does, to each
//! daemon once (see `NodeFuns`), and each task carries only its `args`.

use crate::r::layer::call::{on_wait_error, run_wait_hook_if, RError, RResult};
use crate::r::layer::ffi::{CLOSXP, SEXP};
use super::shared::{node_payload_names, node_share_names};
use crate::r::layer::handle::{handle, kept, new_handle, new_short_handle, Tagged};
use crate::r::layer::lang::*;
use super::mirai::{aio, cancel, outcome_to_sexp, race_reading, wait_node};
use super::profile::{profile, serialize_task, submit_node, submit_node_shared, wait_for_node, ShareBytes};
use crate::r::layer::value::*;
use crate::host::sched::ERR_CANCELED;
use std::cell::RefCell;
use std::ffi::CStr;
use std::rc::Rc;

/// Symbols and constant vectors, made once.
struct Syms {
    prof: SEXP,
    active: SEXP,
    host: SEXP,
    head: SEXP,
    head_tag: SEXP,
    rest: SEXP,
    pending: SEXP,
    node: SEXP,
    peers: SEXP,
    nodes: SEXP,
    /// c("type", "value", "tag"): a received message.
    msg_names: SEXP,
    /// c("node", "value"): what recvOneData() returns.
    one_names: SEXP,
    /// "VALUE", the message type.
    value_type: SEXP,
    /// c("._node_.", "._args_."): a node task's payload.
    payload_names: SEXP,
    /// "._node_.": a node function's share, `list(._node_. = fun)`.
    share_names: SEXP,
    /// The profile's `NodeFuns` handle.
    node_funs: SEXP,
    /// The call `mirai:::node_fun_fixed` (R/cluster.R).
    fixed: SEXP,
}

static SYMS: MainOnce<Syms> = MainOnce::new();

fn syms() -> Result<&'static Syms, RError> {
    SYMS.get(|| {
        Ok(Syms {
            prof: install(c"prof")?,
            active: install(c"active")?,
            host: install(c"host")?,
            head: install(c"head")?,
            head_tag: install(c"head_tag")?,
            rest: install(c"rest")?,
            pending: install(c"pending")?,
            node: install(c"node")?,
            peers: install(c"peers")?,
            nodes: install(c"nodes")?,
            msg_names: preserved_strings(&[c"type", c"value", c"tag"])?,
            one_names: preserved_strings(&[c"node", c"value"])?,
            value_type: preserved_strings(&[c"VALUE"])?,
            payload_names: node_payload_names()?,
            share_names: node_share_names()?,
            node_funs: install(c"node_funs")?,
            fixed: preserve(lang(&Lang::Call(
                install(c":::")?,
                vec![(nil(), Lang::Value(install(c"mirai")?)), (nil(), Lang::Value(install(c"node_fun_fixed")?))],
            ))?)?,
        })
    })
}

fn check_node(node: SEXP) -> Result<(), RError> {
    if !is_env(node) {
        return Err("internal error in mirai: a cluster node's method was passed no 'miraiNode'".into());
    }
    Ok(())
}

/// The node's number in its cluster (from 1), its attribute `node`.
fn node_number(node: SEXP, s: &Syms) -> Result<usize, RError> {
    let n = f64_arg(attr(node, s.node)?.sexp(), "node")?;
    if !(1.0..=u32::MAX as f64).contains(&n) || n.fract() != 0.0 {
        return Err("`node` has no valid node number".into());
    }
    Ok(n as usize)
}

/// `sendData()` on a node: `data` is parallel's message, whose `data` holds
/// `fun`, `args` and `tag`. The task goes to the node's daemon (waiting,
/// interruptibly, for it to join) and is put on the node's record; should
/// recording fail, the task is cancelled rather than left unreachable.
/// Failed or interrupted before the task is on record: see `or_drop`.
pub fn mirai_node_send(node: SEXP, data: SEXP) -> RResult {
    or_drop(node, node_send(node, data))
}

/// `result` of a send or a receive on `node`'s cluster. Failed or
/// interrupted, the cluster's outstanding tasks go (`mirai_cluster_drop`):
/// parallel's caller gives up on those already sent to other nodes too,
/// and its next call would receive their results. Done by the routines
/// rather than by an `on.exit()` in R/cluster.R's methods: R code run for
/// every task of `clusterApplyLB()` on R's thread, its bottleneck. An
/// interrupt is raised after the drop, so a calling handler finds the
/// cluster as the hooks of `on_wait_error` leave it.
pub(super) fn or_drop(node: SEXP, result: RResult) -> RResult {
    if result.is_err() && is_env(node) {
        drop_on_wait_error(node);
    }
    result
}

fn node_send(node: SEXP, data: SEXP) -> RResult {
    let s = syms()?;
    check_node(node)?;
    // Sent from within a wait on the same cluster (by a handler of a
    // condition relayed during a receive, say, or by a calling handler of
    // an error a relayed condition's handler raised): that wait's call will
    // not receive its results coherently any more, and this call would
    // receive them. Its tasks go first, as on an error in the wait; the
    // wait then gets them as cancelled.
    run_wait_hook_if(|arg| arg == node || same_cluster(arg, node, s));
    // A wait for the node's daemon to connect (or for queue room) that a
    // time limit ends drops the call's tasks before the caller's handlers
    // run, as a receive's does.
    let undo = on_wait_error(drop_on_wait_error, node);
    let prof = env_get(node, s.prof)?;
    if !is_env(prof.sexp()) || !is_true(env_get(prof.sexp(), s.active)?.sexp()) {
        return Err("cluster is no longer active".into());
    }
    let p = env_get(prof.sexp(), s.host)?;
    let number = node_number(node, s)?;
    // The wait for the node's daemon to join first, on its own: what
    // follows runs R code (a function's check, serialization hooks) that
    // may wait on something else.
    undo.armed(|| wait_for_node(profile(&p)?, number - 1))?;
    let d = list_get(data, "data");
    let (fun, args, tag) = (list_get(d, "fun"), list_get(d, "args"), list_get(d, "tag"));
    let cache = node_funs(prof.sexp(), s)?;
    // The args alone: plain ones (clusterApplyLB()'s elements) are written
    // natively (`layer::plain`), without R's serializer.
    let a = match fun_share(&cache, &p, fun, s)? {
        Some(share) => submit_node_shared(&p, &share, |buf| serialize_task(args, kept(p.sexp()), buf), number - 1)?,
        None => {
            let payload = list_named(&[fun, args], s.payload_names, nil())?;
            submit_node(&p, payload.sexp(), number - 1)?
        }
    };
    let (id, profile) = (a.id, a.profile.clone());
    let recorded = new_short_handle(a, kept(p.sexp())).and_then(|h| {
        if is_null(env_get(node, s.head)?.sexp()) {
            env_set(node, s.head, h.sexp())?;
            env_set(node, s.head_tag, tag)
        } else {
            let entry = list(&[h.sexp(), tag], &[])?;
            let rest = list_append(env_get(node, s.rest)?.sexp(), entry.sexp())?;
            env_set(node, s.rest, rest.sexp())
        }
    });
    if let Err(e) = recorded {
        profile.host.cancel(id, ERR_CANCELED);
        return Err(e);
    }
    Ok(Owned::nil())
}

/// The last few node functions a profile sent as shares (see the module's
/// notes), each with its share; entry i's function is element i of the
/// list the handle keeps, which keeps it alive: a function's address is
/// then never another object's while it is cached, so the address
/// identifies it. Only closures whose serialized form cannot change while
/// they are the same object are cached (`node_fun_fixed()` in R/cluster.R
/// tells, once per function): those whose environment R writes as a
/// reference (the global one, base, a namespace, a package's), so that
/// only their formals, body and attributes are written, with no
/// environment, external pointer or weak reference inside those, whose
/// contents could change. R copies a closure rather than change those
/// parts in place once it is referenced twice (its binding, and this
/// list); the JIT compiling a body in place changes its bytes but not its
/// meaning. A closure made in a function carries its environment's
/// bindings, which may change between calls: it goes whole with every
/// task, as does anything else.
///
/// Holding a function keeps it alive after its caller dropped it, with
/// whatever it holds (a large default or attribute), and its share's bytes
/// too. R has no weak reference to a function (only to environments and
/// external pointers), so what the cache may hold is bounded instead, by
/// `NODE_FUNS_BYTES`.
struct NodeFuns {
    /// Share and last use of each function held.
    entries: Vec<(Rc<ShareBytes>, u64)>,
    /// The bytes of their shares, together.
    bytes: usize,
    /// The addresses of the last functions found to go whole (too big to
    /// hold, or not fixed: a closure made in a function), which then go
    /// whole with each task without being checked again, or written twice
    /// more, to find that out. Nothing keeps those alive: an address may
    /// since be another function's, which then goes whole too, only slower.
    whole: std::collections::VecDeque<usize>,
    clock: u64,
}

impl NodeFuns {
    /// Remembers that `fun` goes whole (see `whole`).
    fn note_whole(&mut self, fun: SEXP) {
        if self.whole.len() == NODE_FUNS {
            self.whole.pop_front();
        }
        self.whole.push_back(fun as usize);
    }
}

impl Tagged for RefCell<NodeFuns> {
    const TAG: &'static CStr = c"mirai_node_funs";
    const REFUSED_IN_FORK: bool = true;
}

/// How many functions a profile keeps as shares: a cluster used by a few
/// callers in turn each sending its own function; more than the daemon's
/// share slots (`proto::SHARE_SLOTS`) costs only a resend, as for maps.
const NODE_FUNS: usize = 8;

/// How many bytes of functions (serialized) a profile's cache holds at
/// most, which bounds what it keeps alive of functions their callers have
/// dropped (about twice this: the R objects and their shares' bytes). The
/// cache spares each task the writing of its function, which matters for
/// a small function sent with many tiny tasks (clusterApplyLB()); real
/// functions are a few KB, and constants of a few MB in a function still
/// fit. A larger one goes with each task, as to a PSOCK cluster, where
/// writing and sending it outweighs the saving anyway; parLapply(),
/// clusterApply() on as many elements as nodes and clusterCall() send one
/// task per node in any case.
const NODE_FUNS_BYTES: usize = 64 << 20;

/// The share `fun` travels as on the profile `prof` (an environment, `p`
/// its host handle), made on first use; None when it must go whole with
/// each task.
fn fun_share(h: &Owned, p: &Owned, fun: SEXP, s: &Syms) -> Result<Option<Rc<ShareBytes>>, RError> {
    if type_of(fun) != CLOSXP {
        return Ok(None);
    }
    let cache = handle::<RefCell<NodeFuns>>(h, "node_funs")?;
    let held = kept(h.sexp());
    // Reentry (R code a serializer runs sending to the cluster) finds the
    // cache busy: its function goes whole.
    let Ok(mut c) = cache.try_borrow_mut() else { return Ok(None) };
    c.clock += 1;
    let clock = c.clock;
    let n = c.entries.len();
    if let Some(i) = (0..n).find(|&i| list_at(held, i) == fun) {
        c.entries[i].1 = clock;
        return Ok(Some(c.entries[i].0.clone()));
    }
    if c.whole.contains(&(fun as usize)) {
        return Ok(None);
    }
    // An R error or interrupt here (a time limit running out, Ctrl-C) is
    // the caller's, as it would be while the function is written whole.
    let check = lang(&Lang::Call(s.fixed, vec![(nil(), Lang::Value(fun))]))?;
    if !is_true(eval_in_base(check.sexp())?.sexp()) {
        c.note_whole(fun);
        return Ok(None);
    }
    let wrapped = list_named(&[fun], s.share_names, nil())?;
    let share = Rc::new(ShareBytes::new(p, wrapped.sexp())?);
    let size = share.bytes.len();
    if size > NODE_FUNS_BYTES {
        c.note_whole(fun);
        // Written already: this task takes it as a share all the same.
        return Ok(Some(share));
    }
    // Room for it: the least recently used go first. The last entry moves
    // into an evicted one's place, in the list as in `entries`.
    let list = Owned::reachable(held);
    while c.entries.len() == NODE_FUNS || (!c.entries.is_empty() && c.bytes + size > NODE_FUNS_BYTES) {
        let lru = (0..c.entries.len()).min_by_key(|&i| c.entries[i].1).unwrap_or(0);
        let last = c.entries.len() - 1;
        let (gone, _) = c.entries.swap_remove(lru);
        c.bytes -= gone.bytes.len();
        set_list_elt(&list, lru, list_at(held, last));
        set_list_elt(&list, last, nil());
    }
    let i = c.entries.len();
    c.entries.push((share.clone(), clock));
    c.bytes += size;
    // `h`, rooted in `prof`, keeps the list alive.
    set_list_elt(&list, i, fun);
    Ok(Some(share))
}

/// The `NodeFuns` handle of profile `prof` (an environment), made on first
/// use.
fn node_funs(prof: SEXP, s: &Syms) -> Result<Owned, RError> {
    let h = env_get(prof, s.node_funs)?;
    if handle::<RefCell<NodeFuns>>(&h, "node_funs").is_ok() {
        return Ok(h);
    }
    let funs = RefCell::new(NodeFuns { entries: Vec::new(), bytes: 0, whole: Default::default(), clock: 0 });
    let held = new_list(NODE_FUNS)?;
    let h = new_handle(funs, held.sexp())?;
    env_set(prof, s.node_funs, h.sexp())?;
    Ok(h)
}

/// Whether nodes `a` and `b` share their cluster's `peers` (only read when
/// a wait is in progress: `mirai_node_send` is every task's path).
fn same_cluster(a: SEXP, b: SEXP, s: &Syms) -> bool {
    if !is_env(a) {
        return false;
    }
    match (env_get(a, s.peers), env_get(b, s.peers)) {
        (Ok(pa), Ok(pb)) => is_env(pb.sexp()) && pa.sexp() == pb.sexp(),
        _ => false,
    }
}

/// `node`'s head task, which must still be `waited`, the one a wait began
/// on. Otherwise an error: the call's tasks were dropped meanwhile, by a
/// handler the wait ran that used the cluster (`mirai_node_send`), and
/// taking the new head's result would hand that handler's results to the
/// waiting call.
pub(super) fn still_head(node: SEXP, waited: SEXP) -> RResult {
    let s = syms()?;
    let h = env_get(node, s.head)?;
    if h.sexp() == waited {
        return Ok(h);
    }
    Err(format!(
        "node {} of the cluster: this call's tasks were dropped while it waited, as a handler used the cluster meanwhile",
        node_number(node, s)?
    )
    .into())
}

/// Takes the result of the node's head task (resolved; `waited`, the head
/// a wait began on), moves the queue on and returns parallel's message
/// `list(type = "VALUE", value, tag)`.
fn pop_result(node: SEXP, waited: SEXP, s: &Syms) -> RResult {
    let h = still_head(node, waited)?;
    let outcome = aio(&h)?.slot.take().ok_or("internal error in mirai: a node's result was taken twice")?;
    let value = outcome_to_sexp(outcome, kept(h.sexp()))?;
    let tag = env_get(node, s.head_tag)?;
    let rest = env_get(node, s.rest)?;
    let rest = rest.sexp();
    if is_list(rest) && len(rest) > 0 {
        // Anything but list(aio, tag) (the node was tampered with) becomes
        // the head as it is, so that receiving it fails, which drops every
        // outstanding task (R/cluster.R): nothing is skipped silently.
        let next = list_at(rest, 0);
        let (h, t) = if is_list(next) && len(next) == 2 { (list_at(next, 0), list_at(next, 1)) } else { (next, nil()) };
        // `rest` (rooted) keeps `h` and `t` alive while the node changes.
        env_set(node, s.head, h)?;
        env_set(node, s.head_tag, t)?;
        env_set(node, s.rest, list_rest(rest)?.sexp())?;
    } else {
        env_set(node, s.head, nil())?;
        env_set(node, s.head_tag, nil())?;
    }
    list_named(&[s.value_type, value.sexp(), tag.sexp()], s.msg_names, nil())
}

/// `recvData()` on a node: waits (interruptibly) for its oldest task and
/// returns parallel's message for it (`or_drop` if that fails).
pub fn mirai_node_recv(node: SEXP) -> RResult {
    or_drop(node, node_recv(node))
}

fn node_recv(node: SEXP) -> RResult {
    let s = syms()?;
    check_node(node)?;
    let h = env_get(node, s.head)?;
    if is_null(h.sexp()) {
        return Err(format!("node {} of the cluster has no task to receive", node_number(node, s)?).into());
    }
    let undo = on_wait_error(drop_on_wait_error, node);
    undo.armed(|| wait_node(aio(&h)?))?;
    pop_result(node, h.sexp(), s)
}

/// A wait on `node`'s cluster raised an error (a time limit): its tasks
/// go now, before the caller's handlers run (see `on_wait_error`); the
/// routine's drop when the wait returns (`or_drop`) then finds nothing left.
pub(super) fn drop_on_wait_error(node: SEXP) {
    let _ = mirai_cluster_drop(node);
}

/// `recvOneData()` on a cluster (a list of nodes): the number of the first
/// node holding messages already received (R hands those out), else waits
/// (interruptibly) for whichever node's oldest task resolves first and
/// returns `list(node, value = message)` (`or_drop` if that fails).
pub fn mirai_cluster_recv(cl: SEXP) -> RResult {
    let first = if is_list(cl) && len(cl) > 0 { list_at(cl, 0) } else { nil() };
    or_drop(first, cluster_recv(cl))
}

fn cluster_recv(cl: SEXP) -> RResult {
    let s = syms()?;
    if !is_list(cl) {
        return Err("internal error in mirai: recvOneData() was passed no 'miraiCluster'".into());
    }
    let mut heads = Vec::with_capacity(len(cl));
    let mut which = Vec::with_capacity(len(cl));
    for i in 0..len(cl) {
        let node = list_at(cl, i);
        check_node(node)?;
        if len(env_get(node, s.pending)?.sexp()) > 0 {
            return int(i as i32 + 1);
        }
        let h = env_get(node, s.head)?;
        if !is_null(h.sexp()) {
            heads.push(h);
            which.push(i);
        }
    }
    let aios = heads.iter().map(aio).collect::<Result<Vec<_>, _>>()?;
    if aios.is_empty() {
        return Err("no node of the cluster has a task to receive".into());
    }
    let undo = on_wait_error(drop_on_wait_error, list_at(cl, which[0]));
    let k = undo.armed(|| race_reading(&aios))?;
    let i = which[k];
    let msg = pop_result(list_at(cl, i), heads[k].sexp(), s)?;
    let number = int(i as i32 + 1)?;
    list_named(&[number.sexp(), msg.sexp()], s.one_names, nil())
}

/// Cancels and forgets every task outstanding on the nodes of `node`'s
/// cluster (its `peers`), and their messages not yet handed out: a wait
/// for a result was interrupted (or failed), so parallel's caller has
/// given up on all of them, and would take their results for those of its
/// next call. Whatever the nodes hold that is not an aio handle (a node
/// tampered with) is forgotten too, and every node is reset even if one
/// cannot be: the first such error is returned after.
pub fn mirai_cluster_drop(node: SEXP) -> RResult {
    let s = syms()?;
    check_node(node)?;
    let peers = env_get(node, s.peers)?;
    let nodes = if is_env(peers.sexp()) { env_get(peers.sexp(), s.nodes)? } else { Owned::nil() };
    let nodes = if is_list(nodes.sexp()) { nodes } else { list(&[node], &[])? };
    let mut first_err = None;
    for i in 0..len(nodes.sexp()) {
        let p = list_at(nodes.sexp(), i);
        if !is_env(p) {
            continue;
        }
        if let Err(e) = drop_node(p, s) {
            first_err.get_or_insert(e);
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(Owned::nil()),
    }
}

fn drop_node(node: SEXP, s: &Syms) -> Result<(), RError> {
    let cancel_if_aio = |h: SEXP| {
        if let Ok(a) = aio(&h) {
            cancel(a);
            // Nobody will receive it: what it relayed for the node goes.
            a.profile.host.relay.forget_held(&[a.id]);
        }
    };
    cancel_if_aio(env_get(node, s.head)?.sexp());
    let rest = env_get(node, s.rest)?;
    let rest = rest.sexp();
    if is_list(rest) {
        for j in 0..len(rest) {
            let entry = list_at(rest, j);
            cancel_if_aio(if is_list(entry) && len(entry) > 0 { list_at(entry, 0) } else { entry });
        }
    }
    env_set(node, s.head, nil())?;
    env_set(node, s.head_tag, nil())?;
    env_set(node, s.rest, new_list(0)?.sexp())?;
    env_set(node, s.pending, new_list(0)?.sexp())
}
