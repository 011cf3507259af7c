//! The E2B-compatible API (docs/e2b.md, e2b-wire.md): code written for E2B's SDKs runs
//! against StacyVM with `E2B_API_URL` and `E2B_SANDBOX_URL` pointing here.
//!
//! - Control plane (`control.rs`): `/sandboxes…` and `/v2/sandboxes…` at the root, beside
//!   `/api/v1`, behind the same keys, CORS and rate limits; errors are E2B's
//!   `{"code": <status>, "message"}`.
//! - Data plane (this file, `process.rs`, `filesystem.rs`): envd's routes for one sandbox,
//!   chosen by the `E2b-Sandbox-Id` header or `Host: 49983-{id}.{domain}`, guarded by the
//!   sandbox's access token. It runs before API routing (`middleware::front`), like previews.

mod connect;
mod control;
mod filesystem;
mod process;
mod watch;

pub use watch::Watchers;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Query, Request};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use stacyvm_store::E2bSandbox;
use stacyvm_types::{SandboxId, SandboxState};

use super::AppState;
use crate::service::{CallerRole, PreviewHost};

pub use control::{is_e2b_path, routes, unknown};

/// The port envd listens on in an E2B sandbox; the SDK addresses the data plane with it.
pub const ENVD_PORT: u16 = 49983;

/// JSON with E2B's content type and no trailing newline.
pub(super) fn json<T: Serialize + ?Sized>(status: StatusCode, v: &T) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        serde_json::to_vec(v).unwrap_or_else(|_| b"{}".to_vec()),
    )
        .into_response()
}

#[derive(Serialize)]
struct RestError<'a> {
    code: u16,
    message: &'a str,
}

/// E2B's REST error body: `{"code": <status>, "message"}` (the SDK parses every error body as
/// JSON and looks for "was not found" in 404s).
pub(super) fn rest_error(status: StatusCode, message: &str) -> Response {
    json(
        status,
        &RestError {
            code: status.as_u16(),
            message,
        },
    )
}

/// The sandbox a data-plane request is for, with what the E2B API keeps of it.
pub struct Target {
    pub id: SandboxId,
    record: Option<Arc<E2bSandbox>>,
    /// The template's working directory, or the agent's.
    workdir: String,
    /// Who the call's commands run as and its files belong to: the SDK's `user=` (Basic
    /// auth) where the template has a user, else the template's; `None` = the agent's.
    user: Option<String>,
}

impl Target {
    /// The environment of every process: the create's `envVars`.
    fn env(&self) -> BTreeMap<String, String> {
        self.record
            .as_ref()
            .map(|r| r.env_vars.clone())
            .unwrap_or_default()
    }

    /// A client path made absolute: relative ones are below the working directory.
    fn resolve(&self, path: &str) -> String {
        let path = path.trim();
        if path.starts_with('/') {
            path.to_string()
        } else if path.is_empty() || path == "." {
            self.workdir.clone()
        } else {
            format!(
                "{}/{}",
                self.workdir.trim_end_matches('/'),
                path.trim_start_matches("./")
            )
        }
    }
}

/// One Connect call: the state, the sandbox, the request's headers and body.
pub struct Call<'a> {
    pub st: &'a AppState,
    pub t: &'a Target,
    pub h: &'a HeaderMap,
    pub body: &'a [u8],
}

impl Call<'_> {
    fn decode<T: serde::de::DeserializeOwned>(&self) -> Result<T, connect::ConnectError> {
        connect::decode(self.h, self.body)
    }

    /// A unary answer, or the error in the shape the call expects (an end-stream envelope for
    /// a streaming call).
    fn answer(&self, res: Result<Response, connect::ConnectError>) -> Response {
        match res {
            Ok(r) => r,
            Err(e) if connect::is_streaming(self.h) => connect::stream_error(&e),
            Err(e) => e.unary(),
        }
    }
}

/// The sandbox id a data-plane request names: the `E2b-Sandbox-Id` header (with
/// `E2b-Sandbox-Port` 49983 or absent), else a `Host` of `49983-{id}.{domain}`.
fn data_plane_id(st: &AppState, req: &Request) -> Option<String> {
    let h = req.headers();
    if let Some(id) = h.get("e2b-sandbox-id").and_then(|v| v.to_str().ok()) {
        let port = h
            .get("e2b-sandbox-port")
            .and_then(|v| v.to_str().ok())
            .and_then(|p| p.trim().parse::<u16>().ok())
            .unwrap_or(ENVD_PORT);
        return (port == ENVD_PORT).then(|| id.trim().to_string());
    }
    let raw = match req.uri().host() {
        Some(host) => host.to_string(),
        None => h.get(header::HOST)?.to_str().ok()?.to_string(),
    };
    let host = raw
        .rsplit_once(':')
        .map_or(raw.as_str(), |(h, _)| h)
        .to_ascii_lowercase();
    let p = PreviewHost::parse(&host)?;
    (p.port == ENVD_PORT && p.domain == st.svc.e2b().domain()).then(|| p.sandbox_id.to_string())
}

