//! The warm pool: per template, up to `warm_pool` clones that are already restored, identified
//! and paused, so a spawn only resumes one (`cont`, then its hostname). One background task,
//! owned by the provider, refills it one clone at a time; it is cancelled and joined by
//! [`super::MicrovmProvider::shutdown`] and aborted on drop. Pooled clones live in
//! `<data_dir>/pool/<pid>-<n>/`, outside `vms/`, so reconciliation never sees them; a later
//! process removes the pool of a dead one.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use stacyvm_protocol::agent::HostMsg;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::boot::{self, BootKind, Core, Vm, VmMeta};
use super::lock;
use super::snapshot::{self, unavailable, Template, AGENT_CALL};
use super::vmm::{VmPaths, VmShape};
use crate::ProviderError;

/// Backoff bounds after a failed refill.
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);

struct Entry {
    template: Arc<Template>,
    shape: VmShape,
    ready: VecDeque<Vm>,
    filling: usize,
}

pub(crate) struct Pool {
    target: usize,
    dir: PathBuf,
    entries: Mutex<HashMap<String, Entry>>,
    notify: Notify,
    next: AtomicU64,
}

/// One clone to prepare.
struct Job {
    key: String,
    template: Arc<Template>,
    shape: VmShape,
}

impl Pool {
    pub fn new(data_dir: &Path, target: usize) -> Self {
        // Unique per process and instance (several providers may share a data dir).
        static INSTANCE: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let name = format!(
            "{}-{}-{nanos:x}",
            std::process::id(),
            INSTANCE.fetch_add(1, Ordering::Relaxed)
        );
        Pool {
            target,
            dir: data_dir.join("pool").join(name),
            entries: Mutex::new(HashMap::new()),
            notify: Notify::new(),
            next: AtomicU64::new(1),
        }
    }

    pub fn enabled(&self) -> bool {
        self.target > 0
    }

    /// Removes the pools of processes that are gone (their QEMUs outlive them).
    pub fn remove_stale(data_dir: &Path) {
        let Ok(rd) = std::fs::read_dir(data_dir.join("pool")) else {
            return;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let pid = name.split('-').next().and_then(|p| p.parse::<u32>().ok());
            if pid.is_some_and(boot::pid_alive) {
                continue;
            }
            if let Ok(vms) = std::fs::read_dir(e.path()) {
                for vm in vms.flatten() {
                    boot::remove_leftover(&vm.path());
                }
            }
            let _ = std::fs::remove_dir_all(e.path());
        }
    }

    /// Keeps clones of `template` warm from now on.
    pub fn want(&self, template: &Arc<Template>, shape: &VmShape) {
        if !self.enabled() {
            return;
        }
        let mut entries = lock(&self.entries);
        let e = entries
            .entry(template.key.clone())
            .or_insert_with(|| Entry {
                template: template.clone(),
                shape: shape.clone(),
                ready: VecDeque::new(),
                filling: 0,
            });
        e.template = template.clone();
        drop(entries);
        self.notify.notify_one();
    }

    /// A ready clone of template `key`, if any (dead ones are dropped, and killed on drop).
    pub fn take(&self, key: &str) -> Option<Vm> {
        let mut entries = lock(&self.entries);
        let e = entries.get_mut(key)?;
        let mut found = None;
        while let Some(vm) = e.ready.pop_front() {
            if vm.healthy() {
                found = Some(vm);
                break;
            }
            tracing::warn!(pool_vm = %vm.paths.dir.display(), "dropping a dead pooled microvm");
            kill_now(&vm);
        }
        drop(entries);
        self.notify.notify_one();
        found
    }

    /// Stops keeping clones of `key` (its template was discarded); returns them for teardown.
    pub fn forget(&self, key: &str) -> Vec<Vm> {
        lock(&self.entries)
            .remove(key)
            .map(|e| e.ready.into())
            .unwrap_or_default()
    }

    /// Every pooled clone, for teardown.
    pub fn drain(&self) -> Vec<Vm> {
        lock(&self.entries)
            .drain()
            .flat_map(|(_, e)| e.ready)
            .collect()
    }

