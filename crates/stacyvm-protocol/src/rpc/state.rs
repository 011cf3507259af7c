//! Volumes and snapshots on a worker (docs/state.md): each lives with the worker that made it,
//! and the control plane's records name that worker. `worker.spawn` mounts volumes and starts
//! from snapshots through [`super::SpawnParams`]'s `volumes` and `snapshot`.

use serde::{Deserialize, Serialize};

use super::messages::Target;

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

/// One volume a spawn mounts (the control plane checked name, path and sharing).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct VolumeMount {
    pub name: String,
    pub mount_path: String,
    #[serde(default, skip_serializing_if = "is_false")]
    pub read_only: bool,
}

/// `worker.volume_create` and `worker.volume_delete` (which ignores `size_mb`). No result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct VolumeParams {
    /// The worker's provider; blank = its default.
    #[serde(default)]
    pub provider: String,
    pub name: String,
    /// 0 = the backend's default.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub size_mb: i64,
}

/// `worker.volume_list`: the volumes of this installation the provider holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ProviderParams {
    #[serde(default)]
    pub provider: String,
}

/// Result of `worker.volume_list`; `names` is absent for a provider that keeps no volumes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct VolumeListResult {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub names: Option<Vec<String>>,
}

/// `worker.snapshot`: snapshot the target runtime as `snapshot_id`. Result: [`SnapshotResult`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotParams {
    #[serde(flatten)]
    pub target: Target,
    pub snapshot_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct SnapshotResult {
    /// `filesystem` or `memory`.
    pub kind: String,
    #[serde(default)]
    pub size_bytes: u64,
}

/// `worker.snapshot_delete`; deleting one that is gone succeeds. No result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct SnapshotRefParams {
    #[serde(default)]
    pub provider: String,
    pub snapshot_id: String,
}

/// `worker.snapshot_sweep`: remove what the provider holds of snapshots not in `known` and
/// older than `grace_ms` (a crash between making one and recording it). Result:
/// [`SweepResult`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct SnapshotSweepParams {
    #[serde(default)]
    pub provider: String,
    #[serde(default)]
    pub known: Vec<String>,
    pub grace_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct SweepResult {
    #[serde(default)]
    pub removed: Vec<String>,
}
