//! Sandbox lifecycle, templates, extend, prune and files through the router.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use axum::http::StatusCode;
use common::{is_sandbox_id, keys, TestApp};
use serde_json::json;

#[tokio::test]
async fn spawn_get_list_destroy_shapes() {
    let app = TestApp::default_app().await;
    let r = app
        .post("/api/v1/sandboxes")
        .json(
            &json!({"image": "alpine:3.19", "memory_mb": 256, "vcpus": 2, "ttl": "10m",
            "metadata": {"k": "v"}}),
        )
        .send()
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert!(r.body.ends_with(b"}\n"), "Go-style trailing newline");
    let sb = r.json();
    let id = sb["id"].as_str().unwrap().to_string();
    assert!(is_sandbox_id(&id), "id {id}");
    assert_eq!(sb["state"], "running");
    assert_eq!(sb["worker_id"], "local");
    assert_eq!(sb["provider"], "mock");
    assert_eq!(sb["image"], "alpine:3.19");
    assert_eq!(sb["memory_mb"], 256);
    assert_eq!(sb["vcpus"], 2);
    assert_eq!(sb["metadata"], json!({"k": "v"}));
    assert_eq!(sb["preview_domain"], "localhost");
    let created = chrono::DateTime::parse_from_rfc3339(sb["created_at"].as_str().unwrap()).unwrap();
    let expires = chrono::DateTime::parse_from_rfc3339(sb["expires_at"].as_str().unwrap()).unwrap();
    let ttl = (expires - created).num_seconds();
    assert!((599..=601).contains(&ttl), "ttl {ttl}s");
    for k in ["owner_id", "tenant_id", "vm_id"] {
        assert!(
            sb.get(k).is_none(),
            "{k} should be omitted when empty: {sb}"
        );
    }

    // Defaults.
    let d = app.spawn(json!({})).await;
    assert_eq!(d["image"], "alpine:latest");
    assert_eq!(d["memory_mb"], 1024);
    assert_eq!(d["vcpus"], 1);
    assert!(d.get("metadata").is_none());

    let got = app.get(&format!("/api/v1/sandboxes/{id}")).send().await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.json(), sb, "get returns what spawn returned");

    let list = app.list().await;
    assert_eq!(list.len(), 2);
    // Newest first.
    assert_eq!(list[0]["id"], d["id"]);
    assert_eq!(list[1]["id"], sb["id"]);

    for _ in 0..2 {
        let del = app.delete(&format!("/api/v1/sandboxes/{id}")).send().await;
        assert_eq!(del.status, StatusCode::OK, "{}", del.text());
        assert_eq!(del.json(), json!({"status": "destroyed"}));
    }
    let gone = app.get(&format!("/api/v1/sandboxes/{id}")).send().await;
    gone.assert_error(StatusCode::NOT_FOUND, "NOT_FOUND");
    assert_eq!(app.list().await.len(), 1);
    assert_eq!(
        app.mock.call_count("destroy"),
        1,
        "second DELETE must not reach the provider"
    );

    let unknown = app.delete("/api/v1/sandboxes/sb-00000000").send().await;
    unknown.assert_error(StatusCode::NOT_FOUND, "NOT_FOUND");
    let unknown = app.get("/api/v1/sandboxes/sb-nonexistent").send().await;
    unknown.assert_error(StatusCode::NOT_FOUND, "NOT_FOUND");
}

#[tokio::test]
async fn empty_list_is_an_array() {
    let app = TestApp::default_app().await;
    let r = app.get("/api/v1/sandboxes").send().await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.text(), "[]\n");
}

#[tokio::test]
async fn logs_and_stats() {
    let app = TestApp::default_app().await;
    let id = app.spawn_id().await;
    let r = app
        .get(&format!("/api/v1/sandboxes/{id}/logs?lines=2"))
        .send()
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let lines = r.json();
    assert_eq!(lines.as_array().unwrap().len(), 2, "{lines}");
    let r = app
        .get(&format!("/api/v1/sandboxes/{id}/stats"))
        .send()
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json(), json!({"supported": false}));
    let r = app.get("/api/v1/sandboxes/sb-00000000/logs").send().await;
    r.assert_error(StatusCode::NOT_FOUND, "NOT_FOUND");
}

