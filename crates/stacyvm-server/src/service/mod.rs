//! The one internal API. HTTP handlers, the CLI, worker RPC and tests all call these methods;
//! transports only decode, call and encode.

mod admin;
mod admission;
mod exec;
mod files;
mod leases;
mod lifecycle;
mod preview;
mod quotas;
mod reconcile;
mod sandboxes;
mod system;
mod templates;
mod worker_auth;
mod workers;

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Instant;

pub use admin::AuditQuery;
pub use admission::AdmissionDecision;
pub use exec::{ExecParams, ExecResult, ExecStream, StreamItem};
pub(crate) use leases::lease_ttl;
pub use lifecycle::EventSubscription;
pub use preview::PreviewHost;
pub use quotas::{OwnerUsage, QuotaInput, QuotaSummary};
pub use sandboxes::SpawnParams;
use stacyvm_provider::ProviderRegistry;
use stacyvm_store::Store;
pub use system::{
    Diagnostics, EventCounts, LeaseCounts, Overview, ProviderDetail, ProviderHealth, ReadyReport,
    SandboxCounts, StoreHealth,
};
pub use templates::TemplateInput;
use tokio::sync::Notify;
pub use worker_auth::{IssuedToken, TokenRequest};
pub use workers::{HeartbeatInput, WorkerCounts, WorkerInfo, LOCAL_WORKER};

use crate::events::EventBus;
use crate::ops::OpMetrics;
use crate::settings::Settings;

/// Who is calling, as the transport authenticated them.
#[derive(Debug, Clone, Default)]
pub struct Caller {
    /// `X-User-ID`, if sent.
    pub user_id: Option<String>,
    /// `api`, `admin`, or empty when auth is off.
    pub role: &'static str,
    /// Which header carried the key (`X-API-Key` / `X-Admin-API-Key`), for audit.
    pub key_header: &'static str,
}

/// Admission reservations not yet visible in the store (spawns in flight).
#[derive(Default)]
pub(crate) struct Pending {
    total: i64,
    by_owner: HashMap<String, i64>,
}

/// Spawn-queue figures since start (for `/metrics`, `/diagnostics`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueueStats {
    pub depth: i64,
    pub queued_total: u64,
    pub dequeued_total: u64,
    pub timeouts: u64,
    pub wait_count: u64,
    pub wait_total_ms: f64,
    pub wait_max_ms: f64,
}

/// The service's state. Its fields are private to `service/`: every other layer goes through
/// the service's functions.
pub struct Inner {
    store: Arc<dyn Store>,
    providers: ProviderRegistry,
    settings: Settings,
    events: EventBus,
    ops: OpMetrics,
    started: Instant,
    pending: tokio::sync::Mutex<Pending>,
    /// Woken when capacity may have freed (destroy, quota change).
    capacity_freed: Notify,
    queue: Mutex<QueueStats>,
    /// Set when an admin deleted `local`: keep it out of placement until re-added.
    local_removed: AtomicBool,
    /// Owns background work started on behalf of requests (streams); joined on shutdown.
    tasks: tokio_util::task::TaskTracker,
    shutdown: tokio_util::sync::CancellationToken,
    version: &'static str,
    /// Worker RPC client; `None` = remote workers cannot be called.
    remote: Option<Arc<crate::remote::WorkerClient>>,
    /// Checks `/api/v1/worker/*` callers and picks credentials for calling workers.
    worker_auth: Option<Arc<stacyvm_auth::WorkerAuthenticator>>,
    /// Recent `list_workers` result for placement (refreshed at most every second, and at once
    /// after this process changes the registry) so a spawn does not cost a registry query.
    workers_cache: Mutex<Option<(Instant, Arc<Vec<stacyvm_store::WorkerRecord>>)>>,
    /// Primary HMAC key for `POST /admin/worker-tokens`.
    worker_signing_key: Option<String>,
    /// This process among control planes sharing the database (`<host>-<pid>-<rand>`).
    instance_id: String,
    /// Whether this control plane runs the reaper and reconciler passes.
    leadership: crate::tasks::leader::Leadership,
}

/// Cheap to clone; shared by every transport.
#[derive(Clone)]
pub struct Service(Arc<Inner>);

impl std::ops::Deref for Service {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl Service {
    pub fn new(store: Arc<dyn Store>, providers: ProviderRegistry, settings: Settings) -> Self {
        Self::with_remote(store, providers, settings, None)
    }

    /// Adds worker authentication (and the signing key for issued tokens).
    pub fn with_worker_auth(
        store: Arc<dyn Store>,
        providers: ProviderRegistry,
        settings: Settings,
        remote: Option<Arc<crate::remote::WorkerClient>>,
        worker_auth: Option<Arc<stacyvm_auth::WorkerAuthenticator>>,
        worker_signing_key: Option<String>,
    ) -> Self {
        let mut s = Self::with_remote(store, providers, settings, remote);
        if let Some(inner) = Arc::get_mut(&mut s.0) {
            inner.worker_auth = worker_auth;
            inner.worker_signing_key = worker_signing_key;
        }
        s
    }

    pub fn with_remote(
        store: Arc<dyn Store>,
        providers: ProviderRegistry,
        settings: Settings,
        remote: Option<Arc<crate::remote::WorkerClient>>,
    ) -> Self {
        let instance_id = crate::tasks::leader::new_instance_id(&settings.hostname);
        let leadership =
            crate::tasks::leader::Leadership::new(instance_id.clone(), settings.reaper_interval);
        Service(Arc::new(Inner {
            instance_id,
            leadership,
            remote,
            worker_auth: None,
            workers_cache: Mutex::new(None),
            worker_signing_key: None,
            store,
            providers,
            settings,
            events: EventBus::new(),
            ops: OpMetrics::default(),
            started: Instant::now(),
            pending: tokio::sync::Mutex::new(Pending::default()),
            capacity_freed: Notify::new(),
            queue: Mutex::new(QueueStats::default()),
            local_removed: AtomicBool::new(false),
            tasks: tokio_util::task::TaskTracker::new(),
            shutdown: tokio_util::sync::CancellationToken::new(),
            version: env!("CARGO_PKG_VERSION"),
        }))
    }

    pub fn settings(&self) -> &Settings {
        &self.0.settings
    }

    pub fn uptime(&self) -> std::time::Duration {
        self.started.elapsed()
    }

    /// Wakes queued spawns: capacity may have freed.
    pub(crate) fn notify_capacity(&self) {
        self.capacity_freed.notify_waiters();
    }
}
