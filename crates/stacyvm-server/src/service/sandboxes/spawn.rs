//! Spawning a sandbox: defaults and validation, admission (one call per attempt), the record,
//! the provider call, and the cleanup when any step fails.

use std::collections::BTreeMap;
use std::time::Instant;

use stacyvm_provider::{Provider, ProviderError, SandboxSpec};
use stacyvm_store::LimitHit;
use stacyvm_types::{
    parse_go_duration, validate_owner_id, EventKind, GoDuration, Lifecycle, OnExpire, Placement,
    PreviewToken, Sandbox, SandboxId, SandboxState, WorkerId,
};

use super::Sandboxes;
use crate::error::{ServiceError, ServiceResult};
use crate::events::EventData;
use crate::remote::RemoteProvider;
use crate::service::admission::{AdmissionDecision, Raced, Slot};
use crate::service::bounds;
use crate::service::templates::validate_name as validate_template_name;
use crate::service::volumes::PlannedMounts;
use crate::service::Caller;
use crate::settings::SpawnOverflow;

/// How often one spawn may lose the race for the last slot to another control plane before
/// it is refused.
const MAX_ADMISSION_RACES: u32 = 5;

/// Why `spawn_placed` stored nothing or failed.
enum SpawnFail {
    /// The store refused the record: a limit was reached since admission counted.
    Raced(Raced),
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
    /// `destroy` (default, also `""`) or `pause`: what the TTL and the idle timeout do.
    pub on_expire: String,
    /// Go duration; `""` or `"0s"` = none.
    pub idle_timeout: String,
    /// Preview URLs need no token (docs/preview.md).
    pub public_preview: bool,
    /// Volumes to mount (docs/state.md).
    pub volumes: Vec<crate::service::MountParams>,
    /// Start from this snapshot (`snap-…`); empty = none. `image` and `provider` may then be
    /// empty; given, they must be the snapshot's.
    pub snapshot: String,
}

/// Spawn parameters after defaults and validation.
struct ResolvedSpawn {
    pub provider: std::sync::Arc<dyn Provider>,
    pub provider_name: String,
    pub image: String,
    pub memory_mb: i64,
    pub vcpus: i64,
    pub ttl: GoDuration,
    pub owner: String,
    pub lifecycle: Lifecycle,
    /// The spawn's volumes, checked.
    pub mounts: PlannedMounts,
    /// The snapshot it starts from.
    pub snapshot: Option<stacyvm_store::Snapshot>,
}

impl ResolvedSpawn {
    /// The worker the spawn must run on: the one holding its volumes and snapshot (they
    /// never move). 409 `CONFLICT` when those live on different workers.
    fn pinned_worker(&self) -> ServiceResult<Option<WorkerId>> {
        let snap = self.snapshot.as_ref().map(|s| s.worker_id.as_str());
        match (self.mounts.worker.as_deref(), snap) {
            (Some(v), Some(s)) if v != s => Err(ServiceError::Conflict(format!(
                "the volumes live on worker {v} and the snapshot on worker {s}; a sandbox \
                 runs on one worker"
            ))),
            (Some(w), _) | (None, Some(w)) => Ok(Some(WorkerId::from(w))),
            (None, None) => Ok(None),
        }
    }
}

/// `on_expire` and `idle_timeout` of a spawn.
fn parse_lifecycle(p: &SpawnParams) -> ServiceResult<Lifecycle> {
    let on_expire = OnExpire::parse(&p.on_expire).ok_or_else(|| {
        ServiceError::bad_request(format!(
            "on_expire must be \"destroy\" or \"pause\", not {:?}",
            p.on_expire
        ))
    })?;
    let idle_timeout = match p.idle_timeout.trim() {
        "" => None,
        t => {
            let d = parse_go_duration(t)
                .map_err(|e| ServiceError::bad_request(format!("invalid idle_timeout: {e}")))?;
            if d.is_negative() {
                return Err(ServiceError::bad_request(
                    "idle_timeout must not be negative",
                ));
            }
            Some(d).filter(|d| !d.is_zero())
        }
    };
    Ok(Lifecycle {
        on_expire,
        idle_timeout,
    })
}

pub(super) fn parse_ttl(raw: &str, default: GoDuration) -> ServiceResult<GoDuration> {
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
    if image.len() > bounds::MAX_IMAGE || image.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(ServiceError::bad_request(
            "image must be a reference without whitespace (≤512 chars)",
        ));
    }
    Ok(())
}

