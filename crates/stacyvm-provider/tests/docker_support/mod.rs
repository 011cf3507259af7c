//! Shared helpers for the docker provider's tests (`tests/docker_*.rs`).
//!
//! Without a reachable daemon (or, for `needs_gvisor` tests, without runsc) the tests fail; the
//! default nextest profile leaves them out. `scripts/setup-docker.sh` prepares a machine.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, DownloadFromContainerOptionsBuilder,
    RemoveContainerOptionsBuilder,
};
use bollard::Docker;
use futures_util::{StreamExt, TryStreamExt};
use stacyvm_provider::{
    DockerConfig, DockerProvider, ExecRequest, Provider, ProviderError, SandboxSpec,
};
use stacyvm_types::{ExecMode, StreamChunk, StreamKind};
use tokio::sync::mpsc;

/// Built by `scripts/setup-docker.sh` (and `scripts/test.sh`): busybox with a shell.
pub const IMAGE: &str = "stacyvm-test/busybox:latest";
/// Built on demand by [`noshell_image`]: busybox applets as symlinks, but no `sh`.
pub const NOSHELL_IMAGE: &str = "stacyvm-test/noshell:latest";
/// Built on demand by [`nobody_image`]: the test image with `USER nobody`.
pub const NOBODY_IMAGE: &str = "stacyvm-test/nobody:latest";

/// A provider for the tests. Panics when docker is not usable here: these binaries run only
/// when selected (nextest profiles `docker`, `gvisor` and `ci`), and then they must not pass
/// unchecked.
pub async fn provider(config: DockerConfig) -> DockerProvider {
    let unusable = |why: String| -> ! {
        panic!("this test needs docker: {why} (run scripts/setup-docker.sh)")
    };
    // The agent built from this checkout (the installed one may predate processes).
    let config = DockerConfig {
        agent_path: if config.agent_path.is_empty() {
            stacyvm_provider::agent::built()
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default()
        } else {
            config.agent_path.clone()
        },
        ..config
    };
    let p = match DockerProvider::connect(config).await {
        Ok(p) => p,
        Err(e) => unusable(format!("cannot connect: {e}")),
    };
    if let Err(e) = p.health().await {
        unusable(format!("daemon not healthy: {e}"));
    }
    let docker = client();
    if docker.inspect_image(IMAGE).await.is_err() {
        unusable(format!("test image {IMAGE} is missing"));
    }
    p
}

/// A provider on gVisor (`runsc`, with `extra` applied). Panics when docker has no `runsc`
/// runtime (`scripts/setup-docker.sh --runsc` registers it).
pub async fn runsc_provider(extra: DockerConfig) -> DockerProvider {
    drop(provider(DockerConfig::default()).await);
    assert!(
        has_runsc().await,
        "this test needs gVisor: docker has no runsc runtime (run scripts/setup-docker.sh --runsc)"
    );
    provider(DockerConfig {
        runtime: "runsc".into(),
        ..extra
    })
    .await
}

pub fn client() -> Docker {
    Docker::connect_with_defaults().unwrap()
}

/// Whether the daemon has a `runsc` runtime registered.
pub async fn has_runsc() -> bool {
    match client().info().await {
        Ok(info) => info.runtimes.is_some_and(|r| r.contains_key("runsc")),
        Err(_) => false,
    }
}

/// A fresh sandbox id (`sb-` + 8 hex), unique across parallel test processes.
pub fn new_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    format!("sb-{:08x}", h.finish() as u32)
}

pub fn spec(id: &str, image: &str) -> SandboxSpec {
    SandboxSpec {
        id: id.to_string(),
        image: image.to_string(),
        memory_mb: 256,
        vcpus: 1,
        owner_id: "tester".into(),
        metadata: BTreeMap::new(),
    }
}

/// Removes the container when dropped, even if the test panicked (uses the docker CLI).
pub struct Cleanup(pub String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::process::Command::new("docker")
            .args(["rm", "-f", "-v", &self.0])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// Spawns a sandbox of `image`, with a guard that removes it.
pub async fn spawn(p: &DockerProvider, image: &str) -> (String, Cleanup) {
    let id = new_id();
    let guard = Cleanup(id.clone());
    let spawned = p.spawn(&spec(&id, image)).await.unwrap();
    assert_eq!(spawned.runtime_id, id);
    (id, guard)
}

/// What an exec produced.
#[derive(Debug)]
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub chunks: Vec<StreamChunk>,
}

pub async fn exec_req(
    p: &dyn Provider,
    id: &str,
    req: ExecRequest,
) -> Result<Output, ProviderError> {
    let (tx, mut rx) = mpsc::channel(64);
    let collect = tokio::spawn(async move {
        let mut v = Vec::new();
        while let Some(c) = rx.recv().await {
            v.push(c);
        }
        v
    });
    let res = p.exec(id, req, tx).await;
    let chunks = collect.await.unwrap();
    let text = |k: StreamKind| {
        let bytes: Vec<u8> = chunks
            .iter()
            .filter(|c| c.stream == k)
            .flat_map(|c| c.data.clone())
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    };
    let (stdout, stderr) = (text(StreamKind::Stdout), text(StreamKind::Stderr));
    res.map(|code| Output {
        code,
        stdout,
        stderr,
        chunks,
    })
}

