//! `.Call`s for `mirai_map()` (R/map.R): a whole map submitted in one call,
//! its values collected in one call.
//!
//! A map is one handle (`MapHandle`): its elements' task ids (one block
//! of consecutive ids, so only the first is kept) and slots.
//! No mirai object is made per element unless R asks for one
//! (`mirai_map_element`, for `mp[[i]]`): on a map of tiny elements the
//! host's R thread is the bottleneck, and a mirai object costs more than
//! the element's whole round trip on the wire.
//!
//! The handle keeps, as its R object, `list(cfg, mirai, values)`: the
//! profile's serialization config, the mirai objects made so far (NULL
//! where none) and the values collected so far (the 'unresolved' value
//! where none). A value is taken out of its slot once, by whichever asks
//! first, the map or the element's mirai, and cached in both. The two
//! lists are made on first use (NULL until then): a queued map holds
//! neither, 16 bytes of R's heap an element.
//!
//! The map's shared part (function, `.args`, globals) is serialized once
//! and travels to each daemon once (`Host::submit_map`); each element's
//! frame carries only the element.

use super::mirai::{aio, cache, cached_of, outcome_to_sexp, wait_slot};
use crate::host::aio::Outcome;
use crate::host::sched::ERR_CANCELED;
use super::profile::{host_failed, new_aio, profile, retries, Aio, Profile};
use crate::host::aio::Slot;
use crate::host::{bare_head_into, exact_frame, item_head_into, put_scratch, take_scratch};
use crate::host::sched::TaskId;
use crate::r::layer::call::{RError, RResult};
use crate::r::layer::ffi::{INTSXP, REALSXP, SEXP, STRSXP};
use crate::r::layer::global::MainOnce;
use crate::r::layer::handle::{handle, kept, new_handle, Held, Tagged};
use crate::r::layer::lang::{call_with, eval_in, install, lang, Lang};
use crate::r::layer::object;
use crate::r::layer::serial;
use crate::r::layer::value::*;
use crate::wire::frame::TASK_WHOLE;
use std::ffi::CStr;
use std::sync::Arc;

/// What a map's handle owns.
pub struct MapHandle {
    profile: Arc<Profile>,
    /// Element i's task id is `first + i`.
    first: TaskId,
    slots: Vec<Arc<Slot>>,
}

impl MapHandle {
    fn id(&self, i: usize) -> TaskId {
        self.first + i as TaskId
    }
}

impl Tagged for MapHandle {
    const TAG: &'static CStr = c"mirai_map";
    const REFUSED_IN_FORK: bool = true;
}

fn map(h: &impl Held) -> Result<&MapHandle, RError> {
    handle::<MapHandle>(h, "map")
}

const CFG: usize = 0;
const MIRAI: usize = 1;
const VALUES: usize = 2;

fn part(h: SEXP, k: usize) -> Result<SEXP, RError> {
    let p = kept(h);
    if !is_list(p) || len(p) != 3 {
        return Err("`map` is not a valid mirai map handle".into());
    }
    Ok(list_at(p, k))
}

/// Part `k` (MIRAI or VALUES) of the map behind `h`, made now if it is not
/// yet: a list of `n` NULLs, or of 'unresolved' values.
fn made_part(h: SEXP, k: usize, n: usize) -> Result<SEXP, RError> {
    let existing = part(h, k)?;
    if !is_null(existing) {
        return Ok(existing);
    }
    let made = new_list(n)?;
    if k == VALUES {
        let unresolved = object::unresolved()?;
        for i in 0..n {
            set_list_elt(&made, i, unresolved);
        }
    }
    // `h` (an argument) keeps it alive from here.
    set_list_elt(&Owned::reachable(kept(h)), k, made.sexp());
    Ok(made.sexp())
}

