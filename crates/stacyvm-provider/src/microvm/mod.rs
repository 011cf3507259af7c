//! Sandboxes as QEMU `microvm` guests, each with its own kernel, driven through an in-guest
//! agent (`crates/stacyvm-agent`) over a virtio-serial port.
//!
//! Every sandbox gets `<data_dir>/vms/<id>/` with a qcow2 overlay over its image's read-only
//! base disk, the agent socket, the serial console log and a `vm.json` naming the sandbox, so a
//! restarted provider can still list and destroy it. QEMU runs in its own process group with
//! its seccomp sandbox on, no host directory shared, and no NIC unless `network_mode: user`.
//! Under TCG (no usable KVM) the guest kernel is still a separate kernel, but the emulator is
//! not a hardware isolation boundary; the provider says so at startup and in its summary.
//!
//! Now: a cold boot per spawn. Snapshot clones and a warm pool fit in at [`MicrovmProvider::boot`]
//! (restore instead of boot) and need no change to the per-VM operations.

mod agent_conn;
mod config;
mod exec;
mod files;
mod net;
mod rootfs;
mod vmm;

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use config::{Accel, Settings};
pub use config::{MicrovmConfig, DEFAULT_DATA_DIR};
use serde::{Deserialize, Serialize};
use stacyvm_types::{FileInfo, SandboxState};
use tokio::process::Child;

use self::agent_conn::AgentConn;
use self::vmm::{VmPaths, VmShape};
use crate::{ChunkSender, ExecRequest, Provider, ProviderError, RuntimeInfo, SandboxSpec, Spawned};

/// How many destroyed ids are remembered so `status` can answer `destroyed`.
const DESTROYED_MEMORY: usize = 4096;
/// Largest console tail read for `logs`.
const LOG_TAIL_BYTES: u64 = 256 * 1024;

const TCG_WARNING: &str =
    "microvm runs under TCG (software emulation): each sandbox has its own kernel, but TCG is not a hardware isolation boundary";

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What `vm.json` records about a VM.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct VmMeta {
    sandbox_id: String,
    image: String,
    owner_id: String,
    pid: i32,
}

/// A running VM.
struct Vm {
    paths: VmPaths,
    meta: VmMeta,
    child: Mutex<Child>,
    conn: AgentConn,
    booted_in: Duration,
}

impl Vm {
    fn exited(&self) -> bool {
        !matches!(lock(&self.child).try_wait(), Ok(None))
    }
}

/// The `microvm` provider.
pub struct MicrovmProvider {
    config: MicrovmConfig,
    settings: Settings,
    tsc_khz: Option<u64>,
    rootfs: rootfs::Rootfs,
    vms: Mutex<HashMap<String, Arc<Vm>>>,
    starting: Mutex<HashSet<String>>,
    destroyed: Mutex<(HashSet<String>, VecDeque<String>)>,
}

/// Ids double as directory names: keep them to a safe alphabet.
fn valid_runtime_id(id: &str) -> bool {
    let mut bytes = id.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphanumeric())
        && id.len() <= 64
        && bytes.all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

impl MicrovmProvider {
    /// Validates `config`; assets are checked by [`Provider::health`], not here.
    pub fn new(config: MicrovmConfig) -> Result<Self, ProviderError> {
        let settings = config.validate(vmm::kvm_usable())?;
        if settings.accel == Accel::Tcg {
            tracing::warn!("{TCG_WARNING}");
        }
        let tsc_khz = settings.tsc_khz.or_else(vmm::host_tsc_khz);
        Ok(MicrovmProvider {
            rootfs: rootfs::Rootfs::new(&settings.data_dir),
            config,
            settings,
            tsc_khz,
            vms: Mutex::new(HashMap::new()),
            starting: Mutex::new(HashSet::new()),
            destroyed: Mutex::new((HashSet::new(), VecDeque::new())),
        })
    }

    fn vms_dir(&self) -> PathBuf {
        self.settings.data_dir.join("vms")
    }

