//! The control plane ↔ worker contract (wire reference §9): requests ([`RpcCall`] inside an
//! [`RpcRequest`]), answers ([`RpcResponse`], [`RpcFailure`], [`ErrorCode`]), every method's
//! params and results, and the heartbeat bodies. Field names and omission rules match the
//! original Go worker so either side can talk to the other.

mod call;
mod failure;
mod messages;
pub mod ndjson;
mod process;
mod state;
mod watch;

pub use call::{RpcCall, RpcEnvelope, RpcRequest};
pub use failure::{ErrorCode, RpcFailure, RpcResponse};
pub use messages::*;
pub use process::*;
pub use state::*;
pub use watch::*;

/// Bumped only for additions that a peer may want to detect; see VERSIONING.md.
pub const PROTOCOL_VERSION: u32 = 1;
/// Header carrying [`PROTOCOL_VERSION`] on RPC requests and responses.
pub const PROTOCOL_HEADER: &str = "X-StacyVM-Protocol";
/// Request header asking `worker.exec_stream` for live NDJSON.
pub const STREAM_HEADER: &str = "X-Worker-Stream";
/// Request header carrying the JSON envelope ([`RpcRequest`]) of `worker.file_write_stream`,
/// whose body is the raw file content. See [`envelope_header_value`].
pub const ENVELOPE_HEADER: &str = "X-StacyVM-RPC";

/// Wire names of the methods ([`RpcCall::method`]).
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
    /// Background processes (sandbox-model.md §1). `PROCESS_OUTPUT` answers live NDJSON of
    /// [`super::RecordLine`] results; failures before the first line are JSON answers.
    pub const PROCESS_START: &str = "worker.process_start";
    pub const PROCESS_LIST: &str = "worker.process_list";
    pub const PROCESS_GET: &str = "worker.process_get";
    pub const PROCESS_OUTPUT: &str = "worker.process_output";
    pub const PROCESS_STDIN: &str = "worker.process_stdin";
    pub const PROCESS_SIGNAL: &str = "worker.process_signal";
    pub const PROCESS_RESIZE: &str = "worker.process_resize";
    /// Freeze and thaw a sandbox (docs/state.md); no result. `NOT_SUPPORTED` (409) when the
    /// worker's provider cannot.
    pub const PAUSE: &str = "worker.pause";
    pub const RESUME: &str = "worker.resume";
    /// A directory watch (docs/files.md): live NDJSON of `WatchEvent` results until the
    /// connection closes; failures before the first line are JSON answers.
    pub const WATCH_DIR: &str = "worker.watch_dir";
    /// Volumes and snapshots held by the worker (docs/state.md); served by workers with the
    /// [`super::capability::STATE`] capability.
    pub const VOLUME_CREATE: &str = "worker.volume_create";
    pub const VOLUME_DELETE: &str = "worker.volume_delete";
    pub const VOLUME_LIST: &str = "worker.volume_list";
    pub const SNAPSHOT: &str = "worker.snapshot";
    pub const SNAPSHOT_DELETE: &str = "worker.snapshot_delete";
    pub const SNAPSHOT_SWEEP: &str = "worker.snapshot_sweep";

    /// Every method a worker dispatches, in a stable order (append-only).
    pub const ALL: [&str; 35] = [
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
        PROCESS_START,
        PROCESS_LIST,
        PROCESS_GET,
        PROCESS_OUTPUT,
        PROCESS_STDIN,
        PROCESS_SIGNAL,
        PROCESS_RESIZE,
        PAUSE,
        RESUME,
        WATCH_DIR,
        VOLUME_CREATE,
        VOLUME_DELETE,
        VOLUME_LIST,
        SNAPSHOT,
        SNAPSHOT_DELETE,
        SNAPSHOT_SWEEP,
    ];

    /// Methods that must carry a lease.
    pub fn needs_lease(m: &str) -> bool {
        matches!(m, SPAWN | DESTROY | RENEW_LEASE)
    }
}

