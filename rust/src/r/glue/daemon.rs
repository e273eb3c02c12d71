//! `.Call`s for the daemon's receive-evaluate-reply loop (R/daemon.R).

use crate::r::layer::call::{check_interrupt, clear_interrupt, interrupt_pending_unattended, RError, RResult};
use crate::r::layer::ffi::{SEXP, STRSXP};
use crate::r::layer::lang::*;
use super::call::{call_binding, call_head, eval_and_quote, is_arg_list, same_source};
use super::shared::{max_message, mirai_error, node_payload_names, node_share_names};
use crate::r::layer::handle::{handle, kept, new_handle, set_kept, Held, Tagged};
use crate::r::layer::serial;
use crate::r::layer::value::*;
use crate::daemon::client::{ClientConn, ExitCode, Incoming, DIAL_TIMEOUT};
use crate::wire::frame::task_payload;
use crate::wire::proto::{RELAY_LIMIT, SHARE_SLOTS};
use crate::sys::threads::lock;
use crate::wire::url::Address;
use std::ffi::CStr;
use std::sync::{Mutex, TryLockError};
use std::time::{Duration, Instant};

/// A daemon's connection; None once closed.
type Conn = Mutex<Option<ClientConn>>;

impl Tagged for Conn {
    const TAG: &'static CStr = c"mirai_conn";
    // A task's forked child relays its messages over it (relay = TRUE),
    // as before; `ClientConn`'s drop leaves a forked child's copy open.
    const DROPPED_IN_FORK: bool = true;
}

fn conn(s: &impl Held) -> Result<&Conn, RError> {
    handle::<Conn>(s, "conn")
}

/// Dials the host and completes the handshake. `retry_ms`: how long to keep
/// retrying a refused dial (Inf: a year; NULL: `DIAL_TIMEOUT`). `tlscert`:
/// for `tls+tcp://`, the PEM certificates to verify the host with (NULL: none). `persist`: also
/// retry, for as long, when a peer fails the handshake (see
/// `ClientConn::connect_with`), as a daemon reconnecting does. `quiet`:
/// the daemon's output is discarded (`output = FALSE`), so its watcher
/// says nothing on the process's stderr either.
#[allow(clippy::too_many_arguments)]
pub fn mirai_dial(
    url: SEXP,
    secret: SEXP,
    retry_ms: SEXP,
    autoexit: SEXP,
    max_msg: SEXP,
    tlscert: SEXP,
    persist: SEXP,
    quiet: SEXP,
) -> RResult {
    // First, so that a daemon that never connects removes its directory
    // at exit too.
    let launched = crate::daemon::launched::take();
    let url = str_arg(url, "url")?;
    let addr = Address::parse(&url)?;
    let tls = match &addr {
        Address::Tcp { tls: true, .. } if is_null(tlscert) => {
            return Err("`tlscert` is required for a tls+tcp:// or wss:// URL: use the launch command the host prints, which carries the host's certificate".into())
        }
        Address::Tcp { tls: true, .. } => Some(crate::wire::tls::client_config(&str_arg(tlscert, "tlscert")?)?),
        _ => None,
    };
    let max_message = max_message(max_msg)?;
    let secret = if is_null(secret) { String::new() } else { str_arg(secret, "secret")? };
    let retry = if is_null(retry_ms) {
        DIAL_TIMEOUT
    } else {
        let ms = f64_arg(retry_ms, "retry_ms")?;
        if ms.is_finite() { Duration::from_millis(ms.max(0.0) as u64) } else { Duration::from_secs(86400 * 365) }
    };
    let autoexit = f64_arg(autoexit, "autoexit")?;
    let persist = bool_arg(persist, "persist")?;
    let quiet = bool_arg(quiet, "quiet")?;
    // A daemon reconnecting (`persist`) dials for itself, not for a caller
    // whose handlers should see an R error raised meanwhile.
    let mut stopped = None;
    let c = ClientConn::connect_with(&addr, tls.as_ref(), &secret, max_message, Some(Instant::now() + retry), persist, || {
        let r = if persist {
            if interrupt_pending_unattended() { Err(RError::Interrupt) } else { Ok(()) }
        } else {
            check_interrupt()
        };
        match r {
            Ok(()) => true,
            Err(e) => {
                stopped = Some(e);
                false
            }
        }
    });
    if let Some(e) = stopped {
        return Err(e);
    }
    let c = c?;
    c.watch_host(autoexit == 1.0, quiet, launched).map_err(|e| e.to_string())?;
    new_handle::<Conn>(Mutex::new(Some(c)), nil())
}

fn opt_ms(s: SEXP, what: &str) -> Result<Option<Duration>, RError> {
    let ms = f64_arg(s, what)?;
    Ok(if ms.is_finite() { Some(Duration::from_micros((ms.max(0.0) * 1000.0) as u64)) } else { None })
}

/// Sets the daemon's limits for this connection: idle time (ms), wall time
/// left (ms) and tasks left.
pub fn mirai_daemon_limits(h: SEXP, idle: SEXP, wall: SEXP, tasks: SEXP) -> RResult {
    let (idle, wall, tasks) = (opt_ms(idle, "idletime")?, opt_ms(wall, "walltime")?, f64_arg(tasks, "maxtasks")?);
    let mut g = lock(conn(&h)?);
    let c = g.as_mut().ok_or("connection is closed")?;
    let now = Instant::now();
    c.limits.idle = idle;
    c.limits.wall_until = wall.map(|d| now + d);
    c.limits.tasks_left = tasks;
    c.limits.last_active = now;
    Ok(Owned::nil())
}

