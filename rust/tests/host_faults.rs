//! Faults and hostile peers at the host and the daemon, over real sockets:
//! a failed event loop resolves everything, a silent peer is dropped at the
//! Hello deadline, a flood of silent peers cannot lock daemons out, a wrong
//! secret or a replayed Hello is refused and counted, the secret never
//! crosses the wire, a daemon runs nothing for a host that cannot prove it
//! holds the secret (wrong, missing, reflected or replayed proofs), an
//! unauthenticated TLS or WebSocket peer gets a few KiB of reads, and a
//! daemon keeps control of its deadlines facing a host or a squatter that
//! stalls at any step.

mod common;
use common::wait_for;

use mirai::host::aio::{Doorbell, Outcome, Slot};
use mirai::wire::auth::{self, Prover};
use mirai::wire::decoder::Decoder;
use mirai::daemon::client::{ClientConn, Incoming};
use mirai::wire::frame::{strip_hop, Framing, SP_HEADER};
use mirai::host::{Host, HELLO_TIMEOUT, MAX_PENDING};
use mirai::wire::proto::{self, Msg, NONCE_LEN, PROTOCOL_VERSION};
use mirai::wire::url::Address;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn tcp_host() -> (Host, Address) {
    let host = Host::start(&Address::parse("tcp://127.0.0.1:0").unwrap(), common::host_options(true)).unwrap();
    let addr = Address::parse(&host.url).unwrap();
    (host, addr)
}

fn port(host: &Host) -> u16 {
    host.url.rsplit(':').next().unwrap().parse().unwrap()
}

fn task_frame(host: &Host, id: u64, payload: &[u8]) -> Vec<u8> {
    host.task_frame(id, |f| {
        f.extend_from_slice(payload);
        Ok::<(), String>(())
    })
    .unwrap()
}

fn daemon(addr: &Address) -> ClientConn {
    ClientConn::connect(addr, "s3cret", 1 << 40, Some(Instant::now() + Duration::from_secs(10)), || true).unwrap()
}

#[test]
fn a_failed_event_loop_resolves_every_pending_task_and_refuses_more() {
    let (host, addr) = tcp_host();
    let mut d = daemon(&addr);
    assert!(wait_for(|| host.stats.connections.load(Ordering::Relaxed) == 1, 5));
    let slots: Vec<Arc<Slot>> = (0..4)
        .map(|_| {
            let id = host.next_task_id();
            let slot = Slot::new(host.bell.clone());
            host.submit(id, task_frame(&host, id, b"x"), slot.clone(), None).unwrap();
            slot
        })
        .collect();
    // One task is in flight on the daemon, three wait in the queue.
    assert!(matches!(d.recv(Duration::from_secs(5)).unwrap(), Incoming::Task { .. }));
    host.inject_fault();
    assert!(wait_for(|| slots.iter().all(|s| s.is_done()), 5), "pending tasks stayed unresolved");
    for s in &slots {
        assert!(matches!(s.take(), Some(Outcome::Error(19))));
    }
    let why = host.failure().expect("the host reports its failure");
    assert!(why.contains("event loop stopped"), "{why}");
    let id = host.next_task_id();
    let err = host.submit(id, task_frame(&host, id, b"y"), Slot::new(Arc::new(Doorbell::default())), None);
    assert!(err.unwrap_err().contains("fault injected"));
    assert!(host.broadcast(vec![1, 2, 3], 0).is_err());
    assert!(!host.cancel(1, 20));
    // The daemon sees its host go.
    let mut closed = false;
    for _ in 0..50 {
        if let Incoming::Closed = d.recv(Duration::from_millis(100)).unwrap() {
            closed = true;
            break;
        }
    }
    assert!(closed, "the daemon's connection stayed open");
    drop(host); // must not hang or panic on the poisoned lock
}

#[test]
fn a_silent_peer_is_dropped_at_the_hello_deadline() {
    let (host, _addr) = tcp_host();
    let mut s = TcpStream::connect(("127.0.0.1", port(&host))).unwrap();
    s.write_all(&SP_HEADER).unwrap();
    s.set_read_timeout(Some(HELLO_TIMEOUT + Duration::from_secs(5))).unwrap();
    let start = Instant::now();
    let mut buf = [0u8; 64];
    let mut got = 0;
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) => panic!("not dropped within the deadline: {e}"),
        }
    }
    let took = start.elapsed();
    // SP header, then the Challenge frame: length, hop count, variant,
    // version, nonce.
    assert_eq!(got, SP_HEADER.len() + 8 + 4 + 2 + NONCE_LEN, "the host sends only its SP header and Challenge");
    assert!(took >= HELLO_TIMEOUT - Duration::from_millis(200), "dropped too early: {took:?}");
    assert!(took < HELLO_TIMEOUT + Duration::from_secs(3), "dropped too late: {took:?}");
    assert!(wait_for(|| host.stats.refused.load(Ordering::Relaxed) == 1, 2));
}

