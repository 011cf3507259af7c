//! File-system helpers: the store lock, atomic writes, and path handling that never follows a
//! symlink out of the tree it works on.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::FlockOperation;

/// An advisory `flock` on a file; released when dropped (the descriptor closes).
pub(crate) struct FileLock {
    _file: File,
}

impl FileLock {
    /// Blocks until the lock is held. Shared holders coexist; an exclusive holder is alone.
    pub(crate) fn acquire(path: &Path, exclusive: bool) -> io::Result<FileLock> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let op = if exclusive {
            FlockOperation::LockExclusive
        } else {
            FlockOperation::LockShared
        };
        loop {
            match rustix::fs::flock(&file, op) {
                Ok(()) => return Ok(FileLock { _file: file }),
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// Makes a directory's entries (renames, creations) durable.
pub(crate) fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Flushes every dirty page of the file system holding `path`: one call instead of an fsync per
/// file for unpacked layers, which hold thousands of files.
pub(crate) fn syncfs(path: &Path) -> io::Result<()> {
    let f = File::open(path)?;
    rustix::fs::syncfs(&f).map_err(io::Error::from)
}

/// Writes `bytes` to `dir/name` so readers see the old or the new content, never a mix, and a
/// crash leaves at most a `.tmp-*` file behind (collected by gc).
pub(crate) fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}.tmp-"))
        .tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(dir.join(name)).map_err(|e| e.error)?;
    fsync_dir(dir)
}

/// `p` as plain relative components, or `None` when it is absolute or climbs with `..`.
/// `.` components are dropped; an empty result means the root itself.
pub(crate) fn safe_relative(p: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// What to do when a path component inside the tree is not a real directory.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum NonDir {
    /// Refuse: writing through it would follow a symlink.
    Fail,
    /// Replace it by a directory (an upper layer's directory hides a lower file or symlink).
    Replace,
}

/// Creates `root/rel` and its parents as real directories without following any symlink.
pub(crate) fn ensure_dir(root: &Path, rel: &Path, on_non_dir: NonDir) -> io::Result<PathBuf> {
    let mut cur = root.to_path_buf();
    for c in rel.components() {
        cur.push(c);
        match fs::symlink_metadata(&cur) {
            Ok(m) if m.is_dir() => {}
            Ok(_) if on_non_dir == NonDir::Replace => {
                fs::remove_file(&cur)?;
                fs::create_dir(&cur)?;
            }
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "path goes through a non-directory",
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => fs::create_dir(&cur)?,
            Err(e) => return Err(e),
        }
    }
    Ok(cur)
}

/// `root/rel` when every component of `rel` but the last is a real directory (so the path can
/// be used without following a symlink), `None` otherwise.
pub(crate) fn resolve_nofollow(root: &Path, rel: &Path) -> io::Result<Option<PathBuf>> {
    let mut cur = root.to_path_buf();
    let comps: Vec<_> = rel.components().collect();
    for (i, c) in comps.iter().enumerate() {
        cur.push(c);
        if i + 1 == comps.len() {
            break;
        }
        match fs::symlink_metadata(&cur) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        }
    }
    Ok(Some(cur))
}

/// Removes whatever is at `path` (a directory with its contents); absent is fine. Read-only
/// directories from image layers are made writable first when that is what stops the removal.
pub(crate) fn remove_any(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => match fs::remove_dir_all(path) {
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                make_dirs_writable(path)?;
                fs::remove_dir_all(path)
            }
            other => other,
        },
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn make_dirs_writable(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let m = fs::symlink_metadata(dir)?;
    if !m.is_dir() {
        return Ok(());
    }
    let mode = m.permissions().mode();
    if mode & 0o700 != 0o700 {
        fs::set_permissions(dir, fs::Permissions::from_mode(mode | 0o700))?;
    }
    for e in fs::read_dir(dir)? {
        let e = e?;
        if e.file_type()?.is_dir() {
            make_dirs_writable(&e.path())?;
        }
    }
    Ok(())
}

