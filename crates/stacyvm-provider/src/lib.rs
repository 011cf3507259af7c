//! Isolation backends. Every backend implements [`Provider`] and passes `conformance`.

pub mod agent;
#[cfg(feature = "bwrap")]
mod bwrap;
#[cfg(any(feature = "docker", feature = "microvm", feature = "bwrap"))]
mod cluster;
mod config;
#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
#[cfg(any(feature = "microvm", feature = "bwrap"))]
mod console;
#[cfg(feature = "docker")]
mod docker;
mod error;
// Only bwrap pulls on spawn so far; microvm takes what the store has (docs/images.md).
#[cfg(feature = "bwrap")]
mod images;
mod in_flight;
#[cfg(feature = "microvm")]
mod microvm;
mod mock;
mod preview;
mod process;
mod registry;
mod stream;
mod tombstones;
mod walk;
mod watch;
mod wire;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

#[cfg(feature = "bwrap")]
pub use bwrap::BwrapProvider;
use bytes::Bytes;
pub use config::{
    BwrapConfig, DockerConfig, DockerPoolSecurity, MicrovmConfig, BWRAP_DEFAULT_DATA_DIR,
    DEFAULT_IMAGES_DIR,
};
#[cfg(feature = "docker")]
pub use docker::DockerProvider;
pub use error::ProviderError;
#[cfg(feature = "microvm")]
pub use microvm::MicrovmProvider;
pub use mock::{MockCall, MockProvider};
pub use preview::{connect_addr, PreviewConn, PREVIEW_CONNECT_TIMEOUT};
pub use process::{ProcessSpec, RecordStream};
pub use registry::ProviderRegistry;
use stacyvm_types::{
    ExecMode, FileInfo, Pid, ProcessInfo, PtySize, SandboxState, Signal, StreamChunk,
};
pub use stream::{chunked, collect, limited, ByteStream, FileStream, CHUNK_SIZE};
use tokio::sync::mpsc;
pub use watch::WatchStream;

/// Where the microvm provider's assets live unless configured otherwise. Not behind the
/// feature: `stacyvm microvm prepare` writes them whether or not the provider is built in.
pub const MICROVM_DEFAULT_DATA_DIR: &str = "/var/lib/stacyvm/microvm";

/// What the control plane asks a provider to create.
#[derive(Debug, Clone, PartialEq)]
pub struct SandboxSpec {
    /// Minted by the caller; providers use it as (or to derive) the runtime id.
    pub id: String,
    pub image: String,
    pub memory_mb: i64,
    pub vcpus: i64,
    pub owner_id: String,
    pub metadata: BTreeMap<String, String>,
}

/// A volume to mount into a sandbox at spawn (sandbox-model.md §2). The control plane has
/// checked `mount_path` (absolute, clean, not over a system directory) and that the volume
/// exists on this provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeMountSpec {
    pub volume: String,
    pub mount_path: String,
    pub read_only: bool,
}

/// What a provider's snapshot holds (sandbox-model.md §2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotMade {
    /// `filesystem` (files only) or `memory` (processes and memory too).
    pub kind: &'static str,
    pub size_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spawned {
    /// The id the provider knows the sandbox by; often equal to `SandboxSpec::id`.
    pub runtime_id: String,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct ExecRequest {
    pub command: String,
    pub args: Vec<String>,
    pub mode: ExecMode,
    pub env: BTreeMap<String, String>,
    /// Absolute path inside the sandbox; `None` = `/workspace`.
    pub workdir: Option<String>,
    /// `None` = no limit. On expiry the command's whole process group is killed and
    /// `ProviderError::Timeout` is returned; the sandbox stays up.
    pub timeout: Option<Duration>,
    /// Run as this account of the sandbox (a name or a numeric uid); `None` = the sandbox's
    /// default user. A backend that cannot switch users refuses it rather than ignore it.
    pub user: Option<String>,
}

impl ExecRequest {
    /// The argv to run: `sh -c '<command> <quoted args>'` in shell mode, literal in argv mode.
    pub fn argv(&self) -> Vec<String> {
        match self.mode {
            ExecMode::Shell => {
                let mut cmd = self.command.clone();
                for a in &self.args {
                    cmd.push(' ');
                    cmd.push_str(&shell_quote(a));
                }
                vec!["sh".into(), "-c".into(), cmd]
            }
            ExecMode::Argv => {
                let mut v = vec![self.command.clone()];
                v.extend(self.args.iter().cloned());
                v
            }
        }
    }
}

/// Single-quotes `s` for POSIX sh.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Live output goes here; a closed receiver means the caller went away, and the provider kills
/// the command.
pub type ChunkSender = mpsc::Sender<StreamChunk>;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stats {
    pub cpu_pct: f64,
    pub mem_bytes: u64,
    pub mem_limit_bytes: u64,
}

/// A runtime a provider can enumerate (for reconciliation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeInfo {
    pub runtime_id: String,
    /// The control-plane sandbox id recorded on the runtime (label), if any.
    pub sandbox_id: Option<String>,
    pub image: String,
    pub running: bool,
}

