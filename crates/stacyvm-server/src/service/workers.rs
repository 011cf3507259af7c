//! Worker registry and placement (wire reference §2.5, §9.6).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde_json::{Map, Value};
use stacyvm_store::WorkerRecord;

use super::Service;
use crate::error::{ServiceError, ServiceResult};
use crate::events::ReconcileAction;

pub const LOCAL_WORKER: &str = "local";

/// How stale the placement view of the registry may be (heartbeats arrive every few seconds).
const WORKERS_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(1);

/// Where a spawn goes.
#[derive(Debug, Clone, PartialEq)]
pub struct Placement {
    /// `None` when no worker is eligible.
    pub worker_id: Option<String>,
    pub reason: &'static str,
    pub eligible: usize,
    /// A remote worker was chosen but cannot be called.
    pub rpc_unavailable: bool,
}

impl Placement {
    pub fn local() -> Self {
        Placement {
            worker_id: Some(LOCAL_WORKER.into()),
            reason: "local_fallback",
            eligible: 1,
            rpc_unavailable: false,
        }
    }
}

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

impl Service {
    /// How long `w` may stay silent: `stale_after_intervals` of its own heartbeat interval
    /// when it reports one, else the fixed window.
    pub(crate) fn stale_window(&self, w: &WorkerRecord) -> std::time::Duration {
        w.capacity
            .get(stacyvm_protocol::capacity::HEARTBEAT_INTERVAL_MS)
            .and_then(Value::as_u64)
            .filter(|ms| *ms > 0)
            .map(|ms| {
                std::time::Duration::from_millis(ms) * self.settings.worker_stale_intervals.max(1)
            })
            .unwrap_or(self.settings.worker_stale_after)
    }

    pub(crate) fn is_stale(&self, w: &WorkerRecord) -> bool {
        if w.id == LOCAL_WORKER {
            // The control plane's own record; it is refreshed by this process.
            return (chrono::Utc::now() - w.last_heartbeat)
                .to_std()
                .unwrap_or_default()
                > self.settings.worker_stale_after;
        }
        let age = chrono::Utc::now() - w.last_heartbeat;
        age.to_std().unwrap_or_default() > self.stale_window(w)
    }

    /// A registry record with what this control plane makes of it.
    pub fn worker_info(&self, record: WorkerRecord) -> WorkerInfo {
        WorkerInfo {
            stale: self.is_stale(&record),
            record,
        }
    }

    fn eligible(&self, w: &WorkerRecord, provider: &str) -> bool {
        if w.id.trim().is_empty() || !w.status.eq_ignore_ascii_case("online") || self.is_stale(w) {
            return false;
        }
        match &w.providers {
            None => true,
            Some(list) if list.is_empty() => true,
            Some(list) => list.iter().any(|p| p.eq_ignore_ascii_case(provider)),
        }
    }

    /// Placement per §9.6: `local` whenever eligible, else the eligible worker with the fewest
    /// active sandboxes (ties by id); a remote choice needs an RPC endpoint.
    /// The registry, from a cache at most [`WORKERS_CACHE_TTL`] old.
    async fn cached_workers(&self) -> Result<Arc<Vec<WorkerRecord>>, ServiceError> {
        if let Ok(c) = self.workers_cache.lock() {
            if let Some((at, w)) = c.as_ref() {
                if at.elapsed() < WORKERS_CACHE_TTL {
                    return Ok(w.clone());
                }
            }
        }
        let fresh = Arc::new(self.store.list_workers().await?);
        if let Ok(mut c) = self.workers_cache.lock() {
            *c = Some((std::time::Instant::now(), fresh.clone()));
        }
        Ok(fresh)
    }

    pub(crate) fn invalidate_workers(&self) {
        if let Ok(mut c) = self.workers_cache.lock() {
            *c = None;
        }
    }

