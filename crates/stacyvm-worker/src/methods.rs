//! The RPC methods (wire-reference §9.3). Calls arrive decoded and validated
//! (`RpcEnvelope::decode`); each method checks the lease where one is needed, calls the
//! provider and encodes the result. Provider failures become answers through
//! `ProviderError::to_wire`.

use std::sync::Arc;

use stacyvm_protocol::{
    ErrorCode, LeaseToken, LogsParams, LogsResult, RenewLeaseParams, RenewLeaseResult, RpcCall,
    RpcFailure, RpcRequest, SpawnParams, SpawnResult, StatusResult, Target, ENVELOPE_HEADER,
};
use stacyvm_provider::{Provider, ProviderError, SandboxSpec, VolumeMountSpec};
use stacyvm_types::SandboxState;

use crate::error::{draining, failed_for, lease_rejected, provider_failure};
use crate::lease::Held;
use crate::rpc::Reply;
use crate::state::WorkerState;
use crate::{files, files_stream, processes, state_rpc, stream, watch};

/// Default and ceiling for `worker.logs` `lines` (the control plane's own bounds).
const DEFAULT_LOG_LINES: usize = 100;
const MAX_LOG_LINES: usize = 100_000;

/// One arm per method.
pub(crate) async fn dispatch(
    state: &WorkerState,
    req: RpcRequest,
    wants_ndjson: bool,
) -> Result<Reply, RpcFailure> {
    let lease = req.lease.as_ref();
    match req.call {
        RpcCall::Spawn(p) => spawn(state, p, lease).await,
        RpcCall::Destroy(t) => destroy(state, t, lease).await,
        RpcCall::Status(t) => status(state, t).await,
        RpcCall::Exec(p) => stream::exec(state, p).await,
        RpcCall::ExecStream(p) => stream::exec_stream(state, &req.id, p, wants_ndjson).await,
        RpcCall::FileWrite(p) => files::write(state, p).await,
        RpcCall::FileRead(p) => files::read(state, p).await,
        RpcCall::FileList(p) => files::list(state, p).await,
        RpcCall::FileDelete(p) => files::delete(state, p).await,
        RpcCall::FileMove(p) => files::move_file(state, p).await,
        RpcCall::FileChmod(p) => files::chmod(state, p).await,
        RpcCall::FileStat(p) => files::stat(state, p).await,
        RpcCall::FileGlob(p) => files::glob(state, p).await,
        RpcCall::FileReadStream(p) => files_stream::read(state, p).await,
        // Its content is the request body, so its envelope must come in the header.
        RpcCall::FileWriteStream(_) => Err(RpcFailure::bad_request(format!(
            "{} takes its envelope in the {ENVELOPE_HEADER} header",
            stacyvm_protocol::method::FILE_WRITE_STREAM,
        ))),
        RpcCall::Logs(p) => logs(state, p).await,
        RpcCall::ProcessStart(p) => processes::start(state, &req.id, p).await,
        RpcCall::ProcessList(t) => processes::list(state, t).await,
        RpcCall::ProcessGet(p) => processes::get(state, p).await,
        RpcCall::ProcessOutput(p) => processes::output(state, &req.id, p).await,
        RpcCall::ProcessStdin(p) => processes::stdin(state, p).await,
        RpcCall::ProcessSignal(p) => processes::signal(state, p).await,
        RpcCall::ProcessResize(p) => processes::resize(state, p).await,
        RpcCall::Pause(t) => freeze(state, t, true).await,
        RpcCall::Resume(t) => freeze(state, t, false).await,
        RpcCall::WatchDir(p) => watch::watch_dir(state, &req.id, p).await,
        RpcCall::VolumeCreate(p) => state_rpc::volume_create(state, p).await,
        RpcCall::VolumeDelete(p) => state_rpc::volume_delete(state, p).await,
        RpcCall::VolumeList(p) => state_rpc::volume_list(state, p).await,
        RpcCall::Snapshot(p) => state_rpc::snapshot(state, p).await,
        RpcCall::SnapshotDelete(p) => state_rpc::snapshot_delete(state, p).await,
        RpcCall::SnapshotSweep(p) => state_rpc::snapshot_sweep(state, p).await,
        RpcCall::RenewLease(p) => renew_lease(state, p, lease).await,
        RpcCall::Shutdown => {
            state.inner.drain.start();
            Reply::void()
        }
        RpcCall::Heartbeat(_) => Err(RpcFailure::new(
            501,
            None,
            "worker RPC method is not implemented by this worker runtime",
        )),
    }
}

/// The provider named by `target` (the worker's default when blank).
pub(crate) fn provider_for(
    state: &WorkerState,
    target: &Target,
) -> Result<Arc<dyn Provider>, RpcFailure> {
    state
        .inner
        .providers
        .get(&target.provider)
        .map_err(failed_for(&target.sandbox_id))
}

/// Checks the call's lease against `resource`; decoding made sure lease methods carry one.
fn admit(
    state: &WorkerState,
    lease: Option<&LeaseToken>,
    resource: &str,
) -> Result<(), RpcFailure> {
    let Some(lease) = lease else {
        return Err(RpcFailure::bad_request("lease is required"));
    };
    state
        .inner
        .leases
        .admit(&state.inner.id, lease, resource)
        .map_err(|e| {
            tracing::info!(resource, error = %e, "lease rejected");
            lease_rejected(&e)
        })
}