enum Got {
    /// Id, body, payload offset, for a map's element its share, and
    /// whether the payload lacks R's serialization header.
    Task(u64, Vec<u8>, usize, Option<u64>, bool),
    /// A map's shared part (the connection has recorded its id): cache
    /// slot, body, payload offset.
    Share(u8, Vec<u8>, usize),
    Code(ExitCode),
    /// The host broke the protocol: why.
    Broken(String),
}

/// Waits for the next task (or the end of the connection), within the
/// daemon's limits; a user interrupt between slices ends the wait.
fn next_task(h: SEXP) -> Result<Got, RError> {
    // The connection's lock is released before anything allocates in R.
    let mut g = lock(conn(&h)?);
    let c = g.as_mut().ok_or("connection is closed")?;
    loop {
        let slice = match c.limits.wait(Instant::now()) {
            Err(stop) => return Ok(Got::Code(stop)),
            Ok(Some(d)) => d.min(Duration::from_millis(200)),
            Ok(None) => Duration::from_millis(200),
        };
        match c.recv(slice)? {
            Incoming::Task { id, body, offset, sid, bare } => return Ok(Got::Task(id, body, offset, sid, bare)),
            Incoming::Share { sid, slot, body, offset } => {
                c.shares[slot as usize] = sid;
                return Ok(Got::Share(slot, body, offset));
            }
            Incoming::Closed => return Ok(Got::Code(ExitCode::Closed)),
            Incoming::Exit => return Ok(Got::Code(ExitCode::ExitRequested)),
            Incoming::Broken(why) => return Ok(Got::Broken(why)),
            Incoming::Nothing => {
                if interrupt_pending_unattended() {
                    return Err(RError::Interrupt);
                }
            }
        }
    }
}

/// What `mirai_daemon_recv` hands R: `list(kind = <name>, ...)`, the
/// fields of each kind below. The one definition of the protocol between
/// the daemon's loop in R (R/daemon.R, whose `switch()` handles each kind
/// by name) and this side; R takes the names at load (`mirai_constants`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// `id`: an `everywhere()` task, answered here, on a daemon that
    /// cleans up: what it left becomes the state that later clean-ups
    /// restore (R takes a new snapshot).
    Kept,
    /// `id`, `message`, `keep`: a task that cannot be run (it cannot be
    /// unserialized, the host withdrew it, its arguments are not all
    /// named, it could not be set up as a cluster node's task, or its
    /// result could not be serialized), for R to answer with a
    /// 'miraiError' of `message`. `keep`: as for `Failed`.
    Error,
    /// `id`, `before`, `keep`: a task failed: `box` holds the error (or
    /// none, for an interrupt), `before` is `geterrmessage()` from before
    /// it. For R to make the error value and answer it. `keep`: TRUE for
    /// an `everywhere()` task on a daemon that cleans up (what it changed
    /// before failing stays, as `Kept`).
    Failed,
    /// `id`: a task answered here changed what the native clean-up cannot
    /// restore (the search path, options): for R to clean up after.
    Done,
    /// `code`: the connection ended (an `ExitCode`).
    Exit,
    /// `why`: the host broke the protocol; the daemon stops, saying why.
    Broken,
}

impl Received {
    pub const ALL: [Received; 6] =
        [Received::Kept, Received::Error, Received::Failed, Received::Done, Received::Exit, Received::Broken];

    pub fn name(self) -> &'static str {
        match self {
            Received::Kept => "kept",
            Received::Error => "error",
            Received::Failed => "failed",
            Received::Done => "done",
            Received::Exit => "exit",
            Received::Broken => "broken",
        }
    }

    /// The list's names, `kind` first.
    fn fields(self) -> &'static [&'static CStr] {
        match self {
            Received::Kept => &[c"kind", c"id"],
            Received::Error => &[c"kind", c"id", c"message", c"keep"],
            Received::Failed => &[c"kind", c"id", c"before", c"keep"],
            Received::Done => &[c"kind", c"id"],
            Received::Exit => &[c"kind", c"code"],
            Received::Broken => &[c"kind", c"why"],
        }
    }
}

/// Each kind's name (a string) and its list's names, made once.
struct Kinds {
    name: [SEXP; Received::ALL.len()],
    fields: [SEXP; Received::ALL.len()],
}

static KINDS: MainOnce<Kinds> = MainOnce::new();

/// `list(kind = <kind's name>, <values>)`, `values` kept alive by the
/// caller.
fn received(kind: Received, values: &[SEXP]) -> RResult {
    let k = KINDS.get(|| {
        let mut name = [nil(); Received::ALL.len()];
        let mut fields = [nil(); Received::ALL.len()];
        for (i, r) in Received::ALL.iter().enumerate() {
            let n = std::ffi::CString::new(r.name()).map_err(|e| e.to_string())?;
            name[i] = preserved_strings(&[&n])?;
            fields[i] = preserved_strings(r.fields())?;
        }
        Ok(Kinds { name, fields })
    })?;
    let i = Received::ALL.iter().position(|&r| r == kind).unwrap_or_default();
    debug_assert_eq!(values.len() + 1, kind.fields().len());
    let mut items = Vec::with_capacity(values.len() + 1);
    items.push(k.name[i]);
    items.extend_from_slice(values);
    list_named(&items, k.fields[i], nil())
}

