//! URL parsing: the addresses mirai listens on and dials, and the
//! `ssh://` URLs of `ssh_config()`.
//!
//! Parsing lives here alone so that the host, the daemons, the R layer and
//! the tests agree on one grammar: R asks for a URL's parts
//! (`r::helpers::mirai_url_parts`) rather than matching URLs itself.

use std::fmt;

/// Longest name of a Unix socket, abstract or a path: what `sun_path`
/// holds (108 bytes) less the NUL, or the leading NUL of an abstract name.
pub const MAX_SOCKET_PATH: usize = 107;
/// Longest HTTP path of a WebSocket URL.
pub const MAX_WS_PATH: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// Linux abstract-namespace Unix socket.
    Abstract(String),
    /// Filesystem Unix socket.
    Ipc(String),
    /// TCP; `host` may be a wildcard (`is_wildcard`). Port 0 asks the kernel.
    /// `tls`: TLS over it (`tls+tcp://`, `wss://`); `ws`: WebSocket, with
    /// the HTTP path of the upgrade request (`ws://`, `wss://`).
    Tcp { host: String, port: u16, tls: bool, ws: Option<String> },
}

impl Address {
    pub fn parse(url: &str) -> Result<Address, String> {
        let bad = |why: &str| Err(format!("invalid URL '{url}': {why}"));
        let (scheme, rest) = match url.split_once("://") {
            Some(p) => p,
            None => return bad("expected scheme://address, e.g. tcp://127.0.0.1:5555"),
        };
        match scheme {
            "abstract" => {
                if rest.is_empty() {
                    return bad("abstract socket name is empty");
                }
                if rest.len() > MAX_SOCKET_PATH {
                    return bad(&format!("abstract socket name longer than {MAX_SOCKET_PATH} bytes"));
                }
                Ok(Address::Abstract(rest.to_string()))
            }
            "ipc" => {
                if rest.is_empty() {
                    return bad("ipc path is empty");
                }
                if rest.len() > MAX_SOCKET_PATH {
                    return bad(&format!("ipc path longer than {MAX_SOCKET_PATH} bytes"));
                }
                Ok(Address::Ipc(rest.to_string()))
            }
            "tcp" | "tls+tcp" | "ws" | "wss" => {
                let tls = scheme == "tls+tcp" || scheme == "wss";
                let (rest, ws) = match scheme {
                    "ws" | "wss" => {
                        let (hp, path) = split_path(rest);
                        if path.len() > MAX_WS_PATH || path.bytes().any(|b| b <= b' ' || b == 0x7f) {
                            return bad(&format!("the path must be printable, without spaces, at most {MAX_WS_PATH} bytes"));
                        }
                        (hp, Some(if path.is_empty() { "/".to_string() } else { path.to_string() }))
                    }
                    _ => (rest, None),
                };
                let Some((host, port)) = split_host_port(rest) else {
                    return bad("expected host:port, e.g. 127.0.0.1:5555 or [::1]:0");
                };
                let port: u16 = match port.parse() {
                    Ok(p) => p,
                    Err(_) => return bad("port must be an integer from 0 to 65535"),
                };
                Ok(Address::Tcp { host: host.to_string(), port, tls, ws })
            }
            "inproc" => bad("this transport is not supported by this build of mirai"),
            _ => bad("unknown scheme; use abstract://, ipc://, tcp://, tls+tcp://, ws:// or wss://"),
        }
    }

    /// The form dialers use: a wildcard host becomes loopback.
    pub fn dial_host(&self) -> Option<String> {
        match self {
            Address::Tcp { host, .. } if host == "::" => Some("::1".into()),
            Address::Tcp { host, .. } if is_wildcard(host) => Some("127.0.0.1".into()),
            Address::Tcp { host, .. } => Some(host.clone()),
            _ => None,
        }
    }

    pub fn is_ipc(&self) -> bool {
        !matches!(self, Address::Tcp { .. })
    }
}

