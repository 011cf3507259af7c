//! The mock's process data plane: the static agent (`crates/stacyvm-agent`) as a plain host
//! process per sandbox, started on the sandbox's first process call (never at spawn, whose
//! throughput is benchmarked) and serving `--listen <state>/agent.sock`. The state directory
//! sits beside the sandbox root, not in it, so the files API never sees the socket. The agent
//! has its own session (a kill of the control plane's group leaves it running) and exits by
//! itself when the sandbox root disappears (`--exit-with`). Destroy kills its processes and it.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tempfile::TempDir;
use tokio::process::{Child, Command};
use tokio::time::Instant;

use super::exec::{kill_group, CLEAN_PATH};
use crate::agent::conn::AgentConn;
use crate::agent::procs;
use crate::ProviderError;

/// How long a fresh agent may take to create its socket and answer the handshake.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long destroy waits for a killed agent to be reaped.
const REAP_TIMEOUT: Duration = Duration::from_secs(5);

/// One sandbox's agent: started once, reconnected whenever its connection closed.
#[derive(Default)]
pub(super) struct AgentSlot {
    inner: tokio::sync::Mutex<Slot>,
    /// The agent's host pid (0 = none), readable without the lock (tests, shutdown).
    pid: AtomicU32,
}

#[derive(Default)]
struct Slot {
    running: Option<Running>,
    conn: Option<Arc<AgentConn>>,
    /// Set by destroy: no agent may start after it.
    stopped: bool,
}

