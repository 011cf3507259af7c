//! System routes: health, readiness, providers, metrics, diagnostics, events, openapi.

use std::convert::Infallible;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Map, Value};

use super::error::ApiError;
use stacyvm_types::GoDuration;

use super::{json_response, ok, openapi, views, AppState};
use crate::service::Overview;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/health", get(health))
        .route("/live", get(live))
        .route("/ready", get(ready))
        .route("/diagnostics", get(diagnostics))
        .route("/metrics", get(metrics))
        .route("/metrics/prometheus", get(prometheus))
        .route("/events", get(events))
        .route("/system/stats", get(system_stats))
        .route("/snapshots", get(snapshots))
        .route("/pool/status", get(pool_status))
        .route("/openapi.json", get(openapi_doc))
        .merge(provider_routes())
}

pub fn admin_routes() -> Router<AppState> {
    Router::new()
        .route("/diagnostics", get(diagnostics))
        .route("/metrics", get(metrics))
        .route("/metrics/prometheus", get(prometheus))
        .merge(provider_routes())
}

fn provider_routes() -> Router<AppState> {
    Router::new()
        .route("/providers", get(providers))
        .route("/providers/test", post(providers_test))
        .route("/providers/{name}", get(provider_detail))
}

async fn health(State(st): State<AppState>) -> Response {
    ok(&json!({"status": "ok", "version": st.svc.version(), "uptime": st.svc.uptime_string()}))
}

async fn live(State(st): State<AppState>) -> Response {
    ok(&json!({"status": "alive", "version": st.svc.version(), "uptime": st.svc.uptime_string()}))
}

async fn ready(State(st): State<AppState>) -> Response {
    let r = st.svc.system().ready().await;
    let providers: Vec<_> = r.providers.iter().map(views::provider_health).collect();
    let ready_n = r.providers.iter().filter(|p| p.healthy).count();
    let body = json!({"status": if r.ready {"ready"} else {"not_ready"}, "version": st.svc.version(),
        "uptime": st.svc.uptime_string(), "providers": providers, "ready_providers": ready_n,
        "total_providers": r.providers.len()});
    let status = if r.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json_response(status, &body)
}

async fn providers(State(st): State<AppState>) -> Response {
    let health = st.svc.system().provider_health().await;
    ok(&health
        .iter()
        .map(views::provider_health)
        .collect::<Vec<_>>())
}

async fn providers_test(State(st): State<AppState>) -> Response {
    let m: Map<String, Value> = st
        .svc
        .system()
        .provider_health()
        .await
        .into_iter()
        .map(|p| (p.name, json!(p.healthy)))
        .collect();
    ok(&Value::Object(m))
}

async fn provider_detail(
    State(st): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let d = st.svc.system().provider_detail(&name).await?;
    Ok(ok(&views::provider_detail(&d)))
}

async fn snapshots() -> Response {
    ok(&json!([]))
}

async fn pool_status() -> Response {
    ok(&json!({"enabled": false}))
}

async fn openapi_doc() -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        openapi::DOCUMENT,
    )
        .into_response()
}

/// Resident and virtual memory of this process, from /proc (0 where unavailable).
fn memory() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    (kb("VmRSS:"), kb("VmSize:"))
}

/// The parts `/metrics`, `/diagnostics` and Prometheus share.
fn common(st: &AppState, o: &Overview) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert(
        "sandboxes".into(),
        json!(views::sandbox_counts(&o.sandboxes)),
    );
    m.insert("workers".into(), json!(views::worker_counts(&o.workers)));
    m.insert("leases".into(), json!(views::lease_counts(&o.leases)));
    m.insert("events".into(), json!(views::event_counts(o.events)));
    m.insert("operations".into(), json!(views::operations(&o.operations)));
    m.insert(
        "scheduler".into(),
        json!(views::scheduler(&o.scheduler, &st.svc.settings().limits)),
    );
    m.insert("rate_limit".into(), st.limiter.to_json());
    m.insert(
        "quotas".into(),
        json!(views::quota_summary(o.quotas.as_ref())),
    );
    m
}

