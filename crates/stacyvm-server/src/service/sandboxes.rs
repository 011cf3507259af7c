//! Sandbox lifecycle: spawn, get, list, destroy, prune, extend, logs, stats.

use std::collections::BTreeMap;
use std::time::Instant;

use futures_util::StreamExt;
use stacyvm_provider::{Provider, ProviderError, SandboxSpec};
use stacyvm_store::LimitHit;
use stacyvm_types::{
    new_sandbox_id, parse_go_duration, validate_owner_id, GoDuration, Sandbox, SandboxState,
};

use super::admission::Slot;
use super::{lease_ttl, Caller, Service, LOCAL_WORKER};
use crate::error::{ServiceError, ServiceResult};
use crate::events::EventData;
use crate::remote::RemoteProvider;
use crate::settings::SpawnOverflow;
use stacyvm_store::WorkerRecord;

/// How often one spawn may lose the race for the last slot to another control plane before
/// it is refused.
const MAX_ADMISSION_RACES: u32 = 5;

/// Why `spawn_placed` stored nothing or failed.
enum SpawnFail {
    /// The store refused the record: a limit was reached since admission counted.
    Raced(LimitHit, i64),
    Failed(ServiceError),
}

impl From<ServiceError> for SpawnFail {
    fn from(e: ServiceError) -> Self {
        SpawnFail::Failed(e)
    }
}

/// Largest memory and vCPU counts accepted (1 TiB, 256 vCPUs): anything above is a typo.
const MAX_MEMORY_MB: i64 = 1 << 20;
const MAX_VCPUS: i64 = 256;

#[derive(Debug, Clone, Default)]
pub struct SpawnParams {
    pub image: String,
    pub provider: String,
    pub memory_mb: i64,
    pub vcpus: i64,
    /// Go duration text; empty = default.
    pub ttl: String,
    pub owner_id: String,
    pub template: String,
    pub metadata: BTreeMap<String, String>,
}

/// Spawn parameters after defaults and validation.
pub(crate) struct ResolvedSpawn {
    pub provider: std::sync::Arc<dyn Provider>,
    pub provider_name: String,
    pub image: String,
    pub memory_mb: i64,
    pub vcpus: i64,
    pub ttl: GoDuration,
    pub owner: String,
}

pub(crate) fn parse_ttl(raw: &str, default: GoDuration) -> ServiceResult<GoDuration> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(default);
    }
    let d = parse_go_duration(raw)
        .map_err(|e| ServiceError::bad_request(format!("invalid ttl format: {e}")))?;
    if d.is_negative() {
        return Err(ServiceError::bad_request("ttl must not be negative"));
    }
    Ok(d)
}

fn validate_image(image: &str) -> ServiceResult<()> {
    if image.len() > 512 || image.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(ServiceError::bad_request(
            "image must be a reference without whitespace (≤512 chars)",
        ));
    }
    Ok(())
}

impl Service {
    /// Owner precedence: `X-User-ID` over the body's `owner_id`.
    pub(crate) fn resolve_owner(caller: &Caller, body_owner: &str) -> ServiceResult<String> {
        let raw = caller
            .user_id
            .as_deref()
            .filter(|s| !s.trim().is_empty())
            .unwrap_or(body_owner);
        if raw.trim().is_empty() {
            return Ok(String::new());
        }
        validate_owner_id(raw).map_err(|e| ServiceError::bad_request(format!("owner_id {e}")))
    }

