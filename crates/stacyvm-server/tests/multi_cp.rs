//! Several control planes on one database: admission limits hold exactly across them, and the
//! leader cleans up spawns abandoned by a control plane that died (and only those).

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use stacyvm_provider::{MockProvider, Provider, ProviderRegistry};
use stacyvm_server::{Caller, Limits, Service, ServiceError, Settings, SpawnParams};
use stacyvm_store::{InsertLimits, SqliteStore, Store};
use stacyvm_types::{EventKind, Sandbox, SandboxState};
use tokio_util::sync::CancellationToken;

fn service(store: Arc<dyn Store>, dir: &std::path::Path, settings: Settings) -> Service {
    let mock = Arc::new(MockProvider::with_base_dir(dir));
    // Slow spawns widen the window between admission's count and the insert.
    mock.set_spawn_delay(Some(Duration::from_millis(30)));
    let mut reg = ProviderRegistry::new();
    reg.register(mock as Arc<dyn Provider>);
    reg.set_default("mock");
    Service::new(store, reg, settings)
}

fn creating(id: &str, worker: &str, age: chrono::Duration) -> Sandbox {
    let at = chrono::Utc::now() - age;
    Sandbox {
        id: id.into(),
        state: SandboxState::Creating,
        provider: "mock".into(),
        image: "alpine".into(),
        memory_mb: 64,
        vcpus: 1,
        metadata: Default::default(),
        template: String::new(),
        owner_id: String::new(),
        vm_id: None,
        placement: stacyvm_types::Placement::from_worker_id(worker),
        tenant_id: String::new(),
        preview_domain: "localhost".into(),
        created_at: at,
        expires_at: chrono::Utc::now() + chrono::Duration::minutes(30),
        updated_at: at,
        lifecycle: Default::default(),
        paused_at: None,
        last_active_at: None,
        preview_token: stacyvm_types::PreviewToken::random(),
        public_preview: false,
    }
}

async fn abandoned_spawns_are_cleaned_only_when_their_creator_is_gone(store: Arc<dyn Store>) {
    let dir = tempfile::tempdir().unwrap();
    // A live control plane elsewhere: its presence lease is held.
    store
        .acquire_lease(
            "control-plane/instance/cp-live",
            "control_plane",
            "cp-live",
            Duration::from_secs(600),
        )
        .await
        .unwrap();
    // One that died: its presence lease ran out.
    store
        .acquire_lease(
            "control-plane/instance/cp-dead",
            "control_plane",
            "cp-dead",
            Duration::from_millis(1),
        )
        .await
        .unwrap();
    // Remote rows (no worker answers here: their runtimes cannot be reached, the records are
    // cleaned all the same), and local ones that startup reconciliation also looks at.
    let rows = [
        (
            "sb-dead0001",
            "w-gone",
            "cp-dead",
            chrono::Duration::seconds(1),
        ),
        (
            "sb-gone0001",
            "w-gone",
            "cp-never-seen",
            chrono::Duration::seconds(1),
        ),
        (
            "sb-live0001",
            "w-gone",
            "cp-live",
            chrono::Duration::hours(1),
        ),
        (
            "sb-live0002",
            "local",
            "cp-live",
            chrono::Duration::hours(1),
        ),
        ("sb-unkn0001", "w-gone", "", chrono::Duration::seconds(10)),
        ("sb-unkn0002", "w-gone", "", chrono::Duration::minutes(5)),
    ];
    for (id, worker, by, age) in rows {
        let limits = InsertLimits {
            created_by: by,
            ..InsertLimits::default()
        };
        store
            .insert_sandbox_limited(&creating(id, worker, age), &limits)
            .await
            .unwrap();
    }
    let svc = service(
        store.clone(),
        dir.path(),
        Settings {
            reaper_interval: Duration::from_millis(100),
            ..Settings::default()
        },
    );
    let mut events = svc.subscribe_events();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stop = CancellationToken::new();
    let served = tokio::spawn(stacyvm_server::serve(
        listener,
        svc.clone(),
        stop.clone(),
        Duration::from_secs(1),
    ));
    let state = |id: &'static str| {
        let store = store.clone();
        async move { store.get_sandbox(&id.into()).await.unwrap().state }
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while state("sb-dead0001").await != SandboxState::Destroyed {
        assert!(
            Instant::now() < deadline,
            "abandoned spawn never cleaned up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A few more passes: nothing else may go.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(state("sb-gone0001").await, SandboxState::Destroyed);
    assert_eq!(state("sb-unkn0002").await, SandboxState::Destroyed);
    assert_eq!(state("sb-live0001").await, SandboxState::Creating);
    assert_eq!(state("sb-live0002").await, SandboxState::Creating);
    assert_eq!(state("sb-unkn0001").await, SandboxState::Creating);
    let mut reasons = Vec::new();
    while let Some(ev) = events.try_next() {
        if ev.kind == EventKind::ReconcileAction {
            let data = serde_json::to_value(ev.data.unwrap()).unwrap();
            reasons.push((ev.sandbox_id.unwrap().into_string(), data["reason"].clone()));
        }
    }
    reasons.sort_by(|a, b| a.0.cmp(&b.0));
    let want: Vec<(String, serde_json::Value)> = ["sb-dead0001", "sb-gone0001", "sb-unkn0002"]
        .into_iter()
        .map(|id| (id.to_string(), serde_json::json!("creator_gone")))
        .collect();
    assert_eq!(reasons, want);
    stop.cancel();
    served.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_spawns_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cp.db");
    let store = Arc::new(SqliteStore::open(path.to_str().unwrap()).await.unwrap());
    abandoned_spawns_are_cleaned_only_when_their_creator_is_gone(store).await;
}

mod needs_pg {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn max_sandboxes_is_exact_across_two_control_planes_on_postgres() {
        let db = stacyvm_store::pg_test_db::TestDb::create().await;
        let dir = tempfile::tempdir().unwrap();
        let settings = Settings {
            limits: Limits {
                max_sandboxes: 10,
                ..Limits::default()
            },
            ..Settings::default()
        };
        let store_a = Arc::new(db.open().await);
        let a = service(store_a.clone(), dir.path(), settings.clone());
        let b = service(Arc::new(db.open().await), dir.path(), settings);
        let mut tasks = Vec::new();
        for i in 0..30 {
            let svc = if i % 2 == 0 { a.clone() } else { b.clone() };
            tasks.push(tokio::spawn(async move {
                svc.sandboxes()
                    .spawn(SpawnParams::default(), &Caller::default())
                    .await
            }));
        }
        let (mut ok, mut limited) = (0, 0);
        for t in tasks {
            match t.await.unwrap() {
                Ok(_) => ok += 1,
                Err(ServiceError::ResourceLimit(m)) => {
                    assert_eq!(m, "max sandboxes reached (10)");
                    limited += 1;
                }
                Err(e) => panic!("unexpected spawn error: {e:?}"),
            }
        }
        assert_eq!((ok, limited), (10, 20));
        assert_eq!(
            store_a.count_active_sandboxes(None).await.unwrap().total,
            10
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn abandoned_spawns_on_postgres() {
        let db = stacyvm_store::pg_test_db::TestDb::create().await;
        abandoned_spawns_are_cleaned_only_when_their_creator_is_gone(Arc::new(db.open().await))
            .await;
    }
}
