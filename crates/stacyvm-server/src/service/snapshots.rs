//! Snapshots and fork (sandbox-model.md §2, docs/state.md). The provider makes a snapshot
//! completely (temporary name, then renamed) before its record is written, so a half-made
//! snapshot is never recorded; a record whose write fails takes the provider's snapshot with
//! it. Snapshots live on the worker that made them (`worker_id`), and spawns from one are
//! placed there.

use stacyvm_store::Snapshot;
use stacyvm_types::{Sandbox, SandboxId, SandboxState, WorkerId};

use super::{Caller, Service, SpawnParams};
use crate::error::{ServiceError, ServiceResult};

/// Most sandboxes one fork makes.
const MAX_FORK: i64 = 16;
const MAX_NAME: usize = 128;

#[derive(Clone, Copy)]
pub struct Snapshots<'a> {
    svc: &'a Service,
}

impl Service {
    pub fn snapshots(&self) -> Snapshots<'_> {
        Snapshots { svc: self }
    }
}

fn new_id() -> String {
    // The same 4 random bytes as a sandbox id, under its own prefix.
    format!("snap-{}", &stacyvm_types::new_sandbox_id()[3..])
}

impl Snapshots<'_> {
    /// `POST /sandboxes/{id}/snapshots`: the sandbox keeps running. 409 `CONFLICT` unless it
    /// is running or paused; 409 `NOT_SUPPORTED` when its provider (or its placement on a
    /// remote worker) cannot snapshot.
    pub async fn create(self, id: &SandboxId, name: Option<String>) -> ServiceResult<Snapshot> {
        let name = name.unwrap_or_default();
        if name.len() > MAX_NAME || name.chars().any(char::is_control) {
            return Err(ServiceError::bad_request(format!(
                "name must be at most {MAX_NAME} characters without control characters"
            )));
        }
        let sb = self.svc.sandboxes().get(id).await?;
        if !matches!(sb.state, SandboxState::Running | SandboxState::Paused) {
            return Err(ServiceError::Conflict(format!(
                "sandbox {id} is {}; only a running or paused sandbox can be snapshotted",
                sb.state.as_str()
            )));
        }
        let provider = self.svc.provider_for(&sb).await?;
        let sid = new_id();
        let made = provider.snapshot(sb.runtime_id(), &sid).await?;
        let snap = Snapshot {
            name: if name.is_empty() { sid.clone() } else { name },
            id: sid,
            sandbox_id: sb.id.clone(),
            provider: sb.provider.clone(),
            image: sb.image.clone(),
            kind: made.kind.to_string(),
            size_bytes: i64::try_from(made.size_bytes).unwrap_or(i64::MAX),
            // It lives with the sandbox's worker, and spawns from it are placed there.
            worker_id: WorkerId::from(sb.placement.clone()).to_string(),
            created_at: chrono::Utc::now(),
        };
        if let Err(e) = self.svc.store.insert_snapshot(&snap).await {
            if let Err(de) = provider.delete_snapshot(&snap.id).await {
                tracing::warn!(snapshot = %snap.id, error = %de, "removing an unrecorded snapshot failed");
            }
            return Err(e.into());
        }
        Ok(snap)
    }

    /// What providers hold of snapshots no record names, and parts of unfinished ones, older
    /// than `grace` (a snapshot is made before its record is written): a crash between the
    /// two leaves no image or directory behind for good. `remote` asks the workers holding
    /// snapshots too. The names removed.
    pub(crate) async fn remove_orphans(
        self,
        grace: std::time::Duration,
        remote: bool,
    ) -> ServiceResult<Vec<String>> {
        let known: std::collections::HashSet<String> = self
            .svc
            .store
            .list_snapshots()
            .await?
            .into_iter()
            .map(|s| s.id)
            .collect();
        let mut removed = Vec::new();
        let holders = if remote {
            self.svc.state_holders().await?
        } else {
            self.svc.providers.all().cloned().collect()
        };
        for p in holders {
            match p.sweep_snapshots(&known, grace).await {
                Ok(names) => {
                    for n in &names {
                        tracing::info!(snapshot = %n, provider = p.name(), "removed a snapshot no record names");
                    }
                    removed.extend(names);
                }
                Err(e) => {
                    tracing::warn!(provider = p.name(), error = %e, "reconcile: stray snapshots")
                }
            }
        }
        Ok(removed)
    }

    pub async fn list(self) -> ServiceResult<Vec<Snapshot>> {
        Ok(self.svc.store.list_snapshots().await?)
    }

    /// 404 `SNAPSHOT_NOT_FOUND` for an unknown id.
    pub async fn get(self, sid: &str) -> ServiceResult<Snapshot> {
        match self.svc.store.get_snapshot(sid).await {
            Ok(s) => Ok(s),
            Err(e) if e.is_not_found() => Err(ServiceError::SnapshotNotFound(sid.to_string())),
            Err(e) => Err(e.into()),
        }
    }

    /// Removes the record, then the provider's snapshot (sandboxes made from it are copies
    /// and keep running).
    pub async fn delete(self, sid: &str) -> ServiceResult<()> {
        let snap = self.get(sid).await?;
        match self.svc.store.delete_snapshot(sid).await {
            Ok(()) => {}
            Err(e) if e.is_not_found() => {
                return Err(ServiceError::SnapshotNotFound(sid.to_string()))
            }
            Err(e) => return Err(e.into()),
        }
        // A failure now (its worker away included) leaves data no record names, which the
        // reconcile pass's sweep removes once it can reach it.
        let on = self.svc.provider_on_worker(&snap.worker_id, &snap.provider);
        if let Err(e) = async { Ok::<_, ServiceError>(on.await?.delete_snapshot(sid).await?) }.await
        {
            tracing::warn!(snapshot = %sid, error = %e, "removing the snapshot's data failed");
        }
        Ok(())
    }

    /// `POST /sandboxes/{id}/fork`: a snapshot of the sandbox as it is now, then `count`
    /// (default 1, at most 16) sandboxes from it with the source's resources, owner,
    /// metadata and lifecycle. All or nothing: when one spawn fails, the ones made are
    /// destroyed. The snapshot is removed afterwards (the copies do not need it).
    pub async fn fork(
        self,
        id: &SandboxId,
        count: Option<i64>,
        caller: &Caller,
    ) -> ServiceResult<Vec<Sandbox>> {
        let count = count.unwrap_or(1);
        if !(1..=MAX_FORK).contains(&count) {
            return Err(ServiceError::bad_request(format!(
                "count must be between 1 and {MAX_FORK}"
            )));
        }
        let src = self.svc.sandboxes().get(id).await?;
        let snap = self.create(id, Some(format!("fork of {id}"))).await?;
        let mut made = Vec::new();
        let mut failure = None;
        for _ in 0..count {
            let p = SpawnParams {
                provider: src.provider.clone(),
                image: src.image.clone(),
                memory_mb: src.memory_mb,
                vcpus: src.vcpus,
                owner_id: src.owner_id.clone(),
                metadata: src.metadata.clone(),
                on_expire: src.lifecycle.on_expire.as_str().to_string(),
                idle_timeout: src
                    .lifecycle
                    .idle_timeout
                    .map(|d| d.to_string())
                    .unwrap_or_default(),
                public_preview: src.public_preview,
                snapshot: snap.id.clone(),
                ..SpawnParams::default()
            };
            match self.svc.sandboxes().spawn(p, caller).await {
                Ok(sb) => made.push(sb),
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        if let Some(e) = failure {
            for sb in &made {
                if let Err(de) = self.svc.sandboxes().destroy(&sb.id).await {
                    tracing::warn!(sandbox_id = %sb.id, error = %de, "destroying a fork's copy failed");
                }
            }
            let _ = self.delete(&snap.id).await;
            return Err(e);
        }
        if let Err(e) = self.delete(&snap.id).await {
            tracing::warn!(snapshot = %snap.id, error = %e, "removing a fork's snapshot failed");
        }
        Ok(made)
    }
}
