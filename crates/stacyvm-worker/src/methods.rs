//! The RPC methods (wire-reference §9.3): decode params, check the lease where one is needed,
//! call the provider, encode the result. Statuses come from `RpcError::provider`.

use std::sync::Arc;

use axum::http::StatusCode;
use bytes::Bytes;
use stacyvm_protocol::{
    base64, code, method, FileGlobResult, FileListResult, FileParams, FileReadResult,
    FileStatResult, LogsParams, LogsResult, RenewLeaseParams, RenewLeaseResult, RpcRequest,
    SpawnParams, SpawnResult, StatusResult, Target,
};
use stacyvm_provider::{Provider, ProviderError, SandboxSpec};
use stacyvm_types::{parse_go_duration, FileInfo, SandboxState};

use crate::error::RpcError;
use crate::lease::Held;
use crate::rpc::{params, Reply};
use crate::state::WorkerState;
use crate::stream;

/// Default and ceiling for `worker.logs` `lines` (the control plane's own bounds).
const DEFAULT_LOG_LINES: usize = 100;
const MAX_LOG_LINES: usize = 100_000;

pub(crate) async fn dispatch(
    state: &WorkerState,
    req: RpcRequest,
    wants_ndjson: bool,
) -> Result<Reply, RpcError> {
    match req.method.as_str() {
        method::SPAWN => spawn(state, &req).await,
        method::DESTROY => destroy(state, &req).await,
        method::STATUS => status(state, &req).await,
        method::EXEC => stream::exec(state, &req).await,
        method::EXEC_STREAM => stream::exec_stream(state, req, wants_ndjson).await,
        method::FILE_WRITE
        | method::FILE_READ
        | method::FILE_LIST
        | method::FILE_DELETE
        | method::FILE_MOVE
        | method::FILE_CHMOD
        | method::FILE_STAT
        | method::FILE_GLOB => files(state, &req).await,
        method::FILE_READ_STREAM => crate::files_stream::read(state, &req).await,
        // Its content is the request body, so its envelope must come in the header.
        method::FILE_WRITE_STREAM => Err(RpcError::bad_request(format!(
            "{} takes its envelope in the {} header",
            method::FILE_WRITE_STREAM,
            stacyvm_protocol::ENVELOPE_HEADER
        ))),
        method::LOGS => logs(state, &req).await,
        method::RENEW_LEASE => renew_lease(state, &req).await,
        method::SHUTDOWN => {
            state.inner.drain.start();
            Reply::void()
        }
        method::HEARTBEAT => Err(RpcError {
            status: StatusCode::NOT_IMPLEMENTED,
            code: None,
            message: "worker RPC method is not implemented by this worker runtime".into(),
        }),
        other => Err(RpcError::bad_request(format!(
            "unknown worker method: {other}"
        ))),
    }
}

/// The provider named by `target` (the worker's default when blank).
pub(crate) fn provider_for(
    state: &WorkerState,
    target: &Target,
) -> Result<Arc<dyn Provider>, RpcError> {
    if target.sandbox_id.trim().is_empty() {
        return Err(RpcError::bad_request("sandbox_id is required"));
    }
    state
        .inner
        .providers
        .get(&target.provider)
        .map_err(|e| RpcError::provider(e, &target.sandbox_id))
}

/// Checks the request's lease against `resource` (validation already made sure it exists).
fn admit(state: &WorkerState, req: &RpcRequest, resource: &str) -> Result<(), RpcError> {
    let lease = req
        .lease
        .as_ref()
        .ok_or_else(|| RpcError::bad_request(format!("lease is required for {}", req.method)))?;
    state
        .inner
        .leases
        .admit(&state.inner.id, lease, resource)
        .map_err(|e| {
            tracing::info!(resource, error = %e, "lease rejected");
            RpcError::lease(&e)
        })
}

