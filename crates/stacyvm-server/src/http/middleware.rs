//! Request id, CORS (preflight before auth), API-key auth, admin check and audit, rate limit.

use std::time::Instant;

use axum::extract::{ConnectInfo, OriginalUri, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use stacyvm_store::NewAdminAudit;

use super::error::ApiError;
use super::AppState;
use crate::service::{Caller, CallerRole};

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Constant-time equality for secrets (length may leak; contents do not).
pub fn ct_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= usize::from(x ^ y);
    }
    diff == 0
}

#[derive(Clone)]
struct RequestId(String);

/// The front of every request, one layer (each `from_fn` layer clones the router below it on
/// every request): preview hosts are proxied before anything else (no routing, no API key);
/// other requests get their trailing slash removed (`/api/v1/sandboxes/` is
/// `/api/v1/sandboxes`, as in the original), a request id, and a log line.
pub async fn front(State(st): State<AppState>, req: Request, next: Next) -> Response {
    // The E2B data plane (`E2b-Sandbox-Id`, or the envd port's preview host) before previews.
    let req = match super::e2b::intercept(&st, req).await {
        Ok(answered) => return answered,
        Err(req) => req,
    };
    let mut req = match super::preview::intercept(&st, req).await {
        Ok(proxied) => return proxied,
        Err(req) => strip_trailing_slash(req),
    };
    let id = req
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    req.extensions_mut().insert(RequestId(id.clone()));
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let started = Instant::now();
    let mut resp = next.run(req).await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert(REQUEST_ID, v);
    }
    tracing::info!(request_id = %id, %method, %path, status = resp.status().as_u16(),
        duration_ms = started.elapsed().as_secs_f64() * 1000.0, "request");
    resp
}

/// `front` of the `e2b.listen` listener: the E2B data plane, else the E2B control plane.
pub async fn e2b_front(State(st): State<AppState>, req: Request, next: Next) -> Response {
    match super::e2b::intercept(&st, req).await {
        Ok(answered) => answered,
        Err(req) => next.run(strip_trailing_slash(req)).await,
    }
}

fn strip_trailing_slash(mut req: Request) -> Request {
    let path = req.uri().path();
    if path.len() > 1 && path.ends_with('/') {
        let trimmed = path.trim_end_matches('/');
        let trimmed = if trimmed.is_empty() { "/" } else { trimmed };
        let pq = match req.uri().query() {
            Some(q) => format!("{trimmed}?{q}"),
            None => trimmed.to_string(),
        };
        let mut parts = req.uri().clone().into_parts();
        if let Ok(p) = pq.parse() {
            parts.path_and_query = Some(p);
            if let Ok(uri) = axum::http::Uri::from_parts(parts) {
                *req.uri_mut() = uri;
            }
        }
    }
    req
}

const ALLOW_METHODS: &str = "GET, POST, PUT, DELETE, OPTIONS";
const ALLOW_HEADERS: &str =
    "Content-Type, X-API-Key, X-Admin-API-Key, X-Request-ID, X-User-ID, X-Tenant-ID, Authorization";

/// The API's gate, one layer (each `from_fn` layer clones the router below it on every
/// request): CORS around authentication around the rate limit, in that order.
pub async fn api_gate(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let cors = Cors::of(&st, &req);
    let resp = if req.method() == Method::OPTIONS {
        cors.preflight()
    } else {
        match authenticate(&st, req).await {
            Ok(req) => rate_limit(&st, req, next).await,
            Err(refused) => refused,
        }
    };
    cors.finish(resp)
}

/// What CORS decided from the request, applied to the response.
struct Cors {
    any: bool,
    origin_given: bool,
    allowed_origin: Option<HeaderValue>,
}

impl Cors {
    fn of(st: &AppState, req: &Request) -> Cors {
        let origins = &st.svc.settings().cors_allowed_origins;
        let any = origins.is_empty() || origins.iter().any(|o| o == "*");
        let origin = req
            .headers()
            .get(header::ORIGIN)
            .and_then(|v| v.to_str().ok());
        let allowed_origin = if any {
            Some(HeaderValue::from_static("*"))
        } else {
            origin
                .filter(|o| origins.iter().any(|a| a == o))
                .and_then(|o| HeaderValue::from_str(o).ok())
        };
        Cors {
            any,
            origin_given: origin.is_some(),
            allowed_origin,
        }
    }