/// Element `i` of part `k` (MIRAI or VALUES): NULL, or 'unresolved', if
/// that part is not made yet.
fn part_at(h: SEXP, k: usize, i: usize) -> Result<SEXP, RError> {
    let p = part(h, k)?;
    match (is_null(p), k) {
        (false, _) => Ok(list_at(p, i)),
        (true, VALUES) => object::unresolved(),
        (true, _) => Ok(nil()),
    }
}

/// Serializes `x` into `buf`, naming what failed.
fn serialize_part(x: SEXP, cfg: SEXP, buf: &mut Vec<u8>, what: &str) -> Result<(), RError> {
    serial::serialize_with(x, buf, cfg).map_err(|e| match e {
        RError::Msg(m) => RError::Msg(format!("cannot serialize {what}: {m}")),
        e => e,
    })
}

/// Whether data frame `x`'s rows are taken natively on the daemons
/// (`row_of`): its class is "data.frame" alone (a subclass may have an
/// `as.list()` method of its own, which lapply() calls) and every column
/// is a vector without a class (logical, integer, double or character: its
/// element; a list: the element itself), so that `[[` dispatches nothing.
/// Otherwise (a tibble, a factor or date column) R's map_row() takes them.
/// Asked once per map, on the host (map_native() in R/map.R).
pub fn mirai_map_plain_rows(x: SEXP) -> RResult {
    lgl(plain_rows(x))
}

fn plain_rows(x: SEXP) -> bool {
    let class = class_attr(x);
    let plain_df = type_of(class) == STRSXP && len(class) == 1 && with_str_at(class, 0, |b| b == b"data.frame");
    let plain = |col: SEXP| (is_plain_atomic(col) || is_list(col)) && !has_class(col);
    plain_df && list_names(x).is_some() && (0..len(x)).all(|c| plain(list_at(x, c)))
}

/// Row `i` (1-based) of data frame `x`, one whose rows are plain
/// (`plain_rows`), as `lapply(x, `[[`, i)` gives it. None for another
/// data frame, or a row out of range.
fn row_of(x: SEXP, i: SEXP) -> Result<Option<Owned>, RError> {
    if !plain_rows(x) || !matches!(type_of(i), INTSXP | REALSXP) || len(i) != 1 {
        return Ok(None);
    }
    let Some(names) = list_names(x) else { return Ok(None) };
    let i = f64_arg(i, "i")?;
    let cols: Vec<SEXP> = (0..len(x)).map(|c| list_at(x, c)).collect();
    if !(i >= 1.0 && cols.iter().all(|&col| i <= len(col) as f64)) {
        return Ok(None);
    }
    row_list(&cols, i as usize - 1, names).map(Some)
}

/// map_call() (R/map.R), on a daemon: `.f(<x>, <args>)` evaluated in
/// `env` (map_call()'s frame, where `.f` is bound), as one `.Call` rather
/// than R's `lapply()` with a closure per argument and `do.call()`. With
/// `data` (a data frame whose rows are plain, as the host found), `x` is
/// a row number in a list of one (sent as a vector's element is) and
/// `.f`'s first arguments are that row's columns, taken here: a
/// data-frame map's element costs the same calls as a vector's.
pub fn mirai_map_apply(x: SEXP, args: SEXP, data: SEXP, env: SEXP) -> RResult {
    static F: MainOnce<SEXP> = MainOnce::new();
    let f = *F.get(|| install(c".f"))?;
    if is_null(data) {
        return call_with(f, x, args, env);
    }
    // Kept alive by `x`, an argument.
    let x = if is_list(x) && len(x) == 1 { list_at(x, 0) } else { x };
    let row = match row_of(data, x)? {
        Some(row) => row,
        // A row past the end of a column (a data frame made by hand, its
        // row names longer than a column): R's way, and R's error.
        None => {
            let call = lang(&Lang::Call(install(c"map_row")?, vec![(nil(), Lang::Value(data)), (nil(), Lang::Value(x))]))?;
            eval_in(call.sexp(), env)?
        }
    };
    call_with(f, row.sexp(), args, env)
}

