//! Sockets: listeners for the host (non-blocking, driven by mio) and dialers
//! for daemons (blocking std sockets). Unix sockets carry IPC framing, TCP
//! carries TCP framing, as NNG does.

use crate::frame::Framing;
use crate::url::Address;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::{AsRawFd, RawFd};
#[cfg(target_os = "linux")]
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net as unet;
use std::time::{Duration, Instant};

pub enum Listener {
    Unix(mio::net::UnixListener, Option<String>),
    Tcp(mio::net::TcpListener),
}

pub enum Stream {
    Unix(mio::net::UnixStream),
    Tcp(mio::net::TcpStream),
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
        Address::Tcp { .. } => unreachable!(),
    }
}

fn resolve(host: &str, port: u16) -> io::Result<SocketAddr> {
    let host = if host.is_empty() || host == "*" { "0.0.0.0" } else { host };
    (host, port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("cannot resolve host '{host}'")))
}

impl Listener {
    /// Binds; returns the listener and the URL daemons should dial (with the
    /// real port when port 0 was asked for).
    pub fn bind(addr: &Address) -> io::Result<(Listener, Address)> {
        match addr {
            Address::Tcp { host, port, tls } => {
                let sa = resolve(host, *port)?;
                let std_l = std::net::TcpListener::bind(sa)?;
                std_l.set_nonblocking(true)?;
                let real = std_l.local_addr()?.port();
                let l = mio::net::TcpListener::from_std(std_l);
                Ok((Listener::Tcp(l), Address::Tcp { host: host.clone(), port: real, tls: *tls }))
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

    pub fn accept(&self) -> io::Result<(Stream, Framing)> {
        match self {
            Listener::Unix(l, _) => Ok((Stream::Unix(l.accept()?.0), Framing::Ipc)),
            Listener::Tcp(l) => {
                let (s, _) = l.accept()?;
                let _ = s.set_nodelay(true);
                set_keepalive(s.as_raw_fd());
                Ok((Stream::Tcp(s), Framing::Tcp))
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
        }
    }
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
delegate_source!(Stream, Unix, Tcp);

impl Read for Stream {
    fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.read(b),
            Stream::Tcp(s) => s.read(b),
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
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A connected socket used with blocking I/O (daemon side).
pub enum BlockingStream {
    Unix(unet::UnixStream),
    Tcp(std::net::TcpStream),
}

impl BlockingStream {
    pub fn try_clone(&self) -> io::Result<BlockingStream> {
        Ok(match self {
            BlockingStream::Unix(s) => BlockingStream::Unix(s.try_clone()?),
            BlockingStream::Tcp(s) => BlockingStream::Tcp(s.try_clone()?),
        })
    }
    pub fn shutdown(&self) {
        let _ = match self {
            BlockingStream::Unix(s) => s.shutdown(std::net::Shutdown::Both),
            BlockingStream::Tcp(s) => s.shutdown(std::net::Shutdown::Both),
        };
    }
}

impl AsRawFd for BlockingStream {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            BlockingStream::Unix(s) => s.as_raw_fd(),
            BlockingStream::Tcp(s) => s.as_raw_fd(),
        }
    }
}

impl Read for BlockingStream {
    fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
        match self {
            BlockingStream::Unix(s) => s.read(b),
            BlockingStream::Tcp(s) => s.read(b),
        }
    }
}

impl Write for BlockingStream {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        match self {
            BlockingStream::Unix(s) => send_nosignal(s.as_raw_fd(), b),
            BlockingStream::Tcp(s) => s.write(b),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
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

/// Turns on TCP keepalive with the timing above. Best effort: a socket
/// that refuses it still works, only without the check.
fn set_keepalive(fd: RawFd) {
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
    match addr {
        Address::Tcp { port, .. } => {
            let host = addr.dial_host().unwrap();
            let sa = resolve(&host, *port)?;
            let s = std::net::TcpStream::connect(sa)?;
            let _ = s.set_nodelay(true);
            set_keepalive(s.as_raw_fd());
            Ok((BlockingStream::Tcp(s), Framing::Tcp))
        }
        _ => Ok((BlockingStream::Unix(unet::UnixStream::connect_addr(&unix_addr(addr)?)?), Framing::Ipc)),
    }
}

/// Dials, retrying on refusal until `deadline` (None: once). `keep_going` is
/// consulted between attempts so the caller can stop on a user interrupt.
pub fn dial(
    addr: &Address,
    deadline: Option<Instant>,
    mut keep_going: impl FnMut() -> bool,
) -> io::Result<(BlockingStream, Framing)> {
    let mut backoff = Duration::from_millis(10);
    loop {
        match dial_once(addr) {
            Ok(s) => return Ok(s),
            Err(e) => {
                let retry = matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionRefused | io::ErrorKind::NotFound | io::ErrorKind::TimedOut
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
    let rc = unsafe { libc::poll(&mut p, 1, ms) };
    rc > 0
}
