//! Every view writes the bytes the former `json!` maps wrote (kept here as the reference).

#![allow(clippy::unwrap_used)]

use chrono::TimeZone;
use serde_json::json;
use stacyvm_store::WorkerRecord;

use super::*;

/// `view` serialises to exactly the bytes of `reference` (a sorted-key map).
fn same_bytes<T: Serialize>(view: &T, reference: Value) {
    assert_eq!(
        serde_json::to_string(view).unwrap(),
        reference.to_string(),
        "view bytes differ from the reference"
    );
}

fn at() -> chrono::DateTime<chrono::Utc> {
    chrono::Utc.with_ymd_and_hms(2026, 5, 8, 10, 30, 0).unwrap()
}

fn health(error: Option<&str>) -> ProviderHealth {
    ProviderHealth {
        name: "mock".into(),
        healthy: error.is_none(),
        default: true,
        latency_ms: 0.25,
        last_checked: at(),
        error: error.map(str::to_string),
        capabilities: vec!["exec", "files"],
        isolated: false,
    }
}

fn health_reference(h: &ProviderHealth) -> Value {
    let mut v = json!({
        "name": h.name, "healthy": h.healthy, "default": h.default,
        "latency_ms": h.latency_ms, "last_checked": format_rfc3339_secs(&h.last_checked),
        "capabilities": h.capabilities,
    });
    if let Some(e) = &h.error {
        v["error"] = json!(e);
    }
    v
}

#[test]
fn provider_views() {
    for h in [health(None), health(Some("down"))] {
        same_bytes(&provider_health(&h), health_reference(&h));
        let mut with_isolated = health_reference(&h);
        with_isolated["isolated"] = json!(h.isolated);
        same_bytes(&provider_health_isolated(&h), with_isolated);
    }
    for health in [Some(health(None)), None] {
        let d = ProviderDetail {
            name: "mock".into(),
            default: true,
            sandbox_count: 3,
            health: health.clone(),
            config: json!({"root": "/tmp", "n": 1}),
            isolated: false,
        };
        same_bytes(
            &provider_detail(&d),
            json!({
                "name": d.name,
                "healthy": health.as_ref().is_some_and(|h| h.healthy),
                "default": d.default,
                "sandbox_count": d.sandbox_count,
                "health": health.as_ref().map(health_reference),
                "config": d.config,
                "isolated": d.isolated,
            }),
        );
    }
}

fn worker_record(providers: Option<Vec<String>>) -> WorkerRecord {
    let mut capacity = Map::new();
    capacity.insert("rpc_url".into(), json!("http://w:1"));
    capacity.insert("max_sandboxes".into(), json!(4));
    WorkerRecord {
        id: "w1".into(),
        hostname: "host".into(),
        status: "online".into(),
        providers,
        capabilities: Some(vec!["spawn".into()]),
        capacity,
        last_heartbeat: at(),
        created_at: at(),
        updated_at: at(),
    }
}

fn worker_reference(w: &WorkerInfo) -> Value {
    let r = &w.record;
    json!({
        "id": r.id,
        "hostname": r.hostname,
        "status": r.status,
        "providers": r.providers,
        "capabilities": r.capabilities,
        "capacity": Value::Object(r.capacity.clone()),
        "last_heartbeat": format_rfc3339_secs(&r.last_heartbeat),
        "created_at": format_rfc3339_secs(&r.created_at),
        "updated_at": format_rfc3339_secs(&r.updated_at),
        "stale": w.stale,
    })
}

