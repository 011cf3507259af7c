//! Background processes through the router (sandbox-model.md §1), over an in-memory process
//! table (`common::fake_procs`): shapes, output NDJSON with `since`, encodings, stdin, signals,
//! resize, errors, events, and the attach WebSocket over a real listener.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use axum::http::StatusCode;
use common::fake_procs::FakeProcs;
use common::{keys, wait_until, TestApp};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use stacyvm_types::{EventKind, OutputStream};
use tokio_tungstenite::tungstenite::Message;

async fn app() -> (TestApp, std::sync::Arc<FakeProcs>, String) {
    let (app, fake) = TestApp::new().build_with_processes().await;
    let id = app.spawn_id().await;
    (app, fake, id)
}

async fn start(app: &TestApp, id: &str, body: Value) -> Value {
    let r = app
        .post(&format!("/api/v1/sandboxes/{id}/processes"))
        .json(&body)
        .send()
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    r.json()
}

fn lines(body: &str) -> Vec<Value> {
    body.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line {l:?}: {e}")))
        .collect()
}

async fn output(app: &TestApp, id: &str, pid: u64, query: &str) -> Vec<Value> {
    let r = app
        .get(&format!(
            "/api/v1/sandboxes/{id}/processes/{pid}/output?{query}"
        ))
        .send()
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/x-ndjson"));
    lines(&r.text())
}

#[tokio::test]
async fn start_list_get_shapes() {
    let (app, _fake, id) = app().await;
    let mut events = app.svc.subscribe_events();
    let p = start(&app, &id, json!({"command": "sleep 100", "tag": "web"})).await;
    assert_eq!(
        keys(&p),
        [
            "args",
            "command",
            "ended_at",
            "exit_code",
            "next_seq",
            "pid",
            "pty",
            "signal",
            "started_at",
            "state",
            "stdin",
            "tag"
        ]
    );
    assert_eq!(p["state"], "running");
    assert_eq!(p["tag"], "web");
    assert_eq!(p["exit_code"], Value::Null);
    assert_eq!(p["ended_at"], Value::Null);
    let started = p["started_at"].as_str().unwrap();
    assert!(
        chrono::DateTime::parse_from_rfc3339(started).is_ok(),
        "{started}"
    );
    let ev = events.try_next().unwrap();
    assert_eq!(ev.kind, EventKind::ProcessStarted);
    // An exec-log row as for exec: the command line; the exit code is not known yet. Written
    // behind the answer, so it may take a moment.
    let sid = stacyvm_types::SandboxId::from(id.as_str());
    let written = common::wait_until(std::time::Duration::from_secs(5), || async {
        !app.store.list_exec_logs(&sid, 10).await.unwrap().is_empty()
    })
    .await;
    assert!(written, "no exec log row");
    let logs = app.store.list_exec_logs(&sid, 10).await.unwrap();
    assert_eq!(
        (logs[0].command.as_str(), logs[0].exit_code),
        ("sh -c sleep 100", -1)
    );

    let q = start(&app, &id, json!({"command": "exit 3"})).await;
    assert_eq!(q["state"], "exited");
    assert_eq!(q["exit_code"], 3);
    assert!(q["ended_at"].is_string());

    let r = app
        .get(&format!("/api/v1/sandboxes/{id}/processes"))
        .send()
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let list = r.json();
    let pids: Vec<_> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["pid"].clone())
        .collect();
    assert_eq!(pids, [q["pid"].clone(), p["pid"].clone()], "newest first");

    let r = app
        .get(&format!("/api/v1/sandboxes/{id}/processes/{}", p["pid"]))
        .send()
        .await;
    assert_eq!(r.json()["pid"], p["pid"]);
}

