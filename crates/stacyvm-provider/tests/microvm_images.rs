//! microvm base disks from the OCI image store (docs/images.md): an image only the store knows
//! (Docker has no such name, no prebuilt disk exists) boots, its disk is built once under
//! `images/by-manifest/` of the provider's data dir, and a second spawn reuses it.
//!
//! Needs `scripts/setup-microvm.sh` (kernel and initramfs) and a Docker with the test image (to
//! make the `docker save` archive the store imports); the default nextest profile leaves this
//! binary out (profiles `vm` and `ci` select it).
#![cfg(feature = "microvm")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod microvm_support;

use std::path::Path;
use std::time::Duration;

use stacyvm_image::{ImageRef, ImageStore};
use stacyvm_provider::conformance::{exec_collect, sh, spec};
use stacyvm_provider::{MicrovmConfig, MicrovmProvider, Provider};
use tokio::time::timeout;

use microvm_support::{config, image, BOOT_BOUND};

/// A name Docker does not know and no prebuilt disk has.
const STORE_ONLY: &str = "local/store-only:1";

fn save_test_image(to: &Path) {
    let out = std::process::Command::new("docker")
        .args(["save", "-o"])
        .arg(to)
        .arg(image())
        .output()
        .expect("docker save runs");
    assert!(
        out.status.success(),
        "docker save {}: {}",
        image(),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn an_image_only_the_store_has_boots_and_its_disk_is_built_once() {
    let assets = config();
    let t = tempfile::tempdir().unwrap();
    // The assets, but images/ of our own: the disk built here is this test's.
    let data = t.path().join("data");
    std::fs::create_dir(&data).unwrap();
    for f in ["vmlinux", "initramfs.cpio.gz"] {
        std::os::unix::fs::symlink(Path::new(&assets.data_dir).join(f), data.join(f)).unwrap();
    }
    let store_dir = t.path().join("store");
    let archive = t.path().join("save.tar");
    save_test_image(&archive);
    let store = ImageStore::open(&store_dir).unwrap();
    let tag = ImageRef::parse(STORE_ONLY).unwrap();
    store.import(&archive, Some(&tag)).await.unwrap();
    let docker_knows = std::process::Command::new("docker")
        .args(["image", "inspect", STORE_ONLY])
        .output()
        .unwrap();
    assert!(
        !docker_knows.status.success(),
        "docker must not have {STORE_ONLY}"
    );

    let p = MicrovmProvider::new(MicrovmConfig {
        data_dir: data.to_string_lossy().into_owned(),
        image_store: Some(store_dir.clone()),
        ..assets
    })
    .unwrap();
    let mut ids = Vec::new();
    for _ in 0..2 {
        let id = timeout(BOOT_BOUND, p.spawn(&spec(STORE_ONLY)))
            .await
            .expect("spawn within bound")
            .expect("spawn from the store")
            .runtime_id;
        let c = timeout(
            Duration::from_secs(60),
            exec_collect(&p, &id, sh("busybox echo up")),
        )
        .await
        .expect("exec within bound");
        assert!(matches!(c.result, Ok(0)), "{c:?}");
        assert_eq!(c.stdout_str().trim(), "up");
        ids.push(id);
    }
    let built: Vec<_> = std::fs::read_dir(data.join("images/by-manifest"))
        .expect("a disk built from the store")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(built.len(), 1, "one disk for both spawns: {built:?}");
    assert!(built[0].ends_with(".ext4"), "{built:?}");
    for id in ids {
        p.destroy(&id).await.unwrap();
    }
}

#[tokio::test]
async fn an_image_nobody_has_is_image_not_found() {
    let assets = config();
    let t = tempfile::tempdir().unwrap();
    let p = MicrovmProvider::new(MicrovmConfig {
        image_store: Some(t.path().join("store")),
        ..assets
    })
    .unwrap();
    let err = p.spawn(&spec("local/nobody-has-this:1")).await.unwrap_err();
    assert!(
        matches!(err, stacyvm_provider::ProviderError::ImageNotFound(_)),
        "{err:?}"
    );
}