    pub(crate) fn resolve_spawn(
        &self,
        p: &SpawnParams,
        caller: &Caller,
    ) -> ServiceResult<ResolvedSpawn> {
        let provider = self.providers.get(p.provider.trim())?;
        let provider_name = provider.name().to_string();
        let ttl = parse_ttl(&p.ttl, self.settings.limits.default_ttl)?;
        let owner = Self::resolve_owner(caller, &p.owner_id)?;
        let l = &self.settings.limits;
        let memory_mb = match p.memory_mb {
            0 => l.default_memory_mb,
            n if !(1..=MAX_MEMORY_MB).contains(&n) => {
                return Err(ServiceError::bad_request(format!(
                    "memory_mb must be between 1 and {MAX_MEMORY_MB}"
                )))
            }
            n => n,
        };
        let vcpus = match p.vcpus {
            0 => l.default_vcpus.max(1),
            n if !(1..=MAX_VCPUS).contains(&n) => {
                return Err(ServiceError::bad_request(format!(
                    "vcpus must be between 1 and {MAX_VCPUS}"
                )))
            }
            n => n,
        };
        let image = if p.image.trim().is_empty() {
            l.default_image.clone()
        } else {
            p.image.trim().to_string()
        };
        validate_image(&image)?;
        if p.metadata.len() > 64
            || p.metadata
                .iter()
                .any(|(k, v)| k.len() > 256 || v.len() > 4096)
        {
            return Err(ServiceError::bad_request(
                "metadata is limited to 64 keys of ≤256 bytes with values ≤4096 bytes",
            ));
        }
        Ok(ResolvedSpawn {
            provider,
            provider_name,
            image,
            memory_mb,
            vcpus,
            ttl,
            owner,
        })
    }

    pub async fn spawn(&self, p: SpawnParams, caller: &Caller) -> ServiceResult<Sandbox> {
        let r = self.resolve_spawn(&p, caller)?;
        let mut races = 0;
        loop {
            let slot = self.reserve_slot(&r.provider_name, &r.owner, r.ttl).await?;
            match self.spawn_placed(&r, &p, slot).await {
                Ok(sb) => return Ok(sb),
                Err(SpawnFail::Raced(hit, limit)) => {
                    // Another control plane took the last slot between this one's count and
                    // its insert. A full worker: place again. A full total or owner: queue
                    // again when queueing, else refuse as admission would have.
                    races += 1;
                    let queue = self.settings.limits.spawn_overflow == SpawnOverflow::Queue;
                    if races < MAX_ADMISSION_RACES && (hit == LimitHit::Worker || queue) {
                        continue;
                    }
                    let msg = match hit {
                        LimitHit::Total => format!("max sandboxes reached ({limit})"),
                        LimitHit::Owner => format!("max sandboxes per owner reached ({limit})"),
                        LimitHit::Worker => "no eligible worker available".to_string(),
                    };
                    self.events.publish(
                        "resource.limit",
                        None,
                        Some(EventData::failure("spawn", &r.provider_name, msg.clone())),
                    );
                    return Err(ServiceError::ResourceLimit(msg));
                }
                Err(SpawnFail::Failed(e)) => {
                    // A failed spawn may have freed a slot another queued spawn waits for.
                    self.notify_capacity();
                    return Err(e);
                }
            }
        }
    }

