//! Starting a sandbox's bwrap and reaching the agent it runs.
//!
//! The agent is the sandbox's PID 1 (`--as-pid-1`): it reaps orphans, processes in the sandbox
//! cannot SIGKILL it, and when it dies the kernel ends the whole pid namespace. bwrap is **not**
//! given `--die-with-parent`: a sandbox must outlive a restart (or `kill -9`) of the control
//! plane, which adopts it again from its directory. bwrap runs in a session of its own; only
//! destroy (through the cgroup) ends it.

use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};
use tokio::time::Instant;

use super::cgroup::Cgroups;
use super::state::Paths;
use super::{seccomp, sys, Settings};
use crate::agent::conn::AgentConn;
use crate::ProviderError;

/// Where the agent binary and its socket directory are mounted in every sandbox.
pub(super) const AGENT_BIN: &str = "/.stacyvm/agent";
const AGENT_RUN_DIR: &str = "/.stacyvm/run";
const AGENT_SOCK: &str = "/.stacyvm/run/agent.sock";
pub(super) const WORKSPACE: &str = "/workspace";
/// How long a new sandbox's agent may take to listen and answer.
pub(super) const START_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a new sandbox's agent socket is polled every millisecond before every 10 ms.
const FAST_POLL: Duration = Duration::from_millis(200);
/// How long one connection attempt to a running agent may take.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// `PATH` when the image sets none (Docker's default).
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// bwrap's arguments for the sandbox `id` in `paths`, with the image's `env`.
pub(super) fn args(settings: &Settings, paths: &Paths, id: &str, env: &[String]) -> Vec<String> {
    let p = |x: &Path| x.to_string_lossy().into_owned();
    let mut a: Vec<String> = [
        // user (where the kernel allows), ipc, pid, net, uts and cgroup namespaces. With only
        // `--unshare-net` the sandbox has `lo` and nothing else (network_mode: none).
        "--unshare-all",
        "--new-session",
        "--as-pid-1",
        "--cap-drop",
        "ALL",
        "--hostname",
        id,
        "--bind",
        &p(&paths.merged()),
        "/",
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "--ro-bind",
        &p(&settings.agent),
        AGENT_BIN,
        "--bind",
        &p(&paths.run()),
        AGENT_RUN_DIR,
        "--chdir",
        "/",
        "--clearenv",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for (k, v) in environment(env) {
        a.extend(["--setenv".into(), k, v]);
    }
    a
}

/// The agent's environment (and so every process's): the image's `Env`, with `PATH`, `HOME`
/// and `WORKSPACE` defaults where the image sets none; `HOSTNAME` as Docker sets it is left to
/// the shell.
fn environment(env: &[String]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = env
        .iter()
        .filter_map(|kv| kv.split_once('='))
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    for (k, v) in [
        ("PATH", DEFAULT_PATH),
        ("HOME", "/root"),
        ("WORKSPACE", WORKSPACE),
    ] {
        if !out.iter().any(|(have, _)| have == k) {
            out.push((k.into(), v.into()));
        }
    }
    out
}

/// Starts bwrap for the sandbox, in its cgroups, with the seccomp filter, detached from the
/// provider (own session, stdio to the console log).
pub(super) fn spawn(
    settings: &Settings,
    paths: &Paths,
    id: &str,
    env: &[String],
    groups: &Cgroups,
) -> Result<Child, ProviderError> {
    let fail = |e| ProviderError::internal_with("starting the sandbox failed", e);
    let filters = seccomp::files()?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(paths.console())
        .map_err(fail)?;
    let log2 = log.try_clone().map_err(fail)?;
    let mut cmd = Command::new(&settings.bwrap);
    cmd.args(args(settings, paths, id, env));
    for f in &filters {
        cmd.arg("--add-seccomp-fd").arg(f.as_raw_fd().to_string());
    }
    cmd.arg("--")
        .arg(AGENT_BIN)
        .arg("--listen")
        .arg(AGENT_SOCK)
        .arg("--workdir")
        .arg(WORKSPACE)
        // bwrap's own environment: nothing of the control plane's (its config, keys) matters
        // to it, and `--clearenv` keeps it from the sandbox anyway.
        .env_clear()
        .env("PATH", DEFAULT_PATH)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .kill_on_drop(false);
    let keep = filters.iter().map(AsRawFd::as_raw_fd).collect();
    sys::prepare_child(&mut cmd, groups.procs_files()?, keep);
    let child = cmd.spawn().map_err(|e| {
        ProviderError::Unavailable(format!(
            "starting bwrap ({}) failed: {e}",
            settings.bwrap.display()
        ))
    })?;
    // The child has its copies of the filter files; ours close here.
    drop(filters);
    Ok(child)
}

/// Opens the sandbox's agent socket without following a link and checks it is a socket: the
/// sandbox can write its socket directory, and must not point the host's connection elsewhere.
fn open_socket(sock: &Path) -> std::io::Result<std::fs::File> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(sock)?;
    if !f.metadata()?.file_type().is_socket() {
        return Err(std::io::Error::other("not a socket"));
    }
    Ok(f)
}

/// One connection attempt: the socket as [`open_socket`] found it (connected through its
/// descriptor, so a path of any length works), then the handshake.
async fn connect_once(paths: &Paths, id: &str, deadline: Instant) -> Result<AgentConn, String> {
    let f = open_socket(&paths.socket()).map_err(|e| e.to_string())?;
    let via = format!("/proc/self/fd/{}", f.as_raw_fd());
    let stream = tokio::net::UnixStream::connect(&via)
        .await
        .map_err(|e| e.to_string())?;
    drop(f);
    AgentConn::handshake(stream, id, deadline)
        .await
        .map_err(|e| format!("handshake failed: {e}"))
}

/// Connects to the agent, retrying until `deadline` while `alive` says the sandbox still runs.
pub(super) async fn connect(
    paths: &Paths,
    id: &str,
    deadline: Instant,
    mut alive: impl FnMut() -> bool,
) -> Result<AgentConn, ProviderError> {
    // The agent listens a few ms after bwrap starts: poll every millisecond at first (a
    // fixed 10 ms cost a spawn 5 ms on average, docs/benchmarks.md "Issue 15"), then less often.
    let fast_until = Instant::now() + FAST_POLL;
    loop {
        let err = match connect_once(paths, id, deadline).await {
            Ok(c) => return Ok(c),
            Err(e) => e,
        };
        if !alive() {
            let log = std::fs::read_to_string(paths.console()).unwrap_or_default();
            let last = log.lines().last().unwrap_or_default().to_string();
            return Err(ProviderError::Unavailable(format!(
                "the sandbox exited at start: {last}"
            )));
        }
        if Instant::now() >= deadline {
            return Err(ProviderError::Unavailable(format!(
                "sandbox agent unreachable: {err}"
            )));
        }
        let pause = if Instant::now() < fast_until {
            Duration::from_millis(1)
        } else {
            Duration::from_millis(10)
        };
        tokio::time::sleep(pause).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_defaults_fill_gaps_only() {
        let env = environment(&["PATH=/bin".into(), "A=b=c".into(), "junk".into()]);
        assert!(env.contains(&("PATH".into(), "/bin".into())));
        assert!(env.contains(&("A".into(), "b=c".into())));
        assert!(env.contains(&("HOME".into(), "/root".into())));
        assert!(env.contains(&("WORKSPACE".into(), WORKSPACE.into())));
        assert_eq!(env.iter().filter(|(k, _)| k == "PATH").count(), 1);
    }
}
