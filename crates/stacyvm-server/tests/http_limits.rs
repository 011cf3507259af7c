//! Admission: global and per-owner limits, quotas, the spawn queue, concurrency, and the exact
//! key sets the Python SDK's dataclasses accept.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use axum::http::StatusCode;
use common::{keys, TestApp};
use serde_json::{json, Value};
use stacyvm_server::SpawnOverflow;

/// The fields of the Python SDK's `SpawnAdmissionDecision`; any other key is a TypeError there.
const ADMISSION_KEYS: [&str; 8] = [
    "allowed",
    "queueable",
    "reason",
    "active_sandboxes",
    "max_sandboxes",
    "active_owner_sandboxes",
    "max_owner_sandboxes",
    "max_ttl",
];

fn assert_admission_keys(v: &Value) {
    let allowed: BTreeSet<&str> = ADMISSION_KEYS.into_iter().collect();
    for k in keys(v) {
        assert!(
            allowed.contains(k.as_str()),
            "admission key {k} would crash the SDK: {v}"
        );
    }
    for k in ["allowed", "queueable", "active_sandboxes", "max_sandboxes"] {
        assert!(
            v.get(k).is_some(),
            "admission key {k} is always present: {v}"
        );
    }
}

async fn admission(app: &TestApp, user: Option<&str>, body: Value) -> Value {
    let mut req = app.post("/api/v1/sandboxes/admission").json(&body);
    if let Some(u) = user {
        req = req.user(u);
    }
    let r = req.send().await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let v = r.json();
    assert_admission_keys(&v);
    v
}

#[tokio::test]
async fn max_sandboxes_is_429() {
    let app = TestApp::new()
        .with_limits(|l| l.max_sandboxes = 2)
        .build()
        .await;
    let a = admission(&app, None, json!({})).await;
    assert_eq!(
        a,
        json!({"allowed": true, "queueable": false, "active_sandboxes": 0, "max_sandboxes": 2,
            "max_ttl": "24h0m0s"})
    );
    let first = app.spawn_id().await;
    app.spawn_id().await;
    let r = app.post("/api/v1/sandboxes").json(&json!({})).send().await;
    let msg = r.assert_error(StatusCode::TOO_MANY_REQUESTS, "RESOURCE_LIMIT");
    assert!(msg.contains("max sandboxes reached (2)"), "{msg}");
    assert_eq!(app.list().await.len(), 2);
    let a = admission(&app, None, json!({})).await;
    assert_eq!(a["allowed"], false);
    assert_eq!(a["queueable"], false, "reject mode");
    assert_eq!(a["reason"], "max_sandboxes");
    assert_eq!(a["active_sandboxes"], 2);

    // Destroying frees a slot.
    app.delete(&format!("/api/v1/sandboxes/{first}"))
        .send()
        .await;
    app.spawn_id().await;

    // TTL above max: not queueable, reported as max_ttl.
    let a = admission(&app, None, json!({"ttl": "48h"})).await;
    assert_eq!(a["reason"], "max_ttl");
    let r = app
        .post("/api/v1/sandboxes")
        .json(&json!({"ttl": "48h"}))
        .send()
        .await;
    r.assert_error(StatusCode::TOO_MANY_REQUESTS, "RESOURCE_LIMIT");
}

