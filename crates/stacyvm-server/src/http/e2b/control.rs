//! E2B's control plane (e2b-wire.md §1.3, §9): create, get, list (v1 and v2), kill, timeout,
//! connect/resume, pause and metrics, on the native sandbox service. Paths of every SDK from
//! 2.7.0 on; every error is JSON, unknown routes and methods included.

use std::collections::BTreeMap;

use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{from_fn_with_state, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use serde::{Deserialize, Serialize};
use stacyvm_store::E2bSandbox;
use stacyvm_types::{Sandbox, SandboxId, SandboxState};

use super::{json, rest_error};
use crate::error::ServiceError;
use crate::http::error::ApiError;
use crate::http::{middleware, AppState, St};
use crate::service::{Caller, E2bCreate, ENVD_VERSION};

/// The routes, merged at the root of the main router (and of `e2b.listen`'s).
pub fn routes(state: AppState) -> Router<AppState> {
    let api = Router::new()
        .route("/sandboxes", post(create).get(list_v1))
        .route("/v2/sandboxes", post(create).get(list_v2))
        .route("/sandboxes/{id}", get(detail).delete(kill))
        .route("/sandboxes/{id}/timeout", post(set_timeout))
        .route("/sandboxes/{id}/connect", post(connect))
        .route("/v2/sandboxes/{id}/connect", post(connect))
        .route("/sandboxes/{id}/resume", post(resume))
        .route("/sandboxes/{id}/pause", post(pause))
        .route("/sandboxes/{id}/metrics", get(metrics))
        .method_not_allowed_fallback(method_not_allowed)
        .layer(from_fn_with_state(state.clone(), middleware::api_gate));
    Router::new()
        .route("/health", get(health))
        .merge(api)
        .layer(axum::middleware::from_fn(e2b_errors))
}

async fn health() -> Response {
    json(StatusCode::OK, &serde_json::Map::new())
}

/// Paths of E2B's API that this server does not serve (fork, snapshots, logs, templates,
/// volumes…): the main router's fallback answers them with [`unknown`].
pub fn is_e2b_path(path: &str) -> bool {
    [
        "/sandboxes",
        "/v2/",
        "/v3/",
        "/templates",
        "/volumes",
        "/secrets",
        "/teams",
    ]
    .iter()
    .any(|p| path.starts_with(p))
}

pub async fn unknown(req: Request) -> Response {
    rest_error(
        StatusCode::NOT_FOUND,
        &format!(
            "{} {} is not supported by this server",
            req.method(),
            req.uri().path()
        ),
    )
}

async fn method_not_allowed() -> Response {
    rest_error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
}

/// Native error bodies (`{"code": "UNAUTHORIZED", …}` from the gate) in E2B's shape.
async fn e2b_errors(req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    if resp.status().as_u16() < 400 {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 64 * 1024).await else {
        return rest_error(parts.status, "error");
    };
    #[derive(Deserialize)]
    struct Native {
        code: serde_json::Value,
        message: String,
    }
    match serde_json::from_slice::<Native>(&bytes) {
        Ok(n) if n.code.is_string() => rest_error(parts.status, &n.message),
        Ok(_) => Response::from_parts(parts, Body::from(bytes)),
        Err(_) => rest_error(parts.status, String::from_utf8_lossy(&bytes).trim()),
    }
}

/// A service error in E2B's shape; a missing sandbox says "was not found", which the SDK
/// looks for.
struct E2bError(Box<Response>);

impl From<ServiceError> for E2bError {
    fn from(e: ServiceError) -> Self {
        let msg = match &e {
            ServiceError::SandboxNotFound(id) => format!("sandbox {id:?} was not found"),
            _ => String::new(),
        };
        let native = ApiError::from(e).into_response();
        if msg.is_empty() {
            // The gate's rewriter turns the native body into E2B's.
            return E2bError(Box::new(native));
        }
        E2bError(Box::new(rest_error(StatusCode::NOT_FOUND, &msg)))
    }
}

impl IntoResponse for E2bError {
    fn into_response(self) -> Response {
        *self.0
    }
}

type Result<T> = std::result::Result<T, E2bError>;

fn bad_request(msg: &str) -> E2bError {
    E2bError(Box::new(rest_error(StatusCode::BAD_REQUEST, msg)))
}

/// `NewSandbox` (camelCase, plus snake_case fields the SDK sends as such).
#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct NewSandbox {
    #[serde(rename = "templateID")]
    template_id: Option<String>,
    timeout: Option<i64>,
    metadata: Option<BTreeMap<String, String>>,
    env_vars: Option<BTreeMap<String, String>>,
    secure: Option<bool>,
    auto_pause: Option<bool>,
    network: Option<NetworkBody>,
}