#[tokio::test]
async fn output_since_resumes_without_duplicates_and_ends_with_exit() {
    let (app, fake, id) = app().await;
    let p = start(&app, &id, json!({"command": "print one\n"})).await;
    let pid = p["pid"].as_u64().unwrap();
    fake.emit(pid as u32, OutputStream::Stderr, b"two\n");

    let all = output(&app, &id, pid, "follow=false").await;
    assert_eq!(
        all,
        [
            json!({"seq": 0, "stream": "stdout", "data": "one\n"}),
            json!({"seq": 4, "stream": "stderr", "data": "two\n"}),
        ]
    );
    // Resume after the first record: only the second, once.
    let rest = output(&app, &id, pid, "follow=false&since=1").await;
    assert_eq!(rest, [all[1].clone()]);
    // Beyond the end: nothing (not following).
    assert!(output(&app, &id, pid, "follow=false&since=99")
        .await
        .is_empty());

    // Following: the stream stays open until the exit record.
    let f = fake.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        f.emit(pid as u32, OutputStream::Stdout, b"three\n");
        f.finish(pid as u32, 7);
    });
    let followed = output(&app, &id, pid, "since=5").await;
    assert_eq!(
        followed,
        [
            json!({"seq": 8, "stream": "stdout", "data": "three\n"}),
            json!({"seq": 14, "stream": "exit", "exit_code": 7, "signal": null}),
        ]
    );
}

#[tokio::test]
async fn base64_is_byte_exact_and_text_replaces() {
    let (app, fake, id) = app().await;
    let p = start(&app, &id, json!({"command": "quiet"})).await;
    let pid = p["pid"].as_u64().unwrap();
    fake.emit(pid as u32, OutputStream::Stdout, b"a\x00\xff\xfeb");
    let b = output(&app, &id, pid, "follow=false&encoding=base64").await;
    assert_eq!(b[0]["data"], "YQD//mI=");
    let t = output(&app, &id, pid, "follow=false").await;
    assert_eq!(t[0]["data"], "a\u{0}\u{fffd}\u{fffd}b");
    let r = app
        .get(&format!(
            "/api/v1/sandboxes/{id}/processes/{pid}/output?encoding=hex"
        ))
        .send()
        .await;
    r.assert_error(StatusCode::BAD_REQUEST, "BAD_REQUEST");
}

#[tokio::test]
async fn stdin_signal_and_resize() {
    let (app, fake, id) = app().await;
    let cat = start(&app, &id, json!({"command": "cat", "stdin": true})).await;
    let pid = cat["pid"].as_u64().unwrap();
    let url = format!("/api/v1/sandboxes/{id}/processes/{pid}");
    let r = app
        .post(&format!("{url}/stdin"))
        .raw("application/octet-stream", b"hi\x00\n".to_vec())
        .send()
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json(), json!({"written": 4}));
    let r = app
        .post(&format!("{url}/stdin?close=true"))
        .raw("application/octet-stream", b"bye".to_vec())
        .send()
        .await;
    assert_eq!(r.json(), json!({"written": 3}));
    let out = output(&app, &id, pid, "encoding=base64").await;
    assert_eq!(out.last().unwrap()["stream"], "exit");
    // After exit: 409 PROCESS_EXITED.
    let r = app
        .post(&format!("{url}/stdin"))
        .raw("application/octet-stream", b"x".to_vec())
        .send()
        .await;
    r.assert_error(StatusCode::CONFLICT, "PROCESS_EXITED");

    // Without stdin: 409 STDIN_CLOSED; resize of a non-PTY: 409 NOT_A_PTY.
    let p = start(&app, &id, json!({"command": "sleep 100"})).await;
    let url = format!("/api/v1/sandboxes/{id}/processes/{}", p["pid"]);
    let r = app
        .post(&format!("{url}/stdin"))
        .raw("application/octet-stream", b"x".to_vec())
        .send()
        .await;
    r.assert_error(StatusCode::CONFLICT, "STDIN_CLOSED");
    let r = app
        .post(&format!("{url}/resize"))
        .json(&json!({"cols": 100, "rows": 30}))
        .send()
        .await;
    r.assert_error(StatusCode::CONFLICT, "NOT_A_PTY");
    for bad in ["SIGSEGV", "", "kill -9"] {
        let r = app
            .post(&format!("{url}/signal"))
            .json(&json!({"signal": bad}))
            .send()
            .await;
        r.assert_error(StatusCode::BAD_REQUEST, "BAD_REQUEST");
    }
    let r = app
        .post(&format!("{url}/signal"))
        .json(&json!({"signal": "SIGTERM"}))
        .send()
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let v = r.json();
    assert_eq!(
        (
            v["state"].clone(),
            v["signal"].clone(),
            v["exit_code"].clone()
        ),
        (json!("exited"), json!("TERM"), json!(143))
    );

    // A PTY process resizes.
    let t = start(
        &app,
        &id,
        json!({"command": "sh", "pty": {"cols": 80, "rows": 24}}),
    )
    .await;
    assert_eq!(t["pty"], true);
    let r = app
        .post(&format!(
            "/api/v1/sandboxes/{id}/processes/{}/resize",
            t["pid"]
        ))
        .json(&json!({"cols": 132, "rows": 43}))
        .send()
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let size = fake.pty_size(t["pid"].as_u64().unwrap() as u32).unwrap();
    assert_eq!((size.cols, size.rows), (132, 43));
}

