//! Local sandboxes against their providers, at startup and periodically: records left
//! `creating` by a crash are cleaned up, runtimes that vanished are marked, and labelled
//! runtimes the store does not want are destroyed.

use std::collections::HashSet;

use stacyvm_provider::ProviderError;
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
            known.insert(sb.runtime_id().to_string());
            let Ok(provider) = self.svc.providers.get(&sb.provider) else {
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
                    continue;
                }
                // The spawn never finished: remove whatever half-made runtime exists.
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
                Ok(st) if st != sb.state && sb.state != SandboxState::Running => {
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
        for p in self.svc.providers.all().filter(|_| !shared) {
            let Ok(Some(runtimes)) = p.list_runtimes().await else {
                continue;
            };
            for rt in runtimes {
                if known.contains(&rt.runtime_id)
                    || rt.sandbox_id.as_ref().is_some_and(|id| known.contains(id))
                {
                    continue;
                }
                tracing::warn!(runtime_id = %rt.runtime_id, provider = p.name(), "reconcile: destroying orphaned runtime");
                if let Err(e) = p.destroy(&rt.runtime_id).await {
                    tracing::error!(runtime_id = %rt.runtime_id, error = %e, "reconcile: orphan destroy failed");
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
            }
        }
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
