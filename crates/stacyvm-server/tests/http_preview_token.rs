//! The preview token (docs/preview.md): a preview request passes only with the sandbox's
//! token, in a header or a cookie set by a first visit with `?stacyvm_preview_token=`, unless
//! the sandbox was spawned with `public_preview: true`; without it nothing reaches the
//! sandbox's server. The API answers the token for one sandbox, never in lists.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::extract::Request;
use axum::http::StatusCode;
use common::TestApp;
use serde_json::{json, Value};
use tokio::net::TcpListener;

/// A server "in the sandbox" (the mock's ports are the host's) that counts what reaches it
/// and answers with the request's cookie header.
async fn counting_server() -> (u16, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let seen = hits.clone();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = axum::Router::new().fallback(move |req: Request| {
        let seen = seen.clone();
        async move {
            seen.fetch_add(1, Ordering::SeqCst);
            let cookie = req
                .headers()
                .get("cookie")
                .map(|v| v.to_str().unwrap().to_string());
            axum::Json(json!({"uri": req.uri().to_string(), "cookie": cookie}))
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (port, hits)
}

async fn app() -> TestApp {
    TestApp::new()
        .with_settings(|s| s.preview_unisolated = true)
        .build()
        .await
}

fn id_and_token(v: &Value) -> (String, String) {
    (
        v["id"].as_str().unwrap().to_string(),
        v["preview_token"].as_str().unwrap().to_string(),
    )
}

#[tokio::test]
async fn without_its_token_nothing_reaches_the_sandbox() {
    let app = app().await;
    let (id, token) = id_and_token(&app.spawn(json!({})).await);
    let (_, other) = id_and_token(&app.spawn(json!({})).await);
    assert_ne!(token, other);
    let (port, hits) = counting_server().await;
    let host = format!("{port}-{id}.localhost");

    let msg = app
        .get("/")
        .header("Host", &host)
        .send()
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "PREVIEW_TOKEN_REQUIRED");
    assert!(
        msg.contains("X-Preview-Token") && msg.contains("stacyvm_preview_token"),
        "{msg}"
    );
    for wrong in [
        other.clone(),
        "0123".to_string(),
        token[..31].to_string(),
        token.to_uppercase(),
    ] {
        for header in ["X-Preview-Token", "e2b-traffic-access-token"] {
            app.post("/upload")
                .header("Host", &host)
                .header(header, &wrong)
                .raw_json("{}")
                .send()
                .await
                .assert_error(StatusCode::FORBIDDEN, "PREVIEW_TOKEN_INVALID");
        }
        app.get("/")
            .header("Host", &host)
            .header("Cookie", &format!("stacyvm_preview_token={wrong}"))
            .send()
            .await
            .assert_error(StatusCode::FORBIDDEN, "PREVIEW_TOKEN_INVALID");
    }
    // An upgrade without the token is refused before anything is opened.
    app.get("/socket")
        .header("Host", &host)
        .header("Connection", "Upgrade")
        .header("Upgrade", "websocket")
        .send()
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "PREVIEW_TOKEN_REQUIRED");
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "a refused request was forwarded"
    );

    for header in ["X-Preview-Token", "e2b-traffic-access-token"] {
        let r = app
            .get("/ok")
            .header("Host", &host)
            .header(header, &token)
            .send()
            .await;
        assert_eq!(r.status, StatusCode::OK, "{header}: {}", r.text());
    }
    assert_eq!(hits.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_first_visit_with_the_token_in_the_url_sets_a_cookie() {
    let app = app().await;
    let (id, token) = id_and_token(&app.spawn(json!({})).await);
    let (port, hits) = counting_server().await;
    let host = format!("{port}-{id}.localhost");

    let r = app
        .get(&format!("/app/?a=1&stacyvm_preview_token={token}&b=2"))
        .header("Host", &host)
        .send()
        .await;
    assert_eq!(r.status, StatusCode::TEMPORARY_REDIRECT, "{}", r.text());
    assert_eq!(r.header("location"), Some("/app/?a=1&b=2"));
    let cookie = r.header("set-cookie").unwrap().to_string();
    assert_eq!(
        cookie,
        format!("stacyvm_preview_token={token}; Path=/; HttpOnly; SameSite=Lax")
    );
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "the redirect is answered here"
    );

    // The browser follows with the cookie (and its own); ours stops at the proxy.
    let r = app
        .get("/app/?a=1&b=2")
        .header("Host", &host)
        .header(
            "Cookie",
            &format!("theme=dark; stacyvm_preview_token={token}"),
        )
        .send()
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["uri"], "/app/?a=1&b=2");
    assert_eq!(r.json()["cookie"], "theme=dark");
    // A cookie another host set for the parent domain does not shadow ours.
    let r = app
        .get("/")
        .header("Host", &host)
        .header(
            "Cookie",
            &format!("stacyvm_preview_token=planted; stacyvm_preview_token={token}"),
        )
        .send()
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["cookie"], Value::Null);

    // A wrong token in the URL sets nothing.
    let r = app
        .get("/?stacyvm_preview_token=0000")
        .header("Host", &host)
        .send()
        .await;
    assert!(r.header("set-cookie").is_none());
    r.assert_error(StatusCode::FORBIDDEN, "PREVIEW_TOKEN_INVALID");
    assert_eq!(hits.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn public_previews_need_no_token() {
    let app = app().await;
    let v = app.spawn(json!({"public_preview": true})).await;
    assert_eq!(v["public_preview"], true);
    let id = v["id"].as_str().unwrap();
    let (port, hits) = counting_server().await;
    let r = app
        .get("/x")
        .header("Host", &format!("{port}-{id}.localhost"))
        .send()
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    // The URL parameter is still taken out of the address, but no cookie is needed.
    let r = app
        .get("/x?stacyvm_preview_token=anything")
        .header("Host", &format!("{port}-{id}.localhost"))
        .send()
        .await;
    assert_eq!(r.status, StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(r.header("location"), Some("/x"));
    assert!(r.header("set-cookie").is_none());
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn the_token_is_answered_for_one_sandbox_never_in_lists() {
    let app = app().await;
    let spawned = app.spawn(json!({})).await;
    let (id, token) = id_and_token(&spawned);
    assert_eq!(token.len(), 32);
    assert!(token.bytes().all(|b| b.is_ascii_hexdigit()));
    assert!(spawned.get("public_preview").is_none(), "{spawned}");

    let got = app.get(&format!("/api/v1/sandboxes/{id}")).send().await;
    assert_eq!(got.json()["preview_token"], token.as_str());
    let extended = app
        .post(&format!("/api/v1/sandboxes/{id}/extend"))
        .json(&json!({"ttl": "10m"}))
        .send()
        .await;
    assert_eq!(extended.json()["preview_token"], token.as_str());
    for listed in app.list().await {
        assert!(listed.get("preview_token").is_none(), "{listed}");
    }
}