#[test]
fn silent_peers_beyond_the_cap_make_room_and_daemons_still_join() {
    let (host, addr) = tcp_host();
    let extra = 10;
    let silent: Vec<TcpStream> = (0..MAX_PENDING + extra)
        .map(|_| {
            let mut s = TcpStream::connect(("127.0.0.1", port(&host))).unwrap();
            s.write_all(&SP_HEADER).unwrap();
            s
        })
        .collect();
    // The oldest are dropped at once, not at their deadline.
    assert!(wait_for(|| host.stats.refused.load(Ordering::Relaxed) >= extra as u64, 2));
    let start = Instant::now();
    let mut d = daemon(&addr);
    assert!(start.elapsed() < Duration::from_secs(2), "a daemon waited behind silent peers");
    assert!(wait_for(|| host.stats.connections.load(Ordering::Relaxed) == 1, 2));
    let id = host.next_task_id();
    let slot = Slot::new(host.bell.clone());
    host.submit(id, task_frame(&host, id, b"payload"), slot, None).unwrap();
    match d.recv(Duration::from_secs(5)).unwrap() {
        Incoming::Task { id: got, body, offset, .. } => {
            assert_eq!(got, id);
            assert_eq!(mirai::wire::frame::task_payload(&body[offset..]), Some(&b"payload"[..]));
        }
        _ => panic!("no task reached the daemon"),
    }
    drop(silent);
}

/// A fake host without a secret (as with `auth = FALSE`): accepts one
/// daemon that has none either, challenges it, answers its Hello with a
/// Welcome and an Init, then runs `then` on the connection.
fn fake_host(then: impl FnOnce(std::os::unix::net::UnixStream) + Send + 'static) -> Address {
    use std::os::linux::net::SocketAddrExt;
    let name = format!("mirai-test-fake-{}-{:?}", std::process::id(), Instant::now());
    let sa = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let l = std::os::unix::net::UnixListener::bind_addr(&sa).unwrap();
    std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut ch = SP_HEADER.to_vec();
        ch.extend(frame_of(Framing::Ipc, &Msg::Challenge { version: PROTOCOL_VERSION, nonce: [5; NONCE_LEN] }));
        s.write_all(&ch).unwrap();
        let _hello = Decoder::new(Framing::Ipc).next(&mut s).unwrap();
        let mut init = frame_of(Framing::Ipc, &Msg::Welcome { mac: None });
        let mut f = Vec::new();
        Framing::Ipc.begin(&mut f);
        proto::encode_into(&Msg::Init { version: PROTOCOL_VERSION, stream: None }, &mut f);
        Framing::Ipc.finish(&mut f);
        init.extend(f);
        s.write_all(&init).unwrap();
        then(s);
    });
    Address::parse(&format!("abstract://{name}")).unwrap()
}

#[test]
fn a_daemon_facing_a_host_stalled_mid_frame_keeps_its_limits() {
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let addr = fake_host(move |mut s| {
        // A task frame whose length claims 2^39 bytes, then 10 of them.
        let mut partial = vec![1u8];
        partial.extend((1u64 << 39).to_be_bytes());
        partial.extend([0, 0, 0, 1, 3, 1, 0, 0, 0, 0]);
        s.write_all(&partial).unwrap();
        let _ = rx.recv_timeout(Duration::from_secs(30));
    });
    let mut d = ClientConn::connect(&addr, "", 1 << 40, Some(Instant::now() + Duration::from_secs(5)), || true).unwrap();
    d.limits.idle = Some(Duration::from_millis(500));
    d.limits.last_active = Instant::now();
    let start = Instant::now();
    let mut slices = 0;
    loop {
        let slice = match d.limits.wait(Instant::now()) {
            Err(_) => break, // idle time reached: the daemon would exit
            Ok(w) => w.unwrap_or(Duration::from_millis(200)).min(Duration::from_millis(200)),
        };
        let t = Instant::now();
        assert!(matches!(d.recv(slice).unwrap(), Incoming::Nothing));
        assert!(t.elapsed() < Duration::from_secs(1), "recv blocked on a partial frame");
        slices += 1;
        assert!(start.elapsed() < Duration::from_secs(5), "the idle limit never applied");
    }
    assert!(slices >= 2);
    // Each call waited out its slice in poll: no busy loop on the partial
    // frame (which would make thousands of calls in 500 ms).
    assert!(slices <= 8, "recv returned at once {slices} times: it spins on a partial frame");
    drop(tx);
}

#[test]
fn a_daemon_resumes_a_frame_that_arrives_in_pieces() {
    let addr = fake_host(move |mut s| {
        let mut f = Vec::new();
        Framing::Ipc.begin(&mut f);
        proto::encode_into(&Msg::Task { id: 7 }, &mut f);
        f.extend(vec![9u8; 300_000]);
        Framing::Ipc.finish(&mut f);
        for chunk in f.chunks(100_000) {
            s.write_all(chunk).unwrap();
            std::thread::sleep(Duration::from_millis(150));
        }
        std::thread::sleep(Duration::from_secs(2));
    });
    let mut d = ClientConn::connect(&addr, "", 1 << 40, Some(Instant::now() + Duration::from_secs(5)), || true).unwrap();
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(Instant::now() < until, "the task never completed");
        match d.recv(Duration::from_millis(50)).unwrap() {
            Incoming::Nothing => continue,
            Incoming::Task { id, body, offset, .. } => {
                assert_eq!(id, 7);
                assert_eq!(body.len() - offset, 300_000);
                assert!(body[offset..].iter().all(|&b| b == 9));
                break;
            }
            _ => panic!("unexpected message"),
        }
    }
}

