//! Background processes (protocol version 3): a registry global to the agent, shared by every
//! host connection and outliving them all. Each process runs in its own process group (a PTY
//! process in its own session), its output goes into a byte-bounded [`ring::Ring`] that any
//! number of readers copy from, and its exit status is kept until `retain_exited_ms` after it
//! ended. The pipe readers never wait on a host: a slow reader only loses the oldest output,
//! which it is told about with a gap record. See docs/processes.md.

mod account;
mod api;
mod inline;
mod pspawn;
pub mod pty;
mod read;
pub mod ring;
mod spawn;
mod stdin;
mod timers;
mod watch;

pub(crate) use crate::sys::thread;
use std::collections::BTreeMap;
use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use stacyvm_protocol::agent::AgentProc;

pub use api::handle;
pub use read::Reads;

use crate::session::lock;
use ring::Ring;

/// Agent-wide settings for processes, set once at start.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Working directory of a process started with an empty `workdir`.
    pub default_workdir: PathBuf,
    /// Whether processes start from the agent's own environment (else from the defaults).
    pub inherit_env: bool,
}

static SETTINGS: OnceLock<Settings> = OnceLock::new();

pub fn configure(s: Settings) {
    let _ = SETTINGS.set(s);
}

fn settings() -> Settings {
    SETTINGS.get().cloned().unwrap_or(Settings {
        default_workdir: PathBuf::from("/workspace"),
        inherit_env: true,
    })
}

/// How a process ended.
#[derive(Debug, Clone)]
pub struct Exit {
    pub code: i32,
    pub signal: Option<&'static str>,
    pub ended_at_ms: i64,
}

/// The mutable part of a process, behind one lock so output and exit are ordered.
#[derive(Debug)]
pub struct State {
    pub ring: Ring,
    pub exit: Option<Exit>,
    /// Set once a `close` was accepted (or the process was started without stdin).
    pub stdin_closed: bool,
    /// The furthest offset any reader has sent on (an exec's output is held until then).
    pub read_upto: u64,
    /// Reads in flight, and whether there ever was one.
    pub readers: u32,
    pub had_reader: bool,
}

impl State {
    /// Whether an exec process's pump must wait before adding `n` bytes: its ring would then
    /// hold bytes no reader has sent yet beyond its capacity. Only while a reader is there, or
    /// is still to come (`awaiting_reader`): a host that went away must not wedge the process.
    pub fn must_hold(&self, n: usize, awaiting_reader: bool) -> bool {
        let unsent = self.ring.total().saturating_sub(self.read_upto);
        self.exit.is_none()
            && (self.readers > 0 || (!self.had_reader && awaiting_reader))
            && unsent > 0
            && unsent + n as u64 > self.ring.capacity() as u64
    }
}

pub struct Proc {
    pub pid: u32,
    pub pgid: i32,
    /// Start order, for newest-first listing (pids wrap, clocks tie).
    order: u64,
    tag: String,
    command: String,
    args: Vec<String>,
    pub is_pty: bool,
    stdin_requested: bool,
    started_at_ms: i64,
    retain_ms: u64,
    pub state: Mutex<State>,
    /// Notified on new output and on exit.
    pub changed: Condvar,
    /// Queue of the stdin writer thread; `None` without stdin.
    stdin: Mutex<Option<std::sync::mpsc::Sender<stdin::Item>>>,
    /// Bytes queued for stdin and not yet written (bounded by [`stdin::MAX_QUEUED`]).
    stdin_queued: std::sync::atomic::AtomicUsize,
    /// The PTY master, for resizing; closed once the process exited (frees the terminal).
    master: Mutex<Option<File>>,
    /// Set by the timeout: the exit code becomes 124.
    timed_out: AtomicBool,
    /// Run as a 0.1 exec (`ProcStart.exec`): output held for readers, group killed at exit.
    pub exec: bool,
    /// An exec's `STACYVM_EXEC_ID`: its leftovers are found by it.
    marker: Option<String>,
    /// Output pumps waiting for a reader right now.
    held: std::sync::atomic::AtomicUsize,
    /// The read its start asked for, served by whoever records output (`inline.rs`).
    inline: Mutex<Option<inline::Reader>>,
}

impl Proc {
    pub fn info(&self) -> AgentProc {
        let st = lock(&self.state);
        let exited = st.exit.is_some();
        AgentProc {
            pid: self.pid,
            tag: self.tag.clone(),
            command: self.command.clone(),
            args: self.args.clone(),
            pty: self.is_pty,
            stdin: self.stdin_requested,
            state: if exited { "exited" } else { "running" }.to_string(),
            exit_code: st.exit.as_ref().map(|e| e.code),
            signal: st.exit.as_ref().and_then(|e| e.signal.map(str::to_string)),
            started_at_ms: self.started_at_ms,
            ended_at_ms: st.exit.as_ref().map(|e| e.ended_at_ms),
            // Once exited, the exit record (at `total`) counts as one more: `next_seq` is
            // always the `since` that returns only what is new.
            next_seq: st.ring.total() + u64::from(exited),
        }
    }

    pub fn exited(&self) -> bool {
        lock(&self.state).exit.is_some()
    }

    fn expired(&self, now: i64) -> bool {
        lock(&self.state).exit.as_ref().is_some_and(|e| {
            now.saturating_sub(e.ended_at_ms) >= i64::try_from(self.retain_ms).unwrap_or(i64::MAX)
        })
    }
}

/// Every process the agent keeps, by pid.
pub struct Registry {
    procs: Mutex<BTreeMap<u32, Arc<Proc>>>,
    counter: AtomicU64,
}

pub fn registry() -> &'static Registry {
    static R: OnceLock<Registry> = OnceLock::new();
    R.get_or_init(|| Registry {
        procs: Mutex::new(BTreeMap::new()),
        counter: AtomicU64::new(0),
    })
}

impl Registry {
    fn insert(&self, p: Arc<Proc>) {
        // An OS pid reused while an exited process with that pid is still retained replaces it.
        lock(&self.procs).insert(p.pid, p);
    }

    fn next_order(&self) -> u64 {
        self.counter.fetch_add(1, Ordering::SeqCst)
    }

    pub fn get(&self, pid: u32) -> Option<Arc<Proc>> {
        self.prune();
        lock(&self.procs).get(&pid).cloned()
    }

    /// Newest first.
    pub fn list(&self) -> Vec<Arc<Proc>> {
        self.prune();
        let mut v: Vec<Arc<Proc>> = lock(&self.procs).values().cloned().collect();
        v.sort_by_key(|p| std::cmp::Reverse(p.order));
        v
    }

    /// Drops exited processes past their retention.
    pub fn prune(&self) {
        let now = now_ms();
        lock(&self.procs).retain(|_, p| !p.expired(now));
    }

    /// KILL to the group of every running process (the agent is going away).
    pub fn kill_all(&self) {
        for p in lock(&self.procs).values() {
            if !p.exited() {
                let _ = pty::signal_group(p.pgid, libc::SIGKILL);
            }
        }
    }
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
pub(crate) mod tests;

#[cfg(test)]
mod account_tests;
#[cfg(test)]
mod pty_tests;
