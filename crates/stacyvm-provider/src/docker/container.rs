//! Container lifecycle: create (hardened), destroy, status, enumeration, logs and stats.

use std::collections::HashMap;

use bollard::container::LogOutput;
use bollard::models::{
    ContainerCreateBody, ContainerStateStatusEnum, ContainerStatsResponse, ContainerSummary,
    ContainerSummaryStateEnum, HostConfig, Mount, MountType,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder, StatsOptionsBuilder,
};
use futures_util::StreamExt;
use stacyvm_types::SandboxState;

use super::settings::{is_non_root, Settings};
use super::{
    api_err, is_status, lock, server_message, valid_runtime_id, DockerProvider, LABEL_MANAGED,
    LABEL_OWNER_ID, LABEL_SANDBOX_ID,
};
use crate::cluster::CLUSTER_LABEL;
use crate::{ProviderError, RuntimeInfo, SandboxSpec, Spawned, Stats, VolumeMountSpec};

/// Where commands start and the files API's writable home.
pub(crate) const WORKSPACE: &str = "/workspace";
/// Port the Traefik preview route forwards to.
const PREVIEW_PORT: u16 = 3000;

/// The create request for a sandbox container. Pure, so the hardening is unit-tested.
pub(crate) fn container_body(
    s: &Settings,
    spec: &SandboxSpec,
    image: &str,
    keepalive: Vec<String>,
    init: bool,
    named: &[VolumeMountSpec],
) -> ContainerCreateBody {
    let id = &spec.id;
    let mut labels = HashMap::from([
        (LABEL_MANAGED.to_string(), "true".to_string()),
        (LABEL_SANDBOX_ID.to_string(), id.clone()),
        ("traefik.enable".to_string(), "true".to_string()),
        (
            format!("traefik.http.routers.{id}.rule"),
            format!("Host(`{PREVIEW_PORT}-{id}.{}`)", s.preview_domain),
        ),
        (format!("traefik.http.routers.{id}.service"), id.clone()),
        (
            format!("traefik.http.services.{id}.loadbalancer.server.port"),
            PREVIEW_PORT.to_string(),
        ),
    ]);
    if !spec.owner_id.is_empty() {
        labels.insert(LABEL_OWNER_ID.to_string(), spec.owner_id.clone());
    }
    if let Some(cluster) = &s.cluster {
        labels.insert(CLUSTER_LABEL.to_string(), cluster.clone());
    }
    let memory = if spec.memory_mb > 0 {
        spec.memory_mb.checked_mul(1 << 20)
    } else {
        s.memory_bytes
    };
    let nano_cpus = if spec.vcpus > 0 {
        spec.vcpus.checked_mul(1_000_000_000)
    } else {
        s.nano_cpus
    };
    let mut security_opt = vec!["no-new-privileges:true".to_string()];
    security_opt.extend(s.seccomp_opt.clone());
    // Anonymous volumes rather than tmpfs: the archive API (the files API) cannot see into a
    // tmpfs mounted inside the container, but it can see volumes. `rm -v` removes them.
    let mut volumes = vec![WORKSPACE.to_string()];
    if s.read_only_rootfs {
        volumes.push("/tmp".to_string());
    }
    let mut tmpfs = s.tmpfs.clone();
    let mut mounts = super::volumes::mounts(named);
    if let Some(agent) = &s.agent {
        mounts.push(Mount {
            target: Some(super::procs::AGENT_BIN.to_string()),
            source: Some(agent.to_string_lossy().into_owned()),
            typ: Some(MountType::BIND),
            read_only: Some(true),
            ..Default::default()
        });
        // The agent's socket directory: writable whatever the root filesystem, for whichever
        // user the container runs as (the agent runs as that user too).
        tmpfs
            .entry(super::procs::AGENT_RUN_DIR.to_string())
            .or_insert_with(|| "mode=1777,size=1m".to_string());
    }
    let host_config = HostConfig {
        memory,
        // Equal to memory: no swap, so the limit really bounds the sandbox.
        memory_swap: memory,
        nano_cpus,
        pids_limit: s.pids_limit,
        cap_drop: Some(s.dropped_caps.clone()),
        cap_add: Some(s.added_caps.clone()).filter(|c| !c.is_empty()),
        security_opt: Some(security_opt),
        network_mode: Some(s.network_mode.clone()),
        readonly_rootfs: Some(s.read_only_rootfs),
        tmpfs: Some(tmpfs.into_iter().collect()).filter(|t: &HashMap<_, _>| !t.is_empty()),
        mounts: Some(mounts).filter(|m| !m.is_empty()),
        init: Some(init),
        runtime: s.runtime.clone(),
        privileged: Some(false),
        ..Default::default()
    };
    ContainerCreateBody {
        image: Some(image.to_string()),
        hostname: Some(id.clone()).filter(|h| h.len() <= 63),
        user: s.user.clone(),
        env: Some(vec![format!("WORKSPACE={WORKSPACE}")]),
        entrypoint: Some(Vec::new()),
        cmd: Some(keepalive),
        working_dir: Some(WORKSPACE.to_string()),
        volumes: Some(volumes),
        labels: Some(labels),
        network_disabled: Some(s.network_mode == "none"),
        stop_timeout: Some(1),
        host_config: Some(host_config),
        ..Default::default()
    }
}

