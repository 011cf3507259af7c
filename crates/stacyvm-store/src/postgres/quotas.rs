//! Per-owner quotas (0 = limit not set).

use super::{db_err, delete_keyed, get_all, get_keyed, PgStore};
use crate::rows::{self, ts};
use crate::statements::{quota_columns, quota_upsert_rule};
use crate::{OwnerQuota, StoreError};

const COLUMNS: &str = quota_columns!();

/// One statement: inserts, or updates everything but `created_at`.
const UPSERT: &str = concat!(
    "INSERT INTO owner_quotas (",
    quota_columns!(),
    ") VALUES ($1, $2, $3, $4, $5, $6) ",
    quota_upsert_rule!(),
    " RETURNING ",
    quota_columns!()
);

pub(super) async fn upsert(db: &PgStore, q: &OwnerQuota) -> Result<OwnerQuota, StoreError> {
    let row = sqlx::query(UPSERT)
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