#[test]
fn a_daemon_refuses_a_frame_over_its_limit() {
    let addr = fake_host(move |mut s| {
        let mut claim = vec![1u8];
        claim.extend((1u64 << 30).to_be_bytes());
        s.write_all(&claim).unwrap();
        std::thread::sleep(Duration::from_secs(2));
    });
    let mut d = ClientConn::connect(&addr, "", 1 << 20, Some(Instant::now() + Duration::from_secs(5)), || true).unwrap();
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        assert!(Instant::now() < until, "an over-limit claim was not refused");
        match d.recv(Duration::from_millis(100)).unwrap() {
            Incoming::Nothing => continue,
            Incoming::Broken(why) => {
                assert!(why.contains("not a valid message"), "{why}");
                break;
            }
            _ => panic!("unexpected message"),
        }
    }
}

fn frame_of(f: Framing, m: &Msg) -> Vec<u8> {
    let mut b = Vec::new();
    f.begin(&mut b);
    proto::encode_into(m, &mut b);
    f.finish(&mut b);
    b
}

/// Reads the next message body of `d` and decodes it with `check`.
fn next_msg<T>(d: &mut Decoder, s: &mut TcpStream, check: impl FnOnce(Msg) -> T) -> T {
    let body = d.next(s).unwrap();
    let hop = strip_hop(&body).unwrap();
    check(proto::decode(&body[hop..]).unwrap().0)
}

/// A peer's side of the handshake by hand: returns the stream, its
/// decoder and the nonce the host challenged it with.
fn raw_peer(host: &Host) -> (TcpStream, Decoder, [u8; NONCE_LEN]) {
    let mut s = TcpStream::connect(("127.0.0.1", port(host))).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&SP_HEADER).unwrap();
    let mut d = Decoder::new(Framing::Tcp);
    let nonce = next_msg(&mut d, &mut s, |m| match m {
        Msg::Challenge { version: PROTOCOL_VERSION, nonce } => nonce,
        m => panic!("first message not a Challenge: {m:?}"),
    });
    (s, d, nonce)
}

#[test]
fn a_daemon_with_the_wrong_secret_is_refused_and_counted() {
    let (host, addr) = tcp_host();
    let err = ClientConn::connect(&addr, "not-the-secret", 1 << 40, Some(Instant::now() + Duration::from_secs(10)), || true)
        .err()
        .expect("a wrong secret was accepted");
    assert!(err.contains("not launched for this host"), "{err}");
    assert!(wait_for(|| host.stats.refused.load(Ordering::Relaxed) == 1, 5));
    assert_eq!(host.stats.connections.load(Ordering::Relaxed), 0);
    // The right one gets in.
    let _d = daemon(&addr);
    assert!(wait_for(|| host.stats.connections.load(Ordering::Relaxed) == 1, 5));
    assert_eq!(host.stats.refused.load(Ordering::Relaxed), 1);
}

#[test]
fn a_hello_replayed_from_an_earlier_connection_is_refused() {
    let (host, _addr) = tcp_host();
    // A genuine exchange, recorded.
    let (mut s1, mut d1, n1) = raw_peer(&host);
    let ours = [3u8; NONCE_LEN];
    let mac = auth::prove(b"s3cret", Prover::Daemon, &n1, &ours);
    let hello = frame_of(Framing::Tcp, &Msg::Hello { version: PROTOCOL_VERSION, nonce: ours, mac, pid: 1 });
    s1.write_all(&hello).unwrap();
    next_msg(&mut d1, &mut s1, |m| assert!(matches!(m, Msg::Welcome { mac: Some(_) }), "{m:?}"));
    next_msg(&mut d1, &mut s1, |m| assert!(matches!(m, Msg::Init { .. }), "{m:?}"));
    assert!(wait_for(|| host.stats.connections.load(Ordering::Relaxed) == 1, 5));
    // The same bytes on a new connection: a fresh nonce makes them worthless.
    let (mut s2, mut d2, n2) = raw_peer(&host);
    assert_ne!(n1, n2, "two connections got the same nonce");
    s2.write_all(&hello).unwrap();
    next_msg(&mut d2, &mut s2, |m| match m {
        Msg::Refused { reason } => assert!(reason.contains("not launched for this host"), "{reason}"),
        m => panic!("a replayed Hello got {m:?}"),
    });
    let mut rest = Vec::new();
    let _ = s2.read_to_end(&mut rest);
    assert!(rest.is_empty(), "the host sent more after Refused");
    assert!(wait_for(|| host.stats.refused.load(Ordering::Relaxed) == 1, 5));
    assert_eq!(host.stats.connections.load(Ordering::Relaxed), 1);
    // Nor does a Hello answering the other connection's nonce, once it is gone.
    drop(s1);
    let (mut s3, mut d3, _n3) = raw_peer(&host);
    s3.write_all(&hello).unwrap();
    next_msg(&mut d3, &mut s3, |m| assert!(matches!(m, Msg::Refused { .. }), "{m:?}"));
    assert!(wait_for(|| host.stats.refused.load(Ordering::Relaxed) == 2, 5));
}