impl DockerProvider {
    pub(super) async fn spawn_container(
        &self,
        spec: &SandboxSpec,
        volumes: &[VolumeMountSpec],
    ) -> Result<Spawned, ProviderError> {
        if !valid_runtime_id(&spec.id) {
            return Err(ProviderError::InvalidInput(format!(
                "invalid sandbox id {:?}",
                spec.id
            )));
        }
        if spec.memory_mb < 0 || spec.vcpus < 0 {
            return Err(ProviderError::InvalidInput(
                "memory_mb and vcpus must not be negative".into(),
            ));
        }
        let image = match spec.image.trim() {
            "" => self.settings.default_image.clone(),
            i => i.to_string(),
        };
        self.ensure_image(&image).await?;
        let keepalive = self.keepalive(&image).await?;
        match self
            .create_and_start(spec, &image, keepalive.clone(), true, volumes)
            .await
        {
            Ok(()) => {}
            // Some engines ship without docker-init; zombies then linger until destroy.
            Err(StartError::Init(msg)) => {
                tracing::warn!(%msg, "starting with init failed; retrying without init");
                self.create_and_start(spec, &image, keepalive, false, volumes)
                    .await
                    .map_err(StartError::into_provider)?;
            }
            Err(StartError::Other(e)) => return Err(e),
        }
        self.finish_spawn(spec, volumes).await
    }

    async fn finish_spawn(
        &self,
        spec: &SandboxSpec,
        volumes: &[VolumeMountSpec],
    ) -> Result<Spawned, ProviderError> {
        self.destroyed.forget(&spec.id);
        let cid = lock(&self.known)
            .get(&spec.id)
            .cloned()
            .unwrap_or_else(|| spec.id.clone());
        // The configured user, else the image's own `USER`.
        let non_root = match &self.settings.user {
            Some(u) => is_non_root(u),
            None => self
                .docker
                .inspect_container(&cid, None)
                .await
                .ok()
                .and_then(|i| i.config.and_then(|c| c.user))
                .is_some_and(|u| is_non_root(&u)),
        };
        if non_root {
            // Fresh volumes belong to root; without CAP_CHOWN root may still open them up.
            let mut argv = vec![
                "chmod".to_string(),
                "1777".to_string(),
                WORKSPACE.to_string(),
            ];
            if self.settings.read_only_rootfs {
                argv.push("/tmp".into());
            }
            // Fresh named volumes belong to root too.
            argv.extend(
                volumes
                    .iter()
                    .filter(|m| !m.read_only)
                    .map(|m| m.mount_path.clone()),
            );
            match self.exec_capture(&cid, argv, Some("0")).await {
                Ok(o) if o.code == 0 => {}
                Ok(o) => tracing::warn!(
                    code = o.code,
                    "opening /workspace to the sandbox user failed"
                ),
                Err(e) => {
                    tracing::warn!(error = %e, "opening /workspace to the sandbox user failed")
                }
            }
        }
        Ok(Spawned {
            runtime_id: spec.id.clone(),
        })
    }