    /// Records, creates and marks running a sandbox where placement put it: on `local`, or on
    /// a remote worker through its RPC.
    async fn spawn_placed(
        &self,
        r: &ResolvedSpawn,
        p: &SpawnParams,
        slot: Slot,
    ) -> Result<Sandbox, SpawnFail> {
        let remote = slot
            .placement
            .worker_id
            .clone()
            .filter(|w| w != LOCAL_WORKER);
        let started = Instant::now();
        let now = chrono::Utc::now();
        let mut sb = Sandbox {
            id: new_sandbox_id(),
            state: SandboxState::Creating,
            provider: r.provider_name.clone(),
            image: r.image.clone(),
            memory_mb: r.memory_mb,
            vcpus: r.vcpus,
            metadata: p.metadata.clone(),
            template: p.template.clone(),
            owner_id: r.owner.clone(),
            vm_id: String::new(),
            worker_id: remote.clone().unwrap_or_else(|| LOCAL_WORKER.into()),
            tenant_id: String::new(),
            preview_domain: self.settings.preview_domain.clone(),
            created_at: now,
            expires_at: now + r.ttl.to_chrono(),
            updated_at: now,
        };
        let mut max_worker = 0;
        let remote_rp: Option<RemoteProvider> = match &remote {
            None => None,
            Some(w) => {
                // One registry read serves routing, the worker's capacity cap and its preview
                // domain.
                let rp = match self.registered_worker(w).await.and_then(|rec| {
                    max_worker = rec
                        .capacity
                        .get("max_sandboxes")
                        .and_then(serde_json::Value::as_i64)
                        .unwrap_or(0)
                        .max(0);
                    if let Some(d) = rec
                        .capacity
                        .get("preview_domain")
                        .and_then(serde_json::Value::as_str)
                        .filter(|d| !d.is_empty())
                    {
                        sb.preview_domain = d.to_string();
                    }
                    self.remote_provider_on(&rec, &sb.id, &r.provider_name, sb.expires_at)
                }) {
                    Ok(rp) => rp,
                    Err(e) => {
                        self.release_slot(slot).await;
                        return Err(e.into());
                    }
                };
                Some(rp)
            }
        };
        // Record first: a crash during the provider call leaves a `creating` row that startup
        // reconciliation cleans up, never an unrecorded runtime.
        if let Err((hit, limit)) = self.insert_reserved(slot, &mut sb, max_worker).await? {
            return Err(SpawnFail::Raced(hit, limit));
        }
        let provider: std::sync::Arc<dyn Provider> = match remote_rp {
            None => r.provider.clone(),
            Some(mut rp) => {
                // The insert may have drawn a new id (collision with a stored one).
                rp.sandbox_id = sb.id.clone();
                std::sync::Arc::new(rp)
            }
        };
        let spec = SandboxSpec {
            id: sb.id.clone(),
            image: sb.image.clone(),
            memory_mb: sb.memory_mb,
            vcpus: sb.vcpus,
            owner_id: sb.owner_id.clone(),
            metadata: sb.metadata.clone(),
        };
        let spawned = match provider.spawn(&spec).await {
            Ok(s) => s,
            Err(e) => {
                let err = ServiceError::from(e);
                self.ops.observe(
                    "spawn",
                    &r.provider_name,
                    started.elapsed(),
                    Some(&err.to_string()),
                );
                self.events.publish(
                    "provider.failed",
                    Some(&sb.id),
                    Some(EventData::failure(
                        "spawn",
                        &r.provider_name,
                        err.to_string(),
                    )),
                );
                // Nothing was created, so the record must neither hold capacity nor be listed.
                // Only if a partial runtime may remain is it kept as `error` for the reaper.
                let state = match provider.destroy(&sb.id).await {
                    Ok(()) | Err(ProviderError::SandboxNotFound(_)) => SandboxState::Destroyed,
                    Err(de) => {
                        tracing::warn!(sandbox_id = %sb.id, error = %de, "cleanup after failed spawn failed");
                        SandboxState::Error
                    }
                };
                if let Err(se) = self.store.set_sandbox_state(&sb.id, state).await {
                    tracing::warn!(sandbox_id = %sb.id, error = %se, "could not mark failed spawn");
                }
                return Err(err.into());
            }
        };
        if spawned.runtime_id != sb.id {
            sb.vm_id = spawned.runtime_id.clone();
        }
        let stored = self.store.set_sandbox_running(&sb.id, &sb.vm_id).await;
        match stored {
            Ok(s) => {
                self.ops
                    .observe("spawn", &r.provider_name, started.elapsed(), None);
                self.events.publish("sandbox.created", Some(&s.id), None);
                self.events.publish("sandbox.running", Some(&s.id), None);
                Ok(s)
            }
            Err(e) => {
                // Never leave a runtime the store does not know about.
                if let Err(de) = provider.destroy(&spawned.runtime_id).await {
                    tracing::error!(sandbox_id = %sb.id, error = %de, "cleanup after failed store write failed");
                }
                Err(ServiceError::from(e).into())
            }
        }
    }

    /// A live sandbox record, or `SandboxNotFound` (destroyed ones count as not found).
    pub async fn get_sandbox(&self, id: &str) -> ServiceResult<Sandbox> {
        match self.store.get_sandbox(id).await {
            Ok(sb) if sb.state == SandboxState::Destroyed => {
                Err(ServiceError::SandboxNotFound(id.into()))
            }
            Ok(sb) => Ok(sb),
            Err(e) if e.is_not_found() => Err(ServiceError::SandboxNotFound(id.into())),
            Err(e) => Err(e.into()),
        }
    }

