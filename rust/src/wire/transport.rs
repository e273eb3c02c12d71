//! Sockets: the host's listeners and connections, the daemon's dialers and
//! connection. Unix sockets carry IPC framing, TCP carries TCP framing, as
//! NNG does; `tls+tcp://` adds TLS, `ws://` and `wss://` WebSocket framing.
//!
//! Everything that turns bytes into other bytes is one implementation both
//! sides use: the TLS record layer (`tls::Tls`, a state machine that never
//! blocks by itself), the WebSocket codec (`ws::WsReader`, `ws::WsWriter`;
//! the host answers the upgrade with `ws::ServerHandshake`, a daemon sends
//! it in `ws_upgrade`), and the pre-authentication allowance (`Allowance`:
//! at most `proto::PRE_AUTH_BYTES` read from a peer that has not proved
//! itself, on the host's TLS and WebSocket connections and the daemon's
//! WebSocket; over plain sockets and the daemon's TLS, which verified the
//! host's certificate first, the caller's `Decoder` bounds what is held).
//!
//! The two stacks around them differ because their owners drive sockets
//! differently. The host's (`Listener`, `Stream`) is non-blocking, driven
//! by the profile's mio event loop on one thread at a time under the host
//! core's lock, so its layers are plain fields. The daemon's
//! (`BlockingStream`) blocks, and a reader and a writer use it at once
//! (the R thread and the I/O thread that watches during an evaluation), so
//! its layers sit behind locks (`TlsClient`, `WsClient`) and its layered
//! reads never block while holding one (`DontWait`, `Nb`: the caller polls
//! the descriptor first).

use crate::wire::frame::Framing;
use crate::wire::proto::{HANDSHAKE_LIMIT, PRE_AUTH_BYTES};
use crate::wire::tls::{self, Tls};
use crate::wire::url::Address;
use crate::wire::ws::{ServerHandshake, WsReader, WsWriter};
use rustls::{ClientConfig, ServerConfig};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, RawFd};
#[cfg(target_os = "linux")]
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net as unet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Where a peer connected from, as the host shares out its places for
/// peers that have not completed their Hello (`MAX_PENDING`): a flood from
/// one source then makes room with its own connections, not a daemon's
/// from elsewhere. An IPv4 address, or an IPv6 address's /64 network (what
/// one site is typically given, so that one attacker's many addresses
/// count as one); None over a Unix socket, whose peers are all on this
/// machine.
pub type Source = Option<[u8; 8]>;

fn source_of(addr: &SocketAddr) -> Source {
    let mut key = [0u8; 8];
    match addr.ip().to_canonical() {
        std::net::IpAddr::V4(a) => key[..4].copy_from_slice(&a.octets()),
        std::net::IpAddr::V6(a) => key.copy_from_slice(&a.octets()[..8]),
    }
    Some(key)
}

pub enum Listener {
    Unix(mio::net::UnixListener, Option<String>),
    /// With a TLS configuration for `tls+tcp://` and `wss://`, and the
    /// WebSocket path for `ws://` and `wss://`.
    Tcp(mio::net::TcpListener, Option<Arc<ServerConfig>>, Option<String>),
}

pub enum Stream {
    Unix(mio::net::UnixStream),
    Tcp(mio::net::TcpStream),
    Tls(Box<TlsStream>),
    /// WebSocket over a `Tcp` or `Tls` stream.
    Ws(Box<WsStream>),
}

/// A host's WebSocket connection: the upgrade (until done), then frames in
/// and out over the inner stream.
pub struct WsStream {
    inner: Stream,
    hs: Option<ServerHandshake>,
    rd: WsReader,
    wr: WsWriter,
    /// Bytes still read from a peer that has not authenticated (see
    /// `proto::PRE_AUTH_BYTES`); None once it has.
    unproven_left: Option<usize>,
}

