//! The files API on a container. Reads, writes, listings, stats and globs use the archive API,
//! which Docker confines to the container (symlinks resolve inside it). Delete, move and chmod
//! have no archive equivalent and run the image's `rm`/`rmdir`/`mkdir`/`mv`/`chmod` through
//! exec, as the sandbox user, with paths passed as separate arguments (no shell).

use bytes::Bytes;
use chrono::{DateTime, Utc};
use stacyvm_types::{format_rfc3339_secs, parse_rfc3339, FileInfo};

use super::archive::{blocking, entries, entries_within, file_tar, first_file, PathStat};
use super::DockerProvider;
use crate::walk::{self, clean_file_path, clean_path, component, has_wildcard, refuse_root, MATCH};
use crate::ProviderError;

/// Symlinks followed when reading a file.
const MAX_LINKS: usize = 16;

/// Parent directory of a clean absolute path (`/` for top-level entries).
pub(super) fn parent(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

pub(super) fn join(dir: &str, name: &str) -> String {
    if dir == "/" {
        format!("/{name}")
    } else {
        format!("{dir}/{name}")
    }
}

fn secs_to_text(secs: u64) -> String {
    let t =
        DateTime::<Utc>::from_timestamp(i64::try_from(secs).unwrap_or(0), 0).unwrap_or_default();
    format_rfc3339_secs(&t)
}

fn info_from_stat(path: &str, st: &PathStat) -> FileInfo {
    let mod_time = st
        .mtime
        .as_deref()
        .and_then(parse_rfc3339)
        .map(|t| format_rfc3339_secs(&t))
        .unwrap_or_default();
    FileInfo {
        path: path.to_string(),
        size: st.size,
        mode: format!("{:o}", st.perm()),
        is_dir: st.is_dir(),
        mod_time,
    }
}

/// A write's mode: octal text or `executable`; none is 0644.
pub(super) fn file_mode(mode: Option<&str>) -> Result<u32, ProviderError> {
    Ok(crate::write_mode(mode)?.unwrap_or(0o644))
}

impl DockerProvider {
    async fn must_stat(
        &self,
        cid: &str,
        path: &str,
        given: &str,
    ) -> Result<PathStat, ProviderError> {
        self.path_stat(cid, path)
            .await?
            .ok_or_else(|| ProviderError::FileNotFound(given.to_string()))
    }

    /// Writes `content` to `given` in one upload; `bits` as [`file_mode`] parsed them.
    pub(super) async fn write(
        &self,
        cid: &str,
        given: &str,
        content: Bytes,
        bits: u32,
    ) -> Result<(), ProviderError> {
        let path = clean_file_path(given)?;
        if self
            .path_stat(cid, &path)
            .await?
            .is_some_and(|s| s.is_dir())
        {
            return Err(ProviderError::is_a_directory(given));
        }
        self.put_file(cid, &path, given, content, bits).await
    }

    /// Uploads `content` as the clean absolute `path` (not a directory: checked by the caller),
    /// creating missing parents; errors name `given`.
    pub(super) async fn put_file(
        &self,
        cid: &str,
        path: &str,
        given: &str,
        content: Bytes,
        mode: u32,
    ) -> Result<(), ProviderError> {
        // Find the nearest existing ancestor; the tar creates everything below it.
        let mut missing: Vec<&str> = Vec::new();
        let mut dir = parent(path);
        loop {
            match self.path_stat(cid, dir).await? {
                Some(st) if st.is_dir() => break,
                // A link to a directory: upload through it; Docker resolves it in the container.
                Some(st) if st.is_symlink() => break,
                Some(_) => {
                    return Err(ProviderError::InvalidInput(format!(
                        "not a directory: {given}"
                    )))
                }
                None => {
                    missing.push(dir);
                    dir = parent(dir);
                }
            }
        }
        let base = dir.to_string();
        let rel = |p: &str| {
            p.strip_prefix(&base)
                .unwrap_or(p)
                .trim_start_matches('/')
                .to_string()
        };
        let dirs: Vec<String> = missing.iter().rev().map(|d| rel(d)).collect();
        let file = rel(path);
        let tar = blocking(move || file_tar(&dirs, &file, &content, mode)).await?;
        self.upload(cid, &base, tar, given).await
    }

    /// The path of the regular file `given` names, symlinks followed (Docker resolves each
    /// inside the container).
    pub(super) async fn file_path(&self, cid: &str, given: &str) -> Result<String, ProviderError> {
        let mut path = clean_path(given)?;
        for _ in 0..MAX_LINKS {
            let st = self.must_stat(cid, &path, given).await?;
            if st.is_symlink() {
                path = clean_path(&st.link_target)?;
                continue;
            }
            if st.is_dir() {
                return Err(ProviderError::is_a_directory(given));
            }
            return Ok(path);
        }
        Err(ProviderError::InvalidInput(format!(
            "path {given:?} has too many levels of symbolic links"
        )))
    }

    pub(super) async fn read(&self, cid: &str, given: &str) -> Result<Bytes, ProviderError> {
        let path = self.file_path(cid, given).await?;
        let reader = self.download(cid, &path, given).await?;
        match blocking(move || first_file(reader)).await? {
            Some(data) => Ok(Bytes::from(data)),
            None => Err(ProviderError::InvalidInput(format!(
                "not a regular file: {given}"
            ))),
        }
    }

    /// Entries of a directory, sorted by name; `path` is the clean request path joined with the
    /// name, modes are octal permission text.
    pub(super) async fn list(
        &self,
        cid: &str,
        given: &str,
    ) -> Result<Vec<FileInfo>, ProviderError> {
        let path = clean_path(if given.trim().is_empty() { "/" } else { given })?;
        let st = self.must_stat(cid, &path, given).await?;
        if !st.is_dir() && !st.is_symlink() {
            return Err(ProviderError::InvalidInput(format!(
                "not a directory: {given}"
            )));
        }
        // `<dir>/.` names entries relative to the directory and follows a symlinked dir.
        let reader = self.download(cid, &join(&path, "."), given).await?;
        let mut metas = blocking(move || entries(reader, 1)).await?;
        metas.sort_by(|a, b| a.rel.cmp(&b.rel));
        Ok(metas
            .into_iter()
            .map(|m| FileInfo {
                path: join(&path, &m.rel.join("/")),
                size: m.size,
                mode: format!("{:o}", m.mode),
                is_dir: m.is_dir,
                mod_time: secs_to_text(m.mtime),
            })
            .collect())
    }

    pub(super) async fn stat(&self, cid: &str, given: &str) -> Result<FileInfo, ProviderError> {
        let path = clean_path(given)?;
        let st = self.must_stat(cid, &path, given).await?;
        Ok(info_from_stat(&path, &st))
    }

    /// Shell-style glob (`**` is `*`; `*` may match a leading dot, as Go's `filepath.Glob`).
    /// Absolute, sorted results; no match is an empty list.
    ///
    /// Everything below the literal prefix comes from one tar download of the prefix, which
    /// Docker builds inside the container without following symlinks: a link the pattern
    /// reaches is a match when it is the last component and is never walked into. The
    /// download is read under a [`WalkBudget`](crate::walk::WalkBudget) and dropped (closing
    /// the connection to the daemon) when the budget runs out or the caller goes away.
    pub(super) async fn glob_paths(
        &self,
        cid: &str,
        pattern: &str,
    ) -> Result<Vec<String>, ProviderError> {
        if pattern.trim().is_empty() {
            return Err(ProviderError::InvalidInput("pattern is required".into()));
        }
        let full = clean_path(pattern)?;
        let comps: Vec<&str> = full.split('/').filter(|c| !c.is_empty()).collect();
        let Some(first_wild) = comps.iter().position(|c| has_wildcard(c)) else {
            let exists = self.path_stat(cid, &full).await?.is_some();
            return Ok(if exists { vec![full] } else { Vec::new() });
        };
        let steps: Vec<glob::Pattern> = comps[first_wild..]
            .iter()
            .map(|c| component(c))
            .collect::<Result<_, _>>()?;
        let base = format!("/{}", comps[..first_wild].join("/"));
        let depth = steps.len();
        match self.path_stat(cid, &base).await? {
            Some(st) if st.is_dir() || st.is_symlink() => {}
            _ => return Ok(Vec::new()),
        }
        let reader = match self.download(cid, &join(&base, "."), pattern).await {
            Ok(r) => r,
            Err(ProviderError::FileNotFound(_)) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let metas = walk::blocking(move |budget| entries_within(reader, depth, budget)).await?;
        let mut out: Vec<String> = metas
            .into_iter()
            .filter(|m| m.rel.len() == depth)
            .filter(|m| {
                steps
                    .iter()
                    .zip(&m.rel)
                    .all(|(p, n)| p.matches_with(n, MATCH))
            })
            .map(|m| join(&base, &m.rel.join("/")))
            .collect();
        out.sort();
        Ok(out)
    }

    pub(super) async fn delete(
        &self,
        cid: &str,
        given: &str,
        recursive: bool,
    ) -> Result<(), ProviderError> {
        let path = clean_path(given)?;
        if path == "/" {
            return Err(refuse_root(given, "delete"));
        }
        let st = match self.path_stat(cid, &path).await? {
            Some(st) => st,
            None if recursive => return Ok(()),
            None => return Err(ProviderError::FileNotFound(given.to_string())),
        };
        let argv: Vec<&str> = match (st.is_dir(), recursive) {
            (_, true) => vec!["rm", "-rf", "--", &path],
            (true, false) => vec!["rmdir", "--", &path],
            (false, false) => vec!["rm", "-f", "--", &path],
        };
        self.helper(cid, &argv, given).await
    }

    pub(super) async fn rename(
        &self,
        cid: &str,
        old: &str,
        new: &str,
    ) -> Result<(), ProviderError> {
        let from = clean_path(old)?;
        let to = clean_path(new)?;
        if from == "/" || to == "/" {
            return Err(refuse_root(if from == "/" { old } else { new }, "move"));
        }
        self.must_stat(cid, &from, old).await?;
        if from == to {
            return Ok(());
        }
        // `mv` would move into an existing directory instead of renaming onto it.
        if self.path_stat(cid, &to).await?.is_some_and(|s| s.is_dir()) {
            return Err(ProviderError::InvalidInput(format!(
                "already exists: {new}"
            )));
        }
        let dir = parent(&to);
        if self.path_stat(cid, dir).await?.is_none() {
            self.helper(cid, &["mkdir", "-p", "--", dir], new).await?;
        }
        self.helper(cid, &["mv", "-f", "--", &from, &to], old).await
    }

    pub(super) async fn set_mode(
        &self,
        cid: &str,
        given: &str,
        mode: &str,
    ) -> Result<(), ProviderError> {
        let bits = crate::mode_arg(mode)?;
        let path = clean_path(given)?;
        self.must_stat(cid, &path, given).await?;
        let bits = format!("{bits:o}");
        self.helper(cid, &["chmod", &bits, "--", &path], given)
            .await
    }

    /// Runs a file helper; a non-zero exit becomes the matching provider error for `given`.
    async fn helper(&self, cid: &str, argv: &[&str], given: &str) -> Result<(), ProviderError> {
        let argv = argv.iter().map(|s| (*s).to_string()).collect();
        let out = self.exec_capture(cid, argv, None).await?;
        if out.code == 0 {
            return Ok(());
        }
        let err = out.stderr_text();
        let lower = err.to_ascii_lowercase();
        Err(if lower.contains("no such file") {
            ProviderError::FileNotFound(given.to_string())
        } else if lower.contains("read-only") {
            ProviderError::InvalidInput(format!("read-only file system: {given}"))
        } else if lower.contains("permission denied") || lower.contains("not permitted") {
            ProviderError::InvalidInput(format!("permission denied: {given}"))
        } else if lower.contains("not empty") {
            ProviderError::InvalidInput(format!("directory not empty: {given}"))
        } else if out.code == 127 || out.code == 126 {
            ProviderError::internal(format!("the sandbox image cannot run a file helper: {err}"))
        } else {
            ProviderError::InvalidInput(format!("{given}: {err}"))
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn clean_paths() {
        assert_eq!(
            clean_path("/workspace//a/./b/../c").unwrap(),
            "/workspace/a/c"
        );
        assert_eq!(clean_path("workspace/a").unwrap(), "/workspace/a");
        assert_eq!(clean_path("/").unwrap(), "/");
        assert_eq!(clean_path("").unwrap(), "/");
        assert!(clean_path("../etc").is_err());
        assert!(clean_path("/a/../../b").is_err());
        assert!(clean_path("a\0b").is_err());
    }

    #[test]
    fn parents_and_joins() {
        assert_eq!(parent("/a/b"), "/a");
        assert_eq!(parent("/a"), "/");
        assert_eq!(join("/", "x"), "/x");
        assert_eq!(join("/a", "x"), "/a/x");
        assert_eq!(secs_to_text(0), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn stat_info() {
        let st = PathStat {
            size: 3,
            go_mode: 0o644,
            mtime: Some("2026-11-28T16:48:31.785360667Z".into()),
            link_target: String::new(),
        };
        let i = info_from_stat("/workspace/a", &st);
        assert_eq!(i.mode, "644");
        assert_eq!(i.mod_time, "2026-11-28T16:48:31Z");
        assert!(!i.is_dir);
    }
}
