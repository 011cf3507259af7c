//! One thread per process (on kernels with pidfds): it polls the process's output pipes and
//! its pidfd together, so the exit is seen by the thread that already holds the output. An
//! exec's exit then reaches its reader without a waiter thread waking up and handing over to
//! the reader (docs/processes.md, "Threads").

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use stacyvm_protocol::agent::OUTPUT_CHUNK;

use super::ring::Stream;
use super::spawn::{finish, record, sweep_marked, Waiter, DRAIN_GRACE, LEFTOVER_GRACE};
use super::{pty, Proc};
use crate::reaper;

/// Serves process `p` to its end: output into its ring until it exits, then its exit.
pub(super) fn run(p: &Arc<Proc>, mut open: Vec<(Stream, File)>, pidfd: &OwnedFd, waiter: Waiter) {
    let mut buf = vec![0u8; OUTPUT_CHUNK];
    loop {
        let mut fds: Vec<_> = open.iter().map(|(_, f)| f.as_fd()).collect();
        fds.push(pidfd.as_fd());
        let Ok(ready) = crate::sys::poll_readable(&fds) else {
            // Cannot happen with valid fds; the blocking wait below still ends the process.
            break;
        };
        read_ready(p, &mut open, &ready, &mut buf);
        if ready.last().copied().unwrap_or(true) {
            break;
        }
    }
    let status = waiter();
    reaper::untrack(p.pid);
    if p.exec {
        // As exec always did: leftovers (`sleep 100 &`) die with the command; ones that left
        // the group (a daemon) live on after a normal exit, and are found by their mark after
        // a timeout. The group is killed once the pipes had a moment to close.
        if p.timed_out.load(Ordering::SeqCst) {
            sweep_marked(p);
        } else {
            drain(p, &mut open, &mut buf, Some(LEFTOVER_GRACE));
        }
        let _ = pty::signal_group(p.pgid, libc::SIGKILL);
    }
    drain(p, &mut open, &mut buf, Some(DRAIN_GRACE));
    finish(p, status);
    // Later output is not recorded, but the pipes are still emptied so a leftover writer never
    // blocks on them.
    drain(p, &mut open, &mut buf, None);
}

/// Reads once from every ready pipe, dropping the ones that ended; whether a record had to
/// wait for a slow reader.
fn read_ready(p: &Proc, open: &mut Vec<(Stream, File)>, ready: &[bool], buf: &mut [u8]) -> bool {
    let mut ended = Vec::new();
    let mut held = false;
    for (i, (stream, f)) in open.iter_mut().enumerate() {
        if !ready.get(i).copied().unwrap_or(false) {
            continue;
        }
        match f.read(buf) {
            Ok(0) => ended.push(i),
            Ok(n) => held |= record(p, *stream, &buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // A PTY master reads EIO once every slave is closed.
            Err(_) => ended.push(i),
        }
    }
    for i in ended.into_iter().rev() {
        open.remove(i);
    }
    held
}

/// Reads the pipes until they close, or until `grace` has passed since the start or since the
/// last wait for a slow reader (which counts as progress); `None` waits for them to close.
fn drain(p: &Proc, open: &mut Vec<(Stream, File)>, buf: &mut [u8], grace: Option<Duration>) {
    let mut until = grace.map(|g| Instant::now() + g);
    while !open.is_empty() {
        let timeout = match until {
            Some(u) => match u.checked_duration_since(Instant::now()) {
                Some(left) if !left.is_zero() => Some(left),
                _ => return,
            },
            None => None,
        };
        let fds: Vec<_> = open.iter().map(|(_, f)| f.as_fd()).collect();
        let Ok(ready) = crate::sys::poll_readable_for(&fds, timeout) else {
            return;
        };
        if read_ready(p, open, &ready, buf) {
            until = grace.map(|g| Instant::now() + g);
        }
    }
}
