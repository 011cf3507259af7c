//! The preview proxy through the router: `Host: {port}-{id}.{preview_domain}` with the
//! sandbox's preview token reaches a server "inside" a mock sandbox (mock commands run on the
//! host, so a server on the host's loopback stands in for it), before API routing and API-key
//! auth; its errors; and that other hosts still reach the API. The token checks and the
//! cookie flow are in `http_preview_token.rs`, remote sandboxes in `remote_preview.rs`.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use common::TestApp;
use serde_json::{json, Value};
use stacyvm_server::Settings;
use stacyvm_types::{Sandbox, SandboxState};
use tokio::net::TcpListener;

/// "The server inside the sandbox": answers every request with what it received, as JSON.
async fn echo_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = axum::Router::new().fallback(|req: Request| async move {
        let (parts, body) = req.into_parts();
        let body: Bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
        let headers: BTreeMap<String, String> = parts
            .headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
            .collect();
        let v = json!({
            "method": parts.method.as_str(),
            "uri": parts.uri.to_string(),
            "headers": headers,
            "body": String::from_utf8_lossy(&body),
        });
        (StatusCode::CREATED, axum::Json(v)).into_response()
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    port
}

/// A loopback port nothing listens on.
async fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}

/// Spawns a sandbox; its id and preview token (answered by the spawn).
async fn spawn(app: &TestApp) -> (String, String) {
    let v = app.spawn(json!({})).await;
    let token = v["preview_token"].as_str().unwrap().to_string();
    (v["id"].as_str().unwrap().to_string(), token)
}

/// The mock does not isolate: its previews are proxied only when enabled explicitly.
fn mock_previews(s: &mut Settings) {
    s.preview_unisolated = true;
}

