//! Withdrawing tasks from a connection's write queue, over real sockets of
//! every kind (Unix, TCP, TLS, WebSocket, WebSocket over TLS): a daemon
//! that does not read holds one large frame partly written and, behind it,
//! a task pinned to it (a cluster node's, written at once whatever the
//! backlog); a third task waits in the host's queue, as no daemon can take
//! bytes. All three are cancelled. The pinned one must leave the write
//! queue at once (no longer counted as executing), the partly written one
//! must still arrive whole in length but marked as withdrawn, and the
//! stream must stay well-formed: the next task arrives intact once the
//! daemon drains its socket, and is answered.

mod common;
use common::wait_for;

use mirai::host::aio::{Doorbell, Outcome, Slot};
use mirai::daemon::client::{ClientConn, Incoming};
use mirai::wire::frame::task_payload;
use mirai::host::Host;
use mirai::host::sched::ERR_CANCELED;
use mirai::wire::tls;
use mirai::wire::url::Address;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Larger than what loopback TCP buffers take (several MB with autotuning).
const BIG: usize = 48 << 20;

fn task_frame(host: &Host, id: u64, payload: &[u8]) -> Vec<u8> {
    host.task_frame(id, |f| {
        f.extend_from_slice(payload);
        Ok::<(), String>(())
    })
    .unwrap()
}

/// A host at `url` and one daemon connected to it.
fn host_and_daemon(url: &str, dispatcher: bool) -> (Host, ClientConn) {
    let addr = Address::parse(url).unwrap();
    let tls = matches!(&addr, Address::Tcp { tls: true, .. });
    let creds = tls.then(|| tls::generated_creds("127.0.0.1").unwrap());
    let host = Host::start_with(&addr, common::host_options(dispatcher), creds.as_ref().map(|c| c.config.clone())).unwrap();
    let client_cfg = creds.as_ref().map(|c| tls::client_config(&c.chain_pem).unwrap());
    let dial = Address::parse(&host.url).unwrap();
    let d = ClientConn::connect_with(
        &dial,
        client_cfg.as_ref(),
        "s3cret",
        1 << 40,
        Some(Instant::now() + Duration::from_secs(10)),
        false,
        || true,
    )
    .unwrap();
    assert!(wait_for(|| host.stats.connections.load(Ordering::Relaxed) == 1, 10), "{url}: no daemon");
    (host, d)
}

fn next_task(d: &mut ClientConn, what: &str) -> (u64, Vec<u8>, usize) {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < until, "{what}: no task arrived");
        match d.recv(Duration::from_millis(200)).unwrap() {
            Incoming::Task { id, body, offset, .. } => return (id, body, offset),
            Incoming::Nothing | Incoming::Share { .. } => continue,
            Incoming::Closed => panic!("{what}: the host closed the connection"),
            Incoming::Exit => panic!("{what}: the host said exit"),
            Incoming::Broken(why) => panic!("{what}: the host broke the protocol: {why}"),
        }
    }
}

fn answer(d: &mut ClientConn, id: u64, payload: &[u8]) {
    let mut r = d.begin_result(id, false, false);
    r.extend_from_slice(payload);
    d.send(r).unwrap();
}

fn withdraw_over(url: &str, dispatcher: bool) {
    let (host, mut d) = host_and_daemon(url, dispatcher);
    let executing = || host.stats.executing.load(Ordering::Relaxed);
    let bell = Arc::new(Doorbell::default());
    let awaiting = || host.stats.awaiting.load(Ordering::Relaxed);
    let big = vec![7u8; BIG];
    // The daemon reads nothing yet: `a` is partly written; `b`, pinned to
    // the daemon, is queued behind it (with a dispatcher it waits for the
    // daemon to be idle instead); `c` waits in the host's queue.
    let ids: Vec<u64> = (0..3).map(|_| host.next_task_id()).collect();
    let slots: Vec<Arc<Slot>> = (0..3).map(|_| Slot::new(bell.clone())).collect();
    host.submit(ids[0], task_frame(&host, ids[0], &big), slots[0].clone(), None).unwrap();
    host.submit_to_node(ids[1], task_frame(&host, ids[1], &big), slots[1].clone(), 0).unwrap();
    host.submit(ids[2], task_frame(&host, ids[2], &big), slots[2].clone(), None).unwrap();
    drop(big);
    let (on_daemon, waiting) = if dispatcher { (1, 2) } else { (2, 1) };
    assert_eq!((executing(), awaiting()), (on_daemon, waiting), "{url}");
    for (id, slot) in ids.iter().zip(&slots) {
        assert!(host.cancel(*id, ERR_CANCELED));
        assert!(matches!(slot.take(), Some(Outcome::Error(ERR_CANCELED))));
    }
    // Only `a`, partly written, is left: it waits for its answer.
    assert_eq!((executing(), awaiting()), (1, 0), "{url}: a withdrawn task is still counted");
    let a = ids[0];
    // The next task waits: the daemon has the rest of `a` to read first.
    let next = host.next_task_id();
    let sn = Slot::new(bell.clone());
    host.submit(next, task_frame(&host, next, b"after"), sn.clone(), None).unwrap();
    assert_eq!(awaiting(), 1, "{url}");

    // The daemon wakes up: `a` arrives at its full length, marked withdrawn.
    let (id, body, offset) = next_task(&mut d, url);
    assert_eq!(id, a, "{url}");
    assert_eq!(body.len() - offset, BIG + 1, "{url}: the withdrawn frame changed length");
    assert_eq!(task_payload(&body[offset..]), None, "{url}: a withdrawn task looks whole");
    drop(body);
    answer(&mut d, a, b"an error the host ignores");
    // Then the next one, intact: the stream is still well-formed.
    let (id, body, offset) = next_task(&mut d, url);
    assert_eq!(id, next, "{url}: expected the task after the withdrawn one");
    assert_eq!(task_payload(&body[offset..]), Some(&b"after"[..]), "{url}");
    answer(&mut d, next, b"fine");
    let until = Instant::now() + Duration::from_secs(10);
    while !sn.wait(Duration::from_millis(100)) {
        assert!(Instant::now() < until, "{url}: the next task was never answered");
    }
    match sn.take() {
        Some(Outcome::Value { body, offset }) => assert_eq!(&body[offset..], b"fine"),
        _ => panic!("{url}: the next task did not resolve to its answer"),
    }
    assert!(wait_for(|| executing() == 0, 5), "{url}: the withdrawn task's answer was not taken");
    assert_eq!(host.stats.completed.load(Ordering::Relaxed), 1, "{url}: only the live task completes");
    // The cancelled `b` and `c` were never sent.
    assert!(matches!(d.recv(Duration::from_millis(200)).unwrap(), Incoming::Nothing), "{url}");
    host.shutdown(false);
}

const URLS: [&str; 5] = [
    "abstract://mirai-withdraw-test-{pid}",
    "tcp://127.0.0.1:0",
    "tls+tcp://127.0.0.1:0",
    "ws://127.0.0.1:0/w",
    "wss://127.0.0.1:0/w",
];

fn url(u: &str) -> String {
    u.replace("{pid}", &format!("{}-{:?}", std::process::id(), Instant::now()))
}

#[test]
fn withdrawn_tasks_leave_the_write_queue_on_every_transport() {
    for u in URLS {
        withdraw_over(&url(u), false);
    }
}

#[test]
fn withdrawn_task_with_a_dispatcher_frees_its_daemon() {
    for u in [URLS[0], URLS[2]] {
        withdraw_over(&url(u), true);
    }
}
