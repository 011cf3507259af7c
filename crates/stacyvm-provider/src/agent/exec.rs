//! A 0.1 exec run as a process of the agent (protocol version 4; docs/processes.md, "exec on
//! the process model"). The process is started with `exec`: its output is held for the reader
//! instead of dropped, and its group dies with it, as exec always did. The read is windowed:
//! the agent sends a frame only against credit, and the host returns the credit of the frames
//! it has handed to the caller's sender (two at a time), so a slow caller slows the command
//! (exec's contract) and nothing queues without bound on either side.

use std::sync::Arc;
use std::time::{Duration, Instant};

use stacyvm_protocol::agent::{
    ErrorCode, GuestMsg, HostMsg, ProcStart, AGENT_EXEC_VERSION, AGENT_START_READ_VERSION,
};
use stacyvm_types::{OutputRecord, OutputStream, StreamChunk, StreamKind, TIMEOUT_EXIT_CODE};

use super::conn::{AbortOnDrop, AgentConn, ConnError};
use super::procs::{map_err, to_record};
use super::unexpected;
use crate::{ChunkSender, ProviderError};

/// How long the agent may take to start the command.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long killing an abandoned exec may take.
const KILL_TIMEOUT: Duration = Duration::from_secs(5);
/// Frames the agent may send ahead of the caller.
const WINDOW: u32 = 4;
/// Frames handed to the caller before their credit goes back together.
const CREDIT_BATCH: u32 = WINDOW / 2;
/// How long past its timeout the host waits for the agent to end an exec.
const HOST_GRACE: Duration = Duration::from_secs(5);
/// How soon a read refused for want of threads is tried again.
const READ_RETRY: Duration = Duration::from_millis(100);
/// How long a finished exec stays in the process list.
const RETAIN_MS: u64 = 5_000;

/// Whether `conn`'s agent runs execs as processes (older agents keep the provider's own exec).
pub(crate) fn supported(conn: &AgentConn) -> bool {
    conn.version >= AGENT_EXEC_VERSION
}