#[test]
fn the_secret_never_crosses_the_wire() {
    const SECRET: &str = "c0ffee-distinctive-secret-4242";
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let nonce = [0x42u8; NONCE_LEN];
    let fake = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut w = SP_HEADER.to_vec();
        w.extend(frame_of(Framing::Tcp, &Msg::Challenge { version: PROTOCOL_VERSION, nonce }));
        s.write_all(&w).unwrap();
        // Everything the daemon sends until it has said its Hello.
        let mut wire = Vec::new();
        let mut buf = [0u8; 4096];
        let mut d = Decoder::new(Framing::Tcp);
        let hello = loop {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0, "the daemon hung up before its Hello");
            wire.extend_from_slice(&buf[..n]);
            if let Ok(b) = d.next(&mut std::io::Cursor::new(wire.clone())) {
                break b;
            }
            d = Decoder::new(Framing::Tcp);
        };
        let mut r = Vec::new();
        r.extend(frame_of(Framing::Tcp, &Msg::Refused { reason: "enough" }));
        s.write_all(&r).unwrap();
        (wire, hello)
    });
    let addr = Address::parse(&format!("tcp://127.0.0.1:{port}")).unwrap();
    let err = ClientConn::connect(&addr, SECRET, 1 << 40, Some(Instant::now() + Duration::from_secs(10)), || true).err();
    assert!(err.unwrap().contains("enough"));
    let (wire, hello) = fake.join().unwrap();
    let has = |needle: &[u8]| wire.windows(needle.len()).any(|w| w == needle);
    assert!(!has(SECRET.as_bytes()), "the secret was sent in clear");
    assert!(!has(&SECRET.as_bytes()[..8]), "part of the secret was sent in clear");
    let hop = strip_hop(&hello).unwrap();
    match proto::decode(&hello[hop..]).unwrap().0 {
        Msg::Hello { version, nonce: ours, mac, pid } => {
            assert_eq!(version, PROTOCOL_VERSION);
            assert_eq!(mac, auth::prove(SECRET.as_bytes(), Prover::Daemon, &nonce, &ours));
            assert_eq!(pid, std::process::id());
        }
        m => panic!("not a Hello: {m:?}"),
    }
}

/// What a daemon's Hello told a host playing by hand: the daemon's nonce
/// and its proof.
fn read_hello(s: &mut TcpStream) -> ([u8; NONCE_LEN], [u8; 32]) {
    let mut d = Decoder::new(Framing::Tcp);
    let mut hdr = [0u8; 8];
    s.read_exact(&mut hdr).unwrap();
    let mut wire = hdr.to_vec();
    let mut buf = [0u8; 4096];
    loop {
        if let Ok(b) = d.next(&mut std::io::Cursor::new(wire.clone())) {
            let hop = strip_hop(&b).unwrap();
            match proto::decode(&b[hop..]).unwrap().0 {
                Msg::Hello { nonce, mac, .. } => return (nonce, mac),
                m => panic!("not a Hello: {m:?}"),
            }
        }
        d = Decoder::new(Framing::Tcp);
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "the daemon hung up before its Hello");
        wire.extend_from_slice(&buf[..n]);
    }
}

/// A squatter at a TCP address: for every connection, challenges with
/// `host_nonce` (a fixed one unless None), reads the Hello, answers with
/// what `welcome` makes of (host nonce, daemon nonce, daemon proof), then
/// an Init and a task, and reports everything the daemon sent after its
/// Hello. Runs until `conns` connections were served.
fn squatter(
    l: std::net::TcpListener,
    conns: usize,
    host_nonce: Option<[u8; NONCE_LEN]>,
    welcome: impl Fn(&[u8; NONCE_LEN], &[u8; NONCE_LEN], &[u8; 32]) -> Msg<'static> + Send + 'static,
) -> std::thread::JoinHandle<Vec<Vec<u8>>> {
    std::thread::spawn(move || {
        let mut after = Vec::new();
        for i in 0..conns {
            let (mut s, _) = l.accept().unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let nonce = host_nonce.unwrap_or([i as u8 + 1; NONCE_LEN]);
            let mut w = SP_HEADER.to_vec();
            w.extend(frame_of(Framing::Tcp, &Msg::Challenge { version: PROTOCOL_VERSION, nonce }));
            s.write_all(&w).unwrap();
            let (theirs, mac) = read_hello(&mut s);
            let mut w = frame_of(Framing::Tcp, &welcome(&nonce, &theirs, &mac));
            w.extend(frame_of(Framing::Tcp, &Msg::Init { version: PROTOCOL_VERSION, stream: None }));
            let mut task = Vec::new();
            Framing::Tcp.begin(&mut task);
            proto::encode_into(&Msg::Task { id: 1 }, &mut task);
            task.extend_from_slice(b"not for you");
            Framing::Tcp.finish(&mut task);
            w.extend(task);
            let _ = s.write_all(&w);
            // Whatever the daemon sends now (it should send nothing, and
            // close).
            let mut rest = Vec::new();
            let _ = s.read_to_end(&mut rest);
            after.push(rest);
        }
        after
    })
}

fn refused_by_daemon(welcome: impl Fn(&[u8; NONCE_LEN], &[u8; NONCE_LEN], &[u8; 32]) -> Msg<'static> + Send + 'static) -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = Address::parse(&format!("tcp://127.0.0.1:{}", l.local_addr().unwrap().port())).unwrap();
    let fake = squatter(l, 1, None, welcome);
    let err = ClientConn::connect(&addr, "s3cret", 1 << 40, Some(Instant::now() + Duration::from_secs(10)), || true)
        .err()
        .expect("the daemon accepted a host that did not prove itself");
    let after = fake.join().unwrap();
    assert!(after[0].is_empty(), "the daemon sent {} bytes after its Hello", after[0].len());
    err
}

