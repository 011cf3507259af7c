//! Local sandboxes against their providers, at startup and periodically: records left
//! `creating` by a crash are cleaned up, runtimes that vanished are marked, and labelled
//! runtimes the store does not want are destroyed.

use std::collections::HashSet;
use std::sync::Arc;

use futures_util::StreamExt;
use stacyvm_provider::{Provider, ProviderError, RuntimeInfo};
use stacyvm_types::{EventKind, SandboxId, SandboxState};

use super::Reconciler;
use crate::events::ReconcileAction;

impl Reconciler<'_> {
    pub(crate) async fn startup(self) {
        self.local(None).await;
    }

    /// Reconciles local sandboxes with their providers. At startup (`creating_grace: None`) every
    /// `creating` row is a spawn that died with the previous process; in the periodic pass only
    /// rows older than the grace are (a spawn in flight is younger).
    pub(crate) async fn local(self, creating_grace: Option<std::time::Duration>) {
        // Runtimes first, records second: a spawn inserts its record before it asks the
        // provider, so every runtime listed here that some spawn wants has its record in the
        // list read after it (the other order could take a spawn finishing in between for an
        // orphan).
        let runtimes = self.list_runtimes().await;
        let records = match self.svc.store.list_sandboxes().await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "reconcile: cannot list sandboxes");
                return;
            }
        };
        // Spawns in flight on another live control plane sharing the database are not ours.
        let elsewhere = self.in_flight_elsewhere().await;
        // Local runtimes belong to the control plane that made them and records do not say which
        // one that was once running: with another control plane alive on this database, only
        // `creating` rows are ours to judge here (their creator is recorded).
        let shared = creating_grace.is_some() && self.other_control_planes_alive().await;
        let mut known = HashSet::new();
        for sb in records.iter().filter(|s| !s.placement.is_remote()) {
            let Ok(provider) = self.svc.providers.get(&sb.provider) else {
                known.insert(sb.runtime_id().to_string());
                self.mark(
                    &sb.id,
                    SandboxState::Error,
                    "provider_missing",
                    &sb.provider,
                )
                .await;
                continue;
            };
            if sb.state == SandboxState::Creating {
                let age = (chrono::Utc::now() - sb.updated_at)
                    .to_std()
                    .unwrap_or_default();
                if creating_grace.is_some_and(|g| age < g) || elsewhere.contains(&sb.id) {
                    known.insert(sb.runtime_id().to_string());
                    continue;
                }
                // The spawn never finished: remove whatever half-made runtime exists. Its id
                // stays out of `known`, so a runtime the provider finished making after the
                // listing (the daemon completes a create its dead caller sent) is an orphan of
                // the next sweep instead of being skipped as wanted.
                let _ = provider.destroy(sb.runtime_id()).await;
                self.mark(
                    &sb.id,
                    SandboxState::Destroyed,
                    "spawn_interrupted",
                    &sb.provider,
                )
                .await;
                continue;
            }
            known.insert(sb.runtime_id().to_string());
            if shared {
                continue;
            }
            match provider.status(sb.runtime_id()).await {
                Ok(SandboxState::Destroyed) | Err(ProviderError::SandboxNotFound(_)) => {
                    self.mark(
                        &sb.id,
                        SandboxState::Destroyed,
                        "runtime_missing",
                        &sb.provider,
                    )
                    .await;
                }
                // A paused record keeps its state whatever the runtime says: only resume moves
                // it (a runtime still running after a crash mid-pause is thawed by resume).
                Ok(st)
                    if st != sb.state
                        && st != SandboxState::Paused
                        && !matches!(sb.state, SandboxState::Running | SandboxState::Paused) =>
                {
                    self.mark(&sb.id, st, "runtime_state", &sb.provider).await;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(sandbox_id = %sb.id, error = %e, "reconcile: status failed");
                    self.mark(&sb.id, SandboxState::Error, "status_failed", &sb.provider)
                        .await;
                }
            }
        }
        // Runtimes labelled ours that no live record wants are orphans.
        if !shared {
            self.destroy_local_orphans(runtimes, &known).await;
        }
        // Volumes of ours that no record names (volumes are recorded before they are made).
        if let Err(e) = self.svc.volumes().remove_orphans().await {
            tracing::warn!(error = %e, "reconcile: orphan volumes");
        }
        // Snapshots: recorded after they are made, so only those older than a snapshot takes.
        let grace = self.svc.settings.snapshot_grace;
        if let Err(e) = self.svc.snapshots().remove_orphans(grace, true).await {
            tracing::warn!(error = %e, "reconcile: orphan snapshots");
        }
    }

    /// Only the orphan part of [`Self::local`]: runtimes labelled ours that no live local
    /// record wants are destroyed. Cheap (one listing per provider and one of the records), so
    /// the reconciler runs it every lease tick for a while after a start or a change of
    /// leader, when runtimes of spawns a dead control plane left half-made may still appear.
    pub(crate) async fn local_orphans(self) {
        if self.other_control_planes_alive().await {
            return;
        }
        let runtimes = self.list_runtimes().await;
        // Only the ids: this runs every lease tick, and whole records of every live sandbox
        // held that long cost megabytes (session 13, docs/benchmarks.md).
        let Ok(ids) = self.svc.store.list_local_runtime_ids().await else {
            return;
        };
        let known = ids.into_iter().collect();
        self.destroy_local_orphans(runtimes, &known).await;
        // What a snapshot the dead process was taking left (its helper, its temporary image),
        // once past the grace; only the local providers, as this runs every tick for a while.
        let grace = self.svc.settings.snapshot_grace;
        if let Err(e) = self.svc.snapshots().remove_orphans(grace, false).await {
            tracing::warn!(error = %e, "reconcile: orphan snapshots");
        }
    }

    /// Every provider's runtimes (labelled ours; providers that cannot list are left out).
    async fn list_runtimes(self) -> Vec<(Arc<dyn Provider>, Vec<RuntimeInfo>)> {
        let mut out = Vec::new();
        for p in self.svc.providers.all() {
            if let Ok(Some(runtimes)) = p.list_runtimes().await {
                out.push((p.clone(), runtimes));
            }
        }
        out
    }

    /// Destroys the listed runtimes that `known` (runtime or sandbox ids) does not want.
    async fn destroy_local_orphans(
        self,
        runtimes: Vec<(Arc<dyn Provider>, Vec<RuntimeInfo>)>,
        known: &HashSet<String>,
    ) {
        let orphans = runtimes.into_iter().flat_map(|(p, runtimes)| {
            runtimes
                .into_iter()
                .filter(|rt| {
                    !known.contains(&rt.runtime_id)
                        && !rt.sandbox_id.as_ref().is_some_and(|id| known.contains(id))
                })
                .map(move |rt| (p.clone(), rt))
        });
        // A few at a time, as the abandoned-spawn cleanup.
        futures_util::stream::iter(orphans)
            .for_each_concurrent(super::abandoned::CONCURRENCY, |(p, rt)| async move {
                // Listed before its record's destroy finished (the runtimes are listed first,
                // so that a spawn after the listing of records is never taken): already gone.
                if matches!(
                    p.status(&rt.runtime_id).await,
                    Ok(SandboxState::Destroyed) | Err(ProviderError::SandboxNotFound(_))
                ) {
                    return;
                }
                tracing::warn!(runtime_id = %rt.runtime_id, provider = p.name(), "reconcile: destroying orphaned runtime");
                match p.destroy(&rt.runtime_id).await {
                    Ok(()) | Err(ProviderError::SandboxNotFound(_)) => {}
                    Err(e) => {
                        tracing::error!(runtime_id = %rt.runtime_id, error = %e, "reconcile: orphan destroy failed")
                    }
                }
                self.svc.events.publish(
                    EventKind::ReconcileAction,
                    rt.sandbox_id.clone().map(SandboxId::from).as_ref(),
                    Some(
                        ReconcileAction::new("destroyed_orphan")
                            .provider(p.name())
                            .reason("unknown_runtime")
                            .into(),
                    ),
                );
            })
            .await;
    }

    async fn mark(self, id: &SandboxId, state: SandboxState, reason: &str, provider: &str) {
        match self.svc.store.set_sandbox_state(id, state).await {
            Ok(_) => self.svc.events.publish(
                EventKind::ReconcileAction,
                Some(id),
                Some(
                    ReconcileAction::new(format!("marked_{state}"))
                        .provider(provider)
                        .reason(reason)
                        .into(),
                ),
            ),
            Err(e) => tracing::warn!(sandbox_id = %id, error = %e, "reconcile: could not mark"),
        }
    }

    /// Whether another control plane holds a live presence lease on this database.
    async fn other_control_planes_alive(self) -> bool {
        let Ok(leases) = self.svc.store.list_leases().await else {
            // Unknown: be conservative and leave other planes' runtimes alone.
            return true;
        };
        let mine = crate::tasks::leader::presence_lease(&self.svc.instance_id);
        let now = chrono::Utc::now();
        leases.iter().any(|l| {
            l.resource_id
                .starts_with(crate::tasks::leader::PRESENCE_PREFIX)
                && l.resource_id != mine
                && l.expires_at > now
        })
    }
}
