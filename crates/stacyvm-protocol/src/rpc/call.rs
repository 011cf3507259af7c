//! The request side of the contract: [`RpcCall`] (one variant per method, with typed params),
//! the typed [`RpcRequest`] both sides use, and [`RpcEnvelope`], the JSON as it arrives.
//!
//! Adding a method: a constant in `method` (and `method::ALL`) and a variant here with its
//! params type. The compiler then asks for its arms in [`RpcCall::method`],
//! [`RpcCall::target`] and the worker's dispatcher (exhaustive matches); the control plane's
//! `RemoteProvider` sends it where it needs it; `tests/golden.rs` fails until the new envelope
//! is pinned.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use super::messages::{
    ExecParams, FileChmodParams, FileDeleteParams, FileGlobParams, FileMoveParams, FilePathParams,
    FileUploadParams, FileWriteParams, LeaseToken, LogsParams, RenewLeaseParams, SpawnParams,
    Target, WorkerId,
};
use super::process::{
    ProcessOutputParams, ProcessParams, ProcessResizeParams, ProcessSignalParams,
    ProcessStartParams, ProcessStdinParams,
};
use super::state::{
    ProviderParams, SnapshotParams, SnapshotRefParams, SnapshotSweepParams, VolumeParams,
};
use super::watch::WatchDirParams;
use super::{method, RpcFailure};

/// One worker method with its params. On the wire it is the envelope's `method` and `params`
/// (an adjacently tagged enum: `{"method": "worker.status", "params": {..}}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", content = "params")]
pub enum RpcCall {
    /// Needs a lease. Result: `SpawnResult`.
    #[serde(rename = "worker.spawn")]
    Spawn(SpawnParams),
    /// Needs a lease; a runtime that is already gone counts as destroyed. No result.
    #[serde(rename = "worker.destroy")]
    Destroy(Target),
    /// Result: `StatusResult`.
    #[serde(rename = "worker.status")]
    Status(Target),
    /// Result: `ExecResult`.
    #[serde(rename = "worker.exec")]
    Exec(ExecParams),
    /// Live NDJSON of `StreamChunk`s with `X-Worker-Stream: ndjson`, else `ExecStreamResult`.
    #[serde(rename = "worker.exec_stream")]
    ExecStream(ExecParams),
    /// No result.
    #[serde(rename = "worker.file_write")]
    FileWrite(FileWriteParams),
    /// Result: `FileReadResult`.
    #[serde(rename = "worker.file_read")]
    FileRead(FilePathParams),
    /// Result: `FileListResult`.
    #[serde(rename = "worker.file_list")]
    FileList(FilePathParams),
    /// No result.
    #[serde(rename = "worker.file_delete")]
    FileDelete(FileDeleteParams),
    /// No result.
    #[serde(rename = "worker.file_move")]
    FileMove(FileMoveParams),
    /// No result.
    #[serde(rename = "worker.file_chmod")]
    FileChmod(FileChmodParams),
    /// Result: `FileStatResult`.
    #[serde(rename = "worker.file_stat")]
    FileStat(FilePathParams),
    /// Result: `FileGlobResult`.
    #[serde(rename = "worker.file_glob")]
    FileGlob(FileGlobParams),
    /// Result: `LogsResult`.
    #[serde(rename = "worker.logs")]
    Logs(LogsParams),
    /// Needs a lease. Result: `RenewLeaseResult`. The control plane never sends it.
    #[serde(rename = "worker.renew_lease")]
    RenewLease(RenewLeaseParams),
    /// Starts draining. No params, no result.
    #[serde(rename = "worker.shutdown")]
    Shutdown,
    /// Heartbeats go over REST: workers answer 501, so the params are never read.
    #[serde(rename = "worker.heartbeat")]
    Heartbeat(Value),
    /// Answers the raw file (`application/octet-stream`); failures are JSON answers.
    #[serde(rename = "worker.file_read_stream")]
    FileReadStream(FilePathParams),
    /// Envelope in `X-StacyVM-RPC`, content as the body. Result: `FileWriteResult`.
    #[serde(rename = "worker.file_write_stream")]
    FileWriteStream(FileUploadParams),
    /// Result: `ProcessResult`.
    #[serde(rename = "worker.process_start")]
    ProcessStart(ProcessStartParams),
    /// Result: `ProcessListResult`.
    #[serde(rename = "worker.process_list")]
    ProcessList(Target),
    /// Result: `ProcessResult`.
    #[serde(rename = "worker.process_get")]
    ProcessGet(ProcessParams),
    /// Live NDJSON of `RecordLine` results.
    #[serde(rename = "worker.process_output")]
    ProcessOutput(ProcessOutputParams),
    /// Result: `ProcessStdinResult`.
    #[serde(rename = "worker.process_stdin")]
    ProcessStdin(ProcessStdinParams),
    /// Result: `ProcessResult`.
    #[serde(rename = "worker.process_signal")]
    ProcessSignal(ProcessSignalParams),
    /// No result.
    #[serde(rename = "worker.process_resize")]
    ProcessResize(ProcessResizeParams),
    /// No result.
    #[serde(rename = "worker.pause")]
    Pause(Target),
    /// No result.
    #[serde(rename = "worker.resume")]
    Resume(Target),
    /// Live NDJSON of `WatchEvent` results.
    #[serde(rename = "worker.watch_dir")]
    WatchDir(WatchDirParams),
    /// No result.
    #[serde(rename = "worker.volume_create")]
    VolumeCreate(VolumeParams),
    /// No result; a volume that is gone counts as deleted.
    #[serde(rename = "worker.volume_delete")]
    VolumeDelete(VolumeParams),
    /// Result: `VolumeListResult`.
    #[serde(rename = "worker.volume_list")]
    VolumeList(ProviderParams),
    /// Result: `SnapshotResult`.
    #[serde(rename = "worker.snapshot")]
    Snapshot(SnapshotParams),
    /// No result; a snapshot that is gone counts as deleted.
    #[serde(rename = "worker.snapshot_delete")]
    SnapshotDelete(SnapshotRefParams),
    /// Result: `SweepResult`.
    #[serde(rename = "worker.snapshot_sweep")]
    SnapshotSweep(SnapshotSweepParams),
}

