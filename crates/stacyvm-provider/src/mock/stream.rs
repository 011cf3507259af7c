//! Streaming file transfer for the mock: the same path confinement as `files.rs` (the path is
//! resolved once, symlinks and all, before any data moves), then chunked async I/O.
//!
//! Uploads go to a temporary file next to the target and are renamed over it only when the
//! whole stream arrived, so an interrupted upload leaves the old file (or none) rather than a
//! truncated one.

use std::fs::{self, Permissions};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use futures_util::StreamExt;
use tempfile::TempPath;
use tokio::io::AsyncWriteExt;
use tokio_util::io::ReaderStream;

use super::files::io_err;
use super::paths::resolve;
use crate::{ByteStream, FileStream, ProviderError, CHUNK_SIZE};

/// Opens `path` for a streamed read (blocking: resolution walks the tree).
pub(super) fn open(root: &Path, path: &str) -> Result<(fs::File, Option<u64>), ProviderError> {
    let r = resolve(root, path, true)?;
    let f = fs::File::open(&r.host).map_err(|e| io_err(e, path))?;
    let md = f.metadata().map_err(|e| io_err(e, path))?;
    if md.is_dir() {
        return Err(ProviderError::is_a_directory(path));
    }
    Ok((f, md.is_file().then_some(md.len())))
}

/// Chunks of an opened file; I/O errors name the caller's path only.
pub(super) fn body(f: fs::File, size: Option<u64>, path: String) -> FileStream {
    let reader = ReaderStream::with_capacity(tokio::fs::File::from_std(f), CHUNK_SIZE);
    FileStream {
        size,
        body: reader.map(move |r| r.map_err(|e| io_err(e, &path))).boxed(),
    }
}

/// A temporary file beside `path`'s target (blocking). Returns it and the target.
pub(super) fn create_temp(
    root: &Path,
    path: &str,
) -> Result<(fs::File, TempPath, PathBuf), ProviderError> {
    let r = resolve(root, path, true)?;
    if r.is_root() || r.host.is_dir() {
        return Err(ProviderError::is_a_directory(path));
    }
    let parent = r
        .host
        .parent()
        .ok_or_else(|| ProviderError::is_a_directory(path))?
        .to_path_buf();
    fs::create_dir_all(&parent).map_err(|e| io_err(e, path))?;
    let tmp = tempfile::Builder::new()
        .prefix(".stacyvm-upload-")
        .tempfile_in(&parent)
        .map_err(|e| io_err(e, path))?;
    let (file, tmp_path) = tmp.into_parts();
    Ok((file, tmp_path, r.host))
}

/// Copies `body` into `file` chunk by chunk; the temporary file is removed on any failure
/// (dropping `TempPath` deletes it).
pub(super) async fn fill(
    file: fs::File,
    mut body: ByteStream,
    path: &str,
) -> Result<u64, ProviderError> {
    let mut out = tokio::fs::File::from_std(file);
    let mut written = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        out.write_all(&chunk).await.map_err(|e| io_err(e, path))?;
        written += chunk.len() as u64;
    }
    // tokio's File finishes writes in the background; flush surfaces their errors here.
    out.flush().await.map_err(|e| io_err(e, path))?;
    Ok(written)
}

/// Sets the mode (the original's two spellings for 0755, else 0644) and moves the finished
/// file into place (blocking).
pub(super) fn commit(
    tmp: TempPath,
    target: &Path,
    path: &str,
    mode: Option<&str>,
) -> Result<(), ProviderError> {
    let perm = match mode {
        Some("0755" | "executable") => 0o755,
        _ => 0o644,
    };
    fs::set_permissions(&tmp, Permissions::from_mode(perm)).map_err(|e| io_err(e, path))?;
    tmp.persist(target).map_err(|e| io_err(e.error, path))
}