impl WsStream {
    fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
        let mut inner = Allowance::over(&mut self.inner, &mut self.unproven_left);
        if let Some(hs) = &mut self.hs {
            let mut reply = Vec::new();
            match hs.advance(&mut inner, &mut reply) {
                Ok(up) => {
                    self.hs = None;
                    // A client may pipeline frames after its request.
                    self.rd.push_input(up.rest);
                    self.wr.push_raw(&up.response);
                    self.wr.ready = true;
                }
                Err(e) => {
                    // Best effort: the HTTP error tells the peer why.
                    if !reply.is_empty() {
                        let _ = self.inner.write(&reply).and_then(|_| self.inner.flush());
                    }
                    return Err(e);
                }
            }
            self.flush_quietly()?;
        }
        let res = self.rd.read(&mut Allowance::over(&mut self.inner, &mut self.unproven_left), b);
        // A ping is answered even when the read then found nothing more.
        if let Some(p) = self.rd.take_pong() {
            self.wr.queue_pong(p.payload());
            self.flush_quietly()?;
        }
        res
    }

    fn flush_quietly(&mut self) -> io::Result<()> {
        match self.flush() {
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => Err(e),
            _ => Ok(()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.wr.flush(&mut self.inner)?;
        self.inner.flush()
    }
}

impl mio::event::Source for WsStream {
    fn register(&mut self, r: &mio::Registry, t: mio::Token, i: mio::Interest) -> io::Result<()> {
        self.inner.register(r, t, i)
    }
    fn reregister(&mut self, r: &mio::Registry, t: mio::Token, i: mio::Interest) -> io::Result<()> {
        self.inner.reregister(r, t, i)
    }
    fn deregister(&mut self, r: &mio::Registry) -> io::Result<()> {
        self.inner.deregister(r)
    }
}

/// A host's TLS connection: the socket and its record layer, always used
/// together under the host core's lock.
pub struct TlsStream {
    sock: mio::net::TcpStream,
    tls: Tls,
    /// Bytes still read from a peer that has not authenticated (see
    /// `proto::PRE_AUTH_BYTES`); None once it has.
    unproven_left: Option<usize>,
}

/// A host's reads from a peer that has not authenticated, through a layer
/// that could otherwise take more than `proto::PRE_AUTH_BYTES`: at most
/// `left` more bytes, then an `InvalidData` error (the peer is dropped,
/// counted refused). Writes pass through.
struct Allowance<'a, S> {
    inner: &'a mut S,
    left: Option<&'a mut usize>,
}

impl<'a, S> Allowance<'a, S> {
    fn over(inner: &'a mut S, left: &'a mut Option<usize>) -> Self {
        Allowance { inner, left: left.as_mut() }
    }
}

impl<S: Read> Read for Allowance<'_, S> {
    fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
        let Some(left) = &mut self.left else { return self.inner.read(b) };
        if **left == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("more than {PRE_AUTH_BYTES} bytes from a peer that has not authenticated"),
            ));
        }
        let n = b.len().min(**left);
        let got = self.inner.read(&mut b[..n])?;
        **left -= got;
        Ok(got)
    }
}

impl<S: Write> Write for Allowance<'_, S> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.inner.write(b)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl mio::event::Source for TlsStream {
    fn register(&mut self, r: &mio::Registry, t: mio::Token, i: mio::Interest) -> io::Result<()> {
        self.sock.register(r, t, i)
    }
    fn reregister(&mut self, r: &mio::Registry, t: mio::Token, i: mio::Interest) -> io::Result<()> {
        self.sock.reregister(r, t, i)
    }
    fn deregister(&mut self, r: &mio::Registry) -> io::Result<()> {
        self.sock.deregister(r)
    }
}

impl Stream {
    /// The process id of the peer of a Unix-domain socket, from the kernel
    /// (None on other transports, or when the kernel does not say: a peer
    /// in another pid namespace). Unlike the pid a daemon states in its
    /// Hello, a peer cannot choose it.
    pub fn peer_pid(&self) -> Option<u32> {
        let Stream::Unix(u) = self else { return None };
        peer_pid_of(std::os::fd::AsRawFd::as_raw_fd(u))
    }

    /// Bytes must be read through the stream's `Read` (decrypted, or
    /// unframed from WebSocket), not from its descriptor.
    pub fn is_layered(&self) -> bool {
        matches!(self, Stream::Tls(_) | Stream::Ws(_))
    }

    /// Encrypted records or frames wait for the socket to drain.
    pub fn wants_write(&self) -> bool {
        match self {
            Stream::Tls(t) => t.tls.wants_write(),
            Stream::Ws(w) => w.wr.wants_write() || w.inner.wants_write(),
            _ => false,
        }
    }

    /// The peer has authenticated (its Hello checked out). A WebSocket then
    /// accepts messages of up to `limit` bytes from it (every frame and
    /// fragmented message is checked against it before it is buffered;
    /// accepted connections start at `HANDSHAKE_LIMIT`), and neither TLS
    /// nor WebSocket counts its bytes any more (`PRE_AUTH_BYTES` until
    /// then). Other transports carry SP frames, bounded by the caller's
    /// `Decoder`.
    pub fn peer_proved(&mut self, limit: u64) {
        match self {
            Stream::Ws(w) => {
                w.rd.set_message_limit(limit);
                w.unproven_left = None;
                w.inner.peer_proved(limit);
            }
            Stream::Tls(t) => t.unproven_left = None,
            _ => {}
        }
    }
}