/// [`super::ErrorCode`]s as text.
pub mod code {
    use super::ErrorCode;

    pub const SANDBOX_NOT_FOUND: &str = ErrorCode::SandboxNotFound.as_str();
    pub const FILE_NOT_FOUND: &str = ErrorCode::FileNotFound.as_str();
    pub const PROVIDER_NOT_FOUND: &str = ErrorCode::ProviderNotFound.as_str();
    pub const BAD_REQUEST: &str = ErrorCode::BadRequest.as_str();
    pub const TIMEOUT: &str = ErrorCode::Timeout.as_str();
    pub const LEASE_REJECTED: &str = ErrorCode::LeaseRejected.as_str();
    pub const DRAINING: &str = ErrorCode::Draining.as_str();
    pub const UNAVAILABLE: &str = ErrorCode::Unavailable.as_str();
    pub const INTERNAL: &str = ErrorCode::Internal.as_str();
}

/// Entries our workers add to heartbeat `capabilities` (besides `remote_worker`, `heartbeat`).
pub mod capability {
    /// Serves `worker.file_read_stream` and `worker.file_write_stream`; the control plane uses
    /// the buffered file methods with workers that do not say so.
    pub const FILE_STREAM: &str = "file_stream";
    /// Serves the `worker.process_*` methods.
    pub const PROCESSES: &str = "processes";
    /// Serves `worker.watch_dir`; the control plane answers `NOT_SUPPORTED` for sandboxes on
    /// workers that do not say so (they would refuse the method as unknown).
    pub const WATCH: &str = "watch";
    /// Proxies preview requests to its sandboxes' ports ([`super::PREVIEW_ROUTE`]); the
    /// control plane answers 501 for sandboxes on workers that do not say so.
    pub const PREVIEW: &str = "preview";
    /// Honours `ExecParams.user`; the control plane refuses a user for sandboxes on workers
    /// that do not say so (they would ignore the field and run the command as the default).
    pub const USER: &str = "user";
    /// Serves the `worker.volume_*` and `worker.snapshot*` methods and honours
    /// `SpawnParams.volumes` and `.snapshot`; the control plane keeps volumes and snapshots
    /// off workers that do not say so.
    pub const STATE: &str = "state";
}

/// The worker's preview route: `{PREVIEW_ROUTE}/{sandbox_id}/{port}`, any method, the raw
/// HTTP request (body streamed, upgrades passed through) with the same credentials as `/rpc`
/// (docs/worker.md, "Previews"). The original request's path and query travel in
/// [`PREVIEW_PATH_HEADER`], never in the URL: a client's `..` segments must not be able to
/// turn a preview into another route of the worker.
pub const PREVIEW_ROUTE: &str = "/rpc/v1/preview";

/// The original path and query (origin form, from `/`) of a request on the preview route.
pub const PREVIEW_PATH_HEADER: &str = "x-stacyvm-preview-path";

/// The worker protocol's own headers (names, any case). A preview request carries only the
/// control plane's: a client's copies are dropped before the worker, and the worker drops them
/// all before the sandbox's server.
pub const WORKER_PROTOCOL_HEADERS: [&str; 6] = [
    "x-worker-id",
    "x-worker-token",
    PREVIEW_PATH_HEADER,
    PROTOCOL_HEADER,
    ENVELOPE_HEADER,
    STREAM_HEADER,
];

/// The worker path of a preview request for `port` of `sandbox_id`.
pub fn preview_path(sandbox_id: &str, port: u16) -> String {
    format!("{PREVIEW_ROUTE}/{sandbox_id}/{port}")
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

/// `req` as JSON for [`ENVELOPE_HEADER`]: non-ASCII characters are written as `\u` escapes so
/// the value is a valid header whatever the path contains (JSON escapes control characters
/// itself).
pub fn envelope_header_value(req: &impl serde::Serialize) -> String {
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

#[cfg(test)]
mod tests;
