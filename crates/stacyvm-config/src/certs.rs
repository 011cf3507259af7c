//! Start-up check of the `worker.rpc_tls` end-entity certificates: rustls (webpki) accepts only
//! X.509 version 3 for a server or client certificate, and refuses a version 1 one with a bare
//! "builder error" (control plane) or `UnsupportedCertVersion` in the handshake (worker).
//! `openssl x509 -req` without extensions writes version 1, so we name the key, the file and
//! the remedy here instead (docs/worker.md, "Certificate versions").
//!
//! Missing or unreadable files are left to the TLS setup, which reports them as before.

use std::path::Path;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use crate::{Config, ConfigError};

/// The end-entity certificate keys, checked when `worker.rpc_tls.enabled` is true.
pub(crate) fn check_rpc_tls_certs(c: &Config, errors: &mut Vec<ConfigError>) {
    let tls = &c.worker.rpc_tls;
    if !tls.enabled {
        return;
    }
    for (key, file) in [
        ("worker.rpc_tls.server_cert_file", &tls.server_cert_file),
        ("worker.rpc_tls.client_cert_file", &tls.client_cert_file),
    ] {
        let file = file.trim();
        if file.is_empty() {
            continue;
        }
        if let Some(reason) = refused_version(Path::new(file)) {
            errors.push(ConfigError::invalid(
                key,
                format!(
                    "{file}: {reason}; rustls accepts only version 3 certificates for TLS \
                     (a certificate made by `openssl x509 -req` without extensions is version 1). \
                     Reissue it with `stacyvm worker certs --out DIR`, or with openssl and an \
                     -extfile (docs/worker.md)"
                ),
            ));
        }
    }
}

/// `Some(reason)` when the first certificate of the PEM file is not X.509 version 3.
fn refused_version(path: &Path) -> Option<String> {
    let first = CertificateDer::pem_file_iter(path).ok()?.next()?.ok()?;
    match x509_version(first.as_ref())? {
        3 => None,
        v => Some(format!("the certificate is X.509 version {v}")),
    }
}

/// The certificate's version (1, 2 or 3) from its DER, or `None` when it is not parseable as
/// far as needed. `Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] EXPLICIT Version
/// DEFAULT v1, ... } ... }`: an absent `[0]` means version 1.
pub(crate) fn x509_version(der: &[u8]) -> Option<u8> {
    let cert = enter(der, 0x30)?;
    let tbs = enter(cert, 0x30)?;
    if tbs.first() != Some(&0xa0) {
        return Some(1);
    }
    let explicit = enter(tbs, 0xa0)?;
    let int = enter(explicit, 0x02)?;
    match int {
        [v @ 0..=2] => Some(v + 1),
        _ => None,
    }
}

/// What `stacyvm worker certify` reports of a PEM certificate file's first certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFacts {
    /// X.509 version (1, 2 or 3).
    pub version: u8,
    /// End of validity, Unix seconds.
    pub not_after: i64,
}

/// Reads the first certificate of a PEM file: its version and the end of its validity.
pub fn cert_facts(path: &Path) -> Result<CertFacts, String> {
    let first = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?
        .next()
        .ok_or_else(|| format!("{} holds no PEM certificate", path.display()))?
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let der = first.as_ref();
    let version =
        x509_version(der).ok_or_else(|| format!("{}: not an X.509 certificate", path.display()))?;
    let not_after =
        not_after(der).ok_or_else(|| format!("{}: unreadable validity", path.display()))?;
    Ok(CertFacts { version, not_after })
}