    async fn create_and_start(
        &self,
        spec: &SandboxSpec,
        image: &str,
        keepalive: Vec<String>,
        init: bool,
        volumes: &[VolumeMountSpec],
    ) -> Result<(), StartError> {
        let body = container_body(&self.settings, spec, image, keepalive, init, volumes);
        let opts = CreateContainerOptionsBuilder::default()
            .name(&spec.id)
            .build();
        let created = self
            .docker
            .create_container(Some(opts), body)
            .await
            .map_err(|e| StartError::Other(create_err(spec, e)))?;
        if let Err(e) = self.docker.start_container(&created.id, None).await {
            let rm = RemoveContainerOptionsBuilder::default()
                .force(true)
                .v(true)
                .build();
            if let Err(re) = self.docker.remove_container(&created.id, Some(rm)).await {
                tracing::warn!(error = %re, "removing a container that failed to start failed");
            }
            let msg = server_message(&e).unwrap_or_default().to_string();
            if init && msg.contains("docker-init") {
                return Err(StartError::Init(msg));
            }
            return Err(StartError::Other(start_err(e)));
        }
        lock(&self.known).insert(spec.id.clone(), created.id);
        Ok(())
    }

    pub(super) async fn destroy_container(&self, runtime_id: &str) -> Result<(), ProviderError> {
        let cid = self.container(runtime_id).await?;
        let rm = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        // gVisor's runsc may leave the killed init a zombie for a moment (seen after a pause:
        // "PID … is zombie and can not be killed"), so a refused removal is tried again.
        let mut attempt = 0u64;
        loop {
            match self.docker.remove_container(&cid, Some(rm.clone())).await {
                Ok(()) => break,
                // Already gone (removed concurrently): the outcome the caller asked for.
                Err(e) if is_status(&e, 404) => break,
                Err(_) if attempt < 5 => {
                    attempt += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(200 * attempt)).await;
                }
                Err(e) => return Err(api_err("removing the sandbox container failed", e)),
            }
        }
        lock(&self.known).remove(runtime_id);
        self.forget_agent(runtime_id).await;
        self.destroyed.remember(runtime_id);
        Ok(())
    }

    /// `docker pause` (`freeze`) or `docker unpause` of a sandbox's container: the cgroup
    /// freezer, so processes stop where they are and memory stays. Idempotent: the daemon
    /// refuses to pause a paused container or unpause a running one (409 or 500 by version),
    /// so a refusal is checked against the container's state before it counts as a failure.
    pub(super) async fn freeze(&self, runtime_id: &str, freeze: bool) -> Result<(), ProviderError> {
        let cid = self.container(runtime_id).await?;
        let done = if freeze {
            self.docker.pause_container(&cid).await
        } else {
            self.docker.unpause_container(&cid).await
        };
        let Err(e) = done else {
            return Ok(());
        };
        if is_status(&e, 404) {
            return Err(ProviderError::SandboxNotFound(runtime_id.into()));
        }
        let want = if freeze {
            SandboxState::Paused
        } else {
            SandboxState::Running
        };
        if self.container_status(runtime_id).await.ok() == Some(want) {
            return Ok(());
        }
        Err(if freeze {
            api_err("pausing the sandbox container failed", e)
        } else {
            api_err("unpausing the sandbox container failed", e)
        })
    }

    pub(super) async fn container_status(
        &self,
        runtime_id: &str,
    ) -> Result<SandboxState, ProviderError> {
        let cid = match self.container(runtime_id).await {
            Ok(c) => c,
            Err(ProviderError::SandboxNotFound(_)) if self.destroyed.contains(runtime_id) => {
                return Ok(SandboxState::Destroyed)
            }
            Err(e) => return Err(e),
        };
        let info = self.inspect(&cid, runtime_id).await?;
        let status = info.state.and_then(|s| s.status);
        Ok(match status {
            Some(ContainerStateStatusEnum::RUNNING) => SandboxState::Running,
            // Paused by `pause` (or, for a moment, while an exec's processes are killed: the
            // control plane never adopts `paused` from a status answer, only pause sets it).
            Some(ContainerStateStatusEnum::PAUSED) => SandboxState::Paused,
            Some(ContainerStateStatusEnum::CREATED | ContainerStateStatusEnum::RESTARTING) => {
                SandboxState::Creating
            }
            _ => SandboxState::Error,
        })
    }

    /// Every container (running or not) carrying `label` (`key` or `key=value`).
    pub(super) async fn containers_labelled(
        &self,
        label: String,
        what: &'static str,
    ) -> Result<Vec<ContainerSummary>, ProviderError> {
        let filters = HashMap::from([("label", vec![label])]);
        let opts = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        self.docker
            .list_containers(Some(opts))
            .await
            .map_err(|e| api_err(what, e))
    }

    pub(super) async fn managed_containers(&self) -> Result<Vec<RuntimeInfo>, ProviderError> {
        let list = self
            .containers_labelled(format!("{LABEL_MANAGED}=true"), "listing containers failed")
            .await?;
        let mut out: Vec<RuntimeInfo> = list
            .into_iter()
            // No labels is no cluster label: ours, as `cluster::ours` answers.
            .filter(|c| c.labels.as_ref().is_none_or(|l| self.in_cluster(l)))
            .filter_map(|c| {
                let name = c
                    .names
                    .as_ref()?
                    .first()?
                    .trim_start_matches('/')
                    .to_string();
                let labels = c.labels.unwrap_or_default();
                Some(RuntimeInfo {
                    runtime_id: name,
                    sandbox_id: labels.get(LABEL_SANDBOX_ID).cloned(),
                    image: c.image.unwrap_or_default(),
                    running: matches!(
                        c.state,
                        Some(
                            ContainerSummaryStateEnum::RUNNING | ContainerSummaryStateEnum::PAUSED
                        )
                    ),
                })
            })
            .collect();
        out.sort_by(|a, b| a.runtime_id.cmp(&b.runtime_id));
        Ok(out)
    }

    /// The last `lines` lines the container's main process printed.
    pub(super) async fn console(
        &self,
        runtime_id: &str,
        cid: &str,
        lines: usize,
    ) -> Result<Vec<String>, ProviderError> {
        if lines == 0 {
            return Ok(Vec::new());
        }
        let opts = LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .tail(&lines.to_string())
            .build();
        let mut stream = self.docker.logs(cid, Some(opts));
        let mut text = Vec::new();
        while let Some(item) = stream.next().await {
            match item {
                Ok(LogOutput::StdOut { message } | LogOutput::StdErr { message })
                | Ok(LogOutput::Console { message }) => text.extend_from_slice(&message),
                Ok(LogOutput::StdIn { .. }) => {}
                Err(e) => return Err(self.not_found_or(runtime_id, e, "reading logs failed")),
            }
        }
        Ok(split_lines(&text, lines))
    }

    pub(super) async fn container_stats(
        &self,
        runtime_id: &str,
        cid: &str,
    ) -> Result<Stats, ProviderError> {
        // stream=false waits for a second sample, so the CPU delta is meaningful.
        let opts = StatsOptionsBuilder::default().stream(false).build();
        let mut stream = self.docker.stats(cid, Some(opts));
        match stream.next().await {
            Some(Ok(s)) => Ok(stats_from(&s)),
            Some(Err(e)) => Err(self.not_found_or(runtime_id, e, "reading stats failed")),
            None => Err(ProviderError::internal("docker returned no stats")),
        }
    }
}

