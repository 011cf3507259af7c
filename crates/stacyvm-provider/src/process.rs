//! Background processes (sandbox-model.md §1) as providers see them: what to start, and the
//! stream of output records a read returns. The process registry lives where the process runs
//! (the in-sandbox agent), never in the provider object, so processes outlive the control plane.

use std::time::Duration;

use futures_util::stream::BoxStream;
use stacyvm_types::{OutputRecord, PtySize};

use crate::{ExecRequest, ProviderError};

/// What `Provider::process_start` runs.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ProcessSpec {
    /// Command, mode, env, workdir and timeout, as for exec. On timeout the process group is
    /// killed and the process exits with 124.
    pub exec: ExecRequest,
    pub tag: String,
    /// Keep a stdin pipe open for `process_stdin` (a PTY process always takes input).
    pub stdin: bool,
    pub pty: Option<PtySize>,
    /// Bytes of output kept (`processes.output_buffer`); `None` = the agent's default, 1 MiB.
    pub output_buffer: Option<u64>,
    /// How long an exited process stays listed (`processes.retain_exited`); `None` = 10 min.
    pub retain_exited: Option<Duration>,
}

/// Output records in `seq` order (a gap record first when output was dropped). With `follow`
/// the stream ends after the exit record; dropping it ends the read, never the process.
pub type RecordStream = BoxStream<'static, Result<OutputRecord, ProviderError>>;

/// The answer of a backend without background processes.
pub(crate) fn unsupported(provider: &str) -> ProviderError {
    ProviderError::Unavailable(format!(
        "provider {provider} does not run background processes"
    ))
}
