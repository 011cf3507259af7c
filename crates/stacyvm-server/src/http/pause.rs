//! `POST /sandboxes/{id}/pause` and `/resume` (sandbox-model.md §2, docs/state.md).

use axum::extract::{Path, State};
use serde::Deserialize;
use stacyvm_types::GoDuration;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;

use super::extract::EmptyOrJson;
use super::openapi::{NotFound, PauseConflict, ResourceLimit, SandboxIdParam, Unavailable};
use super::{dto, ok, AppState, Reply, SbId, St};

pub fn routes() -> OpenApiRouter<AppState> {
    api_routes![pause; resume]
}

/// Pause a sandbox
///
/// Freezes the sandbox: its record, files and (where the provider can: mock, docker, bwrap)
/// memory and running processes are kept; its TTL clock stops. A provider that cannot pause
/// (microvm) answers 409 `NOT_SUPPORTED`. While paused, exec, files and process calls answer
/// 409 `SANDBOX_PAUSED`; `GET` of the sandbox and of its process list still work. Idempotent: a paused sandbox is answered as it is. Counts against
/// `max_paused_sandboxes` (429), not `max_sandboxes`.
#[utoipa::path(post, path = "/sandboxes/{id}/pause", operation_id = "pauseSandbox",
    tag = "sandboxes", params(SandboxIdParam),
    responses(
        (status = 200, description = "The sandbox, `state: paused`", body = dto::SandboxView),
        (status = 404, response = NotFound), (status = 409, response = PauseConflict),
        (status = 429, response = ResourceLimit), (status = 503, response = Unavailable),
    ))]
async fn pause(State(st): St, Path(id): SbId) -> Reply {
    let sb = st.svc.sandboxes().pause(&id).await?;
    Ok(ok(&dto::sandbox_with_token(&sb)))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[schema(as = ResumeRequest)]
#[serde(default)]
struct ResumeBody {
    /// The new TTL from now; empty = the TTL the sandbox had left when paused (the default
    /// TTL when none was left)
    #[schema(value_type = GoDuration)]
    ttl: String,
}

/// Resume a paused sandbox
///
/// Thaws it: processes that were running continue. `ttl` sets the new expiry (within the
/// owner's max TTL, else 429); a running sandbox is answered as it is. Resuming needs room
/// under `max_sandboxes` and the owner's limit again (429).
#[utoipa::path(post, path = "/sandboxes/{id}/resume", operation_id = "resumeSandbox",
    tag = "sandboxes", params(SandboxIdParam),
    request_body(content = ResumeBody, example = json!({"ttl": "30m"})),
    responses(
        (status = 200, description = "The sandbox, `state: running`", body = dto::SandboxView),
        (status = 404, response = NotFound), (status = 409, response = PauseConflict),
        (status = 429, response = ResourceLimit), (status = 503, response = Unavailable),
    ))]
async fn resume(
    State(st): St,
    Path(id): SbId,
    EmptyOrJson(body): EmptyOrJson<ResumeBody>,
) -> Reply {
    let sb = st.svc.sandboxes().resume(&id, &body.ttl).await?;
    Ok(ok(&dto::sandbox_with_token(&sb)))
}