    fn preflight(&self) -> Response {
        if !self.any && self.origin_given && self.allowed_origin.is_none() {
            (StatusCode::FORBIDDEN, "CORS origin is not allowed").into_response()
        } else {
            StatusCode::OK.into_response()
        }
    }

    fn finish(self, mut resp: Response) -> Response {
        let h = resp.headers_mut();
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static(ALLOW_METHODS),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static(ALLOW_HEADERS),
        );
        if !self.any {
            h.insert(header::VARY, HeaderValue::from_static("Origin"));
        }
        // A paged list's headers (`GET /sandboxes?limit=`), readable by a page on another
        // origin too.
        if h.contains_key("x-total-count") {
            h.insert(
                header::ACCESS_CONTROL_EXPOSE_HEADERS,
                HeaderValue::from_static("X-Next-Cursor, X-Total-Count"),
            );
        }
        if let Some(o) = self.allowed_origin {
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, o);
        }
        resp
    }
}

fn header_str<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// Largest leftover body read from a refused request so its connection stays usable.
const REFUSED_BODY_DRAIN: usize = 64 * 1024;
const REFUSED_BODY_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Answers a request refused before its handler read the body. hyper closes such a connection
/// after the response when the body has not fully arrived, without saying so, and a client
/// that reuses it fails its next request. A small body is read to the end instead, keeping the
/// connection; a larger or slow one gets `Connection: close`, so the client knows.
async fn refuse(req: Request, mut resp: Response) -> Response {
    let drained = tokio::time::timeout(
        REFUSED_BODY_WAIT,
        axum::body::to_bytes(req.into_body(), REFUSED_BODY_DRAIN),
    )
    .await;
    if !matches!(drained, Ok(Ok(_))) {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

pub(super) fn peer_ip(req: &Request) -> Option<std::net::IpAddr> {
    req.extensions()
        .get::<ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip())
}

/// 429 in the rate limiter's shape.
fn rate_limited(retry_after: u64) -> Response {
    let mut resp = ApiError::plain(
        StatusCode::TOO_MANY_REQUESTS,
        "RESOURCE_LIMIT",
        format!("rate limit exceeded; retry after {retry_after}s"),
    )
    .into_response();
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
    resp
}

/// Whether a request (path as seen inside `/api/v1`) is an admin request: everything under
/// `/admin`, and quota writes (which need the admin key on `/quotas` too).
fn is_admin_request(method: &Method, path: &str) -> bool {
    path == "/admin"
        || path.starts_with("/admin/")
        || (is_write(method) && (path == "/quotas" || path.starts_with("/quotas/")))
}

fn is_write(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The subprotocol prefix that carries a key on a WebSocket upgrade: `stacyvm.key.` and the
/// key's UTF-8 bytes in hex. A browser cannot set headers on a WebSocket, and the console's
/// terminal attaches over one (docs/threat-model.md, "The console").
const WS_KEY_PROTOCOL: &str = "stacyvm.key.";

/// The keys a request presents, each with the header that carried it, in the order they are
/// tried: `X-Admin-API-Key`, `X-API-Key`, and on a WebSocket upgrade only, a
/// `Sec-WebSocket-Protocol` entry [`WS_KEY_PROTOCOL`]`<hex>`.
fn presented_keys(h: &HeaderMap) -> Vec<(&'static str, String)> {
    let mut keys: Vec<(&'static str, String)> = ["X-Admin-API-Key", "X-API-Key"]
        .into_iter()
        .filter_map(|name| header_str(h, name).map(|v| (name, v.to_string())))
        .collect();
    let upgrade = h
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if upgrade {
        let protocols = h
            .get_all(header::SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|p| p.trim().strip_prefix(WS_KEY_PROTOCOL))
            .filter_map(unhex);
        keys.extend(protocols.map(|k| ("Sec-WebSocket-Protocol", k)));
    }
    keys
}

/// Lower- or upper-case hex of UTF-8 text, decoded; `None` when it is not.
fn unhex(s: &str) -> Option<String> {
    // `from_str_radix` alone would take a sign (`+9`).
    if s.is_empty() || s.len() % 2 != 0 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let bytes = (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    String::from_utf8(bytes).ok()
}

/// The role `key` authenticates as, if it is one of the configured keys (compared in
/// constant time). The one place keys are matched: the native API and the E2B data plane.
pub(super) fn key_role(auth: &crate::settings::AuthSettings, key: &str) -> Option<CallerRole> {
    if key.is_empty() {
        return None;
    }
    if !auth.admin_api_key.is_empty() && ct_eq(key, &auth.admin_api_key) {
        Some(CallerRole::Admin)
    } else if !auth.api_key.is_empty() && ct_eq(key, &auth.api_key) {
        Some(CallerRole::Api)
    } else {
        None
    }
}

/// The caller's key, checked: the request with its [`Caller`], or the refusal.
async fn authenticate(st: &AppState, mut req: Request) -> Result<Request, Response> {
    let auth = &st.svc.settings().auth;
    let user_id = header_str(req.headers(), "x-user-id").map(str::to_string);
    let mut caller = Caller {
        user_id,
        role: None,
        key_header: "",
    };
    if auth.enabled() {
        // The admin key wins wherever it is presented.
        for (hname, v) in presented_keys(req.headers()) {
            match key_role(auth, &v) {
                Some(CallerRole::Admin) => {
                    caller.role = Some(CallerRole::Admin);
                    caller.key_header = hname;
                    break;
                }
                Some(role) if caller.role.is_none() => {
                    caller.role = Some(role);
                    caller.key_header = hname;
                }
                _ => {}
            }
        }
        if caller.role.is_none() {
            // Wrong keys are throttled per address (when rate limiting is on), so guessing
            // keys costs the same as any other request; past the limit nothing is audited.
            let client = st.limiter.client_ip(peer_ip(&req), req.headers());
            if let Err(retry_after) = st.limiter.check_failed_auth(client) {
                return Err(refuse(req, rate_limited(retry_after)).await);
            }
            let resp = ApiError::plain(
                StatusCode::UNAUTHORIZED,
                "UNAUTHORIZED",
                "invalid or missing API key",
            )
            .into_response();
            if is_admin_request(req.method(), req.uri().path()) {
                let draft = AuditDraft::new(&req, ANONYMOUS.to_string());
                draft.record_unauthenticated(st, resp.status()).await;
            }
            return Err(refuse(req, resp).await);
        }
    }
    req.extensions_mut().insert(caller);
    Ok(req)
}

/// Audit actor of a request no key authenticated.
const ANONYMOUS: &str = "anonymous";

/// The admin check: the admin key, or the API key under `admin_fallback_enabled` when no
/// admin key is set.
async fn admin_gate(st: &AppState, req: Request, next: Next) -> Response {
    let auth = &st.svc.settings().auth;
    if auth.enabled() {
        let role = req.extensions().get::<Caller>().and_then(|c| c.role);
        let ok = if !auth.admin_api_key.is_empty() {
            role == Some(CallerRole::Admin)
        } else {
            auth.admin_fallback_enabled && role == Some(CallerRole::Api)
        };
        if !ok {
            let msg = if auth.admin_api_key.is_empty() {
                "required authorization scope missing"
            } else {
                "admin API key required"
            };
            let resp = ApiError::plain(StatusCode::FORBIDDEN, "FORBIDDEN", msg).into_response();
            return refuse(req, resp).await;
        }
    }
    next.run(req).await
}

pub async fn require_admin(State(st): State<AppState>, req: Request, next: Next) -> Response {
    admin_gate(&st, req, next).await
}

/// Quota writes on `/quotas` are admin requests (admin key, audited); reads keep the api
/// class (docs/threat-model.md).
pub async fn quota_writes_need_admin(
    State(st): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    if !is_write(req.method()) {
        return next.run(req).await;
    }
    let draft = AuditDraft::new(&req, actor(&req));
    let resp = admin_gate(&st, req, next).await;
    draft.record(&st, resp.status()).await;
    resp
}

/// Who the audit log names: the credential that authenticated the request
/// (`admin:X-Admin-API-Key`, `api:X-API-Key`), `admin` when auth is off (the original's
/// actor). Never `X-User-ID`: any caller can send that.
fn actor(req: &Request) -> String {
    match req
        .extensions()
        .get::<Caller>()
        .and_then(|c| c.role.map(|r| (r, c.key_header)))
    {
        Some((role, header)) => format!("{}:{}", role.as_str(), header),
        None => "admin".to_string(),
    }
}

/// An audit row taken from the request before it runs; finished with the status.
struct AuditDraft {
    started: Instant,
    rec: NewAdminAudit,
}

/// Longest path and user agent an audit row keeps (both are the client's text).
const AUDIT_FIELD_MAX: usize = 1024;

fn bounded(s: &str) -> String {
    if s.len() <= AUDIT_FIELD_MAX {
        return s.to_string();
    }
    let mut end = AUDIT_FIELD_MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

impl AuditDraft {
    fn new(req: &Request, actor: String) -> Self {
        let request_id = req
            .extensions()
            .get::<RequestId>()
            .map(|r| r.0.clone())
            .unwrap_or_default();
        let remote_addr = req
            .extensions()
            .get::<ConnectInfo<std::net::SocketAddr>>()
            .map(|c| c.0.to_string())
            .unwrap_or_default();
        let user_agent = bounded(header_str(req.headers(), "user-agent").unwrap_or(""));
        // Nesting strips `/api/v1/admin` from the URI; the audit log records the full path.
        let path = req
            .extensions()
            .get::<OriginalUri>()
            .map_or_else(|| req.uri().path().to_string(), |u| u.0.path().to_string());
        AuditDraft {
            started: Instant::now(),
            rec: NewAdminAudit {
                actor,
                method: req.method().to_string(),
                path: bounded(&path),
                status: 0,
                duration_ms: 0,
                request_id,
                remote_addr,
                user_agent,
                tenant_id: String::new(),
            },
        }
    }

    async fn record(mut self, st: &AppState, status: StatusCode) {
        self.rec.status = i64::from(status.as_u16());
        self.rec.duration_ms =
            i64::try_from(self.started.elapsed().as_millis()).unwrap_or(i64::MAX);
        st.svc.admin().record(self.rec).await;
    }

    async fn record_unauthenticated(self, st: &AppState, status: StatusCode) {
        match st.unauthenticated_audit.admit() {
            Some(0) => {}
            Some(held_back) => tracing::warn!(
                held_back,
                "admin audit rows of unauthenticated requests were not written"
            ),
            None => return,
        }
        self.record(st, status).await;
    }
}

/// Records every admin request in the audit log, refused ones included: it wraps the admin
/// check.
pub async fn admin_audit(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let draft = AuditDraft::new(&req, actor(&req));
    let resp = next.run(req).await;
    draft.record(&st, resp.status()).await;
    resp
}

/// The caller's rate limit around the handler (headers on the answer), or the refusal.
async fn rate_limit(st: &AppState, req: Request, next: Next) -> Response {
    if !st.limiter.enabled() {
        return next.run(req).await;
    }
    let client = st.limiter.client_ip(peer_ip(&req), req.headers());
    let caller = req
        .extensions()
        .get::<Caller>()
        .cloned()
        .unwrap_or_default();
    let key = st.limiter.key_for(&caller, client);
    match st.limiter.check(&key) {
        Ok((limit, remaining)) => {
            let mut resp = next.run(req).await;
            let h = resp.headers_mut();
            h.insert("x-ratelimit-limit", HeaderValue::from(limit));
            h.insert("x-ratelimit-remaining", HeaderValue::from(remaining));
            resp
        }
        Err(retry_after) => refuse(req, rate_limited(retry_after)).await,
    }
}

#[cfg(test)]
mod tests {
    use axum::http::{header, HeaderMap, HeaderValue};

    use super::{ct_eq, presented_keys, unhex};

    #[test]
    fn websocket_key_protocol() {
        assert_eq!(unhex("6b6579").as_deref(), Some("key"));
        assert_eq!(unhex("6B6579").as_deref(), Some("key"));
        for bad in ["", "6", "zz", "ff", "6b65+9"] {
            assert_eq!(unhex(bad), None, "{bad}");
        }
        let mut h = HeaderMap::new();
        h.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("stacyvm.attach, stacyvm.key.6b6579"),
        );
        // Only on an upgrade: a plain request cannot authenticate this way.
        assert!(presented_keys(&h).is_empty());
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert_eq!(
            presented_keys(&h),
            vec![("Sec-WebSocket-Protocol", "key".to_string())]
        );
        h.insert("x-api-key", HeaderValue::from_static("k2"));
        assert_eq!(presented_keys(&h)[0], ("X-API-Key", "k2".to_string()));
    }

    #[test]
    fn constant_time_eq() {
        assert!(ct_eq("abc", "abc"));
        assert!(!ct_eq("abc", "abd"));
        assert!(!ct_eq("abc", "abcd"));
        assert!(!ct_eq("", "a"));
        assert!(ct_eq("", ""));
    }
}
