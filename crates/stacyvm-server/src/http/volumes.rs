//! `/volumes` (sandbox-model.md §2, docs/state.md).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use stacyvm_types::format_rfc3339_go;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;

use super::extract::JsonBody;
use super::openapi::{BadRequest, NotFound, VolumeConflict, VolumeInUse, VolumeNameParam};
use super::views::Status;
use super::{json_response, ok, ok_each, AppState, Reply, St};
use crate::service::{VolumeInfo, VolumeParams};

pub fn routes() -> OpenApiRouter<AppState> {
    api_routes![create, list; get_one, delete]
}

/// A volume as the API shows it (fields in alphabetical order).
#[derive(Serialize, ToSchema)]
#[schema(as = Volume)]
pub struct VolumeView<'a> {
    #[schema(format = DateTime)]
    created_at: String,
    /// The sandboxes, not destroyed, that mount it
    in_use_by: Vec<&'a str>,
    name: &'a str,
    provider: &'a str,
    /// As asked (0 = the backend's default); not enforced by the docker and mock backends
    size_mb: i64,
    /// The worker holding its data (`local` = the control plane)
    worker_id: &'a str,
}

fn view(v: &VolumeInfo) -> VolumeView<'_> {
    VolumeView {
        created_at: format_rfc3339_go(&v.volume.created_at),
        in_use_by: v.in_use_by.iter().map(|s| s.as_str()).collect(),
        name: &v.volume.name,
        provider: &v.volume.provider,
        size_mb: v.volume.size_mb,
        worker_id: &v.volume.worker_id,
    }
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[schema(as = VolumeRequest)]
#[serde(default, deny_unknown_fields)]
struct CreateBody {
    /// 1-64 letters, digits, `-`, `_` or `.`, starting with a letter or digit
    name: String,
    /// 0 = the backend's default
    #[schema(minimum = 0)]
    size_mb: i64,
    /// The provider holding it; empty = the default provider
    provider: String,
    /// The worker to hold it (`local` = the control plane); empty = where a sandbox of the
    /// provider would be placed now (`local` whenever it can take one). Sandboxes that mount
    /// it run on that worker
    worker_id: String,
}

/// Create a volume
///
/// A named disk that outlives the sandboxes that mount it (`POST /sandboxes` with
/// `volumes`), held by one worker (`worker_id`), where those sandboxes then run. A provider
/// that cannot keep volumes answers 409 `NOT_SUPPORTED`; a worker that cannot take it now,
/// 409 `WORKER_UNAVAILABLE`.
#[utoipa::path(post, path = "/volumes", operation_id = "createVolume", tag = "volumes",
    request_body(content = CreateBody, example = json!({"name": "data", "size_mb": 1024})),
    responses(
        (status = 201, description = "Created", body = VolumeView),
        (status = 400, response = BadRequest), (status = 404, response = NotFound),
        (status = 409, response = VolumeConflict),
    ))]
async fn create(State(st): St, JsonBody(b): JsonBody<CreateBody>) -> Reply {
    let v = st
        .svc
        .volumes()
        .create(VolumeParams {
            name: b.name,
            size_mb: b.size_mb,
            provider: b.provider,
            worker_id: b.worker_id,
        })
        .await?;
    Ok(json_response(StatusCode::CREATED, &view(&v)))
}

/// List volumes (by name)
#[utoipa::path(get, path = "/volumes", operation_id = "listVolumes", tag = "volumes",
    responses((status = 200, description = "OK", body = Vec<VolumeView>)))]
async fn list(State(st): St) -> Reply {
    Ok(ok_each(&st.svc.volumes().list().await?, view))
}

/// Get a volume
#[utoipa::path(get, path = "/volumes/{name}", operation_id = "getVolume", tag = "volumes",
    params(VolumeNameParam),
    responses(
        (status = 200, description = "OK", body = VolumeView),
        (status = 404, response = NotFound),
    ))]
async fn get_one(State(st): St, Path(name): Path<String>) -> Reply {
    Ok(ok(&view(&st.svc.volumes().get(&name).await?)))
}

/// Delete a volume and its data
///
/// Refused with 409 `VOLUME_IN_USE` while a sandbox that is not destroyed mounts it.
#[utoipa::path(delete, path = "/volumes/{name}", operation_id = "deleteVolume",
    tag = "volumes", params(VolumeNameParam),
    responses(
        (status = 200, description = "`deleted`", body = Status),
        (status = 404, response = NotFound), (status = 409, response = VolumeInUse),
    ))]
async fn delete(State(st): St, Path(name): Path<String>) -> Reply {
    st.svc.volumes().delete(&name).await?;
    Ok(ok(&Status { status: "deleted" }))
}
