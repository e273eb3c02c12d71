//! The host's listener survives running out of file descriptors. Its own
//! test binary: it lowers this process's descriptor limit.
//!
//! With edge-triggered readiness, a connection that could not be accepted
//! (EMFILE) raises no new event; unless the host retries by itself it stays
//! in the backlog until some other connection arrives.

use mirai::wire::frame::{Framing, SP_HEADER};
use mirai::host::{Host, HostOptions};
use mirai::wire::proto::{self, Msg, PROTOCOL_VERSION};
use mirai::wire::url::Address;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

#[test]
fn accept_resumes_once_descriptors_free_up() {
    let host = Host::start(
        &Address::parse("tcp://127.0.0.1:0").unwrap(),
        HostOptions {
            dispatcher: true,
            secret: None,
            oneshot: false,
            rng_stream: None,
            settings: Vec::new(),
            memory_cap: 0,
            max_message: 1 << 40,
        },
    )
    .unwrap();
    let port: u16 = host.url.rsplit(':').next().unwrap().parse().unwrap();

    let lim = libc::rlimit { rlim_cur: 256, rlim_max: 4096 };
    // SAFETY: setrlimit reads the struct it is pointed at.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) }, 0);
    // Use up every descriptor, then free one for the client's socket.
    let mut fillers = Vec::new();
    while let Ok(f) = std::fs::File::open("/dev/null") {
        fillers.push(f);
    }
    assert!(!fillers.is_empty());
    fillers.pop();
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut hello = SP_HEADER.to_vec();
    let mut f = Vec::new();
    Framing::Tcp.begin(&mut f);
    proto::encode_into(&Msg::Hello { version: PROTOCOL_VERSION, nonce: [0; 32], mac: [0; 32], pid: 1 }, &mut f);
    Framing::Tcp.finish(&mut f);
    hello.extend(f);
    s.write_all(&hello).unwrap();
    // The host's accept fails now (no descriptor left for it).
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(host.stats.connections.load(Ordering::Relaxed), 0);
    drop(fillers);

    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    let start = Instant::now();
    while got.len() < SP_HEADER.len() + 8 {
        match s.read(&mut buf) {
            Ok(0) => panic!("host closed the connection"),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => panic!("the waiting connection was never accepted: {e}"),
        }
    }
    assert_eq!(&got[..8], &SP_HEADER);
    assert!(start.elapsed() < Duration::from_secs(2));
    let until = Instant::now() + Duration::from_secs(2);
    while host.stats.connections.load(Ordering::Relaxed) != 1 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(host.stats.connections.load(Ordering::Relaxed), 1);
}
