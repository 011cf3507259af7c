//! Starting VMs: the state shared by the provider and its pool task, a VM's record, cold
//! boots, and the guard that kills a half-started VM and removes its files when a start fails
//! or its future is dropped.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::process::Child;

use super::agent_conn::{self, AgentConn};
use super::pool::Pool;
use super::qmp::Qmp;
use super::settings::{NetworkMode, Settings};
use super::snapshot::Templates;
use super::vmm::{self, Launch, VmPaths, VmShape};
use super::{lock, rootfs};
use crate::console::tail_lines;
use crate::{ProviderError, SandboxSpec};

/// What `vm.json` records about a VM.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct VmMeta {
    pub sandbox_id: String,
    pub image: String,
    pub owner_id: String,
    pub pid: i32,
    /// Loopback host port forwarded to the guest's port 3000 (user networking only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview_port: Option<u16>,
    /// The installation that made it (`crate::cluster`); absent in directories of older
    /// builds and of workers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
}

impl VmMeta {
    pub fn of(spec: &SandboxSpec, cluster: Option<&str>) -> Self {
        VmMeta {
            sandbox_id: spec.id.clone(),
            image: spec.image.clone(),
            owner_id: spec.owner_id.clone(),
            pid: 0,
            preview_port: None,
            cluster: cluster.map(str::to_string),
        }
    }
}

/// How a VM came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BootKind {
    /// Booted its kernel.
    Cold,
    /// Restored from its image's snapshot during the spawn.
    Restored,
    /// Taken from the warm pool (restored earlier, resumed during the spawn).
    Pooled,
}

impl BootKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BootKind::Cold => "cold",
            BootKind::Restored => "restored",
            BootKind::Pooled => "pooled",
        }
    }
}

/// A running (or, in the pool, paused) VM.
pub(crate) struct Vm {
    pub paths: VmPaths,
    pub meta: VmMeta,
    pub child: Mutex<Child>,
    pub conn: AgentConn,
    /// QEMU's monitor; kept for clones, which are paused and resumed through it.
    pub qmp: Option<tokio::sync::Mutex<Qmp>>,
    pub booted_in: Duration,
    pub kind: BootKind,
    /// Its memory and vCPUs (what a resume or a snapshot's clone starts with).
    pub shape: VmShape,
    /// Guest ports forwarded for previews after boot (`network_mode: user`).
    pub forwards: super::net::Forwards,
}

impl AsRef<AgentConn> for Vm {
    fn as_ref(&self) -> &AgentConn {
        &self.conn
    }
}

impl Vm {
    pub fn exited(&self) -> bool {
        !matches!(lock(&self.child).try_wait(), Ok(None))
    }

    /// Alive with its agent connected.
    pub fn healthy(&self) -> bool {
        !self.conn.is_closed() && !self.exited()
    }
}

/// Kills a half-started VM's process group and removes its directory, unless disarmed. Also
/// runs when the future starting the VM is dropped (a cancelled spawn, a stopped pool task).
pub(crate) struct Cleanup {
    pub pid: i32,
    dir: PathBuf,
    armed: bool,
    /// Whether the directory goes too (not when it held the VM before this start: a resume).
    remove_dir: bool,
}

impl Cleanup {
    /// Creates `dir` (`what` names it in the error) and a cleanup that removes it again.
    pub async fn create(dir: &Path, what: &str) -> Result<Self, ProviderError> {
        // Armed before the directory exists: a half-made one is removed too.
        let cleanup = Cleanup {
            pid: 0,
            dir: dir.to_path_buf(),
            armed: true,
            remove_dir: true,
        };
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|e| ProviderError::internal_with(format!("creating the {what} failed"), e))?;
        Ok(cleanup)
    }

    /// Kills the QEMU started under it, but keeps `dir` and what was in it.
    pub fn keep_dir(dir: &Path) -> Self {
        Cleanup {
            pid: 0,
            dir: dir.to_path_buf(),
            armed: true,
            remove_dir: false,
        }
    }

    pub fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if self.armed {
            vmm::kill_group(self.pid);
            if self.remove_dir {
                let _ = std::fs::remove_dir_all(&self.dir);
            }
        }
    }
}

/// What the provider and its pool task share.
pub(crate) struct Core {
    pub settings: Settings,
    pub tsc_khz: Option<u64>,
    pub rootfs: rootfs::Rootfs,
    pub templates: Templates,
    pub pool: Pool,
}

impl Core {
    pub fn vms_dir(&self) -> PathBuf {
        self.settings.data_dir.join("vms")
    }

    pub fn qemu(&self) -> Result<PathBuf, ProviderError> {
        vmm::find_binary(&self.settings.qemu)
            .ok_or_else(|| ProviderError::Unavailable("qemu binary not found".into()))
    }

    /// Memory and vCPUs of `spec`, and a preview port when networking is on.
    pub fn shape(&self, spec: &SandboxSpec) -> VmShape {
        VmShape {
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
            preview_port: self.preview_port(),
        }
    }

