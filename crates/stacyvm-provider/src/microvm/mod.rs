//! Sandboxes as QEMU `microvm` guests, each with its own kernel, driven through an in-guest
//! agent (`crates/stacyvm-agent`) over a virtio-serial port.
//!
//! Every sandbox gets `<data_dir>/vms/<id>/` with a qcow2 overlay over its image's read-only
//! base disk, the agent and QMP sockets, the serial console log and a `vm.json` naming the
//! sandbox, so a restarted provider can still list and destroy it. QEMU runs in its own process
//! group with its seccomp sandbox on, no host directory shared, and no NIC unless
//! `network_mode: user`. Under TCG (no usable KVM) the guest kernel is still a separate kernel,
//! but the emulator is not a hardware isolation boundary; the provider says so at startup and
//! in its summary.
//!
//! A spawn takes, in order: a clone from the warm pool ([`pool`]), a clone restored from its
//! image's template snapshot ([`snapshot`], built by the first spawn of the image), or a cold
//! boot ([`boot`]) when snapshots are off or unusable.
//!
//! Pause saves the whole VM into its directory and ends QEMU ([`paused`]); memory snapshots
//! are stored like templates and cloned the same way ([`memsnap`]); both go through QEMU
//! migration to files ([`migrate`]).

// Shared with the other providers; the submodules keep their `super::agent_conn` paths.
use crate::agent::conn as agent_conn;
use crate::agent::procs;
use crate::agent::{files, transfer as stream};
mod boot;
mod exec;
mod memsnap;
mod migrate;
mod net;
mod paused;
mod pool;
mod qmp;
mod rootfs;
mod sealed;
mod settings;
mod snapshot;
mod state_ops;
mod vmm;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use settings::Accel;
use stacyvm_types::{FileInfo, SandboxState};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use self::boot::{Core, Vm, VmMeta};
use self::snapshot::{TemplateKey, Templates};
use self::vmm::VmPaths;
use crate::tombstones::Tombstones;
use crate::{
    ByteStream, ChunkSender, ExecRequest, FileStream, MicrovmConfig, Provider, ProviderError,
    RuntimeInfo, SandboxSpec, Spawned,
};

const TCG_WARNING: &str =
    "microvm runs under TCG (software emulation): each sandbox has its own kernel, but TCG is not a hardware isolation boundary";

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The `microvm` provider.
pub struct MicrovmProvider {
    config: MicrovmConfig,
    core: Arc<Core>,
    vms: Mutex<HashMap<String, Arc<Vm>>>,
    starting: Mutex<HashSet<String>>,
    destroyed: Tombstones,
    /// The pool's refill task, started by the first spawn that can use the pool.
    refill: Mutex<Option<(JoinHandle<()>, CancellationToken)>>,
    /// Memory snapshots (`<data_dir>/snapshots/`).
    snaps: memsnap::Snapshots,
    /// Snapshots being saved now: the sweep never takes their `.tmp-` directories.
    snapshots_in_flight: crate::in_flight::SnapshotsInFlight,
    /// One pause, resume or snapshot at a time: each moves a whole VM through files.
    state_ops: tokio::sync::Mutex<()>,
}

/// Ids double as directory names: keep them to a safe alphabet.
pub(crate) fn valid_runtime_id(id: &str) -> bool {
    let mut bytes = id.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphanumeric())
        && id.len() <= 64
        && bytes.all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

impl MicrovmProvider {
    /// Validates `config`; assets are checked by [`Provider::health`], not here. Removes
    /// templates built from other assets and pools of processes that are gone.
    pub fn new(config: MicrovmConfig) -> Result<Self, ProviderError> {
        let settings = config.validate(vmm::kvm_usable())?;
        if settings.accel == Accel::Tcg {
            tracing::warn!("{TCG_WARNING}");
        }
        let tsc_khz = settings.tsc_khz.or_else(vmm::host_tsc_khz);
        let templates = Templates::new(&settings.data_dir);
        templates.remove_stale();
        pool::Pool::remove_stale(&settings.data_dir);
        let snaps = memsnap::Snapshots::new(&settings.data_dir);
        let core = Core {
            rootfs: rootfs::Rootfs::new(&settings.data_dir, config.image_store.clone()),
            pool: pool::Pool::new(&settings.data_dir, settings.warm_pool),
            templates,
            tsc_khz,
            settings,
        };
        Ok(MicrovmProvider {
            config,
            core: Arc::new(core),
            vms: Mutex::new(HashMap::new()),
            starting: Mutex::new(HashSet::new()),
            destroyed: Tombstones::default(),
            refill: Mutex::new(None),
            snaps,
            snapshots_in_flight: Default::default(),
            state_ops: tokio::sync::Mutex::new(()),
        })
    }

