//! Where a spawn goes (wire reference §9.6) and which workers count as stale, from a registry
//! view at most [`WORKERS_CACHE_TTL`] old.

use std::sync::Arc;

use serde_json::Value;
use stacyvm_store::WorkerRecord;
use stacyvm_types::WorkerId;

use super::routing::rpc_url;
use super::Service;
use crate::error::{ServiceError, ServiceResult};

/// How stale the placement view of the registry may be (heartbeats arrive every few seconds).
const WORKERS_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(1);

/// Where a spawn goes.
#[derive(Debug, Clone, PartialEq)]
pub struct Placement {
    /// `None` when no worker is eligible.
    pub target: Option<stacyvm_types::Placement>,
    pub reason: &'static str,
    pub eligible: usize,
    /// A remote worker was chosen but cannot be called.
    pub rpc_unavailable: bool,
}

impl Placement {
    pub fn local() -> Self {
        Placement {
            target: Some(stacyvm_types::Placement::Local),
            reason: "local_fallback",
            eligible: 1,
            rpc_unavailable: false,
        }
    }
}

/// Whether `w`'s heartbeat lists `cap`.
pub(super) fn has_capability(w: &WorkerRecord, cap: &str) -> bool {
    w.capabilities
        .as_ref()
        .is_some_and(|c| c.iter().any(|c| c == cap))
}

impl Service {
    /// How long `w` may stay silent: `stale_after_intervals` of its own heartbeat interval
    /// when it reports one, else the fixed window.
    pub(super) fn stale_window(&self, w: &WorkerRecord) -> std::time::Duration {
        w.capacity
            .get(stacyvm_protocol::capacity::HEARTBEAT_INTERVAL_MS)
            .and_then(Value::as_u64)
            .filter(|ms| *ms > 0)
            .map(|ms| {
                std::time::Duration::from_millis(ms) * self.settings.worker_stale_intervals.max(1)
            })
            .unwrap_or(self.settings.worker_stale_after)
    }

    pub(super) fn is_stale(&self, w: &WorkerRecord) -> bool {
        if w.id.is_local() {
            // The control plane's own record; it is refreshed by this process.
            return (chrono::Utc::now() - w.last_heartbeat)
                .to_std()
                .unwrap_or_default()
                > self.settings.worker_stale_after;
        }
        let age = chrono::Utc::now() - w.last_heartbeat;
        age.to_std().unwrap_or_default() > self.stale_window(w)
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

    pub(super) fn invalidate_workers(&self) {
        if let Ok(mut c) = self.workers_cache.lock() {
            *c = None;
        }
    }

    /// Whether `worker` can take a sandbox of `provider` that needs its volumes or snapshot:
    /// 409 `WORKER_UNAVAILABLE` saying why not (they stay recorded, unavailable, until it can).
    pub(super) async fn pinned_ready(
        &self,
        worker: &WorkerId,
        provider: &str,
    ) -> ServiceResult<()> {
        let workers = self.cached_workers().await?;
        let Some(w) = workers.iter().find(|w| &w.id == worker) else {
            if worker.is_local() {
                return Ok(());
            }
            return Err(ServiceError::WorkerUnavailable(format!(
                "worker {worker}, which holds the sandbox's volumes or snapshot, is not registered"
            )));
        };
        if !self.eligible(w, provider) {
            return Err(ServiceError::WorkerUnavailable(format!(
                "worker {worker}, which holds the sandbox's volumes or snapshot, is not taking \
                 {provider} sandboxes now (offline, draining or silent)"
            )));
        }
        if !w.id.is_local() && !has_capability(w, stacyvm_protocol::capability::STATE) {
            return Err(ServiceError::WorkerUnavailable(format!(
                "worker {worker} is too old to hold volumes or snapshots; upgrade it"
            )));
        }
        Ok(())
    }

    /// Placement per §9.6: `local` whenever eligible, else the eligible worker with the fewest
    /// active sandboxes (ties by id); a remote choice needs an RPC endpoint. With `pin`, only
    /// that worker is eligible (it holds the spawn's volumes or snapshot).
    pub(super) async fn place(
        &self,
        provider: &str,
        pin: Option<&WorkerId>,
    ) -> ServiceResult<Placement> {
        let workers = match self.cached_workers().await {
            Ok(w) => w,
            Err(_) if pin.is_none_or(WorkerId::is_local) => return Ok(Placement::local()),
            Err(e) => return Err(e),
        };
        if workers.is_empty() && pin.is_none_or(WorkerId::is_local) {
            return Ok(Placement::local());
        }
        let eligible: Vec<&WorkerRecord> = workers
            .iter()
            .filter(|w| self.eligible(w, provider) && pin.is_none_or(|p| *p == w.id))
            .collect();
        let mut candidates: Vec<&WorkerRecord> = Vec::new();
        let needs_counts = eligible.iter().any(|w| {
            !w.id.is_local() && w.capacity.get("max_sandboxes").and_then(Value::as_i64) > Some(0)
        }) || (eligible.len() > 1 && !eligible.iter().any(|w| w.id.is_local()));
        let mut counts = std::collections::HashMap::<WorkerId, i64>::new();
        if needs_counts {
            for sb in self.store.list_sandboxes().await? {
                if sb.state.is_active() {
                    *counts.entry(WorkerId::from(sb.placement)).or_insert(0) += 1;
                }
            }
        }
        for w in &eligible {
            let max = w
                .capacity
                .get("max_sandboxes")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            if !w.id.is_local() && max > 0 && counts.get(&w.id).copied().unwrap_or(0) >= max {
                continue;
            }
            candidates.push(w);
        }
        let n = candidates.len();
        if n == 0 {
            return Ok(Placement {
                target: None,
                reason: "no_eligible_worker",
                eligible: 0,
                rpc_unavailable: false,
            });
        }
        if candidates.iter().any(|w| w.id.is_local()) {
            return Ok(Placement {
                target: Some(stacyvm_types::Placement::Local),
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
            target: Some(stacyvm_types::Placement::from(w.id.clone())),
            reason: "remote_worker_selected",
            eligible: n,
            rpc_unavailable: !can_call,
        })
    }
}
