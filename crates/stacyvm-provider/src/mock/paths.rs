//! Maps sandbox paths onto the sandbox's host directory without letting them leave it.
//!
//! Every symlink met on the way is resolved by hand, component by component, and the walk fails
//! as soon as a link (absolute or relative, dangling or not) would lead outside the root. The
//! result contains no symlinks, so the caller's file operation cannot be redirected by one that
//! was checked. Commands run unconfined on the host anyway (the mock gives no isolation), so a
//! symlink swapped between the check and the use is out of scope.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs;
use std::path::{Component, Path, PathBuf};

use crate::ProviderError;

/// Linux's own limit on symlinks followed while resolving one path.
const MAX_SYMLINK_HOPS: usize = 40;

/// A sandbox path resolved to the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Resolved {
    /// Host path, free of symlinks (except the final component when not followed).
    pub host: PathBuf,
    /// Components of `host` below the root; empty for the root itself.
    pub rel: Vec<OsString>,
}

impl Resolved {
    pub fn is_root(&self) -> bool {
        self.rel.is_empty()
    }
}

fn escapes(given: &str) -> ProviderError {
    ProviderError::InvalidInput(format!("path {given:?} escapes the sandbox"))
}

/// Lexically cleans `path` (`/`-separated, absolute or relative to the root): drops empty and
/// `.` components and applies `..`. A `..` above the root is an error, not clamped.
pub(super) fn clean(path: &str) -> Result<Vec<String>, ProviderError> {
    if path.contains('\0') {
        return Err(ProviderError::InvalidInput(
            "path must not contain NUL bytes".into(),
        ));
    }
    let mut out: Vec<String> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if out.pop().is_none() {
                    return Err(escapes(path));
                }
            }
            name => out.push(name.to_string()),
        }
    }
    Ok(out)
}

/// Resolves `path` under `root` (which must be canonical). With `follow_final` false a final
/// symlink is left as is, so delete and move act on the link itself.
pub(super) fn resolve(
    root: &Path,
    path: &str,
    follow_final: bool,
) -> Result<Resolved, ProviderError> {
    let mut queue: VecDeque<OsString> = clean(path)?.into_iter().map(OsString::from).collect();
    let mut rel: Vec<OsString> = Vec::new();
    let mut hops = 0;
    while let Some(comp) = queue.pop_front() {
        if comp == ".." {
            // `rel` holds no symlinks, so popping it is the physical parent.
            if rel.pop().is_none() {
                return Err(escapes(path));
            }
            continue;
        }
        let host = join(root, &rel).join(&comp);
        let is_link = fs::symlink_metadata(&host).is_ok_and(|m| m.file_type().is_symlink());
        // Splices never add to the back of the queue, so an empty queue means this is the
        // caller's own final component.
        // A volume mount (`volumes.rs`) is walked through like a directory.
        if !is_link || (queue.is_empty() && !follow_final) || super::volumes::is_mount(root, &host)
        {
            rel.push(comp);
            continue;
        }
        hops += 1;
        if hops > MAX_SYMLINK_HOPS {
            return Err(ProviderError::InvalidInput(format!(
                "path {path:?} has too many levels of symbolic links"
            )));
        }
        let target = fs::read_link(&host)
            .map_err(|e| ProviderError::internal_with("reading a symlink failed", e))?;
        let rest = if target.is_absolute() {
            // Absolute targets must name the root itself or something below it.
            let below = target.strip_prefix(root).map_err(|_| escapes(path))?;
            rel.clear();
            below.to_path_buf()
        } else {
            target
        };
        for c in rest.components().rev() {
            match c {
                Component::Normal(n) => queue.push_front(n.to_os_string()),
                Component::ParentDir => queue.push_front(OsString::from("..")),
                Component::CurDir => {}
                Component::RootDir | Component::Prefix(_) => return Err(escapes(path)),
            }
        }
    }
    Ok(Resolved {
        host: join(root, &rel),
        rel,
    })
}

fn join(root: &Path, rel: &[OsString]) -> PathBuf {
    let mut p = root.to_path_buf();
    p.extend(rel);
    p
}

/// [`valid_id`], or `InvalidInput` naming `what` the id is (`sandbox id`, `volume name`).
pub(super) fn check_id(what: &str, id: &str) -> Result<(), ProviderError> {
    if valid_id(id) {
        Ok(())
    } else {
        Err(ProviderError::InvalidInput(format!(
            "invalid {what} {id:?}"
        )))
    }
}

/// Ids become part of a host directory name, so keep them to a safe alphabet.
pub(super) fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && !id.starts_with('.')
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[path = "paths_tests.rs"]
mod tests;
