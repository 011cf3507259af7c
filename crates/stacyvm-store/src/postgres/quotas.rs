//! Per-owner quotas (0 = limit not set).

use super::PgStore;
use crate::rows::{self, ts};
use crate::statements::{quota_columns, quota_upsert_rule};
use crate::{OwnerQuota, StoreError};

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
    let query = sqlx::query(UPSERT)
        .bind(&q.owner_id)
        .bind(q.max_sandboxes)
        .bind(q.max_ttl_seconds)
        .bind(q.max_exec_timeout_seconds)
        .bind(ts(&q.created_at))
        .bind(ts(&q.updated_at));
    rows::quota(&db.fetch_one("owner_quota", query).await?)
}