/// What every backend can do; [`Provider::capabilities`] lists these first, then its own.
pub const BASE_CAPABILITIES: [&str; 5] = ["spawn", "exec", "exec_stream", "files", "console"];

/// [`BASE_CAPABILITIES`] followed by a backend's own `extra` ones.
pub fn capabilities_with(extra: &[&'static str]) -> Vec<&'static str> {
    BASE_CAPABILITIES.iter().chain(extra).copied().collect()
}

#[async_trait::async_trait]
pub trait Provider: Send + Sync + 'static {
    /// Registry name (`mock`, `docker`, `microvm`).
    fn name(&self) -> &str;
    fn capabilities(&self) -> Vec<&'static str>;
    /// Non-secret configuration shown by `GET /providers/{name}`.
    fn config_summary(&self) -> serde_json::Value;
    /// Whether the backend gives real isolation (the mock does not).
    fn isolated(&self) -> bool {
        true
    }

    async fn health(&self) -> Result<(), ProviderError>;
    /// Releases what the provider holds beyond its sandboxes (warm VMs, background tasks) when
    /// the process stops gracefully. Sandboxes are left running for the next start to adopt.
    async fn shutdown(&self) {}
    async fn spawn(&self, spec: &SandboxSpec) -> Result<Spawned, ProviderError>;
    /// `SandboxNotFound` when the runtime does not exist.
    async fn destroy(&self, runtime_id: &str) -> Result<(), ProviderError>;
    async fn status(&self, runtime_id: &str) -> Result<SandboxState, ProviderError>;

    /// Runs a command, sending output chunks to `out` as they arrive, and returns the exit code.
    async fn exec(
        &self,
        runtime_id: &str,
        req: ExecRequest,
        out: ChunkSender,
    ) -> Result<i32, ProviderError>;

    /// Creates parent directories. `mode` is `"0755"`-style octal text or `"executable"`.
    async fn write_file(
        &self,
        runtime_id: &str,
        path: &str,
        content: Bytes,
        mode: Option<&str>,
    ) -> Result<(), ProviderError>;
    async fn read_file(&self, runtime_id: &str, path: &str) -> Result<Bytes, ProviderError>;
    /// Whether `read_file_stream`/`write_file_stream` move data in bounded memory. False for
    /// the buffered defaults: callers then cap uploads as they cap buffered writes.
    fn streams_files(&self) -> bool {
        false
    }
    /// Like [`Provider::read_file`], in chunks. The default reads the whole file with
    /// `read_file`; backends that can stream override it so memory stays bounded.
    async fn read_file_stream(
        &self,
        runtime_id: &str,
        path: &str,
    ) -> Result<FileStream, ProviderError> {
        let b = self.read_file(runtime_id, path).await?;
        Ok(FileStream::from_bytes(b))
    }
    /// Like [`Provider::write_file`], from chunks; returns the bytes written. An `Err` item
    /// aborts the write. The default gathers the stream and calls `write_file`; backends that
    /// can stream override it.
    async fn write_file_stream(
        &self,
        runtime_id: &str,
        path: &str,
        body: ByteStream,
        mode: Option<&str>,
    ) -> Result<u64, ProviderError> {
        write_buffered(self, runtime_id, path, body, mode).await
    }
    async fn list_files(
        &self,
        runtime_id: &str,
        path: &str,
    ) -> Result<Vec<FileInfo>, ProviderError>;
    async fn stat_file(&self, runtime_id: &str, path: &str) -> Result<FileInfo, ProviderError>;
    async fn glob(&self, runtime_id: &str, pattern: &str) -> Result<Vec<String>, ProviderError>;
    /// A missing path is `FileNotFound` unless `recursive`.
    async fn delete_file(
        &self,
        runtime_id: &str,
        path: &str,
        recursive: bool,
    ) -> Result<(), ProviderError>;
    async fn move_file(&self, runtime_id: &str, old: &str, new: &str) -> Result<(), ProviderError>;
    async fn chmod(&self, runtime_id: &str, path: &str, mode: &str) -> Result<(), ProviderError>;
    /// Watches the directory `path` (and with `recursive` every directory below it, including
    /// ones made later): see [`WatchStream`]. A missing path is `FileNotFound`, a file
    /// `InvalidInput`. The default answers `NotSupported`.
    async fn watch_dir(
        &self,
        _runtime_id: &str,
        _path: &str,
        _recursive: bool,
    ) -> Result<WatchStream, ProviderError> {
        Err(watch::unsupported(self.name()))
    }

    /// The last `lines` console lines.
    async fn logs(&self, runtime_id: &str, lines: usize) -> Result<Vec<String>, ProviderError>;
    /// `None` when the backend has no stats.
    async fn stats(&self, _runtime_id: &str) -> Result<Option<Stats>, ProviderError> {
        Ok(None)
    }
    /// `None` when the backend cannot enumerate its runtimes.
    async fn list_runtimes(&self) -> Result<Option<Vec<RuntimeInfo>>, ProviderError> {
        Ok(None)
    }
    /// Where the control plane can open a TCP connection to `port` inside the sandbox, for its
    /// preview URL (`http://{port}-{id}.{preview_domain}`). `None`: this backend offers no
    /// preview of that port (no network, port not forwarded). `SandboxNotFound` as elsewhere.
    async fn preview_target(
        &self,
        _runtime_id: &str,
        _port: u16,
    ) -> Result<Option<SocketAddr>, ProviderError> {
        Ok(None)
    }
    /// A connection to `port` inside the sandbox, for its preview URL: what the preview proxy
    /// of the control plane (local sandboxes) and of the worker (its sandboxes) forwards to.
    /// The default connects to [`Provider::preview_target`]; a backend that reaches its ports
    /// another way (bwrap: inside the sandbox's network namespace) overrides it.
    async fn preview_connect(
        &self,
        runtime_id: &str,
        port: u16,
    ) -> Result<PreviewConn, ProviderError> {
        Ok(match self.preview_target(runtime_id, port).await? {
            Some(addr) => connect_addr(addr).await,
            None => PreviewConn::NotExposed,
        })
    }

    // Pause and resume (sandbox-model.md §2, docs/state.md). A paused runtime keeps its files
    // and, where the backend can, its memory and processes, frozen; `status` then answers
    // `Paused`. Both are idempotent. The defaults answer `NotSupported` for backends that
    // cannot freeze a sandbox.

    /// Freezes every process of the sandbox.
    async fn pause(&self, _runtime_id: &str) -> Result<(), ProviderError> {
        Err(ProviderError::NotSupported(format!(
            "the {} provider cannot pause sandboxes",
            self.name()
        )))
    }
    /// Thaws a paused sandbox: its processes continue where they were.
    async fn resume(&self, _runtime_id: &str) -> Result<(), ProviderError> {
        Err(ProviderError::NotSupported(format!(
            "the {} provider cannot pause sandboxes",
            self.name()
        )))
    }

    // Volumes (sandbox-model.md §2, docs/state.md): named disks kept by the provider apart
    // from any sandbox. The defaults answer `NotSupported` for backends that cannot mount them.

    /// Creates the volume `name`; an existing one of ours is kept (idempotent).
    async fn create_volume(&self, _name: &str, _size_mb: i64) -> Result<(), ProviderError> {
        Err(volumes_unsupported(self.name()))
    }
    /// Removes the volume and its data; a missing one is success.
    async fn delete_volume(&self, _name: &str) -> Result<(), ProviderError> {
        Err(volumes_unsupported(self.name()))
    }
    /// The volumes this provider holds for this installation; `None` when it has none.
    async fn list_volumes(&self) -> Result<Option<Vec<String>>, ProviderError> {
        Ok(None)
    }
    /// [`Provider::spawn`] with volumes mounted. The default spawns when there are none and
    /// answers `NotSupported` otherwise.
    async fn spawn_with_volumes(
        &self,
        spec: &SandboxSpec,
        mounts: &[VolumeMountSpec],
    ) -> Result<Spawned, ProviderError> {
        if mounts.is_empty() {
            return self.spawn(spec).await;
        }
        Err(volumes_unsupported(self.name()))
    }

    // Snapshots (sandbox-model.md §2, docs/state.md). A snapshot is complete when `snapshot`
    // returns (made under a temporary name and renamed), and independent of its sandbox.
    // The defaults answer `NotSupported`.

    /// Takes snapshot `snapshot_id` of the sandbox, which keeps running.
    async fn snapshot(
        &self,
        _runtime_id: &str,
        _snapshot_id: &str,
    ) -> Result<SnapshotMade, ProviderError> {
        Err(snapshots_unsupported(self.name()))
    }
    /// Removes a snapshot; a missing one is success.
    async fn delete_snapshot(&self, _snapshot_id: &str) -> Result<(), ProviderError> {
        Err(snapshots_unsupported(self.name()))
    }
    /// Removes what this provider holds of snapshots `known` does not name (ids of recorded
    /// snapshots), and the parts of snapshots never finished, once older than `grace`: a
    /// snapshot in the making exists before its record is written. The ids or parts removed.
    /// Reconciliation calls it; a provider without snapshots has nothing to sweep.
    async fn sweep_snapshots(
        &self,
        _known: &std::collections::HashSet<String>,
        _grace: Duration,
    ) -> Result<Vec<String>, ProviderError> {
        Ok(Vec::new())
    }
    /// [`Provider::spawn_with_volumes`] starting from a snapshot's files (and memory, for
    /// `memory` snapshots). `InvalidInput` for a snapshot this provider does not hold.
    async fn spawn_from_snapshot(
        &self,
        _spec: &SandboxSpec,
        _mounts: &[VolumeMountSpec],
        _snapshot_id: &str,
    ) -> Result<Spawned, ProviderError> {
        Err(snapshots_unsupported(self.name()))
    }

    // Background processes (sandbox-model.md §1). The defaults answer `Unavailable` for
    // backends without them; `ProcessNotFound`, `StdinClosed`, `ProcessExited` and `NotAPty`
    // are the process errors, `SandboxNotFound` as elsewhere.

    /// Starts a process and returns it (state `running`, or `exited` if it was quick).
    async fn process_start(
        &self,
        _runtime_id: &str,
        _spec: ProcessSpec,
    ) -> Result<ProcessInfo, ProviderError> {
        Err(process::unsupported(self.name()))
    }
    /// Running and retained exited processes, newest first.
    async fn process_list(&self, _runtime_id: &str) -> Result<Vec<ProcessInfo>, ProviderError> {
        Err(process::unsupported(self.name()))
    }
    async fn process_get(
        &self,
        _runtime_id: &str,
        _pid: Pid,
    ) -> Result<ProcessInfo, ProviderError> {
        Err(process::unsupported(self.name()))
    }
    /// Records with `seq >= since`; see [`RecordStream`].
    async fn process_output(
        &self,
        _runtime_id: &str,
        _pid: Pid,
        _since: u64,
        _follow: bool,
    ) -> Result<RecordStream, ProviderError> {
        Err(process::unsupported(self.name()))
    }
    /// Starts a process and follows its output from 0 (`?follow=true`). Backends that can do
    /// both in one step override it (a remote worker: one RPC instead of two).
    async fn process_start_follow(
        &self,
        runtime_id: &str,
        spec: ProcessSpec,
    ) -> Result<(ProcessInfo, RecordStream), ProviderError> {
        let info = self.process_start(runtime_id, spec).await?;
        let records = self.process_output(runtime_id, info.pid, 0, true).await?;
        Ok((info, records))
    }
    /// Appends `data` to stdin (or the PTY), then closes stdin if `close`; returns the bytes
    /// written.
    async fn process_stdin(
        &self,
        _runtime_id: &str,
        _pid: Pid,
        _data: Bytes,
        _close: bool,
    ) -> Result<u64, ProviderError> {
        Err(process::unsupported(self.name()))
    }
    /// Signals the process's group; returns the process as it is after.
    async fn process_signal(
        &self,
        _runtime_id: &str,
        _pid: Pid,
        _signal: Signal,
    ) -> Result<ProcessInfo, ProviderError> {
        Err(process::unsupported(self.name()))
    }
    async fn process_resize(
        &self,
        _runtime_id: &str,
        _pid: Pid,
        _size: PtySize,
    ) -> Result<(), ProviderError> {
        Err(process::unsupported(self.name()))
    }
}

/// The answer of a backend that cannot keep volumes.
pub fn volumes_unsupported(provider: &str) -> ProviderError {
    ProviderError::NotSupported(format!("the {provider} provider cannot mount volumes"))
}

/// The answer of a backend that cannot snapshot sandboxes.
pub fn snapshots_unsupported(provider: &str) -> ProviderError {
    ProviderError::NotSupported(format!("the {provider} provider cannot snapshot sandboxes"))
}

/// The entries of a provider's snapshot directory `dir` that [`Provider::sweep_snapshots`] may
/// remove: not named by `known` and last modified at least `grace` ago. Names and paths.
pub(crate) fn sweepable(
    dir: &std::path::Path,
    known: &std::collections::HashSet<String>,
    grace: Duration,
) -> std::io::Result<Vec<(String, std::path::PathBuf)>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if known.contains(&name) {
            continue;
        }
        let age = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .unwrap_or_default();
        if age >= grace {
            out.push((name, e.path()));
        }
    }
    Ok(out)
}

