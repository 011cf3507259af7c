//! Snapshots as images (`kind: filesystem`): `docker commit` of the container, tagged
//! `stacyvm-snap:<sid>` and labelled like the containers (`stacyvm.managed=true`,
//! `stacyvm.snapshot=<sid>`, `stacyvm.cluster`). `/workspace` is an anonymous volume, which a
//! commit leaves out, so its files ride in the image under `/.stacyvm-snapshot/workspace`:
//! the commit is first tagged `stacyvm-snap:tmp-<sid>`, a container made from it (never
//! started) receives the workspace through the archive API, and that container's commit is
//! the snapshot; the temporary tag and container go. So the snapshot's tag exists only once it
//! is complete. A restore spawns from the image and copies the workspace back in.

use std::collections::HashMap;

use bollard::body_full;
use bollard::models::{ContainerConfig, ContainerCreateBody};
use bollard::query_parameters::{
    CommitContainerOptionsBuilder, DownloadFromContainerOptionsBuilder, ListImagesOptionsBuilder,
    RemoveContainerOptionsBuilder, RemoveImageOptionsBuilder,
};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;

use super::container::WORKSPACE;
use super::host_copy::LABEL_WORKSPACE;
use super::{
    api_err, is_status, valid_runtime_id, DockerProvider, LABEL_MANAGED, LABEL_SANDBOX_ID,
};
use crate::cluster::CLUSTER_LABEL;
use crate::{ProviderError, SandboxSpec, SnapshotMade, Spawned, VolumeMountSpec};

pub(super) const REPO: &str = "stacyvm-snap";
/// Where the workspace is kept inside a snapshot image.
const KEPT: &str = "/.stacyvm-snapshot";
pub(crate) const LABEL_SNAPSHOT: &str = "stacyvm.snapshot";
/// On the helper container of a snapshot in the making: the snapshot's id.
const LABEL_HELPER: &str = "stacyvm.snapshot-helper";

/// A container inherits its image's labels and a commit keeps the container's, so these are
/// overridden, never dropped: the helper (made from a commit of the sandbox) must not pass for
/// that sandbox's runtime (`managed`, `sandbox_id`), and the snapshot image must not pass its
/// helper label on to every sandbox spawned from it, or the helper sweep would take those.
fn helper_labels(sid: &str, cluster: Option<&str>) -> HashMap<String, String> {
    let mut labels = HashMap::from([
        (LABEL_HELPER.to_string(), sid.to_string()),
        (LABEL_MANAGED.to_string(), "false".to_string()),
        (LABEL_SANDBOX_ID.to_string(), String::new()),
        ("traefik.enable".to_string(), "false".to_string()),
    ]);
    if let Some(c) = cluster {
        labels.insert(CLUSTER_LABEL.to_string(), c.to_string());
    }
    labels
}

pub(super) fn image_ref(sid: &str) -> String {
    format!("{REPO}:{sid}")
}

fn check_id(sid: &str) -> Result<(), ProviderError> {
    if valid_runtime_id(sid) && sid.len() <= 100 {
        Ok(())
    } else {
        Err(ProviderError::InvalidInput(format!(
            "invalid snapshot id {sid:?}"
        )))
    }
}

/// A tar holding one directory entry `name/`.
fn dir_tar(name: &str) -> std::io::Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(0o755);
    h.set_size(0);
    b.append_data(&mut h, format!("{name}/"), std::io::empty())?;
    b.into_inner()
}

impl DockerProvider {
    /// The whole tar of `path` in a container.
    async fn tar_of(&self, cid: &str, path: &str) -> Result<Bytes, ProviderError> {
        let opts = DownloadFromContainerOptionsBuilder::default()
            .path(path)
            .build();
        let mut body = self.docker.download_from_container(cid, Some(opts));
        let mut out = BytesMut::new();
        while let Some(chunk) = body.next().await {
            out.extend_from_slice(&chunk.map_err(|e| api_err("reading the workspace failed", e))?);
        }
        Ok(out.freeze())
    }

    async fn put_tar(&self, cid: &str, dir: &str, tar: Bytes) -> Result<(), ProviderError> {
        let opts = bollard::query_parameters::UploadToContainerOptionsBuilder::default()
            .path(dir)
            .build();
        self.docker
            .upload_to_container(cid, Some(opts), body_full(tar))
            .await
            .map_err(|e| api_err("copying the workspace failed", e))
    }

