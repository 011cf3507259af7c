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

/// 1 MiB of NUL bytes encodes to 6 MiB of JSON (`\u0000`): the cap is on the encoded reply.
#[tokio::test]
async fn sync_exec_output_is_capped_on_the_encoded_reply() {
    const CAP: usize = 64 * 1024;
    let app = TestApp::new()
        .with_settings(|s| s.max_exec_output = CAP)
        .build()
        .await;
    let id = app.spawn_id().await;

    let r = exec(
        &app,
        &id,
        json!({"command": "head -c 1048576 /dev/zero; echo err >&2; exit 3"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(
        r.body.len() <= CAP + 256,
        "reply of {} bytes for a {CAP}-byte cap",
        r.body.len()
    );
    let v = r.json();
    assert_eq!(v["truncated"], true);
    assert_eq!(v["exit_code"], 3, "the command ran to its end");
    assert_eq!(v["stderr"], "err\n");
    let out = v["stdout"].as_str().unwrap();
    assert!(!out.is_empty() && out.bytes().all(|b| b == 0));

    // Under the cap nothing changes, and the key stays absent (the SDK's dataclass).
    let r = exec(&app, &id, json!({"command": "head -c 1000 /dev/zero"})).await;
    let v = r.json();
    assert_eq!(v["stdout"].as_str().unwrap().len(), 1000);
    assert_eq!(keys(&v), ["duration", "exit_code", "stderr", "stdout"]);
}

/// Collected execs hold their output in memory: one sandbox runs a bounded number at once, and
/// a freed place is usable again. Streams are not counted.
#[tokio::test]
async fn concurrent_sync_execs_per_sandbox_are_bounded() {
    let app = TestApp::new()
        .with_settings(|s| s.max_sync_execs = 1)
        .build()
        .await;
    let id = app.spawn_id().await;
    let other = app.spawn_id().await;

    let slow = {
        let path = format!("/api/v1/sandboxes/{id}/exec");
        let req = app
            .post(&path)
            .json(&json!({"command": "touch started; sleep 2; echo done"}));
        tokio::spawn(async move { req.send().await })
    };
    let started = common::wait_until(std::time::Duration::from_secs(10), || async {
        let r = exec(&app, &other, json!({"command": "true"})).await;
        assert_eq!(r.status, StatusCode::OK, "another sandbox is not limited");
        app.get(&format!(
            "/api/v1/sandboxes/{id}/files?path=/workspace/started"
        ))
        .send()
        .await
        .status
            == StatusCode::OK
    })
    .await;
    assert!(started, "the first exec never started");

    let r = exec(&app, &id, json!({"command": "echo second"})).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.text());
    assert_eq!(r.json()["code"], "RESOURCE_LIMIT");
    assert!(r.text().contains("server.max_sync_execs"), "{}", r.text());
    let r = app
        .post(&format!("/api/v1/sandboxes/{id}/exec"))
        .json(&json!({"command": "echo streamed", "stream": true}))
        .send()
        .await;
    assert_eq!(r.status, StatusCode::OK, "streams are not bounded by it");

    let first = slow.await.unwrap();
    assert_eq!(first.json()["stdout"], "done\n");
    let r = exec(&app, &id, json!({"command": "echo again"})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["stdout"], "again\n");
}

#[tokio::test]
async fn the_exec_history_lists_what_ran_newest_first() {
    let app = TestApp::default_app().await;
    let id = app.spawn_id().await;
    assert_eq!(
        exec(&app, &id, json!({"command": "echo one"})).await.status,
        StatusCode::OK
    );
    assert_eq!(
        exec(&app, &id, json!({"command": "echo two >&2; exit 3"}))
            .await
            .status,
        StatusCode::OK
    );
    let r = app
        .get(&format!("/api/v1/sandboxes/{id}/execs"))
        .send()
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let rows = r.json();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(
        keys(&rows[0]),
        [
            "command",
            "created_at",
            "duration",
            "duration_ms",
            "exit_code",
            "stderr",
            "stdout"
        ]
    );
    assert_eq!(rows[0]["command"], "sh -c echo two >&2; exit 3");
    assert_eq!(rows[0]["exit_code"], 3);
    assert_eq!(rows[0]["stderr"], "two\n");
    assert_eq!(rows[1]["stdout"], "one\n");
    assert!(rows[0]["duration"]
        .as_str()
        .unwrap()
        .parse::<stacyvm_types::GoDuration>()
        .is_ok());
    // limit, and its errors.
    let r = app
        .get(&format!("/api/v1/sandboxes/{id}/execs?limit=1"))
        .send()
        .await;
    assert_eq!(r.json().as_array().unwrap().len(), 1);
    for bad in ["0", "501", "x", "-1"] {
        let r = app
            .get(&format!("/api/v1/sandboxes/{id}/execs?limit={bad}"))
            .send()
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}: {}", r.text());
        assert_eq!(r.json()["code"], "BAD_REQUEST");
    }
    let r = app.get("/api/v1/sandboxes/sb-00000000/execs").send().await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.json()["code"], "NOT_FOUND");
}