/// The next thing for the daemon's loop in R to act on (see `Received`),
/// waiting for it within the daemon's limits. Tasks are evaluated and
/// answered here, in a loop that returns to R only for the other kinds:
/// for a task that failed (R builds its error value), for one whose
/// clean-up needs R (`Done`), and after an `everywhere()` task when
/// cleaning up (`Kept`: R makes what it left the state later clean-ups
/// restore). A return to R per task, R's loop and the calls it made, cost
/// a tiny task's round trip about a fifth of its CPU, host and daemon
/// together (farm-bench A/B: 0.81). `snap` is the state to restore after each task
/// (snapshot() in R/daemon.R), NULL with `cleanup = FALSE`; `box` is the
/// daemon loop's environment for mirai_eval, `relay` the `master` that
/// future's code on a cluster node looks for (see R/cluster.R).
pub fn mirai_daemon_recv(h: SEXP, box_: SEXP, relay: SEXP, snap: SEXP) -> RResult {
    // Read once for all the tasks this call runs.
    let snap = if is_null(snap) { None } else { Some(Snapshot::of(snap)?) };
    loop {
        let (id, body, offset, sid, bare) = match next_task(h)? {
            Got::Code(code) => return received(Received::Exit, &[int(code as i32)?.sexp()]),
            Got::Broken(why) => return received(Received::Broken, &[string(&why)?.sexp()]),
            Got::Task(id, body, offset, sid, bare) => (id, body, offset, sid, bare),
            Got::Share(slot, body, offset) => {
                keep_share(h, box_, slot, &body[offset..])?;
                continue;
            }
        };
        // A task the host withdrew mid-write (cancelled or timed out
        // meanwhile) arrives whole but with filler for a payload: it is
        // answered, never evaluated.
        let data = task_payload(&body[offset..]).map(|payload| {
            if bare {
                serial::unserialize_bare_with(payload, kept(h))
            } else {
                serial::unserialize_with(payload, kept(h))
            }
        });
        drop(body);
        let idv = real(id as f64)?;
        let fail = |msg: &str, keep: bool| {
            received(Received::Error, &[idv.sexp(), string(msg)?.sexp(), lgl(keep)?.sexp()])
        };
        let error = |msg: &str| fail(msg, false);
        let d = match data {
            Some(Ok(d)) => d,
            // A task that cannot be read (a failing custom unserializer,
            // say) is answered with an error rather than ending the daemon.
            Some(Err(e)) => return error(&format!("cannot unserialize task: {e}")),
            None => return error("the host withdrew this task before it was fully sent"),
        };
        let job = match sid {
            None if is_node_task(d.sexp())? => Job::Node(d),
            None => Job::Task(d),
            Some(sid) => match shared_task(h, box_, sid, d.sexp())? {
                Shared::Map(data) => Job::Task(data),
                Shared::Node(d) => Job::Node(d),
                Shared::Broken(why) => return error(&why),
            },
        };
        // An everywhere() task's changes stay (see `Received::Kept`).
        let keep = matches!(&job, Job::Task(d) if snap.is_some() && is_everywhere(d.sexp()));
        if let Some(c) = lock(conn(&h)?).as_mut() {
            c.keeping = keep;
        }
        let ran = match job {
            Job::Task(d) => match run_task(d.sexp(), box_)? {
                Some(ran) => ran,
                None => return error(UNNAMED),
            },
            Job::Node(d) => match run_node(d.sexp(), box_, relay) {
                Ok(ran) => ran,
                Err(RError::Interrupt) => return Err(RError::Interrupt),
                // Failing to set the task up (an argument name R cannot
                // translate, say) fails the task, not the daemon. An R
                // error caught here is dropped; R's handler has recorded
                // its message.
                Err(e) => {
                    let why = match e {
                        RError::Msg(m) => m,
                        _ => eval_in_base(node_consts()?.geterr)
                            .and_then(|m| str_arg(m.sexp(), "message"))
                            .map(|m| condition_message(&m).to_string())
                            .unwrap_or_else(|_| "an R error outside the task's own evaluation".into()),
                    };
                    return error(&format!("the node could not run the task: {why}"));
                }
            },
        };
        // Before the value, as for any task: the progress updates the relay
        // handler kept back (relay_flush() in R/relay.R), then the drop note.
        relay_flush_node(relay)?;
        relay_note(h)?;
        match ran {
            Ran::Failed(before) => return received(Received::Failed, &[idv.sexp(), before.sexp(), lgl(keep)?.sexp()]),
            Ran::Value(v) => match send_value(h, id, v.sexp())? {
                Sent::Code(0) if keep => return received(Received::Kept, &[idv.sexp()]),
                Sent::Code(0) => match snap.as_ref().map(tidy) {
                    None | Some(Ok(true)) => continue,
                    Some(Err(RError::Interrupt)) => return Err(RError::Interrupt),
                    // An R error in the native clean-up (a time limit a
                    // task left running out here, say) is R's to redo.
                    Some(Ok(false) | Err(_)) => return received(Received::Done, &[idv.sexp()]),
                },
                Sent::Code(code) => {
                    if code > 0 {
                        linger(h, LAST_REPLY_LINGER)?;
                    }
                    return received(Received::Exit, &[int(code)?.sexp()]);
                }
                Sent::NotSerialized(m) => return fail(&format!("result could not be serialized: {m}"), keep),
            },
        }
    }
}

