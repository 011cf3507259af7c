//! The seven process calls of [`crate::Provider`] over an [`AgentConn`]: the one
//! implementation every provider routes through. The registry itself lives in the agent; this
//! only translates (ProcessSpec → `ProcStart`, `AgentProc` → `ProcessInfo`, base64 records →
//! `OutputRecord`, agent error codes → `ProviderError`).

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use stacyvm_protocol::agent::{
    AgentProc, AgentPty, AgentRecord, ErrorCode, GuestMsg, HostMsg, ProcStart,
    AGENT_PROCESS_VERSION, AGENT_USER_VERSION,
};
use stacyvm_protocol::base64;
use stacyvm_types::{OutputRecord, OutputStream, Pid, ProcessInfo, ProcessState, PtySize, Signal};

use super::conn::{AbortOnDrop, AgentConn, BoundedRx, ConnError};
use super::unexpected;
use crate::{ProcessSpec, ProviderError, RecordStream};

/// Deadline of one process request (not of a read, which may follow for as long as it likes).
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Stdin goes out in pieces of at most this many bytes, so a frame stays below the limit.
const STDIN_CHUNK: usize = 512 * 1024;

/// [`start_msg`] for an agent that runs at the sandbox's own root (docker, bwrap): the
/// environment checked (it goes to the kernel as given), the workdir cleaned to an absolute
/// path in the sandbox, `workspace` when none is asked.
#[cfg(any(feature = "docker", feature = "bwrap"))]
pub(crate) fn start_msg_rooted(
    spec: &ProcessSpec,
    workspace: &str,
) -> Result<ProcStart, ProviderError> {
    let mut msg = start_msg(spec)?;
    for (k, v) in &msg.env {
        if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
            return Err(ProviderError::InvalidInput(format!(
                "invalid environment variable {k:?}"
            )));
        }
    }
    msg.workdir = match spec.exec.workdir.as_deref().map(str::trim) {
        None | Some("") => workspace.to_string(),
        Some(w) => crate::walk::clean_path(w)?,
    };
    Ok(msg)
}

/// The `ProcStart` for `spec`, before the provider sets its workdir and environment.
pub(crate) fn start_msg(spec: &ProcessSpec) -> Result<ProcStart, ProviderError> {
    let argv = spec.exec.argv();
    if argv.first().is_none_or(|p| p.trim().is_empty()) {
        return Err(ProviderError::InvalidInput("command is required".into()));
    }
    if let Some(p) = spec.pty.filter(|p| !p.valid()) {
        return Err(ProviderError::InvalidInput(format!(
            "invalid terminal size {}x{}",
            p.cols, p.rows
        )));
    }
    Ok(ProcStart {
        argv,
        env: spec.exec.env.clone(),
        workdir: spec.exec.workdir.clone().unwrap_or_default(),
        timeout_ms: spec.exec.timeout.map(millis),
        tag: spec.tag.clone(),
        command: spec.exec.command.clone(),
        args: spec.exec.args.clone(),
        stdin: spec.stdin,
        pty: spec.pty.map(|p| AgentPty {
            cols: p.cols,
            rows: p.rows,
        }),
        output_buffer: spec.output_buffer,
        retain_exited_ms: spec.retain_exited.map(millis),
        exec: false,
        read_window: None,
        user: spec.exec.user.clone().unwrap_or_default(),
    })
}

