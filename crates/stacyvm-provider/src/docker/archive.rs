//! The archive API: path stats (HEAD), tar downloads read as a stream, tar uploads.

use std::io::{self, Read};

use bollard::body_full;
use bollard::query_parameters::{
    ContainerArchiveInfoOptionsBuilder, DownloadFromContainerOptionsBuilder,
    UploadToContainerOptionsBuilder,
};
use bytes::Bytes;
use futures_util::{stream, StreamExt, TryStreamExt};
use tokio_util::io::{StreamReader, SyncIoBridge};

use super::{api_err, is_status, server_message, DockerError, DockerProvider};
use crate::walk::WalkBudget;
use crate::ProviderError;

// Go's `io/fs.FileMode` bits, as the archive API reports modes.
const GO_DIR: u32 = 1 << 31;
const GO_SYMLINK: u32 = 1 << 27;
const GO_SETUID: u32 = 1 << 23;
const GO_SETGID: u32 = 1 << 22;
const GO_STICKY: u32 = 1 << 20;

/// One path as the archive API's HEAD reports it.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct PathStat {
    pub size: i64,
    /// Go `FileMode`.
    pub go_mode: u32,
    pub mtime: Option<String>,
    /// For a symlink: its target, resolved inside the container (absolute).
    pub link_target: String,
}

impl PathStat {
    pub fn is_dir(&self) -> bool {
        self.go_mode & GO_DIR != 0
    }

    pub fn is_symlink(&self) -> bool {
        self.go_mode & GO_SYMLINK != 0
    }

    /// Unix permission bits (with setuid, setgid, sticky).
    pub fn perm(&self) -> u32 {
        let mut m = self.go_mode & 0o777;
        for (go, unix) in [
            (GO_SETUID, 0o4000),
            (GO_SETGID, 0o2000),
            (GO_STICKY, 0o1000),
        ] {
            if self.go_mode & go != 0 {
                m |= unix;
            }
        }
        m
    }
}

/// One tar entry's metadata, with its path split relative to the downloaded directory.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct EntryMeta {
    pub rel: Vec<String>,
    pub size: i64,
    pub mode: u32,
    pub is_dir: bool,
    pub mtime: u64,
}

/// A blocking reader over a streamed download.
pub(super) type TarReader =
    SyncIoBridge<StreamReader<stream::BoxStream<'static, io::Result<Bytes>>, Bytes>>;

