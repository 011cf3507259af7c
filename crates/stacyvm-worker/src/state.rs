//! Shared state of one worker process: identity, providers, leases, drain flag, the control
//! plane client, and the owner of every task the RPC server spawns.

use std::sync::Arc;

use stacyvm_provider::ProviderRegistry;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::RpcAuth;
use crate::config::WorkerConfig;
use crate::cp::ControlPlane;
use crate::drain::Drain;
use crate::error::WorkerError;
use crate::lease::{Held, Leases};

/// Cheap to clone; what the RPC router runs on.
#[derive(Clone)]
pub struct WorkerState {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub id: String,
    pub providers: ProviderRegistry,
    pub leases: Leases,
    pub drain: Drain,
    pub auth: RpcAuth,
    pub cp: ControlPlane,
    /// Streaming execs outlive their handler; they are tracked here and joined on shutdown.
    pub tasks: TaskTracker,
    /// Cancelled when the process stops for good: running commands are killed.
    pub stop: CancellationToken,
    /// Encoded bytes of collected output at most (`server.max_exec_output`).
    pub max_exec_output: usize,
    /// Previews of sandboxes on providers without isolation (`server.preview_unisolated`).
    pub preview_unisolated: bool,
}

impl WorkerState {
    /// State for `cfg` running `providers`.
    pub fn new(cfg: &WorkerConfig, providers: ProviderRegistry) -> Result<Self, WorkerError> {
        let auth = RpcAuth::new(cfg);
        if !auth.configured() {
            tracing::warn!(
                "no worker token or signing key configured: every worker RPC call will be refused"
            );
        }
        let cp = ControlPlane::new(
            &cfg.control_plane_url,
            &cfg.id,
            cfg.credential.clone(),
            cfg.control_plane_ca.as_deref(),
        )
        .map_err(WorkerError::Client)?;
        Ok(WorkerState {
            inner: Arc::new(Inner {
                id: cfg.id.clone(),
                providers,
                leases: Leases::default(),
                drain: Drain::default(),
                auth,
                cp,
                tasks: TaskTracker::new(),
                stop: CancellationToken::new(),
                max_exec_output: cfg.max_exec_output,
                preview_unisolated: cfg.preview_unisolated,
            }),
        })
    }

    pub fn worker_id(&self) -> &str {
        &self.inner.id
    }

    pub fn is_draining(&self) -> bool {
        self.inner.drain.is_draining()
    }

    /// Enters drain mode (what `worker.shutdown` does).
    pub fn start_drain(&self) {
        self.inner.drain.start();
    }

    /// Control-plane ids of the sandboxes this worker runs.
    pub fn held_sandboxes(&self) -> Vec<String> {
        self.inner.leases.held_ids()
    }

    /// Adds runtimes the providers already run (labelled with a control-plane id) to the
    /// held set, so a restarted worker reports them in its first heartbeat.
    pub(crate) async fn adopt_runtimes(&self) {
        for p in self.inner.providers.all() {
            match p.list_runtimes().await {
                Ok(Some(list)) => {
                    for rt in list.into_iter().filter(|r| r.running) {
                        if let Some(sb) = rt.sandbox_id.filter(|s| !s.is_empty()) {
                            self.inner.leases.hold(
                                &sb,
                                Held {
                                    provider: p.name().to_string(),
                                    runtime_id: rt.runtime_id,
                                },
                            );
                        }
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(provider = p.name(), error = %e, "cannot list runtimes");
                }
            }
        }
    }
}
