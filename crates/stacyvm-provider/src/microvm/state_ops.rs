//! The provider's verbs that move whole VMs through files: pause to disk, resume, memory
//! snapshots and spawns from them ([`super::paused`], [`super::memsnap`]), and the spawn
//! bookkeeping they share with a plain spawn.

use std::sync::Arc;

use super::boot::{Vm, VmMeta};
use super::vmm::VmPaths;
use super::{lock, memsnap, paused, snapshot, valid_runtime_id, MicrovmProvider};
use crate::{Provider, ProviderError, SandboxSpec, Spawned};

impl MicrovmProvider {
    /// Checks `spec` and its id, starts its VM with `start` and records it.
    pub(super) async fn spawn_as<F>(
        &self,
        spec: &SandboxSpec,
        start: impl FnOnce(VmPaths) -> F,
    ) -> Result<Spawned, ProviderError>
    where
        F: std::future::Future<Output = Result<Vm, ProviderError>>,
    {
        let id = spec.id.clone();
        if !valid_runtime_id(&id) {
            return Err(ProviderError::InvalidInput(format!(
                "invalid sandbox id {id:?}"
            )));
        }
        if spec.image.trim().is_empty() {
            return Err(ProviderError::ImageNotFound(String::new()));
        }
        let paths = VmPaths::new(&self.vms_dir(), &id);
        if lock(&self.vms).contains_key(&id)
            || paths.dir.exists()
            || !lock(&self.starting).insert(id.clone())
        {
            return Err(ProviderError::InvalidInput(format!(
                "sandbox {id} already exists"
            )));
        }
        let r = start(paths).await;
        lock(&self.starting).remove(&id);
        let vm = r?;
        self.destroyed.forget(&id);
        lock(&self.vms).insert(id.clone(), Arc::new(vm));
        Ok(Spawned { runtime_id: id })
    }

    /// The directory of a VM not running in this process, if it is paused to disk.
    pub(super) fn paused_paths(&self, id: &str) -> Option<VmPaths> {
        if !valid_runtime_id(id) || self.destroyed.contains(id) {
            return None;
        }
        let paths = VmPaths::new(&self.vms_dir(), id);
        paused::is_paused(&paths).then_some(paths)
    }

    /// Saves the VM's memory and devices into its directory and ends its QEMU (docs/state.md).
    pub(super) async fn pause_to_disk(&self, runtime_id: &str) -> Result<(), ProviderError> {
        let _one = self.state_ops.lock().await;
        let Some(vm) = lock(&self.vms).get(runtime_id).cloned() else {
            return match self.paused_paths(runtime_id) {
                Some(_) => Ok(()),
                None => Err(ProviderError::SandboxNotFound(runtime_id.to_string())),
            };
        };
        paused::pause(&vm).await?;
        lock(&self.vms).remove(runtime_id);
        Ok(())
    }

    /// Starts a paused VM again from its saved state; its processes go on.
    pub(super) async fn resume_from_disk(&self, runtime_id: &str) -> Result<(), ProviderError> {
        let _one = self.state_ops.lock().await;
        if lock(&self.vms).contains_key(runtime_id) {
            return Ok(());
        }
        let Some(paths) = self.paused_paths(runtime_id) else {
            return Err(ProviderError::SandboxNotFound(runtime_id.to_string()));
        };
        if !lock(&self.starting).insert(runtime_id.to_string()) {
            return Err(ProviderError::InvalidInput(format!(
                "sandbox {runtime_id} is being started"
            )));
        }
        let r = paused::resume(&self.core, paths).await;
        lock(&self.starting).remove(runtime_id);
        let vm = r?;
        // Destroyed while it was being resumed: what the destroy found to remove is gone, so
        // finish the job on what the resume made.
        if self.destroyed.contains(runtime_id) {
            super::boot::teardown(&vm).await;
            return Err(ProviderError::SandboxNotFound(runtime_id.to_string()));
        }
        lock(&self.vms).insert(runtime_id.to_string(), Arc::new(vm));
        Ok(())
    }

    /// A `memory` snapshot of a running or paused VM (the running one keeps running).
    pub(super) async fn memory_snapshot(
        &self,
        runtime_id: &str,
        snapshot_id: &str,
    ) -> Result<crate::SnapshotMade, ProviderError> {
        let _one = self.state_ops.lock().await;
        let running = lock(&self.vms).get(runtime_id).cloned();
        let source = match &running {
            Some(vm) => memsnap::Source::Running(vm),
            None => match self.paused_paths(runtime_id) {
                Some(paths) => paused::as_source(paths).await?,
                None => return Err(ProviderError::SandboxNotFound(runtime_id.to_string())),
            },
        };
        self.snaps.take(&self.core, source, snapshot_id).await
    }

    /// A clone of the snapshot: its processes and memory, a new identity, its own disk copy.
    /// The snapshot's memory and vCPUs win over the spec's.
    pub(super) async fn spawn_snapshot_clone(
        &self,
        spec: &SandboxSpec,
        mounts: &[crate::VolumeMountSpec],
        snapshot_id: &str,
    ) -> Result<Spawned, ProviderError> {
        if !mounts.is_empty() {
            return Err(crate::volumes_unsupported(self.name()));
        }
        let (tpl, mut shape) = self.snaps.template(snapshot_id)?;
        shape.preview_port = self.core.preview_port();
        let meta = VmMeta::of(spec, self.config.cluster.as_deref());
        self.spawn_as(spec, |paths| async move {
            let core = &self.core;
            snapshot::restore(core, &tpl, meta, paths, &shape, &spec.id, false).await
        })
        .await
    }
}
