//! Pause, resume and activity of sandbox records (docs/state.md). Each is one compare-and-set
//! UPDATE; under READ COMMITTED a concurrent writer's row lock makes it wait and re-check its
//! WHERE clause, and a refusal is explained from the row read afterwards.

use std::sync::LazyLock;

use stacyvm_types::{Sandbox, SandboxState, Timestamp};

use super::sandboxes::{get, update_returning, COLUMNS};
use super::{db_err, PgStore};
use crate::rows::ts;
use crate::StoreError;

static PAUSE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE sandboxes SET state = 'paused', paused_at = $2, updated_at = {} \
         WHERE id = $1 AND state = 'running' RETURNING {COLUMNS}",
        now_ts!()
    )
});
static RESUME: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE sandboxes SET state = 'running', paused_at = '', expires_at = $2, \
         updated_at = {} WHERE id = $1 AND state = 'paused' RETURNING {COLUMNS}",
        now_ts!()
    )
});
/// Only moves forward, and only on live rows: a late flush never hides newer activity.
const TOUCH: &str = "UPDATE sandboxes SET last_active_at = $2 \
     WHERE id = $1 AND state <> 'destroyed' AND last_active_at < $2";
const COUNT_PAUSED: &str = "SELECT COUNT(*) FROM sandboxes WHERE state = 'paused'";

/// Runs a state-moving update; when it matched nothing the record is re-read: already in
/// `to` is success (idempotent), anything else an invalid transition.
async fn moved(
    db: &PgStore,
    id: &str,
    sql: &str,
    at: Timestamp,
    to: SandboxState,
) -> Result<Sandbox, StoreError> {
    if let Some(sb) = update_returning(db, sql, id, &ts(&at)).await? {
        return Ok(sb);
    }
    StoreError::unmoved(get(db, id).await?, to)
}

pub(super) async fn pause(db: &PgStore, id: &str, at: Timestamp) -> Result<Sandbox, StoreError> {
    moved(db, id, &PAUSE, at, SandboxState::Paused).await
}

pub(super) async fn resume(
    db: &PgStore,
    id: &str,
    expires_at: Timestamp,
) -> Result<Sandbox, StoreError> {
    moved(db, id, &RESUME, expires_at, SandboxState::Running).await
}

pub(super) async fn touch(db: &PgStore, id: &str, at: Timestamp) -> Result<(), StoreError> {
    let q = sqlx::query(TOUCH).bind(id).bind(ts(&at));
    db.execute("sandbox", q).await.map(drop)
}

pub(super) async fn count_paused(db: &PgStore) -> Result<i64, StoreError> {
    let (n,): (i64,) = sqlx::query_as(COUNT_PAUSED)
        .fetch_one(&db.pool)
        .await
        .map_err(db_err("sandbox count"))?;
    Ok(n)
}
