//! Sandboxes as hardened containers on a Docker engine, driven through the Engine API.
//!
//! Containers are named after the sandbox id and labelled `stacyvm.managed=true`; the provider
//! refuses to touch any container without that label. Commands run through the exec API, files
//! move through the archive API (tar), and a handful of file operations the archive API lacks
//! (delete, move, chmod) run the image's own `rm`/`mv`/`chmod` through exec.

mod archive;
#[cfg(test)]
mod archive_prop;
mod container;
mod exec;
mod files;
mod host_copy;
mod image;
mod kill;
mod procs;
mod settings;
mod snapshots;
mod stream;
mod volumes;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use bollard::errors::Error as DockerError;
use bollard::Docker;
use bytes::Bytes;
use settings::Settings;
use stacyvm_types::{FileInfo, Pid, ProcessInfo, PtySize, SandboxState, Signal};

use crate::agent::procs as agent_procs;
use crate::tombstones::Tombstones;
use crate::{
    ByteStream, ChunkSender, DockerConfig, ExecRequest, FileStream, ProcessSpec, Provider,
    ProviderError, RecordStream, RuntimeInfo, SandboxSpec, SnapshotMade, Spawned, Stats,
    VolumeMountSpec,
};

/// Label every sandbox container carries; the provider manages nothing else.
pub(crate) const LABEL_MANAGED: &str = "stacyvm.managed";
pub(crate) const LABEL_SANDBOX_ID: &str = "stacyvm.sandbox_id";
pub(crate) const LABEL_OWNER_ID: &str = "stacyvm.owner_id";

/// Per-request deadline for Engine API calls (response headers; streams are not cut).
const API_TIMEOUT: Duration = Duration::from_secs(300);

