//! Pause, resume and lifecycle policies through the router on the mock (sandbox-model.md §2,
//! docs/state.md): the paused state's answers, the TTL clock, `on_expire`, `idle_timeout`,
//! paused retention and the paused quota. The reaper's passes are called directly (the loop
//! only runs them every `reconcile_interval`; the e2e test covers the loop).

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use axum::http::StatusCode;
use common::TestApp;
use serde_json::{json, Value};
use stacyvm_provider::Provider;

async fn pause(app: &TestApp, id: &str) -> common::Resp {
    app.post(&format!("/api/v1/sandboxes/{id}/pause"))
        .send()
        .await
}

async fn resume(app: &TestApp, id: &str, body: Option<Value>) -> common::Resp {
    let r = app.post(&format!("/api/v1/sandboxes/{id}/resume"));
    match body {
        Some(b) => r.json(&b).send().await,
        None => r.send().await,
    }
}

async fn state(app: &TestApp, id: &str) -> (StatusCode, Value) {
    let r = app.get(&format!("/api/v1/sandboxes/{id}")).send().await;
    let v = if r.status == StatusCode::OK {
        r.json()
    } else {
        Value::Null
    };
    (r.status, v)
}

fn expires_in(v: &Value) -> chrono::Duration {
    let at = chrono::DateTime::parse_from_rfc3339(v["expires_at"].as_str().unwrap()).unwrap();
    at.with_timezone(&chrono::Utc) - chrono::Utc::now()
}

#[tokio::test]
async fn paused_refuses_exec_files_and_process_starts_and_still_answers_gets() {
    let (app, _fake) = TestApp::new().build_with_processes().await;
    let id = app.spawn_id().await;
    let started = app
        .post(&format!("/api/v1/sandboxes/{id}/processes"))
        .json(&json!({"command": "sleep 100", "tag": "web"}))
        .send()
        .await;
    assert_eq!(started.status, StatusCode::CREATED, "{}", started.text());

    let r = pause(&app, &id).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let v = r.json();
    assert_eq!(v["state"], "paused");
    assert!(v["paused_at"].is_string(), "{v}");
    // Idempotent.
    let again = pause(&app, &id).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.json()["paused_at"], v["paused_at"]);

    let (st, got) = state(&app, &id).await;
    assert_eq!(
        (st, got["state"].as_str()),
        (StatusCode::OK, Some("paused"))
    );
    let listed = app.list().await;
    assert!(listed
        .iter()
        .any(|s| s["id"] == id && s["state"] == "paused"));

    let refused = [
        app.post(&format!("/api/v1/sandboxes/{id}/exec"))
            .json(&json!({"command": "echo hi"}))
            .send()
            .await,
        app.post(&format!("/api/v1/sandboxes/{id}/exec"))
            .json(&json!({"command": "echo hi", "stream": true}))
            .send()
            .await,
        app.post(&format!("/api/v1/sandboxes/{id}/files"))
            .json(&json!({"path": "/workspace/a", "content": "aGk="}))
            .send()
            .await,
        app.get(&format!("/api/v1/sandboxes/{id}/files?path=/workspace/a"))
            .send()
            .await,
        app.get(&format!(
            "/api/v1/sandboxes/{id}/files/list?path=/workspace"
        ))
        .send()
        .await,
        app.post(&format!("/api/v1/sandboxes/{id}/processes"))
            .json(&json!({"command": "true"}))
            .send()
            .await,
    ];
    for r in refused {
        assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text());
        assert_eq!(r.json()["code"], "SANDBOX_PAUSED");
    }
    let procs = app
        .get(&format!("/api/v1/sandboxes/{id}/processes"))
        .send()
        .await;
    assert_eq!(procs.status, StatusCode::OK, "{}", procs.text());
    let list: Vec<Value> = serde_json::from_slice(&procs.body).unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["tag"], "web");
    assert_eq!(list[0]["state"], "running");
    let pid = list[0]["pid"].as_u64().unwrap();
    let one = app
        .get(&format!("/api/v1/sandboxes/{id}/processes/{pid}"))
        .send()
        .await;
    assert_eq!(one.status, StatusCode::OK, "{}", one.text());

    let r = resume(&app, &id, None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let v = r.json();
    assert_eq!(v["state"], "running");
    assert!(v.get("paused_at").is_none(), "{v}");
    assert_eq!(resume(&app, &id, None).await.status, StatusCode::OK);
    let exec = app
        .post(&format!("/api/v1/sandboxes/{id}/exec"))
        .json(&json!({"command": "echo hi"}))
        .send()
        .await;
    assert_eq!(exec.status, StatusCode::OK, "{}", exec.text());
}