fn unix_addr(addr: &Address) -> io::Result<unet::SocketAddr> {
    match addr {
        #[cfg(target_os = "linux")]
        Address::Abstract(name) => unet::SocketAddr::from_abstract_name(name.as_bytes()),
        #[cfg(not(target_os = "linux"))]
        Address::Abstract(_) => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "abstract:// sockets exist only on Linux; use ipc:// (a socket file) instead",
        )),
        Address::Ipc(path) => unet::SocketAddr::from_pathname(path),
        Address::Tcp { .. } => Err(io::Error::new(io::ErrorKind::InvalidInput, "not a Unix socket address")),
    }
}

fn resolve(host: &str, port: u16) -> io::Result<SocketAddr> {
    let host = crate::wire::url::bind_host(host);
    (host, port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("cannot resolve host '{host}'")))
}

impl Listener {
    /// Binds; returns the listener and the URL daemons should dial (with the
    /// real port when port 0 was asked for).
    pub fn bind(addr: &Address) -> io::Result<(Listener, Address)> {
        Self::bind_with(addr, None)
    }

    /// `bind`, with the TLS configuration a `tls+tcp://` address needs.
    pub fn bind_with(addr: &Address, tls: Option<Arc<ServerConfig>>) -> io::Result<(Listener, Address)> {
        if let Address::Tcp { tls: want, .. } = addr {
            if *want != tls.is_some() {
                let why = if *want { "a tls+tcp:// or wss:// URL needs TLS credentials" } else { "TLS credentials need a tls+tcp:// or wss:// URL" };
                return Err(io::Error::new(io::ErrorKind::InvalidInput, why));
            }
        }
        match addr {
            Address::Tcp { host, port, .. } => {
                let sa = resolve(host, *port)?;
                let std_l = std::net::TcpListener::bind(sa)?;
                std_l.set_nonblocking(true)?;
                let real = std_l.local_addr()?.port();
                let l = mio::net::TcpListener::from_std(std_l);
                let ws = match addr {
                    Address::Tcp { ws, .. } => ws.clone(),
                    _ => None,
                };
                let real_addr = Address::Tcp { host: host.clone(), port: real, tls: want_tls(addr), ws: ws.clone() };
                Ok((Listener::Tcp(l, tls, ws), real_addr))
            }
            _ => {
                let path = match addr {
                    Address::Ipc(p) => Some(p.clone()),
                    _ => None,
                };
                let std_l = unet::UnixListener::bind_addr(&unix_addr(addr)?)?;
                std_l.set_nonblocking(true)?;
                Ok((Listener::Unix(mio::net::UnixListener::from_std(std_l), path), addr.clone()))
            }
        }
    }

    pub fn accept(&self) -> io::Result<(Stream, Framing, Source)> {
        match self {
            Listener::Unix(l, _) => Ok((Stream::Unix(l.accept()?.0), Framing::Ipc, None)),
            Listener::Tcp(l, tls, ws) => {
                let (s, peer) = l.accept()?;
                let _ = s.set_nodelay(true);
                set_keepalive(s.as_raw_fd());
                let inner = match tls {
                    None => Stream::Tcp(s),
                    Some(cfg) => {
                        Stream::Tls(Box::new(TlsStream { sock: s, tls: Tls::server(cfg)?, unproven_left: Some(PRE_AUTH_BYTES) }))
                    }
                };
                let stream = match ws {
                    None => inner,
                    Some(path) => Stream::Ws(Box::new(WsStream {
                        inner,
                        hs: Some(ServerHandshake::new(path)),
                        // Raised once the peer authenticates
                        // (`peer_proved`).
                        rd: WsReader::new(true, HANDSHAKE_LIMIT),
                        wr: WsWriter::new(false),
                        unproven_left: Some(PRE_AUTH_BYTES),
                    })),
                };
                Ok((stream, Framing::Tcp, source_of(&peer)))
            }
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Unix(_, Some(path)) = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl AsRawFd for Stream {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Stream::Unix(s) => s.as_raw_fd(),
            Stream::Tcp(s) => s.as_raw_fd(),
            Stream::Tls(t) => t.sock.as_raw_fd(),
            Stream::Ws(w) => w.inner.as_raw_fd(),
        }
    }
}

fn want_tls(addr: &Address) -> bool {
    matches!(addr, Address::Tcp { tls: true, .. })
}

macro_rules! delegate_source {
    ($t:ty, $($v:ident),+) => {
        impl mio::event::Source for $t {
            fn register(&mut self, r: &mio::Registry, t: mio::Token, i: mio::Interest) -> io::Result<()> {
                match self { $(Self::$v(s, ..) => s.register(r, t, i)),+ }
            }
            fn reregister(&mut self, r: &mio::Registry, t: mio::Token, i: mio::Interest) -> io::Result<()> {
                match self { $(Self::$v(s, ..) => s.reregister(r, t, i)),+ }
            }
            fn deregister(&mut self, r: &mio::Registry) -> io::Result<()> {
                match self { $(Self::$v(s, ..) => s.deregister(r)),+ }
            }
        }
    };
}
delegate_source!(Listener, Unix, Tcp);
delegate_source!(Stream, Unix, Tcp, Tls, Ws);

impl Read for Stream {
    fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.read(b),
            Stream::Tcp(s) => s.read(b),
            Stream::Tls(t) => t.tls.read(&mut Allowance::over(&mut t.sock, &mut t.unproven_left), b),
            Stream::Ws(w) => w.read(b),
        }
    }
}