    fn snapshot_labels(&self, sid: &str) -> HashMap<String, String> {
        let mut labels = HashMap::from([
            (LABEL_MANAGED.to_string(), "true".to_string()),
            (LABEL_SNAPSHOT.to_string(), sid.to_string()),
            // Blanked, not inherited from the helper (see `helper_labels`).
            (LABEL_HELPER.to_string(), String::new()),
        ]);
        if let Some(c) = &self.settings.cluster {
            labels.insert(CLUSTER_LABEL.to_string(), c.clone());
        }
        labels
    }

    async fn commit(&self, cid: &str, tag: &str, sid: &str) -> Result<(), ProviderError> {
        self.commit_with(cid, tag, sid, &[]).await
    }

    /// [`Self::commit`] with `extra` labels on the image.
    pub(super) async fn commit_with(
        &self,
        cid: &str,
        tag: &str,
        sid: &str,
        extra: &[(&str, &str)],
    ) -> Result<(), ProviderError> {
        let opts = CommitContainerOptionsBuilder::new()
            .container(cid)
            .repo(REPO)
            .tag(tag)
            .pause(true)
            .build();
        let mut labels = self.snapshot_labels(sid);
        labels.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let config = ContainerConfig {
            labels: Some(labels),
            ..Default::default()
        };
        self.docker
            .commit_container(opts, config)
            .await
            .map(|_| ())
            .map_err(|e| api_err("committing the sandbox failed", e))
    }

    pub(super) async fn remove_tag(&self, image: &str) {
        let opts = RemoveImageOptionsBuilder::new().force(true).build();
        match self.docker.remove_image(image, Some(opts), None).await {
            Ok(_) => {}
            Err(e) if is_status(&e, 404) => {}
            Err(e) => tracing::warn!(image, error = %e, "removing a snapshot image failed"),
        }
    }

    /// A never-started container of `image` that moves a snapshot's files through the archive
    /// API, `bind` mounted. Labelled with the snapshot (not as a sandbox: the runtime sweep must
    /// not take it), so a crash leaves nothing the snapshot sweep cannot find.
    async fn create_helper(
        &self,
        image: &str,
        sid: &str,
        bind: Option<String>,
    ) -> Result<String, ProviderError> {
        let body = ContainerCreateBody {
            image: Some(image.to_string()),
            entrypoint: Some(vec!["true".into()]),
            cmd: Some(Vec::new()),
            network_disabled: Some(true),
            labels: Some(helper_labels(sid, self.settings.cluster.as_deref())),
            host_config: bind.map(|b| bollard::models::HostConfig {
                binds: Some(vec![b]),
                ..Default::default()
            }),
            ..Default::default()
        };
        self.docker
            .create_container(
                None::<bollard::query_parameters::CreateContainerOptions>,
                body,
            )
            .await
            .map(|c| c.id)
            .map_err(|e| api_err("preparing a snapshot helper failed", e))
    }

    /// The snapshot image's size (its base image included); 0 if unknown.
    pub(super) async fn image_size(&self, sid: &str) -> u64 {
        self.docker
            .inspect_image(&image_ref(sid))
            .await
            .ok()
            .and_then(|i| i.size)
            .and_then(|s| u64::try_from(s).ok())
            .unwrap_or(0)
    }

    pub(super) async fn take_snapshot(
        &self,
        runtime_id: &str,
        sid: &str,
    ) -> Result<SnapshotMade, ProviderError> {
        check_id(sid)?;
        let cid = self.container(runtime_id).await?;
        if let Some(made) = self.snapshot_on_host(&cid, sid).await? {
            return Ok(made);
        }
        let workspace = self.tar_of(&cid, WORKSPACE).await?;
        let tmp_tag = format!("tmp-{sid}");
        self.commit(&cid, &tmp_tag, sid).await?;
        let tmp_image = format!("{REPO}:{tmp_tag}");
        let mut helper: Option<String> = None;
        let made = async {
            let created = self.create_helper(&tmp_image, sid, None).await?;
            helper = Some(created.clone());
            let dir = dir_tar(KEPT.trim_start_matches('/'))
                .map_err(|e| ProviderError::internal_with("building a tar failed", e))?;
            self.put_tar(&created, "/", Bytes::from(dir)).await?;
            self.put_tar(&created, KEPT, workspace).await?;
            self.commit(&created, sid, sid).await?;
            Ok::<_, ProviderError>(SnapshotMade {
                kind: "filesystem",
                size_bytes: self.image_size(sid).await,
            })
        }
        .await;
        if let Some(h) = helper {
            let rm = RemoveContainerOptionsBuilder::default()
                .force(true)
                .v(true)
                .build();
            if let Err(e) = self.docker.remove_container(&h, Some(rm)).await {
                tracing::warn!(error = %e, "removing the snapshot helper container failed");
            }
        }
        self.remove_tag(&tmp_image).await;
        made
    }