/// What a received payload is.
enum Job {
    /// A task's payload (`task_parts`): `mirai()`, `everywhere()`, a map's
    /// element.
    Task(Owned),
    /// A cluster node's task (`is_node_task`).
    Node(Owned),
}

/// Why a task whose arguments are not all named is not run.
const UNNAMED: &str = "the task's arguments are not all named";

/// Whether payload `d` is an `everywhere()` task's: marked so, as what it
/// changes is meant to stay (see everywhere() in R/everywhere.R).
fn is_everywhere(d: SEXP) -> bool {
    is_list(d) && !is_null(list_get(d, "._everywhere_."))
}

/// The symbols under which the loop's environment `box` keeps each share
/// slot's value (see `Msg::Share`): the share's R object, or a string, why
/// it could not be read.
struct ShareConsts {
    slots: [SEXP; SHARE_SLOTS],
    /// c("._expr_.", "._globals_.", "._args_."): a task's payload.
    task_names: SEXP,
    names: SEXP,
    /// "._node_.": a cluster node's function.
    node_names: SEXP,
}

static SHARE: MainOnce<ShareConsts> = MainOnce::new();

fn share_consts() -> Result<&'static ShareConsts, RError> {
    SHARE.get(|| {
        Ok(ShareConsts {
            slots: [install(c"._share1_.")?, install(c"._share2_.")?, install(c"._share3_.")?, install(c"._share4_.")?],
            task_names: preserved_strings(&[c"._expr_.", c"._globals_.", c"._args_."])?,
            names: install(c"names")?,
            node_names: node_share_names()?,
        })
    })
}

/// Keeps a shared part (`payload`, its frame's payload) in `box` for
/// cache slot `slot` (the connection has recorded its id): a map's
/// function and arguments, or a cluster node's function. One that cannot
/// be read is kept as the reason, which its tasks are answered with.
fn keep_share(h: SEXP, box_: SEXP, slot: u8, payload: &[u8]) -> Result<(), RError> {
    let k = share_consts()?;
    let value = match task_payload(payload).map(|p| serial::unserialize_with(p, kept(h))) {
        Some(Ok(v)) => v,
        Some(Err(e)) => string(&format!("cannot unserialize the task's shared part (a map's function and arguments, or a cluster's function): {e}"))?,
        None => string("the host withdrew the task's shared part")?,
    };
    env_set(box_, k.slots[slot as usize], value.sexp())
}

/// What a task sent with a share (`Msg::Item`) is.
enum Shared {
    /// A map's element: the payload to evaluate.
    Map(Owned),
    /// A cluster node's task: its payload as if sent whole (see
    /// `is_node_task`).
    Node(Owned),
    /// Why it cannot run.
    Broken(String),
}

/// The task whose own payload is `own` and whose share is `sid`: a map's
/// element if the share is a map's shared part, `list(._expr_.,
/// ._globals_., ._args_.)`, with `own` as the first of the arguments
/// (`.x`, see map_native() in R/map.R); a cluster node's task if the share
/// is a node's function, `list(._node_. = fun)`, with `own` its `args`
/// (see `node::NodeFuns`).
fn shared_task(h: SEXP, box_: SEXP, sid: u64, own: SEXP) -> Result<Shared, RError> {
    let k = share_consts()?;
    let slot = {
        let g = lock(conn(&h)?);
        let c = g.as_ref().ok_or("connection is closed")?;
        c.shares.iter().position(|&s| s == sid && s != 0)
    };
    let Some(slot) = slot else {
        return Ok(Shared::Broken("the task's shared part (a map's function and arguments, or a cluster's function) never arrived".into()));
    };
    let shared = env_get(box_, k.slots[slot])?;
    let shared = shared.sexp();
    if is_list(shared) && len(shared) == 1 && first_name_is(shared, k.node_names) {
        let d = list_named(&[list_at(shared, 0), own], node_consts()?.payload_names, nil())?;
        return Ok(Shared::Node(d));
    }
    if !is_list(shared) || len(shared) != 3 || !is_list(list_at(shared, 2)) || len(list_at(shared, 2)) == 0 {
        return Ok(Shared::Broken(if type_of(shared) == STRSXP && len(shared) == 1 {
            string_at(shared, 0)
        } else {
            "the map's shared arguments are not as expected".into()
        }));
    }
    Ok(Shared::Map(map_task(shared, own)?))
}

/// The task payload of a map's element `elem` whose shared part is
/// `shared` (checked to be one).
fn map_task(shared: SEXP, elem: SEXP) -> RResult {
    let k = share_consts()?;
    let args = list_at(shared, 2);
    let mut items: Vec<SEXP> = (0..len(args)).map(|i| list_at(args, i)).collect();
    items[0] = elem;
    let names = attr(args, k.names)?;
    let args = list_named(&items, names.sexp(), nil())?;
    list_named(&[list_at(shared, 0), list_at(shared, 1), args.sexp()], k.task_names, nil())
}

