//! `providers.bwrap.*` (ours: Linux namespaces made with bubblewrap, no daemon; docs/bwrap.md).

use serde::{Deserialize, Serialize};

/// Where the provider keeps its sandboxes unless configured otherwise.
pub const BWRAP_DEFAULT_DATA_DIR: &str = "/var/lib/stacyvm/bwrap";
/// Where the image store lives unless configured otherwise (shared with the CLI's
/// `stacyvm image pull/import`).
pub const DEFAULT_IMAGES_DIR: &str = "/var/lib/stacyvm/images";

/// The `providers.bwrap` section and the settings of `BwrapProvider`; `Default` gives the
/// section's defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BwrapConfig {
    /// Registers the provider even when it is not `providers.default`; the provider itself
    /// ignores it.
    pub enabled: bool,
    /// One directory per sandbox (writable layer, overlay mount point, agent socket, console
    /// log, `sandbox.json`); empty = [`BWRAP_DEFAULT_DATA_DIR`]. Must belong to this provider
    /// alone: a restarted provider adopts every sandbox it finds there.
    pub data_dir: String,
    /// The image store's root (`stacyvm_image::ImageStore`); empty = [`DEFAULT_IMAGES_DIR`].
    pub images_dir: String,
    /// The `bwrap` binary (a name looked up in `PATH`, or a path).
    pub bwrap_path: String,
    /// The static `stacyvm-agent` run as each sandbox's PID 1; empty = searched for
    /// (`stacyvm_provider::agent::locate`).
    pub agent_path: String,
    /// `none`: only `lo` in the sandbox. `user`: outbound through `pasta` (Debian `passt`),
    /// and sandbox port 3000 forwarded to a loopback port for previews.
    pub network_mode: String,
    /// The `pasta` binary for `network_mode: user` (a name looked up in `PATH`, or a path).
    pub pasta_path: String,
    /// DNS resolvers (IP addresses) written into a `user` sandbox's `/etc/resolv.conf`; empty =
    /// the host's `/etc/resolv.conf` nameservers minus loopback ones (the host's loopback is
    /// closed to sandboxes).
    pub dns: Vec<String>,
    /// Maximum processes (and threads) per sandbox; ≤ 0 = no limit.
    pub pids_limit: i64,
    /// Parent of the per-sandbox cgroups, relative to each hierarchy's root
    /// (`/sys/fs/cgroup/<parent>/<id>` on v2, `/sys/fs/cgroup/<controller>/<parent>/<id>` on v1).
    pub cgroup_parent: String,
    /// Memory / CPUs when a spawn asks for none (≤ 0). Not file keys (`defaults.*` are).
    #[serde(skip)]
    pub default_memory_mb: i64,
    #[serde(skip)]
    pub default_vcpus: i64,
    /// Size of each sandbox's writable layer (a sparse ext4 image of its own, docs/bwrap.md);
    /// ≤ 0 = no quota (the layer shares `data_dir`'s file system). Not a file key:
    /// `defaults.disk_size_mb` sets it.
    #[serde(skip)]
    pub default_disk_mb: i64,
    /// The installation's cluster id (`crate::cluster`): sandbox directories record it and only
    /// those with it (or none) are listed. `None` on a worker. Not a file key.
    #[serde(skip)]
    pub cluster: Option<String>,
}

impl Default for BwrapConfig {
    fn default() -> Self {
        BwrapConfig {
            enabled: false,
            data_dir: String::new(),
            images_dir: String::new(),
            bwrap_path: "bwrap".into(),
            agent_path: String::new(),
            network_mode: "none".into(),
            pasta_path: "pasta".into(),
            dns: Vec::new(),
            pids_limit: 256,
            cgroup_parent: "stacyvm".into(),
            default_memory_mb: 512,
            default_vcpus: 1,
            default_disk_mb: 1024,
            cluster: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_strict_keys() {
        let c: BwrapConfig = serde_json::from_str("{}").expect("empty section");
        assert_eq!(c, BwrapConfig::default());
        assert_eq!(c.network_mode, "none");
        let typo = serde_json::from_str::<BwrapConfig>(r#"{"pid_limit": 3}"#);
        assert!(typo.is_err(), "unknown keys are refused");
    }
}
