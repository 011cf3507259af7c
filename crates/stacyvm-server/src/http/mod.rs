//! HTTP transport: routes, middleware, encoding. Handlers decode, call the service, encode.

/// An `OpenApiRouter` from handler groups, one group per path:
/// `api_routes![spawn, list; get_one, destroy]` is `.routes(routes!(spawn, list))` then
/// `.routes(routes!(get_one, destroy))`.
macro_rules! api_routes {
    ($($($($h:ident)::+),+);+ $(;)?) => {
        utoipa_axum::router::OpenApiRouter::new()
            $(.routes(utoipa_axum::routes!($($($h)::+),+)))+
    };
}

mod admin;
mod dto;
mod e2b;
pub mod error;
mod exec;
mod extract;
mod files;
mod metrics_history;
mod middleware;
mod openapi;
mod output;
mod pause;
mod preview;
mod preview_token;
mod processes;
mod prometheus;
mod quotas;
mod rate_limit;
mod request_metrics;
mod sandboxes;
mod snapshots;
mod system;
mod templates;
mod ui;
mod views;
mod volumes;
mod worker_api;
mod workers;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde::Serialize;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::service::Service;

/// What every handler and middleware shares. One `Arc`: axum clones the state for each
/// middleware layer and extractor of every request, so a clone is one atomic increment.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

pub struct Shared {
    pub svc: Service,
    pub limiter: rate_limit::RateLimiter,
    /// Audit rows for admin requests no key authenticated: anyone can cause them, so at most
    /// 60 a minute are written (the rest are counted in a WARN).
    pub unauthenticated_audit: crate::log_throttle::LogThrottle,
    /// The OpenAPI document, set once the routes that describe it are assembled.
    pub openapi: std::sync::OnceLock<openapi::Document>,
    /// The E2B API's polling file watchers.
    pub e2b_watchers: e2b::Watchers,
}

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// JSON like Go's encoder writes it: compact, with a trailing newline.
pub fn json_response<T: Serialize + ?Sized>(status: StatusCode, value: &T) -> Response {
    let mut body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    body.push(b'\n');
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

/// The state every handler extracts.
pub type St = axum::extract::State<AppState>;
/// The `{id}` of a sandbox's routes.
pub type SbId = axum::extract::Path<stacyvm_types::SandboxId>;
/// The `{id}` and `{pid}` of a process's routes.
pub type SbPid = axum::extract::Path<(stacyvm_types::SandboxId, String)>;

/// What a handler answers: a response, or an error mapped to its status and code.
pub type Reply = Result<Response, error::ApiError>;

pub fn ok<T: Serialize + ?Sized>(value: &T) -> Response {
    json_response(StatusCode::OK, value)
}

/// A 200 with a JSON array: each of `items` through its `view`.
pub fn ok_each<'a, T, V: Serialize>(items: &'a [T], view: impl Fn(&'a T) -> V) -> Response {
    ok(&items.iter().map(view).collect::<Vec<_>>())
}

/// Unknown routes: E2B's paths get E2B's JSON 404 (its SDK parses every error body), the
/// rest Go's plain text.
async fn fallback(
    axum::extract::State(st): axum::extract::State<AppState>,
    req: axum::extract::Request,
) -> Response {
    if st.svc.settings().e2b.enabled && e2b::is_e2b_path(req.uri().path()) {
        return e2b::unknown(req).await;
    }
    not_found().await
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "404 page not found\n",
    )
        .into_response()
}

/// The whole HTTP API. Every `/api/v1` route is registered with `utoipa_axum::routes!`, which
/// adds its `#[utoipa::path]` documentation to the OpenAPI document served at
/// `/api/v1/openapi.json` (see `openapi.rs`).
pub fn router(svc: Service) -> Router {
    routers(svc).0
}

/// The main router, and the E2B API alone for `e2b.listen`; one state (one rate limiter).
pub fn routers(svc: Service) -> (Router, Router) {
    let limiter = rate_limit::RateLimiter::new(
        svc.settings().rate_limit.clone(),
        svc.settings().trusted_proxies.clone(),
    );
    let state = AppState(Arc::new(Shared {
        svc,
        limiter,
        unauthenticated_audit: crate::log_throttle::LogThrottle::new(
            60,
            std::time::Duration::from_secs(60),
        ),
        openapi: std::sync::OnceLock::new(),
        e2b_watchers: e2b::Watchers::default(),
    }));
    (main_router(state.clone()), e2b_router(state))
}

/// The E2B API on its own listener: its control plane, its data plane, JSON 404s elsewhere.
fn e2b_router(state: AppState) -> Router {
    let max_body = state.svc.settings().max_body_bytes;
    Router::new()
        .merge(e2b::routes(state.clone()))
        .fallback(e2b::unknown)
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state.clone())
        .layer(from_fn_with_state(state, middleware::e2b_front))
}

fn main_router(state: AppState) -> Router {
    let max_body = state.svc.settings().max_body_bytes;

    let admin = OpenApiRouter::new()
        .merge(admin::routes())
        .merge(workers::admin_routes())
        .merge(worker_api::admin_routes())
        .merge(quotas::routes())
        .merge(system::admin_routes())
        // The audit wraps the admin check, so refused requests are recorded too.
        .layer(from_fn_with_state(state.clone(), middleware::require_admin))
        .layer(from_fn_with_state(state.clone(), middleware::admin_audit));

    let api = OpenApiRouter::new()
        .merge(sandboxes::routes())
        .merge(pause::routes())
        .merge(exec::routes())
        .merge(files::routes())
        .merge(processes::routes())
        .merge(templates::routes())
        .merge(volumes::routes())
        .merge(snapshots::routes())
        .merge(quotas::routes().layer(from_fn_with_state(
            state.clone(),
            middleware::quota_writes_need_admin,
        )))
        .merge(system::routes())
        .merge(metrics_history::routes())
        .merge(workers::routes())
        .nest("/admin", admin)
        .fallback(not_found)
        .layer(from_fn_with_state(state.clone(), middleware::api_gate));

    // Worker-facing routes: worker credentials only, no API key, CORS or rate limit.
    let worker =
        worker_api::routes().layer(from_fn_with_state(state.clone(), worker_api::authenticate));
    let (v1, doc) = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .merge(worker)
        .merge(api)
        .split_for_parts();
    let _ = state.openapi.set(openapi::Document::new(doc));
    let mut inner = Router::new().nest("/api/v1", v1);
    if state.svc.settings().e2b.enabled {
        // E2B's control plane lives at the root, where no native route is.
        inner = inner.merge(e2b::routes(state.clone()));
    }
    if state.svc.settings().ui {
        // The operator console's static files (docs/console.md); no key, CORS or rate limit:
        // they hold no data, and every API call the page makes passes the API's gate.
        inner = inner.merge(ui::routes());
    }
    let inner = inner
        // Every matched route, so latency is labelled by its template (docs/metrics.md).
        .route_layer(request_metrics::RequestMetricsLayer::new(
            state.svc.system().request_metrics(),
        ))
        .fallback(fallback)
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state.clone());
    // Preview proxying, the trailing-slash rule and request ids wrap the whole router
    // (`middleware::front`): the path is normalised before routing.
    Router::new()
        .fallback_service(inner)
        .layer(from_fn_with_state(state, middleware::front))
}