/// The buffered path of [`Provider::write_file_stream`]: gathers the stream and calls
/// `write_file`. The trait's default, and the fallback of backends that stream only sometimes.
pub async fn write_buffered<P: Provider + ?Sized>(
    p: &P,
    runtime_id: &str,
    path: &str,
    body: ByteStream,
    mode: Option<&str>,
) -> Result<u64, ProviderError> {
    let b = collect(body).await?;
    let n = b.len() as u64;
    p.write_file(runtime_id, path, b, mode).await?;
    Ok(n)
}

/// Parses octal mode text (`"755"`, `"0755"`); `"executable"` means 0755.
pub fn parse_mode(s: &str) -> Option<u32> {
    let s = s.trim();
    if s == "executable" {
        return Some(0o755);
    }
    if s.is_empty() || s.len() > 6 {
        return None;
    }
    u32::from_str_radix(s, 8).ok().filter(|m| *m <= 0o7777)
}

/// [`parse_mode`] of a files API argument: text that is no mode is `InvalidInput`.
pub(crate) fn mode_arg(mode: &str) -> Result<u32, ProviderError> {
    parse_mode(mode)
        .ok_or_else(|| ProviderError::InvalidInput(format!("invalid file mode {mode:?}")))
}

/// A write's mode: octal text or `executable`; `None` when none (or blank text) was given.
#[cfg(any(feature = "docker", feature = "microvm", feature = "bwrap"))]
pub(crate) fn write_mode(mode: Option<&str>) -> Result<Option<u32>, ProviderError> {
    mode.map(str::trim)
        .filter(|m| !m.is_empty())
        .map(mode_arg)
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argv_shapes() {
        let mut r = ExecRequest {
            command: "echo".into(),
            args: vec!["a b".into(), "it's".into()],
            ..Default::default()
        };
        assert_eq!(r.argv(), vec!["sh", "-c", r"echo 'a b' 'it'\''s'"]);
        r.mode = ExecMode::Argv;
        assert_eq!(r.argv(), vec!["echo", "a b", "it's"]);
    }

    #[test]
    fn modes() {
        assert_eq!(parse_mode("0755"), Some(0o755));
        assert_eq!(parse_mode("644"), Some(0o644));
        assert_eq!(parse_mode("executable"), Some(0o755));
        assert_eq!(parse_mode("9"), None);
        assert_eq!(parse_mode(""), None);
        assert_eq!(parse_mode("77777"), None);
    }
}
