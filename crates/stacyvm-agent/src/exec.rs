//! Running commands: each in its own process group, output streamed in chunks as it comes,
//! a timeout (or the host's cancel) kills the whole group.

use std::collections::HashMap;
use std::io::{self, Read};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, ChildStderr, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use stacyvm_protocol::agent::{ErrorCode, ExecStart, GuestMsg, OutputStream, OUTPUT_CHUNK};
use stacyvm_protocol::base64;

use crate::session::{lock, Out};
use crate::sys;

/// Request id → process group of running execs, for `Cancel`.
pub type Running = Arc<Mutex<HashMap<u64, i32>>>;

/// How long output pipes may stay open after the command exited (a background child holding
/// them must not keep the exec open forever).
const DRAIN_GRACE: Duration = Duration::from_millis(500);
/// Environment every command starts from; the request's env is layered on top.
pub const BASE_ENV: [(&str, &str); 4] = [
    (
        "PATH",
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    ),
    ("HOME", "/root"),
    ("TERM", "xterm"),
    ("LANG", "C.UTF-8"),
];

pub fn start(id: u64, req: ExecStart, out: Out, running: Running) {
    let eout = out.clone();
    let started = sys::thread("exec", move || {
        let reply = run(id, req, &out, &running);
        lock(&running).remove(&id);
        out.send(id, reply);
    });
    if let Err(message) = started {
        eout.error(id, ErrorCode::Busy, message);
    }
}

pub fn cancel(target: u64, running: &Running) {
    if let Some(pgid) = lock(running).get(&target).copied() {
        sys::kill_group(pgid);
    }
}