/// A start as another user needs protocol 7: an older agent would ignore the field and run
/// the process as its own user.
pub(crate) fn check_user(conn: &AgentConn, msg: &ProcStart) -> Result<(), ProviderError> {
    if msg.user.is_empty() || conn.version >= AGENT_USER_VERSION {
        return Ok(());
    }
    Err(ProviderError::NotSupported(format!(
        "the sandbox's agent cannot run a process as another user (protocol {} < \
         {AGENT_USER_VERSION}); {}",
        conn.version,
        super::HOW_TO_BUILD
    )))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Process calls need protocol version 3; an older agent (a microvm booted from old assets)
/// answers none of them.
fn check_version(conn: &AgentConn) -> Result<(), ProviderError> {
    if conn.version >= AGENT_PROCESS_VERSION {
        return Ok(());
    }
    Err(ProviderError::Unavailable(format!(
        "sandbox agent too old for background processes (protocol {} < {AGENT_PROCESS_VERSION}); {}",
        conn.version,
        super::HOW_TO_BUILD
    )))
}

/// Maps a failed agent call about process `pid` (0 when there is none yet).
pub(crate) fn map_err(e: ConnError, pid: Pid) -> ProviderError {
    match e {
        ConnError::Agent { code, message } => match code {
            ErrorCode::ProcessNotFound => ProviderError::ProcessNotFound(pid),
            ErrorCode::StdinClosed => ProviderError::StdinClosed(pid),
            ErrorCode::ProcessExited => ProviderError::ProcessExited(pid),
            ErrorCode::NotAPty => ProviderError::NotAPty(pid),
            ErrorCode::Busy => ProviderError::Unavailable(message),
            // A missing program or workdir is the caller's mistake, as with exec.
            ErrorCode::InvalidInput | ErrorCode::NotFound => ProviderError::InvalidInput(message),
            ErrorCode::Version => ProviderError::Unavailable(message),
            ErrorCode::Unknown | ErrorCode::Io => ProviderError::internal(message),
        },
        e => super::call_failed(e),
    }
}

async fn call(conn: &AgentConn, msg: HostMsg, pid: Pid) -> Result<GuestMsg, ProviderError> {
    check_version(conn)?;
    conn.call(msg, CALL_TIMEOUT)
        .await
        .map_err(|e| map_err(e, pid))
}

async fn call_proc(conn: &AgentConn, msg: HostMsg, pid: Pid) -> Result<ProcessInfo, ProviderError> {
    match call(conn, msg, pid).await? {
        GuestMsg::Proc { proc } => Ok(to_info(proc)),
        m => Err(unexpected(m)),
    }
}

pub(crate) fn to_info(p: AgentProc) -> ProcessInfo {
    let state = if p.state == "exited" {
        ProcessState::Exited
    } else {
        ProcessState::Running
    };
    ProcessInfo {
        pid: p.pid,
        tag: p.tag,
        command: p.command,
        args: p.args,
        pty: p.pty,
        stdin: p.stdin,
        state,
        exit_code: p.exit_code,
        signal: p.signal.as_deref().and_then(Signal::parse),
        started_at_ms: p.started_at_ms,
        ended_at_ms: p.ended_at_ms,
        next_seq: p.next_seq,
    }
}

pub(crate) fn to_record(r: AgentRecord) -> Result<OutputRecord, ProviderError> {
    let data_stream = match r.stream.as_str() {
        "stdout" => Some(OutputStream::Stdout),
        "stderr" => Some(OutputStream::Stderr),
        "pty" => Some(OutputStream::Pty),
        _ => None,
    };
    if let Some(stream) = data_stream {
        let data = base64::decode(&r.data)
            .ok_or_else(|| ProviderError::internal("agent sent invalid base64 output"))?;
        return Ok(OutputRecord::Data {
            seq: r.seq,
            stream,
            data,
        });
    }
    match r.stream.as_str() {
        "gap" => Ok(OutputRecord::Gap {
            seq: r.seq,
            dropped_bytes: r.dropped_bytes.unwrap_or(0),
        }),
        "exit" => Ok(OutputRecord::Exit {
            seq: r.seq,
            exit_code: r.exit_code.unwrap_or(-1),
            signal: r.signal.as_deref().and_then(Signal::parse),
        }),
        other => Err(ProviderError::internal(format!(
            "agent sent an output record of unknown stream {other:?}"
        ))),
    }
}

pub(crate) async fn start(conn: &AgentConn, msg: ProcStart) -> Result<ProcessInfo, ProviderError> {
    check_user(conn, &msg)?;
    call_proc(conn, HostMsg::ProcStart(msg), 0).await
}

pub(crate) async fn list(conn: &AgentConn) -> Result<Vec<ProcessInfo>, ProviderError> {
    match call(conn, HostMsg::ProcList, 0).await? {
        GuestMsg::Procs { procs } => Ok(procs.into_iter().map(to_info).collect()),
        m => Err(unexpected(m)),
    }
}

pub(crate) async fn get(conn: &AgentConn, pid: Pid) -> Result<ProcessInfo, ProviderError> {
    call_proc(conn, HostMsg::ProcGet { pid }, pid).await
}

pub(crate) async fn signal(
    conn: &AgentConn,
    pid: Pid,
    signal: Signal,
) -> Result<ProcessInfo, ProviderError> {
    let msg = HostMsg::ProcSignal {
        pid,
        signal: signal.as_str().to_string(),
    };
    call_proc(conn, msg, pid).await
}

pub(crate) async fn resize(conn: &AgentConn, pid: Pid, size: PtySize) -> Result<(), ProviderError> {
    if !size.valid() {
        return Err(ProviderError::InvalidInput(format!(
            "invalid terminal size {}x{}",
            size.cols, size.rows
        )));
    }
    let msg = HostMsg::ProcResize {
        pid,
        cols: size.cols,
        rows: size.rows,
    };
    match call(conn, msg, pid).await? {
        GuestMsg::Ok => Ok(()),
        m => Err(unexpected(m)),
    }
}

/// Writes `data` in frame-sized pieces, closing stdin with the last one when `close`.
pub(crate) async fn stdin(
    conn: &AgentConn,
    pid: Pid,
    data: &[u8],
    close: bool,
) -> Result<u64, ProviderError> {
    let mut written = 0;
    let mut pieces: Vec<&[u8]> = data.chunks(STDIN_CHUNK).collect();
    if pieces.is_empty() {
        pieces.push(&[]);
    }
    let last = pieces.len() - 1;
    for (i, piece) in pieces.into_iter().enumerate() {
        let msg = HostMsg::ProcStdin {
            pid,
            data: base64::encode(piece),
            close: close && i == last,
        };
        match call(conn, msg, pid).await? {
            GuestMsg::Written { n } => written += n,
            m => return Err(unexpected(m)),
        }
    }
    Ok(written)
}

/// Frames of one read the host keeps unread at most (each up to 64 records and 256 KiB of
/// output: 2 MiB). A reader slower than that is not buffered further: its read is dropped and asked
/// again from where it stopped, so the agent's ring decides what is lost and says so with a
/// gap record, and the host's memory stays bounded however slow the client.
const MAX_QUEUED_FRAMES: usize = 8;

/// What a read's stream holds between items.
struct Read<T: AsRef<AgentConn> + Send + Sync + 'static> {
    rx: BoundedRx,
    /// Cancels the agent's read (a follow would otherwise wait for the process) if the stream
    /// is dropped before `ReadEnd`.
    guard: Option<AbortOnDrop<T>>,
    owner: Arc<T>,
    id: u64,
    pid: Pid,
    follow: bool,
    /// The `since` that continues after the last record handed out.
    cursor: u64,
}