/// The `docker` provider.
pub struct DockerProvider {
    docker: Docker,
    config: DockerConfig,
    settings: Settings,
    /// Whether the API version was agreed with the daemon.
    negotiated: AtomicBool,
    /// runtime id → full container id, for containers already checked to be ours.
    known: Mutex<HashMap<String, String>>,
    destroyed: Tombstones,
    /// image → keep-alive command.
    keepalive_cache: Mutex<HashMap<String, Vec<String>>>,
    /// runtime id → the connection to its in-container agent (docs/processes.md).
    agents: procs::Agents,
    /// Snapshots this provider is taking now: the sweep never takes their pieces, however long
    /// the copy runs past the grace period (they have no record until they are made).
    snapshots_in_flight: crate::in_flight::SnapshotsInFlight,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl DockerProvider {
    /// Validates `config` and connects (negotiating the API version). Does not require the
    /// daemon to be up unless `socket` names a TCP address; [`Provider::health`] pings it.
    pub async fn connect(config: DockerConfig) -> Result<Self, ProviderError> {
        let mut settings = config.validate()?;
        let configured = Some(config.agent_path.trim()).filter(|p| !p.is_empty());
        settings.agent = crate::agent::locate(configured.map(std::path::Path::new));
        if settings.agent.is_none() {
            tracing::warn!(
                "no stacyvm-agent found: background processes are unavailable on docker ({})",
                crate::agent::HOW_TO_BUILD
            );
        }
        let docker = connect_client(&config.socket)?;
        let p = DockerProvider {
            docker,
            config,
            settings,
            negotiated: AtomicBool::new(false),
            known: Mutex::new(HashMap::new()),
            destroyed: Tombstones::default(),
            keepalive_cache: Mutex::new(HashMap::new()),
            snapshots_in_flight: Default::default(),
            agents: procs::Agents::default(),
        };
        p.negotiate().await;
        Ok(p)
    }

    /// An old daemon (20.10 speaks 1.41) rejects newer client versions, so the client steps
    /// down to the daemon's. Clones share the version, so negotiating on one updates all; a
    /// daemon that is down now is negotiated with by the next successful health check.
    async fn negotiate(&self) {
        match self.docker.clone().negotiate_version().await {
            Ok(_) => self.negotiated.store(true, Ordering::Relaxed),
            Err(e) => tracing::warn!(error = %e, "docker API version negotiation failed"),
        }
    }

    /// Whether a container, image or volume with `labels` is this installation's
    /// (`crate::cluster`).
    fn in_cluster(&self, labels: &HashMap<String, String>) -> bool {
        let label = labels.get(crate::cluster::CLUSTER_LABEL);
        crate::cluster::ours(label.map(String::as_str), self.settings.cluster.as_deref())
    }

    /// `docker inspect` of `id` (the container's full id or name), errors as `runtime_id`'s.
    async fn inspect(
        &self,
        id: &str,
        runtime_id: &str,
    ) -> Result<bollard::models::ContainerInspectResponse, ProviderError> {
        self.docker
            .inspect_container(id, None)
            .await
            .map_err(|e| self.not_found_or(runtime_id, e, "inspecting the sandbox failed"))
    }

    /// The full id of the container for `runtime_id`, after checking it is one of ours.
    async fn container(&self, runtime_id: &str) -> Result<String, ProviderError> {
        if !valid_runtime_id(runtime_id) {
            return Err(ProviderError::SandboxNotFound(runtime_id.to_string()));
        }
        if let Some(id) = lock(&self.known).get(runtime_id) {
            return Ok(id.clone());
        }
        let info = self.inspect(runtime_id, runtime_id).await?;
        let ours = info
            .config
            .as_ref()
            .and_then(|c| c.labels.as_ref())
            .is_some_and(|l| l.get(LABEL_MANAGED).is_some_and(|v| v == "true"));
        // Docker also resolves id prefixes; only an exact name match counts.
        let named = info.name.as_deref() == Some(&format!("/{runtime_id}"));
        let id = info.id.filter(|_| ours && named);
        let id = id.ok_or_else(|| ProviderError::SandboxNotFound(runtime_id.to_string()))?;
        lock(&self.known).insert(runtime_id.to_string(), id.clone());
        Ok(id)
    }

    /// Maps a 404 to `SandboxNotFound` (forgetting the container), anything else via
    /// [`api_err`].
    fn not_found_or(&self, runtime_id: &str, e: DockerError, what: &str) -> ProviderError {
        if is_status(&e, 404) {
            lock(&self.known).remove(runtime_id);
            ProviderError::SandboxNotFound(runtime_id.to_string())
        } else {
            api_err(what, e)
        }
    }
}

fn connect_client(socket: &str) -> Result<Docker, ProviderError> {
    let socket = socket.trim();
    let secs = API_TIMEOUT.as_secs();
    let v = bollard::API_DEFAULT_VERSION;
    let res = if socket.is_empty() {
        Docker::connect_with_defaults()
    } else if let Some(rest) = socket.strip_prefix("tcp://") {
        Docker::connect_with_http(&format!("http://{rest}"), secs, v)
    } else if socket.starts_with("http://") {
        Docker::connect_with_http(socket, secs, v)
    } else if socket.starts_with("unix://") || socket.starts_with('/') {
        Docker::connect_with_unix(socket, secs, v)
    } else {
        return Err(ProviderError::InvalidInput(format!(
            "providers.docker.socket: unsupported address {socket:?} (use unix:// or tcp://)"
        )));
    };
    res.map(|d| d.with_timeout(API_TIMEOUT))
        .map_err(|e| ProviderError::Unavailable(format!("docker is not reachable: {e}")))
}

/// Container names Docker accepts, which are also safe in an API path.
fn valid_runtime_id(id: &str) -> bool {
    let mut bytes = id.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphanumeric())
        && id.len() <= 128
        && bytes.all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// Whether `e` is the daemon answering with HTTP `status`.
pub(crate) fn is_status(e: &DockerError, status: u16) -> bool {
    matches!(e, DockerError::DockerResponseServerError { status_code, .. } if *status_code == status)
}

/// The daemon's own message for an error response.
pub(crate) fn server_message(e: &DockerError) -> Option<&str> {
    match e {
        DockerError::DockerResponseServerError { message, .. } => Some(message),
        _ => None,
    }
}

/// Transport failures mean the daemon is unreachable; everything else is internal.
pub(crate) fn api_err(what: &str, e: DockerError) -> ProviderError {
    match e {
        DockerError::HyperResponseError { .. }
        | DockerError::HyperLegacyError { .. }
        | DockerError::IOError { .. }
        | DockerError::RequestTimeoutError
        | DockerError::SocketNotFoundError(_) => {
            ProviderError::Unavailable(format!("docker daemon unreachable ({what}): {e}"))
        }
        e => ProviderError::internal_with(what, e),
    }
}

#[async_trait::async_trait]
impl Provider for DockerProvider {
    fn name(&self) -> &str {
        "docker"
    }

