//! Snapshot records (sandbox-model.md §2), written once each.

use rusqlite::params;

use super::db::{all, exec, Db};
use crate::rows::{self, ts};
use crate::{Snapshot, StoreError};

const KIND: &str = "snapshot";

const COLUMNS: &str =
    "id, name, sandbox_id, provider, image, kind, size_bytes, worker_id, created_at";

pub(super) async fn insert(db: &Db, s: &Snapshot) -> Result<(), StoreError> {
    let sql =
        format!("INSERT INTO snapshots ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)");
    let created = ts(&s.created_at);
    db.write(KIND, |c| {
        exec(
            c,
            KIND,
            &sql,
            params![
                s.id,
                s.name,
                s.sandbox_id.as_str(),
                s.provider,
                s.image,
                s.kind,
                s.size_bytes,
                s.worker_id,
                created
            ],
        )
        .map(|_| ())
    })
    .await
}

pub(super) fn get(db: &Db, id: &str) -> Result<Snapshot, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM snapshots WHERE id = ?1");
    db.get_keyed(KIND, &sql, id, |r| rows::snapshot(r))
}

pub(super) fn list(db: &Db) -> Result<Vec<Snapshot>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM snapshots ORDER BY created_at DESC, id DESC");
    db.read(|c| all(c, KIND, &sql, [], |r| rows::snapshot(r)))
}

pub(super) async fn delete(db: &Db, id: &str) -> Result<(), StoreError> {
    db.delete_keyed(KIND, "DELETE FROM snapshots WHERE id = ?1", id)
        .await
}