impl<T: AsRef<AgentConn> + Send + Sync + 'static> Read<T> {
    async fn open(
        owner: Arc<T>,
        pid: Pid,
        since: u64,
        follow: bool,
    ) -> Result<Self, ProviderError> {
        let (id, rx) = (*owner)
            .as_ref()
            .start_bounded(
                HostMsg::ProcRead {
                    pid,
                    since,
                    follow,
                    window: None,
                },
                MAX_QUEUED_FRAMES,
            )
            .await
            .map_err(|e| map_err(e, pid))?;
        let guard = AbortOnDrop::new(owner.clone(), HostMsg::Cancel { target: id }).forgetting(id);
        Ok(Read {
            rx,
            guard: Some(guard),
            owner,
            id,
            pid,
            follow,
            cursor: since,
        })
    }

    /// The read is over: no cancel needed, and the waiter goes.
    fn finish(&mut self) {
        if let Some(g) = self.guard.take() {
            g.disarm();
        }
        (*self.owner).as_ref().forget(self.id);
    }

    /// After an overrun: cancels the old read (dropping its guard does) and asks again from
    /// the cursor.
    async fn reopen(&mut self) -> Result<(), ProviderError> {
        self.guard.take();
        let next = Read::open(self.owner.clone(), self.pid, self.cursor, self.follow).await?;
        *self = next;
        Ok(())
    }

    /// The next answer frame, reading again after overruns; `None` when the connection ended.
    async fn next_frame(&mut self) -> Result<Option<GuestMsg>, ProviderError> {
        loop {
            if let Some(m) = self.rx.recv().await {
                return Ok(Some(m));
            }
            if !self.rx.overran() {
                return Ok(None);
            }
            self.reopen().await?;
        }
    }
}

