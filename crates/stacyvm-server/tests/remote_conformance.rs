//! The provider conformance suite against [`RemoteProvider`]: every check goes over loopback
//! HTTP to an in-process worker (the real `stacyvm-worker` router) with the mock provider behind
//! it, once with the streamed file methods and once with the buffered ones (what the original
//! Go worker offers).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use stacyvm_config::Config;
use stacyvm_provider::conformance::Fixture;
use stacyvm_provider::{MockProvider, Provider, ProviderRegistry};
use stacyvm_server::remote::{Endpoint, RemoteProvider, RpcCredentials, WorkerClient};
use stacyvm_store::{SqliteStore, Store};
use stacyvm_types::{GoDuration, SandboxId};
use stacyvm_worker::{rpc_router, WorkerConfig, WorkerOverrides, WorkerState};
use tokio::net::TcpListener;

const WORKER: &str = "worker-a";
const TOKEN: &str = "dev-worker-a-token-dev-worker-a-token";

/// The worker's own static token, which it accepts on `/rpc`.
struct StaticToken;

impl RpcCredentials for StaticToken {
    fn credential_for(&self, _worker_id: &str) -> Result<Option<String>, String> {
        Ok(Some(TOKEN.into()))
    }
}

/// One remote sandbox slot on a fresh worker; the worker stops when the fixture drops.
struct Remote {
    provider: RemoteProvider,
    worker: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Fixture for Remote {
    fn provider(&self) -> &dyn Provider {
        &self.provider
    }
}

impl Drop for Remote {
    fn drop(&mut self) {
        self.worker.abort();
    }
}

async fn remote(file_stream: bool) -> Remote {
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "worker:\n  id: {WORKER}\n  control_plane_url: \"http://127.0.0.1:9\"\n\
         providers:\n  default: mock\n  mock:\n    enabled: true\n\
         auth:\n  worker_token: \"{TOKEN}\"\n"
    );
    let valid = Config::from_yaml_str(&yaml).unwrap().validate().unwrap();
    let cfg = WorkerConfig::from_config(&valid, WorkerOverrides::default()).unwrap();
    let mut providers = ProviderRegistry::new();
    // This checkout's agent: an installed one may predate what the suite checks (watches).
    let agent = stacyvm_provider::agent::built().expect(
        "no stacyvm-agent: cd crates/stacyvm-agent && cargo build --release (or set STACYVM_AGENT)",
    );
    let mock = MockProvider::with_base_dir(dir.path().join("mock")).with_agent(agent);
    providers.register(Arc::new(mock) as Arc<dyn Provider>);
    providers.set_default("mock");
    let state = WorkerState::new(&cfg, providers).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let rpc_url = format!("http://{}", listener.local_addr().unwrap());
    let worker = tokio::spawn(async move {
        let _ = axum::serve(listener, rpc_router(state)).await;
    });

    let db = dir.path().join("stacyvm.db").display().to_string();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&db).await.unwrap());
    let client = Arc::new(WorkerClient::new(None, Arc::new(StaticToken)).unwrap());
    let provider = RemoteProvider {
        client,
        endpoint: Endpoint {
            worker_id: WORKER.into(),
            rpc_url,
        },
        store,
        provider: "mock".into(),
        // A remote provider serves one sandbox; every check spawns exactly one.
        sandbox_id: SandboxId::random(),
        lease_ttl: Duration::from_secs(300),
        ttl: GoDuration::from_secs(300),
        file_stream,
        // The buffered variant stands for the Go worker's file methods only; watches are ours.
        watch: true,
        user: true,
        state: true,
    };
    Remote {
        provider,
        worker,
        _dir: dir,
    }
}

async fn streamed() -> Remote {
    remote(true).await
}

async fn buffered() -> Remote {
    remote(false).await
}

mod remote_streamed {
    stacyvm_provider::provider_conformance_tests!(super::streamed, "mock");
}

mod remote_buffered {
    stacyvm_provider::provider_conformance_tests!(super::buffered, "mock");
}

/// A worker that does not advertise `watch` (one from before watches) is not asked: the
/// method would be refused as unknown (a 400), while the caller should learn it is missing.
#[tokio::test]
async fn a_worker_without_watches_answers_not_supported() {
    let mut r = remote(true).await;
    r.provider.watch = false;
    let got = r.provider.watch_dir("sb-1", "/workspace", false).await;
    assert!(
        matches!(got, Err(stacyvm_provider::ProviderError::NotSupported(_))),
        "{:?}",
        got.err()
    );
}