async fn spawn(state: &WorkerState, req: &RpcRequest) -> Result<Reply, RpcError> {
    if state.inner.drain.is_draining() {
        return Err(RpcError::draining());
    }
    let p: SpawnParams = params(req)?;
    if p.sandbox_id.trim().is_empty() {
        return Err(RpcError::bad_request("sandbox_id is required"));
    }
    admit(state, req, &p.sandbox_id)?;
    if !p.ttl.trim().is_empty() {
        let ttl = parse_go_duration(p.ttl.trim())
            .map_err(|e| RpcError::bad_request(format!("invalid input: ttl: {e}")))?;
        if ttl.is_negative() {
            return Err(RpcError::bad_request(
                "invalid input: ttl must not be negative",
            ));
        }
    }
    let target = Target {
        sandbox_id: p.sandbox_id.clone(),
        provider: p.provider.clone(),
        runtime_id: String::new(),
    };
    let provider = provider_for(state, &target)?;
    let spec = SandboxSpec {
        id: p.sandbox_id.clone(),
        image: p.image.clone(),
        memory_mb: p.memory_mb,
        vcpus: p.vcpus,
        owner_id: p.owner_id.clone(),
        metadata: p.metadata.clone(),
    };
    let spawned = provider
        .spawn(&spec)
        .await
        .map_err(|e| RpcError::provider(e, &p.sandbox_id))?;
    state.inner.leases.hold(
        &p.sandbox_id,
        Held {
            provider: provider.name().to_string(),
            runtime_id: spawned.runtime_id.clone(),
        },
    );
    tracing::info!(sandbox_id = %p.sandbox_id, runtime_id = %spawned.runtime_id, provider = provider.name(), "sandbox spawned");
    Reply::json(SpawnResult {
        sandbox_id: p.sandbox_id,
        runtime_id: spawned.runtime_id,
        state: SandboxState::Running.as_str().into(),
        provider: provider.name().to_string(),
        worker_id: state.inner.id.clone(),
        metadata: p.metadata,
    })
}

async fn destroy(state: &WorkerState, req: &RpcRequest) -> Result<Reply, RpcError> {
    let t: Target = params(req)?;
    if t.sandbox_id.trim().is_empty() {
        return Err(RpcError::bad_request("sandbox_id is required"));
    }
    admit(state, req, &t.sandbox_id)?;
    let provider = provider_for(state, &t)?;
    match provider.destroy(t.runtime()).await {
        // Already gone: destroy is idempotent.
        Ok(()) | Err(ProviderError::SandboxNotFound(_)) => {}
        Err(e) => return Err(RpcError::provider(e, &t.sandbox_id)),
    }
    state.inner.leases.release(&t.sandbox_id);
    tracing::info!(sandbox_id = %t.sandbox_id, "sandbox destroyed");
    Reply::void()
}

async fn status(state: &WorkerState, req: &RpcRequest) -> Result<Reply, RpcError> {
    let t: Target = params(req)?;
    let provider = provider_for(state, &t)?;
    let st = provider
        .status(t.runtime())
        .await
        .map_err(|e| RpcError::provider(e, &t.sandbox_id))?;
    Reply::json(StatusResult {
        sandbox_id: t.sandbox_id.clone(),
        state: st.as_str().into(),
        provider: provider.name().to_string(),
        worker_id: state.inner.id.clone(),
        error: String::new(),
    })
}

pub(crate) fn required<'a>(value: &'a str, name: &str) -> Result<&'a str, RpcError> {
    if value.trim().is_empty() {
        Err(RpcError::bad_request(format!(
            "invalid input: {name} is required"
        )))
    } else {
        Ok(value)
    }
}

fn file_info(f: FileInfo) -> stacyvm_protocol::FileInfo {
    stacyvm_protocol::FileInfo {
        path: f.path,
        size: f.size,
        mode: f.mode,
        is_dir: f.is_dir,
        mod_time: f.mod_time,
    }
}

