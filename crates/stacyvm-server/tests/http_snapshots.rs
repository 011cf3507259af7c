//! Snapshots and fork through the router on the mock (sandbox-model.md §2, docs/state.md).

#![allow(clippy::unwrap_used)]

mod common;

use axum::http::StatusCode;
use common::{keys, TestApp};
use serde_json::json;

async fn write(app: &TestApp, id: &str, path: &str, content: &str) {
    let w = app
        .post(&format!("/api/v1/sandboxes/{id}/files"))
        .json(&json!({"path": path, "content": content}))
        .send()
        .await;
    assert_eq!(w.status, StatusCode::OK, "{}", w.text());
}

async fn read(app: &TestApp, id: &str, path: &str) -> (StatusCode, String) {
    let r = app
        .get(&format!("/api/v1/sandboxes/{id}/files?path={path}"))
        .send()
        .await;
    (r.status, r.text())
}

#[tokio::test]
async fn snapshot_routes_spawn_from_one_and_errors() {
    let app = TestApp::default_app().await;
    let id = app
        .spawn(json!({"image": "alpine:3.20", "memory_mb": 256}))
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    write(&app, &id, "/workspace/a.txt", "before").await;

    let r = app
        .post(&format!("/api/v1/sandboxes/{id}/snapshots"))
        .json(&json!({"name": "first"}))
        .send()
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let snap = r.json();
    assert_eq!(
        keys(&snap),
        [
            "created_at",
            "id",
            "image",
            "kind",
            "name",
            "provider",
            "sandbox_id",
            "size_bytes",
            "worker_id"
        ]
    );
    let sid = snap["id"].as_str().unwrap().to_string();
    assert!(sid.starts_with("snap-") && sid.len() == 13, "{sid}");
    assert_eq!(
        (
            &snap["name"],
            &snap["kind"],
            &snap["image"],
            &snap["provider"]
        ),
        (
            &json!("first"),
            &json!("filesystem"),
            &json!("alpine:3.20"),
            &json!("mock")
        )
    );
    assert_eq!(snap["sandbox_id"], id.as_str());
    assert!(snap["size_bytes"].as_i64().unwrap() >= 6);
    // The source keeps running; later changes stay out of the snapshot.
    write(&app, &id, "/workspace/a.txt", "after").await;
    assert_eq!(app.sh(&id, "cat a.txt").await["stdout"], "after");

    // Unnamed: named after its id. Listed newest first.
    let r = app
        .post(&format!("/api/v1/sandboxes/{id}/snapshots"))
        .send()
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let second = r.json();
    assert_eq!(second["name"], second["id"]);
    let list = app.get("/api/v1/snapshots").send().await.json();
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [second["id"].as_str().unwrap(), sid.as_str()]);
    let got = app.get(&format!("/api/v1/snapshots/{sid}")).send().await;
    assert_eq!((got.status, got.json()), (StatusCode::OK, snap.clone()));

    // Spawn from it: image and provider come from the snapshot.
    let r = app
        .post("/api/v1/sandboxes")
        .json(&json!({"snapshot": sid}))
        .send()
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let b = r.json();
    assert_eq!(b["image"], "alpine:3.20");
    let b = b["id"].as_str().unwrap().to_string();
    assert_eq!(
        read(&app, &b, "/workspace/a.txt").await,
        (StatusCode::OK, "before".into())
    );
    // Matching image and provider are fine; others are refused.
    let r = app
        .post("/api/v1/sandboxes")
        .json(&json!({"snapshot": sid, "image": "alpine:3.20", "provider": "mock"}))
        .send()
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    for body in [
        json!({"snapshot": sid, "image": "debian:12"}),
        json!({"snapshot": sid, "provider": "docker"}),
    ] {
        app.post("/api/v1/sandboxes")
            .json(&body)
            .send()
            .await
            .assert_error(StatusCode::BAD_REQUEST, "BAD_REQUEST");
    }

    // Errors.
    for r in [
        app.get("/api/v1/snapshots/snap-00000000").send().await,
        app.delete("/api/v1/snapshots/snap-00000000").send().await,
        app.post("/api/v1/sandboxes")
            .json(&json!({"snapshot": "snap-00000000"}))
            .send()
            .await,
    ] {
        r.assert_error(StatusCode::NOT_FOUND, "SNAPSHOT_NOT_FOUND");
    }
    app.post("/api/v1/sandboxes/sb-00000000/snapshots")
        .send()
        .await
        .assert_error(StatusCode::NOT_FOUND, "NOT_FOUND");
    app.post(&format!("/api/v1/sandboxes/{id}/snapshots"))
        .json(&json!({"name": "a\u{7}b"}))
        .send()
        .await
        .assert_error(StatusCode::BAD_REQUEST, "BAD_REQUEST");

    // Delete: sandboxes made from it keep their files.
    let d = app.delete(&format!("/api/v1/snapshots/{sid}")).send().await;
    assert_eq!(
        (d.status, d.json()),
        (StatusCode::OK, json!({"status": "deleted"}))
    );
    app.get(&format!("/api/v1/snapshots/{sid}"))
        .send()
        .await
        .assert_error(StatusCode::NOT_FOUND, "SNAPSHOT_NOT_FOUND");
    assert_eq!(
        read(&app, &b, "/workspace/a.txt").await,
        (StatusCode::OK, "before".into())
    );
}

