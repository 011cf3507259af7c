//! `GET /sandboxes/{id}/files/watch` on the mock (its agent watches the sandbox's host
//! directory): the NDJSON lines, the errors before the stream, and the end of the watch in
//! the sandbox once the client goes, through `oneshot` and over a real connection.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use axum::http::StatusCode;
use common::{wait_until, TestApp};
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn app() -> (TestApp, String) {
    let app = TestApp::new().with_built_agent().build().await;
    let id = app.spawn_id().await;
    let r = app
        .post(&format!("/api/v1/sandboxes/{id}/files"))
        .json(&json!({"path": "/workspace/w/seed", "content": "x"}))
        .send()
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    (app, id)
}

async fn write(app: &TestApp, id: &str, path: &str) {
    let r = app
        .post(&format!("/api/v1/sandboxes/{id}/files"))
        .json(&json!({"path": path, "content": "hello"}))
        .send()
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
}

/// inotify instances the sandbox's agent holds (it runs on the host for the mock).
fn agent_watches(app: &TestApp, id: &str) -> usize {
    let pid = app.mock.agent_pid(id).expect("the agent runs");
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter(|fd| {
            std::fs::read_link(fd.path()).is_ok_and(|l| l.to_string_lossy().contains("inotify"))
        })
        .count()
}

/// Lines of an NDJSON body until one equals `want` (10 s at most); all lines read.
async fn lines_until(
    body: &mut (impl futures_util::Stream<Item = Result<bytes::Bytes, axum::Error>> + Unpin),
    buf: &mut Vec<u8>,
    want: &Value,
) -> Vec<Value> {
    let mut seen = Vec::new();
    let end = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=nl).collect();
            let v: Value = serde_json::from_slice(&line).unwrap();
            let done = &v == want;
            seen.push(v);
            if done {
                return seen;
            }
        }
        let piece = tokio::time::timeout_at(end, body.next())
            .await
            .unwrap_or_else(|_| panic!("no {want} within 10 s; saw {seen:?}"))
            .expect("the body ended")
            .unwrap();
        buf.extend_from_slice(&piece);
    }
}

#[tokio::test]
async fn changes_stream_as_ndjson_and_the_watch_ends_with_the_body() {
    let (app, id) = app().await;
    let resp = app
        .get(&format!(
            "/api/v1/sandboxes/{id}/files/watch?path=/workspace/w&recursive=true"
        ))
        .send_streaming()
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "application/x-ndjson"
    );
    let mut body = resp.into_body().into_data_stream();
    let mut buf = Vec::new();
    write(&app, &id, "/workspace/w/sub/a.txt").await;
    let seen = lines_until(
        &mut body,
        &mut buf,
        &json!({"kind": "create", "name": "sub/a.txt"}),
    )
    .await;
    assert!(
        seen.contains(&json!({"kind": "create", "name": "sub"})),
        "{seen:?}"
    );
    write(&app, &id, "/workspace/w/sub/a.txt").await;
    lines_until(
        &mut body,
        &mut buf,
        &json!({"kind": "write", "name": "sub/a.txt"}),
    )
    .await;
    // The exact bytes of a line: keys in alphabetical order, like every view.
    let r = app
        .post(&format!("/api/v1/sandboxes/{id}/files/chmod"))
        .json(&json!({"path": "/workspace/w/seed", "mode": "0600"}))
        .send()
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let seen = lines_until(
        &mut body,
        &mut buf,
        &json!({"kind": "chmod", "name": "seed"}),
    )
    .await;
    assert!(seen.iter().all(|v| v.as_object().unwrap().len() == 2));
    assert!(buf.is_empty() || buf.starts_with(b"{\"kind\":"));

    assert_eq!(agent_watches(&app, &id), 1);
    drop(body);
    assert!(
        wait_until(Duration::from_secs(5), || async {
            agent_watches(&app, &id) == 0
        })
        .await
    );
}

#[tokio::test]
async fn failures_come_before_the_stream() {
    let (app, id) = app().await;
    let watch = |q: &str| app.get(&format!("/api/v1/sandboxes/{id}/files/watch{q}"));
    watch("")
        .send()
        .await
        .assert_error(StatusCode::BAD_REQUEST, "BAD_REQUEST");
    let msg = watch("?path=/workspace/nope")
        .send()
        .await
        .assert_error(StatusCode::NOT_FOUND, "FILE_NOT_FOUND");
    assert!(msg.contains("/workspace/nope"), "{msg}");
    let msg = watch("?path=/workspace/w/seed")
        .send()
        .await
        .assert_error(StatusCode::BAD_REQUEST, "BAD_REQUEST");
    assert!(msg.contains("/workspace/w/seed"), "{msg}");
    common::assert_no_host_path(&msg);
    watch("?path=/workspace/../..")
        .send()
        .await
        .assert_error(StatusCode::BAD_REQUEST, "BAD_REQUEST");
    watch("?path=/workspace&recursive=yes")
        .send()
        .await
        .assert_error(StatusCode::BAD_REQUEST, "BAD_REQUEST");
    app.get("/api/v1/sandboxes/sb-00000000/files/watch?path=/workspace")
        .send()
        .await
        .assert_error(StatusCode::NOT_FOUND, "NOT_FOUND");
    let r = app
        .post(&format!("/api/v1/sandboxes/{id}/pause"))
        .send()
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    watch("?path=/workspace")
        .send()
        .await
        .assert_error(StatusCode::CONFLICT, "SANDBOX_PAUSED");
    // A paused mock's agent is stopped and would outlive the test (it cannot see its root go).
    let r = app.delete(&format!("/api/v1/sandboxes/{id}")).send().await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
}

/// Over a real connection the server notices a client that hung up while no change was
/// happening (nothing to write), and the watch ends in the sandbox.
#[tokio::test]
async fn a_client_that_hangs_up_ends_the_watch() {
    let (app, id) = app().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let svc = app.svc.clone();
    let server = tokio::spawn(async move {
        stacyvm_server::serve(
            listener,
            svc,
            tokio_util::sync::CancellationToken::new(),
            Duration::from_secs(1),
        )
        .await
    });
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "GET /api/v1/sandboxes/{id}/files/watch?path=/workspace HTTP/1.1\r\nHost: x\r\n\r\n"
    );
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut head = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut head))
        .await
        .unwrap()
        .unwrap();
    let head = String::from_utf8_lossy(&head[..n]);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(agent_watches(&app, &id), 1);
    drop(tcp);
    assert!(
        wait_until(Duration::from_secs(5), || async {
            agent_watches(&app, &id) == 0
        })
        .await,
        "the watch outlived its client"
    );
    server.abort();
}