#[tokio::test]
async fn proxies_to_the_server_in_a_mock_sandbox() {
    let app = TestApp::new().with_settings(mock_previews).build().await;
    let (id, token) = spawn(&app).await;
    let port = echo_server().await;
    let host = format!("{port}-{id}.localhost:7423");

    let r = app
        .post("/some/path/?q=1&b=two")
        .header("Host", &host)
        .header("X-API-Key", "must-not-leak")
        .header("X-Preview-Token", &token)
        .header("Cookie", "session=abc; stacyvm_preview_token=also-not")
        .raw_json(r#"{"hello":"sandbox"}"#)
        .send()
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let v: Value = r.json();
    assert_eq!(v["method"], "POST");
    // The path reaches the server as sent: no trailing-slash normalisation, no API routing.
    assert_eq!(v["uri"], "/some/path/?q=1&b=two");
    assert_eq!(v["body"], r#"{"hello":"sandbox"}"#);
    let h = &v["headers"];
    assert_eq!(h["host"], host.as_str());
    assert_eq!(h["cookie"], "session=abc");
    assert_eq!(h["content-type"], "application/json");
    assert_eq!(h["via"], "1.1 stacyvm-preview");
    assert_eq!(h["x-forwarded-host"], format!("{port}-{id}.localhost"));
    assert!(h.get("x-api-key").is_none(), "API key forwarded: {h}");
    assert!(h.get("x-preview-token").is_none(), "token forwarded: {h}");

    // Upper-case hosts (as some clients send them) and a GET without a body.
    let r = app
        .get("/")
        .header("Host", &format!("{port}-{}.LOCALHOST", id.to_uppercase()))
        .header("e2b-traffic-access-token", &token)
        .send()
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(r.json()["method"], "GET");
}

#[tokio::test]
async fn previews_need_no_api_key_but_the_api_still_does() {
    let app = TestApp::new()
        .with_settings(mock_previews)
        .with_api_key("secret-key")
        .build()
        .await;
    let r = app
        .post("/api/v1/sandboxes")
        .api_key("secret-key")
        .json(&json!({}))
        .send()
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_string();
    let token = r.json()["preview_token"].as_str().unwrap().to_string();
    let port = echo_server().await;

    let r = app
        .get("/api/v1/health")
        .header("Host", &format!("{port}-{id}.localhost"))
        .header("X-Preview-Token", &token)
        .send()
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(r.json()["uri"], "/api/v1/health", "went to the sandbox");

    for host in [
        "localhost:7423",
        "127.0.0.1",
        "api.example.com",
        "3000-x.other.example",
    ] {
        let r = app.get("/api/v1/health").header("Host", host).send().await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{host}: {}", r.text());
        let r = app
            .get("/api/v1/health")
            .header("Host", host)
            .api_key("secret-key")
            .send()
            .await;
        assert_eq!(r.status, StatusCode::OK, "{host}: {}", r.text());
        assert_eq!(r.json()["status"], "ok");
    }
}

#[tokio::test]
async fn preview_errors() {
    let app = TestApp::new().with_settings(mock_previews).build().await;
    let (id, token) = spawn(&app).await;

    // Unknown sandbox under the server's preview domain.
    let r = app
        .get("/")
        .header("Host", "3000-sb-00000000.localhost")
        .send()
        .await;
    let msg = r.assert_error(StatusCode::NOT_FOUND, "NOT_FOUND");
    assert!(msg.contains("sb-00000000"), "{msg}");

    // Nothing listens on that port of the sandbox: 502, and no address in the message.
    let port = closed_port().await;
    let r = app
        .get("/")
        .header("Host", &format!("{port}-{id}.localhost"))
        .header("X-Preview-Token", &token)
        .send()
        .await;
    let msg = r.assert_error(StatusCode::BAD_GATEWAY, "PREVIEW_UPSTREAM_UNREACHABLE");
    assert!(!msg.contains("127.0.0.1"), "{msg}");

    // A request that already went through a preview proxy.
    let live = echo_server().await;
    let r = app
        .get("/")
        .header("Host", &format!("{live}-{id}.localhost"))
        .header("X-Preview-Token", &token)
        .header("Via", "1.1 stacyvm-preview")
        .send()
        .await;
    r.assert_error(StatusCode::LOOP_DETECTED, "PREVIEW_LOOP");

    // Not running.
    app.store
        .set_sandbox_state(&id.as_str().into(), SandboxState::Unhealthy)
        .await
        .unwrap();
    let r = app
        .get("/")
        .header("Host", &format!("{live}-{id}.localhost"))
        .header("X-Preview-Token", &token)
        .send()
        .await;
    let msg = r.assert_error(StatusCode::NOT_FOUND, "PREVIEW_NOT_AVAILABLE");
    assert!(msg.contains("unhealthy"), "{msg}");

    // Destroyed.
    let (id2, token2) = spawn(&app).await;
    let r = app.delete(&format!("/api/v1/sandboxes/{id2}")).send().await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let r = app
        .get("/")
        .header("Host", &format!("{live}-{id2}.localhost"))
        .header("X-Preview-Token", &token2)
        .send()
        .await;
    r.assert_error(StatusCode::NOT_FOUND, "NOT_FOUND");
}

/// A remote sandbox whose worker is gone from the registry, and one whose worker does not
/// proxy previews (no `preview` capability: an older build or the original worker).
#[tokio::test]
async fn remote_sandboxes_without_a_proxying_worker() {
    let app = TestApp::new().with_settings(mock_previews).build().await;
    let now = chrono::Utc::now();
    let token = stacyvm_types::PreviewToken::random();
    let sb = Sandbox {
        id: "sb-0000beef".into(),
        state: SandboxState::Creating,
        provider: "mock".into(),
        image: "alpine".into(),
        memory_mb: 64,
        vcpus: 1,
        metadata: Default::default(),
        template: String::new(),
        owner_id: String::new(),
        vm_id: None,
        placement: stacyvm_types::Placement::from_worker_id("worker-a"),
        tenant_id: String::new(),
        preview_domain: "w1.example.com".into(),
        created_at: now,
        expires_at: now + chrono::Duration::minutes(30),
        updated_at: now,
        lifecycle: Default::default(),
        paused_at: None,
        last_active_at: None,
        preview_token: token.clone(),
        public_preview: false,
    };
    app.store.insert_sandbox(&sb).await.unwrap();
    app.store.set_sandbox_running(&sb.id, None).await.unwrap();
    let get = |domain: &'static str| {
        app.get("/")
            .header("Host", &format!("3000-sb-0000beef.{domain}"))
            .header("X-Preview-Token", token.as_str())
            .send()
    };
    for domain in ["w1.example.com", "localhost"] {
        let msg = get(domain)
            .await
            .assert_error(StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE");
        assert!(msg.contains("not registered"), "{msg}");
    }
    let mut capacity = serde_json::Map::new();
    capacity.insert("rpc_url".into(), json!("http://127.0.0.1:9"));
    let worker = stacyvm_store::WorkerRecord {
        id: "worker-a".into(),
        hostname: "w1".into(),
        status: "online".into(),
        providers: None,
        capabilities: Some(vec!["remote_worker".into(), "heartbeat".into()]),
        capacity,
        last_heartbeat: now,
        created_at: now,
        updated_at: now,
    };
    app.store.upsert_worker(&worker).await.unwrap();
    let msg = get("localhost")
        .await
        .assert_error(StatusCode::NOT_IMPLEMENTED, "PREVIEW_REMOTE_UNSUPPORTED");
    assert!(msg.contains("does not proxy previews"), "{msg}");
}

#[tokio::test]
async fn custom_domain_and_switch_off() {
    let app = TestApp::new()
        .with_settings(|s| {
            mock_previews(s);
            s.preview_domain = "preview.example.com".into();
        })
        .build()
        .await;
    let (id, token) = spawn(&app).await;
    let port = echo_server().await;
    let r = app
        .get("/x")
        .header("Host", &format!("{port}-{id}.preview.example.com"))
        .header("X-Preview-Token", &token)
        .send()
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    // Another domain is not a preview host here: the API answers (its plain 404).
    let r = app
        .get("/x")
        .header("Host", &format!("{port}-{id}.localhost"))
        .header("X-Preview-Token", &token)
        .send()
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.text(), "404 page not found\n");

    let off = TestApp::new()
        .with_settings(|s| s.preview_proxy = false)
        .build()
        .await;
    let id = off.spawn_id().await;
    let r = off
        .get("/api/v1/health")
        .header("Host", &format!("{port}-{id}.localhost"))
        .send()
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["status"], "ok");
}

