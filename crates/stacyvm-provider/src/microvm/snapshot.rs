//! Snapshot clones. The first spawn of an image (per memory size and vCPU count) boots a
//! template VM with its guest RAM in a file, pauses it as soon as its agent answers, and saves
//! the device state with `x-ignore-shared` (the RAM file is the RAM snapshot, so saving takes
//! milliseconds); the template is then killed. A clone maps a sealed copy of that RAM file
//! ([`super::sealed`]) copy-on-write (`share=off`), loads the device state, gets a copy of the
//! template's small overlay, and before anyone uses it a new identity: hostname, entropy with a
//! reseed, machine id, clock.
//!
//! Templates live in `<data_dir>/templates/<key>/` and outlive the process: the key covers
//! every input (QEMU, kernel, initramfs and base disk by size and mtime, shape, accel, ...), and
//! templates whose inputs changed are removed at startup.

use std::collections::HashMap;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use stacyvm_protocol::agent::{ExecStart, GuestMsg, HostMsg, Identity};
use stacyvm_protocol::base64;

use super::agent_conn::{self, AgentConn};
use super::boot::{self, until_exit, BootKind, Cleanup, Core, Vm, VmMeta};
use super::qmp::Qmp;
use super::vmm::{self, Launch, VmPaths, VmShape};
use super::{lock, rootfs};
use super::{migrate, sealed};
use crate::ProviderError;

/// After a failed template build, spawns of that key boot cold for this long. An agent too old
/// for snapshots is not retried: the key changes with the initramfs.
const RETRY_BUILD_AFTER: Duration = Duration::from_secs(60);
/// Consecutive failed restores after which a template is deleted and built again.
const MAX_RESTORE_FAILURES: u32 = 2;
/// One answer from a running agent (identity, warm-up).
pub(crate) const AGENT_CALL: Duration = Duration::from_secs(30);

/// Identifies a template: `name` is the directory, `assets` the files it was built from.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TemplateKey {
    pub name: String,
    hash: String,
    assets: Vec<(String, String)>,
}

/// Size and modification time: enough to notice a rebuilt kernel, initramfs or disk.
fn file_id(p: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    match std::fs::metadata(p) {
        Ok(m) => format!("{}:{}.{}:{}", m.len(), m.mtime(), m.mtime_nsec(), m.ino()),
        Err(_) => "missing".into(),
    }
}

/// FNV-1a: stable across builds (std's hasher is not), and collisions only cost a rebuild.
fn fnv64(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl TemplateKey {
    pub fn new(core: &Core, qemu: &Path, base: &Path, shape: &VmShape) -> Self {
        let s = &core.settings;
        let assets: Vec<(String, String)> = [qemu, &s.kernel, &s.initrd, base]
            .iter()
            .map(|p| (p.to_string_lossy().into_owned(), file_id(p)))
            .collect();
        let fingerprint = format!(
            "v1|{assets:?}|{}|{:?}|{:?}|{:?}|{}|{}",
            s.accel.as_str(),
            s.network,
            s.run_as,
            core.tsc_khz,
            shape.memory_mb,
            shape.vcpus
        );
        // Short: socket paths under it must stay below 108 bytes.
        let stem: String = base
            .file_stem()
            .map(|s| s.to_string_lossy().chars().take(12).collect())
            .unwrap_or_default();
        let hash = format!("{:016x}", fnv64(fingerprint.as_bytes()));
        TemplateKey {
            name: format!("{stem}-{}m-{}c-{hash}", shape.memory_mb, shape.vcpus),
            hash,
            assets,
        }
    }
}

/// `template.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct TemplateMeta {
    key: String,
    assets: Vec<(String, String)>,
    memory_mb: i64,
    vcpus: i64,
}

/// A saved template: `mem` (guest RAM), `state` (device state), `disk.qcow2` (its overlay).
#[derive(Debug)]
pub(crate) struct Template {
    pub key: String,
    pub dir: PathBuf,
    failures: AtomicU32,
    /// `mem` as a sealed memfd for clones (made by the first restore in this process); `None`
    /// inside when that failed and clones map `mem` itself.
    ram: tokio::sync::OnceCell<Option<OwnedFd>>,
}

impl Template {
    fn mem(&self) -> PathBuf {
        self.dir.join("mem")
    }
    fn state(&self) -> PathBuf {
        self.dir.join("state")
    }
    fn disk(&self) -> PathBuf {
        self.dir.join("disk.qcow2")
    }