#[tokio::test]
async fn bad_input_and_unknown_pids() {
    let (app, _fake, id) = app().await;
    let base = format!("/api/v1/sandboxes/{id}/processes");
    for body in [
        json!({}),
        json!({"command": "x", "mode": "python"}),
        json!({"command": "x", "timeout": "-1s"}),
        json!({"command": "x", "pty": {"cols": 0, "rows": 10}}),
        json!({"command": "x", "tag": "t".repeat(200)}),
        json!({"command": "x", "unknown": 1}),
    ] {
        let r = app.post(&base).json(&body).send().await;
        r.assert_error(StatusCode::BAD_REQUEST, "BAD_REQUEST");
    }
    let r = app.get(&format!("{base}/4242")).send().await;
    r.assert_error(StatusCode::NOT_FOUND, "PROCESS_NOT_FOUND");
    let r = app.get(&format!("{base}/4242/output")).send().await;
    r.assert_error(StatusCode::NOT_FOUND, "PROCESS_NOT_FOUND");
    let r = app.post(&format!("{base}/4242/stdin")).send().await;
    r.assert_error(StatusCode::NOT_FOUND, "PROCESS_NOT_FOUND");
    let r = app
        .post(&format!("{base}/4242/signal"))
        .json(&json!({"signal": "KILL"}))
        .send()
        .await;
    r.assert_error(StatusCode::NOT_FOUND, "PROCESS_NOT_FOUND");
    let r = app
        .post(&format!("{base}/4242/resize"))
        .json(&json!({"cols": 10, "rows": 10}))
        .send()
        .await;
    r.assert_error(StatusCode::NOT_FOUND, "PROCESS_NOT_FOUND");
    // Attach: the 404 comes before any upgrade.
    let r = app
        .get(&format!("{base}/4242/attach"))
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .send()
        .await;
    r.assert_error(StatusCode::NOT_FOUND, "PROCESS_NOT_FOUND");
    let r = app
        .get("/api/v1/sandboxes/sb-00000000/processes")
        .send()
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_dropped_follower_stops_reading_and_the_process_runs_on() {
    let (app, fake, id) = app().await;
    let mut events = app.svc.subscribe_events();
    let p = start(&app, &id, json!({"command": "sleep 100"})).await;
    let pid = p["pid"].as_u64().unwrap() as u32;
    // The exit watcher is one reader.
    assert!(wait_until(Duration::from_secs(5), || async { fake.readers(pid) == 1 }).await);
    let resp = app
        .get(&format!("/api/v1/sandboxes/{id}/processes/{pid}/output"))
        .send_streaming()
        .await;
    let mut body = resp.into_body().into_data_stream();
    fake.emit(pid, OutputStream::Stdout, b"x");
    let first = body.next().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("\"x\""));
    assert_eq!(fake.readers(pid), 2);
    drop(body);
    assert!(wait_until(Duration::from_secs(5), || async { fake.readers(pid) == 1 }).await);
    let r = app
        .get(&format!("/api/v1/sandboxes/{id}/processes/{pid}"))
        .send()
        .await;
    assert_eq!(r.json()["state"], "running");

    // Its exit is published once seen.
    fake.finish(pid, 0);
    let seen = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Some(ev) = events.next().await {
                if ev.kind == EventKind::ProcessExited {
                    return ev;
                }
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(seen.sandbox_id.unwrap().as_str(), id);
}

async fn serve(app: &TestApp) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let svc = app.svc.clone();
    tokio::spawn(async move {
        stacyvm_server::serve(
            listener,
            svc,
            tokio_util::sync::CancellationToken::new(),
            Duration::from_secs(1),
        )
        .await
    });
    format!("ws://{addr}")
}