/// Submits a map: `shared` (a list `list(._expr_., ._globals_., ._args_.)`
/// whose `._args_.` starts with a placeholder for the element, see
/// map_shared() in R/map.R) once per daemon, then one task per element of
/// `items`: with `wrap` 0 a list of the elements as they are sent, with 1
/// a list whose elements are each sent wrapped in a list of one, with 2 a
/// plain logical, integer, double or character vector (no attributes
/// but names) whose elements are sent each as a vector of one wrapped in a
/// list of one (what `lapply(as.list(x), list)` gives, without making it). Every
/// frame is built before any is queued, so an element that cannot be
/// serialized fails the call with nothing sent. Returns the map's handle.
pub fn mirai_map_submit(p: SEXP, shared: SEXP, items: SEXP, wrap: SEXP, retry: SEXP) -> RResult {
    let prof = profile(&p)?;
    let retries = retries(retry)?;
    let cfg = kept(p);
    let wrap = f64_arg(wrap, "wrap")? as i32;
    let atomic = wrap == 2;
    if !(if atomic { is_plain_atomic(items) } else { is_list(items) }) {
        return Err("`items` must be a list, or a plain atomic vector".into());
    }
    let elt = if atomic { Some(atomic_holder(items)?) } else { None };
    let mut blob = Vec::new();
    serialize_part(shared, cfg, &mut blob, "the map's function and arguments")?;
    let digest = ring::digest::digest(&ring::digest::SHA256, &blob);
    let mut hash = [0u8; 32];
    hash.copy_from_slice(digest.as_ref());
    let host = &prof.host;
    let sid = host.share_id(hash).map_err(host_failed)?;
    let n = len(items);
    let holder = new_list(1)?;
    let template = match &elt {
        Some(e) if n > 0 => element_template(e, &holder, items, cfg)?,
        _ => None,
    };
    let mut head = Vec::with_capacity(32);
    // A template's elements hold no string: they go without R's header
    // (`Msg::Bare`), which the daemon puts back.
    let skip = match &template {
        Some((bytes, _)) => {
            let h = crate::r::layer::plain::header()?;
            if bytes.starts_with(h) { h.len() } else { 0 }
        }
        None => 0,
    };
    // Each element is built here and copied out at its size (see
    // `host::exact_frame`).
    let mut scratch = take_scratch();
    let mut tasks = Vec::with_capacity(n);
    let first = host.next_task_ids(n);
    let mut slots = Vec::with_capacity(n);
    for i in 0..n {
        let id = first + i as TaskId;
        if let Some((bytes, width)) = &template {
            if skip > 0 {
                bare_head_into(host.framing, id, sid, &mut head);
            } else {
                item_head_into(host.framing, id, sid, &mut head);
            }
            let mut frame = Vec::new();
            if frame.try_reserve_exact(head.len() + bytes.len() - skip + 1).is_err() {
                return Err("cannot allocate memory to serialize the map".into());
            }
            frame.extend_from_slice(&head);
            frame.extend_from_slice(&bytes[skip..bytes.len() - width]);
            push_binary_elt(items, i, &mut frame)?;
            frame.push(TASK_WHOLE);
            let slot = Slot::new(host.bell.clone());
            slots.push(slot.clone());
            tasks.push((id, frame, slot));
            continue;
        }
        item_head_into(host.framing, id, sid, &mut scratch);
        let elem = match &elt {
            Some(e) => {
                copy_atomic_elt(e, items, i)?;
                set_list_elt(&holder, 0, e.sexp());
                holder.sexp()
            }
            None if wrap == 1 => {
                set_list_elt(&holder, 0, list_at(items, i));
                holder.sexp()
            }
            None => list_at(items, i),
        };
        serialize_part(elem, cfg, &mut scratch, &format!("element {} of `.x`", i + 1))?;
        if scratch.try_reserve_exact(1).is_err() {
            return Err("cannot allocate memory to serialize the map".into());
        }
        scratch.push(TASK_WHOLE);
        let frame = exact_frame(&mut scratch);
        let slot = Slot::new(host.bell.clone());
        slots.push(slot.clone());
        tasks.push((id, frame, slot));
    }
    put_scratch(scratch);
    host.submit_map(blob, hash, sid, tasks, retries).map_err(host_failed)?;
    // From here every task is queued: should R fail to make the handle,
    // they are cancelled rather than left where nothing can collect them.
    let m = MapHandle { profile: prof.clone(), first, slots };
    let keep = match list(&[cfg, nil(), nil()], &[]) {
        Ok(k) => k,
        Err(e) => {
            (0..n).for_each(|i| {
                prof.host.cancel(m.id(i), crate::host::sched::ERR_CANCELED);
            });
            return Err(e);
        }
    };
    new_handle(m, keep.sexp())
}

