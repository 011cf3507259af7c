//! Volumes as Docker named volumes (`stacyvm-vol-<name>`), labelled like the containers
//! (`stacyvm.managed=true`, `stacyvm.volume=<name>`, `stacyvm.cluster=<id>`), so the provider
//! only ever lists or removes its own. Mounted at spawn; their data stays on the daemon when
//! the container goes (`rm -v` removes anonymous volumes only).

use std::collections::HashMap;

use bollard::models::{Mount, MountType, VolumeCreateRequest};
use bollard::query_parameters::{ListVolumesOptionsBuilder, RemoveVolumeOptionsBuilder};

use super::{api_err, is_status, DockerProvider, LABEL_MANAGED};
use crate::cluster::CLUSTER_LABEL;
use crate::{ProviderError, VolumeMountSpec};

/// The label naming the control plane's volume.
pub(crate) const LABEL_VOLUME: &str = "stacyvm.volume";

/// The Docker name of volume `name`.
pub(crate) fn docker_name(name: &str) -> String {
    format!("stacyvm-vol-{name}")
}

fn valid_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphanumeric())
        && name.len() <= 64
        && bytes.all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

fn check_name(name: &str) -> Result<(), ProviderError> {
    if valid_name(name) {
        Ok(())
    } else {
        Err(ProviderError::InvalidInput(format!(
            "invalid volume name {name:?}"
        )))
    }
}

/// The container mounts of `mounts`.
pub(crate) fn mounts(mounts: &[VolumeMountSpec]) -> Vec<Mount> {
    mounts
        .iter()
        .map(|m| Mount {
            target: Some(m.mount_path.clone()),
            source: Some(docker_name(&m.volume)),
            typ: Some(MountType::VOLUME),
            read_only: Some(m.read_only),
            ..Default::default()
        })
        .collect()
}

impl DockerProvider {
    fn ours(&self, labels: &HashMap<String, String>) -> bool {
        labels.get(LABEL_MANAGED).is_some_and(|v| v == "true") && self.in_cluster(labels)
    }

    pub(super) async fn create_named_volume(
        &self,
        name: &str,
        size_mb: i64,
    ) -> Result<(), ProviderError> {
        check_name(name)?;
        let dname = docker_name(name);
        match self.docker.inspect_volume(&dname).await {
            Ok(v) if self.ours(&v.labels) => return Ok(()),
            Ok(_) => {
                return Err(ProviderError::InvalidInput(format!(
                    "a docker volume {dname} exists and is not this installation's"
                )))
            }
            Err(e) if is_status(&e, 404) => {}
            Err(e) => return Err(api_err("inspecting the volume failed", e)),
        }
        let mut labels = HashMap::from([
            (LABEL_MANAGED.to_string(), "true".to_string()),
            (LABEL_VOLUME.to_string(), name.to_string()),
        ]);
        if let Some(c) = &self.settings.cluster {
            labels.insert(CLUSTER_LABEL.to_string(), c.clone());
        }
        if size_mb > 0 {
            // The local driver cannot cap a volume: the size is recorded, not enforced.
            labels.insert("stacyvm.size_mb".to_string(), size_mb.to_string());
        }
        let req = VolumeCreateRequest {
            name: Some(dname),
            labels: Some(labels),
            ..Default::default()
        };
        self.docker
            .create_volume(req)
            .await
            .map(|_| ())
            .map_err(|e| api_err("creating the volume failed", e))
    }

    pub(super) async fn remove_named_volume(&self, name: &str) -> Result<(), ProviderError> {
        check_name(name)?;
        let dname = docker_name(name);
        match self.docker.inspect_volume(&dname).await {
            Ok(v) if self.ours(&v.labels) => {}
            // Not ours (or gone): nothing of ours to remove.
            Ok(_) => return Ok(()),
            Err(e) if is_status(&e, 404) => return Ok(()),
            Err(e) => return Err(api_err("inspecting the volume failed", e)),
        }
        let opts = RemoveVolumeOptionsBuilder::new().force(false).build();
        match self.docker.remove_volume(&dname, Some(opts)).await {
            Ok(()) => Ok(()),
            Err(e) if is_status(&e, 404) => Ok(()),
            Err(e) => Err(api_err("removing the volume failed", e)),
        }
    }

    /// The daemon's volumes matching the label filter `label` (`key` or `key=value`), as
    /// `containers_labelled` lists containers; `what` is the error's message.
    pub(super) async fn labelled_volumes(
        &self,
        label: String,
        what: &'static str,
    ) -> Result<Vec<bollard::models::Volume>, ProviderError> {
        let filters = HashMap::from([("label", vec![label])]);
        let opts = ListVolumesOptionsBuilder::new().filters(&filters).build();
        let list = self
            .docker
            .list_volumes(Some(opts))
            .await
            .map_err(|e| api_err(what, e))?;
        Ok(list.volumes.unwrap_or_default())
    }

    /// The names (ours, not Docker's) of this installation's volumes.
    pub(super) async fn named_volumes(&self) -> Result<Vec<String>, ProviderError> {
        let mut names: Vec<String> = self
            .labelled_volumes(format!("{LABEL_MANAGED}=true"), "listing volumes failed")
            .await?
            .into_iter()
            .filter(|v| self.ours(&v.labels))
            .filter_map(|v| v.labels.get(LABEL_VOLUME).cloned())
            .collect();
        names.sort();
        Ok(names)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_mounts() {
        assert!(valid_name("data-1.x_y"));
        assert!(!valid_name("-x") && !valid_name("") && !valid_name("a/b"));
        let m = mounts(&[VolumeMountSpec {
            volume: "data".into(),
            mount_path: "/data".into(),
            read_only: true,
        }]);
        assert_eq!(m[0].source.as_deref(), Some("stacyvm-vol-data"));
        assert_eq!(m[0].typ, Some(MountType::VOLUME));
        assert_eq!(m[0].read_only, Some(true));
    }
}
