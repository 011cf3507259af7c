//! Leases: fencing tokens for sandbox ownership. Every grant (acquire or renew) bumps
//! `generation`, and a release only clears the holder, so a resource's generation increases
//! forever. Acquire and renew are single statements whose WHERE clause carries the whole rule,
//! which makes them atomic however many connections or processes race.

use std::time::Duration;

use rusqlite::params_from_iter;

use super::db::{exec, first, touched, Db};
use super::{deadline, now};
use crate::rows::{self, ts};
use crate::statements::{lease_columns, lease_grant_rule};
use crate::{Lease, StoreError};

/// Granted when the row is absent, else as `lease_grant_rule` says.
const ACQUIRE: &str = concat!(
    "INSERT INTO leases (",
    lease_columns!(),
    ") VALUES (?1, ?2, ?3, 1, ?4, ?5, ?5) ",
    lease_grant_rule!(),
    " RETURNING ",
    lease_columns!()
);

const RENEW: &str = concat!(
    "UPDATE leases SET generation = generation + 1, expires_at = ?3, updated_at = ?4 \
     WHERE resource_id = ?1 AND holder_id = ?2 AND expires_at > ?4 RETURNING ",
    lease_columns!()
);

/// Runs a conditional grant whose parameters are `ids` then the deadline `now + ttl` and now:
/// the lease it returned, or `Conflict` when its condition refused it.
async fn granted(
    db: &Db,
    sql: &str,
    ids: &[&str],
    ttl: Duration,
    refused: &str,
) -> Result<Lease, StoreError> {
    let now = now();
    let (expires, now) = (ts(&deadline(now, ttl)), ts(&now));
    let row = db
        .write("lease", |c| {
            let params = ids.iter().copied().chain([expires.as_str(), now.as_str()]);
            first(c, "lease", sql, params_from_iter(params), |r| {
                rows::lease(r)
            })
        })
        .await?;
    row.ok_or_else(|| StoreError::Conflict(refused.into()))
}

/// Granted when the row is absent, released, expired (`expires_at <= now`) or already held by
/// `holder_id`; otherwise the upsert's WHERE rejects it and nothing comes back. `created_at`
/// marks the start of the current holder's tenure.
pub(super) async fn acquire(
    db: &Db,
    resource_id: &str,
    resource_type: &str,
    holder_id: &str,
    ttl: Duration,
) -> Result<Lease, StoreError> {
    let ids = [resource_id, resource_type, holder_id];
    granted(db, ACQUIRE, &ids, ttl, "lease is held by another worker").await
}

/// Only the holder of a live lease may renew it.
pub(super) async fn renew(
    db: &Db,
    resource_id: &str,
    holder_id: &str,
    ttl: Duration,
) -> Result<Lease, StoreError> {
    let ids = [resource_id, holder_id];
    let refused = "lease is not held by this holder or has expired";
    granted(db, RENEW, &ids, ttl, refused).await
}

/// Frees the lease if `holder_id` holds it (even past expiry, as long as nobody took it over).
pub(super) async fn release(db: &Db, resource_id: &str, holder_id: &str) -> Result<(), StoreError> {
    let sql = "UPDATE leases SET holder_id = NULL, updated_at = ?3 \
               WHERE resource_id = ?1 AND holder_id = ?2";
    let n = db
        .write("lease", |c| {
            exec(c, "lease", sql, (resource_id, holder_id, ts(&now())))
        })
        .await?;
    touched(n, "lease", resource_id)
}

/// Deletes released or long-expired leases under `prefix` (see `Store::prune_leases`).
pub(super) async fn prune(db: &Db, prefix: &str, expired_for: Duration) -> Result<u64, StoreError> {
    if prefix.is_empty() {
        return Err(StoreError::no_lease_prefix());
    }
    let cutoff = chrono::Duration::from_std(expired_for)
        .ok()
        .and_then(|d| now().checked_sub_signed(d))
        .map_or_else(String::new, |t| ts(&t));
    // `substr(..) = ?1` rather than LIKE: the prefix is literal, `_` and `%` included.
    let sql = "DELETE FROM leases WHERE substr(resource_id, 1, length(?1)) = ?1 \
               AND (holder_id IS NULL OR expires_at <= ?2)";
    let n = db.execute("lease", sql, (prefix, cutoff)).await?;
    Ok(n as u64)
}