#[tokio::test]
async fn bodies_stream_both_ways() {
    use futures_util::StreamExt;

    // The sandbox's server answers at once with a first chunk, then relays each chunk of the
    // request body as it arrives: a proxy that buffered either side would deadlock this test.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = axum::Router::new().fallback(|req: Request| async move {
        let upload = req.into_body().into_data_stream();
        let first =
            futures_util::stream::once(async { Ok::<_, axum::Error>(Bytes::from("ready\n")) });
        axum::body::Body::from_stream(first.chain(upload))
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let app = TestApp::new().with_settings(mock_previews).build().await;
    let (id, token) = spawn(&app).await;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let body = axum::body::Body::from_stream(tokio_stream_from(rx));
    let req = axum::http::Request::post("/upload")
        .header("Host", format!("{port}-{id}.localhost"))
        .header("X-Preview-Token", &token)
        .body(body)
        .unwrap();
    let resp = tower::ServiceExt::oneshot(app.router.clone(), req)
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body().into_data_stream();
    let deadline = std::time::Duration::from_secs(10);
    let first = tokio::time::timeout(deadline, body.next()).await.unwrap();
    assert_eq!(first.unwrap().unwrap(), "ready\n");
    for chunk in ["one\n", "two\n"] {
        tx.send(Ok(Bytes::from(chunk))).await.unwrap();
        let got = tokio::time::timeout(deadline, body.next()).await.unwrap();
        assert_eq!(got.unwrap().unwrap(), chunk);
    }
    drop(tx);
    let end = tokio::time::timeout(deadline, body.next()).await.unwrap();
    assert!(end.is_none(), "body ends when the upload does");
}

/// A stream over an mpsc receiver (without pulling in tokio-stream).
fn tokio_stream_from<T: Send + 'static>(
    rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send + 'static {
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|v| (v, rx)) })
}

/// Reads from `s` until the end of an HTTP head; returns the head.
async fn read_head(s: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = s.read(&mut byte).await.unwrap();
        assert_eq!(n, 1, "connection closed inside the head: {head:?}");
        head.push(byte[0]);
    }
    String::from_utf8(head).unwrap()
}

#[tokio::test]
async fn upgrades_pass_through() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    // The sandbox's server: accepts an upgrade to a raw echo protocol.
    let upstream = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = upstream.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (mut s, _) = upstream.accept().await.unwrap();
        let head = read_head(&mut s).await.to_ascii_lowercase();
        assert!(head.contains("upgrade: echo"), "{head}");
        s.write_all(
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n",
        )
        .await
        .unwrap();
        let mut buf = [0u8; 64];
        loop {
            let n = s.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            s.write_all(&buf[..n]).await.unwrap();
        }
    });

    // The control plane on a real port (upgrades need a real connection).
    let app = TestApp::new().with_settings(mock_previews).build().await;
    let (id, token) = spawn(&app).await;
    let cp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let cp_port = cp.local_addr().unwrap().port();
    let router = app.router.clone();
    tokio::spawn(async move { axum::serve(cp, router).await.unwrap() });

    let mut c = tokio::net::TcpStream::connect(("127.0.0.1", cp_port))
        .await
        .unwrap();
    let req = format!(
        "GET /socket HTTP/1.1\r\nHost: {port}-{id}.localhost\r\nX-Preview-Token: {token}\r\n\
         Connection: Upgrade\r\nUpgrade: echo\r\n\r\n"
    );
    c.write_all(req.as_bytes()).await.unwrap();
    let head = tokio::time::timeout(std::time::Duration::from_secs(10), read_head(&mut c))
        .await
        .unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    for msg in [&b"ping"[..], b"pong pong"] {
        c.write_all(msg).await.unwrap();
        let mut got = vec![0u8; msg.len()];
        tokio::time::timeout(std::time::Duration::from_secs(10), c.read_exact(&mut got))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, msg);
    }
}

/// By default the preview proxy does not reach ports of a provider without isolation (the
/// mock's ports are the host's own loopback services).
#[tokio::test]
async fn unisolated_previews_are_off_by_default() {
    let app = TestApp::default_app().await;
    let (id, token) = spawn(&app).await;
    let port = echo_server().await;
    let r = app
        .get("/x")
        .header("Host", &format!("{port}-{id}.localhost"))
        .header("X-Preview-Token", &token)
        .send()
        .await;
    let msg = r.assert_error(StatusCode::NOT_FOUND, "PREVIEW_NOT_AVAILABLE");
    assert!(msg.contains("preview_unisolated"), "{msg}");
}
