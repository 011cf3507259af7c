//! Findings of the hardening review (docs/threat-model.md "Hardening review"): the rate
//! limiter's key, failed-auth throttling and trusted proxies; admin-only quota writes; the
//! audit of refused admin requests and its actor; bounded spawn input and known templates.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use axum::http::StatusCode;
use common::{TestApp, TestAppBuilder};
use serde_json::{json, Value};
use stacyvm_server::{RateKeyBy, RateLimitSettings};

const API: &str = "api-key-0123456789";
const ADMIN: &str = "admin-key-0123456789";

fn limited(b: TestAppBuilder, key_by: RateKeyBy, trusted: &[&str]) -> TestAppBuilder {
    let trusted = trusted.iter().map(|t| t.parse().unwrap()).collect();
    b.with_settings(move |s| {
        s.rate_limit = RateLimitSettings {
            enabled: true,
            requests_per_minute: 60,
            burst: 3,
            key_by,
            bucket_ttl: Duration::from_secs(900),
        };
        s.trusted_proxies = trusted;
    })
}

fn assert_rate_limited(r: &common::Resp) {
    let msg = r.assert_error(StatusCode::TOO_MANY_REQUESTS, "RESOURCE_LIMIT");
    assert!(
        msg.starts_with("rate limit exceeded; retry after "),
        "{msg}"
    );
    assert!(r.header("retry-after").is_some());
}

#[tokio::test]
async fn a_fresh_user_id_per_request_does_not_escape_the_limit() {
    let app = limited(TestApp::new().with_api_key(API), RateKeyBy::Owner, &[])
        .build()
        .await;
    for i in 0..3 {
        let r = app
            .get("/api/v1/sandboxes")
            .api_key(API)
            .user(&format!("user-{i}"))
            .send()
            .await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.header("x-ratelimit-limit"), Some("3"));
        assert_eq!(
            r.header("x-ratelimit-remaining"),
            Some(&*(2 - i).to_string())
        );
    }
    let r = app
        .get("/api/v1/sandboxes")
        .api_key(API)
        .user("user-fresh")
        .send()
        .await;
    assert_rate_limited(&r);
}

#[tokio::test]
async fn wrong_keys_are_throttled_per_address() {
    let app = limited(TestApp::new().with_api_key(API), RateKeyBy::Owner, &[])
        .build()
        .await;
    for _ in 0..3 {
        let r = app
            .get("/api/v1/sandboxes")
            .api_key("guess")
            .peer("192.0.2.1:4000")
            .send()
            .await;
        r.assert_error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    }
    let r = app
        .get("/api/v1/sandboxes")
        .api_key("guess")
        .peer("192.0.2.1:4001")
        .send()
        .await;
    assert_rate_limited(&r);
    // Another address has its own budget; the right key is not charged for the guesses.
    let r = app
        .get("/api/v1/sandboxes")
        .peer("192.0.2.2:4000")
        .send()
        .await;
    r.assert_error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    let r = app
        .get("/api/v1/sandboxes")
        .api_key(API)
        .peer("192.0.2.1:4002")
        .send()
        .await;
    assert_eq!(r.status, StatusCode::OK);
}

async fn rotating_forwarded_for(app: &TestApp) -> Vec<StatusCode> {
    let mut out = Vec::new();
    for i in 0..6 {
        let r = app
            .get("/api/v1/health")
            .peer("10.0.0.1:5000")
            .header("X-Forwarded-For", &format!("203.0.113.{i}"))
            .header("X-Real-IP", &format!("198.51.100.{i}"))
            .send()
            .await;
        out.push(r.status);
    }
    out
}

#[tokio::test]
async fn forwarding_headers_count_only_from_trusted_proxies() {
    let untrusted = limited(TestApp::new(), RateKeyBy::Ip, &[]).build().await;
    let got = rotating_forwarded_for(&untrusted).await;
    assert_eq!(&got[..3], [StatusCode::OK; 3]);
    assert_eq!(
        &got[3..],
        [StatusCode::TOO_MANY_REQUESTS; 3],
        "a peer that is no proxy cannot pick its bucket"
    );
    let trusted = limited(TestApp::new(), RateKeyBy::Ip, &["10.0.0.0/8"])
        .build()
        .await;
    let got = rotating_forwarded_for(&trusted).await;
    assert_eq!(
        got,
        [StatusCode::OK; 6],
        "each forwarded client has its bucket"
    );
}

async fn audit(app: &TestApp) -> Vec<Value> {
    let r = app
        .get("/api/v1/admin/audit?limit=500")
        .admin_key(ADMIN)
        .send()
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let mut rows = r.json().as_array().unwrap().clone();
    // Leave out this read itself (recorded after it answered, so never in its own answer).
    rows.reverse();
    rows
}