async fn files(state: &WorkerState, req: &RpcRequest) -> Result<Reply, RpcError> {
    let f: FileParams = params(req)?;
    let provider = provider_for(state, &f.target)?;
    let (rt, sb) = (f.target.runtime(), f.target.sandbox_id.as_str());
    let fail = |e| RpcError::provider(e, sb);
    match req.method.as_str() {
        method::FILE_WRITE => {
            let path = required(&f.path, "path")?;
            let content = base64::decode(&f.content).ok_or_else(|| {
                RpcError::bad_request("invalid input: content is not standard base64")
            })?;
            let mode = Some(f.mode.as_str()).filter(|m| !m.trim().is_empty());
            provider
                .write_file(rt, path, Bytes::from(content), mode)
                .await
                .map_err(fail)?;
            Reply::void()
        }
        method::FILE_READ => {
            let data = provider
                .read_file(rt, required(&f.path, "path")?)
                .await
                .map_err(fail)?;
            Reply::json(FileReadResult {
                sandbox_id: sb.to_string(),
                content: base64::encode(&data),
            })
        }
        method::FILE_LIST => {
            let path = if f.path.trim().is_empty() {
                "/"
            } else {
                &f.path
            };
            let files = provider.list_files(rt, path).await.map_err(fail)?;
            Reply::json(FileListResult {
                sandbox_id: sb.to_string(),
                files: files.into_iter().map(file_info).collect(),
            })
        }
        method::FILE_DELETE => {
            provider
                .delete_file(rt, required(&f.path, "path")?, f.recursive)
                .await
                .map_err(fail)?;
            Reply::void()
        }
        method::FILE_MOVE => {
            let old = required(&f.old_path, "old_path")?;
            let new = required(&f.new_path, "new_path")?;
            provider.move_file(rt, old, new).await.map_err(fail)?;
            Reply::void()
        }
        method::FILE_CHMOD => {
            let path = required(&f.path, "path")?;
            let mode = required(&f.mode, "mode")?;
            provider.chmod(rt, path, mode).await.map_err(fail)?;
            Reply::void()
        }
        method::FILE_STAT => {
            let info = provider
                .stat_file(rt, required(&f.path, "path")?)
                .await
                .map_err(fail)?;
            Reply::json(FileStatResult {
                sandbox_id: sb.to_string(),
                file: file_info(info),
            })
        }
        _ => {
            let matches = provider
                .glob(rt, required(&f.pattern, "pattern")?)
                .await
                .map_err(fail)?;
            Reply::json(FileGlobResult {
                sandbox_id: sb.to_string(),
                matches,
            })
        }
    }
}

async fn logs(state: &WorkerState, req: &RpcRequest) -> Result<Reply, RpcError> {
    let p: LogsParams = params(req)?;
    let provider = provider_for(state, &p.target)?;
    let lines = usize::try_from(p.lines)
        .ok()
        .filter(|n| *n > 0)
        .unwrap_or(DEFAULT_LOG_LINES)
        .min(MAX_LOG_LINES);
    let out = provider
        .logs(p.target.runtime(), lines)
        .await
        .map_err(|e| RpcError::provider(e, &p.target.sandbox_id))?;
    Reply::json(LogsResult {
        sandbox_id: p.target.sandbox_id.clone(),
        lines: out,
    })
}

async fn renew_lease(state: &WorkerState, req: &RpcRequest) -> Result<Reply, RpcError> {
    let p: RenewLeaseParams = params(req)?;
    if p.resource_id.trim().is_empty() {
        return Err(RpcError::bad_request("resource_id is required"));
    }
    admit(state, req, &p.resource_id)?;
    let ttl = parse_go_duration(p.ttl.trim())
        .map_err(|e| RpcError::bad_request(format!("invalid input: ttl: {e}")))?;
    if ttl.nanos() <= 0 {
        return Err(RpcError::bad_request("ttl must be a positive duration"));
    }
    let lease = state
        .inner
        .cp
        .renew_lease(&p.resource_id, p.ttl.trim())
        .await
        .map_err(|e| match e.status() {
            Some(_) => RpcError::new(
                StatusCode::CONFLICT,
                code::LEASE_REJECTED,
                format!("lease renewal refused: {e}"),
            ),
            None => RpcError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                code::UNAVAILABLE,
                format!(
                    "lease renewal failed: {}",
                    crate::heartbeat::error_chain(&e)
                ),
            ),
        })?;
    // The renewed generation fences out every older lease from now on.
    if let Err(e) = state
        .inner
        .leases
        .observe(&lease.resource_id, lease.generation)
    {
        return Err(RpcError::lease(&e));
    }
    Reply::json(RenewLeaseResult { lease })
}
