//! Host ↔ guest agent protocol of the microvm provider, spoken over a virtio-serial port.
//!
//! Framing: `MAGIC` (4 bytes), body length (u32 big endian), then a JSON body. The host sends
//! [`HostFrame`]s, the agent answers with [`GuestFrame`]s carrying the request's `id`; several
//! requests may be in flight at once. The first exchange is always [`HostMsg::Hello`] →
//! [`GuestMsg::HelloAck`], which picks the highest version both sides speak. Byte payloads are
//! standard base64 (see [`crate::base64`]). Like the worker protocol, message kinds and fields
//! are append-only (VERSIONING.md); a changed meaning needs a new kind and a version bump.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, Read};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

mod process;
mod watch;
pub use process::{
    AgentProc, AgentPty, AgentRecord, ProcStart, DEFAULT_OUTPUT_BUFFER, DEFAULT_RETAIN_EXITED_MS,
    MAX_RECORDS_PER_FRAME,
};
pub use watch::{watch_kind, AgentWatchEvent, MAX_WATCH_EVENTS_PER_FRAME};

/// The newest agent protocol version this crate speaks. Version 2 added [`HostMsg::Identity`];
/// version 3 the background processes ([`process`], `Proc*` messages) and several host
/// connections at once (the agent's `--listen` socket); version 4 exec as a process
/// (`ProcStart.exec`, windowed reads and [`HostMsg::ReadCredit`]); version 5 the read started
/// with the process (`ProcStart.read_window`); version 6 directory watches ([`watch`],
/// [`HostMsg::Watch`]); version 7 processes run as another user (`ProcStart.user`).
pub const AGENT_PROTOCOL_VERSION: u32 = 7;
/// The first version with background processes.
pub const AGENT_PROCESS_VERSION: u32 = 3;
/// The first version that runs an exec as a process without losing output.
pub const AGENT_EXEC_VERSION: u32 = 4;
/// The first version that starts a process and its read in one request.
pub const AGENT_START_READ_VERSION: u32 = 5;
/// The first version with directory watches. An older agent answers an unknown request with an
/// `Error` under [`EVENT_ID`], not under the request's id, so the host must not send it one.
pub const AGENT_WATCH_VERSION: u32 = 6;
/// The first version that runs a process as another user (`ProcStart.user`).
pub const AGENT_USER_VERSION: u32 = 7;
/// The oldest version this crate still speaks.
pub const AGENT_PROTOCOL_MIN_VERSION: u32 = 1;
/// Name of the virtio-serial port the agent listens on (`/sys/class/virtio-ports/*/name`).
pub const PORT_NAME: &str = "org.stacyvm.agent";
/// Start of every frame; lets a reader notice a desynchronised stream instead of allocating a
/// bogus length.
pub const MAGIC: [u8; 4] = *b"SVA1";
/// Largest frame body accepted (file chunks stay well below it).
pub const MAX_FRAME_LEN: usize = 4 << 20;
/// Raw bytes per file chunk in either direction (base64 grows it by a third).
pub const FILE_CHUNK: usize = 512 * 1024;
/// Raw bytes per exec output chunk.
pub const OUTPUT_CHUNK: usize = 32 * 1024;
/// Frame id of unsolicited agent events (log lines).
pub const EVENT_ID: u64 = 0;

/// A request from the host. `id` is chosen by the host, unique per connection, never 0.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostFrame {
    pub id: u64,
    #[serde(flatten)]
    pub msg: HostMsg,
}

