//! The few facts about an X.509 certificate that rustls does not tell us:
//! its validity period, the common names in its subject, and whether it has
//! a subjectAltName extension. Read with the `der` crate's bounded reader
//! (every length is checked against the bytes at hand); a malformed
//! certificate is an error value, never a panic.

use der::asn1::{AnyRef, GeneralizedTime, ObjectIdentifier, UtcTime};
use der::{Decode, Reader, SliceReader, Tag, TagNumber, Tagged};
use std::time::Duration;

const OID_COMMON_NAME: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.3");
const OID_SUBJECT_ALT_NAME: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.17");

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertFacts {
    /// 1 or 3 (webpki takes only version 3 certificates, whose extensions
    /// carry subjectAltNames and CA flags).
    pub version: u8,
    /// The DER SubjectPublicKeyInfo.
    pub spki: Vec<u8>,
    /// Seconds since the Unix epoch.
    pub not_before: u64,
    pub not_after: u64,
    /// The subject's CN values that are text (PrintableString, UTF8String,
    /// IA5String), in order.
    pub common_names: Vec<String>,
    /// The certificate has a subjectAltName extension, so that (RFC 6125)
    /// its CN is not a name to match.
    pub has_san: bool,
}

/// Reads `der`, one DER-encoded certificate.
pub fn facts(der: &[u8]) -> Result<CertFacts, String> {
    read(der).map_err(|e| format!("not a valid X.509 certificate: {e}"))
}

/// A time as RFC 3339 text (UTC), for messages.
pub fn show_time(secs: u64) -> String {
    der::DateTime::from_unix_duration(Duration::from_secs(secs))
        .map(|t| t.to_string())
        .unwrap_or_else(|_| format!("{secs} s after 1970"))
}

fn read(der: &[u8]) -> der::Result<CertFacts> {
    let mut r = SliceReader::new(der)?;
    let facts = r.sequence(|cert| {
        let facts = cert.sequence(tbs)?;
        // signatureAlgorithm and signatureValue: rustls checks them.
        cert.tlv_bytes()?;
        cert.tlv_bytes()?;
        Ok(facts)
    })?;
    r.finish(facts)
}

/// TBSCertificate (RFC 5280, 4.1).
fn tbs<'a, R: Reader<'a>>(t: &mut R) -> der::Result<CertFacts> {
    let mut version = 1;
    if t.peek_tag()? == (Tag::ContextSpecific { constructed: true, number: TagNumber::N0 }) {
        let v: AnyRef<'_> = t.decode()?;
        // [0] EXPLICIT INTEGER: v1 = 0, v2 = 1, v3 = 2.
        version = match v.value() {
            [0x02, 0x01, n] if *n <= 2 => n + 1,
            _ => return Err(Tag::Integer.value_error()),
        };
    }
    t.tlv_bytes()?; // serialNumber
    t.tlv_bytes()?; // signature
    t.tlv_bytes()?; // issuer
    let (not_before, not_after) = t.sequence(|v| Ok((time(v)?, time(v)?)))?;
    let common_names = t.sequence(|name| {
        let mut cns = Vec::new();
        while !name.is_finished() {
            let rdn: AnyRef<'_> = name.decode()?;
            rdn.tag().assert_eq(Tag::Set)?;
            let mut set = SliceReader::new(rdn.value())?;
            while !set.is_finished() {
                set.sequence(|atv| {
                    let oid: ObjectIdentifier = atv.decode()?;
                    let value: AnyRef<'_> = atv.decode()?;
                    if oid == OID_COMMON_NAME
                        && matches!(value.tag(), Tag::PrintableString | Tag::Utf8String | Tag::Ia5String)
                    {
                        if let Ok(s) = std::str::from_utf8(value.value()) {
                            cns.push(s.to_string());
                        }
                    }
                    Ok(())
                })?;
            }
        }
        Ok(cns)
    })?;
    let spki = t.tlv_bytes()?.to_vec();
    let mut has_san = false;
    while !t.is_finished() {
        let field: AnyRef<'_> = t.decode()?;
        // issuerUniqueID [1], subjectUniqueID [2], extensions [3] EXPLICIT.
        if field.tag() != (Tag::ContextSpecific { constructed: true, number: TagNumber::N3 }) {
            continue;
        }
        let mut ext = SliceReader::new(field.value())?;
        ext.sequence(|list| {
            while !list.is_finished() {
                list.sequence(|e| {
                    let oid: ObjectIdentifier = e.decode()?;
                    has_san |= oid == OID_SUBJECT_ALT_NAME;
                    // critical (optional) and extnValue.
                    while !e.is_finished() {
                        e.tlv_bytes()?;
                    }
                    Ok(())
                })?;
            }
            Ok(())
        })?;
        ext.finish(())?;
    }
    Ok(CertFacts { version, spki, not_before, not_after, common_names, has_san })
}

fn time<'a, R: Reader<'a>>(r: &mut R) -> der::Result<u64> {
    let d = match r.peek_tag()? {
        Tag::UtcTime => UtcTime::decode(r)?.to_unix_duration(),
        _ => GeneralizedTime::decode(r)?.to_unix_duration(),
    };
    Ok(d.as_secs())
}
