//! Routes workers call (`/api/v1/worker/{id}/...`, worker credentials, no API key) and the
//! admin routes that act on workers (drain, token issuing, lease renew).

use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use serde::{Deserialize, Serialize};
use stacyvm_auth::{Scope, Scopes};
use stacyvm_types::{format_rfc3339_go, GoDuration, SandboxId, WorkerId};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;

use super::error::ApiError;
use super::extract::JsonBody;
use super::openapi::{Conflict, LeaseParams, NotFound, Unavailable, WorkerIdParam};
use super::workers::HeartbeatBody;
use super::{ok, views, AppState, Reply, St};
use crate::service::TokenRequest;

/// Scopes the authenticated worker holds, and its id.
#[derive(Clone)]
pub struct WorkerIdentity {
    id: WorkerId,
    scopes: Scopes,
}

pub fn routes() -> OpenApiRouter<AppState> {
    api_routes![heartbeat; renew]
}

pub fn admin_routes() -> OpenApiRouter<AppState> {
    api_routes![admin_renew; drain; issue_token]
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
pub async fn authenticate(State(st): St, mut req: Request, next: Next) -> Response {
    let id: WorkerId = req
        .headers()
        .get("x-worker-id")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .unwrap_or("")
        .into();
    let token = token_from(req.headers()).unwrap_or_default();
    match st.svc.workers().authenticate(&id, &token) {
        Ok(scopes) => {
            req.extensions_mut().insert(WorkerIdentity { id, scopes });
            next.run(req).await
        }
        Err(e) => ApiError::from(e).into_response(),
    }
}

fn check(identity: &WorkerIdentity, path_id: &WorkerId, scope: Scope) -> Result<(), ApiError> {
    if identity.id != *path_id {
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

/// Worker heartbeat
///
/// Worker credentials only (`X-Worker-ID` + `X-Worker-Token` or `Authorization: Bearer`); API
/// keys are not accepted. `X-Worker-ID` must equal `{id}` (else 403 with code `UNAUTHORIZED`);
/// scope `worker:heartbeat`.
#[utoipa::path(post, path = "/worker/{id}/heartbeat", operation_id = "workerHeartbeat",
    tag = "worker", params(WorkerIdParam),
    request_body(content = HeartbeatBody, example = json!({"hostname": "w1", "status": "online",
        "providers": ["docker"],
        "capacity": {"max_sandboxes": 10, "rpc_url": "http://10.0.0.5:7424"}})),
    responses((status = 200, description = "OK", body = views::WorkerView)))]
async fn heartbeat(
    State(st): St,
    Extension(identity): Extension<WorkerIdentity>,
    Path(id): Path<WorkerId>,
    JsonBody(body): JsonBody<HeartbeatBody>,
) -> Reply {
    check(&identity, &id, Scope::Heartbeat)?;
    let w = st.svc.workers().report(&id, body.into()).await?;
    Ok(ok(&views::worker(&w)))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[schema(as = LeaseRenewRequest)]
#[serde(default)]
struct RenewBody {
    /// The new lease length
    #[schema(value_type = GoDuration)]
    ttl: String,
}

/// `{"lease": {..}}`.
#[derive(Serialize, ToSchema)]
#[schema(as = LeaseRenewal)]
struct LeaseView<'a> {
    lease: LeaseFields<'a>,
}

#[derive(Serialize, ToSchema)]
#[schema(as = LeaseToken)]
struct LeaseFields<'a> {
    #[schema(format = DateTime)]
    expires_at: String,
    generation: i64,
    holder_id: &'a str,
    resource_id: &'a str,
}

async fn renew_lease(st: &AppState, worker: &WorkerId, resource: &SandboxId, ttl: &str) -> Reply {
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

/// Renew a lease held by this worker
///
/// Worker credentials as for the heartbeat; scope `worker:lease`.
#[utoipa::path(post, path = "/worker/{id}/leases/{resource}/renew",
    operation_id = "workerRenewLease", tag = "worker", params(LeaseParams),
    request_body = RenewBody,
    responses(
        (status = 200, description = "OK", body = LeaseView),
        (status = 409, response = Conflict),
    ))]
async fn renew(
    State(st): St,
    Extension(identity): Extension<WorkerIdentity>,
    Path((id, resource)): Path<(WorkerId, SandboxId)>,
    JsonBody(body): JsonBody<RenewBody>,
) -> Reply {
    check(&identity, &id, Scope::Lease)?;
    renew_lease(&st, &id, &resource, &body.ttl).await
}

/// Renew a lease on a worker's behalf
#[utoipa::path(post, path = "/workers/{id}/leases/{resource}/renew",
    operation_id = "adminRenewLease", tag = "admin", params(LeaseParams),
    request_body = RenewBody,
    responses(
        (status = 200, description = "OK", body = LeaseView),
        (status = 409, response = Conflict),
    ))]
async fn admin_renew(
    State(st): St,
    Path((id, resource)): Path<(WorkerId, SandboxId)>,
    JsonBody(body): JsonBody<RenewBody>,
) -> Reply {
    renew_lease(&st, &id, &resource, &body.ttl).await
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct DrainView<'a> {
    /// `draining`
    status: &'static str,
    worker_id: &'a str,
}

/// Drain a worker (sends worker.shutdown)
///
/// The worker stops accepting spawns and reports `status: draining`; placement skips it.
#[utoipa::path(post, path = "/workers/{id}/drain", operation_id = "drainWorker", tag = "admin",
    params(WorkerIdParam),
    responses(
        (status = 200, description = "OK", body = inline(DrainView)),
        (status = 400, response = super::openapi::BadRequest), (status = 404, response = NotFound),
        (status = 409, response = Conflict), (status = 503, response = Unavailable),
    ))]
async fn drain(State(st): St, Path(id): Path<WorkerId>) -> Reply {
    st.svc.workers().drain(&id).await?;
    Ok(ok(&DrainView {
        status: "draining",
        worker_id: &id,
    }))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[schema(as = WorkerTokenRequest)]
#[serde(default)]
struct TokenBody {
    #[schema(required = true)]
    worker_id: String,
    /// Default 5m, at most 15m
    #[schema(value_type = GoDuration)]
    ttl: String,
    /// `worker:*` scopes
    scopes: Vec<String>,
    #[schema(default = "worker:control-plane", schema_with = super::openapi::token_audiences)]
    audience: String,
}

#[derive(Serialize, ToSchema)]
#[schema(as = WorkerTokenIssued)]
struct TokenView<'a> {
    #[schema(format = DateTime)]
    expires_at: String,
    #[schema(example = "stacyvm-worker-v1.<payload>.<sig>")]
    token: &'a str,
    worker_id: &'a str,
}

/// Mint a signed worker token
///
/// Needs `auth.worker_signing_key` (else 503 `UNAVAILABLE`). Answers 200, as the original does.
#[utoipa::path(post, path = "/worker-tokens", operation_id = "issueWorkerToken", tag = "admin",
    request_body = TokenBody,
    responses(
        (status = 200, description = "OK", body = TokenView),
        (status = 503, response = Unavailable),
    ))]
async fn issue_token(State(st): St, JsonBody(b): JsonBody<TokenBody>) -> Reply {
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
