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
    let sock = state.join("agent.sock");
    let sock = sock.to_string_lossy();
    let ours = cmdline.split(|b| *b == 0).any(|arg| arg == sock.as_bytes());
    ours.then_some(pid)
}