    fn capabilities(&self) -> Vec<&'static str> {
        crate::capabilities_with(&["health", "stats", "pause", "volumes", "snapshots"])
    }

    fn config_summary(&self) -> serde_json::Value {
        let c = &self.config;
        let seccomp = match c.seccomp_profile.trim() {
            "" | "default" => "default",
            "unconfined" => "unconfined",
            _ => "custom",
        };
        serde_json::json!({
            "type": "docker",
            "runtime": self.settings.runtime.as_deref().unwrap_or("runc"),
            "default_image": self.settings.default_image,
            "network_mode": self.settings.network_mode,
            "seccomp_profile": seccomp,
            "read_only_rootfs": c.read_only_rootfs,
            "memory": c.memory,
            "cpus": c.cpus,
            "pids_limit": c.pids_limit,
            "user": c.user,
            "dropped_caps": self.settings.dropped_caps,
            "added_caps": self.settings.added_caps,
            "tmpfs": c.tmpfs,
        })
    }

    async fn health(&self) -> Result<(), ProviderError> {
        match tokio::time::timeout(Duration::from_secs(5), self.docker.ping()).await {
            Ok(Ok(_)) => {
                if !self.negotiated.load(Ordering::Relaxed) {
                    self.negotiate().await;
                }
                Ok(())
            }
            Ok(Err(e)) => Err(ProviderError::Unavailable(format!(
                "docker ping failed: {e}"
            ))),
            Err(_) => Err(ProviderError::Unavailable("docker ping timed out".into())),
        }
    }

    async fn spawn(&self, spec: &SandboxSpec) -> Result<Spawned, ProviderError> {
        self.spawn_container(spec, &[]).await
    }

    async fn spawn_with_volumes(
        &self,
        spec: &SandboxSpec,
        mounts: &[VolumeMountSpec],
    ) -> Result<Spawned, ProviderError> {
        self.spawn_container(spec, mounts).await
    }

    async fn create_volume(&self, name: &str, size_mb: i64) -> Result<(), ProviderError> {
        self.create_named_volume(name, size_mb).await
    }

    async fn delete_volume(&self, name: &str) -> Result<(), ProviderError> {
        self.remove_named_volume(name).await
    }

    async fn list_volumes(&self) -> Result<Option<Vec<String>>, ProviderError> {
        self.named_volumes().await.map(Some)
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
        self.remove_snapshot(snapshot_id).await
    }

    async fn sweep_snapshots(
        &self,
        known: &std::collections::HashSet<String>,
        grace: std::time::Duration,
    ) -> Result<Vec<String>, ProviderError> {
        let known = self.snapshots_in_flight.with_known(known);
        self.sweep_snapshot_images(&known, grace).await
    }

    async fn spawn_from_snapshot(
        &self,
        spec: &SandboxSpec,
        mounts: &[VolumeMountSpec],
        snapshot_id: &str,
    ) -> Result<Spawned, ProviderError> {
        self.spawn_snapshot(spec, mounts, snapshot_id).await
    }

    async fn destroy(&self, runtime_id: &str) -> Result<(), ProviderError> {
        self.destroy_container(runtime_id).await
    }

    async fn status(&self, runtime_id: &str) -> Result<SandboxState, ProviderError> {
        self.container_status(runtime_id).await
    }

    async fn pause(&self, runtime_id: &str) -> Result<(), ProviderError> {
        self.freeze(runtime_id, true).await
    }

    async fn resume(&self, runtime_id: &str) -> Result<(), ProviderError> {
        self.freeze(runtime_id, false).await
    }

    async fn exec(
        &self,
        runtime_id: &str,
        req: ExecRequest,
        out: ChunkSender,
    ) -> Result<i32, ProviderError> {
        let cid = self.container(runtime_id).await?;
        if let Some(r) = self.exec_on_agent(runtime_id, &req, &out).await {
            return r;
        }
        self.run_exec(runtime_id, &cid, req, out).await
    }

