//! Volumes (sandbox-model.md §2, docs/state.md): named disks that outlive the sandboxes that
//! mount them. The record (store) comes first and the provider's volume second, so a volume
//! never exists on a provider without a record naming it; a delete removes the record first
//! (refused while a live sandbox mounts it) and the provider's volume after.

use std::collections::BTreeMap;

use stacyvm_provider::VolumeMountSpec;
use stacyvm_store::{StoreError, Volume, VolumeMount};
use stacyvm_types::{SandboxId, WorkerId};

use super::Service;
use crate::error::{ServiceError, ServiceResult};

/// Top-level directories a volume may not be mounted over or below.
const SYSTEM_DIRS: &[&str] = &[
    "bin", "boot", "dev", "etc", "lib", "lib32", "lib64", "libx32", "proc", "run", "sbin", "sys",
    "usr", ".stacyvm",
];
/// Directories the backends mount themselves: a volume goes below them, not over them.
const BACKEND_MOUNTS: &[&str] = &["/workspace", "/tmp"];
const MAX_MOUNT_PATH: usize = 1024;
/// Largest `size_mb` accepted (1 TiB).
const MAX_SIZE_MB: i64 = 1 << 20;

/// `POST /volumes`.
#[derive(Debug, Clone, Default)]
pub struct VolumeParams {
    pub name: String,
    /// 0 = the backend's default.
    pub size_mb: i64,
    /// Empty = the default provider.
    pub provider: String,
    /// The worker to hold it; empty = where placement would put a sandbox now (`local`
    /// whenever it is eligible).
    pub worker_id: String,
}

/// One entry of a spawn's `volumes`.
#[derive(Debug, Clone, Default)]
pub struct MountParams {
    pub name: String,
    pub mount_path: String,
    pub read_only: bool,
}

/// A volume and the live sandboxes that mount it.
#[derive(Debug, Clone)]
pub struct VolumeInfo {
    pub volume: Volume,
    pub in_use_by: Vec<SandboxId>,
}

/// A spawn's volumes, checked: what the store records and what the provider mounts.
#[derive(Debug, Clone, Default)]
pub(crate) struct PlannedMounts {
    pub mounts: Vec<VolumeMountSpec>,
    /// The worker holding them (all on one), `None` when there are none.
    pub worker: Option<String>,
}

impl PlannedMounts {
    pub fn records(&self, sandbox: &SandboxId) -> Vec<VolumeMount> {
        self.mounts
            .iter()
            .map(|m| VolumeMount {
                sandbox_id: sandbox.clone(),
                volume: m.volume.clone(),
                mount_path: m.mount_path.clone(),
                read_only: m.read_only,
            })
            .collect()
    }
}

#[derive(Clone, Copy)]
pub struct Volumes<'a> {
    svc: &'a Service,
}

impl Service {
    pub fn volumes(&self) -> Volumes<'_> {
        Volumes { svc: self }
    }
}

/// Volume names: what Docker accepts, short enough for a volume name with our prefix.
pub(crate) fn validate_name(name: &str) -> ServiceResult<()> {
    let mut bytes = name.bytes();
    let ok = bytes.next().is_some_and(|b| b.is_ascii_alphanumeric())
        && name.len() <= 64
        && bytes.all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ServiceError::bad_request(format!(
            "invalid volume name {name:?}: 1-64 letters, digits, '-', '_' or '.', starting with \
             a letter or digit"
        )))
    }
}

