//! TLS for `tls+tcp://` and `wss://` (rustls with the ring provider: no C
//! TLS library).
//!
//! Two parts. Credentials: a fresh self-signed certificate (rcgen, ECDSA
//! P-256) or the user's PEM certificate chain and key, checked here so that
//! `daemons()` fails before launching anything (the key must decrypt and
//! match the certificate, every certificate must be in its validity period),
//! and turned into rustls configurations; the private key is read in `key`,
//! the daemon's verification of its host is `verify` (a pinned certificate,
//! or a chain to a given CA; the URL's host name checked either way), and
//! `x509` reads what rustls does not expose of a certificate. And `Tls`, the
//! record layer over any socket as a state machine that never blocks by
//! itself: reads pull ciphertext only when no plaintext is left, and report
//! `WouldBlock` exactly when the socket did, so that an edge-triggered event
//! loop (the host) and a poll-then-read loop (the daemon) drive it as they
//! drive a plain socket. Every error from the peer's bytes is an
//! `InvalidData` error value, never a panic.

mod key;
mod verify;
mod x509;

use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, Connection, ServerConfig, ServerConnection};
use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long a daemon waits for the host's side of the TLS handshake.
pub const CLIENT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A host's TLS credentials: the rustls configuration, and the PEM
/// certificate chain daemons need to verify it (`tlscert`).
#[derive(Clone, Debug)]
pub struct ServerCreds {
    pub config: Arc<ServerConfig>,
    pub chain_pem: String,
}

/// A fresh self-signed certificate (ECDSA P-256) for `names` (host names or
/// IP addresses); returns the certificate and its private key as PEM.
pub fn generate(names: &[String]) -> Result<(String, String), String> {
    let ck = rcgen::generate_simple_self_signed(names.to_vec())
        .map_err(|e| format!("cannot generate a TLS certificate for {names:?}: {e}"))?;
    Ok((ck.cert.pem(), ck.key_pair.serialize_pem()))
}

/// The PEM blocks of `text` (certificates, keys and whatever else), read by
/// the `pem` crate, which also takes the RFC 1421 headers of a legacy
/// encrypted key (the PEM reader of rustls refuses them). A block cut off
/// before its END line is an error rather than a block left out.
fn pem_blocks(text: &str) -> Result<Vec<pem::Pem>, String> {
    let blocks = pem::parse_many(text).map_err(|e| e.to_string())?;
    if text.matches("-----BEGIN ").count() != blocks.len() {
        return Err("a block has no END line".into());
    }
    Ok(blocks)
}

/// The certificates among `blocks`, in order.
fn certs_in(blocks: &[pem::Pem]) -> Vec<CertificateDer<'static>> {
    blocks.iter().filter(|b| b.tag() == "CERTIFICATE").map(|b| CertificateDer::from(b.contents().to_vec())).collect()
}

