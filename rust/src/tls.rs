//! TLS for `tls+tcp://` (rustls with the ring provider: no C TLS library).
//!
//! Two parts. Credentials: a fresh self-signed certificate (rcgen, ECDSA
//! P-256) or the user's PEM certificate chain and key (a PKCS#8-encrypted key
//! is decrypted with the RustCrypto `pkcs8` crate, since rustls reads only
//! plain keys), turned into rustls configurations. And `Tls`, the record
//! layer over any socket as a state machine that never blocks by itself:
//! reads pull ciphertext only when no plaintext is left, and report
//! `WouldBlock` exactly when the socket did, so that an edge-triggered event
//! loop (the host) and a poll-then-read loop (the daemon) drive it as they
//! drive a plain socket. Every error from the peer's bytes is an
//! `InvalidData` error value, never a panic.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, Connection, RootCertStore, ServerConfig, ServerConnection};
use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::Duration;

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

/// Every certificate in `pem`, in order.
fn certs_of(pem: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("cannot read the PEM certificates: {e}"))
}

/// The PEM block `label` in `pem`, markers included, if present.
fn pem_block<'a>(pem: &'a str, label: &str) -> Option<&'a str> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = pem.find(&begin)?;
    let stop = pem[start..].find(&end)? + start + end.len();
    Some(&pem[start..stop])
}

/// The private key in `pem`: plain (PKCS#8, SEC1 or PKCS#1), or PKCS#8
/// encrypted (PBES2), decrypted with `pass`.
fn key_of(pem: &str, pass: Option<&str>) -> Result<PrivateKeyDer<'static>, String> {
    if let Some(block) = pem_block(pem, "ENCRYPTED PRIVATE KEY") {
        let pass = pass.ok_or("the TLS key is encrypted: give its password with `pass`")?;
        let (_, doc) = pkcs8::SecretDocument::from_pem(block)
            .map_err(|e| format!("cannot read the encrypted TLS key: {e}"))?;
        let info = pkcs8::EncryptedPrivateKeyInfo::try_from(doc.as_bytes())
            .map_err(|e| format!("cannot read the encrypted TLS key: {e}"))?;
        let plain = info
            .decrypt(pass.as_bytes())
            .map_err(|e| format!("cannot decrypt the TLS key (wrong password?): {e}"))?;
        return Ok(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(plain.as_bytes().to_vec())));
    }
    if pem.contains("Proc-Type: 4,ENCRYPTED") {
        return Err("the TLS key is encrypted in OpenSSL's legacy format, which is not supported: convert it \
                    with `openssl pkcs8 -topk8` (an 'ENCRYPTED PRIVATE KEY')"
            .into());
    }
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => "no private key found in the TLS credentials".to_string(),
        e => format!("cannot read the TLS private key: {e}"),
    })
}

/// A server configuration from PEM text holding the certificate, any chain
/// after it, and the private key.
pub fn server_creds(pem: &str, pass: Option<&str>) -> Result<ServerCreds, String> {
    let certs = certs_of(pem)?;
    if certs.is_empty() {
        return Err("no certificate found in the TLS credentials".into());
    }
    let key = key_of(pem, pass)?;
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("the TLS certificate and key do not work together: {e}"))?;
    let chain_pem = CertificateDer::pem_slice_iter(pem.as_bytes())
        .filter_map(Result::ok)
        .map(|c| pem_encode("CERTIFICATE", &c))
        .collect::<String>();
    Ok(ServerCreds { config: Arc::new(config), chain_pem })
}

fn pem_encode(label: &str, der: &[u8]) -> String {
    const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = String::with_capacity(der.len() * 4 / 3 + 4);
    for ch in der.chunks(3) {
        let n = (ch[0] as u32) << 16 | (*ch.get(1).unwrap_or(&0) as u32) << 8 | *ch.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= ch.len() {
                b64.push(B64[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                b64.push('=');
            }
        }
    }
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Generated credentials for a host listening at `host` (empty or a
/// wildcard: this machine's loopback, name and interface addresses).
pub fn generated_creds(host: &str) -> Result<ServerCreds, String> {
    let names: Vec<String> = if host.is_empty() || host == "*" || host == "0.0.0.0" || host == "::" {
        let mut v = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
        if let Ok(n) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
            let n = n.trim();
            if !n.is_empty() && rustls::pki_types::DnsName::try_from(n).is_ok() {
                v.push(n.to_string());
            }
        }
        v.extend(crate::url::interface_addresses().into_iter().map(|(_, ip)| ip));
        v
    } else {
        vec![host.to_string()]
    };
    let (cert, key) = generate(&names)?;
    server_creds(&format!("{cert}{key}"), None)
}

/// A client configuration trusting the certificates in `ca_pem` (a CA, a
/// chain, or the host's self-signed certificate).
pub fn client_config(ca_pem: &str) -> Result<Arc<ClientConfig>, String> {
    let certs = certs_of(ca_pem).map_err(|e| format!("`tlscert`: {e}"))?;
    if certs.is_empty() {
        return Err("`tlscert` holds no PEM certificate".into());
    }
    let mut roots = RootCertStore::empty();
    for c in certs {
        roots.add(c).map_err(|e| format!("`tlscert`: unusable certificate: {e}"))?;
    }
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The name a daemon checks the host's certificate against (and sends as
/// SNI, unless it is an IP address).
pub fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(host.to_string()).map_err(|e| format!("'{host}' is not a valid TLS server name: {e}"))
}

fn tls_err(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("TLS: {e}"))
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
        assert!(server_creds(&format!("{c1}{k2}"), None).unwrap_err().contains("do not work together"));
        assert!(client_config("not pem").unwrap_err().contains("no PEM certificate"));
        let enc = "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n";
        assert!(server_creds(&format!("{c1}{enc}"), None).unwrap_err().contains("pass"));
        assert!(server_creds(&format!("{c1}{enc}"), Some("x")).is_err());
    }

    #[test]
    fn pem_encoding_round_trips() {
        for n in 0..10usize {
            let der: Vec<u8> = (0..(100 + n)).map(|i| (i * 31) as u8).collect();
            let pem = pem_encode("CERTIFICATE", &der);
            let back = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
            assert_eq!(back.as_ref(), &der[..]);
        }
    }
}
