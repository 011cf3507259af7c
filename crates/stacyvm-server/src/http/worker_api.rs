//! Routes workers call (`/api/v1/worker/{id}/...`, worker credentials, no API key) and the
//! admin routes that act on workers (drain, token issuing, lease renew).

use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use stacyvm_auth::{Scope, Scopes};
use stacyvm_protocol::capacity;
use stacyvm_types::{format_rfc3339_go, parse_go_duration};

use super::error::ApiError;
use super::extract::JsonBody;
use super::workers::HeartbeatBody;
use super::{ok, AppState};
use crate::error::ServiceError;

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

fn now_unix() -> i64 {
    chrono::Utc::now().timestamp()
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
    let Some(auth) = st.svc.worker_auth.clone().filter(|a| a.configured()) else {
        return ApiError::plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "UNAVAILABLE",
            "worker token is not configured",
        )
        .into_response();
    };
    let id = req
        .headers()
        .get("x-worker-id")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .unwrap_or("")
        .to_string();
    let denied = || {
        ApiError::plain(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "invalid or missing worker credentials",
        )
        .into_response()
    };
    let Some(token) = token_from(req.headers()) else {
        return denied();
    };
    if id.is_empty() {
        return denied();
    }
    match auth.authenticate(&id, &token, now_unix()) {
        Ok(scopes) => {
            req.extensions_mut().insert(WorkerIdentity { id, scopes });
            next.run(req).await
        }
        Err(e) => {
            tracing::warn!(worker = %id, error = %e, "worker credential rejected");
            denied()
        }
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
    let held: Option<Vec<String>> = body.held_sandboxes();
    let w = st.svc.heartbeat(&id, body.into()).await?;
    if let Some(held) = held {
        // Runtimes the worker holds that the store does not assign to it are destroyed there.
        let svc = st.svc.clone();
        let wid = id.clone();
        st.svc
            .tasks
            .spawn(async move { crate::reconcile::destroy_orphans(&svc, &wid, held).await });
    }
    Ok(ok(&super::views::worker(&w)))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RenewBody {
    ttl: String,
}

async fn renew_lease(
    st: &AppState,
    worker: &str,
    resource: &str,
    ttl: &str,
) -> Result<Response, ApiError> {
    let ttl = parse_go_duration(ttl.trim())
        .ok()
        .and_then(|d| d.to_std())
        .filter(|d| !d.is_zero())
        .ok_or_else(|| ApiError::bad_request("invalid input: ttl must be a positive duration"))?;
    let lease = st
        .svc
        .store
        .renew_lease(resource, worker, ttl)
        .await
        .map_err(|e| {
            if matches!(
                e,
                stacyvm_store::StoreError::Conflict(_) | stacyvm_store::StoreError::NotFound { .. }
            ) {
                ApiError::from(ServiceError::Conflict(
                    "lease is not held by worker or has expired".into(),
                ))
            } else {
                ApiError::from(ServiceError::from(e))
            }
        })?;
    Ok(ok(&json!({"lease": {
        "resource_id": lease.resource_id, "holder_id": lease.holder_id,
        "generation": lease.generation, "expires_at": format_rfc3339_go(&lease.expires_at)}})))
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

async fn drain(State(st): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    st.svc.drain_worker(&id).await?;
    Ok(ok(&json!({"status": "draining", "worker_id": id})))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct TokenBody {
    worker_id: String,
    ttl: String,
    scopes: Vec<String>,
    audience: String,
}

async fn issue_token(
    State(st): State<AppState>,
    JsonBody(b): JsonBody<TokenBody>,
) -> Result<Response, ApiError> {
    let unavailable =
        |msg: &str| ApiError::plain(StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE", msg);
    // The authenticator's key is current (a key file is re-read when rotated).
    let current = match st.svc.worker_auth.as_ref().map(|a| a.signing_key()) {
        Some(Ok(k)) => k,
        Some(Err(e)) => {
            tracing::error!(error = %e, "worker signing key unreadable");
            return Err(unavailable("worker signing key is unavailable"));
        }
        None => None,
    };
    let Some(key) = current.or_else(|| st.svc.worker_signing_key.clone()) else {
        return Err(unavailable("worker signing key is not configured"));
    };
    let worker_id = b.worker_id.trim();
    if worker_id.is_empty() {
        return Err(ApiError::bad_request(
            "invalid input: worker_id is required",
        ));
    }
    let ttl_text = if b.ttl.trim().is_empty() {
        "5m"
    } else {
        b.ttl.trim()
    };
    let ttl = parse_go_duration(ttl_text)
        .ok()
        .and_then(|d| d.to_std())
        .filter(|d| !d.is_zero() && d.as_secs() <= 900)
        .ok_or_else(|| {
            ApiError::bad_request("invalid input: ttl must be a positive duration of at most 15m")
        })?;
    // Parsed here, at the edge: an unknown scope is refused, not silently dropped.
    let scopes = b
        .scopes
        .iter()
        .map(|s| s.parse::<Scope>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            ApiError::bad_request(format!(
                "invalid input: {e}; known scopes: {}",
                Scope::known_list()
            ))
        })?;
    let audience = match b.audience.trim() {
        "" => stacyvm_auth::AUD_CONTROL_PLANE,
        a if a == stacyvm_auth::AUD_CONTROL_PLANE => stacyvm_auth::AUD_CONTROL_PLANE,
        a if a == stacyvm_auth::AUD_RPC => stacyvm_auth::AUD_RPC,
        _ => {
            return Err(ApiError::bad_request(
                "invalid input: audience must be worker:control-plane or worker:rpc",
            ))
        }
    };
    let (token, claims) = stacyvm_auth::mint(&key, worker_id, audience, ttl, &scopes, now_unix())
        .map_err(|e| ApiError::bad_request(format!("invalid input: {e}")))?;
    let expires = chrono::DateTime::from_timestamp(claims.exp, 0).unwrap_or_default();
    Ok(ok(
        &json!({"token": token, "worker_id": worker_id, "expires_at": format_rfc3339_go(&expires)}),
    ))
}

impl HeartbeatBody {
    /// Sandbox ids the worker says it holds (`capacity.sandboxes`), when it reports them.
    pub fn held_sandboxes(&self) -> Option<Vec<String>> {
        let list = self.capacity_value(capacity::SANDBOXES)?.as_array()?;
        Some(
            list.iter()
                .filter_map(|v| match v {
                    Value::String(s) => Some(s.clone()),
                    Value::Object(o) => o
                        .get("sandbox_id")
                        .and_then(Value::as_str)
                        .map(str::to_string),
                    _ => None,
                })
                .collect(),
        )
    }
}
