//! Wire shapes of the service's typed results (system, workers, admission, operations).
//!
//! Each view borrows the result it shows and is serialised straight to bytes. Fields are in
//! alphabetical order and optional ones are left out when empty: the bytes are those of the
//! sorted-key maps the API has always written (`views_tests.rs` holds them to that).

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Map, Value};
use stacyvm_types::{format_rfc3339_secs, GoDuration, WorkerId};
use utoipa::ToSchema;

use crate::ops::OpStats;
use crate::service::{
    AdmissionDecision, EventCounts, LeaseCounts, ProviderDetail, ProviderHealth, QueueStats,
    QuotaSummary, SandboxCounts, WorkerCounts, WorkerInfo,
};
use crate::settings::Limits;

/// `{"status": "..."}`, the answer of deletes and other actions.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Status {
    /// What was done: `destroyed`, `deleted`, `written`, `moved`, `chmod applied`
    pub status: &'static str,
}

/// A provider and its last health check.
#[derive(Serialize, ToSchema)]
#[schema(as = ProviderInfo)]
pub struct ProviderHealthView<'a> {
    #[schema(value_type = Vec<String>)]
    capabilities: &'a [&'static str],
    default: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    healthy: bool,
    /// Only `/diagnostics` shows it.
    #[serde(skip_serializing_if = "Option::is_none")]
    isolated: Option<bool>,
    #[schema(format = DateTime)]
    last_checked: String,
    latency_ms: f64,
    name: &'a str,
}

pub fn provider_health(h: &ProviderHealth) -> ProviderHealthView<'_> {
    ProviderHealthView {
        capabilities: &h.capabilities,
        default: h.default,
        error: h.error.as_deref(),
        healthy: h.healthy,
        isolated: None,
        last_checked: format_rfc3339_secs(&h.last_checked),
        latency_ms: h.latency_ms,
        name: &h.name,
    }
}

/// [`provider_health`] with `isolated`, as `/diagnostics` lists providers.
pub fn provider_health_isolated(h: &ProviderHealth) -> ProviderHealthView<'_> {
    ProviderHealthView {
        isolated: Some(h.isolated),
        ..provider_health(h)
    }
}

/// A provider, its health and its (redacted) configuration.
#[derive(Serialize, ToSchema)]
#[schema(as = ProviderDetail)]
pub struct ProviderDetailView<'a> {
    #[schema(value_type = Object)]
    config: &'a Value,
    default: bool,
    /// `null` when the provider is no longer registered.
    #[schema(required = true)]
    health: Option<ProviderHealthView<'a>>,
    healthy: bool,
    isolated: bool,
    name: &'a str,
    sandbox_count: usize,
}

pub fn provider_detail(d: &ProviderDetail) -> ProviderDetailView<'_> {
    ProviderDetailView {
        config: &d.config,
        default: d.default,
        health: d.health.as_ref().map(provider_health),
        healthy: d.health.as_ref().is_some_and(|h| h.healthy),
        isolated: d.isolated,
        name: &d.name,
        sandbox_count: d.sandbox_count,
    }
}

/// A registered worker (`local` is the control plane itself).
#[derive(Serialize, ToSchema)]
#[schema(as = Worker)]
pub struct WorkerView<'a> {
    #[schema(required = true)]
    capabilities: Option<&'a Vec<String>>,
    /// Free-form; read: `max_sandboxes`, `rpc_url`, `preview_domain`
    #[schema(value_type = Object)]
    capacity: &'a Map<String, Value>,
    #[schema(format = DateTime)]
    created_at: String,
    hostname: &'a str,
    id: &'a str,
    #[schema(format = DateTime)]
    last_heartbeat: String,
    #[schema(required = true)]
    providers: Option<&'a Vec<String>>,
    stale: bool,
    #[schema(example = "online")]
    status: &'a str,
    #[schema(format = DateTime)]
    updated_at: String,
}

pub fn worker(w: &WorkerInfo) -> WorkerView<'_> {
    let r = &w.record;
    WorkerView {
        capabilities: r.capabilities.as_ref(),
        capacity: &r.capacity,
        created_at: format_rfc3339_secs(&r.created_at),
        hostname: &r.hostname,
        id: &r.id,
        last_heartbeat: format_rfc3339_secs(&r.last_heartbeat),
        providers: r.providers.as_ref(),
        stale: w.stale,
        status: &r.status,
        updated_at: format_rfc3339_secs(&r.updated_at),
    }
}

