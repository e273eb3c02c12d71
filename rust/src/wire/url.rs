//! URL parsing for the addresses mirai listens on and dials.
//!
//! Parsing lives in Rust so that the host, the daemons and the tests agree on
//! one grammar; the R layer only forwards strings and reports our errors.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// Linux abstract-namespace Unix socket.
    Abstract(String),
    /// Filesystem Unix socket.
    Ipc(String),
    /// TCP; `host` empty means the wildcard address. Port 0 asks the kernel.
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
                if rest.len() > 107 {
                    return bad("abstract socket name longer than 107 bytes");
                }
                Ok(Address::Abstract(rest.to_string()))
            }
            "ipc" => {
                if rest.is_empty() {
                    return bad("ipc path is empty");
                }
                if rest.len() > 107 {
                    return bad("ipc path longer than 107 bytes");
                }
                Ok(Address::Ipc(rest.to_string()))
            }
            "tcp" | "tls+tcp" | "ws" | "wss" => {
                let tls = scheme == "tls+tcp" || scheme == "wss";
                let (rest, ws) = match scheme {
                    "ws" | "wss" => {
                        let (hp, path) = split_path(rest);
                        if path.len() > 1024 || path.bytes().any(|b| b <= b' ' || b == 0x7f) {
                            return bad("the path must be printable, without spaces, at most 1024 bytes");
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

    /// The form dialers use: the wildcard host becomes loopback.
    pub fn dial_host(&self) -> Option<String> {
        match self {
            Address::Tcp { host, .. } if host.is_empty() || host == "*" || host == "0.0.0.0" => {
                Some("127.0.0.1".into())
            }
            Address::Tcp { host, .. } if host == "::" => Some("::1".into()),
            Address::Tcp { host, .. } => Some(host.clone()),
            _ => None,
        }
    }

    pub fn is_ipc(&self) -> bool {
        !matches!(self, Address::Tcp { .. })
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
    fn wildcard_dials_loopback() {
        assert_eq!(Address::parse("tcp://:0").unwrap().dial_host().unwrap(), "127.0.0.1");
    }
}
