//! Shared harness for the in-process HTTP tests: a [`TestApp`] (router over a temp-dir SQLite
//! store and a mock provider) and a small request builder driving it with `oneshot`.

#![allow(dead_code, clippy::unwrap_used)]

pub mod fake_procs;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use axum::Router;
use serde_json::Value;
use stacyvm_provider::{MockProvider, ProviderRegistry};
use stacyvm_server::{router, Limits, Service, Settings};
use stacyvm_store::{SqliteStore, Store};
use tempfile::TempDir;
use tower::ServiceExt;

/// Builder for a [`TestApp`]; start with [`TestApp::new`].
pub struct TestAppBuilder {
    settings: Settings,
    /// The mock's agent binary; `None` = its own search.
    agent: Option<std::path::PathBuf>,
}

/// One control plane: router, its service, the store and the mock provider behind it.
pub struct TestApp {
    pub router: Router,
    pub svc: Service,
    pub store: Arc<dyn Store>,
    pub mock: Arc<MockProvider>,
    /// Holds the SQLite file and the mock's sandbox directories.
    pub dir: TempDir,
}

impl TestApp {
    #[allow(clippy::new_ret_no_self)]
    pub fn new() -> TestAppBuilder {
        TestAppBuilder {
            settings: Settings::default(),
            agent: None,
        }
    }

    /// A router with default settings (no auth, no limits).
    pub async fn default_app() -> TestApp {
        TestApp::new().build().await
    }

    pub fn req(&self, method: Method, path: &str) -> Req {
        Req {
            router: self.router.clone(),
            builder: Request::builder().method(method).uri(path),
            body: Body::empty(),
        }
    }

    pub fn get(&self, path: &str) -> Req {
        self.req(Method::GET, path)
    }

    pub fn post(&self, path: &str) -> Req {
        self.req(Method::POST, path)
    }

    pub fn put(&self, path: &str) -> Req {
        self.req(Method::PUT, path)
    }

    pub fn delete(&self, path: &str) -> Req {
        self.req(Method::DELETE, path)
    }

    /// Spawns a sandbox with `body` and returns its JSON, asserting 201.
    pub async fn spawn(&self, body: Value) -> Value {
        let r = self.post("/api/v1/sandboxes").json(&body).send().await;
        assert_eq!(r.status, StatusCode::CREATED, "spawn failed: {}", r.text());
        r.json()
    }

    /// Spawns a default sandbox and returns its id.
    pub async fn spawn_id(&self) -> String {
        self.spawn(serde_json::json!({})).await["id"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Runs `cmd` in sandbox `id` (shell mode) and returns the exec result, asserting 200.
    pub async fn sh(&self, id: &str, cmd: &str) -> Value {
        let r = self
            .post(&format!("/api/v1/sandboxes/{id}/exec"))
            .json(&serde_json::json!({"command": cmd}))
            .send()
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        r.json()
    }

    /// `GET /sandboxes` as a vector.
    pub async fn list(&self) -> Vec<Value> {
        let r = self.get("/api/v1/sandboxes").send().await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        r.json().as_array().cloned().unwrap()
    }
}

impl TestAppBuilder {
    pub fn with_api_key(mut self, key: &str) -> Self {
        self.settings.auth.api_key = key.to_string();
        self
    }

    pub fn with_admin_key(mut self, key: &str) -> Self {
        self.settings.auth.admin_api_key = key.to_string();
        self
    }

    pub fn with_admin_fallback(mut self, enabled: bool) -> Self {
        self.settings.auth.admin_fallback_enabled = enabled;
        self
    }

    /// Edits the admission and default limits.
    pub fn with_limits(mut self, f: impl FnOnce(&mut Limits)) -> Self {
        f(&mut self.settings.limits);
        self
    }

    /// The mock runs this checkout's agent (`STACYVM_AGENT` or the release build), not an
    /// installed one that may predate what the test needs.
    pub fn with_built_agent(mut self) -> Self {
        self.agent = Some(stacyvm_provider::agent::built().expect(
            "no stacyvm-agent: cd crates/stacyvm-agent && cargo build --release (or set STACYVM_AGENT)",
        ));
        self
    }

    /// Edits any other setting.
    pub fn with_settings(mut self, f: impl FnOnce(&mut Settings)) -> Self {
        f(&mut self.settings);
        self
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Like [`Self::build`], with background processes kept in memory ([`fake_procs`]) over
    /// the mock.
    pub async fn build_with_processes(self) -> (TestApp, Arc<fake_procs::FakeProcs>) {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("stacyvm.db");
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::open(db.to_str().unwrap()).await.unwrap());
        let mock = Arc::new(MockProvider::with_base_dir(dir.path().join("sandboxes")));
        let fake = Arc::new(fake_procs::FakeProcs::new(mock.clone()));
        let mut providers = ProviderRegistry::new();
        providers.register(fake.clone());
        assert!(providers.set_default("mock"));
        let svc = Service::new(store.clone(), providers, self.settings);
        let app = TestApp {
            router: router(svc.clone()),
            svc,
            store,
            mock,
            dir,
        };
        (app, fake)
    }

    pub async fn build(self) -> TestApp {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("stacyvm.db");
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::open(db.to_str().unwrap()).await.unwrap());
        let mut mock = MockProvider::with_base_dir(dir.path().join("sandboxes"));
        if let Some(agent) = self.agent {
            mock = mock.with_agent(agent);
        }
        let mock = Arc::new(mock);
        let mut providers = ProviderRegistry::new();
        providers.register(mock.clone());
        assert!(providers.set_default("mock"));
        let svc = Service::new(store.clone(), providers, self.settings);
        TestApp {
            router: router(svc.clone()),
            svc,
            store,
            mock,
            dir,
        }
    }
}

/// One request under construction.
pub struct Req {
    router: Router,
    builder: axum::http::request::Builder,
    body: Body,
}

impl Req {
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.builder = self.builder.header(name, value);
        self
    }

