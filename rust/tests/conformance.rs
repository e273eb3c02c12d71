//! Wire conformance against a real libnng (pair1) peer.
//!
//! Our transport claims to speak NNG's SP wire format, pair1 protocol, over
//! TCP and Unix sockets. These tests put a genuine libnng socket (Debian's
//! libnng 1.5.2 through the `nng` crate, blocking API only) on the other end
//! of our listener and our dialer, and check, in both directions:
//!
//! - the 8-byte SP connection header libnng sends is byte-for-byte ours;
//! - a frame libnng sends is byte-for-byte the frame our `Framing` builds for
//!   the same payload (transport prefix, hop count 1, body);
//! - our `Decoder` returns libnng's messages exactly, hop header included
//!   at `[0..4]` with value 1 (set by libnng's pipe);
//! - libnng accepts our frames and hands the application exactly our payload,
//!   with the hop header stripped from the body (cooked pair1 keeps the hop
//!   count it read, 1, in the message header);
//! - after libnng closes, we see a clean end of stream and nothing extra;
//! - a libnng pair0 peer is refused by our decoder;
//! - sizes 0, 5, 70 001 (spans the decoder's 64 KiB staging buffer) and 1 MiB.
//!
//! Every wait has a deadline: libnng operations carry send/receive timeouts,
//! our non-blocking loops check a deadline, and the libnng peer runs on a
//! thread whose result is awaited with a timeout.

use mirai::wire::decoder::Decoder;
use mirai::wire::frame::{Framing, SP_HEADER};
use mirai::wire::transport::{dial_once, BlockingStream, Listener};
use mirai::wire::url::Address;
use nng::options::{Options, RecvMaxSize, RecvTimeout, SendTimeout};
use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// Per-operation timeout on the libnng side.
const NNG_TIMEOUT: Duration = Duration::from_secs(10);
/// Overall budget for one exchange on our side.
const BUDGET: Duration = Duration::from_secs(30);

const ACK: &[u8] = b"ack";

// ---------------------------------------------------------------- helpers

/// Deterministic, non-periodic test bytes.
fn payload(len: usize, seed: u8) -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9 ^ (seed as u32).wrapping_mul(0x0101_0101) ^ len as u32;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect()
}

/// Sizes sent each way; the first is small so its raw frame can be compared.
fn payloads(seed: u8) -> Vec<Vec<u8>> {
    [5usize, 0, 70_001, 1 << 20].iter().map(|&n| payload(n, seed)).collect()
}

fn frame(f: Framing, body: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    f.begin(&mut b);
    b.extend_from_slice(body);
    f.finish(&mut b);
    b
}

/// Compares without dumping megabytes into the failure message.
fn same_bytes(what: &str, got: &[u8], want: &[u8]) -> Result<(), String> {
    if got == want {
        return Ok(());
    }
    let first = got.iter().zip(want).position(|(a, b)| a != b);
    Err(format!(
        "{what}: got {} bytes, want {} bytes, first difference at {:?}; got head {:02x?}, want head {:02x?}",
        got.len(),
        want.len(),
        first,
        &got[..got.len().min(24)],
        &want[..want.len().min(24)]
    ))
}

fn timed_out(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, format!("deadline passed: {what}"))
}

fn retryable(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted | io::ErrorKind::TimedOut
    )
}

