//! File operations on a mock sandbox's host directory, in the original mock's wire formats
//! (wire reference §6). Blocking: callers run these on the blocking pool.

use std::fs::{self, Metadata, Permissions};
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::SystemTime;

use chrono::{DateTime, Utc};
use stacyvm_types::{format_rfc3339_secs, FileInfo};

use super::paths::{clean, resolve};
use crate::walk::{component, has_wildcard, refuse_root, WalkBudget, MATCH};
use crate::ProviderError;

// Go's `io/fs.FileMode` type bits; the wire shows modes the way Go prints them.
const GO_DIR: u32 = 1 << 31;
const GO_SYMLINK: u32 = 1 << 27;
const GO_DEVICE: u32 = 1 << 26;
const GO_NAMED_PIPE: u32 = 1 << 25;
const GO_SOCKET: u32 = 1 << 24;
const GO_SETUID: u32 = 1 << 23;
const GO_SETGID: u32 = 1 << 22;
const GO_CHAR_DEVICE: u32 = 1 << 21;
const GO_STICKY: u32 = 1 << 20;

/// Go's `FileMode` for `md` (as `os.Lstat`/`os.Stat` fill it on Unix).
pub(super) fn go_file_mode(md: &Metadata) -> u32 {
    let raw = md.mode();
    let ft = md.file_type();
    let mut m = raw & 0o777;
    if ft.is_dir() {
        m |= GO_DIR;
    } else if ft.is_symlink() {
        m |= GO_SYMLINK;
    } else if ft.is_block_device() {
        m |= GO_DEVICE;
    } else if ft.is_char_device() {
        m |= GO_DEVICE | GO_CHAR_DEVICE;
    } else if ft.is_fifo() {
        m |= GO_NAMED_PIPE;
    } else if ft.is_socket() {
        m |= GO_SOCKET;
    }
    if raw & 0o4000 != 0 {
        m |= GO_SETUID;
    }
    if raw & 0o2000 != 0 {
        m |= GO_SETGID;
    }
    if raw & 0o1000 != 0 {
        m |= GO_STICKY;
    }
    m
}

/// Go's `FileMode.String()`: type letters (or `-`) then `rwxrwxrwx`.
pub(super) fn go_mode_string(m: u32) -> String {
    const TYPES: &[u8] = b"dalTLDpSugct?";
    const RWX: &[u8] = b"rwxrwxrwx";
    let mut s = String::with_capacity(12);
    for (i, c) in TYPES.iter().enumerate() {
        if m & (1 << (31 - i)) != 0 {
            s.push(char::from(*c));
        }
    }
    if s.is_empty() {
        s.push('-');
    }
    for (i, c) in RWX.iter().enumerate() {
        s.push(if m & (1 << (8 - i)) != 0 {
            char::from(*c)
        } else {
            '-'
        });
    }
    s
}

fn mod_time(md: &Metadata) -> String {
    let t = md.modified().unwrap_or(SystemTime::UNIX_EPOCH);
    format_rfc3339_secs(&DateTime::<Utc>::from(t))
}

fn size(md: &Metadata) -> i64 {
    i64::try_from(md.len()).unwrap_or(i64::MAX)
}

/// Maps an I/O error to the provider error for `given` (the caller's path, never the host's).
pub(super) fn io_err(e: io::Error, given: &str) -> ProviderError {
    use io::ErrorKind as K;
    let bad = |what: &str| ProviderError::InvalidInput(format!("{what}: {given}"));
    match e.kind() {
        K::NotFound => ProviderError::FileNotFound(given.to_string()),
        K::PermissionDenied => bad("permission denied"),
        K::IsADirectory => bad("is a directory"),
        K::NotADirectory => bad("not a directory"),
        K::DirectoryNotEmpty => bad("directory not empty"),
        K::AlreadyExists => bad("already exists"),
        _ => ProviderError::internal_with(format!("file operation failed: {given}"), e),
    }
}

pub(super) fn write(
    root: &Path,
    path: &str,
    content: &[u8],
    mode: Option<&str>,
) -> Result<(), ProviderError> {
    let r = resolve(root, path, true)?;
    if r.is_root() {
        return Err(ProviderError::is_a_directory(path));
    }
    if let Some(parent) = r.host.parent() {
        fs::create_dir_all(parent).map_err(|e| io_err(e, path))?;
    }
    fs::write(&r.host, content).map_err(|e| io_err(e, path))?;
    // The original honours only these two spellings; everything else is 0644.
    let perm = match mode {
        Some("0755" | "executable") => 0o755,
        _ => 0o644,
    };
    fs::set_permissions(&r.host, Permissions::from_mode(perm)).map_err(|e| io_err(e, path))
}

