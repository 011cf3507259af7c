//! Limited inserts and `creating` records. SQLite runs the count and the insert as one
//! statement on the single writer connection, so no other write of this process can come
//! between them; a writer in another process on the same file makes the statement fail
//! (`SQLITE_BUSY`) rather than slip past the limits, as WAL refuses a write on a stale
//! snapshot.

use std::sync::LazyLock;

use stacyvm_types::Sandbox;

use super::sandboxes::{from_row, COLUMNS};
use super::{col, db_err, to_json, ts, SqliteStore};
use crate::admission::first_hit;
use crate::{CreatingSandbox, InsertLimits, StoreError};

/// `?18..?20` are the limits (0 = none); the counts repeat the active-row index predicate.
static INSERT_LIMITED: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO sandboxes ({COLUMNS}, created_by) \
         SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17 \
         WHERE (?18 = 0 OR (SELECT COUNT(*) FROM sandboxes \
                  WHERE state NOT IN ('destroyed', 'expired')) < ?18) \
           AND (?19 = 0 OR ?9 = '' OR (SELECT COUNT(*) FROM sandboxes \
                  WHERE state NOT IN ('destroyed', 'expired') AND owner_id = ?9) < ?19) \
           AND (?20 = 0 OR (SELECT COUNT(*) FROM sandboxes \
                  WHERE state NOT IN ('destroyed', 'expired') AND worker_id = ?11) < ?20)"
    )
});

const COUNTS: &str = "SELECT \
       (SELECT COUNT(*) FROM sandboxes WHERE state NOT IN ('destroyed', 'expired')), \
       (SELECT COUNT(*) FROM sandboxes \
          WHERE state NOT IN ('destroyed', 'expired') AND owner_id = ?1 AND ?1 <> ''), \
       (SELECT COUNT(*) FROM sandboxes \
          WHERE state NOT IN ('destroyed', 'expired') AND worker_id = ?2)";

static LIST_CREATING: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {COLUMNS}, created_by FROM sandboxes WHERE state = 'creating' \
         ORDER BY created_at, id"
    )
});

pub(super) async fn insert_limited(
    db: &SqliteStore,
    sb: &Sandbox,
    limits: &InsertLimits<'_>,
) -> Result<(), StoreError> {
    let done = sqlx::query(&INSERT_LIMITED)
        .bind(&sb.id)
        .bind(sb.state.as_str())
        .bind(&sb.provider)
        .bind(&sb.image)
        .bind(sb.memory_mb)
        .bind(sb.vcpus)
        .bind(to_json(&sb.metadata, "metadata")?)
        .bind(&sb.template)
        .bind(&sb.owner_id)
        .bind(&sb.vm_id)
        .bind(&sb.worker_id)
        .bind(&sb.tenant_id)
        .bind(&sb.preview_domain)
        .bind(ts(&sb.created_at))
        .bind(ts(&sb.expires_at))
        .bind(ts(&sb.updated_at))
        .bind(limits.created_by)
        .bind(limits.max_total.max(0))
        .bind(limits.max_owner.max(0))
        .bind(limits.max_worker.max(0))
        .execute(&db.writer)
        .await
        .map_err(db_err("sandbox"))?;
    if done.rows_affected() == 1 {
        return Ok(());
    }
    // Refused: say which limit (read after the fact; only the message depends on it).
    let (total, owner, worker): (i64, i64, i64) = sqlx::query_as(COUNTS)
        .bind(&sb.owner_id)
        .bind(&sb.worker_id)
        .fetch_one(&db.writer)
        .await
        .map_err(db_err("sandbox count"))?;
    Err(StoreError::LimitReached(first_hit(
        limits,
        &sb.owner_id,
        [total, owner, worker],
    )))
}

pub(super) async fn list_creating(db: &SqliteStore) -> Result<Vec<CreatingSandbox>, StoreError> {
    let rows = sqlx::query(&LIST_CREATING)
        .fetch_all(&db.reader)
        .await
        .map_err(db_err("sandbox"))?;
    rows.iter()
        .map(|r| {
            Ok(CreatingSandbox {
                sandbox: from_row(r)?,
                created_by: col(r, "created_by")?,
            })
        })
        .collect()
}
