//! Exec logs: append-only, read newest first.

use sqlx::sqlite::SqliteRow;

use super::{col, db_err, ts, ts_col, SqliteStore};
use crate::{ExecLog, StoreError};

fn from_row(row: &SqliteRow) -> Result<ExecLog, StoreError> {
    Ok(ExecLog {
        sandbox_id: col(row, "sandbox_id")?,
        command: col(row, "command")?,
        exit_code: col(row, "exit_code")?,
        stdout: col(row, "stdout")?,
        stderr: col(row, "stderr")?,
        duration_ms: col(row, "duration_ms")?,
        created_at: ts_col(row, "created_at")?,
    })
}

/// `NotFound` (sandbox) when the sandbox record does not exist.
pub(super) async fn insert(db: &SqliteStore, log: &ExecLog) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO exec_logs \
           (sandbox_id, command, exit_code, stdout, stderr, duration_ms, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )
    .bind(&log.sandbox_id)
    .bind(&log.command)
    .bind(log.exit_code)
    .bind(&log.stdout)
    .bind(&log.stderr)
    .bind(log.duration_ms)
    .bind(ts(&log.created_at))
    .execute(&db.writer)
    .await
    .map_err(|e| match e {
        sqlx::Error::Database(ref d) if d.is_foreign_key_violation() => {
            StoreError::not_found("sandbox", &log.sandbox_id)
        }
        other => db_err("exec log")(other),
    })?;
    Ok(())
}

/// Newest first; `limit <= 0` yields nothing ("at most `limit`").
pub(super) async fn list(
    db: &SqliteStore,
    sandbox_id: &str,
    limit: i64,
) -> Result<Vec<ExecLog>, StoreError> {
    if limit <= 0 {
        return Ok(Vec::new());
    }
    let rows = sqlx::query(
        "SELECT sandbox_id, command, exit_code, stdout, stderr, duration_ms, created_at \
         FROM exec_logs WHERE sandbox_id = ?1 ORDER BY created_at DESC, id DESC LIMIT ?2",
    )
    .bind(sandbox_id)
    .bind(limit)
    .fetch_all(&db.reader)
    .await
    .map_err(db_err("exec log"))?;
    rows.iter().map(from_row).collect()
}
