//! `/quotas` (also mounted under `/admin/quotas`).

use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use serde::Deserialize;
use serde_json::json;

use super::error::ApiError;
use super::extract::JsonBody;
use super::{dto, ok, AppState};
use crate::service::QuotaInput;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/quotas", get(list))
        .route("/quotas/summary", get(summary))
        .route("/quotas/{owner}", get(get_one).put(put).delete(delete))
        .route("/quotas/{owner}/usage", get(usage))
}

async fn list(State(st): State<AppState>) -> Result<Response, ApiError> {
    let v: Vec<_> = st
        .svc
        .quotas()
        .list()
        .await?
        .iter()
        .map(dto::quota)
        .collect();
    Ok(ok(&v))
}

async fn summary(State(st): State<AppState>) -> Result<Response, ApiError> {
    let s = st.svc.quotas().summary().await?;
    // Exactly these keys: the Python SDK's dataclass rejects others.
    Ok(ok(
        &json!({"total": s.total, "with_max_sandboxes": s.with_max_sandboxes,
        "with_max_ttl": s.with_max_ttl, "with_max_exec_timeout": s.with_max_exec_timeout}),
    ))
}

async fn get_one(
    State(st): State<AppState>,
    Path(owner): Path<String>,
) -> Result<Response, ApiError> {
    Ok(ok(&dto::quota(&st.svc.quotas().get(&owner).await?)))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct QuotaBody {
    max_sandboxes: i64,
    max_ttl: String,
    max_exec_timeout: String,
}

async fn put(
    State(st): State<AppState>,
    Path(owner): Path<String>,
    JsonBody(b): JsonBody<QuotaBody>,
) -> Result<Response, ApiError> {
    let q = st
        .svc
        .quotas()
        .put(
            &owner,
            QuotaInput {
                max_sandboxes: b.max_sandboxes,
                max_ttl: b.max_ttl,
                max_exec_timeout: b.max_exec_timeout,
            },
        )
        .await?;
    Ok(ok(&dto::quota(&q)))
}

async fn delete(
    State(st): State<AppState>,
    Path(owner): Path<String>,
) -> Result<Response, ApiError> {
    st.svc.quotas().delete(&owner).await?;
    Ok(ok(&json!({"status": "deleted"})))
}

async fn usage(
    State(st): State<AppState>,
    Path(owner): Path<String>,
) -> Result<Response, ApiError> {
    Ok(ok(&dto::usage(&st.svc.quotas().usage(&owner).await?)))
}
