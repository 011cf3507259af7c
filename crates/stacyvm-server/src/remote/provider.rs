//! A [`Provider`] bound to one remote sandbox: every call becomes a worker RPC
//! ([`RpcCall`]). Spawn and destroy carry a lease from the store (holder = the worker), which
//! the worker fences on. Worker failures come back as provider errors through the one wire
//! mapping (`ProviderError::from_wire`), so this provider passes the same conformance suite
//! as the local backends (`tests/remote_conformance.rs`).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use stacyvm_protocol::{
    self as proto, FileChmodParams, FileDeleteParams, FileGlobParams, FileMoveParams,
    FilePathParams, FileUploadParams, FileWriteParams, LeaseToken, LogsParams, RpcCall, RpcRequest,
    Target,
};
use stacyvm_provider::{
    ByteStream, ChunkSender, ExecRequest, FileStream, ProcessSpec, Provider, ProviderError,
    RecordStream, SandboxSpec, SnapshotMade, Spawned, VolumeMountSpec, WatchStream,
};
use stacyvm_store::{Lease, Store};
use stacyvm_types::{
    format_rfc3339_go, FileInfo, GoDuration, Pid, ProcessInfo, PtySize, SandboxId, SandboxState,
    Signal,
};

use super::{Endpoint, RemoteError, WorkerClient};

/// Non-streaming calls that only touch metadata.
pub(super) const QUICK: Duration = Duration::from_secs(30);
/// Calls that move data or build runtimes (image pulls, large files).
pub(super) const SLOW: Duration = Duration::from_secs(600);
/// Tearing a runtime down; bounded so a frozen worker cannot hold a caller for long.
const TEARDOWN: Duration = Duration::from_secs(60);
/// Added to a command's own timeout before the control plane gives up on the worker.
const EXEC_MARGIN: Duration = Duration::from_secs(30);

pub fn lease_token(l: &Lease) -> LeaseToken {
    LeaseToken {
        resource_id: l.resource_id.clone(),
        holder_id: l.holder_id.clone(),
        generation: l.generation,
        expires_at: format_rfc3339_go(&l.expires_at),
    }
}

pub struct RemoteProvider {
    pub client: Arc<WorkerClient>,
    pub endpoint: Endpoint,
    pub store: Arc<dyn Store>,
    /// Provider name on the worker.
    pub provider: String,
    /// Control-plane sandbox id (the lease resource).
    pub sandbox_id: SandboxId,
    /// Lease lifetime for spawn/destroy.
    pub lease_ttl: Duration,
    /// The sandbox's lifetime, sent with spawn.
    pub ttl: GoDuration,
    /// The worker serves the streaming file methods (heartbeat capability `file_stream`);
    /// without it file transfers use the buffered methods.
    pub file_stream: bool,
    /// The worker serves `worker.watch_dir` (heartbeat capability `watch`); without it a watch
    /// answers `NotSupported` (the worker would refuse the method as unknown, a 400).
    pub watch: bool,
    /// The worker honours `ExecParams.user` (heartbeat capability `user`).
    pub user: bool,
    /// The worker holds volumes and snapshots (heartbeat capability `state`).
    pub state: bool,
}

impl RemoteProvider {
    /// `worker.process_start` for `spec`; with `follow` the answer streams the records too.
    fn start_call(
        &self,
        runtime_id: &str,
        spec: ProcessSpec,
        follow: bool,
    ) -> Result<RpcCall, ProviderError> {
        self.check_user(spec.exec.user.as_deref())?;
        let req = spec.exec;
        Ok(RpcCall::ProcessStart(proto::ProcessStartParams {
            exec: proto::ExecParams {
                target: self.target(runtime_id),
                command: req.command,
                args: req.args,
                mode: req.mode,
                env: req.env,
                workdir: req.workdir.unwrap_or_default(),
                timeout: req.timeout.map(GoDuration::from_std),
                user: req.user.unwrap_or_default(),
            },
            tag: spec.tag,
            stdin: spec.stdin,
            pty: spec.pty,
            output_buffer: spec.output_buffer,
            retain_exited_ms: spec
                .retain_exited
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            follow,
        }))
    }

    /// A worker without the `user` capability would ignore the field: refuse instead.
    fn check_user(&self, user: Option<&str>) -> Result<(), ProviderError> {
        if user.is_none() || self.user {
            return Ok(());
        }
        Err(ProviderError::NotSupported(
            "the sandbox's worker is too old to run a command as another user; upgrade it".into(),
        ))
    }

