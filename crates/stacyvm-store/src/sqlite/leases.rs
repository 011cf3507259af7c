//! Leases: fencing tokens for sandbox ownership. Every grant (acquire or renew) bumps
//! `generation`, and a release only clears the holder, so a resource's generation increases
//! forever. Acquire and renew are single statements whose WHERE clause carries the whole rule,
//! which makes them atomic however many connections or processes race.

use std::time::Duration;

use rusqlite::params;

use super::db::{all, exec, first, touched, Db};
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

const GET: &str = concat!(
    "SELECT ",
    lease_columns!(),
    " FROM leases WHERE resource_id = ?1 AND holder_id IS NOT NULL"
);

const LIST: &str = concat!(
    "SELECT ",
    lease_columns!(),
    " FROM leases WHERE holder_id IS NOT NULL ORDER BY resource_id"
);

/// Runs a conditional grant: the lease it returned, or `Conflict` when its condition refused it.
async fn granted(db: &Db, sql: &str, params: &[&str], refused: &str) -> Result<Lease, StoreError> {
    let row = db
        .write("lease", |c| {
            let params = rusqlite::params_from_iter(params);
            first(c, "lease", sql, params, |r| rows::lease(r))
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
    let now = now();
    let (expires, now) = (ts(&deadline(now, ttl)), ts(&now));
    let params = [resource_id, resource_type, holder_id, &expires, &now];
    granted(db, ACQUIRE, &params, "lease is held by another worker").await
}

/// Only the holder of a live lease may renew it.
pub(super) async fn renew(
    db: &Db,
    resource_id: &str,
    holder_id: &str,
    ttl: Duration,
) -> Result<Lease, StoreError> {
    let now = now();
    let (expires, now) = (ts(&deadline(now, ttl)), ts(&now));
    let params = [resource_id, holder_id, &expires, &now];
    granted(
        db,
        RENEW,
        &params,
        "lease is not held by this holder or has expired",
    )
    .await
}

/// Frees the lease if `holder_id` holds it (even past expiry, as long as nobody took it over).
pub(super) async fn release(db: &Db, resource_id: &str, holder_id: &str) -> Result<(), StoreError> {
    let n = db
        .write("lease", |c| {
            exec(
                c,
                "lease",
                "UPDATE leases SET holder_id = NULL, updated_at = ?3 \
             WHERE resource_id = ?1 AND holder_id = ?2",
                params![resource_id, holder_id, ts(&now())],
            )
        })
        .await?;
    touched(n, "lease", resource_id)
}

/// The held lease, expired or not; `NotFound` when absent or released.
pub(super) fn get(db: &Db, resource_id: &str) -> Result<Lease, StoreError> {
    db.get_keyed("lease", GET, resource_id, |r| rows::lease(r))
}

/// Held leases (expired ones included) ordered by resource id.
pub(super) fn list(db: &Db) -> Result<Vec<Lease>, StoreError> {
    db.read(|c| all(c, "lease", LIST, [], |r| rows::lease(r)))
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
    let n = db
        .write("lease", |c| {
            // `substr(..) = ?1` rather than LIKE: the prefix is literal, `_` and `%` included.
            exec(
                c,
                "lease",
                "DELETE FROM leases WHERE substr(resource_id, 1, length(?1)) = ?1 \
                 AND (holder_id IS NULL OR expires_at <= ?2)",
                params![prefix, cutoff],
            )
        })
        .await?;
    Ok(n as u64)
}