    fn vm(&self, id: &str) -> Result<Arc<Vm>, ProviderError> {
        lock(&self.vms)
            .get(id)
            .cloned()
            .ok_or_else(|| ProviderError::SandboxNotFound(id.to_string()))
    }

    /// How long the last boot of `id` took to reach a ready agent.
    pub fn boot_time(&self, id: &str) -> Option<Duration> {
        lock(&self.vms).get(id).map(|vm| vm.booted_in)
    }

    fn remember_destroyed(&self, id: &str) {
        let mut d = lock(&self.destroyed);
        let (set, order) = &mut *d;
        if set.insert(id.to_string()) {
            order.push_back(id.to_string());
            if order.len() > DESTROYED_MEMORY {
                if let Some(old) = order.pop_front() {
                    set.remove(&old);
                }
            }
        }
    }

    fn was_destroyed(&self, id: &str) -> bool {
        lock(&self.destroyed).0.contains(id)
    }

    /// Boots a VM for `spec` and waits for its agent. On failure nothing is left behind.
    async fn boot(&self, spec: &SandboxSpec, paths: VmPaths) -> Result<Vm, ProviderError> {
        let started = Instant::now();
        let base = self.rootfs.base(&spec.image).await?;
        tokio::fs::create_dir_all(&paths.dir)
            .await
            .map_err(|e| ProviderError::internal_with("creating the VM directory failed", e))?;
        rootfs::create_overlay(&base, &paths.overlay).await?;
        let shape = VmShape {
            memory_mb: if spec.memory_mb > 0 {
                spec.memory_mb.max(64)
            } else {
                self.settings.default_memory_mb
            },
            vcpus: if spec.vcpus > 0 {
                spec.vcpus
            } else {
                self.settings.default_vcpus
            },
            preview_port: match self.settings.network {
                config::NetworkMode::User => net::free_port(),
                config::NetworkMode::None => None,
            },
        };
        let qemu = vmm::find_binary(&self.settings.qemu)
            .ok_or_else(|| ProviderError::Unavailable("qemu binary not found".into()))?;
        let args = vmm::qemu_args(&self.settings, &paths, &shape, self.tsc_khz);
        let mut child = vmm::spawn_qemu(&qemu, &args, &paths)?;
        let pid = child.id().and_then(|p| i32::try_from(p).ok()).unwrap_or(0);
        let meta = VmMeta {
            sandbox_id: spec.id.clone(),
            image: spec.image.clone(),
            owner_id: spec.owner_id.clone(),
            pid,
        };
        let meta_json = serde_json::to_vec(&meta)
            .map_err(|e| ProviderError::internal_with("encoding vm.json failed", e))?;
        tokio::fs::write(&paths.meta, meta_json)
            .await
            .map_err(|e| ProviderError::internal_with("writing vm.json failed", e))?;
        let deadline = tokio::time::Instant::now() + self.settings.boot_timeout;
        let ready = async {
            let stream = agent_conn::connect(&paths.agent_sock, deadline).await?;
            AgentConn::handshake(stream, &spec.id, deadline).await
        };
        let conn = tokio::select! {
            r = ready => r.map_err(|e| {
                tracing::warn!(sandbox_id = %spec.id, error = %e, "microvm agent not ready");
                ProviderError::Unavailable(format!("sandbox VM did not become ready: {e}"))
            }),
            status = child.wait() => {
                tracing::warn!(sandbox_id = %spec.id, ?status, "qemu exited during boot");
                Err(ProviderError::Unavailable("sandbox VM stopped during boot".into()))
            }
        };
        let conn = match conn {
            Ok(c) => c,
            Err(e) => {
                log_tail(&paths).await;
                vmm::kill_group(pid);
                let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
                let _ = tokio::fs::remove_dir_all(&paths.dir).await;
                return Err(e);
            }
        };
        let booted_in = started.elapsed();
        tracing::info!(sandbox_id = %spec.id, ms = booted_in.as_millis() as u64, accel = self.settings.accel.as_str(), "microvm ready");
        Ok(Vm {
            paths,
            meta,
            child: Mutex::new(child),
            conn,
            booted_in,
        })
    }