/// The wildcard hosts, which listen on every interface: none at all
/// (`tcp://:5555`), `*` or `0.0.0.0` (IPv4), `::` (IPv6). The one
/// definition: listening, dialling and the names of a generated certificate
/// go by it, and the R documentation quotes it.
pub const WILDCARD_HOSTS: [&str; 4] = ["", "*", "0.0.0.0", "::"];

pub fn is_wildcard(host: &str) -> bool {
    WILDCARD_HOSTS.contains(&host)
}

/// The address a listener binds for `host`: a wildcard as the system names
/// it (`0.0.0.0`, or `::` for IPv6).
pub fn bind_host(host: &str) -> &str {
    match host {
        "::" => "::",
        h if is_wildcard(h) => "0.0.0.0",
        h => h,
    }
}

/// Where `ssh_config()` logs in: `ssh://[user@]host[:port]`, port 22 if
/// none (an IPv6 host in brackets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshTarget {
    pub user: Option<String>,
    pub host: String,
    pub port: u16,
}

impl SshTarget {
    pub fn parse(url: &str) -> Result<SshTarget, String> {
        let bad = || format!("invalid URL '{url}': expected ssh://[user@]host[:port]");
        let rest = url.strip_prefix("ssh://").ok_or_else(bad)?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let (user, hostport) = match rest.split_once('@') {
            Some((u, hp)) => (Some(u), hp),
            None => (None, rest),
        };
        // A user or host name: printable, none of the URL's delimiters.
        let name = |s: &str| !s.is_empty() && !s.bytes().any(|b| b <= b' ' || b == 0x7f || b"/@:[]".contains(&b));
        let (host, port) = match hostport.strip_prefix('[') {
            Some(v6) => {
                let (h, after) = v6.split_once(']').ok_or_else(bad)?;
                h.parse::<std::net::Ipv6Addr>().map_err(|_| bad())?;
                (h, if after.is_empty() { Some("22") } else { after.strip_prefix(':') })
            }
            None => match hostport.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostport, Some("22")),
            },
        };
        let port = port.filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())).and_then(|p| p.parse().ok());
        match port {
            Some(port) if user.is_none_or(name) && (hostport.starts_with('[') || name(host)) => {
                Ok(SshTarget { user: user.map(str::to_string), host: host.to_string(), port })
            }
            _ => Err(bad()),
        }
    }
}

/// Splits `host:port/path` at the path (which keeps its leading '/').
fn split_path(s: &str) -> (&str, &str) {
    let from = if s.starts_with('[') { s.find(']').unwrap_or(0) } else { 0 };
    match s[from..].find('/') {
        Some(i) => s.split_at(from + i),
        None => (s, ""),
    }
}

