//! Images: making sure one is present (pulling with a deadline) and choosing the command that
//! keeps a sandbox container alive.

use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, RemoveContainerOptionsBuilder,
};
use futures_util::StreamExt;

use super::{api_err, is_status, lock, DockerProvider};
use crate::ProviderError;

/// Sleeps for ~68 years: every `sleep` (GNU, busybox) takes a plain number of seconds.
const FOREVER: &str = "2147483647";

/// Keep-alive candidates, in order: an absolute `sleep`, then `tail -f /dev/null`, each looked
/// up at the usual paths.
const SLEEPS: &[&str] = &["/bin/sleep", "/usr/bin/sleep", "/usr/local/bin/sleep"];
const TAILS: &[&str] = &["/usr/bin/tail", "/bin/tail", "/usr/local/bin/tail"];
const BUSYBOX: &[&str] = &["/bin/busybox", "/usr/bin/busybox"];

impl DockerProvider {
    /// Labels of a probe container: it is never listed as a sandbox (no `stacyvm.managed`),
    /// and carries the cluster so an operator can tell whose it is.
    fn probe_labels(&self) -> std::collections::HashMap<String, String> {
        let mut labels =
            std::collections::HashMap::from([("stacyvm.probe".to_string(), "true".to_string())]);
        if let Some(c) = &self.settings.cluster {
            labels.insert(crate::cluster::CLUSTER_LABEL.to_string(), c.clone());
        }
        labels
    }

    /// Makes `image` available locally, pulling it within the configured deadline.
    pub(super) async fn ensure_image(&self, image: &str) -> Result<(), ProviderError> {
        match self.docker.inspect_image(image).await {
            Ok(_) => return Ok(()),
            Err(e) if is_status(&e, 404) => {}
            Err(e) => return Err(api_err("inspecting the image failed", e)),
        }
        let (name, tag) = split_ref(image);
        let opts = CreateImageOptionsBuilder::default()
            .from_image(name)
            .tag(tag)
            .build();
        let pull = async {
            let mut progress = self.docker.create_image(Some(opts), None, None);
            while let Some(item) = progress.next().await {
                match item {
                    Ok(info) => {
                        if let Some(err) = info.error_detail.and_then(|d| d.message) {
                            return Err(err);
                        }
                    }
                    Err(e) => return Err(e.to_string()),
                }
            }
            Ok(())
        };
        let outcome = tokio::time::timeout(self.settings.pull_timeout, pull).await;
        let why = match outcome {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(why)) => why,
            Err(_) => format!("pull timed out after {:?}", self.settings.pull_timeout),
        };
        tracing::warn!(image, %why, "image pull failed");
        Err(ProviderError::ImageNotFound(format!(
            "{image} is not present on the docker host and could not be pulled ({why})"
        )))
    }

    /// The command that keeps a container of `image` running, found once per image by looking
    /// into a created (never started) probe container.
    pub(super) async fn keepalive(&self, image: &str) -> Result<Vec<String>, ProviderError> {
        if let Some(cmd) = lock(&self.keepalive_cache).get(image) {
            return Ok(cmd.clone());
        }
        let name = format!("stacyvm-probe-{}", random_hex());
        let body = ContainerCreateBody {
            image: Some(image.to_string()),
            entrypoint: Some(Vec::new()),
            cmd: Some(vec!["true".into()]),
            network_disabled: Some(true),
            labels: Some(self.probe_labels()),
            ..Default::default()
        };
        let opts = CreateContainerOptionsBuilder::default().name(&name).build();
        self.docker
            .create_container(Some(opts), body)
            .await
            .map_err(|e| api_err("creating the probe container failed", e))?;
        let found = self.choose_keepalive(&name).await;
        let rm = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        if let Err(e) = self.docker.remove_container(&name, Some(rm)).await {
            tracing::warn!(container = %name, error = %e, "removing the probe container failed");
        }
        let cmd = found?;
        lock(&self.keepalive_cache).insert(image.to_string(), cmd.clone());
        Ok(cmd)
    }

    async fn choose_keepalive(&self, probe: &str) -> Result<Vec<String>, ProviderError> {
        if let Some(p) = self.first_existing(probe, SLEEPS).await? {
            return Ok(vec![p, FOREVER.into()]);
        }
        if let Some(p) = self.first_existing(probe, BUSYBOX).await? {
            return Ok(vec![p, "sleep".into(), FOREVER.into()]);
        }
        if let Some(p) = self.first_existing(probe, TAILS).await? {
            return Ok(vec![p, "-f".into(), "/dev/null".into()]);
        }
        Err(ProviderError::InvalidInput(
            "the image has no sleep, busybox or tail to keep the sandbox running".into(),
        ))
    }

    async fn first_existing(
        &self,
        container: &str,
        paths: &[&str],
    ) -> Result<Option<String>, ProviderError> {
        for p in paths {
            let info = self
                .archive_info(container, p)
                .await
                .map_err(|e| api_err("inspecting the image's files failed", e))?;
            if info.is_some() {
                return Ok(Some((*p).to_string()));
            }
        }
        Ok(None)
    }
}

/// Splits `repo[:tag][@digest]` for the create-image call; the tag defaults to `latest`.
fn split_ref(image: &str) -> (&str, &str) {
    if image.contains('@') {
        return (image, "");
    }
    match image.rsplit_once(':') {
        // A colon before the last `/` belongs to a registry port, not a tag.
        Some((name, tag)) if !tag.contains('/') => (name, tag),
        _ => (image, "latest"),
    }
}

/// 16 random hex digits (exec markers, probe names). Not secret, only unique.
pub(super) fn random_hex() -> String {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u64(SEQ.fetch_add(1, Ordering::Relaxed));
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    format!("{:016x}", h.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_refs() {
        assert_eq!(split_ref("alpine"), ("alpine", "latest"));
        assert_eq!(split_ref("alpine:3.20"), ("alpine", "3.20"));
        assert_eq!(split_ref("reg:5000/a/b"), ("reg:5000/a/b", "latest"));
        assert_eq!(split_ref("reg:5000/a/b:v1"), ("reg:5000/a/b", "v1"));
        assert_eq!(split_ref("a@sha256:abc"), ("a@sha256:abc", ""));
    }

    #[test]
    fn markers_differ() {
        assert_ne!(random_hex(), random_hex());
        assert_eq!(random_hex().len(), 16);
    }
}