    /// A template stored in `dir` (a memory snapshot is stored the same way).
    pub(crate) fn new(key: &str, dir: PathBuf) -> Self {
        Template {
            key: key.to_string(),
            dir,
            failures: AtomicU32::new(0),
            ram: tokio::sync::OnceCell::new(),
        }
    }

    /// The descriptor of the sealed copy of `mem` clones map, made on first use.
    async fn sealed_ram(&self) -> Option<RawFd> {
        let ram = self
            .ram
            .get_or_init(|| async {
                let mem = self.mem();
                match tokio::task::spawn_blocking(move || sealed::sealed_copy(&mem)).await {
                    Ok(Ok(fd)) => Some(fd),
                    Ok(Err(e)) => {
                        tracing::warn!(template = %self.key, error = %e, "sealing the template RAM failed; clones map the file");
                        None
                    }
                    Err(e) => {
                        tracing::warn!(template = %self.key, error = %e, "sealing the template RAM failed; clones map the file");
                        None
                    }
                }
            })
            .await;
        ram.as_ref().map(AsRawFd::as_raw_fd)
    }
}

pub(crate) struct Templates {
    dir: PathBuf,
    ready: Mutex<HashMap<String, Arc<Template>>>,
    /// Keys whose build failed, and when to try again (`None`: not in this process).
    failed: Mutex<HashMap<String, Option<Instant>>>,
    /// One build at a time: builds are rare and each is a full boot.
    build: tokio::sync::Mutex<()>,
}

impl Templates {
    pub fn new(data_dir: &Path) -> Self {
        Templates {
            dir: data_dir.join("templates"),
            ready: Mutex::new(HashMap::new()),
            failed: Mutex::new(HashMap::new()),
            build: tokio::sync::Mutex::new(()),
        }
    }