#[tokio::test]
async fn per_owner_limit_and_quota() {
    let app = TestApp::new()
        .with_limits(|l| l.max_sandboxes_per_owner = 1)
        .build()
        .await;
    let s = app
        .post("/api/v1/sandboxes")
        .user("alice")
        .json(&json!({"owner_id": "ignored"}))
        .send()
        .await;
    assert_eq!(s.status, StatusCode::CREATED);
    assert_eq!(
        s.json()["owner_id"],
        "alice",
        "X-User-ID wins over the body"
    );
    let r = app
        .post("/api/v1/sandboxes")
        .user("alice")
        .json(&json!({}))
        .send()
        .await;
    let msg = r.assert_error(StatusCode::TOO_MANY_REQUESTS, "RESOURCE_LIMIT");
    assert!(msg.contains("per owner"), "{msg}");
    // Body owner_id counts too when no header is sent.
    let r = app
        .post("/api/v1/sandboxes")
        .json(&json!({"owner_id": "alice"}))
        .send()
        .await;
    r.assert_error(StatusCode::TOO_MANY_REQUESTS, "RESOURCE_LIMIT");
    let r = app
        .post("/api/v1/sandboxes")
        .user("bob")
        .json(&json!({}))
        .send()
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    // No owner: only the global limit applies.
    app.spawn_id().await;
    app.spawn_id().await;

    let a = admission(&app, Some("alice"), json!({})).await;
    assert_eq!(
        a,
        json!({"allowed": false, "queueable": false, "reason": "max_sandboxes_per_owner",
            "active_sandboxes": 4, "max_sandboxes": 0, "active_owner_sandboxes": 1,
            "max_owner_sandboxes": 1, "max_ttl": "24h0m0s"})
    );

    // A quota raises alice's limit and caps her TTL.
    let r = app
        .put("/api/v1/quotas/alice")
        .json(&json!({"max_sandboxes": 2, "max_ttl": "1h"}))
        .send()
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let q = r.json();
    assert_eq!(
        keys(&q),
        [
            "created_at",
            "max_exec_timeout",
            "max_sandboxes",
            "max_ttl",
            "owner_id",
            "updated_at"
        ]
    );
    assert_eq!(q["max_ttl"], "1h0m0s");
    assert_eq!(q["max_exec_timeout"], "0s");
    let r = app
        .post("/api/v1/sandboxes")
        .user("alice")
        .json(&json!({"ttl": "2h"}))
        .send()
        .await;
    r.assert_error(StatusCode::TOO_MANY_REQUESTS, "RESOURCE_LIMIT");
    let r = app
        .post("/api/v1/sandboxes")
        .user("alice")
        .json(&json!({"ttl": "30m"}))
        .send()
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let u = app.get("/api/v1/quotas/alice/usage").send().await.json();
    assert_eq!(
        u,
        json!({"owner_id": "alice", "active_sandboxes": 2, "max_sandboxes": 2, "max_ttl": "1h0m0s",
            "max_exec_timeout": "10m0s", "quota_configured": true})
    );
}

#[tokio::test]
async fn quotas_crud_and_summary_keys() {
    let app = TestApp::default_app().await;
    let s = app.get("/api/v1/quotas/summary").send().await;
    assert_eq!(s.status, StatusCode::OK);
    assert_eq!(
        s.json(),
        json!({"total": 0, "with_max_sandboxes": 0, "with_max_ttl": 0, "with_max_exec_timeout": 0})
    );
    app.put("/api/v1/quotas/bob")
        .json(&json!({"max_sandboxes": 3}))
        .send()
        .await;
    app.put("/api/v1/quotas/alice")
        .json(&json!({"max_ttl": "2h", "max_exec_timeout": "1m"}))
        .send()
        .await;
    // Admin alias sees the same data.
    let s = app.get("/api/v1/admin/quotas/summary").send().await.json();
    assert_eq!(
        s,
        json!({"total": 2, "with_max_sandboxes": 1, "with_max_ttl": 1, "with_max_exec_timeout": 1})
    );
    let list = app.get("/api/v1/quotas").send().await.json();
    let owners: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["owner_id"].as_str().unwrap())
        .collect();
    assert_eq!(owners, ["alice", "bob"]);
    assert_eq!(
        app.get("/api/v1/quotas/alice").send().await.json()["max_exec_timeout"],
        "1m0s"
    );
    let d = app.delete("/api/v1/admin/quotas/alice").send().await;
    assert_eq!(d.json(), json!({"status": "deleted"}));
    app.get("/api/v1/quotas/alice")
        .send()
        .await
        .assert_error(StatusCode::NOT_FOUND, "NOT_FOUND");
    app.delete("/api/v1/quotas/alice")
        .send()
        .await
        .assert_error(StatusCode::NOT_FOUND, "NOT_FOUND");
    let u = app.get("/api/v1/quotas/alice/usage").send().await.json();
    assert_eq!(u["quota_configured"], false);
    assert_eq!(u["max_ttl"], "24h0m0s");
}