    pub(crate) async fn place(&self, provider: &str) -> ServiceResult<Placement> {
        let workers = match self.cached_workers().await {
            Ok(w) => w,
            Err(_) => return Ok(Placement::local()),
        };
        if workers.is_empty() {
            return Ok(Placement::local());
        }
        let eligible: Vec<&WorkerRecord> = workers
            .iter()
            .filter(|w| self.eligible(w, provider))
            .collect();
        let mut candidates: Vec<&WorkerRecord> = Vec::new();
        let needs_counts = eligible.iter().any(|w| {
            w.id != LOCAL_WORKER
                && w.capacity.get("max_sandboxes").and_then(Value::as_i64) > Some(0)
        }) || (eligible.len() > 1
            && !eligible.iter().any(|w| w.id == LOCAL_WORKER));
        let mut counts = std::collections::HashMap::<String, i64>::new();
        if needs_counts {
            for sb in self.store.list_sandboxes().await? {
                if sb.state.is_active() {
                    let wid = if sb.worker_id.is_empty() {
                        LOCAL_WORKER.to_string()
                    } else {
                        sb.worker_id
                    };
                    *counts.entry(wid).or_insert(0) += 1;
                }
            }
        }
        for w in &eligible {
            let max = w
                .capacity
                .get("max_sandboxes")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            if w.id != LOCAL_WORKER && max > 0 && counts.get(&w.id).copied().unwrap_or(0) >= max {
                continue;
            }
            candidates.push(w);
        }
        let n = candidates.len();
        if n == 0 {
            return Ok(Placement {
                worker_id: None,
                reason: "no_eligible_worker",
                eligible: 0,
                rpc_unavailable: false,
            });
        }
        if candidates.iter().any(|w| w.id == LOCAL_WORKER) {
            return Ok(Placement {
                worker_id: Some(LOCAL_WORKER.into()),
                reason: "local_preferred",
                eligible: n,
                rpc_unavailable: false,
            });
        }
        let chosen = candidates
            .iter()
            .min_by_key(|w| (counts.get(&w.id).copied().unwrap_or(0), w.id.clone()))
            .map(|w| (*w).clone());
        let Some(w) = chosen else {
            return Ok(Placement::local());
        };
        let can_call = rpc_url(&w).is_some()
            && self
                .remote
                .as_ref()
                .is_some_and(|c| c.has_credential(&w.id));
        Ok(Placement {
            worker_id: Some(w.id.clone()),
            reason: "remote_worker_selected",
            eligible: n,
            rpc_unavailable: !can_call,
        })
    }

    pub async fn list_workers(&self) -> ServiceResult<Vec<WorkerInfo>> {
        let list = self.store.list_workers().await?;
        Ok(list.into_iter().map(|w| self.worker_info(w)).collect())
    }

    pub async fn get_worker(&self, id: &str) -> ServiceResult<WorkerInfo> {
        Ok(self.worker_info(self.store.get_worker(id).await?))
    }

    pub async fn delete_worker(&self, id: &str) -> ServiceResult<()> {
        self.store.delete_worker(id).await?;
        self.invalidate_workers();
        if id == LOCAL_WORKER {
            self.local_removed.store(true, Ordering::SeqCst);
        }
        Ok(())
    }

    /// Records a heartbeat for `id` (admin route, and the local self-registration).
    pub async fn heartbeat(&self, id: &str, hb: HeartbeatInput) -> ServiceResult<WorkerInfo> {
        if id.trim().is_empty() {
            return Err(ServiceError::bad_request("worker id is required"));
        }
        if id == LOCAL_WORKER {
            self.local_removed.store(false, Ordering::SeqCst);
        }
        let w = self.record_heartbeat(id, hb).await?;
        Ok(self.worker_info(w))
    }

    /// A heartbeat a worker sent itself. Runtimes it reports holding (`capacity.sandboxes`)
    /// that the store does not assign to it are destroyed there, in the background.
    pub async fn worker_heartbeat(
        &self,
        id: &str,
        hb: HeartbeatInput,
    ) -> ServiceResult<WorkerInfo> {
        let held = held_sandboxes(&hb.capacity);
        let w = self.heartbeat(id, hb).await?;
        if let Some(held) = held {
            let svc = self.clone();
            let wid = id.to_string();
            self.tasks
                .spawn(async move { svc.destroy_orphans(&wid, held).await });
        }
        Ok(w)
    }

