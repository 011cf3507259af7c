//! Sandboxes as sets of Linux namespaces made with bubblewrap, no daemon (docs/bwrap.md).
//!
//! Each sandbox runs `bwrap` over an overlay whose lower layer is its image's root filesystem
//! from the image store (shared, never written) and whose upper layer is the sandbox's own,
//! with user (where available), mount, pid, ipc, uts, net and cgroup namespaces, every
//! capability dropped, `no_new_privs`, a seccomp filter at least as strict as Docker's default
//! ([`seccomp`]) and cgroup limits for memory, pids and CPU ([`cgroup`]). The static agent is
//! its PID 1 and does everything inside: exec, processes, PTYs and files go through the shared
//! agent code (`crate::agent`), exactly as on the microvm. The host reaches it through a unix
//! socket in a directory bind-mounted from the sandbox's own directory.
//!
//! Sandboxes outlive the provider: a new provider on the same `data_dir` adopts every sandbox
//! recorded there and reconnects to its agent.

mod cgroup;
mod freeze;
mod launch;
mod layer;
mod lifecycle;
mod net;
mod seccomp;
mod settings;
mod state;
mod sys;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use stacyvm_image::ImageStore;
use stacyvm_protocol::agent::ProcStart;
use stacyvm_types::{FileInfo, Pid, ProcessInfo, PtySize, SandboxState, Signal};
use tokio::process::Child;
use tokio::time::Instant;