enum StartError {
    /// The daemon could not provide `init: true`.
    Init(String),
    Other(ProviderError),
}

impl StartError {
    fn into_provider(self) -> ProviderError {
        match self {
            StartError::Init(msg) => {
                ProviderError::internal(format!("starting the sandbox failed: {msg}"))
            }
            StartError::Other(e) => e,
        }
    }
}

fn create_err(spec: &SandboxSpec, e: bollard::errors::Error) -> ProviderError {
    if is_status(&e, 409) {
        return ProviderError::InvalidInput(format!("sandbox {} already exists", spec.id));
    }
    let msg = server_message(&e).unwrap_or_default().to_string();
    if is_status(&e, 404) && msg.contains("image") {
        return ProviderError::ImageNotFound(spec.image.clone());
    }
    if msg.contains("unknown or invalid runtime") || msg.contains("runtime name") {
        return ProviderError::Unavailable(format!("docker runtime is not available: {msg}"));
    }
    if is_status(&e, 400) {
        return ProviderError::InvalidInput(format!("docker refused the sandbox: {msg}"));
    }
    api_err("creating the sandbox container failed", e)
}

fn start_err(e: bollard::errors::Error) -> ProviderError {
    match server_message(&e) {
        Some(msg) => ProviderError::internal(format!("starting the sandbox failed: {msg}")),
        None => api_err("starting the sandbox container failed", e),
    }
}