/// Middleware step in front of the router: a data-plane request is answered here; anything
/// else is handed back.
pub async fn intercept(st: &AppState, req: Request) -> Result<Response, Request> {
    if !st.svc.settings().e2b.enabled {
        return Err(req);
    }
    let Some(raw_id) = data_plane_id(st, &req) else {
        return Err(req);
    };
    Ok(data_plane(st, raw_id, req).await)
}

/// The answer for a sandbox that does not exist (any more): 502, as E2B's proxy answers,
/// which the SDK's `is_running()` reads as "not running".
fn gone(id: &str) -> Response {
    rest_error(
        StatusCode::BAD_GATEWAY,
        &format!("sandbox {id:?} was not found"),
    )
}

async fn data_plane(st: &AppState, raw_id: String, req: Request) -> Response {
    if raw_id.is_empty() || raw_id.len() > 128 || raw_id.chars().any(|c| c.is_control()) {
        return gone(&raw_id);
    }
    let id = SandboxId::from(raw_id.as_str());
    let sb = match st.svc.e2b().live(&id).await {
        Ok(sb) => sb,
        Err(crate::error::ServiceError::SandboxNotFound(_)) => return gone(&raw_id),
        Err(e) => {
            let c = connect::ConnectError::from(e);
            return rest_error(c.code.http_status(), &c.message);
        }
    };
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    if method == Method::GET && path == "/health" {
        return match sb.state {
            SandboxState::Running | SandboxState::Creating => {
                StatusCode::NO_CONTENT.into_response()
            }
            _ => gone(&raw_id),
        };
    }
    let record = match st.svc.e2b().record(&id).await {
        Ok(r) => r,
        Err(e) => {
            let c = connect::ConnectError::from(e);
            return rest_error(c.code.http_status(), &c.message);
        }
    };
    let who = authorize(st, record.as_deref(), req.headers());
    let connect_call = path.starts_with("/process.") || path.starts_with("/filesystem.");
    if let Err(retry_after) = throttle(st, &req, &id, who) {
        let message = format!("rate limit exceeded; retry after {retry_after}s");
        let mut resp = if connect_call {
            connect::ConnectError::new(connect::Code::ResourceExhausted, message).unary()
        } else {
            rest_error(StatusCode::TOO_MANY_REQUESTS, &message)
        };
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
        return resp;
    }
    if let Err(refused) = who {
        return if connect_call {
            connect::ConnectError::new(connect::Code::Unauthenticated, refused).unary()
        } else {
            rest_error(StatusCode::UNAUTHORIZED, refused)
        };
    }
    let template = record
        .as_ref()
        .and_then(|r| st.svc.e2b().template(&r.template_id).ok());
    let workdir = template.as_ref().map_or_else(
        || "/workspace".to_string(),
        crate::service::effective_workdir,
    );
    let user = template
        .map(|t| t.user.trim().to_string())
        .filter(|u| !u.is_empty())
        .map(|default| asked_user(&req).unwrap_or(default));
    let t = Target {
        id,
        record,
        workdir,
        user,
    };
    route(st, &t, method, &path, req).await
}

/// The SDK's `user=`: Basic auth on Connect calls, `?username=` on `/files`.
fn asked_user(req: &Request) -> Option<String> {
    basic_user(req.headers()).or_else(|| {
        Query::<filesystem::FilesQuery>::try_from_uri(req.uri())
            .ok()
            .and_then(|q| q.0.username)
            .map(|u| u.trim().to_string())
            .filter(|u| !u.is_empty())
    })
}

/// The user of `Authorization: Basic base64("<user>:")`.
fn basic_user(h: &HeaderMap) -> Option<String> {
    let v = h.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, cred) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = stacyvm_protocol::base64::decode(cred.trim())?;
    let text = String::from_utf8(raw).ok()?;
    let user = text
        .split_once(':')
        .map_or(text.as_str(), |(u, _)| u)
        .trim();
    (!user.is_empty()).then(|| user.to_string())
}