/// write(2) on a socket whose peer is gone raises SIGPIPE, and R's handler
/// for it raises an R error: from R's thread a longjmp through Rust, from
/// any other thread a crash. send(2) with MSG_NOSIGNAL reports EPIPE
/// instead. (std already does this for TCP streams, not for Unix ones.)
fn send_nosignal(fd: RawFd, b: &[u8]) -> io::Result<usize> {
    #[cfg(target_os = "linux")]
    let flags = libc::MSG_NOSIGNAL;
    // Elsewhere there is no such flag: SIGPIPE follows the process's
    // disposition (the crate is built and tested on Linux only).
    #[cfg(not(target_os = "linux"))]
    let flags = 0;
    // SAFETY: send reads at most b.len() bytes from `b`.
    let n = unsafe { libc::send(fd, b.as_ptr() as *const libc::c_void, b.len(), flags) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

impl Write for Stream {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => send_nosignal(s.as_raw_fd(), b),
            Stream::Tcp(s) => s.write(b),
            Stream::Tls(t) => t.tls.write(&mut t.sock, b),
            Stream::Ws(w) => w.wr.write(&mut w.inner, b),
        }
    }
    /// Sends encrypted records or frames still buffered (TLS, WebSocket);
    /// `WouldBlock` if the socket would not take them all.
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Tls(t) => t.tls.flush(&mut t.sock),
            Stream::Ws(w) => w.flush(),
            _ => Ok(()),
        }
    }
}

/// A connected socket used with blocking I/O (daemon side).
pub enum BlockingStream {
    Unix(unet::UnixStream),
    Tcp(std::net::TcpStream),
    /// Shared by the reading and the writing handle (`try_clone`): one
    /// record layer, taken under its lock by either.
    Tls(Arc<TlsClient>),
    /// WebSocket over a `Tcp` or `Tls` stream; reading and writing keep
    /// separate states, so neither waits for the other.
    Ws(Arc<WsClient>),
}

pub struct WsClient {
    inner: BlockingStream,
    rd: Mutex<WsClientReader>,
    wr: Mutex<WsWriter>,
}

struct WsClientReader {
    rd: WsReader,
    /// Bytes still read from a host that has not proved itself (see
    /// `proto::PRE_AUTH_BYTES`); None once it has
    /// (`BlockingStream::host_proved`). Until then its pings also go
    /// unanswered.
    unproven_left: Option<usize>,
}

/// The inner stream of a daemon's WebSocket: reads never block, writes do.
struct Nb<'a>(&'a BlockingStream);

impl Read for Nb<'_> {
    fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
        match self.0 {
            BlockingStream::Tls(t) => t.read(b),
            s => recv_dontwait(s.as_raw_fd(), b),
        }
    }
}

impl Write for Nb<'_> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        match self.0 {
            BlockingStream::Tls(t) => t.write(b),
            s => send_nosignal(s.as_raw_fd(), b),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self.0 {
            BlockingStream::Tls(t) => t.flush(),
            _ => Ok(()),
        }
    }
}

impl WsClient {
    fn read(&self, b: &mut [u8]) -> io::Result<usize> {
        let (res, pong, proved) = {
            let mut g = crate::sys::threads::lock(&self.rd);
            let WsClientReader { rd, unproven_left } = &mut *g;
            // Control frames need no message: a host streaming them would
            // otherwise keep this read going, never back at the
            // handshake's deadline.
            let res = rd.read(&mut Allowance::over(&mut Nb(&self.inner), unproven_left), b);
            (res, rd.take_pong(), unproven_left.is_none())
        };
        // A ping is answered even when the read then found nothing more,
        // but only once the host has proved itself: a pong is a blocking
        // write, and a peer that pinged and never read would fill the send
        // buffer and hold the daemon there, past its handshake deadline.
        if let Some(p) = pong.filter(|_| proved) {
            let mut wr = crate::sys::threads::lock(&self.wr);
            wr.queue_pong(p.payload());
            let _ = wr.flush(&mut Nb(&self.inner));
        }
        res
    }
}

