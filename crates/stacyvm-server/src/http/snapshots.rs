//! Snapshots and fork (sandbox-model.md §2, docs/state.md): `POST /sandboxes/{id}/snapshots`,
//! `/snapshots`, `POST /sandboxes/{id}/fork`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Extension;
use serde::{Deserialize, Serialize};
use stacyvm_store::Snapshot;
use stacyvm_types::format_rfc3339_go;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;

use super::extract::EmptyOrJson;
use super::openapi::{
    BadRequest, NotFound, PauseConflict, ResourceLimit, SandboxIdParam, SnapshotNotFound,
};
use super::views::Status;
use super::{dto, json_response, ok, ok_each, AppState, Reply, SbId, St};
use crate::service::Caller;

pub fn routes() -> OpenApiRouter<AppState> {
    api_routes![create; list; get_one, delete; fork]
}

/// `{sid}`: a snapshot.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
struct SnapshotIdParam {
    #[param(pattern = r"^snap-[0-9a-f]{8}$")]
    #[expect(dead_code, reason = "a parameter description, never built")]
    sid: String,
}

/// A snapshot as the API shows it (fields in alphabetical order).
#[derive(Serialize, ToSchema)]
#[schema(as = Snapshot)]
struct SnapshotView<'a> {
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(pattern = r"^snap-[0-9a-f]{8}$")]
    id: &'a str,
    /// The source sandbox's image (a spawn from the snapshot uses it)
    image: &'a str,
    /// `filesystem` (files only) or `memory` (processes and memory too)
    kind: &'a str,
    name: &'a str,
    provider: &'a str,
    sandbox_id: &'a str,
    size_bytes: i64,
    /// The worker holding it (`local` = the control plane)
    worker_id: &'a str,
}

fn view(s: &Snapshot) -> SnapshotView<'_> {
    SnapshotView {
        created_at: format_rfc3339_go(&s.created_at),
        id: &s.id,
        image: &s.image,
        kind: &s.kind,
        name: &s.name,
        provider: &s.provider,
        sandbox_id: s.sandbox_id.as_str(),
        size_bytes: s.size_bytes,
        worker_id: &s.worker_id,
    }
}

#[derive(Debug, Default, Deserialize, Serialize, ToSchema)]
#[schema(as = SnapshotRequest)]
#[serde(default, deny_unknown_fields)]
struct CreateBody {
    /// Default: the snapshot's id
    name: Option<String>,
}

/// Snapshot a sandbox
///
/// Its files as they are now (`kind: filesystem`), or its memory too (`kind: memory`); the
/// sandbox keeps running. A running or paused sandbox only (409 `CONFLICT`); a provider that
/// cannot snapshot, or a remote worker too old to hold snapshots, answers 409 `NOT_SUPPORTED`.
/// The snapshot lives on the sandbox's worker, and sandboxes spawned from it run there.
#[utoipa::path(post, path = "/sandboxes/{id}/snapshots", operation_id = "snapshotSandbox",
    tag = "snapshots", params(SandboxIdParam),
    request_body(content = Option<CreateBody>, example = json!({"name": "before-upgrade"})),
    responses(
        (status = 201, description = "Created", body = SnapshotView),
        (status = 400, response = BadRequest), (status = 404, response = NotFound),
        (status = 409, response = PauseConflict),
    ))]
async fn create(State(st): St, Path(id): SbId, EmptyOrJson(b): EmptyOrJson<CreateBody>) -> Reply {
    let s = st.svc.snapshots().create(&id, b.name).await?;
    Ok(json_response(StatusCode::CREATED, &view(&s)))
}

/// List snapshots (newest first)
#[utoipa::path(get, path = "/snapshots", operation_id = "listSnapshots", tag = "snapshots",
    responses((status = 200, description = "OK", body = Vec<SnapshotView>)))]
async fn list(State(st): St) -> Reply {
    Ok(ok_each(&st.svc.snapshots().list().await?, view))
}

/// Get a snapshot
#[utoipa::path(get, path = "/snapshots/{sid}", operation_id = "getSnapshot",
    tag = "snapshots", params(SnapshotIdParam),
    responses(
        (status = 200, description = "OK", body = SnapshotView),
        (status = 404, response = SnapshotNotFound),
    ))]
async fn get_one(State(st): St, Path(sid): Path<String>) -> Reply {
    Ok(ok(&view(&st.svc.snapshots().get(&sid).await?)))
}

/// Delete a snapshot
///
/// Sandboxes made from it keep running.
#[utoipa::path(delete, path = "/snapshots/{sid}", operation_id = "deleteSnapshot",
    tag = "snapshots", params(SnapshotIdParam),
    responses(
        (status = 200, description = "`deleted`", body = Status),
        (status = 404, response = SnapshotNotFound),
    ))]
async fn delete(State(st): St, Path(sid): Path<String>) -> Reply {
    st.svc.snapshots().delete(&sid).await?;
    Ok(ok(&Status { status: "deleted" }))
}

#[derive(Debug, Default, Deserialize, Serialize, ToSchema)]
#[schema(as = ForkRequest)]
#[serde(default, deny_unknown_fields)]
struct ForkBody {
    /// How many copies (1-16, default 1)
    count: Option<i64>,
}

/// Fork a sandbox
///
/// Independent copies of the sandbox as it is now: a snapshot, then `count` sandboxes from
/// it with the source's resources, owner, metadata and lifecycle (each admitted like a
/// spawn: 429). All or nothing. Errors as for a snapshot.
#[utoipa::path(post, path = "/sandboxes/{id}/fork", operation_id = "forkSandbox",
    tag = "snapshots", params(SandboxIdParam),
    request_body(content = Option<ForkBody>, example = json!({"count": 2})),
    responses(
        (status = 201, description = "The copies", body = Vec<dto::SandboxView>),
        (status = 400, response = BadRequest), (status = 404, response = NotFound),
        (status = 409, response = PauseConflict), (status = 429, response = ResourceLimit),
    ))]
async fn fork(
    State(st): St,
    Extension(caller): Extension<Caller>,
    Path(id): SbId,
    EmptyOrJson(b): EmptyOrJson<ForkBody>,
) -> Reply {
    let made = st.svc.snapshots().fork(&id, b.count, &caller).await?;
    Ok(json_response(
        StatusCode::CREATED,
        &made.iter().map(dto::sandbox_with_token).collect::<Vec<_>>(),
    ))
}