    async fn write_file(
        &self,
        runtime_id: &str,
        path: &str,
        content: Bytes,
        mode: Option<&str>,
    ) -> Result<(), ProviderError> {
        let cid = self.container(runtime_id).await?;
        self.write(&cid, path, content, files::file_mode(mode)?)
            .await
    }

    async fn read_file(&self, runtime_id: &str, path: &str) -> Result<Bytes, ProviderError> {
        let cid = self.container(runtime_id).await?;
        self.read(&cid, path).await
    }

    fn streams_files(&self) -> bool {
        true
    }

    async fn read_file_stream(
        &self,
        runtime_id: &str,
        path: &str,
    ) -> Result<FileStream, ProviderError> {
        let cid = self.container(runtime_id).await?;
        self.read_stream(&cid, path).await
    }

    async fn write_file_stream(
        &self,
        runtime_id: &str,
        path: &str,
        body: ByteStream,
        mode: Option<&str>,
    ) -> Result<u64, ProviderError> {
        let cid = self.container(runtime_id).await?;
        self.write_stream(&cid, path, body, mode).await
    }

    async fn list_files(
        &self,
        runtime_id: &str,
        path: &str,
    ) -> Result<Vec<FileInfo>, ProviderError> {
        let cid = self.container(runtime_id).await?;
        self.list(&cid, path).await
    }

    async fn stat_file(&self, runtime_id: &str, path: &str) -> Result<FileInfo, ProviderError> {
        let cid = self.container(runtime_id).await?;
        self.stat(&cid, path).await
    }

    async fn glob(&self, runtime_id: &str, pattern: &str) -> Result<Vec<String>, ProviderError> {
        let cid = self.container(runtime_id).await?;
        self.glob_paths(&cid, pattern).await
    }

    async fn delete_file(
        &self,
        runtime_id: &str,
        path: &str,
        recursive: bool,
    ) -> Result<(), ProviderError> {
        let cid = self.container(runtime_id).await?;
        self.delete(&cid, path, recursive).await
    }

    async fn move_file(&self, runtime_id: &str, old: &str, new: &str) -> Result<(), ProviderError> {
        let cid = self.container(runtime_id).await?;
        self.rename(&cid, old, new).await
    }

    async fn chmod(&self, runtime_id: &str, path: &str, mode: &str) -> Result<(), ProviderError> {
        let cid = self.container(runtime_id).await?;
        self.set_mode(&cid, path, mode).await
    }

    async fn logs(&self, runtime_id: &str, lines: usize) -> Result<Vec<String>, ProviderError> {
        let cid = self.container(runtime_id).await?;
        self.console(runtime_id, &cid, lines).await
    }

    async fn stats(&self, runtime_id: &str) -> Result<Option<Stats>, ProviderError> {
        let cid = self.container(runtime_id).await?;
        self.container_stats(runtime_id, &cid).await.map(Some)
    }

    async fn list_runtimes(&self) -> Result<Option<Vec<RuntimeInfo>>, ProviderError> {
        self.managed_containers().await.map(Some)
    }

    /// The container's address on its network (reachable when the control plane runs on the
    /// daemon's host); none with `network_mode: none`.
    async fn preview_target(
        &self,
        runtime_id: &str,
        port: u16,
    ) -> Result<Option<std::net::SocketAddr>, ProviderError> {
        let cid = self.container(runtime_id).await?;
        if self.settings.network_mode == "none" {
            return Ok(None);
        }
        let info = self.inspect(&cid, runtime_id).await?;
        let networks = info.network_settings.and_then(|n| n.networks);
        Ok(container_ip(networks.as_ref(), &self.settings.network_mode)
            .map(|ip| std::net::SocketAddr::new(ip, port)))
    }

    /// A directory watch, by the agent inside the container (it sees the container's paths;
    /// the archive API cannot watch).
    async fn watch_dir(
        &self,
        runtime_id: &str,
        path: &str,
        recursive: bool,
    ) -> Result<crate::WatchStream, ProviderError> {
        let clean = crate::walk::clean_path(path)?;
        let conn = self.agent(runtime_id).await?;
        crate::agent::watch::watch(conn, clean, path, recursive).await
    }

    // Background processes live in the container agent's registry (docs/processes.md).