/// The serialization of a plain logical, integer or double vector's first
/// element as sent (a vector of one in a list of one), and the width of the
/// value it ends with, when it does end so: every other element's is the
/// same bytes but that value, written natively (`push_binary_elt`). R's
/// serializer makes a reference table (a list of 1,099, about 8.8 KB of
/// R's heap) per call: per element of a large map, that garbage grew the
/// process by hundreds of bytes per queued element and cost time to make
/// and collect. None (each element serialized by R) for a character
/// vector, or should the bytes not end as expected.
fn element_template(holder: &Owned, list1: &Owned, items: SEXP, cfg: SEXP) -> Result<Option<(Vec<u8>, usize)>, RError> {
    let Some(width) = binary_width(items) else { return Ok(None) };
    copy_atomic_elt(holder, items, 0)?;
    set_list_elt(list1, 0, holder.sexp());
    let mut bytes = Vec::new();
    serialize_part(list1.sexp(), cfg, &mut bytes, "element 1 of `.x`")?;
    let mut tail = 1u32.to_ne_bytes().to_vec();
    push_binary_elt(items, 0, &mut tail)?;
    // The value, after its vector's length (1), last: nothing follows it
    // (no attribute, no trailer from a custom serializer).
    Ok(bytes.ends_with(&tail).then_some((bytes, width)))
}

/// Element `i` (from 0): its index checked against the map.
fn index(m: &MapHandle, i: SEXP) -> Result<usize, RError> {
    let k = f64_arg(i, "i")?;
    if !(k >= 1.0 && k <= m.slots.len() as f64 && k.fract() == 0.0) {
        return Err(format!("subscript out of bounds: the map has {} elements", m.slots.len()).into());
    }
    Ok(k as usize - 1)
}

/// The value of element `i` once resolved (waiting, interruptibly, if
/// `wait`); None if not resolved and not waiting.
fn value_at(m: &MapHandle, h: SEXP, i: usize, wait: bool) -> Result<Option<Owned>, RError> {
    let unresolved = object::unresolved()?;
    let v = part_at(h, VALUES, i)?;
    if v != unresolved {
        return Ok(Some(Owned::reachable(v)));
    }
    let slot = &m.slots[i];
    if wait {
        wait_slot(slot)?;
    } else if !slot.is_done() {
        return Ok(None);
    }
    let mirai = part_at(h, MIRAI, i)?;
    let v = match slot.take() {
        Some(o) => {
            let v = outcome_to_sexp(o, part(h, CFG)?)?;
            if !is_null(mirai) {
                let ah = object::aio_of(mirai)?;
                aio(&ah)?;
                cache(ah, v.sexp())?;
            }
            v
        }
        // Taken by the element's mirai, which cached it.
        None => Owned::reachable(cached_of(mirai)?),
    };
    // `v` stays protected while the list is made.
    let values = made_part(h, VALUES, m.slots.len())?;
    set_list_elt(&Owned::reachable(values), i, v.sexp());
    Ok(Some(v))
}