impl RpcCall {
    /// The wire name (`worker.spawn`), as in [`method`].
    pub fn method(&self) -> &'static str {
        match self {
            RpcCall::Spawn(_) => method::SPAWN,
            RpcCall::Destroy(_) => method::DESTROY,
            RpcCall::Status(_) => method::STATUS,
            RpcCall::Exec(_) => method::EXEC,
            RpcCall::ExecStream(_) => method::EXEC_STREAM,
            RpcCall::FileWrite(_) => method::FILE_WRITE,
            RpcCall::FileRead(_) => method::FILE_READ,
            RpcCall::FileList(_) => method::FILE_LIST,
            RpcCall::FileDelete(_) => method::FILE_DELETE,
            RpcCall::FileMove(_) => method::FILE_MOVE,
            RpcCall::FileChmod(_) => method::FILE_CHMOD,
            RpcCall::FileStat(_) => method::FILE_STAT,
            RpcCall::FileGlob(_) => method::FILE_GLOB,
            RpcCall::Logs(_) => method::LOGS,
            RpcCall::RenewLease(_) => method::RENEW_LEASE,
            RpcCall::Shutdown => method::SHUTDOWN,
            RpcCall::Heartbeat(_) => method::HEARTBEAT,
            RpcCall::FileReadStream(_) => method::FILE_READ_STREAM,
            RpcCall::FileWriteStream(_) => method::FILE_WRITE_STREAM,
            RpcCall::ProcessStart(_) => method::PROCESS_START,
            RpcCall::ProcessList(_) => method::PROCESS_LIST,
            RpcCall::ProcessGet(_) => method::PROCESS_GET,
            RpcCall::ProcessOutput(_) => method::PROCESS_OUTPUT,
            RpcCall::ProcessStdin(_) => method::PROCESS_STDIN,
            RpcCall::ProcessSignal(_) => method::PROCESS_SIGNAL,
            RpcCall::ProcessResize(_) => method::PROCESS_RESIZE,
            RpcCall::Pause(_) => method::PAUSE,
            RpcCall::Resume(_) => method::RESUME,
            RpcCall::WatchDir(_) => method::WATCH_DIR,
            RpcCall::VolumeCreate(_) => method::VOLUME_CREATE,
            RpcCall::VolumeDelete(_) => method::VOLUME_DELETE,
            RpcCall::VolumeList(_) => method::VOLUME_LIST,
            RpcCall::Snapshot(_) => method::SNAPSHOT,
            RpcCall::SnapshotDelete(_) => method::SNAPSHOT_DELETE,
            RpcCall::SnapshotSweep(_) => method::SNAPSHOT_SWEEP,
        }
    }

    /// The rules serde cannot express (non-blank required text, signs of durations). Part of
    /// decoding: a call that fails them never reaches a worker method.
    fn check(&self) -> Result<(), String> {
        let required = |value: &str, name: &str| {
            if value.trim().is_empty() {
                Err(format!("invalid input: {name} is required"))
            } else {
                Ok(())
            }
        };
        if let Some(t) = self.target() {
            if t.sandbox_id.trim().is_empty() {
                return Err("sandbox_id is required".into());
            }
        }
        match self {
            RpcCall::Spawn(p) if p.sandbox_id.trim().is_empty() => {
                Err("sandbox_id is required".into())
            }
            RpcCall::Spawn(p) if p.ttl.is_negative() => {
                Err("invalid input: ttl must not be negative".into())
            }
            RpcCall::Exec(p)
            | RpcCall::ExecStream(p)
            | RpcCall::ProcessStart(ProcessStartParams { exec: p, .. }) => {
                required(&p.command, "command")?;
                if p.timeout.is_some_and(|t| t.is_negative()) {
                    return Err("invalid input: timeout must not be negative".into());
                }
                Ok(())
            }
            RpcCall::FileWrite(FileWriteParams { path, .. })
            | RpcCall::FileRead(FilePathParams { path, .. })
            | RpcCall::FileStat(FilePathParams { path, .. })
            | RpcCall::FileReadStream(FilePathParams { path, .. })
            | RpcCall::FileDelete(FileDeleteParams { path, .. })
            | RpcCall::FileWriteStream(FileUploadParams { path, .. })
            | RpcCall::WatchDir(WatchDirParams { path, .. }) => required(path, "path"),
            RpcCall::FileMove(p) => {
                required(&p.old_path, "old_path")?;
                required(&p.new_path, "new_path")
            }
            RpcCall::FileChmod(p) => {
                required(&p.path, "path")?;
                required(&p.mode, "mode")
            }
            RpcCall::FileGlob(p) => required(&p.pattern, "pattern"),
            RpcCall::VolumeCreate(p) | RpcCall::VolumeDelete(p) => required(&p.name, "name"),
            RpcCall::Snapshot(SnapshotParams { snapshot_id, .. })
            | RpcCall::SnapshotDelete(SnapshotRefParams { snapshot_id, .. }) => {
                required(snapshot_id, "snapshot_id")
            }
            RpcCall::RenewLease(p) if p.resource_id.trim().is_empty() => {
                Err("resource_id is required".into())
            }
            RpcCall::RenewLease(p) if p.ttl.nanos() <= 0 => {
                Err("ttl must be a positive duration".into())
            }
            _ => Ok(()),
        }
    }

    /// The runtime the call targets, for the methods that name one.
    pub fn target(&self) -> Option<&Target> {
        match self {
            RpcCall::Destroy(t) | RpcCall::Status(t) | RpcCall::Pause(t) | RpcCall::Resume(t) => {
                Some(t)
            }
            RpcCall::Exec(p) | RpcCall::ExecStream(p) => Some(&p.target),
            RpcCall::FileWrite(p) => Some(&p.target),
            RpcCall::FileRead(p)
            | RpcCall::FileList(p)
            | RpcCall::FileStat(p)
            | RpcCall::FileReadStream(p) => Some(&p.target),
            RpcCall::FileDelete(p) => Some(&p.target),
            RpcCall::FileMove(p) => Some(&p.target),
            RpcCall::FileChmod(p) => Some(&p.target),
            RpcCall::FileGlob(p) => Some(&p.target),
            RpcCall::FileWriteStream(p) => Some(&p.target),
            RpcCall::Logs(p) => Some(&p.target),
            RpcCall::ProcessStart(p) => Some(&p.exec.target),
            RpcCall::ProcessList(t) => Some(t),
            RpcCall::ProcessGet(p) => Some(&p.target),
            RpcCall::ProcessOutput(p) => Some(&p.target),
            RpcCall::ProcessStdin(p) => Some(&p.target),
            RpcCall::ProcessSignal(p) => Some(&p.target),
            RpcCall::ProcessResize(p) => Some(&p.target),
            RpcCall::WatchDir(p) => Some(&p.target),
            RpcCall::Snapshot(p) => Some(&p.target),
            RpcCall::Spawn(_)
            | RpcCall::VolumeCreate(_)
            | RpcCall::VolumeDelete(_)
            | RpcCall::VolumeList(_)
            | RpcCall::SnapshotDelete(_)
            | RpcCall::SnapshotSweep(_)
            | RpcCall::RenewLease(_)
            | RpcCall::Shutdown
            | RpcCall::Heartbeat(_) => None,
        }
    }
}

