//! Memory snapshots (`kind: memory`): a running (or paused) sandbox's RAM, devices and disk,
//! stored like an image's template so that sandboxes spawned from it are clones in the same
//! way ([`snapshot::restore`]): they map the snapshot's RAM copy-on-write, so a fork of N
//! shares its pages, and each gets its own overlay copy and a new identity (hostname, machine
//! id, entropy, clock). Its processes, open files and memory go on in every clone.
//!
//! Taking one: the source is stopped, migrated whole into a stream file, its overlay copied,
//! and continued; it is stopped only for that. Then, once per snapshot, a helper QEMU whose
//! RAM is the file `mem` (a shared mapping) loads the stream and saves its device state with
//! `x-ignore-shared`, which leaves `mem`, `state` and `disk.qcow2`: a template's files. All of it
//! happens in `<data_dir>/snapshots/.tmp-<sid>/`, renamed to `<sid>/` when complete.
//!
//! Cold-booted VMs (snapshots off, or a failed template) keep their RAM under QEMU's default
//! name, which clones do not use: their snapshot answers `NotSupported`.

use std::collections::{HashMap, HashSet};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use super::boot::{self, until_exit, BootKind, Cleanup, Core, Vm, VmMeta};
use super::net::QmpLease;
use super::qmp::Qmp;
use super::snapshot::{self, unavailable, Template};
use super::vmm::{self, Launch, VmPaths, VmShape};
use super::{lock, migrate, valid_runtime_id};
use crate::{ProviderError, SnapshotMade};

const META: &str = "snapshot.json";
const TMP_PREFIX: &str = ".tmp-";
/// The source's migration stream, inside the snapshot's temporary directory.
const STREAM: &str = "stream";

/// `snapshot.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SnapshotMeta {
    memory_mb: i64,
    vcpus: i64,
    image: String,
    source: String,
    created_unix_ms: u64,
}

/// What a snapshot is taken from.
#[expect(
    clippy::large_enum_variant,
    reason = "one short-lived value per snapshot"
)]
pub(crate) enum Source<'a> {
    Running(&'a Vm),
    /// Paused to disk: its saved state already is the stream.
    Paused {
        paths: VmPaths,
        state: PathBuf,
        meta: VmMeta,
        shape: VmShape,
        kind: BootKind,
    },
}

pub(crate) struct Snapshots {
    dir: PathBuf,
    /// Snapshots spawned from in this process, each holding the sealed copy of its RAM that
    /// its clones share.
    loaded: Mutex<HashMap<String, Arc<Template>>>,
}

impl Snapshots {
    pub fn new(data_dir: &Path) -> Self {
        Snapshots {
            dir: data_dir.join("snapshots"),
            loaded: Mutex::new(HashMap::new()),
        }
    }

    fn unknown(sid: &str) -> ProviderError {
        ProviderError::InvalidInput(format!("unknown snapshot {sid}"))
    }

    /// Takes snapshot `sid` of `source`; complete (renamed into place) when it returns.
    pub async fn take(
        &self,
        core: &Core,
        source: Source<'_>,
        sid: &str,
    ) -> Result<SnapshotMade, ProviderError> {
        if !valid_runtime_id(sid) {
            return Err(ProviderError::InvalidInput(format!(
                "invalid snapshot id {sid:?}"
            )));
        }
        let started = Instant::now();
        let (meta, shape, kind) = match &source {
            Source::Running(vm) => (vm.meta.clone(), vm.shape.clone(), vm.kind),
            Source::Paused {
                meta, shape, kind, ..
            } => (meta.clone(), shape.clone(), *kind),
        };
        if kind == BootKind::Cold {
            return Err(ProviderError::NotSupported(
                "a cold-booted microvm cannot be snapshotted (snapshots need templates on)".into(),
            ));
        }
        snapshot::private_dir(&self.dir, "snapshot")?;
        let dest = self.dir.join(sid);
        if dest.exists() {
            return Err(ProviderError::InvalidInput(format!(
                "snapshot {sid} already exists"
            )));
        }
        let work = VmPaths::new(&self.dir, &format!("{TMP_PREFIX}{sid}"));
        let _ = std::fs::remove_dir_all(&work.dir);
        let mut cleanup = Cleanup::create(&work.dir, "snapshot directory").await?;
        let stream = match &source {
            Source::Running(vm) => save_running(vm, &work).await?,
            Source::Paused { paths, state, .. } => {
                copy_disk(&paths.overlay, &work.overlay).await?;
                state.clone()
            }
        };
        let stopped_ms = started.elapsed().as_millis() as u64;
        let shape = VmShape {
            preview_port: None,
            ..shape
        };
        convert(core, &work, &stream, &shape, &mut cleanup).await?;
        for p in [
            work.dir.join(STREAM),
            work.agent_sock.clone(),
            work.qmp_sock.clone(),
            work.meta.clone(),
            work.console.clone(),
            work.qemu_log.clone(),
        ] {
            let _ = std::fs::remove_file(p);
        }
        let smeta = SnapshotMeta {
            memory_mb: shape.memory_mb,
            vcpus: shape.vcpus,
            image: meta.image.clone(),
            source: meta.sandbox_id.clone(),
            created_unix_ms: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or_default(),
        };
        let json = serde_json::to_vec(&smeta)
            .map_err(|e| ProviderError::internal_with("encoding snapshot.json failed", e))?;
        tokio::fs::write(work.dir.join(META), json)
            .await
            .map_err(|e| ProviderError::internal_with("writing snapshot.json failed", e))?;
        let (dir, d) = (work.dir.clone(), dest.clone());
        let size_bytes = tokio::task::spawn_blocking(move || seal_dir(&dir, &d))
            .await
            .map_err(|e| ProviderError::internal_with("storing the snapshot failed", e))?
            .map_err(|e| ProviderError::internal_with("storing the snapshot failed", e))?;
        cleanup.disarm();
        tracing::info!(snapshot = sid, sandbox_id = %meta.sandbox_id, stopped_ms, ms = started.elapsed().as_millis() as u64, size_bytes, "microvm memory snapshot saved");
        Ok(SnapshotMade {
            kind: "memory",
            size_bytes,
        })
    }

