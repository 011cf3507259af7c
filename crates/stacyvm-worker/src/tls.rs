//! TLS for the RPC listener (`worker.rpc_tls`): the worker's certificate and key, and with
//! `client_ca_file` mandatory client certificates issued by that CA (mTLS). TLS 1.2 and 1.3
//! only, ring as the crypto provider, HTTP/1.1 via ALPN.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

use crate::config::TlsFiles;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read certificates from {}: {reason}", path.display())]
    Certs { path: PathBuf, reason: String },
    #[error("no certificate in {}", path.display())]
    NoCerts { path: PathBuf },
    #[error("cannot read a private key from {}: {reason}", path.display())]
    Key { path: PathBuf, reason: String },
    #[error("invalid client CA {}: {reason}", path.display())]
    ClientCa { path: PathBuf, reason: String },
    #[error("invalid TLS server configuration: {0}")]
    Config(String),
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let list = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError::Certs {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    if list.is_empty() {
        return Err(TlsError::NoCerts {
            path: path.to_path_buf(),
        });
    }
    Ok(list)
}

/// Builds the rustls server config; every problem is reported at startup.
pub(crate) fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = certs(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| TlsError::Key {
        path: files.key.clone(),
        reason: e.to_string(),
    })?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match &files.client_ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in certs(ca)? {
                roots.add(cert).map_err(|e| TlsError::ClientCa {
                    path: ca.clone(),
                    reason: e.to_string(),
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| TlsError::ClientCa {
                    path: ca.clone(),
                    reason: e.to_string(),
                })?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut cfg = builder
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// What to do about a refused client certificate, when we can tell: webpki refuses X.509
/// version 1 certificates (`openssl x509 -req` without extensions), and says only
/// `UnsupportedCertVersion`.
pub(crate) fn handshake_hint(error: &str) -> &'static str {
    if error.contains("UnsupportedCertVersion") {
        "the client certificate is X.509 version 1, which rustls refuses; reissue it as version 3 \
         (`stacyvm worker certs`, docs/worker.md) and set it as the control plane's \
         worker.rpc_tls.client_cert_file"
    } else {
        ""
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn version_1_client_certificates_get_a_hint() {
        let refused =
            rustls::Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(
                std::sync::Arc::new(rustls::Error::General("UnsupportedCertVersion".into())),
            )));
        assert!(handshake_hint(&refused.to_string()).contains("stacyvm worker certs"));
        assert_eq!(
            handshake_hint("invalid peer certificate: UnknownIssuer"),
            ""
        );
    }

    #[test]
    fn missing_and_garbage_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a pem\n").unwrap();
        let files = TlsFiles {
            cert: dir.path().join("missing.pem"),
            key: junk.clone(),
            client_ca: None,
        };
        assert!(matches!(server_config(&files), Err(TlsError::Certs { .. })));
        let files = TlsFiles {
            cert: junk.clone(),
            key: junk,
            client_ca: None,
        };
        assert!(matches!(
            server_config(&files),
            Err(TlsError::NoCerts { .. })
        ));
    }
}
