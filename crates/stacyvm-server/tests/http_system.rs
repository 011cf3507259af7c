//! System routes, the event stream, the reaper (through `serve`) and provider faults.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use axum::http::StatusCode;
use common::{keys, wait_until, TestApp};
use futures_util::StreamExt;
use serde_json::{json, Value};
use stacyvm_server::{Caller, SpawnParams};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn health_ready_providers() {
    let app = TestApp::default_app().await;
    let h = app.get("/api/v1/health").send().await.json();
    assert_eq!(keys(&h), ["status", "uptime", "version"]);
    assert_eq!(h["status"], "ok");
    let l = app.get("/api/v1/live").send().await.json();
    assert_eq!(l["status"], "alive");
    let r = app.get("/api/v1/ready").send().await;
    assert_eq!(r.status, StatusCode::OK);
    let r = r.json();
    assert_eq!(r["status"], "ready");
    assert_eq!(r["ready_providers"], 1);

    let p = app.get("/api/v1/providers").send().await.json();
    assert_eq!(p.as_array().unwrap().len(), 1);
    assert_eq!(p[0]["name"], "mock");
    assert_eq!(p[0]["healthy"], true);
    assert_eq!(p[0]["default"], true);
    let t = app.post("/api/v1/providers/test").send().await.json();
    assert_eq!(t, json!({"mock": true}));
    let d = app.get("/api/v1/admin/providers/mock").send().await;
    assert_eq!(d.status, StatusCode::OK);
    assert_eq!(d.json()["config"], json!({"type": "mock"}));
    app.get("/api/v1/providers/nope")
        .send()
        .await
        .assert_error(StatusCode::NOT_FOUND, "NOT_FOUND");

    // A failing health check makes the server not ready.
    app.mock.fail_next("health", 1);
    let r = app.get("/api/v1/ready").send().await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.json()["status"], "not_ready");

    assert_eq!(
        app.get("/api/v1/pool/status").send().await.json(),
        json!({"enabled": false})
    );
    let prom = app.get("/api/v1/metrics/prometheus").send().await;
    assert_eq!(
        prom.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    assert!(prom.text().contains("stacyvm_uptime_seconds"));
    let doc = app.get("/api/v1/openapi.json").send().await;
    assert_eq!(doc.status, StatusCode::OK);
    assert_eq!(
        doc.json()["openapi"].as_str().map(|s| s.starts_with("3.1")),
        Some(true)
    );
}

#[tokio::test]
async fn events_stream_sees_sandbox_created() {
    let app = TestApp::default_app().await;
    let resp = app.get("/api/v1/events").send_streaming().await;
    assert_eq!(resp.status(), StatusCode::OK);
    let ct = resp
        .headers()
        .get("content-type")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(ct, "text/event-stream");
    let mut body = resp.into_body().into_data_stream();

    let id = app.spawn_id().await;
    let mut buf = String::new();
    let mut events: Vec<Value> = Vec::new();
    let found = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(chunk) = body.next().await {
            buf.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
            while let Some(end) = buf.find("\n\n") {
                let frame: String = buf.drain(..end + 2).collect();
                let data = frame
                    .strip_prefix("data: ")
                    .expect("only data: lines")
                    .trim_end();
                let ev: Value = serde_json::from_str(data).unwrap();
                let done = ev["type"] == "sandbox.created";
                events.push(ev);
                if done {
                    return true;
                }
            }
        }
        false
    })
    .await
    .unwrap_or(false);
    assert!(found, "no sandbox.created event; got {events:?}");
    let ev = events.last().unwrap();
    assert_eq!(ev["sandbox_id"], id.as_str());
    assert!(ev["id"].as_str().unwrap().starts_with("evt-"));
    assert!(chrono::DateTime::parse_from_rfc3339(ev["timestamp"].as_str().unwrap()).is_ok());
}

#[tokio::test]
async fn provider_spawn_failure_is_500_and_leaves_nothing() {
    let app = TestApp::new()
        .with_limits(|l| l.max_sandboxes = 1)
        .build()
        .await;
    app.mock.fail_next("spawn", 1);
    let r = app.post("/api/v1/sandboxes").json(&json!({})).send().await;
    r.assert_error(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR");
    let list = app.list().await;
    assert!(
        list.iter().all(|s| s["state"] != "running"),
        "no running sandbox from a failed spawn: {list:?}"
    );
    assert!(list.is_empty(), "a failed spawn is not listed: {list:?}");
    let a = app
        .post("/api/v1/sandboxes/admission")
        .json(&json!({}))
        .send()
        .await
        .json();
    assert_eq!(
        a["active_sandboxes"], 0,
        "a failed spawn holds no capacity: {a}"
    );

    // The next spawn works, even with a limit of one.
    let id = app.spawn_id().await;
    assert_eq!(app.list().await.len(), 1);

    // Other provider faults surface as 500 without detail.
    app.mock.fail_next("exec", 1);
    let r = app
        .post(&format!("/api/v1/sandboxes/{id}/exec"))
        .json(&json!({"command": "true"}))
        .send()
        .await;
    r.assert_error(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR");
    let r = app
        .post(&format!("/api/v1/sandboxes/{id}/exec"))
        .json(&json!({"command": "echo ok"}))
        .send()
        .await;
    assert_eq!(r.json()["stdout"], "ok\n");

    // A failed destroy keeps the sandbox; a retry destroys it.
    app.mock.fail_next("destroy", 1);
    let r = app.delete(&format!("/api/v1/sandboxes/{id}")).send().await;
    r.assert_error(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR");
    assert_eq!(
        app.get(&format!("/api/v1/sandboxes/{id}"))
            .send()
            .await
            .status,
        StatusCode::OK
    );
    let r = app.delete(&format!("/api/v1/sandboxes/{id}")).send().await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(app.mock.host_root(&id).is_none());
}

/// A bare HTTP/1.1 GET over TCP; returns the status line.
async fn raw_get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    String::from_utf8_lossy(&out)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn reaper_destroys_expired_sandboxes() {
    let app = TestApp::new()
        .with_settings(|s| s.reaper_interval = Duration::from_millis(100))
        .build()
        .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(stacyvm_server::serve(
        listener,
        app.svc.clone(),
        shutdown.clone(),
        Duration::from_secs(2),
    ));
    assert_eq!(raw_get(addr, "/api/v1/health").await, "HTTP/1.1 200 OK");

    let caller = Caller::default();
    let short = app
        .svc
        .sandboxes()
        .spawn(
            SpawnParams {
                ttl: "300ms".into(),
                ..Default::default()
            },
            &caller,
        )
        .await
        .unwrap();
    let long = app.spawn_id().await;
    let reaped = wait_until(Duration::from_secs(5), || async {
        app.get(&format!("/api/v1/sandboxes/{}", short.id))
            .send()
            .await
            .status
            == StatusCode::NOT_FOUND
    })
    .await;
    assert!(reaped, "expired sandbox was not reaped");
    assert!(
        app.mock.host_root(&short.id).is_none(),
        "runtime destroyed too"
    );
    assert_eq!(
        app.get(&format!("/api/v1/sandboxes/{long}"))
            .send()
            .await
            .status,
        StatusCode::OK
    );
    // serve registered the local worker.
    let w = app.get("/api/v1/workers/local").send().await;
    assert_eq!(w.status, StatusCode::OK, "{}", w.text());

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