#[test]
fn a_daemon_refuses_a_host_without_the_secret() {
    // No proof at all (a host with auth = FALSE, or one that has no secret).
    let err = refused_by_daemon(|_, _, _| Msg::Welcome { mac: None });
    assert!(err.contains("did not prove") && err.contains("auth = FALSE"), "{err}");
    // A proof made with another secret.
    let err = refused_by_daemon(|h, d, _| Msg::Welcome { mac: Some(auth::prove(b"guess", Prover::Host, h, d)) });
    assert!(err.contains("did not prove that it holds this daemon's secret"), "{err}");
    // The daemon's own proof sent back (a reflection).
    let err = refused_by_daemon(|_, _, mac| Msg::Welcome { mac: Some(*mac) });
    assert!(err.contains("did not prove"), "{err}");
    // No Welcome: straight to the Init.
    let err = refused_by_daemon(|_, _, _| Msg::Init { version: PROTOCOL_VERSION, stream: None });
    assert!(err.contains("did not answer the handshake"), "{err}");
}

#[test]
fn a_host_proof_replayed_from_another_connection_is_refused() {
    // A real exchange with a real host, recorded by a peer that holds the
    // secret: the host's Welcome for (Nh, Nd1).
    let (host, _addr) = tcp_host();
    let (mut s, mut d, nh) = raw_peer(&host);
    let nd1 = [7u8; NONCE_LEN];
    let mac = auth::prove(b"s3cret", Prover::Daemon, &nh, &nd1);
    s.write_all(&frame_of(Framing::Tcp, &Msg::Hello { version: PROTOCOL_VERSION, nonce: nd1, mac, pid: 1 })).unwrap();
    let recorded = next_msg(&mut d, &mut s, |m| match m {
        Msg::Welcome { mac: Some(m) } => m,
        m => panic!("no Welcome: {m:?}"),
    });
    assert!(auth::verify(b"s3cret", Prover::Host, &nh, &nd1, &recorded));
    // A squatter challenges a real daemon with the same Nh and plays the
    // recorded proof: the daemon's own fresh nonce makes it worthless.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = Address::parse(&format!("tcp://127.0.0.1:{}", l.local_addr().unwrap().port())).unwrap();
    let fake = squatter(l, 1, Some(nh), move |_, theirs, _| {
        assert_ne!(*theirs, nd1, "the daemon reused a nonce");
        Msg::Welcome { mac: Some(recorded) }
    });
    let err = ClientConn::connect(&addr, "s3cret", 1 << 40, Some(Instant::now() + Duration::from_secs(10)), || true)
        .err()
        .expect("a replayed host proof was accepted");
    assert!(err.contains("did not prove"), "{err}");
    assert!(fake.join().unwrap()[0].is_empty());
}

#[test]
fn a_persistent_daemon_redials_past_a_squatter_to_the_real_host() {
    // A squatter holds the address for three connections, then goes; a
    // real host takes the address. A daemon that persists (autoexit =
    // FALSE) runs nothing for the squatter and joins the host.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let addr = Address::parse(&format!("tcp://127.0.0.1:{port}")).unwrap();
    let fake = squatter(l, 3, None, |h, d, _| Msg::Welcome { mac: Some(auth::prove(b"guess", Prover::Host, h, d)) });
    let a2 = addr.clone();
    let dialer = std::thread::spawn(move || {
        ClientConn::connect_with(&a2, None, "s3cret", 1 << 40, Some(Instant::now() + Duration::from_secs(30)), true, || true)
    });
    let after = fake.join().unwrap();
    assert_eq!(after.len(), 3);
    assert!(after.iter().all(|a| a.is_empty()), "the daemon answered a squatter");
    let host = Host::start(&Address::parse(&format!("tcp://127.0.0.1:{port}")).unwrap(), common::host_options(true)).unwrap();
    let mut d = dialer.join().unwrap().expect("the persistent daemon never joined the real host");
    assert!(wait_for(|| host.stats.connections.load(Ordering::Relaxed) == 1, 5));
    // And it works for the real host.
    let id = host.next_task_id();
    let slot = Slot::new(host.bell.clone());
    host.submit(id, task_frame(&host, id, b"real"), slot.clone(), None).unwrap();
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(Instant::now() < until, "no task from the real host");
        if let Incoming::Task { id: got, body, offset, .. } = d.recv(Duration::from_millis(100)).unwrap() {
            assert_eq!(got, id);
            assert_eq!(mirai::wire::frame::task_payload(&body[offset..]), Some(&b"real"[..]));
            break;
        }
    }
    // Without persist, the first squatter's failure is final.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = Address::parse(&format!("tcp://127.0.0.1:{}", l.local_addr().unwrap().port())).unwrap();
    let fake = squatter(l, 1, None, |_, _, _| Msg::Welcome { mac: None });
    let t0 = Instant::now();
    assert!(ClientConn::connect_with(&addr, None, "s3cret", 1 << 40, Some(Instant::now() + Duration::from_secs(30)), false, || true).is_err());
    assert!(t0.elapsed() < Duration::from_secs(10));
    fake.join().unwrap();
}

#[test]
fn a_daemon_of_another_version_is_told_why() {
    let (host, _addr) = tcp_host();
    let (mut s, mut d, _) = raw_peer(&host);
    // A version 3 Hello: version, MAC, pid (no nonce).
    let mut b = Vec::new();
    Framing::Tcp.begin(&mut b);
    b.extend([0u8, 3]);
    b.extend([9u8; 32]);
    b.push(1);
    Framing::Tcp.finish(&mut b);
    s.write_all(&b).unwrap();
    next_msg(&mut d, &mut s, |m| match m {
        Msg::Refused { reason } => assert!(reason.contains(&format!("host speaks {PROTOCOL_VERSION}, daemon speaks 3")), "{reason}"),
        m => panic!("{m:?}"),
    });
}

