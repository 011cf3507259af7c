//! Streamed file transfer on a container, in bounded memory whatever the file size.
//!
//! Downloads: the archive API's tar stream is read on a blocking thread, which hands the single
//! file's content on in [`CHUNK_SIZE`] pieces through a small channel; the thread ends when the
//! file does or when the reader of the body goes away (and with it the download from the
//! daemon).
//!
//! Uploads: a tar entry needs its size before its content, and a streamed body has no size
//! until it ends. Bodies up to [`SMALL_UPLOAD`] are gathered and sent as one tar, exactly like
//! a buffered write. Larger ones go to a temporary file next to the target, created through the
//! archive API (parents, owner and mode as any write) and filled by `dd` reading the body on
//! its stdin through exec; once the whole body arrived the temporary file is renamed over the
//! target (`mv`), and on any failure it is removed, so a broken upload never leaves a
//! truncated file behind. That needs `dd` and `mv` in the image, like the other helpers.

use std::io::Read;
use std::time::Duration;

use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecOptions};
use bollard::Docker;
use bytes::{Bytes, BytesMut};
use futures_util::{stream, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot};

use super::archive::TarReader;
use super::exec::MARKER_VAR;
use super::files::{file_mode, join, parent};
use super::image::random_hex;
use super::{api_err, DockerProvider};
use crate::walk::clean_file_path;
use crate::{ByteStream, FileStream, ProviderError, CHUNK_SIZE};

/// Uploads up to this size travel as one tar built in memory.
pub(super) const SMALL_UPLOAD: usize = 1 << 20;
/// Chunks in flight between the tar thread and the body's reader.
const READ_AHEAD: usize = 4;
/// Stderr kept from `dd` for the error message.
const STDERR_KEEP: usize = 4096;
/// Bound on removing an abandoned upload's temporary file.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(30);

fn task_failed() -> ProviderError {
    ProviderError::internal("file task failed")
}

impl DockerProvider {
    /// The file as a stream of chunks, its size taken from the tar header.
    pub(super) async fn read_stream(
        &self,
        cid: &str,
        given: &str,
    ) -> Result<FileStream, ProviderError> {
        let path = self.file_path(cid, given).await?;
        let reader = self.download(cid, &path, given).await?;
        let (size_tx, size_rx) = oneshot::channel();
        let (tx, rx) = mpsc::channel(READ_AHEAD);
        let owned = given.to_string();
        // Owned by the body: it stops at its next chunk once the receiver is dropped.
        tokio::task::spawn_blocking(move || send_file(reader, &owned, size_tx, &tx));
        let size = size_rx.await.map_err(|_| task_failed())??;
        let body = stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) });
        Ok(FileStream {
            size: Some(size),
            body: body.boxed(),
        })
    }

    /// Writes `body` to `given`; returns the bytes written.
    pub(super) async fn write_stream(
        &self,
        cid: &str,
        given: &str,
        mut body: ByteStream,
        mode: Option<&str>,
    ) -> Result<u64, ProviderError> {
        let path = clean_file_path(given)?;
        let bits = file_mode(mode)?;
        let mut head = BytesMut::new();
        while head.len() <= SMALL_UPLOAD {
            match body.next().await {
                Some(chunk) => head.extend_from_slice(&chunk?),
                None => {
                    let n = head.len() as u64;
                    self.write(cid, given, head.freeze(), bits).await?;
                    return Ok(n);
                }
            }
        }
        if self
            .path_stat(cid, &path)
            .await?
            .is_some_and(|s| s.is_dir())
        {
            return Err(ProviderError::is_a_directory(given));
        }
        let name = path.rsplit('/').next().unwrap_or_default();
        let tmp = join(
            parent(&path),
            &format!(".{name}.stacyvm-upload-{}", random_hex()),
        );
        // Owner-writable while `dd` fills it; the exact mode is restored before the rename.
        self.put_file(cid, &tmp, given, Bytes::new(), bits | 0o200)
            .await?;
        let guard = TempFile {
            docker: self.docker.clone(),
            cid: cid.to_string(),
            path: tmp.clone(),
        };
        let body = stream::once(async move { Ok(head.freeze()) })
            .chain(body)
            .boxed();
        let filled = self.fill(cid, &tmp, given, body).await;
        let done = match filled {
            Ok(n) => self.finish(cid, &tmp, &path, given, bits).await.map(|()| n),
            Err(e) => Err(e),
        };
        if done.is_err() {
            let argv = ["rm", "-f", "--", &tmp].map(String::from).to_vec();
            if let Err(e) = self.exec_capture(cid, argv, None).await {
                tracing::warn!(error = %e, "removing a failed upload's temporary file failed");
            }
        }
        guard.disarm();
        done
    }

    /// Restores the exact mode when it is not owner-writable, then renames over the target.
    async fn finish(
        &self,
        cid: &str,
        tmp: &str,
        path: &str,
        given: &str,
        bits: u32,
    ) -> Result<(), ProviderError> {
        let mut steps = Vec::new();
        if bits & 0o200 == 0 {
            steps.push(vec![
                "chmod".into(),
                format!("{bits:o}"),
                "--".into(),
                tmp.into(),
            ]);
        }
        steps.push(["mv", "-f", "--", tmp, path].map(String::from).to_vec());
        for argv in steps {
            let out = self.exec_capture(cid, argv, None).await?;
            if out.code != 0 {
                return Err(helper_failed(given, out.code, &out.stderr_text()));
            }
        }
        Ok(())
    }

    /// Feeds `body` to `dd of=<tmp>` on its stdin; returns the bytes fed once `dd` exited 0.
    async fn fill(
        &self,
        cid: &str,
        tmp: &str,
        given: &str,
        mut body: ByteStream,
    ) -> Result<u64, ProviderError> {
        let marker = random_hex();
        let opts = CreateExecOptions {
            attach_stdin: Some(true),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            env: Some(vec![format!("{MARKER_VAR}={marker}")]),
            cmd: Some(vec!["dd".into(), format!("of={tmp}"), "bs=65536".into()]),
            working_dir: Some("/".into()),
            ..Default::default()
        };
        let (exec_id, mut output, mut input) = self
            .start_attached(cid, opts, |e| api_err("starting the upload failed", e))
            .await?;
        let feed = async {
            let mut n = 0u64;
            while let Some(chunk) = body.next().await {
                let chunk = chunk?;
                input
                    .write_all(&chunk)
                    .await
                    .map_err(|e| ProviderError::internal_with("sending the upload failed", e))?;
                n += chunk.len() as u64;
            }
            // Half-closes the connection: `dd` sees the end of its stdin.
            input
                .shutdown()
                .await
                .map_err(|e| ProviderError::internal_with("sending the upload failed", e))?;
            Ok(n)
        };
        let feed = async {
            let r = feed.await;
            if r.is_err() {
                // `dd` still waits for input: take it down so its output ends.
                self.kill_marked(cid, &marker).await;
            }
            r
        };
        let drain = async {
            let mut err = Vec::new();
            while let Some(item) = output.next().await {
                match item {
                    Ok(LogOutput::StdErr { message }) if err.len() < STDERR_KEEP => {
                        err.extend_from_slice(&message);
                    }
                    Ok(_) => {}
                    Err(e) => return Err(api_err("reading the upload's output failed", e)),
                }
            }
            Ok(err)
        };
        let (fed, err) = tokio::join!(feed, drain);
        let n = fed?;
        let err = String::from_utf8_lossy(&err?).trim().to_string();
        let deadline = Some(tokio::time::Instant::now() + Duration::from_secs(60));
        let kill = || self.kill_marked(cid, &marker);
        let (code, _) = self.wait_exit(&exec_id, deadline, None, kill).await?;
        if code != 0 {
            return Err(helper_failed(given, code, &err));
        }
        Ok(n)
    }
}

