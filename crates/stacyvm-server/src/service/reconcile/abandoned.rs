//! Spawns whose control plane died half-way. A spawn records its sandbox as `creating` (with
//! the inserting control plane's instance id) before it asks the provider, and marks it
//! `running` afterwards; a control plane killed in between leaves the row behind, and maybe a
//! runtime on a worker. The leading control plane's reconciler cleans such rows up once their
//! creator's presence lease has lapsed: it destroys whatever runtime exists (on the worker for
//! remote sandboxes) and marks the record destroyed. Rows of live control planes are never
//! touched, whatever their age; rows with no recorded creator wait [`UNKNOWN_CREATOR_GRACE`].

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures_util::StreamExt;
use stacyvm_provider::ProviderError;
use stacyvm_types::{EventKind, Sandbox, SandboxId, SandboxState};

use super::Reconciler;
use crate::events::ReconcileAction;
use crate::tasks::leader;

/// A `creating` row without a recorded creator is abandoned after this long.
pub const UNKNOWN_CREATOR_GRACE: Duration = Duration::from_secs(120);

/// How many cleanups run at once.
pub(super) const CONCURRENCY: usize = 8;

/// Longest one cleanup may wait for a worker.
const RPC_BUDGET: Duration = Duration::from_secs(10);

impl Reconciler<'_> {
    /// One pass; returns how many records were cleaned up.
    pub(crate) async fn abandoned(self) -> usize {
        let rows = match self.svc.store.list_creating_sandboxes().await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "abandoned spawns: cannot list");
                return 0;
            }
        };
        let now = chrono::Utc::now();
        let mut alive = HashMap::<String, bool>::new();
        let mut todo = Vec::new();
        for row in rows {
            if row.created_by == self.svc.instance_id {
                continue; // our own spawn, still in flight
            }
            let abandoned = if row.created_by.is_empty() {
                (now - row.sandbox.updated_at).to_std().unwrap_or_default() > UNKNOWN_CREATOR_GRACE
            } else {
                !self.is_alive_cached(&mut alive, &row.created_by).await
            };
            if abandoned {
                todo.push(row);
            }
        }
        // A few at a time: a dead control plane may leave dozens, and one by one a loaded
        // Docker daemon took 10 s for 30 of them.
        let cleaned = futures_util::stream::iter(todo)
            .map(|row| async move {
                self.clean_up_abandoned(&row.sandbox, &row.created_by).await;
            })
            .buffer_unordered(CONCURRENCY)
            .count()
            .await;
        if cleaned > 0 {
            self.svc.admission().wake();
        }
        cleaned
    }

    /// Ids of `creating` records inserted by another control plane that is still alive: spawns
    /// in flight there, which reconciliation here must leave alone.
    pub(crate) async fn in_flight_elsewhere(self) -> HashSet<SandboxId> {
        let Ok(rows) = self.svc.store.list_creating_sandboxes().await else {
            return HashSet::new();
        };
        let mut out = HashSet::new();
        let mut alive = HashMap::<String, bool>::new();
        for row in rows {
            if row.created_by.is_empty() || row.created_by == self.svc.instance_id {
                continue;
            }
            if self.is_alive_cached(&mut alive, &row.created_by).await {
                out.insert(row.sandbox.id);
            }
        }
        out
    }

    async fn is_alive_cached(self, cache: &mut HashMap<String, bool>, who: &str) -> bool {
        if let Some(&live) = cache.get(who) {
            return live;
        }
        let live = leader::is_alive(&*self.svc.store, who).await;
        cache.insert(who.to_string(), live);
        live
    }

    async fn clean_up_abandoned(self, sb: &Sandbox, creator: &str) {
        // The runtime may or may not exist; a worker that cannot be reached now destroys it when it
        // reports the runtime again (orphan reconciliation), since the record will say destroyed.
        let destroyed = match self.svc.provider_for(sb).await {
            Ok(p) => match tokio::time::timeout(RPC_BUDGET, p.destroy(sb.runtime_id())).await {
                Ok(Ok(())) | Ok(Err(ProviderError::SandboxNotFound(_))) => true,
                Ok(Err(e)) => {
                    tracing::warn!(sandbox_id = %sb.id, error = %e, "abandoned spawn: runtime destroy failed");
                    false
                }
                Err(_) => {
                    tracing::warn!(sandbox_id = %sb.id, "abandoned spawn: runtime destroy timed out");
                    false
                }
            },
            Err(e) => {
                tracing::warn!(sandbox_id = %sb.id, error = %e, "abandoned spawn: no provider");
                false
            }
        };
        match self
            .svc
            .store
            .set_sandbox_state(&sb.id, SandboxState::Destroyed)
            .await
        {
            Ok(_) => {
                if let Some(worker) = sb.placement.remote() {
                    let _ = self.svc.store.release_lease(&sb.id, worker).await;
                }
                tracing::info!(sandbox_id = %sb.id, creator, runtime_destroyed = destroyed, "cleaned up a spawn abandoned by a control plane that died");
                self.svc.events.publish(
                    EventKind::ReconcileAction,
                    Some(&sb.id),
                    Some(
                        ReconcileAction::new("marked_destroyed")
                            .provider(&sb.provider)
                            .reason("creator_gone")
                            .worker(sb.placement.worker_id())
                            .into(),
                    ),
                );
            }
            Err(e) => {
                tracing::warn!(sandbox_id = %sb.id, error = %e, "abandoned spawn: could not mark")
            }
        }
    }
}