/// A client's WebSocket frame (masked, with a zero mask: the payload goes
/// as it is).
fn ws_client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126);
    let mut f = vec![0x80 | opcode, 0x80 | payload.len() as u8, 0, 0, 0, 0];
    f.extend_from_slice(payload);
    f
}

#[test]
fn a_daemon_gives_up_a_trickled_tls_handshake_at_its_deadline() {
    use mirai::wire::tls::CLIENT_HANDSHAKE_TIMEOUT;
    use std::sync::mpsc::{channel, RecvTimeoutError};
    // A "host" at a tls+tcp:// address that takes the daemon's ClientHello,
    // then sends a 16 KiB handshake record one byte every 500 ms: each read
    // gets its byte long before any per-read timeout. It needs no
    // certificate: nothing is verified before the record is complete.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let (stop, stopped) = channel::<()>();
    let fake = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let _ = s.read(&mut [0u8; 4096]);
        let mut record = vec![0x16, 3, 3, 0x40, 0, 2];
        record.resize(5 + 0x4000, 0);
        for b in record {
            if s.write_all(&[b]).is_err() {
                return;
            }
            if stopped.recv_timeout(Duration::from_millis(500)) != Err(RecvTimeoutError::Timeout) {
                return;
            }
        }
    });
    let (cert, _) = mirai::wire::tls::generate(&["127.0.0.1".into()]).unwrap();
    let tls = mirai::wire::tls::client_config(&cert).unwrap();
    let addr = Address::parse(&format!("tls+tcp://127.0.0.1:{port}")).unwrap();
    let (tx, rx) = channel();
    let start = Instant::now();
    std::thread::spawn(move || {
        let _ = tx.send(ClientConn::connect_with(&addr, Some(&tls), "s3cret", 1 << 40, None, false, || true).err());
    });
    let bound = CLIENT_HANDSHAKE_TIMEOUT + Duration::from_secs(5);
    let err = rx
        .recv_timeout(bound)
        .unwrap_or_else(|_| panic!("the daemon was still in the TLS handshake after {bound:?}"))
        .expect("the daemon connected to a host that never completed a TLS handshake");
    assert!(err.contains("no TLS handshake from the host"), "{err}");
    assert!(start.elapsed() >= CLIENT_HANDSHAKE_TIMEOUT - Duration::from_millis(500), "gave up early: {err}");
    drop(stop);
    fake.join().unwrap();
}

#[test]
fn a_persistent_daemon_facing_a_silent_squatter_ends_by_its_retry_limit() {
    // A daemon that persists (autoexit = FALSE) redials for as long as its
    // idle and wall time limits allow (`retry_until`), then ends. A squatter
    // that accepts and says nothing must not hold it past that limit: not
    // for the SP handshake's 30 s, nor the TLS handshake's or WebSocket
    // upgrade's 10 s.
    use std::sync::mpsc::channel;
    let (cert, _) = mirai::wire::tls::generate(&["127.0.0.1".into()]).unwrap();
    let tls = mirai::wire::tls::client_config(&cert).unwrap();
    for scheme in ["tcp", "tls+tcp", "ws"] {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = Address::parse(&format!("{scheme}://127.0.0.1:{}", l.local_addr().unwrap().port())).unwrap();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for s in l.incoming() {
                held.push(s);
            }
        });
        let (tx, rx) = channel();
        let tls = tls.clone();
        let start = Instant::now();
        let limit = Duration::from_secs(2);
        std::thread::spawn(move || {
            let _ = tx.send(ClientConn::connect_with(&addr, Some(&tls), "s3cret", 1 << 40, Some(start + limit), true, || true).err());
        });
        let err = rx
            .recv_timeout(limit + Duration::from_secs(3))
            .unwrap_or_else(|_| panic!("{scheme}: the daemon was held past its retry limit"))
            .unwrap_or_else(|| panic!("{scheme}: connected to a squatter"));
        assert!(start.elapsed() < limit + Duration::from_secs(1), "{scheme}: ended late ({:?}): {err}", start.elapsed());
    }
}