/// A request as both sides handle it. On the wire: `{"id", "method", "worker_id", "lease"?,
/// "params"?}` in that order, params with sorted keys (what the control plane has always sent).
#[derive(Debug, Clone, PartialEq)]
pub struct RpcRequest {
    /// `<method without "worker.", '_' → '-'>-<subject>`, e.g. `exec-stream-sb-1`; not unique
    /// per call (the original's ids).
    pub id: String,
    pub worker_id: WorkerId,
    pub lease: Option<LeaseToken>,
    pub call: RpcCall,
}

impl RpcRequest {
    /// A call to worker `worker_id` about `subject` (the sandbox id; the worker id for
    /// worker-wide calls such as shutdown).
    pub fn new(
        call: RpcCall,
        worker_id: impl Into<WorkerId>,
        subject: &str,
        lease: Option<LeaseToken>,
    ) -> Self {
        let prefix = call
            .method()
            .trim_start_matches("worker.")
            .replace('_', "-");
        RpcRequest {
            id: format!("{prefix}-{subject}"),
            worker_id: worker_id.into(),
            lease,
            call,
        }
    }

    /// The untyped envelope this request travels as.
    pub fn to_envelope(&self) -> Result<RpcEnvelope, serde_json::Error> {
        let Value::Object(mut tagged) = serde_json::to_value(&self.call)? else {
            return Err(serde::ser::Error::custom("a call is a JSON object"));
        };
        Ok(RpcEnvelope {
            id: self.id.clone(),
            method: self.call.method().to_string(),
            worker_id: self.worker_id.to_string(),
            lease: self.lease.clone(),
            params: tagged.remove("params"),
        })
    }
}

