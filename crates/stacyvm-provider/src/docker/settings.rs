//! `providers.docker.*` ([`DockerConfig`], the section as written) checked and resolved into
//! what container creation needs.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::{DockerConfig, ProviderError};

/// `DockerConfig` checked and reduced to what container creation needs.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Settings {
    pub runtime: Option<String>,
    pub default_image: String,
    pub network_mode: String,
    /// `security_opt` entry for seccomp, if not Docker's default.
    pub seccomp_opt: Option<String>,
    pub read_only_rootfs: bool,
    pub memory_bytes: Option<i64>,
    pub nano_cpus: Option<i64>,
    pub pids_limit: Option<i64>,
    pub user: Option<String>,
    pub dropped_caps: Vec<String>,
    pub added_caps: Vec<String>,
    pub tmpfs: BTreeMap<String, String>,
    pub preview_domain: String,
    pub pull_timeout: Duration,
    /// Cluster label value for new containers and the listing filter (`crate::cluster`).
    pub cluster: Option<String>,
    /// Skip the host-copy path of snapshots (`DockerConfig::snapshot_by_archive`).
    pub snapshot_by_archive: bool,
    /// The agent binary to bind into new containers; set by `DockerProvider::connect` (a file
    /// lookup, so validation stays pure).
    pub agent: Option<std::path::PathBuf>,
}

fn invalid(key: &str, why: impl std::fmt::Display) -> ProviderError {
    ProviderError::InvalidInput(format!("providers.docker.{key}: {why}"))
}

impl DockerConfig {
    /// Checks every field; reads the seccomp profile file when one is named.
    pub(crate) fn validate(&self) -> Result<Settings, ProviderError> {
        let runtime = match self.runtime.trim() {
            "" | "runc" => None,
            r if valid_word(r) => Some(r.to_string()),
            r => return Err(invalid("runtime", format!("invalid runtime {r:?}"))),
        };
        let network_mode = match self.network_mode.trim() {
            "" => "bridge".to_string(),
            "host" => {
                return Err(invalid(
                    "network_mode",
                    "host networking gives no isolation",
                ))
            }
            m if m.contains(':') => {
                return Err(invalid(
                    "network_mode",
                    format!("{m:?} shares another namespace"),
                ))
            }
            m if valid_word(m) => m.to_string(),
            m => return Err(invalid("network_mode", format!("invalid network {m:?}"))),
        };
        let seccomp_opt = match self.seccomp_profile.trim() {
            "" | "default" => None,
            "unconfined" => Some("seccomp=unconfined".to_string()),
            path => {
                let json = std::fs::read_to_string(path)
                    .map_err(|e| invalid("seccomp_profile", format!("cannot read {path}: {e}")))?;
                serde_json::from_str::<serde_json::Value>(&json)
                    .map_err(|e| invalid("seccomp_profile", format!("{path} is not JSON: {e}")))?;
                // The Engine API takes the profile's content, not its path.
                Some(format!("seccomp={json}"))
            }
        };
        let memory_bytes = parse_memory(&self.memory).map_err(|e| invalid("memory", e))?;
        if !self.cpus.is_finite() || self.cpus < 0.0 {
            return Err(invalid(
                "cpus",
                format!("{} is not a non-negative number", self.cpus),
            ));
        }
        let nano_cpus = cpus_to_nano(self.cpus);
        let caps = |key: &str, list: &[String]| -> Result<Vec<String>, ProviderError> {
            list.iter()
                .map(|c| c.trim().to_ascii_uppercase())
                .filter(|c| !c.is_empty())
                .map(|c| {
                    if valid_word(&c) {
                        Ok(c)
                    } else {
                        Err(invalid(key, format!("invalid capability {c:?}")))
                    }
                })
                .collect()
        };
        for path in self.tmpfs.keys() {
            if !path.starts_with('/') || path.contains(',') {
                return Err(invalid(
                    "tmpfs",
                    format!("{path:?} is not an absolute path"),
                ));
            }
        }
        if self.pull_timeout.is_zero() {
            return Err(invalid("pull_timeout", "must be positive"));
        }
        Ok(Settings {
            runtime,
            default_image: match self.default_image.trim() {
                "" => "alpine:latest".to_string(),
                i => i.to_string(),
            },
            network_mode,
            seccomp_opt,
            read_only_rootfs: self.read_only_rootfs,
            memory_bytes,
            nano_cpus,
            pids_limit: (self.pids_limit > 0).then_some(self.pids_limit),
            user: Some(self.user.trim().to_string()).filter(|u| !u.is_empty()),
            dropped_caps: caps("dropped_caps", &self.dropped_caps)?,
            added_caps: caps("added_caps", &self.added_caps)?,
            tmpfs: self.tmpfs.clone(),
            preview_domain: match self.preview_domain.trim() {
                "" => "localhost".to_string(),
                d => d.to_string(),
            },
            pull_timeout: self.pull_timeout,
            cluster: self.cluster.clone().filter(|c| !c.is_empty()),
            snapshot_by_archive: self.snapshot_by_archive,
            agent: None,
        })
    }
}

/// Whether a Docker `user` (`name`, `uid`, `name:group`…) is someone other than root.
pub(crate) fn is_non_root(user: &str) -> bool {
    !matches!(user.trim().split(':').next(), Some("root" | "0" | ""))
}

/// Letters, digits and `-_.` (runtime, network and capability names).
fn valid_word(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// Docker's memory syntax: a number with an optional `b`, `k`, `m` or `g` suffix (binary
/// units). Empty means no limit.
pub(crate) fn parse_memory(s: &str) -> Result<Option<i64>, String> {
    let s = s.trim().to_ascii_lowercase();
    if s.is_empty() {
        return Ok(None);
    }
    let (num, mult): (&str, u64) = match s.as_bytes()[s.len() - 1] {
        b'b' => (&s[..s.len() - 1], 1),
        b'k' => (&s[..s.len() - 1], 1 << 10),
        b'm' => (&s[..s.len() - 1], 1 << 20),
        b'g' => (&s[..s.len() - 1], 1 << 30),
        b't' => (&s[..s.len() - 1], 1 << 40),
        _ => (s.as_str(), 1),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size like 512m"))?;
    let bytes = n * mult as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes >= i64::MAX as f64 {
        return Err(format!("{s:?} is out of range"));
    }
    Ok((bytes > 0.0).then_some(bytes as i64))
}

/// CPUs → the Engine API's `NanoCpus`; `None` for no limit.
pub(crate) fn cpus_to_nano(cpus: f64) -> Option<i64> {
    let nano = (cpus * 1e9).round();
    (nano >= 1.0 && nano < i64::MAX as f64).then_some(nano as i64)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[path = "settings_tests.rs"]
mod tests;