    /// Removes builds of dead processes and templates whose inputs changed.
    pub fn remove_stale(&self) {
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let path = e.path();
            if let Some(rest) = name.strip_prefix(".build-") {
                let pid = rest.split('-').next().and_then(|p| p.parse::<u32>().ok());
                if !pid.is_some_and(boot::pid_alive) {
                    boot::remove_leftover(&path);
                }
                continue;
            }
            let meta: Option<TemplateMeta> = std::fs::read(path.join("template.json"))
                .ok()
                .and_then(|raw| serde_json::from_slice(&raw).ok());
            let current =
                meta.is_some_and(|m| m.assets.iter().all(|(p, id)| file_id(Path::new(p)) == *id));
            if !current {
                tracing::info!(template = %name, "removing a microvm template built from other assets");
                boot::remove_leftover(&path);
            }
        }
    }

    /// The template for `key`, built (a cold boot plus a save) when needed. `None` when
    /// snapshots cannot be used for it now: the spawn then boots cold.
    pub async fn get(
        &self,
        core: &Core,
        key: &TemplateKey,
        base: &Path,
        shape: &VmShape,
    ) -> Option<Arc<Template>> {
        if let Some(t) = lock(&self.ready).get(&key.name) {
            return Some(t.clone());
        }
        if lock(&self.failed)
            .get(&key.name)
            .is_some_and(|retry| retry.is_none_or(|at| Instant::now() < at))
        {
            return None;
        }
        let _build = self.build.lock().await;
        if let Some(t) = lock(&self.ready).get(&key.name) {
            return Some(t.clone());
        }
        let t = match self.load(key) {
            Some(t) => t,
            None => match self.build(core, key, base, shape).await {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!(template = %key.name, error = %e, "microvm template build failed; booting cold");
                    let retry = match e {
                        BuildError::OldAgent(_) => None,
                        BuildError::Other(_) => Some(Instant::now() + RETRY_BUILD_AFTER),
                    };
                    lock(&self.failed).insert(key.name.clone(), retry);
                    return None;
                }
            },
        };
        let t = Arc::new(t);
        lock(&self.ready).insert(key.name.clone(), t.clone());
        Some(t)
    }

    /// Records a failed restore of `t`; after [`MAX_RESTORE_FAILURES`] in a row the template
    /// is deleted and the next spawn builds it again. Returns whether it was.
    pub fn restore_failed(&self, t: &Template) -> bool {
        if t.failures.fetch_add(1, Ordering::SeqCst) + 1 < MAX_RESTORE_FAILURES {
            return false;
        }
        let removed = lock(&self.ready).remove(&t.key);
        if removed.is_some() {
            tracing::warn!(template = %t.key, "discarding a microvm template after failed restores");
            boot::remove_leftover(&t.dir);
        }
        true
    }

    pub fn restore_succeeded(&self, t: &Template) {
        t.failures.store(0, Ordering::SeqCst);
    }

    fn load(&self, key: &TemplateKey) -> Option<Template> {
        let dir = self.dir.join(&key.name);
        let raw = std::fs::read(dir.join("template.json")).ok()?;
        let meta: TemplateMeta = serde_json::from_slice(&raw).ok()?;
        let t = Template::new(&key.name, dir);
        (meta.key == key.name
            && meta.assets == key.assets
            && [t.mem(), t.state(), t.disk()].iter().all(|p| p.is_file()))
        .then_some(t)
    }

    async fn build(
        &self,
        core: &Core,
        key: &TemplateKey,
        base: &Path,
        shape: &VmShape,
    ) -> Result<Template, BuildError> {
        let started = Instant::now();
        private_dir(&self.dir, "template")?;
        let work = format!(".build-{}-{}", std::process::id(), key.hash);
        let paths = VmPaths::new(&self.dir, &work);
        let _ = std::fs::remove_dir_all(&paths.dir);
        let mut cleanup = Cleanup::create(&paths.dir, "template directory").await?;
        rootfs::create_overlay(base, &paths.overlay).await?;
        let mem = paths.dir.join("mem");
        // Created here so it is not world-readable (QEMU would create it 0644).
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&mem)
            .map_err(|e| ProviderError::internal_with("creating the RAM file failed", e))?;
        let (rw, ro) = open_disk(&paths.overlay)?;
        let fds = [rw.as_raw_fd(), ro.as_raw_fd()];
        let launch = Launch::Template { mem, disk_fds: fds };
        let mut meta = VmMeta {
            sandbox_id: String::new(),
            image: key.name.clone(),
            owner_id: String::new(),
            pid: 0,
            preview_port: None,
            cluster: None,
        };
        let mut shape = shape.clone();
        shape.preview_port = core.preview_port();
        let mut child = core
            .start_qemu(&paths, &shape, &launch, &fds, &mut meta, &mut cleanup)
            .await?;
        drop((rw, ro));
        let deadline = tokio::time::Instant::now() + core.settings.boot_timeout;
        let state = paths.dir.join("state");
        let save = async {
            let stream = agent_conn::connect(&paths.agent_sock, deadline)
                .await
                .map_err(unavailable("template agent"))?;
            let conn = AgentConn::handshake(stream, "", deadline)
                .await
                .map_err(unavailable("template agent"))?;
            if conn.version < 2 {
                return Err(BuildError::OldAgent(conn.version));
            }
            // Saved right away, before the guest writes anything to its disk.
            let mut qmp = Qmp::connect(&paths.qmp_sock, deadline)
                .await
                .map_err(unavailable("qmp"))?;
            qmp.execute("stop", None)
                .await
                .map_err(unavailable("qmp"))?;
            save_state(&mut qmp, &state).await?;
            Ok(())
        };
        if let Err(e) = until_exit(&mut child, save, "template boot").await {
            boot::log_tail(&paths).await;
            return Err(e);
        }
        vmm::kill_group(meta.pid);
        let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
        for p in [&paths.agent_sock, &paths.qmp_sock, &paths.meta] {
            let _ = std::fs::remove_file(p);
        }
        let tmeta = TemplateMeta {
            key: key.name.clone(),
            assets: key.assets.clone(),
            memory_mb: shape.memory_mb,
            vcpus: shape.vcpus,
        };
        let json = serde_json::to_vec(&tmeta)
            .map_err(|e| ProviderError::internal_with("encoding template.json failed", e))?;
        tokio::fs::write(paths.dir.join("template.json"), json)
            .await
            .map_err(|e| ProviderError::internal_with("writing template.json failed", e))?;
        let dir = self.dir.join(&key.name);
        if tokio::fs::rename(&paths.dir, &dir).await.is_err() {
            // Another process stored the same template first: use theirs.
            drop(cleanup);
            return self
                .load(key)
                .ok_or_else(|| ProviderError::internal("storing the template failed").into());
        }
        cleanup.disarm();
        let built_in = started.elapsed();
        tracing::info!(template = %key.name, ms = built_in.as_millis() as u64, "microvm template saved");
        Ok(Template::new(&key.name, dir))
    }
}

/// Why a template could not be built.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BuildError {
    /// The initramfs' agent predates the identity message (protocol 2).
    #[error("the guest agent speaks protocol {0}, snapshots need 2: rebuild the initramfs")]
    OldAgent(u32),
    #[error(transparent)]
    Other(#[from] ProviderError),
}