/// `NewSandbox.network`: only `allowPublicTraffic` is honoured.
#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct NetworkBody {
    allow_public_traffic: Option<bool>,
}

/// The body of create, connect and resume.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SandboxView<'a> {
    #[serde(rename = "templateID")]
    template_id: &'a str,
    #[serde(rename = "sandboxID")]
    sandbox_id: &'a str,
    #[serde(rename = "clientID")]
    client_id: &'static str,
    envd_version: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    envd_access_token: Option<&'a str>,
    /// The preview token (`e2b-traffic-access-token` on preview hosts); absent when the
    /// sandbox's previews are public.
    #[serde(skip_serializing_if = "Option::is_none")]
    traffic_access_token: Option<&'a str>,
    domain: &'a str,
}

/// `ListedSandbox` / `SandboxDetail`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DetailView<'a> {
    #[serde(rename = "templateID")]
    template_id: &'a str,
    #[serde(rename = "sandboxID")]
    sandbox_id: &'a str,
    #[serde(rename = "clientID")]
    client_id: &'static str,
    started_at: String,
    end_at: String,
    cpu_count: i64,
    #[serde(rename = "memoryMB")]
    memory_mb: i64,
    #[serde(rename = "diskSizeMB")]
    disk_size_mb: i64,
    state: &'static str,
    envd_version: &'static str,
    metadata: &'a BTreeMap<String, String>,
    domain: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    envd_access_token: Option<&'a str>,
}

fn template_of<'a>(sb: &'a Sandbox, r: Option<&'a E2bSandbox>) -> &'a str {
    match r {
        Some(r) => &r.template_id,
        None if !sb.template.is_empty() => &sb.template,
        None => &sb.image,
    }
}

fn token(r: Option<&E2bSandbox>) -> Option<&str> {
    r.map(|r| r.access_token.as_str()).filter(|t| !t.is_empty())
}

fn sandbox_view<'a>(
    st: &'a AppState,
    sb: &'a Sandbox,
    r: Option<&'a E2bSandbox>,
) -> SandboxView<'a> {
    SandboxView {
        template_id: template_of(sb, r),
        sandbox_id: sb.id.as_str(),
        client_id: "stacyvm",
        envd_version: ENVD_VERSION,
        envd_access_token: token(r),
        traffic_access_token: Some(sb.preview_token.as_str())
            .filter(|t| !sb.public_preview && !t.is_empty()),
        domain: st.svc.e2b().domain(),
    }
}

fn rfc3339(t: &stacyvm_types::Timestamp) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The expiry the client sees: a paused sandbox's clock is stopped, so its `endAt` is what
/// is left counted from now.
fn end_at(sb: &Sandbox) -> String {
    match (sb.state, sb.paused_at) {
        (SandboxState::Paused, Some(p)) => rfc3339(&(chrono::Utc::now() + (sb.expires_at - p))),
        _ => rfc3339(&sb.expires_at),
    }
}

fn state_name(s: SandboxState) -> &'static str {
    if s == SandboxState::Paused {
        "paused"
    } else {
        "running"
    }
}

fn detail_view<'a>(st: &'a AppState, sb: &'a Sandbox, r: Option<&'a E2bSandbox>) -> DetailView<'a> {
    DetailView {
        template_id: template_of(sb, r),
        sandbox_id: sb.id.as_str(),
        client_id: "stacyvm",
        started_at: rfc3339(&sb.created_at),
        end_at: end_at(sb),
        cpu_count: sb.vcpus,
        memory_mb: sb.memory_mb,
        disk_size_mb: 0,
        state: state_name(sb.state),
        envd_version: ENVD_VERSION,
        metadata: &sb.metadata,
        domain: st.svc.e2b().domain(),
        envd_access_token: token(r),
    }
}

/// Decodes a JSON body, with a 400 in E2B's shape for anything that is not the expected JSON.
fn body<T: for<'de> Deserialize<'de> + Default>(raw: &[u8]) -> Result<T> {
    if raw.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(raw).map_err(|e| bad_request(&format!("invalid request body: {e}")))
}