    async fn process_start(
        &self,
        runtime_id: &str,
        spec: ProcessSpec,
    ) -> Result<ProcessInfo, ProviderError> {
        let msg = self.start_msg(&spec)?;
        agent_procs::start(&*self.agent(runtime_id).await?, msg).await
    }

    async fn process_start_follow(
        &self,
        runtime_id: &str,
        spec: ProcessSpec,
    ) -> Result<(ProcessInfo, RecordStream), ProviderError> {
        let msg = self.start_msg(&spec)?;
        crate::agent::follow::start_follow(self.agent(runtime_id).await?, msg).await
    }

    async fn process_list(&self, runtime_id: &str) -> Result<Vec<ProcessInfo>, ProviderError> {
        agent_procs::list(&*self.agent(runtime_id).await?).await
    }

    async fn process_get(&self, runtime_id: &str, pid: Pid) -> Result<ProcessInfo, ProviderError> {
        agent_procs::get(&*self.agent(runtime_id).await?, pid).await
    }

    async fn process_output(
        &self,
        runtime_id: &str,
        pid: Pid,
        since: u64,
        follow: bool,
    ) -> Result<RecordStream, ProviderError> {
        agent_procs::output(self.agent(runtime_id).await?, pid, since, follow).await
    }

    async fn process_stdin(
        &self,
        runtime_id: &str,
        pid: Pid,
        data: Bytes,
        close: bool,
    ) -> Result<u64, ProviderError> {
        agent_procs::stdin(&*self.agent(runtime_id).await?, pid, &data, close).await
    }

    async fn process_signal(
        &self,
        runtime_id: &str,
        pid: Pid,
        signal: Signal,
    ) -> Result<ProcessInfo, ProviderError> {
        agent_procs::signal(&*self.agent(runtime_id).await?, pid, signal).await
    }

    async fn process_resize(
        &self,
        runtime_id: &str,
        pid: Pid,
        size: PtySize,
    ) -> Result<(), ProviderError> {
        agent_procs::resize(&*self.agent(runtime_id).await?, pid, size).await
    }
}

/// The container's IP on `network` (the configured one), else on any network it has.
fn container_ip(
    networks: Option<&HashMap<String, bollard::models::EndpointSettings>>,
    network: &str,
) -> Option<std::net::IpAddr> {
    let networks = networks?;
    let ip = |e: &bollard::models::EndpointSettings| {
        e.ip_address
            .as_deref()
            .and_then(|a| a.parse::<std::net::IpAddr>().ok())
    };
    networks
        .get(network)
        .and_then(ip)
        .or_else(|| networks.values().find_map(ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_ids() {
        assert!(valid_runtime_id("sb-0123abcd"));
        assert!(valid_runtime_id("a.b_c-d"));
        for bad in ["", "-x", ".x", "a/b", "../x", "a b", "a?b", "a%2Fb"] {
            assert!(!valid_runtime_id(bad), "{bad}");
        }
        assert!(!valid_runtime_id(&"a".repeat(129)));
    }

    #[test]
    fn preview_ip_prefers_the_configured_network() {
        let ep = |ip: &str| bollard::models::EndpointSettings {
            ip_address: Some(ip.into()),
            ..Default::default()
        };
        let mut n = HashMap::new();
        n.insert("other".to_string(), ep("10.1.0.2"));
        n.insert("bridge".to_string(), ep("172.17.0.5"));
        assert_eq!(container_ip(Some(&n), "bridge"), "172.17.0.5".parse().ok());
        // Not on the configured network: any address it has.
        assert!(container_ip(Some(&n), "mynet").is_some());
        n.clear();
        n.insert("bridge".to_string(), ep(""));
        assert_eq!(container_ip(Some(&n), "bridge"), None);
        assert_eq!(container_ip(None, "bridge"), None);
    }

    #[test]
    fn transport_errors_are_unavailable() {
        assert!(matches!(
            api_err("x", DockerError::RequestTimeoutError),
            ProviderError::Unavailable(_)
        ));
        let e = DockerError::DockerResponseServerError {
            status_code: 500,
            message: "boom".into(),
        };
        assert!(is_status(&e, 500));
        assert_eq!(server_message(&e), Some("boom"));
        assert!(matches!(api_err("x", e), ProviderError::Internal { .. }));
    }
}
