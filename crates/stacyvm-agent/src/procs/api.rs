//! The `Proc*` requests of a session.

use stacyvm_protocol::agent::{ErrorCode, GuestMsg, HostMsg};
use stacyvm_protocol::base64;

use super::read::{self, Reads};
use super::spawn::{self, parse_signal, Failure};
use super::{inline, pty, registry, stdin, Proc};
use crate::session::{lock, Out};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Answers one of the `Proc*` requests (other messages are ignored).
pub fn handle(id: u64, msg: HostMsg, out: &Out, reads: &Reads) {
    let reply = match msg {
        HostMsg::ProcStart(req) => {
            let window = req.read_window;
            match spawn::start(req) {
                Ok(p) => {
                    out.send(id, proc_msg(&p));
                    if let Some(w) = window {
                        inline::attach(id, &p, w, out.clone(), reads);
                    }
                    return;
                }
                Err((code, message)) => GuestMsg::Error { code, message },
            }
        }
        HostMsg::ProcList => GuestMsg::Procs {
            procs: registry().list().iter().map(|p| p.info()).collect(),
        },
        HostMsg::ProcGet { pid } => found(pid).map_or_else(reply_error, |p| proc_msg(&p)),
        HostMsg::ProcRead {
            pid,
            since,
            follow,
            window,
        } => {
            read::start(id, pid, since, follow, window, out.clone(), reads);
            return;
        }
        HostMsg::ReadCredit { target, frames } => {
            reads.credit(target, frames);
            return;
        }
        HostMsg::ProcStdin { pid, data, close } => match write_stdin(id, pid, &data, close, out) {
            Ok(()) => return, // The writer thread answers.
            Err(e) => reply_error(e),
        },
        HostMsg::ProcSignal { pid, signal } => {
            signal_proc(pid, &signal).map_or_else(reply_error, |p| proc_msg(&p))
        }
        HostMsg::ProcResize { pid, cols, rows } => {
            resize(pid, cols, rows).map_or_else(reply_error, |()| GuestMsg::Ok)
        }
        _ => return,
    };
    out.send(id, reply);
}

fn proc_msg(p: &Proc) -> GuestMsg {
    GuestMsg::Proc { proc: p.info() }
}

fn reply_error((code, message): Failure) -> GuestMsg {
    GuestMsg::Error { code, message }
}

fn error(code: ErrorCode, message: impl Into<String>) -> Failure {
    (code, message.into())
}

fn found(pid: u32) -> Result<Arc<Proc>, Failure> {
    registry()
        .get(pid)
        .ok_or_else(|| error(ErrorCode::ProcessNotFound, format!("no process {pid}")))
}

fn write_stdin(id: u64, pid: u32, data: &str, close: bool, out: &Out) -> Result<(), Failure> {
    let p = found(pid)?;
    let bytes =
        base64::decode(data).ok_or_else(|| error(ErrorCode::InvalidInput, "data is not base64"))?;
    // Checked and queued under the state lock: the exit and a `close` cannot slip in between.
    let mut st = lock(&p.state);
    if st.exit.is_some() {
        return Err(error(ErrorCode::ProcessExited, "the process has exited"));
    }
    if st.stdin_closed {
        return Err(error(
            ErrorCode::StdinClosed,
            "the process was started without stdin, or its stdin was closed",
        ));
    }
    let len = bytes.len();
    let queued = p.stdin_queued.load(Ordering::SeqCst);
    if queued > 0 && queued + len > stdin::MAX_QUEUED {
        return Err(error(
            ErrorCode::Busy,
            format!(
                "{queued} bytes of stdin are still waiting for the process to read them (at \
                 most {} may wait); retry later",
                stdin::MAX_QUEUED
            ),
        ));
    }
    let item = stdin::Item {
        data: bytes,
        close,
        id,
        out: out.clone(),
    };
    // Counted before the writer can see it, so its decrement never comes first.
    p.stdin_queued.fetch_add(len, Ordering::SeqCst);
    let sent = lock(&p.stdin).as_ref().map(|tx| tx.send(item).is_ok());
    if sent != Some(true) {
        p.stdin_queued.fetch_sub(len, Ordering::SeqCst);
        return Err(error(ErrorCode::StdinClosed, "stdin is not open"));
    }
    // A terminal stays open after `^D`; a pipe does not.
    if close && !p.is_pty {
        st.stdin_closed = true;
    }
    Ok(())
}

fn signal_proc(pid: u32, name: &str) -> Result<Arc<Proc>, Failure> {
    let sig = parse_signal(name)
        .ok_or_else(|| error(ErrorCode::InvalidInput, format!("unknown signal {name:?}")))?;
    let p = found(pid)?;
    if p.exited() {
        return Err(error(ErrorCode::ProcessExited, "the process has exited"));
    }
    // A host killing an exec (its caller went away) takes its marked leftovers too.
    if p.exec && sig == libc::SIGKILL {
        spawn::sweep_marked(&p);
    }
    if let Err(e) = pty::signal_group(p.pgid, sig) {
        // ESRCH: the group is gone, the waiter is about to record the exit.
        if e.raw_os_error() != Some(libc::ESRCH) {
            return Err(error(ErrorCode::Io, format!("kill: {e}")));
        }
    }
    Ok(p)
}

fn resize(pid: u32, cols: u16, rows: u16) -> Result<(), Failure> {
    let p = found(pid)?;
    if !p.is_pty {
        return Err(error(ErrorCode::NotAPty, "the process has no terminal"));
    }
    if p.exited() {
        return Err(error(ErrorCode::ProcessExited, "the process has exited"));
    }
    let master = lock(&p.master);
    let master = master
        .as_ref()
        .ok_or_else(|| error(ErrorCode::ProcessExited, "the process has exited"))?;
    pty::resize(master, cols, rows).map_err(|e| error(ErrorCode::Io, format!("resize: {e}")))
}
