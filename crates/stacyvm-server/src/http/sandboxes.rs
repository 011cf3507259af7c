//! `/sandboxes`: spawn, admission, list, prune, get, destroy, extend, logs, stats.

use std::collections::{BTreeMap, HashMap};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::Extension;
use serde::{Deserialize, Serialize};
use stacyvm_types::GoDuration;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;

use super::error::ApiError;
use super::extract::JsonBody;
use super::openapi::{
    Conflict, Forbidden, NotFound, OwnerIdString, ResourceLimit, SandboxIdParam, SpawnConflict,
    Unavailable, UserIdHeader,
};
use super::views::{self, Status};
use super::{dto, json_response, ok, AppState, Reply, SbId, St};
use crate::service::{Caller, DestroyOutcome, MountParams, PageCursor, SpawnParams, MAX_PAGE};

pub fn routes() -> OpenApiRouter<AppState> {
    api_routes![spawn, list, prune; admission; get_one, destroy; extend; logs; stats]
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[schema(as = SpawnRequest)]
#[serde(default)]
pub struct SpawnBody {
    #[schema(default = "alpine:latest")]
    image: String,
    /// Default provider when empty
    provider: String,
    /// 0 = default (1024)
    #[schema(minimum = 0)]
    memory_mb: i64,
    /// 0 = default (1)
    #[schema(minimum = 0)]
    vcpus: i64,
    /// Empty = default (30m); `0s` expires at once
    #[schema(value_type = GoDuration)]
    ttl: String,
    #[schema(value_type = OwnerIdString)]
    owner_id: String,
    template: String,
    metadata: BTreeMap<String, String>,
    /// What the TTL (and `idle_timeout`) does: `destroy` (default) or `pause` (docs/state.md)
    #[schema(schema_with = super::openapi::on_expire_values)]
    on_expire: String,
    /// Pause (or destroy, per `on_expire`) after this long with no running process, exec,
    /// file or preview traffic; empty or `0s` = never
    #[schema(value_type = GoDuration)]
    idle_timeout: String,
    /// Its preview URLs need no token: anyone who can reach the control plane can open them
    /// (docs/preview.md). Default `false`: a preview request must carry the sandbox's
    /// `preview_token`
    public_preview: bool,
    /// Volumes to mount (`POST /volumes` makes them; docs/state.md)
    volumes: Vec<VolumeMountBody>,
    /// Start from this snapshot's files; `image` and `provider` may then be omitted (given,
    /// they must be the snapshot's: 400). Unknown: 404 `SNAPSHOT_NOT_FOUND`
    #[schema(pattern = r"^snap-[0-9a-f]{8}$")]
    snapshot: String,
}

/// One volume of a spawn.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[schema(as = VolumeMount)]
#[serde(default, deny_unknown_fields)]
struct VolumeMountBody {
    /// The volume's name
    name: String,
    /// Absolute path inside the sandbox; not `/`, a system directory (`/proc`, `/sys`,
    /// `/dev`, `/etc`, `/bin`, `/usr`, `/lib`, `/sbin`, `/run`, ...) or below one, nor
    /// `/workspace` or `/tmp` themselves (mount below them)
    mount_path: String,
    /// Mounted read-only (several sandboxes may; only one at a time read-write)
    read_only: bool,
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
            on_expire: b.on_expire,
            idle_timeout: b.idle_timeout,
            public_preview: b.public_preview,
            volumes: b
                .volumes
                .into_iter()
                .map(|v| MountParams {
                    name: v.name,
                    mount_path: v.mount_path,
                    read_only: v.read_only,
                })
                .collect(),
            snapshot: b.snapshot,
        }
    }
}

/// Spawn a sandbox
///
/// Admission runs first: global `max_sandboxes`, per-owner limits (owner = `X-User-ID`, else
/// body `owner_id`) and max TTL. Denied → 429 `RESOURCE_LIMIT`, or, with `spawn_overflow:
/// queue`, the request waits up to `spawn_queue_timeout` for capacity. Unknown provider → 404.
/// Invalid `ttl`, `memory_mb`, `vcpus`, `owner_id`, image, `on_expire` or `idle_timeout` → 400.
/// `volumes`: an unknown volume → 404; a mount path that is not absolute and clean, or over
/// a system directory → 400; a volume another live sandbox mounts read-write, mounted
/// read-write → 409 `CONFLICT`; a provider without volumes → 409 `NOT_SUPPORTED`; a sandbox
/// placed away from the worker holding its volumes → 409 `WORKER_UNAVAILABLE`.
#[utoipa::path(post, path = "/sandboxes", operation_id = "spawnSandbox", tag = "sandboxes",
    params(UserIdHeader),
    request_body(content = SpawnBody,
        example = json!({"image": "alpine:latest", "ttl": "30m", "memory_mb": 512})),
    responses(
        (status = 201, description = "Created", body = dto::SandboxView),
        (status = 403, response = Forbidden), (status = 404, response = NotFound),
        (status = 409, response = SpawnConflict),
        (status = 429, response = ResourceLimit), (status = 503, response = Unavailable),
    ))]