async fn create(
    State(st): St,
    Extension(caller): Extension<Caller>,
    raw: axum::body::Bytes,
) -> Result<Response> {
    let req: NewSandbox = body(&raw)?;
    let input = E2bCreate {
        template_id: req.template_id.unwrap_or_else(|| "base".into()),
        timeout_secs: req.timeout,
        metadata: req.metadata.unwrap_or_default(),
        env_vars: req.env_vars.unwrap_or_default(),
        // The newest SDKs no longer send `secure`: a token unless it is turned off.
        secure: req.secure.unwrap_or(true),
        auto_pause: req.auto_pause.unwrap_or(false),
        public_preview: req
            .network
            .and_then(|n| n.allow_public_traffic)
            .unwrap_or(false),
    };
    let (sb, record) = st.svc.e2b().create(input, &caller).await?;
    Ok(json(
        StatusCode::CREATED,
        &sandbox_view(&st, &sb, Some(&record)),
    ))
}

/// An E2B sandbox id from the path. Anything that cannot be one of ours is E2B's 404.
struct E2bId(SandboxId);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for E2bId {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> std::result::Result<Self, Response> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        if raw.is_empty() || raw.len() > 128 {
            return Err(rest_error(
                StatusCode::NOT_FOUND,
                &format!("sandbox {raw:?} was not found"),
            ));
        }
        Ok(E2bId(SandboxId::from(raw)))
    }
}

async fn detail(State(st): St, E2bId(id): E2bId) -> Result<Response> {
    let sb = st.svc.e2b().live(&id).await?;
    let r = st.svc.e2b().record(&id).await?;
    Ok(json(StatusCode::OK, &detail_view(&st, &sb, r.as_deref())))
}

