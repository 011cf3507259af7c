//! Admission control: TTL caps, global and per-owner sandbox limits, placement, and the spawn
//! queue. Spawns run concurrently; limits stay exact because a spawn reserves its slot under a
//! short lock before the (slow) provider call and releases it once the record is stored.

use std::time::{Duration, Instant};

use stacyvm_store::{InsertLimits, LimitHit, StoreError};
use stacyvm_types::GoDuration;

use super::workers::Placement;
use super::{Pending, QueueStats, Service};
use crate::error::{ServiceError, ServiceResult};
use crate::events::EventData;
use crate::settings::SpawnOverflow;

/// The answer of `POST /sandboxes/admission`. Placement detail is kept for diagnostics but
/// never serialised there: the Python SDK's dataclass rejects unknown keys.
#[derive(Debug, Clone, PartialEq)]
pub struct AdmissionDecision {
    pub allowed: bool,
    pub queueable: bool,
    pub reason: Option<&'static str>,
    pub active_sandboxes: i64,
    pub max_sandboxes: i64,
    pub active_owner_sandboxes: Option<i64>,
    pub max_owner_sandboxes: Option<i64>,
    pub max_ttl: Option<GoDuration>,
    pub placement: Option<Placement>,
}

impl AdmissionDecision {
    /// The 429 message a denied spawn answers with.
    fn limit_message(&self) -> String {
        match self.reason {
            Some("max_ttl") => format!("ttl exceeds max ttl {}", self.max_ttl.unwrap_or_default()),
            Some("max_sandboxes") => format!("max sandboxes reached ({})", self.max_sandboxes),
            Some("max_sandboxes_per_owner") => format!(
                "max sandboxes per owner reached ({})",
                self.max_owner_sandboxes.unwrap_or_default()
            ),
            Some("remote_worker_rpc_unavailable") => {
                "selected worker requires remote worker RPC".to_string()
            }
            _ => "no eligible worker available".to_string(),
        }
    }
}

/// Effective per-owner limits: an owner quota overrides the defaults field by field.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct OwnerLimits {
    pub max_sandboxes: i64,
    pub max_ttl: GoDuration,
    pub max_exec_timeout: GoDuration,
}

/// A reserved admission slot; released by [`Service::release_slot`] or turned into a stored
/// record by [`Service::insert_reserved`].
pub(crate) struct Slot {
    owner: String,
    pub placement: Placement,
    /// The limits admission applied (0 = none); the store checks them again at insert.
    pub max_total: i64,
    pub max_owner: i64,
}

/// Fresh ids drawn when a new sandbox id is already taken.
const ID_ATTEMPTS: usize = 8;

fn unreserve(pending: &mut Pending, owner: &str) {
    pending.total = (pending.total - 1).max(0);
    if !owner.is_empty() {
        if let Some(n) = pending.by_owner.get_mut(owner) {
            *n -= 1;
            if *n <= 0 {
                pending.by_owner.remove(owner);
            }
        }
    }
}

