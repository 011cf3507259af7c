//! Worker-facing routes (`/api/v1/worker/{id}/...`): every rejected credential leaves the
//! registry unchanged; accepted ones record the heartbeat; lease renew follows the store rules.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use serde_json::json;
use stacyvm_auth::{mint, Secret, Verifier, WorkerAuthenticator, AUD_CONTROL_PLANE, AUD_RPC};
use stacyvm_provider::{MockProvider, ProviderRegistry};
use stacyvm_server::{router, Service, Settings};
use stacyvm_store::{SqliteStore, Store};

use common::TestApp;

const SHARED: &str = "shared-worker-token-0123456789";
const OWN_B: &str = "worker-b-own-token-0123456789";
const KEY: &str = "signing-key-0123456789abcdef0123";
const API_KEY: &str = "api-key-0123456789";

async fn app(revoked: Vec<String>) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(dir.path().join("db").to_str().unwrap())
            .await
            .unwrap(),
    );
    let mock = Arc::new(MockProvider::with_base_dir(dir.path().join("sb")));
    let mut providers = ProviderRegistry::new();
    providers.register(mock.clone());
    providers.set_default("mock");
    let mut settings = Settings::default();
    settings.auth.api_key = API_KEY.into();
    let auth = Arc::new(WorkerAuthenticator::new(
        Some(Secret::inline(SHARED)),
        BTreeMap::from([("worker-b".to_string(), OWN_B.to_string())]),
        Verifier::new(vec![KEY.into()], revoked),
    ));
    let svc = Service::with_worker_auth(
        store.clone(),
        providers,
        settings,
        None,
        Some(auth),
        Some(KEY.into()),
    );
    TestApp {
        router: router(svc.clone()),
        svc,
        store,
        mock,
        dir,
    }
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn signed(worker: &str, aud: &str) -> String {
    mint(KEY, worker, aud, Duration::from_secs(300), &[], now())
        .unwrap()
        .0
}

async fn heartbeat(a: &TestApp, path_id: &str, header_id: &str, token: &str) -> common::Resp {
    a.post(&format!("/api/v1/worker/{path_id}/heartbeat"))
        .header("X-Worker-ID", header_id)
        .header("X-Worker-Token", token)
        .json(&json!({"hostname": "h", "status": "online", "capacity": {"max_sandboxes": 3}}))
        .send()
        .await
}

async fn registered(a: &TestApp, id: &str) -> bool {
    a.store.get_worker(&id.into()).await.is_ok()
}

#[tokio::test]
async fn shared_token_heartbeat_registers() {
    let a = app(vec![]).await;
    let r = heartbeat(&a, "worker-a", "worker-a", SHARED).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["id"], "worker-a");
    assert_eq!(r.json()["capacity"]["max_sandboxes"], 3);
    assert!(registered(&a, "worker-a").await);
    // Bearer form works too.
    let r = a
        .post("/api/v1/worker/worker-a/heartbeat")
        .header("X-Worker-ID", "worker-a")
        .header("Authorization", &format!("bearer {SHARED}"))
        .json(&json!({}))
        .send()
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
}

