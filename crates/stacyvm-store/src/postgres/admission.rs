//! Limited inserts and `creating` records. With limits, the insert runs in a transaction
//! that first takes one transaction-scoped advisory lock, so admissions from every control
//! plane queue up one by one; under READ COMMITTED the following statement sees every insert
//! committed before the lock was granted, so its counts are exact. The lock is released at
//! commit or rollback, and when a connection dies. Without limits it is a plain insert.

use std::sync::LazyLock;

use stacyvm_types::Sandbox;

use super::sandboxes::{bind_sandbox, COLUMNS};
use super::{col, db_err, PgStore, Query};
use crate::admission::first_hit;
use crate::rows::to_json;
use crate::statements::active_sandbox;
use crate::statements::sandboxes::INSERT_BY;
use crate::{InsertLimits, StoreError};

/// The advisory lock key serialising limited admissions ("stacyvm" + 1).
const ADMISSION_LOCK: i64 = 0x7374_6163_7976_6d01;

/// The active-row predicate, repeated from the partial indexes.
const ACTIVE: &str = active_sandbox!();

/// `$24..$26` are the limits (0 = none). Paused sandboxes count for their worker only. Returns the counts seen and whether it inserted.
static INSERT_LIMITED: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH c AS (SELECT \
           (SELECT COUNT(*) FROM sandboxes WHERE {ACTIVE} \
              AND state <> 'paused') AS total, \
           (SELECT COUNT(*) FROM sandboxes WHERE {ACTIVE} \
              AND state <> 'paused' AND owner_id = $9 AND $9 <> '') AS by_owner, \
           (SELECT COUNT(*) FROM sandboxes WHERE {ACTIVE} \
              AND worker_id = $11) AS by_worker), \
         ins AS (INSERT INTO sandboxes ({COLUMNS}, created_by) \
           SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, \
                  $18, $19, $20, $21, $22, $23 \
           FROM c \
           WHERE ($24 = 0 OR c.total < $24) \
             AND ($25 = 0 OR $9 = '' OR c.by_owner < $25) \
             AND ($26 = 0 OR c.by_worker < $26) \
           RETURNING 1) \
         SELECT c.total, c.by_owner, c.by_worker, (SELECT COUNT(*) FROM ins) AS inserted FROM c"
    )
});

/// Binds the 23 values of a limited or plain insert.
fn bind_record<'q>(
    q: Query<'q>,
    sb: &'q Sandbox,
    metadata: String,
    created_by: &'q str,
) -> Query<'q> {
    bind_sandbox(q, sb, metadata).bind(created_by)
}

pub(super) async fn insert_limited(
    db: &PgStore,
    sb: &Sandbox,
    limits: &InsertLimits<'_>,
) -> Result<(), StoreError> {
    let metadata = to_json(&sb.metadata, "metadata")?;
    if !limits.any() {
        let q = bind_record(sqlx::query(INSERT_BY), sb, metadata, limits.created_by);
        return db.execute("sandbox", q).await.map(drop);
    }
    let err = db_err("sandbox");
    let mut tx = db.pool.begin().await.map_err(&err)?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(ADMISSION_LOCK)
        .execute(&mut *tx)
        .await
        .map_err(&err)?;
    let row = bind_record(
        sqlx::query(&INSERT_LIMITED),
        sb,
        metadata,
        limits.created_by,
    )
    .bind(limits.max_total.max(0))
    .bind(limits.max_owner.max(0))
    .bind(limits.max_worker.max(0))
    .fetch_one(&mut *tx)
    .await
    .map_err(&err)?;
    tx.commit().await.map_err(&err)?;
    let inserted: i64 = col(&row, "inserted")?;
    if inserted == 1 {
        return Ok(());
    }
    let counts = [
        col(&row, "total")?,
        col(&row, "by_owner")?,
        col(&row, "by_worker")?,
    ];
    Err(StoreError::LimitReached(first_hit(
        limits,
        &sb.owner_id,
        counts,
    )))
}