impl Service {
    pub(crate) async fn owner_limits(&self, owner: &str) -> ServiceResult<OwnerLimits> {
        let l = &self.settings.limits;
        let mut out = OwnerLimits {
            max_sandboxes: l.max_sandboxes_per_owner,
            max_ttl: l.max_ttl,
            max_exec_timeout: l.max_exec_timeout,
        };
        if owner.is_empty() {
            return Ok(out);
        }
        match self.store.get_quota(owner).await {
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

    /// Evaluates admission; `pending` adds spawns in flight to the stored counts.
    async fn evaluate(
        &self,
        provider: &str,
        owner: &str,
        ttl: GoDuration,
        pending_total: i64,
        pending_owner: i64,
        report_counts: bool,
    ) -> ServiceResult<AdmissionDecision> {
        let limits = self.owner_limits(owner).await?;
        // Counting costs a query per spawn; skip it when no count limit applies and nobody
        // asked to see the figures (the admission endpoint does).
        let counts = if report_counts
            || self.settings.limits.max_sandboxes > 0
            || limits.max_sandboxes > 0
        {
            self.store
                .count_active_sandboxes(Some(owner).filter(|o| !o.is_empty()))
                .await?
        } else {
            stacyvm_store::ActiveCounts::default()
        };
        let queue_mode = self.settings.limits.spawn_overflow == SpawnOverflow::Queue;
        let mut d = AdmissionDecision {
            allowed: true,
            queueable: false,
            reason: None,
            active_sandboxes: counts.total + pending_total,
            max_sandboxes: self.settings.limits.max_sandboxes,
            active_owner_sandboxes: None,
            max_owner_sandboxes: None,
            max_ttl: (!limits.max_ttl.is_zero()).then_some(limits.max_ttl),
            placement: None,
        };
        if !owner.is_empty() {
            d.active_owner_sandboxes = Some(counts.owner + pending_owner);
            if limits.max_sandboxes > 0 {
                d.max_owner_sandboxes = Some(limits.max_sandboxes);
            }
        }
        if !limits.max_ttl.is_zero() && ttl > limits.max_ttl {
            d.allowed = false;
            d.reason = Some("max_ttl");
            return Ok(d);
        }
        let placement = self.place(provider).await?;
        let placed_ok = placement.worker_id.is_some();
        let rpc_missing = placement.rpc_unavailable;
        d.placement = Some(placement);
        if !placed_ok {
            d.allowed = false;
            d.reason = Some("worker_unavailable");
            return Ok(d);
        }
        if rpc_missing {
            d.allowed = false;
            d.reason = Some("remote_worker_rpc_unavailable");
            return Ok(d);
        }
        if d.max_sandboxes > 0 && d.active_sandboxes >= d.max_sandboxes {
            d.allowed = false;
            d.queueable = queue_mode;
            d.reason = Some("max_sandboxes");
            return Ok(d);
        }
        if let (Some(active), Some(max)) = (d.active_owner_sandboxes, d.max_owner_sandboxes) {
            if active >= max {
                d.allowed = false;
                d.queueable = queue_mode;
                d.reason = Some("max_sandboxes_per_owner");
            }
        }
        Ok(d)
    }

    /// `POST /sandboxes/admission`: what would happen, without reserving anything.
    pub async fn admission(
        &self,
        provider: &str,
        owner: &str,
        ttl: GoDuration,
    ) -> ServiceResult<AdmissionDecision> {
        let pending = self.pending.lock().await;
        let po = pending.by_owner.get(owner).copied().unwrap_or(0);
        let total = pending.total;
        drop(pending);
        self.evaluate(provider, owner, ttl, total, po, true).await
    }

    /// Admits a spawn (waiting in the queue when configured) and reserves its slot.
    pub(crate) async fn reserve_slot(
        &self,
        provider: &str,
        owner: &str,
        ttl: GoDuration,
    ) -> ServiceResult<Slot> {
        let mut queued_at: Option<Instant> = None;
        let deadline = self
            .settings
            .limits
            .spawn_queue_timeout
            .to_std()
            .unwrap_or_default();
        loop {
            // Register for wake-ups before checking, so a destroy in between is not missed.
            let notified = self.capacity_freed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut pending = self.pending.lock().await;
                let po = pending.by_owner.get(owner).copied().unwrap_or(0);
                let d = self
                    .evaluate(provider, owner, ttl, pending.total, po, false)
                    .await?;
                if d.allowed {
                    pending.total += 1;
                    if !owner.is_empty() {
                        *pending.by_owner.entry(owner.to_string()).or_insert(0) += 1;
                    }
                    drop(pending);
                    if let Some(t) = queued_at {
                        self.dequeued(provider, owner, t.elapsed());
                    }
                    let placement = d.placement.unwrap_or_else(Placement::local);
                    return Ok(Slot {
                        owner: owner.to_string(),
                        placement,
                        max_total: d.max_sandboxes.max(0),
                        max_owner: d.max_owner_sandboxes.unwrap_or(0),
                    });
                }
                let queue_mode = self.settings.limits.spawn_overflow == SpawnOverflow::Queue;
                if !(d.queueable && queue_mode) {
                    if let Some(t) = queued_at {
                        self.leave_queue(t.elapsed());
                    }
                    self.events.publish(
                        "resource.limit",
                        None,
                        Some(EventData::failure("spawn", provider, d.limit_message())),
                    );
                    return Err(ServiceError::ResourceLimit(d.limit_message()));
                }
                if queued_at.is_none() {
                    let max = self.settings.limits.max_spawn_queue;
                    let mut q = self
                        .queue
                        .lock()
                        .map_err(|_| ServiceError::internal("queue lock"))?;
                    if max > 0 && q.depth >= max {
                        return Err(ServiceError::ResourceLimit(format!(
                            "spawn queue full ({max})"
                        )));
                    }
                    q.depth += 1;
                    q.queued_total += 1;
                    let depth = q.depth;
                    drop(q);
                    queued_at = Some(Instant::now());
                    self.events.publish(
                        "spawn.queued",
                        None,
                        Some(EventData::Queue {
                            depth: Some(depth),
                            error: None,
                            operation: "spawn",
                            owner_id: owner.to_string(),
                            provider: provider.to_string(),
                            wait_ms: None,
                        }),
                    );
                }
            }
            let waited = queued_at.map(|t| t.elapsed()).unwrap_or_default();
            let remaining = deadline.saturating_sub(waited);
            if remaining.is_zero() || tokio::time::timeout(remaining, notified).await.is_err() {
                let waited = queued_at.map(|t| t.elapsed()).unwrap_or_default();
                self.leave_queue(waited);
                if let Ok(mut q) = self.queue.lock() {
                    q.timeouts += 1;
                }
                let msg = format!(
                    "spawn queue timeout after {}",
                    self.settings.limits.spawn_queue_timeout
                );
                self.events.publish(
                    "spawn.queue_timeout",
                    None,
                    Some(EventData::Queue {
                        depth: None,
                        error: Some(msg.clone()),
                        operation: "spawn",
                        owner_id: owner.to_string(),
                        provider: provider.to_string(),
                        wait_ms: Some(waited.as_millis() as u64),
                    }),
                );
                return Err(ServiceError::ResourceLimit(msg));
            }
        }
    }

    fn leave_queue(&self, waited: Duration) {
        if let Ok(mut q) = self.queue.lock() {
            q.depth = (q.depth - 1).max(0);
            let ms = waited.as_secs_f64() * 1000.0;
            q.wait_count += 1;
            q.wait_total_ms += ms;
            q.wait_max_ms = q.wait_max_ms.max(ms);
        }
    }

    fn dequeued(&self, provider: &str, owner: &str, waited: Duration) {
        self.leave_queue(waited);
        if let Ok(mut q) = self.queue.lock() {
            q.dequeued_total += 1;
        }
        self.events.publish(
            "spawn.dequeued",
            None,
            Some(EventData::Queue {
                depth: None,
                error: None,
                operation: "spawn",
                owner_id: owner.to_string(),
                provider: provider.to_string(),
                wait_ms: Some(waited.as_millis() as u64),
            }),
        );
    }

    pub(crate) async fn release_slot(&self, slot: Slot) {
        let mut pending = self.pending.lock().await;
        unreserve(&mut pending, &slot.owner);
    }

    /// Stores the spawn's first record and drops its reservation in one step, as seen by
    /// admission: from then on the stored row counts instead, never both. The store checks
    /// the limits again in the same step as the insert, which keeps them exact across control
    /// planes sharing the database: `Ok(Err(hit))` when another one took the last slot since
    /// this one counted. `max_worker` is the chosen remote worker's capacity (0 = none).
    pub(crate) async fn insert_reserved(
        &self,
        slot: Slot,
        sb: &mut stacyvm_types::Sandbox,
        max_worker: i64,
    ) -> ServiceResult<Result<(), (LimitHit, i64)>> {
        let limits = InsertLimits {
            created_by: &self.instance_id,
            max_total: slot.max_total,
            max_owner: slot.max_owner,
            max_worker,
        };
        let mut pending = self.pending.lock().await;
        let mut res = self.store.insert_sandbox_limited(sb, &limits).await;
        // Ids carry 32 random bits (the SDK-frozen `sb-xxxxxxxx`) and rows are kept after
        // destroy, so a fresh id can meet an old one: draw again. Nothing else was made yet.
        for _ in 0..ID_ATTEMPTS {
            if !matches!(res, Err(StoreError::Conflict(_))) {
                break;
            }
            sb.id = stacyvm_types::new_sandbox_id();
            res = self.store.insert_sandbox_limited(sb, &limits).await;
        }
        unreserve(&mut pending, &slot.owner);
        drop(pending);
        match res {
            Ok(()) => Ok(Ok(())),
            Err(StoreError::LimitReached(hit)) => {
                let limit = match hit {
                    LimitHit::Total => limits.max_total,
                    LimitHit::Owner => limits.max_owner,
                    LimitHit::Worker => limits.max_worker,
                };
                Ok(Err((hit, limit)))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The spawn queue's figures so far.
    pub(crate) fn queue_stats(&self) -> QueueStats {
        self.queue.lock().map(|q| q.clone()).unwrap_or_default()
    }
}