fn spawn(req: &ExecStart) -> io::Result<Child> {
    let (prog, args) = req
        .argv
        .split_first()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty argv"))?;
    let workdir = if req.workdir.is_empty() {
        "/workspace"
    } else {
        req.workdir.as_str()
    };
    let mut cmd = Command::new(prog);
    cmd.args(args)
        .env_clear()
        .envs(BASE_ENV)
        .envs(&req.env)
        .current_dir(workdir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    crate::reaper::spawn_tracked(&mut cmd)
}

fn run(id: u64, req: ExecStart, out: &Out, running: &Running) -> GuestMsg {
    let mut child = match spawn(&req) {
        Ok(c) => c,
        Err(e) => return spawn_failure(id, &req, e, out),
    };
    let pgid = i32::try_from(child.id()).unwrap_or(0);
    lock(running).insert(id, pgid);
    let closed = Arc::new(AtomicBool::new(false));
    let (done_tx, done_rx) = channel::<()>();
    let mut readers = 0;
    let pipes = [
        child.stdout.take().map(Pipe::Out),
        child.stderr.take().map(Pipe::Err),
    ];
    let mut started = Ok(());
    for pipe in pipes.into_iter().flatten() {
        readers += 1;
        let (out, closed, done) = (out.clone(), closed.clone(), done_tx.clone());
        started = started.and_then(|()| pump(id, pipe, out, closed, done));
    }
    drop(done_tx);
    let (status_tx, status_rx) = channel::<io::Result<ExitStatus>>();
    // The waiter gets the child only once every thread runs: without them nobody could watch
    // the command (out of pids, e.g. a fork bomb), so it is killed and reaped right here.
    let (child_tx, child_rx) = channel::<Child>();
    let waiting = sys::thread("exec-wait", move || {
        if let Ok(mut child) = child_rx.recv() {
            let status = child.wait();
            crate::reaper::untrack(child.id());
            let _ = status_tx.send(status);
        }
    });
    if let Err(message) = started.and(waiting) {
        sys::kill_group(pgid);
        let _ = child.wait();
        crate::reaper::untrack(child.id());
        return GuestMsg::Error {
            code: ErrorCode::Busy,
            message,
        };
    }
    let _ = child_tx.send(child);
    let deadline = req
        .timeout_ms
        .map(|ms| Instant::now() + Duration::from_millis(ms));
    let mut timed_out = false;
    let status = loop {
        let wait = deadline.map_or(Duration::from_secs(3600), |d| {
            d.saturating_duration_since(Instant::now())
        });
        match status_rx.recv_timeout(wait) {
            Ok(s) => break s,
            Err(RecvTimeoutError::Timeout) if deadline.is_some_and(|d| Instant::now() >= d) => {
                timed_out = true;
                sys::kill_group(pgid);
                // The leader dies from SIGKILL; wait for it, bounded in case it is stuck.
                break status_rx
                    .recv_timeout(Duration::from_secs(10))
                    .unwrap_or_else(|_| Err(io::Error::other("process did not die")));
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                break Err(io::Error::other("wait thread vanished"))
            }
        }
    };
    if timed_out {
        closed.store(true, Ordering::SeqCst);
        return GuestMsg::TimedOut;
    }
    // Let the readers flush what the command wrote before it exited.
    let until = Instant::now() + DRAIN_GRACE;
    for _ in 0..readers {
        if done_rx
            .recv_timeout(until.saturating_duration_since(Instant::now()))
            .is_err()
        {
            break;
        }
    }
    closed.store(true, Ordering::SeqCst);
    match status {
        Ok(s) => GuestMsg::Exit { code: exit_code(s) },
        Err(e) => GuestMsg::Error {
            code: ErrorCode::Io,
            message: format!("waiting for the command failed: {e}"),
        },
    }
}

/// Like a shell: a missing program is exit 127, an unrunnable one 126, with a message on
/// stderr. A bad workdir is an input error.
fn spawn_failure(id: u64, req: &ExecStart, e: io::Error, out: &Out) -> GuestMsg {
    let prog = req.argv.first().map(String::as_str).unwrap_or("");
    let workdir_ok = req.workdir.is_empty() || std::path::Path::new(&req.workdir).is_dir();
    if !workdir_ok {
        return GuestMsg::Error {
            code: ErrorCode::InvalidInput,
            message: format!("workdir {:?} is not a directory", req.workdir),
        };
    }
    let code = match e.kind() {
        io::ErrorKind::NotFound => 127,
        io::ErrorKind::PermissionDenied => 126,
        io::ErrorKind::InvalidInput => {
            return GuestMsg::Error {
                code: ErrorCode::InvalidInput,
                message: e.to_string(),
            }
        }
        _ => 126,
    };
    let msg = format!("{prog}: {e}\n");
    out.send(
        id,
        GuestMsg::Output {
            stream: OutputStream::Stderr,
            data: base64::encode(msg.as_bytes()),
        },
    );
    GuestMsg::Exit { code }
}

fn exit_code(s: ExitStatus) -> i32 {
    s.code()
        .or_else(|| s.signal().map(|sig| 128 + sig))
        .unwrap_or(-1)
}

enum Pipe {
    Out(ChildStdout),
    Err(ChildStderr),
}

fn pump(
    id: u64,
    pipe: Pipe,
    out: Out,
    closed: Arc<AtomicBool>,
    done: std::sync::mpsc::Sender<()>,
) -> Result<(), String> {
    sys::thread("exec-output", move || {
        let (stream, mut r): (OutputStream, Box<dyn Read + Send>) = match pipe {
            Pipe::Out(s) => (OutputStream::Stdout, Box::new(s)),
            Pipe::Err(s) => (OutputStream::Stderr, Box::new(s)),
        };
        let mut buf = vec![0u8; OUTPUT_CHUNK];
        loop {
            match r.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    // After the exec answered, keep draining (so writers do not block) but
                    // send nothing more under its id.
                    if !closed.load(Ordering::SeqCst) {
                        out.send(
                            id,
                            GuestMsg::Output {
                                stream,
                                data: base64::encode(&buf[..n]),
                            },
                        );
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        let _ = done.send(());
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes() {
        assert_eq!(exit_code(ExitStatus::from_raw(42 << 8)), 42);
        assert_eq!(exit_code(ExitStatus::from_raw(9)), 137);
    }
}
