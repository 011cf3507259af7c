//! Sandboxes that survive a restart of the provider (`MockProvider::persistent`): each one is
//! `<base>/stacyvm-<id>/` (the root the files API and commands see) beside
//! `<base>/stacyvm-<id>.state/` (`sandbox.json`, the agent's socket, pid file and log). Nothing
//! is removed when the provider goes away, and its agents keep running, so a control plane
//! killed with `kill -9` and restarted on the same base directory adopts the sandboxes and
//! reconnects to their agents: processes outlive it as on docker. Destroy removes both dirs.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::ProviderError;

/// What a state directory records about its sandbox.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Meta {
    pub id: String,
    pub image: String,
}

pub(super) fn root(base: &Path, id: &str) -> PathBuf {
    base.join(format!("stacyvm-{id}"))
}

pub(super) fn state(base: &Path, id: &str) -> PathBuf {
    base.join(format!("stacyvm-{id}.state"))
}

/// Makes the root (with `workspace/`) and the state dir of a new sandbox and records it.
pub(super) fn create(base: &Path, id: &str, image: &str) -> Result<PathBuf, ProviderError> {
    let fail = |e| ProviderError::internal_with("creating the sandbox directory failed", e);
    let root = root(base, id);
    let state = state(base, id);
    std::fs::create_dir_all(root.join("workspace")).map_err(fail)?;
    std::fs::create_dir_all(&state).map_err(fail)?;
    let meta = Meta {
        id: id.to_string(),
        image: image.to_string(),
    };
    let json = serde_json::to_vec(&meta)
        .map_err(|e| ProviderError::internal_with("recording the sandbox failed", e))?;
    std::fs::write(state.join("sandbox.json"), json).map_err(fail)?;
    root.canonicalize().map_err(fail)
}

/// The sandboxes recorded under `base` whose root still exists, with their canonical roots.
pub(super) fn scan(base: &Path) -> Vec<(Meta, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(base) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for e in entries.flatten() {
        let path = e.path();
        if path.extension().is_none_or(|x| x != "state") {
            continue;
        }
        let meta: Option<Meta> = std::fs::read(path.join("sandbox.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let Some(meta) = meta.filter(|m| state(base, &m.id) == path) else {
            continue;
        };
        if let Ok(r) = root(base, &meta.id).canonicalize() {
            found.push((meta, r));
        }
    }
    found.sort_by(|a, b| a.0.id.cmp(&b.0.id));
    found
}

/// Removes a persistent sandbox's directories.
pub(super) fn remove(base: &Path, id: &str) -> std::io::Result<()> {
    let st = state(base, id);
    let r = std::fs::remove_dir_all(root(base, id));
    let _ = std::fs::remove_dir_all(st);
    match r {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// The pid a persistent agent recorded, if that process is still that agent (its command line
/// names the socket: a recycled pid does not).
pub(super) fn live_agent(state: &Path) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(state.join("agent.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let sock = socket_path(state);
    let sock = sock.to_string_lossy();
    let ours = cmdline.split(|b| *b == 0).any(|arg| arg == sock.as_bytes());
    ours.then_some(pid)
}

/// A unix socket path holds at most 107 bytes.
const MAX_SOCKET_PATH: usize = 100;
/// Where agent sockets go whose state dir is too deep for one.
const SHORT_SOCKET_DIR: &str = "/tmp/stacyvm-agents";

/// The socket of the agent whose state dir is `state`: `<state>/agent.sock`, or, when that
/// path is too long for a unix socket (a deep `TMPDIR` or data dir), a short one under
/// [`SHORT_SOCKET_DIR`] named by a stable hash of `state`, so a restarted provider finds the
/// same socket again.
pub(super) fn socket_path(state: &Path) -> PathBuf {
    let sock = state.join("agent.sock");
    if sock.as_os_str().len() <= MAX_SOCKET_PATH {
        return sock;
    }
    // FNV-1a: stable across builds, unlike `DefaultHasher`.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in state.as_os_str().as_encoded_bytes() {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
    }
    Path::new(SHORT_SOCKET_DIR).join(format!("{h:016x}.sock"))
}

/// Makes the directory of `sock` (private when it is the shared short-socket dir).
pub(super) fn prepare_socket_dir(sock: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let Some(dir) = sock.parent() else {
        return Ok(());
    };
    if dir == Path::new(SHORT_SOCKET_DIR) {
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

#[cfg(test)]
mod socket_tests {
    use super::*;

    #[test]
    fn long_state_dirs_get_a_short_stable_socket() {
        let short = Path::new("/tmp/x/state");
        assert_eq!(socket_path(short), short.join("agent.sock"));
        let deep = PathBuf::from(format!("/tmp/{}/state", "d".repeat(120)));
        let a = socket_path(&deep);
        assert!(a.starts_with(SHORT_SOCKET_DIR), "{}", a.display());
        assert!(a.as_os_str().len() <= MAX_SOCKET_PATH);
        assert_eq!(a, socket_path(&deep), "stable");
        let other = PathBuf::from(format!("/tmp/{}/other", "d".repeat(120)));
        assert_ne!(a, socket_path(&other));
    }
}