    /// The stored snapshot `sid` as a template to clone, and the shape its clones have.
    pub fn template(&self, sid: &str) -> Result<(Arc<Template>, VmShape), ProviderError> {
        if !valid_runtime_id(sid) {
            return Err(Self::unknown(sid));
        }
        let dir = self.dir.join(sid);
        let raw = std::fs::read(dir.join(META)).map_err(|_| Self::unknown(sid))?;
        let meta: SnapshotMeta = serde_json::from_slice(&raw).map_err(|_| Self::unknown(sid))?;
        let shape = VmShape {
            memory_mb: meta.memory_mb,
            vcpus: meta.vcpus,
            preview_port: None,
        };
        let mut loaded = lock(&self.loaded);
        let t = loaded
            .entry(sid.to_string())
            .or_insert_with(|| Arc::new(Template::new(sid, dir)))
            .clone();
        Ok((t, shape))
    }

    /// Removes snapshot `sid`; a missing one is success. Clones already made keep running.
    pub async fn delete(&self, sid: &str) -> Result<(), ProviderError> {
        if !valid_runtime_id(sid) {
            return Ok(());
        }
        lock(&self.loaded).remove(sid);
        match tokio::fs::remove_dir_all(self.dir.join(sid)).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(ProviderError::internal_with(
                "removing the snapshot failed",
                e,
            )),
        }
    }

    /// Removes snapshots `known` does not name and unfinished ones (killing their helper
    /// QEMU), once older than `grace`.
    pub fn sweep(&self, known: &HashSet<String>, grace: Duration) -> Vec<String> {
        let Ok(stale) = crate::sweepable(&self.dir, known, grace) else {
            return Vec::new();
        };
        let mut removed = Vec::new();
        for (name, path) in stale {
            lock(&self.loaded).remove(&name);
            boot::remove_leftover(&path);
            removed.push(name);
        }
        removed
    }
}

/// Stops `vm`, migrates it whole into `<work>/stream`, copies its overlay (consistent: the
/// migration flushed QEMU's caches) and continues it. Returns the stream's path.
async fn save_running(vm: &Vm, work: &VmPaths) -> Result<PathBuf, ProviderError> {
    const WHAT: &str = "saving the snapshot";
    let stream = work.dir.join(STREAM);
    let mut lease = QmpLease::of(vm).await.map_err(unavailable("qmp"))?;
    let qmp = lease.get();
    qmp.execute("stop", None).await.map_err(unavailable(WHAT))?;
    let saved = async {
        migrate::ignore_shared(qmp, false, WHAT).await?;
        // Not flushed: the stream lives only until the conversion, inside a directory that
        // is complete only once renamed (and what is kept is flushed then).
        migrate::save(qmp, &migrate::create(&stream)?, WHAT).await?;
        copy_disk(&vm.paths.overlay, &work.overlay).await
    }
    .await;
    // Always continued: the source keeps running whatever happened to its snapshot.
    let resumed = qmp.execute("cont", None).await;
    saved?;
    resumed.map_err(unavailable("continuing the source VM"))?;
    Ok(stream)
}

