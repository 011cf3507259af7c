//! The parts of the OCI image spec (and Docker's equivalents) the store reads and writes.
//! Unknown fields are ignored on purpose: images in the wild carry many we do not need.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::error::ImageError;

pub(crate) const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub(crate) const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub(crate) const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub(crate) const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub(crate) const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub(crate) const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// What the store asks registries for. Schema 1 manifests are deliberately absent (deprecated,
/// unsigned digests).
pub(crate) const ACCEPTED_MANIFESTS: &[&str] =
    &[OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST];

/// Annotation holding an image's tag (or full name) in an OCI layout's `index.json`.
pub(crate) const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// Full image name containerd and Docker 25+ put next to the tag.
pub(crate) const ANNOTATION_IMAGE_NAME: &str = "io.containerd.image.name";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// An image manifest (OCI or Docker schema 2: the same shape).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Manifest {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

/// An OCI index or Docker manifest list.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Index {
    pub manifests: Vec<Descriptor>,
}

/// Either document a manifest digest can point at.
pub(crate) enum ManifestOrIndex {
    Manifest(Manifest),
    Index(Index),
}

impl ManifestOrIndex {
    /// Tells the two apart by `mediaType`, or by shape when it is absent (it is optional in OCI).
    pub(crate) fn parse(bytes: &[u8], what: &str) -> Result<Self, ImageError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Probe {
            schema_version: Option<u32>,
            media_type: Option<String>,
            manifests: Option<serde_json::Value>,
        }
        let bad = |e: serde_json::Error| ImageError::corrupt(what, e.to_string());
        let probe: Probe = serde_json::from_slice(bytes).map_err(bad)?;
        if probe.schema_version != Some(2) {
            return Err(ImageError::unsupported(format!(
                "manifest schema version {:?} in {what}",
                probe.schema_version
            )));
        }
        let is_index = match probe.media_type.as_deref() {
            Some(OCI_INDEX | DOCKER_LIST) => true,
            Some(OCI_MANIFEST | DOCKER_MANIFEST) => false,
            Some(other) => {
                return Err(ImageError::unsupported(format!(
                    "manifest media type {other:?} in {what}"
                )))
            }
            None => probe.manifests.is_some(),
        };
        if is_index {
            Ok(ManifestOrIndex::Index(
                serde_json::from_slice(bytes).map_err(bad)?,
            ))
        } else {
            Ok(ManifestOrIndex::Manifest(
                serde_json::from_slice(bytes).map_err(bad)?,
            ))
        }
    }
}

impl Index {
    /// The linux image for this host's architecture (linux/amd64 on our machines). A lone entry
    /// without a platform (a single-image OCI layout) is the fallback.
    pub(crate) fn pick_host_platform(&self) -> Option<&Descriptor> {
        let is_manifest = |d: &&Descriptor| {
            matches!(
                d.media_type.as_str(),
                OCI_MANIFEST | DOCKER_MANIFEST | OCI_INDEX | DOCKER_LIST
            )
        };
        self.manifests
            .iter()
            .filter(is_manifest)
            .find(|d| {
                d.platform
                    .as_ref()
                    .is_some_and(|p| p.os == "linux" && p.architecture == host_arch())
            })
            .or_else(|| {
                let mut unplatformed = self
                    .manifests
                    .iter()
                    .filter(is_manifest)
                    .filter(|d| d.platform.is_none());
                match (unplatformed.next(), unplatformed.next()) {
                    (Some(only), None) => Some(only),
                    _ => None,
                }
            })
    }
}

/// This machine's architecture in OCI's spelling.
pub(crate) fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// The image config blob: the runtime defaults and the uncompressed layer digests.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct ConfigFile {
    #[serde(default)]
    pub created: Option<String>,
    #[serde(default)]
    pub architecture: Option<String>,
    #[serde(default)]
    pub os: Option<String>,
    #[serde(default)]
    pub config: Option<RuntimeConfig>,
    pub rootfs: RootFsSection,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct RootFsSection {
    pub diff_ids: Vec<Digest>,
}

/// How to start a process from the image: the fields of the image config a provider needs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeConfig {
    /// `KEY=value` entries.
    #[serde(rename = "Env", default, deserialize_with = "null_as_default")]
    pub env: Vec<String>,
    #[serde(rename = "Entrypoint", default, deserialize_with = "null_as_default")]
    pub entrypoint: Vec<String>,
    #[serde(rename = "Cmd", default, deserialize_with = "null_as_default")]
    pub cmd: Vec<String>,
    /// Empty means `/`.
    #[serde(rename = "WorkingDir", default, deserialize_with = "null_as_default")]
    pub working_dir: String,
    /// `user[:group]`, names or ids; empty means root.
    #[serde(rename = "User", default, deserialize_with = "null_as_default")]
    pub user: String,
}

/// Docker writes `null` for empty lists; treat it like a missing field.
fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

impl ConfigFile {
    pub(crate) fn parse(bytes: &[u8], what: &str) -> Result<Self, ImageError> {
        let c: ConfigFile =
            serde_json::from_slice(bytes).map_err(|e| ImageError::corrupt(what, e.to_string()))?;
        if c.os.as_deref().is_some_and(|os| os != "linux") {
            return Err(ImageError::unsupported(format!(
                "image os {:?} in {what}",
                c.os.as_deref().unwrap_or_default()
            )));
        }
        if c.architecture
            .as_deref()
            .is_some_and(|a| !a.is_empty() && a != host_arch())
        {
            return Err(ImageError::unsupported(format!(
                "architecture {:?} of {what} (this host runs {})",
                c.architecture.as_deref().unwrap_or_default(),
                host_arch()
            )));
        }
        Ok(c)
    }
}

/// One entry of a `docker save` archive's `manifest.json`.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct DockerSaveEntry {
    #[serde(rename = "Config")]
    pub config: String,
    #[serde(rename = "RepoTags", default, deserialize_with = "null_as_default")]
    pub repo_tags: Vec<String>,
    #[serde(rename = "Layers")]
    pub layers: Vec<String>,
}

#[cfg(test)]
#[path = "spec_tests.rs"]
mod tests;
