//! Sandboxes: spawn (`spawn.rs`), get, list (one page: `page.rs`), destroy, prune, extend, logs, stats.

mod lifecycle;
mod page;
mod pause;
mod spawn;

use std::time::Instant;

use futures_util::StreamExt;
pub use lifecycle::LifecycleReport;
pub use page::{PageCursor, MAX_PAGE};
pub(crate) use pause::PauseCause;
use spawn::parse_ttl;
pub use spawn::SpawnParams;
use stacyvm_types::{EventKind, GoDuration, Sandbox, SandboxId, SandboxState};

use super::Service;
use crate::error::{ServiceError, ServiceResult};
use crate::events::EventData;

/// The sandboxes of this control plane's database.
#[derive(Clone, Copy)]
pub struct Sandboxes<'a> {
    svc: &'a Service,
}

/// What a destroy did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DestroyOutcome {
    /// The runtime is gone and the record is `destroyed`.
    Destroyed,
    /// The owning worker is unreachable: the record is `destroying` and reconciliation
    /// finishes when the worker returns (202).
    Deferred,
}

impl Service {
    pub fn sandboxes(&self) -> Sandboxes<'_> {
        Sandboxes { svc: self }
    }
}

impl Sandboxes<'_> {
    /// A live sandbox record, or `SandboxNotFound` (destroyed ones count as not found).
    pub async fn get(self, id: &SandboxId) -> ServiceResult<Sandbox> {
        match self.svc.store.get_sandbox(id).await {
            Ok(sb) if sb.state == SandboxState::Destroyed => {
                Err(ServiceError::SandboxNotFound(id.into()))
            }
            Ok(sb) => Ok(sb),
            Err(e) if e.is_not_found() => Err(ServiceError::SandboxNotFound(id.into())),
            Err(e) => Err(e.into()),
        }
    }

    /// `GET /sandboxes/{id}`: a remote sandbox's state is refreshed from its worker first
    /// (`worker.status`); if the worker cannot answer, the stored record is returned.
    pub async fn get_refreshed(self, id: &SandboxId) -> ServiceResult<Sandbox> {
        let sb = self.get(id).await?;
        // Only pause and resume move a paused record (docs/state.md, crash safety).
        if !sb.placement.is_remote()
            || matches!(sb.state, SandboxState::Creating | SandboxState::Paused)
        {
            return Ok(sb);
        }
        let Ok(p) = self.svc.provider_for(&sb).await else {
            return Ok(sb);
        };
        match p.status(sb.runtime_id()).await {
            // `paused` is only ever set by pause (with its `paused_at`), never adopted.
            Ok(st)
                if st != sb.state
                    && st != SandboxState::Paused
                    && sb.state.valid_transition(st).is_ok() =>
            {
                match self.svc.store.set_sandbox_state(id, st).await {
                    Ok(updated) => Ok(updated),
                    Err(_) => Ok(sb),
                }
            }
            _ => Ok(sb),
        }
    }

    pub async fn list(self) -> ServiceResult<Vec<Sandbox>> {
        let mut v = self.svc.store.list_sandboxes().await?;
        v.retain(|s| s.state != SandboxState::Creating);
        Ok(v)
    }

    /// Destroys a sandbox. Unknown ids are `SandboxNotFound`; an already destroyed sandbox
    /// succeeds again (idempotent).
    pub async fn destroy(self, id: &SandboxId) -> ServiceResult<DestroyOutcome> {
        let sb = match self.svc.store.get_sandbox(id).await {
            Ok(sb) => sb,
            Err(e) if e.is_not_found() => return Err(ServiceError::SandboxNotFound(id.into())),
            Err(e) => return Err(e.into()),
        };
        if sb.state == SandboxState::Destroyed {
            return Ok(DestroyOutcome::Destroyed);
        }
        let started = Instant::now();
        let remote = sb.placement.is_remote();
        // An owner known to be silent is not called (the RPC would wait out its timeout).
        if let Some(owner) = sb.placement.remote() {
            if let Ok(w) = self.svc.store.get_worker(owner).await {
                if self.svc.is_stale(&w) {
                    return self.defer_destroy(&sb).await;
                }
            }
        }
        let provider = match self.svc.provider_for(&sb).await {
            Ok(p) => p,
            // The owner is not registered any more: finish when it registers again.
            Err(ServiceError::Unavailable(_)) if remote => return self.defer_destroy(&sb).await,
            Err(e) => return Err(e),
        };
        match provider.destroy(sb.runtime_id()).await {
            Ok(()) | Err(stacyvm_provider::ProviderError::SandboxNotFound(_)) => {}
            Err(stacyvm_provider::ProviderError::Unavailable(_)) if remote => {
                return self.defer_destroy(&sb).await;
            }
            Err(e) => {
                let err = ServiceError::from(e);
                self.svc.ops.observe(
                    "destroy",
                    &sb.provider,
                    started.elapsed(),
                    Some(&err.to_string()),
                );
                self.svc.events.publish(
                    EventKind::OperationFailed,
                    Some(id),
                    Some(EventData::failure("destroy", &sb.provider, err.to_string())),
                );
                return Err(err);
            }
        }
        self.svc
            .store
            .set_sandbox_state(id, SandboxState::Destroyed)
            .await?;
        self.svc
            .ops
            .observe("destroy", &sb.provider, started.elapsed(), None);
        self.svc
            .events
            .publish(EventKind::SandboxDestroyed, Some(id), None);
        self.svc.activity.forget(id);
        self.svc.admission().wake();
        Ok(DestroyOutcome::Destroyed)
    }

    /// The owning worker cannot be reached: the record turns `destroying` (no longer counted
    /// against limits), the lease is released so no control plane keeps the runtime alive, and
    /// reconciliation destroys the runtime when the worker answers again.
    async fn defer_destroy(self, sb: &Sandbox) -> ServiceResult<DestroyOutcome> {
        if sb.state != SandboxState::Destroying {
            self.svc
                .store
                .set_sandbox_state(&sb.id, SandboxState::Destroying)
                .await?;
            if let Some(owner) = sb.placement.remote() {
                let _ = self.svc.store.release_lease(&sb.id, owner.as_str()).await;
            }
            tracing::warn!(sandbox_id = %sb.id, "owner unreachable: destroy deferred until it returns");
            self.svc.events.publish(
                EventKind::ReconcileAction,
                Some(&sb.id),
                Some(
                    crate::events::ReconcileAction::new("marked_destroying")
                        .reason("worker_unreachable")
                        .into(),
                ),
            );
            self.svc.activity.forget(&sb.id);
            self.svc.admission().wake();
        }
        Ok(DestroyOutcome::Deferred)
    }

    /// Ends every live sandbox past its expiry (destroys it, or pauses it with `on_expire:
    /// pause`); returns how many. Remote sandboxes whose worker is stale or gone are left to
    /// reconciliation (they turn `expired` and are destroyed when the worker returns), so one
    /// dead worker cannot stall the reaper.
    pub async fn prune(self) -> ServiceResult<usize> {
        let expired = self
            .svc
            .store
            .list_expired_sandboxes(chrono::Utc::now())
            .await?;
        let mut todo = Vec::with_capacity(expired.len());
        for sb in expired {
            if let Some(worker) = sb.placement.remote() {
                match self.svc.store.get_worker(worker).await {
                    Ok(w) if !self.svc.is_stale(&w) => {}
                    _ => continue,
                }
            }
            todo.push((sb.id, sb.lifecycle.on_expire));
        }
        // A few at a time: bounded work, and one slow runtime does not hold up the rest.
        let results = futures_util::stream::iter(todo)
            .map(|(id, on_expire)| async move { self.expire(&id, on_expire).await })
            .buffer_unordered(8)
            .collect::<Vec<bool>>()
            .await;
        Ok(results.into_iter().filter(|ok| *ok).count())
    }

    /// Sets `expires_at = now + ttl`, within the owner's max TTL.
    pub async fn extend(self, id: &SandboxId, ttl: &str) -> ServiceResult<Sandbox> {
        if ttl.trim().is_empty() {
            return Err(ServiceError::bad_request("ttl is required"));
        }
        let d = parse_ttl(ttl, GoDuration::ZERO)?;
        if d.nanos() <= 0 {
            return Err(ServiceError::bad_request("ttl must be positive"));
        }
        let sb = self.get(id).await?;
        let limits = self.svc.quotas().limits_for(&sb.owner_id).await?;
        if !limits.max_ttl.is_zero() && d > limits.max_ttl {
            return Err(ServiceError::ResourceLimit(format!(
                "ttl exceeds max ttl {}",
                limits.max_ttl
            )));
        }
        let expires = chrono::Utc::now() + d.to_chrono();
        match self.svc.store.set_sandbox_expiry(id, expires).await {
            Ok(s) => Ok(s),
            Err(e) if e.is_not_found() => Err(ServiceError::SandboxNotFound(id.into())),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn logs(self, id: &SandboxId, lines: usize) -> ServiceResult<Vec<String>> {
        let sb = self.get(id).await?;
        let p = self.svc.provider_for(&sb).await?;
        Ok(p.logs(sb.runtime_id(), lines).await?)
    }

    pub async fn stats(self, id: &SandboxId) -> ServiceResult<Option<stacyvm_provider::Stats>> {
        let sb = self.get(id).await?;
        if sb.placement.is_remote() {
            return Ok(None);
        }
        let p = self.svc.provider_for(&sb).await?;
        Ok(p.stats(sb.runtime_id()).await?)
    }
}