pub(crate) fn unavailable<E: std::fmt::Display>(what: &'static str) -> impl Fn(E) -> ProviderError {
    move |e| ProviderError::Unavailable(format!("{what}: {e}"))
}

/// Saves a paused VM's device state into `state`; its RAM, in the shared file, is skipped.
async fn save_state(qmp: &mut Qmp, state: &Path) -> Result<(), ProviderError> {
    const WHAT: &str = "saving the template";
    migrate::ignore_shared(qmp, true, WHAT).await?;
    migrate::save(qmp, &migrate::create(state)?, WHAT).await
}

/// The overlay opened read-write and read-only, for QEMU's fd set.
pub(crate) fn open_disk(overlay: &Path) -> Result<(std::fs::File, std::fs::File), ProviderError> {
    let open = |write: bool| {
        std::fs::OpenOptions::new()
            .read(true)
            .write(write)
            .open(overlay)
            .map_err(|e| ProviderError::internal_with("opening the overlay failed", e))
    };
    Ok((open(true)?, open(false)?))
}

fn random_bytes(n: usize) -> Result<Vec<u8>, ProviderError> {
    let mut buf = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(|e| ProviderError::internal_with("reading /dev/urandom failed", e))?;
    Ok(buf)
}

/// A new identity: a 64-byte seed, the host clock, and optionally a hostname and machine id.
pub(crate) fn fresh_identity(hostname: &str, machine_id: bool) -> Result<Identity, ProviderError> {
    let machine_id = if machine_id {
        random_bytes(16)?
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    } else {
        String::new()
    };
    let unix_time_ms = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .ok()
        .and_then(|d| u64::try_from(d.as_millis()).ok());
    Ok(Identity {
        hostname: hostname.to_string(),
        seed: base64::encode(&random_bytes(64)?),
        machine_id,
        unix_time_ms,
    })
}

/// Restores a clone of `tpl` into `paths.dir`, resumes it and gives it a fresh identity
/// (`hostname` empty: keep the template's, as for the pool, which also runs one command so
/// the first real one finds QEMU's code cache warm). On failure nothing is left.
pub(crate) async fn restore(
    core: &Core,
    tpl: &Template,
    mut meta: VmMeta,
    paths: VmPaths,
    shape: &VmShape,
    hostname: &str,
    warm_up: bool,
) -> Result<Vm, ProviderError> {
    let started = Instant::now();
    let mut cleanup = Cleanup::create(&paths.dir, "VM directory").await?;
    tokio::fs::copy(tpl.disk(), &paths.overlay)
        .await
        .map_err(|e| ProviderError::internal_with("copying the template overlay failed", e))?;
    let (rw, ro) = open_disk(&paths.overlay)?;
    let fds = [rw.as_raw_fd(), ro.as_raw_fd()];
    let mut inherit = fds.to_vec();
    let mem = match tpl.sealed_ram().await {
        Some(fd) => {
            inherit.push(fd);
            PathBuf::from(format!("/proc/self/fd/{fd}"))
        }
        None => tpl.mem(),
    };
    let launch = Launch::Clone { mem, disk_fds: fds };
    let mut child = core
        .start_qemu(&paths, shape, &launch, &inherit, &mut meta, &mut cleanup)
        .await?;
    drop((rw, ro));
    let deadline = tokio::time::Instant::now() + core.settings.boot_timeout;
    let steps = async {
        const WHAT: &str = "restoring the snapshot";
        let mut qmp = Qmp::connect(&paths.qmp_sock, deadline)
            .await
            .map_err(unavailable(WHAT))?;
        migrate::ignore_shared(&mut qmp, true, WHAT).await?;
        migrate::load(&mut qmp, &tpl.state(), deadline, WHAT).await?;
        let conn =
            super::paused::reconnect(&paths.agent_sock, hostname, &mut qmp, deadline).await?;
        conn.identity(fresh_identity(hostname, true)?, AGENT_CALL)
            .await
            .map_err(unavailable("clone identity"))?;
        if warm_up {
            run_true(&conn).await?;
        }
        Ok((qmp, conn))
    };
    let (qmp, conn) = match until_exit(&mut child, steps, "restore").await {
        Ok(r) => r,
        Err(e) => {
            boot::log_tail(&paths).await;
            return Err(e);
        }
    };
    cleanup.disarm();
    let booted_in = started.elapsed();
    tracing::debug!(sandbox_id = %meta.sandbox_id, template = %tpl.key, ms = booted_in.as_millis() as u64, "microvm clone ready");
    Ok(Vm {
        paths,
        meta,
        child: Mutex::new(child),
        conn,
        qmp: Some(tokio::sync::Mutex::new(qmp)),
        booted_in,
        kind: BootKind::Restored,
        shape: shape.clone(),
        forwards: Default::default(),
    })
}

