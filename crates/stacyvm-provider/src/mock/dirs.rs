//! The provider's own directories beside its sandboxes (volumes, snapshots), and spawns that
//! fill a new root from them.

use std::path::PathBuf;
use std::sync::OnceLock;

use tempfile::TempDir;

use super::{snapshots, volumes, MockProvider};
use crate::{Provider, ProviderError, SandboxSpec, SnapshotMade, Spawned, VolumeMountSpec};

impl MockProvider {
    /// The host pid of a sandbox's process agent, if one is running (for tests).
    pub fn agent_pid(&self, runtime_id: &str) -> Option<u32> {
        super::lock(&self.sandboxes)
            .get(runtime_id)?
            .agent
            .as_ref()?
            .pid()
    }

    /// The host directory of a live sandbox (for tests; never put it in an error).
    pub fn host_root(&self, runtime_id: &str) -> Option<PathBuf> {
        self.live(runtime_id).ok().map(|(root, _)| root)
    }

    /// The canonical volumes directory (made on first use).
    pub(super) fn volumes_dir(&self) -> Result<PathBuf, ProviderError> {
        self.own_dir(&self.volumes_dir, "volumes")
    }

    /// The canonical snapshots directory (made on first use).
    pub(super) fn snapshots_dir(&self) -> Result<PathBuf, ProviderError> {
        self.own_dir(&self.snapshots_dir, "snapshots")
    }

    /// `<base>/<what>` when persistent, else a directory of this provider's own under the
    /// base, removed with it; canonical, made on first use.
    fn own_dir(
        &self,
        cell: &OnceLock<(Option<TempDir>, PathBuf)>,
        what: &str,
    ) -> Result<PathBuf, ProviderError> {
        if let Some((_, p)) = cell.get() {
            return Ok(p.clone());
        }
        let fail = |e| ProviderError::internal_with("creating a provider directory failed", e);
        std::fs::create_dir_all(&self.base_dir).map_err(fail)?;
        let made = if self.persistent {
            let p = self.base_dir.join(what);
            std::fs::create_dir_all(&p).map_err(fail)?;
            (None, p.canonicalize().map_err(fail)?)
        } else {
            let d = tempfile::Builder::new()
                .prefix(&format!("stacyvm-{what}-"))
                .tempdir_in(&self.base_dir)
                .map_err(fail)?;
            let p = d.path().canonicalize().map_err(fail)?;
            (Some(d), p)
        };
        // A racing first call may have won; its directory is the one kept.
        Ok(cell.get_or_init(|| made).1.clone())
    }

    /// Spawns, then fills the new root: the snapshot's files first, then the volume links.
    pub(super) async fn spawn_mounted(
        &self,
        spec: &SandboxSpec,
        mounts: &[VolumeMountSpec],
        snapshot: Option<&str>,
    ) -> Result<Spawned, ProviderError> {
        let spawned = self.spawn(spec).await?;
        if mounts.is_empty() && snapshot.is_none() {
            return Ok(spawned);
        }
        // The root is made now (not on first use) so its contents are there from the start.
        let filled = (|| {
            let (root, _) = self.live(&spec.id)?;
            if let Some(id) = snapshot {
                snapshots::restore(&self.snapshots_dir()?, id, &root)?;
            }
            if mounts.is_empty() {
                return Ok(());
            }
            volumes::attach(&root, &self.volumes_dir()?, mounts)
        })();
        if let Err(e) = filled {
            let _ = self.destroy(&spec.id).await;
            return Err(e);
        }
        Ok(spawned)
    }

    pub(super) async fn take_snapshot(
        &self,
        runtime_id: &str,
        snapshot_id: &str,
    ) -> Result<SnapshotMade, ProviderError> {
        let snaps = self.snapshots_dir()?;
        let id = snapshot_id.to_string();
        let size = self
            .on_root("snapshot", runtime_id, move |root| {
                snapshots::take(root, &snaps, &id)
            })
            .await?;
        Ok(SnapshotMade {
            kind: "filesystem",
            size_bytes: size,
        })
    }
}
