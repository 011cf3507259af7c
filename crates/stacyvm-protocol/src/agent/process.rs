//! Version 3: background processes (sandbox-model.md §1). The registry lives in the agent, so
//! a process outlives the host connection, the control plane and the worker; the host only
//! routes. Plain strings and numbers here (the agent links no domain crates); the host maps
//! them to `stacyvm_types` process types.
//!
//! Requests and answers:
//! - [`HostMsg::ProcStart`](super::HostMsg::ProcStart) → `Proc`
//! - `ProcList` → `Procs` (newest first, running and retained exited ones)
//! - `ProcGet { pid }` → `Proc`
//! - `ProcRead { pid, since, follow, window }` → `Records`* then `ReadEnd`. With `follow` the read
//!   stays open until the exit record was sent; `Cancel { target }` ends it early.
//! - `ProcStdin { pid, data, close }` → `Written { n }`
//! - `ProcSignal { pid, signal }` → `Proc`
//! - `ProcResize { pid, cols, rows }` → `Ok`
//!
//! Failures are `Error` with the process codes of [`ErrorCode`](super::ErrorCode).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Output the agent keeps per process unless the host asks for another size.
pub const DEFAULT_OUTPUT_BUFFER: u64 = 1 << 20;
/// Exited processes stay listed at least this long unless the host asks otherwise.
pub const DEFAULT_RETAIN_EXITED_MS: u64 = 10 * 60 * 1000;
/// Records per `Records` frame at most (a frame stays far below `MAX_FRAME_LEN`).
pub const MAX_RECORDS_PER_FRAME: usize = 64;

/// What to start. `argv` is literal (the host builds `sh -c ..` for shell mode); `command` and
/// `args` are what the client asked for, echoed back in [`AgentProc`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ProcStart {
    pub argv: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Empty = `/workspace`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub workdir: String,
    /// `None` = no limit. On expiry the process group gets KILL and the exit code is 124.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    #[serde(default)]
    pub tag: String,
    #[serde(default)]
    pub command: String,
    #[serde(default)]
    pub args: Vec<String>,
    /// Keep a stdin pipe open for `ProcStdin`. A PTY process always takes input.
    #[serde(default)]
    pub stdin: bool,
    /// Run on a new pseudo-terminal of this size (stdout and stderr merge into stream `pty`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pty: Option<AgentPty>,
    /// Bytes of output kept; `None` = [`DEFAULT_OUTPUT_BUFFER`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_buffer: Option<u64>,
    /// How long the exited process stays listed; `None` = [`DEFAULT_RETAIN_EXITED_MS`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retain_exited_ms: Option<u64>,
    /// Version 4: run as a 0.1 exec. Output is held for the readers instead of dropped (the
    /// process blocks writing while `output_buffer` bytes wait unsent), and the process group
    /// is killed when the main process exits, as exec always did. Holding stops when every
    /// reader went away before the exit.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub exec: bool,
    /// Version 5: after the `Proc` answer, the same request goes on as a `ProcRead` from 0
    /// with `follow` and this window (credit by `ReadCredit` on the start's id, `Cancel`
    /// ends it). Saves the read's round trip; an older agent ignores it and answers `Proc`
    /// alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_window: Option<u32>,
    /// Version 7: run as this account of the sandbox (a name in its `/etc/passwd`, or a
    /// numeric uid), with its groups, `HOME`, `USER` and `LOGNAME`; empty = the agent's own
    /// user. The host must not send it to an older agent, which would ignore it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentPty {
    pub cols: u16,
    pub rows: u16,
}

/// A process as the agent reports it. `state` is `running` or `exited`; `signal` a name
/// without `SIG` (`TERM`) when a signal ended it; times are Unix milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct AgentProc {
    pub pid: u32,
    pub tag: String,
    pub command: String,
    pub args: Vec<String>,
    pub pty: bool,
    pub stdin: bool,
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    pub started_at_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at_ms: Option<i64>,
    pub next_seq: u64,
}

/// One output record. `stream` is `stdout`, `stderr`, `pty`, `gap` or `exit`; `data` is base64
/// for the data streams; `dropped_bytes` is set on `gap`, `exit_code` (and `signal`) on `exit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct AgentRecord {
    pub seq: u64,
    pub stream: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub data: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropped_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
}
