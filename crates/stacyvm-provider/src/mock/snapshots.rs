//! Snapshots of the mock (`kind: filesystem`): a copy of the sandbox's root directory in
//! `<snaps>/<id>`, made under `<snaps>/.tmp-<id>` and renamed when complete, so a half-made
//! snapshot is never found. Volume mounts (`volumes.rs`) are left out: a volume is not part of
//! its sandbox. Restoring copies the tree into the new sandbox's root.

use std::fs;
use std::io;
use std::path::Path;

use super::{paths, volumes};
use crate::ProviderError;

fn fail(what: &'static str) -> impl Fn(io::Error) -> ProviderError {
    move |e| ProviderError::internal_with(what, e)
}

/// Copies the tree at `from` into `to` (made if missing); returns the bytes of regular files.
/// `skip` says which symlinks to leave out.
fn copy_tree(from: &Path, to: &Path, skip: &dyn Fn(&Path) -> bool) -> io::Result<u64> {
    fs::create_dir_all(to)?;
    let mut bytes = 0;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        let ft = entry.file_type()?;
        if ft.is_symlink() {
            if !skip(&src) {
                std::os::unix::fs::symlink(fs::read_link(&src)?, &dst)?;
            }
        } else if ft.is_dir() {
            bytes += copy_tree(&src, &dst, skip)?;
            fs::set_permissions(&dst, entry.metadata()?.permissions())?;
        } else if ft.is_file() {
            bytes += fs::copy(&src, &dst)?;
        }
        // Sockets and fifos (the agent's) are not files to keep.
    }
    Ok(bytes)
}

/// Snapshots the sandbox at `root` into `<snaps>/<id>`; returns its size in bytes.
pub(super) fn take(root: &Path, snaps: &Path, id: &str) -> Result<u64, ProviderError> {
    paths::check_id("snapshot id", id)?;
    let done = snaps.join(id);
    if done.exists() {
        return Err(ProviderError::InvalidInput(format!(
            "snapshot {id} already exists"
        )));
    }
    let tmp = snaps.join(format!(".tmp-{id}"));
    let _ = fs::remove_dir_all(&tmp);
    let copied = copy_tree(root, &tmp, &|p| volumes::is_mount(root, p));
    let bytes = match copied {
        Ok(b) => b,
        Err(e) => {
            let _ = fs::remove_dir_all(&tmp);
            return Err(fail("copying the sandbox failed")(e));
        }
    };
    fs::rename(&tmp, &done).map_err(fail("completing the snapshot failed"))?;
    Ok(bytes)
}

pub(super) fn delete(snaps: &Path, id: &str) -> Result<(), ProviderError> {
    paths::check_id("snapshot id", id)?;
    match fs::remove_dir_all(snaps.join(id)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            Err(fail("removing the snapshot failed")(e))
        }
        _ => Ok(()),
    }
}

/// Copies snapshot `id` into the (new, empty but for `workspace`) root.
pub(super) fn restore(snaps: &Path, id: &str, root: &Path) -> Result<(), ProviderError> {
    paths::check_id("snapshot id", id)?;
    let from = snaps.join(id);
    if !from.is_dir() {
        return Err(ProviderError::InvalidInput(format!(
            "snapshot {id} is not held by this provider"
        )));
    }
    copy_tree(&from, root, &|_| false)
        .map(|_| ())
        .map_err(fail("restoring the snapshot failed"))
}

/// The snapshot directories (and unfinished `.tmp-` ones) under `snaps` older than `grace`
/// that `known` does not name, removed; their names.
pub(super) fn sweep(
    snaps: &Path,
    known: &std::collections::HashSet<String>,
    grace: std::time::Duration,
) -> Result<Vec<String>, ProviderError> {
    // `.tmp-` directories (a snapshot never finished) are never a record's id.
    let stale = match crate::sweepable(snaps, known, grace) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(fail("listing snapshots failed")(e)),
    };
    let mut removed = Vec::new();
    for (name, path) in stale {
        match fs::remove_dir_all(path) {
            Ok(()) => removed.push(name),
            Err(e) => {
                tracing::warn!(snapshot = %name, error = %e, "removing a stray snapshot failed")
            }
        }
    }
    Ok(removed)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::HashSet;
    use std::time::Duration;

    #[test]
    fn the_sweep_removes_unrecorded_and_unfinished_snapshots_past_the_grace() {
        let dir = tempfile::tempdir().unwrap();
        for d in ["snap-kept", "snap-stray", ".tmp-snap-half"] {
            std::fs::create_dir_all(dir.path().join(d).join("workspace")).unwrap();
        }
        let known = HashSet::from(["snap-kept".to_string()]);
        let young = super::sweep(dir.path(), &known, Duration::from_secs(3600)).unwrap();
        assert!(young.is_empty(), "{young:?}");
        let mut gone = super::sweep(dir.path(), &known, Duration::ZERO).unwrap();
        gone.sort();
        assert_eq!(gone, [".tmp-snap-half", "snap-stray"]);
        assert!(dir.path().join("snap-kept").is_dir());
        assert!(!dir.path().join("snap-stray").exists());
        // A directory that is not there yet has nothing to sweep.
        let none = super::sweep(&dir.path().join("nope"), &known, Duration::ZERO).unwrap();
        assert!(none.is_empty());
    }

    /// A snapshot still being copied has no record yet; the sweep leaves its working
    /// directory alone however old it is, and takes it once the snapshot call has ended.
    #[tokio::test]
    async fn the_sweep_leaves_a_snapshot_in_flight() {
        use crate::Provider;
        let base = tempfile::tempdir().unwrap();
        let p = super::super::MockProvider::with_base_dir(base.path());
        let work = p.snapshots_dir().unwrap().join(".tmp-snap-busy");
        std::fs::create_dir_all(work.join("workspace")).unwrap();
        let none = HashSet::new();
        {
            let _copying = p.snapshots_in_flight.enter("snap-busy");
            let gone = p.sweep_snapshots(&none, Duration::ZERO).await.unwrap();
            assert!(gone.is_empty(), "{gone:?}");
            assert!(work.is_dir());
        }
        let gone = p.sweep_snapshots(&none, Duration::ZERO).await.unwrap();
        assert_eq!(gone, [".tmp-snap-busy"]);
        assert!(!work.exists());
    }
}
