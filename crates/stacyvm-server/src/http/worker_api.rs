//! Routes workers call (`/api/v1/worker/{id}/...`, worker credentials, no API key) and the
//! admin routes that act on workers (drain, token issuing, lease renew).

use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Router};
use serde::{Deserialize, Serialize};
use stacyvm_auth::{Scope, Scopes};
use stacyvm_types::format_rfc3339_go;

use super::error::ApiError;
use super::extract::JsonBody;
use super::workers::HeartbeatBody;
use super::{ok, views, AppState};
use crate::service::TokenRequest;

/// Scopes the authenticated worker holds, and its id.
#[derive(Clone)]
pub struct WorkerIdentity {
    id: String,
    scopes: Scopes,
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/worker/{id}/heartbeat", post(heartbeat))
        .route("/worker/{id}/leases/{resource}/renew", post(renew))
}

pub fn admin_routes() -> Router<AppState> {
    Router::new()
        .route("/workers/{id}/leases/{resource}/renew", post(admin_renew))
        .route("/workers/{id}/drain", post(drain))
        .route("/worker-tokens", post(issue_token))
}

fn token_from(h: &HeaderMap) -> Option<String> {
    let get = |n: &str| {
        h.get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    if let Some(t) = get("x-worker-token") {
        return Some(t.to_string());
    }
    let auth = get("authorization")?;
    let (scheme, rest) = auth.split_at(auth.len().min(7));
    scheme
        .eq_ignore_ascii_case("bearer ")
        .then(|| rest.trim().to_string())
}

/// Worker credentials (wire §8.1): never API keys.
pub async fn authenticate(State(st): State<AppState>, mut req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get("x-worker-id")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .unwrap_or("")
        .to_string();
    let token = token_from(req.headers()).unwrap_or_default();
    match st.svc.workers().authenticate(&id, &token) {
        Ok(scopes) => {
            req.extensions_mut().insert(WorkerIdentity { id, scopes });
            next.run(req).await
        }
        Err(e) => ApiError::from(e).into_response(),
    }
}

fn check(identity: &WorkerIdentity, path_id: &str, scope: Scope) -> Result<(), ApiError> {
    if identity.id != path_id {
        return Err(ApiError::plain(
            StatusCode::FORBIDDEN,
            "UNAUTHORIZED",
            "worker credential does not match requested worker",
        ));
    }
    if !identity.scopes.contains(scope) {
        return Err(ApiError::plain(
            StatusCode::FORBIDDEN,
            "FORBIDDEN",
            "required authorization scope missing",
        ));
    }
    Ok(())
}

async fn heartbeat(
    State(st): State<AppState>,
    Extension(identity): Extension<WorkerIdentity>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<HeartbeatBody>,
) -> Result<Response, ApiError> {
    check(&identity, &id, Scope::Heartbeat)?;
    let w = st.svc.workers().report(&id, body.into()).await?;
    Ok(ok(&views::worker(&w)))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RenewBody {
    ttl: String,
}

/// `{"lease": {..}}`.
#[derive(Serialize)]
struct LeaseView<'a> {
    lease: LeaseFields<'a>,
}

#[derive(Serialize)]
struct LeaseFields<'a> {
    expires_at: String,
    generation: i64,
    holder_id: &'a str,
    resource_id: &'a str,
}

async fn renew_lease(
    st: &AppState,
    worker: &str,
    resource: &str,
    ttl: &str,
) -> Result<Response, ApiError> {
    let lease = st.svc.workers().renew_lease(worker, resource, ttl).await?;
    Ok(ok(&LeaseView {
        lease: LeaseFields {
            expires_at: format_rfc3339_go(&lease.expires_at),
            generation: lease.generation,
            holder_id: &lease.holder_id,
            resource_id: &lease.resource_id,
        },
    }))
}

async fn renew(
    State(st): State<AppState>,
    Extension(identity): Extension<WorkerIdentity>,
    Path((id, resource)): Path<(String, String)>,
    JsonBody(body): JsonBody<RenewBody>,
) -> Result<Response, ApiError> {
    check(&identity, &id, Scope::Lease)?;
    renew_lease(&st, &id, &resource, &body.ttl).await
}

async fn admin_renew(
    State(st): State<AppState>,
    Path((id, resource)): Path<(String, String)>,
    JsonBody(body): JsonBody<RenewBody>,
) -> Result<Response, ApiError> {
    renew_lease(&st, &id, &resource, &body.ttl).await
}

#[derive(Serialize)]
struct DrainView<'a> {
    status: &'static str,
    worker_id: &'a str,
}

async fn drain(State(st): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    st.svc.workers().drain(&id).await?;
    Ok(ok(&DrainView {
        status: "draining",
        worker_id: &id,
    }))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct TokenBody {
    worker_id: String,
    ttl: String,
    scopes: Vec<String>,
    audience: String,
}

#[derive(Serialize)]
struct TokenView<'a> {
    expires_at: String,
    token: &'a str,
    worker_id: &'a str,
}

async fn issue_token(
    State(st): State<AppState>,
    JsonBody(b): JsonBody<TokenBody>,
) -> Result<Response, ApiError> {
    let t = st.svc.workers().issue_token(TokenRequest {
        worker_id: b.worker_id,
        ttl: b.ttl,
        scopes: b.scopes,
        audience: b.audience,
    })?;
    Ok(ok(&TokenView {
        expires_at: format_rfc3339_go(&t.expires_at),
        token: &t.token,
        worker_id: &t.worker_id,
    }))
}