fn uptime(d: std::time::Duration) -> String {
    GoDuration::from_std(d).to_string()
}

async fn metrics(State(st): State<AppState>) -> Response {
    let o = st.svc.system().overview().await;
    let mut m = common(&st, &o);
    let (rss, vsz) = memory();
    let health = &o.providers;
    m.insert("uptime".into(), json!(uptime(o.uptime)));
    m.insert("goroutines".into(), json!(o.tasks));
    m.insert("memory_alloc".into(), json!(rss));
    m.insert("memory_sys".into(), json!(vsz));
    m.insert("memory_heap_alloc".into(), json!(rss));
    m.insert("gc_cycles".into(), json!(0));
    m.insert(
        "providers".into(),
        json!({"total": health.len(),
        "healthy": health.iter().filter(|h| h.healthy).count(),
        "items": health.iter().map(views::provider_health).collect::<Vec<_>>()}),
    );
    ok(&Value::Object(m))
}

async fn diagnostics(State(st): State<AppState>) -> Response {
    let d = st.svc.system().diagnostics().await;
    let o = &d.overview;
    let mut m = common(&st, o);
    let (rss, vsz) = memory();
    let mut store = json!({"healthy": d.store.healthy, "latency_ms": d.store.latency_ms});
    if let Some(e) = &d.store.error {
        store["error"] = json!(e);
    }
    m.insert(
        "generated_at".into(),
        json!(stacyvm_types::format_rfc3339_secs(&chrono::Utc::now())),
    );
    m.insert(
        "build".into(),
        json!({"version": st.svc.version(), "goos": std::env::consts::OS,
        "goarch": std::env::consts::ARCH}),
    );
    m.insert(
        "process".into(),
        json!({"uptime": uptime(o.uptime), "goroutines": o.tasks,
        "memory": {"alloc": rss, "sys": vsz, "heap_alloc": rss, "gc_cycles": 0}}),
    );
    m.insert("store".into(), store);
    m.insert(
        "control_plane".into(),
        json!({"instance_id": d.instance_id,
        "background_leader": d.background_leader}),
    );
    m.insert(
        "limits".into(),
        json!(views::limits(&st.svc.settings().limits)),
    );
    m.insert(
        "providers".into(),
        json!(o
            .providers
            .iter()
            .map(views::provider_health_isolated)
            .collect::<Vec<_>>()),
    );
    m.insert(
        "remediation".into(),
        json!({
            "provider_unhealthy": "docs/configuration.md#providers",
            "store_unhealthy": "docs/store.md",
            "worker_stale": "docs/architecture.md#workers",
            "spawn_queue_full": "docs/configuration.md#defaults",
            "rate_limited": "docs/configuration.md#rate_limit",
        }),
    );
    m.insert(
        "redactions".into(),
        json!([
            "provider secrets",
            "registry credentials",
            "environment secrets",
            "API keys"
        ]),
    );
    ok(&Value::Object(m))
}

async fn prometheus(State(st): State<AppState>) -> Response {
    let o = st.svc.system().overview().await;
    let gauges = super::prometheus::gauges(&o, common(&st, &o), memory());
    let text = st.svc.system().prometheus(gauges);
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

async fn system_stats() -> Response {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load1: f64 = load
        .split_whitespace()
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0.0);
    ok(
        &json!({"cpu_pct": 0.0, "mem_pct": 0.0, "disk_pct": 0.0, "net_rx_bps": 0.0, "net_tx_bps": 0.0, "load1": load1}),
    )
}

/// Server-sent events: `data: <json>\n\n` per event, live only.
async fn events(State(st): State<AppState>) -> Response {
    let sub = st.svc.subscribe_events();
    let stream = futures_util::stream::unfold(sub, |mut sub| async move {
        let ev = sub.next().await?;
        let json = serde_json::to_string(&ev).unwrap_or_default();
        Some((Ok::<_, Infallible>(format!("data: {json}\n\n")), sub))
    });
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONNECTION, "keep-alive"),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}
