//! Per-owner quotas (0 = limit not set).

use super::{db_err, delete_keyed, get_all, get_keyed, PgStore};
use crate::rows::{self, ts};
use crate::{OwnerQuota, StoreError};

const COLUMNS: &str = "owner_id, max_sandboxes, max_ttl_seconds, max_exec_timeout_seconds, \
     created_at, updated_at";

/// One statement: inserts, or updates everything but `created_at`.
pub(super) async fn upsert(db: &PgStore, q: &OwnerQuota) -> Result<OwnerQuota, StoreError> {
    let sql = format!(
        "INSERT INTO owner_quotas ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (owner_id) DO UPDATE SET \
           max_sandboxes = excluded.max_sandboxes, \
           max_ttl_seconds = excluded.max_ttl_seconds, \
           max_exec_timeout_seconds = excluded.max_exec_timeout_seconds, \
           updated_at = excluded.updated_at \
         RETURNING {COLUMNS}"
    );
    let row = sqlx::query(&sql)
        .bind(&q.owner_id)
        .bind(q.max_sandboxes)
        .bind(q.max_ttl_seconds)
        .bind(q.max_exec_timeout_seconds)
        .bind(ts(&q.created_at))
        .bind(ts(&q.updated_at))
        .fetch_one(&db.pool)
        .await
        .map_err(db_err("owner_quota"))?;
    rows::quota(&row)
}

pub(super) async fn get(db: &PgStore, owner_id: &str) -> Result<OwnerQuota, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM owner_quotas WHERE owner_id = $1");
    get_keyed(db, &sql, "owner_quota", owner_id, rows::quota).await
}

pub(super) async fn list(db: &PgStore) -> Result<Vec<OwnerQuota>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM owner_quotas ORDER BY owner_id");
    get_all(db, &sql, "owner_quota", rows::quota).await
}

pub(super) async fn delete(db: &PgStore, owner_id: &str) -> Result<(), StoreError> {
    let sql = "DELETE FROM owner_quotas WHERE owner_id = $1";
    delete_keyed(db, sql, "owner_quota", owner_id).await
}