#[tokio::test]
async fn rejected_credentials_change_nothing() {
    let a = app(vec!["revoked-jti".into()]).await;
    let expired = {
        let claims = stacyvm_auth::Claims {
            worker_id: "worker-a".into(),
            jti: "0123456789abcdef0123456789abcdef".into(),
            aud: AUD_CONTROL_PLANE.into(),
            scopes: vec![],
            exp: now() - 10,
            iat: now() - 100,
            nbf: 0,
        };
        stacyvm_auth::sign(KEY, &claims)
    };
    let future = {
        let claims = stacyvm_auth::Claims {
            worker_id: "worker-a".into(),
            jti: "0123456789abcdef0123456789abcdee".into(),
            aud: AUD_CONTROL_PLANE.into(),
            scopes: vec![],
            exp: now() + 600,
            iat: now() + 300,
            nbf: now() + 300,
        };
        stacyvm_auth::sign(KEY, &claims)
    };
    let revoked = {
        let claims = stacyvm_auth::Claims {
            worker_id: "worker-a".into(),
            jti: "revoked-jti".into(),
            aud: AUD_CONTROL_PLANE.into(),
            scopes: vec![],
            exp: now() + 60,
            iat: now(),
            nbf: 0,
        };
        stacyvm_auth::sign(KEY, &claims)
    };
    // A misspelled scope once widened the token to every scope; now it refuses the token.
    let typo_scope = {
        let claims = stacyvm_auth::Claims {
            worker_id: "worker-a".into(),
            jti: "0123456789abcdef0123456789abcded".into(),
            aud: AUD_CONTROL_PLANE.into(),
            scopes: vec!["worker:heartbeats-typo".into()],
            exp: now() + 60,
            iat: now(),
            nbf: 0,
        };
        stacyvm_auth::sign(KEY, &claims)
    };
    let cases: Vec<(&str, &str, String, StatusCode, &str)> = vec![
        (
            "unknown scope",
            "worker-a",
            typo_scope,
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
        ),
        (
            "wrong token",
            "worker-a",
            "nope".into(),
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
        ),
        (
            "api key is not a worker credential",
            "worker-a",
            API_KEY.into(),
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
        ),
        (
            "expired signed",
            "worker-a",
            expired,
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
        ),
        (
            "not yet valid",
            "worker-a",
            future,
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
        ),
        (
            "wrong audience",
            "worker-a",
            signed("worker-a", AUD_RPC),
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
        ),
        (
            "revoked",
            "worker-a",
            revoked,
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
        ),
        (
            "other worker's signed token",
            "worker-a",
            signed("worker-c", AUD_CONTROL_PLANE),
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
        ),
        (
            "shared token for a worker with its own",
            "worker-b",
            SHARED.into(),
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
        ),
        (
            "other worker's own token",
            "worker-a",
            OWN_B.into(),
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
        ),
    ];
    for (what, id, token, status, code) in cases {
        let r = heartbeat(&a, id, id, &token).await;
        assert_eq!(r.status, status, "{what}: {}", r.text());
        r.assert_error(status, code);
        assert!(!registered(&a, id).await, "{what}: registry changed");
    }
    // Missing headers.
    let r = a
        .post("/api/v1/worker/worker-a/heartbeat")
        .json(&json!({}))
        .send()
        .await;
    r.assert_error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    // Path id differs from the authenticated id: 403 with code UNAUTHORIZED (wire §2.5).
    let r = heartbeat(&a, "worker-z", "worker-a", SHARED).await;
    r.assert_error(StatusCode::FORBIDDEN, "UNAUTHORIZED");
    assert!(!registered(&a, "worker-z").await && !registered(&a, "worker-a").await);
    // Malformed body: 400, nothing stored.
    let r = a
        .post("/api/v1/worker/worker-a/heartbeat")
        .header("X-Worker-ID", "worker-a")
        .header("X-Worker-Token", SHARED)
        .raw_json("[]")
        .send()
        .await;
    r.assert_error(StatusCode::BAD_REQUEST, "BAD_REQUEST");
    assert!(!registered(&a, "worker-a").await);
}

#[tokio::test]
async fn own_and_signed_tokens_accepted() {
    let a = app(vec![]).await;
    assert_eq!(
        heartbeat(&a, "worker-b", "worker-b", OWN_B).await.status,
        StatusCode::OK
    );
    let tok = signed("worker-c", AUD_CONTROL_PLANE);
    assert_eq!(
        heartbeat(&a, "worker-c", "worker-c", &tok).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn lease_renew_rules() {
    let a = app(vec![]).await;
    let lease = a
        .store
        .acquire_lease(
            "sb-0000aaaa",
            "sandbox",
            "worker-a",
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    let renew = |worker: &'static str, ttl: &'static str| {
        a.post(&format!("/api/v1/worker/{worker}/leases/sb-0000aaaa/renew"))
            .header("X-Worker-ID", worker)
            .header("X-Worker-Token", SHARED)
            .json(&json!({"ttl": ttl}))
            .send()
    };
    let r = renew("worker-a", "30s").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["lease"]["holder_id"], "worker-a");
    assert!(r.json()["lease"]["generation"].as_i64().unwrap() > lease.generation);
    renew("worker-a", "0s")
        .await
        .assert_error(StatusCode::BAD_REQUEST, "BAD_REQUEST");
    renew("worker-a", "soon")
        .await
        .assert_error(StatusCode::BAD_REQUEST, "BAD_REQUEST");
    // Another worker cannot renew it, and the lease is unchanged.
    renew("worker-d", "30s")
        .await
        .assert_error(StatusCode::CONFLICT, "CONFLICT");
    assert_eq!(
        a.store.get_lease("sb-0000aaaa").await.unwrap().holder_id,
        "worker-a"
    );
}

#[tokio::test]
async fn no_worker_credentials_configured_is_unavailable() {
    let a = TestApp::new().build().await;
    let r = heartbeat(&a, "worker-a", "worker-a", SHARED).await;
    r.assert_error(StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE");
}

#[tokio::test]
async fn admin_issues_tokens_that_authenticate() {
    let a = app(vec![]).await;
    let r = a
        .post("/api/v1/admin/worker-tokens")
        .api_key(API_KEY)
        .json(&json!({"worker_id": "worker-e", "ttl": "2m"}))
        .send()
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let tok = r.json()["token"].as_str().unwrap().to_string();
    assert_eq!(
        heartbeat(&a, "worker-e", "worker-e", &tok).await.status,
        StatusCode::OK
    );
    for bad in [
        json!({"worker_id": ""}),
        json!({"worker_id": "w", "ttl": "16m"}),
        json!({"worker_id": "w", "scopes": ["admin:*"]}),
        json!({"worker_id": "w", "scopes": ["worker:heartbeats-typo"]}),
        json!({"worker_id": "w", "audience": "x"}),
    ] {
        a.post("/api/v1/admin/worker-tokens")
            .api_key(API_KEY)
            .json(&bad)
            .send()
            .await
            .assert_error(StatusCode::BAD_REQUEST, "BAD_REQUEST");
    }
}