    /// Our snapshot images (label `stacyvm.snapshot`, this cluster's) older than `grace`:
    /// final tags no record names and every leftover `tmp-` tag are removed.
    pub(super) async fn sweep_snapshot_images(
        &self,
        known: &std::collections::HashSet<String>,
        grace: std::time::Duration,
    ) -> Result<Vec<String>, ProviderError> {
        let filters = HashMap::from([("label", vec![LABEL_SNAPSHOT.to_string()])]);
        let opts = ListImagesOptionsBuilder::default()
            .filters(&filters)
            .build();
        let images = self
            .docker
            .list_images(Some(opts))
            .await
            .map_err(|e| api_err("listing snapshot images failed", e))?;
        let now = chrono::Utc::now().timestamp();
        let grace = i64::try_from(grace.as_secs()).unwrap_or(i64::MAX);
        let mut removed = self.sweep_helpers(known, grace).await?;
        removed.extend(self.sweep_workspace_volumes(known, grace).await?);
        for img in images {
            if !self.in_cluster(&img.labels) || now.saturating_sub(img.created) < grace {
                continue;
            }
            let ours_tags: Vec<&String> = img
                .repo_tags
                .iter()
                .filter(|t| t.starts_with(&format!("{REPO}:")))
                .collect();
            for tag in &ours_tags {
                let name = &tag[REPO.len() + 1..];
                // `tmp-` tags are never a record's id: a snapshot that never finished, unless
                // this provider is still making it (`known` then names its tag too).
                if !known.contains(name) {
                    self.remove_tag(tag).await;
                    removed.push(name.to_string());
                }
            }
            // Untagged: a snapshot deleted while sandboxes made from it ran (its tag went, its
            // layers stayed). Once they are gone too, nothing else removes it.
            let sid = img.labels.get(LABEL_SNAPSHOT).cloned().unwrap_or_default();
            if ours_tags.is_empty() && !known.contains(&sid) {
                if let Some(name) = self.remove_unused_image(&img.id, &sid).await {
                    removed.push(name);
                }
            }
        }
        Ok(removed)
    }

    /// Removes an untagged snapshot image unless a container still uses it (409, kept for a
    /// later sweep).
    async fn remove_unused_image(&self, id: &str, sid: &str) -> Option<String> {
        let opts = RemoveImageOptionsBuilder::new().force(false).build();
        match self.docker.remove_image(id, Some(opts), None).await {
            Ok(_) => Some(format!("untagged-{sid}")),
            Err(e) if is_status(&e, 404) || is_status(&e, 409) => None,
            Err(e) => {
                tracing::warn!(image = id, error = %e, "removing an untagged snapshot image failed");
                None
            }
        }
    }

