//! The streamed file routes through the router: `PUT …/files?path=` (raw body) and the
//! streamed `GET …/files?path=`, with the mock provider.
#![allow(clippy::unwrap_used)]

mod common;

use axum::body::Body;
use axum::http::StatusCode;
use common::TestApp;
use serde_json::json;
use stacyvm_types::EventKind;

fn noise(len: usize) -> Vec<u8> {
    let mut seed = 0x9e37_79b9_u32;
    (0..len)
        .map(|_| {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            seed.to_be_bytes()[0]
        })
        .collect()
}

#[tokio::test]
async fn upload_then_download_is_binary_exact() {
    let app = TestApp::default_app().await;
    let id = app.spawn_id().await;
    let mut events = app.svc.subscribe_events();
    let base = format!("/api/v1/sandboxes/{id}/files");
    let data = noise((2 << 20) + 77);
    // A body that arrives in pieces, as a network upload does.
    let pieces: Vec<Result<Vec<u8>, std::io::Error>> =
        data.chunks(65_521).map(|c| Ok(c.to_vec())).collect();
    let body = Body::from_stream(futures_util::stream::iter(pieces));
    let r = app
        .put(&format!("{base}?path=/workspace/bin/blob&mode=0755"))
        .raw("application/octet-stream", body)
        .send()
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json(), json!({"status": "written", "size": data.len()}));
    assert_eq!(events.next().await.unwrap().kind, EventKind::FileWritten);

    let r = app
        .get(&format!("{base}?path=/workspace/bin/blob"))
        .send()
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("content-type"), Some("application/octet-stream"));
    assert_eq!(
        r.header("content-length"),
        Some(data.len().to_string().as_str())
    );
    assert!(
        r.body == data,
        "content differs ({} bytes back)",
        r.body.len()
    );
    assert_eq!(events.next().await.unwrap().kind, EventKind::FileRead);

    let st = app
        .get(&format!("{base}/stat?path=/workspace/bin/blob"))
        .send()
        .await
        .json();
    assert_eq!(st["size"], data.len());
    assert_eq!(st["mode"], "755");
    assert_eq!(app.mock.call_count("write_file"), 1);
    assert_eq!(app.mock.call_count("read_file"), 1);

    // The SDK's JSON write and raw read are unchanged.
    let r = app
        .post(&base)
        .json(&json!({"path": "/workspace/hello.txt", "content": "hello"}))
        .send()
        .await;
    assert_eq!(r.json(), json!({"status": "written"}));
    let r = app
        .get(&format!("{base}?path=/workspace/hello.txt"))
        .send()
        .await;
    assert_eq!(r.text(), "hello");
}

#[tokio::test]
async fn upload_is_not_bound_by_max_body_bytes() {
    let app = TestApp::new()
        .with_settings(|s| s.max_body_bytes = 4096)
        .build()
        .await;
    let id = app.spawn_id().await;
    let base = format!("/api/v1/sandboxes/{id}/files");
    let data = noise(1 << 20);
    let r = app
        .put(&format!("{base}?path=/workspace/big"))
        .raw("application/octet-stream", data.clone())
        .send()
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let r = app.get(&format!("{base}?path=/workspace/big")).send().await;
    assert!(r.body == data);
    // The JSON write keeps its limit.
    let r = app
        .post(&base)
        .json(&json!({"path": "/workspace/j", "content": "x".repeat(8192)}))
        .send()
        .await;
    r.assert_error(StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE");
}

#[tokio::test]
async fn upload_errors() {
    let app = TestApp::default_app().await;
    let id = app.spawn_id().await;
    let base = format!("/api/v1/sandboxes/{id}/files");
    let put = |q: &str| {
        app.put(&format!("{base}{q}"))
            .raw("application/octet-stream", "data")
    };
    put("?path=../../etc/escape")
        .send()
        .await
        .assert_error(StatusCode::BAD_REQUEST, "BAD_REQUEST");
    put("")
        .send()
        .await
        .assert_error(StatusCode::BAD_REQUEST, "BAD_REQUEST");
    put("?path=/workspace/x&mode=999")
        .send()
        .await
        .assert_error(StatusCode::BAD_REQUEST, "BAD_REQUEST");
    put("?path=/workspace")
        .send()
        .await
        .assert_error(StatusCode::BAD_REQUEST, "BAD_REQUEST");
    app.put("/api/v1/sandboxes/sb-00000000/files?path=/x")
        .raw("application/octet-stream", "data")
        .send()
        .await
        .assert_error(StatusCode::NOT_FOUND, "NOT_FOUND");
    app.get(&format!("{base}?path=../../etc/passwd"))
        .send()
        .await
        .assert_error(StatusCode::BAD_REQUEST, "BAD_REQUEST");
    app.get(&format!("{base}?path=/workspace/nope"))
        .send()
        .await
        .assert_error(StatusCode::NOT_FOUND, "FILE_NOT_FOUND");
    assert!(!app
        .mock
        .host_root(&id)
        .unwrap()
        .join("workspace/x")
        .exists());
}

#[tokio::test]
async fn upload_needs_an_api_key() {
    let app = TestApp::new().with_api_key("k-0123456789").build().await;
    let r = app
        .post("/api/v1/sandboxes")
        .api_key("k-0123456789")
        .json(&json!({"image": "alpine"}))
        .send()
        .await;
    let id = r.json()["id"].as_str().unwrap().to_string();
    let url = format!("/api/v1/sandboxes/{id}/files?path=/workspace/x");
    app.put(&url)
        .raw("application/octet-stream", "data")
        .send()
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    let r = app
        .put(&url)
        .api_key("k-0123456789")
        .raw("application/octet-stream", "data")
        .send()
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
}

/// A backend without a streaming path buffers the upload, so it is held to `max_body_bytes`
/// like the JSON write (413), and nothing is written.
#[tokio::test]
async fn buffering_backends_keep_the_body_limit() {
    let app = TestApp::new()
        .with_settings(|s| s.max_body_bytes = 4096)
        .build()
        .await;
    app.mock.set_buffered_streams(true);
    let id = app.spawn_id().await;
    let base = format!("/api/v1/sandboxes/{id}/files");
    let r = app
        .put(&format!("{base}?path=/workspace/big"))
        .raw("application/octet-stream", vec![1u8; 8192])
        .send()
        .await;
    let msg = r.assert_error(StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE");
    assert!(msg.contains("4096"), "{msg}");
    assert!(!app
        .mock
        .host_root(&id)
        .unwrap()
        .join("workspace/big")
        .exists());
    let r = app
        .put(&format!("{base}?path=/workspace/small"))
        .raw("application/octet-stream", vec![2u8; 4096])
        .send()
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let r = app
        .get(&format!("{base}?path=/workspace/small"))
        .send()
        .await;
    assert_eq!(r.body, vec![2u8; 4096]);
}
