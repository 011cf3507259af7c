//! The preview route (`{PREVIEW_ROUTE}/{sandbox}/{port}`, docs/worker.md "Previews"): the
//! control plane hands over a preview request of a sandbox this worker runs, and the worker
//! proxies it to the sandbox's port with the control plane's own proxy code
//! (`stacyvm-preview`): HTTP/1.1 on a fresh connection, bodies streamed, upgrades spliced.
//!
//! Checks, in order: the RPC's credentials (401), a sandbox this worker holds (404), previews
//! allowed for its provider (404 `PREVIEW_NOT_AVAILABLE` for a provider without isolation
//! unless `server.preview_unisolated`), the original path (400). The control plane already
//! checked the preview token and the loop guard and set `Via` and `X-Forwarded-*`; the
//! request goes on as it came, without the worker protocol's headers and with its original
//! `Host` (`X-Forwarded-Host`). The worker's own answers carry the protocol header; the
//! sandbox's never do.

use axum::extract::{Path, Request, State};
use axum::http::header::{self, HeaderMap};
use axum::http::{StatusCode, Uri};
use axum::response::Response;
use stacyvm_preview::{strip_hop_by_hop, wants_upgrade, Spawn};
use stacyvm_protocol::{PREVIEW_PATH_HEADER, PROTOCOL_HEADER, WORKER_PROTOCOL_HEADERS};
use stacyvm_provider::{PreviewConn, ProviderError};

use crate::rpc::rest_error;
use crate::state::WorkerState;

pub(crate) async fn serve(
    State(state): State<WorkerState>,
    Path((sandbox, port)): Path<(String, String)>,
    mut req: Request,
) -> Response {
    if let Err(e) = state.inner.auth.check(req.headers()) {
        tracing::debug!(error = %e, "worker preview credentials refused");
        return rest_error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "invalid or missing worker RPC credentials",
        );
    }
    let Some(port) = port.parse::<u16>().ok().filter(|p| *p > 0) else {
        return rest_error(StatusCode::BAD_REQUEST, "BAD_REQUEST", "invalid port");
    };
    let Some(held) = state.inner.leases.held(&sandbox) else {
        return rest_error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            &format!("sandbox {sandbox} does not run on this worker"),
        );
    };
    let provider = match state.inner.providers.get(&held.provider) {
        Ok(p) => p,
        Err(e) => return provider_error(e, &sandbox, port),
    };
    if !provider.isolated() && !state.inner.preview_unisolated {
        return rest_error(
            StatusCode::NOT_FOUND,
            "PREVIEW_NOT_AVAILABLE",
            &format!(
                "previews of {} sandboxes are off on this worker: the provider does not \
                 isolate, so its ports are the host's (set server.preview_unisolated: true to \
                 allow)",
                provider.name()
            ),
        );
    }
    let Some(path) = original_path(req.headers()) else {
        return rest_error(
            StatusCode::BAD_REQUEST,
            "BAD_REQUEST",
            "missing or invalid preview path",
        );
    };
    let stream = match provider.preview_connect(&held.runtime_id, port).await {
        Ok(PreviewConn::Open(s)) => s,
        Ok(PreviewConn::NotExposed) => {
            return rest_error(
                StatusCode::NOT_FOUND,
                "PREVIEW_NOT_AVAILABLE",
                &format!(
                    "the {} provider exposes no port {port} of sandbox {sandbox}",
                    provider.name()
                ),
            )
        }
        Ok(PreviewConn::Unreachable(e)) => {
            tracing::debug!(sandbox_id = %sandbox, port, error = %e, "preview upstream refused");
            return unreachable(port);
        }
        Err(e) => return provider_error(e, &sandbox, port),
    };
    *req.uri_mut() = path;
    upstream_headers(req.headers_mut());
    match stacyvm_preview::send(stream, req, &state).await {
        Ok(mut resp) => {
            resp.headers_mut().remove(PROTOCOL_HEADER);
            resp
        }
        Err(e) => {
            tracing::debug!(sandbox_id = %sandbox, port, error = %e, "preview upstream failed");
            unreachable(port)
        }
    }
}

/// The original path and query from [`PREVIEW_PATH_HEADER`] (origin form).
fn original_path(h: &HeaderMap) -> Option<Uri> {
    let raw = h.get(PREVIEW_PATH_HEADER)?.to_str().ok()?;
    if !raw.starts_with('/') {
        return None;
    }
    raw.parse::<Uri>()
        .ok()
        .filter(|u| u.scheme().is_none() && u.authority().is_none())
}

/// What the sandbox's server gets: the request as the control plane prepared it, without the
/// worker protocol's headers, hop-by-hop headers dropped, and its original `Host` back.
fn upstream_headers(h: &mut HeaderMap) {
    let upgrade = wants_upgrade(h);
    for name in WORKER_PROTOCOL_HEADERS {
        h.remove(name);
    }
    strip_hop_by_hop(h, upgrade);
    match h.get("x-forwarded-host").cloned() {
        Some(host) => {
            h.insert(header::HOST, host);
        }
        None => {
            h.remove(header::HOST);
        }
    }
}

fn unreachable(port: u16) -> Response {
    rest_error(
        StatusCode::BAD_GATEWAY,
        "PREVIEW_UPSTREAM_UNREACHABLE",
        &format!("nothing answered on port {port} of the sandbox"),
    )
}

fn provider_error(e: ProviderError, sandbox: &str, port: u16) -> Response {
    if let ProviderError::SandboxNotFound(_) = e {
        return rest_error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            &format!("sandbox {sandbox} does not run on this worker"),
        );
    }
    tracing::warn!(sandbox_id = sandbox, port, error = ?e, "preview: provider failed");
    let f = e.to_wire(sandbox);
    let status = StatusCode::from_u16(f.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let code = if status.is_server_error() {
        "UNAVAILABLE"
    } else {
        "BAD_REQUEST"
    };
    rest_error(status, code, "the sandbox's provider failed")
}

impl Spawn for WorkerState {
    fn spawn_detached(&self, task: stacyvm_preview::Detached) {
        let stop = self.inner.stop.clone();
        self.inner.tasks.spawn(async move {
            tokio::select! {
                () = task => {}
                () = stop.cancelled() => {}
            }
        });
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn the_original_path_must_be_origin_form() {
        let mut h = HeaderMap::new();
        assert_eq!(original_path(&h), None);
        for (given, want) in [
            ("/", Some("/")),
            ("/a/../b?x=1", Some("/a/../b?x=1")),
            ("http://evil/x", None),
            ("x", None),
        ] {
            h.insert(PREVIEW_PATH_HEADER, HeaderValue::from_static(given));
            assert_eq!(
                original_path(&h).map(|u| u.to_string()),
                want.map(str::to_string),
                "{given}"
            );
        }
    }

    #[test]
    fn protocol_headers_stop_here_and_host_comes_back() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("x-worker-id", "w"),
            ("x-worker-token", "secret"),
            ("x-stacyvm-protocol", "1"),
            ("x-stacyvm-preview-path", "/"),
            ("host", "127.0.0.1:7430"),
            ("x-forwarded-host", "3000-sb-1.localhost"),
            ("authorization", "Bearer app"),
            ("connection", "keep-alive"),
        ] {
            h.insert(
                header::HeaderName::from_static(k),
                HeaderValue::from_static(v),
            );
        }
        upstream_headers(&mut h);
        let mut names: Vec<&str> = h.keys().map(|n| n.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["authorization", "host", "x-forwarded-host"]);
        assert_eq!(h[header::HOST], "3000-sb-1.localhost");
    }
}
