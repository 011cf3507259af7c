//! Lifecycle policies (sandbox-model.md §2, docs/state.md): `on_expire` at the TTL, the idle
//! timeout, and the retention of paused sandboxes. The reaper loop runs them every
//! `server.reconcile_interval` on the leading control plane, so each acts within one interval
//! of its deadline; activity stamps are written by every control plane.

use std::time::Duration;

use futures_util::StreamExt;
use stacyvm_types::{OnExpire, ProcessState, Sandbox, SandboxId, SandboxState, Timestamp};

use super::{PauseCause, Sandboxes};
use crate::error::ServiceResult;

/// How long the idle check waits for a sandbox's process list.
const LIST_DEADLINE: Duration = Duration::from_secs(5);

/// What one lifecycle pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LifecycleReport {
    /// Idle sandboxes paused.
    pub paused: usize,
    /// Idle sandboxes destroyed, and paused ones past their retention.
    pub destroyed: usize,
}

impl Sandboxes<'_> {
    /// Ends one sandbox past its TTL as its `on_expire` says; true when it is done. A provider
    /// that cannot pause gets the destroy it would have had without the policy (a sandbox
    /// never outlives its TTL running).
    pub(super) async fn expire(self, id: &SandboxId, on_expire: OnExpire) -> bool {
        if on_expire == OnExpire::Pause {
            match self.pause_for(id, PauseCause::Expired).await {
                Ok(_) => return true,
                Err(crate::error::ServiceError::NotSupported(m)) => {
                    tracing::warn!(sandbox_id = %id, reason = %m, "on_expire pause: cannot pause, destroying");
                }
                Err(e) => {
                    tracing::warn!(sandbox_id = %id, error = %e, "on_expire pause failed");
                    return false;
                }
            }
        }
        let r = self.destroy(id).await;
        if let Err(e) = &r {
            tracing::warn!(sandbox_id = %id, error = %e, "prune: destroy failed");
        }
        r.is_ok()
    }

    /// Writes the activity stamps this control plane holds to the store (at most one write per
    /// sandbox a minute). Runs on every control plane, leader or not.
    pub async fn flush_activity(self) {
        for (id, at) in self.svc.activity.due(chrono::Utc::now()) {
            if let Err(e) = self.svc.store.touch_sandbox(&id, at).await {
                tracing::debug!(sandbox_id = %id, error = %e, "activity flush failed");
            }
        }
    }

    /// The latest activity known for `sb`: this control plane's, the stored stamp, or its last
    /// state change (spawn, resume).
    fn last_active(self, sb: &Sandbox) -> Timestamp {
        [self.svc.activity.last(&sb.id), sb.last_active_at]
            .into_iter()
            .flatten()
            .fold(sb.updated_at.max(sb.created_at), Timestamp::max)
    }

    /// Whether a process still runs in `sb` (a running process is activity). An answer that
    /// does not come counts as none: the backend has no processes or cannot say.
    async fn runs_a_process(self, sb: &Sandbox) -> bool {
        let Ok(p) = self.svc.provider_for(sb).await else {
            return false;
        };
        matches!(
            tokio::time::timeout(LIST_DEADLINE, p.process_list(sb.runtime_id())).await,
            Ok(Ok(list)) if list.iter().any(|p| p.state == ProcessState::Running)
        )
    }

    /// One pass: running sandboxes idle past their `idle_timeout` are paused or destroyed
    /// (per `on_expire`), paused ones past `lifecycle.paused_retention` are destroyed.
    pub async fn lifecycle(self) -> ServiceResult<LifecycleReport> {
        let now = chrono::Utc::now();
        let retention = self
            .svc
            .settings
            .paused_retention
            .and_then(|d| chrono::Duration::from_std(d).ok());
        let mut idle = Vec::new();
        let mut retired = Vec::new();
        for sb in self.svc.store.list_sandboxes().await? {
            match sb.state {
                SandboxState::Paused => {
                    if let (Some(keep), Some(at)) = (retention, sb.paused_at) {
                        if now - at >= keep {
                            retired.push(sb.id);
                        }
                    }
                }
                SandboxState::Running => {
                    let Some(limit) = sb.lifecycle.idle_timeout else {
                        continue;
                    };
                    if now - self.last_active(&sb) >= limit.to_chrono() {
                        idle.push(sb);
                    }
                }
                _ => {}
            }
        }
        let idle = futures_util::stream::iter(idle)
            .map(|sb| async move {
                if self.runs_a_process(&sb).await {
                    self.svc.activity.touch(&sb.id);
                    return (false, false);
                }
                match sb.lifecycle.on_expire {
                    OnExpire::Pause => match self.pause_for(&sb.id, PauseCause::Idle).await {
                        Ok(_) => (true, false),
                        Err(e) => {
                            tracing::warn!(sandbox_id = %sb.id, error = %e, "idle pause failed");
                            (false, false)
                        }
                    },
                    OnExpire::Destroy => (false, self.expire(&sb.id, OnExpire::Destroy).await),
                }
            })
            .buffer_unordered(8)
            .collect::<Vec<(bool, bool)>>()
            .await;
        let retired = futures_util::stream::iter(retired)
            .map(|id| async move {
                let r = self.destroy(&id).await;
                if let Err(e) = &r {
                    tracing::warn!(sandbox_id = %id, error = %e, "paused retention: destroy failed");
                }
                r.is_ok()
            })
            .buffer_unordered(8)
            .collect::<Vec<bool>>()
            .await;
        Ok(LifecycleReport {
            paused: idle.iter().filter(|r| r.0).count(),
            destroyed: idle.iter().filter(|r| r.1).count() + retired.iter().filter(|d| **d).count(),
        })
    }
}
