//! Admission control: TTL caps, global and per-owner sandbox limits, placement, and the spawn
//! queue. A spawn attempt calls [`Admission::admit`] once and gets a [`Slot`]: the slot either
//! becomes the stored record ([`Slot::record`]) or is released when dropped. Spawns run
//! concurrently; limits stay exact because the slot is reserved under a short lock before the
//! (slow) provider call and released in the same step that stores the record.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use stacyvm_store::{InsertLimits, LimitHit, StoreError};
use stacyvm_types::{EventKind, GoDuration, Sandbox, WorkerId};
use tokio::sync::Notify;

use super::placement::Placement;
use super::Service;
use crate::error::{ServiceError, ServiceResult};
use crate::events::EventData;
use crate::settings::SpawnOverflow;

/// Admission's share of the service state.
#[derive(Default)]
pub(super) struct State {
    /// Reservations not yet visible in the store (spawns in flight). Held across the count and
    /// the insert, so a spawn is counted once: as pending or as a row, never both or neither.
    pending: tokio::sync::Mutex<Pending>,
    /// Woken when capacity may have freed (destroy, quota change, failed spawn).
    capacity_freed: Notify,
    queue: Mutex<QueueStats>,
}

#[derive(Default)]
struct Pending {
    total: i64,
    by_owner: HashMap<String, i64>,
}

impl Pending {
    fn reserve(&mut self, owner: &str) {
        self.total += 1;
        if !owner.is_empty() {
            *self.by_owner.entry(owner.to_string()).or_insert(0) += 1;
        }
    }

    fn release(&mut self, owner: &str) {
        self.total = (self.total - 1).max(0);
        if !owner.is_empty() {
            if let Some(n) = self.by_owner.get_mut(owner) {
                *n -= 1;
                if *n <= 0 {
                    self.by_owner.remove(owner);
                }
            }
        }
    }
}

/// Spawn-queue figures since start (for `/metrics`, `/diagnostics`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueueStats {
    pub depth: i64,
    pub queued_total: u64,
    pub dequeued_total: u64,
    pub timeouts: u64,
    pub wait_count: u64,
    pub wait_total_ms: f64,
    pub wait_max_ms: f64,
}

/// The answer of `POST /sandboxes/admission`. Placement detail is kept for diagnostics; the
/// HTTP view does not show it.
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

/// A reserved admission slot: turned into the stored record by [`Slot::record`], released
/// when dropped otherwise (a failed or abandoned spawn).
pub(super) struct Slot<'a> {
    svc: &'a Service,
    owner: String,
    pub placement: Placement,
    /// The limits admission applied (0 = none); the store checks them again at insert.
    max_total: i64,
    max_owner: i64,
    /// Still counted in `pending`.
    held: bool,
}

/// The store refused the record: another control plane took the last slot of `hit` (whose
/// limit is `limit`) since this one counted.
pub(super) struct Raced {
    pub hit: LimitHit,
    pub limit: i64,
}

/// Fresh ids drawn when a new sandbox id is already taken.
const ID_ATTEMPTS: usize = 8;

impl<'a> Slot<'a> {
    /// Stores the spawn's first record and drops the reservation in one step, as seen by
    /// admission: from then on the stored row counts instead, never both. The store checks the
    /// limits again in the same step as the insert, which keeps them exact across control
    /// planes sharing the database. `max_worker` is the chosen remote worker's capacity
    /// (0 = none).
    pub async fn record(
        mut self,
        sb: &mut Sandbox,
        max_worker: i64,
    ) -> ServiceResult<Result<(), Raced>> {
        let svc = self.svc;
        let limits = InsertLimits {
            created_by: &svc.instance_id,
            max_total: self.max_total,
            max_owner: self.max_owner,
            max_worker,
        };
        let mut pending = svc.admission.pending.lock().await;
        let mut res = svc.store.insert_sandbox_limited(sb, &limits).await;
        // Ids carry 32 random bits (the SDK-frozen `sb-xxxxxxxx`) and rows are kept after
        // destroy, so a fresh id can meet an old one: draw again. Nothing else was made yet.
        for _ in 0..ID_ATTEMPTS {
            if !matches!(res, Err(StoreError::Conflict(_))) {
                break;
            }
            sb.id = stacyvm_types::SandboxId::random();
            res = svc.store.insert_sandbox_limited(sb, &limits).await;
        }
        pending.release(&self.owner);
        self.held = false;
        drop(pending);
        match res {
            Ok(()) => Ok(Ok(())),
            Err(StoreError::LimitReached(hit)) => {
                let limit = match hit {
                    LimitHit::Total => limits.max_total,
                    LimitHit::Owner => limits.max_owner,
                    LimitHit::Worker => limits.max_worker,
                };
                Ok(Err(Raced { hit, limit }))
            }
            Err(e) => Err(e.into()),
        }
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if !self.held {
            return;
        }
        let state = &self.svc.admission;
        if let Ok(mut pending) = state.pending.try_lock() {
            pending.release(&self.owner);
            return;
        }
        // Admission is busy: release right after it, then wake queued spawns (they may have
        // counted this slot). Only a failed or cancelled spawn gets here.
        if tokio::runtime::Handle::try_current().is_ok() {
            let svc = self.svc.clone();
            let owner = std::mem::take(&mut self.owner);
            self.svc.tasks.spawn(async move {
                svc.admission.pending.lock().await.release(&owner);
                svc.admission().wake();
            });
        }
    }
}

/// Admission control for spawns; see the module documentation.
#[derive(Clone, Copy)]
pub(super) struct Admission<'a> {
    svc: &'a Service,
}