/// An absolute, clean path inside the sandbox that is not a system directory; returned
/// without a trailing `/`.
pub(crate) fn check_mount_path(raw: &str) -> ServiceResult<String> {
    let bad = |why: &str| ServiceError::bad_request(format!("mount_path {raw:?} {why}"));
    if raw.len() > MAX_MOUNT_PATH || raw.contains('\0') {
        return Err(bad("is too long or holds a NUL byte"));
    }
    let Some(rest) = raw.strip_prefix('/') else {
        return Err(bad("must be an absolute path inside the sandbox"));
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let parts: Vec<&str> = rest.split('/').collect();
    if rest.is_empty() {
        return Err(bad("is the sandbox's root directory"));
    }
    if parts
        .iter()
        .any(|p| p.is_empty() || *p == "." || *p == "..")
    {
        return Err(bad(
            "must be a clean path inside the sandbox (no '.', '..' or '//')",
        ));
    }
    if SYSTEM_DIRS.contains(&parts[0]) || (parts[0] == "var" && parts.get(1) == Some(&"run")) {
        return Err(bad("is a system directory or below one"));
    }
    let path = format!("/{rest}");
    if BACKEND_MOUNTS.contains(&path.as_str()) {
        return Err(bad(
            "is mounted by the sandbox itself; mount the volume below it",
        ));
    }
    Ok(path)
}

/// Whether `a` is `b` or below it (both clean and absolute).
fn within(a: &str, b: &str) -> bool {
    a == b || a.strip_prefix(b).is_some_and(|r| r.starts_with('/'))
}

impl Volumes<'_> {
    async fn info(self, v: Volume) -> ServiceResult<VolumeInfo> {
        let mut users = self.users().await?;
        let in_use_by = users.remove(&v.name).unwrap_or_default();
        Ok(VolumeInfo {
            volume: v,
            in_use_by,
        })
    }

    /// Volume name → the live sandboxes mounting it.
    async fn users(self) -> ServiceResult<BTreeMap<String, Vec<SandboxId>>> {
        let mut by: BTreeMap<String, Vec<SandboxId>> = BTreeMap::new();
        for m in self.svc.store.list_volume_mounts().await? {
            let list = by.entry(m.volume).or_default();
            if !list.contains(&m.sandbox_id) {
                list.push(m.sandbox_id);
            }
        }
        Ok(by)
    }

    fn not_found(name: &str) -> ServiceError {
        ServiceError::NotFound(format!("not found: volume {name:?}"))
    }

    /// The worker a new volume lives on: the one asked for (409 `WORKER_UNAVAILABLE` when it
    /// cannot take it), else where placement would put a sandbox of `provider` now (`local`
    /// whenever it is eligible).
    async fn worker_for(self, asked: &str, provider: &str) -> ServiceResult<WorkerId> {
        let asked = asked.trim();
        if !asked.is_empty() {
            let w = WorkerId::from(asked);
            self.svc.pinned_ready(&w, provider).await?;
            return Ok(w);
        }
        let placed = self.svc.place(provider, None).await?;
        match placed.target {
            Some(t) if !placed.rpc_unavailable => Ok(WorkerId::from(t)),
            _ => Err(ServiceError::WorkerUnavailable(format!(
                "no worker can take a {provider} volume now"
            ))),
        }
    }

    /// `POST /volumes`: 409 `CONFLICT` for a taken name, 409 `NOT_SUPPORTED` when the provider
    /// cannot keep volumes.
    pub async fn create(self, p: VolumeParams) -> ServiceResult<VolumeInfo> {
        validate_name(&p.name)?;
        if !(0..=MAX_SIZE_MB).contains(&p.size_mb) {
            return Err(ServiceError::bad_request(format!(
                "size_mb must be between 0 and {MAX_SIZE_MB}"
            )));
        }
        let name = self
            .svc
            .providers
            .get(p.provider.trim())?
            .name()
            .to_string();
        let worker = self.worker_for(&p.worker_id, &name).await?;
        let provider = self.svc.provider_on_worker(worker.as_str(), &name).await?;
        if !provider.capabilities().contains(&"volumes") {
            return Err(stacyvm_provider::volumes_unsupported(&name).into());
        }
        let v = Volume {
            name: p.name.clone(),
            size_mb: p.size_mb,
            provider: name,
            worker_id: worker.to_string(),
            created_at: chrono::Utc::now(),
        };
        match self.svc.store.insert_volume(&v).await {
            Ok(()) => {}
            Err(StoreError::Conflict(_)) => {
                return Err(ServiceError::Conflict(format!(
                    "volume {:?} already exists",
                    p.name
                )))
            }
            Err(e) => return Err(e.into()),
        }
        if let Err(e) = provider.create_volume(&v.name, v.size_mb).await {
            if let Err(se) = self.svc.store.delete_volume(&v.name).await {
                tracing::warn!(volume = %v.name, error = %se, "could not drop the record of a failed volume");
            }
            return Err(e.into());
        }
        Ok(VolumeInfo {
            volume: v,
            in_use_by: Vec::new(),
        })
    }

    pub async fn list(self) -> ServiceResult<Vec<VolumeInfo>> {
        let mut users = self.users().await?;
        Ok(self
            .svc
            .store
            .list_volumes()
            .await?
            .into_iter()
            .map(|v| VolumeInfo {
                in_use_by: users.remove(&v.name).unwrap_or_default(),
                volume: v,
            })
            .collect())
    }

    /// 404 `NOT_FOUND` for an unknown name.
    pub async fn get(self, name: &str) -> ServiceResult<VolumeInfo> {
        match self.svc.store.get_volume(name).await {
            Ok(v) => self.info(v).await,
            Err(e) if e.is_not_found() => Err(Self::not_found(name)),
            Err(e) => Err(e.into()),
        }
    }

    /// 409 `VOLUME_IN_USE` while a sandbox that is not destroyed mounts it.
    pub async fn delete(self, name: &str) -> ServiceResult<()> {
        let v = match self.svc.store.get_volume(name).await {
            Ok(v) => v,
            Err(e) if e.is_not_found() => return Err(Self::not_found(name)),
            Err(e) => return Err(e.into()),
        };
        match self.svc.store.delete_volume(name).await {
            Ok(()) => {}
            Err(StoreError::Conflict(m)) => return Err(ServiceError::VolumeInUse(m)),
            Err(e) if e.is_not_found() => return Err(Self::not_found(name)),
            Err(e) => return Err(e.into()),
        }
        // The record is gone: a provider failure now (its worker away included) leaves data
        // no record names, which the reconcile pass removes once it can reach it.
        let on = self.svc.provider_on_worker(&v.worker_id, &v.provider);
        if let Err(e) = async { Ok::<_, ServiceError>(on.await?.delete_volume(name).await?) }.await
        {
            tracing::warn!(volume = %name, error = %e, "removing the volume's data failed; reconciliation retries");
        }
        Ok(())
    }

    /// Checks a spawn's `volumes`: each exists (404), lives on `provider` (400), its path is
    /// clean and not a system directory (400), no two overlap (400).
    pub(crate) async fn plan(
        self,
        asked: &[MountParams],
        provider: &str,
    ) -> ServiceResult<PlannedMounts> {
        let mut out = PlannedMounts::default();
        for m in asked {
            validate_name(&m.name)?;
            let path = check_mount_path(&m.mount_path)?;
            if out.mounts.iter().any(|o| o.volume == m.name) {
                return Err(ServiceError::bad_request(format!(
                    "volume {:?} is listed twice",
                    m.name
                )));
            }
            if let Some(o) = out
                .mounts
                .iter()
                .find(|o| within(&path, &o.mount_path) || within(&o.mount_path, &path))
            {
                return Err(ServiceError::bad_request(format!(
                    "mount paths {path} and {} overlap",
                    o.mount_path
                )));
            }
            let v = match self.svc.store.get_volume(&m.name).await {
                Ok(v) => v,
                Err(e) if e.is_not_found() => return Err(Self::not_found(&m.name)),
                Err(e) => return Err(e.into()),
            };
            if v.provider != provider {
                return Err(ServiceError::bad_request(format!(
                    "volume {:?} belongs to the {} provider, not {provider}",
                    v.name, v.provider
                )));
            }
            if let Some(w) = out.worker.as_ref().filter(|w| **w != v.worker_id) {
                return Err(ServiceError::Conflict(format!(
                    "volume {:?} lives on worker {}, another of the spawn's on worker {w}; a \
                     sandbox runs on one worker",
                    v.name, v.worker_id
                )));
            }
            out.worker = Some(v.worker_id);
            out.mounts.push(VolumeMountSpec {
                volume: v.name,
                mount_path: path,
                read_only: m.read_only,
            });
        }
        Ok(out)
    }

    /// Provider volumes of this installation that no record names (a delete whose provider
    /// step failed, or a create that died between its steps and dropped its record). Listed
    /// before the records are read: a create records first, so a volume listed first always
    /// finds its record. Returns how many were removed.
    pub(crate) async fn remove_orphans(self) -> ServiceResult<usize> {
        let mut found = Vec::new();
        for p in self.svc.state_holders().await? {
            if let Ok(Some(list)) = p.list_volumes().await {
                found.extend(list.into_iter().map(|v| (p.clone(), v)));
            }
        }
        if found.is_empty() {
            return Ok(0);
        }
        let known: std::collections::BTreeSet<String> = self
            .svc
            .store
            .list_volumes()
            .await?
            .into_iter()
            .map(|v| v.name)
            .collect();
        let mut removed = 0;
        for (p, name) in found {
            if known.contains(&name) {
                continue;
            }
            match p.delete_volume(&name).await {
                Ok(()) => {
                    tracing::info!(volume = %name, provider = p.name(), "removed a volume no record names");
                    removed += 1;
                }
                Err(e) => {
                    tracing::warn!(volume = %name, error = %e, "removing an orphan volume failed")
                }
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn mount_paths() {
        assert_eq!(check_mount_path("/data").unwrap(), "/data");
        assert_eq!(
            check_mount_path("/workspace/data/").unwrap(),
            "/workspace/data"
        );
        assert_eq!(check_mount_path("/var/lib/x").unwrap(), "/var/lib/x");
        for bad in [
            "",
            "data",
            "/",
            "/proc",
            "/sys/x",
            "/dev",
            "/etc/app",
            "/usr/local",
            "/bin",
            "/lib64",
            "/run/x",
            "/var/run",
            "/a/../b",
            "/a//b",
            "/./a",
            "/workspace",
            "/tmp",
            "/.stacyvm/agent",
        ] {
            assert!(check_mount_path(bad).is_err(), "{bad:?} accepted");
        }
        assert!(within("/a/b", "/a") && within("/a", "/a") && !within("/ab", "/a"));
    }
}
