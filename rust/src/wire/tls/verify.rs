//! How a daemon decides to trust its host's certificate, given the
//! certificates in `tlscert`. Two ways, both ending with the URL's host
//! name checked against the certificate:
//!
//! - **Pinned**: the host's end-entity certificate is, byte for byte, one
//!   of the certificates the daemon was given. Its public key is then the
//!   trusted key, as for SSH: the handshake proves that the host holds the
//!   private key (rustls checks the CertificateVerify signature with it),
//!   and the certificate must be within its validity period. This is what
//!   makes a self-signed certificate work when it is marked as a CA (as
//!   `openssl req -x509` does by default), which webpki refuses as an
//!   end-entity certificate (`CaUsedAsEndEntity`) when it is its own trust
//!   anchor. The reference mirai's TLS library (Mbed TLS) accepts such a
//!   "locally trusted" certificate in the same way.
//! - **Chain**: otherwise, webpki's full path validation from the presented
//!   certificate, through any intermediates the host sends, to a trust
//!   anchor among the given certificates (signatures, validity, CA and path
//!   length constraints, key and extended key usage for a server). An
//!   X.509 version 1 certificate (what `openssl x509 -req` writes without
//!   extensions) is refused here, with a message saying so: webpki takes
//!   only version 3, so such a certificate can only be pinned.
//!
//! The name: the URL's host (a DNS name or an IP address, as the user wrote
//! it) must be one of the certificate's subjectAltNames (webpki's matching);
//! a certificate with no subjectAltName extension at all is matched on its
//! subject's common name instead (RFC 6125's legacy rule, which Mbed TLS and
//! OpenSSL also follow): an IP address compared as an address, a DNS name
//! case-insensitively, with a leftmost `*` label standing for one label.
//!
//! Nothing here turns verification off: each way ends in an accept only
//! after every check it names has passed.

use super::x509;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{verify_server_cert_signed_by_trust_anchor, verify_server_name};
use rustls::crypto::{
    verify_tls12_signature, verify_tls13_signature, verify_tls13_signature_with_raw_key, WebPkiSupportedAlgorithms,
};
use rustls::pki_types::{CertificateDer, ServerName, SubjectPublicKeyInfoDer, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{CertificateError, DigitallySignedStruct, Error, OtherError, RootCertStore, SignatureScheme};
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

#[derive(Debug)]
pub struct HostVerifier {
    pinned: Vec<CertificateDer<'static>>,
    roots: Arc<RootCertStore>,
    algs: WebPkiSupportedAlgorithms,
}

impl HostVerifier {
    /// Trusts `certs` (each pinned, and each a trust anchor).
    pub fn new(certs: Vec<CertificateDer<'static>>, algs: WebPkiSupportedAlgorithms) -> Result<HostVerifier, String> {
        if certs.is_empty() {
            return Err("`tlscert` holds no PEM certificate".into());
        }
        let mut roots = RootCertStore::empty();
        for c in &certs {
            roots.add(c.clone()).map_err(|e| format!("`tlscert`: unusable certificate: {e}"))?;
        }
        Ok(HostVerifier { pinned: certs, roots: Arc::new(roots), algs })
    }
}

/// A refusal in words, as rustls's `CertificateError::Other`; see
/// `describe` in the parent module for how it reaches the user.
#[derive(Debug)]
pub struct Refusal(pub String);

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refusal {}

fn refuse(msg: String) -> Error {
    Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(Refusal(msg)))))
}

impl ServerCertVerifier for HostVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let facts = x509::facts(end_entity).map_err(|e| refuse(format!("the host's certificate is {e}")))?;
        if self.pinned.iter().any(|p| p.as_ref() == end_entity.as_ref()) {
            let t = now.as_secs();
            if t > facts.not_after {
                return Err(refuse(format!("the host's certificate expired on {}", x509::show_time(facts.not_after))));
            }
            if t < facts.not_before {
                return Err(refuse(format!(
                    "the host's certificate is not valid before {}",
                    x509::show_time(facts.not_before)
                )));
            }
        } else {
            if facts.version < 3 {
                return Err(refuse(format!(
                    "the host's certificate is an X.509 version {} certificate, which is trusted only when \
                     `tlscert` holds that very certificate, not through a CA (a certificate signed with \
                     extensions, such as `-extfile` with a subjectAltName, is version 3)",
                    facts.version
                )));
            }
            let parsed = ParsedCertificate::try_from(end_entity)?;
            verify_server_cert_signed_by_trust_anchor(&parsed, &self.roots, intermediates, now, self.algs.all)?;
        }
        check_name(end_entity, &facts, server_name)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(message, cert, dss, &self.algs)
    }

    /// rustls's check, which finds the public key by parsing the certificate
    /// with webpki; for an X.509 version 1 certificate (which webpki does not
    /// parse, and which only a pin can have let through) the same check with
    /// the public key as `x509` reads it. (Our host and daemons speak TLS
    /// 1.3; with TLS 1.2, a version 1 certificate is refused.)
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        let facts = x509::facts(cert).map_err(|e| refuse(format!("the host's certificate is {e}")))?;
        if facts.version >= 3 {
            return verify_tls13_signature(message, cert, dss, &self.algs);
        }
        let spki = SubjectPublicKeyInfoDer::from(facts.spki.as_slice());
        verify_tls13_signature_with_raw_key(message, &spki, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// The certificate names `name`: among its subjectAltNames, or when it has
/// none, in its common name.
fn check_name(cert: &CertificateDer<'_>, facts: &x509::CertFacts, name: &ServerName<'_>) -> Result<(), Error> {
    if facts.has_san {
        return verify_server_name(&ParsedCertificate::try_from(cert)?, name);
    }
    if facts.common_names.iter().any(|cn| cn_matches(cn, name)) {
        return Ok(());
    }
    let has = match facts.common_names.as_slice() {
        [] => "has no subjectAltName and no common name".to_string(),
        cns => format!("is only for CN={} (and has no subjectAltName)", cns.join(", CN=")),
    };
    Err(refuse(format!("the host's certificate is not valid for '{}': it {has}", name.to_str())))
}

/// RFC 6125's matching of a presented common name against the reference
/// name, for certificates without subjectAltNames.
pub fn cn_matches(cn: &str, name: &ServerName<'_>) -> bool {
    match name {
        ServerName::IpAddress(ip) => cn.trim().parse::<IpAddr>().is_ok_and(|a| a == IpAddr::from(*ip)),
        ServerName::DnsName(d) => {
            let want = d.as_ref().trim_end_matches('.').to_ascii_lowercase();
            let cn = cn.trim().trim_end_matches('.').to_ascii_lowercase();
            if cn.is_empty() || want.is_empty() {
                return false;
            }
            match cn.strip_prefix("*.") {
                // One whole leftmost label, and never a bare top-level name.
                Some(suffix) if suffix.contains('.') => {
                    want.split_once('.').is_some_and(|(label, rest)| !label.is_empty() && rest == suffix)
                }
                Some(_) => false,
                None => cn == want,
            }
        }
        _ => false,
    }
}
