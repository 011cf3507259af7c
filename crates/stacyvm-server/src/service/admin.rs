//! The admin audit log: every admin request is recorded after it ran, and admins read it back.

use stacyvm_store::{AdminAuditRecord, AuditFilter, NewAdminAudit};

use super::Service;
use crate::error::{ServiceError, ServiceResult};

/// Rows returned when the caller does not say.
const DEFAULT_AUDIT_LIMIT: i64 = 100;
/// Most rows one read returns.
const MAX_AUDIT_LIMIT: i64 = 500;

/// Which audit rows to read; empty strings match everything.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// Positive; `None` = 100, capped at 500.
    pub limit: Option<i64>,
    pub actor: String,
    pub method: String,
    pub path: String,
    /// An HTTP status code.
    pub status: Option<i64>,
}

/// The admin audit log.
#[derive(Clone, Copy)]
pub struct Admin<'a> {
    svc: &'a Service,
}

impl Service {
    pub fn admin(&self) -> Admin<'_> {
        Admin { svc: self }
    }
}

impl Admin<'_> {
    /// The newest audit rows matching `q`, newest first.
    pub async fn audit(self, q: AuditQuery) -> ServiceResult<Vec<AdminAuditRecord>> {
        let limit = match q.limit {
            None => DEFAULT_AUDIT_LIMIT,
            Some(n) if n > 0 => n.min(MAX_AUDIT_LIMIT),
            Some(_) => {
                return Err(ServiceError::bad_request(
                    "limit must be a positive integer",
                ))
            }
        };
        if q.status.is_some_and(|s| !(100..600).contains(&s)) {
            return Err(ServiceError::bad_request(
                "status must be an HTTP status code",
            ));
        }
        let filter = AuditFilter {
            limit,
            actor: q.actor,
            method: q.method,
            path: q.path,
            status: q.status,
        };
        Ok(self.svc.store.list_admin_audit(&filter).await?)
    }

    /// Records one admin request and drops rows older than `admin_audit_retention`. Failures
    /// are logged: the request itself already ran.
    pub async fn record(self, rec: NewAdminAudit) {
        if let Err(e) = self.svc.store.insert_admin_audit(&rec).await {
            tracing::warn!(error = %e, "admin audit record not stored");
        }
        let retention = self.svc.settings.admin_audit_retention;
        if !retention.is_zero() {
            let before = chrono::Utc::now() - retention.to_chrono();
            if let Err(e) = self.svc.store.prune_admin_audit(before).await {
                tracing::warn!(error = %e, "admin audit prune failed");
            }
        }
    }
}
