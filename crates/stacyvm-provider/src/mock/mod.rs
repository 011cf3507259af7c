//! The mock provider: each sandbox is a host temp directory and commands run on the host.
//! **No isolation.** Kept as the reference test double (the SDK live tests run against it, wire
//! reference §6) and as a hand-written fake for control-plane tests: it records calls, can be
//! told to fail, and can slow spawns down.

mod agent;
mod dirs;
mod exec;
mod faults;
mod files;
mod freeze;
#[cfg(test)]
mod lifecycle_tests;
mod paths;
#[cfg(test)]
mod paths_prop;
mod persist;
mod snapshots;
mod stream;
mod volumes;

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use bytes::Bytes;
use stacyvm_protocol::agent::ProcStart;
use stacyvm_types::{FileInfo, Pid, ProcessInfo, PtySize, SandboxState, Signal};
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;

use self::agent::AgentSlot;
use self::faults::Faults;
use crate::agent::conn::AgentConn;
use crate::agent::procs;
use crate::{
    ByteStream, ChunkSender, ExecRequest, FileStream, ProcessSpec, Provider, ProviderError,
    RecordStream, RuntimeInfo, SandboxSpec, SnapshotMade, Spawned, VolumeMountSpec, WatchStream,
};

/// One recorded provider call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MockCall {
    /// The trait method name (`spawn`, `exec`, `read_file`, ...).
    pub method: &'static str,
    /// The runtime id it targeted (`SandboxSpec::id` for spawn; empty for `health`).
    pub runtime_id: String,
}

struct Sandbox {
    /// The host directory and its canonical path (so symlink checks compare like with like),
    /// made on first use: a sandbox that is spawned and destroyed without being touched never
    /// costs a directory. Dropping the `TempDir` removes it.
    dir: Option<(Root, PathBuf)>,
    image: String,
    /// Cancels running execs when the sandbox is destroyed.
    cancel: CancellationToken,
    /// The background-process agent's slot, made by the first process call: most sandboxes
    /// never run one, and an empty slot at every spawn cost ~350 bytes per live sandbox.
    agent: Option<Arc<AgentSlot>>,
    /// Paused: its agent and processes are stopped (`freeze.rs`).
    paused: bool,
}

/// Who removes a sandbox's directory.
enum Root {
    /// Removed when dropped (the provider's sandboxes go with it).
    Temp(TempDir),
    /// A persistent sandbox's: removed by destroy only.
    Kept,
}

pub struct MockProvider {
    base_dir: PathBuf,
    sandboxes: Mutex<HashMap<String, Sandbox>>,
    faults: Mutex<Faults>,
    /// The newest `CALL_LOG` calls: a long-running mock server must not grow per request.
    calls: Mutex<VecDeque<MockCall>>,
    /// Acts like a backend without a streaming file path (tests of the callers' caps).
    buffered_streams: AtomicBool,
    /// The agent binary as configured; `None` = [`crate::agent::locate`]'s search.
    agent_path: Option<PathBuf>,
    /// The agent binary once found: the search resolves links and stats every candidate,
    /// too much to repeat on every exec.
    located: OnceLock<PathBuf>,
    /// Sandboxes outlive the provider ([`MockProvider::persistent`]).
    persistent: bool,
    /// Where volumes live (`volumes.rs`): `<base>/volumes` when persistent, else a directory
    /// of this provider's own under `<base>`, made on first use and removed with it.
    volumes_dir: OnceLock<(Option<TempDir>, PathBuf)>,
    /// Where snapshots live (`snapshots.rs`), chosen like `volumes_dir`.
    snapshots_dir: OnceLock<(Option<TempDir>, PathBuf)>,
    /// Snapshots being copied now: the sweep never takes them.
    snapshots_in_flight: crate::in_flight::SnapshotsInFlight,
    /// Recently destroyed ids (bounded), for `status` and `logs` after a destroy.
    destroyed: crate::tombstones::Tombstones,
}

impl Default for MockProvider {
    fn default() -> Self {
        Self::new()
    }
}