impl Serialize for RpcRequest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_envelope()
            .map_err(serde::ser::Error::custom)?
            .serialize(s)
    }
}

impl<'de> Deserialize<'de> for RpcRequest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        RpcEnvelope::deserialize(d)?
            .decode()
            .map_err(|f| serde::de::Error::custom(f.message))
    }
}

/// The envelope before its method is known to be valid (wire-reference §9.2). A body that does
/// not even parse as this is the REST-shaped 400 `invalid worker RPC request`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RpcEnvelope {
    pub id: String,
    pub method: String,
    pub worker_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<LeaseToken>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<Value>,
}

impl RpcEnvelope {
    /// The typed request, or the 400 answer. In order: blank `id`/`worker_id`, unknown method,
    /// missing params (every method but shutdown), missing lease, then the params themselves
    /// (`invalid params: …` from decoding, `invalid input: …` from the remaining rules).
    pub fn decode(self) -> Result<RpcRequest, RpcFailure> {
        if self.id.trim().is_empty() {
            return Err(RpcFailure::bad_request("request id is required"));
        }
        if self.worker_id.trim().is_empty() {
            return Err(RpcFailure::bad_request("worker_id is required"));
        }
        let m = self.method.as_str();
        if !method::ALL.contains(&m) {
            return Err(RpcFailure::bad_request(format!(
                "unknown worker method: {m}"
            )));
        }
        let params = self.params.filter(|p| !p.is_null());
        if params.is_none() && m != method::SHUTDOWN {
            return Err(RpcFailure::bad_request(format!(
                "params are required for {m}"
            )));
        }
        if method::needs_lease(m) && self.lease.is_none() {
            return Err(RpcFailure::bad_request(format!(
                "lease is required for {m}"
            )));
        }
        let call = if m == method::SHUTDOWN {
            // Its params, if any, mean nothing (the original ignored them too).
            RpcCall::Shutdown
        } else {
            let tagged = serde_json::json!({ "method": m, "params": params });
            serde_json::from_value(tagged)
                .map_err(|e| RpcFailure::bad_request(format!("invalid params: {e}")))?
        };
        call.check().map_err(RpcFailure::bad_request)?;
        Ok(RpcRequest {
            id: self.id,
            worker_id: self.worker_id.into(),
            lease: self.lease,
            call,
        })
    }
}