/// A reply or event from the agent; replies carry the id of their request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GuestFrame {
    pub id: u64,
    #[serde(flatten)]
    pub msg: GuestMsg,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum HostMsg {
    /// Opens a session: the inclusive version range the host speaks, and the sandbox identity.
    Hello {
        min_version: u32,
        max_version: u32,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        hostname: String,
    },
    /// Liveness probe; answered by `Pong`.
    Ping,
    /// Runs a process; answered by `Output`* then `Exit` or `TimedOut` (or `Error`).
    Exec(ExecStart),
    /// Kills the process group of the exec with request id `target`, or stops the glob, read
    /// or watch with that id (agents older than this comment ignore a glob's id: their glob
    /// runs to its end). Answered by `Ok` whether or not `target` was running.
    Cancel { target: u64 },
    /// Starts a file write (parents created, mode applied at commit); answered by `Opened`.
    WriteOpen {
        path: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mode: Option<u32>,
    },
    /// Appends base64 `data` to an open write; answered by `Ok`.
    WriteChunk { handle: u64, data: String },
    /// `commit`: atomically replaces the target; otherwise discards. Answered by `Ok`.
    WriteClose { handle: u64, commit: bool },
    /// Reads up to `len` bytes at `offset`; answered by `Data`.
    Read { path: String, offset: u64, len: u64 },
    /// Directory entries; answered by `Entries`.
    List { path: String },
    /// Answered by `Stat`.
    Stat { path: String },
    /// Absolute glob pattern (`*`, `?`, `[..]` per component); answered by `Matches`. The walk
    /// never enters a symlink below the pattern's literal prefix; past its limits (entries
    /// looked at, time) it answers `Error` `invalid_input` naming the limit.
    Glob { pattern: String },
    /// Answered by `Ok`; a missing path is `NotFound` unless `recursive`.
    Delete { path: String, recursive: bool },
    /// Renames, creating the destination's parents; answered by `Ok`.
    Move { from: String, to: String },
    /// Permission bits (≤ 0o7777); answered by `Ok`.
    Chmod { path: String, mode: u32 },
    /// Version 2. Gives a VM restored from a snapshot its own identity: every VM cloned from one
    /// template starts with the same hostname, machine id and random state. Empty fields are
    /// left alone. Answered by `Ok`, or by `Error` naming the first step that failed.
    Identity(Identity),
    /// Version 3. Starts a background process; answered by `Proc`.
    ProcStart(ProcStart),
    /// Answered by `Procs`.
    ProcList,
    /// Answered by `Proc`.
    ProcGet { pid: u32 },
    /// Output records with `seq >= since`; answered by `Records`* then `ReadEnd`. A gap record
    /// comes first when `since` is older than what is retained. With `follow` the read waits
    /// for new output until the exit record was sent (or a `Cancel` names this request).
    ///
    /// Version 4: with `window`, at most that many `Records` frames go out before the host
    /// returns credit with [`HostMsg::ReadCredit`] (the read then waits, and an `exec`
    /// process's output waits with it).
    ProcRead {
        pid: u32,
        since: u64,
        follow: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        window: Option<u32>,
    },
    /// Version 4: `frames` more `Records` frames may go out for the windowed read `target`;
    /// not answered.
    ReadCredit { target: u64, frames: u32 },
    /// Appends base64 `data` to the process's stdin (or its PTY), then closes stdin if `close`;
    /// answered by `Written`.
    ProcStdin {
        pid: u32,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        data: String,
        #[serde(default)]
        close: bool,
    },
    /// Sends `signal` (a name without `SIG`) to the process group; answered by `Proc`.
    ProcSignal { pid: u32, signal: String },
    /// Resizes a PTY process's terminal; answered by `Ok`.
    ProcResize { pid: u32, cols: u16, rows: u16 },
    /// Version 6. Watches the directory `path` (and, with `recursive`, every directory below
    /// it, including ones created later); answered by `Watching`, then `WatchEvents`* until
    /// `Cancel` names this request (then `WatchEnd`). See [`watch`].
    Watch {
        path: String,
        #[serde(default)]
        recursive: bool,
    },
}

/// New identity of a restored VM ([`HostMsg::Identity`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Identity {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub hostname: String,
    /// Random bytes (base64, at most [`MAX_SEED`]) credited to the guest's entropy pool, after
    /// which the kernel's generator is reseeded, so clones stop sharing random output at once.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub seed: String,
    /// New `/etc/machine-id` of the sandbox root: 32 lowercase hex digits.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub machine_id: String,
    /// The host's wall clock (Unix milliseconds): a restored guest's clock is that of the
    /// snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unix_time_ms: Option<u64>,
}

/// Largest [`Identity::seed`] in raw bytes.
pub const MAX_SEED: usize = 512;

