//! `/sandboxes`: spawn, admission, list, prune, get, destroy, extend, logs, stats.

use std::collections::{BTreeMap, HashMap};

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Extension, Router};
use serde::Deserialize;
use serde_json::json;

use super::error::ApiError;
use super::extract::JsonBody;
use super::views::{self, Status};
use super::{dto, json_response, ok, AppState};
use crate::service::{Caller, SpawnParams};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/sandboxes", post(spawn).get(list).delete(prune))
        .route("/sandboxes/admission", post(admission))
        .route("/sandboxes/{id}", get(get_one).delete(destroy))
        .route("/sandboxes/{id}/extend", post(extend))
        .route("/sandboxes/{id}/logs", get(logs))
        .route("/sandboxes/{id}/stats", get(stats))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct SpawnBody {
    image: String,
    provider: String,
    memory_mb: i64,
    vcpus: i64,
    ttl: String,
    owner_id: String,
    template: String,
    metadata: BTreeMap<String, String>,
}

impl From<SpawnBody> for SpawnParams {
    fn from(b: SpawnBody) -> Self {
        SpawnParams {
            image: b.image,
            provider: b.provider,
            memory_mb: b.memory_mb,
            vcpus: b.vcpus,
            ttl: b.ttl,
            owner_id: b.owner_id,
            template: b.template,
            metadata: b.metadata,
        }
    }
}

async fn spawn(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    JsonBody(body): JsonBody<SpawnBody>,
) -> Result<Response, ApiError> {
    let sb = st.svc.sandboxes().spawn(body.into(), &caller).await?;
    Ok(json_response(StatusCode::CREATED, &dto::sandbox(&sb)))
}

async fn admission(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    JsonBody(body): JsonBody<SpawnBody>,
) -> Result<Response, ApiError> {
    let params: SpawnParams = body.into();
    let d = st.svc.sandboxes().check_admission(&params, &caller).await?;
    Ok(ok(&views::admission(&d)))
}

async fn list(State(st): State<AppState>) -> Result<Response, ApiError> {
    let all = st.svc.sandboxes().list().await?;
    let v: Vec<_> = all.iter().map(dto::sandbox).collect();
    Ok(ok(&v))
}

async fn prune(State(st): State<AppState>) -> Result<Response, ApiError> {
    let n = st.svc.sandboxes().prune().await?;
    Ok(ok(&json!({"pruned": n})))
}

async fn get_one(State(st): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let sb = st.svc.sandboxes().get_refreshed(&id).await?;
    Ok(ok(&dto::sandbox(&sb)))
}

async fn destroy(State(st): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    st.svc.sandboxes().destroy(&id).await?;
    Ok(ok(&Status {
        status: "destroyed",
    }))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ExtendBody {
    ttl: String,
}

async fn extend(
    State(st): State<AppState>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<ExtendBody>,
) -> Result<Response, ApiError> {
    let sb = st.svc.sandboxes().extend(&id, &body.ttl).await?;
    Ok(ok(&dto::sandbox(&sb)))
}

async fn logs(
    State(st): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let lines = q
        .get("lines")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or(100)
        .min(100_000);
    let v = st.svc.sandboxes().logs(&id, lines).await?;
    Ok(ok(&v))
}

async fn stats(State(st): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    Ok(ok(&match st.svc.sandboxes().stats(&id).await? {
        None => json!({"supported": false}),
        Some(s) => json!({"supported": true, "cpu_pct": s.cpu_pct, "mem_bytes": s.mem_bytes,
            "mem_limit_bytes": s.mem_limit_bytes}),
    }))
}
