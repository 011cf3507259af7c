//! Worker registry rows, written by heartbeats.

use super::PgStore;
use crate::rows::{self, list_json, to_json};
use crate::statements::{worker_columns, worker_heartbeat_rule};
use crate::{StoreError, WorkerRecord};

/// The database clock stamps `last_heartbeat`, `updated_at` and (first beat) `created_at`.
const UPSERT: &str = concat!(
    "INSERT INTO workers (",
    worker_columns!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, ",
    now_ts!(),
    ", ",
    now_ts!(),
    ", ",
    now_ts!(),
    ") ",
    worker_heartbeat_rule!(),
    " RETURNING ",
    worker_columns!()
);

/// A heartbeat; the caller's timestamps are ignored.
pub(super) async fn upsert(db: &PgStore, w: &WorkerRecord) -> Result<WorkerRecord, StoreError> {
    let q = sqlx::query(UPSERT)
        .bind(w.id.as_str())
        .bind(&w.hostname)
        .bind(&w.status)
        .bind(list_json(&w.providers, "providers")?)
        .bind(list_json(&w.capabilities, "capabilities")?)
        .bind(to_json(&w.capacity, "capacity")?);
    rows::worker(&db.fetch_one("worker", q).await?)
}
