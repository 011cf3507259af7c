//! Lease fencing (DECISIONS.md "Leases") and the record of which sandboxes this worker holds.
//!
//! The control plane bumps a lease's generation on every acquire and renew. A worker remembers
//! the highest generation it has seen per sandbox and refuses any lease older than that, so a
//! delayed request from before a hand-over (or from a control plane acting on stale state) can
//! never spawn or destroy over a newer owner's decision. Equal generations pass: the control
//! plane sends the same lease for a spawn and a later destroy.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};

use chrono::Utc;
use stacyvm_protocol::LeaseToken;
use stacyvm_types::parse_rfc3339;

/// Why a lease was refused (all map to 403 `LEASE_REJECTED`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum LeaseError {
    #[error("lease holder {holder:?} is not this worker")]
    WrongHolder { holder: String },
    #[error("lease resource_id is empty")]
    BlankResource,
    #[error("lease is for {lease:?}, not {target:?}")]
    ResourceMismatch { lease: String, target: String },
    #[error("lease expires_at {0:?} is not an RFC 3339 time")]
    BadExpiry(String),
    #[error("lease expired at {0}")]
    Expired(String),
    #[error("stale lease generation {generation}: generation {newest} was already seen")]
    Stale { generation: i64, newest: i64 },
}

/// A sandbox this worker runs, for the heartbeat's `sandboxes` list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Held {
    pub provider: String,
    pub runtime_id: String,
}

#[derive(Default)]
struct Book {
    /// Sandbox id → highest lease generation seen. Kept after destroy so an old lease stays
    /// refused; one small entry per sandbox this process has seen.
    newest: HashMap<String, i64>,
    held: BTreeMap<String, Held>,
}

#[derive(Default)]
pub(crate) struct Leases {
    book: Mutex<Book>,
}

impl Leases {
    fn lock(&self) -> MutexGuard<'_, Book> {
        // A poisoned lock only means a panicking thread held it; the maps stay consistent
        // because every update is a single insert/remove.
        self.book.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Checks `lease` for an operation on `target` by worker `own_id` and, when it passes,
    /// records its generation. Check and record happen under one lock, so two racing
    /// requests cannot both pass with different generations out of order.
    pub(crate) fn admit(
        &self,
        own_id: &str,
        lease: &LeaseToken,
        target: &str,
    ) -> Result<(), LeaseError> {
        if lease.holder_id != own_id {
            return Err(LeaseError::WrongHolder {
                holder: lease.holder_id.clone(),
            });
        }
        if lease.resource_id.trim().is_empty() {
            return Err(LeaseError::BlankResource);
        }
        if lease.resource_id != target {
            return Err(LeaseError::ResourceMismatch {
                lease: lease.resource_id.clone(),
                target: target.to_string(),
            });
        }
        let expires = parse_rfc3339(&lease.expires_at)
            .ok_or_else(|| LeaseError::BadExpiry(lease.expires_at.clone()))?;
        if expires < Utc::now() {
            return Err(LeaseError::Expired(lease.expires_at.clone()));
        }
        self.observe(&lease.resource_id, lease.generation)
    }

    /// Records a generation learned from the control plane (lease renewals). Fails when an
    /// even newer one was already seen.
    pub(crate) fn observe(&self, resource: &str, generation: i64) -> Result<(), LeaseError> {
        let mut book = self.lock();
        let newest = book
            .newest
            .entry(resource.to_string())
            .or_insert(generation);
        if generation < *newest {
            return Err(LeaseError::Stale {
                generation,
                newest: *newest,
            });
        }
        *newest = generation;
        Ok(())
    }

    /// The highest generation seen for `resource`.
    #[cfg(test)]
    pub(crate) fn newest(&self, resource: &str) -> Option<i64> {
        self.lock().newest.get(resource).copied()
    }

    pub(crate) fn hold(&self, sandbox_id: &str, held: Held) {
        self.lock().held.insert(sandbox_id.to_string(), held);
    }

    pub(crate) fn release(&self, sandbox_id: &str) {
        self.lock().held.remove(sandbox_id);
    }

    /// The runtime of sandbox `sandbox_id`, when this worker runs it.
    pub(crate) fn held(&self, sandbox_id: &str) -> Option<Held> {
        self.lock().held.get(sandbox_id).cloned()
    }

    /// Control-plane ids of the sandboxes this worker runs, sorted.
    pub(crate) fn held_ids(&self) -> Vec<String> {
        self.lock().held.keys().cloned().collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use chrono::Duration;
    use stacyvm_types::format_rfc3339_go;

    use super::*;

    fn lease(holder: &str, resource: &str, generation: i64, in_secs: i64) -> LeaseToken {
        LeaseToken {
            resource_id: resource.into(),
            holder_id: holder.into(),
            generation,
            expires_at: format_rfc3339_go(&(Utc::now() + Duration::seconds(in_secs))),
        }
    }

    #[test]
    fn fencing_rejects_only_older_generations() {
        let l = Leases::default();
        l.admit("w", &lease("w", "sb-1", 3, 60), "sb-1").unwrap();
        l.admit("w", &lease("w", "sb-1", 3, 60), "sb-1").unwrap();
        l.admit("w", &lease("w", "sb-1", 5, 60), "sb-1").unwrap();
        assert_eq!(
            l.admit("w", &lease("w", "sb-1", 4, 60), "sb-1"),
            Err(LeaseError::Stale {
                generation: 4,
                newest: 5
            })
        );
        assert_eq!(l.newest("sb-1"), Some(5));
        // Other sandboxes are independent.
        l.admit("w", &lease("w", "sb-2", 1, 60), "sb-2").unwrap();
    }

    #[test]
    fn holder_resource_and_expiry_are_checked() {
        let l = Leases::default();
        assert!(matches!(
            l.admit("w", &lease("other", "sb-1", 1, 60), "sb-1"),
            Err(LeaseError::WrongHolder { .. })
        ));
        assert!(matches!(
            l.admit("w", &lease("w", "sb-2", 1, 60), "sb-1"),
            Err(LeaseError::ResourceMismatch { .. })
        ));
        assert_eq!(
            l.admit("w", &lease("w", " ", 1, 60), " "),
            Err(LeaseError::BlankResource)
        );
        assert!(matches!(
            l.admit("w", &lease("w", "sb-1", 1, -5), "sb-1"),
            Err(LeaseError::Expired(_))
        ));
        let mut bad = lease("w", "sb-1", 1, 60);
        bad.expires_at = "tomorrow".into();
        assert!(matches!(
            l.admit("w", &bad, "sb-1"),
            Err(LeaseError::BadExpiry(_))
        ));
        // Refused leases record nothing.
        assert_eq!(l.newest("sb-1"), None);
    }

    #[test]
    fn held_sandboxes() {
        let l = Leases::default();
        let h = |p: &str| Held {
            provider: p.into(),
            runtime_id: "rt".into(),
        };
        l.hold("sb-b", h("mock"));
        l.hold("sb-a", h("mock"));
        assert_eq!(l.held_ids(), vec!["sb-a", "sb-b"]);
        assert_eq!(l.held("sb-b"), Some(h("mock")));
        l.release("sb-b");
        assert_eq!(l.held("sb-b"), None);
        assert_eq!(l.held_ids(), vec!["sb-a"]);
    }
}
