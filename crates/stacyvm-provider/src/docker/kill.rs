//! Killing one exec's processes without touching the rest of the sandbox.
//!
//! Every exec carries `STACYVM_EXEC_ID=<marker>` in its environment. Two ways to find and kill
//! the processes that inherited it:
//! - host side, when the provider shares the daemon's host and the runtime runs container
//!   processes as host processes (runc): freeze the container (so a fork bomb cannot outrun
//!   us), SIGKILL every marked process and the groups they lead, thaw;
//! - otherwise (remote daemon, gVisor) from inside: a small `sh` script run through exec,
//!   as the sandbox user, scanning `/proc/*/environ`.

use std::time::Duration;

use super::exec::MARKER_VAR;
use super::DockerProvider;

/// Scans `/proc` for marked processes until none is left (or this many passes).
const PASSES: usize = 20;
/// Bound on the whole kill, whichever way it goes.
const KILL_BUDGET: Duration = Duration::from_secs(15);

/// In-container sweep: `$1` is the marker. Needs `sh`, `tr` and `grep` in the image.
const SWEEP_SCRIPT: &str = r#"m="STACYVM_EXEC_ID=$1"; i=0
while [ "$i" -lt 20 ]; do
  hit=
  for d in /proc/[0-9]*; do
    p=${d#/proc/}
    [ "$p" = "$$" ] && continue
    # tr: grep stops at the NUL separators.
    if tr '\0' '\n' < "$d/environ" 2>/dev/null | grep -qxF "$m"; then
      kill -9 "$p" 2>/dev/null; kill -9 "-$p" 2>/dev/null; hit=1
    fi
  done
  [ -z "$hit" ] && exit 0
  i=$((i+1))
done
exit 1"#;

impl DockerProvider {
    /// Kills every process of the exec marked `marker` in container `cid`. Best effort, bounded
    /// in time; failures are logged.
    pub(super) async fn kill_marked(&self, cid: &str, marker: &str) {
        let work = async {
            if self.host_sees_processes(cid).await {
                self.host_kill(cid, marker).await;
                return;
            }
            let argv = vec![
                "sh".to_string(),
                "-c".to_string(),
                SWEEP_SCRIPT.to_string(),
                "sh".to_string(),
                marker.to_string(),
            ];
            // Boxed: helper execs run through the same machinery that calls us.
            match Box::pin(self.exec_helper_unkillable(cid, argv)).await {
                Ok(0) => {}
                Ok(code) => tracing::warn!(code, "in-sandbox kill of an exec did not finish"),
                Err(e) => tracing::warn!(error = %e, "in-sandbox kill of an exec failed"),
            }
        };
        if tokio::time::timeout(KILL_BUDGET, work).await.is_err() {
            tracing::warn!(container = %cid, "killing an exec's processes timed out");
        }
    }

    /// Whether the container's processes are host processes this process can see: the
    /// container's init is in our `/proc` and sits in a cgroup named after the container.
    async fn host_sees_processes(&self, cid: &str) -> bool {
        let Ok(info) = self.docker.inspect_container(cid, None).await else {
            return false;
        };
        let runtime = info
            .host_config
            .as_ref()
            .and_then(|h| h.runtime.clone())
            .unwrap_or_default();
        if runtime.contains("runsc") || runtime.contains("gvisor") || runtime.contains("kata") {
            return false;
        }
        let Some(pid) = info.state.and_then(|s| s.pid).filter(|p| *p > 1) else {
            return false;
        };
        let cid = cid.to_string();
        tokio::task::spawn_blocking(move || {
            std::fs::read_to_string(format!("/proc/{pid}/cgroup")).is_ok_and(|c| c.contains(&cid))
        })
        .await
        .unwrap_or(false)
    }

    async fn host_kill(&self, cid: &str, marker: &str) {
        // Frozen processes cannot fork, so one scan finds them all; the kills land on thaw.
        let paused = match self.docker.pause_container(cid).await {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!(error = %e, "pausing for a kill failed; killing unfrozen");
                false
            }
        };
        let needle = format!("{MARKER_VAR}={marker}");
        let scan = {
            let needle = needle.clone();
            tokio::task::spawn_blocking(move || sweep_host(needle.as_bytes()))
        };
        let first = scan.await.unwrap_or(0);
        if paused {
            if let Err(e) = self.docker.unpause_container(cid).await {
                tracing::error!(error = %e, container = %cid, "unpausing after a kill failed");
            }
        }
        if first == 0 {
            return;
        }
        for _ in 0..PASSES {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let needle = needle.clone();
            let n = tokio::task::spawn_blocking(move || sweep_host(needle.as_bytes()))
                .await
                .unwrap_or(0);
            if n == 0 {
                return;
            }
        }
        tracing::warn!(container = %cid, "processes of a killed exec survived");
    }
}

/// SIGKILLs every host process whose environment holds `needle` (and the group each leads).
/// Returns how many were found.
fn sweep_host(needle: &[u8]) -> usize {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let me = std::process::id();
    let mut hits = 0;
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
            .filter(|p| *p > 1 && u32::try_from(*p).ok() != Some(me))
        else {
            continue;
        };
        let Ok(env) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        if env_has(&env, needle) {
            hits += 1;
            sigkill(pid);
            sigkill(-pid);
        }
    }
    hits
}

/// Whether NUL-separated `env` has the exact entry `needle`.
fn env_has(env: &[u8], needle: &[u8]) -> bool {
    env.split(|b| *b == 0).any(|e| e == needle)
}

#[expect(unsafe_code, reason = "kill(2) has no wrapper in std")]
fn sigkill(pid: i32) {
    // Never 0, 1 or -1: those mean "my group", init and "everyone".
    if pid.unsigned_abs() <= 1 {
        return;
    }
    // SAFETY: kill(2) takes two integers and touches no memory of ours.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_entries_match_exactly() {
        let env = b"PATH=/bin\0STACYVM_EXEC_ID=abc\0HOME=/\0";
        assert!(env_has(env, b"STACYVM_EXEC_ID=abc"));
        assert!(!env_has(env, b"STACYVM_EXEC_ID=ab"));
        assert!(!env_has(b"X=STACYVM_EXEC_ID=abc", b"STACYVM_EXEC_ID=abc"));
    }

    #[test]
    fn host_sweep_kills_marked_processes_only() {
        let marker = format!("test-{}", std::process::id());
        let mut marked = std::process::Command::new("sleep")
            .arg("30")
            .env(MARKER_VAR, &marker)
            .spawn()
            .expect("spawn sleep");
        let mut other = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn sleep");
        let needle = format!("{MARKER_VAR}={marker}");
        assert_eq!(sweep_host(needle.as_bytes()), 1);
        let status = marked.wait().expect("wait");
        assert!(!status.success());
        assert!(
            other.try_wait().expect("try_wait").is_none(),
            "unmarked process was killed"
        );
        other.kill().expect("kill");
        other.wait().expect("wait");
    }
}