async fn spawn(
    State(st): St,
    Extension(caller): Extension<Caller>,
    JsonBody(body): JsonBody<SpawnBody>,
) -> Reply {
    let sb = st.svc.sandboxes().spawn(body.into(), &caller).await?;
    Ok(json_response(
        StatusCode::CREATED,
        &dto::sandbox_with_token(&sb),
    ))
}

/// Would a spawn be admitted now?
///
/// Runs the spawn's admission checks without spawning; the same body as a spawn.
#[utoipa::path(post, path = "/sandboxes/admission", operation_id = "spawnAdmission",
    tag = "sandboxes", params(UserIdHeader), request_body = SpawnBody,
    responses(
        (status = 200, description = "OK", body = views::AdmissionView),
        (status = 404, response = NotFound),
    ))]
async fn admission(
    State(st): St,
    Extension(caller): Extension<Caller>,
    JsonBody(body): JsonBody<SpawnBody>,
) -> Reply {
    let params: SpawnParams = body.into();
    let d = st.svc.sandboxes().check_admission(&params, &caller).await?;
    Ok(ok(&views::admission(&d)))
}

/// List live sandboxes (newest first)
///
/// Without `limit` or `cursor`, every live sandbox in one array. With them, one page of at
/// most `limit` (default 1000 with only a cursor): the answer is still an array, and
/// `X-Next-Cursor` carries the `cursor` of the next page (absent on the last one). Pages are
/// ordered by creation time then id, both descending, so sandboxes created or destroyed
/// between two calls neither shift nor repeat the others.
#[utoipa::path(get, path = "/sandboxes", operation_id = "listSandboxes", tag = "sandboxes",
    params(
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 1000,
            description = "Page size; pages the list when given"),
        ("cursor" = Option<String>, Query,
            description = "Where the page starts: the previous page's `X-Next-Cursor` (opaque)"),
    ),
    responses(
        (status = 200, description = "OK", body = Vec<dto::SandboxView>, headers(
            ("X-Next-Cursor" = String,
                description = "Paged calls only: the next page's `cursor`; absent on the last page"),
            ("X-Total-Count" = i64,
                description = "Paged calls only: live sandboxes in the whole list"),
        )),
        (status = 400, response = super::openapi::BadRequest),
    ))]
async fn list(State(st): St, Query(q): Query<HashMap<String, String>>) -> Reply {
    let limit = q.get("limit").filter(|s| !s.is_empty());
    let cursor = q.get("cursor").filter(|s| !s.is_empty());
    if limit.is_none() && cursor.is_none() {
        let all = st.svc.sandboxes().list().await?;
        let v: Vec<_> = all.iter().map(dto::sandbox).collect();
        return Ok(ok(&v));
    }
    let limit = match limit {
        None => MAX_PAGE,
        Some(l) => l.parse::<usize>().map_err(|_| {
            ApiError::bad_request(format!(
                "invalid input: limit must be between 1 and {MAX_PAGE}"
            ))
        })?,
    };
    let cursor = cursor.map(|c| c.parse::<PageCursor>()).transpose()?;
    let page = st.svc.sandboxes().list_page(limit, cursor.as_ref()).await?;
    let v: Vec<_> = page.items.iter().map(dto::sandbox).collect();
    let mut resp = ok(&v);
    let h = resp.headers_mut();
    h.insert(TOTAL_COUNT, HeaderValue::from(page.total));
    if let Some(next) = page.next {
        // The cursor is digits, a dot and an id: always a valid header value.
        if let Ok(v) = HeaderValue::from_str(&next.to_string()) {
            h.insert(NEXT_CURSOR, v);
        }
    }
    Ok(resp)
}

const NEXT_CURSOR: HeaderName = HeaderName::from_static("x-next-cursor");
const TOTAL_COUNT: HeaderName = HeaderName::from_static("x-total-count");

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct Pruned {
    pruned: usize,
}

/// Destroy every sandbox past its expiry
#[utoipa::path(delete, path = "/sandboxes", operation_id = "pruneSandboxes", tag = "sandboxes",
    responses((status = 200, description = "OK", body = inline(Pruned))))]
async fn prune(State(st): St) -> Reply {
    let pruned = st.svc.sandboxes().prune().await?;
    Ok(ok(&Pruned { pruned }))
}

