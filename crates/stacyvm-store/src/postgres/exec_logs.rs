//! Exec logs: append-only, read newest first. Output is stored as BYTEA holding UTF-8, since
//! Postgres TEXT cannot hold the NUL characters command output may contain.

use super::{db_err, PgStore};
use crate::rows::{self, ts};
use crate::{ExecLog, StoreError};

/// `NotFound` (sandbox) when the sandbox record does not exist.
pub(super) async fn insert(db: &PgStore, log: &ExecLog) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO exec_logs \
           (sandbox_id, command, exit_code, stdout, stderr, duration_ms, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
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

/// Newest first; `limit <= 0` yields nothing ("at most `limit`").
pub(super) async fn list(
    db: &PgStore,
    sandbox_id: &str,
    limit: i64,
) -> Result<Vec<ExecLog>, StoreError> {
    if limit <= 0 {
        return Ok(Vec::new());
    }
    let rows = sqlx::query(
        "SELECT sandbox_id, command, exit_code, stdout, stderr, duration_ms, created_at \
         FROM exec_logs WHERE sandbox_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2",
    )
    .bind(sandbox_id)
    .bind(limit)
    .fetch_all(&db.pool)
    .await
    .map_err(db_err("exec log"))?;
    rows.iter().map(rows::exec_log).collect()
}