/// `certs` as PEM text, one block after another.
fn pem_encode_certs(certs: &[CertificateDer<'_>]) -> String {
    let lf = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
    certs.iter().map(|c| pem::encode_config(&pem::Pem::new("CERTIFICATE", c.to_vec()), lf)).collect()
}

/// A server configuration from PEM text holding the certificate, any chain
/// after it, and the private key (decrypted with `pass` if encrypted).
/// Errors name the argument at fault, `tls` or `pass`.
pub fn server_creds(pem: &str, pass: Option<&str>) -> Result<ServerCreds, String> {
    let blocks = pem_blocks(pem).map_err(|e| format!("`tls`: cannot read the PEM certificates and key: {e}"))?;
    let certs = certs_in(&blocks);
    if certs.is_empty() {
        return Err("`tls`: no certificate found (a PEM '-----BEGIN CERTIFICATE-----' block)".into());
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    for (i, c) in certs.iter().enumerate() {
        let which = if i == 0 { "the certificate".to_string() } else { format!("certificate {} of the chain", i + 1) };
        let f = x509::facts(c).map_err(|e| format!("`tls`: {which} is {e}"))?;
        if now > f.not_after {
            return Err(format!("`tls`: {which} expired on {}", x509::show_time(f.not_after)));
        }
        if now < f.not_before {
            return Err(format!("`tls`: {which} is not valid before {}", x509::show_time(f.not_before)));
        }
    }
    let key = key::private_key(&blocks, pass)?;
    let chain_pem = pem_encode_certs(&certs);
    let config = server_config(certs, key)?;
    Ok(ServerCreds { config: Arc::new(config), chain_pem })
}

/// A host's configuration serving `certs` (the first the key's own) with
/// `key`. rustls's `with_single_cert` would parse the certificate with
/// webpki, which takes only X.509 version 3, while `openssl x509 -req`
/// without extensions writes version 1 (usable when a daemon pins it), so
/// the key is matched to the certificate here, by their public keys.
fn server_config(
    certs: Vec<CertificateDer<'static>>,
    key: rustls::pki_types::PrivateKeyDer<'static>,
) -> Result<ServerConfig, String> {
    let provider = provider();
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| {
            format!(
                "`tls`: the private key cannot be used: {e} (supported: RSA of 2048 bits or more, \
                 ECDSA P-256 or P-384, Ed25519)"
            )
        })?;
    let leaf = certs.first().ok_or("`tls`: no certificate found")?;
    let cert_spki = x509::facts(leaf).map_err(|e| format!("`tls`: the certificate is {e}"))?.spki;
    match signing.public_key() {
        Some(spki) if spki.as_ref() != cert_spki.as_slice() => {
            return Err("`tls`: the private key does not belong to the certificate (the first certificate must be \
                        the key's own, any chain after it)"
                .into())
        }
        Some(_) => {}
        None => return Err("`tls`: cannot tell whether the private key belongs to the certificate".into()),
    }
    let certified = rustls::sign::CertifiedKey::new(certs, signing);
    Ok(ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(certified))))
}

/// Generated credentials for a host listening at `host` (empty or a
/// wildcard: this machine's loopback, name and interface addresses).
pub fn generated_creds(host: &str) -> Result<ServerCreds, String> {
    let names: Vec<String> = if crate::wire::url::is_wildcard(host) {
        let mut v = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
        if let Ok(n) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
            let n = n.trim();
            if !n.is_empty() && rustls::pki_types::DnsName::try_from(n).is_ok() {
                v.push(n.to_string());
            }
        }
        v.extend(crate::sys::net::interface_addresses().into_iter().map(|(_, ip)| ip));
        v
    } else {
        vec![host.to_string()]
    };
    let (cert, key) = generate(&names)?;
    server_creds(&format!("{cert}{key}"), None)
}

/// A daemon's configuration, trusting its host by the certificates in
/// `ca_pem` (`tlscert`: the host's own certificate, a CA, or a chain), as
/// `verify` explains.
pub fn client_config(ca_pem: &str) -> Result<Arc<ClientConfig>, String> {
    let blocks = pem_blocks(ca_pem).map_err(|e| format!("`tlscert`: cannot read the PEM certificates: {e}"))?;
    let certs = certs_in(&blocks);
    let provider = provider();
    let verifier = verify::HostVerifier::new(certs, provider.signature_verification_algorithms)?;
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        // "dangerous" only in that rustls cannot vouch for a verifier it did
        // not write: this one verifies (see `verify`).
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The name a daemon checks the host's certificate against (and sends as
/// SNI, unless it is an IP address).
pub fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(host.to_string()).map_err(|e| format!("'{host}' is not a valid TLS server name: {e}"))
}

fn tls_err(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("TLS: {}", describe(&e)))
}

/// A TLS error in words: a daemon's refusal of its host's certificate says
/// why and what to check.
fn describe(e: &rustls::Error) -> String {
    use rustls::CertificateError as C;
    let rustls::Error::InvalidCertificate(c) = e else { return e.to_string() };
    match c {
        C::Other(o) => match o.0.downcast_ref::<verify::Refusal>() {
            Some(r) => r.0.clone(),
            None => format!("invalid peer certificate: {}", o.0),
        },
        C::UnknownIssuer => "the host's certificate is not one given in `tlscert`, nor issued through one of them \
                             (does `tlscert` hold its CA, and does the host send any intermediate certificates \
                             after its own?)"
            .into(),
        C::ExpiredContext { not_after, .. } => {
            format!("a certificate of the host's chain expired on {}", x509::show_time(not_after.as_secs()))
        }
        C::NotValidYetContext { not_before, .. } => {
            format!("a certificate of the host's chain is not valid before {}", x509::show_time(not_before.as_secs()))
        }
        C::NotValidForNameContext { .. } => format!("the host's {c}"),
        _ => e.to_string(),
    }
}