fn write_all_until<W: Write>(w: &mut W, mut data: &[u8], deadline: Instant) -> io::Result<()> {
    while !data.is_empty() {
        match w.write(data) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => data = &data[n..],
            Err(e) if retryable(&e) => {
                if Instant::now() > deadline {
                    return Err(timed_out("write"));
                }
                thread::sleep(Duration::from_micros(200));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn read_exact_until<R: Read>(r: &mut R, buf: &mut [u8], deadline: Instant) -> io::Result<()> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if retryable(&e) => {
                if Instant::now() > deadline {
                    return Err(timed_out("read"));
                }
                thread::sleep(Duration::from_micros(200));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn next_until<R: Read>(d: &mut Decoder, r: &mut R, deadline: Instant) -> io::Result<Vec<u8>> {
    loop {
        match d.next(r) {
            Err(e) if retryable(&e) => {
                if Instant::now() > deadline {
                    return Err(timed_out("decoder.next"));
                }
                thread::sleep(Duration::from_micros(200));
            }
            other => return other,
        }
    }
}

fn accept_until(l: &Listener, deadline: Instant) -> (mirai::wire::transport::Stream, Framing) {
    loop {
        match l.accept() {
            Ok((s, f, _)) => return (s, f),
            Err(e) if retryable(&e) => {
                assert!(Instant::now() < deadline, "no libnng peer connected before the deadline");
                thread::sleep(Duration::from_millis(2));
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
}

fn set_blocking_timeouts(s: &BlockingStream) {
    let t = Some(Duration::from_millis(200));
    match s {
        BlockingStream::Tcp(s) => {
            s.set_read_timeout(t).unwrap();
            s.set_write_timeout(t).unwrap();
        }
        BlockingStream::Unix(s) => {
            s.set_read_timeout(t).unwrap();
            s.set_write_timeout(t).unwrap();
        }
        BlockingStream::Tls(_) | BlockingStream::Ws(_) => unreachable!("the libnng peer here speaks plain TCP or IPC"),
    }
}

fn nng_socket(proto: nng::Protocol) -> nng::Socket {
    let s = nng::Socket::new(proto).expect("nng socket");
    s.set_opt::<RecvTimeout>(Some(NNG_TIMEOUT)).unwrap();
    s.set_opt::<SendTimeout>(Some(NNG_TIMEOUT)).unwrap();
    // NNG documents a 1 MiB default for NNG_OPT_RECVMAXSZ; libnng 1.5.2 was
    // seen not to enforce it on these pipes, but say "no limit" explicitly so
    // the 1 MiB (+4 header bytes) messages never depend on that.
    s.set_opt::<RecvMaxSize>(0).unwrap();
    s
}

fn unique(tag: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!("mirai-conf-{}-{}-{}", std::process::id(), tag, N.fetch_add(1, Ordering::Relaxed))
}

fn ipc_url(tag: &str) -> String {
    let p = std::env::temp_dir().join(format!("{}.sock", unique(tag)));
    let _ = std::fs::remove_file(&p);
    format!("ipc://{}", p.display())
}

fn abstract_url(tag: &str) -> String {
    format!("abstract://{}", unique(tag))
}

// ------------------------------------------------------------ libnng peer

/// What the libnng side observed.
#[derive(Debug)]
struct PeerReport {
    /// Message header of each message libnng received from us: in cooked
    /// mode libnng moves the pair1 hop count out of the body into the header.
    headers: Vec<Vec<u8>>,
}

/// Runs the libnng side on its own thread: optionally dial, receive
/// `expect` (checking each body), send `send`, then wait for our ACK so the
/// socket is not closed while messages are still queued.
fn spawn_peer(
    sock: nng::Socket,
    dial: Option<String>,
    expect: Vec<Vec<u8>>,
    send: Vec<Vec<u8>>,
) -> mpsc::Receiver<Result<PeerReport, String>> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let run = || -> Result<PeerReport, String> {
            if let Some(url) = dial {
                sock.dial(&url).map_err(|e| format!("nng dial {url}: {e}"))?;
            }
            let mut headers = Vec::new();
            for (i, want) in expect.iter().enumerate() {
                let m = sock.recv().map_err(|e| format!("nng recv #{i}: {e}"))?;
                same_bytes(&format!("libnng received message #{i}"), m.as_slice(), want)?;
                headers.push(m.as_header().as_slice().to_vec());
            }
            for (i, p) in send.iter().enumerate() {
                sock.send(&p[..]).map_err(|(_, e)| format!("nng send #{i}: {e}"))?;
            }
            let m = sock.recv().map_err(|e| format!("nng recv ack: {e}"))?;
            same_bytes("libnng received ack", m.as_slice(), ACK)?;
            Ok(PeerReport { headers })
        };
        let r = run();
        sock.close();
        let _ = tx.send(r);
    });
    rx
}

// --------------------------------------------------------------- our side

/// Our half of the exchange, over an already-connected stream (blocking or
/// not). Mirrors `spawn_peer`: we send `to_nng`, receive `from_nng`, ACK,
/// then expect a clean end of stream once libnng closes.
fn our_side<S: Read + Write>(
    s: &mut S,
    framing: Framing,
    to_nng: &[Vec<u8>],
    from_nng: &[Vec<u8>],
    peer: mpsc::Receiver<Result<PeerReport, String>>,
) -> PeerReport {
    let deadline = Instant::now() + BUDGET;

    // Our connection header, then our frames, each in one buffer.
    write_all_until(s, &SP_HEADER, deadline).expect("write SP header");
    for p in to_nng {
        write_all_until(s, &frame(framing, p), deadline).expect("write frame");
    }

    // Raw bytes first: libnng's connection header and its first frame must be
    // exactly what we would have produced ourselves.
    let first = &from_nng[0];
    let mut raw = vec![0u8; SP_HEADER.len() + framing.body_offset() + first.len()];
    read_exact_until(s, &mut raw, deadline).expect("read libnng's header and first frame");
    assert_eq!(&raw[..8], &SP_HEADER, "libnng's SP header differs from ours");
    same_bytes("libnng's first frame vs our Framing", &raw[8..], &frame(framing, first)).unwrap();

    // Then the decoder over the whole real byte stream (the raw bytes we
    // already took are replayed in front of the socket).
    let mut dec = Decoder::new(framing);
    {
        let mut r = io::Cursor::new(raw).chain(&mut *s);
        for (i, want) in from_nng.iter().enumerate() {
            let body = next_until(&mut dec, &mut r, deadline)
                .unwrap_or_else(|e| panic!("decode message #{i} from libnng: {e}"));
            assert!(body.len() >= 4, "message #{i} shorter than the pair1 header");
            assert_eq!(&body[..4], &[0, 0, 0, 1], "pair1 hop count from libnng's pipe (message #{i})");
            same_bytes(&format!("decoded message #{i}"), &body[4..], want).unwrap();
        }
    }

    write_all_until(s, &frame(framing, ACK), deadline).expect("write ack");

    let left = deadline.saturating_duration_since(Instant::now());
    let report = match peer.recv_timeout(left) {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => panic!("libnng peer: {e}"),
        Err(_) => panic!("libnng peer did not finish before the deadline"),
    };

    // libnng closed its socket: nothing else may arrive, only end of stream.
    match next_until(&mut dec, s, deadline) {
        Err(e) if matches!(e.kind(), io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset) => {}
        Ok(m) => panic!("unexpected extra message of {} bytes after libnng closed", m.len()),
        Err(e) => panic!("expected end of stream after libnng closed, got {e}"),
    }
    report
}

fn check_report(r: &PeerReport, n: usize) {
    assert_eq!(r.headers.len(), n);
    // libnng stripped the hop count from the body (the peer compared bodies
    // exactly) and keeps it, as it read it off our frame, in the message
    // header: it must be the 1 our `Framing::begin` wrote.
    for (i, h) in r.headers.iter().enumerate() {
        assert_eq!(h, &[0, 0, 0, 1], "hop count libnng read from our frame #{i}");
    }
}

/// libnng dials our listener.
fn nng_dials_us(url: &str) {
    let addr = Address::parse(url).unwrap();
    let (listener, real) = Listener::bind(&addr).expect("bind");
    let to_nng = payloads(1);
    let from_nng = payloads(2);
    let peer = spawn_peer(
        nng_socket(nng::Protocol::Pair1),
        Some(real.to_string()),
        to_nng.clone(),
        from_nng.clone(),
    );
    let (mut stream, framing) = accept_until(&listener, Instant::now() + BUDGET);
    let want = if addr.is_ipc() { Framing::Ipc } else { Framing::Tcp };
    assert_eq!(framing, want);
    let report = our_side(&mut stream, framing, &to_nng, &from_nng, peer);
    check_report(&report, to_nng.len());
}

/// We dial a libnng listener.
fn we_dial_nng(url: &str) {
    let sock = nng_socket(nng::Protocol::Pair1);
    let l = nng::Listener::new(&sock, url).unwrap_or_else(|e| panic!("nng listen {url}: {e}"));
    let url = if url.starts_with("tcp://") {
        let port = l.get_opt::<nng::options::transport::tcp::BoundPort>().unwrap();
        assert_ne!(port, 0);
        format!("tcp://127.0.0.1:{port}")
    } else {
        url.to_string()
    };
    let to_nng = payloads(3);
    let from_nng = payloads(4);
    let peer = spawn_peer(sock, None, to_nng.clone(), from_nng.clone());
    let addr = Address::parse(&url).unwrap();
    let (mut stream, framing) = dial_once(&addr).unwrap_or_else(|e| panic!("dial_once {url}: {e}"));
    let want = if addr.is_ipc() { Framing::Ipc } else { Framing::Tcp };
    assert_eq!(framing, want);
    set_blocking_timeouts(&stream);
    let report = our_side(&mut stream, framing, &to_nng, &from_nng, peer);
    check_report(&report, to_nng.len());
    if let Address::Ipc(p) = addr {
        let _ = std::fs::remove_file(p);
    }
}

// ------------------------------------------------------------------ tests

#[test]
fn nng_dials_our_tcp_listener() {
    nng_dials_us("tcp://127.0.0.1:0");
}

#[test]
fn nng_dials_our_ipc_listener() {
    nng_dials_us(&ipc_url("l"));
}

#[test]
fn nng_dials_our_abstract_listener() {
    nng_dials_us(&abstract_url("l"));
}

#[test]
fn we_dial_nng_tcp_listener() {
    we_dial_nng("tcp://127.0.0.1:0");
}

#[test]
fn we_dial_nng_ipc_listener() {
    we_dial_nng(&ipc_url("d"));
}

#[test]
fn we_dial_nng_abstract_listener() {
    we_dial_nng(&abstract_url("d"));
}

/// A libnng pair0 peer is refused by our decoder with a clear reason, rather
/// than being misread as pair1.
#[test]
fn pair0_peer_is_rejected() {
    let addr = Address::parse("tcp://127.0.0.1:0").unwrap();
    let (listener, real) = Listener::bind(&addr).unwrap();
    let sock = nng_socket(nng::Protocol::Pair0);
    // Non-blocking dial flag: no Aio involved, libnng connects in the background.
    sock.dial_async(&real.to_string()).unwrap();
    let deadline = Instant::now() + BUDGET;
    let (mut stream, framing) = accept_until(&listener, deadline);
    let mut dec = Decoder::new(framing);
    let e = next_until(&mut dec, &mut stream, deadline).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
    assert!(e.to_string().contains("pair1"), "{e}");
    sock.close();
}