    /// Stores a heartbeat (`last_heartbeat = now`) and refreshes the placement view.
    async fn record_heartbeat(&self, id: &str, hb: HeartbeatInput) -> ServiceResult<WorkerRecord> {
        let now = chrono::Utc::now();
        let rec = WorkerRecord {
            id: id.to_string(),
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
        let stored = self.store.upsert_worker(&rec).await?;
        self.invalidate_workers();
        Ok(stored)
    }

    /// The control plane's own registration as worker `local`; skipped after an admin removed
    /// it, until an admin re-adds it.
    pub async fn heartbeat_local(&self) -> ServiceResult<()> {
        if self.local_removed.load(Ordering::SeqCst) {
            return Ok(());
        }
        let capacity = local_capacity(&self.settings.limits);
        let hb = HeartbeatInput {
            hostname: self.settings.hostname.clone(),
            status: "online".into(),
            providers: Some(self.providers.names()),
            capabilities: Some(
                ["api", "single_node", "spawn", "exec", "files"]
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
            ),
            capacity,
        };
        // Re-check: an admin delete may have raced this tick.
        if self.local_removed.load(Ordering::SeqCst) {
            return Ok(());
        }
        self.record_heartbeat(LOCAL_WORKER, hb).await?;
        Ok(())
    }

    /// The registry's workers in numbers, with each one; a store failure is reported in
    /// `error`.
    pub async fn worker_counts(&self) -> WorkerCounts {
        match self.store.list_workers().await {
            Ok(ws) => {
                let items: Vec<WorkerInfo> = ws.into_iter().map(|w| self.worker_info(w)).collect();
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
fn held_sandboxes(capacity: &Map<String, Value>) -> Option<Vec<String>> {
    let list = capacity
        .get(stacyvm_protocol::capacity::SANDBOXES)?
        .as_array()?;
    Some(
        list.iter()
            .filter_map(|v| match v {
                Value::String(s) => Some(s.clone()),
                Value::Object(o) => o
                    .get("sandbox_id")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                _ => None,
            })
            .collect(),
    )
}

/// The RPC address a worker advertised in its heartbeat (`capacity.rpc_url`), if any.
pub(crate) fn rpc_url(w: &WorkerRecord) -> Option<&str> {
    w.capacity
        .get("rpc_url")
        .and_then(Value::as_str)
        .filter(|u| !u.is_empty())
}

impl Service {
    /// The client and address for calling worker `w`.
    pub(crate) fn remote_endpoint(
        &self,
        w: &WorkerRecord,
    ) -> ServiceResult<(Arc<crate::remote::WorkerClient>, crate::remote::Endpoint)> {
        let client = self.remote.clone().ok_or_else(|| {
            ServiceError::Unavailable("remote worker RPC is not configured".into())
        })?;
        let rpc_url = rpc_url(w)
            .ok_or_else(|| ServiceError::Unavailable(format!("worker {} has no rpc_url", w.id)))?;
        let endpoint = crate::remote::Endpoint {
            worker_id: w.id.clone(),
            rpc_url: rpc_url.to_string(),
        };
        Ok((client, endpoint))
    }

    /// Asks worker `id` to drain (`worker.shutdown`): it refuses new spawns and keeps serving
    /// the sandboxes it holds.
    pub async fn drain_worker(&self, id: &str) -> ServiceResult<()> {
        if id == LOCAL_WORKER {
            return Err(ServiceError::bad_request(
                "the control plane's local worker cannot be drained",
            ));
        }
        let w = self.store.get_worker(id).await?;
        let (client, ep) = self.remote_endpoint(&w)?;
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
        self.events.publish(
            "reconcile.action",
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
