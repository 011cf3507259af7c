//! The worker registry (wire reference §2.5): heartbeats, the `local` registration, drain.
//! Worker credentials are in `worker_auth.rs`, lease renewal in `leases.rs`, placement in
//! `placement.rs`.

use std::sync::atomic::Ordering;

use serde_json::{Map, Value};
use stacyvm_store::WorkerRecord;
use stacyvm_types::{EventKind, SandboxId, WorkerId};

use super::Service;
use crate::error::{ServiceError, ServiceResult};
use crate::events::ReconcileAction;

/// A registry record and whether this control plane considers it stale.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerInfo {
    pub record: WorkerRecord,
    pub stale: bool,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct WorkerCounts {
    pub total: usize,
    /// Online and not stale.
    pub online: usize,
    pub stale: usize,
    /// Neither online nor draining.
    pub unhealthy: usize,
    pub items: Vec<WorkerInfo>,
    pub error: Option<String>,
}

/// What a heartbeat says about a worker.
#[derive(Debug, Clone, Default)]
pub struct HeartbeatInput {
    pub hostname: String,
    pub status: String,
    pub providers: Option<Vec<String>>,
    pub capabilities: Option<Vec<String>>,
    pub capacity: Map<String, Value>,
}

/// The worker registry: `local` (this control plane) and remote workers.
#[derive(Clone, Copy)]
pub struct Workers<'a> {
    /// Shared with the other files that extend this type.
    pub(super) svc: &'a Service,
}

impl Service {
    pub fn workers(&self) -> Workers<'_> {
        Workers { svc: self }
    }
}

impl Workers<'_> {
    /// A registry record with what this control plane makes of it.
    pub fn info(self, record: WorkerRecord) -> WorkerInfo {
        WorkerInfo {
            stale: self.svc.is_stale(&record),
            record,
        }
    }

    pub async fn list(self) -> ServiceResult<Vec<WorkerInfo>> {
        let list = self.svc.store.list_workers().await?;
        Ok(list.into_iter().map(|w| self.info(w)).collect())
    }

    pub async fn get(self, id: &WorkerId) -> ServiceResult<WorkerInfo> {
        Ok(self.info(self.svc.store.get_worker(id).await?))
    }

    pub async fn delete(self, id: &WorkerId) -> ServiceResult<()> {
        self.svc.store.delete_worker(id).await?;
        self.svc.invalidate_workers();
        if id.is_local() {
            self.svc.local_removed.store(true, Ordering::SeqCst);
        }
        Ok(())
    }

    /// Records a heartbeat for `id` (admin route, and the local self-registration).
    pub async fn heartbeat(self, id: &WorkerId, hb: HeartbeatInput) -> ServiceResult<WorkerInfo> {
        if id.trim().is_empty() {
            return Err(ServiceError::bad_request("worker id is required"));
        }
        if id.is_local() {
            self.svc.local_removed.store(false, Ordering::SeqCst);
        }
        let w = self.record_heartbeat(id, hb).await?;
        Ok(self.info(w))
    }

    /// A heartbeat a worker sent itself. Runtimes it reports holding (`capacity.sandboxes`)
    /// that the store does not assign to it are destroyed there, in the background.
    pub async fn report(self, id: &WorkerId, hb: HeartbeatInput) -> ServiceResult<WorkerInfo> {
        let held = held_sandboxes(&hb.capacity);
        let w = self.heartbeat(id, hb).await?;
        if let Some(held) = held {
            let svc = self.svc.clone();
            let wid = id.clone();
            self.svc
                .tasks
                .spawn(async move { svc.reconciler().destroy_orphans(&wid, held).await });
        }
        Ok(w)
    }

    /// Stores a heartbeat (`last_heartbeat = now`) and refreshes the placement view.
    async fn record_heartbeat(
        self,
        id: &WorkerId,
        hb: HeartbeatInput,
    ) -> ServiceResult<WorkerRecord> {
        let now = chrono::Utc::now();
        let rec = WorkerRecord {
            id: id.clone(),
            hostname: hb.hostname,
            status: if hb.status.trim().is_empty() {
                "online".into()
            } else {
                hb.status
            },
            providers: hb.providers,
            capabilities: hb.capabilities,
            capacity: hb.capacity,
            last_heartbeat: now,
            created_at: now,
            updated_at: now,
        };
        let stored = self.svc.store.upsert_worker(&rec).await?;
        self.svc.invalidate_workers();
        Ok(stored)
    }

    /// The control plane's own registration as worker `local`; skipped after an admin removed
    /// it, until an admin re-adds it.
    pub async fn heartbeat_local(self) -> ServiceResult<()> {
        if self.svc.local_removed.load(Ordering::SeqCst) {
            return Ok(());
        }
        let capacity = local_capacity(&self.svc.settings.limits);
        let hb = HeartbeatInput {
            hostname: self.svc.settings.hostname.clone(),
            status: "online".into(),
            providers: Some(self.svc.providers.names()),
            capabilities: Some(
                ["api", "single_node", "spawn", "exec", "files"]
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
            ),
            capacity,
        };
        // Re-check: an admin delete may have raced this tick.
        if self.svc.local_removed.load(Ordering::SeqCst) {
            return Ok(());
        }
        self.record_heartbeat(&WorkerId::local(), hb).await?;
        Ok(())
    }

    /// The registry's workers in numbers, with each one; a store failure is reported in
    /// `error`.
    pub async fn counts(self) -> WorkerCounts {
        match self.svc.store.list_workers().await {
            Ok(ws) => {
                let items: Vec<WorkerInfo> = ws.into_iter().map(|w| self.info(w)).collect();
                let online = |w: &&WorkerInfo| w.record.status.eq_ignore_ascii_case("online");
                WorkerCounts {
                    total: items.len(),
                    online: items.iter().filter(online).filter(|w| !w.stale).count(),
                    stale: items.iter().filter(|w| w.stale).count(),
                    unhealthy: items
                        .iter()
                        .filter(|w| {
                            !w.record.status.eq_ignore_ascii_case("online")
                                && !w.record.status.eq_ignore_ascii_case("draining")
                        })
                        .count(),
                    items,
                    error: None,
                }
            }
            Err(e) => WorkerCounts {
                error: Some(e.to_string()),
                ..WorkerCounts::default()
            },
        }
    }

    /// Asks worker `id` to drain (`worker.shutdown`): it refuses new spawns and keeps serving
    /// the sandboxes it holds.
    pub async fn drain(self, id: &WorkerId) -> ServiceResult<()> {
        if id.is_local() {
            return Err(ServiceError::bad_request(
                "the control plane's local worker cannot be drained",
            ));
        }
        let w = self.svc.store.get_worker(id).await?;
        // A worker that serves no RPC (started without `--listen`) is not broken, it just
        // cannot be told anything: a conflict with its setup, not an outage.
        if super::routing::rpc_url(&w).is_none() {
            return Err(ServiceError::Conflict(format!(
                "worker {id} has no rpc_url (it was started without --listen), so it cannot \
                 be drained remotely; send the worker process SIGTERM instead"
            )));
        }
        let (client, ep) = self.svc.remote_endpoint(&w)?;
        let req = stacyvm_protocol::RpcRequest::new(
            stacyvm_protocol::RpcCall::Shutdown,
            ep.worker_id.clone(),
            id,
            None,
        );
        client
            .call(&ep, &req, Some(std::time::Duration::from_secs(30)))
            .await
            .map_err(|e| ServiceError::from(e.into_provider("")))?;
        self.svc.events.publish(
            EventKind::ReconcileAction,
            None,
            Some(
                ReconcileAction::new("worker_draining")
                    .reason("admin_drain")
                    .worker(id)
                    .into(),
            ),
        );
        Ok(())
    }
}

