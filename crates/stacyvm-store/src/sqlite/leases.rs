//! Leases: fencing tokens for sandbox ownership. Every grant (acquire or renew) bumps
//! `generation`, and a release only clears the holder, so a resource's generation increases
//! forever. Acquire and renew are single statements whose WHERE clause carries the whole rule,
//! which makes them atomic however many connections or processes race.

use std::sync::LazyLock;
use std::time::Duration;

use rusqlite::params;

use super::db::{all, exec, first, touched, Db};
use super::{deadline, now};
use crate::rows::{self, ts};
use crate::{Lease, StoreError};

const COLUMNS: &str =
    "resource_id, resource_type, holder_id, generation, expires_at, created_at, updated_at";

static ACQUIRE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO leases ({COLUMNS}) VALUES (?1, ?2, ?3, 1, ?4, ?5, ?5) \
         ON CONFLICT (resource_id) DO UPDATE SET \
           resource_type = excluded.resource_type, \
           holder_id = excluded.holder_id, \
           generation = leases.generation + 1, \
           expires_at = excluded.expires_at, \
           created_at = CASE \
             WHEN leases.holder_id = excluded.holder_id AND leases.expires_at > excluded.updated_at \
             THEN leases.created_at ELSE excluded.created_at END, \
           updated_at = excluded.updated_at \
         WHERE leases.holder_id IS NULL \
            OR leases.holder_id = excluded.holder_id \
            OR leases.expires_at <= excluded.updated_at \
         RETURNING {COLUMNS}"
    )
});

static RENEW: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE leases SET generation = generation + 1, expires_at = ?3, updated_at = ?4 \
         WHERE resource_id = ?1 AND holder_id = ?2 AND expires_at > ?4 \
         RETURNING {COLUMNS}"
    )
});

static GET: LazyLock<String> = LazyLock::new(|| {
    format!("SELECT {COLUMNS} FROM leases WHERE resource_id = ?1 AND holder_id IS NOT NULL")
});

static LIST: LazyLock<String> = LazyLock::new(|| {
    format!("SELECT {COLUMNS} FROM leases WHERE holder_id IS NOT NULL ORDER BY resource_id")
});

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
    let row = db
        .write("lease", |c| {
            first(
                c,
                "lease",
                &ACQUIRE,
                params![
                    resource_id,
                    resource_type,
                    holder_id,
                    ts(&deadline(now, ttl)),
                    ts(&now)
                ],
                |r| rows::lease(r),
            )
        })
        .await?;
    row.ok_or_else(|| StoreError::Conflict("lease is held by another worker".into()))
}

/// Only the holder of a live lease may renew it.
pub(super) async fn renew(
    db: &Db,
    resource_id: &str,
    holder_id: &str,
    ttl: Duration,
) -> Result<Lease, StoreError> {
    let now = now();
    let row = db
        .write("lease", |c| {
            first(
                c,
                "lease",
                &RENEW,
                params![resource_id, holder_id, ts(&deadline(now, ttl)), ts(&now)],
                |r| rows::lease(r),
            )
        })
        .await?;
    row.ok_or_else(|| {
        StoreError::Conflict("lease is not held by this holder or has expired".into())
    })
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
    db.get_keyed("lease", &GET, resource_id, |r| rows::lease(r))
}

/// Held leases (expired ones included) ordered by resource id.
pub(super) fn list(db: &Db) -> Result<Vec<Lease>, StoreError> {
    db.read(|c| all(c, "lease", &LIST, [], |r| rows::lease(r)))
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
