//! Exec logs: append-only, read newest first.

use rusqlite::params;

use super::db::{all, is_foreign_key, sql_err, Db};
use crate::rows::{self, ts};
use crate::statements::exec_logs::{INSERT, LIST};
use crate::{ExecLog, StoreError};

/// `NotFound` (sandbox) when the sandbox record does not exist.
pub(super) async fn insert(db: &Db, log: &ExecLog) -> Result<(), StoreError> {
    db.write("exec log", |c| {
        c.prepare_cached(INSERT)
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

/// Newest first, at most `limit` (> 0).
pub(super) async fn list(
    db: &Db,
    sandbox_id: &str,
    limit: i64,
) -> Result<Vec<ExecLog>, StoreError> {
    db.read(|c| {
        all(c, "exec log", LIST, params![sandbox_id, limit], |r| {
            rows::exec_log(r)
        })
    })
}
