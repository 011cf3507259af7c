//! Worker registry rows, written by heartbeats.

use std::sync::LazyLock;

use rusqlite::params;

use super::db::{all, first, found, Db};
use super::now;
use crate::rows::{self, list_json, to_json, ts};
use crate::{StoreError, WorkerRecord};

const COLUMNS: &str = "id, hostname, status, providers, capabilities, capacity, last_heartbeat, \
     created_at, updated_at";

static UPSERT: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO workers ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?7) \
         ON CONFLICT (id) DO UPDATE SET \
           hostname = excluded.hostname, status = excluded.status, \
           providers = excluded.providers, capabilities = excluded.capabilities, \
           capacity = excluded.capacity, last_heartbeat = excluded.last_heartbeat, \
           updated_at = excluded.updated_at \
         RETURNING {COLUMNS}"
    )
});
static GET: LazyLock<String> =
    LazyLock::new(|| format!("SELECT {COLUMNS} FROM workers WHERE id = ?1"));
static LIST: LazyLock<String> =
    LazyLock::new(|| format!("SELECT {COLUMNS} FROM workers ORDER BY id"));

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
                &UPSERT,
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

pub(super) fn get(db: &Db, id: &str) -> Result<WorkerRecord, StoreError> {
    db.get_keyed("worker", &GET, id, |r| rows::worker(r))
}

pub(super) fn list(db: &Db) -> Result<Vec<WorkerRecord>, StoreError> {
    db.read(|c| all(c, "worker", &LIST, [], |r| rows::worker(r)))
}

pub(super) async fn delete(db: &Db, id: &str) -> Result<(), StoreError> {
    db.delete_keyed("worker", "DELETE FROM workers WHERE id = ?1", id)
        .await
}
