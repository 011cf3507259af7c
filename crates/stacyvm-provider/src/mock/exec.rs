//! Runs a command for a mock sandbox directly on the host.
//!
//! The command gets its own process group. The group is SIGKILLed when the command's main
//! process exits (so `sleep 100 &` leftovers die with the exec instead of lingering on the host
//! or holding the output pipes open), when the timeout expires, when the output receiver goes
//! away, when the sandbox is destroyed, and when the exec future is dropped. A process that
//! leaves the group on purpose (`setsid`) is beyond reach; the mock gives no isolation.
//!
//! Exit codes: the command's own code; `128 + signal` when a signal killed it; `127` (with a
//! shell-like message on stderr) when the program does not exist and `126` when it is not
//! executable, as `sh` would report in shell mode.

use std::io;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};

use stacyvm_types::{StreamChunk, StreamKind};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

use super::paths::resolve;
use crate::{ChunkSender, ExecRequest, ProviderError};

/// `PATH` of mock commands (Debian's default for root).
pub(super) const CLEAN_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Largest chunk handed to the sender (the original mock's read size).
pub(super) const CHUNK: usize = 4096;

pub(super) async fn run(
    id: &str,
    root: &Path,
    req: ExecRequest,
    out: ChunkSender,
    cancel: CancellationToken,
) -> Result<i32, ProviderError> {
    if req.user.is_some() {
        return Err(crate::agent::no_user_switch("mock"));
    }
    let cwd = host_workdir(root, req.workdir.as_deref()).await?;
    let argv = req.argv();
    let Some((prog, args)) = argv.split_first().filter(|(p, _)| !p.trim().is_empty()) else {
        return Err(ProviderError::InvalidInput("command is required".into()));
    };
    // Resolved here against the command's own PATH: with a changed environment and a bare
    // name std cannot use posix_spawn and forks the whole server instead (+0.5–1 ms per exec).
    let path = req.env.get("PATH").map_or(CLEAN_PATH, String::as_str);
    let mut cmd = match lookup(prog, path) {
        Some(full) => {
            let mut c = Command::new(full);
            c.arg0(prog);
            c
        }
        None => Command::new(prog),
    };
    // A clean environment: the server's own (STACYVM_CONFIG, keys, tokens) must not leak
    // into commands.
    cmd.args(args)
        .current_dir(&cwd)
        .env_clear()
        .env("PATH", CLEAN_PATH)
        .envs(&req.env)
        .envs(sandbox_env(root))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return spawn_failure(prog, e, &out).await,
    };
    let mut group = Group::new(child);
    let (Some(stdout), Some(stderr)) = (group.child.stdout.take(), group.child.stderr.take())
    else {
        return Err(ProviderError::internal("command output pipes missing"));
    };

    let pgid = group.pgid;
    let child = &mut group.child;
    let body = async {
        let wait = async {
            let status = child
                .wait()
                .await
                .map_err(|e| ProviderError::internal_with("waiting for the command failed", e))?;
            // The main process is gone; take whatever it left running in its group too.
            if let Some(p) = pgid {
                kill_group(p);
            }
            Ok::<_, ProviderError>(status)
        };
        let (_, _, status) = tokio::try_join!(
            pump(stdout, StreamKind::Stdout, &out),
            pump(stderr, StreamKind::Stderr, &out),
            wait,
        )?;
        Ok(exit_code(status))
    };
    let timed = async {
        match req.timeout {
            Some(d) => tokio::time::timeout(d, body)
                .await
                .unwrap_or(Err(ProviderError::Timeout)),
            None => body.await,
        }
    };
    // Biased: a finished command beats a receiver that closed at the same moment, and a
    // destroy is reported as such.
    let outcome = tokio::select! {
        biased;
        r = timed => r,
        () = cancel.cancelled() => Err(ProviderError::SandboxNotFound(id.to_string())),
        () = out.closed() => Err(receiver_gone()),
    };
    // On success the group was already killed right after the main process exited; killing
    // again after reaping could hit a recycled process group id.
    group.finished = outcome.is_ok();
    outcome
}

