//! Background processes (sandbox-model.md §1): the Process object, output records, signals and
//! terminal sizes, as every layer (agent, provider, worker RPC, HTTP) sees them.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A process id, unique within its sandbox for the sandbox's life (the in-sandbox OS pid).
pub type Pid = u32;

/// Largest accepted terminal dimension; larger sizes are rejected at the edge.
pub const MAX_PTY_DIM: u16 = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PtySize {
    pub cols: u16,
    pub rows: u16,
}

impl PtySize {
    /// Both dimensions in `1..=MAX_PTY_DIM`.
    pub fn valid(self) -> bool {
        (1..=MAX_PTY_DIM).contains(&self.cols) && (1..=MAX_PTY_DIM).contains(&self.rows)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum ProcessState {
    Running,
    Exited,
}

/// The signals a client may send. Parsed with or without the `SIG` prefix, case-insensitive;
/// always written without it (`"TERM"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Signal {
    Term,
    Kill,
    Int,
    Hup,
    Quit,
    Usr1,
    Usr2,
    Stop,
    Cont,
}

impl Signal {
    pub const ALL: [Signal; 9] = [
        Signal::Term,
        Signal::Kill,
        Signal::Int,
        Signal::Hup,
        Signal::Quit,
        Signal::Usr1,
        Signal::Usr2,
        Signal::Stop,
        Signal::Cont,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Signal::Term => "TERM",
            Signal::Kill => "KILL",
            Signal::Int => "INT",
            Signal::Hup => "HUP",
            Signal::Quit => "QUIT",
            Signal::Usr1 => "USR1",
            Signal::Usr2 => "USR2",
            Signal::Stop => "STOP",
            Signal::Cont => "CONT",
        }
    }

    /// The Linux signal number.
    pub const fn number(self) -> i32 {
        match self {
            Signal::Hup => 1,
            Signal::Int => 2,
            Signal::Quit => 3,
            Signal::Kill => 9,
            Signal::Usr1 => 10,
            Signal::Usr2 => 12,
            Signal::Term => 15,
            Signal::Cont => 18,
            Signal::Stop => 19,
        }
    }

    /// `TERM`, `SIGTERM`, `term`; `None` for anything else.
    pub fn parse(s: &str) -> Option<Signal> {
        let up = s.trim().to_ascii_uppercase();
        let name = up.strip_prefix("SIG").unwrap_or(&up);
        Signal::ALL.into_iter().find(|g| g.as_str() == name)
    }

    /// The signal with Linux number `n`, if it is one of ours.
    pub fn from_number(n: i32) -> Option<Signal> {
        Signal::ALL.into_iter().find(|g| g.number() == n)
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Signal {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Signal {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Signal::parse(&s).ok_or_else(|| serde::de::Error::custom(format!("unknown signal {s:?}")))
    }
}

/// The Process object of the API. A process that died of a signal not in [`Signal`] reports
/// `signal: None` and `exit_code` 128+N.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessInfo {
    pub pid: Pid,
    pub tag: String,
    pub command: String,
    pub args: Vec<String>,
    pub pty: bool,
    pub stdin: bool,
    pub state: ProcessState,
    pub exit_code: Option<i32>,
    pub signal: Option<Signal>,
    /// Unix milliseconds (the HTTP layer writes RFC 3339).
    pub started_at_ms: i64,
    pub ended_at_ms: Option<i64>,
    /// The `seq` the next output record will carry.
    pub next_seq: u64,
}

/// Where an output record's bytes came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputStream {
    Stdout,
    Stderr,
    Pty,
}

/// One record of a process's output log. `seq` only increases, one per record; a reader that
/// saw record `n` resumes with `since = n + 1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputRecord {
    Data {
        seq: u64,
        stream: OutputStream,
        data: Vec<u8>,
    },
    /// Records older than the buffer keeps were asked for: `dropped_bytes` of output are gone.
    /// Always the first record of a read when present; its `seq` is the first retained one.
    Gap { seq: u64, dropped_bytes: u64 },
    /// The last record of a process.
    Exit {
        seq: u64,
        exit_code: i32,
        signal: Option<Signal>,
    },
}

impl OutputRecord {
    pub fn seq(&self) -> u64 {
        match self {
            OutputRecord::Data { seq, .. }
            | OutputRecord::Gap { seq, .. }
            | OutputRecord::Exit { seq, .. } => *seq,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_parse_with_or_without_prefix() {
        for g in Signal::ALL {
            assert_eq!(Signal::parse(g.as_str()), Some(g));
            assert_eq!(Signal::parse(&format!("SIG{}", g.as_str())), Some(g));
            assert_eq!(Signal::parse(&g.as_str().to_lowercase()), Some(g));
            assert_eq!(Signal::from_number(g.number()), Some(g));
        }
        assert_eq!(Signal::parse("SIGSEGV"), None);
        assert_eq!(Signal::parse(""), None);
        assert_eq!(Signal::parse("SIG"), None);
    }

    #[test]
    fn pty_size_bounds() {
        assert!(PtySize { cols: 80, rows: 24 }.valid());
        assert!(!PtySize { cols: 0, rows: 24 }.valid());
        assert!(!PtySize {
            cols: 80,
            rows: MAX_PTY_DIM + 1
        }
        .valid());
    }
}