use self::cgroup::Layout;
pub(crate) use self::settings::Settings;
use self::state::{Meta, Paths};
use crate::agent::conn::AgentConn;
use crate::agent::{files, procs, transfer};
use crate::tombstones::Tombstones;
use crate::{
    BwrapConfig, ByteStream, ChunkSender, ExecRequest, FileStream, ProcessSpec, Provider,
    ProviderError, RecordStream, RuntimeInfo, SandboxSpec, Spawned, Stats, WatchStream,
};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Ids double as directory, cgroup and host names: a safe alphabet, at most 64 bytes (the
/// hostname limit).
pub(super) fn valid_id(id: &str) -> bool {
    let mut bytes = id.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphanumeric())
        && id.len() <= 64
        && bytes.all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// One sandbox the provider knows.
pub(super) struct Sandbox {
    meta: Meta,
    paths: Paths,
    /// bwrap, when this provider started it (`None` for an adopted sandbox).
    child: Mutex<Option<Child>>,
    conn: Mutex<Option<Arc<AgentConn>>>,
    /// Serialises (re)connecting.
    connecting: tokio::sync::Mutex<()>,
}

impl Sandbox {
    fn new(meta: Meta, paths: Paths, child: Option<Child>, conn: Option<AgentConn>) -> Self {
        Sandbox {
            meta,
            paths,
            child: Mutex::new(child),
            conn: Mutex::new(conn.map(Arc::new)),
            connecting: tokio::sync::Mutex::new(()),
        }
    }

    /// Whether its bwrap (and so its agent) still runs.
    fn alive(&self) -> bool {
        if let Some(c) = lock(&self.child).as_mut() {
            return matches!(c.try_wait(), Ok(None));
        }
        self.meta
            .pid
            .is_some_and(|pid| state::is_our_bwrap(pid, &self.paths))
    }

    fn take_child(&self) -> Option<Child> {
        lock(&self.child).take()
    }

    /// Ends the agent connection (its readers end with it).
    fn close(&self) {
        if let Some(c) = lock(&self.conn).take() {
            c.close();
        }
    }
}

/// The `bwrap` provider.
pub struct BwrapProvider {
    config: BwrapConfig,
    settings: Settings,
    store: ImageStore,
    /// This host's cgroup layout, or why there is none usable.
    layout: Result<Layout, String>,
    sandboxes: Mutex<HashMap<String, Arc<Sandbox>>>,
    /// Ids being spawned or destroyed: not listed, not spawned twice.
    busy: Mutex<HashSet<String>>,
    destroyed: Tombstones,
}

impl BwrapProvider {
    /// Validates `config`, opens the image store and adopts the sandboxes recorded under
    /// `data_dir` (their agents are reconnected on first use). The host's prerequisites (bwrap,
    /// cgroups, the agent) are checked by [`Provider::health`] and by each spawn.
    pub fn new(config: BwrapConfig) -> Result<Self, ProviderError> {
        let settings = config.validate()?;
        let store = ImageStore::open(&settings.images_dir)
            .map_err(|e| ProviderError::internal_with("opening the image store failed", e))?;
        let layout = cgroup::detect().map_err(|e| e.to_string());
        let p = BwrapProvider {
            config,
            settings,
            store,
            layout,
            sandboxes: Mutex::default(),
            busy: Mutex::default(),
            destroyed: Tombstones::default(),
        };
        let adopted: HashMap<String, Arc<Sandbox>> = lifecycle::recorded(&p.settings.data_dir)
            .into_iter()
            .filter_map(|id| Some((id.clone(), p.adopt(&id)?)))
            .collect();
        *lock(&p.sandboxes) = adopted;
        Ok(p)
    }

    /// Spawns take root filesystems from `store` instead of the one `images_dir` opened: the
    /// factory passes the store with the `images.*` registry settings and logins, with which a
    /// spawn pulls an image the store does not have.
    pub fn with_image_store(mut self, store: ImageStore) -> Self {
        self.store = store;
        self
    }

    /// The image store sandboxes are made from (the CLI's `stacyvm image` and tests fill it).
    pub fn image_store(&self) -> &ImageStore {
        &self.store
    }

    fn layout(&self) -> Result<Layout, ProviderError> {
        self.layout.clone().map_err(ProviderError::Unavailable)
    }

    fn sandbox(&self, id: &str) -> Result<Arc<Sandbox>, ProviderError> {
        lock(&self.sandboxes)
            .get(id)
            .cloned()
            .ok_or_else(|| ProviderError::SandboxNotFound(id.to_string()))
    }

    /// The agent connection of a live sandbox, reconnecting when it broke.
    async fn agent(&self, id: &str) -> Result<Arc<AgentConn>, ProviderError> {
        let sb = self.sandbox(id)?;
        let stopped = || {
            ProviderError::Unavailable(format!(
                "sandbox {id} is not running (its processes ended); destroy it"
            ))
        };
        // Asked first (a wait4 or two /proc reads): a dead agent's connection may not have
        // noticed its end yet.
        if !sb.alive() {
            return Err(stopped());
        }
        if let Some(c) = lock(&sb.conn).as_ref().filter(|c| !c.is_closed()) {
            return Ok(c.clone());
        }
        let _turn = sb.connecting.lock().await;
        if let Some(c) = lock(&sb.conn).as_ref().filter(|c| !c.is_closed()) {
            return Ok(c.clone());
        }
        if !sb.alive() {
            return Err(stopped());
        }
        let deadline = Instant::now() + launch::CONNECT_TIMEOUT;
        let conn = Arc::new(launch::connect(&sb.paths, id, deadline, || sb.alive()).await?);
        // A destroy that ran meanwhile removed the sandbox: hand out nothing.
        self.sandbox(id)?;
        *lock(&sb.conn) = Some(conn.clone());
        Ok(conn)
    }

    /// The `ProcStart` of `spec`: the environment checked, the workdir cleaned.
    fn start_msg(spec: &ProcessSpec) -> Result<ProcStart, ProviderError> {
        procs::start_msg_rooted(spec, launch::WORKSPACE)
    }

    /// An agent error of a sandbox destroyed meanwhile is its absence.
    fn gone_or<T>(&self, id: &str, r: Result<T, ProviderError>) -> Result<T, ProviderError> {
        match r {
            Err(ProviderError::Unavailable(_)) if self.destroyed.contains(id) => {
                Err(ProviderError::SandboxNotFound(id.to_string()))
            }
            r => r,
        }
    }
}

#[async_trait::async_trait]
impl Provider for BwrapProvider {
    fn name(&self) -> &str {
        "bwrap"
    }

    fn capabilities(&self) -> Vec<&'static str> {
        crate::capabilities_with(&["health", "stats", "pause"])
    }

    fn config_summary(&self) -> serde_json::Value {
        serde_json::json!({
            "type": "bwrap",
            "network_mode": self.settings.network.as_str(),
            "cgroups": self.layout.as_ref().map(|l| l.as_str()).unwrap_or("unavailable"),
            "pids_limit": self.config.pids_limit,
            "disk_mb": self.settings.disk_mb,
            "seccomp": "default",
            "agent_protocol_version": stacyvm_protocol::agent::AGENT_PROTOCOL_VERSION,
        })
    }

    async fn health(&self) -> Result<(), ProviderError> {
        if !self.settings.bwrap.is_file() {
            return Err(ProviderError::Unavailable(format!(
                "bwrap binary {:?} not found (apt-get install bubblewrap)",
                self.config.bwrap_path
            )));
        }
        if self.settings.agent.as_os_str().is_empty() {
            return Err(crate::agent::missing("bwrap"));
        }
        if self.settings.network == settings::NetworkMode::User && !self.settings.pasta.is_file() {
            return Err(ProviderError::Unavailable(format!(
                "pasta binary {:?} not found (apt-get install passt) for network_mode: user",
                self.config.pasta_path
            )));
        }
        if let Some(why) = self
            .settings
            .disk_mb
            .and_then(|_| layer::unavailable(&self.settings.mkfs))
        {
            return Err(ProviderError::Unavailable(why));
        }
        self.layout().map(|_| ())
    }

    async fn spawn(&self, spec: &SandboxSpec) -> Result<Spawned, ProviderError> {
        if !valid_id(&spec.id) {
            return Err(ProviderError::InvalidInput(format!(
                "invalid sandbox id {:?}",
                spec.id
            )));
        }
        if lock(&self.sandboxes).contains_key(&spec.id) || !lock(&self.busy).insert(spec.id.clone())
        {
            return Err(ProviderError::InvalidInput(format!(
                "sandbox {} already exists",
                spec.id
            )));
        }
        let made = self.create(spec).await;
        lock(&self.busy).remove(&spec.id);
        let sb = made?;
        self.destroyed.forget(&spec.id);
        lock(&self.sandboxes).insert(spec.id.clone(), sb);
        Ok(Spawned {
            runtime_id: spec.id.clone(),
        })
    }

    async fn destroy(&self, runtime_id: &str) -> Result<(), ProviderError> {
        let sb = {
            let mut map = lock(&self.sandboxes);
            match map.remove(runtime_id) {
                Some(sb) => sb,
                None if self.destroyed.contains(runtime_id) => return Ok(()),
                None => return Err(ProviderError::SandboxNotFound(runtime_id.to_string())),
            }
        };
        self.destroyed.remember(runtime_id);
        lock(&self.busy).insert(runtime_id.to_string());
        let r = self.teardown(&sb).await;
        lock(&self.busy).remove(runtime_id);
        if r.is_err() {
            // Still there: a later destroy (or the reconciler) tries again.
            self.destroyed.forget(runtime_id);
            lock(&self.sandboxes).insert(runtime_id.to_string(), sb);
        }
        r
    }

    async fn status(&self, runtime_id: &str) -> Result<SandboxState, ProviderError> {
        if let Ok(sb) = self.sandbox(runtime_id) {
            return Ok(if !sb.alive() {
                SandboxState::Unhealthy
            } else if freeze::frozen(&sb.meta.cgroups) {
                SandboxState::Paused
            } else {
                SandboxState::Running
            });
        }
        if self.destroyed.contains(runtime_id) {
            return Ok(SandboxState::Destroyed);
        }
        Err(ProviderError::SandboxNotFound(runtime_id.to_string()))
    }

    async fn pause(&self, runtime_id: &str) -> Result<(), ProviderError> {
        let groups = self.sandbox(runtime_id)?.meta.cgroups.clone();
        lifecycle::blocking(move || freeze::set(&groups, true)).await
    }

    async fn resume(&self, runtime_id: &str) -> Result<(), ProviderError> {
        let groups = self.sandbox(runtime_id)?.meta.cgroups.clone();
        lifecycle::blocking(move || freeze::set(&groups, false)).await
    }

    async fn exec(
        &self,
        runtime_id: &str,
        req: ExecRequest,
        out: ChunkSender,
    ) -> Result<i32, ProviderError> {
        let conn = self.agent(runtime_id).await?;
        if !crate::agent::exec::supported(&conn) {
            return Err(ProviderError::Unavailable(
                "the sandbox's agent is too old for exec; rebuild crates/stacyvm-agent".into(),
            ));
        }
        let timeout = req.timeout;
        let msg = Self::start_msg(&ProcessSpec {
            exec: req,
            ..ProcessSpec::default()
        })?;
        let chunk = stacyvm_protocol::agent::OUTPUT_CHUNK;
        let r = crate::agent::exec::run(conn, msg, timeout, out, chunk).await;
        self.gone_or(runtime_id, r)
    }

    async fn write_file(
        &self,
        runtime_id: &str,
        path: &str,
        content: Bytes,
        mode: Option<&str>,
    ) -> Result<(), ProviderError> {
        files::write(&*self.agent(runtime_id).await?, path, content, mode).await
    }

    async fn read_file(&self, runtime_id: &str, path: &str) -> Result<Bytes, ProviderError> {
        files::read(&*self.agent(runtime_id).await?, path).await
    }

    fn streams_files(&self) -> bool {
        true
    }

    async fn read_file_stream(
        &self,
        runtime_id: &str,
        path: &str,
    ) -> Result<FileStream, ProviderError> {
        transfer::read(self.agent(runtime_id).await?, path).await
    }

    async fn write_file_stream(
        &self,
        runtime_id: &str,
        path: &str,
        body: ByteStream,
        mode: Option<&str>,
    ) -> Result<u64, ProviderError> {
        transfer::write(self.agent(runtime_id).await?, path, body, mode).await
    }

    async fn list_files(
        &self,
        runtime_id: &str,
        path: &str,
    ) -> Result<Vec<FileInfo>, ProviderError> {
        files::list(&*self.agent(runtime_id).await?, path).await
    }

    async fn stat_file(&self, runtime_id: &str, path: &str) -> Result<FileInfo, ProviderError> {
        files::stat(&*self.agent(runtime_id).await?, path).await
    }

    async fn glob(&self, runtime_id: &str, pattern: &str) -> Result<Vec<String>, ProviderError> {
        files::glob(self.agent(runtime_id).await?, pattern).await
    }

    async fn delete_file(
        &self,
        runtime_id: &str,
        path: &str,
        recursive: bool,
    ) -> Result<(), ProviderError> {
        files::delete(&*self.agent(runtime_id).await?, path, recursive).await
    }

    async fn move_file(&self, runtime_id: &str, old: &str, new: &str) -> Result<(), ProviderError> {
        files::rename(&*self.agent(runtime_id).await?, old, new).await
    }

    async fn chmod(&self, runtime_id: &str, path: &str, mode: &str) -> Result<(), ProviderError> {
        files::chmod(&*self.agent(runtime_id).await?, path, mode).await
    }

    async fn watch_dir(
        &self,
        runtime_id: &str,
        path: &str,
        recursive: bool,
    ) -> Result<WatchStream, ProviderError> {
        let clean = crate::walk::clean_path(path)?;
        crate::agent::watch::watch(self.agent(runtime_id).await?, clean, path, recursive).await
    }

    async fn logs(&self, runtime_id: &str, lines: usize) -> Result<Vec<String>, ProviderError> {
        let sb = self.sandbox(runtime_id)?;
        crate::console::logs(&sb.paths.console(), lines).await
    }

    async fn stats(&self, runtime_id: &str) -> Result<Option<Stats>, ProviderError> {
        let sb = self.sandbox(runtime_id)?;
        Ok(sb.meta.cgroups.memory().map(|(used, limit)| Stats {
            cpu_pct: 0.0,
            mem_bytes: used,
            mem_limit_bytes: limit,
        }))
    }

    /// Any port, in either network mode: connected from inside the sandbox's network
    /// namespace (`net::connect_inside`). No port is forwarded to the host, so there is no
    /// `preview_target`.
    async fn preview_connect(
        &self,
        runtime_id: &str,
        port: u16,
    ) -> Result<crate::PreviewConn, ProviderError> {
        let sb = self.sandbox(runtime_id)?;
        let pid = sb
            .meta
            .pid
            .filter(|_| sb.alive())
            .ok_or_else(|| ProviderError::SandboxNotFound(runtime_id.to_string()))?;
        net::connect_inside(pid, port).await
    }

    async fn list_runtimes(&self) -> Result<Option<Vec<RuntimeInfo>>, ProviderError> {
        let busy = lock(&self.busy).clone();
        let known: Vec<Arc<Sandbox>> = lock(&self.sandboxes).values().cloned().collect();
        let mut out: Vec<RuntimeInfo> = known
            .iter()
            .filter(|sb| !busy.contains(&sb.meta.id))
            .filter(|sb| {
                crate::cluster::ours(sb.meta.cluster.as_deref(), self.settings.cluster.as_deref())
            })
            .map(|sb| RuntimeInfo {
                runtime_id: sb.meta.id.clone(),
                sandbox_id: Some(sb.meta.id.clone()),
                image: sb.meta.image.clone(),
                running: sb.alive(),
            })
            .collect();
        out.sort_by(|a, b| a.runtime_id.cmp(&b.runtime_id));
        Ok(Some(out))
    }

    // Background processes live in the sandbox agent's registry (docs/processes.md).

    async fn process_start(
        &self,
        runtime_id: &str,
        spec: ProcessSpec,
    ) -> Result<ProcessInfo, ProviderError> {
        let msg = Self::start_msg(&spec)?;
        procs::start(&*self.agent(runtime_id).await?, msg).await
    }

    async fn process_start_follow(
        &self,
        runtime_id: &str,
        spec: ProcessSpec,
    ) -> Result<(ProcessInfo, RecordStream), ProviderError> {
        let msg = Self::start_msg(&spec)?;
        crate::agent::follow::start_follow(self.agent(runtime_id).await?, msg).await
    }

    async fn process_list(&self, runtime_id: &str) -> Result<Vec<ProcessInfo>, ProviderError> {
        procs::list(&*self.agent(runtime_id).await?).await
    }

    async fn process_get(&self, runtime_id: &str, pid: Pid) -> Result<ProcessInfo, ProviderError> {
        procs::get(&*self.agent(runtime_id).await?, pid).await
    }

    async fn process_output(
        &self,
        runtime_id: &str,
        pid: Pid,
        since: u64,
        follow: bool,
    ) -> Result<RecordStream, ProviderError> {
        procs::output(self.agent(runtime_id).await?, pid, since, follow).await
    }

    async fn process_stdin(
        &self,
        runtime_id: &str,
        pid: Pid,
        data: Bytes,
        close: bool,
    ) -> Result<u64, ProviderError> {
        procs::stdin(&*self.agent(runtime_id).await?, pid, &data, close).await
    }

    async fn process_signal(
        &self,
        runtime_id: &str,
        pid: Pid,
        signal: Signal,
    ) -> Result<ProcessInfo, ProviderError> {
        procs::signal(&*self.agent(runtime_id).await?, pid, signal).await
    }

    async fn process_resize(
        &self,
        runtime_id: &str,
        pid: Pid,
        size: PtySize,
    ) -> Result<(), ProviderError> {
        procs::resize(&*self.agent(runtime_id).await?, pid, size).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert!(valid_id("sb-0123abcd"));
        assert!(!valid_id(""));
        assert!(!valid_id(".hidden"));
        assert!(!valid_id("../x"));
        assert!(!valid_id(&"a".repeat(65)));
    }
}
