//! `worker.volume_*` and `worker.snapshot*` (capability `state`, docs/state.md): the volumes and
//! snapshots this worker's providers hold. The control plane records each with this worker's
//! id before (volumes) or after (snapshots) the call, in the order that never leaves a record
//! pointing at nothing; these methods only run the provider.

use std::sync::Arc;
use std::time::Duration;

use stacyvm_protocol::{
    ProviderParams, RpcFailure, SnapshotParams, SnapshotRefParams, SnapshotResult,
    SnapshotSweepParams, SweepResult, VolumeListResult, VolumeParams,
};
use stacyvm_provider::{Provider, ProviderError};

use crate::error::{failed_for, provider_failure};
use crate::rpc::Reply;
use crate::state::WorkerState;

/// The named provider (the worker's default when blank); `subject` names the call in errors.
fn provider(
    state: &WorkerState,
    name: &str,
    subject: &str,
) -> Result<Arc<dyn Provider>, RpcFailure> {
    state.inner.providers.get(name).map_err(failed_for(subject))
}

pub(crate) async fn volume_create(
    state: &WorkerState,
    p: VolumeParams,
) -> Result<Reply, RpcFailure> {
    let prov = provider(state, &p.provider, &p.name)?;
    prov.create_volume(&p.name, p.size_mb)
        .await
        .map_err(failed_for(&p.name))?;
    tracing::info!(volume = %p.name, provider = prov.name(), "volume created");
    Reply::void()
}

pub(crate) async fn volume_delete(
    state: &WorkerState,
    p: VolumeParams,
) -> Result<Reply, RpcFailure> {
    let prov = provider(state, &p.provider, &p.name)?;
    prov.delete_volume(&p.name)
        .await
        .map_err(failed_for(&p.name))?;
    tracing::info!(volume = %p.name, provider = prov.name(), "volume deleted");
    Reply::void()
}

pub(crate) async fn volume_list(
    state: &WorkerState,
    p: ProviderParams,
) -> Result<Reply, RpcFailure> {
    let prov = provider(state, &p.provider, "volumes")?;
    let names = prov.list_volumes().await.map_err(failed_for("volumes"))?;
    Reply::json(VolumeListResult { names })
}

pub(crate) async fn snapshot(state: &WorkerState, p: SnapshotParams) -> Result<Reply, RpcFailure> {
    let prov = crate::methods::provider_for(state, &p.target)?;
    let made = prov
        .snapshot(p.target.runtime(), &p.snapshot_id)
        .await
        .map_err(failed_for(&p.target.sandbox_id))?;
    tracing::info!(sandbox_id = %p.target.sandbox_id, snapshot = %p.snapshot_id, "snapshot made");
    Reply::json(SnapshotResult {
        kind: made.kind.to_string(),
        size_bytes: made.size_bytes,
    })
}

pub(crate) async fn snapshot_delete(
    state: &WorkerState,
    p: SnapshotRefParams,
) -> Result<Reply, RpcFailure> {
    let prov = provider(state, &p.provider, &p.snapshot_id)?;
    match prov.delete_snapshot(&p.snapshot_id).await {
        Ok(()) | Err(ProviderError::SandboxNotFound(_)) => {}
        Err(e) => return Err(provider_failure(e, &p.snapshot_id)),
    }
    tracing::info!(snapshot = %p.snapshot_id, "snapshot deleted");
    Reply::void()
}

pub(crate) async fn snapshot_sweep(
    state: &WorkerState,
    p: SnapshotSweepParams,
) -> Result<Reply, RpcFailure> {
    let prov = provider(state, &p.provider, "snapshots")?;
    let known = p.known.into_iter().collect();
    let removed = prov
        .sweep_snapshots(&known, Duration::from_millis(p.grace_ms))
        .await
        .map_err(failed_for("snapshots"))?;
    for s in &removed {
        tracing::info!(snapshot = %s, "removed a snapshot no record names");
    }
    Reply::json(SweepResult { removed })
}
