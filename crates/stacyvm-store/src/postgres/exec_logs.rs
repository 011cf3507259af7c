//! Exec logs: append-only, read newest first. Output is stored as BYTEA holding UTF-8, since
//! Postgres TEXT cannot hold the NUL characters command output may contain.

use super::{db_err, PgStore};
use crate::rows::{self, ts};
use crate::statements::exec_logs::{INSERT, LIST};
use crate::{ExecLog, StoreError};

/// `NotFound` (sandbox) when the sandbox record does not exist.
pub(super) async fn insert(db: &PgStore, log: &ExecLog) -> Result<(), StoreError> {
    sqlx::query(INSERT)
        .bind(log.sandbox_id.as_str())
        .bind(&log.command)
        .bind(log.exit_code)
        .bind(log.stdout.as_bytes())
        .bind(log.stderr.as_bytes())
        .bind(log.duration_ms)
        .bind(ts(&log.created_at))
        .execute(&db.pool)
        .await
        .map_err(|e| match e {
            sqlx::Error::Database(ref d) if d.is_foreign_key_violation() => {
                StoreError::not_found("sandbox", log.sandbox_id.as_str())
            }
            other => db_err("exec log")(other),
        })?;
    Ok(())
}

/// Newest first, at most `limit` (> 0).
pub(super) async fn list(
    db: &PgStore,
    sandbox_id: &str,
    limit: i64,
) -> Result<Vec<ExecLog>, StoreError> {
    let q = sqlx::query(LIST).bind(sandbox_id).bind(limit);
    db.fetch_all("exec log", q, rows::exec_log).await
}