    pub fn api_key(self, key: &str) -> Self {
        self.header("X-API-Key", key)
    }

    pub fn admin_key(self, key: &str) -> Self {
        self.header("X-Admin-API-Key", key)
    }

    /// The connection's peer address, as the listener records it.
    pub fn peer(mut self, addr: &str) -> Self {
        let addr: std::net::SocketAddr = addr.parse().unwrap();
        self.builder = self.builder.extension(axum::extract::ConnectInfo(addr));
        self
    }

    pub fn user(self, id: &str) -> Self {
        self.header("X-User-ID", id)
    }

    pub fn json(self, v: &Value) -> Self {
        self.raw_json(serde_json::to_vec(v).unwrap())
    }

    /// A body sent verbatim with `Content-Type: application/json`.
    pub fn raw_json(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.builder = self.builder.header("content-type", "application/json");
        self.body = Body::from(body.into());
        self
    }

    /// A body sent verbatim with the given `Content-Type`.
    pub fn raw(mut self, content_type: &str, body: impl Into<Body>) -> Self {
        self.builder = self.builder.header("content-type", content_type);
        self.body = body.into();
        self
    }

    /// Sends and reads the whole body (within 30 s).
    pub async fn send(self) -> Resp {
        let resp = self.send_streaming().await;
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = tokio::time::timeout(
            Duration::from_secs(30),
            axum::body::to_bytes(resp.into_body(), usize::MAX),
        )
        .await
        .expect("response body not finished within 30s")
        .unwrap()
        .to_vec();
        Resp {
            status,
            headers,
            body,
        }
    }

    /// Sends and returns the response with its body unread (for streams).
    pub async fn send_streaming(self) -> axum::response::Response {
        let req = self.builder.body(self.body).unwrap();
        self.router.oneshot(req).await.unwrap()
    }
}

/// A finished response.
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts a JSON error body `{"code","message"}` (exactly these keys) with this status and
    /// code, and that the message leaks no host path; returns the message.
    pub fn assert_error(&self, status: StatusCode, code: &str) -> String {
        assert_eq!(self.status, status, "body: {}", self.text());
        assert_eq!(
            self.header("content-type"),
            Some("application/json"),
            "error body must be JSON: {}",
            self.text()
        );
        let v = self.json();
        let obj = v.as_object().unwrap();
        let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["code", "message"], "error keys: {v}");
        assert_eq!(v["code"], code, "body: {v}");
        let msg = v["message"].as_str().unwrap().to_string();
        assert_no_host_path(&msg);
        msg
    }
}

/// No message may reveal where the server keeps its files.
pub fn assert_no_host_path(msg: &str) {
    for needle in ["/tmp/", "/var/", "/home/", "/root/", ".tmp", "stacyvm-sb-"] {
        assert!(
            !msg.contains(needle),
            "message leaks a host path ({needle}): {msg}"
        );
    }
}

/// Whether `id` is `sb-` + 8 lowercase hex digits.
pub fn is_sandbox_id(id: &str) -> bool {
    id.strip_prefix("sb-").is_some_and(|h| {
        h.len() == 8
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// Sorted keys of a JSON object.
pub fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
    k.sort();
    k
}

/// Polls `f` every 20 ms until it is true or `timeout` passes.
pub async fn wait_until<F, Fut>(timeout: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if f().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
