//! The built-in preview proxy: a request whose `Host` is `{port}-{id}.{preview_domain}` goes to
//! the server listening on that port of the sandbox (HTTP/1.1, bodies streamed both ways,
//! WebSocket and other upgrades passed through), directly for a local sandbox, through the
//! owning worker for a remote one. It runs before API routing and before API-key auth:
//! browsers open preview URLs and cannot send `X-API-Key`, so the capability is the sandbox's
//! preview token (`preview_token.rs`; docs/preview.md, docs/threat-model.md).

use std::net::SocketAddr;
use std::time::Instant;

use axum::extract::{ConnectInfo, Request};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use stacyvm_preview::{forward_headers, looped, wants_upgrade, Spawn};

use super::error::ApiError;
use super::preview_token::{self, Presented};
use super::AppState;
use crate::error::ServiceError;
use crate::remote::RemotePreviewError;
use crate::service::{PreviewGrant, PreviewHost, PreviewUpstream, Service};

/// Middleware in front of the whole router: a request to a preview host
/// (`{port}-{id}.{preview_domain}`) is answered here, anything else is given back for the API.
pub async fn intercept(st: &AppState, req: Request) -> Result<Response, Request> {
    let Some(host) = request_host(&req) else {
        return Err(req);
    };
    let Some(preview) = PreviewHost::parse(&host) else {
        return Err(req);
    };
    let presented = Presented::of(&req);
    let grant = match st
        .svc
        .preview_authorize(&preview, &presented.as_strs())
        .await
    {
        Ok(None) => return Err(req),
        Ok(Some(grant)) => grant,
        Err(e) => return Ok(refused(&preview, e)),
    };
    if presented.from_query {
        // Swap the token in the URL for a cookie scoped to this preview host.
        let token = presented.tokens.first().map_or("", String::as_str);
        return Ok(preview_token::redirect(&req, token, !grant.public()));
    }
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let started = Instant::now();
    let resp = forward(&st.svc, req, &grant, &host).await;
    tracing::info!(sandbox_id = %grant.sandbox_id(), port = grant.port(), %method, %path,
        status = resp.status().as_u16(), duration_ms = started.elapsed().as_secs_f64() * 1000.0,
        "preview");
    Ok(resp)
}

fn refused(preview: &PreviewHost<'_>, e: ServiceError) -> Response {
    tracing::debug!(sandbox_id = preview.sandbox_id, port = preview.port, error = %e, "preview refused");
    ApiError::from(e).into_response()
}

/// The request's host in lower case without `:port`: the URI's authority (absolute form), else
/// the `Host` header. IPv6 literals are never preview hosts.
fn request_host(req: &Request) -> Option<String> {
    let raw = match req.uri().host() {
        Some(h) => h,
        None => req.headers().get(header::HOST)?.to_str().ok()?,
    };
    if raw.starts_with('[') {
        return None;
    }
    let host = raw.rsplit_once(':').map_or(raw, |(h, _)| h);
    Some(host.trim().to_ascii_lowercase())
}

/// Forwards a granted request to the sandbox's port (local) or its worker (remote).
async fn forward(svc: &Service, mut req: Request, grant: &PreviewGrant, host: &str) -> Response {
    if looped(req.headers()) {
        return ApiError::preview_loop().into_response();
    }
    let upstream = match svc.preview_open(grant).await {
        Ok(u) => u,
        Err(e) => {
            tracing::debug!(sandbox_id = %grant.sandbox_id(), port = grant.port(), error = %e, "preview not opened");
            return ApiError::from(e).into_response();
        }
    };
    let client_ip = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ci| ci.0.ip());
    let upgrade = wants_upgrade(req.headers());
    preview_token::strip(req.headers_mut());
    forward_headers(req.headers_mut(), upgrade, host, client_ip);
    match upstream {
        PreviewUpstream::Local(stream) => match stacyvm_preview::send(stream, req, svc).await {
            Ok(resp) => resp,
            Err(e) => {
                tracing::debug!(sandbox_id = %grant.sandbox_id(), error = %e, "preview upstream failed");
                ApiError::preview_upstream(grant.port()).into_response()
            }
        },
        PreviewUpstream::Remote(remote) => match remote.forward(req, svc).await {
            Ok(resp) => resp,
            Err(e) => {
                match &e {
                    RemotePreviewError::Refused(_) => {
                        tracing::warn!(sandbox_id = %grant.sandbox_id(), error = %e, "remote preview refused")
                    }
                    RemotePreviewError::Unreachable { source, .. } => {
                        tracing::debug!(sandbox_id = %grant.sandbox_id(), error = %e, source = %source, "remote preview failed")
                    }
                }
                ApiError::from(ServiceError::Unavailable(e.to_string())).into_response()
            }
        },
    }
}

impl Spawn for Service {
    fn spawn_detached(&self, task: stacyvm_preview::Detached) {
        self.spawn_until_shutdown(task);
    }
}
