//! Worker registry rows, written by heartbeats.

use rusqlite::params;

use super::db::{first, found, Db};
use super::now;
use crate::rows::{self, list_json, to_json, ts};
use crate::statements::{worker_columns, worker_heartbeat_rule};
use crate::{StoreError, WorkerRecord};

const UPSERT: &str = concat!(
    "INSERT INTO workers (",
    worker_columns!(),
    ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?7) ",
    worker_heartbeat_rule!(),
    " RETURNING ",
    worker_columns!()
);

/// A heartbeat: the store's clock sets `last_heartbeat` and `updated_at` (and `created_at` on
/// the first one); the caller's timestamps are ignored.
pub(super) async fn upsert(db: &Db, w: &WorkerRecord) -> Result<WorkerRecord, StoreError> {
    let providers = list_json(&w.providers, "providers")?;
    let capabilities = list_json(&w.capabilities, "capabilities")?;
    let capacity = to_json(&w.capacity, "capacity")?;
    let row = db
        .write("worker", |c| {
            first(
                c,
                "worker",
                UPSERT,
                params![
                    w.id.as_str(),
                    w.hostname,
                    w.status,
                    providers,
                    capabilities,
                    capacity,
                    ts(&now())
                ],
                |r| rows::worker(r),
            )
        })
        .await?;
    found(row, "worker", &w.id)
}
