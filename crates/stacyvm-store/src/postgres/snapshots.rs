//! Snapshot records (sandbox-model.md §2), written once each.

use super::PgStore;
use crate::rows::ts;
use crate::statements::snapshots::INSERT;
use crate::{Snapshot, StoreError};

pub(super) async fn insert(db: &PgStore, s: &Snapshot) -> Result<(), StoreError> {
    let q = sqlx::query(INSERT)
        .bind(&s.id)
        .bind(&s.name)
        .bind(s.sandbox_id.as_str())
        .bind(&s.provider)
        .bind(&s.image)
        .bind(&s.kind)
        .bind(s.size_bytes)
        .bind(&s.worker_id)
        .bind(ts(&s.created_at));
    db.execute("snapshot", q).await.map(drop)
}