    /// `GET /sandboxes/{id}`: a remote sandbox's state is refreshed from its worker first
    /// (`worker.status`); if the worker cannot answer, the stored record is returned.
    pub async fn get_sandbox_refreshed(&self, id: &str) -> ServiceResult<Sandbox> {
        let sb = self.get_sandbox(id).await?;
        if !sb.is_remote() || sb.state == SandboxState::Creating {
            return Ok(sb);
        }
        let Ok(p) = self.provider_for(&sb).await else {
            return Ok(sb);
        };
        match p.status(sb.runtime_id()).await {
            Ok(st) if st != sb.state && sb.state.valid_transition(st).is_ok() => {
                match self.store.set_sandbox_state(id, st).await {
                    Ok(updated) => Ok(updated),
                    Err(_) => Ok(sb),
                }
            }
            _ => Ok(sb),
        }
    }

    pub async fn list_sandboxes(&self) -> ServiceResult<Vec<Sandbox>> {
        let mut v = self.store.list_sandboxes().await?;
        v.retain(|s| s.state != SandboxState::Creating);
        Ok(v)
    }

    /// The provider that runs `sb`: a local backend, or a [`RemoteProvider`] that forwards to the
    /// owning worker.
    pub(crate) async fn provider_for(
        &self,
        sb: &Sandbox,
    ) -> ServiceResult<std::sync::Arc<dyn Provider>> {
        if !sb.is_remote() {
            return Ok(self.providers.get(&sb.provider)?);
        }
        let remote = self
            .remote_provider(&sb.id, &sb.worker_id, &sb.provider, sb.expires_at)
            .await?;
        Ok(std::sync::Arc::new(remote))
    }

    pub(crate) async fn remote_provider(
        &self,
        sandbox_id: &str,
        worker_id: &str,
        provider: &str,
        expires_at: stacyvm_types::Timestamp,
    ) -> ServiceResult<RemoteProvider> {
        let w = self.registered_worker(worker_id).await?;
        self.remote_provider_on(&w, sandbox_id, provider, expires_at)
    }

    /// A worker record for routing; a missing one is `Unavailable` (the owner is gone).
    pub(crate) async fn registered_worker(&self, worker_id: &str) -> ServiceResult<WorkerRecord> {
        match self.store.get_worker(worker_id).await {
            Ok(w) => Ok(w),
            Err(e) if e.is_not_found() => Err(ServiceError::Unavailable(format!(
                "worker {worker_id} is not registered"
            ))),
            Err(e) => Err(e.into()),
        }
    }

    /// [`Self::remote_provider`] for an already loaded worker record.
    pub(crate) fn remote_provider_on(
        &self,
        w: &WorkerRecord,
        sandbox_id: &str,
        provider: &str,
        expires_at: stacyvm_types::Timestamp,
    ) -> ServiceResult<RemoteProvider> {
        let (client, endpoint) = self.remote_endpoint(w)?;
        let remaining = (expires_at - chrono::Utc::now())
            .to_std()
            .unwrap_or_default();
        Ok(RemoteProvider {
            client,
            endpoint,
            store: self.store.clone(),
            provider: provider.to_string(),
            sandbox_id: sandbox_id.to_string(),
            lease_ttl: lease_ttl(remaining),
            ttl: GoDuration::from_std(remaining),
            file_stream: w.capabilities.as_ref().is_some_and(|c| {
                c.iter()
                    .any(|c| c == stacyvm_protocol::capability::FILE_STREAM)
            }),
        })
    }

