//! Snapshot records (sandbox-model.md §2), written once each.

use super::db::Db;
use crate::rows::ts;
use crate::statements::snapshots::INSERT;
use crate::{Snapshot, StoreError};

pub(super) async fn insert(db: &Db, s: &Snapshot) -> Result<(), StoreError> {
    let params = (
        &s.id,
        &s.name,
        s.sandbox_id.as_str(),
        &s.provider,
        &s.image,
        &s.kind,
        s.size_bytes,
        &s.worker_id,
        ts(&s.created_at),
    );
    db.execute("snapshot", INSERT, params).await.map(drop)
}
