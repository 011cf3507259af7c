//! Bad input: right status, stable code, no host path in the message, and nothing changed.

#![allow(clippy::unwrap_used)]

mod common;

use axum::http::{Method, StatusCode};
use common::TestApp;
use serde_json::json;

/// Sends `body` (raw JSON text) to `POST path` and checks the error; returns the message.
async fn bad(app: &TestApp, path: &str, body: &str, status: StatusCode, code: &str) -> String {
    let r = app.post(path).raw_json(body).send().await;
    assert_eq!(r.status, status, "POST {path} {body}: {}", r.text());
    r.assert_error(status, code)
}

#[tokio::test]
async fn spawn_rejects_bad_input_without_side_effects() {
    let app = TestApp::default_app().await;
    app.spawn_id().await;
    let before = app.list().await;
    let spawns = app.mock.call_count("spawn");
    let cases = [
        "{\"image\":",
        "[1,2]",
        "\"text\"",
        "not json",
        "",
        "{\"memory_mb\":\"big\"}",
        "{\"vcpus\":1.5}",
        "{\"metadata\":[\"a\"]}",
        "{\"ttl\":30}",
        "{\"ttl\":\"forever\"}",
        "{\"ttl\":\"5d\"}",
        "{\"ttl\":\"-5m\"}",
        "{\"memory_mb\":-1}",
        "{\"vcpus\":-2}",
        "{\"memory_mb\":99999999999}",
        "{\"owner_id\":\"a/b\"}",
        "{\"owner_id\":\"a\\\\b\"}",
        "{\"owner_id\":\"a\\u0001b\"}",
        "{\"owner_id\":\"a b\"}",
        "{\"image\":\"alpine latest\"}",
    ];
    for body in cases {
        bad(
            &app,
            "/api/v1/sandboxes",
            body,
            StatusCode::BAD_REQUEST,
            "BAD_REQUEST",
        )
        .await;
    }
    let long_owner = format!("{{\"owner_id\":\"{}\"}}", "o".repeat(129));
    bad(
        &app,
        "/api/v1/sandboxes",
        &long_owner,
        StatusCode::BAD_REQUEST,
        "BAD_REQUEST",
    )
    .await;
    // X-User-ID overrides the body and is validated the same way.
    let r = app
        .post("/api/v1/sandboxes")
        .user("x/y")
        .json(&json!({"owner_id": "fine"}))
        .send()
        .await;
    r.assert_error(StatusCode::BAD_REQUEST, "BAD_REQUEST");
    // Unknown provider is 404 (wire reference §2.1).
    let r = app
        .post("/api/v1/sandboxes")
        .json(&json!({"provider": "nope"}))
        .send()
        .await;
    r.assert_error(StatusCode::NOT_FOUND, "NOT_FOUND");

    assert_eq!(app.list().await, before, "store unchanged");
    assert_eq!(
        app.mock.call_count("spawn"),
        spawns,
        "provider never called"
    );

    // Admission validates the same way and answers 400 too.
    for body in [
        "{\"ttl\":\"x\"}",
        "{\"owner_id\":\"a/b\"}",
        "{\"memory_mb\":-1}",
        "{",
    ] {
        bad(
            &app,
            "/api/v1/sandboxes/admission",
            body,
            StatusCode::BAD_REQUEST,
            "BAD_REQUEST",
        )
        .await;
    }
    assert_eq!(app.list().await, before);
}

#[tokio::test]
async fn file_paths_are_checked() {
    let app = TestApp::default_app().await;
    let id = app.spawn_id().await;
    let base = format!("/api/v1/sandboxes/{id}/files");
    app.post(&base)
        .json(&json!({"path": "/workspace/keep.txt", "content": "k"}))
        .send()
        .await;
    let listing = || async {
        app.get(&format!("{base}/list?path=/workspace"))
            .send()
            .await
            .json()
    };
    let before = listing().await;

    for body in [
        json!({"path": "", "content": "x"}),
        json!({"path": "   ", "content": "x"}),
        json!({"path": "../../etc/passwd", "content": "x"}),
        json!({"path": "/workspace/../../escape.txt", "content": "x"}),
        json!({"path": "/workspace/x", "content": "x", "mode": "rwx"}),
        json!({"path": 7, "content": "x"}),
        json!({"content": "x"}),
    ] {
        let r = app.post(&base).json(&body).send().await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {}", r.text());
        r.assert_error(StatusCode::BAD_REQUEST, "BAD_REQUEST");
    }
    for q in [
        "",
        "?path=",
        "?path=../../../etc/passwd",
        "?path=/workspace/../../x",
    ] {
        let r = app.get(&format!("{base}{q}")).send().await;
        r.assert_error(StatusCode::BAD_REQUEST, "BAD_REQUEST");
        let r = app.delete(&format!("{base}{q}")).send().await;
        r.assert_error(StatusCode::BAD_REQUEST, "BAD_REQUEST");
        let r = app.get(&format!("{base}/stat{q}")).send().await;
        r.assert_error(StatusCode::BAD_REQUEST, "BAD_REQUEST");
    }
    let r = app.get(&format!("{base}/list?path=../..")).send().await;
    r.assert_error(StatusCode::BAD_REQUEST, "BAD_REQUEST");
    let r = app.get(&format!("{base}/glob")).send().await;
    r.assert_error(StatusCode::BAD_REQUEST, "BAD_REQUEST");
    let r = app
        .post(&format!("{base}/move"))
        .json(&json!({"old_path": "/workspace/keep.txt", "new_path": "../out"}))
        .send()
        .await;
    r.assert_error(StatusCode::BAD_REQUEST, "BAD_REQUEST");
    let r = app
        .post(&format!("{base}/move"))
        .json(&json!({"old_path": "", "new_path": "/workspace/b"}))
        .send()
        .await;
    r.assert_error(StatusCode::BAD_REQUEST, "BAD_REQUEST");
    let r = app
        .post(&format!("{base}/chmod"))
        .json(&json!({"path": "/workspace/keep.txt", "mode": "999"}))
        .send()
        .await;
    r.assert_error(StatusCode::BAD_REQUEST, "BAD_REQUEST");
    let r = app
        .post(&format!("{base}/chmod"))
        .json(&json!({"path": "../../x", "mode": "0644"}))
        .send()
        .await;
    r.assert_error(StatusCode::BAD_REQUEST, "BAD_REQUEST");

    assert_eq!(listing().await, before, "sandbox files unchanged");
    let root = app.mock.host_root(&id).unwrap();
    assert!(!root.parent().unwrap().join("escape.txt").exists());
    assert!(!root.parent().unwrap().join("out").exists());
}