/// The executable `prog` names on `path` (`prog` itself when it contains a `/`); `None` when
/// none is found, so the spawn reports it as a shell would.
pub(super) fn lookup(prog: &str, path: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    if prog.contains('/') {
        return None;
    }
    path.split(':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(prog))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// The host directory a command runs in: `workdir` inside the sandbox, default `/workspace`.
pub(super) async fn host_workdir(
    root: &Path,
    workdir: Option<&str>,
) -> Result<PathBuf, ProviderError> {
    match workdir {
        None | Some("") => Ok(root.join("workspace")),
        Some(w) => {
            let dir = resolve(root, w, true)?.host;
            if !tokio::fs::metadata(&dir).await.is_ok_and(|m| m.is_dir()) {
                return Err(ProviderError::InvalidInput(format!(
                    "workdir {w:?} is not a directory"
                )));
            }
            Ok(dir)
        }
    }
}

/// What every command of the sandbox finds in its environment, over the request's own.
pub(super) fn sandbox_env(root: &Path) -> [(String, String); 3] {
    let s = |p: &Path| p.to_string_lossy().into_owned();
    [
        ("HOME".into(), s(root)),
        ("WORKSPACE".into(), s(&root.join("workspace"))),
        ("SANDBOX_ROOT".into(), s(root)),
    ]
}

fn receiver_gone() -> ProviderError {
    ProviderError::internal("exec output receiver closed")
}

fn exit_code(status: ExitStatus) -> i32 {
    status
        .code()
        .unwrap_or_else(|| status.signal().map_or(-1, |s| 128 + s))
}

async fn spawn_failure(prog: &str, e: io::Error, out: &ChunkSender) -> Result<i32, ProviderError> {
    let (code, what) = match e.kind() {
        io::ErrorKind::NotFound => (127, "command not found"),
        io::ErrorKind::PermissionDenied => (126, "permission denied"),
        io::ErrorKind::InvalidInput => {
            return Err(ProviderError::InvalidInput(
                "command, arguments and environment must not contain NUL bytes".into(),
            ))
        }
        _ => {
            return Err(ProviderError::internal_with(
                "starting the command failed",
                e,
            ))
        }
    };
    let chunk = StreamChunk {
        stream: StreamKind::Stderr,
        data: format!("{prog}: {what}\n").into_bytes(),
    };
    out.send(chunk).await.map_err(|_| receiver_gone())?;
    Ok(code)
}

/// Forwards raw read slices of one pipe until EOF.
async fn pump(
    mut pipe: impl AsyncRead + Unpin,
    stream: StreamKind,
    out: &ChunkSender,
) -> Result<(), ProviderError> {
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = pipe
            .read(&mut buf)
            .await
            .map_err(|e| ProviderError::internal_with("reading command output failed", e))?;
        if n == 0 {
            return Ok(());
        }
        let chunk = StreamChunk {
            stream,
            data: buf[..n].to_vec(),
        };
        out.send(chunk).await.map_err(|_| receiver_gone())?;
    }
}

/// The running command. Dropping it unfinished SIGKILLs the whole process group before the
/// child handle goes (its `kill_on_drop` and tokio's orphan reaping then collect the leader),
/// so the group id cannot have been recycled yet.
struct Group {
    child: Child,
    /// `None` if the pid is unknown or unusable as a group id; then only the leader is killed.
    pgid: Option<i32>,
    finished: bool,
}

impl Group {
    fn new(child: Child) -> Self {
        // With `process_group(0)` the leader's pid is the group id. Never 0 or 1: kill(2) would
        // read those as "my group" / "every process".
        let pgid = child
            .id()
            .and_then(|p| i32::try_from(p).ok())
            .filter(|p| *p > 1);
        Group {
            child,
            pgid,
            finished: false,
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        if !self.finished {
            if let Some(p) = self.pgid {
                kill_group(p);
            }
        }
    }
}

/// SIGKILLs every process in group `pgid` (> 1). Errors (the group is already empty) are moot.
#[expect(unsafe_code, reason = "std has no safe way to signal a process group")]
pub(super) fn kill_group(pgid: i32) {
    if pgid <= 1 {
        return;
    }
    // SAFETY: kill(2) only takes integers and touches no memory of this process; a negative
    // pid > 1 in magnitude addresses exactly one process group.
    let _ = unsafe { libc::kill(-pgid, libc::SIGKILL) };
}

#[cfg(test)]
mod lookup_tests {
    use super::lookup;

    #[test]
    fn bare_names_resolve_on_the_given_path_only() {
        let sh = lookup("sh", "/nonexistent:/usr/bin:/bin").expect("sh on PATH");
        assert!(sh.ends_with("sh") && sh.is_absolute(), "{}", sh.display());
        assert_eq!(lookup("sh", "/nonexistent"), None);
        assert_eq!(
            lookup("/bin/sh", "/usr/bin"),
            None,
            "a path is used as given"
        );
        assert_eq!(lookup("no-such-program-here", super::CLEAN_PATH), None);
        // A directory of that name is not a program.
        assert_eq!(lookup("bin", "/usr:/"), None);
    }
}
