//! Prometheus text exposition of the same figures `/metrics` reports.

use std::fmt::Write;

use serde_json::{Map, Value};

use crate::service::Overview;

struct Out(String);

impl Out {
    fn gauge(&mut self, name: &str, help: &str, samples: &[(String, f64)]) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} gauge");
        for (labels, v) in samples {
            let _ = writeln!(self.0, "{name}{labels} {v}");
        }
    }
}

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn num(v: &Value, path: &[&str]) -> f64 {
    let mut cur = v;
    for p in path {
        cur = &cur[*p];
    }
    cur.as_f64().unwrap_or(0.0)
}

fn by(v: &Value, key: &str, label: &str) -> Vec<(String, f64)> {
    v[key]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, n)| {
                    (
                        format!("{{{label}=\"{}\"}}", esc(k)),
                        n.as_f64().unwrap_or(0.0),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// `ov` is the overview behind `m` (the shared `/metrics` map).
pub fn render(ov: &Overview, m: Map<String, Value>, mem: (u64, u64)) -> String {
    let m = Value::Object(m);
    let mut o = Out(String::new());
    let one = |v: f64| vec![(String::new(), v)];
    o.gauge(
        "stacyvm_uptime_seconds",
        "Process uptime in seconds.",
        &one(ov.uptime.as_secs_f64()),
    );
    o.gauge(
        "stacyvm_runtime_goroutines",
        "Tracked background tasks.",
        &one(ov.tasks as f64),
    );
    o.gauge(
        "stacyvm_runtime_memory_alloc_bytes",
        "Resident memory.",
        &one(mem.0 as f64),
    );
    o.gauge(
        "stacyvm_runtime_memory_sys_bytes",
        "Virtual memory.",
        &one(mem.1 as f64),
    );
    o.gauge(
        "stacyvm_runtime_gc_cycles_total",
        "Always 0 (no GC).",
        &one(0.0),
    );
    let sb = &m["sandboxes"];
    o.gauge(
        "stacyvm_sandboxes_total",
        "Sandboxes by state.",
        &by(sb, "by_state", "state"),
    );
    o.gauge(
        "stacyvm_sandboxes_by_provider_total",
        "Sandboxes by provider.",
        &by(sb, "by_provider", "provider"),
    );
    o.gauge(
        "stacyvm_sandboxes_by_worker_total",
        "Sandboxes by worker.",
        &by(sb, "by_worker", "worker"),
    );
    let health = &ov.providers;
    let mut healthy = Vec::new();
    let mut latency = Vec::new();
    for h in health {
        healthy.push((
            format!(
                "{{provider=\"{}\",default=\"{}\"}}",
                esc(&h.name),
                h.default
            ),
            f64::from(u8::from(h.healthy)),
        ));
        latency.push((format!("{{provider=\"{}\"}}", esc(&h.name)), h.latency_ms));
    }
    o.gauge(
        "stacyvm_provider_healthy",
        "Provider health (1 healthy).",
        &healthy,
    );
    o.gauge(
        "stacyvm_provider_health_latency_milliseconds",
        "Provider health check latency.",
        &latency,
    );
    o.gauge(
        "stacyvm_provider_runtime_sandboxes",
        "Sandboxes by provider.",
        &by(sb, "by_provider", "provider"),
    );
    let w = &m["workers"];
    o.gauge(
        "stacyvm_workers_total",
        "Workers by status.",
        &["total", "online", "stale", "unhealthy"]
            .iter()
            .map(|k| (format!("{{status=\"{k}\"}}"), num(w, &[k])))
            .collect::<Vec<_>>(),
    );
    let l = &m["leases"];
    o.gauge(
        "stacyvm_leases_total",
        "Leases by status.",
        &["total", "active", "expired"]
            .iter()
            .map(|k| (format!("{{status=\"{k}\"}}"), num(l, &[k])))
            .collect::<Vec<_>>(),
    );
    o.gauge(
        "stacyvm_events_total",
        "Events published.",
        &one(num(&m, &["events", "events_total"])),
    );
    o.gauge(
        "stacyvm_event_subscribers",
        "Event subscribers.",
        &one(num(&m, &["events", "subscribers"])),
    );
    o.gauge(
        "stacyvm_event_history_size",
        "Event history size.",
        &one(0.0),
    );
    let s = &m["scheduler"];
    o.gauge(
        "stacyvm_spawn_queue_depth",
        "Spawns waiting.",
        &one(num(s, &["spawn_queue_depth"])),
    );
    o.gauge(
        "stacyvm_spawn_queue_capacity",
        "Spawn queue capacity.",
        &one(num(s, &["max_spawn_queue"])),
    );
    o.gauge(
        "stacyvm_spawn_queue_enqueued_total",
        "Spawns queued.",
        &one(num(s, &["spawn_queued_total"])),
    );
    o.gauge(
        "stacyvm_spawn_queue_dequeued_total",
        "Spawns dequeued.",
        &one(num(s, &["spawn_dequeued_total"])),
    );
    o.gauge(
        "stacyvm_spawn_queue_timeout_total",
        "Spawn queue timeouts.",
        &one(num(s, &["spawn_queue_timeouts"])),
    );
    o.gauge(
        "stacyvm_spawn_queue_wait_milliseconds_sum",
        "Queue wait sum.",
        &one(num(s, &["spawn_queue_wait_total_ms"])),
    );
    o.gauge(
        "stacyvm_spawn_queue_wait_milliseconds_count",
        "Queue wait count.",
        &one(num(s, &["spawn_queue_wait_count"])),
    );
    o.gauge(
        "stacyvm_spawn_queue_wait_milliseconds_max",
        "Queue wait max.",
        &one(num(s, &["spawn_queue_wait_max_ms"])),
    );
    let q = &m["quotas"];
    o.gauge(
        "stacyvm_owner_quotas_total",
        "Owner quotas.",
        &one(num(q, &["total"])),
    );
    o.gauge(
        "stacyvm_owner_quota_overrides_total",
        "Owner quota overrides by type.",
        &["max_sandboxes", "max_ttl", "max_exec_timeout"]
            .iter()
            .map(|k| (format!("{{type=\"{k}\"}}"), num(q, &[&format!("with_{k}")])))
            .collect::<Vec<_>>(),
    );
    let r = &m["rate_limit"];
    o.gauge(
        "stacyvm_rate_limit_allowed_total",
        "Requests allowed.",
        &one(num(r, &["allowed_total"])),
    );
    o.gauge(
        "stacyvm_rate_limit_blocked_total",
        "Requests limited.",
        &one(num(r, &["limited_total"])),
    );
    o.gauge(
        "stacyvm_rate_limit_evicted_buckets_total",
        "Buckets evicted.",
        &one(num(r, &["evicted_total"])),
    );
    o.gauge(
        "stacyvm_rate_limit_active_buckets",
        "Active buckets.",
        &one(num(r, &["active_buckets"])),
    );
    let ops = &ov.operations;
    let lab = |op: &str, p: &str| format!("{{operation=\"{}\",provider=\"{}\"}}", esc(op), esc(p));
    let series = |f: &dyn Fn(&crate::ops::OpStats) -> f64| {
        ops.iter()
            .map(|(op, p, s)| (lab(op, p), f(s)))
            .collect::<Vec<_>>()
    };
    o.gauge(
        "stacyvm_operation_success_total",
        "Operation successes.",
        &series(&|s| s.success_total as f64),
    );
    o.gauge(
        "stacyvm_operation_failure_total",
        "Operation failures.",
        &series(&|s| s.failure_total as f64),
    );
    o.gauge(
        "stacyvm_operation_latency_milliseconds_sum",
        "Operation latency sum.",
        &series(&|s| s.latency_total_ms),
    );
    o.gauge(
        "stacyvm_operation_latency_milliseconds_count",
        "Operation latency count.",
        &series(&|s| s.latency_count as f64),
    );
    o.gauge(
        "stacyvm_operation_latency_milliseconds_max",
        "Operation latency max.",
        &series(&|s| s.latency_max_ms),
    );
    o.0
}
