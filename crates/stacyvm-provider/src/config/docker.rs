//! `providers.docker.*` (wire reference §11).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

/// The `providers.docker` section and the settings of `DockerProvider`; `Default` gives §11's
/// defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DockerConfig {
    /// Registers the provider even when it is not `providers.default`; the provider itself
    /// ignores it. `providers.default: auto|docker` selects docker regardless.
    pub enabled: bool,
    /// `unix:///path`, `/path`, `tcp://host:port` or `http://host:port`; empty = `DOCKER_HOST`,
    /// else `/var/run/docker.sock`.
    pub socket: String,
    /// OCI runtime: `runc` (or empty) or `runsc` (gVisor), or any runtime the daemon knows.
    pub runtime: String,
    /// Used when a spawn names no image.
    pub default_image: String,
    /// `bridge`, `none`, or a user-defined network. `host` and `container:*` are refused.
    pub network_mode: String,
    /// `default` (or empty) = Docker's default profile; `unconfined`; else a path to a JSON
    /// profile on the provider's host.
    pub seccomp_profile: String,
    /// Root filesystem read-only; `/tmp` and `/workspace` stay writable.
    pub read_only_rootfs: bool,
    /// Fallback memory limit in Docker syntax (`512m`, `1g`) when a spawn asks for none;
    /// empty = no limit.
    pub memory: String,
    /// Fallback CPU count when a spawn asks for none; 0 = no limit.
    pub cpus: f64,
    /// Maximum processes per sandbox; 0 or negative = Docker's default (unlimited).
    pub pids_limit: i64,
    /// Container user (`name`, `uid`, `uid:gid`); empty = the image's.
    pub user: String,
    pub dropped_caps: Vec<String>,
    pub added_caps: Vec<String>,
    /// Extra tmpfs mounts: container path → mount options. Not reachable through the files API
    /// (Docker's archive API cannot see inside tmpfs mounts).
    #[serde(deserialize_with = "string_map_or_list")]
    pub tmpfs: BTreeMap<String, String>,
    /// Parsed for compatibility: belongs to the original's pool mode, which is not implemented.
    pub pool_security: DockerPoolSecurity,
    /// The static `stacyvm-agent` bind-mounted into every new container as its process data
    /// plane (docs/processes.md); a path on the Docker host. Empty = searched for
    /// (`stacyvm_provider::agent::locate`). Without one, background processes are unavailable.
    pub agent_path: String,
    /// Domain of the Traefik preview route `3000-<id>.<domain>`; not a file key, the factory
    /// copies `server.preview_domain` here.
    #[serde(skip)]
    pub preview_domain: String,
    /// How long a pull of a missing image may take before spawn gives up. Not a file key.
    #[serde(skip)]
    pub pull_timeout: Duration,
    /// The installation's cluster id (`crate::cluster`): containers are labelled with it and
    /// only containers with it (or none) are listed. `None` on a worker. Not a file key, the
    /// factory copies the store's id here.
    #[serde(skip)]
    pub cluster: Option<String>,
    /// Snapshots always take the archive API, even where the Docker host's files are visible
    /// (docker/host_copy.rs). Not a file key: tests use it to check that path.
    #[serde(skip)]
    pub snapshot_by_archive: bool,
}

impl Default for DockerConfig {
    fn default() -> Self {
        DockerConfig {
            enabled: false,
            socket: String::new(),
            runtime: "runc".into(),
            default_image: "alpine:latest".into(),
            network_mode: "bridge".into(),
            seccomp_profile: "default".into(),
            read_only_rootfs: false,
            memory: "512m".into(),
            cpus: 1.0,
            pids_limit: 256,
            user: String::new(),
            dropped_caps: vec!["ALL".into()],
            added_caps: Vec::new(),
            tmpfs: BTreeMap::new(),
            pool_security: DockerPoolSecurity::default(),
            agent_path: String::new(),
            preview_domain: "localhost".into(),
            pull_timeout: Duration::from_secs(120),
            cluster: None,
            snapshot_by_archive: false,
        }
    }
}

/// `providers.docker.pool_security.*`: belongs to the unimplemented pool mode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DockerPoolSecurity {
    pub per_user_uid: bool,
    pub pid_namespace: bool,
    pub workspace_permissions: bool,
    pub hidepid: bool,
}

impl Default for DockerPoolSecurity {
    fn default() -> Self {
        DockerPoolSecurity {
            per_user_uid: false,
            pid_namespace: false,
            workspace_permissions: true,
            hidepid: false,
        }
    }
}

/// `tmpfs`: either a map `{"/tmp": "rw,size=64m"}` (Docker's own shape) or a list
/// `["/tmp:rw,size=64m", "/run"]`; both become path → options.
fn string_map_or_list<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    d.deserialize_any(MapOrListVisitor)
}

struct MapOrListVisitor;

impl<'de> Visitor<'de> for MapOrListVisitor {
    type Value = BTreeMap<String, String>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a map of path to mount options, or a list of \"path[:options]\"")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(BTreeMap::new())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = BTreeMap::new();
        while let Some((k, v)) = map.next_entry::<String, Option<String>>()? {
            out.insert(k, v.unwrap_or_default());
        }
        Ok(out)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = BTreeMap::new();
        while let Some(item) = seq.next_element::<String>()? {
            let (path, opts) = item.split_once(':').unwrap_or((item.as_str(), ""));
            out.insert(path.to_string(), opts.to_string());
        }
        Ok(out)
    }
}