impl Identity {
    /// Whether `id` is a valid machine id (32 lowercase hex digits, not all zero).
    pub fn valid_machine_id(id: &str) -> bool {
        id.len() == 32
            && id
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            && id.bytes().any(|b| b != b'0')
    }
}

/// What to run. `argv` is literal: shell mode is `["sh", "-c", ..]` built by the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ExecStart {
    pub argv: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Empty = `/workspace`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub workdir: String,
    /// `None` = no limit; on expiry the whole process group is killed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputStream {
    Stdout,
    Stderr,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum GuestMsg {
    HelloAck {
        version: u32,
        agent_version: String,
    },
    Pong,
    /// A chunk of live exec output (base64).
    Output {
        stream: OutputStream,
        data: String,
    },
    /// The exec finished: its code, or `128 + signal`.
    Exit {
        code: i32,
    },
    /// The exec hit its timeout; its process group was killed.
    TimedOut,
    Ok,
    Opened {
        handle: u64,
    },
    /// File bytes (base64); `eof` when nothing follows `offset + len(data)`.
    Data {
        data: String,
        eof: bool,
    },
    Entries {
        files: Vec<AgentFileInfo>,
    },
    Stat {
        file: AgentFileInfo,
    },
    Matches {
        paths: Vec<String>,
    },
    Error {
        code: ErrorCode,
        message: String,
    },
    /// A console log line of the agent (id [`EVENT_ID`]).
    Log {
        line: String,
    },
    /// Version 3: one process.
    Proc {
        proc: AgentProc,
    },
    /// Version 3: the processes the agent keeps, newest first.
    Procs {
        procs: Vec<AgentProc>,
    },
    /// Version 3: output records of a `ProcRead`, in `seq` order.
    Records {
        records: Vec<AgentRecord>,
    },
    /// Version 3: a `ProcRead` is complete.
    ReadEnd,
    /// Version 3: bytes accepted by `ProcStdin`.
    Written {
        n: u64,
    },
    /// Version 6: the watch is in place; changes from now on are reported.
    Watching,
    /// Version 6: changes seen by a `Watch`, in the order the kernel reported them.
    WatchEvents {
        events: Vec<AgentWatchEvent>,
    },
    /// Version 6: a `Watch` is over (cancelled, or its directory was removed).
    WatchEnd,
}

/// A file as the agent sees it. `mode` is the full `st_mode`; `mtime` is Unix seconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct AgentFileInfo {
    pub path: String,
    pub size: u64,
    pub mode: u32,
    pub is_dir: bool,
    pub mtime: i64,
}

impl AgentFileInfo {
    /// Permission bits only.
    pub fn perm(&self) -> u32 {
        self.mode & 0o7777
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    NotFound,
    InvalidInput,
    /// No common protocol version, or a request before the handshake.
    Version,
    /// An unknown handle or request id.
    Unknown,
    Io,
    /// Version 3: no process with that pid is kept.
    ProcessNotFound,
    /// Version 3: the process was started without stdin, or its stdin was closed.
    StdinClosed,
    /// Version 3: the process has exited.
    ProcessExited,
    /// Version 3: resize of a process without a PTY.
    NotAPty,
    /// Version 3: the request would queue more than the agent keeps waiting (stdin the
    /// process does not read); retry once it has read some.
    Busy,
}

/// The version a host speaking `host_min..=host_max` and this crate agree on, if any.
pub fn negotiate(host_min: u32, host_max: u32) -> Option<u32> {
    let v = host_max.min(AGENT_PROTOCOL_VERSION);
    (v >= host_min.max(AGENT_PROTOCOL_MIN_VERSION)).then_some(v)
}

#[derive(Debug)]
pub enum FrameError {
    Io(io::Error),
    BadMagic([u8; 4]),
    TooLarge(usize),
    Json(serde_json::Error),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Io(e) => write!(f, "frame i/o: {e}"),
            FrameError::BadMagic(m) => write!(f, "bad frame magic {m:?}"),
            FrameError::TooLarge(n) => write!(f, "frame of {n} bytes exceeds {MAX_FRAME_LEN}"),
            FrameError::Json(e) => write!(f, "frame body: {e}"),
        }
    }
}

impl std::error::Error for FrameError {}