#[tokio::test]
async fn queued_spawn_succeeds_after_destroy() {
    let app = TestApp::new()
        .with_limits(|l| {
            l.max_sandboxes = 1;
            l.spawn_overflow = SpawnOverflow::Queue;
            l.spawn_queue_timeout = "10s".parse().unwrap();
        })
        .build()
        .await;
    let first = app.spawn_id().await;
    let a = admission(&app, None, json!({})).await;
    assert_eq!(a["queueable"], true);
    assert_eq!(a["reason"], "max_sandboxes");

    let waiting = tokio::spawn(app.post("/api/v1/sandboxes").json(&json!({})).send());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiting.is_finished(), "second spawn waits in the queue");
    let d = app
        .delete(&format!("/api/v1/sandboxes/{first}"))
        .send()
        .await;
    assert_eq!(d.status, StatusCode::OK);
    let r = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(app.list().await.len(), 1);
}

#[tokio::test]
async fn queued_spawn_times_out() {
    let app = TestApp::new()
        .with_limits(|l| {
            l.max_sandboxes = 1;
            l.spawn_overflow = SpawnOverflow::Queue;
            l.spawn_queue_timeout = "300ms".parse().unwrap();
        })
        .build()
        .await;
    app.spawn_id().await;
    let started = std::time::Instant::now();
    let r = app.post("/api/v1/sandboxes").json(&json!({})).send().await;
    let msg = r.assert_error(StatusCode::TOO_MANY_REQUESTS, "RESOURCE_LIMIT");
    assert!(msg.contains("spawn queue timeout"), "{msg}");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    assert_eq!(app.list().await.len(), 1);
    // The queue is empty again: a destroy lets the next spawn through at once.
    let id = app.list().await[0]["id"].as_str().unwrap().to_string();
    app.delete(&format!("/api/v1/sandboxes/{id}")).send().await;
    app.spawn_id().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_spawns_never_exceed_the_limit() {
    let app = TestApp::new()
        .with_limits(|l| l.max_sandboxes = 5)
        .build()
        .await;
    app.mock.set_spawn_delay(Some(Duration::from_millis(150)));
    let handles: Vec<_> = (0..20)
        .map(|_| tokio::spawn(app.post("/api/v1/sandboxes").json(&json!({})).send()))
        .collect();
    let mut created = 0;
    let mut limited = 0;
    for h in handles {
        let r = h.await.unwrap();
        match r.status {
            StatusCode::CREATED => created += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                r.assert_error(StatusCode::TOO_MANY_REQUESTS, "RESOURCE_LIMIT");
                limited += 1;
            }
            other => panic!("unexpected {other}: {}", r.text()),
        }
    }
    assert_eq!(created, 5, "exactly the limit is admitted");
    assert_eq!(limited, 15);
    assert_eq!(
        app.mock.call_count("spawn"),
        5,
        "the provider never saw more than the limit"
    );
    assert_eq!(app.list().await.len(), 5);
    let a = admission(&app, None, json!({})).await;
    assert_eq!(a["active_sandboxes"], 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_spawns_per_owner() {
    let app = TestApp::new()
        .with_limits(|l| l.max_sandboxes_per_owner = 2)
        .build()
        .await;
    app.mock.set_spawn_delay(Some(Duration::from_millis(100)));
    let handles: Vec<_> = (0..12)
        .map(|i| {
            let owner = if i % 2 == 0 { "alice" } else { "bob" };
            tokio::spawn(
                app.post("/api/v1/sandboxes")
                    .user(owner)
                    .json(&json!({}))
                    .send(),
            )
        })
        .collect();
    for h in handles {
        let s = h.await.unwrap().status;
        assert!(
            s == StatusCode::CREATED || s == StatusCode::TOO_MANY_REQUESTS,
            "{s}"
        );
    }
    let list = app.list().await;
    for owner in ["alice", "bob"] {
        let n = list.iter().filter(|s| s["owner_id"] == owner).count();
        assert_eq!(n, 2, "{owner} gets exactly the per-owner limit");
    }
}