/// `notAfter` of a DER certificate, Unix seconds. `TBSCertificate ::= SEQUENCE { [0] version
/// OPTIONAL, serialNumber, signature, issuer, validity SEQUENCE { notBefore, notAfter }, ... }`.
pub(crate) fn not_after(der: &[u8]) -> Option<i64> {
    let cert = enter(der, 0x30)?;
    let mut tbs = enter(cert, 0x30)?;
    if tbs.first() == Some(&0xa0) {
        tbs = element(tbs)?.2;
    }
    // serialNumber, signature, issuer
    for _ in 0..3 {
        tbs = element(tbs)?.2;
    }
    let validity = enter(tbs, 0x30)?;
    let (_, _, rest) = element(validity)?;
    let (tag, time, _) = element(rest)?;
    let text = std::str::from_utf8(time).ok()?;
    let full = match tag {
        // UTCTime YYMMDDHHMMSSZ: years 50..99 are 19xx (RFC 5280).
        0x17 if text.len() == 13 => {
            let yy: i32 = text.get(..2)?.parse().ok()?;
            format!("{}{}", if yy >= 50 { 19 } else { 20 }, text)
        }
        // GeneralizedTime YYYYMMDDHHMMSSZ
        0x18 if text.len() == 15 => text.to_string(),
        _ => return None,
    };
    let t = chrono::NaiveDateTime::parse_from_str(full.strip_suffix('Z')?, "%Y%m%d%H%M%S").ok()?;
    Some(t.and_utc().timestamp())
}

/// The DER element at the start of `der`: its tag, contents and what follows it.
fn element(der: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&t, _) = der.split_first()?;
    let contents = enter(der, t)?;
    let header = contents.as_ptr() as usize - der.as_ptr() as usize;
    Some((t, contents, der.get(header + contents.len()..)?))
}

/// The contents of the DER element at the start of `der`, if it has tag `tag`.
fn enter(der: &[u8], tag: u8) -> Option<&[u8]> {
    let (&t, rest) = der.split_first()?;
    if t != tag {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    rest.get(..len)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn versions_from_der() {
        // SEQUENCE { SEQUENCE { [0] { INTEGER 2 } ... } }
        let v3 = [0x30, 0x07, 0x30, 0x05, 0xa0, 0x03, 0x02, 0x01, 0x02];
        assert_eq!(x509_version(&v3), Some(3));
        // No [0] before the serial number: version 1.
        let v1 = [0x30, 0x05, 0x30, 0x03, 0x02, 0x01, 0x07];
        assert_eq!(x509_version(&v1), Some(1));
        // Long-form lengths.
        let long = [0x30, 0x81, 0x07, 0x30, 0x05, 0xa0, 0x03, 0x02, 0x01, 0x01];
        assert_eq!(x509_version(&long), Some(2));
        assert_eq!(x509_version(b"junk"), None);
        assert_eq!(x509_version(&[]), None);
    }

    fn tlv(tag: u8, contents: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        if contents.len() < 0x80 {
            out.push(contents.len() as u8);
        } else {
            out.push(0x82);
            out.extend_from_slice(&(contents.len() as u16).to_be_bytes());
        }
        out.extend_from_slice(contents);
        out
    }

    fn cert(version: bool, not_after: (u8, &str)) -> Vec<u8> {
        let mut tbs = Vec::new();
        if version {
            tbs.extend(tlv(0xa0, &tlv(0x02, &[2])));
        }
        tbs.extend(tlv(0x02, &[1]));
        tbs.extend(tlv(0x30, &tlv(0x06, &[1, 2, 3])));
        tbs.extend(tlv(0x30, &[0u8; 200]));
        let mut validity = tlv(0x17, b"250101000000Z");
        validity.extend(tlv(not_after.0, not_after.1.as_bytes()));
        tbs.extend(tlv(0x30, &validity));
        tlv(0x30, &tlv(0x30, &tbs))
    }

    #[test]
    fn validity_end_from_der() {
        assert_eq!(
            not_after(&cert(true, (0x17, "300101000000Z"))),
            Some(1_893_456_000)
        );
        assert_eq!(
            not_after(&cert(false, (0x18, "20500101000000Z"))),
            Some(2_524_608_000)
        );
        assert_eq!(
            not_after(&cert(true, (0x17, "990101000000Z"))),
            Some(915_148_800)
        );
        assert_eq!(not_after(&cert(true, (0x17, "garbage"))), None);
        assert_eq!(not_after(b"junk"), None);
    }
}
