//! Remote-owned sandboxes against their workers: stale owners, expiry, returning owners, lease
//! renewal, and runtimes a worker holds that no record assigns to it.

use std::collections::HashSet;

use stacyvm_provider::ProviderError;
use stacyvm_types::{EventKind, SandboxId, SandboxState, WorkerId};

use super::Reconciler;
use crate::events::ReconcileAction;

/// Longest one sandbox's RPCs may take within a pass, so one frozen worker cannot stall it.
const RPC_BUDGET: std::time::Duration = std::time::Duration::from_secs(10);

impl Reconciler<'_> {
    /// One pass over remote-owned sandboxes: owners silent past their stale window turn the
    /// sandbox `unhealthy` (or `expired`, releasing the lease, once past `expires_at`); a returning
    /// owner is asked for the real state; leases close to expiry are renewed.
    pub(crate) async fn remote(self) {
        let Ok(records) = self.svc.store.list_sandboxes().await else {
            return;
        };
        let now = chrono::Utc::now();
        let remote = records.into_iter().filter_map(|s| {
            let owner = s.placement.remote()?.clone();
            Some((s, owner))
        });
        for (sb, owner) in remote {
            let worker = self.svc.store.get_worker(&owner).await.ok();
            let reason = match &worker {
                None => Some("worker_missing".to_string()),
                Some(w) if self.svc.is_stale(w) => Some("worker_stale".to_string()),
                Some(w)
                    if w.status.eq_ignore_ascii_case("online")
                        || w.status.eq_ignore_ascii_case("draining") =>
                {
                    None
                }
                Some(w) => Some(format!("worker_{}", w.status.to_lowercase())),
            };
            match reason {
                // Waits for its owner, whatever its TTL says.
                Some(_) if sb.state == SandboxState::Destroying => {}
                Some(reason) => {
                    if sb.expires_at <= now && sb.state != SandboxState::Expired {
                        if self
                            .svc
                            .store
                            .set_sandbox_state(&sb.id, SandboxState::Expired)
                            .await
                            .is_ok()
                        {
                            let _ = self.svc.store.release_lease(&sb.id, &owner).await;
                            self.svc.events.publish(
                                EventKind::ReconcileAction,
                                Some(&sb.id),
                                Some(
                                    ReconcileAction::new("marked_expired")
                                        .reason(reason)
                                        .worker(&owner)
                                        .into(),
                                ),
                            );
                            self.svc.admission().wake();
                        }
                    } else if matches!(sb.state, SandboxState::Running | SandboxState::Error)
                        && self
                            .svc
                            .store
                            .set_sandbox_state(&sb.id, SandboxState::Unhealthy)
                            .await
                            .is_ok()
                    {
                        tracing::warn!(sandbox_id = %sb.id, worker = %owner, %reason, "owner unreachable: sandbox unhealthy");
                        self.svc.events.publish(
                            EventKind::ReconcileAction,
                            Some(&sb.id),
                            Some(
                                ReconcileAction::new("marked_unhealthy")
                                    .reason(reason)
                                    .worker(&owner)
                                    .into(),
                            ),
                        );
                    }
                }
                None => {
                    if matches!(sb.state, SandboxState::Expired | SandboxState::Destroying) {
                        // It expired, or its destroy was asked, while the owner was away, and
                        // the owner answers again: finish the destroy. (Live sandboxes past
                        // their TTL are the reaper's.)
                        let r =
                            tokio::time::timeout(RPC_BUDGET, self.svc.sandboxes().destroy(&sb.id))
                                .await;
                        if let Ok(Err(e)) = r {
                            tracing::warn!(sandbox_id = %sb.id, error = %e, "reconcile: destroy of expired sandbox failed");
                        }
                        continue;
                    }
                    if matches!(sb.state, SandboxState::Unhealthy | SandboxState::Error) {
                        if let Ok(p) = self.svc.provider_for(&sb).await {
                            let status =
                                tokio::time::timeout(RPC_BUDGET, p.status(sb.runtime_id()))
                                    .await
                                    .unwrap_or(Err(ProviderError::Unavailable(
                                        "status timed out".into(),
                                    )));
                            match status {
                                // `paused` is set by pause only, never adopted.
                                Ok(st) if st != sb.state && st != SandboxState::Paused => {
                                    let marked =
                                        self.svc.store.set_sandbox_state(&sb.id, st).await.is_ok();
                                    if marked {
                                        self.svc.events.publish(
                                            EventKind::ReconcileAction,
                                            Some(&sb.id),
                                            Some(
                                                ReconcileAction::new(format!("marked_{st}"))
                                                    .reason("worker_returned")
                                                    .worker(&owner)
                                                    .into(),
                                            ),
                                        );
                                    }
                                }
                                Err(ProviderError::SandboxNotFound(_)) => {
                                    let _ = self
                                        .svc
                                        .store
                                        .set_sandbox_state(&sb.id, SandboxState::Error)
                                        .await;
                                }
                                _ => {}
                            }
                        }
                    }
                    self.renew_lease_if_due(&sb, &owner).await;
                }
            }
        }
    }

    /// Whether a remote worker passed its deadline (last heartbeat + stale window) since the
    /// last call: `stale` holds the workers found stale last time and is updated (a worker that
    /// heartbeats again leaves it, so its next death counts again). A store error answers
    /// false; the periodic pass still runs.
    pub(crate) async fn newly_stale(self, stale: &mut HashSet<WorkerId>) -> bool {
        let Ok(workers) = self.svc.store.list_workers().await else {
            return false;
        };
        let now: HashSet<WorkerId> = workers
            .into_iter()
            .filter(|w| !w.id.is_local() && self.svc.is_stale(w))
            .map(|w| w.id)
            .collect();
        let newly = now.iter().any(|w| !stale.contains(w));
        *stale = now;
        newly
    }

    async fn renew_lease_if_due(self, sb: &stacyvm_types::Sandbox, owner: &WorkerId) {
        let Ok(lease) = self.svc.store.get_lease(&sb.id).await else {
            return;
        };
        if lease.holder_id != owner.as_str() {
            return;
        }
        let now = chrono::Utc::now();
        let left = (lease.expires_at - now).to_std().unwrap_or_default();
        let wanted = crate::service::lease_ttl((sb.expires_at - now).to_std().unwrap_or_default());
        // Renew when the lease would run out before the sandbox does (plus slack).
        if left + self.svc.settings().reaper_interval * 2 < wanted {
            if let Err(e) = self.svc.store.renew_lease(&sb.id, owner, wanted).await {
                tracing::warn!(sandbox_id = %sb.id, error = %e, "lease renewal failed");
            }
        }
    }

    /// Destroys runtimes a worker reports holding that the store does not assign to it.
    pub(crate) async fn destroy_orphans(self, worker_id: &WorkerId, held: Vec<SandboxId>) {
        for id in held {
            let record = self.svc.store.get_sandbox(&id).await.ok();
            let wanted = record.as_ref().is_some_and(|r| {
                r.placement.remote() == Some(worker_id)
                    && !matches!(
                        r.state,
                        SandboxState::Destroyed | SandboxState::Expired | SandboxState::Destroying
                    )
            });
            if wanted {
                continue;
            }
            let provider = match &record {
                Some(r) => r.provider.clone(),
                None => self
                    .svc
                    .store
                    .get_worker(worker_id)
                    .await
                    .ok()
                    .and_then(|w| w.providers.and_then(|p| p.into_iter().next()))
                    .unwrap_or_else(|| "mock".into()),
            };
            let expires = chrono::Utc::now() + chrono::Duration::minutes(5);
            let rp = match self
                .svc
                .remote_provider(&id, worker_id, &provider, expires)
                .await
            {
                Ok(rp) => rp,
                Err(e) => {
                    tracing::warn!(sandbox_id = %id, error = %e, "orphan cleanup: no route to worker");
                    continue;
                }
            };
            use stacyvm_provider::Provider as _;
            let runtime = record
                .as_ref()
                .map_or(id.to_string(), |r| r.runtime_id().to_string());
            match rp.destroy(&runtime).await {
                Ok(()) => {
                    tracing::info!(sandbox_id = %id, worker = %worker_id, "destroyed orphaned runtime on worker");
                    if let Some(r) = record {
                        if r.state != SandboxState::Destroyed
                            && r.placement.remote() == Some(worker_id)
                        {
                            let _ = self
                                .svc
                                .store
                                .set_sandbox_state(&id, SandboxState::Destroyed)
                                .await;
                        }
                    }
                    self.svc.events.publish(
                        EventKind::ReconcileAction,
                        Some(&id),
                        Some(
                            ReconcileAction::new("destroyed_orphan")
                                .provider(provider)
                                .worker(worker_id)
                                .into(),
                        ),
                    );
                }
                Err(e) => tracing::warn!(sandbox_id = %id, error = %e, "orphan cleanup failed"),
            }
        }
    }
}