#[derive(Serialize)]
pub struct WorkerCountsView<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    items: Vec<WorkerView<'a>>,
    online: usize,
    stale: usize,
    total: usize,
    unhealthy: usize,
}

pub fn worker_counts(c: &WorkerCounts) -> WorkerCountsView<'_> {
    WorkerCountsView {
        error: c.error.as_deref(),
        items: c.items.iter().map(worker).collect(),
        online: c.online,
        stale: c.stale,
        total: c.total,
        unhealthy: c.unhealthy,
    }
}

#[derive(Serialize)]
pub struct SandboxCountsView<'a> {
    active: i64,
    by_provider: &'a BTreeMap<String, i64>,
    by_state: &'a BTreeMap<String, i64>,
    by_worker: &'a BTreeMap<String, i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    total: usize,
}

pub fn sandbox_counts(c: &SandboxCounts) -> SandboxCountsView<'_> {
    SandboxCountsView {
        active: c.active,
        by_provider: &c.by_provider,
        by_state: &c.by_state,
        by_worker: &c.by_worker,
        error: c.error.as_deref(),
        total: c.total,
    }
}

#[derive(Serialize)]
pub struct LeaseCountsView<'a> {
    active: usize,
    by_holder: &'a BTreeMap<String, i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    expired: usize,
    total: usize,
}

pub fn lease_counts(c: &LeaseCounts) -> LeaseCountsView<'_> {
    LeaseCountsView {
        active: c.active,
        by_holder: &c.by_holder,
        error: c.error.as_deref(),
        expired: c.expired,
        total: c.total,
    }
}

#[derive(Serialize)]
pub struct EventCountsView {
    events_total: u64,
    /// Nothing is replayed; the original reports its (empty) history this way.
    history_size: u64,
    subscribers: usize,
}

pub fn event_counts(c: EventCounts) -> EventCountsView {
    EventCountsView {
        events_total: c.total,
        history_size: 0,
        subscribers: c.subscribers,
    }
}

/// Exactly these keys (the Python SDK's `QuotaSummary` rejects others).
#[derive(Serialize, ToSchema)]
#[schema(as = QuotaSummary)]
#[serde(deny_unknown_fields)]
pub struct QuotaSummaryView {
    total: i64,
    with_max_exec_timeout: i64,
    with_max_sandboxes: i64,
    with_max_ttl: i64,
}

/// `None` (the store could not be read) shows zeros.
pub fn quota_summary(s: Option<&QuotaSummary>) -> QuotaSummaryView {
    QuotaSummaryView {
        total: s.map_or(0, |s| s.total),
        with_max_exec_timeout: s.map_or(0, |s| s.with_max_exec_timeout),
        with_max_sandboxes: s.map_or(0, |s| s.with_max_sandboxes),
        with_max_ttl: s.map_or(0, |s| s.with_max_ttl),
    }
}

#[derive(Serialize)]
pub struct OpView<'a> {
    failure_total: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_error: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_observed_unix: Option<i64>,
    latency_avg_ms: f64,
    latency_count: u64,
    latency_max_ms: f64,
    latency_min_ms: f64,
    latency_total_ms: f64,
    operation: &'a str,
    provider: &'a str,
    success_total: u64,
}

pub fn operations(ops: &[(String, String, OpStats)]) -> Vec<OpView<'_>> {
    ops.iter()
        .map(|(op, provider, s)| OpView {
            failure_total: s.failure_total,
            last_error: s.last_error.as_deref(),
            last_observed_unix: (s.last_observed_unix > 0).then_some(s.last_observed_unix),
            latency_avg_ms: if s.latency_count > 0 {
                s.latency_total_ms / s.latency_count as f64
            } else {
                0.0
            },
            latency_count: s.latency_count,
            latency_max_ms: s.latency_max_ms,
            latency_min_ms: s.latency_min_ms,
            latency_total_ms: s.latency_total_ms,
            operation: op,
            provider,
            success_total: s.success_total,
        })
        .collect()
}