/// A poisoned lock only means another test thread panicked; the data is still usable.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl MockProvider {
    /// Sandboxes go under the system temp directory.
    pub fn new() -> Self {
        Self::with_base_dir(std::env::temp_dir())
    }

    /// Sandboxes go under `base` (created on first spawn).
    pub fn with_base_dir(base: impl Into<PathBuf>) -> Self {
        MockProvider {
            base_dir: base.into(),
            sandboxes: Mutex::default(),
            faults: Mutex::default(),
            calls: Mutex::default(),
            buffered_streams: AtomicBool::new(false),
            agent_path: None,
            located: OnceLock::new(),
            persistent: false,
            volumes_dir: OnceLock::new(),
            snapshots_dir: OnceLock::new(),
            snapshots_in_flight: Default::default(),
            destroyed: Default::default(),
        }
    }

    /// Sandboxes under `base` that survive the provider: neither they nor their background
    /// processes end when it goes away (even with `kill -9`), and a new provider on the same
    /// `base` adopts them, reconnecting to their agents. Destroy still removes everything.
    /// `base` must belong to this provider alone (e.g. under the control plane's data dir).
    pub fn persistent(base: impl Into<PathBuf>) -> Self {
        let mut p = Self::with_base_dir(base);
        p.persistent = true;
        let mut map = lock(&p.sandboxes);
        for (meta, root) in persist::scan(&p.base_dir) {
            let state = persist::state(&p.base_dir, &meta.id);
            let agent = Arc::new(AgentSlot::adopted(&state));
            let paused = agent.pid().is_some_and(freeze::stopped);
            map.insert(
                meta.id,
                Sandbox {
                    dir: Some((Root::Kept, root)),
                    image: meta.image,
                    cancel: CancellationToken::new(),
                    agent: Some(agent),
                    paused,
                },
            );
        }
        drop(map);
        p
    }

    /// Runs background processes with the agent binary at `path` (default: searched for, see
    /// [`crate::agent::locate`]).
    pub fn with_agent(mut self, path: impl Into<PathBuf>) -> Self {
        self.agent_path = Some(path.into());
        self
    }

    /// The agent connection of a live sandbox (starting its agent on first use) and its root.
    async fn agent(
        &self,
        method: &'static str,
        runtime_id: &str,
    ) -> Result<(Arc<AgentConn>, PathBuf), ProviderError> {
        let bin = self
            .agent_bin()
            .ok_or_else(|| crate::agent::missing("mock"))?;
        self.agent_at(method, runtime_id, &bin).await
    }

    /// [`crate::agent::locate`], remembered once it finds a binary (one built later is still
    /// found).
    fn agent_bin(&self) -> Option<PathBuf> {
        if let Some(p) = self.located.get() {
            return Some(p.clone());
        }
        let p = crate::agent::locate(self.agent_path.as_deref())?;
        Some(self.located.get_or_init(|| p).clone())
    }

    /// [`Self::agent`] with the agent binary already located.
    async fn agent_at(
        &self,
        method: &'static str,
        runtime_id: &str,
        bin: &Path,
    ) -> Result<(Arc<AgentConn>, PathBuf), ProviderError> {
        self.enter(method, runtime_id)?;
        let (root, _) = self.live(runtime_id)?;
        let slot = lock(&self.sandboxes)
            .get_mut(runtime_id)
            .map(|s| s.agent.get_or_insert_with(Arc::default).clone())
            .ok_or_else(|| ProviderError::SandboxNotFound(runtime_id.to_string()))?;
        let state = persist::state(&self.base_dir, runtime_id);
        let place = if self.persistent {
            agent::Place::Kept(&state)
        } else {
            agent::Place::Temp(&self.base_dir)
        };
        let conn = slot.conn(bin, &root, place, runtime_id).await?;
        Ok((conn, root))
    }

    /// Root (made now if this is the first use) and cancel token of a live sandbox.
    fn live(&self, runtime_id: &str) -> Result<(PathBuf, CancellationToken), ProviderError> {
        let mut map = lock(&self.sandboxes);
        let sb = map
            .get_mut(runtime_id)
            .ok_or_else(|| ProviderError::SandboxNotFound(runtime_id.to_string()))?;
        let root = match &sb.dir {
            Some((_, root)) => root.clone(),
            None => {
                let (dir, root) = self.create_root(runtime_id)?;
                sb.dir = Some((Root::Temp(dir), root.clone()));
                root
            }
        };
        Ok((root, sb.cancel.clone()))
    }

    /// Runs a blocking file operation on a live sandbox's root.
    async fn on_root<T, F>(
        &self,
        method: &'static str,
        runtime_id: &str,
        f: F,
    ) -> Result<T, ProviderError>
    where
        T: Send + 'static,
        F: FnOnce(&Path) -> Result<T, ProviderError> + Send + 'static,
    {
        self.enter(method, runtime_id)?;
        let (root, _) = self.live(runtime_id)?;
        tokio::task::spawn_blocking(move || f(&root))
            .await
            .map_err(|e| ProviderError::internal_with("file task failed", e))?
    }

    /// [`Self::on_root`] for an operation on one path of the sandbox.
    async fn on_path<T, F>(
        &self,
        method: &'static str,
        runtime_id: &str,
        path: &str,
        f: F,
    ) -> Result<T, ProviderError>
    where
        T: Send + 'static,
        F: FnOnce(&Path, &str) -> Result<T, ProviderError> + Send + 'static,
    {
        let path = path.to_string();
        self.on_root(method, runtime_id, move |root| f(root, &path))
            .await
    }

    /// The agent and the start message of `spec`. The agent runs on the host: it gets host
    /// paths and the sandbox's environment, translated as exec does.
    async fn start_on_host(
        &self,
        runtime_id: &str,
        spec: &ProcessSpec,
    ) -> Result<(Arc<AgentConn>, ProcStart), ProviderError> {
        let mut msg = procs::start_msg(spec)?;
        let (conn, root) = self.agent("process_start", runtime_id).await?;
        msg.workdir = exec::host_workdir(&root, spec.exec.workdir.as_deref())
            .await?
            .to_string_lossy()
            .into_owned();
        msg.env.extend(exec::sandbox_env(&root));
        Ok((conn, msg))
    }

    fn create_root(&self, id: &str) -> Result<(TempDir, PathBuf), ProviderError> {
        let fail = |e| ProviderError::internal_with("creating the sandbox directory failed", e);
        std::fs::create_dir_all(&self.base_dir).map_err(fail)?;
        let dir = tempfile::Builder::new()
            .prefix(&format!("stacyvm-{id}-"))
            .tempdir_in(&self.base_dir)
            .map_err(fail)?;
        let root = dir.path().canonicalize().map_err(fail)?;
        std::fs::create_dir(root.join("workspace")).map_err(fail)?;
        Ok((dir, root))
    }
}

