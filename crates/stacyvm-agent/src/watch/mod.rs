//! Directory watches (`HostMsg::Watch`, protocol version 6): inotify, one instance and one
//! helper thread per watch, which belong to the session that asked. The thread waits on the
//! instance and on a socket pair whose other end the session holds: `Cancel`, or the session
//! ending (the host went away), drops that end, the thread wakes, closes the instance (which
//! removes every kernel watch) and returns to the pool. Nothing outlives the connection.

mod inotify;
#[cfg(test)]
mod tests;
mod tree;

use std::collections::HashMap;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::{Arc, Mutex};

use stacyvm_protocol::agent::{AgentWatchEvent, ErrorCode, GuestMsg, MAX_WATCH_EVENTS_PER_FRAME};

use self::tree::{OpenError, Step, Tree};
use crate::session::{lock, Out};
use crate::sys;

/// Bytes read from an instance at once: hundreds of events with long names.
const READ_BUF: usize = 64 * 1024;
/// Bytes of names per `WatchEvents` frame at most, besides the count limit: 256 deep paths
/// of odd bytes (escaped sixfold in JSON) would not fit a frame, and one that does not fit is
/// never sent.
const FRAME_NAMES: usize = 256 * 1024;

/// Watches of one session, by request id: the session's end of each one's stop pair.
#[derive(Default, Clone)]
pub struct Watches(Arc<Mutex<HashMap<u64, UnixStream>>>);

impl Watches {
    /// Starts the watch of request `id`. Its answers (`Watching`, then `WatchEvents`*, or an
    /// `Error`) go to `out` from the watch's thread: a large tree takes a while to watch, and
    /// the request loop keeps answering meanwhile.
    pub fn start(&self, id: u64, path: String, recursive: bool, out: Out) {
        if !path.starts_with('/') || path.contains('\0') {
            out.error(id, ErrorCode::InvalidInput, "path must be absolute");
            return;
        }
        let (ours, theirs) = match UnixStream::pair() {
            Ok(p) => p,
            Err(e) => return out.error(id, ErrorCode::Busy, format!("cannot watch ({e})")),
        };
        lock(&self.0).insert(id, ours);
        let (watches, tout) = (self.clone(), out.clone());
        let started = sys::thread("watch", move || {
            run(id, Path::new(&path), recursive, &theirs, &tout);
            lock(&watches.0).remove(&id);
        });
        if let Err(e) = started {
            lock(&self.0).remove(&id);
            out.error(id, ErrorCode::Busy, e);
        }
    }

    /// Ends the watch of request `target`, if there is one; it answers `WatchEnd`.
    pub fn cancel(&self, target: u64) {
        // Dropping our end wakes the thread.
        lock(&self.0).remove(&target);
    }

    /// Ends every watch (the session ended).
    pub fn cancel_all(&self) {
        lock(&self.0).clear();
    }
}

/// The watch's thread: opens it, then forwards events until it is stopped or ends.
fn run(id: u64, path: &Path, recursive: bool, stop: &UnixStream, out: &Out) {
    let mut tree = match Tree::open(path, recursive) {
        Ok(t) => t,
        Err(e) => {
            let (code, message) = match e {
                OpenError::NotFound => (ErrorCode::NotFound, "no such directory".to_string()),
                OpenError::NotADirectory => (ErrorCode::InvalidInput, "not a directory".into()),
                OpenError::Denied => (ErrorCode::InvalidInput, "permission denied".into()),
                OpenError::Limit => (
                    ErrorCode::Busy,
                    "the sandbox's inotify limits are reached (fs.inotify.max_user_instances, \
                     max_user_watches)"
                        .into(),
                ),
                OpenError::Io(e) => (ErrorCode::Io, e),
            };
            return out.error(id, code, message);
        }
    };
    out.send(id, GuestMsg::Watching);
    let mut buf = vec![0u8; READ_BUF];
    loop {
        let ready = match sys::poll_readable(&[tree.as_fd(), stop.as_fd()]) {
            Ok(r) => r,
            Err(e) => return out.error(id, ErrorCode::Io, format!("watch failed: {e}")),
        };
        // Stopped: by `Cancel` (the host reads the end) or by the session's end (the frame is
        // dropped, nobody is left to read it).
        if ready.get(1) == Some(&true) || !out.is_current() {
            return out.send(id, GuestMsg::WatchEnd);
        }
        if ready.first() != Some(&true) {
            continue;
        }
        match drain(&mut tree, &mut buf, id, out) {
            Step::Go => {}
            Step::End => return out.send(id, GuestMsg::WatchEnd),
            Step::Failed(message) => return out.error(id, ErrorCode::Busy, message),
        }
    }
}

/// `events` cut into frames of at most [`MAX_WATCH_EVENTS_PER_FRAME`] events and about
/// [`FRAME_NAMES`] bytes of names.
fn frames(events: Vec<AgentWatchEvent>) -> Vec<Vec<AgentWatchEvent>> {
    let mut out: Vec<Vec<AgentWatchEvent>> = Vec::new();
    let mut bytes = 0;
    for e in events {
        let full = out.last().is_none_or(|f| {
            f.len() >= MAX_WATCH_EVENTS_PER_FRAME || bytes + e.name.len() > FRAME_NAMES
        });
        if full {
            out.push(Vec::new());
            bytes = 0;
        }
        bytes += e.name.len();
        if let Some(f) = out.last_mut() {
            f.push(e);
        }
    }
    out
}

/// Reads and forwards everything queued on the instance.
fn drain(tree: &mut Tree, buf: &mut [u8], id: u64, out: &Out) -> Step {
    loop {
        let n = match tree.read(buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Step::Go,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Step::Failed(format!("reading the watch failed: {e}")),
        };
        let mut events = Vec::new();
        let step = tree.handle(inotify::parse(&buf[..n]), &mut events);
        for frame in frames(events) {
            out.send(id, GuestMsg::WatchEvents { events: frame });
        }
        if step != Step::Go {
            return step;
        }
    }
}
