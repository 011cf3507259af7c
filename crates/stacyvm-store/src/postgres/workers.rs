//! Worker registry rows, written by heartbeats.

use super::{db_err, delete_keyed, get_all, get_keyed, PgStore};
use crate::rows::{self, list_json, to_json};
use crate::{StoreError, WorkerRecord};

macro_rules! columns {
    () => {
        "id, hostname, status, providers, capabilities, capacity, last_heartbeat, created_at, \
         updated_at"
    };
}

/// The database clock stamps `last_heartbeat`, `updated_at` and (first beat) `created_at`.
const UPSERT: &str = concat!(
    "INSERT INTO workers (",
    columns!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, ",
    now_ts!(),
    ", ",
    now_ts!(),
    ", ",
    now_ts!(),
    ") ON CONFLICT (id) DO UPDATE SET \
       hostname = excluded.hostname, status = excluded.status, \
       providers = excluded.providers, capabilities = excluded.capabilities, \
       capacity = excluded.capacity, last_heartbeat = excluded.last_heartbeat, \
       updated_at = excluded.updated_at \
     RETURNING ",
    columns!()
);

/// A heartbeat; the caller's timestamps are ignored.
pub(super) async fn upsert(db: &PgStore, w: &WorkerRecord) -> Result<WorkerRecord, StoreError> {
    let row = sqlx::query(UPSERT)
        .bind(w.id.as_str())
        .bind(&w.hostname)
        .bind(&w.status)
        .bind(list_json(&w.providers, "providers")?)
        .bind(list_json(&w.capabilities, "capabilities")?)
        .bind(to_json(&w.capacity, "capacity")?)
        .fetch_one(&db.pool)
        .await
        .map_err(db_err("worker"))?;
    rows::worker(&row)
}

pub(super) async fn get(db: &PgStore, id: &str) -> Result<WorkerRecord, StoreError> {
    let sql = concat!("SELECT ", columns!(), " FROM workers WHERE id = $1");
    get_keyed(db, sql, "worker", id, rows::worker).await
}

pub(super) async fn list(db: &PgStore) -> Result<Vec<WorkerRecord>, StoreError> {
    let sql = concat!("SELECT ", columns!(), " FROM workers ORDER BY id");
    get_all(db, sql, "worker", rows::worker).await
}

pub(super) async fn delete(db: &PgStore, id: &str) -> Result<(), StoreError> {
    delete_keyed(db, "DELETE FROM workers WHERE id = $1", "worker", id).await
}