/// An upload's temporary file, removed if the upload is abandoned (its future dropped: the
/// client went away) before [`Self::disarm`]. Drop cannot await, so the removal is a detached
/// `rm` exec started from a task of its own, bounded by [`CLEANUP_TIMEOUT`].
struct TempFile {
    docker: Docker,
    cid: String,
    path: String,
}

impl TempFile {
    fn disarm(mut self) {
        self.path.clear();
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.path.is_empty() {
            return;
        }
        let (docker, cid, path) = (
            self.docker.clone(),
            std::mem::take(&mut self.cid),
            std::mem::take(&mut self.path),
        );
        rt.spawn(async move {
            let rm = async {
                let opts = CreateExecOptions {
                    cmd: Some(vec!["rm".into(), "-f".into(), "--".into(), path]),
                    ..Default::default()
                };
                let id = docker.create_exec(&cid, opts).await?.id;
                let detached = StartExecOptions {
                    detach: true,
                    ..Default::default()
                };
                docker.start_exec(&id, Some(detached)).await.map(drop)
            };
            match tokio::time::timeout(CLEANUP_TIMEOUT, rm).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "removing an abandoned upload failed"),
                Err(_) => tracing::warn!("removing an abandoned upload timed out"),
            }
        });
    }
}

/// A failed `dd`, `chmod` or `mv` as the provider error for `given`.
fn helper_failed(given: &str, code: i32, stderr: &str) -> ProviderError {
    let lower = stderr.to_ascii_lowercase();
    if lower.contains("no space") {
        ProviderError::InvalidInput(format!("no space left in the sandbox: {given}"))
    } else if lower.contains("read-only") {
        ProviderError::InvalidInput(format!("read-only file system: {given}"))
    } else if lower.contains("permission denied") || lower.contains("not permitted") {
        ProviderError::InvalidInput(format!("permission denied: {given}"))
    } else if code == 126 || code == 127 {
        ProviderError::internal(format!(
            "the sandbox image cannot run a file helper (dd, chmod, mv): {stderr}"
        ))
    } else {
        ProviderError::internal(format!("writing {given} failed: {stderr}"))
    }
}

/// Reads the single file of a download and sends its size, then its content in chunks. Runs
/// on a blocking thread; returns when the file ends, on an error (sent as the last item), or
/// when the receiver is gone.
fn send_file(
    reader: TarReader,
    given: &str,
    size_tx: oneshot::Sender<Result<u64, ProviderError>>,
    tx: &mpsc::Sender<Result<Bytes, ProviderError>>,
) {
    let failed = |e: std::io::Error| ProviderError::internal_with("reading the file failed", e);
    let mut ar = tar::Archive::new(reader);
    let first = match ar.entries() {
        Ok(mut entries) => entries.next(),
        Err(e) => Some(Err(e)),
    };
    let mut entry = match first {
        Some(Ok(e)) if e.header().entry_type().is_file() => e,
        Some(Err(e)) => {
            let _ = size_tx.send(Err(failed(e)));
            return;
        }
        _ => {
            let _ = size_tx.send(Err(ProviderError::InvalidInput(format!(
                "not a regular file: {given}"
            ))));
            return;
        }
    };
    if size_tx.send(Ok(entry.size())).is_err() {
        return;
    }
    loop {
        let mut buf = Vec::with_capacity(CHUNK_SIZE);
        match Read::by_ref(&mut entry)
            .take(CHUNK_SIZE as u64)
            .read_to_end(&mut buf)
        {
            Ok(0) => return,
            Ok(_) => {
                if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
                    return;
                }
            }
            Err(e) => {
                let _ = tx.blocking_send(Err(failed(e)));
                return;
            }
        }
    }
}