    /// Destroys a sandbox. Unknown ids are `SandboxNotFound`; an already destroyed sandbox
    /// succeeds again (idempotent).
    pub async fn destroy(&self, id: &str) -> ServiceResult<()> {
        let sb = match self.store.get_sandbox(id).await {
            Ok(sb) => sb,
            Err(e) if e.is_not_found() => return Err(ServiceError::SandboxNotFound(id.into())),
            Err(e) => return Err(e.into()),
        };
        if sb.state == SandboxState::Destroyed {
            return Ok(());
        }
        let started = Instant::now();
        let provider = self.provider_for(&sb).await?;
        match provider.destroy(sb.runtime_id()).await {
            Ok(()) | Err(stacyvm_provider::ProviderError::SandboxNotFound(_)) => {}
            Err(e) => {
                let err = ServiceError::from(e);
                self.ops.observe(
                    "destroy",
                    &sb.provider,
                    started.elapsed(),
                    Some(&err.to_string()),
                );
                self.events.publish(
                    "operation.failed",
                    Some(id),
                    Some(EventData::failure("destroy", &sb.provider, err.to_string())),
                );
                return Err(err);
            }
        }
        self.store
            .set_sandbox_state(id, SandboxState::Destroyed)
            .await?;
        self.ops
            .observe("destroy", &sb.provider, started.elapsed(), None);
        self.events.publish("sandbox.destroyed", Some(id), None);
        self.notify_capacity();
        Ok(())
    }

    /// Destroys every live sandbox past its expiry; returns how many were destroyed. Remote
    /// sandboxes whose worker is stale or gone are left to reconciliation (they turn `expired`
    /// and are destroyed when the worker returns), so one dead worker cannot stall the reaper.
    pub async fn prune(&self) -> ServiceResult<usize> {
        let expired = self
            .store
            .list_expired_sandboxes(chrono::Utc::now())
            .await?;
        let mut todo = Vec::with_capacity(expired.len());
        for sb in expired {
            if sb.is_remote() {
                match self.store.get_worker(&sb.worker_id).await {
                    Ok(w) if !self.is_stale(&w) => {}
                    _ => continue,
                }
            }
            todo.push(sb.id);
        }
        // A few at a time: bounded work, and one slow runtime does not hold up the rest.
        let results = futures_util::stream::iter(todo)
            .map(|id| async move {
                let r = self.destroy(&id).await;
                if let Err(e) = &r {
                    tracing::warn!(sandbox_id = %id, error = %e, "prune: destroy failed");
                }
                r.is_ok()
            })
            .buffer_unordered(8)
            .collect::<Vec<bool>>()
            .await;
        Ok(results.into_iter().filter(|ok| *ok).count())
    }

    /// Sets `expires_at = now + ttl`, within the owner's max TTL.
    pub async fn extend(&self, id: &str, ttl: &str) -> ServiceResult<Sandbox> {
        if ttl.trim().is_empty() {
            return Err(ServiceError::bad_request("ttl is required"));
        }
        let d = parse_ttl(ttl, GoDuration::ZERO)?;
        if d.nanos() <= 0 {
            return Err(ServiceError::bad_request("ttl must be positive"));
        }
        let sb = self.get_sandbox(id).await?;
        let limits = self.owner_limits(&sb.owner_id).await?;
        if !limits.max_ttl.is_zero() && d > limits.max_ttl {
            return Err(ServiceError::ResourceLimit(format!(
                "ttl exceeds max ttl {}",
                limits.max_ttl
            )));
        }
        let expires = chrono::Utc::now() + d.to_chrono();
        match self.store.set_sandbox_expiry(id, expires).await {
            Ok(s) => Ok(s),
            Err(e) if e.is_not_found() => Err(ServiceError::SandboxNotFound(id.into())),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn logs(&self, id: &str, lines: usize) -> ServiceResult<Vec<String>> {
        let sb = self.get_sandbox(id).await?;
        let p = self.provider_for(&sb).await?;
        Ok(p.logs(sb.runtime_id(), lines).await?)
    }

    pub async fn stats(&self, id: &str) -> ServiceResult<Option<stacyvm_provider::Stats>> {
        let sb = self.get_sandbox(id).await?;
        if sb.is_remote() {
            return Ok(None);
        }
        let p = self.provider_for(&sb).await?;
        Ok(p.stats(sb.runtime_id()).await?)
    }
}
