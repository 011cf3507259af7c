//! Secrets given inline or as a file that operators may rotate while the process runs.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use crate::AuthError;

/// A secret given inline or as a file. A file is read on first use and re-read whenever its
/// modification time, length or inode changes, so rotating it needs no restart. File content
/// is trimmed; an empty or unreadable file is an error (never an empty secret).
pub struct Secret {
    source: Source,
}

enum Source {
    Inline(String),
    File {
        path: PathBuf,
        cache: Mutex<Option<Cached>>,
    },
}

#[derive(Clone, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

struct Cached {
    stamp: Stamp,
    value: String,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.source {
            Source::Inline(_) => f.write_str("Secret::Inline(<redacted>)"),
            Source::File { path, .. } => write!(f, "Secret::File({})", path.display()),
        }
    }
}

impl Secret {
    /// A secret held in memory, used exactly as given.
    pub fn inline(secret: impl Into<String>) -> Self {
        Self {
            source: Source::Inline(secret.into()),
        }
    }

    /// A secret read from `path` (trimmed), re-read when the file changes.
    pub fn file(path: impl Into<PathBuf>) -> Self {
        Self {
            source: Source::File {
                path: path.into(),
                cache: Mutex::new(None),
            },
        }
    }

    /// True for an inline secret that is empty (a config value left unset).
    pub fn is_unset(&self) -> bool {
        matches!(&self.source, Source::Inline(s) if s.is_empty())
    }

    /// The current value.
    pub fn get(&self) -> Result<String, AuthError> {
        match &self.source {
            Source::Inline(s) => Ok(s.clone()),
            Source::File { path, cache } => read_cached(path, cache),
        }
    }
}

fn read_cached(path: &Path, cache: &Mutex<Option<Cached>>) -> Result<String, AuthError> {
    let err = |reason: String| AuthError::Secret {
        path: path.to_path_buf(),
        reason,
    };
    let meta = std::fs::metadata(path).map_err(|e| err(e.to_string()))?;
    let stamp = stamp_of(&meta);
    // A poisoned lock only means another reader panicked; the cache is still coherent.
    let mut guard = cache.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(c) = guard.as_ref() {
        if c.stamp == stamp {
            return Ok(c.value.clone());
        }
    }
    let raw = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let value = raw.trim().to_string();
    if value.is_empty() {
        *guard = None;
        return Err(err("file is empty".into()));
    }
    *guard = Some(Cached {
        stamp,
        value: value.clone(),
    });
    Ok(value)
}

fn stamp_of(meta: &std::fs::Metadata) -> Stamp {
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(meta);
    #[cfg(not(unix))]
    let inode = 0;
    Stamp {
        modified: meta.modified().ok(),
        len: meta.len(),
        inode,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::fs::{self, File};
    use std::time::Duration;

    use super::*;

    #[test]
    fn inline_is_returned_verbatim() {
        let s = Secret::inline(" tok ");
        assert_eq!(s.get().unwrap(), " tok ");
        assert!(!s.is_unset());
        assert!(Secret::inline("").is_unset());
    }

    #[test]
    fn file_is_trimmed_and_reread_after_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        fs::write(&path, "first-token\n").unwrap();
        let s = Secret::file(&path);
        assert_eq!(s.get().unwrap(), "first-token");
        assert_eq!(s.get().unwrap(), "first-token");

        // Different length: picked up on the next call.
        fs::write(&path, "  second-token-longer \n").unwrap();
        assert_eq!(s.get().unwrap(), "second-token-longer");

        // Same length, same inode: the new mtime alone must trigger a re-read.
        let before = fs::metadata(&path).unwrap().modified().unwrap();
        fs::write(&path, "  third--token-longer \n").unwrap();
        File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(before + Duration::from_secs(5))
            .unwrap();
        assert_eq!(s.get().unwrap(), "third--token-longer");
    }

    #[test]
    fn file_replaced_by_rename_is_reread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        fs::write(&path, "aaaa").unwrap();
        let s = Secret::file(&path);
        assert_eq!(s.get().unwrap(), "aaaa");
        let tmp = dir.path().join("token.new");
        fs::write(&tmp, "bbbb").unwrap();
        let mtime = fs::metadata(&path).unwrap().modified().unwrap();
        File::options()
            .write(true)
            .open(&tmp)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        fs::rename(&tmp, &path).unwrap();
        assert_eq!(s.get().unwrap(), "bbbb");
    }

    #[test]
    fn missing_or_empty_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        let s = Secret::file(&path);
        assert!(matches!(s.get(), Err(AuthError::Secret { .. })));
        fs::write(&path, " \n").unwrap();
        let err = s.get().unwrap_err();
        assert!(err.to_string().contains("empty"), "{err}");
        fs::write(&path, "ok").unwrap();
        assert_eq!(s.get().unwrap(), "ok");
        fs::remove_file(&path).unwrap();
        assert!(matches!(s.get(), Err(AuthError::Secret { .. })));
    }
}
