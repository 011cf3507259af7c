//! Previews of sandboxes on remote workers: the control plane hands the request, as it is, to
//! the owning worker's preview route (`stacyvm_protocol::PREVIEW_ROUTE`) with the RPC's
//! credentials (and mTLS when configured), and the worker proxies it to the sandbox's port with
//! the same code as the control plane's own previews (`stacyvm-preview`). Bodies stream both
//! ways; an upgrade (WebSocket) is spliced between the client and the worker's connection.
//!
//! The worker's own answers (credentials refused, no such sandbox, nothing on the port) carry
//! the protocol header, the sandbox's never do (the worker removes it): so a refusal of our
//! credentials becomes 503 here, and the rest pass through as they came.

use std::sync::Arc;

use axum::body::{Body, HttpBody as _};
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, Version};
use axum::response::Response;
use futures_util::TryStreamExt;
use stacyvm_preview::{origin_form, strip_hop_by_hop, wants_upgrade, Spawn};
use stacyvm_protocol::{
    preview_path, PREVIEW_PATH_HEADER, PROTOCOL_HEADER, WORKER_PROTOCOL_HEADERS,
};
use stacyvm_types::SandboxId;

use super::{Endpoint, RemoteError, WorkerClient};

/// A granted preview request's way to the worker that runs the sandbox.
pub struct RemotePreview {
    client: Arc<WorkerClient>,
    endpoint: Endpoint,
    sandbox_id: SandboxId,
    port: u16,
}

/// Why a remote preview got no answer from the worker.
#[derive(Debug, thiserror::Error)]
pub enum RemotePreviewError {
    /// The worker could not be called (no credential, connection, TLS).
    #[error("worker {worker} could not be reached")]
    Unreachable {
        worker: String,
        #[source]
        source: RemoteError,
    },
    /// The worker refused the control plane's credentials.
    #[error("worker {0} refused the control plane's credentials")]
    Refused(String),
}

impl RemotePreview {
    pub fn new(
        client: Arc<WorkerClient>,
        endpoint: Endpoint,
        sandbox_id: SandboxId,
        port: u16,
    ) -> Self {
        RemotePreview {
            client,
            endpoint,
            sandbox_id,
            port,
        }
    }

    pub fn worker_id(&self) -> &str {
        self.endpoint.worker_id.as_str()
    }

    /// Sends `req` (headers already prepared by the edge: `Via`, `X-Forwarded-*`, no API
    /// keys) to the worker and returns its answer with the body streaming. An upgrade is
    /// spliced by a task of `tasks`.
    pub async fn forward(
        self,
        mut req: Request,
        tasks: &dyn Spawn,
    ) -> Result<Response, RemotePreviewError> {
        let worker = self.endpoint.worker_id.to_string();
        let unreachable = |source| RemotePreviewError::Unreachable {
            worker: worker.clone(),
            source,
        };
        let upgrade = wants_upgrade(req.headers());
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        let (parts, body) = req.into_parts();
        let path = origin_form(&parts.uri);
        let mut rb = self
            .client
            .authenticated(
                &self.endpoint,
                parts.method.clone(),
                &preview_path(self.sandbox_id.as_str(), self.port),
            )
            .map_err(unreachable)?
            .version(Version::HTTP_11);
        // Our credentials and protocol headers come first and only from us: a client's copies
        // are dropped. The worker's own `Host` comes from the URL; the original travels as
        // `X-Forwarded-Host`, which the worker puts back.
        for (name, value) in &parts.headers {
            if name != axum::http::header::HOST && !reserved(name.as_str()) {
                rb = rb.header(name, value);
            }
        }
        if let Ok(v) = HeaderValue::from_str(path.to_string().as_str()) {
            rb = rb.header(PREVIEW_PATH_HEADER, v);
        }
        if !body.is_end_stream() {
            rb = rb.body(reqwest::Body::wrap_stream(body.into_data_stream()));
        }
        let resp = rb
            .send()
            .await
            .map_err(|e| unreachable(RemoteError::Transport(e)))?;
        let from_worker = resp.headers().contains_key(PROTOCOL_HEADER);
        if from_worker && matches!(resp.status().as_u16(), 401 | 403) {
            return Err(RemotePreviewError::Refused(worker));
        }
        let mut out = Response::builder()
            .status(resp.status())
            .body(Body::empty())
            .unwrap_or_default();
        *out.headers_mut() = resp.headers().clone();
        out.headers_mut().remove(PROTOCOL_HEADER);
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            if let Some(client_upgrade) = client_upgrade {
                stacyvm_preview::splice(client_upgrade, resp.upgrade(), tasks);
            }
            return Ok(out);
        }
        strip_hop_by_hop(out.headers_mut(), false);
        *out.body_mut() = Body::from_stream(resp.bytes_stream().inspect_err(|e| {
            tracing::debug!(error = %e, "remote preview body ended early");
        }));
        Ok(out)
    }
}

/// Headers of the worker protocol, which a preview request must not bring from outside.
fn reserved(name: &str) -> bool {
    WORKER_PROTOCOL_HEADERS
        .iter()
        .any(|r| r.eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_headers_are_reserved() {
        for name in [
            "x-worker-id",
            "x-worker-token",
            "x-stacyvm-protocol",
            "x-stacyvm-rpc",
            "x-stacyvm-preview-path",
            "x-worker-stream",
        ] {
            assert!(reserved(name), "{name}");
        }
        for name in ["authorization", "cookie", "x-forwarded-for", "via"] {
            assert!(!reserved(name), "{name}");
        }
    }
}