#[tokio::test]
async fn templates_crud_and_spawn_with_empty_body() {
    let app = TestApp::default_app().await;
    let r = app
        .post("/api/v1/templates")
        .json(
            &json!({"name": "py", "image": "python:3.12", "description": "python",
            "vcpus": 4, "ttl": "1h", "provider": "x", "metadata": {"a": "b"}}),
        )
        .send()
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let t = r.json();
    assert_eq!(t["name"], "py");
    assert_eq!(t["image"], "python:3.12");
    assert_eq!(t["version"], 1);
    assert_eq!(t["memory_mb"], 512);
    assert_eq!(t["cpu_cores"], 1);
    assert_eq!(t["ttl_seconds"], 300);
    for k in ["vcpus", "ttl", "provider", "metadata"] {
        assert!(
            t.get(k).is_none(),
            "SDK-only key {k} must not be returned: {t}"
        );
    }

    let dup = app
        .post("/api/v1/templates")
        .json(&json!({"name": "py", "image": "x"}))
        .send()
        .await;
    dup.assert_error(StatusCode::CONFLICT, "CONFLICT");
    let bad = app
        .post("/api/v1/templates")
        .json(&json!({"name": "", "image": "x"}))
        .send()
        .await;
    bad.assert_error(StatusCode::BAD_REQUEST, "BAD_REQUEST");

    app.post("/api/v1/templates")
        .json(&json!({"name": "a-first", "image": "alpine"}))
        .send()
        .await;
    let list = app.get("/api/v1/templates").send().await.json();
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a-first", "py"], "ordered by name");

    let got = app.get("/api/v1/templates/py").send().await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.json()["description"], "python");

    let put = app
        .put("/api/v1/templates/py")
        .json(&json!({"name": "ignored", "image": "python:3.13", "memory_mb": 256, "ttl_seconds": 60}))
        .send()
        .await;
    assert_eq!(put.status, StatusCode::OK, "{}", put.text());
    let put = put.json();
    assert_eq!(put["name"], "py", "name comes from the path");
    assert_eq!(put["image"], "python:3.13");
    assert_eq!(
        app.get("/api/v1/templates/py").send().await.json()["memory_mb"],
        256
    );
    let missing = app
        .put("/api/v1/templates/nope")
        .json(&json!({"image": "x"}))
        .send()
        .await;
    missing.assert_error(StatusCode::NOT_FOUND, "NOT_FOUND");

    // The Python SDK's spawn_template posts no body at all.
    let r = app.post("/api/v1/templates/py/spawn").send().await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let sb = r.json();
    assert!(is_sandbox_id(sb["id"].as_str().unwrap()));
    assert_eq!(sb["image"], "python:3.13");
    assert_eq!(sb["memory_mb"], 256);
    assert_eq!(sb["metadata"], json!({"template": "py"}));
    let c = chrono::DateTime::parse_from_rfc3339(sb["created_at"].as_str().unwrap()).unwrap();
    let e = chrono::DateTime::parse_from_rfc3339(sb["expires_at"].as_str().unwrap()).unwrap();
    assert!(
        ((e - c).num_seconds() - 60).abs() <= 1,
        "template ttl_seconds applies"
    );

    // The TS SDK sends overrides.
    let r = app
        .post("/api/v1/templates/py/spawn")
        .json(&json!({"ttl": "2m"}))
        .send()
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let r = app.post("/api/v1/templates/nope/spawn").send().await;
    r.assert_error(StatusCode::NOT_FOUND, "NOT_FOUND");

    let del = app.delete("/api/v1/templates/py").send().await;
    assert_eq!(del.status, StatusCode::OK);
    assert_eq!(del.json(), json!({"status": "deleted"}));
    app.get("/api/v1/templates/py")
        .send()
        .await
        .assert_error(StatusCode::NOT_FOUND, "NOT_FOUND");
    app.delete("/api/v1/templates/py")
        .send()
        .await
        .assert_error(StatusCode::NOT_FOUND, "NOT_FOUND");
}