#[derive(Serialize)]
pub struct SchedulerView {
    admission_control: &'static str,
    max_spawn_queue: i64,
    spawn_dequeued_total: u64,
    spawn_overflow: &'static str,
    spawn_queue_depth: i64,
    spawn_queue_timeout: String,
    spawn_queue_timeouts: u64,
    spawn_queue_wait_avg: String,
    spawn_queue_wait_avg_ms: f64,
    spawn_queue_wait_count: u64,
    spawn_queue_wait_max: String,
    spawn_queue_wait_max_ms: f64,
    spawn_queue_wait_total: String,
    spawn_queue_wait_total_ms: f64,
    spawn_queued_total: u64,
    worker_id: &'static str,
}

pub fn scheduler(q: &QueueStats, l: &Limits) -> SchedulerView {
    let avg = if q.wait_count > 0 {
        q.wait_total_ms / q.wait_count as f64
    } else {
        0.0
    };
    let dur = |ms: f64| GoDuration((ms * 1e6) as i64).to_string();
    SchedulerView {
        admission_control: "worker_aware_local",
        max_spawn_queue: l.max_spawn_queue,
        spawn_dequeued_total: q.dequeued_total,
        spawn_overflow: l.spawn_overflow.as_str(),
        spawn_queue_depth: q.depth,
        spawn_queue_timeout: l.spawn_queue_timeout.to_string(),
        spawn_queue_timeouts: q.timeouts,
        spawn_queue_wait_avg: dur(avg),
        spawn_queue_wait_avg_ms: avg,
        spawn_queue_wait_count: q.wait_count,
        spawn_queue_wait_max: dur(q.wait_max_ms),
        spawn_queue_wait_max_ms: q.wait_max_ms,
        spawn_queue_wait_total: dur(q.wait_total_ms),
        spawn_queue_wait_total_ms: q.wait_total_ms,
        spawn_queued_total: q.queued_total,
        worker_id: WorkerId::LOCAL,
    }
}

#[derive(Serialize)]
pub struct LimitsView {
    default_exec_timeout: String,
    max_exec_timeout: String,
    max_sandboxes: i64,
    max_sandboxes_per_owner: i64,
    max_spawn_queue: i64,
    max_ttl: String,
    spawn_overflow: &'static str,
    spawn_queue_timeout: String,
}

pub fn limits(l: &Limits) -> LimitsView {
    LimitsView {
        default_exec_timeout: l.default_exec_timeout.to_string(),
        max_exec_timeout: l.max_exec_timeout.to_string(),
        max_sandboxes: l.max_sandboxes,
        max_sandboxes_per_owner: l.max_sandboxes_per_owner,
        max_spawn_queue: l.max_spawn_queue,
        max_ttl: l.max_ttl.to_string(),
        spawn_overflow: l.spawn_overflow.as_str(),
        spawn_queue_timeout: l.spawn_queue_timeout.to_string(),
    }
}

/// The answer of `POST /sandboxes/admission`. Placement is not shown: the Python SDK's
/// dataclass rejects unknown keys.
#[derive(Serialize, ToSchema)]
#[schema(as = AdmissionDecision, description = "What admission would decide for this spawn.")]
#[serde(deny_unknown_fields)]
pub struct AdmissionView {
    #[serde(skip_serializing_if = "Option::is_none")]
    active_owner_sandboxes: Option<i64>,
    active_sandboxes: i64,
    allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_owner_sandboxes: Option<i64>,
    /// 0 = unlimited
    max_sandboxes: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<GoDuration>)]
    max_ttl: Option<String>,
    queueable: bool,
    /// `max_ttl`, `worker_unavailable`, `remote_worker_rpc_unavailable`, `max_sandboxes`,
    /// `max_sandboxes_per_owner`
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = super::openapi::admission_reasons)]
    reason: Option<&'static str>,
}

pub fn admission(d: &AdmissionDecision) -> AdmissionView {
    AdmissionView {
        active_owner_sandboxes: d.active_owner_sandboxes,
        active_sandboxes: d.active_sandboxes,
        allowed: d.allowed,
        max_owner_sandboxes: d.max_owner_sandboxes,
        max_sandboxes: d.max_sandboxes,
        max_ttl: d.max_ttl.map(|t| t.to_string()),
        queueable: d.queueable,
        reason: d.reason,
    }
}

#[cfg(test)]
#[path = "views_tests.rs"]
mod tests;
