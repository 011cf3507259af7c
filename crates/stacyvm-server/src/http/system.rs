//! System routes: health, readiness, providers, metrics, diagnostics, events, openapi.

use std::convert::Infallible;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{json, Map, Value};
use stacyvm_types::GoDuration;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;

use super::openapi::{NotFound, ProviderNameParam};
use super::{json_response, ok, openapi, views, AppState, Reply, St};
use crate::service::Overview;

pub fn routes() -> OpenApiRouter<AppState> {
    api_routes![health; live; ready; events; system_stats; pool_status; openapi::serve]
        .merge(admin_routes())
}

/// Shared with `/admin` (the document names the admin copies `…Admin`).
pub fn admin_routes() -> OpenApiRouter<AppState> {
    api_routes![diagnostics; metrics; prometheus; providers; providers_test; provider_detail]
}

#[derive(Serialize, ToSchema)]
#[schema(as = Health)]
struct HealthView<'a> {
    #[schema(schema_with = super::openapi::health_states)]
    status: &'static str,
    #[schema(value_type = GoDuration)]
    uptime: String,
    version: &'a str,
}

fn health_view(st: &AppState, status: &'static str) -> Response {
    ok(&HealthView {
        status,
        uptime: st.svc.uptime_string(),
        version: st.svc.version(),
    })
}

/// Liveness with version
#[utoipa::path(get, path = "/health", operation_id = "health", tag = "system",
    responses((status = 200, description = "OK", body = HealthView)))]
async fn health(State(st): St) -> Response {
    health_view(&st, "ok")
}

/// Liveness
#[utoipa::path(get, path = "/live", operation_id = "live", tag = "system",
    responses((status = 200, description = "OK", body = HealthView)))]
async fn live(State(st): St) -> Response {
    health_view(&st, "alive")
}

#[derive(Serialize, ToSchema)]
#[schema(as = Ready)]
struct ReadyView<'a> {
    providers: Vec<views::ProviderHealthView<'a>>,
    ready_providers: usize,
    #[schema(schema_with = super::openapi::ready_states)]
    status: &'static str,
    total_providers: usize,
    #[schema(value_type = GoDuration)]
    uptime: String,
    version: &'a str,
}

/// Readiness
///
/// Ready when at least one provider is healthy.
#[utoipa::path(get, path = "/ready", operation_id = "ready", tag = "system",
    responses(
        (status = 200, description = "Ready", body = ReadyView),
        (status = 503, description = "Not ready", body = ReadyView),
    ))]
async fn ready(State(st): St) -> Response {
    let r = st.svc.system().ready().await;
    let body = ReadyView {
        providers: r.providers.iter().map(views::provider_health).collect(),
        ready_providers: r.providers.iter().filter(|p| p.healthy).count(),
        status: if r.ready { "ready" } else { "not_ready" },
        total_providers: r.providers.len(),
        uptime: st.svc.uptime_string(),
        version: st.svc.version(),
    };
    let status = if r.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json_response(status, &body)
}

/// Providers with health
#[utoipa::path(get, path = "/providers", operation_id = "listProviders", tag = "system",
    responses((status = 200, description = "OK", body = Vec<views::ProviderHealthView>)))]
async fn providers(State(st): St) -> Response {
    let health = st.svc.system().provider_health().await;
    ok(&health
        .iter()
        .map(views::provider_health)
        .collect::<Vec<_>>())
}

/// Health-check every provider
#[utoipa::path(post, path = "/providers/test", operation_id = "testProviders", tag = "system",
    responses((status = 200, description = "OK", body = BTreeMap<String, bool>,
        example = json!({"mock": true}))))]
async fn providers_test(State(st): St) -> Response {
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

/// Provider detail
#[utoipa::path(get, path = "/providers/{name}", operation_id = "getProvider", tag = "system",
    params(ProviderNameParam),
    responses(
        (status = 200, description = "OK", body = views::ProviderDetailView),
        (status = 404, response = NotFound),
    ))]
async fn provider_detail(State(st): St, Path(name): Path<String>) -> Reply {
    let d = st.svc.system().provider_detail(&name).await?;
    Ok(ok(&views::provider_detail(&d)))
}

#[derive(Serialize, ToSchema)]
#[schema(as = PoolStatus)]
struct PoolStatusView {
    enabled: bool,
}

/// VM pool status
///
/// There is no pool: always disabled.
#[utoipa::path(get, path = "/pool/status", operation_id = "poolStatus", tag = "system",
    responses((status = 200, description = "OK", body = PoolStatusView)))]
async fn pool_status() -> Response {
    ok(&PoolStatusView { enabled: false })
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

/// Metrics as JSON
#[utoipa::path(get, path = "/metrics", operation_id = "metrics", tag = "system",
    responses((status = 200, description = "OK", body = Object)))]
async fn metrics(State(st): St) -> Response {
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

/// Diagnostics bundle (secrets redacted)
#[utoipa::path(get, path = "/diagnostics", operation_id = "diagnostics", tag = "system",
    responses((status = 200, description = "OK", body = Object)))]
async fn diagnostics(State(st): St) -> Response {
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

/// Metrics in Prometheus text format
#[utoipa::path(get, path = "/metrics/prometheus", operation_id = "prometheus", tag = "system",
    responses((status = 200, description = "text/plain; version=0.0.4", body = String,
        content_type = "text/plain")))]
async fn prometheus(State(st): St) -> Response {
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

/// Host figures (only `load1` is measured; the rest are 0).
#[derive(Serialize, ToSchema)]
#[schema(as = SystemStats)]
struct SystemStatsView {
    cpu_pct: f64,
    disk_pct: f64,
    load1: f64,
    mem_pct: f64,
    net_rx_bps: f64,
    net_tx_bps: f64,
}

/// Host statistics
#[utoipa::path(get, path = "/system/stats", operation_id = "systemStats", tag = "system",
    responses((status = 200, description = "OK", body = SystemStatsView)))]
async fn system_stats() -> Response {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load1: f64 = load
        .split_whitespace()
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0.0);
    ok(&SystemStatsView {
        cpu_pct: 0.0,
        disk_pct: 0.0,
        load1,
        mem_pct: 0.0,
        net_rx_bps: 0.0,
        net_tx_bps: 0.0,
    })
}

/// Server-sent events
///
/// Each `data:` line carries an `Event` object (see components).
#[utoipa::path(get, path = "/events", operation_id = "events", tag = "system",
    responses((status = 200,
        description = "`text/event-stream`; each event is `data: <Event JSON>\\n\\n`. Live only, no replay.",
        body = String, content_type = "text/event-stream")))]
async fn events(State(st): St) -> Response {
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
