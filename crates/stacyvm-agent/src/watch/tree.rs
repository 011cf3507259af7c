//! The directories one watch covers and the translation of inotify events into the protocol's
//! `{name, kind}` (fsnotify's kinds, which E2B's envd reports).
//!
//! A recursive watch adds a watch for every directory below the root when it starts, and for
//! each directory created or moved in later. Such a directory may already hold entries by the
//! time its watch is in place (`mkdir -p a/b && touch a/b/c` races the agent), so it is scanned
//! right after: each entry found is reported as `create` (an entry made in between may then be
//! reported twice). Symlinks are reported but never followed, so a watch never leaves the tree
//! it was given (on the mock, whose agent runs on the host, that is what keeps it inside the
//! sandbox). A directory renamed inside the tree keeps its watches under its new name; one moved
//! out of it loses them.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use stacyvm_protocol::agent::{watch_kind, AgentWatchEvent};

use super::inotify::{Inotify, RawEvent};

/// What every directory is watched for. `IN_ONLYDIR` makes the kernel refuse a path that is no
/// directory (any more) instead of watching a file; `IN_EXCL_UNLINK` drops events of entries
/// already unlinked (a temporary file still written to after its `rm`).
const MASK: u32 = libc::IN_CREATE
    | libc::IN_MODIFY
    | libc::IN_ATTRIB
    | libc::IN_DELETE
    | libc::IN_MOVED_FROM
    | libc::IN_MOVED_TO
    | libc::IN_ONLYDIR
    | libc::IN_EXCL_UNLINK;

/// How a batch of events left the watch.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    Go,
    /// The watched directory is gone (removed, or its file system unmounted).
    End,
    /// The watch cannot go on; the message says why (no path in it).
    Failed(String),
}

/// Why a watch could not start; messages name no path (the host adds the caller's).
#[derive(Debug, PartialEq, Eq)]
pub enum OpenError {
    NotFound,
    NotADirectory,
    Denied,
    /// The sandbox's inotify limits (instances or watches per user) are reached.
    Limit,
    Io(String),
}

pub struct Tree {
    ino: Inotify,
    root: PathBuf,
    root_wd: i32,
    recursive: bool,
    /// Watch descriptor → its directory relative to the root (empty for the root). Paths, not
    /// text: a name need not be UTF-8, and only the reported names are made text.
    dirs: HashMap<i32, PathBuf>,
}

impl OpenError {
    fn from_io(e: &io::Error) -> OpenError {
        match e.raw_os_error() {
            Some(libc::ENOENT) => OpenError::NotFound,
            Some(libc::ENOTDIR) => OpenError::NotADirectory,
            Some(libc::EACCES | libc::EPERM) => OpenError::Denied,
            Some(libc::ENOSPC | libc::EMFILE) => OpenError::Limit,
            _ => OpenError::Io(e.to_string()),
        }
    }
}

fn event(rel: &Path, kind: &str) -> AgentWatchEvent {
    AgentWatchEvent {
        name: rel.to_string_lossy().into_owned(),
        kind: kind.to_string(),
    }
}

