//! Snapshot records (sandbox-model.md §2), written once each.

use super::{db_err, delete_keyed, get_all, get_keyed, PgStore};
use crate::rows::{self, ts};
use crate::{Snapshot, StoreError};

const KIND: &str = "snapshot";

const COLUMNS: &str =
    "id, name, sandbox_id, provider, image, kind, size_bytes, worker_id, created_at";

pub(super) async fn insert(db: &PgStore, s: &Snapshot) -> Result<(), StoreError> {
    let sql =
        format!("INSERT INTO snapshots ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)");
    sqlx::query(&sql)
        .bind(&s.id)
        .bind(&s.name)
        .bind(s.sandbox_id.as_str())
        .bind(&s.provider)
        .bind(&s.image)
        .bind(&s.kind)
        .bind(s.size_bytes)
        .bind(&s.worker_id)
        .bind(ts(&s.created_at))
        .execute(&db.pool)
        .await
        .map_err(db_err(KIND))?;
    Ok(())
}

pub(super) async fn get(db: &PgStore, id: &str) -> Result<Snapshot, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM snapshots WHERE id = $1");
    get_keyed(db, &sql, KIND, id, rows::snapshot).await
}

pub(super) async fn list(db: &PgStore) -> Result<Vec<Snapshot>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM snapshots ORDER BY created_at DESC, id DESC");
    get_all(db, &sql, KIND, rows::snapshot).await
}

pub(super) async fn delete(db: &PgStore, id: &str) -> Result<(), StoreError> {
    delete_keyed(db, "DELETE FROM snapshots WHERE id = $1", KIND, id).await
}
