//! Pause to disk. Pause stops the guest, migrates its whole state (RAM and devices) into
//! `<vm dir>/paused.state` (written under a temporary name, flushed, renamed) and ends QEMU, so
//! a paused VM holds no memory and no process. Resume starts QEMU with the same devices and
//! `-incoming defer`, loads that file, continues the guest and connects to its agent again:
//! every process of the guest goes on where it stopped.
//!
//! The VM's directory says it is paused (`paused.state` next to `paused.json`, which keeps the
//! shape QEMU must be started with), so a restarted provider sees it, and can resume or destroy
//! it.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::agent_conn::{self, AgentConn};
use super::boot::{self, until_exit, BootKind, Cleanup, Core, Vm};
use super::memsnap::Source;
use super::migrate;
use super::net::QmpLease;
use super::qmp::Qmp;
use super::snapshot::{self, unavailable, AGENT_CALL};
use super::vmm::{self, Launch, VmPaths, VmShape};
use crate::ProviderError;

/// The saved state; its presence is what makes a VM directory a paused VM.
const STATE: &str = "paused.state";
const STATE_TMP: &str = ".paused.state.tmp";
/// [`PausedMeta`].
const META: &str = "paused.json";
/// Bound for QEMU to exit after SIGKILL.
const EXIT_WAIT: Duration = Duration::from_secs(10);

/// `paused.json`: what resume needs besides `vm.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PausedMeta {
    memory_mb: i64,
    vcpus: i64,
    /// `cold`, `restored` or `pooled`: whether guest RAM is named `mem` (not for `cold`).
    kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    preview_port: Option<u16>,
}

fn kind_of(s: &str) -> BootKind {
    match s {
        "cold" => BootKind::Cold,
        "pooled" => BootKind::Pooled,
        _ => BootKind::Restored,
    }
}

fn state_file(paths: &VmPaths) -> PathBuf {
    paths.dir.join(STATE)
}

/// Whether the VM in `paths` is paused to disk.
pub(crate) fn is_paused(paths: &VmPaths) -> bool {
    state_file(paths).is_file() && paths.dir.join(META).is_file()
}

/// Saves `vm` into its directory and ends its QEMU. On failure the guest runs on (`cont`) and
/// nothing is left on disk; the caller keeps the VM.
pub(crate) async fn pause(vm: &Vm) -> Result<(), ProviderError> {
    const WHAT: &str = "pausing the VM";
    let started = Instant::now();
    let meta = PausedMeta {
        memory_mb: vm.shape.memory_mb,
        vcpus: vm.shape.vcpus,
        kind: vm.kind.as_str().to_string(),
        preview_port: vm.meta.preview_port,
    };
    let json = serde_json::to_vec(&meta)
        .map_err(|e| ProviderError::internal_with("encoding paused.json failed", e))?;
    tokio::fs::write(vm.paths.dir.join(META), json)
        .await
        .map_err(|e| ProviderError::internal_with("writing paused.json failed", e))?;
    let mut lease = QmpLease::of(vm).await.map_err(unavailable("qmp"))?;
    let qmp = lease.get();
    let saved = async {
        qmp.execute("stop", None).await.map_err(unavailable(WHAT))?;
        migrate::ignore_shared(qmp, false, WHAT).await?;
        let tmp = vm.paths.dir.join(STATE_TMP);
        migrate::save_file(qmp, &tmp, &state_file(&vm.paths), WHAT).await
    };
    let bytes = match saved.await {
        Ok(n) => n,
        Err(e) => {
            let _ = qmp.execute("cont", None).await;
            let _ = std::fs::remove_file(vm.paths.dir.join(META));
            return Err(e);
        }
    };
    drop(lease);
    // Saved: from here on the directory is the VM.
    end_qemu(vm).await;
    let mut m = vm.meta.clone();
    m.pid = 0;
    // Not fatal: the VM is saved, and resume checks that a recorded pid still is QEMU.
    if let Err(e) = boot::write_meta(&vm.paths, &m).await {
        tracing::warn!(sandbox_id = %vm.meta.sandbox_id, error = %e, "clearing the pid of a paused VM failed");
    }
    for p in [&vm.paths.agent_sock, &vm.paths.qmp_sock] {
        let _ = std::fs::remove_file(p);
    }
    tracing::info!(sandbox_id = %vm.meta.sandbox_id, ms = started.elapsed().as_millis() as u64, bytes, "microvm paused to disk");
    Ok(())
}

/// SIGKILL to QEMU's group, and a bounded wait for it to exit.
async fn end_qemu(vm: &Vm) {
    vmm::kill_group(vm.meta.pid);
    let until = Instant::now() + EXIT_WAIT;
    while !vm.exited() && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The VM paused in `paths` as the source of a snapshot (its saved state is the stream).
pub(crate) async fn as_source(paths: VmPaths) -> Result<Source<'static>, ProviderError> {
    let pm = read_paused(&paths).await?;
    let meta = boot::read_meta(&paths)
        .await
        .ok_or_else(|| ProviderError::internal("vm.json of a paused VM is unreadable"))?;
    Ok(Source::Paused {
        state: state_file(&paths),
        shape: pm.shape(),
        kind: kind_of(&pm.kind),
        meta,
        paths,
    })
}

async fn read_paused(paths: &VmPaths) -> Result<PausedMeta, ProviderError> {
    let raw = tokio::fs::read(paths.dir.join(META))
        .await
        .map_err(|e| ProviderError::internal_with("reading paused.json failed", e))?;
    serde_json::from_slice(&raw)
        .map_err(|e| ProviderError::internal_with("reading paused.json failed", e))
}

impl PausedMeta {
    fn shape(&self) -> VmShape {
        VmShape {
            memory_mb: self.memory_mb,
            vcpus: self.vcpus,
            preview_port: self.preview_port,
        }
    }
}

