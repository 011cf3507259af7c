//! The params and results of every worker method (wire-reference §9.3). Field names, order and
//! omission rules are the wire's: each change shows in `tests/schema_snapshot.rs` and the golden
//! envelopes (`tests/golden.rs`).
//!
//! Typed fields decode strictly, so decoding is the worker's validation of a call: a bad exec
//! mode, duration or base64 body never reaches a method (the rules types cannot express, such
//! as non-blank ids and paths, are `RpcCall`'s, checked in the same step). Absent optional keys
//! (the original control plane omits empty ones) decode to their empty value.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use stacyvm_types::{ExecMode, GoDuration};

pub use stacyvm_types::{FileInfo, SandboxId, WorkerId};

/// Ownership proof for one resource (sandbox id). `expires_at` is RFC 3339.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseToken {
    pub resource_id: String,
    pub holder_id: String,
    pub generation: i64,
    pub expires_at: String,
}

/// Identifies the runtime a call targets. `runtime_id` falls back to `sandbox_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    pub sandbox_id: SandboxId,
    pub provider: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub runtime_id: String,
}

impl Target {
    pub fn runtime(&self) -> &str {
        if self.runtime_id.is_empty() {
            &self.sandbox_id
        } else {
            &self.runtime_id
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpawnParams {
    pub sandbox_id: SandboxId,
    pub image: String,
    pub provider: String,
    pub memory_mb: i64,
    pub vcpus: i64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub owner_id: String,
    /// Always sent (`5m0s`); absent or empty decodes as zero.
    #[serde(default, deserialize_with = "duration_or_zero")]
    pub ttl: GoDuration,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    /// Volumes held by this worker to mount (capability `state`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<super::VolumeMount>,
    /// Start from this snapshot held by this worker (capability `state`); blank = none.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub snapshot: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct SpawnResult {
    pub sandbox_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub runtime_id: String,
    pub state: String,
    pub provider: String,
    pub worker_id: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct StatusResult {
    pub sandbox_id: String,
    pub state: String,
    pub provider: String,
    pub worker_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
}

/// Params of `worker.exec` and `worker.exec_stream`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecParams {
    #[serde(flatten)]
    pub target: Target,
    pub command: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// `shell` or `argv`; always sent by our control plane, absent or empty means `shell`.
    #[serde(default, with = "exec_mode")]
    pub mode: ExecMode,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub workdir: String,
    /// `None` (absent or empty) = no limit; so is zero.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "optional_duration"
    )]
    pub timeout: Option<GoDuration>,
    /// Ours: the sandbox account to run as (absent = the default user). A worker older than
    /// this field ignores it; the control plane sends it only to workers that announce the
    /// `user` capability.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ExecResult {
    pub sandbox_id: String,
    pub exit_code: i64,
    pub stdout: String,
    pub stderr: String,
    /// Ours: output past `server.max_exec_output` was left out (absent when false).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

/// One NDJSON line's `result` for `worker.exec_stream`. Output lines carry `stream`
/// (`stdout`/`stderr`) and `data`; our workers end with `stream: "exit"` and `exit_code`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct StreamChunk {
    pub stream: String,
    #[serde(default)]
    pub data: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
}

/// Result of `worker.exec_stream` without the NDJSON header: every chunk at the end (ours end
/// with the exit chunk).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ExecStreamResult {
    pub sandbox_id: String,
    pub chunks: Vec<StreamChunk>,
    /// Ours: chunks past `server.max_exec_output` were left out (absent when false).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

/// Params of the file methods that name one path: `file_read`, `file_read_stream`,
/// `file_list` (an empty path lists `/`) and `file_stat`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FilePathParams {
    #[serde(flatten)]
    pub target: Target,
    #[serde(default)]
    pub path: String,
}

/// Params of `worker.file_write`: the content travels as standard base64.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileWriteParams {
    #[serde(flatten)]
    pub target: Target,
    #[serde(default)]
    pub path: String,
    #[serde(default, with = "base64_content")]
    pub content: Vec<u8>,
    /// Octal text (`0644`); empty = the provider's default.
    #[serde(default)]
    pub mode: String,
}

/// A path and a mode: params of `worker.file_chmod`, and of `worker.file_write_stream` (whose
/// content is the request body).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileModeParams {
    #[serde(flatten)]
    pub target: Target,
    #[serde(default)]
    pub path: String,
    #[serde(default)]
    pub mode: String,
}

/// Params of `worker.file_write_stream`.
pub type FileUploadParams = FileModeParams;
/// Params of `worker.file_chmod`.
pub type FileChmodParams = FileModeParams;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileDeleteParams {
    #[serde(flatten)]
    pub target: Target,
    #[serde(default)]
    pub path: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub recursive: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileMoveParams {
    #[serde(flatten)]
    pub target: Target,
    #[serde(default)]
    pub old_path: String,
    #[serde(default)]
    pub new_path: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileGlobParams {
    #[serde(flatten)]
    pub target: Target,
    #[serde(default)]
    pub pattern: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct FileReadResult {
    pub sandbox_id: String,
    /// Standard base64.
    pub content: String,
}

/// Result of `worker.file_write_stream`: the bytes the provider wrote.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct FileWriteResult {
    pub sandbox_id: String,
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct FileListResult {
    pub sandbox_id: String,
    pub files: Vec<FileInfo>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileStatResult {
    pub sandbox_id: String,
    pub file: FileInfo,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct FileGlobResult {
    pub sandbox_id: String,
    pub matches: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogsParams {
    #[serde(flatten)]
    pub target: Target,
    /// Zero or absent = the worker's default.
    #[serde(default)]
    pub lines: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct LogsResult {
    pub sandbox_id: String,
    pub lines: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RenewLeaseParams {
    pub resource_id: SandboxId,
    pub ttl: GoDuration,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RenewLeaseResult {
    pub lease: LeaseToken,
}

/// `POST /api/v1/worker/{id}/heartbeat` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct HeartbeatBody {
    pub hostname: String,
    pub status: String,
    pub providers: Option<Vec<String>>,
    pub capabilities: Option<Vec<String>>,
    pub capacity: serde_json::Map<String, Value>,
}

/// `POST /api/v1/worker/{id}/leases/{resource}/renew` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct LeaseRenewBody {
    pub ttl: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub resource_id: String,
}

fn duration_or_zero<'de, D: Deserializer<'de>>(d: D) -> Result<GoDuration, D::Error> {
    Ok(optional_duration(d)?.unwrap_or_default())
}

fn optional_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<GoDuration>, D::Error> {
    let s = String::deserialize(d)?;
    match s.trim() {
        "" => Ok(None),
        t => t.parse().map(Some).map_err(serde::de::Error::custom),
    }
}

mod exec_mode {
    use super::*;

    pub fn serialize<S: Serializer>(m: &ExecMode, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(m.as_str())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<ExecMode, D::Error> {
        let s = String::deserialize(d)?;
        ExecMode::parse(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("unsupported exec mode {s:?}")))
    }
}

pub(super) mod base64_content {
    use super::*;

    pub fn serialize<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&crate::base64::encode(b))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        crate::base64::decode(&s)
            .ok_or_else(|| serde::de::Error::custom("content is not standard base64"))
    }
}