    /// Ready clones over all templates.
    pub fn len(&self) -> usize {
        lock(&self.entries).values().map(|e| e.ready.len()).sum()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn next_job(&self) -> Option<Job> {
        let mut entries = lock(&self.entries);
        let (key, e) = entries
            .iter_mut()
            .find(|(_, e)| e.ready.len() + e.filling < self.target)?;
        e.filling += 1;
        Some(Job {
            key: key.clone(),
            template: e.template.clone(),
            shape: e.shape.clone(),
        })
    }

    /// Ends a job; a clone nobody wants any more (template discarded, pool full) comes back.
    fn finish(&self, job: &Job, vm: Option<Vm>) -> Option<Vm> {
        let mut entries = lock(&self.entries);
        let Some(e) = entries.get_mut(&job.key) else {
            return vm;
        };
        e.filling = e.filling.saturating_sub(1);
        match vm {
            Some(vm) if Arc::ptr_eq(&e.template, &job.template) && e.ready.len() < self.target => {
                e.ready.push_back(vm);
                None
            }
            other => other,
        }
    }
}

/// Kills a VM at once and removes its files (for drop paths, which cannot wait).
pub(crate) fn kill_now(vm: &Vm) {
    super::vmm::kill_group(vm.meta.pid);
    let _ = std::fs::remove_dir_all(&vm.paths.dir);
}

/// Restores, identifies, warms and pauses one clone for the pool.
async fn prepare(core: &Core, job: &Job, n: u64) -> Result<Vm, ProviderError> {
    let paths = VmPaths::new(core.pool.dir(), &format!("p{n}"));
    let meta = VmMeta {
        sandbox_id: String::new(),
        image: job.key.clone(),
        owner_id: String::new(),
        pid: 0,
        preview_port: None,
        cluster: None,
    };
    let mut shape = job.shape.clone();
    shape.preview_port = core.preview_port();
    let vm = snapshot::restore(core, &job.template, meta, paths, &shape, "", true).await?;
    if let Err(e) = pause(&vm).await {
        kill_now(&vm);
        return Err(e);
    }
    Ok(vm)
}

/// The refill task: prepares clones while some template is below its target.
pub(crate) async fn refill(core: Arc<Core>, cancel: CancellationToken) {
    let mut backoff = Duration::ZERO;
    loop {
        if !backoff.is_zero() {
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(backoff) => {}
            }
        }
        let Some(job) = core.pool.next_job() else {
            tokio::select! {
                () = cancel.cancelled() => return,
                () = core.pool.notify.notified() => continue,
            }
        };
        let n = core.pool.next.fetch_add(1, Ordering::Relaxed);
        let r = tokio::select! {
            () = cancel.cancelled() => {
                core.pool.finish(&job, None);
                return;
            }
            r = prepare(&core, &job, n) => r,
        };
        match r {
            Ok(vm) => {
                backoff = Duration::ZERO;
                if cancel.is_cancelled() {
                    kill_now(&vm);
                    core.pool.finish(&job, None);
                    return;
                }
                let dir = vm.paths.dir.clone();
                match core.pool.finish(&job, Some(vm)) {
                    Some(extra) => boot::teardown(&extra).await,
                    None => {
                        tracing::debug!(template = %job.key, pool_vm = %dir.display(), "microvm warm pool clone ready");
                    }
                }
            }
            Err(e) => {
                core.pool.finish(&job, None);
                backoff = (backoff * 2).clamp(BACKOFF_MIN, BACKOFF_MAX);
                tracing::warn!(template = %job.key, error = %e, retry_in_s = backoff.as_secs(), "refilling the microvm warm pool failed");
            }
        }
    }
}

/// Pauses a ready clone (for the pool).
async fn pause(vm: &Vm) -> Result<(), ProviderError> {
    let qmp = vm
        .qmp
        .as_ref()
        .ok_or_else(|| ProviderError::internal("clone without qmp"))?;
    qmp.lock()
        .await
        .execute("stop", None)
        .await
        .map_err(unavailable("pausing a clone"))
        .map(drop)
}

/// Resumes a pooled clone as sandbox `meta.sandbox_id`: its name and clock queued on the agent
/// connection, then `cont`; the agent's answer is awaited in the background. The directory is
/// moved to `paths.dir` and `vm.json` rewritten meanwhile. On failure the caller destroys it
/// (wherever its directory ended up: `vm.paths`).
pub(crate) async fn resume(
    mut vm: Vm,
    mut meta: VmMeta,
    paths: VmPaths,
) -> Result<Vm, (Vm, ProviderError)> {
    let started = Instant::now();
    // The clone got its seed and machine id when it was prepared, and nobody has seen it since;
    // what is new is its name and the clock (stopped while it was paused). The seed is sent
    // again anyway: it costs the guest nothing measurable.
    let identity = match snapshot::fresh_identity(&meta.sandbox_id, false) {
        Ok(i) => i,
        Err(e) => return Err((vm, e)),
    };
    // Queued before `cont`, so the guest finds it the moment it runs. The spawn returns once
    // QEMU has resumed: the agent applies the identity before it reads anything the caller
    // sends next (it handles frames in order), and a refusal or silence marks the VM
    // unhealthy (`expect_ok_later`).
    let resumed = async {
        let qmp = vm
            .qmp
            .as_ref()
            .ok_or_else(|| ProviderError::internal("clone without qmp"))?;
        let (id, rx) = vm
            .conn
            .start(HostMsg::Identity(identity))
            .await
            .map_err(unavailable("clone identity"))?;
        match qmp.lock().await.execute("cont", None).await {
            Ok(_) => Ok((id, rx)),
            Err(e) => {
                vm.conn.forget(id);
                Err(unavailable("resuming a clone")(e))
            }
        }
    };
    meta.pid = vm.meta.pid;
    meta.preview_port = vm.meta.preview_port;
    let moved = async {
        tokio::fs::rename(&vm.paths.dir, &paths.dir)
            .await
            .map_err(|e| ProviderError::internal_with("moving the clone directory failed", e))?;
        let written = boot::write_meta(&paths, &meta).await;
        Ok::<_, ProviderError>(written)
    };
    let (resumed, moved) = tokio::join!(resumed, moved);
    let written = match moved {
        Ok(w) => {
            vm.paths = paths;
            w
        }
        Err(e) => Err(e),
    };
    let (id, rx) = match resumed.and_then(|r| written.map(|()| r)) {
        Ok(r) => r,
        Err(e) => return Err((vm, e)),
    };
    vm.conn
        .expect_ok_later(id, rx, AGENT_CALL, "clone identity");
    vm.meta = meta;
    vm.booted_in = started.elapsed();
    vm.kind = BootKind::Pooled;
    Ok(vm)
}