async fn copy_disk(from: &Path, to: &Path) -> Result<(), ProviderError> {
    tokio::fs::copy(from, to)
        .await
        .map(drop)
        .map_err(|e| ProviderError::internal_with("copying the overlay failed", e))
}

/// Loads `stream` into a helper QEMU whose RAM is `<work>/mem`, saves its device state to
/// `<work>/state` without that RAM, and ends it.
async fn convert(
    core: &Core,
    work: &VmPaths,
    stream: &Path,
    shape: &VmShape,
    cleanup: &mut Cleanup,
) -> Result<(), ProviderError> {
    const WHAT: &str = "converting the snapshot";
    let mem = work.dir.join("mem");
    // Created here so it is not world-readable (QEMU would create it 0644).
    drop(migrate::create(&mem)?);
    let (rw, ro) = snapshot::open_disk(&work.overlay)?;
    let fds = [rw.as_raw_fd(), ro.as_raw_fd()];
    let launch = Launch::Convert { mem, disk_fds: fds };
    let mut meta = VmMeta {
        sandbox_id: String::new(),
        image: String::new(),
        owner_id: String::new(),
        pid: 0,
        preview_port: None,
        cluster: None,
    };
    let mut child = core
        .start_qemu(work, shape, &launch, &fds, &mut meta, cleanup)
        .await?;
    drop((rw, ro));
    let deadline = tokio::time::Instant::now() + core.settings.boot_timeout;
    let steps = async {
        let mut qmp = Qmp::connect(&work.qmp_sock, deadline)
            .await
            .map_err(unavailable(WHAT))?;
        migrate::load(&mut qmp, stream, deadline, WHAT).await?;
        migrate::ignore_shared(&mut qmp, true, WHAT).await?;
        let state = migrate::create(&work.dir.join("state"))?;
        migrate::save(&mut qmp, &state, WHAT).await
    };
    if let Err(e) = until_exit(&mut child, steps, "snapshot conversion").await {
        boot::log_tail(work).await;
        return Err(e);
    }
    vmm::kill_group(meta.pid);
    let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
    cleanup.pid = 0;
    Ok(())
}

/// Flushes every file of `work` to the disk, renames it to `dest`, and returns the bytes the
/// snapshot takes on the disk (its RAM file is sparse).
fn seal_dir(work: &Path, dest: &Path) -> std::io::Result<u64> {
    let mut size = 0;
    for e in std::fs::read_dir(work)?.flatten() {
        let f = std::fs::File::open(e.path())?;
        f.sync_all()?;
        size += f.metadata()?.blocks() * 512;
    }
    std::fs::rename(work, dest)?;
    if let Some(parent) = dest.parent() {
        std::fs::File::open(parent)?.sync_all()?;
    }
    Ok(size)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn unknown_deleted_and_swept_snapshots() {
        let dir = tempfile::tempdir().unwrap();
        let s = Snapshots::new(dir.path());
        assert!(matches!(
            s.template("snap-00000000"),
            Err(ProviderError::InvalidInput(_))
        ));
        assert!(matches!(
            s.template("../x"),
            Err(ProviderError::InvalidInput(_))
        ));
        s.delete("snap-00000000").await.unwrap();
        let root = dir.path().join("snapshots");
        for d in ["snap-kept", "snap-stray", ".tmp-snap-half"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        let meta = SnapshotMeta {
            memory_mb: 256,
            vcpus: 1,
            image: "img".into(),
            source: "sb-1".into(),
            created_unix_ms: 1,
        };
        std::fs::write(
            root.join("snap-kept").join(META),
            serde_json::to_vec(&meta).unwrap(),
        )
        .unwrap();
        let (t, shape) = s.template("snap-kept").unwrap();
        assert_eq!((shape.memory_mb, shape.vcpus), (256, 1));
        let (again, _) = s.template("snap-kept").unwrap();
        assert!(Arc::ptr_eq(&t, &again), "clones of one snapshot share it");
        let known = HashSet::from(["snap-kept".to_string()]);
        assert!(s.sweep(&known, Duration::from_secs(3600)).is_empty());
        let mut gone = s.sweep(&known, Duration::ZERO);
        gone.sort();
        assert_eq!(gone, [".tmp-snap-half", "snap-stray"]);
        assert!(root.join("snap-kept").is_dir());
        s.delete("snap-kept").await.unwrap();
        assert!(!root.join("snap-kept").exists());
        assert!(s.template("snap-kept").is_err());
    }
}