pub struct TlsClient {
    sock: std::net::TcpStream,
    tls: Mutex<Tls>,
}

impl TlsClient {
    fn read(&self, b: &mut [u8]) -> io::Result<usize> {
        crate::sys::threads::lock(&self.tls).read(&mut DontWait(&self.sock), b)
    }
    fn write(&self, b: &[u8]) -> io::Result<usize> {
        crate::sys::threads::lock(&self.tls).write(&mut DontWait(&self.sock), b)
    }
    fn flush(&self) -> io::Result<()> {
        crate::sys::threads::lock(&self.tls).flush(&mut DontWait(&self.sock))
    }
}

/// The daemon's view of its socket for TLS: reads never block (the caller
/// polls first, and must not sleep holding the record layer's lock, which
/// the writer needs); writes block as plain ones do.
struct DontWait<'a>(&'a std::net::TcpStream);

impl Read for DontWait<'_> {
    fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
        recv_dontwait(self.0.as_raw_fd(), b)
    }
}

impl Write for DontWait<'_> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        (&mut &*self.0).write(b)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn recv_dontwait(fd: RawFd, b: &mut [u8]) -> io::Result<usize> {
    // SAFETY: recv writes at most b.len() bytes into `b`.
    let n = unsafe { libc::recv(fd, b.as_mut_ptr() as *mut libc::c_void, b.len(), libc::MSG_DONTWAIT) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

impl BlockingStream {
    pub fn try_clone(&self) -> io::Result<BlockingStream> {
        Ok(match self {
            BlockingStream::Unix(s) => BlockingStream::Unix(s.try_clone()?),
            BlockingStream::Tcp(s) => BlockingStream::Tcp(s.try_clone()?),
            BlockingStream::Tls(t) => BlockingStream::Tls(t.clone()),
            BlockingStream::Ws(w) => BlockingStream::Ws(w.clone()),
        })
    }
    pub fn shutdown(&self) {
        let _ = match self {
            BlockingStream::Unix(s) => s.shutdown(std::net::Shutdown::Both),
            BlockingStream::Tcp(s) => s.shutdown(std::net::Shutdown::Both),
            BlockingStream::Tls(t) => t.sock.shutdown(std::net::Shutdown::Both),
            BlockingStream::Ws(w) => {
                w.inner.shutdown();
                Ok(())
            }
        };
    }

    /// Bytes must be read through `Read` (decrypted or unframed, never
    /// blocking), not from the descriptor.
    pub fn is_layered(&self) -> bool {
        matches!(self, BlockingStream::Tls(_) | BlockingStream::Ws(_))
    }

    /// The host has proved itself (its Welcome checked out). A WebSocket
    /// then accepts messages from it of up to `limit` bytes (see
    /// `Stream::peer_proved`; the stream starts at `HANDSHAKE_LIMIT`),
    /// reads more than `PRE_AUTH_BYTES` from it, and answers its pings
    /// (none before). Shared by every clone of the stream. Other
    /// transports ignore it: the caller's `Decoder` has its own limit.
    pub fn host_proved(&self, limit: u64) {
        if let BlockingStream::Ws(w) = self {
            let mut g = crate::sys::threads::lock(&w.rd);
            g.rd.set_message_limit(limit);
            g.unproven_left = None;
        }
    }

    /// Bytes wait in a layer (decrypted, or unframed): poll would not
    /// report them.
    pub fn has_buffered(&self) -> bool {
        match self {
            BlockingStream::Tls(t) => crate::sys::threads::lock(&t.tls).has_plaintext(),
            BlockingStream::Ws(w) => crate::sys::threads::lock(&w.rd).rd.has_buffered() || w.inner.has_buffered(),
            _ => false,
        }
    }
}

impl AsRawFd for BlockingStream {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            BlockingStream::Unix(s) => s.as_raw_fd(),
            BlockingStream::Tcp(s) => s.as_raw_fd(),
            BlockingStream::Tls(t) => t.sock.as_raw_fd(),
            BlockingStream::Ws(w) => w.inner.as_raw_fd(),
        }
    }
}