/// Header plus JSON body of `msg`.
pub fn encode_frame<T: Serialize>(msg: &T) -> Result<Vec<u8>, FrameError> {
    let body = serde_json::to_vec(msg).map_err(FrameError::Json)?;
    if body.len() > MAX_FRAME_LEN {
        return Err(FrameError::TooLarge(body.len()));
    }
    let len = u32::try_from(body.len()).map_err(|_| FrameError::TooLarge(body.len()))?;
    let mut out = Vec::with_capacity(8 + body.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// The body length announced by a frame header.
pub fn parse_header(h: &[u8; 8]) -> Result<usize, FrameError> {
    let magic = [h[0], h[1], h[2], h[3]];
    if magic != MAGIC {
        return Err(FrameError::BadMagic(magic));
    }
    let len = u32::from_be_bytes([h[4], h[5], h[6], h[7]]) as usize;
    if len > MAX_FRAME_LEN {
        return Err(FrameError::TooLarge(len));
    }
    Ok(len)
}

pub fn decode_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, FrameError> {
    serde_json::from_slice(body).map_err(FrameError::Json)
}

/// Reads one frame; `Ok(None)` on end of stream before a header starts.
pub fn read_frame<R: Read, T: DeserializeOwned>(r: &mut R) -> Result<Option<T>, FrameError> {
    let mut h = [0u8; 8];
    let mut got = 0;
    while got < h.len() {
        match r.read(&mut h[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(FrameError::Io(io::ErrorKind::UnexpectedEof.into())),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(FrameError::Io(e)),
        }
    }
    let len = parse_header(&h)?;
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).map_err(FrameError::Io)?;
    decode_body(&body).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let f = HostFrame {
            id: 7,
            msg: HostMsg::Exec(ExecStart {
                argv: vec!["sh".into(), "-c".into(), "true".into()],
                timeout_ms: Some(5),
                ..Default::default()
            }),
        };
        let bytes = encode_frame(&f).expect("encode");
        let mut twice = bytes.clone();
        twice.extend_from_slice(&bytes);
        let mut r = &twice[..];
        let a: Option<HostFrame> = read_frame(&mut r).expect("first");
        let b: Option<HostFrame> = read_frame(&mut r).expect("second");
        assert_eq!(a.as_ref(), Some(&f));
        assert_eq!(b.as_ref(), Some(&f));
        let end: Option<HostFrame> = read_frame(&mut r).expect("eof");
        assert_eq!(end, None);
    }

    #[test]
    fn bad_frames_are_errors() {
        let mut r = &b"XXXX\0\0\0\x02{}"[..];
        assert!(matches!(
            read_frame::<_, HostFrame>(&mut r),
            Err(FrameError::BadMagic(_))
        ));
        let mut h = MAGIC.to_vec();
        h.extend_from_slice(&u32::MAX.to_be_bytes());
        let mut r = &h[..];
        assert!(matches!(
            read_frame::<_, HostFrame>(&mut r),
            Err(FrameError::TooLarge(_))
        ));
        let mut r = &b"SVA1\0\0"[..];
        assert!(matches!(
            read_frame::<_, HostFrame>(&mut r),
            Err(FrameError::Io(_))
        ));
    }

    #[test]
    fn version_negotiation() {
        assert_eq!(negotiate(1, 1), Some(1));
        assert_eq!(negotiate(1, 9), Some(AGENT_PROTOCOL_VERSION));
        assert_eq!(negotiate(AGENT_PROTOCOL_VERSION + 1, 9), None);
        assert_eq!(negotiate(0, 0), None);
        assert_eq!(negotiate(1, 2), Some(2));
        assert_eq!(negotiate(1, 3), Some(3));
        assert_eq!(negotiate(1, AGENT_WATCH_VERSION), Some(AGENT_WATCH_VERSION));
    }

    #[test]
    fn watch_messages_round_trip() {
        let host = HostFrame {
            id: 4,
            msg: HostMsg::Watch {
                path: "/workspace".into(),
                recursive: true,
            },
        };
        let json = serde_json::to_string(&host).expect("encode");
        assert_eq!(
            json,
            r#"{"id":4,"op":"watch","path":"/workspace","recursive":true}"#
        );
        let short: HostFrame =
            serde_json::from_str(r#"{"id":4,"op":"watch","path":"/w"}"#).expect("decode");
        assert_eq!(
            short.msg,
            HostMsg::Watch {
                path: "/w".into(),
                recursive: false
            }
        );
        for msg in [
            GuestMsg::Watching,
            GuestMsg::WatchEvents {
                events: vec![AgentWatchEvent {
                    name: "sub/a.txt".into(),
                    kind: watch_kind::CREATE.into(),
                }],
            },
            GuestMsg::WatchEnd,
        ] {
            let f = GuestFrame { id: 4, msg };
            let bytes = encode_frame(&f).expect("encode");
            let back: Option<GuestFrame> = read_frame(&mut &bytes[..]).expect("decode");
            assert_eq!(back.as_ref(), Some(&f));
        }
    }

    #[test]
    fn process_messages_round_trip() {
        let msgs = [
            HostMsg::ProcStart(ProcStart {
                argv: vec!["sh".into(), "-c".into(), "cat".into()],
                tag: "dev".into(),
                stdin: true,
                pty: Some(AgentPty { cols: 80, rows: 24 }),
                ..Default::default()
            }),
            HostMsg::ProcList,
            HostMsg::ProcGet { pid: 7 },
            HostMsg::ProcRead {
                pid: 7,
                since: 3,
                follow: true,
                window: None,
            },
            HostMsg::ProcRead {
                pid: 7,
                since: 0,
                follow: true,
                window: Some(4),
            },
            HostMsg::ReadCredit {
                target: 9,
                frames: 1,
            },
            HostMsg::ProcStdin {
                pid: 7,
                data: "aGk=".into(),
                close: true,
            },
            HostMsg::ProcSignal {
                pid: 7,
                signal: "TERM".into(),
            },
            HostMsg::ProcResize {
                pid: 7,
                cols: 100,
                rows: 30,
            },
        ];
        for msg in msgs {
            let f = HostFrame { id: 9, msg };
            let bytes = encode_frame(&f).expect("encode");
            let back: Option<HostFrame> = read_frame(&mut &bytes[..]).expect("decode");
            assert_eq!(back.as_ref(), Some(&f));
        }
        let replies = [
            GuestMsg::Proc {
                proc: AgentProc {
                    pid: 7,
                    state: "running".into(),
                    ..Default::default()
                },
            },
            GuestMsg::Procs { procs: vec![] },
            GuestMsg::Records {
                records: vec![AgentRecord {
                    seq: 0,
                    stream: "gap".into(),
                    dropped_bytes: Some(5),
                    ..Default::default()
                }],
            },
            GuestMsg::ReadEnd,
            GuestMsg::Written { n: 2 },
            GuestMsg::Error {
                code: ErrorCode::NotAPty,
                message: "x".into(),
            },
        ];
        for msg in replies {
            let f = GuestFrame { id: 9, msg };
            let bytes = encode_frame(&f).expect("encode");
            let back: Option<GuestFrame> = read_frame(&mut &bytes[..]).expect("decode");
            assert_eq!(back.as_ref(), Some(&f));
        }
        let json = serde_json::to_string(&HostFrame {
            id: 1,
            msg: HostMsg::ProcGet { pid: 4 },
        })
        .expect("encode");
        assert_eq!(json, r#"{"id":1,"op":"proc_get","pid":4}"#);
    }

    #[test]
    fn identity_fields() {
        let f = HostFrame {
            id: 3,
            msg: HostMsg::Identity(Identity {
                hostname: "sb-1".into(),
                ..Default::default()
            }),
        };
        let json = serde_json::to_string(&f).expect("encode");
        assert_eq!(json, r#"{"id":3,"op":"identity","hostname":"sb-1"}"#);
        assert!(Identity::valid_machine_id(
            "0123456789abcdef0123456789abcdef"
        ));
        for bad in [
            "",
            "0123456789ABCDEF0123456789ABCDEF",
            "00000000000000000000000000000000",
            "0123456789abcdef0123456789abcde",
            "0123456789abcdef0123456789abcdeg",
        ] {
            assert!(!Identity::valid_machine_id(bad), "{bad}");
        }
    }
}