async fn kill(State(st): St, E2bId(id): E2bId) -> Result<Response> {
    st.svc.e2b().live(&id).await?;
    st.svc.sandboxes().destroy(&id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct TimeoutBody {
    timeout: Option<i64>,
}

async fn set_timeout(
    State(st): St,
    E2bId(id): E2bId,
    raw_body: axum::body::Bytes,
) -> Result<Response> {
    let b: TimeoutBody = body(&raw_body)?;
    let secs = b
        .timeout
        .ok_or_else(|| bad_request("timeout is required"))?;
    st.svc.e2b().set_timeout(&id, secs).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn connect(State(st): St, E2bId(id): E2bId, raw_body: axum::body::Bytes) -> Result<Response> {
    let b: TimeoutBody = body(&raw_body)?;
    let (sb, resumed) = st.svc.e2b().connect(&id, b.timeout.unwrap_or(300)).await?;
    let r = st.svc.e2b().record(&id).await?;
    let status = if resumed {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(json(status, &sandbox_view(&st, &sb, r.as_deref())))
}

/// The 2.0–2.5 SDKs' connect: 409 when the sandbox is not paused.
async fn resume(State(st): St, E2bId(id): E2bId, raw_body: axum::body::Bytes) -> Result<Response> {
    let sb = st.svc.e2b().live(&id).await?;
    if sb.state != SandboxState::Paused {
        return Err(E2bError(Box::new(rest_error(
            StatusCode::CONFLICT,
            &format!("sandbox {:?} is already running", id.as_str()),
        ))));
    }
    connect(State(st), E2bId(id), raw_body).await
}

async fn pause(State(st): St, E2bId(id): E2bId) -> Result<Response> {
    let sb = st.svc.e2b().live(&id).await?;
    if sb.state == SandboxState::Paused {
        return Err(E2bError(Box::new(rest_error(
            StatusCode::CONFLICT,
            &format!("sandbox {:?} is already paused", id.as_str()),
        ))));
    }
    st.svc.sandboxes().pause(&id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Metric {
    timestamp: String,
    cpu_count: i64,
    cpu_used_pct: f64,
    mem_used: u64,
    mem_total: u64,
    disk_used: u64,
    disk_total: u64,
}

/// One sample, now, where the provider measures (an empty list where it does not).
async fn metrics(State(st): St, E2bId(id): E2bId) -> Result<Response> {
    let sb = st.svc.e2b().live(&id).await?;
    let stats = st.svc.sandboxes().stats(&id).await.ok().flatten();
    let out: Vec<Metric> = stats
        .map(|s| Metric {
            timestamp: rfc3339(&chrono::Utc::now()),
            cpu_count: sb.vcpus,
            cpu_used_pct: s.cpu_pct,
            mem_used: s.mem_bytes,
            mem_total: s.mem_limit_bytes,
            disk_used: 0,
            disk_total: 0,
        })
        .into_iter()
        .collect();
    Ok(json(StatusCode::OK, &out))
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ListQuery {
    metadata: Option<String>,
    state: Option<String>,
    limit: Option<usize>,
    #[serde(rename = "nextToken")]
    next_token: Option<String>,
}

/// `k=v&k2=v2` with each key and value escaped by the SDK before the pairs were form-encoded
/// (as E2B's API reads it: parse the pairs, then unescape each key and value once more).
fn metadata_filter(raw: &str) -> BTreeMap<String, String> {
    url_pairs(raw)
        .map(|(k, v)| (percent_decode(&k), percent_decode(&v)))
        .collect()
}

fn url_pairs(raw: &str) -> impl Iterator<Item = (String, String)> + '_ {
    raw.split('&').filter(|p| !p.is_empty()).map(|p| {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        (percent_decode(k), percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = (b[i] == b'%')
            .then(|| b.get(i + 1..i + 3))
            .flatten()
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (hex, b[i]) {
            (Some(v), _) => {
                out.push(v);
                i += 3;
                continue;
            }
            (None, b'+') => out.push(b' '),
            (None, c) => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Live sandboxes in the asked states matching the metadata filter, oldest first.
async fn listed(st: &AppState, q: &ListQuery) -> Result<Vec<Sandbox>> {
    let filter = q
        .metadata
        .as_deref()
        .map(metadata_filter)
        .unwrap_or_default();
    let states: Vec<&str> = q
        .state
        .as_deref()
        .map(|s| {
            s.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_else(|| vec!["running", "paused"]);
    for s in &states {
        if !matches!(*s, "running" | "paused") {
            return Err(bad_request(&format!(
                "unknown state {s:?} (running or paused)"
            )));
        }
    }
    let mut all = st.svc.sandboxes().list().await?;
    all.retain(|sb| {
        let state = match sb.state {
            SandboxState::Running | SandboxState::Creating => "running",
            SandboxState::Paused => "paused",
            _ => return false,
        };
        states.contains(&state) && filter.iter().all(|(k, v)| sb.metadata.get(k) == Some(v))
    });
    all.sort_by(|a, b| (a.created_at, a.id.as_str()).cmp(&(b.created_at, b.id.as_str())));
    Ok(all)
}

async fn views(st: &AppState, page: &[Sandbox]) -> Result<Vec<serde_json::Value>> {
    let mut out = Vec::with_capacity(page.len());
    for sb in page {
        let r = st.svc.e2b().record(&sb.id).await?;
        out.push(serde_json::to_value(detail_view(st, sb, r.as_deref())).unwrap_or_default());
    }
    Ok(out)
}

async fn list_v1(State(st): St, Query(q): Query<ListQuery>) -> Result<Response> {
    let all = listed(&st, &q).await?;
    Ok(json(StatusCode::OK, &views(&st, &all).await?))
}

/// Most sandboxes one page holds.
const MAX_PAGE: usize = 1000;

/// Paged: `limit` (default 100) per page, `nextToken` = the last id of the previous page;
/// `X-Next-Token` when more follow, `X-Total-Running`.
async fn list_v2(State(st): St, Query(q): Query<ListQuery>) -> Result<Response> {
    let all = listed(&st, &q).await?;
    let running = all
        .iter()
        .filter(|s| s.state != SandboxState::Paused)
        .count();
    let limit = q.limit.unwrap_or(100).clamp(1, MAX_PAGE);
    let start = match q.next_token.as_deref().filter(|t| !t.is_empty()) {
        Some(tok) => all
            .iter()
            .position(|s| s.id.as_str() == tok)
            .map(|i| i + 1)
            .ok_or_else(|| bad_request("nextToken does not name a listed sandbox"))?,
        None => 0,
    };
    let page = &all[start.min(all.len())..(start + limit).min(all.len())];
    let mut resp = json(StatusCode::OK, &views(&st, page).await?);
    let h = resp.headers_mut();
    h.insert("x-total-running", HeaderValue::from(running));
    if start + limit < all.len() {
        if let Some(last) = page.last() {
            if let Ok(v) = HeaderValue::from_str(last.id.as_str()) {
                h.insert("x-next-token", v);
            }
        }
    }
    Ok(resp)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn metadata_filters_decode() {
        let m = metadata_filter("t%3D1=x&a=b%20c&e=");
        assert_eq!(m.get("t=1").map(String::as_str), Some("x"));
        assert_eq!(m.get("a").map(String::as_str), Some("b c"));
        assert_eq!(m.get("e").map(String::as_str), Some(""));
        // What the SDKs send for {"k y": "a b/c:ü"}, after the query's own decoding.
        let m = metadata_filter("k%2520y=a%2520b%252Fc%253A%25C3%25BC");
        assert_eq!(m.get("k y").map(String::as_str), Some("a b/c:ü"));
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("%C3%BC"), "ü");
    }
}
