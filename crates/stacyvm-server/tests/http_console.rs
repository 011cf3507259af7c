//! The operator console's server side (docs/console.md): the embedded files at `/ui/`, gzip
//! and revalidation, `server.ui: false`, and the key a browser's attach WebSocket carries as a
//! subprotocol.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::Read;
use std::time::Duration;

use axum::http::StatusCode;
use common::TestApp;
use futures_util::StreamExt;
use serde_json::json;
use stacyvm_types::OutputStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const KEY: &str = "console-test-key";

#[tokio::test]
async fn ui_serves_the_page_and_its_files() {
    let app = TestApp::new().with_api_key(KEY).build().await;
    // The front strips the trailing slash: `/ui/` and `/ui` are the same page, no key needed.
    for path in ["/ui/", "/ui"] {
        let r = app.get(path).send().await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
        assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
        assert!(r
            .text()
            .contains(r#"<script type="module" src="/ui/js/main.js"></script>"#));
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
        assert!(r
            .header("content-security-policy")
            .unwrap()
            .contains("default-src 'self'"));
    }
    let js = app.get("/ui/js/main.js").send().await;
    assert_eq!(js.status, StatusCode::OK);
    assert_eq!(
        js.header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    let css = app.get("/ui/vendor/xterm.css").send().await;
    assert_eq!(css.header("content-type"), Some("text/css; charset=utf-8"));
    let missing = app.get("/ui/js/missing.js").send().await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    // The API behind the page still wants the key.
    assert_eq!(
        app.get("/api/v1/sandboxes").send().await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn ui_is_gzipped_on_request_and_revalidated() {
    let app = TestApp::default_app().await;
    let plain = app.get("/ui/vendor/xterm.mjs").send().await;
    assert_eq!(plain.header("content-encoding"), None);
    let gz = app
        .get("/ui/vendor/xterm.mjs")
        .header("accept-encoding", "gzip, br")
        .send()
        .await;
    assert_eq!(gz.header("content-encoding"), Some("gzip"));
    assert_eq!(gz.header("vary"), Some("Accept-Encoding"));
    assert!(gz.body.len() * 2 < plain.body.len(), "gzip saves little");
    let mut unzipped = Vec::new();
    flate2::read::GzDecoder::new(&gz.body[..])
        .read_to_end(&mut unzipped)
        .unwrap();
    assert_eq!(unzipped, plain.body);

    let etag = gz.header("etag").unwrap().to_string();
    assert_eq!(plain.header("etag"), Some(etag.as_str()));
    let again = app
        .get("/ui/vendor/xterm.mjs")
        .header("if-none-match", &etag)
        .send()
        .await;
    assert_eq!(again.status, StatusCode::NOT_MODIFIED);
    assert!(again.body.is_empty());
    assert_eq!(again.header("cache-control"), Some("no-cache"));
}

#[tokio::test]
async fn ui_false_removes_the_routes() {
    let app = TestApp::new().with_settings(|s| s.ui = false).build().await;
    for path in ["/ui/", "/ui", "/ui/js/main.js"] {
        let r = app.get(path).send().await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(r.text(), "404 page not found\n");
    }
    // Nothing else changes.
    assert_eq!(
        app.get("/api/v1/health").send().await.status,
        StatusCode::OK
    );
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

/// A browser cannot set `X-API-Key` on a WebSocket: the console offers the key as the
/// subprotocol `stacyvm.key.<hex>` next to `stacyvm.attach`, which the server selects.
#[tokio::test]
async fn attach_takes_the_key_as_a_subprotocol() {
    let (app, fake) = TestApp::new()
        .with_api_key(KEY)
        .build_with_processes()
        .await;
    let r = app
        .post("/api/v1/sandboxes")
        .api_key(KEY)
        .json(&json!({}))
        .send()
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_string();
    let r = app
        .post(&format!("/api/v1/sandboxes/{id}/processes"))
        .api_key(KEY)
        .json(&json!({"command": "sh", "pty": {"cols": 80, "rows": 24}, "stdin": true}))
        .send()
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let pid = r.json()["pid"].as_u64().unwrap() as u32;
    fake.emit(pid, OutputStream::Pty, b"$ ");

    let base = serve(&app).await;
    let url = format!("{base}/api/v1/sandboxes/{id}/processes/{pid}/attach");
    let request = |protocols: &str| {
        let mut req = url.as_str().into_client_request().unwrap();
        req.headers_mut()
            .insert("sec-websocket-protocol", protocols.parse().unwrap());
        req
    };

    let (mut ws, resp) = tokio_tungstenite::connect_async(request(&format!(
        "stacyvm.attach, stacyvm.key.{}",
        hex(KEY)
    )))
    .await
    .unwrap();
    assert_eq!(
        resp.headers()
            .get("sec-websocket-protocol")
            .map(|v| v.to_str().unwrap()),
        Some("stacyvm.attach")
    );
    let first = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first, Message::Binary(b"$ ".to_vec().into()));

    // A wrong key, or the right one outside an upgrade, is refused.
    let err = tokio_tungstenite::connect_async(request(&format!(
        "stacyvm.attach, stacyvm.key.{}",
        hex("nope")
    )))
    .await
    .unwrap_err();
    match err {
        tokio_tungstenite::tungstenite::Error::Http(resp) => {
            assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        }
        other => panic!("expected a 401, got {other:?}"),
    }
    let plain = app
        .get(&format!("/api/v1/sandboxes/{id}/processes"))
        .header(
            "sec-websocket-protocol",
            &format!("stacyvm.key.{}", hex(KEY)),
        )
        .send()
        .await;
    assert_eq!(plain.status, StatusCode::UNAUTHORIZED);
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
