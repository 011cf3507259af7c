//! Volumes of the mock: a directory `<vols>/<name>/data` that outlives sandboxes, seen inside a
//! sandbox through a symlink at `<root>/<mount_path>`. `<vols>` is `<base>/volumes` for a
//! persistent mock and a directory of the provider's own under `<base>` otherwise (removed
//! with it, like its sandboxes). The files API's path walk (`paths.rs`) follows such a link
//! only when it leads to `<base>/*/<name>/data` and that volume records the sandbox as
//! mounting it (`<vols>/<name>/mounts/<root dir name>`), so no other link can lead out of the
//! root;
//! commands run unconfined on the host anyway. Read-only is recorded but not enforced (the
//! mock gives no isolation).

use std::fs;
use std::path::{Component, Path, PathBuf};

use super::paths;
use crate::{ProviderError, VolumeMountSpec};

fn fail(e: std::io::Error) -> ProviderError {
    ProviderError::internal_with("preparing the volume failed", e)
}

fn dir(vols: &Path, name: &str) -> PathBuf {
    vols.join(name)
}

pub(super) fn create(vols: &Path, name: &str) -> Result<(), ProviderError> {
    paths::check_id("volume name", name)?;
    let d = dir(vols, name);
    fs::create_dir_all(d.join("data")).map_err(fail)?;
    fs::create_dir_all(d.join("mounts")).map_err(fail)
}

pub(super) fn delete(vols: &Path, name: &str) -> Result<(), ProviderError> {
    paths::check_id("volume name", name)?;
    match fs::remove_dir_all(dir(vols, name)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(ProviderError::internal_with(
            "removing the volume failed",
            e,
        )),
        _ => Ok(()),
    }
}

pub(super) fn list(vols: &Path) -> Vec<String> {
    let Ok(rd) = fs::read_dir(vols) else {
        return Vec::new();
    };
    let mut v: Vec<String> = rd
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    v.sort();
    v
}

/// The registration of the sandbox at `root` in a volume: its root directory's name.
fn registration(volume_dir: &Path, root: &Path) -> Option<PathBuf> {
    Some(volume_dir.join("mounts").join(root.file_name()?))
}

/// Links every volume into the sandbox at `root` (canonical, under the provider's base; `vols`
/// canonical beside it).
pub(super) fn attach(
    root: &Path,
    vols: &Path,
    mounts: &[VolumeMountSpec],
) -> Result<(), ProviderError> {
    for m in mounts {
        paths::check_id("volume name", &m.volume)?;
        let vdir = dir(vols, &m.volume);
        let data = vdir.join("data");
        if !data.is_dir() {
            return Err(ProviderError::InvalidInput(format!(
                "volume {:?} does not exist on this provider",
                m.volume
            )));
        }
        let rel = paths::clean(&m.mount_path)?;
        if rel.is_empty() {
            return Err(ProviderError::InvalidInput(
                "a volume cannot be mounted at /".into(),
            ));
        }
        let at = rel.iter().fold(root.to_path_buf(), |p, c| p.join(c));
        if fs::symlink_metadata(&at).is_ok() {
            return Err(ProviderError::InvalidInput(format!(
                "mount path {} already exists in the sandbox",
                m.mount_path
            )));
        }
        if let Some(parent) = at.parent() {
            fs::create_dir_all(parent).map_err(fail)?;
        }
        let reg = registration(&vdir, root).ok_or_else(|| ProviderError::internal("bad root"))?;
        fs::create_dir_all(vdir.join("mounts")).map_err(fail)?;
        fs::write(&reg, m.mount_path.as_bytes()).map_err(fail)?;
        std::os::unix::fs::symlink(&data, &at).map_err(fail)?;
    }
    Ok(())
}

/// Drops the registrations of the sandbox at `root` in every volume (its links go with the
/// root).
pub(super) fn detach_all(root: &Path, vols: &Path) {
    for name in list(vols) {
        if let Some(reg) = registration(&dir(vols, &name), root) {
            let _ = fs::remove_file(reg);
        }
    }
}

/// Whether the symlink at `link` (inside the sandbox at `root`) is a volume mount of that
/// sandbox: its target is `<base>/<dir>/<name>/data` and that volume records the sandbox.
pub(super) fn is_mount(root: &Path, link: &Path) -> bool {
    let (Some(base), Ok(target)) = (root.parent(), fs::read_link(link)) else {
        return false;
    };
    let Ok(rest) = target.strip_prefix(base) else {
        return false;
    };
    let parts: Vec<_> = rest.components().collect();
    let [Component::Normal(_), Component::Normal(_), Component::Normal(data)] = parts[..] else {
        return false;
    };
    let Some(vdir) = target.parent().filter(|_| data == "data") else {
        return false;
    };
    registration(vdir, root).is_some_and(|r| r.is_file())
}
