//! Pause and resume (sandbox-model.md §2, docs/state.md).
//!
//! Crash safety comes from the order of the two writes. Pause records `paused` first, then
//! freezes the runtime: a crash between leaves a paused record over a running runtime, which
//! costs resources but loses nothing, and resume (idempotent on every provider) puts both
//! back in step. Resume thaws first, then records `running`: a crash between leaves a paused
//! record over a thawed runtime, which the next resume fixes the same way. A record never says
//! `running` while its runtime is frozen, so a request is never sent into a frozen sandbox.

use std::time::Duration;

use stacyvm_provider::ProviderError;
use stacyvm_types::{EventKind, GoDuration, Sandbox, SandboxId, SandboxState};

use super::{parse_ttl, Sandboxes};
use crate::error::{ServiceError, ServiceResult};
use crate::events::{EventData, ReconcileAction};

/// How long pause waits for the process list it keeps for the paused sandbox.
const LIST_DEADLINE: Duration = Duration::from_secs(5);

/// Why a lifecycle pause happened, for its event.
#[derive(Debug, Clone, Copy)]
pub(crate) enum PauseCause {
    Request,
    Expired,
    Idle,
}

impl PauseCause {
    fn as_str(self) -> &'static str {
        match self {
            PauseCause::Request => "request",
            PauseCause::Expired => "ttl",
            PauseCause::Idle => "idle_timeout",
        }
    }
}

