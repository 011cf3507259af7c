//! Spawns with volumes or from a snapshot, and the volumes and snapshots a worker holds
//! (`worker.volume_*`, `worker.snapshot*`, docs/state.md). Only workers with the `state`
//! capability take them; for others these answer `NotSupported` before any RPC (an older worker
//! would ignore the spawn's fields, or refuse the method as unknown).

use std::collections::HashSet;
use std::time::Duration;

use serde_json::Value;
use stacyvm_protocol::{self as proto, RpcCall, RpcRequest};
use stacyvm_provider::{ProviderError, SandboxSpec, SnapshotMade, Spawned, VolumeMountSpec};

use super::provider::{lease_token, QUICK, SLOW};
use super::RemoteProvider;

impl RemoteProvider {
    fn check_state(&self) -> Result<(), ProviderError> {
        if self.state {
            return Ok(());
        }
        Err(ProviderError::NotSupported(format!(
            "worker {} is too old to hold volumes or snapshots; upgrade it",
            self.endpoint.worker_id
        )))
    }

    /// A call about a volume or snapshot (`subject` names it in the request id).
    async fn state_call<R: serde::de::DeserializeOwned>(
        &self,
        call: RpcCall,
        subject: &str,
        timeout: Duration,
    ) -> Result<Option<R>, ProviderError> {
        self.check_state()?;
        let req = RpcRequest::new(call, self.endpoint.worker_id.clone(), subject, None);
        let res = self
            .client
            .call(&self.endpoint, &req, Some(timeout))
            .await
            .map_err(|e| e.into_provider(""))?;
        match res {
            None => Ok(None),
            Some(v) => serde_json::from_value(v)
                .map(Some)
                .map_err(|_| super::RemoteError::Decode.into_provider("")),
        }
    }

    /// `worker.spawn`, with volumes and a snapshot when asked (capability `state`).
    pub(super) async fn spawn_call(
        &self,
        spec: &SandboxSpec,
        mounts: &[VolumeMountSpec],
        snapshot: &str,
    ) -> Result<Spawned, ProviderError> {
        if !mounts.is_empty() || !snapshot.is_empty() {
            self.check_state()?;
        }
        let lease = self.acquire().await?;
        let call = RpcCall::Spawn(proto::SpawnParams {
            sandbox_id: self.sandbox_id.clone(),
            image: spec.image.clone(),
            provider: self.provider.clone(),
            memory_mb: spec.memory_mb,
            vcpus: spec.vcpus,
            owner_id: spec.owner_id.clone(),
            ttl: self.ttl,
            metadata: spec.metadata.clone(),
            volumes: mounts
                .iter()
                .map(|m| proto::VolumeMount {
                    name: m.volume.clone(),
                    mount_path: m.mount_path.clone(),
                    read_only: m.read_only,
                })
                .collect(),
            snapshot: snapshot.to_string(),
        });
        let res: Result<Option<proto::SpawnResult>, _> =
            self.call(call, Some(lease_token(&lease)), SLOW, "").await;
        match res {
            Ok(r) => {
                let runtime_id = r
                    .map(|r| r.runtime_id)
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| self.sandbox_id.to_string());
                Ok(Spawned { runtime_id })
            }
            Err(e) => {
                // The worker did not take the sandbox: free the lease for a retry elsewhere.
                let _ = self
                    .store
                    .release_lease(&self.sandbox_id, &self.endpoint.worker_id)
                    .await;
                Err(e)
            }
        }
    }

    pub(super) async fn volume_create(
        &self,
        name: &str,
        size_mb: i64,
    ) -> Result<(), ProviderError> {
        let call = RpcCall::VolumeCreate(proto::VolumeParams {
            provider: self.provider.clone(),
            name: name.to_string(),
            size_mb,
        });
        self.state_call::<Value>(call, name, SLOW).await.map(|_| ())
    }

    pub(super) async fn volume_delete(&self, name: &str) -> Result<(), ProviderError> {
        let call = RpcCall::VolumeDelete(proto::VolumeParams {
            provider: self.provider.clone(),
            name: name.to_string(),
            size_mb: 0,
        });
        self.state_call::<Value>(call, name, SLOW).await.map(|_| ())
    }

    pub(super) async fn volume_list(&self) -> Result<Option<Vec<String>>, ProviderError> {
        let call = RpcCall::VolumeList(proto::ProviderParams {
            provider: self.provider.clone(),
        });
        let r: Option<proto::VolumeListResult> = self
            .state_call(call, self.endpoint.worker_id.as_str(), QUICK)
            .await?;
        Ok(r.and_then(|r| r.names))
    }

    pub(super) async fn snapshot_make(
        &self,
        runtime_id: &str,
        sid: &str,
    ) -> Result<SnapshotMade, ProviderError> {
        let call = RpcCall::Snapshot(proto::SnapshotParams {
            target: self.target(runtime_id),
            snapshot_id: sid.to_string(),
        });
        let r: proto::SnapshotResult = self
            .state_call(call, self.sandbox_id.as_str(), SLOW)
            .await?
            .ok_or_else(|| super::RemoteError::Decode.into_provider(""))?;
        Ok(SnapshotMade {
            // `kind` is `&'static str`: the two the contract knows.
            kind: if r.kind == "memory" {
                "memory"
            } else {
                "filesystem"
            },
            size_bytes: r.size_bytes,
        })
    }

    pub(super) async fn snapshot_delete(&self, sid: &str) -> Result<(), ProviderError> {
        let call = RpcCall::SnapshotDelete(proto::SnapshotRefParams {
            provider: self.provider.clone(),
            snapshot_id: sid.to_string(),
        });
        self.state_call::<Value>(call, sid, SLOW).await.map(|_| ())
    }

    pub(super) async fn snapshot_sweep(
        &self,
        known: &HashSet<String>,
        grace: Duration,
    ) -> Result<Vec<String>, ProviderError> {
        let mut known: Vec<String> = known.iter().cloned().collect();
        known.sort_unstable();
        let call = RpcCall::SnapshotSweep(proto::SnapshotSweepParams {
            provider: self.provider.clone(),
            known,
            grace_ms: u64::try_from(grace.as_millis()).unwrap_or(u64::MAX),
        });
        let r: Option<proto::SweepResult> = self
            .state_call(call, self.endpoint.worker_id.as_str(), SLOW)
            .await?;
        Ok(r.map(|r| r.removed).unwrap_or_default())
    }
}
