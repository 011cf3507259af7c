//! Leases that fence remote ownership of sandboxes (docs/architecture.md#leases).

use std::time::Duration;

use stacyvm_store::{Lease, StoreError};
use stacyvm_types::{parse_go_duration, SandboxId, WorkerId};

use super::Workers;
use crate::error::{ServiceError, ServiceResult};

/// Leases outlive the sandbox's TTL by this much, so a destroy at expiry still holds one.
const LEASE_SLACK: Duration = Duration::from_secs(300);

/// Lease lifetime for a sandbox with `remaining` TTL: remaining + 5 min.
pub(crate) fn lease_ttl(remaining: Duration) -> Duration {
    remaining + LEASE_SLACK
}

impl Workers<'_> {
    /// Extends `worker`'s lease on `resource` by `ttl` (Go duration text, positive). A lease
    /// the worker does not hold, or one that has expired, is a `Conflict`.
    pub async fn renew_lease(
        self,
        worker: &WorkerId,
        resource: &SandboxId,
        ttl: &str,
    ) -> ServiceResult<Lease> {
        let ttl = parse_go_duration(ttl.trim())
            .ok()
            .and_then(|d| d.to_std())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| ServiceError::bad_request("ttl must be a positive duration"))?;
        self.svc
            .store
            .renew_lease(resource, worker, ttl)
            .await
            .map_err(|e| match e {
                StoreError::Conflict(_) | StoreError::NotFound { .. } => {
                    ServiceError::Conflict("lease is not held by worker or has expired".into())
                }
                e => e.into(),
            })
    }
}
