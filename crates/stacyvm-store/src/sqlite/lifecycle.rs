//! Pause, resume and activity of sandbox records (docs/state.md). Each is one compare-and-set
//! UPDATE on the writer; a refusal is explained from the row re-read in the same transaction.

use std::sync::LazyLock;

use rusqlite::params;
use stacyvm_types::{Sandbox, SandboxState, Timestamp};

use super::db::{first, Db};
use super::now;
use super::sandboxes::{get_on, returning, COLUMNS};
use crate::rows::ts;
use crate::StoreError;

static PAUSE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE sandboxes SET state = 'paused', paused_at = ?2, updated_at = ?3 \
         WHERE id = ?1 AND state = 'running' RETURNING {COLUMNS}"
    )
});
static RESUME: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE sandboxes SET state = 'running', paused_at = '', expires_at = ?2, \
         updated_at = ?3 WHERE id = ?1 AND state = 'paused' RETURNING {COLUMNS}"
    )
});
/// Only moves forward, and only on live rows: a late flush never hides newer activity.
const TOUCH: &str = "UPDATE sandboxes SET last_active_at = ?2 \
     WHERE id = ?1 AND state <> 'destroyed' AND last_active_at < ?2";
const COUNT_PAUSED: &str = "SELECT COUNT(*) FROM sandboxes WHERE state = 'paused'";

/// Runs a state-moving update; when it matched nothing the record is re-read: already in
/// `to` is success (idempotent), anything else an invalid transition.
async fn moved(
    db: &Db,
    id: &str,
    sql: &str,
    at: String,
    to: SandboxState,
) -> Result<Sandbox, StoreError> {
    let stamp = ts(&now());
    db.write("sandbox", |c| {
        if let Some(sb) = returning(c, sql, params![id, at, stamp])? {
            return Ok(sb);
        }
        StoreError::unmoved(get_on(c, id)?, to)
    })
    .await
}

pub(super) async fn pause(db: &Db, id: &str, at: Timestamp) -> Result<Sandbox, StoreError> {
    moved(db, id, &PAUSE, ts(&at), SandboxState::Paused).await
}

pub(super) async fn resume(
    db: &Db,
    id: &str,
    expires_at: Timestamp,
) -> Result<Sandbox, StoreError> {
    moved(db, id, &RESUME, ts(&expires_at), SandboxState::Running).await
}

pub(super) async fn touch(db: &Db, id: &str, at: Timestamp) -> Result<(), StoreError> {
    db.execute("sandbox", TOUCH, (id, ts(&at))).await.map(drop)
}

pub(super) async fn count_paused(db: &Db) -> Result<i64, StoreError> {
    let n = db.read(|c| {
        first(c, "sandbox count", COUNT_PAUSED, [], |r| {
            r.get(0).map_err(|_| StoreError::Corrupt { what: "count" })
        })
    })?;
    Ok(n.unwrap_or(0))
}