/// Records with `seq >= since`, fed by the read's `Records` frames; with `follow` the stream
/// ends after the exit record. Dropping it sends `Cancel` for the read; the process runs on.
pub(crate) async fn output<T: AsRef<AgentConn> + Send + Sync + 'static>(
    owner: Arc<T>,
    pid: Pid,
    since: u64,
    follow: bool,
) -> Result<RecordStream, ProviderError> {
    check_version((*owner).as_ref())?;
    let mut read = Read::open(owner.clone(), pid, since, follow).await?;
    // A follow read answers nothing until there is output, so an unknown pid is found out
    // with a `ProcGet` sent right behind it (one round trip for both): an error of the call,
    // not of the stream. Dropping `read` then cancels it.
    if follow {
        get((*owner).as_ref(), pid).await?;
    }
    // A plain read answers at once; its first frame settles whether the pid exists.
    let head = if follow {
        (Vec::new(), false)
    } else {
        let first = match tokio::time::timeout(CALL_TIMEOUT, read.next_frame()).await {
            Ok(Ok(Some(m))) => m,
            Ok(Ok(None)) => return Err(map_err(ConnError::Closed, pid)),
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(map_err(ConnError::Timeout, pid)),
        };
        if let GuestMsg::Error { code, message } = first {
            read.finish();
            return Err(map_err(ConnError::Agent { code, message }, pid));
        }
        batch(&mut read, first)
    };
    let rest = futures_util::stream::unfold(Some(read), |state| async move {
        let mut read = state?;
        let (items, done) = match read.next_frame().await {
            Ok(None) => (vec![Err(map_err(ConnError::Closed, read.pid))], true),
            Ok(Some(m)) => batch(&mut read, m),
            Err(e) => (vec![Err(e)], true),
        };
        Some((items, (!done).then_some(read)))
    });
    let (head, done) = head;
    let head = futures_util::stream::iter(head);
    let stream = if done {
        head.boxed()
    } else {
        head.chain(rest.flat_map(futures_util::stream::iter))
            .boxed()
    };
    Ok(stream)
}

/// The items of one answer frame, and whether the read is over.
fn batch<T: AsRef<AgentConn> + Send + Sync + 'static>(
    read: &mut Read<T>,
    m: GuestMsg,
) -> (Vec<Result<OutputRecord, ProviderError>>, bool) {
    match m {
        GuestMsg::Records { records } => {
            let items: Vec<_> = records.into_iter().map(to_record).collect();
            for r in items.iter().flatten() {
                read.cursor = match r {
                    OutputRecord::Data { seq, data, .. } => seq + data.len() as u64,
                    OutputRecord::Gap { seq, dropped_bytes } => seq + dropped_bytes,
                    OutputRecord::Exit { seq, .. } => seq + 1,
                };
            }
            (items, false)
        }
        GuestMsg::ReadEnd => {
            read.finish();
            (Vec::new(), true)
        }
        GuestMsg::Error { code, message } => {
            read.finish();
            (
                vec![Err(map_err(ConnError::Agent { code, message }, read.pid))],
                true,
            )
        }
        m => {
            read.finish();
            (vec![Err(unexpected(m))], true)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[path = "procs_tests.rs"]
mod tests;
