//! Admin audit trail: append, filtered listing, pruning by age.

use stacyvm_types::Timestamp;

use super::PgStore;
use crate::rows::{self, ts};
use crate::{AdminAuditRecord, AuditFilter, NewAdminAudit, StoreError};

const WHAT: &str = "admin audit record";

/// `created_at` is the database clock at insert.
pub(super) async fn insert(db: &PgStore, rec: &NewAdminAudit) -> Result<(), StoreError> {
    let q = sqlx::query(concat!(
        "INSERT INTO admin_audit_logs (actor, method, path, status, duration_ms, request_id, \
           remote_addr, user_agent, tenant_id, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, ",
        now_ts!(),
        ")"
    ))
    .bind(&rec.actor)
    .bind(&rec.method)
    .bind(&rec.path)
    .bind(rec.status)
    .bind(rec.duration_ms)
    .bind(&rec.request_id)
    .bind(&rec.remote_addr)
    .bind(&rec.user_agent)
    .bind(&rec.tenant_id);
    db.execute(WHAT, q).await.map(drop)
}

/// Newest first. Empty strings and `None` match everything; `limit <= 0` means no limit
/// (`LIMIT NULL`; the API layer applies its own default and cap).
pub(super) async fn list(
    db: &PgStore,
    f: &AuditFilter,
) -> Result<Vec<AdminAuditRecord>, StoreError> {
    let q = sqlx::query(
        "SELECT id, actor, method, path, status, duration_ms, request_id, remote_addr, \
           user_agent, tenant_id, created_at \
         FROM admin_audit_logs \
         WHERE ($1 = '' OR actor = $1) AND ($2 = '' OR method = $2) AND ($3 = '' OR path = $3) \
           AND ($4::BIGINT IS NULL OR status = $4) \
         ORDER BY created_at DESC, id DESC LIMIT $5",
    )
    .bind(&f.actor)
    .bind(&f.method)
    .bind(&f.path)
    .bind(f.status)
    .bind((f.limit > 0).then_some(f.limit));
    db.fetch_all(WHAT, q, rows::admin_audit).await
}

pub(super) async fn prune(db: &PgStore, before: Timestamp) -> Result<u64, StoreError> {
    let q = sqlx::query("DELETE FROM admin_audit_logs WHERE created_at < $1").bind(ts(&before));
    db.execute(WHAT, q).await
}
