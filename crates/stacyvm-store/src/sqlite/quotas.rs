//! Per-owner quotas (0 = limit not set).

use std::sync::LazyLock;

use rusqlite::params;

use super::db::{all, first, found, Db};
use crate::rows::{self, ts};
use crate::statements::{quota_columns, quota_upsert_rule};
use crate::{OwnerQuota, StoreError};

const COLUMNS: &str = quota_columns!();

/// One statement: inserts, or updates everything but `created_at`.
const UPSERT: &str = concat!(
    "INSERT INTO owner_quotas (",
    quota_columns!(),
    ") VALUES (?1, ?2, ?3, ?4, ?5, ?6) ",
    quota_upsert_rule!(),
    " RETURNING ",
    quota_columns!()
);
static GET: LazyLock<String> =
    LazyLock::new(|| format!("SELECT {COLUMNS} FROM owner_quotas WHERE owner_id = ?1"));
static LIST: LazyLock<String> =
    LazyLock::new(|| format!("SELECT {COLUMNS} FROM owner_quotas ORDER BY owner_id"));

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

pub(super) fn get(db: &Db, owner_id: &str) -> Result<OwnerQuota, StoreError> {
    db.get_keyed("owner_quota", &GET, owner_id, |r| rows::quota(r))
}

pub(super) fn list(db: &Db) -> Result<Vec<OwnerQuota>, StoreError> {
    db.read(|c| all(c, "owner_quota", &LIST, [], |r| rows::quota(r)))
}

pub(super) async fn delete(db: &Db, owner_id: &str) -> Result<(), StoreError> {
    db.delete_keyed(
        "owner_quota",
        "DELETE FROM owner_quotas WHERE owner_id = ?1",
        owner_id,
    )
    .await
}