    fn vms_dir(&self) -> std::path::PathBuf {
        self.core.vms_dir()
    }

    fn vm(&self, id: &str) -> Result<Arc<Vm>, ProviderError> {
        lock(&self.vms)
            .get(id)
            .cloned()
            .ok_or_else(|| ProviderError::SandboxNotFound(id.to_string()))
    }

    /// How long the spawn of `id` took to reach a ready agent.
    pub fn boot_time(&self, id: &str) -> Option<Duration> {
        lock(&self.vms).get(id).map(|vm| vm.booted_in)
    }

    /// How `id` was started: `cold`, `restored` (from its image's snapshot) or `pooled`.
    pub fn boot_kind(&self, id: &str) -> Option<&'static str> {
        lock(&self.vms).get(id).map(|vm| vm.kind.as_str())
    }

    /// QEMU's pid for `id` (for memory measurements).
    pub fn qemu_pid(&self, id: &str) -> Option<i32> {
        lock(&self.vms).get(id).map(|vm| vm.meta.pid)
    }

    /// The loopback host port forwarded to guest port 3000 of `id` (`network_mode: user`), for
    /// its preview URL.
    pub fn preview_port(&self, id: &str) -> Option<u16> {
        lock(&self.vms).get(id).and_then(|vm| vm.meta.preview_port)
    }

    /// Ready clones in the warm pool, over all images.
    pub fn warm_count(&self) -> usize {
        self.core.pool.len()
    }

    fn ensure_refill_task(&self) {
        let mut task = lock(&self.refill);
        if task.is_none() {
            let cancel = CancellationToken::new();
            let handle = tokio::spawn(pool::refill(self.core.clone(), cancel.clone()));
            *task = Some((handle, cancel));
        }
    }

    /// Starts the VM of `spec`: from the pool, from its image's snapshot, or by a cold boot.
    async fn start(&self, spec: &SandboxSpec, paths: VmPaths) -> Result<Vm, ProviderError> {
        let core = &self.core;
        let base = core.rootfs.base(&spec.image).await?;
        let shape = core.shape(spec);
        let meta = VmMeta::of(spec, self.config.cluster.as_deref());
        if !core.settings.snapshots {
            return core.cold_boot(meta, &base, paths, &shape).await;
        }
        let key = TemplateKey::new(core, &core.qemu()?, &base, &shape);
        if core.pool.enabled() {
            if let Some(vm) = core.pool.take(&key.name) {
                match pool::resume(vm, meta.clone(), paths.clone()).await {
                    Ok(vm) => {
                        tracing::info!(sandbox_id = %spec.id, us = vm.booted_in.as_micros() as u64, "microvm ready (warm pool)");
                        return Ok(vm);
                    }
                    Err((vm, e)) => {
                        tracing::warn!(sandbox_id = %spec.id, error = %e, "resuming a pooled microvm failed; restoring instead");
                        boot::teardown(&vm).await;
                        let _ = tokio::fs::remove_dir_all(&paths.dir).await;
                    }
                }
            }
        }
        let Some(tpl) = core.templates.get(core, &key, &base, &shape).await else {
            return core.cold_boot(meta, &base, paths, &shape).await;
        };
        let restored = snapshot::restore(
            core,
            &tpl,
            meta.clone(),
            paths.clone(),
            &shape,
            &spec.id,
            false,
        )
        .await;
        match restored {
            Ok(vm) => {
                core.templates.restore_succeeded(&tpl);
                tracing::info!(sandbox_id = %spec.id, ms = vm.booted_in.as_millis() as u64, "microvm ready (restored)");
                if core.pool.enabled() {
                    core.pool.want(&tpl, &shape);
                    self.ensure_refill_task();
                }
                Ok(vm)
            }
            Err(e) => {
                tracing::warn!(sandbox_id = %spec.id, error = %e, "restoring a microvm clone failed; booting cold");
                if core.templates.restore_failed(&tpl) {
                    for vm in core.pool.forget(&tpl.key) {
                        boot::teardown(&vm).await;
                    }
                }
                core.cold_boot(meta, &base, paths, &shape).await
            }
        }
    }

    /// Destroys a VM known only from its directory (left by an earlier process).
    async fn destroy_orphan(&self, id: &str) -> Result<(), ProviderError> {
        let paths = VmPaths::new(&self.vms_dir(), id);
        if !paths.dir.is_dir() {
            return Err(ProviderError::SandboxNotFound(id.to_string()));
        }
        if let Some(meta) = boot::read_meta(&paths).await {
            if vmm::is_qemu_process(meta.pid) {
                vmm::kill_group(meta.pid);
            }
        }
        tokio::fs::remove_dir_all(&paths.dir)
            .await
            .map_err(|e| ProviderError::internal_with("removing the VM directory failed", e))?;
        self.destroyed.remember(id);
        Ok(())
    }
}