impl Read for BlockingStream {
    fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
        match self {
            BlockingStream::Unix(s) => s.read(b),
            BlockingStream::Tcp(s) => s.read(b),
            BlockingStream::Tls(t) => t.read(b),
            BlockingStream::Ws(w) => w.read(b),
        }
    }
}

impl Write for BlockingStream {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        match self {
            BlockingStream::Unix(s) => send_nosignal(s.as_raw_fd(), b),
            BlockingStream::Tcp(s) => s.write(b),
            BlockingStream::Tls(t) => t.write(b),
            BlockingStream::Ws(w) => crate::sys::threads::lock(&w.wr).write(&mut Nb(&w.inner), b),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            BlockingStream::Tls(t) => t.flush(),
            BlockingStream::Ws(w) => crate::sys::threads::lock(&w.wr).flush(&mut Nb(&w.inner)),
            _ => Ok(()),
        }
    }
}

/// TCP keepalive timing: a peer that vanished without closing (power
/// loss, a cut network) is noticed after `KEEPALIVE_IDLE` of silence plus
/// `KEEPALIVE_COUNT` unanswered probes `KEEPALIVE_INTERVAL` apart: 25 s.
pub const KEEPALIVE_IDLE: i32 = 10;
pub const KEEPALIVE_INTERVAL: i32 = 5;
pub const KEEPALIVE_COUNT: i32 = 3;
/// Keepalive only runs while nothing is unacknowledged: a reply or task
/// sent into a cut network would otherwise be retried for 15 minutes or
/// more (tcp_retries2). TCP_USER_TIMEOUT bounds unacknowledged data too
/// (and, with keepalive, replaces the probe count), in milliseconds.
pub const USER_TIMEOUT_MS: i32 = 30_000;
/// So a vanished peer goes unnoticed for at most this long (ms), idle or
/// with data in flight: what the documentation quotes ("within about 30
/// seconds").
pub const DEAD_PEER_MS: i32 = {
    let probing = (KEEPALIVE_IDLE + KEEPALIVE_INTERVAL * KEEPALIVE_COUNT) * 1000;
    if probing > USER_TIMEOUT_MS { probing } else { USER_TIMEOUT_MS }
};

