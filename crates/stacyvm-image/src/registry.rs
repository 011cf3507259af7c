//! Pulling from a registry with `oci-client`: manifests (an index resolves to linux/amd64),
//! then the config and layer blobs the store does not have, each streamed to the staging area
//! and checked against its descriptor's digest and size.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::{DigestError, OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::credentials::Credentials;
use crate::digest::{Digest, Sha256};
use crate::error::ImageError;
use crate::reference::ImageRef;
use crate::spec::{Descriptor, ManifestOrIndex, ACCEPTED_MANIFESTS};
use crate::stage::{check, Staging};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Per read, not per transfer: a registry that stops sending mid-layer fails instead of hanging.
const READ_TIMEOUT: Duration = Duration::from_secs(120);

/// Where the usual distributions keep their CA bundle; the first one found is used.
const SYSTEM_CA_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// How the store talks to registries.
#[derive(Clone, Debug, Default)]
pub(crate) struct RegistryOptions {
    /// Hosts (`host[:port]`) pulled from over plain HTTP besides the loopback ones.
    pub insecure: Vec<String>,
    /// PEM roots to trust for HTTPS instead of the system bundle.
    pub ca_pem: Option<Vec<u8>>,
}

/// Fetches `r` into `staging` and returns the digest of the image manifest to name.
pub(crate) async fn fetch(
    staging: &mut Staging,
    r: &ImageRef,
    creds: &Credentials,
    opts: &RegistryOptions,
) -> Result<Digest, ImageError> {
    let plain_http = r.is_loopback_registry() || opts.insecure.iter().any(|h| h == r.registry());
    let client = client(r, plain_http, opts)?;
    let auth = match creds.for_registry(r.registry()) {
        Some((u, p)) => RegistryAuth::Basic(u.to_string(), p.to_string()),
        None => RegistryAuth::Anonymous,
    };
    let oref = oci_ref(r);

    let what = format!("manifest {r}");
    let (bytes, _) = client
        .pull_manifest_raw(&oref, &auth, ACCEPTED_MANIFESTS)
        .await
        .map_err(|e| map_err(e, r, &what))?;
    let digest = Digest::of_bytes(&bytes);
    if let Some(want) = r.digest() {
        check(&what, want, bytes.len() as u64, &digest, bytes.len() as u64)?;
    }
    let (digest, bytes, manifest) = match ManifestOrIndex::parse(&bytes, &what)? {
        ManifestOrIndex::Manifest(m) => (digest, bytes, m),
        ManifestOrIndex::Index(index) => {
            let entry = index.pick_host_platform().ok_or_else(|| {
                ImageError::unsupported(format!("platform: {r} has no image for this platform"))
            })?;
            let pref = r.with_digest(entry.digest.clone());
            let what = format!("manifest {pref}");
            let (b, _) = client
                .pull_manifest_raw(&oci_ref(&pref), &auth, ACCEPTED_MANIFESTS)
                .await
                .map_err(|e| map_err(e, r, &what))?;
            let got = Digest::of_bytes(&b);
            check(&what, &entry.digest, entry.size, &got, b.len() as u64)?;
            match ManifestOrIndex::parse(&b, &what)? {
                ManifestOrIndex::Manifest(m) => (got, b, m),
                ManifestOrIndex::Index(_) => {
                    return Err(ImageError::unsupported(format!("nested index in {r}")))
                }
            }
        }
    };
    staging.stage_bytes(&bytes, Some((&digest, bytes.len() as u64)), "manifest")?;

    let blobs = std::iter::once(("config", &manifest.config))
        .chain(manifest.layers.iter().map(|l| ("layer", l)));
    for (kind, desc) in blobs {
        // Deduplication: a blob the store (or this pull) already has is not fetched again.
        if staging.has_blob(&desc.digest) {
            continue;
        }
        let what = format!("{kind} {} of {r}", desc.digest);
        download(&client, &oref, desc, staging, r, &what).await?;
    }
    Ok(digest)
}

