//! File operations inside a sandbox. Paths are passed to the provider, which confines them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures_util::StreamExt;
use stacyvm_provider::{ByteStream, FileStream, WatchStream};
use stacyvm_types::{EventKind, FileInfo, SandboxId};

use super::Service;
use crate::error::{ServiceError, ServiceResult};
use crate::events::EventData;

/// Longest path accepted: far beyond any real need, short enough to bound work.
const MAX_PATH: usize = 4096;

fn check_path(path: &str) -> ServiceResult<&str> {
    if path.trim().is_empty() {
        return Err(ServiceError::bad_request("path is required"));
    }
    if path.len() > MAX_PATH || path.contains('\0') {
        return Err(ServiceError::bad_request(
            "path is too long or contains NUL",
        ));
    }
    Ok(path)
}

/// A blank mode is no mode; anything else must parse.
fn check_mode(mode: Option<&str>) -> ServiceResult<Option<&str>> {
    let mode = mode.map(str::trim).filter(|m| !m.is_empty());
    if let Some(m) = mode {
        if stacyvm_provider::parse_mode(m).is_none() {
            return Err(ServiceError::bad_request(format!(
                "invalid file mode {m:?}"
            )));
        }
    }
    Ok(mode)
}

/// Files inside sandboxes.
#[derive(Clone, Copy)]
pub struct Files<'a> {
    svc: &'a Service,
}

impl Service {
    pub fn files(&self) -> Files<'_> {
        Files { svc: self }
    }
}

