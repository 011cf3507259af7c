//! Per-owner quotas and usage.

use stacyvm_store::OwnerQuota;
use stacyvm_types::{parse_go_duration, validate_owner_id, EventKind, GoDuration};

use super::Service;
use crate::error::{ServiceError, ServiceResult};
use crate::events::EventData;

/// Effective per-owner limits: an owner quota overrides the defaults field by field.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct OwnerLimits {
    pub max_sandboxes: i64,
    pub max_ttl: GoDuration,
    pub max_exec_timeout: GoDuration,
}

#[derive(Debug, Clone, Default)]
pub struct QuotaInput {
    pub max_sandboxes: i64,
    pub max_ttl: String,
    pub max_exec_timeout: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaSummary {
    pub total: i64,
    pub with_max_sandboxes: i64,
    pub with_max_ttl: i64,
    pub with_max_exec_timeout: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OwnerUsage {
    pub owner_id: String,
    pub active_sandboxes: i64,
    pub max_sandboxes: i64,
    pub max_ttl: GoDuration,
    pub max_exec_timeout: GoDuration,
    pub quota_configured: bool,
}

/// `""`, `"0"`, `"0s"` = unset; otherwise whole seconds, at least one.
fn quota_secs(field: &str, raw: &str) -> ServiceResult<i64> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(0);
    }
    let d =
        parse_go_duration(raw).map_err(|e| ServiceError::bad_request(format!("{field}: {e}")))?;
    if d.is_zero() {
        return Ok(0);
    }
    if d.is_negative() || d.nanos() % 1_000_000_000 != 0 || d.whole_secs() < 1 {
        return Err(ServiceError::bad_request(format!(
            "{field} must be a whole number of seconds, at least 1s"
        )));
    }
    Ok(d.whole_secs())
}

pub(crate) fn owner(raw: &str) -> ServiceResult<String> {
    validate_owner_id(raw).map_err(|e| ServiceError::bad_request(format!("owner_id {e}")))
}

/// Per-owner quotas and the limits they give.
#[derive(Clone, Copy)]
pub struct Quotas<'a> {
    svc: &'a Service,
}

impl Service {
    pub fn quotas(&self) -> Quotas<'_> {
        Quotas { svc: self }
    }
}

impl Quotas<'_> {
    pub async fn put(self, owner_id: &str, input: QuotaInput) -> ServiceResult<OwnerQuota> {
        let owner_id = owner(owner_id)?;
        if input.max_sandboxes < 0 {
            return Err(ServiceError::bad_request(
                "max_sandboxes must not be negative",
            ));
        }
        let now = chrono::Utc::now();
        let q = OwnerQuota {
            owner_id: owner_id.clone(),
            max_sandboxes: input.max_sandboxes,
            max_ttl_seconds: quota_secs("max_ttl", &input.max_ttl)?,
            max_exec_timeout_seconds: quota_secs("max_exec_timeout", &input.max_exec_timeout)?,
            created_at: now,
            updated_at: now,
        };
        let stored = self.svc.store.upsert_quota(&q).await?;
        self.svc.events.publish(
            EventKind::QuotaSaved,
            None,
            Some(EventData::QuotaSaved {
                max_exec_timeout: GoDuration::from_secs(stored.max_exec_timeout_seconds)
                    .to_string(),
                max_sandboxes: stored.max_sandboxes,
                max_ttl: GoDuration::from_secs(stored.max_ttl_seconds).to_string(),
                owner_id: stored.owner_id.clone(),
            }),
        );
        self.svc.admission().wake();
        Ok(stored)
    }

    pub async fn get(self, owner_id: &str) -> ServiceResult<OwnerQuota> {
        Ok(self.svc.store.get_quota(&owner(owner_id)?).await?)
    }

    pub async fn list(self) -> ServiceResult<Vec<OwnerQuota>> {
        Ok(self.svc.store.list_quotas().await?)
    }

    pub async fn delete(self, owner_id: &str) -> ServiceResult<()> {
        let owner_id = owner(owner_id)?;
        self.svc.store.delete_quota(&owner_id).await?;
        self.svc.events.publish(
            EventKind::QuotaDeleted,
            None,
            Some(EventData::QuotaDeleted { owner_id }),
        );
        self.svc.admission().wake();
        Ok(())
    }

    pub async fn summary(self) -> ServiceResult<QuotaSummary> {
        let qs = self.svc.store.list_quotas().await?;
        let count = |f: fn(&OwnerQuota) -> bool| qs.iter().filter(|q| f(q)).count() as i64;
        Ok(QuotaSummary {
            total: qs.len() as i64,
            with_max_sandboxes: count(|q| q.max_sandboxes > 0),
            with_max_ttl: count(|q| q.max_ttl_seconds > 0),
            with_max_exec_timeout: count(|q| q.max_exec_timeout_seconds > 0),
        })
    }

    pub async fn usage(self, owner_id: &str) -> ServiceResult<OwnerUsage> {
        let owner_id = owner(owner_id)?;
        let limits = self.limits_for(&owner_id).await?;
        let configured = match self.svc.store.get_quota(&owner_id).await {
            Ok(_) => true,
            Err(e) if e.is_not_found() => false,
            Err(e) => return Err(e.into()),
        };
        let counts = self
            .svc
            .store
            .count_active_sandboxes(Some(&owner_id))
            .await?;
        Ok(OwnerUsage {
            owner_id,
            active_sandboxes: counts.owner,
            max_sandboxes: limits.max_sandboxes,
            max_ttl: limits.max_ttl,
            max_exec_timeout: limits.max_exec_timeout,
            quota_configured: configured,
        })
    }

    /// The limits that apply to `owner`: its quota overrides the defaults field by field.
    pub(crate) async fn limits_for(self, owner: &str) -> ServiceResult<OwnerLimits> {
        let l = &self.svc.settings.limits;
        let mut out = OwnerLimits {
            max_sandboxes: l.max_sandboxes_per_owner,
            max_ttl: l.max_ttl,
            max_exec_timeout: l.max_exec_timeout,
        };
        if owner.is_empty() {
            return Ok(out);
        }
        match self.svc.store.get_quota(owner).await {
            Ok(q) => {
                if q.max_sandboxes > 0 {
                    out.max_sandboxes = q.max_sandboxes;
                }
                if q.max_ttl_seconds > 0 {
                    out.max_ttl = GoDuration::from_secs(q.max_ttl_seconds);
                }
                if q.max_exec_timeout_seconds > 0 {
                    out.max_exec_timeout = GoDuration::from_secs(q.max_exec_timeout_seconds);
                }
                Ok(out)
            }
            Err(e) if e.is_not_found() => Ok(out),
            Err(e) => Err(e.into()),
        }
    }
}
