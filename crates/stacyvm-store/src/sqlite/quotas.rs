//! Per-owner quotas (0 = limit not set).

use rusqlite::params;

use super::db::{first, found, Db};
use crate::rows::{self, ts};
use crate::statements::{quota_columns, quota_upsert_rule};
use crate::{OwnerQuota, StoreError};

/// One statement: inserts, or updates everything but `created_at`.
const UPSERT: &str = concat!(
    "INSERT INTO owner_quotas (",
    quota_columns!(),
    ") VALUES (?1, ?2, ?3, ?4, ?5, ?6) ",
    quota_upsert_rule!(),
    " RETURNING ",
    quota_columns!()
);
pub(super) async fn upsert(db: &Db, q: &OwnerQuota) -> Result<OwnerQuota, StoreError> {
    let row = db
        .write("owner_quota", |c| {
            first(
                c,
                "owner_quota",
                UPSERT,
                params![
                    q.owner_id,
                    q.max_sandboxes,
                    q.max_ttl_seconds,
                    q.max_exec_timeout_seconds,
                    ts(&q.created_at),
                    ts(&q.updated_at),
                ],
                |r| rows::quota(r),
            )
        })
        .await?;
    found(row, "owner_quota", &q.owner_id)
}
