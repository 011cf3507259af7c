//! Worker registry routes: public list/get, admin delete and heartbeat.

use axum::extract::{Path, State};
use serde::Deserialize;
use serde_json::{Map, Value};
use stacyvm_types::WorkerId;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;

use super::extract::JsonBody;
use super::openapi::{NotFound, WorkerIdParam};
use super::views::{self, Status};
use super::{ok, ok_each, AppState, Reply, St};
use crate::service::HeartbeatInput;

pub fn routes() -> OpenApiRouter<AppState> {
    api_routes![list; get_one]
}

pub fn admin_routes() -> OpenApiRouter<AppState> {
    api_routes![list; get_one, delete; admin_heartbeat]
}

/// List workers (by id)
#[utoipa::path(get, path = "/workers", operation_id = "listWorkers", tag = "workers",
    responses((status = 200, description = "OK", body = Vec<views::WorkerView>)))]
async fn list(State(st): St) -> Reply {
    Ok(ok_each(&st.svc.workers().list().await?, views::worker))
}

/// Get a worker
#[utoipa::path(get, path = "/workers/{id}", operation_id = "getWorker", tag = "workers",
    params(WorkerIdParam),
    responses(
        (status = 200, description = "OK", body = views::WorkerView),
        (status = 404, response = NotFound),
    ))]
async fn get_one(State(st): St, Path(id): Path<WorkerId>) -> Reply {
    let w = st.svc.workers().get(&id).await?;
    Ok(ok(&views::worker(&w)))
}

/// Remove a worker from placement
///
/// Deleting `local` keeps it out of placement until re-added with a heartbeat or a restart.
#[utoipa::path(delete, path = "/workers/{id}", operation_id = "deleteWorker", tag = "admin",
    params(WorkerIdParam),
    responses(
        (status = 200, description = "`deleted`", body = Status),
        (status = 404, response = NotFound),
    ))]
async fn delete(State(st): St, Path(id): Path<WorkerId>) -> Reply {
    st.svc.workers().delete(&id).await?;
    Ok(ok(&Status { status: "deleted" }))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[schema(as = HeartbeatRequest)]
#[serde(default)]
pub struct HeartbeatBody {
    hostname: String,
    #[schema(default = "online", example = "online")]
    status: String,
    providers: Option<Vec<String>>,
    capabilities: Option<Vec<String>>,
    /// Read: `max_sandboxes`, `rpc_url`, `preview_domain`; `sandboxes` (ids the worker holds)
    /// lets the control plane destroy orphans
    #[schema(value_type = Object)]
    capacity: Map<String, Value>,
}

impl From<HeartbeatBody> for HeartbeatInput {
    fn from(b: HeartbeatBody) -> Self {
        HeartbeatInput {
            hostname: b.hostname,
            status: b.status,
            providers: b.providers,
            capabilities: b.capabilities,
            capacity: b.capacity,
        }
    }
}

/// Register or refresh a worker
#[utoipa::path(post, path = "/workers/{id}/heartbeat", operation_id = "adminWorkerHeartbeat",
    tag = "admin", params(WorkerIdParam), request_body = HeartbeatBody,
    responses((status = 200, description = "OK", body = views::WorkerView)))]
async fn admin_heartbeat(
    State(st): St,
    Path(id): Path<WorkerId>,
    JsonBody(b): JsonBody<HeartbeatBody>,
) -> Reply {
    let w = st.svc.workers().heartbeat(&id, b.into()).await?;
    Ok(ok(&views::worker(&w)))
}
