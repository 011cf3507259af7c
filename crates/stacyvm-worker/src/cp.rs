//! Client for the control plane's worker routes: heartbeat and lease renewal, with the
//! credential chosen per request as wire-reference §8.3 orders it.

use std::time::Duration;

use serde::Deserialize;
use stacyvm_auth::AuthError;
use stacyvm_protocol::{HeartbeatBody, LeaseRenewBody, LeaseToken, RenewLeaseResult};
use stacyvm_types::format_go_duration;

use crate::auth::{mint_control_plane_token, read_token_file};
use crate::config::Credential;

/// Bounds one small control-plane request (heartbeat, renew, bootstrap token); long work never
/// goes through here.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ControlPlaneError {
    #[error(
        "worker token is required: set auth.worker_token, --worker-token, --worker-token-file, \
         a bootstrap admin key or a signing key"
    )]
    NoCredential,
    #[error("cannot read the worker token file")]
    TokenFile(#[source] AuthError),
    #[error("cannot sign a worker token")]
    Mint(#[source] AuthError),
    #[error("bootstrap token request failed: HTTP {status}: {message}")]
    Bootstrap { status: u16, message: String },
    #[error("control plane unreachable at {url}")]
    Transport {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("control plane answered HTTP {status}: {message}")]
    Rejected { status: u16, message: String },
    #[error("invalid control plane response")]
    Decode,
}

impl ControlPlaneError {
    /// HTTP status of a refusal by the control plane, if that is what happened.
    pub(crate) fn status(&self) -> Option<u16> {
        match self {
            ControlPlaneError::Rejected { status, .. } => Some(*status),
            _ => None,
        }
    }
}

pub(crate) struct ControlPlane {
    http: reqwest::Client,
    base: String,
    worker_id: String,
    credential: Credential,
}

#[derive(Deserialize)]
struct TokenResponse {
    #[serde(default)]
    token: String,
}

impl ControlPlane {
    /// `ca_pem`: extra CA certificates to trust for an `https` control plane (this build has
    /// no built-in roots).
    pub(crate) fn new(
        base: &str,
        worker_id: &str,
        credential: Credential,
        ca_pem: Option<&[u8]>,
    ) -> Result<Self, reqwest::Error> {
        let mut b = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT);
        if let Some(pem) = ca_pem {
            for cert in reqwest::Certificate::from_pem_bundle(pem)? {
                b = b.add_root_certificate(cert);
            }
        }
        let http = b.build()?;
        Ok(ControlPlane {
            http,
            base: base.trim_end_matches('/').to_string(),
            worker_id: worker_id.to_string(),
            credential,
        })
    }

    /// `{base}/api/v1/...` with each segment percent-encoded.
    fn url(&self, segments: &[&str]) -> Result<reqwest::Url, ControlPlaneError> {
        let mut url = reqwest::Url::parse(&self.base).map_err(|_| ControlPlaneError::Decode)?;
        url.path_segments_mut()
            .map_err(|()| ControlPlaneError::Decode)?
            .pop_if_empty()
            .extend(segments);
        Ok(url)
    }

    /// The token for the next request (never cached: files rotate, bootstrap tokens expire).
    async fn token(&self) -> Result<String, ControlPlaneError> {
        match &self.credential {
            Credential::TokenFile(path) => {
                read_token_file(path).map_err(ControlPlaneError::TokenFile)
            }
            Credential::Bootstrap { admin_key, ttl } => self.bootstrap_token(admin_key, *ttl).await,
            Credential::Static(t) => Ok(t.clone()),
            Credential::Signed(keys) => {
                mint_control_plane_token(keys, &self.worker_id).map_err(ControlPlaneError::Mint)
            }
            Credential::Missing => Err(ControlPlaneError::NoCredential),
        }
    }

    async fn bootstrap_token(
        &self,
        admin_key: &str,
        ttl: Duration,
    ) -> Result<String, ControlPlaneError> {
        let url = self.url(&["api", "v1", "admin", "worker-tokens"])?;
        let ttl = format_go_duration(i64::try_from(ttl.as_nanos()).unwrap_or(i64::MAX));
        let body = serde_json::json!({
            "worker_id": self.worker_id,
            "ttl": ttl,
            "audience": stacyvm_auth::AUD_CONTROL_PLANE,
        });
        let req = self
            .http
            .post(url)
            .header("X-Admin-API-Key", admin_key)
            .json(&body);
        let (status, bytes) = self.send(req).await?;
        if status >= 300 {
            return Err(ControlPlaneError::Bootstrap {
                status,
                message: error_message(&bytes),
            });
        }
        let t: TokenResponse =
            serde_json::from_slice(&bytes).map_err(|_| ControlPlaneError::Decode)?;
        if t.token.is_empty() {
            return Err(ControlPlaneError::Decode);
        }
        Ok(t.token)
    }

    /// Sends `req`; returns the status and the whole body.
    async fn send(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<(u16, bytes::Bytes), ControlPlaneError> {
        let resp = req.send().await.map_err(|source| self.transport(source))?;
        let status = resp.status().as_u16();
        let bytes = resp
            .bytes()
            .await
            .map_err(|source| self.transport(source))?;
        Ok((status, bytes))
    }

    fn transport(&self, source: reqwest::Error) -> ControlPlaneError {
        ControlPlaneError::Transport {
            url: self.base.clone(),
            source,
        }
    }

    /// POSTs JSON with the worker headers; returns the 2xx body.
    async fn post(
        &self,
        url: reqwest::Url,
        body: &impl serde::Serialize,
    ) -> Result<bytes::Bytes, ControlPlaneError> {
        let token = self.token().await?;
        let req = self
            .http
            .post(url)
            .header("X-Worker-ID", &self.worker_id)
            .header("X-Worker-Token", token)
            .json(body);
        let (status, bytes) = self.send(req).await?;
        if status >= 300 {
            return Err(ControlPlaneError::Rejected {
                status,
                message: error_message(&bytes),
            });
        }
        Ok(bytes)
    }

    /// `POST /api/v1/worker/{id}/heartbeat`.
    pub(crate) async fn heartbeat(&self, body: &HeartbeatBody) -> Result<(), ControlPlaneError> {
        let url = self.url(&["api", "v1", "worker", &self.worker_id, "heartbeat"])?;
        self.post(url, body).await.map(|_| ())
    }

    /// `POST /api/v1/worker/{id}/leases/{resource}/renew`.
    pub(crate) async fn renew_lease(
        &self,
        resource: &str,
        ttl: &str,
    ) -> Result<LeaseToken, ControlPlaneError> {
        let url = self.url(&[
            "api",
            "v1",
            "worker",
            &self.worker_id,
            "leases",
            resource,
            "renew",
        ])?;
        let body = LeaseRenewBody {
            ttl: ttl.to_string(),
            resource_id: resource.to_string(),
        };
        let bytes = self.post(url, &body).await?;
        let r: RenewLeaseResult =
            serde_json::from_slice(&bytes).map_err(|_| ControlPlaneError::Decode)?;
        Ok(r.lease)
    }
}

/// `message` of a REST error body, else the (short) raw text.
fn error_message(bytes: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(bytes).unwrap_or_default();
    match v.get("message").and_then(|m| m.as_str()) {
        Some(m) => m.to_string(),
        None => String::from_utf8_lossy(bytes)
            .trim()
            .chars()
            .take(300)
            .collect(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_encoded_under_the_base() {
        let cp = ControlPlane::new("http://cp:7423/", "w a", Credential::Missing, None).unwrap();
        let u = cp
            .url(&["api", "v1", "worker", "w a", "heartbeat"])
            .unwrap();
        assert_eq!(u.as_str(), "http://cp:7423/api/v1/worker/w%20a/heartbeat");
        let cp = ControlPlane::new("http://cp/prefix", "w", Credential::Missing, None).unwrap();
        let u = cp.url(&["api", "v1"]).unwrap();
        assert_eq!(u.as_str(), "http://cp/prefix/api/v1");
    }

    #[test]
    fn error_messages() {
        assert_eq!(error_message(br#"{"code":"X","message":"nope"}"#), "nope");
        assert_eq!(error_message(b" plain \n"), "plain");
    }

    #[tokio::test]
    async fn missing_credential_is_reported() {
        let cp = ControlPlane::new("http://127.0.0.1:9", "w", Credential::Missing, None).unwrap();
        let e = cp.heartbeat(&HeartbeatBody::default()).await.unwrap_err();
        assert!(matches!(e, ControlPlaneError::NoCredential));
        assert!(e.to_string().contains("worker token is required"));
    }
}