impl Drop for MicrovmProvider {
    fn drop(&mut self) {
        if let Some((handle, cancel)) = lock(&self.refill).take() {
            cancel.cancel();
            handle.abort();
        }
        for vm in self.core.pool.drain() {
            pool::kill_now(&vm);
        }
        let _ = std::fs::remove_dir(self.core.pool.dir());
    }
}

#[async_trait::async_trait]
impl Provider for MicrovmProvider {
    fn name(&self) -> &str {
        "microvm"
    }

    fn capabilities(&self) -> Vec<&'static str> {
        let mut caps = crate::capabilities_with(&["health", "pause"]);
        // Memory snapshots clone like templates: only VMs restored from one can be taken.
        if self.core.settings.snapshots {
            caps.push("snapshots");
        }
        caps
    }

    fn config_summary(&self) -> serde_json::Value {
        let s = &self.core.settings;
        let tcg = s.accel == Accel::Tcg;
        serde_json::json!({
            "type": "microvm",
            "accel": s.accel.as_str(),
            "hardware_isolation": !tcg,
            "warning": if tcg { Some(TCG_WARNING) } else { None },
            "network_mode": self.config.network_mode,
            "warm_pool": self.config.warm_pool,
            "snapshots": s.snapshots,
            "kernel": s.kernel.file_name().map(|n| n.to_string_lossy().into_owned()),
            "agent_protocol_version": stacyvm_protocol::agent::AGENT_PROTOCOL_VERSION,
        })
    }

    async fn health(&self) -> Result<(), ProviderError> {
        if vmm::find_binary(&self.core.settings.qemu).is_none() {
            return Err(ProviderError::Unavailable(format!(
                "qemu binary {:?} not found",
                self.config.qemu_path
            )));
        }
        for (what, p) in [
            ("guest kernel", &self.core.settings.kernel),
            ("initramfs", &self.core.settings.initrd),
        ] {
            if !p.is_file() {
                return Err(ProviderError::Unavailable(format!(
                    "{what} missing (run scripts/setup-microvm.sh)"
                )));
            }
        }
        Ok(())
    }

    /// Stops the pool's refill task (waiting for it) and destroys the pooled clones. Running
    /// sandboxes are left alone. Dropping the provider does the same without waiting.
    async fn shutdown(&self) {
        let task = lock(&self.refill).take();
        if let Some((handle, cancel)) = task {
            cancel.cancel();
            if tokio::time::timeout(Duration::from_secs(30), handle)
                .await
                .is_err()
            {
                tracing::warn!("the microvm pool task did not stop in time");
            }
        }
        let pooled = self.core.pool.drain();
        let n = pooled.len();
        for vm in pooled {
            boot::teardown(&vm).await;
        }
        let _ = tokio::fs::remove_dir(self.core.pool.dir()).await;
        tracing::info!(destroyed = n, "microvm warm pool shut down");
    }

    async fn spawn(&self, spec: &SandboxSpec) -> Result<Spawned, ProviderError> {
        self.spawn_as(spec, |paths| self.start(spec, paths)).await
    }

    async fn destroy(&self, runtime_id: &str) -> Result<(), ProviderError> {
        if !valid_runtime_id(runtime_id) {
            return Err(ProviderError::SandboxNotFound(runtime_id.to_string()));
        }
        let vm = lock(&self.vms).remove(runtime_id);
        match vm {
            Some(vm) => {
                self.destroyed.remember(runtime_id);
                boot::teardown(&vm).await;
                Ok(())
            }
            None if self.destroyed.contains(runtime_id) => Ok(()),
            None => self.destroy_orphan(runtime_id).await,
        }
    }

    async fn status(&self, runtime_id: &str) -> Result<SandboxState, ProviderError> {
        if let Some(vm) = lock(&self.vms).get(runtime_id).cloned() {
            // The guest powers off when its agent dies: either way it cannot serve requests.
            return Ok(if vm.conn.is_closed() || vm.exited() {
                SandboxState::Unhealthy
            } else {
                SandboxState::Running
            });
        }
        if self.destroyed.contains(runtime_id) {
            return Ok(SandboxState::Destroyed);
        }
        if self.paused_paths(runtime_id).is_some() {
            return Ok(SandboxState::Paused);
        }
        Err(ProviderError::SandboxNotFound(runtime_id.to_string()))
    }

    /// Saves the VM's memory and devices into its directory and ends its QEMU (docs/state.md).
    async fn pause(&self, runtime_id: &str) -> Result<(), ProviderError> {
        self.pause_to_disk(runtime_id).await
    }

    /// Starts a paused VM again from its saved state; its processes go on.
    async fn resume(&self, runtime_id: &str) -> Result<(), ProviderError> {
        self.resume_from_disk(runtime_id).await
    }

    /// A `memory` snapshot of a running or paused VM (the running one keeps running).
    async fn snapshot(
        &self,
        runtime_id: &str,
        snapshot_id: &str,
    ) -> Result<crate::SnapshotMade, ProviderError> {
        let _in_flight = self.snapshots_in_flight.enter(snapshot_id);
        self.memory_snapshot(runtime_id, snapshot_id).await
    }

    async fn delete_snapshot(&self, snapshot_id: &str) -> Result<(), ProviderError> {
        self.snaps.delete(snapshot_id).await
    }

    async fn sweep_snapshots(
        &self,
        known: &HashSet<String>,
        grace: Duration,
    ) -> Result<Vec<String>, ProviderError> {
        Ok(self
            .snaps
            .sweep(&self.snapshots_in_flight.with_known(known), grace))
    }

    /// A clone of the snapshot: its processes and memory, a new identity, its own disk copy.
    /// The snapshot's memory and vCPUs win over the spec's.
    async fn spawn_from_snapshot(
        &self,
        spec: &SandboxSpec,
        mounts: &[crate::VolumeMountSpec],
        snapshot_id: &str,
    ) -> Result<Spawned, ProviderError> {
        self.spawn_snapshot_clone(spec, mounts, snapshot_id).await
    }

    async fn exec(
        &self,
        runtime_id: &str,
        req: ExecRequest,
        out: ChunkSender,
    ) -> Result<i32, ProviderError> {
        let vm = self.vm(runtime_id)?;
        // As a process of the guest's agent (exec on the process model) when the guest's
        // agent speaks protocol v4; guests booted from older assets keep `ExecStart`.
        let r = if crate::agent::exec::supported(&vm.conn) {
            if req.command.is_empty() {
                return Err(ProviderError::InvalidInput(
                    "command must not be empty".into(),
                ));
            }
            let timeout = req.timeout;
            let msg = procs::start_msg(&crate::ProcessSpec {
                exec: req,
                ..crate::ProcessSpec::default()
            })?;
            let chunk = stacyvm_protocol::agent::OUTPUT_CHUNK;
            crate::agent::exec::run(vm.clone(), msg, timeout, out, chunk).await
        } else {
            exec::run(&vm.conn, req, out).await
        };
        match r {
            Err(ProviderError::Unavailable(_)) if self.destroyed.contains(runtime_id) => {
                Err(ProviderError::SandboxNotFound(runtime_id.to_string()))
            }
            r => r,
        }
    }

    async fn write_file(
        &self,
        runtime_id: &str,
        path: &str,
        content: Bytes,
        mode: Option<&str>,
    ) -> Result<(), ProviderError> {
        files::write(&self.vm(runtime_id)?.conn, path, content, mode).await
    }

    async fn read_file(&self, runtime_id: &str, path: &str) -> Result<Bytes, ProviderError> {
        files::read(&self.vm(runtime_id)?.conn, path).await
    }

    fn streams_files(&self) -> bool {
        true
    }

    async fn read_file_stream(
        &self,
        runtime_id: &str,
        path: &str,
    ) -> Result<FileStream, ProviderError> {
        stream::read(self.vm(runtime_id)?, path).await
    }

    async fn write_file_stream(
        &self,
        runtime_id: &str,
        path: &str,
        body: ByteStream,
        mode: Option<&str>,
    ) -> Result<u64, ProviderError> {
        stream::write(self.vm(runtime_id)?, path, body, mode).await
    }

    async fn list_files(
        &self,
        runtime_id: &str,
        path: &str,
    ) -> Result<Vec<FileInfo>, ProviderError> {
        files::list(&self.vm(runtime_id)?.conn, path).await
    }

    async fn stat_file(&self, runtime_id: &str, path: &str) -> Result<FileInfo, ProviderError> {
        files::stat(&self.vm(runtime_id)?.conn, path).await
    }

    async fn glob(&self, runtime_id: &str, pattern: &str) -> Result<Vec<String>, ProviderError> {
        files::glob(self.vm(runtime_id)?, pattern).await
    }

    async fn delete_file(
        &self,
        runtime_id: &str,
        path: &str,
        recursive: bool,
    ) -> Result<(), ProviderError> {
        files::delete(&self.vm(runtime_id)?.conn, path, recursive).await
    }

    async fn move_file(&self, runtime_id: &str, old: &str, new: &str) -> Result<(), ProviderError> {
        files::rename(&self.vm(runtime_id)?.conn, old, new).await
    }

    async fn chmod(&self, runtime_id: &str, path: &str, mode: &str) -> Result<(), ProviderError> {
        files::chmod(&self.vm(runtime_id)?.conn, path, mode).await
    }

    /// Needs a guest agent of protocol 6: VMs booted from older assets answer `Unavailable`.
    async fn watch_dir(
        &self,
        runtime_id: &str,
        path: &str,
        recursive: bool,
    ) -> Result<crate::WatchStream, ProviderError> {
        let clean = crate::walk::clean_path(path)?;
        crate::agent::watch::watch(self.vm(runtime_id)?, clean, path, recursive).await
    }

    /// The console log; kept (and readable) while the VM is paused to disk.
    async fn logs(&self, runtime_id: &str, lines: usize) -> Result<Vec<String>, ProviderError> {
        let console = match self.vm(runtime_id) {
            Ok(vm) => vm.paths.console.clone(),
            Err(e) => self.paused_paths(runtime_id).ok_or(e)?.console,
        };
        crate::console::logs(&console, lines).await
    }

    /// Any guest port with `network_mode: user`, through a loopback forward of QEMU's: port
    /// 3000's is made at boot, any other's the first time it is asked for (`net::Forwards`,
    /// at most `net::MAX_FORWARDS` per VM). With `none` the guest has no NIC and no preview.
    async fn preview_target(
        &self,
        runtime_id: &str,
        port: u16,
    ) -> Result<Option<std::net::SocketAddr>, ProviderError> {
        let vm = self.vm(runtime_id)?;
        // Only a `user` NIC has a boot-time forward.
        let Some(boot_port) = vm.meta.preview_port else {
            return Ok(None);
        };
        let loopback = |p| Some(std::net::SocketAddr::from(([127, 0, 0, 1], p)));
        if port == net::PREVIEW_GUEST_PORT {
            return Ok(loopback(boot_port));
        }
        let qmp = net::QmpLease::of(&vm);
        match vm.forwards.get_or_add(port, qmp).await {
            Ok(host) => Ok(loopback(host)),
            Err(e @ net::ForwardError::Full) => {
                tracing::info!(sandbox_id = runtime_id, port, error = %e, "preview forward refused");
                Ok(None)
            }
            Err(e) => Err(ProviderError::internal_with(
                "forwarding the guest port failed",
                e,
            )),
        }
    }

    async fn list_runtimes(&self) -> Result<Option<Vec<RuntimeInfo>>, ProviderError> {
        let mut out = Vec::new();
        let mut rd = match tokio::fs::read_dir(self.vms_dir()).await {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Some(out)),
            Err(e) => return Err(ProviderError::internal_with("listing VMs failed", e)),
        };
        while let Ok(Some(e)) = rd.next_entry().await {
            let id = e.file_name().to_string_lossy().into_owned();
            if !valid_runtime_id(&id) || lock(&self.starting).contains(&id) {
                continue;
            }
            let paths = VmPaths::new(&self.vms_dir(), &id);
            let meta = boot::read_meta(&paths).await;
            let label = meta.as_ref().and_then(|m| m.cluster.as_deref());
            if !crate::cluster::ours(label, self.config.cluster.as_deref()) {
                continue; // another installation's VM in a shared state directory
            }
            let known = lock(&self.vms).get(&id).cloned();
            let running = match &known {
                Some(vm) => !vm.exited() && !vm.conn.is_closed(),
                None => meta.as_ref().is_some_and(|m| vmm::is_qemu_process(m.pid)),
            };
            out.push(RuntimeInfo {
                runtime_id: id,
                sandbox_id: meta.as_ref().map(|m| m.sandbox_id.clone()),
                image: meta.map(|m| m.image).unwrap_or_default(),
                running,
            });
        }
        out.sort_by(|a, b| a.runtime_id.cmp(&b.runtime_id));
        Ok(Some(out))
    }

    // Background processes live in the guest agent's registry (docs/processes.md).

    async fn process_start(
        &self,
        runtime_id: &str,
        spec: crate::ProcessSpec,
    ) -> Result<stacyvm_types::ProcessInfo, ProviderError> {
        let msg = procs::start_msg(&spec)?;
        procs::start(&self.vm(runtime_id)?.conn, msg).await
    }

    async fn process_start_follow(
        &self,
        runtime_id: &str,
        spec: crate::ProcessSpec,
    ) -> Result<(stacyvm_types::ProcessInfo, crate::RecordStream), ProviderError> {
        let msg = procs::start_msg(&spec)?;
        crate::agent::follow::start_follow(self.vm(runtime_id)?, msg).await
    }

    async fn process_list(
        &self,
        runtime_id: &str,
    ) -> Result<Vec<stacyvm_types::ProcessInfo>, ProviderError> {
        procs::list(&self.vm(runtime_id)?.conn).await
    }

    async fn process_get(
        &self,
        runtime_id: &str,
        pid: stacyvm_types::Pid,
    ) -> Result<stacyvm_types::ProcessInfo, ProviderError> {
        procs::get(&self.vm(runtime_id)?.conn, pid).await
    }

    async fn process_output(
        &self,
        runtime_id: &str,
        pid: stacyvm_types::Pid,
        since: u64,
        follow: bool,
    ) -> Result<crate::RecordStream, ProviderError> {
        procs::output(self.vm(runtime_id)?, pid, since, follow).await
    }

    async fn process_stdin(
        &self,
        runtime_id: &str,
        pid: stacyvm_types::Pid,
        data: Bytes,
        close: bool,
    ) -> Result<u64, ProviderError> {
        procs::stdin(&self.vm(runtime_id)?.conn, pid, &data, close).await
    }

    async fn process_signal(
        &self,
        runtime_id: &str,
        pid: stacyvm_types::Pid,
        signal: stacyvm_types::Signal,
    ) -> Result<stacyvm_types::ProcessInfo, ProviderError> {
        procs::signal(&self.vm(runtime_id)?.conn, pid, signal).await
    }

    async fn process_resize(
        &self,
        runtime_id: &str,
        pid: stacyvm_types::Pid,
        size: stacyvm_types::PtySize,
    ) -> Result<(), ProviderError> {
        procs::resize(&self.vm(runtime_id)?.conn, pid, size).await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
