//! Exec logs: append-only, read newest first.

use rusqlite::params;

use super::db::{all, is_foreign_key, sql_err, Db};
use crate::rows::{self, ts};
use crate::{ExecLog, StoreError};

/// `NotFound` (sandbox) when the sandbox record does not exist.
pub(super) async fn insert(db: &Db, log: &ExecLog) -> Result<(), StoreError> {
    db.write("exec log", |c| {
        c.prepare_cached(
            "INSERT INTO exec_logs \
               (sandbox_id, command, exit_code, stdout, stderr, duration_ms, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )
        .and_then(|mut st| {
            st.execute(params![
                log.sandbox_id.as_str(),
                log.command,
                log.exit_code,
                log.stdout,
                log.stderr,
                log.duration_ms,
                ts(&log.created_at),
            ])
        })
        .map(|_| ())
        .map_err(|e| {
            if is_foreign_key(&e) {
                StoreError::not_found("sandbox", log.sandbox_id.as_str())
            } else {
                sql_err("exec log")(e)
            }
        })
    })
    .await
}

/// Newest first; `limit <= 0` yields nothing ("at most `limit`").
pub(super) fn list(db: &Db, sandbox_id: &str, limit: i64) -> Result<Vec<ExecLog>, StoreError> {
    if limit <= 0 {
        return Ok(Vec::new());
    }
    db.read(|c| {
        all(
            c,
            "exec log",
            "SELECT sandbox_id, command, exit_code, stdout, stderr, duration_ms, created_at \
             FROM exec_logs WHERE sandbox_id = ?1 ORDER BY created_at DESC, id DESC LIMIT ?2",
            params![sandbox_id, limit],
            |r| rows::exec_log(r),
        )
    })
}
