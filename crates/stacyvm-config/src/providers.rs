//! `providers.*`: the sandbox backends. Only mock, docker and microvm ship; the original's
//! firecracker, e2b, custom and proot sections still parse so existing files load, and
//! `validate()` refuses to enable them. `docker` and `microvm` are the provider crate's own
//! types ([`DockerConfig`], [`MicrovmConfig`]): the section is the provider's settings.

use serde::{Deserialize, Serialize};
use stacyvm_provider::{BwrapConfig, DockerConfig, MicrovmConfig};
use stacyvm_types::GoDuration;

use crate::de;
use crate::secrets::debug_redacted;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProvidersSection {
    /// `auto` (or empty), `mock`, `docker`, `microvm` or `bwrap`. Ours defaults to `auto`.
    pub default: String,
    pub mock: MockSection,
    pub firecracker: FirecrackerSection,
    pub docker: DockerConfig,
    pub e2b: E2bSection,
    pub custom: CustomSection,
    pub proot: ProotSection,
    pub microvm: MicrovmConfig,
    /// Ours: Linux namespaces made with bubblewrap, no daemon (docs/bwrap.md).
    pub bwrap: BwrapConfig,
}

impl Default for ProvidersSection {
    fn default() -> Self {
        ProvidersSection {
            default: "auto".into(),
            mock: MockSection::default(),
            firecracker: FirecrackerSection::default(),
            docker: DockerConfig::default(),
            e2b: E2bSection::default(),
            custom: CustomSection::default(),
            proot: ProotSection::default(),
            microvm: MicrovmConfig::default(),
            bwrap: BwrapConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MockSection {
    pub enabled: bool,
}

/// Parsed for compatibility only; `enabled: true` is a startup error pointing to microvm.
/// Default `enabled` is false here (the original's true would make every default config fail).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FirecrackerSection {
    pub enabled: bool,
    pub firecracker_path: String,
    pub kernel_path: String,
    pub default_rootfs: String,
    pub agent_path: String,
    pub data_dir: String,
}

impl Default for FirecrackerSection {
    fn default() -> Self {
        FirecrackerSection {
            enabled: false,
            firecracker_path: "/usr/local/bin/firecracker".into(),
            kernel_path: "/var/lib/stacyvm/vmlinux.bin".into(),
            default_rootfs: String::new(),
            agent_path: "./bin/stacyvm-agent".into(),
            data_dir: "/var/lib/stacyvm".into(),
        }
    }
}

/// Not shipped. `Debug` redacts the API key.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct E2bSection {
    pub enabled: bool,
    pub api_key: String,
    pub base_url: String,
}

impl Default for E2bSection {
    fn default() -> Self {
        E2bSection {
            enabled: false,
            api_key: String::new(),
            base_url: "https://api.e2b.dev".into(),
        }
    }
}

debug_redacted!(E2bSection {
    enabled,
    api_key: secret,
    base_url,
});

/// Not shipped. `Debug` redacts the API key.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CustomSection {
    pub enabled: bool,
    pub name: String,
    pub base_url: String,
    pub api_key: String,
    #[serde(deserialize_with = "de::duration")]
    pub timeout: GoDuration,
}

impl Default for CustomSection {
    fn default() -> Self {
        CustomSection {
            enabled: false,
            name: "custom".into(),
            base_url: String::new(),
            api_key: String::new(),
            timeout: GoDuration::from_secs(60),
        }
    }
}

debug_redacted!(CustomSection {
    enabled,
    name,
    base_url,
    api_key: secret,
    timeout,
});

/// Not shipped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProotSection {
    pub enabled: bool,
    pub rootfs_path: String,
    pub proot_binary: String,
    pub workspace_base: String,
    #[serde(deserialize_with = "de::duration")]
    pub default_timeout: GoDuration,
    pub max_sandboxes: i64,
    pub max_memory_mb: i64,
    pub max_disk_mb: i64,
    pub languages: Vec<String>,
}

impl Default for ProotSection {
    fn default() -> Self {
        ProotSection {
            enabled: false,
            rootfs_path: "/var/lib/stacyvm/rootfs".into(),
            proot_binary: "proot".into(),
            workspace_base: "/var/lib/stacyvm/workspaces".into(),
            default_timeout: GoDuration::from_secs(60),
            max_sandboxes: 10,
            max_memory_mb: 512,
            max_disk_mb: 1024,
            languages: vec!["python3".into(), "node".into(), "bash".into()],
        }
    }
}
