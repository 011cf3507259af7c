//! Volumes through the router on the mock (sandbox-model.md §2, docs/state.md): the `/volumes`
//! routes, spawns with `volumes` and every refusal, and a volume's contents outliving the
//! sandbox that wrote them (files API, exec and a background process).

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use axum::http::StatusCode;
use common::{keys, wait_until, TestApp};
use serde_json::{json, Value};
use stacyvm_store::Volume;

async fn create(app: &TestApp, body: Value) -> common::Resp {
    app.post("/api/v1/volumes").json(&body).send().await
}

async fn spawn_with(app: &TestApp, volumes: Value) -> common::Resp {
    app.post("/api/v1/sandboxes")
        .json(&json!({"volumes": volumes}))
        .send()
        .await
}

async fn destroy(app: &TestApp, id: &str) {
    let r = app.delete(&format!("/api/v1/sandboxes/{id}")).send().await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
}

#[tokio::test]
async fn volume_routes_and_their_errors() {
    let app = TestApp::default_app().await;
    let r = create(&app, json!({"name": "data", "size_mb": 64})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let v = r.json();
    assert_eq!(
        keys(&v),
        [
            "created_at",
            "in_use_by",
            "name",
            "provider",
            "size_mb",
            "worker_id"
        ]
    );
    assert_eq!(
        (&v["name"], &v["size_mb"], &v["provider"], &v["worker_id"]),
        (&json!("data"), &json!(64), &json!("mock"), &json!("local"))
    );
    assert_eq!(v["in_use_by"], json!([]));

    create(&app, json!({"name": "data"}))
        .await
        .assert_error(StatusCode::CONFLICT, "CONFLICT");
    for bad in [
        json!({"name": ""}),
        json!({"name": "a/b"}),
        json!({"name": "-x"}),
    ] {
        create(&app, bad)
            .await
            .assert_error(StatusCode::BAD_REQUEST, "BAD_REQUEST");
    }
    create(&app, json!({"name": "x", "size_mb": -1}))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "BAD_REQUEST");
    create(&app, json!({"name": "x", "provider": "nope"}))
        .await
        .assert_error(StatusCode::NOT_FOUND, "NOT_FOUND");
    assert_eq!(
        create(&app, json!({"name": "alpha"})).await.status,
        StatusCode::CREATED
    );

    let list = app.get("/api/v1/volumes").send().await.json();
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alpha", "data"]);
    let got = app.get("/api/v1/volumes/data").send().await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.json(), v);
    app.get("/api/v1/volumes/nope")
        .send()
        .await
        .assert_error(StatusCode::NOT_FOUND, "NOT_FOUND");

    let d = app.delete("/api/v1/volumes/alpha").send().await;
    assert_eq!(d.status, StatusCode::OK, "{}", d.text());
    assert_eq!(d.json(), json!({"status": "deleted"}));
    app.delete("/api/v1/volumes/alpha")
        .send()
        .await
        .assert_error(StatusCode::NOT_FOUND, "NOT_FOUND");
    // The name is free again.
    assert_eq!(
        create(&app, json!({"name": "alpha"})).await.status,
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn spawn_with_volumes_refusals() {
    let app = TestApp::default_app().await;
    assert_eq!(
        create(&app, json!({"name": "data"})).await.status,
        StatusCode::CREATED
    );
    spawn_with(&app, json!([{"name": "nope", "mount_path": "/data"}]))
        .await
        .assert_error(StatusCode::NOT_FOUND, "NOT_FOUND");
    for path in [
        "data",
        "",
        "/",
        "/proc",
        "/sys/x",
        "/dev",
        "/etc",
        "/etc/app",
        "/bin",
        "/usr/local",
        "/lib",
        "/sbin",
        "/run",
        "/a/../b",
        "/../data",
        "/workspace",
        "/tmp",
    ] {
        let r = spawn_with(&app, json!([{"name": "data", "mount_path": path}])).await;
        r.assert_error(StatusCode::BAD_REQUEST, "BAD_REQUEST");
    }
    // One volume twice, or two overlapping paths, in one spawn.
    assert_eq!(
        create(&app, json!({"name": "other"})).await.status,
        StatusCode::CREATED
    );
    spawn_with(
        &app,
        json!([{"name": "data", "mount_path": "/a"}, {"name": "data", "mount_path": "/b"}]),
    )
    .await
    .assert_error(StatusCode::BAD_REQUEST, "BAD_REQUEST");
    spawn_with(
        &app,
        json!([{"name": "data", "mount_path": "/a"}, {"name": "other", "mount_path": "/a/b"}]),
    )
    .await
    .assert_error(StatusCode::BAD_REQUEST, "BAD_REQUEST");
    // Refused spawns leave no sandbox behind.
    assert!(app.list().await.is_empty());

    // Read-write by one live sandbox at a time; read-only beside it is fine.
    let a = spawn_with(&app, json!([{"name": "data", "mount_path": "/data"}])).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text());
    let a = a.json()["id"].as_str().unwrap().to_string();
    spawn_with(&app, json!([{"name": "data", "mount_path": "/data"}]))
        .await
        .assert_error(StatusCode::CONFLICT, "CONFLICT");
    let b = spawn_with(
        &app,
        json!([{"name": "data", "mount_path": "/data", "read_only": true}]),
    )
    .await;
    assert_eq!(b.status, StatusCode::CREATED, "{}", b.text());
    let b = b.json()["id"].as_str().unwrap().to_string();
    assert_eq!(app.list().await.len(), 2);

    let v = app.get("/api/v1/volumes/data").send().await.json();
    let mut users: Vec<&str> = v["in_use_by"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    users.sort();
    let mut want = vec![a.as_str(), b.as_str()];
    want.sort();
    assert_eq!(users, want);
    app.delete("/api/v1/volumes/data")
        .send()
        .await
        .assert_error(StatusCode::CONFLICT, "VOLUME_IN_USE");

    // The writer gone, another may write.
    destroy(&app, &a).await;
    let c = spawn_with(&app, json!([{"name": "data", "mount_path": "/data"}])).await;
    assert_eq!(c.status, StatusCode::CREATED, "{}", c.text());
    let c = c.json()["id"].as_str().unwrap().to_string();
    destroy(&app, &b).await;
    app.delete("/api/v1/volumes/data")
        .send()
        .await
        .assert_error(StatusCode::CONFLICT, "VOLUME_IN_USE");
    destroy(&app, &c).await;
    let d = app.delete("/api/v1/volumes/data").send().await;
    assert_eq!(d.status, StatusCode::OK, "{}", d.text());
}

#[tokio::test]
async fn a_volume_outlives_its_sandbox() {
    let app = TestApp::new().with_built_agent().build().await;
    assert_eq!(
        create(&app, json!({"name": "data"})).await.status,
        StatusCode::CREATED
    );
    let a = spawn_with(&app, json!([{"name": "data", "mount_path": "/data"}])).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text());
    let a = a.json()["id"].as_str().unwrap().to_string();

    // Files API, exec and a background process all write into it. Mock commands run on the
    // host in <root>/workspace, so the mount is `../data` to them.
    let w = app
        .post(&format!("/api/v1/sandboxes/{a}/files"))
        .json(&json!({"path": "/data/files.txt", "content": "files\n"}))
        .send()
        .await;
    assert_eq!(w.status, StatusCode::OK, "{}", w.text());
    let e = app
        .sh(&a, "echo exec > ../data/exec.txt && mkdir -p ../data/sub")
        .await;
    assert_eq!(e["exit_code"], 0, "{e}");
    let p = app
        .post(&format!("/api/v1/sandboxes/{a}/processes"))
        .json(&json!({"command": "echo process > ../data/sub/proc.txt"}))
        .send()
        .await;
    assert_eq!(p.status, StatusCode::CREATED, "{}", p.text());
    let seen = wait_until(Duration::from_secs(10), || async {
        app.get(&format!(
            "/api/v1/sandboxes/{a}/files?path=/data/sub/proc.txt"
        ))
        .send()
        .await
        .status
            == StatusCode::OK
    })
    .await;
    assert!(seen, "the process's file never appeared");
    destroy(&app, &a).await;

    let b = spawn_with(
        &app,
        json!([{"name": "data", "mount_path": "/mnt/data", "read_only": true}]),
    )
    .await;
    assert_eq!(b.status, StatusCode::CREATED, "{}", b.text());
    let b = b.json()["id"].as_str().unwrap().to_string();
    for (path, want) in [
        ("/mnt/data/files.txt", "files\n"),
        ("/mnt/data/exec.txt", "exec\n"),
        ("/mnt/data/sub/proc.txt", "process\n"),
    ] {
        let r = app
            .get(&format!("/api/v1/sandboxes/{b}/files?path={path}"))
            .send()
            .await;
        assert_eq!((r.status, r.text()), (StatusCode::OK, want.to_string()));
    }
    let e = app
        .sh(
            &b,
            "cat ../mnt/data/files.txt ../mnt/data/exec.txt ../mnt/data/sub/proc.txt",
        )
        .await;
    assert_eq!(e["stdout"], "files\nexec\nprocess\n", "{e}");
    let listed = app
        .get(&format!("/api/v1/sandboxes/{b}/files/list?path=/mnt/data"))
        .send()
        .await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.text());
    assert!(listed.text().contains("files.txt"), "{}", listed.text());
    destroy(&app, &b).await;
}