#[tokio::test]
async fn fork_makes_independent_copies() {
    let app = TestApp::default_app().await;
    let id = app.spawn_id().await;
    write(&app, &id, "/workspace/state.txt", "v1").await;
    let r = app
        .post(&format!("/api/v1/sandboxes/{id}/fork"))
        .json(&json!({"count": 2}))
        .send()
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let copies: Vec<String> = r
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(copies.len(), 2);
    assert!(!copies.contains(&id));
    write(&app, &copies[0], "/workspace/state.txt", "changed").await;
    assert_eq!(
        read(&app, &copies[1], "/workspace/state.txt").await,
        (StatusCode::OK, "v1".into())
    );
    assert_eq!(
        read(&app, &id, "/workspace/state.txt").await,
        (StatusCode::OK, "v1".into())
    );
    // The fork's own snapshot is not kept.
    assert_eq!(app.get("/api/v1/snapshots").send().await.json(), json!([]));
    // Default count 1; bad counts; unknown sandbox.
    let r = app
        .post(&format!("/api/v1/sandboxes/{id}/fork"))
        .send()
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(r.json().as_array().unwrap().len(), 1);
    for count in [0, -1, 17] {
        app.post(&format!("/api/v1/sandboxes/{id}/fork"))
            .json(&json!({"count": count}))
            .send()
            .await
            .assert_error(StatusCode::BAD_REQUEST, "BAD_REQUEST");
    }
    app.post("/api/v1/sandboxes/sb-00000000/fork")
        .send()
        .await
        .assert_error(StatusCode::NOT_FOUND, "NOT_FOUND");
    // All or nothing: past max_sandboxes no copy is left behind.
    let before = app.list().await.len();
    let limited = TestApp::new()
        .with_limits(|l| l.max_sandboxes = 2)
        .build()
        .await;
    let src = limited.spawn_id().await;
    limited
        .post(&format!("/api/v1/sandboxes/{src}/fork"))
        .json(&json!({"count": 2}))
        .send()
        .await
        .assert_error(StatusCode::TOO_MANY_REQUESTS, "RESOURCE_LIMIT");
    assert_eq!(limited.list().await.len(), 1);
    assert_eq!(app.list().await.len(), before);
}

#[tokio::test]
async fn providers_without_snapshots_answer_not_supported() {
    let (app, _fake) = TestApp::new().build_with_processes().await;
    let id = app.spawn_id().await;
    for r in [
        app.post(&format!("/api/v1/sandboxes/{id}/snapshots"))
            .send()
            .await,
        app.post(&format!("/api/v1/sandboxes/{id}/fork"))
            .send()
            .await,
    ] {
        r.assert_error(StatusCode::CONFLICT, "NOT_SUPPORTED");
    }
    assert_eq!(app.get("/api/v1/snapshots").send().await.json(), json!([]));
}
