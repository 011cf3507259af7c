//! Admission limits the store checks in the same step as the insert, so they hold exactly
//! however many control planes spawn at once on one database.

use stacyvm_types::Sandbox;

/// Limits for [`Store::insert_sandbox_limited`](crate::Store::insert_sandbox_limited); 0 =
/// no limit. Counts are of active records (not destroyed, not expired), the new one excluded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InsertLimits<'a> {
    /// The control plane inserting the record (recorded with it, so a surviving control plane
    /// can tell whose half-made spawns it may clean up).
    pub created_by: &'a str,
    /// Active records in total.
    pub max_total: i64,
    /// Active records of the new record's `owner_id` (ignored when that is empty).
    pub max_owner: i64,
    /// Active records on the new record's `worker_id`.
    pub max_worker: i64,
}

impl InsertLimits<'_> {
    pub fn any(&self) -> bool {
        self.max_total > 0 || self.max_owner > 0 || self.max_worker > 0
    }
}

/// Which limit refused an insert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitHit {
    Total,
    Owner,
    Worker,
}

impl std::fmt::Display for LimitHit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LimitHit::Total => "max_sandboxes",
            LimitHit::Owner => "max_sandboxes_per_owner",
            LimitHit::Worker => "worker_capacity",
        })
    }
}

/// The first limit `counts` (total, owner, worker) reach, in the order admission checks them.
pub(crate) fn first_hit(limits: &InsertLimits<'_>, owner: &str, counts: [i64; 3]) -> LimitHit {
    let [total, by_owner, _] = counts;
    if limits.max_total > 0 && total >= limits.max_total {
        LimitHit::Total
    } else if limits.max_owner > 0 && !owner.is_empty() && by_owner >= limits.max_owner {
        LimitHit::Owner
    } else {
        LimitHit::Worker
    }
}

/// A record still `creating`, with the control plane that inserted it (empty when unknown:
/// inserted by an older binary or without limits).
#[derive(Debug, Clone, PartialEq)]
pub struct CreatingSandbox {
    pub sandbox: Sandbox,
    pub created_by: String,
}
