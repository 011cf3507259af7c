//! The one internal API. HTTP handlers, the CLI, worker RPC, background tasks and tests all
//! call it; transports only decode, call and encode.
//!
//! [`Service`] is a cheap handle on private state. Its functions are grouped by resource, one
//! file and one type per noun, reached through an accessor that costs nothing (a borrow):
//! `svc.sandboxes().spawn(..)`, `svc.exec().run(..)`, `svc.files()`, `svc.workers()`,
//! `svc.templates()`, `svc.quotas()`, `svc.admin()`, `svc.system()`. Collaborators that only
//! the service uses stay inside this module: admission (limits and the spawn queue, one call
//! per spawn attempt), placement, routing to a sandbox's provider, and reconciliation (called by
//! the background loops in `tasks/`). Results are typed; `http/` writes the JSON.

mod activity;
mod admin;
mod admission;
mod bounds;
mod e2b;
mod exec;
mod files;
mod leases;
mod lifecycle;
mod placement;
mod preview;
mod processes;
mod quotas;
mod reconcile;
mod routing;
mod sandboxes;
mod snapshots;
mod system;
mod templates;
mod volumes;
mod worker_auth;
mod workers;

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Instant;

pub use admin::{Admin, AuditQuery};
pub use admission::{AdmissionDecision, QueueStats};
pub use e2b::{effective_workdir, E2bCreate, ENVD_VERSION};
pub use exec::{Exec, ExecParams, ExecResult, ExecStream, StreamItem};
pub use files::Files;
pub(crate) use leases::lease_ttl;
pub use lifecycle::EventSubscription;
pub use preview::{PreviewGrant, PreviewHost, PreviewUpstream};
pub use processes::{ProcessParams, Processes};

pub use quotas::{OwnerUsage, QuotaInput, QuotaSummary, Quotas};
pub use sandboxes::{
    DestroyOutcome, LifecycleReport, PageCursor, Sandboxes, SpawnParams, MAX_PAGE,
};
pub use snapshots::Snapshots;
use stacyvm_provider::ProviderRegistry;
use stacyvm_store::Store;
pub use system::{
    Diagnostics, EventCounts, LeaseCounts, Overview, ProviderDetail, ProviderHealth, ReadyReport,
    SandboxCounts, StoreHealth, System,
};
pub use templates::{TemplateInput, Templates};
pub use volumes::{MountParams, VolumeInfo, VolumeParams, Volumes};
pub use worker_auth::{IssuedToken, TokenRequest};
pub use workers::{HeartbeatInput, WorkerCounts, WorkerInfo, Workers};

use crate::events::EventBus;
use crate::metrics::Metrics;
use crate::ops::OpMetrics;
use crate::settings::Settings;

/// Which API key authenticated a caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallerRole {
    /// `server.api_key`.
    Api,
    /// `server.admin_api_key`.
    Admin,
}

impl CallerRole {
    /// The name the admin audit log records (`api:X-API-Key`).
    pub fn as_str(self) -> &'static str {
        match self {
            CallerRole::Api => "api",
            CallerRole::Admin => "admin",
        }
    }
}

/// Who is calling, as the transport authenticated them.
#[derive(Debug, Clone, Default)]
pub struct Caller {
    /// `X-User-ID`, if sent.
    pub user_id: Option<String>,
    /// `None` when auth is off.
    pub role: Option<CallerRole>,
    /// Which header carried the key (`X-API-Key` / `X-Admin-API-Key`), for audit.
    pub key_header: &'static str,
}

/// The service's state. Its fields are private to `service/`: every other layer goes through
/// the service's functions.
pub struct Inner {
    store: Arc<dyn Store>,
    providers: ProviderRegistry,
    settings: Settings,
    events: EventBus,
    ops: OpMetrics,
    /// Prometheus series (`/metrics/prometheus`); `ops` records into it too.
    metrics: Metrics,
    started: Instant,
    /// Spawns in flight, the spawn queue and its wake-ups.
    admission: admission::State,
    /// Set when an admin deleted `local`: keep it out of placement until re-added.
    local_removed: AtomicBool,
    /// Collected execs in flight per sandbox (`server.max_sync_execs`).
    sync_execs: exec::SyncExecs,
    /// Which processes this control plane watches for their exit events.
    exit_watch: processes::ExitWatch,
    /// Recent activity per sandbox (idle timeouts) and the process lists of paused sandboxes.
    activity: activity::Activity,
    /// E2B records read or written (they never change).
    e2b_records: e2b::RecordCache,
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
    /// Notified when this control plane becomes the background leader.
    leadership_gained: tokio::sync::Notify,
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
        let leadership = crate::tasks::leader::Leadership::new(
            instance_id.clone(),
            crate::tasks::leader::lease_tick(settings.reaper_interval),
        );
        let metrics = Metrics::new(remote.as_deref().map(crate::remote::WorkerClient::metrics));
        Service(Arc::new(Inner {
            instance_id,
            leadership,
            leadership_gained: tokio::sync::Notify::new(),
            remote,
            worker_auth: None,
            workers_cache: Mutex::new(None),
            worker_signing_key: None,
            store,
            providers,
            settings,
            events: EventBus::new(),
            ops: OpMetrics::new(metrics.operations().clone()),
            metrics,
            started: Instant::now(),
            admission: admission::State::default(),
            local_removed: AtomicBool::new(false),
            sync_execs: exec::SyncExecs::default(),
            exit_watch: processes::ExitWatch::default(),
            activity: activity::Activity::default(),
            e2b_records: e2b::RecordCache::default(),
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

    /// [`Self::uptime`] as a Go duration (`1h2m3.5s`).
    pub fn uptime_string(&self) -> String {
        stacyvm_types::GoDuration::from_std(self.uptime()).to_string()
    }
}
