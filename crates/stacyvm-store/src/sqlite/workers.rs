//! Worker registry rows, written by heartbeats.

use sqlx::sqlite::SqliteRow;

use super::{col, db_err, json_col, now, one, to_json, touched, ts, ts_col, SqliteStore};
use crate::{StoreError, WorkerRecord};

const COLUMNS: &str = "id, hostname, status, providers, capabilities, capacity, last_heartbeat, \
     created_at, updated_at";

/// A nullable JSON list: NULL means "not sent", which differs from an empty list.
fn list_col(row: &SqliteRow, name: &'static str) -> Result<Option<Vec<String>>, StoreError> {
    let text: Option<String> = col(row, name)?;
    text.map(|t| serde_json::from_str(&t).map_err(|_| StoreError::Corrupt { what: name }))
        .transpose()
}

fn list_json(
    value: &Option<Vec<String>>,
    what: &'static str,
) -> Result<Option<String>, StoreError> {
    value.as_ref().map(|v| to_json(v, what)).transpose()
}

fn from_row(row: &SqliteRow) -> Result<WorkerRecord, StoreError> {
    Ok(WorkerRecord {
        id: col(row, "id")?,
        hostname: col(row, "hostname")?,
        status: col(row, "status")?,
        providers: list_col(row, "providers")?,
        capabilities: list_col(row, "capabilities")?,
        capacity: json_col(row, "capacity")?,
        last_heartbeat: ts_col(row, "last_heartbeat")?,
        created_at: ts_col(row, "created_at")?,
        updated_at: ts_col(row, "updated_at")?,
    })
}

/// A heartbeat: the store's clock sets `last_heartbeat` and `updated_at` (and `created_at` on
/// the first one); the caller's timestamps are ignored.
pub(super) async fn upsert(db: &SqliteStore, w: &WorkerRecord) -> Result<WorkerRecord, StoreError> {
    let sql = format!(
        "INSERT INTO workers ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?7) \
         ON CONFLICT (id) DO UPDATE SET \
           hostname = excluded.hostname, status = excluded.status, \
           providers = excluded.providers, capabilities = excluded.capabilities, \
           capacity = excluded.capacity, last_heartbeat = excluded.last_heartbeat, \
           updated_at = excluded.updated_at \
         RETURNING {COLUMNS}"
    );
    let row = sqlx::query(&sql)
        .bind(&w.id)
        .bind(&w.hostname)
        .bind(&w.status)
        .bind(list_json(&w.providers, "providers")?)
        .bind(list_json(&w.capabilities, "capabilities")?)
        .bind(to_json(&w.capacity, "capacity")?)
        .bind(ts(&now()))
        .fetch_one(&db.writer)
        .await
        .map_err(db_err("worker"))?;
    from_row(&row)
}

pub(super) async fn get(db: &SqliteStore, id: &str) -> Result<WorkerRecord, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM workers WHERE id = ?1");
    let row = sqlx::query(&sql)
        .bind(id)
        .fetch_optional(&db.reader)
        .await
        .map_err(db_err("worker"))?;
    one(row, "worker", id, from_row)
}

pub(super) async fn list(db: &SqliteStore) -> Result<Vec<WorkerRecord>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM workers ORDER BY id");
    let rows = sqlx::query(&sql)
        .fetch_all(&db.reader)
        .await
        .map_err(db_err("worker"))?;
    rows.iter().map(from_row).collect()
}

pub(super) async fn delete(db: &SqliteStore, id: &str) -> Result<(), StoreError> {
    let done = sqlx::query("DELETE FROM workers WHERE id = ?1")
        .bind(id)
        .execute(&db.writer)
        .await
        .map_err(db_err("worker"))?;
    touched(done, "worker", id)
}
