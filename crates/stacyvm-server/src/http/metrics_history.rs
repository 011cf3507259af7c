//! `GET /metrics/history`: the last hour of this control plane's spawns, spawn latency and
//! running sandboxes by worker, per minute (the console's charts; docs/console.md).

use std::collections::BTreeMap;

use axum::extract::State;
use axum::response::Response;
use serde::Serialize;
use stacyvm_types::format_rfc3339_go;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ok, AppState, St};
use crate::metrics::{HistorySnapshot, LatencyFigures, MinuteFigures};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(history))
}

/// Spawn latency over a span (successful spawns only).
#[derive(Serialize, ToSchema)]
#[schema(as = SpawnLatency)]
struct LatencyView {
    /// Spawns measured
    count: u64,
    /// Median, in milliseconds (the upper bound of an 8 % wide bucket)
    p50: f64,
    /// 99th percentile, in milliseconds (nearest rank; the same bucketing)
    p99: f64,
}

/// One minute.
#[derive(Serialize, ToSchema)]
#[schema(as = MetricsMinute)]
struct MinuteView {
    /// Running sandboxes by worker at the minute's sample (taken just after the minute
    /// starts); `null` when the minute was not sampled (the server was not running)
    active_by_worker: Option<BTreeMap<String, i64>>,
    /// Successful spawns' latency by provider
    latency_ms: BTreeMap<String, LatencyView>,
    /// Spawns the provider failed (admission refusals are not counted)
    spawn_failures: u64,
    /// Spawns that succeeded
    spawns: u64,
    /// The minute's first second
    #[schema(format = DateTime)]
    start: String,
}

/// The last hour, one entry per minute, oldest first; the last entry is the current minute,
/// still counting.
#[derive(Serialize, ToSchema)]
#[schema(as = MetricsHistory)]
struct HistoryView {
    /// Always 60
    bucket_seconds: u32,
    /// Latency by provider over the whole window
    latency_ms: BTreeMap<String, LatencyView>,
    minutes: Vec<MinuteView>,
}

fn latency(m: &BTreeMap<String, LatencyFigures>) -> BTreeMap<String, LatencyView> {
    m.iter()
        .map(|(p, f)| {
            (
                p.clone(),
                LatencyView {
                    count: f.count,
                    p50: f.p50_ms,
                    p99: f.p99_ms,
                },
            )
        })
        .collect()
}

fn minute(m: &MinuteFigures) -> MinuteView {
    MinuteView {
        active_by_worker: m.active_by_worker.clone(),
        latency_ms: latency(&m.latency),
        spawn_failures: m.spawn_failures,
        spawns: m.spawns,
        start: format_rfc3339_go(&m.start),
    }
}

fn view(s: &HistorySnapshot) -> HistoryView {
    HistoryView {
        bucket_seconds: 60,
        latency_ms: latency(&s.latency),
        minutes: s.minutes.iter().map(minute).collect(),
    }
}

/// The last hour of spawns, per minute
///
/// Kept in memory by this control plane (a restart starts an empty hour; with several
/// control planes each counts the spawns it made, while `active_by_worker` counts every
/// running sandbox in the store). Spawns, spawn failures and spawn latency (p50/p99 by
/// provider) per minute, and running sandboxes by worker sampled once a minute.
#[utoipa::path(get, path = "/metrics/history", operation_id = "metricsHistory", tag = "system",
    responses((status = 200, description = "OK", body = HistoryView)))]
async fn history(State(st): St) -> Response {
    ok(&view(&st.svc.system().metrics_history()))
}