#[async_trait::async_trait]
impl Provider for MockProvider {
    fn name(&self) -> &str {
        "mock"
    }

    fn capabilities(&self) -> Vec<&'static str> {
        crate::capabilities_with(&["health", "test_provider", "pause", "volumes", "snapshots"])
    }

    fn config_summary(&self) -> serde_json::Value {
        serde_json::json!({ "type": "mock" })
    }

    fn isolated(&self) -> bool {
        false
    }

    async fn health(&self) -> Result<(), ProviderError> {
        self.enter("health", "")
    }

    /// Ends every sandbox's background processes and agent: nothing stays running (except for
    /// a [`MockProvider::persistent`] one, whose sandboxes outlive it).
    async fn shutdown(&self) {
        if self.persistent {
            // Persistent sandboxes and their processes outlive the provider by design.
            return;
        }
        let slots: Vec<Arc<AgentSlot>> = lock(&self.sandboxes)
            .values()
            .filter_map(|s| s.agent.clone())
            .collect();
        for s in slots {
            s.stop().await;
        }
    }

    async fn spawn(&self, spec: &SandboxSpec) -> Result<Spawned, ProviderError> {
        self.enter("spawn", &spec.id)?;
        let delay = lock(&self.faults).spawn_delay;
        if let Some(d) = delay {
            tokio::time::sleep(d).await;
        }
        paths::check_id("sandbox id", &spec.id)?;
        // The base directory must be usable now, so a broken one fails the spawn, not a
        // later command.
        std::fs::create_dir_all(&self.base_dir).map_err(|e| {
            ProviderError::internal_with("creating the sandbox directory failed", e)
        })?;
        let mut map = lock(&self.sandboxes);
        if map.contains_key(&spec.id) {
            return Err(ProviderError::InvalidInput(format!(
                "sandbox {} already exists",
                spec.id
            )));
        }
        // A persistent sandbox is on disk from the start: a restart must find it.
        let dir = if self.persistent {
            let root = persist::create(&self.base_dir, &spec.id, &spec.image)?;
            Some((Root::Kept, root))
        } else {
            None
        };
        map.insert(
            spec.id.clone(),
            Sandbox {
                dir,
                image: spec.image.clone(),
                cancel: CancellationToken::new(),
                agent: None,
                paused: false,
            },
        );
        self.destroyed.forget(&spec.id);
        Ok(Spawned {
            runtime_id: spec.id.clone(),
        })
    }

    async fn destroy(&self, runtime_id: &str) -> Result<(), ProviderError> {
        self.enter("destroy", runtime_id)?;
        let (dir, agent) = {
            let mut map = lock(&self.sandboxes);
            let sb = map
                .remove(runtime_id)
                .ok_or_else(|| ProviderError::SandboxNotFound(runtime_id.to_string()))?;
            // Remembered (bounded) so `status` and `logs` still answer for it.
            self.destroyed.remember(runtime_id);
            if sb.paused {
                // A stopped agent cannot list its processes for the kill below.
                if let Some(pid) = sb.agent.as_ref().and_then(|a| a.pid()) {
                    freeze::signal_tree(pid, false);
                }
            }
            sb.cancel.cancel();
            (sb.dir, sb.agent)
        };
        // Processes first: they may hold files of the root open.
        if let Some(agent) = agent {
            agent.stop().await;
        }
        // A persistent mock's volumes may predate this provider object; a temporary one has
        // none until it made its directory.
        let vols = match self.volumes_dir.get() {
            Some((_, p)) => Some(p.clone()),
            // Not made here: a persistent mock without volumes leaves no directory behind.
            None if self.persistent => self.base_dir.join("volumes").canonicalize().ok(),
            None => None,
        };
        if let (Some((_, root)), Some(vols)) = (&dir, vols) {
            volumes::detach_all(root, &vols);
        }
        let remove =
            match dir {
                Some((Root::Temp(dir), _)) => Some(Box::new(move || dir.close())
                    as Box<dyn FnOnce() -> std::io::Result<()> + Send>),
                Some((Root::Kept, _)) => {
                    let (base, id) = (self.base_dir.clone(), runtime_id.to_string());
                    Some(Box::new(move || persist::remove(&base, &id))
                        as Box<dyn FnOnce() -> std::io::Result<()> + Send>)
                }
                None => None,
            };
        if let Some(remove) = remove {
            tokio::task::spawn_blocking(remove)
                .await
                .map_err(|e| ProviderError::internal_with("removing the sandbox failed", e))?
                .map_err(|e| ProviderError::internal_with("removing the sandbox failed", e))?;
        }
        Ok(())
    }

    async fn create_volume(&self, name: &str, _size_mb: i64) -> Result<(), ProviderError> {
        self.enter("create_volume", name)?;
        volumes::create(&self.volumes_dir()?, name)
    }

    async fn delete_volume(&self, name: &str) -> Result<(), ProviderError> {
        self.enter("delete_volume", name)?;
        volumes::delete(&self.volumes_dir()?, name)
    }

    async fn list_volumes(&self) -> Result<Option<Vec<String>>, ProviderError> {
        Ok(Some(volumes::list(&self.volumes_dir()?)))
    }

    async fn spawn_with_volumes(
        &self,
        spec: &SandboxSpec,
        mounts: &[VolumeMountSpec],
    ) -> Result<Spawned, ProviderError> {
        self.spawn_mounted(spec, mounts, None).await
    }

    async fn snapshot(
        &self,
        runtime_id: &str,
        snapshot_id: &str,
    ) -> Result<SnapshotMade, ProviderError> {
        let _in_flight = self.snapshots_in_flight.enter(snapshot_id);
        self.take_snapshot(runtime_id, snapshot_id).await
    }

    async fn delete_snapshot(&self, snapshot_id: &str) -> Result<(), ProviderError> {
        self.enter("delete_snapshot", snapshot_id)?;
        snapshots::delete(&self.snapshots_dir()?, snapshot_id)
    }

    async fn sweep_snapshots(
        &self,
        known: &std::collections::HashSet<String>,
        grace: std::time::Duration,
    ) -> Result<Vec<String>, ProviderError> {
        let known = self.snapshots_in_flight.with_known(known);
        snapshots::sweep(&self.snapshots_dir()?, &known, grace)
    }

    async fn spawn_from_snapshot(
        &self,
        spec: &SandboxSpec,
        mounts: &[VolumeMountSpec],
        snapshot_id: &str,
    ) -> Result<Spawned, ProviderError> {
        self.spawn_mounted(spec, mounts, Some(snapshot_id)).await
    }

    async fn status(&self, runtime_id: &str) -> Result<SandboxState, ProviderError> {
        self.enter("status", runtime_id)?;
        match lock(&self.sandboxes).get(runtime_id) {
            Some(s) if s.paused => Ok(SandboxState::Paused),
            Some(_) => Ok(SandboxState::Running),
            None if self.destroyed.contains(runtime_id) => Ok(SandboxState::Destroyed),
            None => Err(ProviderError::SandboxNotFound(runtime_id.to_string())),
        }
    }

    async fn pause(&self, runtime_id: &str) -> Result<(), ProviderError> {
        self.freeze("pause", runtime_id, true)
    }

    async fn resume(&self, runtime_id: &str) -> Result<(), ProviderError> {
        self.freeze("resume", runtime_id, false)
    }

    async fn exec(
        &self,
        runtime_id: &str,
        req: ExecRequest,
        out: ChunkSender,
    ) -> Result<i32, ProviderError> {
        // Through the sandbox's agent when there is one (exec on the process model); spawned
        // here without one, or with an agent too old for it.
        if let Some(bin) = self.agent_bin() {
            let (conn, root) = self.agent_at("exec", runtime_id, &bin).await?;
            if crate::agent::exec::supported(&conn) {
                let workdir = exec::host_workdir(&root, req.workdir.as_deref()).await?;
                let timeout = req.timeout;
                let mut msg = procs::start_msg(&ProcessSpec {
                    exec: req,
                    ..ProcessSpec::default()
                })?;
                msg.workdir = workdir.to_string_lossy().into_owned();
                msg.env.extend(exec::sandbox_env(&root));
                let (_, destroyed) = self.live(runtime_id)?;
                // A destroy ends the agent and its processes: the exec answers that the sandbox
                // is gone, as it always did, not the exit code or lost connection that follows.
                return tokio::select! {
                    biased;
                    () = destroyed.cancelled() => {
                        Err(ProviderError::SandboxNotFound(runtime_id.to_string()))
                    }
                    r = crate::agent::exec::run(conn, msg, timeout, out, exec::CHUNK) => {
                        match r {
                            _ if self.live(runtime_id).is_err() => {
                                Err(ProviderError::SandboxNotFound(runtime_id.to_string()))
                            }
                            r => r,
                        }
                    }
                };
            }
            let (root, cancel) = self.live(runtime_id)?;
            return exec::run(runtime_id, &root, req, out, cancel).await;
        }
        self.enter("exec", runtime_id)?;
        let (root, cancel) = self.live(runtime_id)?;
        exec::run(runtime_id, &root, req, out, cancel).await
    }

    async fn write_file(
        &self,
        runtime_id: &str,
        path: &str,
        content: Bytes,
        mode: Option<&str>,
    ) -> Result<(), ProviderError> {
        let mode = mode.map(str::to_string);
        self.on_path("write_file", runtime_id, path, move |root, path| {
            files::write(root, path, &content, mode.as_deref())
        })
        .await
    }

    async fn read_file(&self, runtime_id: &str, path: &str) -> Result<Bytes, ProviderError> {
        self.on_path("read_file", runtime_id, path, files::read)
            .await
            .map(Bytes::from)
    }

    fn streams_files(&self) -> bool {
        !self.buffered_streams.load(Ordering::SeqCst)
    }

    // Streamed transfers record (and fail) under the buffered names: one operation, whichever
    // way its bytes travel.
    async fn read_file_stream(
        &self,
        runtime_id: &str,
        path: &str,
    ) -> Result<FileStream, ProviderError> {
        if !self.streams_files() {
            return Ok(FileStream::from_bytes(
                self.read_file(runtime_id, path).await?,
            ));
        }
        let (f, size) = self
            .on_path("read_file", runtime_id, path, stream::open)
            .await?;
        Ok(stream::body(f, size, path.to_string()))
    }

    async fn write_file_stream(
        &self,
        runtime_id: &str,
        path: &str,
        body: ByteStream,
        mode: Option<&str>,
    ) -> Result<u64, ProviderError> {
        if !self.streams_files() {
            return crate::write_buffered(self, runtime_id, path, body, mode).await;
        }
        let (file, tmp, target) = self
            .on_path("write_file", runtime_id, path, stream::create_temp)
            .await?;
        let n = stream::fill(file, body, path).await?;
        let (path, mode) = (path.to_string(), mode.map(str::to_string));
        tokio::task::spawn_blocking(move || stream::commit(tmp, &target, &path, mode.as_deref()))
            .await
            .map_err(|e| ProviderError::internal_with("file task failed", e))??;
        Ok(n)
    }

    async fn list_files(
        &self,
        runtime_id: &str,
        path: &str,
    ) -> Result<Vec<FileInfo>, ProviderError> {
        self.on_path("list_files", runtime_id, path, files::list)
            .await
    }

    async fn stat_file(&self, runtime_id: &str, path: &str) -> Result<FileInfo, ProviderError> {
        self.on_path("stat_file", runtime_id, path, files::stat)
            .await
    }

    async fn glob(&self, runtime_id: &str, pattern: &str) -> Result<Vec<String>, ProviderError> {
        self.enter("glob", runtime_id)?;
        let (root, _) = self.live(runtime_id)?;
        let pattern = pattern.to_string();
        crate::walk::blocking(move |budget| files::glob(&root, &pattern, budget)).await
    }

    async fn delete_file(
        &self,
        runtime_id: &str,
        path: &str,
        recursive: bool,
    ) -> Result<(), ProviderError> {
        self.on_path("delete_file", runtime_id, path, move |root, path| {
            files::delete(root, path, recursive)
        })
        .await
    }

    async fn move_file(&self, runtime_id: &str, old: &str, new: &str) -> Result<(), ProviderError> {
        let (old, new) = (old.to_string(), new.to_string());
        self.on_root("move_file", runtime_id, move |root| {
            files::rename(root, &old, &new)
        })
        .await
    }

    async fn chmod(&self, runtime_id: &str, path: &str, mode: &str) -> Result<(), ProviderError> {
        let mode = mode.to_string();
        self.on_path("chmod", runtime_id, path, move |root, path| {
            files::chmod(root, path, &mode)
        })
        .await
    }

    /// Through the agent, which runs on the host: it gets the host path, confined like every
    /// file operation, and never follows a symlink below it.
    async fn watch_dir(
        &self,
        runtime_id: &str,
        path: &str,
        recursive: bool,
    ) -> Result<WatchStream, ProviderError> {
        let (conn, root) = self.agent("watch_dir", runtime_id).await?;
        let given = path.to_string();
        let host = tokio::task::spawn_blocking(move || paths::resolve(&root, &given, true))
            .await
            .map_err(|e| ProviderError::internal_with("file task failed", e))??
            .host;
        let host = host.to_string_lossy().into_owned();
        crate::agent::watch::watch(conn, host, path, recursive).await
    }

    /// Three synthetic console lines; kept after destroy, like the status entry.
    async fn logs(&self, runtime_id: &str, lines: usize) -> Result<Vec<String>, ProviderError> {
        self.enter("logs", runtime_id)?;
        if !lock(&self.sandboxes).contains_key(runtime_id) && !self.destroyed.contains(runtime_id) {
            return Err(ProviderError::SandboxNotFound(runtime_id.to_string()));
        }
        let all = [
            format!("[INFO] mock sandbox {runtime_id} started"),
            "[INFO] workspace initialized at /workspace".to_string(),
            "[INFO] sandbox ready".to_string(),
        ];
        let skip = all.len().saturating_sub(lines);
        Ok(all.into_iter().skip(skip).collect())
    }

    /// Commands run on the host, so a server a command starts listens on the host's loopback.
    async fn preview_target(
        &self,
        runtime_id: &str,
        port: u16,
    ) -> Result<Option<std::net::SocketAddr>, ProviderError> {
        self.enter("preview_target", runtime_id)?;
        if !lock(&self.sandboxes).contains_key(runtime_id) {
            return Err(ProviderError::SandboxNotFound(runtime_id.to_string()));
        }
        Ok(Some(std::net::SocketAddr::from(([127, 0, 0, 1], port))))
    }

    /// Live sandboxes only: a destroyed one has no runtime left.
    async fn list_runtimes(&self) -> Result<Option<Vec<RuntimeInfo>>, ProviderError> {
        self.enter("list_runtimes", "")?;
        let mut out: Vec<RuntimeInfo> = lock(&self.sandboxes)
            .iter()
            .map(|(id, s)| RuntimeInfo {
                runtime_id: id.clone(),
                sandbox_id: Some(id.clone()),
                image: s.image.clone(),
                running: true,
            })
            .collect();
        out.sort_by(|a, b| a.runtime_id.cmp(&b.runtime_id));
        Ok(Some(out))
    }

    async fn process_start(
        &self,
        runtime_id: &str,
        spec: ProcessSpec,
    ) -> Result<ProcessInfo, ProviderError> {
        let (conn, msg) = self.start_on_host(runtime_id, &spec).await?;
        procs::start(&conn, msg).await
    }

    async fn process_start_follow(
        &self,
        runtime_id: &str,
        spec: ProcessSpec,
    ) -> Result<(ProcessInfo, RecordStream), ProviderError> {
        let (conn, msg) = self.start_on_host(runtime_id, &spec).await?;
        crate::agent::follow::start_follow(conn, msg).await
    }

    async fn process_list(&self, runtime_id: &str) -> Result<Vec<ProcessInfo>, ProviderError> {
        let (conn, _) = self.agent("process_list", runtime_id).await?;
        procs::list(&conn).await
    }

    async fn process_get(&self, runtime_id: &str, pid: Pid) -> Result<ProcessInfo, ProviderError> {
        let (conn, _) = self.agent("process_get", runtime_id).await?;
        procs::get(&conn, pid).await
    }

    async fn process_output(
        &self,
        runtime_id: &str,
        pid: Pid,
        since: u64,
        follow: bool,
    ) -> Result<RecordStream, ProviderError> {
        let (conn, _) = self.agent("process_output", runtime_id).await?;
        procs::output(conn, pid, since, follow).await
    }

    async fn process_stdin(
        &self,
        runtime_id: &str,
        pid: Pid,
        data: Bytes,
        close: bool,
    ) -> Result<u64, ProviderError> {
        let (conn, _) = self.agent("process_stdin", runtime_id).await?;
        procs::stdin(&conn, pid, &data, close).await
    }

    async fn process_signal(
        &self,
        runtime_id: &str,
        pid: Pid,
        signal: Signal,
    ) -> Result<ProcessInfo, ProviderError> {
        let (conn, _) = self.agent("process_signal", runtime_id).await?;
        procs::signal(&conn, pid, signal).await
    }

    async fn process_resize(
        &self,
        runtime_id: &str,
        pid: Pid,
        size: PtySize,
    ) -> Result<(), ProviderError> {
        let (conn, _) = self.agent("process_resize", runtime_id).await?;
        procs::resize(&conn, pid, size).await
    }
}