#[tokio::test]
async fn extend_within_and_beyond_max_ttl() {
    let app = TestApp::new()
        .with_limits(|l| l.max_ttl = "1h".parse().unwrap())
        .build()
        .await;
    let sb = app.spawn(json!({"ttl": "5m"})).await;
    let id = sb["id"].as_str().unwrap();
    let r = app
        .post(&format!("/api/v1/sandboxes/{id}/extend"))
        .json(&json!({"ttl": "30m"}))
        .send()
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let ext = r.json();
    assert_eq!(ext["id"], id);
    let c = chrono::Utc::now();
    let e = chrono::DateTime::parse_from_rfc3339(ext["expires_at"].as_str().unwrap()).unwrap();
    let left = (e.with_timezone(&chrono::Utc) - c).num_seconds();
    assert!(
        (1790..=1801).contains(&left),
        "expires in {left}s, want ~30m"
    );

    let r = app
        .post(&format!("/api/v1/sandboxes/{id}/extend"))
        .json(&json!({"ttl": "2h"}))
        .send()
        .await;
    r.assert_error(StatusCode::TOO_MANY_REQUESTS, "RESOURCE_LIMIT");
    let after = app
        .get(&format!("/api/v1/sandboxes/{id}"))
        .send()
        .await
        .json();
    assert_eq!(
        after["expires_at"], ext["expires_at"],
        "a refused extend changes nothing"
    );

    for body in [
        json!({}),
        json!({"ttl": "soon"}),
        json!({"ttl": "-5m"}),
        json!({"ttl": "0s"}),
    ] {
        let r = app
            .post(&format!("/api/v1/sandboxes/{id}/extend"))
            .json(&body)
            .send()
            .await;
        r.assert_error(StatusCode::BAD_REQUEST, "BAD_REQUEST");
    }
    let r = app
        .post("/api/v1/sandboxes/sb-00000000/extend")
        .json(&json!({"ttl": "1m"}))
        .send()
        .await;
    r.assert_error(StatusCode::NOT_FOUND, "NOT_FOUND");
}

#[tokio::test]
async fn prune_destroys_only_expired() {
    let app = TestApp::default_app().await;
    let keep = app.spawn_id().await;
    let short = app.spawn(json!({"ttl": "1ms"})).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    tokio::time::sleep(Duration::from_millis(30)).await;
    let r = app.delete("/api/v1/sandboxes").send().await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json(), json!({"pruned": 1}));
    let ids: Vec<String> = app
        .list()
        .await
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, [keep]);
    app.get(&format!("/api/v1/sandboxes/{short}"))
        .send()
        .await
        .assert_error(StatusCode::NOT_FOUND, "NOT_FOUND");
    assert_eq!(
        app.delete("/api/v1/sandboxes").send().await.json(),
        json!({"pruned": 0})
    );
}