    /// Kills a VM's process group and removes its files.
    async fn teardown(&self, vm: &Vm) {
        vmm::kill_group(vm.meta.pid);
        let wait = async {
            loop {
                if vm.exited() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        if tokio::time::timeout(Duration::from_secs(10), wait)
            .await
            .is_err()
        {
            tracing::warn!(sandbox_id = %vm.meta.sandbox_id, "qemu did not exit after SIGKILL");
        }
        if let Err(e) = tokio::fs::remove_dir_all(&vm.paths.dir).await {
            tracing::warn!(error = %e, "removing the VM directory failed");
        }
    }

    /// Destroys a VM known only from its directory (left by an earlier process).
    async fn destroy_orphan(&self, id: &str) -> Result<(), ProviderError> {
        let paths = VmPaths::new(&self.vms_dir(), id);
        if !paths.dir.is_dir() {
            return Err(ProviderError::SandboxNotFound(id.to_string()));
        }
        if let Some(meta) = read_meta(&paths).await {
            if vmm::is_qemu_process(meta.pid) {
                vmm::kill_group(meta.pid);
            }
        }
        tokio::fs::remove_dir_all(&paths.dir)
            .await
            .map_err(|e| ProviderError::internal_with("removing the VM directory failed", e))?;
        self.remember_destroyed(id);
        Ok(())
    }
}

async fn read_meta(paths: &VmPaths) -> Option<VmMeta> {
    let raw = tokio::fs::read(&paths.meta).await.ok()?;
    serde_json::from_slice(&raw).ok()
}

/// Logs the end of the VM's QEMU and console output after a failed boot.
async fn log_tail(paths: &VmPaths) {
    for p in [&paths.qemu_log, &paths.console] {
        if let Ok(lines) = tail_lines(p, 20).await {
            tracing::warn!(file = %p.display(), output = %lines.join("\n"), "microvm boot output");
        }
    }
}

/// The last `n` lines of a file, reading at most [`LOG_TAIL_BYTES`].
async fn tail_lines(path: &std::path::Path, n: usize) -> std::io::Result<Vec<String>> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let mut f = tokio::fs::File::open(path).await?;
    let len = f.metadata().await?.len();
    let start = len.saturating_sub(LOG_TAIL_BYTES);
    f.seek(std::io::SeekFrom::Start(start)).await?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf);
    let mut lines: Vec<&str> = text.lines().collect();
    if start > 0 && !lines.is_empty() {
        lines.remove(0); // probably cut in the middle
    }
    let from = lines.len().saturating_sub(n);
    Ok(lines[from..]
        .iter()
        .map(|l| l.trim_end_matches('\r').to_string())
        .collect())
}

#[async_trait::async_trait]
impl Provider for MicrovmProvider {
    fn name(&self) -> &str {
        "microvm"
    }

