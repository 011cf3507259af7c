//! `providers.bwrap.*` ([`BwrapConfig`], the section as written) checked, with empty values
//! resolved.

use std::net::IpAddr;
use std::path::{Component, Path, PathBuf};

pub(crate) use crate::config::NetworkMode;
use crate::{BwrapConfig, ProviderError, BWRAP_DEFAULT_DATA_DIR, DEFAULT_IMAGES_DIR};

/// `BwrapConfig` checked, with defaults resolved.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Settings {
    pub data_dir: PathBuf,
    pub images_dir: PathBuf,
    pub bwrap: PathBuf,
    /// The agent binary, absolute and resolved (it is bind-mounted); empty when none was
    /// found: spawns then answer `Unavailable` saying how to get one.
    pub agent: PathBuf,
    pub network: NetworkMode,
    pub pasta: PathBuf,
    /// `mkfs.ext4` for the writable layer's disk (Debian keeps it in `/usr/sbin`, which a
    /// service's `PATH` may lack).
    pub mkfs: PathBuf,
    /// `providers.bwrap.dns`, parsed.
    pub dns: Vec<IpAddr>,
    pub pids_limit: Option<u64>,
    pub cgroup_parent: String,
    pub default_memory_mb: i64,
    pub default_vcpus: i64,
    /// The writable layer's size in MiB; `None` = no quota.
    pub disk_mb: Option<u64>,
    pub cluster: Option<String>,
}

fn invalid(key: &str, why: impl std::fmt::Display) -> ProviderError {
    ProviderError::InvalidInput(format!("providers.bwrap.{key}: {why}"))
}

fn dir(given: &str, default: &str, key: &str) -> Result<PathBuf, ProviderError> {
    let p = PathBuf::from(match given.trim() {
        "" => default,
        d => d,
    });
    if !p.is_absolute() {
        return Err(invalid(
            key,
            format!("{} is not an absolute path", p.display()),
        ));
    }
    // The overlay's options name these directories; see `sys::overlay_safe`.
    if !super::sys::overlay_safe(&p) {
        return Err(invalid(key, "must not contain ',', ':' or '\\'"));
    }
    Ok(p)
}

/// Looks `name` up in `PATH` unless it is a path.
fn find_program(name: &str) -> PathBuf {
    if name.contains('/') {
        return PathBuf::from(name);
    }
    std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path)
                .map(|d| d.join(name))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| PathBuf::from(name))
}

impl BwrapConfig {
    /// Checks every field and resolves empty values.
    pub(crate) fn validate(&self) -> Result<Settings, ProviderError> {
        let data_dir = dir(&self.data_dir, BWRAP_DEFAULT_DATA_DIR, "data_dir")?;
        let images_dir = dir(&self.images_dir, DEFAULT_IMAGES_DIR, "images_dir")?;
        let network = NetworkMode::parse(&self.network_mode).ok_or_else(|| {
            invalid(
                "network_mode",
                format!("{:?} is not none or user", self.network_mode.trim()),
            )
        })?;
        let parent = self.cgroup_parent.trim();
        let parent_ok = !parent.is_empty()
            && Path::new(parent)
                .components()
                .all(|c| matches!(c, Component::Normal(_)));
        if !parent_ok {
            return Err(invalid(
                "cgroup_parent",
                format!("{parent:?} is not a relative path without '..'"),
            ));
        }
        let bwrap = match self.bwrap_path.trim() {
            "" => find_program("bwrap"),
            b => find_program(b),
        };
        let configured = Some(self.agent_path.trim())
            .filter(|p| !p.is_empty())
            .map(PathBuf::from);
        let agent = crate::agent::locate(configured.as_deref()).unwrap_or_default();
        if !agent.as_os_str().is_empty() && !super::sys::overlay_safe(&agent) {
            return Err(invalid("agent_path", "must not contain ',', ':' or '\\'"));
        }
        let dns = self
            .dns
            .iter()
            .map(|a| {
                a.trim()
                    .parse::<IpAddr>()
                    .map_err(|_| invalid("dns", format!("{a:?} is not an IP address")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Settings {
            data_dir,
            images_dir,
            bwrap,
            agent,
            network,
            pasta: match self.pasta_path.trim() {
                "" => find_program("pasta"),
                p => find_program(p),
            },
            dns,
            mkfs: Some(find_program("mkfs.ext4"))
                .filter(|p| p.is_file())
                .unwrap_or_else(|| PathBuf::from("/usr/sbin/mkfs.ext4")),
            pids_limit: u64::try_from(self.pids_limit).ok().filter(|p| *p > 0),
            cgroup_parent: parent.to_string(),
            default_memory_mb: self.default_memory_mb,
            default_vcpus: self.default_vcpus,
            disk_mb: u64::try_from(self.default_disk_mb).ok().filter(|m| *m > 0),
            cluster: self.cluster.clone(),
        })
    }
}

#[cfg(test)]
#[path = "settings_tests.rs"]
mod tests;
