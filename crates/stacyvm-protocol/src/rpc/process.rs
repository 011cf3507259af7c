//! Params and results of the background-process methods (sandbox-model.md §1): the control
//! plane forwards each process route of a remote sandbox as one call. `worker.process_output`
//! answers live NDJSON, one [`RpcResponse`](super::RpcResponse) per line whose `result` is a
//! [`RecordLine`], as `worker.exec_stream` does with its chunks.

use serde::{Deserialize, Serialize};
use stacyvm_types::{OutputRecord, OutputStream, Pid, ProcessInfo, PtySize, Signal};

use super::messages::{ExecParams, Target};

/// Params of `worker.process_start`: the command as for exec, and the process options.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessStartParams {
    #[serde(flatten)]
    pub exec: ExecParams,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tag: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stdin: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pty: Option<PtySize>,
    /// Bytes of output kept; absent = the worker's provider default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_buffer: Option<u64>,
    /// Milliseconds an exited process stays listed; absent = the provider default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retain_exited_ms: Option<u64>,
    /// Start and follow in one call: the answer is NDJSON, a first line whose `result` is the
    /// [`ProcessResult`], then the records from 0 as `worker.process_output` sends them. A
    /// worker without it answers the plain JSON `ProcessResult` (the caller then reads).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub follow: bool,
}

/// Params of the methods about one process (`process_get`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessParams {
    #[serde(flatten)]
    pub target: Target,
    pub pid: Pid,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessOutputParams {
    #[serde(flatten)]
    pub target: Target,
    pub pid: Pid,
    #[serde(default)]
    pub since: u64,
    #[serde(default)]
    pub follow: bool,
}

/// Params of `worker.process_stdin`: the bytes travel as standard base64.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessStdinParams {
    #[serde(flatten)]
    pub target: Target,
    pub pid: Pid,
    #[serde(default, with = "super::messages::base64_content")]
    pub data: Vec<u8>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub close: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessSignalParams {
    #[serde(flatten)]
    pub target: Target,
    pub pid: Pid,
    pub signal: Signal,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessResizeParams {
    #[serde(flatten)]
    pub target: Target,
    pub pid: Pid,
    pub cols: u16,
    pub rows: u16,
}

/// Result of `process_start`, `process_get` and `process_signal`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessResult {
    pub sandbox_id: String,
    pub process: ProcessInfo,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ProcessListResult {
    pub sandbox_id: String,
    pub processes: Vec<ProcessInfo>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ProcessStdinResult {
    pub sandbox_id: String,
    pub written: u64,
}

/// One output record on the wire (the agent protocol's shape): `stream` is `stdout`, `stderr`,
/// `pty`, `gap` or `exit`; `data` base64 (exact bytes); `dropped_bytes` on `gap`; `exit_code`
/// and `signal` on `exit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct RecordLine {
    pub seq: u64,
    pub stream: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub data: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropped_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<Signal>,
}

impl From<&OutputRecord> for RecordLine {
    fn from(r: &OutputRecord) -> Self {
        match r {
            OutputRecord::Data { seq, stream, data } => RecordLine {
                seq: *seq,
                stream: match stream {
                    OutputStream::Stdout => "stdout",
                    OutputStream::Stderr => "stderr",
                    OutputStream::Pty => "pty",
                }
                .into(),
                data: crate::base64::encode(data),
                ..RecordLine::default()
            },
            OutputRecord::Gap { seq, dropped_bytes } => RecordLine {
                seq: *seq,
                stream: "gap".into(),
                dropped_bytes: Some(*dropped_bytes),
                ..RecordLine::default()
            },
            OutputRecord::Exit {
                seq,
                exit_code,
                signal,
            } => RecordLine {
                seq: *seq,
                stream: "exit".into(),
                exit_code: Some(*exit_code),
                signal: *signal,
                ..RecordLine::default()
            },
        }
    }
}

impl RecordLine {
    /// The record, or `None` for an unknown stream or undecodable data.
    pub fn into_record(self) -> Option<OutputRecord> {
        let data = |s: &str| crate::base64::decode(s);
        Some(match self.stream.as_str() {
            "stdout" => OutputRecord::Data {
                seq: self.seq,
                stream: OutputStream::Stdout,
                data: data(&self.data)?,
            },
            "stderr" => OutputRecord::Data {
                seq: self.seq,
                stream: OutputStream::Stderr,
                data: data(&self.data)?,
            },
            "pty" => OutputRecord::Data {
                seq: self.seq,
                stream: OutputStream::Pty,
                data: data(&self.data)?,
            },
            "gap" => OutputRecord::Gap {
                seq: self.seq,
                dropped_bytes: self.dropped_bytes.unwrap_or_default(),
            },
            "exit" => OutputRecord::Exit {
                seq: self.seq,
                exit_code: self.exit_code?,
                signal: self.signal,
            },
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let recs = [
            OutputRecord::Data {
                seq: 3,
                stream: OutputStream::Pty,
                data: b"\x00\xff".to_vec(),
            },
            OutputRecord::Gap {
                seq: 10,
                dropped_bytes: 10,
            },
            OutputRecord::Exit {
                seq: 12,
                exit_code: 143,
                signal: Some(Signal::Term),
            },
        ];
        for r in recs {
            let line = RecordLine::from(&r);
            let json = serde_json::to_string(&line).unwrap_or_default();
            let back: RecordLine = serde_json::from_str(&json).unwrap_or_default();
            assert_eq!(back.into_record(), Some(r), "{json}");
        }
        let bad = RecordLine {
            stream: "video".into(),
            ..RecordLine::default()
        };
        assert_eq!(bad.into_record(), None);
    }
}
