//! A map's shared part over a real socket (`Host::submit_map`): a daemon
//! receives each share once, before the first element that needs it; a
//! later map with the same content sends none; more distinct shares than
//! the daemon's cache slots evict the least recently used one, which is
//! sent again (into the slot the host chose) when it is needed again.
//! The peer is a bare `ClientConn` that records what arrives, standing in
//! for the daemon, and checks every element against the slots it holds.

mod common;

use mirai::daemon::client::{ClientConn, Incoming};
use mirai::host::aio::{Doorbell, Slot};
use mirai::host::{item_head_into, Host};
use mirai::wire::frame::task_payload;
use mirai::wire::proto::SHARE_SLOTS;
use mirai::wire::url::Address;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn host_and_daemon(dispatcher: bool) -> (Host, ClientConn) {
    let opts = common::host_options(dispatcher);
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let url = format!("abstract://mirai-share-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
    let host = Host::start(&Address::parse(&url).unwrap(), opts).unwrap();
    let d = ClientConn::connect(
        &Address::parse(&host.url).unwrap(),
        "s3cret",
        1 << 40,
        Some(Instant::now() + Duration::from_secs(10)),
        || true,
    )
    .unwrap();
    let until = Instant::now() + Duration::from_secs(10);
    while host.stats.connections.load(Ordering::Relaxed) < 1 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(5));
    }
    (host, d)
}

/// Submits a map of `n` elements whose shared part is `content`; returns
/// the element ids.
fn submit(host: &Host, content: &[u8], n: usize) -> Vec<u64> {
    let digest = ring::digest::digest(&ring::digest::SHA256, content);
    let mut hash = [0u8; 32];
    hash.copy_from_slice(digest.as_ref());
    let sid = host.share_id(hash).unwrap();
    let bell = Arc::new(Doorbell::default());
    let mut items = Vec::new();
    let mut ids = Vec::new();
    for k in 0..n {
        let id = host.next_task_id();
        let mut frame = Vec::new();
        item_head_into(host.framing, id, sid, &mut frame);
        frame.extend_from_slice(format!("elem{k}").as_bytes());
        frame.push(mirai::wire::frame::TASK_WHOLE);
        items.push((id, frame, Slot::new(bell.clone())));
        ids.push(id);
    }
    host.submit_map(content.to_vec(), hash, sid, items, 0).unwrap();
    ids
}

/// What the stand-in daemon holds and has seen.
#[derive(Default)]
struct Peer {
    slots: [Option<(u64, Vec<u8>)>; SHARE_SLOTS],
    shares_received: usize,
}

impl Peer {
    /// Receives and answers `n` elements; each must find its share in a
    /// slot. Returns the shared contents the elements ran with.
    fn run(&mut self, d: &mut ClientConn, n: usize) -> Vec<Vec<u8>> {
        let mut seen = Vec::new();
        let until = Instant::now() + Duration::from_secs(20);
        while seen.len() < n {
            assert!(Instant::now() < until, "elements did not arrive");
            match d.recv(Duration::from_millis(100)).unwrap() {
                Incoming::Share { sid, slot, body, offset } => {
                    let content = task_payload(&body[offset..]).expect("a whole share").to_vec();
                    self.slots[slot as usize] = Some((sid, content));
                    self.shares_received += 1;
                }
                Incoming::Task { id, body, offset, sid, .. } => {
                    let sid = sid.expect("an element of a map");
                    assert!(task_payload(&body[offset..]).is_some());
                    let held = self.slots.iter().flatten().find(|(s, _)| *s == sid).expect("its share arrived first");
                    seen.push(held.1.clone());
                    let mut r = d.begin_result(id, false, false);
                    r.extend_from_slice(b"ok");
                    d.send(r).unwrap();
                }
                Incoming::Nothing => {}
                _ => panic!("unexpected message"),
            }
        }
        seen
    }
}

#[test]
fn a_share_goes_once_per_daemon_and_is_reused_by_later_maps() {
    for dispatcher in [true, false] {
        let (host, mut d) = host_and_daemon(dispatcher);
        let mut peer = Peer::default();
        let big = vec![7u8; 3 << 20];
        let before = host.stats.sent_bytes.load(Ordering::Relaxed);
        submit(&host, &big, 50);
        let seen = peer.run(&mut d, 50);
        assert!(seen.iter().all(|s| s[..] == big[..]));
        assert_eq!(peer.shares_received, 1);
        let sent = host.stats.sent_bytes.load(Ordering::Relaxed) - before;
        assert!(sent > big.len() as u64 && sent < big.len() as u64 + 50 * 200, "{sent} bytes sent");
        // The same content in a new map: not sent again.
        submit(&host, &big, 20);
        peer.run(&mut d, 20);
        assert_eq!(peer.shares_received, 1);
        // Different content: sent, and used.
        let other = vec![8u8; 1000];
        submit(&host, &other, 5);
        assert!(peer.run(&mut d, 5).iter().all(|s| s[..] == other[..]));
        assert_eq!(peer.shares_received, 2);
    }
}

#[test]
fn more_shares_than_slots_evict_the_least_recently_used() {
    let (host, mut d) = host_and_daemon(true);
    let mut peer = Peer::default();
    let contents: Vec<Vec<u8>> = (0..SHARE_SLOTS as u8 + 2).map(|k| vec![k; 100 + k as usize]).collect();
    // Fill the slots, then one more: the first one goes.
    for c in &contents[..=SHARE_SLOTS] {
        submit(&host, c, 2);
        assert!(peer.run(&mut d, 2).iter().all(|s| s == c));
    }
    assert_eq!(peer.shares_received, SHARE_SLOTS + 1);
    // The second is still held; the first is sent again.
    submit(&host, &contents[1], 2);
    assert!(peer.run(&mut d, 2).iter().all(|s| *s == contents[1]));
    assert_eq!(peer.shares_received, SHARE_SLOTS + 1);
    submit(&host, &contents[0], 2);
    assert!(peer.run(&mut d, 2).iter().all(|s| *s == contents[0]));
    assert_eq!(peer.shares_received, SHARE_SLOTS + 2);
    // Two maps at once, interleaved on one daemon, each element with its own share.
    submit(&host, &contents[SHARE_SLOTS + 1], 3);
    submit(&host, &contents[2], 3);
    let seen = peer.run(&mut d, 6);
    assert_eq!(seen.iter().filter(|s| **s == contents[SHARE_SLOTS + 1]).count(), 3);
    assert_eq!(seen.iter().filter(|s| **s == contents[2]).count(), 3);
}