    pub fn preview_port(&self) -> Option<u16> {
        match self.settings.network {
            NetworkMode::User => super::net::free_port(),
            NetworkMode::None => None,
        }
    }

    /// Starts QEMU for `paths` and records its pid in `vm.json` and `cleanup`.
    pub async fn start_qemu(
        &self,
        paths: &VmPaths,
        shape: &VmShape,
        launch: &Launch,
        inherit: &[std::os::fd::RawFd],
        meta: &mut VmMeta,
        cleanup: &mut Cleanup,
    ) -> Result<Child, ProviderError> {
        let qemu = self.qemu()?;
        let args = vmm::qemu_args(&self.settings, paths, shape, self.tsc_khz, launch);
        let child = vmm::spawn_qemu(&qemu, &args, paths, inherit)?;
        meta.pid = child.id().and_then(|p| i32::try_from(p).ok()).unwrap_or(0);
        meta.preview_port = shape.preview_port;
        cleanup.pid = meta.pid;
        write_meta(paths, meta).await?;
        Ok(child)
    }

    /// Boots a VM with its own kernel and waits for its agent. On failure nothing is left.
    pub async fn cold_boot(
        &self,
        mut meta: VmMeta,
        base: &Path,
        paths: VmPaths,
        shape: &VmShape,
    ) -> Result<Vm, ProviderError> {
        let started = Instant::now();
        let mut cleanup = Cleanup::create(&paths.dir, "VM directory").await?;
        rootfs::create_overlay(base, &paths.overlay).await?;
        let mut child = self
            .start_qemu(&paths, shape, &Launch::Cold, &[], &mut meta, &mut cleanup)
            .await?;
        let deadline = tokio::time::Instant::now() + self.settings.boot_timeout;
        let ready = async {
            let stream = agent_conn::connect(&paths.agent_sock, deadline).await?;
            AgentConn::handshake(stream, &meta.sandbox_id, deadline).await
        };
        let ready = async {
            ready.await.map_err(|e| {
                ProviderError::Unavailable(format!("sandbox VM did not become ready: {e}"))
            })
        };
        let conn = match until_exit(&mut child, ready, "boot").await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(sandbox_id = %meta.sandbox_id, error = %e, "microvm boot failed");
                log_tail(&paths).await;
                return Err(e);
            }
        };
        cleanup.disarm();
        let booted_in = started.elapsed();
        tracing::info!(sandbox_id = %meta.sandbox_id, ms = booted_in.as_millis() as u64, accel = self.settings.accel.as_str(), "microvm ready (cold boot)");
        Ok(Vm {
            paths,
            meta,
            child: Mutex::new(child),
            conn,
            qmp: None,
            booted_in,
            kind: BootKind::Cold,
            shape: shape.clone(),
            forwards: Default::default(),
        })
    }
}

/// Runs `fut` unless QEMU exits first.
pub(crate) async fn until_exit<T, E: From<ProviderError>>(
    child: &mut Child,
    fut: impl Future<Output = Result<T, E>>,
    what: &str,
) -> Result<T, E> {
    tokio::select! {
        r = fut => r,
        status = child.wait() => {
            tracing::warn!(?status, what, "qemu exited early");
            Err(ProviderError::Unavailable(format!("sandbox VM stopped during {what}")).into())
        }
    }
}

pub(crate) async fn write_meta(paths: &VmPaths, meta: &VmMeta) -> Result<(), ProviderError> {
    let json = serde_json::to_vec(meta)
        .map_err(|e| ProviderError::internal_with("encoding vm.json failed", e))?;
    tokio::fs::write(&paths.meta, json)
        .await
        .map_err(|e| ProviderError::internal_with("writing vm.json failed", e))
}

pub(crate) async fn read_meta(paths: &VmPaths) -> Option<VmMeta> {
    let raw = tokio::fs::read(&paths.meta).await.ok()?;
    serde_json::from_slice(&raw).ok()
}

/// Kills the QEMU recorded in `<dir>/vm.json` (if it still is QEMU) and removes `dir`: what is
/// left of a template build or pool of a process that died.
pub(crate) fn remove_leftover(dir: &Path) {
    if let Ok(raw) = std::fs::read(dir.join("vm.json")) {
        if let Ok(meta) = serde_json::from_slice::<VmMeta>(&raw) {
            if vmm::is_qemu_process(meta.pid) {
                vmm::kill_group(meta.pid);
            }
        }
    }
    if let Err(e) = std::fs::remove_dir_all(dir) {
        tracing::warn!(dir = %dir.display(), error = %e, "removing leftover microvm files failed");
    }
}

/// Whether process `pid` exists.
pub(crate) fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Logs the end of the VM's QEMU and console output after a failed start.
pub(crate) async fn log_tail(paths: &VmPaths) {
    for p in [&paths.qemu_log, &paths.console] {
        if let Ok(lines) = tail_lines(p, 20).await {
            tracing::warn!(file = %p.display(), output = %lines.join("\n"), "microvm output");
        }
    }
}

/// Kills a VM's process group, waits (bounded) for QEMU to exit and removes its files.
pub(crate) async fn teardown(vm: &Vm) {
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