/// Runs `msg` (built as for a process start) to its end, sending its output to `out` in
/// chunks of at most `max_chunk` bytes; the exit code. Dropping the future, or `out` closing,
/// kills the process.
pub(crate) async fn run<T: AsRef<AgentConn> + Send + Sync + 'static>(
    owner: Arc<T>,
    mut msg: ProcStart,
    timeout: Option<Duration>,
    out: ChunkSender,
    max_chunk: usize,
) -> Result<i32, ProviderError> {
    let conn = (*owner).as_ref();
    super::procs::check_user(conn, &msg)?;
    msg.exec = true;
    msg.stdin = false;
    msg.pty = None;
    msg.retain_exited_ms = Some(RETAIN_MS);
    msg.timeout_ms = timeout.map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX));
    let prog = msg.argv.first().cloned().unwrap_or_default();
    let started = Instant::now();
    // Version 5 streams the read under the start's id: one round trip less per exec.
    let combined = conn.version >= AGENT_START_READ_VERSION;
    if combined {
        msg.read_window = Some(WINDOW);
    }
    let (pid, mut first_read) = if combined {
        let (id, mut rx) = conn
            .start(HostMsg::ProcStart(msg))
            .await
            .map_err(|e| map_err(e, 0))?;
        let answer = tokio::time::timeout(START_TIMEOUT, rx.recv()).await;
        match answer {
            Ok(Some(GuestMsg::Proc { proc })) => (proc.pid, Some((id, rx))),
            other => {
                conn.forget(id);
                return match other {
                    Ok(Some(GuestMsg::Error { code, message })) => {
                        spawn_failure(&prog, code, message, &out).await
                    }
                    Ok(Some(other)) => Err(unexpected(other)),
                    Ok(None) => Err(map_err(ConnError::Closed, 0)),
                    Err(_) => Err(map_err(ConnError::Timeout, 0)),
                };
            }
        }
    } else {
        match conn.call(HostMsg::ProcStart(msg), START_TIMEOUT).await {
            Ok(GuestMsg::Proc { proc }) => (proc.pid, None),
            Ok(other) => return Err(unexpected(other)),
            Err(ConnError::Agent { code, message }) => {
                return spawn_failure(&prog, code, message, &out).await
            }
            Err(e) => return Err(map_err(e, 0)),
        }
    };
    let kill = AbortOnDrop::new(
        owner.clone(),
        HostMsg::ProcSignal {
            pid,
            signal: "KILL".into(),
        },
    );
    // The agent enforces the timeout; the host gives up too if it cannot (say its timer thread
    // could not start), so a wedged sandbox never hangs the caller.
    let give_up = timeout.map(|t| tokio::time::Instant::from_std(started + t + HOST_GRACE));
    let mut next = 0u64;
    'read: loop {
        let (id, mut rx) = match first_read.take() {
            Some(read) => read,
            None => {
                let read = HostMsg::ProcRead {
                    pid,
                    since: next,
                    follow: true,
                    window: Some(WINDOW),
                };
                conn.start(read).await.map_err(|e| map_err(e, pid))?
            }
        };
        let read_guard =
            AbortOnDrop::new(owner.clone(), HostMsg::Cancel { target: id }).forgetting(id);
        let mut owed = 0u32;
        loop {
            let next_msg = tokio::select! {
                m = rx.recv() => m,
                // Nobody reads any more: the guards kill the process and end the read.
                () = out.closed() => return Err(receiver_gone(conn, pid, kill).await),
                () = sleep_until_opt(give_up) => return Err(ProviderError::Timeout),
            };
            let records = match next_msg {
                Some(GuestMsg::Records { records }) => records,
                // Out of threads (a fork bomb fills the pid limit): the read starts again
                // from where it was once the sandbox has room, or the timeout ends it.
                Some(GuestMsg::Error {
                    code: ErrorCode::Busy,
                    ..
                }) => {
                    read_guard.disarm();
                    conn.forget(id);
                    tokio::select! {
                        () = tokio::time::sleep(READ_RETRY) => {}
                        () = out.closed() => return Err(receiver_gone(conn, pid, kill).await),
                        () = sleep_until_opt(give_up) => return Err(ProviderError::Timeout),
                    }
                    continue 'read;
                }
                Some(GuestMsg::Error { code, message }) => {
                    return Err(map_err(ConnError::Agent { code, message }, pid))
                }
                Some(GuestMsg::ReadEnd) => {
                    return Err(ProviderError::internal(
                        "the agent ended an exec's read early",
                    ))
                }
                Some(other) => return Err(unexpected(other)),
                None => return Err(map_err(ConnError::Closed, pid)),
            };
            for r in records {
                match to_record(r)? {
                    OutputRecord::Data {
                        stream, data, seq, ..
                    } => {
                        next = seq + data.len() as u64;
                        let stream = match stream {
                            OutputStream::Stderr => StreamKind::Stderr,
                            OutputStream::Stdout | OutputStream::Pty => StreamKind::Stdout,
                        };
                        for piece in data.chunks(max_chunk.max(1)) {
                            let chunk = StreamChunk {
                                stream,
                                data: piece.to_vec(),
                            };
                            if out.send(chunk).await.is_err() {
                                return Err(receiver_gone(conn, pid, kill).await);
                            }
                        }
                    }
                    // Held output is never dropped; nothing to pass on if an agent did anyway.
                    OutputRecord::Gap { .. } => {}
                    OutputRecord::Exit { exit_code, .. } => {
                        kill.disarm();
                        read_guard.disarm();
                        conn.forget(id);
                        let timed_out = timeout.is_some_and(|t| started.elapsed() >= t);
                        if exit_code == TIMEOUT_EXIT_CODE && timed_out {
                            return Err(ProviderError::Timeout);
                        }
                        return Ok(exit_code);
                    }
                }
            }
            // Credit goes back in batches of half the window: a short command's output and exit
            // then cost the agent no wake-up for a credit it will never use.
            owed += 1;
            if owed >= CREDIT_BATCH {
                conn.notify(HostMsg::ReadCredit {
                    target: id,
                    frames: owed,
                })
                .await;
                owed = 0;
            }
        }
    }
}

/// Sleeps until `at`, or forever without one.
async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The caller went away: the process is killed before this returns (a caller checking right
/// after must not see it), the read's guard ends the read.
async fn receiver_gone<T: AsRef<AgentConn> + Send + Sync + 'static>(
    conn: &AgentConn,
    pid: u32,
    kill: AbortOnDrop<T>,
) -> ProviderError {
    let msg = HostMsg::ProcSignal {
        pid,
        signal: "KILL".into(),
    };
    if conn.call(msg, KILL_TIMEOUT).await.is_ok() {
        kill.disarm();
        // Until the agent recorded the exit: by then the group and its leftovers are gone.
        let deadline = Instant::now() + KILL_TIMEOUT;
        while Instant::now() < deadline {
            match conn.call(HostMsg::ProcGet { pid }, KILL_TIMEOUT).await {
                Ok(GuestMsg::Proc { proc }) if proc.state == "running" => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                _ => break,
            }
        }
    }
    ProviderError::internal("exec output receiver closed")
}

/// A program that is not there or cannot be run answers as a shell would (exit 127 or 126 with
/// a message on stderr), as every provider's exec did; other refusals stay errors.
async fn spawn_failure(
    prog: &str,
    code: ErrorCode,
    message: String,
    out: &ChunkSender,
) -> Result<i32, ProviderError> {
    let denied = message.ends_with("permission denied") || message.ends_with("(os error 13)");
    let (code, what) = match code {
        ErrorCode::NotFound => (127, "command not found"),
        ErrorCode::InvalidInput if denied => (126, "permission denied"),
        code => return Err(map_err(ConnError::Agent { code, message }, 0)),
    };
    let chunk = StreamChunk {
        stream: StreamKind::Stderr,
        data: format!("{prog}: {what}\n").into_bytes(),
    };
    out.send(chunk)
        .await
        .map_err(|_| ProviderError::internal("exec output receiver closed"))?;
    Ok(code)
}