/// The last `n` lines of `text`, without line endings.
fn split_lines(text: &[u8], n: usize) -> Vec<String> {
    let s = String::from_utf8_lossy(text);
    let all: Vec<String> = s
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l).to_string())
        .collect();
    let mut all = all;
    if all.last().is_some_and(String::is_empty) {
        all.pop();
    }
    let skip = all.len().saturating_sub(n);
    all.into_iter().skip(skip).collect()
}

/// CPU percent the way `docker stats` computes it; memory without the page cache.
fn stats_from(s: &ContainerStatsResponse) -> Stats {
    let total = |c: Option<&bollard::models::ContainerCpuStats>| {
        c.and_then(|c| c.cpu_usage.as_ref())
            .and_then(|u| u.total_usage)
            .unwrap_or(0)
    };
    let system = |c: Option<&bollard::models::ContainerCpuStats>| {
        c.and_then(|c| c.system_cpu_usage).unwrap_or(0)
    };
    let (cpu, pre) = (s.cpu_stats.as_ref(), s.precpu_stats.as_ref());
    let cpu_delta = total(cpu).saturating_sub(total(pre)) as f64;
    let sys_delta = system(cpu).saturating_sub(system(pre)) as f64;
    let online = cpu
        .and_then(|c| c.online_cpus.map(f64::from))
        .or_else(|| {
            cpu.and_then(|c| c.cpu_usage.as_ref())
                .and_then(|u| u.percpu_usage.as_ref())
                .map(|v| v.len() as f64)
        })
        .filter(|n| *n > 0.0)
        .unwrap_or(1.0);
    let cpu_pct = if sys_delta > 0.0 && cpu_delta > 0.0 {
        cpu_delta / sys_delta * online * 100.0
    } else {
        0.0
    };
    let mem = s.memory_stats.as_ref();
    let usage = mem.and_then(|m| m.usage).unwrap_or(0);
    let cache = mem
        .and_then(|m| m.stats.as_ref())
        .and_then(|st| {
            st.get("total_inactive_file")
                .or_else(|| st.get("inactive_file"))
                .copied()
        })
        .unwrap_or(0);
    Stats {
        cpu_pct,
        mem_bytes: usage.saturating_sub(cache),
        mem_limit_bytes: mem.and_then(|m| m.limit).unwrap_or(0),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::DockerConfig;

    fn spec() -> SandboxSpec {
        SandboxSpec {
            id: "sb-0000beef".into(),
            image: "img".into(),
            memory_mb: 256,
            vcpus: 2,
            owner_id: "alice".into(),
            metadata: BTreeMap::new(),
        }
    }

    #[test]
    fn hardened_by_default() {
        let s = DockerConfig::default().validate().unwrap();
        let b = container_body(
            &s,
            &spec(),
            "img",
            vec!["/bin/sleep".into(), "1".into()],
            true,
            &[],
        );
        let h = b.host_config.unwrap();
        assert_eq!(h.cap_drop.unwrap(), ["ALL"]);
        assert_eq!(h.cap_add, None);
        assert_eq!(h.security_opt.unwrap(), ["no-new-privileges:true"]);
        assert_eq!(h.pids_limit, Some(256));
        assert_eq!(h.memory, Some(256 << 20));
        assert_eq!(h.memory_swap, Some(256 << 20));
        assert_eq!(h.nano_cpus, Some(2_000_000_000));
        assert_eq!(h.privileged, Some(false));
        assert_eq!(h.init, Some(true));
        assert_eq!(h.network_mode.as_deref(), Some("bridge"));
        assert_eq!(b.working_dir.as_deref(), Some("/workspace"));
        assert_eq!(b.volumes.unwrap(), ["/workspace"]);
        assert_eq!(b.entrypoint.unwrap(), Vec::<String>::new());
        let l = b.labels.unwrap();
        assert_eq!(l["stacyvm.managed"], "true");
        assert_eq!(l["stacyvm.sandbox_id"], "sb-0000beef");
        assert_eq!(l["stacyvm.owner_id"], "alice");
        assert_eq!(
            l["traefik.http.routers.sb-0000beef.rule"],
            "Host(`3000-sb-0000beef.localhost`)"
        );
        assert_eq!(
            l["traefik.http.services.sb-0000beef.loadbalancer.server.port"],
            "3000"
        );
        assert!(!l.contains_key("stacyvm.cluster"), "no cluster, no label");
    }

    /// A control plane's containers carry its cluster id (hardening finding 12).
    #[test]
    fn containers_carry_the_cluster() {
        let c = DockerConfig {
            cluster: Some("0123456789abcdef".into()),
            ..DockerConfig::default()
        };
        let b = container_body(&c.validate().unwrap(), &spec(), "img", vec![], true, &[]);
        assert_eq!(b.labels.unwrap()["stacyvm.cluster"], "0123456789abcdef");
    }

    #[test]
    fn config_drives_the_container() {
        let c = DockerConfig {
            runtime: "runsc".into(),
            network_mode: "none".into(),
            read_only_rootfs: true,
            seccomp_profile: "unconfined".into(),
            user: "nobody".into(),
            added_caps: vec!["net_bind_service".into()],
            tmpfs: BTreeMap::from([("/run".to_string(), "size=8m".to_string())]),
            preview_domain: "example.test".into(),
            ..Default::default()
        };
        let s = c.validate().unwrap();
        let mut sp = spec();
        sp.memory_mb = 0;
        sp.vcpus = 0;
        let b = container_body(&s, &sp, "img", vec![], false, &[]);
        let h = b.host_config.unwrap();
        assert_eq!(h.runtime.as_deref(), Some("runsc"));
        assert_eq!(h.readonly_rootfs, Some(true));
        assert_eq!(h.cap_add.unwrap(), ["NET_BIND_SERVICE"]);
        assert_eq!(h.memory, Some(512 << 20), "falls back to the config");
        assert_eq!(h.nano_cpus, Some(1_000_000_000));
        assert_eq!(h.tmpfs.unwrap()["/run"], "size=8m");
        assert!(h
            .security_opt
            .unwrap()
            .contains(&"seccomp=unconfined".to_string()));
        assert_eq!(b.user.as_deref(), Some("nobody"));
        assert_eq!(b.network_disabled, Some(true));
        assert_eq!(b.volumes.unwrap(), ["/workspace", "/tmp"]);
        assert!(b.labels.unwrap()["traefik.http.routers.sb-0000beef.rule"].contains("example.test"));
    }

    #[test]
    fn log_lines() {
        assert_eq!(split_lines(b"a\nb\r\nc\n", 2), ["b", "c"]);
        assert_eq!(split_lines(b"a\nb", 5), ["a", "b"]);
        assert!(split_lines(b"", 5).is_empty());
    }

    #[test]
    fn cpu_percent() {
        let raw = serde_json::json!({
            "cpu_stats": {"cpu_usage": {"total_usage": 300}, "system_cpu_usage": 2000, "online_cpus": 2},
            "precpu_stats": {"cpu_usage": {"total_usage": 100}, "system_cpu_usage": 1000},
            "memory_stats": {"usage": 1000, "limit": 4000, "stats": {"total_inactive_file": 200}}
        });
        let s: ContainerStatsResponse = serde_json::from_value(raw).unwrap();
        let st = stats_from(&s);
        assert!((st.cpu_pct - 40.0).abs() < 1e-9);
        assert_eq!(st.mem_bytes, 800);
        assert_eq!(st.mem_limit_bytes, 4000);
    }
}
