//! Auth classes, admin fallback, CORS preflight, request ids and the admin audit log.

#![allow(clippy::unwrap_used)]

mod common;

use axum::http::{Method, StatusCode};
use common::TestApp;
use serde_json::json;

const API: &str = "api-key-0123456789";
const ADMIN: &str = "admin-key-0123456789";

#[tokio::test]
async fn api_key_required_when_configured() {
    let app = TestApp::new()
        .with_api_key(API)
        .with_admin_key(ADMIN)
        .build()
        .await;
    for (method, path) in [
        (Method::GET, "/api/v1/sandboxes"),
        (Method::POST, "/api/v1/sandboxes"),
        (Method::GET, "/api/v1/health"),
        (Method::GET, "/api/v1/events"),
        (Method::GET, "/api/v1/nope"),
        (Method::GET, "/api/v1/admin/workers"),
    ] {
        let r = app.req(method.clone(), path).send().await;
        let msg = r.assert_error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
        assert_eq!(msg, "invalid or missing API key", "{method} {path}");
        let r = app.req(method.clone(), path).api_key("wrong").send().await;
        r.assert_error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    }
    assert!(
        app.store.list_sandboxes().await.unwrap().is_empty(),
        "unauthenticated spawn did nothing"
    );

    // Either key in either header works on API routes.
    for (h, k) in [
        ("X-API-Key", API),
        ("X-Admin-API-Key", API),
        ("X-API-Key", ADMIN),
        ("X-Admin-API-Key", ADMIN),
    ] {
        let r = app.get("/api/v1/sandboxes").header(h, k).send().await;
        assert_eq!(r.status, StatusCode::OK, "{h}: {k}");
    }
    let r = app
        .post("/api/v1/sandboxes")
        .api_key(API)
        .json(&json!({}))
        .send()
        .await;
    assert_eq!(r.status, StatusCode::CREATED);

    // Admin routes need the admin key when one is set.
    let r = app.get("/api/v1/admin/workers").api_key(API).send().await;
    let msg = r.assert_error(StatusCode::FORBIDDEN, "FORBIDDEN");
    assert_eq!(msg, "admin API key required");
    let r = app.get("/api/v1/admin/quotas").admin_key(API).send().await;
    r.assert_error(StatusCode::FORBIDDEN, "FORBIDDEN");
    for (h, k) in [("X-Admin-API-Key", ADMIN), ("X-API-Key", ADMIN)] {
        let r = app.get("/api/v1/admin/workers").header(h, k).send().await;
        assert_eq!(r.status, StatusCode::OK, "{h}");
    }
    // The public worker list and quotas stay on the api class.
    assert_eq!(
        app.get("/api/v1/workers").api_key(API).send().await.status,
        StatusCode::OK
    );
    assert_eq!(
        app.get("/api/v1/quotas").api_key(API).send().await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn admin_fallback_on_and_off() {
    let on = TestApp::new().with_api_key(API).build().await;
    let r = on.get("/api/v1/admin/quotas").api_key(API).send().await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "fallback (default on): api key acts as admin key"
    );
    on.get("/api/v1/admin/quotas")
        .send()
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED");

    let off = TestApp::new()
        .with_api_key(API)
        .with_admin_fallback(false)
        .build()
        .await;
    let r = off.get("/api/v1/admin/quotas").api_key(API).send().await;
    let msg = r.assert_error(StatusCode::FORBIDDEN, "FORBIDDEN");
    assert_eq!(msg, "required authorization scope missing");
    assert_eq!(
        off.get("/api/v1/quotas").api_key(API).send().await.status,
        StatusCode::OK
    );

    // No keys at all: everything is open, admin included.
    let open = TestApp::default_app().await;
    assert_eq!(
        open.get("/api/v1/admin/quotas").send().await.status,
        StatusCode::OK
    );
    assert_eq!(
        open.get("/api/v1/sandboxes").send().await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn cors_preflight_before_auth() {
    let app = TestApp::new().with_api_key(API).build().await;
    for path in [
        "/api/v1/sandboxes",
        "/api/v1/sandboxes/sb-00000000/exec",
        "/api/v1/admin/audit",
    ] {
        let r = app
            .req(Method::OPTIONS, path)
            .header("Origin", "https://app.example")
            .header("Access-Control-Request-Method", "POST")
            .send()
            .await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.text());
        assert_eq!(r.header("access-control-allow-origin"), Some("*"));
        assert!(r
            .header("access-control-allow-methods")
            .unwrap()
            .contains("DELETE"));
        assert!(r
            .header("access-control-allow-headers")
            .unwrap()
            .contains("X-API-Key"));
    }
    // Normal responses carry the header too.
    let r = app.get("/api/v1/health").api_key(API).send().await;
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));

    let listed = TestApp::new()
        .with_settings(|s| s.cors_allowed_origins = vec!["https://ok.example".into()])
        .build()
        .await;
    let r = listed
        .req(Method::OPTIONS, "/api/v1/sandboxes")
        .header("Origin", "https://ok.example")
        .send()
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://ok.example")
    );
    assert_eq!(r.header("vary"), Some("Origin"));
    let r = listed
        .req(Method::OPTIONS, "/api/v1/sandboxes")
        .header("Origin", "https://evil.example")
        .send()
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.header("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn request_id_echoed_or_generated() {
    let app = TestApp::new().with_api_key(API).build().await;
    let r = app
        .get("/api/v1/health")
        .api_key(API)
        .header("X-Request-ID", "req-123")
        .send()
        .await;
    assert_eq!(r.header("x-request-id"), Some("req-123"));
    // Also on errors and on the fallback.
    let r = app
        .get("/api/v1/health")
        .header("X-Request-ID", "req-401")
        .send()
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.header("x-request-id"), Some("req-401"));
    let a = app.get("/nope").send().await;
    let b = app.get("/nope").send().await;
    let (a, b) = (
        a.header("x-request-id").unwrap(),
        b.header("x-request-id").unwrap(),
    );
    assert_ne!(a, b);
    for id in [a, b] {
        assert!(
            uuid::Uuid::parse_str(id).is_ok(),
            "generated id is a UUID: {id}"
        );
    }
}

