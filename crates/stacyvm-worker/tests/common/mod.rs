//! Shared test helpers: a worker config from YAML, the RPC router on a loopback port, an RPC
//! client, lease tokens, and a fake control plane that records what workers send it.
#![allow(dead_code, clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};
use stacyvm_config::Config;
use stacyvm_provider::{MockProvider, Provider, ProviderRegistry};
use stacyvm_worker::{rpc_router, WorkerConfig, WorkerOverrides, WorkerState};
use tokio::net::TcpListener;

pub const WORKER: &str = "worker-a";
pub const TOKEN: &str = "dev-worker-a-token-dev-worker-a-token";
pub const SIGNING_KEY: &str = "test-signing-key-0123456789abcdef0123456789";

/// Worker config: id `worker-a`, static token `TOKEN`, signing key `SIGNING_KEY`, revoked
/// `jti` "revoked-jti", plus `extra` YAML under `worker:`.
pub fn config(cp_url: &str, worker_extra: &str) -> WorkerConfig {
    config_with(cp_url, worker_extra, WorkerOverrides::default())
}

pub fn config_with(cp_url: &str, worker_extra: &str, flags: WorkerOverrides) -> WorkerConfig {
    config_full(cp_url, worker_extra, "", flags)
}

/// [`config_with`] plus `top_extra`: whole top-level sections (`server:` …).
pub fn config_full(
    cp_url: &str,
    worker_extra: &str,
    top_extra: &str,
    flags: WorkerOverrides,
) -> WorkerConfig {
    let yaml = format!(
        "worker:\n  id: {WORKER}\n  control_plane_url: \"{cp_url}\"\n  heartbeat_interval: 200ms\n  shutdown_timeout: 3s\n{worker_extra}\
         providers:\n  default: mock\n  mock:\n    enabled: true\n  docker:\n    enabled: false\n  firecracker:\n    enabled: false\n\
         auth:\n  worker_token: \"{TOKEN}\"\n  worker_signing_key: \"{SIGNING_KEY}\"\n  worker_revoked_token_ids: [revoked-jti]\n{top_extra}"
    );
    let valid = Config::from_yaml_str(&yaml).unwrap().validate().unwrap();
    WorkerConfig::from_config(&valid, flags).unwrap()
}

pub fn mock_registry() -> (Arc<MockProvider>, ProviderRegistry) {
    let mock = Arc::new(MockProvider::new());
    let mut reg = ProviderRegistry::new();
    reg.register(mock.clone() as Arc<dyn Provider>);
    reg.set_default("mock");
    (mock, reg)
}

/// The RPC router for a fresh worker (mock provider) on a loopback port.
pub struct TestWorker {
    pub url: String,
    pub state: WorkerState,
    pub mock: Arc<MockProvider>,
}

pub async fn start_worker(cp_url: &str) -> TestWorker {
    start_worker_with(config(cp_url, "")).await
}