#[test]
fn worker_views() {
    let items = vec![
        WorkerInfo {
            record: worker_record(None),
            stale: false,
        },
        WorkerInfo {
            record: worker_record(Some(vec!["mock".into()])),
            stale: true,
        },
    ];
    for w in &items {
        same_bytes(&worker(w), worker_reference(w));
    }
    let c = WorkerCounts {
        total: 2,
        online: 1,
        stale: 1,
        unhealthy: 0,
        items: items.clone(),
        error: None,
    };
    same_bytes(
        &worker_counts(&c),
        json!({"total": 2, "online": 1, "stale": 1, "unhealthy": 0,
            "items": items.iter().map(worker_reference).collect::<Vec<_>>()}),
    );
    let failed = WorkerCounts {
        error: Some("store down".into()),
        ..WorkerCounts::default()
    };
    same_bytes(
        &worker_counts(&failed),
        json!({"total":0,"online":0,"stale":0,"unhealthy":0,"items":[],"error":"store down"}),
    );
}

#[test]
fn count_views() {
    let mut s = SandboxCounts {
        total: 3,
        active: 2,
        ..SandboxCounts::default()
    };
    s.by_state.insert("running".into(), 2);
    s.by_state.insert("error".into(), 1);
    s.by_provider.insert("mock".into(), 3);
    s.by_worker.insert("local".into(), 3);
    same_bytes(
        &sandbox_counts(&s),
        json!({"total": 3, "active": 2, "by_state": s.by_state,
            "by_provider": s.by_provider, "by_worker": s.by_worker}),
    );
    let failed = SandboxCounts {
        error: Some("x".into()),
        ..SandboxCounts::default()
    };
    same_bytes(
        &sandbox_counts(&failed),
        json!({"total":0,"active":0,"by_state":{},"by_provider":{},"by_worker":{},"error":"x"}),
    );

    let mut l = LeaseCounts {
        total: 3,
        active: 2,
        expired: 1,
        ..LeaseCounts::default()
    };
    l.by_holder.insert("w1".into(), 3);
    same_bytes(
        &lease_counts(&l),
        json!({"total": 3, "active": 2, "expired": 1, "by_holder": l.by_holder}),
    );
    let failed = LeaseCounts {
        error: Some("x".into()),
        ..LeaseCounts::default()
    };
    same_bytes(
        &lease_counts(&failed),
        json!({"total":0,"active":0,"expired":0,"by_holder":{},"error":"x"}),
    );

    same_bytes(
        &event_counts(EventCounts {
            subscribers: 2,
            total: 40,
        }),
        json!({"subscribers": 2, "history_size": 0, "events_total": 40}),
    );

    let q = QuotaSummary {
        total: 4,
        with_max_sandboxes: 3,
        with_max_ttl: 2,
        with_max_exec_timeout: 1,
    };
    same_bytes(
        &quota_summary(Some(&q)),
        json!({"total": 4, "with_max_sandboxes": 3, "with_max_ttl": 2, "with_max_exec_timeout": 1}),
    );
    same_bytes(
        &quota_summary(None),
        json!({"total": 0, "with_max_sandboxes": 0, "with_max_ttl": 0, "with_max_exec_timeout": 0}),
    );
}

#[test]
fn operation_views() {
    let ok = OpStats {
        success_total: 5,
        failure_total: 0,
        latency_count: 5,
        latency_total_ms: 12.5,
        latency_min_ms: 1.0,
        latency_max_ms: 4.5,
        last_error: None,
        last_observed_unix: 1_700_000_000,
    };
    let failed = OpStats {
        failure_total: 1,
        last_error: Some("boom".into()),
        last_observed_unix: 0,
        latency_count: 0,
        ..ok.clone()
    };
    let ops = vec![
        ("spawn".to_string(), "mock".to_string(), ok),
        ("exec".to_string(), "docker".to_string(), failed),
    ];
    let reference: Vec<Value> = ops
        .iter()
        .cloned()
        .map(|(op, provider, s)| {
            let avg = if s.latency_count > 0 {
                s.latency_total_ms / s.latency_count as f64
            } else {
                0.0
            };
            let mut v = json!({
                "operation": op, "provider": provider,
                "success_total": s.success_total, "failure_total": s.failure_total,
                "latency_count": s.latency_count, "latency_total_ms": s.latency_total_ms,
                "latency_min_ms": s.latency_min_ms, "latency_max_ms": s.latency_max_ms,
                "latency_avg_ms": avg,
            });
            if let Some(e) = s.last_error {
                v["last_error"] = json!(e);
            }
            if s.last_observed_unix > 0 {
                v["last_observed_unix"] = json!(s.last_observed_unix);
            }
            v
        })
        .collect();
    same_bytes(&operations(&ops), Value::Array(reference));
}