/// Runs `cmd` through `sh -c`.
pub async fn sh(p: &dyn Provider, id: &str, cmd: &str) -> Output {
    let req = ExecRequest {
        command: cmd.to_string(),
        timeout: Some(Duration::from_secs(60)),
        ..Default::default()
    };
    exec_req(p, id, req).await.unwrap()
}

pub fn argv(cmd: &str, args: &[&str]) -> ExecRequest {
    ExecRequest {
        command: cmd.to_string(),
        args: args.iter().map(|s| s.to_string()).collect(),
        mode: ExecMode::Argv,
        timeout: Some(Duration::from_secs(60)),
        ..Default::default()
    }
}

/// Makes [`NOSHELL_IMAGE`] from the test image's busybox: only `sleep`, `echo`, `cat`, `ls`
/// exist, as symlinks, and no shell at all.
pub async fn noshell_image() {
    let docker = client();
    if docker.inspect_image(NOSHELL_IMAGE).await.is_ok() {
        return;
    }
    let probe = format!("stacyvm-test-bb-{}", std::process::id());
    let opts = CreateContainerOptionsBuilder::default()
        .name(&probe)
        .build();
    let body = bollard::models::ContainerCreateBody {
        image: Some(IMAGE.into()),
        cmd: Some(vec!["true".into()]),
        ..Default::default()
    };
    docker.create_container(Some(opts), body).await.unwrap();
    let dl = DownloadFromContainerOptionsBuilder::default()
        .path("/bin/busybox")
        .build();
    let tar_bytes: Vec<u8> = docker
        .download_from_container(&probe, Some(dl))
        .try_fold(Vec::new(), |mut acc, b| async move {
            acc.extend_from_slice(&b);
            Ok(acc)
        })
        .await
        .unwrap();
    let rm = RemoveContainerOptionsBuilder::default().force(true).build();
    docker.remove_container(&probe, Some(rm)).await.unwrap();
    let mut ar = tar::Archive::new(&tar_bytes[..]);
    let mut entry = ar.entries().unwrap().next().unwrap().unwrap();
    let mut busybox = Vec::new();
    std::io::Read::read_to_end(&mut entry, &mut busybox).unwrap();

    let mut b = tar::Builder::new(Vec::new());
    for dir in ["bin", "tmp", "workspace", "etc", "proc", "sys", "dev"] {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(if dir == "tmp" { 0o1777 } else { 0o755 });
        h.set_size(0);
        b.append_data(&mut h, format!("{dir}/"), std::io::empty())
            .unwrap();
    }
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o755);
    h.set_size(busybox.len() as u64);
    b.append_data(&mut h, "bin/busybox", &busybox[..]).unwrap();
    for applet in ["sleep", "echo", "cat", "ls"] {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        h.set_mode(0o777);
        b.append_link(&mut h, format!("bin/{applet}"), "busybox")
            .unwrap();
    }
    let rootfs = b.into_inner().unwrap();
    let opts = CreateImageOptionsBuilder::default()
        .from_src("-")
        .repo("stacyvm-test/noshell")
        .tag("latest")
        .changes(vec!["ENV PATH=/bin".into()])
        .build();
    let mut s = docker.create_image(Some(opts), Some(bollard::body_full(rootfs.into())), None);
    while let Some(item) = s.next().await {
        item.unwrap();
    }
}

/// Makes [`NOBODY_IMAGE`]: [`IMAGE`] committed with `USER nobody`.
pub async fn nobody_image() {
    let docker = client();
    if docker.inspect_image(NOBODY_IMAGE).await.is_ok() {
        return;
    }
    let probe = format!("stacyvm-test-nobody-{}", std::process::id());
    let opts = CreateContainerOptionsBuilder::default()
        .name(&probe)
        .build();
    let body = bollard::models::ContainerCreateBody {
        image: Some(IMAGE.into()),
        cmd: Some(vec!["true".into()]),
        ..Default::default()
    };
    docker.create_container(Some(opts), body).await.unwrap();
    let commit = bollard::query_parameters::CommitContainerOptionsBuilder::default()
        .container(&probe)
        .repo("stacyvm-test/nobody")
        .tag("latest")
        .changes("USER nobody")
        .build();
    let committed = docker
        .commit_container(commit, bollard::models::ContainerConfig::default())
        .await;
    let rm = RemoveContainerOptionsBuilder::default().force(true).build();
    docker.remove_container(&probe, Some(rm)).await.unwrap();
    committed.unwrap();
}
