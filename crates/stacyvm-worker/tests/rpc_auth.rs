//! Pre-dispatch checks (§9.2), envelope validation, and lease fencing, over real sockets.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{fake_cp, lease, start_worker, Rpc, SIGNING_KEY, TOKEN, WORKER};
use serde_json::{json, Value};
use stacyvm_auth::{mint, sign, Claims, AUD_CONTROL_PLANE, AUD_RPC};

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

async fn post(url: &str, headers: &[(&str, &str)], body: impl Into<reqwest::Body>) -> (u16, Value) {
    let mut rb = reqwest::Client::new().post(format!("{url}/rpc"));
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    let r = rb.body(body).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn status_body() -> String {
    Rpc::envelope(
        "worker.status",
        Some(json!({"sandbox_id": "sb-1", "provider": "mock"})),
        None,
    )
    .to_string()
}

const UNAUTH: &str = "invalid or missing worker RPC credentials";

#[tokio::test]
async fn credentials() {
    let (cp, _) = fake_cp().await;
    let w = start_worker(&cp).await;
    let url = w.url.as_str();
    let unauth = json!({"code": "UNAUTHORIZED", "message": UNAUTH});

    // Own static token, via either header.
    let (s, _) = post(
        url,
        &[("X-Worker-ID", WORKER), ("X-Worker-Token", TOKEN)],
        status_body(),
    )
    .await;
    assert_eq!(s, 404, "authenticated; the sandbox just does not exist");
    let bearer = format!("Bearer {TOKEN}");
    let (s, _) = post(
        url,
        &[("X-Worker-ID", WORKER), ("Authorization", &bearer)],
        status_body(),
    )
    .await;
    assert_eq!(s, 404);

    // Wrong token, missing token, another worker's id in the header.
    for headers in [
        vec![("X-Worker-ID", WORKER), ("X-Worker-Token", "wrong")],
        vec![("X-Worker-ID", WORKER)],
        vec![("X-Worker-ID", "worker-b"), ("X-Worker-Token", TOKEN)],
        vec![("X-Worker-ID", "Worker-A"), ("X-Worker-Token", TOKEN)],
        vec![("X-Worker-Token", TOKEN)],
    ] {
        let (s, v) = post(url, &headers, status_body()).await;
        assert_eq!((s, &v), (401, &unauth), "{headers:?}");
    }

    // Signed worker:rpc token for this worker passes.
    let (tok, _) = mint(
        SIGNING_KEY,
        WORKER,
        AUD_RPC,
        Duration::from_secs(60),
        &[],
        now(),
    )
    .unwrap();
    let (s, _) = post(
        url,
        &[("X-Worker-ID", WORKER), ("X-Worker-Token", &tok)],
        status_body(),
    )
    .await;
    assert_eq!(s, 404);

    // Signed tokens: wrong audience, another worker, wrong key, expired, revoked.
    let (wrong_aud, _) = mint(
        SIGNING_KEY,
        WORKER,
        AUD_CONTROL_PLANE,
        Duration::from_secs(60),
        &[],
        now(),
    )
    .unwrap();
    let (other_worker, _) = mint(
        SIGNING_KEY,
        "worker-b",
        AUD_RPC,
        Duration::from_secs(60),
        &[],
        now(),
    )
    .unwrap();
    let (wrong_key, _) = mint(
        "another-key-0123456789abcdef0123456789",
        WORKER,
        AUD_RPC,
        Duration::from_secs(60),
        &[],
        now(),
    )
    .unwrap();
    let claims = |jti: &str, iat: i64, exp: i64| Claims {
        worker_id: WORKER.into(),
        jti: jti.into(),
        aud: AUD_RPC.into(),
        scopes: vec![],
        exp,
        iat,
        nbf: 0,
    };
    let expired = sign(
        SIGNING_KEY,
        &claims("0123456789abcdef0123456789abcdef", now() - 120, now() - 60),
    );
    let revoked = sign(SIGNING_KEY, &claims("revoked-jti", now(), now() + 60));
    // Control: a hand-signed valid token passes, so the failures above are about the claims.
    let good = sign(
        SIGNING_KEY,
        &claims("fedcba9876543210fedcba9876543210", now(), now() + 60),
    );
    let (s, _) = post(
        url,
        &[("X-Worker-ID", WORKER), ("X-Worker-Token", &good)],
        status_body(),
    )
    .await;
    assert_eq!(s, 404);
    for (name, t) in [
        ("wrong audience", &wrong_aud),
        ("other worker", &other_worker),
        ("wrong key", &wrong_key),
        ("expired", &expired),
        ("revoked", &revoked),
    ] {
        let (s, v) = post(
            url,
            &[("X-Worker-ID", WORKER), ("X-Worker-Token", t)],
            status_body(),
        )
        .await;
        assert_eq!((s, &v), (401, &unauth), "{name}");
    }
}

#[tokio::test]
async fn pre_dispatch_errors_use_the_rest_shape() {
    let (cp, _) = fake_cp().await;
    let w = start_worker(&cp).await;
    let auth = [("X-Worker-ID", WORKER), ("X-Worker-Token", TOKEN)];

    let r = reqwest::Client::new()
        .get(format!("{}/rpc", w.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        v,
        json!({"code": "BAD_REQUEST", "message": "method not allowed"})
    );

    // Auth comes before parsing: garbage without credentials is a 401.
    let (s, _) = post(&w.url, &[], "{not json").await;
    assert_eq!(s, 401);

    for body in ["{not json", "[]", "", r#"{"id":1}"#] {
        let (s, v) = post(&w.url, &auth, body).await;
        assert_eq!(
            (s, v),
            (
                400,
                json!({"code": "BAD_REQUEST", "message": "invalid worker RPC request"})
            ),
            "{body:?}"
        );
    }

    let mut env = Rpc::envelope(
        "worker.status",
        Some(json!({"sandbox_id": "sb-1", "provider": "mock"})),
        None,
    );
    env["worker_id"] = json!("worker-b");
    let (s, v) = post(&w.url, &auth, env.to_string()).await;
    assert_eq!(
        (s, v),
        (
            403,
            json!({"code": "UNAUTHORIZED", "message": "worker RPC request targets a different worker"})
        )
    );
}

#[tokio::test]
async fn envelope_validation() {
    let (cp, _) = fake_cp().await;
    let w = start_worker(&cp).await;
    let rpc = Rpc::new(&w.url);
    let p = json!({"sandbox_id": "sb-1", "provider": "mock"});

    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"id": "", "method": "worker.status", "worker_id": WORKER, "params": p}),
            "request id is required",
        ),
        (
            json!({"id": "x", "method": "worker.status", "worker_id": " ", "params": p}),
            "worker_id is required",
        ),
        (
            json!({"id": "x", "method": "worker.fly", "worker_id": WORKER, "params": p}),
            "unknown worker method: worker.fly",
        ),
        (
            json!({"id": "x", "method": "worker.status", "worker_id": WORKER}),
            "params are required",
        ),
        (
            json!({"id": "x", "method": "worker.spawn", "worker_id": WORKER, "params": p}),
            "lease is required",
        ),
        (
            json!({"id": "x", "method": "worker.destroy", "worker_id": WORKER, "params": p}),
            "lease is required",
        ),
        (
            json!({"id": "x", "method": "worker.renew_lease", "worker_id": WORKER, "params": {"resource_id": "sb-1", "ttl": "1m"}}),
            "lease is required",
        ),
    ];
    for (body, want) in cases {
        let (s, v) = rpc.send(&body).await;
        assert_eq!(s, 400, "{body} → {v}");
        assert_eq!(v["worker_id"], WORKER);
        assert_eq!(v["code"], "BAD_REQUEST");
        assert!(v["error"].as_str().unwrap().contains(want), "{body} → {v}");
    }
}

