//! Startup reconciliation of local sandboxes against their providers: records left `creating`
//! by a crash are cleaned up, runtimes that vanished are marked, and labelled runtimes the store
//! does not want are destroyed.

use std::collections::HashSet;

use stacyvm_provider::ProviderError;
use stacyvm_types::SandboxState;

use crate::events::ReconcileAction;
use crate::service::Service;

pub async fn startup(svc: &Service) {
    local_pass(svc, None).await;
}

/// Reconciles local sandboxes with their providers. At startup (`creating_grace: None`) every
/// `creating` row is a spawn that died with the previous process; in the periodic pass only
/// rows older than the grace are (a spawn in flight is younger).
pub async fn local_pass(svc: &Service, creating_grace: Option<std::time::Duration>) {
    let records = match svc.store.list_sandboxes().await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "reconcile: cannot list sandboxes");
            return;
        }
    };
    // Spawns in flight on another live control plane sharing the database are not ours.
    let elsewhere = crate::creating::in_flight_elsewhere(svc).await;
    // Local runtimes belong to the control plane that made them and records do not say which
    // one that was once running: with another control plane alive on this database, only
    // `creating` rows are ours to judge here (their creator is recorded).
    let shared = creating_grace.is_some() && other_control_planes_alive(svc).await;
    let mut known = HashSet::new();
    for sb in records.iter().filter(|s| !s.is_remote()) {
        known.insert(sb.runtime_id().to_string());
        let Ok(provider) = svc.providers.get(&sb.provider) else {
            mark(
                svc,
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
            mark(
                svc,
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
                mark(
                    svc,
                    &sb.id,
                    SandboxState::Destroyed,
                    "runtime_missing",
                    &sb.provider,
                )
                .await;
            }
            Ok(st) if st != sb.state && sb.state != SandboxState::Running => {
                mark(svc, &sb.id, st, "runtime_state", &sb.provider).await;
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(sandbox_id = %sb.id, error = %e, "reconcile: status failed");
                mark(
                    svc,
                    &sb.id,
                    SandboxState::Error,
                    "status_failed",
                    &sb.provider,
                )
                .await;
            }
        }
    }
    // Runtimes labelled ours that no live record wants are orphans.
    for p in svc.providers.all().filter(|_| !shared) {
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
            svc.events.publish(
                "reconcile.action",
                rt.sandbox_id.as_deref(),
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

async fn mark(svc: &Service, id: &str, state: SandboxState, reason: &str, provider: &str) {
    match svc.store.set_sandbox_state(id, state).await {
        Ok(_) => svc.events.publish(
            "reconcile.action",
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

/// Longest one sandbox's RPCs may take within a pass, so one frozen worker cannot stall it.
const RPC_BUDGET: std::time::Duration = std::time::Duration::from_secs(10);

/// One pass over remote-owned sandboxes: owners silent past their stale window turn the
/// sandbox `unhealthy` (or `expired`, releasing the lease, once past `expires_at`); a returning
/// owner is asked for the real state; leases close to expiry are renewed.
pub async fn remote_pass(svc: &Service) {
    let Ok(records) = svc.store.list_sandboxes().await else {
        return;
    };
    let now = chrono::Utc::now();
    for sb in records.into_iter().filter(|s| s.is_remote()) {
        let worker = svc.store.get_worker(&sb.worker_id).await.ok();
        let reason = match &worker {
            None => Some("worker_missing".to_string()),
            Some(w) if svc.is_stale(w) => Some("worker_stale".to_string()),
            Some(w)
                if w.status.eq_ignore_ascii_case("online")
                    || w.status.eq_ignore_ascii_case("draining") =>
            {
                None
            }
            Some(w) => Some(format!("worker_{}", w.status.to_lowercase())),
        };
        match reason {
            Some(reason) => {
                if sb.expires_at <= now && sb.state != SandboxState::Expired {
                    if svc
                        .store
                        .set_sandbox_state(&sb.id, SandboxState::Expired)
                        .await
                        .is_ok()
                    {
                        let _ = svc.store.release_lease(&sb.id, &sb.worker_id).await;
                        svc.events.publish(
                            "reconcile.action",
                            Some(&sb.id),
                            Some(
                                ReconcileAction::new("marked_expired")
                                    .reason(reason)
                                    .worker(&sb.worker_id)
                                    .into(),
                            ),
                        );
                        svc.notify_capacity();
                    }
                } else if matches!(sb.state, SandboxState::Running | SandboxState::Error)
                    && svc
                        .store
                        .set_sandbox_state(&sb.id, SandboxState::Unhealthy)
                        .await
                        .is_ok()
                {
                    tracing::warn!(sandbox_id = %sb.id, worker = %sb.worker_id, %reason, "owner unreachable: sandbox unhealthy");
                    svc.events.publish(
                        "reconcile.action",
                        Some(&sb.id),
                        Some(
                            ReconcileAction::new("marked_unhealthy")
                                .reason(reason)
                                .worker(&sb.worker_id)
                                .into(),
                        ),
                    );
                }
            }
            None => {
                if sb.state == SandboxState::Expired {
                    // It expired while the owner was away and the owner answers again: finish the
                    // destroy. (Live sandboxes past their TTL are the reaper's.)
                    let r = tokio::time::timeout(RPC_BUDGET, svc.destroy(&sb.id)).await;
                    if let Ok(Err(e)) = r {
                        tracing::warn!(sandbox_id = %sb.id, error = %e, "reconcile: destroy of expired sandbox failed");
                    }
                    continue;
                }
                if matches!(sb.state, SandboxState::Unhealthy | SandboxState::Error) {
                    if let Ok(p) = svc.provider_for(&sb).await {
                        let status = tokio::time::timeout(RPC_BUDGET, p.status(sb.runtime_id()))
                            .await
                            .unwrap_or(Err(ProviderError::Unavailable("status timed out".into())));
                        match status {
                            Ok(st) if st != sb.state => {
                                let marked = svc.store.set_sandbox_state(&sb.id, st).await.is_ok();
                                if marked {
                                    svc.events.publish(
                                        "reconcile.action",
                                        Some(&sb.id),
                                        Some(
                                            ReconcileAction::new(format!("marked_{st}"))
                                                .reason("worker_returned")
                                                .worker(&sb.worker_id)
                                                .into(),
                                        ),
                                    );
                                }
                            }
                            Err(ProviderError::SandboxNotFound(_)) => {
                                let _ = svc
                                    .store
                                    .set_sandbox_state(&sb.id, SandboxState::Error)
                                    .await;
                            }
                            _ => {}
                        }
                    }
                }
                renew_if_due(svc, &sb).await;
            }
        }
    }
}

async fn renew_if_due(svc: &Service, sb: &stacyvm_types::Sandbox) {
    let Ok(lease) = svc.store.get_lease(&sb.id).await else {
        return;
    };
    if lease.holder_id != sb.worker_id {
        return;
    }
    let now = chrono::Utc::now();
    let left = (lease.expires_at - now).to_std().unwrap_or_default();
    let wanted = crate::service::lease_ttl((sb.expires_at - now).to_std().unwrap_or_default());
    // Renew when the lease would run out before the sandbox does (plus slack).
    if left + svc.settings().reaper_interval * 2 < wanted {
        if let Err(e) = svc.store.renew_lease(&sb.id, &sb.worker_id, wanted).await {
            tracing::warn!(sandbox_id = %sb.id, error = %e, "lease renewal failed");
        }
    }
}

/// Destroys runtimes a worker reports holding that the store does not assign to it.
pub async fn destroy_orphans(svc: &Service, worker_id: &str, held: Vec<String>) {
    for id in held {
        let record = svc.store.get_sandbox(&id).await.ok();
        let wanted = record.as_ref().is_some_and(|r| {
            r.worker_id == worker_id
                && !matches!(r.state, SandboxState::Destroyed | SandboxState::Expired)
        });
        if wanted {
            continue;
        }
        let provider = match &record {
            Some(r) => r.provider.clone(),
            None => svc
                .store
                .get_worker(worker_id)
                .await
                .ok()
                .and_then(|w| w.providers.and_then(|p| p.into_iter().next()))
                .unwrap_or_else(|| "mock".into()),
        };
        let expires = chrono::Utc::now() + chrono::Duration::minutes(5);
        let rp = match svc
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
            .map_or(id.clone(), |r| r.runtime_id().to_string());
        match rp.destroy(&runtime).await {
            Ok(()) => {
                tracing::info!(sandbox_id = %id, worker = worker_id, "destroyed orphaned runtime on worker");
                if let Some(r) = record {
                    if r.state != SandboxState::Destroyed && r.worker_id == worker_id {
                        let _ = svc
                            .store
                            .set_sandbox_state(&id, SandboxState::Destroyed)
                            .await;
                    }
                }
                svc.events.publish(
                    "reconcile.action",
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

/// Whether another control plane holds a live presence lease on this database.
async fn other_control_planes_alive(svc: &Service) -> bool {
    let Ok(leases) = svc.store.list_leases().await else {
        // Unknown: be conservative and leave other planes' runtimes alone.
        return true;
    };
    let mine = crate::tasks::leader::presence_lease(&svc.instance_id);
    let now = chrono::Utc::now();
    leases.iter().any(|l| {
        l.resource_id
            .starts_with(crate::tasks::leader::PRESENCE_PREFIX)
            && l.resource_id != mine
            && l.expires_at > now
    })
}