#[tokio::test]
async fn attach_ten_clients_see_the_same_bytes_and_the_exit() {
    let (app, fake, id) = app().await;
    let base = serve(&app).await;
    let p = start(
        &app,
        &id,
        json!({"command": "cat", "pty": {"cols": 80, "rows": 24}}),
    )
    .await;
    let pid = p["pid"].as_u64().unwrap() as u32;
    fake.emit(pid, OutputStream::Stdout, b"before\n");
    let url = format!("{base}/api/v1/sandboxes/{id}/processes/{pid}/attach");
    let mut clients = Vec::new();
    for _ in 0..10 {
        let (ws, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .unwrap();
        clients.push(ws);
    }
    // One client types (binary → stdin; `cat` echoes) and resizes (text frame).
    clients[0]
        .send(Message::Binary(b"typed\x00\xff".to_vec().into()))
        .await
        .unwrap();
    clients[0]
        .send(Message::Text(
            json!({"type": "resize", "cols": 100, "rows": 50})
                .to_string()
                .into(),
        ))
        .await
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || async {
            fake.pty_size(pid)
                .is_some_and(|s| s.cols == 100 && s.rows == 50)
        })
        .await
    );
    fake.finish(pid, 5);
    let mut seen = Vec::new();
    for mut ws in clients {
        let mut bytes = Vec::new();
        let mut exit = None;
        let mut close = None;
        while let Some(msg) = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .unwrap()
        {
            match msg.unwrap() {
                Message::Binary(b) => bytes.extend_from_slice(&b),
                Message::Text(t) => exit = Some(serde_json::from_str::<Value>(&t).unwrap()),
                Message::Close(c) => {
                    close = c.map(|c| u16::from(c.code));
                    break;
                }
                _ => {}
            }
        }
        assert_eq!(exit, Some(json!({"type": "exit", "exit_code": 5})));
        assert_eq!(close, Some(1000));
        seen.push(bytes);
    }
    assert_eq!(seen[0], b"before\ntyped\x00\xff");
    assert!(seen.iter().all(|b| *b == seen[0]), "identical bytes");
}

/// `?follow=true` starts and reads in one request: the Process object first, then the output
/// records from seq 0 up to the exit record; the process is listed as any other.
#[tokio::test]
async fn start_with_follow_streams_the_process_then_its_output() {
    // The mock's own agent (a real process), not the in-memory fake.
    let app = TestApp::default_app().await;
    let id = app.spawn_id().await;
    let r = app
        .post(&format!(
            "/api/v1/sandboxes/{id}/processes?follow=true&encoding=base64"
        ))
        .json(&json!({"command": "printf 'a\\0b'; exit 4"}))
        .send()
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/x-ndjson"));
    let l = lines(&r.text());
    let pid = l[0]["pid"].as_u64().expect("the Process first");
    assert_eq!(l[0]["command"], "printf 'a\\0b'; exit 4");
    assert_eq!(l[1]["seq"], 0);
    assert_eq!(l[1]["data"], "YQBi", "base64 of a NUL b");
    let last = l.last().unwrap();
    assert_eq!(
        (last["stream"].as_str(), last["exit_code"].as_i64()),
        (Some("exit"), Some(4))
    );
    let listed = app
        .get(&format!("/api/v1/sandboxes/{id}/processes/{pid}"))
        .send()
        .await;
    assert_eq!(listed.json()["exit_code"], 4);

    // A bad query is refused before anything starts.
    let r = app
        .post(&format!("/api/v1/sandboxes/{id}/processes?follow=maybe"))
        .json(&json!({"command": "touch started"}))
        .send()
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let procs = app
        .get(&format!("/api/v1/sandboxes/{id}/processes"))
        .send()
        .await
        .json();
    assert_eq!(procs.as_array().unwrap().len(), 1, "{procs}");
}