async fn download(
    client: &Client,
    oref: &Reference,
    desc: &Descriptor,
    staging: &mut Staging,
    r: &ImageRef,
    what: &str,
) -> Result<(), ImageError> {
    let path = staging.scratch_path("blob");
    let file = tokio::fs::File::create(&path)
        .await
        .map_err(ImageError::io(format!("staging {what}")))?;
    let mut out = CountingFile {
        file,
        hash: Sha256::new(),
        limit: desc.size,
        over_limit: false,
    };
    let pulled = client.pull_blob(oref, desc.digest.as_str(), &mut out).await;
    if out.over_limit {
        return Err(ImageError::DigestMismatch {
            what: what.to_string(),
            expected: format!("{} ({} bytes)", desc.digest, desc.size),
            actual: format!("more than {} bytes", desc.size),
        });
    }
    pulled.map_err(|e| map_err(e, r, what))?;
    // tokio's File hands writes to a thread: flush so the last one has landed.
    out.file
        .flush()
        .await
        .map_err(ImageError::io(format!("staging {what}")))?;
    let len = out.hash.len();
    check(what, &desc.digest, desc.size, &out.hash.finish(), len)?;
    staging.adopt(desc.digest.clone(), path);
    Ok(())
}

/// Hashes and counts what is written, and refuses to grow past the descriptor's size so a
/// misbehaving registry cannot fill the disk.
struct CountingFile {
    file: tokio::fs::File,
    hash: Sha256,
    limit: u64,
    over_limit: bool,
}

impl AsyncWrite for CountingFile {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        if this.hash.len() + buf.len() as u64 > this.limit {
            this.over_limit = true;
            return Poll::Ready(Err(std::io::Error::other(
                "blob larger than its descriptor",
            )));
        }
        match Pin::new(&mut this.file).poll_write(cx, buf) {
            Poll::Ready(Ok(n)) => {
                this.hash.update(&buf[..n]);
                Poll::Ready(Ok(n))
            }
            other => other,
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.file).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.file).poll_shutdown(cx)
    }
}

fn oci_ref(r: &ImageRef) -> Reference {
    let (reg, repo) = (r.registry().to_string(), r.repository().to_string());
    match (r.digest(), r.tag()) {
        (Some(d), _) => Reference::with_digest(reg, repo, d.to_string()),
        (None, t) => Reference::with_tag(reg, repo, t.unwrap_or("latest").to_string()),
    }
}

fn client(r: &ImageRef, plain_http: bool, opts: &RegistryOptions) -> Result<Client, ImageError> {
    let mut config = ClientConfig {
        connect_timeout: Some(CONNECT_TIMEOUT),
        read_timeout: Some(READ_TIMEOUT),
        // Indexes are resolved here, not by the client.
        platform_resolver: None,
        ..ClientConfig::default()
    };
    if plain_http {
        // The client compares against the resolved host, which is the registry itself for
        // anything but Docker Hub.
        config.protocol = ClientProtocol::HttpsExcept(vec![r.registry().to_string()]);
    } else {
        config.protocol = ClientProtocol::Https;
        config.extra_root_certificates = root_certificates(opts);
    }
    Client::try_from(config).map_err(|e| ImageError::Network {
        context: format!("setting up a client for {}", r.registry()),
        source: Box::new(e),
    })
}

/// The workspace builds reqwest with manually supplied roots (so the worker's mTLS clients trust
/// only their CA); registries are public, so they get the system bundle.
fn root_certificates(opts: &RegistryOptions) -> Vec<Certificate> {
    let pem = match &opts.ca_pem {
        Some(p) => p.clone(),
        None => SYSTEM_CA_BUNDLES
            .iter()
            .find_map(|p| std::fs::read(p).ok())
            .unwrap_or_default(),
    };
    split_pem(&pem)
        .into_iter()
        .map(|data| Certificate {
            encoding: CertificateEncoding::Pem,
            data,
        })
        .collect()
}

