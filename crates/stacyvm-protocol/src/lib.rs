//! Wire types shared by the control plane and workers (wire reference §9). Field names and
//! omission rules match the original Go worker so either side can talk to the other.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub mod agent;

/// Bumped only for additions that a peer may want to detect; see VERSIONING.md.
pub const PROTOCOL_VERSION: u32 = 1;
/// Header carrying [`PROTOCOL_VERSION`] on RPC requests and responses.
pub const PROTOCOL_HEADER: &str = "X-StacyVM-Protocol";
/// Request header asking `worker.exec_stream` for live NDJSON.
pub const STREAM_HEADER: &str = "X-Worker-Stream";
/// Request header carrying the JSON envelope ([`RpcRequest`]) of `worker.file_write_stream`,
/// whose body is the raw file content. See [`envelope_header_value`].
pub const ENVELOPE_HEADER: &str = "X-StacyVM-RPC";

pub mod method {
    pub const SPAWN: &str = "worker.spawn";
    pub const DESTROY: &str = "worker.destroy";
    pub const STATUS: &str = "worker.status";
    pub const EXEC: &str = "worker.exec";
    pub const EXEC_STREAM: &str = "worker.exec_stream";
    pub const FILE_WRITE: &str = "worker.file_write";
    pub const FILE_READ: &str = "worker.file_read";
    pub const FILE_LIST: &str = "worker.file_list";
    pub const FILE_DELETE: &str = "worker.file_delete";
    pub const FILE_MOVE: &str = "worker.file_move";
    pub const FILE_CHMOD: &str = "worker.file_chmod";
    pub const FILE_STAT: &str = "worker.file_stat";
    pub const FILE_GLOB: &str = "worker.file_glob";
    pub const LOGS: &str = "worker.logs";
    pub const RENEW_LEASE: &str = "worker.renew_lease";
    pub const SHUTDOWN: &str = "worker.shutdown";
    pub const HEARTBEAT: &str = "worker.heartbeat";
    /// Answers 200 with the raw file as `application/octet-stream` (`Content-Length` when
    /// known); failures are ordinary JSON responses.
    pub const FILE_READ_STREAM: &str = "worker.file_read_stream";
    /// Envelope in [`super::ENVELOPE_HEADER`], raw file content as the body; result
    /// [`super::FileWriteResult`].
    pub const FILE_WRITE_STREAM: &str = "worker.file_write_stream";

    /// Every method a worker dispatches, in a stable order (append-only).
    pub const ALL: [&str; 19] = [
        SPAWN,
        DESTROY,
        STATUS,
        EXEC,
        EXEC_STREAM,
        FILE_WRITE,
        FILE_READ,
        FILE_LIST,
        FILE_DELETE,
        FILE_MOVE,
        FILE_CHMOD,
        FILE_STAT,
        FILE_GLOB,
        LOGS,
        RENEW_LEASE,
        SHUTDOWN,
        HEARTBEAT,
        FILE_READ_STREAM,
        FILE_WRITE_STREAM,
    ];

    /// Methods that must carry a lease.
    pub fn needs_lease(m: &str) -> bool {
        matches!(m, SPAWN | DESTROY | RENEW_LEASE)
    }
}

fn is_zero_i64(n: &i64) -> bool {
    *n == 0
}

/// Error classes a worker reports in [`RpcResponse::code`].
pub mod code {
    pub const SANDBOX_NOT_FOUND: &str = "SANDBOX_NOT_FOUND";
    pub const FILE_NOT_FOUND: &str = "FILE_NOT_FOUND";
    pub const PROVIDER_NOT_FOUND: &str = "PROVIDER_NOT_FOUND";
    pub const BAD_REQUEST: &str = "BAD_REQUEST";
    pub const TIMEOUT: &str = "TIMEOUT";
    pub const LEASE_REJECTED: &str = "LEASE_REJECTED";
    pub const DRAINING: &str = "DRAINING";
    pub const UNAVAILABLE: &str = "UNAVAILABLE";
    pub const INTERNAL: &str = "INTERNAL";
}

/// Entries our workers add to heartbeat `capabilities` (besides `remote_worker`, `heartbeat`).
pub mod capability {
    /// Serves `worker.file_read_stream` and `worker.file_write_stream`; the control plane uses
    /// the buffered file methods with workers that do not say so.
    pub const FILE_STREAM: &str = "file_stream";
}

/// Keys our workers put in heartbeat `capacity` besides the original's `max_sandboxes`,
/// `max_sandboxes_per_owner`, `preview_domain` and `rpc_url`.
pub mod capacity {
    /// [`super::PROTOCOL_VERSION`] of the worker.
    pub const PROTOCOL_VERSION: &str = "protocol_version";
    /// The worker's heartbeat interval in milliseconds (the control plane's stale window is a
    /// multiple of it).
    pub const HEARTBEAT_INTERVAL_MS: &str = "heartbeat_interval_ms";
    /// Control-plane sandbox ids whose runtimes the worker holds (for reconciliation).
    pub const SANDBOXES: &str = "sandboxes";
}

