//! Reconciliation: the records against what really runs. The background loops (`tasks/`) and
//! startup call these passes; every change is published as a `reconcile.action` event.
//!
//! - `local.rs`: local sandboxes against their providers (startup, and every minute).
//! - `remote.rs`: remote sandboxes against their workers, lease renewal, orphaned runtimes.
//! - `abandoned.rs`: spawns half-made by a control plane that died.

mod abandoned;
mod local;
mod remote;

use super::Service;

/// The reconciliation passes; see the module documentation.
#[derive(Clone, Copy)]
pub(crate) struct Reconciler<'a> {
    svc: &'a Service,
}

impl Service {
    pub(crate) fn reconciler(&self) -> Reconciler<'_> {
        Reconciler { svc: self }
    }
}