async fn spawn(
    state: &WorkerState,
    p: SpawnParams,
    lease: Option<&LeaseToken>,
) -> Result<Reply, RpcFailure> {
    if state.inner.drain.is_draining() {
        return Err(draining());
    }
    admit(state, lease, &p.sandbox_id)?;
    let target = Target {
        sandbox_id: p.sandbox_id.clone(),
        provider: p.provider.clone(),
        runtime_id: String::new(),
    };
    let provider = provider_for(state, &target)?;
    let spec = SandboxSpec {
        id: p.sandbox_id.to_string(),
        image: p.image,
        memory_mb: p.memory_mb,
        vcpus: p.vcpus,
        owner_id: p.owner_id,
        metadata: p.metadata.clone(),
    };
    let mounts: Vec<VolumeMountSpec> = p
        .volumes
        .iter()
        .map(|v| VolumeMountSpec {
            volume: v.name.clone(),
            mount_path: v.mount_path.clone(),
            read_only: v.read_only,
        })
        .collect();
    let spawned = if p.snapshot.is_empty() {
        provider.spawn_with_volumes(&spec, &mounts).await
    } else {
        provider
            .spawn_from_snapshot(&spec, &mounts, &p.snapshot)
            .await
    }
    .map_err(failed_for(&p.sandbox_id))?;
    state.inner.leases.hold(
        &p.sandbox_id,
        Held {
            provider: provider.name().to_string(),
            runtime_id: spawned.runtime_id.clone(),
        },
    );
    tracing::info!(sandbox_id = %p.sandbox_id, runtime_id = %spawned.runtime_id, provider = provider.name(), "sandbox spawned");
    Reply::json(SpawnResult {
        sandbox_id: p.sandbox_id.into_string(),
        runtime_id: spawned.runtime_id,
        state: SandboxState::Running.as_str().into(),
        provider: provider.name().to_string(),
        worker_id: state.inner.id.clone(),
        metadata: p.metadata,
    })
}

async fn destroy(
    state: &WorkerState,
    t: Target,
    lease: Option<&LeaseToken>,
) -> Result<Reply, RpcFailure> {
    admit(state, lease, &t.sandbox_id)?;
    let provider = provider_for(state, &t)?;
    match provider.destroy(t.runtime()).await {
        // Already gone: destroy is idempotent.
        Ok(()) | Err(ProviderError::SandboxNotFound(_)) => {}
        Err(e) => return Err(provider_failure(e, &t.sandbox_id)),
    }
    state.inner.leases.release(&t.sandbox_id);
    tracing::info!(sandbox_id = %t.sandbox_id, "sandbox destroyed");
    Reply::void()
}

async fn status(state: &WorkerState, t: Target) -> Result<Reply, RpcFailure> {
    let provider = provider_for(state, &t)?;
    let st = provider
        .status(t.runtime())
        .await
        .map_err(failed_for(&t.sandbox_id))?;
    Reply::json(StatusResult {
        sandbox_id: t.sandbox_id.into_string(),
        state: st.as_str().into(),
        provider: provider.name().to_string(),
        worker_id: state.inner.id.clone(),
        error: String::new(),
    })
}

/// `worker.pause` (`freeze`) and `worker.resume`: the provider's pause or resume, no result.
async fn freeze(state: &WorkerState, t: Target, freeze: bool) -> Result<Reply, RpcFailure> {
    let provider = provider_for(state, &t)?;
    let done = if freeze {
        provider.pause(t.runtime()).await
    } else {
        provider.resume(t.runtime()).await
    };
    done.map_err(failed_for(&t.sandbox_id))?;
    tracing::info!(sandbox_id = %t.sandbox_id, paused = freeze, "sandbox pause state changed");
    Reply::void()
}

async fn logs(state: &WorkerState, p: LogsParams) -> Result<Reply, RpcFailure> {
    let provider = provider_for(state, &p.target)?;
    let lines = usize::try_from(p.lines)
        .ok()
        .filter(|n| *n > 0)
        .unwrap_or(DEFAULT_LOG_LINES)
        .min(MAX_LOG_LINES);
    let out = provider
        .logs(p.target.runtime(), lines)
        .await
        .map_err(failed_for(&p.target.sandbox_id))?;
    Reply::json(LogsResult {
        sandbox_id: p.target.sandbox_id.into_string(),
        lines: out,
    })
}

async fn renew_lease(
    state: &WorkerState,
    p: RenewLeaseParams,
    lease: Option<&LeaseToken>,
) -> Result<Reply, RpcFailure> {
    admit(state, lease, &p.resource_id)?;
    let lease = state
        .inner
        .cp
        .renew_lease(&p.resource_id, &p.ttl.to_string())
        .await
        .map_err(|e| match e.status() {
            Some(_) => RpcFailure::new(
                409,
                Some(ErrorCode::LeaseRejected),
                format!("lease renewal refused: {e}"),
            ),
            None => RpcFailure::new(
                503,
                Some(ErrorCode::Unavailable),
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
        return Err(lease_rejected(&e));
    }
    Reply::json(RenewLeaseResult { lease })
}
