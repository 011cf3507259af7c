//! `/quotas` (also mounted under `/admin/quotas`).

use axum::extract::{Path, State};
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;

use super::extract::JsonBody;
use super::openapi::{BadRequest, NotFound, OwnerParam};
use super::views::{self, Status};
use super::{dto, ok, ok_each, AppState, Reply, St};
use crate::service::QuotaInput;

pub fn routes() -> OpenApiRouter<AppState> {
    api_routes![list; summary; get_one, put, delete; usage]
}

/// List owner quotas
#[utoipa::path(get, path = "/quotas", operation_id = "listQuotas", tag = "quotas",
    responses((status = 200, description = "OK", body = Vec<dto::QuotaView>)))]
async fn list(State(st): St) -> Reply {
    Ok(ok_each(&st.svc.quotas().list().await?, dto::quota))
}

/// Counts of configured quotas
#[utoipa::path(get, path = "/quotas/summary", operation_id = "quotaSummary", tag = "quotas",
    responses((status = 200, description = "OK", body = views::QuotaSummaryView)))]
async fn summary(State(st): St) -> Reply {
    let s = st.svc.quotas().summary().await?;
    Ok(ok(&views::quota_summary(Some(&s))))
}

/// Get an owner's quota
#[utoipa::path(get, path = "/quotas/{owner}", operation_id = "getQuota", tag = "quotas",
    params(OwnerParam),
    responses(
        (status = 200, description = "OK", body = dto::QuotaView),
        (status = 400, response = BadRequest), (status = 404, response = NotFound),
    ))]
async fn get_one(State(st): St, Path(owner): Path<String>) -> Reply {
    Ok(ok(&dto::quota(&st.svc.quotas().get(&owner).await?)))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[schema(as = QuotaInput)]
#[serde(default)]
struct QuotaBody {
    #[schema(minimum = 0)]
    max_sandboxes: i64,
    /// Whole seconds, ≥1s; `""`, `0`, `0s` = not set
    max_ttl: String,
    /// Whole seconds, ≥1s; `""`, `0`, `0s` = not set
    max_exec_timeout: String,
}

/// Create or replace an owner's quota
#[utoipa::path(put, path = "/quotas/{owner}", operation_id = "putQuota", tag = "quotas",
    params(OwnerParam), request_body = QuotaBody,
    responses((status = 200, description = "OK", body = dto::QuotaView)))]
async fn put(State(st): St, Path(owner): Path<String>, JsonBody(b): JsonBody<QuotaBody>) -> Reply {
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

/// Delete an owner's quota
#[utoipa::path(delete, path = "/quotas/{owner}", operation_id = "deleteQuota", tag = "quotas",
    params(OwnerParam),
    responses(
        (status = 200, description = "`deleted`", body = Status),
        (status = 400, response = BadRequest), (status = 404, response = NotFound),
    ))]
async fn delete(State(st): St, Path(owner): Path<String>) -> Reply {
    st.svc.quotas().delete(&owner).await?;
    Ok(ok(&Status { status: "deleted" }))
}

/// Effective limits and usage of an owner
#[utoipa::path(get, path = "/quotas/{owner}/usage", operation_id = "quotaUsage", tag = "quotas",
    params(OwnerParam),
    responses(
        (status = 200, description = "OK", body = dto::UsageView),
        (status = 400, response = BadRequest),
    ))]
async fn usage(State(st): St, Path(owner): Path<String>) -> Reply {
    Ok(ok(&dto::usage(&st.svc.quotas().usage(&owner).await?)))
}