impl Files<'_> {
    /// Runs one file operation with metrics and failure events.
    async fn op<T, F, Fut>(self, id: &SandboxId, op: &'static str, f: F) -> ServiceResult<T>
    where
        F: FnOnce(std::sync::Arc<dyn stacyvm_provider::Provider>, String) -> Fut,
        Fut: std::future::Future<Output = Result<T, stacyvm_provider::ProviderError>>,
    {
        let sb = self.svc.sandboxes().get_unpaused(id).await?;
        self.svc.activity.touch(id);
        let provider = self.svc.provider_for(&sb).await?;
        let started = Instant::now();
        let res = f(provider, sb.runtime_id().to_string()).await;
        match res {
            Ok(v) => {
                self.svc
                    .ops
                    .observe(op, &sb.provider, started.elapsed(), None);
                Ok(v)
            }
            Err(e) => {
                let err = ServiceError::from(e);
                self.svc
                    .ops
                    .observe(op, &sb.provider, started.elapsed(), Some(&err.to_string()));
                if matches!(
                    err,
                    ServiceError::Internal { .. } | ServiceError::Unavailable(_)
                ) {
                    self.svc.events.publish(
                        EventKind::OperationFailed,
                        Some(id),
                        Some(EventData::failure(op, &sb.provider, err.to_string())),
                    );
                }
                Err(err)
            }
        }
    }

    pub async fn write(
        self,
        id: &SandboxId,
        path: &str,
        content: Bytes,
        mode: Option<&str>,
    ) -> ServiceResult<()> {
        let path = check_path(path)?;
        let mode = check_mode(mode)?;
        self.op(id, "file_write", |p, rid| async move {
            p.write_file(&rid, path, content, mode).await
        })
        .await?;
        self.svc
            .events
            .publish(EventKind::FileWritten, Some(id), None);
        Ok(())
    }

    /// [`Self::write`] from a stream (the raw-body upload); returns the bytes written.
    /// Same checks, metric and event; the provider confines the path before reading `body`.
    /// Backends that buffer uploads (no streaming path) are held to `max_body_bytes` (413).
    pub async fn write_stream(
        self,
        id: &SandboxId,
        path: &str,
        body: ByteStream,
        mode: Option<&str>,
    ) -> ServiceResult<u64> {
        let path = check_path(path)?;
        let mode = check_mode(mode)?;
        let max = u64::try_from(self.svc.settings().max_body_bytes).unwrap_or(u64::MAX);
        let tripped = Arc::new(AtomicBool::new(false));
        let flag = tripped.clone();
        let res = self
            .op(id, "file_write", |p, rid| async move {
                // A backend that buffers uploads whole gets no more than a JSON write may carry.
                let body = if p.streams_files() {
                    body
                } else {
                    stacyvm_provider::limited(body, max, flag)
                };
                p.write_file_stream(&rid, path, body, mode).await
            })
            .await;
        if tripped.load(Ordering::SeqCst) {
            return Err(ServiceError::PayloadTooLarge(format!(
                "this sandbox's provider takes files of at most {max} bytes \
                 (server.max_body_bytes)"
            )));
        }
        let n = res?;
        self.svc
            .events
            .publish(EventKind::FileWritten, Some(id), None);
        Ok(n)
    }

    /// Opens a file for a streamed read. The metric covers opening it (the body then flows at
    /// the client's pace); failures later in the stream reach the client as a cut-off body.
    pub async fn read(self, id: &SandboxId, path: &str) -> ServiceResult<FileStream> {
        let path = check_path(path)?;
        let f = self
            .op(id, "file_read", |p, rid| async move {
                p.read_file_stream(&rid, path).await
            })
            .await?;
        self.svc.events.publish(EventKind::FileRead, Some(id), None);
        Ok(f)
    }

    pub async fn list(self, id: &SandboxId, path: &str) -> ServiceResult<Vec<FileInfo>> {
        let path = if path.trim().is_empty() { "/" } else { path };
        let path = check_path(path)?;
        self.op(id, "file_list", |p, rid| async move {
            p.list_files(&rid, path).await
        })
        .await
    }

    pub async fn stat(self, id: &SandboxId, path: &str) -> ServiceResult<FileInfo> {
        let path = check_path(path)?;
        self.op(id, "file_stat", |p, rid| async move {
            p.stat_file(&rid, path).await
        })
        .await
    }

    pub async fn glob(self, id: &SandboxId, pattern: &str) -> ServiceResult<Vec<String>> {
        if pattern.trim().is_empty() {
            return Err(ServiceError::bad_request("pattern is required"));
        }
        let pattern = check_path(pattern)?;
        self.op(id, "file_glob", |p, rid| async move {
            p.glob(&rid, pattern).await
        })
        .await
    }

    pub async fn delete(self, id: &SandboxId, path: &str, recursive: bool) -> ServiceResult<()> {
        let path = check_path(path)?;
        self.op(id, "file_delete", |p, rid| async move {
            p.delete_file(&rid, path, recursive).await
        })
        .await
    }

    pub async fn rename(self, id: &SandboxId, old: &str, new: &str) -> ServiceResult<()> {
        let old = check_path(old)?;
        let new = check_path(new)?;
        self.op(id, "file_move", |p, rid| async move {
            p.move_file(&rid, old, new).await
        })
        .await
    }

    /// Watches the directory `path` (with `recursive`, every directory below it too, including
    /// ones made later) and returns its changes as they happen, names relative to `path`. The
    /// watch is in place when this returns. Like every file operation it needs a running
    /// sandbox (a paused one is `SandboxPaused`) and counts as activity once, at the start; a
    /// missing path is `FileNotFound`, a file `BadRequest`, a provider without watches
    /// `NotSupported`. The stream ends when the directory is removed or the control plane shuts
    /// down, with an error item when the watch breaks (the sandbox went away, events were
    /// lost); dropping it ends the watch in the sandbox.
    pub async fn watch(
        self,
        id: &SandboxId,
        path: &str,
        recursive: bool,
    ) -> ServiceResult<WatchStream> {
        let path = check_path(path)?;
        let events = self
            .op(id, "file_watch", |p, rid| async move {
                p.watch_dir(&rid, path, recursive).await
            })
            .await?;
        let stop = self.svc.shutdown.clone().cancelled_owned();
        Ok(events.take_until(stop).boxed())
    }

    pub async fn chmod(self, id: &SandboxId, path: &str, mode: &str) -> ServiceResult<()> {
        let path = check_path(path)?;
        if stacyvm_provider::parse_mode(mode).is_none() {
            return Err(ServiceError::bad_request(format!(
                "invalid file mode {mode:?}"
            )));
        }
        self.op(id, "file_chmod", |p, rid| async move {
            p.chmod(&rid, path, mode).await
        })
        .await
    }
}