impl Tree {
    /// Watches `root` (symlinks in it resolved, as every file operation does), and with
    /// `recursive` every directory below it.
    pub fn open(root: &Path, recursive: bool) -> Result<Tree, OpenError> {
        let meta = fs::metadata(root).map_err(|e| OpenError::from_io(&e))?;
        if !meta.is_dir() {
            return Err(OpenError::NotADirectory);
        }
        let ino = Inotify::new().map_err(|e| OpenError::from_io(&e))?;
        let root_wd = ino.add(root, MASK).map_err(|e| OpenError::from_io(&e))?;
        let mut tree = Tree {
            ino,
            root: root.to_path_buf(),
            root_wd,
            recursive,
            dirs: HashMap::from([(root_wd, PathBuf::new())]),
        };
        if recursive {
            // Nothing to report: these entries existed before the watch was asked for.
            tree.adopt_below(Path::new(""), None)
                .map_err(|_| OpenError::Limit)?;
        }
        Ok(tree)
    }

    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.ino.read(buf)
    }

    /// Adds `events`' translation to `out`.
    pub fn handle(&mut self, events: Vec<RawEvent>, out: &mut Vec<AgentWatchEvent>) -> Step {
        // Directories moved away in this batch, by cookie, until their arrival is seen.
        let mut moved: HashMap<u32, PathBuf> = HashMap::new();
        let mut step = Step::Go;
        for ev in events {
            if ev.mask & libc::IN_Q_OVERFLOW != 0 {
                step = Step::Failed(
                    "too many changes at once: the kernel dropped events; watch again".into(),
                );
                break;
            }
            if ev.mask & libc::IN_IGNORED != 0 {
                if self.dirs.remove(&ev.wd).is_some() && ev.wd == self.root_wd {
                    step = Step::End;
                    break;
                }
                continue;
            }
            // Events about a watched directory itself are reported by its parent's watch.
            let Some(dir) = self.dirs.get(&ev.wd).filter(|_| !ev.name.is_empty()) else {
                continue;
            };
            let rel = dir.join(OsStr::from_bytes(&ev.name));
            let subdir = self.recursive && ev.mask & libc::IN_ISDIR != 0;
            if ev.mask & libc::IN_CREATE != 0 {
                out.push(event(&rel, watch_kind::CREATE));
                if subdir {
                    if let Err(msg) = self.adopt(&rel, out) {
                        step = Step::Failed(msg);
                        break;
                    }
                }
            }
            if ev.mask & libc::IN_MOVED_FROM != 0 {
                out.push(event(&rel, watch_kind::RENAME));
                if subdir {
                    moved.insert(ev.cookie, rel.clone());
                }
            }
            if ev.mask & libc::IN_MOVED_TO != 0 {
                out.push(event(&rel, watch_kind::CREATE));
                if subdir {
                    match moved.remove(&ev.cookie) {
                        Some(old) => self.rename(&old, &rel),
                        None => {
                            if let Err(msg) = self.adopt(&rel, out) {
                                step = Step::Failed(msg);
                                break;
                            }
                        }
                    }
                }
            }
            if ev.mask & libc::IN_MODIFY != 0 {
                out.push(event(&rel, watch_kind::WRITE));
            }
            if ev.mask & libc::IN_ATTRIB != 0 {
                out.push(event(&rel, watch_kind::CHMOD));
            }
            if ev.mask & libc::IN_DELETE != 0 {
                out.push(event(&rel, watch_kind::REMOVE));
            }
        }
        // Moved out of the tree: their watches would report under names that no longer exist.
        for old in moved.into_values() {
            self.forget(&old);
        }
        // A write is often many `IN_MODIFY`s in a row; one says as much.
        out.dedup();
        step
    }

    /// Watches the new directory `rel` and everything below it, reporting what it already
    /// holds as created.
    fn adopt(&mut self, rel: &Path, out: &mut Vec<AgentWatchEvent>) -> Result<(), String> {
        match self.watch(rel) {
            Ok(true) => self.adopt_below(rel, Some(out)),
            // Gone again, or no directory after all: its own events said so.
            Ok(false) => Ok(()),
            Err(msg) => Err(msg),
        }
    }

    /// Adds a watch for the directory `rel`; false when it is no (longer a) directory.
    fn watch(&mut self, rel: &Path) -> Result<bool, String> {
        match self
            .ino
            .add(&self.root.join(rel), MASK | libc::IN_DONT_FOLLOW)
        {
            Ok(wd) => {
                self.dirs.insert(wd, rel.to_path_buf());
                Ok(true)
            }
            Err(e) => match OpenError::from_io(&e) {
                OpenError::Limit => Err(
                    "too many directories to watch (the sandbox's fs.inotify.max_user_watches)"
                        .into(),
                ),
                _ => Ok(false),
            },
        }
    }

    /// Watches every directory below the watched directory `rel` (depth first, without
    /// recursion: trees may be deep and helper threads have small stacks); reports each entry
    /// as created when `out` is given.
    fn adopt_below(
        &mut self,
        rel: &Path,
        mut out: Option<&mut Vec<AgentWatchEvent>>,
    ) -> Result<(), String> {
        let mut pending = vec![rel.to_path_buf()];
        while let Some(dir) = pending.pop() {
            let Ok(entries) = fs::read_dir(self.root.join(&dir)) else {
                continue;
            };
            for entry in entries.flatten() {
                let child = dir.join(entry.file_name());
                if let Some(out) = out.as_deref_mut() {
                    out.push(event(&child, watch_kind::CREATE));
                }
                // The entry's own type: a symlink to a directory is not entered.
                if entry.file_type().is_ok_and(|t| t.is_dir()) && self.watch(&child)? {
                    pending.push(child);
                }
            }
        }
        Ok(())
    }

    /// A directory renamed inside the tree: its watches (and those below it) keep going under
    /// the new name.
    fn rename(&mut self, old: &Path, new: &Path) {
        for rel in self.dirs.values_mut() {
            if let Ok(below) = rel.strip_prefix(old) {
                // `join` of an empty path would add a trailing `/`.
                *rel = if below.as_os_str().is_empty() {
                    new.to_path_buf()
                } else {
                    new.join(below)
                };
            }
        }
    }

    /// Stops watching `rel` and everything below it.
    fn forget(&mut self, rel: &Path) {
        let gone: Vec<i32> = self
            .dirs
            .iter()
            .filter(|(_, r)| r.starts_with(rel))
            .map(|(wd, _)| *wd)
            .collect();
        for wd in gone {
            self.dirs.remove(&wd);
            self.ino.remove(wd);
        }
    }
}

impl AsFd for Tree {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.ino.as_fd()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A directory's watches follow it when it is renamed inside the tree, names compare by
    /// component (`ab` is not below `a`), and names need not be UTF-8.
    #[test]
    fn renames_move_whole_subtrees() {
        let d = std::env::temp_dir().join(format!("agent-tree-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(d.join("a/b")).unwrap();
        fs::create_dir_all(d.join("ab")).unwrap();
        fs::create_dir_all(d.join(OsStr::from_bytes(b"x\xff"))).unwrap();
        let mut t = Tree::open(&d, true).unwrap();
        assert_eq!(t.dirs.len(), 5);
        assert!(t
            .dirs
            .values()
            .any(|r| r.as_os_str().as_bytes() == b"x\xff"));
        t.rename(Path::new("a"), Path::new("c"));
        let mut names: Vec<String> = t
            .dirs
            .values()
            .map(|r| r.to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["", "ab", "c", "c/b", "x\u{fffd}"]);
        t.forget(Path::new("c"));
        assert_eq!(t.dirs.len(), 3);
        fs::remove_dir_all(&d).unwrap();
    }
}
