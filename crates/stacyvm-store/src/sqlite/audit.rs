//! Admin audit trail: append, filtered listing, pruning by age.

use rusqlite::params;
use stacyvm_types::Timestamp;

use super::db::{all, exec, Db};
use super::now;
use crate::rows::{self, ts};
use crate::{AdminAuditRecord, AuditFilter, NewAdminAudit, StoreError};

const WHAT: &str = "admin audit record";

/// `created_at` is the store's clock at insert.
pub(super) async fn insert(db: &Db, rec: &NewAdminAudit) -> Result<(), StoreError> {
    let sql = "INSERT INTO admin_audit_logs (actor, method, path, status, duration_ms, \
                 request_id, remote_addr, user_agent, tenant_id, created_at) \
               VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)";
    db.write(WHAT, |c| {
        let params = (
            &rec.actor,
            &rec.method,
            &rec.path,
            rec.status,
            rec.duration_ms,
            &rec.request_id,
            &rec.remote_addr,
            &rec.user_agent,
            &rec.tenant_id,
            ts(&now()),
        );
        exec(c, WHAT, sql, params).map(drop)
    })
    .await
}

/// Newest first. Empty strings and `None` match everything; `limit <= 0` means no limit (the
/// API layer applies its own default and cap).
pub(super) async fn list(db: &Db, f: &AuditFilter) -> Result<Vec<AdminAuditRecord>, StoreError> {
    db.read(|c| {
        all(
            c,
            WHAT,
            "SELECT id, actor, method, path, status, duration_ms, request_id, remote_addr, \
               user_agent, tenant_id, created_at \
             FROM admin_audit_logs \
             WHERE (?1 = '' OR actor = ?1) AND (?2 = '' OR method = ?2) \
               AND (?3 = '' OR path = ?3) AND (?4 IS NULL OR status = ?4) \
             ORDER BY created_at DESC, id DESC LIMIT ?5",
            params![
                f.actor,
                f.method,
                f.path,
                f.status,
                if f.limit > 0 { f.limit } else { -1 }
            ],
            |r| rows::admin_audit(r),
        )
    })
}

pub(super) async fn prune(db: &Db, before: Timestamp) -> Result<u64, StoreError> {
    let sql = "DELETE FROM admin_audit_logs WHERE created_at < ?1";
    let n = db.execute(WHAT, sql, [ts(&before)]).await?;
    Ok(n as u64)
}