#[tokio::test]
async fn the_ttl_clock_stops_while_paused_and_resume_takes_a_new_ttl() {
    let app = TestApp::default_app().await;
    let id = app.spawn(json!({"ttl": "1h"})).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(pause(&app, &id).await.status, StatusCode::OK);
    // Past its deadline while paused: the reaper leaves it alone.
    let sid = id.clone().into();
    app.store
        .set_sandbox_expiry(&sid, chrono::Utc::now() - chrono::Duration::seconds(5))
        .await
        .unwrap();
    assert_eq!(app.svc.sandboxes().prune().await.unwrap(), 0);
    assert_eq!(state(&app, &id).await.1["state"], "paused");
    let del = app.delete("/api/v1/sandboxes").send().await;
    assert_eq!(del.json()["pruned"], 0);

    // Resume with a TTL: exactly that from now.
    let v = resume(&app, &id, Some(json!({"ttl": "10m"}))).await.json();
    assert_eq!(v["state"], "running");
    let left = expires_in(&v);
    assert!(
        left > chrono::Duration::seconds(590) && left <= chrono::Duration::seconds(600),
        "{left}"
    );

    // Without one: what was left when it paused (the clock did not run meanwhile).
    let id2 = app.spawn(json!({"ttl": "1h"})).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(pause(&app, &id2).await.status, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let v = resume(&app, &id2, None).await.json();
    let left = expires_in(&v);
    assert!(
        left > chrono::Duration::seconds(3595) && left <= chrono::Duration::seconds(3600),
        "the paused second was not counted: {left}"
    );
}

#[tokio::test]
async fn on_expire_pause_pauses_at_the_ttl() {
    let app = TestApp::default_app().await;
    let v = app.spawn(json!({"ttl": "1h", "on_expire": "pause"})).await;
    assert_eq!(v["on_expire"], "pause");
    let id = v["id"].as_str().unwrap().to_string();
    let plain = app.spawn(json!({"ttl": "1h"})).await;
    assert!(plain.get("on_expire").is_none(), "{plain}");
    for s in [&id, plain["id"].as_str().unwrap()] {
        app.store
            .set_sandbox_expiry(&s.into(), chrono::Utc::now() - chrono::Duration::seconds(1))
            .await
            .unwrap();
    }
    assert_eq!(app.svc.sandboxes().prune().await.unwrap(), 2);
    assert_eq!(state(&app, &id).await.1["state"], "paused");
    assert_eq!(
        state(&app, plain["id"].as_str().unwrap()).await.0,
        StatusCode::NOT_FOUND
    );
    // No TTL was left: resume without one gets the default (30m).
    let v = resume(&app, &id, None).await.json();
    let left = expires_in(&v);
    assert!(left > chrono::Duration::minutes(29), "{left}");
}

#[tokio::test]
async fn idle_timeout_pauses_or_destroys_idle_sandboxes_only() {
    let (app, fake) = TestApp::new().build_with_processes().await;
    let spawn = |body: Value| {
        let app = &app;
        async move { app.spawn(body).await["id"].as_str().unwrap().to_string() }
    };
    let pausing = spawn(json!({"idle_timeout": "300ms", "on_expire": "pause"})).await;
    let destroying = spawn(json!({"idle_timeout": "300ms"})).await;
    let busy = spawn(json!({"idle_timeout": "300ms", "on_expire": "pause"})).await;
    let touched = spawn(json!({"idle_timeout": "2s"})).await;
    let never = spawn(json!({})).await;
    let r = app
        .post(&format!("/api/v1/sandboxes/{busy}/processes"))
        .json(&json!({"command": "sleep 100"}))
        .send()
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let report = app.svc.sandboxes().lifecycle().await.unwrap();
    assert_eq!(
        (report.paused, report.destroyed),
        (0, 0),
        "nothing idle yet"
    );

    tokio::time::sleep(Duration::from_millis(400)).await;
    let exec = app
        .post(&format!("/api/v1/sandboxes/{touched}/exec"))
        .json(&json!({"command": "true"}))
        .send()
        .await;
    assert_eq!(exec.status, StatusCode::OK);
    let report = app.svc.sandboxes().lifecycle().await.unwrap();
    assert_eq!((report.paused, report.destroyed), (1, 1), "{report:?}");
    assert_eq!(state(&app, &pausing).await.1["state"], "paused");
    assert_eq!(state(&app, &destroying).await.0, StatusCode::NOT_FOUND);
    assert_eq!(
        state(&app, &busy).await.1["state"],
        "running",
        "a running process is activity"
    );
    assert_eq!(state(&app, &touched).await.1["state"], "running");
    assert_eq!(state(&app, &never).await.1["state"], "running");
    drop(fake);
}

#[tokio::test]
async fn paused_sandboxes_are_destroyed_after_their_retention() {
    let app = TestApp::new()
        .with_settings(|s| s.paused_retention = Some(Duration::from_millis(100)))
        .build()
        .await;
    let id = app.spawn_id().await;
    let kept = app.spawn_id().await;
    assert_eq!(pause(&app, &id).await.status, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(pause(&app, &kept).await.status, StatusCode::OK);
    let report = app.svc.sandboxes().lifecycle().await.unwrap();
    assert_eq!(report.destroyed, 1);
    assert_eq!(state(&app, &id).await.0, StatusCode::NOT_FOUND);
    assert_eq!(state(&app, &kept).await.1["state"], "paused");
}

#[tokio::test]
async fn paused_sandboxes_have_their_own_quota() {
    let app = TestApp::new()
        .with_limits(|l| {
            l.max_sandboxes = 1;
            l.max_paused_sandboxes = 1;
        })
        .build()
        .await;
    let a = app.spawn_id().await;
    assert_eq!(pause(&app, &a).await.status, StatusCode::OK);
    // A paused sandbox does not hold a running slot.
    let b = app.spawn_id().await;
    let r = pause(&app, &b).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.text());
    assert!(r.text().contains("max paused sandboxes"), "{}", r.text());
    // Resuming needs the running slot back.
    let r = resume(&app, &a, None).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.text());
    let d = app.delete(&format!("/api/v1/sandboxes/{b}")).send().await;
    assert_eq!(d.status, StatusCode::OK);
    assert_eq!(resume(&app, &a, None).await.status, StatusCode::OK);
}

