//! Shared by the microvm test binaries: the test image and the provider config. Without the
//! assets (`scripts/setup-microvm.sh`) the tests fail; the default nextest profile leaves these
//! binaries out (profiles `vm` and `ci` select them).
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use stacyvm_provider::{MicrovmConfig, MICROVM_DEFAULT_DATA_DIR};

/// Bound for anything that boots a VM under TCG on a busy 2-core machine.
pub const BOOT_BOUND: Duration = Duration::from_secs(180);

pub fn image() -> String {
    std::env::var("STACYVM_MICROVM_TEST_IMAGE")
        .unwrap_or_else(|_| "stacyvm-test/busybox:latest".into())
}

/// The provider config. Panics when an asset is missing.
pub fn config() -> MicrovmConfig {
    let dir = PathBuf::from(
        std::env::var("STACYVM_MICROVM_DIR").unwrap_or_else(|_| MICROVM_DEFAULT_DATA_DIR.into()),
    );
    let disk = MicrovmConfig::image_disk_name(&image());
    let qemu = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .any(|d| d.join("qemu-system-x86_64").is_file());
    let missing: Vec<String> = [
        (!qemu).then(|| "qemu-system-x86_64".to_string()),
        (!dir.join("vmlinux").is_file()).then(|| "vmlinux".into()),
        (!dir.join("initramfs.cpio.gz").is_file()).then(|| "initramfs.cpio.gz".into()),
        (!dir.join("images").join(&disk).is_file()).then(|| format!("images/{disk}")),
    ]
    .into_iter()
    .flatten()
    .collect();
    assert!(
        missing.is_empty(),
        "this test needs QEMU and the microvm assets; missing in {}: {missing:?} (run \
         scripts/setup-microvm.sh)",
        dir.display()
    );
    MicrovmConfig {
        data_dir: dir.to_string_lossy().into_owned(),
        boot_timeout: Duration::from_secs(150),
        ..Default::default()
    }
}