#[test]
fn a_daemon_dialling_a_listener_that_never_accepts_gives_up_by_its_retry_limit() {
    // A squatter that listens and never accepts. Once its accept queue is
    // full (here after one connection: backlog 0), a blocking connect
    // waits: on a Unix socket until the listener accepts, which may be
    // never; on TCP through the kernel's SYN retries, about 2 minutes. A
    // daemon must still give up when its retry time is over (`asyncdial =
    // FALSE`: 3 s; a persisting daemon: its idle and wall time limits).
    use std::os::linux::net::SocketAddrExt;
    use std::sync::mpsc::channel;
    for scheme in ["abstract", "tcp"] {
        // The listener with backlog 0, and the connection that fills its
        // queue, held for the scheme's round.
        let (addr, _held): (Address, Box<dyn std::any::Any>) = if scheme == "tcp" {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            // SAFETY: listen on the listener's own open descriptor.
            assert_eq!(unsafe { libc::listen(l.as_raw_fd(), 0) }, 0);
            let sa = l.local_addr().unwrap();
            let queued = TcpStream::connect(sa).unwrap();
            (Address::parse(&format!("tcp://{sa}")).unwrap(), Box::new((l, queued)))
        } else {
            let name = format!("mirai-test-full-{}-{:?}", std::process::id(), Instant::now());
            let sa = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
            let l = std::os::unix::net::UnixListener::bind_addr(&sa).unwrap();
            // SAFETY: listen on the listener's own open descriptor.
            assert_eq!(unsafe { libc::listen(l.as_raw_fd(), 0) }, 0);
            let queued = std::os::unix::net::UnixStream::connect_addr(&sa).unwrap();
            (Address::parse(&format!("abstract://{name}")).unwrap(), Box::new((l, queued)))
        };
        for persist in [false, true] {
            let (tx, rx) = channel();
            let a = addr.clone();
            let start = Instant::now();
            let limit = Duration::from_secs(2);
            std::thread::spawn(move || {
                let _ = tx.send(ClientConn::connect_with(&a, None, "s3cret", 1 << 40, Some(start + limit), persist, || true).err());
            });
            let err = rx
                .recv_timeout(limit + Duration::from_secs(3))
                .unwrap_or_else(|_| panic!("{scheme} (persist {persist}): the daemon was still dialling past its retry limit"))
                .unwrap_or_else(|| panic!("{scheme}: connected to a listener that never accepts"));
            assert!(err.contains("cannot connect"), "{err}");
            eprintln!("{scheme} (persist {persist}): {err}");
        }
    }
}

#[test]
fn an_unauthenticated_tls_peer_is_held_to_a_few_kib() {
    // Before it authenticates, a peer may make the host hold only a few
    // KiB. rustls itself gathers a handshake message of up to 64 KiB (its
    // own cap) before it looks at it: a peer that sends most of a
    // ClientHello claiming 0xfff0 bytes, then waits, would be held with
    // that buffer until its Hello deadline. The host counts what it takes
    // from an unproven TLS peer and drops it past `PRE_AUTH_BYTES`.
    use mirai::wire::proto::PRE_AUTH_BYTES;
    let creds = mirai::wire::tls::generated_creds("127.0.0.1").unwrap();
    let host = Host::start_with(&Address::parse("tls+tcp://127.0.0.1:0").unwrap(), common::host_options(true), Some(creds.config)).unwrap();
    let mut s = TcpStream::connect(("127.0.0.1", port(&host))).unwrap();
    let mut hello = vec![1, 0, 0xff, 0xf0, 3, 3];
    hello.resize(4 + 0xfff0, 0);
    let mut wire = Vec::new();
    for chunk in hello[..60_000].chunks(16_000) {
        wire.extend([0x16, 3, 1]);
        wire.extend((chunk.len() as u16).to_be_bytes());
        wire.extend_from_slice(chunk);
    }
    let _ = s.write_all(&wire);
    let start = Instant::now();
    assert!(
        wait_for(|| host.stats.refused.load(Ordering::Relaxed) == 1, 2),
        "a peer that sent {} bytes of TLS handshake was still held after {:?}",
        wire.len(),
        start.elapsed()
    );
    assert!(start.elapsed() < HELLO_TIMEOUT / 2);
    // A real daemon still gets in over TLS: its handshake and Hello take a
    // small part of the allowance.
    const { assert!(PRE_AUTH_BYTES >= 8 * 1024) };
    let tls = mirai::wire::tls::client_config(&creds.chain_pem).unwrap();
    let addr = Address::parse(&host.url).unwrap();
    let _d = ClientConn::connect_with(&addr, Some(&tls), "s3cret", 1 << 40, Some(Instant::now() + Duration::from_secs(10)), false, || true)
        .unwrap();
    assert!(wait_for(|| host.stats.connections.load(Ordering::Relaxed) == 1, 5));
}

#[test]
fn an_unauthenticated_ws_peer_streaming_pings_neither_stalls_the_host_nor_outstays_its_deadline() {
    // WebSocket control frames need no message: a peer that has upgraded
    // can ping without end and never say Hello. The host's loop reads a
    // connection until it would block, so a peer that writes faster than
    // the host reads held the loop: no result was taken from any daemon,
    // no Hello deadline expired (measured with an R host and two such
    // peers: a task's round trip took 10 s, as long as the peers flooded).
    let host = Host::start(&Address::parse("ws://127.0.0.1:0/").unwrap(), common::host_options(true)).unwrap();
    let addr = Address::parse(&host.url).unwrap();
    let mut d = daemon(&addr);
    assert!(wait_for(|| host.stats.connections.load(Ordering::Relaxed) == 1, 5));
    let port = port(&host);
    let flood = std::thread::spawn(move || {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(
            b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        )
        .unwrap();
        let pings = ws_client_frame(0x9, &[b'p'; 125]).repeat(4000);
        s.set_write_timeout(Some(Duration::from_millis(200))).unwrap();
        let start = Instant::now();
        while start.elapsed() < HELLO_TIMEOUT + Duration::from_secs(3) {
            match s.write_all(&pings) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return Some(start.elapsed()),
            }
        }
        None
    });
    std::thread::sleep(Duration::from_millis(300));
    // Meanwhile a task makes the round trip to the daemon.
    let id = host.next_task_id();
    let slot = Slot::new(host.bell.clone());
    let start = Instant::now();
    host.submit(id, task_frame(&host, id, b"ping?"), slot.clone(), None).unwrap();
    match d.recv(Duration::from_secs(10)).unwrap() {
        Incoming::Task { id: got, .. } => assert_eq!(got, id),
        _ => panic!("no task reached the daemon"),
    }
    let mut r = d.begin_result(id, false, false);
    r.extend_from_slice(b"pong");
    d.send(r).unwrap();
    assert!(slot.wait(Duration::from_secs(10)), "the result never arrived");
    let took = start.elapsed();
    let cut = flood.join().unwrap();
    assert!(took < Duration::from_secs(2), "a round trip took {took:?} while an unproven peer pinged");
    let cut = cut.expect("the pinging peer outstayed its Hello deadline");
    assert!(cut < HELLO_TIMEOUT + Duration::from_secs(1), "the pinging peer was cut off only after {cut:?}");
}