/// The capacity object of the `local` worker record: the admission limits, as a JSON object
/// like every worker's heartbeat capacity (the registry stores it that way).
fn local_capacity(l: &crate::settings::Limits) -> Map<String, Value> {
    let mut m = Map::new();
    let mut put = |k: &str, v: Value| {
        m.insert(k.to_string(), v);
    };
    put("max_sandboxes", l.max_sandboxes.into());
    put("max_sandboxes_per_owner", l.max_sandboxes_per_owner.into());
    put(
        "default_exec_timeout",
        l.default_exec_timeout.to_string().into(),
    );
    put("max_exec_timeout", l.max_exec_timeout.to_string().into());
    put("max_ttl", l.max_ttl.to_string().into());
    put("spawn_overflow", l.spawn_overflow.as_str().into());
    put(
        "spawn_queue_timeout",
        l.spawn_queue_timeout.to_string().into(),
    );
    put("max_spawn_queue", l.max_spawn_queue.into());
    m
}

/// Sandbox ids a worker says it holds (`capacity.sandboxes`: ids, or objects with a
/// `sandbox_id`), when it reports them.
fn held_sandboxes(capacity: &Map<String, Value>) -> Option<Vec<SandboxId>> {
    let list = capacity
        .get(stacyvm_protocol::capacity::SANDBOXES)?
        .as_array()?;
    Some(
        list.iter()
            .filter_map(|v| match v {
                Value::String(s) => Some(SandboxId::from(s.as_str())),
                Value::Object(o) => o
                    .get("sandbox_id")
                    .and_then(Value::as_str)
                    .map(SandboxId::from),
                _ => None,
            })
            .collect(),
    )
}
