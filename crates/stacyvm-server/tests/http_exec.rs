//! Exec through the router: sync results, NDJSON streams, timeouts.

#![allow(clippy::unwrap_used)]

mod common;

use axum::http::StatusCode;
use common::{keys, TestApp};
use serde_json::{json, Value};

async fn exec(app: &TestApp, id: &str, body: Value) -> common::Resp {
    app.post(&format!("/api/v1/sandboxes/{id}/exec"))
        .json(&body)
        .send()
        .await
}

fn ndjson_lines(body: &str) -> Vec<Value> {
    assert!(
        body.ends_with('\n'),
        "every line ends with a newline: {body:?}"
    );
    body.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line {l:?}: {e}")))
        .collect()
}

#[tokio::test]
async fn sync_exec_shape_and_exit_codes() {
    let app = TestApp::default_app().await;
    let id = app.spawn_id().await;

    let r = exec(&app, &id, json!({"command": "echo out; echo err >&2"})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let v = r.json();
    assert_eq!(keys(&v), ["duration", "exit_code", "stderr", "stdout"]);
    assert_eq!(v["exit_code"], 0);
    assert_eq!(v["stdout"], "out\n");
    assert_eq!(v["stderr"], "err\n");
    let dur = v["duration"].as_str().unwrap();
    assert!(
        dur.parse::<stacyvm_types::GoDuration>().is_ok(),
        "Go duration: {dur}"
    );

    // Non-zero exit is a result, not an error.
    let r = exec(&app, &id, json!({"command": "exit 42"})).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["exit_code"], 42);

    // Shell mode quotes args; argv mode runs them literally.
    let r = exec(
        &app,
        &id,
        json!({"command": "echo", "args": ["a b", "$HOME"]}),
    )
    .await;
    assert_eq!(r.json()["stdout"], "a b $HOME\n");
    let r = exec(
        &app,
        &id,
        json!({"command": "printf", "args": ["%s-%s", "x", "y"], "mode": "argv"}),
    )
    .await;
    assert_eq!(r.json()["stdout"], "x-y");
    let r = exec(
        &app,
        &id,
        json!({"command": "echo $FOO", "env": {"FOO": "bar"}}),
    )
    .await;
    assert_eq!(r.json()["stdout"], "bar\n");
    let r = exec(&app, &id, json!({"command": "basename \"$PWD\""})).await;
    assert_eq!(
        r.json()["stdout"],
        "workspace\n",
        "default cwd is the workspace"
    );

    let r = exec(&app, "sb-00000000", json!({"command": "true"})).await;
    r.assert_error(StatusCode::NOT_FOUND, "NOT_FOUND");
}

#[tokio::test]
async fn stream_ends_with_exit_line() {
    let app = TestApp::default_app().await;
    let id = app.spawn_id().await;
    let r = exec(
        &app,
        &id,
        json!({"command": "echo one; echo two >&2; exit 3", "stream": true}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/x-ndjson"));
    assert_eq!(r.header("cache-control"), Some("no-cache"));
    let lines = ndjson_lines(&r.text());
    let (last, chunks) = lines.split_last().unwrap();
    assert_eq!(last["stream"], "exit", "{lines:?}");
    assert_eq!(last["data"], "");
    assert_eq!(last["exit_code"], 3);
    assert!(last["duration"]
        .as_str()
        .unwrap()
        .parse::<stacyvm_types::GoDuration>()
        .is_ok());
    let mut out = String::new();
    let mut err = String::new();
    for c in chunks {
        assert_eq!(
            keys(c),
            ["data", "stream"],
            "chunks carry exactly two keys: {c}"
        );
        match c["stream"].as_str().unwrap() {
            "stdout" => out.push_str(c["data"].as_str().unwrap()),
            "stderr" => err.push_str(c["data"].as_str().unwrap()),
            other => panic!("unexpected stream {other}"),
        }
    }
    assert_eq!(out, "one\n");
    assert_eq!(err, "two\n");

    let r = exec(&app, &id, json!({"command": "true", "stream": true})).await;
    let lines = ndjson_lines(&r.text());
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["exit_code"], 0);

    // Errors before the stream starts are plain JSON errors.
    let r = exec(
        &app,
        "sb-00000000",
        json!({"command": "true", "stream": true}),
    )
    .await;
    r.assert_error(StatusCode::NOT_FOUND, "NOT_FOUND");
    let r = exec(
        &app,
        &id,
        json!({"command": "true", "stream": true, "mode": "weird"}),
    )
    .await;
    r.assert_error(StatusCode::BAD_REQUEST, "BAD_REQUEST");
}

#[tokio::test]
async fn exec_timeout() {
    let app = TestApp::default_app().await;
    let id = app.spawn_id().await;
    let started = std::time::Instant::now();
    let r = exec(&app, &id, json!({"command": "sleep 5", "timeout": "200ms"})).await;
    let msg = r.assert_error(StatusCode::REQUEST_TIMEOUT, "TIMEOUT");
    assert!(msg.contains(&id), "{msg}");
    assert!(
        started.elapsed().as_secs() < 4,
        "the command was cut at its timeout"
    );

    let r = exec(
        &app,
        &id,
        json!({"command": "sleep 5", "timeout": "200ms", "stream": true}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let lines = ndjson_lines(&r.text());
    let (last, rest) = lines.split_last().unwrap();
    assert_eq!(last["stream"], "exit");
    assert_eq!(last["exit_code"], 124);
    assert_eq!(
        rest.last().unwrap()["stream"],
        "stderr",
        "timeout chunk precedes the exit line"
    );
    assert_eq!(rest.last().unwrap()["data"], format!("exec timeout: {id}"));

    // Above the configured max → 429; the sandbox still works afterwards.
    let r = exec(&app, &id, json!({"command": "true", "timeout": "11m"})).await;
    r.assert_error(StatusCode::TOO_MANY_REQUESTS, "RESOURCE_LIMIT");
    let r = exec(&app, &id, json!({"command": "echo ok"})).await;
    assert_eq!(r.json()["stdout"], "ok\n");
}

#[tokio::test]
async fn exec_bad_inputs() {
    let app = TestApp::default_app().await;
    let id = app.spawn_id().await;
    let cases = [
        json!({"command": "true", "mode": "python"}),
        json!({"command": "   "}),
        json!({"command": "", "mode": "argv"}),
        json!({"command": "true", "timeout": "soon"}),
        json!({"command": "true", "timeout": "-1s"}),
        json!({"command": 5}),
        json!({"command": "true", "args": "not-a-list"}),
        json!({"command": "true", "stream": "yes"}),
    ];
    for body in cases {
        let r = exec(&app, &id, body.clone()).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {}", r.text());
        r.assert_error(StatusCode::BAD_REQUEST, "BAD_REQUEST");
    }
    let r = app
        .post(&format!("/api/v1/sandboxes/{id}/exec"))
        .raw_json("{\"command\":")
        .send()
        .await;
    r.assert_error(StatusCode::BAD_REQUEST, "BAD_REQUEST");
    let r = app
        .post(&format!("/api/v1/sandboxes/{id}/exec"))
        .send()
        .await;
    r.assert_error(StatusCode::BAD_REQUEST, "BAD_REQUEST");
    assert_eq!(
        app.mock.call_count("exec"),
        0,
        "bad input never reaches the provider"
    );
}