/// The data plane's routes.
async fn route(st: &AppState, t: &Target, method: Method, path: &str, req: Request) -> Response {
    if method == Method::POST {
        for (prefix, is_process) in [
            ("/process.Process/", true),
            ("/filesystem.Filesystem/", false),
        ] {
            let Some(rpc) = path.strip_prefix(prefix) else {
                continue;
            };
            let rpc = rpc.to_string();
            let headers = req.headers().clone();
            let body = match axum::body::to_bytes(req.into_body(), connect::MAX_REQUEST).await {
                Ok(b) => b,
                Err(_) => {
                    return connect::ConnectError::new(
                        connect::Code::ResourceExhausted,
                        "request message is too large or was cut off",
                    )
                    .unary()
                }
            };
            let c = Call {
                st,
                t,
                h: &headers,
                body: &body,
            };
            return if is_process {
                process::call(&c, &rpc).await
            } else {
                filesystem::call(&c, &rpc).await
            };
        }
    }
    let query = Query::<filesystem::FilesQuery>::try_from_uri(req.uri())
        .map(|q| q.0)
        .unwrap_or_default();
    match (method, path) {
        (Method::GET, "/files") => filesystem::download(st, t, query).await,
        (Method::POST, "/files") => filesystem::upload(st, t, query, req).await,
        (Method::GET, "/envs") => json(StatusCode::OK, &t.env()),
        _ => rest_error(StatusCode::NOT_FOUND, &format!("{path} is not served here")),
    }
}

/// The data plane's guard: the sandbox's access token (`X-Access-Token`), or one of our API
/// keys (then the key's role, which picks the rate-limit bucket). A sandbox created with
/// `secure: false` has no token and is open, as in E2B; one the native API created needs a
/// key.
fn authorize(
    st: &AppState,
    record: Option<&E2bSandbox>,
    h: &HeaderMap,
) -> Result<Option<CallerRole>, &'static str> {
    let header = |n: &str| h.get(n).and_then(|v| v.to_str().ok()).unwrap_or("");
    let auth = &st.svc.settings().auth;
    let role = super::middleware::key_role(auth, header("x-api-key"));
    match record {
        _ if role.is_some() => Ok(role),
        Some(r) if r.access_token.is_empty() => Ok(None),
        Some(r) => {
            let token = header("x-access-token");
            if !token.is_empty() && super::middleware::ct_eq(token, &r.access_token) {
                Ok(None)
            } else {
                Err("missing or wrong X-Access-Token for this sandbox")
            }
        }
        None if !auth.enabled() => Ok(None),
        None => Err("this sandbox was not created through the E2B API: send X-API-Key"),
    }
}

/// The rate limit of the data plane, as the native API's: a request with a key counts in
/// that key's bucket; one with the sandbox's token in the sandbox's own (the token holder is
/// not the key holder); a wrong token as a failed authentication of its address.
fn throttle(
    st: &AppState,
    req: &Request,
    id: &SandboxId,
    who: Result<Option<CallerRole>, &str>,
) -> Result<(), u64> {
    if !st.limiter.enabled() {
        return Ok(());
    }
    let client = st
        .limiter
        .client_ip(super::middleware::peer_ip(req), req.headers());
    let key = match who {
        Err(_) => return st.limiter.check_failed_auth(client),
        Ok(role @ Some(_)) => {
            let caller = crate::service::Caller {
                role,
                ..Default::default()
            };
            st.limiter.key_for(&caller, client)
        }
        Ok(None) => format!("e2b-sandbox:{id}"),
    };
    st.limiter.check(&key).map(|_| ())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn target(workdir: &str) -> Target {
        Target {
            id: SandboxId::from("sb-1"),
            record: None,
            workdir: workdir.into(),
            user: None,
        }
    }

    #[test]
    fn the_sdks_user_comes_from_basic_auth() {
        let mut h = HeaderMap::new();
        assert_eq!(basic_user(&h), None);
        // base64("root:") and base64("user") (no colon).
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic cm9vdDo="),
        );
        assert_eq!(basic_user(&h).as_deref(), Some("root"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("basic dXNlcg=="),
        );
        assert_eq!(basic_user(&h).as_deref(), Some("user"));
        for bad in ["Bearer cm9vdDo=", "Basic !!", "Basic Og=="] {
            h.insert(header::AUTHORIZATION, HeaderValue::from_static(bad));
            assert_eq!(basic_user(&h), None, "{bad}");
        }
    }

    #[test]
    fn a_templates_user_gives_its_home_as_workdir() {
        let w = |workdir: &str, user: &str| {
            crate::service::effective_workdir(&stacyvm_config::E2bTemplate {
                workdir: workdir.into(),
                user: user.into(),
                ..Default::default()
            })
        };
        assert_eq!(w("", ""), "/workspace");
        assert_eq!(w("", "user"), "/home/user");
        assert_eq!(w("", "root"), "/root");
        assert_eq!(w("/srv", "user"), "/srv");
    }

    #[test]
    fn relative_paths_are_below_the_workdir() {
        let t = target("/home/user");
        assert_eq!(t.resolve("/tmp/a"), "/tmp/a");
        assert_eq!(t.resolve("a.txt"), "/home/user/a.txt");
        assert_eq!(t.resolve("./d/a.txt"), "/home/user/d/a.txt");
        assert_eq!(t.resolve(""), "/home/user");
        assert_eq!(t.resolve("."), "/home/user");
        assert_eq!(target("/").resolve("x"), "/x");
    }
}