/// Ownership proof for one resource (sandbox id). `expires_at` is RFC 3339.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseToken {
    pub resource_id: String,
    pub holder_id: String,
    pub generation: i64,
    pub expires_at: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RpcRequest {
    pub id: String,
    pub method: String,
    pub worker_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<LeaseToken>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RpcResponse {
    pub id: String,
    pub worker_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Our addition: a stable error class (see [`code`]) so the control plane can tell a missing
    /// file from a missing sandbox. Absent from the original Go worker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
}

/// Identifies the runtime a call targets. `runtime_id` falls back to `sandbox_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Target {
    pub sandbox_id: String,
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct SpawnParams {
    pub sandbox_id: String,
    pub image: String,
    pub provider: String,
    pub memory_mb: i64,
    pub vcpus: i64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub owner_id: String,
    /// Go duration text (`5m0s`).
    #[serde(default)]
    pub ttl: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ExecParams {
    #[serde(flatten)]
    pub target: Target,
    pub command: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mode: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub workdir: String,
    /// Go duration text; empty = none.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub timeout: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ExecResult {
    pub sandbox_id: String,
    pub exit_code: i64,
    pub stdout: String,
    pub stderr: String,
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

/// Parameters of the file methods; every file key is omitted when empty.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct FileParams {
    #[serde(flatten)]
    pub target: Target,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub path: String,
    /// Standard base64 with padding.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub content: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mode: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub recursive: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub old_path: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub new_path: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub pattern: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct FileInfo {
    pub path: String,
    pub size: i64,
    pub mode: String,
    pub is_dir: bool,
    pub mod_time: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct FileReadResult {
    pub sandbox_id: String,
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct FileStatResult {
    pub sandbox_id: String,
    pub file: FileInfo,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct FileGlobResult {
    pub sandbox_id: String,
    pub matches: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct LogsParams {
    #[serde(flatten)]
    pub target: Target,
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub lines: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct LogsResult {
    pub sandbox_id: String,
    pub lines: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct RenewLeaseParams {
    pub resource_id: String,
    /// Go duration text.
    pub ttl: String,
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

/// `req` as JSON for [`ENVELOPE_HEADER`]: non-ASCII characters are written as `\u` escapes so
/// the value is a valid header whatever the path contains (JSON escapes control characters
/// itself).
pub fn envelope_header_value(req: &RpcRequest) -> String {
    let json = serde_json::to_string(req).unwrap_or_default();
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{u:04x}"));
            }
        }
    }
    out
}

/// Standard base64 with padding (what the Go side's `[]byte` JSON encoding uses).
pub mod base64 {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

    pub fn encode(input: &[u8]) -> String {
        let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
        for chunk in input.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    fn val(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }

    /// Strict decode: padded, no whitespace.
    pub fn decode(input: &str) -> Option<Vec<u8>> {
        let s = input.as_bytes();
        if s.len() % 4 != 0 {
            return None;
        }
        let mut out = Vec::with_capacity(s.len() / 4 * 3);
        for (idx, q) in s.chunks(4).enumerate() {
            let last = idx == s.len() / 4 - 1;
            let pad = q.iter().rev().take_while(|&&c| c == b'=').count();
            if pad > 2 || (pad > 0 && !last) {
                return None;
            }
            let mut n = 0u32;
            for (i, &c) in q.iter().enumerate() {
                let v = if i >= 4 - pad { 0 } else { val(c)? };
                n = (n << 6) | v;
            }
            let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
            out.extend_from_slice(&bytes[..3 - pad]);
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trip() {
        for len in 0..70 {
            let data: Vec<u8> = (0..len).map(|i| (i * 37 % 256) as u8).collect();
            let enc = base64::encode(&data);
            assert_eq!(
                base64::decode(&enc).as_deref(),
                Some(&data[..]),
                "len {len}"
            );
        }
        assert_eq!(base64::encode(b"hello"), "aGVsbG8=");
        assert_eq!(base64::decode("aGVsbG8="), Some(b"hello".to_vec()));
        assert_eq!(base64::decode("aGVsbG8"), None);
        assert_eq!(base64::decode("a=GV"), None);
        assert_eq!(base64::decode("aGV*"), None);
    }

    #[test]
    fn target_runtime_fallback() {
        let mut t = Target {
            sandbox_id: "sb-1".into(),
            provider: "mock".into(),
            runtime_id: String::new(),
        };
        assert_eq!(t.runtime(), "sb-1");
        t.runtime_id = "rt".into();
        assert_eq!(t.runtime(), "rt");
    }

    #[test]
    fn envelope_header_is_ascii_and_round_trips() {
        let req = RpcRequest {
            id: "file-write-stream-sb-1".into(),
            method: method::FILE_WRITE_STREAM.into(),
            worker_id: "w".into(),
            lease: None,
            params: Some(serde_json::json!({"path": "/workspace/é 😀\n\"x\""})),
        };
        let v = envelope_header_value(&req);
        assert!(v.bytes().all(|b| (0x20..0x7f).contains(&b)), "{v}");
        let back: RpcRequest = serde_json::from_str(&v).expect("the header value is JSON");
        assert_eq!(back, req);
    }

    #[test]
    fn lease_methods() {
        assert!(method::needs_lease(method::SPAWN));
        assert!(!method::needs_lease(method::EXEC));
    }
}