/// Get a sandbox
///
/// Remote sandboxes are refreshed from their worker first.
#[utoipa::path(get, path = "/sandboxes/{id}", operation_id = "getSandbox", tag = "sandboxes",
    params(SandboxIdParam),
    responses(
        (status = 200, description = "OK", body = dto::SandboxView),
        (status = 404, response = NotFound),
    ))]
async fn get_one(State(st): St, Path(id): SbId) -> Reply {
    let sb = st.svc.sandboxes().get_refreshed(&id).await?;
    Ok(ok(&dto::sandbox_with_token(&sb)))
}

/// Destroy a sandbox
///
/// Idempotent for an already destroyed sandbox (200 again); an id that never existed is 404.
#[utoipa::path(delete, path = "/sandboxes/{id}", operation_id = "destroySandbox",
    tag = "sandboxes", params(SandboxIdParam),
    responses(
        (status = 200, description = "`destroyed`", body = Status),
        (status = 202, description = "The owning worker is unreachable: `destroying`, finished when it returns; no longer counted against limits", body = Deferred),
        (status = 404, response = NotFound), (status = 409, response = Conflict),
        (status = 503, response = Unavailable),
    ))]
async fn destroy(State(st): St, Path(id): SbId) -> Reply {
    match st.svc.sandboxes().destroy(&id).await? {
        DestroyOutcome::Destroyed => Ok(ok(&Status {
            status: "destroyed",
        })),
        // The owner is unreachable: finished by reconciliation when it returns.
        DestroyOutcome::Deferred => Ok(super::json_response(
            StatusCode::ACCEPTED,
            &Deferred {
                id: id.as_str(),
                status: "destroying",
                state: "destroying",
            },
        )),
    }
}

/// A destroy that waits for its worker.
#[derive(Serialize, ToSchema)]
#[schema(as = DestroyDeferred)]
struct Deferred<'a> {
    id: &'a str,
    /// `destroying`
    status: &'static str,
    /// `destroying`
    state: &'static str,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[schema(as = ExtendRequest)]
#[serde(default)]
struct ExtendBody {
    /// The new expiry is now + `ttl`
    #[schema(value_type = GoDuration)]
    ttl: String,
}

/// Set expiry to now + ttl
///
/// `ttl` must be a positive Go duration within the owner's max TTL (else 429).
#[utoipa::path(post, path = "/sandboxes/{id}/extend", operation_id = "extendSandbox",
    tag = "sandboxes", params(SandboxIdParam), request_body = ExtendBody,
    responses(
        (status = 200, description = "OK", body = dto::SandboxView),
        (status = 404, response = NotFound), (status = 429, response = ResourceLimit),
    ))]

async fn extend(State(st): St, Path(id): SbId, JsonBody(body): JsonBody<ExtendBody>) -> Reply {
    let sb = st.svc.sandboxes().extend(&id, &body.ttl).await?;
    Ok(ok(&dto::sandbox_with_token(&sb)))
}

/// Console log lines
#[utoipa::path(get, path = "/sandboxes/{id}/logs", operation_id = "sandboxLogs",
    tag = "sandboxes",
    params(SandboxIdParam,
        ("lines" = Option<i64>, Query, minimum = 1,
            description = "Last N lines (default 100); invalid or ≤0 means 100.")),
    responses(
        (status = 200, description = "OK", body = Vec<String>),
        (status = 404, response = NotFound),
    ))]
async fn logs(State(st): St, Path(id): SbId, Query(q): Query<HashMap<String, String>>) -> Reply {
    let lines = q
        .get("lines")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or(100)
        .min(100_000);
    let v = st.svc.sandboxes().logs(&id, lines).await?;
    Ok(ok(&v))
}

/// Resource use of a sandbox; only `supported` when the provider cannot tell.
#[derive(Serialize, ToSchema)]
#[schema(as = SandboxStats)]
struct StatsView {
    #[serde(skip_serializing_if = "Option::is_none")]
    cpu_pct: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mem_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mem_limit_bytes: Option<u64>,
    supported: bool,
}

/// Resource usage
#[utoipa::path(get, path = "/sandboxes/{id}/stats", operation_id = "sandboxStats",
    tag = "sandboxes", params(SandboxIdParam),
    responses(
        (status = 200, description = "OK", body = StatsView),
        (status = 404, response = NotFound),
    ))]
async fn stats(State(st): St, Path(id): SbId) -> Reply {
    let s = st.svc.sandboxes().stats(&id).await?;
    Ok(ok(&StatsView {
        cpu_pct: s.as_ref().map(|s| s.cpu_pct),
        mem_bytes: s.as_ref().map(|s| s.mem_bytes),
        mem_limit_bytes: s.as_ref().map(|s| s.mem_limit_bytes),
        supported: s.is_some(),
    }))
}