    pub(super) fn target(&self, runtime_id: &str) -> Target {
        Target {
            sandbox_id: self.sandbox_id.clone(),
            provider: self.provider.clone(),
            runtime_id: if runtime_id == self.sandbox_id.as_str() {
                String::new()
            } else {
                runtime_id.to_string()
            },
        }
    }

    fn path(&self, runtime_id: &str, path: &str) -> FilePathParams {
        FilePathParams {
            target: self.target(runtime_id),
            path: path.to_string(),
        }
    }

    fn request(&self, call: RpcCall, lease: Option<LeaseToken>) -> RpcRequest {
        RpcRequest::new(
            call,
            self.endpoint.worker_id.clone(),
            &self.sandbox_id,
            lease,
        )
    }

    /// One call and its typed result (`None` for void methods). `path` names the file the
    /// call is about, for file-not-found errors.
    pub(super) async fn call<R: DeserializeOwned>(
        &self,
        call: RpcCall,
        lease: Option<LeaseToken>,
        timeout: Duration,
        path: &str,
    ) -> Result<Option<R>, ProviderError> {
        let res = self
            .client
            .call(&self.endpoint, &self.request(call, lease), Some(timeout))
            .await
            .map_err(|e| e.into_provider(path))?;
        match res {
            None => Ok(None),
            Some(v) => serde_json::from_value(v)
                .map(Some)
                .map_err(|_| RemoteError::Decode.into_provider(path)),
        }
    }

    /// A call whose answer must carry a result.
    async fn call_for<R: DeserializeOwned>(
        &self,
        call: RpcCall,
        timeout: Duration,
        path: &str,
    ) -> Result<R, ProviderError> {
        self.call(call, None, timeout, path)
            .await?
            .ok_or_else(|| RemoteError::Decode.into_provider(path))
    }

    async fn call_void(
        &self,
        call: RpcCall,
        timeout: Duration,
        path: &str,
    ) -> Result<(), ProviderError> {
        self.call::<Value>(call, None, timeout, path)
            .await
            .map(|_| ())
    }

    pub(super) async fn acquire(&self) -> Result<Lease, ProviderError> {
        self.store
            .acquire_lease(
                &self.sandbox_id,
                "sandbox",
                &self.endpoint.worker_id,
                self.lease_ttl,
            )
            .await
            .map_err(|e| ProviderError::Unavailable(format!("lease for {}: {e}", self.sandbox_id)))
    }
}

#[async_trait::async_trait]
impl Provider for RemoteProvider {
    fn name(&self) -> &str {
        &self.provider
    }