/// Turns on TCP keepalive with the timing above. Best effort: a socket
/// that refuses it still works, only without the check.
fn set_keepalive(fd: RawFd) {
    // SAFETY: setsockopt reads the one c_int it is pointed at, whose size
    // it is given.
    let set = |level: libc::c_int, opt: libc::c_int, v: libc::c_int| unsafe {
        libc::setsockopt(
            fd,
            level,
            opt,
            &v as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    set(libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1);
    // The timing options are Linux's; elsewhere the system's keepalive
    // timing applies.
    #[cfg(target_os = "linux")]
    {
        set(libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, KEEPALIVE_IDLE);
        set(libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, KEEPALIVE_INTERVAL);
        set(libc::IPPROTO_TCP, libc::TCP_KEEPCNT, KEEPALIVE_COUNT);
        set(libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT, USER_TIMEOUT_MS);
    }
}

/// Dials once.
pub fn dial_once(addr: &Address) -> io::Result<(BlockingStream, Framing)> {
    dial_once_with(addr, None)
}

/// Dials once; a `tls+tcp://` address needs `tls` (the CA to verify the
/// host against) and completes the TLS handshake here, within
/// `tls::CLIENT_HANDSHAKE_TIMEOUT`.
pub fn dial_once_with(addr: &Address, tls: Option<&Arc<ClientConfig>>) -> io::Result<(BlockingStream, Framing)> {
    dial_once_by(addr, tls, None, None)
}

/// The earlier of `now + timeout` and `end_by`.
fn deadline_within(timeout: Duration, end_by: Option<Instant>) -> Instant {
    let d = Instant::now() + timeout;
    end_by.map_or(d, |e| e.min(d))
}

/// `dial_once_with`; a TCP connect waits no later than `connect_by`, and
/// the TLS handshake and the WebSocket upgrade also end by `end_by`, if
/// given.
fn dial_once_by(
    addr: &Address,
    tls: Option<&Arc<ClientConfig>>,
    connect_by: Option<Instant>,
    end_by: Option<Instant>,
) -> io::Result<(BlockingStream, Framing)> {
    match addr {
        Address::Tcp { port, tls: want, .. } => {
            let host = addr.dial_host().unwrap_or_default();
            let cfg = match (want, tls) {
                (true, None) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "a tls+tcp:// URL needs the host's certificate (`tlscert`)",
                    ))
                }
                (true, Some(c)) => Some(c),
                (false, _) => None,
            };
            let name = match cfg {
                Some(_) => Some(tls::server_name(&host).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?),
                None => None,
            };
            let sa = resolve(&host, *port)?;
            // A listener whose accept queue is full drops the SYN, and the
            // kernel retries it for about 2 minutes: the caller's retry
            // deadline bounds that wait (at least 100 ms an attempt).
            let s = match connect_by {
                Some(d) => std::net::TcpStream::connect_timeout(
                    &sa,
                    d.saturating_duration_since(Instant::now()).max(Duration::from_millis(100)),
                )?,
                None => std::net::TcpStream::connect(sa)?,
            };
            let _ = s.set_nodelay(true);
            set_keepalive(s.as_raw_fd());
            let ws_path = match addr {
                Address::Tcp { ws, .. } => ws.clone(),
                _ => None,
            };
            let (Some(cfg), Some(name)) = (cfg, name) else {
                return ws_upgrade(BlockingStream::Tcp(s), addr, ws_path, end_by);
            };
            let mut t = Tls::client(cfg, name)?;
            let start = Instant::now();
            let deadline = deadline_within(tls::CLIENT_HANDSHAKE_TIMEOUT, end_by);
            t.handshake_blocking(&mut ByDeadline { sock: &s, deadline }).map_err(|e| {
                let why = match e.kind() {
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                        format!("no TLS handshake from the host within {:.0} s", (deadline - start).as_secs_f64())
                    }
                    io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset => {
                        "the host closed the connection during the TLS handshake".into()
                    }
                    _ => e.to_string(),
                };
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("TLS handshake failed: {why} (is the host listening at a tls+tcp:// URL, with the certificate given as `tlscert`?)"),
                )
            })?;
            s.set_read_timeout(None)?;
            s.set_write_timeout(None)?;
            ws_upgrade(BlockingStream::Tls(Arc::new(TlsClient { sock: s, tls: Mutex::new(t) })), addr, ws_path, end_by)
        }
        _ => {
            // Without blocking: a blocking connect to a listener whose
            // accept queue is full waits until it accepts, which may be
            // never. A full queue is WouldBlock, retried as a refusal is.
            let s = mio::net::UnixStream::connect_addr(&unix_addr(addr)?).map_err(|e| match e.kind() {
                io::ErrorKind::WouldBlock => io::Error::new(e.kind(), "its accept queue is full"),
                _ => e,
            })?;
            // SAFETY: into_raw_fd hands over the open socket's descriptor,
            // owned by nothing else from here on.
            let s = unsafe { unet::UnixStream::from_raw_fd(s.into_raw_fd()) };
            s.set_nonblocking(false)?;
            Ok((BlockingStream::Unix(s), Framing::Ipc))
        }
    }
}

/// A blocking socket whose reads and writes all end by `deadline`: each
/// call waits only for the time left. A socket timeout alone bounds each
/// call, not their sum, and a peer that sends a byte at a time never
/// reaches it.
struct ByDeadline<'a> {
    sock: &'a std::net::TcpStream,
    deadline: Instant,
}

impl ByDeadline<'_> {
    fn time_left(&self) -> io::Result<Duration> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        Ok(left)
    }
}

impl Read for ByDeadline<'_> {
    fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
        self.sock.set_read_timeout(Some(self.time_left()?))?;
        (&mut &*self.sock).read(b)
    }
}

impl Write for ByDeadline<'_> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.sock.set_write_timeout(Some(self.time_left()?))?;
        (&mut &*self.sock).write(b)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// How long a daemon waits for the host's answer to its WebSocket upgrade.
