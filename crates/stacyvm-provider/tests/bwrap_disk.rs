//! The disk quota of a bwrap sandbox's writable layer, by its effects: writing past it fails
//! with ENOSPC in that sandbox only, the agent answers throughout, and neither destroy nor a
//! restarted provider's cleanup leaves a mount, a loop device or a file. Selected by the
//! `bwrap` nextest profile.
#![cfg(feature = "bwrap")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod bwrap_support;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use bwrap_support::{fixture_with, sh_out, spawn};
use stacyvm_provider::{BwrapProvider, Provider};

const QUOTA_MB: i64 = 64;

fn sandbox_dir(data_dir: &str, id: &str) -> PathBuf {
    Path::new(data_dir).join("sandboxes").join(id)
}

/// Loop devices whose backing file lies under `dir`.
fn loops_under(dir: &Path) -> Vec<String> {
    std::fs::read_dir("/sys/block")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("loop"))
        .filter(|e| {
            let b = std::fs::read_to_string(e.path().join("loop/backing_file")).unwrap_or_default();
            Path::new(b.trim_end()).starts_with(dir)
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

fn mounts_under(dir: &Path) -> Vec<String> {
    let dir = dir.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(&dir))
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writing_past_the_quota_is_enospc_in_that_sandbox_only() {
    let f = fixture_with(|c| c.default_disk_mb = QUOTA_MB).await;
    let p = &*f.p;
    let (a, b) = (spawn(p).await, spawn(p).await);
    let (_, out) = sh_out(
        p,
        &a,
        "dd if=/dev/zero of=/workspace/fill bs=1M count=200 2>&1; echo rc=$?",
    )
    .await;
    assert!(out.contains("No space left on device"), "{out}");
    assert!(!out.contains("rc=0"), "{out}");
    // The host holds no more than the quota for it (the image is sparse).
    let image = sandbox_dir(&f.config.data_dir, &a).join("disk.ext4");
    let held = std::fs::metadata(&image).unwrap().blocks() * 512;
    assert!(held <= 70 * 1024 * 1024, "the image holds {held} bytes");
    // The agent answers, its files API reports the full disk, and space comes back.
    assert_eq!(sh_out(p, &a, "echo alive").await.1, "alive\n");
    let w = p
        .write_file(
            &a,
            "/workspace/more",
            bytes::Bytes::from(vec![7u8; 1 << 20]),
            None,
        )
        .await;
    assert!(w.is_err(), "{w:?}");
    let (code, _) = sh_out(p, &a, "rm /workspace/fill && echo ok > /workspace/ok").await;
    assert_eq!(code, 0);
    // The other sandbox has its own disk.
    let (_, out) = sh_out(
        p,
        &b,
        "dd if=/dev/zero of=/workspace/fill bs=1M count=32 2>&1; echo rc=$?",
    )
    .await;
    assert!(out.contains("rc=0"), "{out}");
    p.destroy(&a).await.unwrap();
    p.destroy(&b).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destroy_and_restart_cleanup_leave_no_mount_loop_device_or_file() {
    let f = fixture_with(|c| c.default_disk_mb = QUOTA_MB).await;
    let id = spawn(&*f.p).await;
    let dir = sandbox_dir(&f.config.data_dir, &id);
    assert_eq!(
        loops_under(&dir).len(),
        1,
        "the sandbox's disk is a loop device"
    );
    assert_eq!(mounts_under(&dir).len(), 2, "{:?}", mounts_under(&dir));
    // Destroyed by a restarted provider (adopted from its directory).
    let p2 = BwrapProvider::new(f.config.clone()).unwrap();
    p2.destroy(&id).await.unwrap();
    assert!(mounts_under(&dir).is_empty(), "{:?}", mounts_under(&dir));
    assert!(loops_under(&dir).is_empty(), "{:?}", loops_under(&dir));
    assert!(!dir.exists());

    // What a provider killed after mounting a disk, before recording the sandbox, leaves:
    // removed when the next provider starts.
    let dir = sandbox_dir(&f.config.data_dir, "sb-halfmade");
    std::fs::create_dir_all(dir.join("layer")).unwrap();
    let image = dir.join("disk.ext4");
    std::fs::File::create(&image)
        .unwrap()
        .set_len(16 << 20)
        .unwrap();
    let ok = |c: &mut Command| assert!(c.status().unwrap().success(), "{c:?}");
    ok(Command::new("mkfs.ext4").arg("-q").arg(&image));
    ok(Command::new("mount")
        .args(["-o", "loop"])
        .arg(&image)
        .arg(dir.join("layer")));
    assert_eq!(loops_under(&dir).len(), 1);
    let p3 = BwrapProvider::new(f.config.clone()).unwrap();
    assert!(p3.list_runtimes().await.unwrap().unwrap().is_empty());
    assert!(mounts_under(&dir).is_empty(), "{:?}", mounts_under(&dir));
    assert!(loops_under(&dir).is_empty(), "{:?}", loops_under(&dir));
    assert!(!dir.exists());
}