/// The message part of an error as R's default handler records it
/// (`geterrmessage()`): "Error in <call> : <message>\n", or "Error:
/// <message>\n", then the calls when R shows them ("Calls: ..."). In a
/// language other than English, the whole record.
fn condition_message(record: &str) -> &str {
    let record = record.split("\nCalls:").next().unwrap_or(record).trim_end();
    let message = if record.starts_with("Error in ") {
        record.split_once(" : ").map(|(_, m)| m)
    } else {
        record.strip_prefix("Error: ")
    };
    message.map_or(record, str::trim_start)
}

/// Runs a task's payload `data` (its expression, globals and arguments,
/// see `task_parts`) as `lang::eval_task` does; None, not run, when its
/// arguments are not all named.
///
/// The expression is evaluated within `eval()`, as the reference evaluates
/// every task (see `lang::eval_task`): exit code registered at its top
/// runs when the task ends (on an error or interrupt too, before its value
/// is sent), and `return(x)` there gives the value x. The eval() closure's
/// call costs about 3 us a task (measured on 2 cores, 24-27 us a round
/// trip against 21-26 without). An error's calls have two frames of that
/// eval() (its closure's and the .Internal's), which node_error()
/// (R/daemon.R) drops with the daemon's own.
fn run_task(data: SEXP, box_: SEXP) -> Result<Option<Ran>, RError> {
    let before = eval_in_base(node_consts()?.geterr)?;
    let (expr, globals, args) = task_parts(data);
    if let Some(why) = untranslatable_name(globals).or_else(|| untranslatable_name(args)) {
        return Ok(Some(Ran::Value(mirai_error(why)?)));
    }
    Ok(match eval_task(expr, globals, args, box_, eval_and_quote()?)? {
        Some(v) if v.sexp() == box_ => Some(Ran::Failed(before)),
        // The empty symbol (`quote(expr = )`) as a value: R's loop could
        // not even hold it in a variable (reading it is "argument is
        // missing"), and the daemon would end. A cluster node's task says
        // as much as an error.
        Some(v) if v.sexp() == missing_arg() => {
            Some(Ran::Value(mirai_error("the task's value is the empty symbol (a missing argument)")?))
        }
        Some(v) => Some(Ran::Value(v)),
        None => None,
    })
}

/// Why a name of list `x` cannot be bound as a variable, if one cannot.
fn untranslatable_name(x: SEXP) -> Option<&'static str> {
    let nms = list_names(x)?;
    (0..len(nms)).find_map(|i| untranslatable_at(nms, i))
}

/// A task payload's expression, globals and arguments: positional in a
/// list of 3 without names, as `mirai()` sends them (names cost a small
/// task's frame a third of its bytes), else by name, as `everywhere()` and
/// a map's items send them. Anything else reads as NULL parts.
fn task_parts(data: SEXP) -> (SEXP, SEXP, SEXP) {
    if is_list(data) && len(data) == 3 && list_names(data).is_none() {
        return (list_at(data, 0), list_at(data, 1), list_at(data, 2));
    }
    (list_get(data, "._expr_."), list_get(data, "._globals_."), list_get(data, "._args_."))
}

/// Objects the node-task path reuses.
struct NodeConsts {
    master: SEXP,
    conds: SEXP,
    last_fun: SEXP,
    flush: SEXP,
    /// `geterrmessage()`, preserved.
    geterr: SEXP,
    relayed_names: SEXP,
    relayed_class: SEXP,
    payload_names: SEXP,
}

static NODE: MainOnce<NodeConsts> = MainOnce::new();

fn node_consts() -> Result<&'static NodeConsts, RError> {
    NODE.get(|| {
        Ok(NodeConsts {
            master: install(c"master")?,
            conds: install(c"conds")?,
            last_fun: install(c"._last_node_fun_.")?,
            flush: install(c"flush")?,
            geterr: preserved_base_call(c"geterrmessage")?,
            relayed_names: preserved_strings(&[c"conditions", c"value"])?,
            relayed_class: preserved_strings(&[c"miraiRelayed"])?,
            payload_names: node_payload_names()?,
        })
    })
}

/// Sends what the relay handler kept back of the node task just run (the
/// `flush` daemon() leaves in the node's sink, if relaying). Failing to
/// send is as failing to relay: the value goes on; only a cancel stops it.
fn relay_flush_node(relay: SEXP) -> Result<(), RError> {
    let sink = list_get(relay, "sink");
    if !is_env(sink) {
        return Ok(());
    }
    let f = env_get(sink, node_consts()?.flush)?;
    if !is_function(f.sexp()) {
        return Ok(());
    }
    match apply1(f.sexp(), nil()) {
        Err(RError::Interrupt) => Err(RError::Interrupt),
        _ => Ok(()),
    }
}

/// Whether payload `d` is a cluster node's task: `list(._node_. = fun,
/// ._args_. = args)`.
fn is_node_task(d: SEXP) -> Result<bool, RError> {
    Ok(is_list(d) && len(d) == 2 && first_name_is(d, node_consts()?.payload_names))
}

/// How a task's evaluation ended (`run_task`, `run_node`).
enum Ran {
    Value(Owned),
    /// The evaluation failed: `box` holds the error (or none, for an
    /// interrupt), and this is `geterrmessage()` from before it.
    Failed(Owned),
}

