//! Domain vocabulary shared by every StacyVM crate. Pure data and parsing, no I/O.

mod capped;
mod duration;
mod event;
mod id;
mod ids;
mod preview;
mod process;
mod sandbox;
mod state;
mod time;
mod watch;

pub use capped::{json_len, CappedOutput, Collected, DEFAULT_MAX_EXEC_OUTPUT};
pub use duration::{format_go_duration, parse_go_duration, DurationError, GoDuration};
pub use event::{EventKind, UnknownEventKind};
pub use id::{new_sandbox_id, validate_owner_id, validate_user, InvalidUser, OwnerIdError};
pub use ids::{Placement, SandboxId, WorkerId};
pub use preview::PreviewToken;
pub use process::{
    OutputRecord, OutputStream, Pid, ProcessInfo, ProcessState, PtySize, Signal, MAX_PTY_DIM,
};
pub use sandbox::{
    ExecMode, FileInfo, Lifecycle, OnExpire, Sandbox, StreamChunk, StreamKind, TIMEOUT_EXIT_CODE,
};
pub use state::{InvalidTransition, SandboxState, UnknownState};
pub use time::{format_rfc3339_go, format_rfc3339_secs, parse_rfc3339, serde_go, Timestamp};
pub use watch::{WatchEvent, WatchKind};
