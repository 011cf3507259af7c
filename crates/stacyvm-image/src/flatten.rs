//! Building a root filesystem from unpacked layers, lowest first, with OCI whiteouts: a
//! `.wh.<name>` file deletes `<name>` from the layers below, and `.wh..wh..opq` in a directory
//! hides everything the layers below put in it.
//!
//! Files are hard links to the layer directories (one copy on disk however many images share a
//! layer), so the result must be treated as read-only; providers mount it read-only.

use std::fs::{self, Permissions};
use std::io;
use std::os::unix::fs::{lchown, MetadataExt, PermissionsExt};
use std::path::Path;

use crate::fsutil::{remove_any, resolve_nofollow, sorted_entries};

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";
/// ext4's per-inode link limit; past it a file is copied instead.
const EMLINK: i32 = 31;

/// Applies each layer directory in order onto `dest` (an empty directory).
pub(crate) fn flatten(layers: &[&Path], dest: &Path) -> io::Result<()> {
    for layer in layers {
        // Whiteouts of a layer only hide what is below it, so they all go before its files.
        apply_whiteouts(layer, dest, Path::new(""))?;
        copy_layer(layer, dest, Path::new(""))?;
    }
    Ok(())
}

fn apply_whiteouts(layer: &Path, dest: &Path, rel: &Path) -> io::Result<()> {
    for entry in sorted_entries(&layer.join(rel))? {
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            if entry.file_type()?.is_dir() {
                apply_whiteouts(layer, dest, &rel.join(entry.file_name()))?;
            }
            continue;
        };
        if name == OPAQUE {
            if let Some(dir) = real_dir(dest, rel)? {
                for child in sorted_entries(&dir)? {
                    remove_any(&child.path())?;
                }
            }
        } else if let Some(victim) = name.strip_prefix(WHITEOUT_PREFIX) {
            if !victim.is_empty() && victim != "." && victim != ".." {
                if let Some(p) = resolve_nofollow(dest, &rel.join(victim))? {
                    remove_any(&p)?;
                }
            }
        } else if entry.file_type()?.is_dir() {
            apply_whiteouts(layer, dest, &rel.join(name))?;
        }
    }
    Ok(())
}

/// `dest/rel` if it and every parent is a real directory (no symlink on the way).
fn real_dir(dest: &Path, rel: &Path) -> io::Result<Option<std::path::PathBuf>> {
    if rel.as_os_str().is_empty() {
        return Ok(Some(dest.to_path_buf()));
    }
    match resolve_nofollow(dest, rel)? {
        Some(p) if fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir()) => Ok(Some(p)),
        _ => Ok(None),
    }
}

fn copy_layer(layer: &Path, dest: &Path, rel: &Path) -> io::Result<()> {
    for entry in sorted_entries(&layer.join(rel))? {
        let name = entry.file_name();
        if name
            .to_str()
            .is_some_and(|n| n.starts_with(WHITEOUT_PREFIX))
        {
            continue;
        }
        let child = rel.join(&name);
        let src = layer.join(&child);
        // The parent of `target` is a real directory: it was made by this walk.
        let target = dest.join(&child);
        if entry.file_type()?.is_dir() {
            match fs::symlink_metadata(&target) {
                Ok(m) if m.is_dir() => {}
                _ => {
                    // An upper directory replaces a lower file or symlink of the same name.
                    remove_any(&target)?;
                    fs::create_dir(&target)?;
                }
            }
            copy_layer(layer, dest, &child)?;
            let m = fs::symlink_metadata(&src)?;
            set_owner(&target, m.uid(), m.gid());
            fs::set_permissions(&target, Permissions::from_mode(m.mode() & 0o7777))?;
        } else {
            remove_any(&target)?;
            match fs::hard_link(&src, &target) {
                Err(e) if e.raw_os_error() == Some(EMLINK) && entry.file_type()?.is_file() => {
                    fs::copy(&src, &target)?;
                    let m = fs::symlink_metadata(&src)?;
                    set_owner(&target, m.uid(), m.gid());
                    fs::set_permissions(&target, Permissions::from_mode(m.mode() & 0o7777))?;
                }
                other => other?,
            }
        }
    }
    Ok(())
}

/// Best effort: without root the owner stays the store's user, as in the layer dirs.
fn set_owner(path: &Path, uid: u32, gid: u32) {
    let _ = lchown(path, Some(uid), Some(gid));
}

#[cfg(test)]
#[path = "flatten_tests.rs"]
mod tests;