#[tokio::test]
async fn admin_audit_records_requests() {
    let app = TestApp::new()
        .with_api_key(API)
        .with_admin_key(ADMIN)
        .build()
        .await;
    let r = app
        .get("/api/v1/admin/workers")
        .admin_key(ADMIN)
        .header("X-Request-ID", "audit-1")
        .header("User-Agent", "tests/1.0")
        .send()
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = app
        .get("/api/v1/admin/workers/nope")
        .admin_key(ADMIN)
        .user("alice")
        .send()
        .await;
    r.assert_error(StatusCode::NOT_FOUND, "NOT_FOUND");
    // Refused requests are recorded too.
    app.get("/api/v1/admin/workers").api_key(API).send().await;
    // Non-admin routes are not audited.
    app.get("/api/v1/sandboxes").api_key(API).send().await;

    let r = app.get("/api/v1/admin/audit").admin_key(ADMIN).send().await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let rows = r.json();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 3, "{rows:?}");
    // Newest first.
    let (refused, second, first) = (&rows[0], &rows[1], &rows[2]);
    assert_eq!(refused["status"], 403);
    assert_eq!(refused["actor"], "api:X-API-Key");
    assert_eq!(first["method"], "GET");
    assert_eq!(first["path"], "/api/v1/admin/workers");
    assert_eq!(first["status"], 200);
    assert_eq!(first["request_id"], "audit-1");
    assert_eq!(first["user_agent"], "tests/1.0");
    assert_eq!(first["actor"], "admin:X-Admin-API-Key");
    assert_eq!(second["path"], "/api/v1/admin/workers/nope");
    assert_eq!(second["status"], 404);
    // The key that authenticated, never the client's `X-User-ID`.
    assert_eq!(second["actor"], "admin:X-Admin-API-Key");
    for k in [
        "id",
        "duration_ms",
        "remote_addr",
        "tenant_id",
        "created_at",
    ] {
        assert!(first.get(k).is_some(), "audit record key {k}: {first}");
    }

    let r = app
        .get("/api/v1/admin/audit?actor=api:X-API-Key")
        .admin_key(ADMIN)
        .send()
        .await;
    assert_eq!(r.json().as_array().unwrap().len(), 1);
    let r = app
        .get("/api/v1/admin/audit?format=csv&limit=1")
        .admin_key(ADMIN)
        .send()
        .await;
    assert_eq!(r.header("content-type"), Some("text/csv; charset=utf-8"));
    let csv = r.text();
    assert!(csv.starts_with(
        "id,created_at,actor,method,path,status,duration_ms,request_id,remote_addr,user_agent\n"
    ));
    assert_eq!(csv.lines().count(), 2, "{csv}");
    let r = app
        .get("/api/v1/admin/audit?limit=zero")
        .admin_key(ADMIN)
        .send()
        .await;
    r.assert_error(StatusCode::BAD_REQUEST, "BAD_REQUEST");
}

/// A refused request's body is read when small, so the client can reuse its connection; a
/// large or never-ending one gets `Connection: close` (hyper would otherwise drop the
/// connection after the response without saying so, failing the client's next request).
#[tokio::test]
async fn refused_requests_keep_or_close_the_connection_explicitly() {
    let app = TestApp::new().with_api_key(API).build().await;
    let small = app
        .post("/api/v1/sandboxes")
        .json(&json!({"image": "alpine"}))
        .send()
        .await;
    small.assert_error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    assert!(
        small.headers.get("connection").is_none(),
        "{:?}",
        small.headers
    );

    let big = app
        .post("/api/v1/sandboxes")
        .raw_json(vec![b' '; 256 * 1024])
        .send()
        .await;
    big.assert_error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    assert_eq!(big.headers["connection"], "close");

    let endless = futures_util::stream::pending::<Result<bytes::Bytes, std::io::Error>>();
    let slow = app
        .post("/api/v1/sandboxes")
        .raw("application/json", axum::body::Body::from_stream(endless))
        .send()
        .await;
    slow.assert_error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    assert_eq!(slow.headers["connection"], "close");
}
