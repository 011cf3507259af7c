//! Unit tests of `unpack.rs`.

use std::os::unix::fs::MetadataExt;

use super::*;
use crate::testutil::{gzip, sha256, LayerBuilder};

fn diff_id(data: &[u8]) -> Digest {
    sha256(data).parse().expect("digest")
}

fn unpack(bytes: &[u8]) -> (tempfile::TempDir, Result<(), ImageError>) {
    unpack_with_diff_id(bytes, bytes)
}

/// Unpacks `blob`, whose uncompressed content is `tar`.
fn unpack_with_diff_id(blob: &[u8], tar: &[u8]) -> (tempfile::TempDir, Result<(), ImageError>) {
    let t = tempfile::tempdir().expect("tempdir");
    let path = t.path().join("blob");
    fs::write(&path, blob).expect("write");
    let dest = t.path().join("out");
    fs::create_dir(&dest).expect("mkdir");
    let diff_id = diff_id(tar);
    let r = unpack_layer(&path, &dest, &diff_id, "layer test");
    (t, r)
}

#[test]
fn unpacks_files_dirs_links_and_modes() {
    let tar = LayerBuilder::new()
        .dir("etc", 0o755)
        .file("etc/hostname", b"box\n", 0o644)
        .file("bin/tool", b"#!/bin/sh\n", 0o4755)
        .symlink("bin/sh", "/bin/tool")
        .hardlink("bin/tool2", "bin/tool")
        .dir("ro", 0o555)
        .file("ro/inside", b"x", 0o444)
        .build();
    for blob in [tar.clone(), gzip(&tar)] {
        let (t, r) = unpack_with_diff_id(&blob, &tar);
        r.expect("unpack");
        let out = t.path().join("out");
        assert_eq!(fs::read(out.join("etc/hostname")).expect("read"), b"box\n");
        assert_eq!(
            fs::read_link(out.join("bin/sh")).expect("link"),
            Path::new("/bin/tool")
        );
        let a = fs::metadata(out.join("bin/tool")).expect("meta");
        let b = fs::metadata(out.join("bin/tool2")).expect("meta");
        assert_eq!(a.ino(), b.ino());
        assert_eq!(a.mode() & 0o7777, 0o4755);
        assert_eq!(
            fs::metadata(out.join("ro")).expect("meta").mode() & 0o777,
            0o555
        );
        assert_eq!(fs::read(out.join("ro/inside")).expect("read"), b"x");
    }
}

#[test]
fn parent_dir_and_absolute_paths_are_refused() {
    for evil in ["../escape", "a/../../escape", "/etc/evil"] {
        let tar = LayerBuilder::new().raw_file(evil, b"x").build();
        let (t, r) = unpack(&tar);
        match r {
            Err(ImageError::Corrupt { reason, .. }) => assert!(reason.contains("escapes")),
            other => panic!("{evil}: {other:?}"),
        }
        assert!(!t.path().join("escape").exists());
    }
}

#[test]
fn writing_through_a_symlink_is_refused() {
    let t_out = tempfile::tempdir().expect("tempdir");
    let outside = t_out.path().to_str().expect("utf8").to_string();
    let tar = LayerBuilder::new()
        .symlink("etc", &outside)
        .file("etc/owned", b"x", 0o644)
        .build();
    let (_t, r) = unpack(&tar);
    match r {
        Err(ImageError::Corrupt { reason, .. }) => assert!(reason.contains("symlink")),
        other => panic!("{other:?}"),
    }
    assert!(!t_out.path().join("owned").exists());
}

#[test]
fn hard_links_outside_the_layer_are_refused() {
    for target in ["../../etc/passwd", "/etc/passwd", "missing"] {
        let tar = LayerBuilder::new().hardlink("pw", target).build();
        let (t, r) = unpack(&tar);
        assert!(
            matches!(r, Err(ImageError::Corrupt { .. })),
            "{target}: {r:?}"
        );
        assert!(!t.path().join("out/pw").exists());
    }
}

#[test]
fn truncated_gzip_and_garbage_are_corrupt() {
    let tar = LayerBuilder::new()
        .file("f", &[7u8; 100_000], 0o644)
        .build();
    let gz = gzip(&tar);
    let truncated = &gz[..gz.len() / 2];
    let (_t, r) = unpack_with_diff_id(truncated, &tar);
    assert!(matches!(r, Err(ImageError::Corrupt { .. })), "{r:?}");
    let (_t, r) = unpack(b"this is not a tar archive at all, just some text........");
    assert!(matches!(r, Err(ImageError::Corrupt { .. })), "{r:?}");
}

#[test]
fn wrong_diff_id_is_a_digest_mismatch() {
    let t = tempfile::tempdir().expect("tempdir");
    let tar = LayerBuilder::new().file("f", b"x", 0o644).build();
    let blob = t.path().join("blob");
    fs::write(&blob, &tar).expect("write");
    let dest = t.path().join("out");
    fs::create_dir(&dest).expect("mkdir");
    let r = unpack_layer(&blob, &dest, &Digest::of_bytes(b"other"), "layer");
    assert!(matches!(r, Err(ImageError::DigestMismatch { .. })), "{r:?}");
}

#[test]
fn zstd_is_unsupported_not_corrupt() {
    let (_t, r) = unpack(&[0x28, 0xb5, 0x2f, 0xfd, 0, 0, 0, 0]);
    assert!(matches!(r, Err(ImageError::Unsupported { .. })), "{r:?}");
}