impl Service {
    pub(super) fn admission(&self) -> Admission<'_> {
        Admission { svc: self }
    }
}

impl<'a> Admission<'a> {
    fn state(self) -> &'a State {
        &self.svc.admission
    }

    /// Evaluates admission; `pending` adds spawns in flight to the stored counts.
    async fn evaluate(
        self,
        provider: &str,
        owner: &str,
        ttl: GoDuration,
        pin: Option<&WorkerId>,
        (pending_total, pending_owner): (i64, i64),
        report_counts: bool,
    ) -> ServiceResult<AdmissionDecision> {
        let svc = self.svc;
        let limits = svc.quotas().limits_for(owner).await?;
        // Counting costs a query per spawn; skip it when no count limit applies and nobody
        // asked to see the figures (the admission endpoint does).
        let counts =
            if report_counts || svc.settings.limits.max_sandboxes > 0 || limits.max_sandboxes > 0 {
                svc.store
                    .count_active_sandboxes(Some(owner).filter(|o| !o.is_empty()))
                    .await?
            } else {
                stacyvm_store::ActiveCounts::default()
            };
        let queue_mode = svc.settings.limits.spawn_overflow == SpawnOverflow::Queue;
        let mut d = AdmissionDecision {
            allowed: true,
            queueable: false,
            reason: None,
            active_sandboxes: counts.total + pending_total,
            max_sandboxes: svc.settings.limits.max_sandboxes,
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
        let placement = svc.place(provider, pin).await?;
        let placed_ok = placement.target.is_some();
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

    /// What admission would answer now (`POST /sandboxes/admission`), reserving nothing.
    pub(super) async fn check(
        self,
        provider: &str,
        owner: &str,
        ttl: GoDuration,
        pin: Option<&WorkerId>,
    ) -> ServiceResult<AdmissionDecision> {
        let pending = self.state().pending.lock().await;
        let po = pending.by_owner.get(owner).copied().unwrap_or(0);
        let total = pending.total;
        drop(pending);
        self.evaluate(provider, owner, ttl, pin, (total, po), true)
            .await
    }

    /// Admits a spawn, waiting in the spawn queue when configured, and reserves its slot:
    /// the one call a spawn attempt makes. Refusals are `ResourceLimit` (429).
    pub(super) async fn admit(
        self,
        provider: &str,
        owner: &str,
        ttl: GoDuration,
        pin: Option<&WorkerId>,
    ) -> ServiceResult<Slot<'a>> {
        let svc = self.svc;
        let mut queued_at: Option<Instant> = None;
        let deadline = svc
            .settings
            .limits
            .spawn_queue_timeout
            .to_std()
            .unwrap_or_default();
        loop {
            // Register for wake-ups before checking, so a destroy in between is not missed.
            let notified = self.state().capacity_freed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut pending = self.state().pending.lock().await;
                let po = pending.by_owner.get(owner).copied().unwrap_or(0);
                let d = self
                    .evaluate(provider, owner, ttl, pin, (pending.total, po), false)
                    .await?;
                if d.allowed {
                    pending.reserve(owner);
                    drop(pending);
                    if let Some(t) = queued_at {
                        self.dequeued(provider, owner, t.elapsed());
                    }
                    let placement = d.placement.unwrap_or_else(Placement::local);
                    return Ok(Slot {
                        svc,
                        owner: owner.to_string(),
                        placement,
                        max_total: d.max_sandboxes.max(0),
                        max_owner: d.max_owner_sandboxes.unwrap_or(0),
                        held: true,
                    });
                }
                let queue_mode = svc.settings.limits.spawn_overflow == SpawnOverflow::Queue;
                if !(d.queueable && queue_mode) {
                    if let Some(t) = queued_at {
                        self.leave_queue(t.elapsed());
                    }
                    svc.events.publish(
                        EventKind::ResourceLimit,
                        None,
                        Some(EventData::failure("spawn", provider, d.limit_message())),
                    );
                    return Err(ServiceError::ResourceLimit(d.limit_message()));
                }
                if queued_at.is_none() {
                    let max = svc.settings.limits.max_spawn_queue;
                    let mut q = self
                        .state()
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
                    svc.events.publish(
                        EventKind::SpawnQueued,
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
                if let Ok(mut q) = self.state().queue.lock() {
                    q.timeouts += 1;
                }
                let msg = format!(
                    "spawn queue timeout after {}",
                    svc.settings.limits.spawn_queue_timeout
                );
                svc.events.publish(
                    EventKind::SpawnQueueTimeout,
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

    fn leave_queue(self, waited: Duration) {
        if let Ok(mut q) = self.state().queue.lock() {
            q.depth = (q.depth - 1).max(0);
            let ms = waited.as_secs_f64() * 1000.0;
            q.wait_count += 1;
            q.wait_total_ms += ms;
            q.wait_max_ms = q.wait_max_ms.max(ms);
        }
    }

    fn dequeued(self, provider: &str, owner: &str, waited: Duration) {
        let svc = self.svc;
        self.leave_queue(waited);
        if let Ok(mut q) = self.state().queue.lock() {
            q.dequeued_total += 1;
        }
        svc.events.publish(
            EventKind::SpawnDequeued,
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

    /// Wakes queued spawns: capacity may have freed.
    pub(super) fn wake(self) {
        self.state().capacity_freed.notify_waiters();
    }

    /// The spawn queue's figures so far.
    pub(super) fn stats(self) -> QueueStats {
        self.state()
            .queue
            .lock()
            .map(|q| q.clone())
            .unwrap_or_default()
    }
}