/// One PEM block per certificate: reqwest reads only the first block of a PEM buffer.
fn split_pem(pem: &[u8]) -> Vec<Vec<u8>> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let text = String::from_utf8_lossy(pem);
    let mut out = Vec::new();
    let mut rest = text.as_ref();
    while let Some(start) = rest.find(BEGIN) {
        let Some(len) = rest[start..].find(END) else {
            break;
        };
        let end = start + len + END.len();
        out.push(format!("{}\n", &rest[start..end]).into_bytes());
        rest = &rest[end..];
    }
    out
}

/// Turns the client's errors into the store's, keeping the client's text only as `source`.
fn map_err(e: OciDistributionError, r: &ImageRef, what: &str) -> ImageError {
    use OciDistributionError as E;
    let unauthorized = || ImageError::Unauthorized {
        registry: r.registry().to_string(),
    };
    let network = |e: OciDistributionError| ImageError::Network {
        context: format!("fetching {what}"),
        source: Box::new(e),
    };
    match e {
        E::AuthenticationFailure(_) | E::UnauthorizedError { .. } => unauthorized(),
        E::DigestError(DigestError::VerificationError { expected, actual }) => {
            ImageError::DigestMismatch {
                what: what.to_string(),
                expected,
                actual,
            }
        }
        E::DigestError(d) => ImageError::corrupt(what, d.to_string()),
        E::RegistryError { envelope, url } => {
            let has =
                |codes: &[OciErrorCode]| envelope.errors.iter().any(|x| codes.contains(&x.code));
            if has(&[
                OciErrorCode::ManifestUnknown,
                OciErrorCode::BlobUnknown,
                OciErrorCode::NameUnknown,
                OciErrorCode::NotFound,
            ]) {
                ImageError::not_found(what)
            } else if has(&[OciErrorCode::Unauthorized, OciErrorCode::Denied]) {
                unauthorized()
            } else {
                network(E::RegistryError { envelope, url })
            }
        }
        E::ImageManifestNotFoundError(_) | E::ServerError { code: 404, .. } => {
            ImageError::not_found(what)
        }
        E::ServerError {
            code: 401 | 403, ..
        } => unauthorized(),
        E::RequestError(re) => match re.status().map(|s| s.as_u16()) {
            Some(404) => ImageError::not_found(what),
            Some(401 | 403) => unauthorized(),
            _ => network(E::RequestError(re)),
        },
        E::IoError(io) => ImageError::io(format!("staging {what}"))(io),
        e @ (E::ManifestParsingError(_)
        | E::VersionedParsingError(_)
        | E::JsonError(_)
        | E::ManifestEncodingError(_)) => ImageError::corrupt(what, e.to_string()),
        e @ (E::UnsupportedMediaTypeError(_) | E::UnsupportedSchemaVersionError(_)) => {
            ImageError::unsupported(format!("{what}: {e}"))
        }
        other => network(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_pem_yields_one_block_per_certificate() {
        let pem = b"junk\n-----BEGIN CERTIFICATE-----\nAAA\n-----END CERTIFICATE-----\n\
                    -----BEGIN CERTIFICATE-----\nBBB\n-----END CERTIFICATE-----\n";
        let certs = split_pem(pem);
        assert_eq!(certs.len(), 2);
        assert!(String::from_utf8_lossy(&certs[1]).contains("BBB"));
    }

    #[test]
    fn registry_not_found_codes_map_to_not_found() {
        let r = ImageRef::parse("localhost:1/x").expect("ref");
        let envelope: oci_client::errors::OciEnvelope = serde_json::from_str(
            r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#,
        )
        .expect("envelope");
        let e = map_err(
            OciDistributionError::RegistryError {
                envelope,
                url: "http://localhost:1/v2/x/manifests/latest".into(),
            },
            &r,
            "manifest x",
        );
        assert_eq!(e.code(), "not_found");
        let e = map_err(
            OciDistributionError::AuthenticationFailure("no".into()),
            &r,
            "m",
        );
        assert_eq!(e.code(), "unauthorized");
    }
}