    fn capabilities(&self) -> Vec<&'static str> {
        vec!["spawn", "exec", "exec_stream", "files", "console", "health"]
    }

    fn config_summary(&self) -> serde_json::Value {
        let s = &self.settings;
        let tcg = s.accel == Accel::Tcg;
        serde_json::json!({
            "type": "microvm",
            "accel": s.accel.as_str(),
            "hardware_isolation": !tcg,
            "warning": if tcg { Some(TCG_WARNING) } else { None },
            "network_mode": self.config.network_mode,
            "warm_pool": self.config.warm_pool,
            "kernel": s.kernel.file_name().map(|n| n.to_string_lossy().into_owned()),
            "agent_protocol_version": stacyvm_protocol::agent::AGENT_PROTOCOL_VERSION,
        })
    }

    async fn health(&self) -> Result<(), ProviderError> {
        if vmm::find_binary(&self.settings.qemu).is_none() {
            return Err(ProviderError::Unavailable(format!(
                "qemu binary {:?} not found",
                self.config.qemu_path
            )));
        }
        for (what, p) in [
            ("guest kernel", &self.settings.kernel),
            ("initramfs", &self.settings.initrd),
        ] {
            if !p.is_file() {
                return Err(ProviderError::Unavailable(format!(
                    "{what} missing (run scripts/setup-microvm.sh)"
                )));
            }
        }
        Ok(())
    }

    async fn spawn(&self, spec: &SandboxSpec) -> Result<Spawned, ProviderError> {
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
        let r = self.boot(spec, paths).await;
        lock(&self.starting).remove(&id);
        let vm = r?;
        {
            let mut d = lock(&self.destroyed);
            if d.0.remove(&id) {
                d.1.retain(|x| x != &id);
            }
        }
        lock(&self.vms).insert(id.clone(), Arc::new(vm));
        Ok(Spawned { runtime_id: id })
    }

    async fn destroy(&self, runtime_id: &str) -> Result<(), ProviderError> {
        if !valid_runtime_id(runtime_id) {
            return Err(ProviderError::SandboxNotFound(runtime_id.to_string()));
        }
        let vm = lock(&self.vms).remove(runtime_id);
        match vm {
            Some(vm) => {
                self.remember_destroyed(runtime_id);
                self.teardown(&vm).await;
                Ok(())
            }
            None if self.was_destroyed(runtime_id) => Ok(()),
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
        if self.was_destroyed(runtime_id) {
            return Ok(SandboxState::Destroyed);
        }
        Err(ProviderError::SandboxNotFound(runtime_id.to_string()))
    }

    async fn exec(
        &self,
        runtime_id: &str,
        req: ExecRequest,
        out: ChunkSender,
    ) -> Result<i32, ProviderError> {
        let vm = self.vm(runtime_id)?;
        match exec::run(&vm.conn, req, out).await {
            Err(ProviderError::Unavailable(_)) if self.was_destroyed(runtime_id) => {
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
        files::glob(&self.vm(runtime_id)?.conn, pattern).await
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

    async fn logs(&self, runtime_id: &str, lines: usize) -> Result<Vec<String>, ProviderError> {
        let vm = self.vm(runtime_id)?;
        match tail_lines(&vm.paths.console, lines).await {
            Ok(l) => Ok(l),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(ProviderError::internal_with(
                "reading the console log failed",
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
            let meta = read_meta(&paths).await;
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
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn runtime_ids() {
        assert!(valid_runtime_id("sb-0123abcd"));
        for bad in ["", "-x", ".x", "a/b", "../x", "a b"] {
            assert!(!valid_runtime_id(bad), "{bad}");
        }
    }

    #[tokio::test]
    async fn health_names_missing_assets_and_unknown_ids_are_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let p = MicrovmProvider::new(MicrovmConfig {
            data_dir: dir.path().to_string_lossy().into_owned(),
            qemu_path: "/bin/sh".into(),
            ..Default::default()
        })
        .unwrap();
        let e = p.health().await.unwrap_err();
        assert!(
            matches!(&e, ProviderError::Unavailable(m) if m.contains("guest kernel")),
            "{e:?}"
        );
        assert!(
            !e.to_string().contains(&*dir.path().to_string_lossy()),
            "host path leaked: {e}"
        );
        assert!(matches!(
            p.status("sb-00000000").await,
            Err(ProviderError::SandboxNotFound(_))
        ));
        assert!(matches!(
            p.destroy("sb-00000000").await,
            Err(ProviderError::SandboxNotFound(_))
        ));
        assert_eq!(p.list_runtimes().await.unwrap(), Some(Vec::new()));
    }

    #[tokio::test]
    async fn tail_reads_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.log");
        std::fs::write(&f, "a\r\nb\nc\n").unwrap();
        assert_eq!(tail_lines(&f, 2).await.unwrap(), ["b", "c"]);
        assert_eq!(tail_lines(&f, 10).await.unwrap(), ["a", "b", "c"]);
    }
}