/// Runs a node task as parallel's worker does, `do.call(fun, args, quote =
/// TRUE)`, in a frame binding `master` to `relay` (see `call_binding`),
/// guarded as any task. Whatever future sent to `master` comes back with
/// the value, as a 'miraiRelayed' (see node_message() in R/cluster.R). A
/// function identical to the previous task's, source references included
/// (parallel sends it with every task), is run as that one, so that R's
/// JIT compiles it once rather than for every task.
fn run_node(d: SEXP, box_: SEXP, relay: SEXP) -> Result<Ran, RError> {
    let c = node_consts()?;
    let (fun, args) = (list_at(d, 0), list_at(d, 1));
    // do.call()'s own checks, with its messages.
    let Some(mut head) = call_head(fun)? else {
        return Ok(Ran::Value(mirai_error("'what' must be a function or character string")?));
    };
    if !is_arg_list(args) {
        return Ok(Ran::Value(mirai_error("second argument must be a list")?));
    }
    // Kept for as long as `head` may be it.
    let last = if is_function(fun) { env_get(box_, c.last_fun)? } else { Owned::nil() };
    if is_function(fun) {
        if identical(last.sexp(), fun) && same_source(last.sexp(), fun)? {
            head = last.sexp();
        } else {
            env_set(box_, c.last_fun, fun)?;
        }
    }
    let sink = list_get(relay, "sink");
    let call = call_binding(head, args, c.master, relay)?;
    let before = eval_in_base(c.geterr)?;
    if is_env(sink) {
        env_set(sink, c.conds, nil())?;
    }
    let res = eval_guarded(call.sexp(), box_)?;
    if res.sexp() == box_ {
        return Ok(Ran::Failed(before));
    }
    let conds = if is_env(sink) { env_get(sink, c.conds)? } else { Owned::nil() };
    // A value the host would take for one of its own markers (a failure's
    // error value, or this wrapper) travels wrapped, so that it arrives as
    // the value it is.
    if is_null(conds.sexp()) && !inherits(res.sexp(), c"miraiRelayed") && !inherits(res.sexp(), c"errorValue") {
        return Ok(Ran::Value(res));
    }
    Ok(Ran::Value(list_named(&[conds.sexp(), res.sexp()], c.relayed_names, c.relayed_class)?))
}

/// Whether a task's value is an error value (told to the host for its
/// timeline), looking inside a value sent with its conditions.
fn is_error_result(value: SEXP) -> bool {
    let v = if inherits(value, c"miraiRelayed") { list_get(value, "value") } else { value };
    inherits(v, c"errorValue")
}

enum Sent {
    Code(i32),
    NotSerialized(String),
}

/// Sends the result of task `id` (see `mirai_daemon_send`).
fn send_value(h: SEXP, id: u64, value: SEXP) -> Result<Sent, RError> {
    let cfg = kept(h);
    // Everything that needs the connection's lock happens here; R
    // allocates only inside serialize_with, under try_r, which stops any
    // longjmp short of these frames.
    let mut g = lock(conn(&h)?);
    let c = g.as_mut().ok_or("connection is closed")?;
    if c.done_evaluating() {
        // The cancel's SIGINT may have landed after the evaluation
        // ended; it must not interrupt whatever R does next.
        clear_interrupt();
    }
    // Decide "last" before serializing: the marker travels in the header.
    let before = (c.limits.done, c.limits.last_active);
    let last = c.limits.finish_task(Instant::now());
    let mut frame = c.begin_result(id, last.is_some(), is_error_result(value));
    Ok(match serial::serialize_with(value, &mut frame, cfg) {
        // Any R condition is dropped: the caller sends a miraiError
        // with this message in its place.
        Err(e) => {
            (c.limits.done, c.limits.last_active) = before;
            Sent::NotSerialized(match e {
                RError::Msg(m) => m,
                RError::Interrupt => "interrupted".into(),
                RError::Unwind(_) => "R could not serialize the value".into(),
            })
        }
        // The host is gone: the loop ends as for a closed connection
        // (and reconnects with autoexit = FALSE).
        Ok(()) => match c.send(frame) {
            Err(_) => Sent::Code(ExitCode::HostGone as i32),
            Ok(()) => Sent::Code(last.map_or(0, |c| c as i32)),
        },
    })
}

/// Sends the result of task `id`. Returns 0, or the exit code (wall time,
/// task limit) when this was the daemon's last task, in which case the
/// reply carries the marker; `ExitCode::HostGone` if the host has gone. A
/// message if `value` could not be serialized: nothing was sent, and the
/// caller sends an error value instead.
pub fn mirai_daemon_send(h: SEXP, id: SEXP, value: SEXP) -> RResult {
    let id = f64_arg(id, "id")? as u64;
    // Before the value: what the task's relay budget held back, if anything
    // (nothing to do, and no R call, without relay or drops).
    relay_note(h)?;
    match send_value(h, id, value)? {
        Sent::Code(v) => int(v),
        Sent::NotSerialized(m) => string(&m),
    }
}

/// Sends condition `cond`, signalled by the running task, to the host at
/// once (`daemons(relay = TRUE)`); `held` for a cluster node's `master`
/// (see `Msg::Relay`). TRUE if sent: the caller then muffles it. FALSE when
/// no task runs, when it cannot be serialized or is over
/// `proto::RELAY_LIMIT` bytes, or when the host is gone: the condition
/// then goes on as without relay.
pub fn mirai_daemon_relay(h: SEXP, cond: SEXP, held: SEXP) -> RResult {
    relay_send(h, cond, bool_arg(held, "held")?, false)
}