pub async fn start_worker_with(cfg: WorkerConfig) -> TestWorker {
    let (mock, reg) = mock_registry();
    let state = WorkerState::new(&cfg, reg).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = rpc_router(state.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    TestWorker {
        url: format!("http://{addr}"),
        state,
        mock,
    }
}

/// Lease JSON expiring `secs` from now.
pub fn lease(holder: &str, resource: &str, generation: i64, secs: i64) -> Value {
    let at = chrono::Utc::now() + chrono::Duration::seconds(secs);
    json!({
        "resource_id": resource,
        "holder_id": holder,
        "generation": generation,
        "expires_at": stacyvm_types::format_rfc3339_go(&at),
    })
}

pub struct Rpc {
    pub http: reqwest::Client,
    pub url: String,
    pub worker: String,
    pub token: String,
}

impl Rpc {
    pub fn new(base: &str) -> Rpc {
        Rpc {
            http: reqwest::Client::new(),
            url: format!("{base}/rpc"),
            worker: WORKER.into(),
            token: TOKEN.into(),
        }
    }

    pub fn envelope(method: &str, params: Option<Value>, lease: Option<Value>) -> Value {
        let mut v = json!({"id": format!("req-{method}"), "method": method, "worker_id": WORKER});
        if let Some(p) = params {
            v["params"] = p;
        }
        if let Some(l) = lease {
            v["lease"] = l;
        }
        v
    }

    pub async fn send(&self, body: &Value) -> (u16, Value) {
        let r = self
            .http
            .post(&self.url)
            .header("X-Worker-ID", &self.worker)
            .header("X-Worker-Token", &self.token)
            .json(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let v = r.json::<Value>().await.unwrap_or(Value::Null);
        (status, v)
    }

    pub async fn call(&self, method: &str, params: Value) -> (u16, Value) {
        self.send(&Self::envelope(method, Some(params), None)).await
    }

    pub async fn call_leased(&self, method: &str, params: Value, lease: Value) -> (u16, Value) {
        self.send(&Self::envelope(method, Some(params), Some(lease)))
            .await
    }

    /// Spawns `sb` on the mock with a fresh generation-1 lease; asserts success.
    pub async fn spawn(&self, sb: &str) -> Value {
        let (s, v) = self
            .call_leased(
                "worker.spawn",
                json!({"sandbox_id": sb, "image": "alpine", "provider": "mock", "memory_mb": 64, "vcpus": 1, "ttl": "5m0s"}),
                lease(WORKER, sb, 1, 300),
            )
            .await;
        assert_eq!(s, 200, "{v}");
        v
    }
}

/// What the fake control plane saw.
#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    pub worker_id: String,
    pub token: String,
    pub body: Value,
}

#[derive(Clone, Default)]
pub struct FakeCp {
    pub seen: Arc<Mutex<Vec<Seen>>>,
    /// Status the heartbeat route answers with (200 when 0).
    pub heartbeat_status: Arc<Mutex<u16>>,
    /// Generation the renew route hands out.
    pub renew_generation: Arc<Mutex<i64>>,
}

impl FakeCp {
    pub fn heartbeats(&self) -> Vec<Seen> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.path.ends_with("/heartbeat"))
            .cloned()
            .collect()
    }

    pub fn all(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Polls until `pred` holds for some heartbeat; panics after `secs`.
    pub async fn wait_heartbeat(&self, secs: u64, pred: impl Fn(&Seen) -> bool) -> Seen {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(s) = self.heartbeats().into_iter().find(|s| pred(s)) {
                return s;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no matching heartbeat; saw {:?}",
                self.heartbeats()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn record(cp: &FakeCp, path: String, headers: &HeaderMap, body: Value) {
    let h = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    cp.seen.lock().unwrap().push(Seen {
        path,
        worker_id: h("x-worker-id"),
        token: h("x-worker-token"),
        body,
    });
}

async fn heartbeat(
    State(cp): State<FakeCp>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    record(
        &cp,
        format!("/api/v1/worker/{id}/heartbeat"),
        &headers,
        body,
    );
    let s = *cp.heartbeat_status.lock().unwrap();
    if s != 0 && s != 200 {
        let code = StatusCode::from_u16(s).unwrap();
        return (
            code,
            Json(json!({"code": "UNAUTHORIZED", "message": "nope"})),
        );
    }
    (StatusCode::OK, Json(json!({"id": id})))
}

async fn renew(
    State(cp): State<FakeCp>,
    Path((id, resource)): Path<(String, String)>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    record(
        &cp,
        format!("/api/v1/worker/{id}/leases/{resource}/renew"),
        &headers,
        body,
    );
    let generation = *cp.renew_generation.lock().unwrap();
    if generation == 0 {
        return (
            StatusCode::CONFLICT,
            Json(
                json!({"code": "CONFLICT", "message": "conflict: lease is not held by worker or has expired"}),
            ),
        );
    }
    (
        StatusCode::OK,
        Json(json!({"lease": lease(&id, &resource, generation, 600)})),
    )
}

async fn issue(
    State(cp): State<FakeCp>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    let admin = headers
        .get("x-admin-api-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    record(
        &cp,
        "/api/v1/admin/worker-tokens".into(),
        &headers,
        body.clone(),
    );
    if admin != "admin-key" {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"code": "UNAUTHORIZED", "message": "bad admin key"})),
        );
    }
    let (token, _) = stacyvm_auth::mint(
        SIGNING_KEY,
        body["worker_id"].as_str().unwrap(),
        stacyvm_auth::AUD_CONTROL_PLANE,
        Duration::from_secs(60),
        &[],
        chrono::Utc::now().timestamp(),
    )
    .unwrap();
    (
        StatusCode::OK,
        Json(json!({"token": token, "worker_id": body["worker_id"]})),
    )
}

/// A control plane stand-in on a loopback port; returns its URL.
pub async fn fake_cp() -> (String, FakeCp) {
    let cp = FakeCp::default();
    let router = Router::new()
        .route("/api/v1/worker/{id}/heartbeat", post(heartbeat))
        .route("/api/v1/worker/{id}/leases/{resource}/renew", post(renew))
        .route("/api/v1/admin/worker-tokens", post(issue))
        .with_state(cp.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    (format!("http://{addr}"), cp)
}