fn split_host_port(s: &str) -> Option<(&str, &str)> {
    let s = s.trim_end_matches('/');
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = after.strip_prefix(':')?;
        if port.is_empty() {
            return None;
        }
        return Some((host, port));
    }
    let (host, port) = s.rsplit_once(':')?;
    if host.contains(':') || port.is_empty() {
        return None;
    }
    Some((host, port))
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Abstract(n) => write!(f, "abstract://{n}"),
            Address::Ipc(p) => write!(f, "ipc://{p}"),
            Address::Tcp { host, port, tls, ws } => {
                let scheme = match (tls, ws.is_some()) {
                    (false, false) => "tcp",
                    (true, false) => "tls+tcp",
                    (false, true) => "ws",
                    (true, true) => "wss",
                };
                let path = match ws.as_deref() {
                    None | Some("/") => "",
                    Some(p) => p,
                };
                if host.contains(':') {
                    write!(f, "{scheme}://[{host}]:{port}{path}")
                } else {
                    write!(f, "{scheme}://{host}:{port}{path}")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_scheme() {
        assert_eq!(Address::parse("abstract://abc").unwrap(), Address::Abstract("abc".into()));
        assert_eq!(Address::parse("ipc:///tmp/x.sock").unwrap(), Address::Ipc("/tmp/x.sock".into()));
        assert_eq!(
            Address::parse("tcp://127.0.0.1:5555").unwrap(),
            Address::Tcp { host: "127.0.0.1".into(), port: 5555, tls: false, ws: None }
        );
        assert_eq!(
            Address::parse("tcp://:0").unwrap(),
            Address::Tcp { host: "".into(), port: 0, tls: false, ws: None }
        );
        assert_eq!(
            Address::parse("tcp://[::1]:80").unwrap(),
            Address::Tcp { host: "::1".into(), port: 80, tls: false, ws: None }
        );
        assert_eq!(
            Address::parse("tls+tcp://host.example:1").unwrap(),
            Address::Tcp { host: "host.example".into(), port: 1, tls: true, ws: None }
        );
    }

    #[test]
    fn rejects_bad_urls_with_reasons() {
        for (u, why) in [
            ("127.0.0.1:5555", "scheme"),
            ("tcp://127.0.0.1", "host:port"),
            ("tcp://127.0.0.1:99999", "port"),
            ("tcp://127.0.0.1:x", "port"),
            ("tcp://::1:5", "host:port"),
            ("abstract://", "empty"),
            ("ftp://x:1", "unknown scheme"),
            ("inproc://x", "not supported"),
            ("ws://x:1/a b", "path"),
            ("ws://x/p", "host:port"),
        ] {
            let e = Address::parse(u).unwrap_err();
            assert!(e.contains(why), "{u}: {e}");
        }
    }

    #[test]
    fn display_round_trips() {
        for u in [
            "abstract://n",
            "ipc:///tmp/a",
            "tcp://127.0.0.1:7",
            "tcp://[::1]:8",
            "tls+tcp://h:9",
            "ws://h:1",
            "wss://[::1]:2/x/y",
            "ws://:0/p",
        ] {
            assert_eq!(Address::parse(u).unwrap().to_string(), u);
        }
    }

    #[test]
    fn parses_websocket_urls() {
        assert_eq!(
            Address::parse("ws://:0").unwrap(),
            Address::Tcp { host: "".into(), port: 0, tls: false, ws: Some("/".into()) }
        );
        assert_eq!(
            Address::parse("wss://[::1]:80/a/b").unwrap(),
            Address::Tcp { host: "::1".into(), port: 80, tls: true, ws: Some("/a/b".into()) }
        );
        assert_eq!(
            Address::parse("ws://127.0.0.1:5/").unwrap(),
            Address::Tcp { host: "127.0.0.1".into(), port: 5, tls: false, ws: Some("/".into()) }
        );
    }

    #[test]
    fn wildcards_bind_everywhere_and_dial_loopback() {
        for h in WILDCARD_HOSTS {
            let a = Address::parse(&format!("tcp://{}:0", if h.contains(':') { format!("[{h}]") } else { h.to_string() })).unwrap();
            let want = if h == "::" { "::1" } else { "127.0.0.1" };
            assert_eq!(a.dial_host().unwrap(), want, "{h}");
            assert_eq!(bind_host(h), if h == "::" { "::" } else { "0.0.0.0" });
        }
        assert!(!is_wildcard("127.0.0.1"));
        assert_eq!(bind_host("10.1.2.3"), "10.1.2.3");
    }

    #[test]
    fn parses_ssh_targets() {
        let t = |user: Option<&str>, host: &str, port| SshTarget { user: user.map(Into::into), host: host.into(), port };
        assert_eq!(SshTarget::parse("ssh://10.75.32.90").unwrap(), t(None, "10.75.32.90", 22));
        assert_eq!(SshTarget::parse("ssh://user@host.example:222/").unwrap(), t(Some("user"), "host.example", 222));
        assert_eq!(SshTarget::parse("ssh://u@[::1]:2222").unwrap(), t(Some("u"), "::1", 2222));
        assert_eq!(SshTarget::parse("ssh://[fe80::1]").unwrap(), t(None, "fe80::1", 22));
        for bad in ["10.75.32.90", "tcp://h:1", "ssh://", "ssh://@h", "ssh://u@", "ssh://h:", "ssh://h:x", "ssh://h:+22", "ssh://h:70000",
                    "ssh://h/path", "ssh://a b", "ssh://[nothex]:22", "ssh://u@v@h"] {
            assert!(SshTarget::parse(bad).unwrap_err().contains("expected ssh://[user@]host[:port]"), "{bad}");
        }
    }
}