impl Sandboxes<'_> {
    /// A live sandbox that is not paused: what exec, files and process calls act on.
    pub(crate) async fn get_unpaused(self, id: &SandboxId) -> ServiceResult<Sandbox> {
        let sb = self.get(id).await?;
        if sb.state == SandboxState::Paused {
            return Err(ServiceError::SandboxPaused(format!(
                "sandbox {id} is paused; resume it first (POST /sandboxes/{id}/resume)"
            )));
        }
        Ok(sb)
    }

    /// `POST /sandboxes/{id}/pause`: freezes a running sandbox; a paused one is answered as it
    /// is. Other states are `Conflict`; a backend without a freezer `NotSupported`.
    pub async fn pause(self, id: &SandboxId) -> ServiceResult<Sandbox> {
        self.pause_for(id, PauseCause::Request).await
    }

    pub(crate) async fn pause_for(
        self,
        id: &SandboxId,
        cause: PauseCause,
    ) -> ServiceResult<Sandbox> {
        let sb = self.get(id).await?;
        if already(&sb, SandboxState::Paused, SandboxState::Running, "paused")? {
            return Ok(sb);
        }
        let max = self.svc.settings.limits.max_paused_sandboxes;
        if max > 0 && self.svc.store.count_paused_sandboxes().await? >= max {
            return Err(ServiceError::ResourceLimit(format!(
                "max paused sandboxes reached ({max})"
            )));
        }
        let provider = self.svc.provider_for(&sb).await?;
        // Kept for `GET …/processes` while frozen; a backend without processes has none.
        let procs = tokio::time::timeout(LIST_DEADLINE, provider.process_list(sb.runtime_id()))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        self.svc.activity.keep_processes(id, procs);
        let paused = self.svc.store.pause_sandbox(id, chrono::Utc::now()).await?;
        if let Err(e) = provider.pause(sb.runtime_id()).await {
            if matches!(e, ProviderError::Unavailable(_) | ProviderError::Timeout) {
                // No answer: the freeze may have happened (a worker that froze the sandbox and
                // died before it replied). The record stays `paused`, never `running` over a
                // frozen runtime; resume, which is idempotent, thaws it either way.
                tracing::warn!(sandbox_id = %id, error = %e, "pause got no answer; the record stays paused until a resume");
            } else {
                // Put the record back as it was; the runtime was not frozen.
                self.svc.activity.drop_processes(id);
                if let Err(se) = self.svc.store.resume_sandbox(id, sb.expires_at).await {
                    tracing::warn!(sandbox_id = %id, error = %se, "could not undo a failed pause");
                }
            }
            let err = ServiceError::from(e);
            self.svc.events.publish(
                EventKind::OperationFailed,
                Some(id),
                Some(EventData::failure("pause", &sb.provider, err.to_string())),
            );
            return Err(err);
        }
        self.svc.events.publish(
            EventKind::SandboxPaused,
            Some(id),
            Some(EventData::Reconcile(
                ReconcileAction::new("pause").reason(cause.as_str()),
            )),
        );
        // A running slot is free again.
        self.svc.admission().wake();
        Ok(paused)
    }

    /// `POST /sandboxes/{id}/resume`: thaws a paused sandbox with a new TTL (`ttl`, or the
    /// TTL it had left when paused, or the default when none was left). A running sandbox is
    /// answered as it is. Resuming needs a running slot under `max_sandboxes` and the owner's
    /// limit (429 otherwise).
    pub async fn resume(self, id: &SandboxId, ttl: &str) -> ServiceResult<Sandbox> {
        let asked = if ttl.trim().is_empty() {
            None
        } else {
            let d = parse_ttl(ttl, GoDuration::ZERO)?;
            if d.nanos() <= 0 {
                return Err(ServiceError::bad_request("ttl must be positive"));
            }
            Some(d)
        };
        let sb = self.get(id).await?;
        if already(&sb, SandboxState::Running, SandboxState::Paused, "resumed")? {
            return Ok(sb);
        }
        let limits = self.svc.quotas().limits_for(&sb.owner_id).await?;
        if let Some(d) = asked {
            if !limits.max_ttl.is_zero() && d > limits.max_ttl {
                return Err(ServiceError::ResourceLimit(format!(
                    "ttl exceeds max ttl {}",
                    limits.max_ttl
                )));
            }
        }
        self.check_running_slot(&sb, limits.max_sandboxes).await?;
        let provider = self.svc.provider_for(&sb).await?;
        provider.resume(sb.runtime_id()).await?;
        let now = chrono::Utc::now();
        let left = sb.paused_at.map(|p| sb.expires_at - p);
        let ttl = match (asked, left) {
            (Some(d), _) => d.to_chrono(),
            (None, Some(left)) if left > chrono::Duration::zero() => left,
            _ => self.svc.settings.limits.default_ttl.to_chrono(),
        };
        let resumed = self.svc.store.resume_sandbox(id, now + ttl).await?;
        self.svc.activity.drop_processes(id);
        self.svc.activity.touch(id);
        self.svc
            .events
            .publish(EventKind::SandboxResumed, Some(id), None);
        Ok(resumed)
    }

    /// Resume counts against the running limits again. Checked against the store's counts
    /// (not admission's reservation): a resume racing a spawn for the last slot may let both
    /// in, by one; docs/state.md.
    async fn check_running_slot(self, sb: &Sandbox, owner_max: i64) -> ServiceResult<()> {
        let max = self.svc.settings.limits.max_sandboxes;
        if max <= 0 && owner_max <= 0 {
            return Ok(());
        }
        let owner = Some(sb.owner_id.as_str()).filter(|o| !o.is_empty());
        let counts = self.svc.store.count_active_sandboxes(owner).await?;
        if max > 0 && counts.total >= max {
            return Err(ServiceError::ResourceLimit(format!(
                "max sandboxes reached ({max})"
            )));
        }
        if owner.is_some() && owner_max > 0 && counts.owner >= owner_max {
            return Err(ServiceError::ResourceLimit(format!(
                "max sandboxes per owner reached ({owner_max})"
            )));
        }
        Ok(())
    }
}

/// Whether `sb` is `done` already (pause and resume answer it as it is); `false` when it is
/// `from` and the call goes on; a conflict in any other state.
fn already(
    sb: &Sandbox,
    done: SandboxState,
    from: SandboxState,
    verb: &str,
) -> ServiceResult<bool> {
    match sb.state {
        s if s == done => Ok(true),
        s if s == from => Ok(false),
        other => Err(ServiceError::Conflict(format!(
            "sandbox {} is {other}; only a {from} sandbox can be {verb}",
            sb.id
        ))),
    }
}
