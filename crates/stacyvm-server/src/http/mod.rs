//! HTTP transport: routes, middleware, encoding. Handlers decode, call the service, encode.

mod admin;
mod dto;
pub mod error;
mod exec;
mod extract;
mod files;
mod middleware;
mod openapi;
mod output;
mod pause;
mod preview;
mod processes;
mod prometheus;
mod quotas;
mod rate_limit;
mod request_metrics;
mod sandboxes;
mod system;
mod templates;
mod views;
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

pub fn ok<T: Serialize + ?Sized>(value: &T) -> Response {
    json_response(StatusCode::OK, value)
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
    }));
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
        .merge(quotas::routes().layer(from_fn_with_state(
            state.clone(),
            middleware::quota_writes_need_admin,
        )))
        .merge(system::routes())
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
    let inner = Router::new()
        .nest("/api/v1", v1)
        // Every matched route, so latency is labelled by its template (docs/metrics.md).
        .route_layer(request_metrics::RequestMetricsLayer::new(
            state.svc.system().request_metrics(),
        ))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state.clone());
    // Preview proxying, the trailing-slash rule and request ids wrap the whole router
    // (`middleware::front`): the path is normalised before routing.
    Router::new()
        .fallback_service(inner)
        .layer(from_fn_with_state(state, middleware::front))
}