#[tokio::test]
async fn quota_writes_need_the_admin_key_and_are_audited() {
    let app = TestApp::new()
        .with_api_key(API)
        .with_admin_key(ADMIN)
        .build()
        .await;
    let body = json!({"max_sandboxes": 1});
    let r = app
        .put("/api/v1/quotas/alice")
        .api_key(API)
        .user("alice")
        .json(&body)
        .send()
        .await;
    let msg = r.assert_error(StatusCode::FORBIDDEN, "FORBIDDEN");
    assert_eq!(msg, "admin API key required");
    let r = app
        .put("/api/v1/quotas/alice")
        .admin_key(ADMIN)
        .json(&body)
        .send()
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let r = app.delete("/api/v1/quotas/alice").api_key(API).send().await;
    r.assert_error(StatusCode::FORBIDDEN, "FORBIDDEN");
    // Reads keep the api class.
    let r = app.get("/api/v1/quotas/alice").api_key(API).send().await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["max_sandboxes"], 1);
    let r = app
        .delete("/api/v1/quotas/alice")
        .admin_key(ADMIN)
        .send()
        .await;
    assert_eq!(r.status, StatusCode::OK);

    let rows = audit(&app).await;
    let seen: Vec<(String, i64, String)> = rows
        .iter()
        .map(|r| {
            (
                r["method"].as_str().unwrap().to_string(),
                r["status"].as_i64().unwrap(),
                r["actor"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let row = |m: &str, s: i64, a: &str| (m.to_string(), s, a.to_string());
    assert_eq!(
        seen,
        [
            row("PUT", 403, "api:X-API-Key"),
            row("PUT", 200, "admin:X-Admin-API-Key"),
            row("DELETE", 403, "api:X-API-Key"),
            row("DELETE", 200, "admin:X-Admin-API-Key"),
        ]
    );
    assert!(rows.iter().all(|r| r["path"] == "/api/v1/quotas/alice"));
}

#[tokio::test]
async fn refused_admin_requests_are_audited_under_the_key_not_the_user_id() {
    let app = TestApp::new()
        .with_api_key(API)
        .with_admin_key(ADMIN)
        .build()
        .await;
    let r = app
        .get("/api/v1/admin/workers")
        .api_key(API)
        .user("root")
        .send()
        .await;
    r.assert_error(StatusCode::FORBIDDEN, "FORBIDDEN");
    let r = app
        .get("/api/v1/admin/workers")
        .admin_key("wrong")
        .user("root")
        .send()
        .await;
    r.assert_error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    let r = app
        .get("/api/v1/admin/workers")
        .admin_key(ADMIN)
        .user("mallory")
        .send()
        .await;
    assert_eq!(r.status, StatusCode::OK);
    // Not an admin request: not audited.
    app.get("/api/v1/sandboxes").admin_key("wrong").send().await;

    let rows = audit(&app).await;
    let seen: Vec<(i64, &str)> = rows
        .iter()
        .map(|r| (r["status"].as_i64().unwrap(), r["actor"].as_str().unwrap()))
        .collect();
    assert_eq!(
        seen,
        [
            (403, "api:X-API-Key"),
            (401, "anonymous"),
            (200, "admin:X-Admin-API-Key"),
        ]
    );
    assert!(rows.iter().all(|r| r["path"] == "/api/v1/admin/workers"));
}

#[tokio::test]
async fn spawn_refuses_unknown_or_oversized_templates() {
    let app = TestApp::default_app().await;
    let r = app
        .post("/api/v1/sandboxes")
        .json(&json!({"template": "nope"}))
        .send()
        .await;
    let msg = r.assert_error(StatusCode::BAD_REQUEST, "BAD_REQUEST");
    assert!(msg.contains("unknown template \"nope\""), "{msg}");
    let r = app
        .post("/api/v1/sandboxes")
        .json(&json!({"template": "t".repeat(1 << 20)}))
        .send()
        .await;
    let msg = r.assert_error(StatusCode::BAD_REQUEST, "BAD_REQUEST");
    assert!(msg.len() < 200, "the message does not echo the value");
    assert!(app.list().await.is_empty(), "nothing stored");

    let r = app
        .post("/api/v1/templates")
        .json(&json!({"name": "py", "image": "python:3.12"}))
        .send()
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let sb = app.spawn(json!({"template": "py"})).await;
    let stored = app
        .store
        .get_sandbox(&sb["id"].as_str().unwrap().to_string().into())
        .await
        .unwrap();
    assert_eq!(stored.template, "py");
    // No template: as before.
    let sb = app.spawn(json!({})).await;
    assert_eq!(sb["image"], "alpine:latest");
}

#[tokio::test]
async fn stored_template_and_spawn_text_is_bounded() {
    let app = TestApp::default_app().await;
    let big = "x".repeat(5000);
    for body in [
        json!({"name": "a", "image": "alpine", "description": big}),
        json!({"name": "a", "image": "alpine", "setup": [big]}),
        json!({"name": "a", "image": "alpine", "env": {"K": big}}),
        json!({"name": "a", "image": "alpine", "allowed_hosts": [big]}),
        json!({"name": "a", "image": "i".repeat(600)}),
    ] {
        let r = app.post("/api/v1/templates").json(&body).send().await;
        r.assert_error(StatusCode::BAD_REQUEST, "BAD_REQUEST");
    }
    assert_eq!(app.get("/api/v1/templates").send().await.json(), json!([]));
    for body in [
        json!({"image": "i".repeat(600)}),
        json!({"owner_id": "o".repeat(200)}),
        json!({"metadata": {"k": big}}),
    ] {
        let r = app.post("/api/v1/sandboxes").json(&body).send().await;
        r.assert_error(StatusCode::BAD_REQUEST, "BAD_REQUEST");
    }
    assert!(app.list().await.is_empty());
}