#[tokio::test]
async fn providers_without_volumes_and_volumes_on_another_worker() {
    // The process fake over the mock implements no volume calls: its answers are the trait's
    // defaults, as for a provider that cannot keep volumes.
    let (app, _fake) = TestApp::new().build_with_processes().await;
    create(&app, json!({"name": "data"}))
        .await
        .assert_error(StatusCode::CONFLICT, "NOT_SUPPORTED");
    assert!(app.get("/api/v1/volumes").send().await.json() == json!([]));
    let now = chrono::Utc::now();
    let record = |name: &str, worker: &str| Volume {
        name: name.into(),
        size_mb: 0,
        provider: "mock".into(),
        worker_id: worker.into(),
        created_at: now,
    };
    app.store
        .insert_volume(&record("data", "local"))
        .await
        .unwrap();
    spawn_with(&app, json!([{"name": "data", "mount_path": "/data"}]))
        .await
        .assert_error(StatusCode::CONFLICT, "NOT_SUPPORTED");

    // A volume another worker holds: this spawn is placed on `local`.
    let app = TestApp::default_app().await;
    app.store
        .insert_volume(&record("remote", "worker-a"))
        .await
        .unwrap();
    let msg = spawn_with(&app, json!([{"name": "remote", "mount_path": "/data"}]))
        .await
        .assert_error(StatusCode::CONFLICT, "WORKER_UNAVAILABLE");
    assert!(msg.contains("worker-a"), "{msg}");
    assert!(app.list().await.is_empty());
}