pub(super) fn read(root: &Path, path: &str) -> Result<Vec<u8>, ProviderError> {
    let r = resolve(root, path, true)?;
    fs::read(&r.host).map_err(|e| io_err(e, path))
}

/// Entries sorted by name; `path` is the cleaned request path joined with the name, without a
/// leading `/` (`workspace/a.txt`), and `mode` symbolic, as in the original.
pub(super) fn list(root: &Path, path: &str) -> Result<Vec<FileInfo>, ProviderError> {
    let r = resolve(root, path, true)?;
    let prefix = clean(path)?.join("/");
    let mut entries: Vec<_> = fs::read_dir(&r.host)
        .map_err(|e| io_err(e, path))?
        .filter_map(Result::ok)
        .collect();
    entries.sort_by_key(fs::DirEntry::file_name);
    let mut out = Vec::with_capacity(entries.len());
    for entry in entries {
        // Like Go's DirEntry.Info: lstat, so a symlink shows as `L...` and not as its target.
        let Ok(md) = entry.metadata() else { continue };
        let name = entry.file_name().to_string_lossy().into_owned();
        out.push(FileInfo {
            path: if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            },
            size: size(&md),
            mode: go_mode_string(go_file_mode(&md)),
            is_dir: md.is_dir(),
            mod_time: mod_time(&md),
        });
    }
    Ok(out)
}

/// `path` verbatim; `mode` is Go's FileMode in octal (`644`, directories `20000000755`).
pub(super) fn stat(root: &Path, path: &str) -> Result<FileInfo, ProviderError> {
    let r = resolve(root, path, true)?;
    let md = fs::metadata(&r.host).map_err(|e| io_err(e, path))?;
    Ok(FileInfo {
        path: path.to_string(),
        size: size(&md),
        mode: format!("{:o}", go_file_mode(&md)),
        is_dir: md.is_dir(),
        mod_time: mod_time(&md),
    })
}

/// Shell glob under the root: `*`, `?` and `[..]` within one component (`**` is `*`, as in
/// Go's `filepath.Glob`); results are `/` + the path below the root, sorted.
///
/// The literal prefix before the first wildcard resolves like any path (symlinks inside the
/// root followed, an escaping one ends the walk with no match). Below it the walk never
/// descends through a symlink: a link the pattern reaches is reported as a match when it is
/// the last component, and not entered otherwise, so no link (to `/`, to a loop) makes the
/// walk leave the sandbox or grow without bound. `budget` bounds what is left.
pub(super) fn glob(
    root: &Path,
    pattern: &str,
    budget: &mut WalkBudget,
) -> Result<Vec<String>, ProviderError> {
    let comps = clean(pattern)?;
    if comps.is_empty() {
        return Err(ProviderError::InvalidInput("pattern is required".into()));
    }
    let first_wild = comps
        .iter()
        .position(|c| has_wildcard(c))
        .unwrap_or(comps.len());
    let (prefix, rest) = comps.split_at(first_wild);
    let steps: Vec<Option<glob::Pattern>> = rest
        .iter()
        .map(|c| has_wildcard(c).then(|| component(c)).transpose())
        .collect::<Result<_, _>>()?;
    let shown = |base: &str, name: &str| format!("{base}/{name}");
    if steps.is_empty() {
        // No wildcard: the path itself, when it exists (a link counts, followed or not).
        let found =
            resolve(root, pattern, false).is_ok_and(|r| fs::symlink_metadata(&r.host).is_ok());
        return Ok(if found {
            vec![format!("/{}", comps.join("/"))]
        } else {
            Vec::new()
        });
    }
    let Ok(base) = resolve(root, &prefix.join("/"), true) else {
        return Ok(Vec::new());
    };
    let mut current = vec![(
        base.host,
        prefix.iter().fold(String::new(), |b, n| shown(&b, n)),
    )];
    for (step, name) in steps.iter().zip(rest) {
        let mut next = Vec::new();
        for (host, path) in &current {
            budget.check()?;
            // `symlink_metadata`: a link is never a directory to walk into.
            if !fs::symlink_metadata(host).is_ok_and(|m| m.is_dir()) {
                continue;
            }
            let Some(pat) = step else {
                budget.visit()?;
                let h = host.join(name);
                if fs::symlink_metadata(&h).is_ok() {
                    next.push((h, shown(path, name)));
                }
                continue;
            };
            let Ok(entries) = fs::read_dir(host) else {
                continue;
            };
            for entry in entries {
                budget.visit()?;
                let Ok(entry) = entry else { continue };
                let file_name = entry.file_name();
                let Some(n) = file_name.to_str() else {
                    continue;
                };
                if pat.matches_with(n, MATCH) {
                    next.push((entry.path(), shown(path, n)));
                }
            }
        }
        current = next;
    }
    let mut out: Vec<String> = current.into_iter().map(|(_, p)| p).collect();
    out.sort();
    Ok(out)
}