/// Creates `dir` (and its parents) readable by this user only; `what` names it in errors.
pub(crate) fn private_dir(dir: &Path, what: &str) -> Result<(), ProviderError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| {
            ProviderError::internal_with(format!("creating the {what} directory failed"), e)
        })
}

/// Runs `true` in the guest and waits for its exit.
async fn run_true(conn: &AgentConn) -> Result<(), ProviderError> {
    let start = ExecStart {
        argv: vec!["true".into()],
        ..Default::default()
    };
    let (id, mut rx) = conn
        .start(HostMsg::Exec(start))
        .await
        .map_err(unavailable("warm-up"))?;
    let r = tokio::time::timeout(AGENT_CALL, async {
        loop {
            match rx.recv().await {
                Some(GuestMsg::Exit { .. }) => return Ok(()),
                Some(GuestMsg::Output { .. }) => {}
                other => {
                    return Err(ProviderError::Unavailable(format!(
                        "warm-up command: {other:?}"
                    )))
                }
            }
        }
    })
    .await;
    conn.forget(id);
    r.map_err(|_| ProviderError::Unavailable("warm-up command timed out".into()))?
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn fnv_is_stable() {
        assert_eq!(fnv64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv64(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    fn core(dir: &Path) -> Core {
        let settings = crate::MicrovmConfig {
            data_dir: dir.to_string_lossy().into_owned(),
            run_as: "-".into(),
            ..Default::default()
        }
        .validate(false)
        .unwrap();
        Core {
            rootfs: rootfs::Rootfs::new(dir, None),
            templates: Templates::new(dir),
            pool: super::super::pool::Pool::new(dir, 0),
            tsc_khz: Some(1),
            settings,
        }
    }

    #[test]
    fn keys_follow_inputs_and_stale_templates_go() {
        let dir = tempfile::tempdir().unwrap();
        let c = core(dir.path());
        for f in ["vmlinux", "initramfs.cpio.gz", "qemu", "base.ext4"] {
            std::fs::write(dir.path().join(f), f).unwrap();
        }
        let (qemu, base) = (dir.path().join("qemu"), dir.path().join("base.ext4"));
        let shape = VmShape {
            memory_mb: 256,
            vcpus: 1,
            preview_port: None,
        };
        let k = TemplateKey::new(&c, &qemu, &base, &shape);
        assert_eq!(k, TemplateKey::new(&c, &qemu, &base, &shape));
        assert!(k.name.starts_with("base-256m-1c-"), "{}", k.name);
        let bigger = VmShape {
            memory_mb: 512,
            ..shape.clone()
        };
        assert_ne!(k.name, TemplateKey::new(&c, &qemu, &base, &bigger).name);

        // A stored template for these inputs survives a restart; after the kernel changes it
        // is removed.
        let stored = dir.path().join("templates").join(&k.name);
        std::fs::create_dir_all(&stored).unwrap();
        let meta = TemplateMeta {
            key: k.name.clone(),
            assets: k.assets.clone(),
            memory_mb: 256,
            vcpus: 1,
        };
        std::fs::write(
            stored.join("template.json"),
            serde_json::to_vec(&meta).unwrap(),
        )
        .unwrap();
        for f in ["mem", "state", "disk.qcow2"] {
            std::fs::write(stored.join(f), b"x").unwrap();
        }
        c.templates.remove_stale();
        assert!(c.templates.load(&k).is_some());
        std::fs::write(dir.path().join("vmlinux"), "a new kernel").unwrap();
        let k2 = TemplateKey::new(&c, &qemu, &base, &shape);
        assert_ne!(k.name, k2.name);
        assert!(c.templates.load(&k2).is_none());
        c.templates.remove_stale();
        assert!(!stored.exists(), "stale template kept");
    }

    #[test]
    fn identities_differ() {
        let a = fresh_identity("sb-1", true).unwrap();
        let b = fresh_identity("sb-1", true).unwrap();
        assert!(Identity::valid_machine_id(&a.machine_id), "{a:?}");
        assert_ne!(a.machine_id, b.machine_id);
        assert_ne!(a.seed, b.seed);
        assert_eq!(base64::decode(&a.seed).unwrap().len(), 64);
        assert!(a.unix_time_ms.unwrap() > 1_700_000_000_000);
        assert!(fresh_identity("x", false).unwrap().machine_id.is_empty());
    }
}
