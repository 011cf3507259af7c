//! Volumes of the mock: a directory `<base>/volumes/<name>/data` that outlives sandboxes, seen
//! inside a sandbox through a symlink at `<root>/<mount_path>`. The files API's path walk
//! (`paths.rs`) follows such a link only when the volume records the sandbox as mounting it
//! (`<base>/volumes/<name>/mounts/<root dir name>`), so no other link can lead out of the root;
//! commands run unconfined on the host anyway. Read-only is recorded but not enforced (the
//! mock gives no isolation).

use std::fs;
use std::path::{Path, PathBuf};

use super::paths;
use crate::{ProviderError, VolumeMountSpec};

fn fail(e: std::io::Error) -> ProviderError {
    ProviderError::internal_with("preparing the volume failed", e)
}

fn dir(base: &Path, name: &str) -> PathBuf {
    base.join("volumes").join(name)
}

fn check_name(name: &str) -> Result<(), ProviderError> {
    if paths::valid_id(name) {
        Ok(())
    } else {
        Err(ProviderError::InvalidInput(format!(
            "invalid volume name {name:?}"
        )))
    }
}

pub(super) fn create(base: &Path, name: &str) -> Result<(), ProviderError> {
    check_name(name)?;
    let d = dir(base, name);
    fs::create_dir_all(d.join("data")).map_err(fail)?;
    fs::create_dir_all(d.join("mounts")).map_err(fail)
}

pub(super) fn delete(base: &Path, name: &str) -> Result<(), ProviderError> {
    check_name(name)?;
    match fs::remove_dir_all(dir(base, name)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(ProviderError::internal_with(
            "removing the volume failed",
            e,
        )),
        _ => Ok(()),
    }
}

pub(super) fn list(base: &Path) -> Vec<String> {
    let Ok(rd) = fs::read_dir(base.join("volumes")) else {
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

/// Links every volume into the sandbox at `root` (canonical, under the provider's base).
pub(super) fn attach(root: &Path, mounts: &[VolumeMountSpec]) -> Result<(), ProviderError> {
    let base = root
        .parent()
        .ok_or_else(|| ProviderError::internal("sandbox root has no parent"))?;
    for m in mounts {
        check_name(&m.volume)?;
        let vdir = dir(base, &m.volume);
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
pub(super) fn detach_all(root: &Path) {
    let Some(base) = root.parent() else { return };
    for name in list(base) {
        if let Some(reg) = registration(&dir(base, &name), root) {
            let _ = fs::remove_file(reg);
        }
    }
}

/// Whether the symlink at `link` (inside the sandbox at `root`) is a volume mount of that
/// sandbox: its target is `<base>/volumes/<name>/data` and the volume records the sandbox.
pub(super) fn is_mount(root: &Path, link: &Path) -> bool {
    let (Some(base), Ok(target)) = (root.parent(), fs::read_link(link)) else {
        return false;
    };
    let Ok(rest) = target.strip_prefix(base.join("volumes")) else {
        return false;
    };
    let parts: Vec<_> = rest.components().collect();
    let [std::path::Component::Normal(name), std::path::Component::Normal(data)] = parts[..] else {
        return false;
    };
    if data != "data" {
        return false;
    }
    let vdir = base.join("volumes").join(name);
    registration(&vdir, root).is_some_and(|r| r.is_file())
}