/// Starts the VM paused in `paths` again. On failure it stays paused on disk.
pub(crate) async fn resume(core: &Core, paths: VmPaths) -> Result<Vm, ProviderError> {
    const WHAT: &str = "resuming the VM";
    let started = Instant::now();
    let pm = read_paused(&paths).await?;
    let mut meta = boot::read_meta(&paths)
        .await
        .ok_or_else(|| ProviderError::internal("vm.json of a paused VM is unreadable"))?;
    // A QEMU left by a crash between the save and its end.
    if meta.pid > 1 && vmm::is_qemu_process(meta.pid) {
        vmm::kill_group(meta.pid);
    }
    for p in [&paths.agent_sock, &paths.qmp_sock] {
        let _ = std::fs::remove_file(p);
    }
    let kind = kind_of(&pm.kind);
    let shape = pm.shape();
    let (rw, ro) = snapshot::open_disk(&paths.overlay)?;
    let fds = {
        use std::os::fd::AsRawFd;
        [rw.as_raw_fd(), ro.as_raw_fd()]
    };
    let launch = Launch::Resume {
        named_ram: kind != BootKind::Cold,
        disk_fds: fds,
    };
    let mut cleanup = Cleanup::keep_dir(&paths.dir);
    let mut child = core
        .start_qemu(&paths, &shape, &launch, &fds, &mut meta, &mut cleanup)
        .await?;
    drop((rw, ro));
    let deadline = tokio::time::Instant::now() + core.settings.boot_timeout;
    let steps = async {
        let mut qmp = Qmp::connect(&paths.qmp_sock, deadline)
            .await
            .map_err(unavailable(WHAT))?;
        migrate::load(&mut qmp, &state_file(&paths), deadline, WHAT).await?;
        let conn = reconnect(&paths.agent_sock, &meta.sandbox_id, &mut qmp, deadline).await?;
        // The guest's clock stood still while it was paused; set it, and mix in entropy.
        let now = snapshot::fresh_identity("", false)?;
        if let Err(e) = conn.identity(now, AGENT_CALL).await {
            tracing::warn!(sandbox_id = %meta.sandbox_id, error = %e, "setting the clock after resume failed");
        }
        Ok::<_, ProviderError>((qmp, conn))
    };
    let (qmp, conn) = match until_exit(&mut child, steps, "resume").await {
        Ok(r) => r,
        Err(e) => {
            boot::log_tail(&paths).await;
            drop(cleanup);
            // vm.json names the QEMU that just died; paused.state is intact.
            meta.pid = 0;
            let _ = boot::write_meta(&paths, &meta).await;
            return Err(e);
        }
    };
    cleanup.disarm();
    forget(&paths);
    let booted_in = started.elapsed();
    tracing::info!(sandbox_id = %meta.sandbox_id, ms = booted_in.as_millis() as u64, "microvm resumed from disk");
    Ok(Vm {
        paths,
        meta,
        child: Mutex::new(child),
        conn,
        qmp: Some(tokio::sync::Mutex::new(qmp)),
        booted_in,
        kind,
        shape,
        forwards: Default::default(),
    })
}

/// Connects to the agent of a loaded, not yet running guest, continues it and says hello. A
/// frame the guest had half sent to the QEMU before the save reaches the new connection first
/// and breaks its handshake: the connection is then dropped (the agent starts over when its
/// host goes) and made again.
pub(crate) async fn reconnect(
    sock: &Path,
    hostname: &str,
    qmp: &mut Qmp,
    deadline: tokio::time::Instant,
) -> Result<AgentConn, ProviderError> {
    let agent = unavailable("agent after restore");
    // Connected before the guest runs, so it never sees the host side go away.
    let stream = agent_conn::connect(sock, deadline).await.map_err(&agent)?;
    qmp.execute("cont", None)
        .await
        .map_err(unavailable("continuing the VM"))?;
    let first = tokio::time::Instant::now() + Duration::from_secs(20);
    match AgentConn::handshake(stream, hostname, first.min(deadline)).await {
        Ok(c) => Ok(c),
        Err(e) => {
            tracing::warn!(error = %e, "agent handshake after restore failed; connecting again");
            tokio::time::sleep(Duration::from_millis(200)).await;
            let stream = agent_conn::connect(sock, deadline).await.map_err(&agent)?;
            AgentConn::handshake(stream, hostname, deadline)
                .await
                .map_err(&agent)
        }
    }
}

/// Removes what a pause left beside a VM that runs again (nothing when there is nothing).
pub(crate) fn forget(paths: &VmPaths) {
    for name in [STATE, STATE_TMP, META] {
        let _ = std::fs::remove_file(paths.dir.join(name));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_is_paused_only_with_both_files() {
        let dir = tempfile::tempdir().unwrap();
        let paths = VmPaths::new(dir.path(), "sb-1");
        std::fs::create_dir_all(&paths.dir).unwrap();
        assert!(!is_paused(&paths));
        std::fs::write(paths.dir.join(META), b"{}").unwrap();
        assert!(
            !is_paused(&paths),
            "paused.json alone is an unfinished pause"
        );
        std::fs::write(paths.dir.join(STATE_TMP), b"x").unwrap();
        assert!(!is_paused(&paths), "a half-written state is not a pause");
        std::fs::write(paths.dir.join(STATE), b"x").unwrap();
        assert!(is_paused(&paths));
        forget(&paths);
        assert!(!is_paused(&paths));
        assert_eq!(std::fs::read_dir(&paths.dir).unwrap().count(), 0);
        for k in [BootKind::Cold, BootKind::Restored, BootKind::Pooled] {
            assert_eq!(kind_of(k.as_str()), k);
        }
    }
}
