//! `providers.microvm.*` (ours: QEMU `microvm` machine with an in-guest agent).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The `providers.microvm` section and the settings of `MicrovmProvider`; `Default` gives the
/// section's defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MicrovmConfig {
    /// Registers the provider even when it is not `providers.default`; the provider itself
    /// ignores it.
    pub enabled: bool,
    /// QEMU binary (name looked up in `PATH`, or a path).
    pub qemu_path: String,
    /// Uncompressed guest kernel; empty = `<data_dir>/vmlinux`.
    pub kernel_path: String,
    /// Initramfs with the agent; empty = `<data_dir>/initramfs.cpio.gz`.
    pub initrd_path: String,
    /// Assets, image cache (`images/`) and per-VM state (`vms/`); empty =
    /// [`crate::MICROVM_DEFAULT_DATA_DIR`].
    pub data_dir: String,
    /// `auto` (KVM when usable, else TCG), `kvm` or `tcg`.
    pub accel: String,
    /// Restored, paused clones kept per image (and memory size / vCPU count); 0 = none.
    pub warm_pool: i64,
    /// `none` (no guest network) or `user` (QEMU user-mode networking).
    pub network_mode: String,
    /// Restore spawns from a per-image snapshot instead of booting each one (needs an agent
    /// speaking protocol 2). `false` = every spawn boots its kernel. Not a file key.
    #[serde(skip)]
    pub snapshots: bool,
    /// How long a cold boot may take until the agent answers. Not a file key.
    #[serde(skip)]
    pub boot_timeout: Duration,
    /// Guest TSC frequency in kHz for `tsc_early_khz`; `None` = read from the host. Not a file
    /// key.
    #[serde(skip)]
    pub tsc_khz: Option<u64>,
    /// Run QEMU as this user after it opened its files (`-runas`). Empty = `nobody` when the
    /// provider runs as root and that user exists, else as the caller; `-` = as the caller.
    /// Not a file key.
    #[serde(skip)]
    pub run_as: String,
    /// Memory / vCPUs when a spawn asks for none (≤ 0). Not file keys (`defaults.*` are).
    #[serde(skip)]
    pub default_memory_mb: i64,
    #[serde(skip)]
    pub default_vcpus: i64,
    /// The installation's cluster id (`crate::cluster`): VM directories record it and only
    /// those with it (or none) are listed. `None` on a worker. Not a file key.
    #[serde(skip)]
    pub cluster: Option<String>,
    /// The OCI image store (`images.root`, docs/images.md) base disks are built from before
    /// Docker or a prebuilt disk is asked. `None` = not used. Not a file key: the factory sets it.
    #[serde(skip)]
    pub image_store: Option<std::path::PathBuf>,
}

impl Default for MicrovmConfig {
    fn default() -> Self {
        MicrovmConfig {
            enabled: false,
            qemu_path: "qemu-system-x86_64".into(),
            kernel_path: String::new(),
            initrd_path: String::new(),
            data_dir: String::new(),
            accel: "auto".into(),
            warm_pool: 0,
            network_mode: "none".into(),
            snapshots: true,
            boot_timeout: Duration::from_secs(90),
            tsc_khz: None,
            run_as: String::new(),
            default_memory_mb: 256,
            default_vcpus: 1,
            cluster: None,
            image_store: None,
        }
    }
}

impl MicrovmConfig {
    /// The file name stem of an image: every byte outside `[A-Za-z0-9._-]` becomes `_` (as in
    /// the setup script, which writes the disks the provider reads).
    pub fn image_file_stem(image: &str) -> String {
        image
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"._-".contains(&b) {
                    b as char
                } else {
                    '_'
                }
            })
            .collect()
    }

    /// The file name of an image's disk under `images/`.
    pub fn image_disk_name(image: &str) -> String {
        format!("{}.ext4", Self::image_file_stem(image))
    }
}
