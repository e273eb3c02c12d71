//! The host's private key from PEM text, as users' tools write it: plain
//! (PKCS#8, SEC1 `EC PRIVATE KEY`, PKCS#1 `RSA PRIVATE KEY`); PKCS#8
//! encrypted (`ENCRYPTED PRIVATE KEY`, PBES2: what OpenSSL 3 writes for
//! `openssl req` without `-nodes`, `genrsa -aes256`, `genpkey -aes256`,
//! `pkcs8 -topk8`); or encrypted in OpenSSL's legacy PEM format
//! (`Proc-Type: 4,ENCRYPTED`, what `openssl ec -aes256`, `rsa -traditional`
//! and OpenSSL 1.x's `genrsa -aes256` write), with AES-128/192/256-CBC or
//! DES-EDE3-CBC. rustls reads only plain keys, so the decryption happens
//! here, with RustCrypto's ciphers.
//!
//! Errors are sentences naming the argument at fault (`tls` or `pass`).

use rustls::pki_types::{PrivateKeyDer, PrivatePkcs1KeyDer, PrivatePkcs8KeyDer, PrivateSec1KeyDer};

/// What a password that does not decrypt the key is told.
const WRONG_PASS: &str = "`pass`: wrong password for the encrypted `tls` key";

/// Whether PEM block `b` is encrypted in OpenSSL's legacy format.
fn legacy_encrypted(b: &pem::Pem) -> bool {
    b.headers().get("Proc-Type").is_some_and(|v| v.trim() == "4,ENCRYPTED")
}

/// The private key among the PEM `blocks` (see `tls::pem_blocks`),
/// decrypted with `pass` if it is encrypted.
pub fn private_key(blocks: &[pem::Pem], pass: Option<&str>) -> Result<PrivateKeyDer<'static>, String> {
    if let Some(block) = blocks.iter().find(|b| b.tag() == "ENCRYPTED PRIVATE KEY") {
        let pass = need_pass(pass)?;
        let bad = |e: &dyn std::fmt::Display| format!("`tls`: cannot read the encrypted private key: {e}");
        let info = pkcs8::EncryptedPrivateKeyInfo::try_from(block.contents()).map_err(|e| bad(&e))?;
        let plain = info.decrypt(pass.as_bytes()).map_err(|e| match e {
            // The padding or the key inside did not check out.
            // (pkcs5 0.7 reports a bad padding as EncryptFailed.)
            pkcs8::Error::EncryptedPrivateKey(
                pkcs8::pkcs5::Error::DecryptFailed | pkcs8::pkcs5::Error::EncryptFailed,
            )
            | pkcs8::Error::Asn1(_) => {
                WRONG_PASS.to_string()
            }
            e => format!(
                "`tls`: cannot decrypt the private key: {e} (supported: PBES2 with AES-CBC or DES-EDE3-CBC, \
                 PBKDF2-HMAC-SHA2 or scrypt)"
            ),
        })?;
        return Ok(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(plain.as_bytes().to_vec())));
    }
    if let Some(block) = blocks.iter().find(|b| legacy_encrypted(b)) {
        return legacy(block, need_pass(pass)?);
    }
    let der = |b: &pem::Pem| b.contents().to_vec();
    blocks
        .iter()
        .find_map(|b| match b.tag() {
            "PRIVATE KEY" => Some(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(der(b)))),
            "RSA PRIVATE KEY" => Some(PrivateKeyDer::Pkcs1(PrivatePkcs1KeyDer::from(der(b)))),
            "EC PRIVATE KEY" => Some(PrivateKeyDer::Sec1(PrivateSec1KeyDer::from(der(b)))),
            _ => None,
        })
        .ok_or_else(|| {
            "`tls`: no private key found (give the key after the certificate in one file, or as c(cert, key))".into()
        })
}

fn need_pass(pass: Option<&str>) -> Result<&str, String> {
    pass.ok_or_else(|| "`tls`: the private key is encrypted: give its password with `pass`".to_string())
}

