//! `providers.microvm.*` ([`MicrovmConfig`], the section as written) checked, with `auto` and
//! empty values resolved.

use std::path::PathBuf;
use std::time::Duration;

use crate::{MicrovmConfig, ProviderError, MICROVM_DEFAULT_DATA_DIR as DEFAULT_DATA_DIR};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

pub(crate) use crate::config::NetworkMode;

/// `MicrovmConfig` checked, with defaults resolved.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Settings {
    pub qemu: PathBuf,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub data_dir: PathBuf,
    pub accel: Accel,
    pub network: NetworkMode,
    pub boot_timeout: Duration,
    pub tsc_khz: Option<u64>,
    pub run_as: Option<String>,
    pub default_memory_mb: i64,
    pub default_vcpus: i64,
    pub snapshots: bool,
    pub warm_pool: usize,
}

/// Upper bound for `warm_pool` (each pooled clone is a paused QEMU of tens of MB).
pub const MAX_WARM_POOL: i64 = 64;

fn invalid(key: &str, why: impl std::fmt::Display) -> ProviderError {
    ProviderError::InvalidInput(format!("providers.microvm.{key}: {why}"))
}

impl MicrovmConfig {
    /// Checks every field and resolves `auto`/empty values (`kvm_usable` decides `accel: auto`).
    pub(crate) fn validate(&self, kvm_usable: bool) -> Result<Settings, ProviderError> {
        let data_dir = PathBuf::from(match self.data_dir.trim() {
            "" => DEFAULT_DATA_DIR,
            d => d,
        });
        let asset = |given: &str, name: &str| match given.trim() {
            "" => data_dir.join(name),
            p => PathBuf::from(p),
        };
        let accel = match self.accel.trim() {
            "" | "auto" if kvm_usable => Accel::Kvm,
            "" | "auto" | "tcg" => Accel::Tcg,
            "kvm" => Accel::Kvm,
            a => return Err(invalid("accel", format!("{a:?} is not auto, kvm or tcg"))),
        };
        let network = NetworkMode::parse(&self.network_mode).ok_or_else(|| {
            invalid(
                "network_mode",
                format!("{:?} is not none or user", self.network_mode.trim()),
            )
        })?;
        if !(0..=MAX_WARM_POOL).contains(&self.warm_pool) {
            return Err(invalid(
                "warm_pool",
                format!("{} is not in 0..={MAX_WARM_POOL}", self.warm_pool),
            ));
        }
        if self.warm_pool > 0 && !self.snapshots {
            return Err(invalid("warm_pool", "a warm pool needs snapshots: true"));
        }
        if self.qemu_path.trim().is_empty() {
            return Err(invalid("qemu_path", "must not be empty"));
        }
        if self.boot_timeout.is_zero() {
            return Err(invalid("boot_timeout", "must be positive"));
        }
        let run_as = match self.run_as.trim() {
            "-" => None,
            "" if running_as_root() && user_exists("nobody") => Some("nobody".to_string()),
            "" => None,
            u if u
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) =>
            {
                Some(u.to_string())
            }
            u => return Err(invalid("run_as", format!("invalid user name {u:?}"))),
        };
        Ok(Settings {
            qemu: PathBuf::from(self.qemu_path.trim()),
            kernel: asset(&self.kernel_path, "vmlinux"),
            initrd: asset(&self.initrd_path, "initramfs.cpio.gz"),
            data_dir,
            accel,
            network,
            boot_timeout: self.boot_timeout,
            tsc_khz: self.tsc_khz,
            run_as,
            default_memory_mb: self.default_memory_mb.max(64),
            default_vcpus: self.default_vcpus.max(1),
            snapshots: self.snapshots,
            warm_pool: usize::try_from(self.warm_pool).unwrap_or(0),
        })
    }
}

fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    // /proc/self belongs to the effective user.
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

fn user_exists(name: &str) -> bool {
    std::fs::read_to_string("/etc/passwd")
        .is_ok_and(|p| p.lines().any(|l| l.split(':').next() == Some(name)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[path = "settings_tests.rs"]
mod tests;