impl DockerProvider {
    /// The archive API's stat of `path` in container `cid`; `None` when it does not exist.
    pub(super) async fn archive_info(
        &self,
        cid: &str,
        path: &str,
    ) -> Result<Option<bollard::container::PathStatResponse>, DockerError> {
        let opts = ContainerArchiveInfoOptionsBuilder::default()
            .path(path)
            .build();
        match self
            .docker
            .get_container_archive_info(cid, Some(opts))
            .await
        {
            Ok(s) => Ok(Some(s)),
            Err(e) if is_status(&e, 404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Stat of `path` in the container; `None` when it does not exist.
    pub(super) async fn path_stat(
        &self,
        cid: &str,
        path: &str,
    ) -> Result<Option<PathStat>, ProviderError> {
        let info = self
            .archive_info(cid, path)
            .await
            .map_err(|e| api_err("reading file information failed", e))?;
        Ok(info.map(|s| PathStat {
            size: s.size,
            go_mode: s.file_mode,
            mtime: s.modification_time,
            link_target: s.link_target,
        }))
    }

    /// Starts downloading `path` as a tar stream; `given` names it in errors.
    pub(super) async fn download(
        &self,
        cid: &str,
        path: &str,
        given: &str,
    ) -> Result<TarReader, ProviderError> {
        let opts = DownloadFromContainerOptionsBuilder::default()
            .path(path)
            .build();
        let mut body = self.docker.download_from_container(cid, Some(opts));
        // The first item carries the response status: turn a 404 into FileNotFound here.
        let first = match body.next().await {
            Some(Ok(b)) => b,
            Some(Err(e)) if is_status(&e, 404) => {
                return Err(ProviderError::FileNotFound(given.to_string()))
            }
            Some(Err(e)) => return Err(api_err("downloading files failed", e)),
            None => Bytes::new(),
        };
        let rest = body.map_err(io::Error::other);
        let all: stream::BoxStream<'static, io::Result<Bytes>> =
            stream::once(async move { Ok(first) }).chain(rest).boxed();
        Ok(SyncIoBridge::new(StreamReader::new(all)))
    }

    /// Extracts `tar` (built by the caller) into directory `dir`.
    pub(super) async fn upload(
        &self,
        cid: &str,
        dir: &str,
        tar: Vec<u8>,
        given: &str,
    ) -> Result<(), ProviderError> {
        let opts = UploadToContainerOptionsBuilder::default()
            .path(dir)
            // Never replace a directory with a file (Docker would delete the directory).
            .no_overwrite_dir_non_dir("true")
            // Files belong to the container's user, so its commands can change them.
            .copy_uidgid("1")
            .build();
        match self
            .docker
            .upload_to_container(cid, Some(opts), body_full(Bytes::from(tar)))
            .await
        {
            Ok(()) => Ok(()),
            Err(e) => {
                let msg = server_message(&e).unwrap_or_default().to_ascii_lowercase();
                if msg.contains("read-only") {
                    Err(ProviderError::InvalidInput(format!(
                        "read-only file system: {given}"
                    )))
                } else if is_status(&e, 404) {
                    Err(ProviderError::FileNotFound(given.to_string()))
                } else if msg.contains("directory") {
                    Err(ProviderError::is_a_directory(given))
                } else if msg.contains("permission denied") {
                    Err(ProviderError::InvalidInput(format!(
                        "permission denied: {given}"
                    )))
                } else {
                    Err(api_err("uploading files failed", e))
                }
            }
        }
    }
}

/// Runs blocking tar work on the blocking pool.
pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> Result<T, ProviderError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ProviderError::internal_with("file task failed", e))?
        .map_err(|e| ProviderError::internal_with("reading the file archive failed", e))
}

/// Entries of a directory download (`<dir>/.`), at most `max_depth` levels below it.
pub(super) fn entries(reader: impl Read, max_depth: usize) -> io::Result<Vec<EntryMeta>> {
    entries_with(reader, max_depth, |_| Ok(()), |e| e)
}

/// [`entries`] for a glob: every entry within `max_depth` counts against `budget` (the
/// entries below it are Docker's overhead, bounded by the budget's time), and the download
/// stops as soon as the budget is spent or the caller went away.
pub(super) fn entries_within(
    reader: impl Read,
    max_depth: usize,
    budget: &mut WalkBudget,
) -> Result<Vec<EntryMeta>, ProviderError> {
    let reader = budget.guard(reader);
    let res = entries_with(
        reader,
        max_depth,
        |within| {
            if within {
                budget.visit()
            } else {
                budget.check()
            }
        },
        |e| ProviderError::internal_with("reading the file archive failed", e),
    );
    // A read the guard cut off reports why it was cut.
    res.map_err(|e| budget.check().err().unwrap_or(e))
}

/// Walks the tar, calling `visit(within_depth)` for every entry before looking at it.
fn entries_with<E>(
    reader: impl Read,
    max_depth: usize,
    mut visit: impl FnMut(bool) -> Result<(), E>,
    io: impl Fn(io::Error) -> E,
) -> Result<Vec<EntryMeta>, E> {
    let mut ar = tar::Archive::new(reader);
    let mut out = Vec::new();
    for entry in ar.entries().map_err(&io)? {
        let entry = entry.map_err(&io)?;
        let path = entry.path().map_err(&io)?;
        let rel: Vec<String> = path
            .components()
            .filter_map(|c| match c {
                std::path::Component::Normal(n) => Some(n.to_string_lossy().into_owned()),
                _ => None,
            })
            .collect();
        let within = !rel.is_empty() && rel.len() <= max_depth;
        visit(within)?;
        if !within {
            continue;
        }
        let h = entry.header();
        let is_dir = h.entry_type().is_dir();
        out.push(EntryMeta {
            rel,
            size: if is_dir {
                0
            } else {
                i64::try_from(h.size().map_err(&io)?).unwrap_or(i64::MAX)
            },
            mode: h.mode().map_err(&io)? & 0o7777,
            is_dir,
            mtime: h.mtime().map_err(&io)?,
        });
    }
    Ok(out)
}

/// Content of the first (only) entry of a single-file download.
pub(super) fn first_file(reader: impl Read) -> io::Result<Option<Vec<u8>>> {
    let mut ar = tar::Archive::new(reader);
    let mut entries = ar.entries()?;
    let Some(entry) = entries.next() else {
        return Ok(None);
    };
    let mut entry = entry?;
    if !entry.header().entry_type().is_file() {
        return Ok(None);
    }
    let mut buf = Vec::with_capacity(usize::try_from(entry.size()).unwrap_or(0).min(1 << 30));
    entry.read_to_end(&mut buf)?;
    Ok(Some(buf))
}

/// A tar holding `dirs` (created 0755, in order) and then one file.
pub(super) fn file_tar(
    dirs: &[String],
    file: &str,
    content: &[u8],
    mode: u32,
) -> io::Result<Vec<u8>> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut b = tar::Builder::new(Vec::with_capacity(content.len() + 2048));
    for d in dirs {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_size(0);
        h.set_mtime(now);
        b.append_data(&mut h, format!("{d}/"), io::empty())?;
    }
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(mode);
    h.set_size(content.len() as u64);
    h.set_mtime(now);
    b.append_data(&mut h, file, content)?;
    b.into_inner()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn go_modes() {
        let st = |m| PathStat {
            size: 0,
            go_mode: m,
            mtime: None,
            link_target: String::new(),
        };
        assert!(st(2147484141).is_dir());
        assert_eq!(st(2147484141).perm(), 0o755);
        assert!(st(134218239).is_symlink());
        assert_eq!(st(GO_DIR | GO_STICKY | 0o777).perm(), 0o1777);
        assert_eq!(st(GO_SETUID | 0o755).perm(), 0o4755);
    }

    #[test]
    fn tar_round_trip() {
        let data: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
        let t = file_tar(&["a".into(), "a/b".into()], "a/b/f.bin", &data, 0o640).unwrap();
        let metas = entries(&t[..], 8).unwrap();
        let names: Vec<String> = metas.iter().map(|m| m.rel.join("/")).collect();
        assert_eq!(names, ["a", "a/b", "a/b/f.bin"]);
        assert!(metas[0].is_dir && metas[1].is_dir && !metas[2].is_dir);
        assert_eq!(metas[2].mode, 0o640);
        assert_eq!(metas[2].size, 70_000);
        assert_eq!(entries(&t[..], 1).unwrap().len(), 1);

        let single = file_tar(&[], "f.bin", &data, 0o644).unwrap();
        assert_eq!(first_file(&single[..]).unwrap().unwrap(), data);
        let dir_only = file_tar(&["d".into()], "d/x", b"", 0o644).unwrap();
        assert_eq!(
            first_file(&dir_only[..]).unwrap(),
            None,
            "a directory is not a file"
        );
    }
}