/// The event loop completes slots after releasing the core's lock: a task
/// it has resolved is gone from the scheduler before its slot is done. A
/// cancel in that window finds no task, and its caller (`stop_mirai()`)
/// then resolves the slot to "canceled": the result that arrived must be
/// in the slot by the time cancel returns false, so that it is kept.
#[cfg(feature = "test-hooks")]
#[test]
fn a_cancel_racing_a_result_being_delivered_keeps_the_result() {
    for dispatcher in [true, false] {
        let addr = Address::parse("tcp://127.0.0.1:0").unwrap();
        let host = Host::start(&addr, common::host_options(dispatcher)).unwrap();
        let mut d = daemon(&Address::parse(&host.url).unwrap());
        assert!(wait_for(|| host.stats.connections.load(Ordering::Relaxed) == 1, 5));
        host.delay_deliveries(Duration::from_millis(500));
        // A task answered by the daemon whose slot the loop still holds
        // back (counted as completed, published under the lock).
        let mut answered = |n: u64| {
            let id = host.next_task_id();
            let slot = Slot::new(host.bell.clone());
            host.submit(id, task_frame(&host, id, b"x"), slot.clone(), None).unwrap();
            match d.recv(Duration::from_secs(10)).unwrap() {
                Incoming::Task { id: got, .. } => assert_eq!(got, id),
                _ => panic!("no task reached the daemon"),
            }
            let mut r = d.begin_result(id, false, false);
            r.extend_from_slice(b"result");
            d.send(r).unwrap();
            assert!(wait_for(|| host.stats.completed.load(Ordering::Relaxed) == n, 5));
            assert!(!slot.is_done(), "the delay hook did not hold the slot back");
            (id, slot)
        };
        let (id, slot) = answered(1);
        assert!(!host.cancel(id, 20), "a resolved task was found");
        assert!(slot.is_done(), "cancel returned before the result was delivered (dispatcher {dispatcher})");
        slot.complete(Outcome::Error(20));
        assert!(matches!(slot.take(), Some(Outcome::Value { .. })), "the result was lost");
        // The same for a map's cancel_many.
        let (id, slot) = answered(2);
        assert_eq!(host.cancel_many(&[id], 20), vec![false]);
        assert!(slot.is_done(), "cancel_many returned before the result was delivered");
        assert!(matches!(slot.take(), Some(Outcome::Value { .. })));
    }
}

/// A peer holding the secret that states another process's pid in its Hello
/// (a local child of the pool, say) over a Unix socket: the host records the
/// pid the kernel gives for the socket, so the peer can neither take the
/// everywhere() replay meant for a replacement nor change what the pool's
/// crash-loop rule and reset read about that child.
#[test]
fn a_unix_peer_cannot_claim_another_process_pid() {
    let p = std::env::temp_dir().join(format!("mirai-pid-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&p);
    let host = Host::start(&Address::parse(&format!("ipc://{}", p.display())).unwrap(), common::host_options(true)).unwrap();
    let mut s = std::os::unix::net::UnixStream::connect(&p).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&SP_HEADER).unwrap();
    let mut d = Decoder::new(Framing::Ipc);
    let mut next = |s: &mut std::os::unix::net::UnixStream| {
        let body = d.next(s).unwrap();
        let hop = strip_hop(&body).unwrap();
        body[hop..].to_vec()
    };
    let theirs = match proto::decode(&next(&mut s)).unwrap().0 {
        Msg::Challenge { nonce, .. } => nonce,
        m => panic!("first message not a Challenge: {m:?}"),
    };
    let ours = [5u8; NONCE_LEN];
    let mac = auth::prove(b"s3cret", Prover::Daemon, &theirs, &ours);
    let claimed = 4_000_001u32;
    host.health.replacement(claimed);
    s.write_all(&frame_of(Framing::Ipc, &Msg::Hello { version: PROTOCOL_VERSION, nonce: ours, mac, pid: claimed })).unwrap();
    assert!(matches!(proto::decode(&next(&mut s)).unwrap().0, Msg::Welcome { mac: Some(_) }));
    assert!(wait_for(|| host.stats.connections.load(Ordering::Relaxed) == 1, 5));
    let me = std::process::id();
    assert_eq!(host.daemon_rows().unwrap().iter().map(|r| r.pid).collect::<Vec<_>>(), vec![me]);
    assert!(host.health.get(me).connected);
    assert!(!host.health.get(claimed).connected, "the stated pid was recorded as connected");
    assert!(host.health.take_replacement(claimed), "the peer took the replay meant for another process");
    host.shutdown(false);
    let _ = std::fs::remove_file(&p);
}