pub(super) fn delete(root: &Path, path: &str, recursive: bool) -> Result<(), ProviderError> {
    let r = resolve(root, path, false)?;
    if r.is_root() {
        return Err(refuse_root(path, "delete"));
    }
    let md = match fs::symlink_metadata(&r.host) {
        Ok(md) => md,
        Err(e) if e.kind() == io::ErrorKind::NotFound && recursive => return Ok(()),
        Err(e) => return Err(io_err(e, path)),
    };
    let res = match (md.is_dir(), recursive) {
        (true, true) => fs::remove_dir_all(&r.host),
        (true, false) => fs::remove_dir(&r.host),
        (false, _) => fs::remove_file(&r.host),
    };
    match res {
        Err(e) if e.kind() == io::ErrorKind::NotFound && recursive => Ok(()),
        other => other.map_err(|e| io_err(e, path)),
    }
}

pub(super) fn rename(root: &Path, old: &str, new: &str) -> Result<(), ProviderError> {
    let from = resolve(root, old, false)?;
    let to = resolve(root, new, false)?;
    if from.is_root() || to.is_root() {
        return Err(refuse_root(if from.is_root() { old } else { new }, "move"));
    }
    fs::symlink_metadata(&from.host).map_err(|e| io_err(e, old))?;
    if let Some(parent) = to.host.parent() {
        fs::create_dir_all(parent).map_err(|e| io_err(e, new))?;
    }
    fs::rename(&from.host, &to.host).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => ProviderError::FileNotFound(old.to_string()),
        _ => io_err(e, new),
    })
}

pub(super) fn chmod(root: &Path, path: &str, mode: &str) -> Result<(), ProviderError> {
    let bits = crate::mode_arg(mode)?;
    let r = resolve(root, path, true)?;
    fs::set_permissions(&r.host, Permissions::from_mode(bits)).map_err(|e| io_err(e, path))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn go_mode_strings() {
        assert_eq!(go_mode_string(0o644), "-rw-r--r--");
        assert_eq!(go_mode_string(GO_DIR | 0o755), "drwxr-xr-x");
        assert_eq!(go_mode_string(GO_SYMLINK | 0o777), "Lrwxrwxrwx");
        assert_eq!(go_mode_string(GO_SETUID | 0o755), "urwxr-xr-x");
        assert_eq!(
            go_mode_string(GO_DEVICE | GO_CHAR_DEVICE | 0o666),
            "Dcrw-rw-rw-"
        );
        assert_eq!(go_mode_string(0), "----------");
        assert_eq!(format!("{:o}", GO_DIR | 0o755), "20000000755");
    }

    #[test]
    fn go_modes_from_metadata() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("f");
        fs::write(&f, b"x").unwrap();
        fs::set_permissions(&f, Permissions::from_mode(0o640)).unwrap();
        assert_eq!(go_file_mode(&fs::metadata(&f).unwrap()), 0o640);
        fs::set_permissions(d.path(), Permissions::from_mode(0o1755)).unwrap();
        let m = go_file_mode(&fs::metadata(d.path()).unwrap());
        assert_eq!(m, GO_DIR | GO_STICKY | 0o755);
    }

    #[test]
    fn missing_paths_report_the_given_path() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().canonicalize().unwrap();
        let err = read(&root, "/workspace/nope.txt").unwrap_err();
        assert!(matches!(&err, ProviderError::FileNotFound(p) if p == "/workspace/nope.txt"));
        assert!(matches!(
            delete(&root, "/", true),
            Err(ProviderError::InvalidInput(_))
        ));
    }
}