    fn capabilities(&self) -> Vec<&'static str> {
        let mut caps = stacyvm_provider::capabilities_with(&["remote_worker", "pause"]);
        if self.state {
            caps.extend(["volumes", "snapshots"]);
        }
        caps
    }

    fn config_summary(&self) -> Value {
        json!({"type": "remote", "worker_id": self.endpoint.worker_id})
    }

    async fn health(&self) -> Result<(), ProviderError> {
        Ok(())
    }

    async fn spawn(&self, spec: &SandboxSpec) -> Result<Spawned, ProviderError> {
        self.spawn_call(spec, &[], "").await
    }

    async fn spawn_with_volumes(
        &self,
        spec: &SandboxSpec,
        mounts: &[VolumeMountSpec],
    ) -> Result<Spawned, ProviderError> {
        self.spawn_call(spec, mounts, "").await
    }

    async fn spawn_from_snapshot(
        &self,
        spec: &SandboxSpec,
        mounts: &[VolumeMountSpec],
        snapshot_id: &str,
    ) -> Result<Spawned, ProviderError> {
        self.spawn_call(spec, mounts, snapshot_id).await
    }

    async fn create_volume(&self, name: &str, size_mb: i64) -> Result<(), ProviderError> {
        self.volume_create(name, size_mb).await
    }

    async fn delete_volume(&self, name: &str) -> Result<(), ProviderError> {
        self.volume_delete(name).await
    }

    async fn list_volumes(&self) -> Result<Option<Vec<String>>, ProviderError> {
        self.volume_list().await
    }

    async fn snapshot(&self, runtime_id: &str, sid: &str) -> Result<SnapshotMade, ProviderError> {
        self.snapshot_make(runtime_id, sid).await
    }

    async fn delete_snapshot(&self, sid: &str) -> Result<(), ProviderError> {
        self.snapshot_delete(sid).await
    }

    async fn sweep_snapshots(
        &self,
        known: &std::collections::HashSet<String>,
        grace: Duration,
    ) -> Result<Vec<String>, ProviderError> {
        self.snapshot_sweep(known, grace).await
    }

    async fn destroy(&self, runtime_id: &str) -> Result<(), ProviderError> {
        // A fresh grant (same holder ⇒ newer generation) proves this control plane is current.
        let lease = self.acquire().await?;
        let call = RpcCall::Destroy(self.target(runtime_id));
        let res = self
            .call::<Value>(call, Some(lease_token(&lease)), TEARDOWN, "")
            .await;
        match res {
            Ok(_) | Err(ProviderError::SandboxNotFound(_)) => {
                let _ = self
                    .store
                    .release_lease(&self.sandbox_id, &self.endpoint.worker_id)
                    .await;
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    async fn status(&self, runtime_id: &str) -> Result<SandboxState, ProviderError> {
        let r: proto::StatusResult = self
            .call_for(RpcCall::Status(self.target(runtime_id)), QUICK, "")
            .await?;
        if !r.error.is_empty() {
            return Err(ProviderError::internal(format!(
                "worker status: {}",
                r.error
            )));
        }
        r.state.parse().map_err(|_| {
            ProviderError::internal(format!("worker reported unknown state {:?}", r.state))
        })
    }

    async fn pause(&self, runtime_id: &str) -> Result<(), ProviderError> {
        self.call::<Value>(RpcCall::Pause(self.target(runtime_id)), None, TEARDOWN, "")
            .await
            .map(|_| ())
    }

    async fn resume(&self, runtime_id: &str) -> Result<(), ProviderError> {
        self.call::<Value>(RpcCall::Resume(self.target(runtime_id)), None, TEARDOWN, "")
            .await
            .map(|_| ())
    }

    async fn exec(
        &self,
        runtime_id: &str,
        req: ExecRequest,
        out: ChunkSender,
    ) -> Result<i32, ProviderError> {
        self.check_user(req.user.as_deref())?;
        let timeout = req.timeout;
        let call = RpcCall::ExecStream(proto::ExecParams {
            target: self.target(runtime_id),
            command: req.command,
            args: req.args,
            mode: req.mode,
            env: req.env,
            workdir: req.workdir.unwrap_or_default(),
            timeout: timeout.map(GoDuration::from_std),
            user: req.user.unwrap_or_default(),
        });
        let rpc = self.request(call, None);
        let call = self.client.exec_stream(&self.endpoint, &rpc, out);
        let res = match timeout {
            Some(t) => tokio::time::timeout(t + EXEC_MARGIN, call)
                .await
                .map_err(|_| ProviderError::Timeout)?,
            None => call.await,
        };
        match res {
            Ok(stacyvm_types::TIMEOUT_EXIT_CODE) if timeout.is_some() => {
                Err(ProviderError::Timeout)
            }
            Ok(code) => Ok(code),
            Err(e) => Err(e.into_provider("")),
        }
    }

    async fn write_file(
        &self,
        runtime_id: &str,
        path: &str,
        content: Bytes,
        mode: Option<&str>,
    ) -> Result<(), ProviderError> {
        let call = RpcCall::FileWrite(FileWriteParams {
            target: self.target(runtime_id),
            path: path.to_string(),
            content: content.to_vec(),
            mode: mode.unwrap_or_default().to_string(),
        });
        self.call_void(call, SLOW, path).await
    }

    async fn read_file(&self, runtime_id: &str, path: &str) -> Result<Bytes, ProviderError> {
        let call = RpcCall::FileRead(self.path(runtime_id, path));
        let r: Option<proto::FileReadResult> = self.call(call, None, SLOW, path).await?;
        let content = r.map(|r| r.content).unwrap_or_default();
        proto::base64::decode(&content)
            .map(Bytes::from)
            .ok_or_else(|| RemoteError::Decode.into_provider(path))
    }

    fn streams_files(&self) -> bool {
        // The worker caps uploads itself when its own provider buffers them.
        self.file_stream
    }

    async fn read_file_stream(
        &self,
        runtime_id: &str,
        path: &str,
    ) -> Result<FileStream, ProviderError> {
        if !self.file_stream {
            return Ok(FileStream::from_bytes(
                self.read_file(runtime_id, path).await?,
            ));
        }
        let rpc = self.request(RpcCall::FileReadStream(self.path(runtime_id, path)), None);
        let (size, body) = self
            .client
            .file_read_stream(&self.endpoint, &rpc)
            .await
            .map_err(|e| e.into_provider(path))?;
        let owned = path.to_string();
        Ok(FileStream {
            size,
            body: body.map_err(move |e| e.into_provider(&owned)).boxed(),
        })
    }

    async fn write_file_stream(
        &self,
        runtime_id: &str,
        path: &str,
        body: ByteStream,
        mode: Option<&str>,
    ) -> Result<u64, ProviderError> {
        if !self.file_stream {
            return stacyvm_provider::write_buffered(self, runtime_id, path, body, mode).await;
        }
        let call = RpcCall::FileWriteStream(FileUploadParams {
            target: self.target(runtime_id),
            path: path.to_string(),
            mode: mode.unwrap_or_default().to_string(),
        });
        let rpc = self.request(call, None);
        // The caller's body error is kept aside: reqwest only reports that the upload failed.
        let failure: Arc<Mutex<Option<ProviderError>>> = Arc::default();
        let slot = failure.clone();
        let body = body.map_err(move |e| {
            let msg = e.to_string();
            *slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(e);
            std::io::Error::other(msg)
        });
        let res = self
            .client
            .file_write_stream(&self.endpoint, &rpc, body)
            .await;
        if let Some(e) = failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            return Err(e);
        }
        let r: Option<proto::FileWriteResult> = res
            .map_err(|e| e.into_provider(path))?
            .map(serde_json::from_value)
            .transpose()
            .map_err(|_| RemoteError::Decode.into_provider(path))?;
        Ok(r.map(|r| r.size).unwrap_or_default())
    }

    async fn list_files(
        &self,
        runtime_id: &str,
        path: &str,
    ) -> Result<Vec<FileInfo>, ProviderError> {
        let call = RpcCall::FileList(self.path(runtime_id, path));
        let r: Option<proto::FileListResult> = self.call(call, None, QUICK, path).await?;
        Ok(r.map(|r| r.files).unwrap_or_default())
    }

    async fn stat_file(&self, runtime_id: &str, path: &str) -> Result<FileInfo, ProviderError> {
        let call = RpcCall::FileStat(self.path(runtime_id, path));
        let r: proto::FileStatResult = self.call_for(call, QUICK, path).await?;
        Ok(r.file)
    }

    async fn glob(&self, runtime_id: &str, pattern: &str) -> Result<Vec<String>, ProviderError> {
        let call = RpcCall::FileGlob(FileGlobParams {
            target: self.target(runtime_id),
            pattern: pattern.to_string(),
        });
        let r: Option<proto::FileGlobResult> = self.call(call, None, QUICK, pattern).await?;
        Ok(r.map(|r| r.matches).unwrap_or_default())
    }

    async fn delete_file(
        &self,
        runtime_id: &str,
        path: &str,
        recursive: bool,
    ) -> Result<(), ProviderError> {
        let call = RpcCall::FileDelete(FileDeleteParams {
            target: self.target(runtime_id),
            path: path.to_string(),
            recursive,
        });
        self.call_void(call, SLOW, path).await
    }

    async fn move_file(&self, runtime_id: &str, old: &str, new: &str) -> Result<(), ProviderError> {
        let call = RpcCall::FileMove(FileMoveParams {
            target: self.target(runtime_id),
            old_path: old.to_string(),
            new_path: new.to_string(),
        });
        self.call_void(call, SLOW, old).await
    }

    async fn chmod(&self, runtime_id: &str, path: &str, mode: &str) -> Result<(), ProviderError> {
        let call = RpcCall::FileChmod(FileChmodParams {
            target: self.target(runtime_id),
            path: path.to_string(),
            mode: mode.to_string(),
        });
        self.call_void(call, QUICK, path).await
    }

    /// One streamed RPC: the worker answers once its sandbox's agent has the watch in place, and
    /// dropping the stream closes the connection, which ends the watch there.
    async fn watch_dir(
        &self,
        runtime_id: &str,
        path: &str,
        recursive: bool,
    ) -> Result<WatchStream, ProviderError> {
        if !self.watch {
            return Err(ProviderError::NotSupported(format!(
                "worker {} predates directory watches; upgrade it",
                self.endpoint.worker_id
            )));
        }
        let call = RpcCall::WatchDir(proto::WatchDirParams {
            target: self.target(runtime_id),
            path: path.to_string(),
            recursive,
        });
        let rpc = self.request(call, None);
        let events = self
            .client
            .watch_dir(&self.endpoint, &rpc)
            .await
            .map_err(|e| e.into_provider(path))?;
        let given = path.to_string();
        Ok(events.map_err(move |e| e.into_provider(&given)).boxed())
    }

    async fn logs(&self, runtime_id: &str, lines: usize) -> Result<Vec<String>, ProviderError> {
        let call = RpcCall::Logs(LogsParams {
            target: self.target(runtime_id),
            lines: i64::try_from(lines).unwrap_or(i64::MAX),
        });
        let r: Option<proto::LogsResult> = self.call(call, None, QUICK, "").await?;
        Ok(r.map(|r| r.lines).unwrap_or_default())
    }

    async fn process_start(
        &self,
        runtime_id: &str,
        spec: ProcessSpec,
    ) -> Result<ProcessInfo, ProviderError> {
        let call = self.start_call(runtime_id, spec, false)?;
        let r: proto::ProcessResult = self.call_for(call, SLOW, "").await?;
        Ok(r.process)
    }

    /// One RPC: the worker starts the process and streams its records in the same answer.
    async fn process_start_follow(
        &self,
        runtime_id: &str,
        spec: ProcessSpec,
    ) -> Result<(ProcessInfo, RecordStream), ProviderError> {
        let rpc = self.request(self.start_call(runtime_id, spec, true)?, None);
        let (first, records) = self
            .client
            .process_start_follow(&self.endpoint, &rpc)
            .await
            .map_err(|e| e.into_provider(""))?;
        let r: proto::ProcessResult = serde_json::from_value(first)
            .map_err(|_| ProviderError::internal("worker answered an unreadable process"))?;
        let records = match records {
            Some(records) => records.map_err(|e| e.into_provider("")).boxed(),
            // A worker from before the one-call start: read separately.
            None => {
                self.process_output(runtime_id, r.process.pid, 0, true)
                    .await?
            }
        };
        Ok((r.process, records))
    }

    async fn process_list(&self, runtime_id: &str) -> Result<Vec<ProcessInfo>, ProviderError> {
        let call = RpcCall::ProcessList(self.target(runtime_id));
        let r: Option<proto::ProcessListResult> = self.call(call, None, QUICK, "").await?;
        Ok(r.map(|r| r.processes).unwrap_or_default())
    }

    async fn process_get(&self, runtime_id: &str, pid: Pid) -> Result<ProcessInfo, ProviderError> {
        let call = RpcCall::ProcessGet(proto::ProcessParams {
            target: self.target(runtime_id),
            pid,
        });
        let r: proto::ProcessResult = self.call_for(call, QUICK, "").await?;
        Ok(r.process)
    }

    async fn process_output(
        &self,
        runtime_id: &str,
        pid: Pid,
        since: u64,
        follow: bool,
    ) -> Result<RecordStream, ProviderError> {
        let call = RpcCall::ProcessOutput(proto::ProcessOutputParams {
            target: self.target(runtime_id),
            pid,
            since,
            follow,
        });
        let rpc = self.request(call, None);
        let records = self
            .client
            .process_output(&self.endpoint, &rpc)
            .await
            .map_err(|e| e.into_provider(""))?;
        Ok(records.map_err(|e| e.into_provider("")).boxed())
    }

    async fn process_stdin(
        &self,
        runtime_id: &str,
        pid: Pid,
        data: Bytes,
        close: bool,
    ) -> Result<u64, ProviderError> {
        let call = RpcCall::ProcessStdin(proto::ProcessStdinParams {
            target: self.target(runtime_id),
            pid,
            data: data.to_vec(),
            close,
        });
        let r: proto::ProcessStdinResult = self.call_for(call, SLOW, "").await?;
        Ok(r.written)
    }

    async fn process_signal(
        &self,
        runtime_id: &str,
        pid: Pid,
        signal: Signal,
    ) -> Result<ProcessInfo, ProviderError> {
        let call = RpcCall::ProcessSignal(proto::ProcessSignalParams {
            target: self.target(runtime_id),
            pid,
            signal,
        });
        let r: proto::ProcessResult = self.call_for(call, QUICK, "").await?;
        Ok(r.process)
    }

    async fn process_resize(
        &self,
        runtime_id: &str,
        pid: Pid,
        size: PtySize,
    ) -> Result<(), ProviderError> {
        let call = RpcCall::ProcessResize(proto::ProcessResizeParams {
            target: self.target(runtime_id),
            pid,
            cols: size.cols,
            rows: size.rows,
        });
        self.call_void(call, QUICK, "").await
    }
}
