//! Startup reconciliation of local sandboxes against their providers: records left `creating`
//! by a crash are cleaned up, runtimes that vanished are marked, and labelled runtimes the store
//! does not want are destroyed.

use std::collections::HashSet;

use serde_json::json;
use stacyvm_provider::ProviderError;
use stacyvm_types::SandboxState;

use crate::service::Service;

pub async fn startup(svc: &Service) {
    let records = match svc.store.list_sandboxes().await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "reconcile: cannot list sandboxes");
            return;
        }
    };
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
    for p in svc.providers.all() {
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
                Some(json!({"action": "destroyed_orphan", "provider": p.name(), "reason": "unknown_runtime"})),
            );
        }
    }
}

async fn mark(svc: &Service, id: &str, state: SandboxState, reason: &str, provider: &str) {
    match svc.store.set_sandbox_state(id, state).await {
        Ok(_) => svc.events.publish(
            "reconcile.action",
            Some(id),
            Some(json!({"action": format!("marked_{state}"), "provider": provider, "reason": reason})),
        ),
        Err(e) => tracing::warn!(sandbox_id = %id, error = %e, "reconcile: could not mark"),
    }
}