/// Where a sandbox's agent keeps its socket, pid file and log.
pub(super) enum Place<'a> {
    /// A fresh temp dir under this base, removed with the agent.
    Temp(&'a Path),
    /// This state dir of a persistent sandbox, kept (the agent outlives the provider).
    Kept(&'a Path),
}

enum StateDir {
    Temp(TempDir),
    Kept(PathBuf),
}

impl StateDir {
    fn path(&self) -> &Path {
        match self {
            StateDir::Temp(t) => t.path(),
            StateDir::Kept(p) => p,
        }
    }
}

struct Running {
    /// `None` for an agent adopted from an earlier provider.
    child: Option<Child>,
    pid: u32,
    sock: PathBuf,
    state: StateDir,
}

impl Running {
    fn alive(&mut self) -> bool {
        let waited = match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => Path::new(&format!("/proc/{}", self.pid)).exists(),
        };
        // Even for our own child: right after a kill the wait can still answer "running"
        // while /proc already shows the zombie (tests/mock_processes.rs caught that race).
        waited && !is_zombie(self.pid)
    }

    async fn reap(&mut self) {
        match self.child.as_mut() {
            Some(c) => {
                let _ = tokio::time::timeout(REAP_TIMEOUT, c.wait()).await;
            }
            None => {
                let end = Instant::now() + REAP_TIMEOUT;
                while self.alive() && Instant::now() < end {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // The provider went away without destroying the sandbox (a test's provider dropped):
        // the root goes with it and `--exit-with` ends the agent; TERM makes that immediate.
        // A persistent sandbox's agent is meant to outlive the provider.
        if matches!(self.state, StateDir::Temp(_)) {
            terminate(self.pid);
        }
    }
}

impl AgentSlot {
    /// The slot of a persistent sandbox found on disk, with its agent if one still runs.
    pub(super) fn adopted(state: &Path) -> Self {
        let slot = AgentSlot::default();
        if let Some(pid) = super::persist::live_agent(state) {
            slot.pid.store(pid, Ordering::SeqCst);
            slot.inner.try_lock().expect("new slot").running = Some(Running {
                child: None,
                pid,
                sock: super::persist::socket_path(state),
                state: StateDir::Kept(state.to_path_buf()),
            });
        }
        slot
    }

    pub(super) fn pid(&self) -> Option<u32> {
        Some(self.pid.load(Ordering::SeqCst)).filter(|p| *p != 0)
    }

    /// The connection to this sandbox's agent, starting the agent first if it is not running.
    pub(super) async fn conn(
        &self,
        bin: &Path,
        root: &Path,
        place: Place<'_>,
        id: &str,
    ) -> Result<Arc<AgentConn>, ProviderError> {
        let mut slot = self.inner.lock().await;
        if slot.stopped {
            return Err(ProviderError::SandboxNotFound(id.to_string()));
        }
        // The child is asked first: a dead agent's connection may not have noticed yet.
        let alive = slot.running.as_mut().is_some_and(Running::alive);
        if let Some(c) = slot.conn.as_ref().filter(|c| alive && !c.is_closed()) {
            return Ok(c.clone());
        }
        slot.conn = None;
        if !alive {
            slot.running = None;
            self.pid.store(0, Ordering::SeqCst);
            let r = start(bin, root, place, id)?;
            self.pid.store(r.pid, Ordering::SeqCst);
            slot.running = Some(r);
        }
        let Some(r) = slot.running.as_mut() else {
            return Err(ProviderError::internal("mock agent vanished"));
        };
        let deadline = Instant::now() + START_TIMEOUT;
        let c = match connect(r, id, deadline).await {
            Ok(c) => Arc::new(c),
            Err(e) => {
                // A half-started agent is of no use; the next call starts a fresh one.
                let r = slot.running.take();
                self.pid.store(0, Ordering::SeqCst);
                if let Some(mut r) = r {
                    let log = std::fs::read_to_string(r.state.path().join("agent.log"))
                        .unwrap_or_default();
                    kill_group(r.pid as i32);
                    r.reap().await;
                    tracing::warn!(sandbox = id, log = %log.trim(), "mock agent did not start");
                }
                return Err(e);
            }
        };
        slot.conn = Some(c.clone());
        Ok(c)
    }

    /// Kills every process the agent runs (their groups: the host sees the agent's pids),
    /// then the agent. After this no agent starts for the sandbox.
    pub(super) async fn stop(&self) {
        let mut slot = self.inner.lock().await;
        slot.stopped = true;
        if let Some(c) = slot.conn.take() {
            if let Ok(list) = procs::list(&c).await {
                for p in list.iter().filter(|p| p.exit_code.is_none()) {
                    if let Ok(pid) = i32::try_from(p.pid) {
                        kill_group(pid);
                        kill_pid(pid);
                    }
                }
            }
        }
        if let Some(mut r) = slot.running.take() {
            if let Ok(pid) = i32::try_from(r.pid) {
                kill_group(pid);
            }
            r.reap().await;
            // A socket outside the state dir (a deep state path) does not go with it.
            if !r.sock.starts_with(r.state.path()) {
                let _ = std::fs::remove_file(&r.sock);
            }
        }
        self.pid.store(0, Ordering::SeqCst);
    }
}

fn start(bin: &Path, root: &Path, place: Place<'_>, id: &str) -> Result<Running, ProviderError> {
    let fail = |e| ProviderError::internal_with("starting the mock sandbox agent failed", e);
    let state = match place {
        Place::Temp(base) => {
            // A short name: a unix socket path has at most 107 bytes.
            let short: String = id.chars().take(24).collect();
            let t = tempfile::Builder::new()
                .prefix(&format!("stacyvm-agent-{short}-"))
                .tempdir_in(base)
                .map_err(fail)?;
            StateDir::Temp(t)
        }
        Place::Kept(dir) => StateDir::Kept(dir.to_path_buf()),
    };
    let sock = super::persist::socket_path(state.path());
    super::persist::prepare_socket_dir(&sock).map_err(fail)?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(state.path().join("agent.log"))
        .map_err(fail)?;
    let log2 = log.try_clone().map_err(fail)?;
    let mut cmd = Command::new(bin);
    // A clean environment, as for exec: the server's own (its config path, keys) must not reach
    // the processes, which inherit the agent's.
    cmd.env_clear()
        .env("PATH", CLEAN_PATH)
        .arg("--listen")
        .arg(&sock)
        .arg("--exit-with")
        .arg(root)
        .current_dir(root)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .kill_on_drop(false);
    new_session(&mut cmd);
    let child = cmd.spawn().map_err(|e| {
        ProviderError::Unavailable(format!(
            "starting the sandbox agent {} failed: {e}",
            bin.display()
        ))
    })?;
    let pid = child
        .id()
        .ok_or_else(|| ProviderError::internal("the mock agent exited at once"))?;
    if let StateDir::Kept(dir) = &state {
        // How a restarted provider finds the agent again.
        std::fs::write(dir.join("agent.pid"), pid.to_string()).map_err(fail)?;
    }
    Ok(Running {
        child: Some(child),
        pid,
        sock,
        state,
    })
}

async fn connect(r: &mut Running, id: &str, deadline: Instant) -> Result<AgentConn, ProviderError> {
    let unavailable = |what: String| ProviderError::Unavailable(format!("sandbox agent {what}"));
    loop {
        let exited = match r.child.as_mut() {
            Some(c) => c.try_wait().ok().flatten(),
            None => None,
        };
        if let Some(status) = exited {
            let log = std::fs::read_to_string(r.state.path().join("agent.log")).unwrap_or_default();
            let last = log.lines().last().unwrap_or_default().to_string();
            return Err(unavailable(format!("exited at start ({status}): {last}")));
        }
        match tokio::net::UnixStream::connect(&r.sock).await {
            Ok(s) => {
                return AgentConn::handshake(s, id, deadline)
                    .await
                    .map_err(|e| unavailable(format!("handshake failed: {e}")));
            }
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => return Err(unavailable(format!("socket never came up: {e}"))),
        }
    }
}

/// Whether `pid` has died without being reaped yet: tokio's `try_wait` may only notice once its
/// reactor saw the pidfd turn ready.
fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
    })
}

#[expect(unsafe_code, reason = "std has no safe setsid for a child")]
fn new_session(cmd: &mut Command) {
    // SAFETY: setsid(2) is async-signal-safe and the closure allocates nothing.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[expect(
    unsafe_code,
    reason = "std has no safe way to signal a pid it did not spawn"
)]
fn kill_pid(pid: i32) {
    if pid <= 1 {
        return;
    }
    // SAFETY: kill(2) only takes integers and touches no memory of this process.
    let _ = unsafe { libc::kill(pid, libc::SIGKILL) };
}

#[expect(unsafe_code, reason = "std has no safe way to signal a pid")]
fn terminate(pid: u32) {
    let Ok(pid) = i32::try_from(pid) else { return };
    if pid <= 1 {
        return;
    }
    // SAFETY: kill(2) only takes integers and touches no memory of this process.
    let _ = unsafe { libc::kill(pid, libc::SIGTERM) };
}