/// `mp[]` without progress: waits for the elements in order and returns
/// the list of their values. With `stop` TRUE, the first error value ends
/// the collection: its index (from 1) comes back instead.
pub fn mirai_map_collect(h: SEXP, stop: SEXP) -> RResult {
    let m = map(&h)?;
    let stop = bool_arg(stop, "stop")?;
    let n = m.slots.len();
    let out = new_list(n)?;
    for i in 0..n {
        let v = value_at(m, h, i, true)?.ok_or("internal error in mirai: a map element resolved without a value")?;
        if stop && is_error_value(v.sexp()) {
            return int(i as i32 + 1);
        }
        set_list_elt(&out, i, v.sexp());
    }
    Ok(out)
}

fn is_error_value(v: SEXP) -> bool {
    crate::r::layer::lang::inherits(v, c"errorValue")
}

/// The value of element `i` (from 1), waiting for it.
pub fn mirai_map_value(h: SEXP, i: SEXP) -> RResult {
    let m = map(&h)?;
    let i = index(m, i)?;
    value_at(m, h, i, true)?.ok_or_else(|| "internal error in mirai: a map element resolved without a value".into())
}

/// `mp[[i]]`: the mirai of element `i` (from 1), made on first request.
pub fn mirai_map_element(h: SEXP, i: SEXP) -> RResult {
    let m = map(&h)?;
    let i = index(m, i)?;
    let existing = part_at(h, MIRAI, i)?;
    if !is_null(existing) {
        return Ok(Owned::reachable(existing));
    }
    let a = Aio::new(m.slots[i].clone(), m.id(i), m.profile.clone());
    let cfg = part(h, CFG)?;
    let value = part_at(h, VALUES, i)?;
    let made = new_aio(a, cfg)?;
    if value != object::unresolved()? {
        cache(object::aio_of(made.sexp())?, value)?;
    }
    let mirai = made_part(h, MIRAI, m.slots.len())?;
    set_list_elt(&Owned::reachable(mirai), i, made.sexp());
    Ok(made)
}

/// The task ids of the elements, in order (doubles), for
/// `daemons_timeline()`.
pub fn mirai_map_ids(h: SEXP) -> RResult {
    let m = map(&h)?;
    reals(&(0..m.slots.len()).map(|i| m.id(i) as f64).collect::<Vec<f64>>())
}

/// The number of elements resolved.
pub fn mirai_map_resolved(h: SEXP) -> RResult {
    let m = map(&h)?;
    int(m.slots.iter().filter(|s| s.is_done()).count() as i32)
}

/// The relay inbox of the profile map handle `h` was submitted to.
pub(super) fn map_inbox(h: SEXP) -> Result<Arc<crate::host::relay::Inbox>, RError> {
    Ok(map(&h)?.profile.host.relay.clone())
}

/// Whether each element has resolved (a logical vector).
pub fn mirai_map_done(h: SEXP) -> RResult {
    let done: Vec<i32> = map(&h)?.slots.iter().map(|s| s.is_done() as i32).collect();
    lgls(&done)
}

/// Waits (interruptibly) for every element.
pub fn mirai_map_wait(h: SEXP) -> RResult {
    for s in &map(&h)?.slots {
        wait_slot(s)?;
    }
    Ok(Owned::nil())
}

/// `stop_mirai()` on a map: cancels every element; for each, TRUE if the
/// dispatcher found its task.
pub fn mirai_map_cancel(h: SEXP) -> RResult {
    let m = map(&h)?;
    let pending: Vec<usize> = (0..m.slots.len()).filter(|&i| !m.slots[i].is_done()).collect();
    let ids: Vec<TaskId> = pending.iter().map(|&i| m.id(i)).collect();
    // One call for the lot (see `Sched::cancel_many`), then each slot
    // completes as `cancel` completes a single mirai's.
    let hits = m.profile.host.cancel_many(&ids, ERR_CANCELED);
    let mut found = vec![0i32; m.slots.len()];
    for (k, &i) in pending.iter().enumerate() {
        found[i] = (hits[k] && m.profile.host.dispatcher) as i32;
        m.slots[i].complete(Outcome::Error(ERR_CANCELED));
    }
    lgls(&found)
}