/// OpenSSL's legacy encrypted PEM (RFC 1421 headers, read by the `pem`
/// crate): the key is EVP_BytesToKey(MD5, salt = the IV's first 8 bytes,
/// one round) of the password; the body is the DER key under CBC with
/// PKCS#7 padding.
fn legacy(block: &pem::Pem, pass: &str) -> Result<PrivateKeyDer<'static>, String> {
    let label = block.tag();
    if label != "RSA PRIVATE KEY" && label != "EC PRIVATE KEY" {
        return Err("`tls`: an encrypted private key in OpenSSL's legacy format must be an RSA or EC key".into());
    }
    let bad = |what: &str| format!("`tls`: cannot read the encrypted private key: {what}");
    let dek = block.headers().get("DEK-Info");
    let (cipher, iv_hex) = dek.and_then(|d| d.split_once(',')).ok_or_else(|| bad("no DEK-Info header"))?;
    let iv = hex(iv_hex.trim()).ok_or_else(|| bad("a malformed IV in DEK-Info"))?;
    let mut data = block.contents().to_vec();
    let cipher = cipher.trim().to_ascii_uppercase();
    let key_len = match cipher.as_str() {
        "AES-128-CBC" => 16,
        "AES-192-CBC" => 24,
        "AES-256-CBC" => 32,
        "DES-EDE3-CBC" => 24,
        other => {
            return Err(format!(
                "`tls`: the private key is encrypted with {other}, which is not supported: re-encrypt it \
                 with `openssl pkcs8 -topk8 -v2 aes-256-cbc`"
            ))
        }
    };
    let block_len = if cipher == "DES-EDE3-CBC" { 8 } else { 16 };
    if iv.len() != block_len || data.is_empty() || data.len() % block_len != 0 {
        return Err(bad("the IV or the body has the wrong length for its cipher"));
    }
    let key = bytes_to_key(pass.as_bytes(), &iv[..8], key_len);
    let plain_len = {
        use cbc::cipher::{block_padding::Pkcs7, BlockDecryptMut, KeyIvInit};
        let out = match cipher.as_str() {
            "AES-128-CBC" => cbc::Decryptor::<aes::Aes128>::new_from_slices(&key, &iv)
                .map_err(|_| bad("bad key length"))?
                .decrypt_padded_mut::<Pkcs7>(&mut data),
            "AES-192-CBC" => cbc::Decryptor::<aes::Aes192>::new_from_slices(&key, &iv)
                .map_err(|_| bad("bad key length"))?
                .decrypt_padded_mut::<Pkcs7>(&mut data),
            "AES-256-CBC" => cbc::Decryptor::<aes::Aes256>::new_from_slices(&key, &iv)
                .map_err(|_| bad("bad key length"))?
                .decrypt_padded_mut::<Pkcs7>(&mut data),
            _ => cbc::Decryptor::<des::TdesEde3>::new_from_slices(&key, &iv)
                .map_err(|_| bad("bad key length"))?
                .decrypt_padded_mut::<Pkcs7>(&mut data),
        };
        out.map_err(|_| WRONG_PASS.to_string())?.len()
    };
    data.truncate(plain_len);
    // A wrong password gives valid padding about once in 256 tries: the
    // result must also be one whole DER SEQUENCE.
    if !is_one_sequence(&data) {
        return Err(WRONG_PASS.into());
    }
    Ok(match label {
        "RSA PRIVATE KEY" => PrivateKeyDer::Pkcs1(PrivatePkcs1KeyDer::from(data)),
        _ => PrivateKeyDer::Sec1(PrivateSec1KeyDer::from(data)),
    })
}

fn bytes_to_key(pass: &[u8], salt: &[u8], len: usize) -> Vec<u8> {
    use md5::{Digest, Md5};
    let mut out = Vec::with_capacity(len + 16);
    let mut prev: Vec<u8> = Vec::new();
    while out.len() < len {
        let mut h = Md5::new();
        h.update(&prev);
        h.update(pass);
        h.update(salt);
        prev = h.finalize().to_vec();
        out.extend_from_slice(&prev);
    }
    out.truncate(len);
    out
}

fn hex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 || !s.is_ascii() {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok()).collect()
}

fn is_one_sequence(der: &[u8]) -> bool {
    use der::{Decode, Reader, SliceReader, Tagged};
    let Ok(mut r) = SliceReader::new(der) else { return false };
    let ok = der::asn1::AnyRef::decode(&mut r).is_ok_and(|a| a.tag() == der::Tag::Sequence);
    ok && r.is_finished()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_to_key_matches_openssl() {
        // `openssl enc -aes-256-cbc -P -md md5 -pass pass:pw -S 0102030405060708`
        let k = bytes_to_key(b"pw", &[1, 2, 3, 4, 5, 6, 7, 8], 32);
        assert_eq!(k, hex("222776D258E716EFDAA0CF5A7E504B9D21982575418A44BE8D93693294778EEA").unwrap());
    }

    #[test]
    fn hex_and_sequence_checks() {
        assert_eq!(hex("0aFf"), Some(vec![10, 255]));
        assert_eq!(hex("0"), None);
        assert_eq!(hex("zz"), None);
        assert!(is_one_sequence(&[0x30, 0x00]));
        assert!(!is_one_sequence(&[0x30, 0x00, 0x00]));
        assert!(!is_one_sequence(&[0x04, 0x00]));
        assert!(!is_one_sequence(&[0x30, 0x05, 0x00]));
    }
}