pub const WS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// For `ws://` and `wss://`: the client's upgrade over `s`, within
/// `WS_HANDSHAKE_TIMEOUT` (and by `end_by`, if given); otherwise `s` as it
/// is.
fn ws_upgrade(s: BlockingStream, addr: &Address, path: Option<String>, end_by: Option<Instant>) -> io::Result<(BlockingStream, Framing)> {
    let Some(path) = path else { return Ok((s, Framing::Tcp)) };
    let host = match addr {
        Address::Tcp { port, .. } => {
            let h = addr.dial_host().unwrap_or_default();
            if h.contains(':') { format!("[{h}]:{port}") } else { format!("{h}:{port}") }
        }
        _ => String::new(),
    };
    let fail = |why: String| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("WebSocket handshake failed: {why} (is the host listening at this ws:// or wss:// URL?)"),
        )
    };
    let (req, key) = crate::wire::ws::client_request(&host, &path)?;
    Nb(&s).write_all(&req)?;
    let start = Instant::now();
    let deadline = deadline_within(WS_HANDSHAKE_TIMEOUT, end_by);
    let mut buf = Vec::new();
    let rest = loop {
        match crate::wire::ws::client_response(&mut Nb(&s), &mut buf, &key) {
            Ok(rest) => break rest,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(fail(format!("no answer from the host within {:.0} s", (deadline - start).as_secs_f64())));
                }
                if !s.has_buffered() {
                    wait_readable(s.as_raw_fd(), left.min(Duration::from_millis(200)));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return Err(fail("the host closed the connection".into()))
            }
            Err(e) => return Err(fail(e.to_string())),
        }
    };
    // Until the host has proved itself, its messages are held to the
    // handshake's size; the caller raises the limit (`host_proved`).
    let mut rd = WsReader::new(false, HANDSHAKE_LIMIT);
    // The host's first frames may have come with its response.
    let rest_len = rest.len();
    rd.push_input(rest);
    // What came with the response counts too.
    let unproven_left = Some(PRE_AUTH_BYTES.saturating_sub(rest_len));
    let ws = WsClient { inner: s, rd: Mutex::new(WsClientReader { rd, unproven_left }), wr: Mutex::new(WsWriter::new(true)) };
    crate::sys::threads::lock(&ws.wr).ready = true;
    Ok((BlockingStream::Ws(Arc::new(ws)), Framing::Tcp))
}

/// Dials, retrying on refusal until `deadline` (None: once). `keep_going` is
/// consulted between attempts so the caller can stop on a user interrupt.
pub fn dial(
    addr: &Address,
    deadline: Option<Instant>,
    keep_going: impl FnMut() -> bool,
) -> io::Result<(BlockingStream, Framing)> {
    dial_with(addr, None, deadline, None, keep_going)
}

/// `dial`, with the client TLS configuration for a `tls+tcp://` address.
/// `end_by`: no TLS handshake or WebSocket upgrade goes on past it (for a
/// daemon that must end by its idle and wall time limits).
pub fn dial_with(
    addr: &Address,
    tls: Option<&Arc<ClientConfig>>,
    deadline: Option<Instant>,
    end_by: Option<Instant>,
    mut keep_going: impl FnMut() -> bool,
) -> io::Result<(BlockingStream, Framing)> {
    let mut backoff = Duration::from_millis(10);
    loop {
        match dial_once_by(addr, tls, deadline, end_by) {
            Ok(s) => return Ok(s),
            Err(e) => {
                let retry = matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionRefused
                        | io::ErrorKind::NotFound
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::WouldBlock
                );
                match deadline {
                    Some(d) if retry && Instant::now() < d && keep_going() => {
                        std::thread::sleep(backoff);
                        backoff = (backoff * 2).min(Duration::from_millis(500));
                    }
                    _ => return Err(e),
                }
            }
        }
    }
}

/// Waits until `fd` is readable or `timeout` passes. True when readable
/// (or hung up: the following read reports it).
pub fn wait_readable(fd: RawFd, timeout: Duration) -> bool {
    let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    // Rounded up: a remainder under 1 ms would otherwise poll with 0 and
    // return at once, again and again until the deadline.
    let ms = timeout.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
    // SAFETY: poll reads and writes the one pollfd it is given.
    let rc = unsafe { libc::poll(&mut p, 1, ms) };
    rc > 0
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn peer_pid_of(fd: std::os::fd::RawFd) -> Option<u32> {
    let mut cred = libc::ucred { pid: 0, uid: 0, gid: 0 };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid for the kernel to write; `fd` is an
    // open socket owned by the caller's stream.
    let rc = unsafe {
        libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_PEERCRED, (&mut cred as *mut libc::ucred).cast(), &mut len)
    };
    (rc == 0 && cred.pid > 0).then_some(cred.pid as u32)
}

#[cfg(target_vendor = "apple")]
fn peer_pid_of(fd: std::os::fd::RawFd) -> Option<u32> {
    let mut pid: libc::pid_t = 0;
    let mut len = std::mem::size_of::<libc::pid_t>() as libc::socklen_t;
    // SAFETY: as above, for LOCAL_PEERPID's pid_t.
    let rc = unsafe { libc::getsockopt(fd, libc::SOL_LOCAL, libc::LOCAL_PEERPID, (&mut pid as *mut libc::pid_t).cast(), &mut len) };
    (rc == 0 && pid > 0).then_some(pid as u32)
}

#[cfg(not(any(target_os = "linux", target_os = "android", target_vendor = "apple")))]
fn peer_pid_of(_fd: std::os::fd::RawFd) -> Option<u32> {
    None
}