#[test]
fn scheduler_and_limits_views() {
    let l = Limits::default();
    for q in [
        QueueStats::default(),
        QueueStats {
            depth: 2,
            queued_total: 9,
            dequeued_total: 6,
            timeouts: 1,
            wait_count: 7,
            wait_total_ms: 123.5,
            wait_max_ms: 50.25,
        },
    ] {
        let (depth, qt, dt, to, wc, wt, wm) = (
            q.depth,
            q.queued_total,
            q.dequeued_total,
            q.timeouts,
            q.wait_count,
            q.wait_total_ms,
            q.wait_max_ms,
        );
        let avg = if wc > 0 { wt / wc as f64 } else { 0.0 };
        let dur = |ms: f64| GoDuration((ms * 1e6) as i64).to_string();
        same_bytes(
            &scheduler(&q, &l),
            json!({
                "spawn_overflow": l.spawn_overflow.as_str(),
                "spawn_queue_depth": depth,
                "max_spawn_queue": l.max_spawn_queue,
                "spawn_queue_timeout": l.spawn_queue_timeout.to_string(),
                "admission_control": "worker_aware_local",
                "worker_id": WorkerId::LOCAL,
                "spawn_queued_total": qt,
                "spawn_dequeued_total": dt,
                "spawn_queue_timeouts": to,
                "spawn_queue_wait_count": wc,
                "spawn_queue_wait_total": dur(wt),
                "spawn_queue_wait_max": dur(wm),
                "spawn_queue_wait_avg": dur(avg),
                "spawn_queue_wait_total_ms": wt,
                "spawn_queue_wait_max_ms": wm,
                "spawn_queue_wait_avg_ms": avg,
            }),
        );
    }
    same_bytes(
        &limits(&l),
        json!({
            "max_sandboxes": l.max_sandboxes,
            "max_sandboxes_per_owner": l.max_sandboxes_per_owner,
            "default_exec_timeout": l.default_exec_timeout.to_string(),
            "max_exec_timeout": l.max_exec_timeout.to_string(),
            "max_ttl": l.max_ttl.to_string(),
            "spawn_overflow": l.spawn_overflow.as_str(),
            "spawn_queue_timeout": l.spawn_queue_timeout.to_string(),
            "max_spawn_queue": l.max_spawn_queue,
        }),
    );
}

#[test]
fn admission_view() {
    let bare = AdmissionDecision {
        allowed: true,
        queueable: false,
        reason: None,
        active_sandboxes: 1,
        max_sandboxes: 0,
        active_owner_sandboxes: None,
        max_owner_sandboxes: None,
        max_ttl: None,
        placement: None,
    };
    let full = AdmissionDecision {
        allowed: false,
        queueable: true,
        reason: Some("max_sandboxes_per_owner"),
        active_owner_sandboxes: Some(2),
        max_owner_sandboxes: Some(2),
        max_ttl: Some(GoDuration::from_secs(3600)),
        ..bare.clone()
    };
    for d in [bare, full] {
        let mut v = json!({
            "allowed": d.allowed,
            "queueable": d.queueable,
            "active_sandboxes": d.active_sandboxes,
            "max_sandboxes": d.max_sandboxes,
        });
        if let Some(r) = d.reason {
            v["reason"] = json!(r);
        }
        if let Some(n) = d.active_owner_sandboxes {
            v["active_owner_sandboxes"] = json!(n);
        }
        if let Some(n) = d.max_owner_sandboxes {
            v["max_owner_sandboxes"] = json!(n);
        }
        if let Some(t) = d.max_ttl {
            v["max_ttl"] = json!(t.to_string());
        }
        same_bytes(&admission(&d), v);
    }
}
