//! Exec logs: append-only, read newest first. Output is stored as BYTEA holding UTF-8, since
//! Postgres TEXT cannot hold the NUL characters command output may contain.

use sqlx::postgres::PgRow;

use super::{col, db_err, ts, ts_col, PgStore};
use crate::{ExecLog, StoreError};

fn text_bytes(row: &PgRow, name: &'static str) -> Result<String, StoreError> {
    let bytes: Vec<u8> = col(row, name)?;
    String::from_utf8(bytes).map_err(|_| StoreError::Corrupt { what: name })
}

fn from_row(row: &PgRow) -> Result<ExecLog, StoreError> {
    Ok(ExecLog {
        sandbox_id: col::<String>(row, "sandbox_id")?.into(),
        command: col(row, "command")?,
        exit_code: col(row, "exit_code")?,
        stdout: text_bytes(row, "stdout")?,
        stderr: text_bytes(row, "stderr")?,
        duration_ms: col(row, "duration_ms")?,
        created_at: ts_col(row, "created_at")?,
    })
}

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
    rows.iter().map(from_row).collect()
}