/// Bytes that removing `path` gives back: regular files not hard-linked elsewhere.
pub(crate) fn freeable_bytes(path: &Path) -> u64 {
    let Ok(m) = fs::symlink_metadata(path) else {
        return 0;
    };
    if m.is_file() {
        return if m.nlink() == 1 { m.len() } else { 0 };
    }
    if !m.is_dir() {
        return 0;
    }
    let Ok(entries) = fs::read_dir(path) else {
        return 0;
    };
    entries.flatten().map(|e| freeable_bytes(&e.path())).sum()
}

/// The entries of a directory, sorted by name (deterministic walks); absent means empty.
pub(crate) fn sorted_entries(dir: &Path) -> io::Result<Vec<fs::DirEntry>> {
    let mut v = match fs::read_dir(dir) {
        Ok(rd) => rd.collect::<io::Result<Vec<_>>>()?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    v.sort_by_key(fs::DirEntry::file_name);
    Ok(v)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    #[test]
    fn safe_relative_refuses_escapes() {
        assert_eq!(
            safe_relative(Path::new("./a/b")),
            Some(PathBuf::from("a/b"))
        );
        assert_eq!(safe_relative(Path::new("./")), Some(PathBuf::new()));
        assert_eq!(safe_relative(Path::new("a/../../b")), None);
        assert_eq!(safe_relative(Path::new("/etc/passwd")), None);
    }

    #[test]
    fn ensure_dir_never_follows_symlinks() {
        let t = tempfile::tempdir().expect("tempdir");
        let outside = t.path().join("outside");
        let root = t.path().join("root");
        fs::create_dir_all(&outside).expect("mkdir");
        fs::create_dir_all(&root).expect("mkdir");
        symlink(&outside, root.join("link")).expect("symlink");

        let err = ensure_dir(&root, Path::new("link/x"), NonDir::Fail).expect_err("followed");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(!outside.join("x").exists());

        ensure_dir(&root, Path::new("link/x"), NonDir::Replace).expect("replace");
        assert!(root.join("link/x").is_dir());
        assert!(!outside.join("x").exists());
        assert!(fs::symlink_metadata(root.join("link"))
            .expect("meta")
            .is_dir());
    }

    #[test]
    fn resolve_nofollow_stops_at_symlinks() {
        let t = tempfile::tempdir().expect("tempdir");
        let root = t.path();
        fs::create_dir_all(root.join("d")).expect("mkdir");
        symlink("/etc", root.join("l")).expect("symlink");
        assert_eq!(
            resolve_nofollow(root, Path::new("d/f")).expect("resolve"),
            Some(root.join("d/f"))
        );
        assert_eq!(
            resolve_nofollow(root, Path::new("l/passwd")).expect("resolve"),
            None
        );
        // The last component itself may be a symlink: it is removed, not followed.
        assert_eq!(
            resolve_nofollow(root, Path::new("l")).expect("resolve"),
            Some(root.join("l"))
        );
    }

    #[test]
    fn write_atomic_replaces_and_leaves_no_temp() {
        let t = tempfile::tempdir().expect("tempdir");
        write_atomic(t.path(), "f.json", b"one").expect("write");
        write_atomic(t.path(), "f.json", b"two").expect("write");
        assert_eq!(fs::read(t.path().join("f.json")).expect("read"), b"two");
        assert_eq!(fs::read_dir(t.path()).expect("ls").count(), 1);
    }

    #[test]
    fn exclusive_lock_excludes_shared_holders() {
        let t = tempfile::tempdir().expect("tempdir");
        let p = t.path().join("lock");
        let a = FileLock::acquire(&p, false).expect("shared");
        let _b = FileLock::acquire(&p, false).expect("second shared");
        let f = File::open(&p).expect("open");
        let try_ex = rustix::fs::flock(&f, FlockOperation::NonBlockingLockExclusive);
        assert!(try_ex.is_err(), "exclusive granted while shared held");
        drop(a);
    }
}