/// Whether the running task's relay budget would take a condition now
/// (nothing taken): the relay handler keeps a progress update back,
/// rather than have it dropped, when it would not.
pub fn mirai_daemon_relay_room(h: SEXP) -> RResult {
    let room = match conn(&h)?.try_lock() {
        Ok(mut g) => g.as_mut().is_some_and(|c| c.relay_room()),
        Err(TryLockError::Poisoned(e)) => e.into_inner().as_mut().is_some_and(|c| c.relay_room()),
        Err(TryLockError::WouldBlock) => false,
    };
    lgl(room)
}

/// Sends progress update `cond`, kept back over the budget, just before
/// the running task's value, whatever the budget (the relay handler sends
/// at most one per progressor, for a bounded number of them).
pub fn mirai_daemon_relay_flush(h: SEXP, cond: SEXP) -> RResult {
    relay_send(h, cond, false, true)
}

/// Tells the host, before the running task's value, how many of its
/// conditions its relay budget dropped (see `RelayBudget`), if any: a
/// 'miraiRelayDropped' condition with their number as `dropped`, sent
/// whatever the budget. Called before any result is sent: from
/// `mirai_daemon_send`, and for a cluster node's task, answered in
/// `mirai_daemon_recv`, there.
fn relay_note(h: SEXP) -> Result<(), RError> {
    let n = lock(conn(&h)?).as_mut().map_or(0, |c| c.relay_dropped());
    if n == 0 {
        return Ok(());
    }
    let (message, dropped) = (string("relay budget")?, real(n as f64)?);
    let note = list(&[message.sexp(), nil(), dropped.sexp()], &["message", "call", "dropped"])?;
    set_class(&note, &["miraiRelayDropped", "condition"])?;
    relay_send(h, note.sexp(), false, true)?;
    Ok(())
}

fn relay_send(h: SEXP, cond: SEXP, held: bool, force: bool) -> RResult {
    // Only R's thread takes the connection's lock, so a lock already held
    // is held by a caller further up this thread: R code run while a value
    // is serialized (a custom serializer's message, seen by the relay
    // handler set around the whole task loop). No task runs then, and
    // waiting for the lock would never end.
    let mut g = match conn(&h)?.try_lock() {
        Ok(g) => g,
        Err(TryLockError::Poisoned(e)) => e.into_inner(),
        Err(TryLockError::WouldBlock) => return lgl(false),
    };
    let c = g.as_mut().ok_or("connection is closed")?;
    let Some(mut frame) = c.begin_relay(held, force) else { return lgl(false) };
    let start = frame.len();
    // Plain R serialization: the host reads it without the profile's
    // custom serializers, and a condition carries none of their objects.
    // An R error in serializing is dropped: the condition goes on.
    if serial::serialize_into(cond, &mut frame).is_err() || frame.len() - start > RELAY_LIMIT {
        return lgl(false);
    }
    lgl(c.send(frame).is_ok())
}

/// Puts the daemon's global state back as `snap` (snapshot() in
/// R/daemon.R) recorded it, where nothing more is needed than removing the
/// global variables the task added (its `...` arguments, mostly): TRUE
/// then. FALSE when the search path or the options changed too, or a
/// removal failed: do_cleanup() in R does the rest. Done in R, this took
/// about 15 us a task whenever a global was added, most of it in rm()
/// (match.call, as.list, vapply, ...), and with 16 daemons on 2 cores the
/// R objects it made cost each task as many cache misses again.
pub fn mirai_daemon_tidy(snap: SEXP) -> RResult {
    lgl(tidy(&Snapshot::of(snap)?)?)
}

/// The parts of a snapshot (snapshot() in R/daemon.R) the clean-up
/// compares with, and the symbols of its global names (None if one cannot
/// be made: the names are then compared). The SEXPs are kept alive by the
/// snapshot, a `.Call` argument.
struct Snapshot {
    globals: SEXP,
    symbols: Option<Vec<SEXP>>,
    search: SEXP,
    pairlist: SEXP,
}

impl Snapshot {
    fn of(snap: SEXP) -> Result<Snapshot, RError> {
        let globals = list_get(snap, "globals");
        let search = list_get(snap, "search");
        if type_of(globals) != STRSXP || type_of(search) != STRSXP {
            return Err("internal error in mirai: `snap` is not a snapshot".into());
        }
        let symbols = (0..len(globals)).map(|i| symbol_at(globals, i)).collect::<Result<_, _>>().ok();
        Ok(Snapshot { globals, symbols, search, pairlist: list_get(snap, "pairlist") })
    }
}

fn tidy(snap: &Snapshot) -> Result<bool, RError> {
    let c = tidy_consts()?;
    Ok(remove_new_globals(snap)?
        && same_strings(eval_in_base(c.search)?.sexp(), snap.search)
        && same_cells(base_binding(c.options)?, snap.pairlist))
}

/// Whether character vectors `a` and `b` hold the same strings (R keeps
/// one object per string, so by pointer): the search path as it was, not
/// only as long (a task that detached one package and attached another).
fn same_strings(a: SEXP, b: SEXP) -> bool {
    len(a) == len(b) && (0..len(a)).all(|i| char_at(a, i) == char_at(b, i))
}