fn spawn_params(sb: &str) -> Value {
    json!({"sandbox_id": sb, "image": "alpine", "provider": "mock", "memory_mb": 64, "vcpus": 1})
}

#[tokio::test]
async fn lease_checks_and_fencing() {
    let (cp, _) = fake_cp().await;
    let w = start_worker(&cp).await;
    let rpc = Rpc::new(&w.url);
    let sb = "sb-0000fe0c";
    let rejected = |s: u16, v: &Value| s == 403 && v["code"] == "LEASE_REJECTED";

    // Holder mismatch, resource mismatch, expired.
    for (l, why) in [
        (lease("worker-b", sb, 1, 60), "holder"),
        (lease(WORKER, "sb-other", 1, 60), "resource"),
        (lease(WORKER, sb, 1, -1), "expired"),
    ] {
        let (s, v) = rpc.call_leased("worker.spawn", spawn_params(sb), l).await;
        assert!(rejected(s, &v), "{why}: {s} {v}");
    }
    assert!(
        w.mock.host_root(sb).is_none(),
        "nothing spawned on a rejected lease"
    );

    // Generation 5 spawns; a newer generation 6 is seen by a later call.
    let (s, v) = rpc
        .call_leased("worker.spawn", spawn_params(sb), lease(WORKER, sb, 5, 60))
        .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = rpc
        .call_leased(
            "worker.renew_lease",
            json!({"resource_id": sb, "ttl": "1m"}),
            lease(WORKER, sb, 6, 60),
        )
        .await;
    // The fake CP refuses the renewal, but the lease itself was admitted (newest = 6).
    assert_eq!(s, 409, "{v}");

    // A destroy carrying the older generation 5 is now refused and the sandbox survives.
    let (s, v) = rpc
        .call_leased(
            "worker.destroy",
            json!({"sandbox_id": sb, "provider": "mock"}),
            lease(WORKER, sb, 5, 60),
        )
        .await;
    assert!(rejected(s, &v), "{s} {v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("stale lease generation 5"),
        "{v}"
    );
    assert!(w.mock.host_root(sb).is_some());

    // Equal generation passes.
    let (s, v) = rpc
        .call_leased(
            "worker.destroy",
            json!({"sandbox_id": sb, "provider": "mock"}),
            lease(WORKER, sb, 6, 60),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert!(w.mock.host_root(sb).is_none());

    // After destroy, a delayed spawn with an old lease cannot resurrect the sandbox.
    let (s, v) = rpc
        .call_leased("worker.spawn", spawn_params(sb), lease(WORKER, sb, 4, 60))
        .await;
    assert!(rejected(s, &v), "{s} {v}");
    assert!(w.mock.host_root(sb).is_none());
}