/// Owner precedence: `X-User-ID` over the body's `owner_id`.
fn resolve_owner(caller: &Caller, body_owner: &str) -> ServiceResult<String> {
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

/// A requested resource amount: `default` when not asked for (0), else in `1..=max` (`max_key`
/// names the setting that bounds it, so an operator's limit is named in the refusal).
fn within(key: &str, asked: i64, default: i64, max_key: &str, max: i64) -> ServiceResult<i64> {
    match asked {
        0 => Ok(default),
        n if n < 1 => Err(ServiceError::bad_request(format!(
            "{key} must be between 1 and {max}"
        ))),
        n if n > max => Err(ServiceError::bad_request(format!(
            "{key} {n} exceeds the limit {max} ({max_key})"
        ))),
        n => Ok(n),
    }
}

impl Sandboxes<'_> {
    /// Defaults and validation of a spawn request.
    fn resolve(self, p: &SpawnParams, caller: &Caller) -> ServiceResult<ResolvedSpawn> {
        let provider = self.svc.providers.get(p.provider.trim())?;
        let provider_name = provider.name().to_string();
        let ttl = parse_ttl(&p.ttl, self.svc.settings.limits.default_ttl)?;
        let owner = resolve_owner(caller, &p.owner_id)?;
        let l = &self.svc.settings.limits;
        let memory_mb = within(
            "memory_mb",
            p.memory_mb,
            l.default_memory_mb,
            "limits.max_memory_mb",
            l.max_memory_mb.min(MAX_MEMORY_MB),
        )?;
        let vcpus = within(
            "vcpus",
            p.vcpus,
            l.default_vcpus.max(1),
            "limits.max_vcpus",
            l.max_vcpus.min(MAX_VCPUS),
        )?;
        let image = if p.image.trim().is_empty() {
            l.default_image.clone()
        } else {
            p.image.trim().to_string()
        };
        validate_image(&image)?;
        bounds::check_map("metadata", &p.metadata)?;
        let lifecycle = parse_lifecycle(p)?;
        Ok(ResolvedSpawn {
            mounts: PlannedMounts::default(),
            snapshot: None,
            lifecycle,
            provider,
            provider_name,
            image,
            memory_mb,
            vcpus,
            ttl,
            owner,
        })
    }

    /// A spawn may name a template (the SDK sends `template`); it must exist. The original
    /// accepted any text and ignored it; the name is stored on the row, so an unknown or huge
    /// one is refused. Empty = no template, as before.
    async fn check_template(self, template: &str) -> ServiceResult<()> {
        if template.is_empty() {
            return Ok(());
        }
        validate_template_name(template)?;
        match self.svc.store.get_template(template).await {
            Ok(_) => Ok(()),
            Err(stacyvm_store::StoreError::NotFound { .. }) => Err(ServiceError::bad_request(
                format!("unknown template {template:?}"),
            )),
            Err(e) => Err(e.into()),
        }
    }

    /// `POST /sandboxes/admission`: what admission would answer for this spawn now, without
    /// reserving anything.
    pub async fn check_admission(
        self,
        p: &SpawnParams,
        caller: &Caller,
    ) -> ServiceResult<AdmissionDecision> {
        let r = self.resolve(p, caller)?;
        self.svc
            .admission()
            .check(&r.provider_name, &r.owner, r.ttl, None)
            .await
    }

    /// Admits, records and creates a sandbox (`POST /sandboxes`). Refusals by admission are
    /// `ResourceLimit`; a provider failure leaves no live record.
    pub async fn spawn(self, mut p: SpawnParams, caller: &Caller) -> ServiceResult<Sandbox> {
        let snapshot = self.snapshot_of(&mut p).await?;
        let mut r = self.resolve(&p, caller)?;
        r.snapshot = snapshot;
        self.check_template(&p.template).await?;
        r.mounts = self
            .svc
            .volumes()
            .plan(&p.volumes, &r.provider_name)
            .await?;
        if !r.mounts.mounts.is_empty() && !r.provider.capabilities().contains(&"volumes") {
            return Err(stacyvm_provider::volumes_unsupported(&r.provider_name).into());
        }
        let pin = r.pinned_worker()?;
        if let Some(w) = &pin {
            self.svc.pinned_ready(w, &r.provider_name).await?;
        }
        let mut races = 0;
        loop {
            let slot = self
                .svc
                .admission()
                .admit(&r.provider_name, &r.owner, r.ttl, pin.as_ref())
                .await?;
            match self.spawn_placed(&r, &p, slot).await {
                Ok(sb) => return Ok(sb),
                Err(SpawnFail::Raced(Raced { hit, limit })) => {
                    // Another control plane took the last slot between this one's count and
                    // its insert. A full worker: place again. A full total or owner: queue
                    // again when queueing, else refuse as admission would have.
                    races += 1;
                    let queue = self.svc.settings.limits.spawn_overflow == SpawnOverflow::Queue;
                    if races < MAX_ADMISSION_RACES && (hit == LimitHit::Worker || queue) {
                        continue;
                    }
                    let msg = match hit {
                        LimitHit::Total => format!("max sandboxes reached ({limit})"),
                        LimitHit::Owner => format!("max sandboxes per owner reached ({limit})"),
                        LimitHit::Worker => "no eligible worker available".to_string(),
                    };
                    self.svc.events.publish(
                        EventKind::ResourceLimit,
                        None,
                        Some(EventData::failure("spawn", &r.provider_name, msg.clone())),
                    );
                    return Err(ServiceError::ResourceLimit(msg));
                }
                Err(SpawnFail::Failed(e)) => {
                    // A failed spawn may have freed a slot another queued spawn waits for.
                    self.svc.admission().wake();
                    return Err(e);
                }
            }
        }
    }

    /// Records, creates and marks running a sandbox where placement put it: on `local`, or on
    /// a remote worker through its RPC.
    async fn spawn_placed(
        self,
        r: &ResolvedSpawn,
        p: &SpawnParams,
        slot: Slot<'_>,
    ) -> Result<Sandbox, SpawnFail> {
        let placement = slot.placement.target.clone().unwrap_or(Placement::Local);
        let started = Instant::now();
        let now = chrono::Utc::now();
        let mut sb = Sandbox {
            id: SandboxId::random(),
            state: SandboxState::Creating,
            provider: r.provider_name.clone(),
            image: r.image.clone(),
            memory_mb: r.memory_mb,
            vcpus: r.vcpus,
            metadata: p.metadata.clone(),
            template: p.template.clone(),
            owner_id: r.owner.clone(),
            vm_id: None,
            placement: placement.clone(),
            tenant_id: String::new(),
            preview_domain: self.svc.settings.preview_domain.clone(),
            created_at: now,
            expires_at: now + r.ttl.to_chrono(),
            updated_at: now,
            lifecycle: r.lifecycle,
            paused_at: None,
            last_active_at: None,
            preview_token: PreviewToken::random(),
            public_preview: p.public_preview,
        };
        let mut max_worker = 0;
        let remote_rp: Option<RemoteProvider> = match &placement {
            Placement::Local => None,
            Placement::Remote(w) => {
                // One registry read serves routing, the worker's capacity cap and its preview
                // domain. A failure drops (releases) the slot.
                let rec = self.svc.registered_worker(w).await?;
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
                Some(
                    self.svc
                        .remote_provider_on(&rec, &sb.id, &r.provider_name, sb.expires_at)?,
                )
            }
        };
        // Record first: a crash during the provider call leaves a `creating` row that startup
        // reconciliation cleans up, never an unrecorded runtime.
        if let Err(raced) = slot.record(&mut sb, max_worker).await? {
            return Err(SpawnFail::Raced(raced));
        }
        if let Err(e) = self.mount_volumes(r, &sb).await {
            self.drop_record(&sb.id).await;
            return Err(e.into());
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
            id: sb.id.to_string(),
            image: sb.image.clone(),
            memory_mb: sb.memory_mb,
            vcpus: sb.vcpus,
            owner_id: sb.owner_id.clone(),
            metadata: sb.metadata.clone(),
        };
        let made = match &r.snapshot {
            Some(snap) => {
                provider
                    .spawn_from_snapshot(&spec, &r.mounts.mounts, &snap.id)
                    .await
            }
            None => provider.spawn_with_volumes(&spec, &r.mounts.mounts).await,
        };
        let spawned = match made {
            Ok(s) => s,
            Err(e) => {
                let err = ServiceError::from(e);
                self.svc.ops.observe(
                    crate::ops::SPAWN,
                    &r.provider_name,
                    started.elapsed(),
                    Some(&err.to_string()),
                );
                self.svc.events.publish(
                    EventKind::ProviderFailed,
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
                    Ok(()) | Err(ProviderError::SandboxNotFound(_)) => {
                        Some(SandboxState::Destroyed)
                    }
                    // A worker that went away may have made the runtime (its daemon finishes
                    // a create): `destroying`, finished when it answers again. As `error`, the
                    // worker's status answer would have revived it as `running`.
                    Err(ProviderError::Unavailable(_)) if sb.placement.is_remote() => {
                        // `creating` may only become `running` or `error` (then `destroying`).
                        let marked = match self
                            .svc
                            .store
                            .set_sandbox_state(&sb.id, SandboxState::Error)
                            .await
                        {
                            Ok(_) => self.defer_destroy(&sb).await.map(|_| ()),
                            Err(e) => Err(e.into()),
                        };
                        if let Err(se) = marked {
                            tracing::warn!(sandbox_id = %sb.id, error = %se, "could not mark failed spawn");
                        }
                        None
                    }
                    Err(de) => {
                        tracing::warn!(sandbox_id = %sb.id, error = %de, "cleanup after failed spawn failed");
                        Some(SandboxState::Error)
                    }
                };
                if let Some(state) = state {
                    if let Err(se) = self.svc.store.set_sandbox_state(&sb.id, state).await {
                        tracing::warn!(sandbox_id = %sb.id, error = %se, "could not mark failed spawn");
                    }
                }
                return Err(err.into());
            }
        };
        if spawned.runtime_id != sb.id.as_str() {
            sb.vm_id = Some(spawned.runtime_id.clone());
        }
        let stored = self
            .svc
            .store
            .set_sandbox_running(&sb.id, sb.vm_id.as_deref())
            .await;
        match stored {
            Ok(s) => {
                self.svc
                    .ops
                    .observe(crate::ops::SPAWN, &r.provider_name, started.elapsed(), None);
                self.svc
                    .events
                    .publish(EventKind::SandboxCreated, Some(&s.id), None);
                self.svc
                    .events
                    .publish(EventKind::SandboxRunning, Some(&s.id), None);
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

    /// Records the spawn's volume mounts (404 for a volume deleted since, 409 for one another
    /// live sandbox writes). Volumes live on the worker that made them: a sandbox placed
    /// elsewhere cannot mount them (409 `WORKER_UNAVAILABLE` naming that worker).
    async fn mount_volumes(self, r: &ResolvedSpawn, sb: &Sandbox) -> ServiceResult<()> {
        let placed = match &sb.placement {
            Placement::Local => stacyvm_types::WorkerId::LOCAL.to_string(),
            Placement::Remote(w) => w.to_string(),
        };
        let needs = [
            ("volumes", r.mounts.worker.as_deref()),
            (
                "snapshot",
                r.snapshot.as_ref().map(|s| s.worker_id.as_str()),
            ),
        ];
        for (what, worker) in needs {
            if let Some(worker) = worker.filter(|w| *w != placed) {
                return Err(ServiceError::WorkerUnavailable(format!(
                    "the sandbox's {what} live on worker {worker}, which cannot take it now \
                     (placed on {placed})"
                )));
            }
        }
        if r.mounts.mounts.is_empty() {
            return Ok(());
        }
        match self
            .svc
            .store
            .mount_volumes(&sb.id, &r.mounts.records(&sb.id))
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if e.is_not_found() => Err(ServiceError::NotFound(e.to_string())),
            Err(e) => Err(e.into()),
        }
    }

    /// Marks the record of a spawn that stopped before its provider call `destroyed`.
    async fn drop_record(self, id: &SandboxId) {
        if let Err(e) = self
            .svc
            .store
            .set_sandbox_state(id, SandboxState::Destroyed)
            .await
        {
            tracing::warn!(sandbox_id = %id, error = %e, "could not drop the record of a refused spawn");
        }
    }

    /// A spawn from a snapshot takes its image and provider (given ones must match: 400);
    /// 404 `SNAPSHOT_NOT_FOUND` for an unknown one.
    async fn snapshot_of(
        self,
        p: &mut SpawnParams,
    ) -> ServiceResult<Option<stacyvm_store::Snapshot>> {
        let sid = p.snapshot.trim();
        if sid.is_empty() {
            return Ok(None);
        }
        let snap = self.svc.snapshots().get(sid).await?;
        let differs = |given: &str, have: &str| !given.trim().is_empty() && given.trim() != have;
        if differs(&p.image, &snap.image) || differs(&p.provider, &snap.provider) {
            return Err(ServiceError::bad_request(format!(
                "snapshot {} is of image {:?} on provider {}; omit image and provider or give \
                 those",
                snap.id, snap.image, snap.provider
            )));
        }
        p.image = snap.image.clone();
        p.provider = snap.provider.clone();
        Ok(Some(snap))
    }
}