struct TidyConsts {
    /// `search()`.
    search: SEXP,
    /// `.Options`.
    options: SEXP,
}

static TIDY: MainOnce<TidyConsts> = MainOnce::new();

fn tidy_consts() -> Result<&'static TidyConsts, RError> {
    TIDY.get(|| Ok(TidyConsts { search: preserved_base_call(c"search")?, options: install(c".Options")? }))
}

/// Removes the global variables not named in `before` (but for
/// `.Random.seed`); false if one could not be removed.
fn remove_new_globals(snap: &Snapshot) -> Result<bool, RError> {
    // Most tasks leave the global names as they were.
    if snap.symbols.as_deref().is_some_and(globals_are) {
        return Ok(true);
    }
    let before = snap.globals;
    let now = global_names()?;
    let now = now.sexp();
    let n = len(now);
    // Names are CHARSXPs, which R keeps one of per string: the same
    // pointers in the same order is the same names.
    if n == len(before) && (0..n).all(|i| char_at(now, i) == char_at(before, i)) {
        return Ok(true);
    }
    // Locked (by a task): removing would fail, and R's rm() in
    // do_cleanup() should be the one to say so, as it always did.
    if global_env_locked() {
        return Ok(false);
    }
    let kept: std::collections::HashSet<usize> = (0..len(before)).map(|i| char_at(before, i) as usize).collect();
    for i in 0..n {
        let name = char_at(now, i);
        if kept.contains(&(name as usize)) || with_str_at(now, i, |b| b == b".Random.seed") {
            continue;
        }
        match remove_global(name) {
            Ok(()) => {}
            Err(RError::Interrupt) => return Err(RError::Interrupt),
            // A locked global environment, say: R's rm() says why.
            Err(_) => return Ok(false),
        }
    }
    Ok(true)
}

/// Id of the task being evaluated, 0 if none (as a double: ids are u64).
pub fn mirai_daemon_current(h: SEXP) -> RResult {
    let id = lock(conn(&h)?).as_ref().map_or(0, |c| c.current());
    real(id as f64)
}

/// How many tasks this connection has answered.
pub fn mirai_daemon_answered(h: SEXP) -> RResult {
    let done = lock(conn(&h)?).as_ref().map_or(0, |c| c.limits.done);
    real(done as f64)
}

/// Whether the last task run was an `everywhere()` task whose changes
/// stay (see `Received::Kept`).
pub fn mirai_daemon_keeping(h: SEXP) -> RResult {
    lgl(lock(conn(&h)?).as_ref().is_some_and(|c| c.keeping))
}

/// How long a daemon waits, after its last reply, for the host to close.
const LAST_REPLY_LINGER: Duration = Duration::from_secs(5);

/// After a last reply: waits (up to `wait`) for the host to close, so the
/// reply is read before this process exits.
fn linger(h: SEXP, wait: Duration) -> Result<(), RError> {
    let until = Instant::now() + wait;
    let mut g = lock(conn(&h)?);
    if let Some(c) = g.as_mut() {
        while Instant::now() < until {
            match c.recv(Duration::from_millis(100))? {
                Incoming::Closed | Incoming::Exit => break,
                _ => {}
            }
        }
    }
    Ok(())
}

/// After a last reply sent from R: `linger` for `LAST_REPLY_LINGER`.
pub fn mirai_daemon_linger(h: SEXP) -> RResult {
    linger(h, LAST_REPLY_LINGER)?;
    Ok(Owned::nil())
}

/// Closes the connection; returns the number of tasks it completed.
pub fn mirai_daemon_close(h: SEXP) -> RResult {
    let done = lock(conn(&h)?).take().map_or(0, |c| c.limits.done);
    real(done as f64)
}

/// The settings from the host's Init, as `list(stream =, config =)` (each
/// NULL if not sent). Installs `config$serial` as this connection's
/// serialization config for both directions.
pub fn mirai_daemon_init(h: SEXP) -> RResult {
    let (stream, settings) = {
        let g = lock(conn(&h)?);
        let c = g.as_ref().ok_or("connection is closed")?;
        (c.init_stream, c.init_settings.clone())
    };
    let cfg = if settings.is_empty() { Owned::nil() } else { serial::unserialize(&settings)? };
    let serial_cfg = list_get(cfg.sexp(), "serial");
    serial::check_config(serial_cfg).map_err(|e| format!("host sent an invalid serialization config: {e}"))?;
    set_kept(h, serial_cfg)?;
    let stream = match stream {
        Some(s) => ints(&s)?,
        None => Owned::nil(),
    };
    list(&[stream.sexp(), cfg.sexp()], &["stream", "config"])
}

#[cfg(test)]
mod tests {
    use super::condition_message;

    #[test]
    fn condition_message_takes_the_message_from_r_error_records() {
        assert_eq!(condition_message("Error in f(x) : boom\n"), "boom");
        assert_eq!(condition_message("Error in doTryCatch(return(expr), name) : \n  long message\nCalls: a -> b\n"), "long message");
        assert_eq!(condition_message("Error: plain\n"), "plain");
        assert_eq!(condition_message("Fehler in f() : kaputt\n"), "Fehler in f() : kaputt");
        assert_eq!(condition_message(""), "");
    }
}