#[tokio::test]
async fn oversized_body_is_413() {
    let app = TestApp::new()
        .with_settings(|s| s.max_body_bytes = 4096)
        .build()
        .await;
    let id = app.spawn_id().await;
    let before = app.list().await;
    let huge = json!({"image": "x".repeat(8192)}).to_string();
    bad(
        &app,
        "/api/v1/sandboxes",
        &huge,
        StatusCode::PAYLOAD_TOO_LARGE,
        "PAYLOAD_TOO_LARGE",
    )
    .await;
    let huge = json!({"path": "/workspace/big", "content": "x".repeat(8192)}).to_string();
    let path = format!("/api/v1/sandboxes/{id}/files");
    bad(
        &app,
        &path,
        &huge,
        StatusCode::PAYLOAD_TOO_LARGE,
        "PAYLOAD_TOO_LARGE",
    )
    .await;
    let huge = json!({"command": "true", "env": {"X": "y".repeat(8192)}}).to_string();
    let path = format!("/api/v1/sandboxes/{id}/exec");
    bad(
        &app,
        &path,
        &huge,
        StatusCode::PAYLOAD_TOO_LARGE,
        "PAYLOAD_TOO_LARGE",
    )
    .await;
    let huge = json!({"name": "t", "image": "x".repeat(8192)}).to_string();
    bad(
        &app,
        "/api/v1/templates",
        &huge,
        StatusCode::PAYLOAD_TOO_LARGE,
        "PAYLOAD_TOO_LARGE",
    )
    .await;
    assert_eq!(app.list().await, before);
    assert_eq!(
        app.mock.call_count("exec") + app.mock.call_count("write_file"),
        0
    );
    let r = app
        .get(&format!("/api/v1/sandboxes/{id}/files?path=/workspace/big"))
        .send()
        .await;
    r.assert_error(StatusCode::NOT_FOUND, "FILE_NOT_FOUND");
    // Just under the limit is fine.
    let ok = json!({"path": "/workspace/small", "content": "x".repeat(2048)});
    let r = app
        .post(&format!("/api/v1/sandboxes/{id}/files"))
        .json(&ok)
        .send()
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
}

#[tokio::test]
async fn quota_and_template_inputs() {
    let app = TestApp::default_app().await;
    for (owner, body) in [
        ("alice", json!({"max_sandboxes": -1})),
        ("alice", json!({"max_ttl": "500ms"})),
        ("alice", json!({"max_ttl": "1.5s"})),
        ("alice", json!({"max_exec_timeout": "later"})),
        ("alice", json!({"max_sandboxes": "3"})),
        ("a%20b", json!({"max_sandboxes": 1})),
        ("a%01b", json!({"max_sandboxes": 1})),
    ] {
        let r = app
            .put(&format!("/api/v1/quotas/{owner}"))
            .json(&body)
            .send()
            .await;
        assert_eq!(
            r.status,
            StatusCode::BAD_REQUEST,
            "{owner} {body}: {}",
            r.text()
        );
        r.assert_error(StatusCode::BAD_REQUEST, "BAD_REQUEST");
    }
    let r = app.get("/api/v1/quotas/a%5Cb").send().await;
    r.assert_error(StatusCode::BAD_REQUEST, "BAD_REQUEST");
    let r = app.get("/api/v1/quotas/alice/usage").send().await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        app.get("/api/v1/quotas").send().await.json(),
        json!([]),
        "nothing stored"
    );

    for body in [
        json!({"name": "t"}),
        json!({"image": "x"}),
        json!({"name": "a/b", "image": "x"}),
        json!({"name": "t", "image": "x", "memory_mb": -5}),
        json!({"name": "t", "image": "x", "setup": "echo"}),
    ] {
        let r = app.post("/api/v1/templates").json(&body).send().await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {}", r.text());
        r.assert_error(StatusCode::BAD_REQUEST, "BAD_REQUEST");
    }
    assert_eq!(app.get("/api/v1/templates").send().await.json(), json!([]));
}

#[tokio::test]
async fn unknown_route_and_method() {
    let app = TestApp::default_app().await;
    for path in [
        "/api/v1/nope",
        "/nope",
        "/api/v2/sandboxes",
        "/api/v1/sandboxes/x/y/z",
    ] {
        let r = app.get(path).send().await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
        assert_eq!(r.text(), "404 page not found\n");
        assert!(r.header("x-request-id").is_some());
    }
    let r = app.req(Method::PATCH, "/api/v1/sandboxes").send().await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    let r = app.req(Method::PUT, "/api/v1/health").send().await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
}
