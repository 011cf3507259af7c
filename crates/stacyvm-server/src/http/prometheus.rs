//! The Prometheus gauges of one scrape: the figures `/metrics` reports, under the original's
//! names, labels and help texts. The service renders them ahead of its live series
//! ([`crate::service::System::prometheus`]).

use serde_json::{Map, Value};

use crate::metrics::{Gauges, Labels};
use crate::service::Overview;

fn num(v: &Value, path: &[&str]) -> f64 {
    let mut cur = v;
    for p in path {
        cur = &cur[*p];
    }
    cur.as_f64().unwrap_or(0.0)
}

/// One sample per key of the object `v[key]`, labelled `label="<key>"`.
fn by(v: &Value, key: &str, label: &'static str) -> Vec<(Labels, f64)> {
    v[key]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, n)| (vec![(label, k.clone())], n.as_f64().unwrap_or(0.0)))
                .collect()
        })
        .unwrap_or_default()
}

/// One sample per name in `keys`, labelled `label="<key>"`, read from `v[prefix + key]`.
fn each(v: &Value, label: &'static str, keys: &[&str], prefix: &str) -> Vec<(Labels, f64)> {
    keys.iter()
        .map(|k| {
            let field = format!("{prefix}{k}");
            (vec![(label, (*k).to_string())], num(v, &[&field]))
        })
        .collect()
}

/// `ov` is the overview behind `m` (the shared `/metrics` map).
pub fn gauges(ov: &Overview, m: Map<String, Value>, mem: (u64, u64)) -> Gauges {
    let m = Value::Object(m);
    let mut g = Gauges::default();
    g.one(
        "stacyvm_uptime_seconds",
        "Process uptime in seconds.",
        ov.uptime.as_secs_f64(),
    );
    g.one(
        "stacyvm_runtime_goroutines",
        "Tracked background tasks.",
        ov.tasks as f64,
    );
    g.one(
        "stacyvm_runtime_memory_alloc_bytes",
        "Resident memory.",
        mem.0 as f64,
    );
    g.one(
        "stacyvm_runtime_memory_sys_bytes",
        "Virtual memory.",
        mem.1 as f64,
    );
    g.one("stacyvm_runtime_gc_cycles_total", "Always 0 (no GC).", 0.0);
    let sb = &m["sandboxes"];
    g.add(
        "stacyvm_sandboxes_total",
        "Sandboxes by state.",
        by(sb, "by_state", "state"),
    );
    g.add(
        "stacyvm_sandboxes_by_provider_total",
        "Sandboxes by provider.",
        by(sb, "by_provider", "provider"),
    );
    g.add(
        "stacyvm_sandboxes_by_worker_total",
        "Sandboxes by worker.",
        by(sb, "by_worker", "worker"),
    );
    let health = &ov.providers;
    g.add(
        "stacyvm_provider_healthy",
        "Provider health (1 healthy).",
        health.iter().map(|h| {
            let labels = vec![
                ("provider", h.name.clone()),
                ("default", h.default.to_string()),
            ];
            (labels, f64::from(u8::from(h.healthy)))
        }),
    );
    g.add(
        "stacyvm_provider_health_latency_milliseconds",
        "Provider health check latency.",
        health
            .iter()
            .map(|h| (vec![("provider", h.name.clone())], h.latency_ms)),
    );
    g.add(
        "stacyvm_provider_runtime_sandboxes",
        "Sandboxes by provider.",
        by(sb, "by_provider", "provider"),
    );
    g.add(
        "stacyvm_workers_total",
        "Workers by status.",
        each(
            &m["workers"],
            "status",
            &["total", "online", "stale", "unhealthy"],
            "",
        ),
    );
    g.add(
        "stacyvm_leases_total",
        "Leases by status.",
        each(&m["leases"], "status", &["total", "active", "expired"], ""),
    );
    g.one(
        "stacyvm_events_total",
        "Events published.",
        num(&m, &["events", "events_total"]),
    );
    g.one(
        "stacyvm_event_subscribers",
        "Event subscribers.",
        num(&m, &["events", "subscribers"]),
    );
    g.one("stacyvm_event_history_size", "Event history size.", 0.0);
    let s = &m["scheduler"];
    for (name, help, key) in [
        (
            "stacyvm_spawn_queue_depth",
            "Spawns waiting.",
            "spawn_queue_depth",
        ),
        (
            "stacyvm_spawn_queue_capacity",
            "Spawn queue capacity.",
            "max_spawn_queue",
        ),
        (
            "stacyvm_spawn_queue_enqueued_total",
            "Spawns queued.",
            "spawn_queued_total",
        ),
        (
            "stacyvm_spawn_queue_dequeued_total",
            "Spawns dequeued.",
            "spawn_dequeued_total",
        ),
        (
            "stacyvm_spawn_queue_timeout_total",
            "Spawn queue timeouts.",
            "spawn_queue_timeouts",
        ),
        (
            "stacyvm_spawn_queue_wait_milliseconds_sum",
            "Queue wait sum.",
            "spawn_queue_wait_total_ms",
        ),
        (
            "stacyvm_spawn_queue_wait_milliseconds_count",
            "Queue wait count.",
            "spawn_queue_wait_count",
        ),
        (
            "stacyvm_spawn_queue_wait_milliseconds_max",
            "Queue wait max.",
            "spawn_queue_wait_max_ms",
        ),
    ] {
        g.one(name, help, num(s, &[key]));
    }
    let q = &m["quotas"];
    g.one(
        "stacyvm_owner_quotas_total",
        "Owner quotas.",
        num(q, &["total"]),
    );
    g.add(
        "stacyvm_owner_quota_overrides_total",
        "Owner quota overrides by type.",
        each(
            q,
            "type",
            &["max_sandboxes", "max_ttl", "max_exec_timeout"],
            "with_",
        ),
    );
    let r = &m["rate_limit"];
    for (name, help, key) in [
        (
            "stacyvm_rate_limit_allowed_total",
            "Requests allowed.",
            "allowed_total",
        ),
        (
            "stacyvm_rate_limit_blocked_total",
            "Requests limited.",
            "limited_total",
        ),
        (
            "stacyvm_rate_limit_evicted_buckets_total",
            "Buckets evicted.",
            "evicted_total",
        ),
        (
            "stacyvm_rate_limit_active_buckets",
            "Active buckets.",
            "active_buckets",
        ),
    ] {
        g.one(name, help, num(r, &[key]));
    }
    let ops = &ov.operations;
    let series = |f: &dyn Fn(&crate::ops::OpStats) -> f64| -> Vec<(Labels, f64)> {
        ops.iter()
            .map(|(op, p, s)| {
                let labels = vec![("operation", op.clone()), ("provider", p.clone())];
                (labels, f(s))
            })
            .collect()
    };
    g.add(
        "stacyvm_operation_success_total",
        "Operation successes.",
        series(&|s| s.success_total as f64),
    );
    g.add(
        "stacyvm_operation_failure_total",
        "Operation failures.",
        series(&|s| s.failure_total as f64),
    );
    g.add(
        "stacyvm_operation_latency_milliseconds_sum",
        "Operation latency sum.",
        series(&|s| s.latency_total_ms),
    );
    g.add(
        "stacyvm_operation_latency_milliseconds_count",
        "Operation latency count.",
        series(&|s| s.latency_count as f64),
    );
    g.add(
        "stacyvm_operation_latency_milliseconds_max",
        "Operation latency max.",
        series(&|s| s.latency_max_ms),
    );
    g
}