#[tokio::test]
async fn files_round_trip() {
    let app = TestApp::default_app().await;
    let id = app.spawn_id().await;
    let base = format!("/api/v1/sandboxes/{id}/files");
    let w = app
        .post(&base)
        .json(&json!({"path": "/workspace/hello.txt", "content": "hello world"}))
        .send()
        .await;
    assert_eq!(w.status, StatusCode::OK, "{}", w.text());
    assert_eq!(w.json(), json!({"status": "written"}));
    let r = app
        .get(&format!("{base}?path=/workspace/hello.txt"))
        .send()
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("content-type"), Some("application/octet-stream"));
    assert_eq!(r.text(), "hello world");

    let st = app
        .get(&format!("{base}/stat?path=/workspace/hello.txt"))
        .send()
        .await;
    assert_eq!(st.status, StatusCode::OK);
    let st = st.json();
    assert_eq!(keys(&st), ["is_dir", "mod_time", "mode", "path", "size"]);
    assert_eq!(st["size"], 11);
    assert_eq!(st["is_dir"], false);

    app.post(&base)
        .json(&json!({"path": "/workspace/a.log", "content": "1"}))
        .send()
        .await;
    app.post(&base)
        .json(&json!({"path": "/workspace/b.log", "content": "2"}))
        .send()
        .await;
    let g = app
        .get(&format!("{base}/glob?pattern=/workspace/*.log"))
        .send()
        .await
        .json();
    assert_eq!(g.as_array().unwrap().len(), 2, "{g}");
    let l = app
        .get(&format!("{base}/list?path=/workspace"))
        .send()
        .await
        .json();
    assert_eq!(l.as_array().unwrap().len(), 3, "{l}");

    let mv = app
        .post(&format!("{base}/move"))
        .json(&json!({"old_path": "/workspace/a.log", "new_path": "/workspace/c.log"}))
        .send()
        .await;
    assert_eq!(mv.json(), json!({"status": "moved"}));
    let ch = app
        .post(&format!("{base}/chmod"))
        .json(&json!({"path": "/workspace/c.log", "mode": "0755"}))
        .send()
        .await;
    assert_eq!(ch.json(), json!({"status": "chmod applied"}));
    let d = app
        .delete(&format!("{base}?path=/workspace/c.log"))
        .send()
        .await;
    assert_eq!(d.json(), json!({"status": "deleted"}));

    let missing = app
        .get(&format!("{base}?path=/workspace/c.log"))
        .send()
        .await;
    let msg = missing.assert_error(StatusCode::NOT_FOUND, "FILE_NOT_FOUND");
    assert!(
        msg.contains("/workspace/c.log"),
        "names the path as given: {msg}"
    );
    let missing = app
        .get(&format!("{base}/stat?path=/workspace/nope"))
        .send()
        .await;
    missing.assert_error(StatusCode::NOT_FOUND, "FILE_NOT_FOUND");
    let missing = app.get(&format!("{base}/list?path=/nope")).send().await;
    missing.assert_error(StatusCode::NOT_FOUND, "FILE_NOT_FOUND");
    let r = app
        .get("/api/v1/sandboxes/sb-00000000/files?path=/x")
        .send()
        .await;
    r.assert_error(StatusCode::NOT_FOUND, "NOT_FOUND");
}

/// `limits.*` bound what a spawn may ask for, and the refusal names the setting; what is
/// within the limit, and a spawn that asks for nothing, still work.
#[tokio::test]
async fn spawn_resources_are_bounded_by_the_operator_limits() {
    let app = TestApp::new()
        .with_limits(|l| {
            l.max_memory_mb = 2048;
            l.max_vcpus = 2;
        })
        .build()
        .await;
    for (body, key) in [
        (json!({"memory_mb": 4096}), "limits.max_memory_mb"),
        (json!({"vcpus": 3}), "limits.max_vcpus"),
        (json!({"memory_mb": 1 << 30}), "limits.max_memory_mb"),
    ] {
        let r = app.post("/api/v1/sandboxes").json(&body).send().await;
        let msg = r.assert_error(StatusCode::BAD_REQUEST, "BAD_REQUEST");
        assert!(msg.contains(key), "{body}: {msg}");
    }
    let r = app
        .post("/api/v1/sandboxes")
        .json(&json!({"memory_mb": 2048, "vcpus": 2}))
        .send()
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let r = app.post("/api/v1/sandboxes").json(&json!({})).send().await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(r.json()["memory_mb"], 1024);
    // Nothing was stored for the refused requests.
    let listed = app.get("/api/v1/sandboxes").send().await.json();
    assert_eq!(listed.as_array().map(Vec::len), Some(2), "{listed}");
}