/// The TLS record layer of one connection, over a socket the caller passes
/// to each call (so that one thread may hold the socket for reading while
/// another writes, each taking this state under a lock).
pub struct Tls {
    conn: Connection,
}

impl Tls {
    pub fn server(config: &Arc<ServerConfig>) -> io::Result<Tls> {
        let conn = ServerConnection::new(config.clone()).map_err(tls_err)?;
        Ok(Tls { conn: conn.into() })
    }

    pub fn client(config: &Arc<ClientConfig>, name: ServerName<'static>) -> io::Result<Tls> {
        let conn = ClientConnection::new(config.clone(), name).map_err(tls_err)?;
        Ok(Tls { conn: conn.into() })
    }

    pub fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// TLS records are waiting to go out.
    pub fn wants_write(&self) -> bool {
        self.conn.wants_write()
    }

    /// Decrypted bytes are waiting to be read: the socket may have nothing
    /// more to report, so a caller must read before it polls.
    pub fn has_plaintext(&mut self) -> bool {
        match self.conn.process_new_packets() {
            Ok(st) => st.plaintext_bytes_to_read() > 0,
            // The next read reports the error.
            Err(_) => true,
        }
    }

    /// Reads plaintext. Ciphertext is pulled from `sock` only when none is
    /// left; `WouldBlock` means the socket had nothing more. Handshake
    /// records the peer's bytes call for are sent as they arise. Ok(0) is
    /// the end of the stream (with or without the peer's close_notify).
    pub fn read<S: Read + Write>(&mut self, sock: &mut S, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            match self.conn.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(e),
            }
            match self.conn.read_tls(sock) {
                Ok(0) => return Ok(0),
                Ok(_) => {}
                Err(e) => return Err(e),
            }
            if let Err(e) = self.conn.process_new_packets() {
                // Best effort: the alert tells the peer why it is dropped.
                let _ = self.flush(sock);
                return Err(tls_err(e));
            }
            match self.flush(sock) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Encrypts as much of `buf` as rustls buffers (64 KiB of records at
    /// most) and sends what the socket takes. `WouldBlock` when nothing
    /// could be taken: the rest follows once the socket drains (`flush`).
    pub fn write<S: Write>(&mut self, sock: &mut S, buf: &[u8]) -> io::Result<usize> {
        match self.flush(sock) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
        let n = self.conn.writer().write(buf)?;
        match self.flush(sock) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
        if n == 0 && !buf.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    }

    /// Sends buffered records; `WouldBlock` if the socket would not take
    /// them all.
    pub fn flush<S: Write>(&mut self, sock: &mut S) -> io::Result<()> {
        while self.conn.wants_write() {
            match self.conn.write_tls(sock) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Completes a client's handshake over a blocking socket; `sock`
    /// bounds the wait (a deadline for the whole handshake, not a timeout
    /// per read, which a peer sending a byte at a time never meets).
    pub fn handshake_blocking<S: Read + Write>(&mut self, sock: &mut S) -> io::Result<()> {
        while self.conn.is_handshaking() {
            self.flush(sock)?;
            if !self.conn.is_handshaking() {
                break;
            }
            match self.conn.read_tls(sock) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            if let Err(e) = self.conn.process_new_packets() {
                let _ = self.flush(sock);
                return Err(tls_err(e));
            }
        }
        self.flush(sock)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::sync::Mutex;

    /// One direction of an in-memory non-blocking pipe that hands out at
    /// most `chunk` bytes per read and takes at most `cap` bytes in flight:
    /// WouldBlock on empty or full, like a socket under pressure.
    #[derive(Clone)]
    struct Pipe(Arc<Mutex<(VecDeque<u8>, bool)>>);

    struct End {
        rx: Pipe,
        tx: Pipe,
        chunk: usize,
        cap: usize,
    }

    impl Read for End {
        fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
            let mut g = self.rx.0.lock().unwrap();
            if g.0.is_empty() {
                return if g.1 { Ok(0) } else { Err(io::ErrorKind::WouldBlock.into()) };
            }
            let n = b.len().min(self.chunk).min(g.0.len());
            for x in b.iter_mut().take(n) {
                *x = g.0.pop_front().unwrap();
            }
            Ok(n)
        }
    }

    impl Write for End {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            let mut g = self.tx.0.lock().unwrap();
            let room = self.cap.saturating_sub(g.0.len());
            if room == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = room.min(b.len());
            g.0.extend(&b[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn pair(chunk: usize, cap: usize) -> (End, End) {
        let a = Pipe(Arc::new(Mutex::new((VecDeque::new(), false))));
        let b = Pipe(Arc::new(Mutex::new((VecDeque::new(), false))));
        (End { rx: a.clone(), tx: b.clone(), chunk, cap }, End { rx: b, tx: a, chunk, cap })
    }

    fn creds() -> (ServerCreds, Arc<ClientConfig>) {
        let c = generated_creds("127.0.0.1").unwrap();
        let cc = client_config(&c.chain_pem).unwrap();
        (c, cc)
    }

    /// Moves `data` from client to server (and anything back), both sides
    /// non-blocking, until the server has read it all.
    fn pump(client: &mut Tls, cs: &mut End, server: &mut Tls, ss: &mut End, data: &[u8]) -> Vec<u8> {
        let mut sent = 0;
        let mut got = Vec::new();
        let mut buf = vec![0u8; 7919];
        let mut rounds = 0;
        while got.len() < data.len() {
            rounds += 1;
            assert!(rounds < 1_000_000, "no progress");
            if sent < data.len() {
                match client.write(cs, &data[sent..]) {
                    Ok(n) => sent += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => panic!("client write: {e}"),
                }
            } else {
                let _ = client.flush(cs);
            }
            // The client must also read: the handshake needs the server's records.
            match client.read(cs, &mut buf) {
                Ok(0) => panic!("client saw EOF"),
                Ok(_) => panic!("unexpected plaintext for the client"),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("client read: {e}"),
            }
            loop {
                match server.read(ss, &mut buf) {
                    Ok(0) => panic!("server saw EOF"),
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("server read: {e}"),
                }
            }
            let _ = server.flush(ss);
        }
        got
    }

    #[test]
    fn handshake_and_data_through_a_trickling_pipe() {
        let (sc, cc) = creds();
        for (chunk, cap) in [(1, 7), (13, 100), (65536, 1 << 20)] {
            let (mut cs, mut ss) = pair(chunk, cap);
            let mut client = Tls::client(&cc, server_name("127.0.0.1").unwrap()).unwrap();
            let mut server = Tls::server(&sc.config).unwrap();
            let data: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
            let got = pump(&mut client, &mut cs, &mut server, &mut ss, &data);
            assert_eq!(got, data, "chunk {chunk}, cap {cap}");
            assert!(!client.is_handshaking() && !server.is_handshaking());
        }
    }

    #[test]
    fn server_writes_before_the_handshake_arrive_after_it() {
        let (sc, cc) = creds();
        let (mut cs, mut ss) = pair(4096, 1 << 20);
        let mut client = Tls::client(&cc, server_name("127.0.0.1").unwrap()).unwrap();
        let mut server = Tls::server(&sc.config).unwrap();
        // The host queues the SP header at accept, before any handshake.
        assert_eq!(server.write(&mut ss, b"\0SP\0\0\x11\0\0").unwrap(), 8);
        pump(&mut client, &mut cs, &mut server, &mut ss, b"hello");
        let _ = server.flush(&mut ss);
        let mut buf = [0u8; 64];
        let n = client.read(&mut cs, &mut buf).unwrap();
        assert_eq!(&buf[..n], b"\0SP\0\0\x11\0\0");
        assert!(!client.has_plaintext());
    }

    #[test]
    fn garbage_and_plain_sp_are_errors_not_panics() {
        let (sc, _) = creds();
        for junk in [
            b"\0SP\0\0\x11\0\0\0\0\0\0\0\0\0\x05".to_vec(),
            b"GET / HTTP/1.1\r\n\r\n".to_vec(),
            vec![0x16, 3, 1, 0xff, 0xff, 1, 2, 3],
            (0..2000u32).map(|i| (i * 7919 % 256) as u8).collect(),
        ] {
            let (mut cs, mut ss) = pair(64, 1 << 20);
            cs.write_all(&junk).unwrap();
            let mut server = Tls::server(&sc.config).unwrap();
            let mut buf = [0u8; 64];
            let res = loop {
                match server.read(&mut ss, &mut buf) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        // A truncated record waits for more: end the stream.
                        cs.tx.0.lock().unwrap().1 = true;
                    }
                    r => break r,
                }
            };
            match res {
                Err(e) => assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}"),
                Ok(n) => assert_eq!(n, 0),
            }
        }
    }

    #[test]
    fn a_client_rejects_a_host_it_does_not_trust() {
        let (sc, _) = creds();
        let (_, other) = creds();
        let (mut cs, mut ss) = pair(4096, 1 << 20);
        let mut client = Tls::client(&other, server_name("127.0.0.1").unwrap()).unwrap();
        let mut server = Tls::server(&sc.config).unwrap();
        let mut buf = [0u8; 64];
        let mut err = None;
        for _ in 0..100 {
            let _ = client.flush(&mut cs);
            let _ = server.read(&mut ss, &mut buf);
            let _ = server.flush(&mut ss);
            match client.read(&mut cs, &mut buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                r => {
                    err = Some(r);
                    break;
                }
            }
        }
        let e = err.expect("handshake ended").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("certificate"), "{e}");
        // The server learns of it from the client's alert.
        let r = server.read(&mut ss, &mut buf);
        assert!(r.is_err(), "{r:?}");
    }

    #[test]
    fn the_name_must_match() {
        let (sc, cc) = creds();
        let (mut cs, mut ss) = pair(4096, 1 << 20);
        let mut client = Tls::client(&cc, server_name("10.1.2.3").unwrap()).unwrap();
        let mut server = Tls::server(&sc.config).unwrap();
        let mut buf = [0u8; 64];
        let mut res = Err(io::ErrorKind::WouldBlock.into());
        for _ in 0..100 {
            let _ = client.flush(&mut cs);
            let _ = server.read(&mut ss, &mut buf);
            let _ = server.flush(&mut ss);
            res = client.read(&mut cs, &mut buf);
            if !matches!(&res, Err(e) if e.kind() == io::ErrorKind::WouldBlock) {
                break;
            }
        }
        assert!(res.unwrap_err().to_string().contains("certificate"));
    }

    #[test]
    fn user_pem_with_chain_and_bad_inputs() {
        let (c1, k1) = generate(&["a.example".into()]).unwrap();
        let (c2, _) = generate(&["b.example".into()]).unwrap();
        // Certificate, a second certificate as "chain", then the key.
        let creds = server_creds(&format!("{c1}{c2}{k1}"), None).unwrap();
        assert_eq!(creds.chain_pem.matches("BEGIN CERTIFICATE").count(), 2);
        assert!(client_config(&creds.chain_pem).is_ok());
        assert!(server_creds(&c1, None).unwrap_err().contains("no private key"));
        assert!(server_creds(&k1, None).unwrap_err().contains("no certificate"));
        let (_, k2) = generate(&["c.example".into()]).unwrap();
        assert!(server_creds(&format!("{c1}{k2}"), None).unwrap_err().contains("does not belong to the certificate"));
        assert!(client_config("not pem").unwrap_err().contains("no PEM certificate"));
        let enc = "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n";
        assert!(server_creds(&format!("{c1}{enc}"), None).unwrap_err().contains("pass"));
        assert!(server_creds(&format!("{c1}{enc}"), Some("x")).is_err());
    }

    /// Runs the openssl CLI in `dir`; false when it is not installed (the
    /// test is then skipped: the R tests make the same certificates).
    fn openssl(dir: &std::path::Path, args: &[&str]) -> bool {
        match std::process::Command::new("openssl").args(args).current_dir(dir).output() {
            Ok(o) if o.status.success() => true,
            Ok(o) => panic!("openssl {args:?}: {}", String::from_utf8_lossy(&o.stderr)),
            Err(_) => false,
        }
    }

    fn tempdir(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("mirai-tls-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn read(dir: &std::path::Path, files: &[&str]) -> String {
        files.iter().map(|f| std::fs::read_to_string(dir.join(f)).unwrap()).collect()
    }

    /// A handshake between a host with `sc` and a daemon with `cc` dialling
    /// `name`: Ok, or the daemon's error.
    fn handshake(sc: &Arc<ServerConfig>, cc: &Arc<ClientConfig>, name: &str) -> Result<(), String> {
        let (mut cs, mut ss) = pair(4096, 1 << 20);
        let mut client = Tls::client(cc, server_name(name).unwrap()).unwrap();
        let mut server = Tls::server(sc).unwrap();
        let mut buf = [0u8; 64];
        for _ in 0..100 {
            let _ = client.flush(&mut cs);
            let _ = server.read(&mut ss, &mut buf);
            let _ = server.flush(&mut ss);
            match client.read(&mut cs, &mut buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e.to_string()),
                Ok(n) => return Err(format!("unexpected read of {n}")),
            }
            if !client.is_handshaking() {
                return Ok(());
            }
        }
        Err("no progress".into())
    }

    const RSA: &[&str] = &["-newkey", "rsa:2048", "-nodes"];
    const EC: &[&str] = &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];

    fn args<'a>(parts: &[&[&'a str]]) -> Vec<&'a str> {
        parts.concat()
    }

    #[test]
    fn a_self_signed_ca_certificate_made_by_openssl_req_is_trusted_when_pinned() {
        let d = tempdir("pinned");
        // Exactly the command users run: the certificate marks itself a CA
        // and names 127.0.0.1 in its CN only.
        let cmd = args(&[&["req", "-x509"], RSA, &["-keyout", "key.pem", "-out", "cert.pem"]]);
        if !openssl(&d, &[cmd.as_slice(), &["-subj", "/CN=127.0.0.1", "-days", "1"]].concat()) {
            return;
        }
        let cert = read(&d, &["cert.pem"]);
        let f = x509::facts(&certs_in(&pem_blocks(&cert).unwrap())[0]).unwrap();
        assert_eq!((f.common_names.clone(), f.has_san), (vec!["127.0.0.1".to_string()], false));
        let sc = server_creds(&read(&d, &["cert.pem", "key.pem"]), None).unwrap();
        assert_eq!(sc.chain_pem.trim(), cert.trim());
        let cc = client_config(&sc.chain_pem).unwrap();
        handshake(&sc.config, &cc, "127.0.0.1").unwrap();
        // The name still counts.
        let e = handshake(&sc.config, &cc, "127.0.0.2").unwrap_err();
        assert!(e.contains("not valid for '127.0.0.2'") && e.contains("CN=127.0.0.1"), "{e}");
        assert!(handshake(&sc.config, &cc, "localhost").is_err());
        // Another self-signed certificate for the same name is not trusted.
        let cmd = args(&[&["req", "-x509"], EC, &["-keyout", "k2.pem", "-out", "c2.pem"]]);
        assert!(openssl(&d, &[cmd.as_slice(), &["-subj", "/CN=127.0.0.1", "-days", "1"]].concat()));
        let other = server_creds(&read(&d, &["c2.pem", "k2.pem"]), None).unwrap();
        let e = handshake(&other.config, &cc, "127.0.0.1").unwrap_err();
        assert!(e.contains("certificate"), "{e}");
        // An EC (P-256) key works the same way.
        let cc2 = client_config(&read(&d, &["c2.pem"])).unwrap();
        handshake(&other.config, &cc2, "127.0.0.1").unwrap();
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_leaf_signed_by_the_users_ca_needs_the_ca_and_its_name() {
        let d = tempdir("ca");
        let cmd = args(&[&["req", "-x509"], EC, &["-keyout", "ca.key", "-out", "ca.pem"]]);
        if !openssl(&d, &[cmd.as_slice(), &["-subj", "/CN=mirai test CA", "-days", "2"]].concat()) {
            return;
        }
        // A leaf (SAN), one with only a CN, one whose SAN names another host.
        for (name, subj, ext) in [
            ("san", "/CN=leaf", Some("subjectAltName=IP:127.0.0.1,DNS:localhost")),
            ("cn", "/CN=localhost", Some("basicConstraints=CA:FALSE")),
            ("v1", "/CN=localhost", None),
            ("wrong", "/CN=127.0.0.1", Some("subjectAltName=DNS:other.example")),
        ] {
            let key = format!("{name}.key");
            let csr = format!("{name}.csr");
            let pem = format!("{name}.pem");
            let cmd = args(&[&["req"], EC, &["-keyout", &key, "-out", &csr, "-subj", subj]]);
            assert!(openssl(&d, &cmd));
            let mut sign = vec!["x509", "-req", "-in", &csr, "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial"];
            sign.extend(["-out", &pem, "-days", "1"]);
            let extfile = format!("{name}.ext");
            if let Some(ext) = ext {
                std::fs::write(d.join(&extfile), format!("{ext}\n")).unwrap();
                sign.extend(["-extfile", &extfile]);
            }
            assert!(openssl(&d, &sign));
        }
        let ca = client_config(&read(&d, &["ca.pem"])).unwrap();
        let san = server_creds(&read(&d, &["san.pem", "san.key"]), None).unwrap();
        handshake(&san.config, &ca, "127.0.0.1").unwrap();
        handshake(&san.config, &ca, "localhost").unwrap();
        let e = handshake(&san.config, &ca, "127.0.0.2").unwrap_err();
        assert!(e.contains("not valid for name \"127.0.0.2\""), "{e}");
        // Without a subjectAltName the CN is the name; with one, it is not.
        let cn = server_creds(&read(&d, &["cn.pem", "cn.key"]), None).unwrap();
        handshake(&cn.config, &ca, "localhost").unwrap();
        assert!(handshake(&cn.config, &ca, "127.0.0.1").is_err());
        // Without extensions, `openssl x509 -req` writes X.509 version 1,
        // which webpki does not take as an end-entity certificate.
        let v1 = server_creds(&read(&d, &["v1.pem", "v1.key"]), None).unwrap();
        let e = handshake(&v1.config, &ca, "localhost").unwrap_err();
        assert!(e.contains("X.509 version 1"), "{e}");
        handshake(&v1.config, &client_config(&read(&d, &["v1.pem"])).unwrap(), "localhost").unwrap();
        let wrong = server_creds(&read(&d, &["wrong.pem", "wrong.key"]), None).unwrap();
        let e = handshake(&wrong.config, &ca, "127.0.0.1").unwrap_err();
        assert!(e.contains("other.example"), "{e}");
        // A daemon given another CA refuses all of them.
        let own = client_config(&read(&d, &["san.pem"])).unwrap();
        handshake(&san.config, &own, "127.0.0.1").unwrap();
        let e = handshake(&cn.config, &own, "localhost").unwrap_err();
        assert!(e.contains("not one given in `tlscert`"), "{e}");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn expired_certificates_are_refused_by_host_and_daemon() {
        let d = tempdir("expired");
        let cmd = args(&[&["req", "-new"], EC, &["-keyout", "old.key", "-out", "old.csr", "-subj", "/CN=127.0.0.1"]]);
        if !openssl(&d, &cmd) {
            return;
        }
        std::fs::write(
            d.join("ca.cnf"),
            "[ca]\ndefault_ca = d\n[d]\ndatabase = index.txt\nnew_certs_dir = .\nserial = serial\n\
             default_md = sha256\npolicy = p\n[p]\ncommonName = supplied\n",
        )
        .unwrap();
        std::fs::write(d.join("index.txt"), "").unwrap();
        std::fs::write(d.join("serial"), "01\n").unwrap();
        assert!(openssl(
            &d,
            &[
                "ca", "-batch", "-config", "ca.cnf", "-selfsign", "-keyfile", "old.key", "-in", "old.csr",
                "-startdate", "20200101000000Z", "-enddate", "20200102000000Z", "-out", "old.pem", "-notext",
            ],
        ));
        let pem = read(&d, &["old.pem", "old.key"]);
        let e = server_creds(&pem, None).unwrap_err();
        assert!(e.starts_with("`tls`: the certificate expired on 2020-01-02T00:00:00Z"), "{e}");
        // A host that served it anyway is refused by a daemon pinning it.
        let blocks = pem_blocks(&pem).unwrap();
        let sc = server_config(certs_in(&blocks), key::private_key(&blocks, None).unwrap()).unwrap();
        let cc = client_config(&pem).unwrap();
        let e = handshake(&Arc::new(sc), &cc, "127.0.0.1").unwrap_err();
        assert!(e.contains("expired on 2020-01-02"), "{e}");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn encrypted_keys_as_openssl_writes_them() {
        let d = tempdir("keys");
        let cmd = args(&[&["req", "-x509"], RSA, &["-keyout", "rsa.key", "-out", "rsa.pem"]]);
        if !openssl(&d, &[cmd.as_slice(), &["-subj", "/CN=127.0.0.1", "-days", "1"]].concat()) {
            return;
        }
        let cmd = args(&[&["req", "-x509"], EC, &["-keyout", "ec.key", "-out", "ec.pem"]]);
        assert!(openssl(&d, &[cmd.as_slice(), &["-subj", "/CN=127.0.0.1", "-days", "1"]].concat()));
        let pw = "pass:s3cret pw";
        let variants: &[(&str, &str, &[&str])] = &[
            ("rsa", "pkcs8-aes", &["pkcs8", "-topk8", "-v2", "aes-256-cbc", "-in", "rsa.key", "-passout", pw]),
            ("rsa", "pkcs8-3des", &["pkcs8", "-topk8", "-v2", "des3", "-in", "rsa.key", "-passout", pw]),
            ("rsa", "genrsa-style", &["rsa", "-aes256", "-in", "rsa.key", "-passout", pw]),
            ("rsa", "legacy-aes128", &["rsa", "-traditional", "-aes128", "-in", "rsa.key", "-passout", pw]),
            ("rsa", "legacy-des3", &["rsa", "-traditional", "-des3", "-in", "rsa.key", "-passout", pw]),
            ("ec", "legacy-ec-aes256", &["ec", "-aes256", "-in", "ec.key", "-passout", pw]),
            ("ec", "legacy-ec-aes192", &["ec", "-aes192", "-in", "ec.key", "-passout", pw]),
        ];
        for (base, name, cmd) in variants {
            let out = format!("{name}.key");
            assert!(openssl(&d, &[*cmd, &["-out", out.as_str()]].concat()));
            let key = read(&d, &[&out]);
            let cert = read(&d, &[&format!("{base}.pem")]);
            let pem = format!("{cert}{key}");
            let sc = server_creds(&pem, Some("s3cret pw")).unwrap_or_else(|e| panic!("{name}: {e}"));
            handshake(&sc.config, &client_config(&cert).unwrap(), "127.0.0.1").unwrap();
            let e = server_creds(&pem, Some("wrong")).unwrap_err();
            assert_eq!(e, "`pass`: wrong password for the encrypted `tls` key", "{name}");
            assert!(server_creds(&pem, None).unwrap_err().contains("give its password with `pass`"), "{name}");
        }
        // The key of another certificate.
        let e = server_creds(&read(&d, &["rsa.pem", "ec.key"]), None).unwrap_err();
        assert!(e.contains("does not belong to the certificate"), "{e}");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn common_names_match_as_rfc_6125_says() {
        let m = |cn: &str, name: &str| verify::cn_matches(cn, &server_name(name).unwrap());
        assert!(m("127.0.0.1", "127.0.0.1"));
        assert!(!m("127.0.0.1", "127.0.0.2"));
        assert!(m("0:0:0:0:0:0:0:1", "::1"));
        assert!(m("Host.Example", "host.example."));
        assert!(m("*.example.com", "a.example.com"));
        assert!(!m("*.example.com", "a.b.example.com"));
        assert!(!m("*.example.com", "example.com"));
        assert!(!m("*.com", "example.com"));
        assert!(!m("127.0.0.1", "localhost"));
        assert!(!m("", "localhost"));
    }

    #[test]
    fn certificates_round_trip_through_pem_and_a_cut_block_is_an_error() {
        let certs: Vec<CertificateDer> = (0..3usize)
            .map(|n| CertificateDer::from((0..(100 + n)).map(|i| (i * 31) as u8).collect::<Vec<u8>>()))
            .collect();
        let text = pem_encode_certs(&certs);
        assert!(!text.contains('\r'));
        assert_eq!(text.matches("-----BEGIN CERTIFICATE-----\n").count(), 3);
        assert_eq!(certs_in(&pem_blocks(&text).unwrap()), certs);
        assert!(pem_blocks(&text[..text.len() - 30]).unwrap_err().contains("no END line"));
    }
}
