//! Leases: fencing tokens for resource ownership, with the SQLite backend's rules. Every grant
//! (acquire or renew) bumps `generation`, and a release only clears the holder, so a
//! resource's generation increases forever.
//!
//! Each operation is one statement whose WHERE clause carries the whole rule. Postgres locks
//! the row for `INSERT .. ON CONFLICT DO UPDATE` and `UPDATE`; under READ COMMITTED a statement
//! that waited for another's lock re-evaluates its WHERE clause on the committed row version,
//! so racing control planes serialise on the row and never both win. Time is the database's
//! `now()` (one value per statement), never a control plane's clock.

use std::time::Duration;

use super::{touched, ttl_interval, PgStore, Query};
use crate::rows;
use crate::statements::{lease_columns, lease_grant_rule};
use crate::{Lease, StoreError};

/// Granted when the row is absent, else as `lease_grant_rule` says.
const ACQUIRE: &str = concat!(
    "INSERT INTO leases (",
    lease_columns!(),
    ") VALUES ($1, $2, $3, 1, ",
    deadline_ts!("$4"),
    ", ",
    now_ts!(),
    ", ",
    now_ts!(),
    ") ",
    lease_grant_rule!(),
    " RETURNING ",
    lease_columns!()
);

/// Only the holder of a live lease.
const RENEW: &str = concat!(
    "UPDATE leases SET generation = generation + 1, expires_at = ",
    deadline_ts!("$3"),
    ", updated_at = ",
    now_ts!(),
    " WHERE resource_id = $1 AND holder_id = $2 AND expires_at > ",
    now_ts!(),
    " RETURNING ",
    lease_columns!()
);

/// The holder, even past expiry as long as nobody took the lease over.
const RELEASE: &str = concat!(
    "UPDATE leases SET holder_id = NULL, updated_at = ",
    now_ts!(),
    " WHERE resource_id = $1 AND holder_id = $2"
);

/// Runs a conditional grant whose last parameter is the TTL: the lease it returned, or
/// `Conflict` when its condition refused it.
async fn granted(
    db: &PgStore,
    q: Query<'_>,
    ttl: Duration,
    refused: &str,
) -> Result<Lease, StoreError> {
    match db
        .fetch_optional("lease", q.bind(ttl_interval(ttl)))
        .await?
    {
        Some(row) => rows::lease(&row),
        None => Err(StoreError::Conflict(refused.into())),
    }
}

pub(super) async fn acquire(
    db: &PgStore,
    resource_id: &str,
    resource_type: &str,
    holder_id: &str,
    ttl: Duration,
) -> Result<Lease, StoreError> {
    let q = sqlx::query(ACQUIRE)
        .bind(resource_id)
        .bind(resource_type)
        .bind(holder_id);
    granted(db, q, ttl, "lease is held by another worker").await
}

pub(super) async fn renew(
    db: &PgStore,
    resource_id: &str,
    holder_id: &str,
    ttl: Duration,
) -> Result<Lease, StoreError> {
    let q = sqlx::query(RENEW).bind(resource_id).bind(holder_id);
    granted(
        db,
        q,
        ttl,
        "lease is not held by this holder or has expired",
    )
    .await
}

pub(super) async fn release(
    db: &PgStore,
    resource_id: &str,
    holder_id: &str,
) -> Result<(), StoreError> {
    let q = sqlx::query(RELEASE).bind(resource_id).bind(holder_id);
    touched(db.execute("lease", q).await?, "lease", resource_id)
}

/// Deletes released or long-expired leases under `prefix` (see `Store::prune_leases`).
pub(super) async fn prune(
    db: &PgStore,
    prefix: &str,
    expired_for: Duration,
) -> Result<u64, StoreError> {
    if prefix.is_empty() {
        return Err(StoreError::no_lease_prefix());
    }
    // `left(..) = $1` rather than LIKE: the prefix is literal, `_` and `%` included.
    let q = sqlx::query(concat!(
        "DELETE FROM leases WHERE left(resource_id, length($1)) = $1 \
         AND (holder_id IS NULL OR expires_at <= ",
        pg_ts!("now() - $2"),
        ")"
    ));
    db.execute("lease", q.bind(prefix).bind(ttl_interval(expired_for)))
        .await
}
