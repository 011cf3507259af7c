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
}