#[tokio::test]
async fn bad_lifecycle_input_is_a_400_and_unknown_ids_404() {
    let app = TestApp::default_app().await;
    for body in [
        json!({"on_expire": "hibernate"}),
        json!({"idle_timeout": "forever"}),
        json!({"idle_timeout": "-1s"}),
    ] {
        let r = app.post("/api/v1/sandboxes").json(&body).send().await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {}", r.text());
    }
    let v = app.spawn(json!({"idle_timeout": "90s"})).await;
    assert_eq!(v["idle_timeout"], "1m30s");
    let id = v["id"].as_str().unwrap();
    assert_eq!(pause(&app, id).await.status, StatusCode::OK);
    for body in [json!({"ttl": "x"}), json!({"ttl": "-5m"})] {
        let r = resume(&app, id, Some(body)).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    }
    let r = app
        .post(&format!("/api/v1/sandboxes/{id}/resume"))
        .raw_json("[1]")
        .send()
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = resume(&app, id, Some(json!({"ttl": "48h"}))).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "above max_ttl");
    assert_eq!(
        pause(&app, "sb-00000000").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        resume(&app, "sb-00000000", None).await.status,
        StatusCode::NOT_FOUND
    );
    // A destroyed (or never paused) sandbox: resume of a running one is a no-op, of a
    // destroyed one 404.
    let d = app.delete(&format!("/api/v1/sandboxes/{id}")).send().await;
    assert_eq!(d.status, StatusCode::OK);
    assert_eq!(pause(&app, id).await.status, StatusCode::NOT_FOUND);
}

/// A pause that gets no answer (the worker froze the sandbox and died before replying) leaves
/// the record `paused`, never `running` over a frozen runtime; resume thaws it.
#[tokio::test]
async fn a_pause_without_an_answer_stays_paused_until_resumed() {
    let (app, fake) = TestApp::new().build_with_processes().await;
    let id = app.spawn_id().await;
    fake.pause_then_vanish
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let r = pause(&app, &id).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text());
    assert_eq!(
        fake.mock.status(&id).await.unwrap(),
        stacyvm_types::SandboxState::Paused,
        "the fixture did not freeze the sandbox"
    );
    let (_, v) = state(&app, &id).await;
    assert_eq!(v["state"], "paused", "{v}");
    fake.pause_then_vanish
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let r = resume(&app, &id, None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(
        fake.mock.status(&id).await.unwrap(),
        stacyvm_types::SandboxState::Running
    );
    let r = app
        .post(&format!("/api/v1/sandboxes/{id}/exec"))
        .json(&json!({"command": "echo up"}))
        .send()
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
}