    /// Snapshot helper containers (label `stacyvm.snapshot-helper`) of snapshots `known`
    /// does not name, older than `grace` seconds: left by a crash mid-snapshot.
    async fn sweep_helpers(
        &self,
        known: &std::collections::HashSet<String>,
        grace: i64,
    ) -> Result<Vec<String>, ProviderError> {
        let list = self
            .containers_labelled(LABEL_HELPER.to_string(), "listing snapshot helpers failed")
            .await?;
        let now = chrono::Utc::now().timestamp();
        let mut removed = Vec::new();
        for c in list {
            let labels = c.labels.unwrap_or_default();
            let sid = labels.get(LABEL_HELPER).cloned().unwrap_or_default();
            let ours = self.in_cluster(&labels);
            let old = now.saturating_sub(c.created.unwrap_or(now)) >= grace;
            // A helper is never started and never a sandbox: anything else carrying the label
            // (a sandbox spawned from a snapshot made before the label was blanked) is kept.
            let helper = !sid.is_empty()
                && c.state == Some(bollard::models::ContainerSummaryStateEnum::CREATED)
                && labels.get(LABEL_MANAGED).is_none_or(|v| v != "true");
            let (Some(id), true, true, true, false) =
                (c.id, helper, ours, old, known.contains(&sid))
            else {
                continue;
            };
            let rm = RemoveContainerOptionsBuilder::default()
                .force(true)
                .v(true)
                .build();
            match self.docker.remove_container(&id, Some(rm)).await {
                Ok(()) => removed.push(format!("helper-{sid}")),
                Err(e) if is_status(&e, 404) => {}
                Err(e) => tracing::warn!(error = %e, "removing a snapshot helper failed"),
            }
        }
        Ok(removed)
    }

    pub(super) async fn remove_snapshot(&self, sid: &str) -> Result<(), ProviderError> {
        check_id(sid)?;
        self.remove_workspace_volume(sid).await;
        let image = image_ref(sid);
        match self.docker.inspect_image(&image).await {
            Ok(i) => {
                let labels = i.config.and_then(|c| c.labels).unwrap_or_default();
                if labels.get(LABEL_SNAPSHOT).map(String::as_str) != Some(sid) {
                    return Ok(());
                }
            }
            Err(e) if is_status(&e, 404) => return Ok(()),
            Err(e) => return Err(api_err("inspecting the snapshot failed", e)),
        }
        // Forced: sandboxes made from it keep running (their layers stay while they use them).
        self.remove_tag(&image).await;
        Ok(())
    }

    /// The archive-API way of [`Self::restore_from_volume`]: a never-started container of the
    /// snapshot's image with its workspace volume mounted gives the tar.
    pub(super) async fn restore_volume_by_archive(
        &self,
        cid: &str,
        sid: &str,
        volume: &str,
    ) -> Result<(), ProviderError> {
        const AT: &str = "/.stacyvm-snapws";
        let bind = format!("{volume}:{AT}:ro");
        let helper = self.create_helper(&image_ref(sid), sid, Some(bind)).await?;
        let copied = async {
            let tar = self.tar_of(&helper, &format!("{AT}/.")).await?;
            self.put_tar(cid, WORKSPACE, tar).await
        }
        .await;
        let rm = RemoveContainerOptionsBuilder::default().force(true).build();
        if let Err(e) = self.docker.remove_container(&helper, Some(rm)).await {
            tracing::warn!(error = %e, "removing the restore helper failed");
        }
        copied
    }

    pub(super) async fn spawn_snapshot(
        &self,
        spec: &SandboxSpec,
        mounts: &[VolumeMountSpec],
        sid: &str,
    ) -> Result<Spawned, ProviderError> {
        check_id(sid)?;
        let image = image_ref(sid);
        let in_volume = match self.docker.inspect_image(&image).await {
            Ok(i) => i
                .config
                .and_then(|c| c.labels)
                .is_some_and(|l| l.get(LABEL_WORKSPACE).map(String::as_str) == Some("volume")),
            Err(e) if is_status(&e, 404) => {
                return Err(ProviderError::InvalidInput(format!(
                    "snapshot {sid} is not held by this provider"
                )))
            }
            Err(e) => return Err(api_err("inspecting the snapshot failed", e)),
        };
        let mut from = spec.clone();
        from.image = image;
        let spawned = self.spawn_container(&from, mounts).await?;
        let restored = async {
            let cid = self.container(&spawned.runtime_id).await?;
            if in_volume {
                return self.restore_from_volume(&cid, sid).await;
            }
            // `/.` gives the directory's contents (`./…`), extracted into the workspace volume,
            // which is writable even over a read-only root.
            let tar = self.tar_of(&cid, &format!("{KEPT}/workspace/.")).await?;
            self.put_tar(&cid, WORKSPACE, tar).await
        }
        .await;
        if let Err(e) = restored {
            let _ = self.destroy_container(&spawned.runtime_id).await;
            return Err(e);
        }
        Ok(spawned)
    }
}
