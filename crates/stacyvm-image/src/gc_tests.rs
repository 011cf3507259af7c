//! Unit tests of `gc.rs`.

use std::collections::BTreeMap;

use super::*;
use crate::digest::Digest;
use crate::spec::{Descriptor, OCI_CONFIG, OCI_LAYER_TAR};
use crate::stage::{synthesize_manifest, Staging};
use crate::testutil::{gzip, sha256, LayerBuilder};

fn desc(media_type: &str, bytes: &[u8]) -> Descriptor {
    Descriptor {
        media_type: media_type.into(),
        digest: Digest::of_bytes(bytes),
        size: bytes.len() as u64,
        platform: None,
        annotations: BTreeMap::new(),
    }
}

/// Commits a one-layer image named `name` holding file `f` = `content`; returns the
/// manifest and layer blob digests.
fn add_image(layout: &Layout, name: &str, content: &[u8]) -> (Digest, Digest) {
    let tar = LayerBuilder::new().file("f", content, 0o644).build();
    let blob = gzip(&tar);
    let config = serde_json::to_vec(&serde_json::json!({
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [sha256(&tar)]},
    }))
    .expect("json");
    let mut s = Staging::new(layout).expect("staging");
    s.stage_bytes(&config, None, "config").expect("config");
    let layer = s.stage_bytes(&blob, None, "layer").expect("layer");
    let manifest = synthesize_manifest(desc(OCI_CONFIG, &config), vec![desc(OCI_LAYER_TAR, &blob)])
        .expect("manifest");
    let m = s
        .stage_bytes(&manifest, None, "manifest")
        .expect("manifest");
    s.prepare(&m, name).expect("prepare");
    s.commit(&[(name.to_string(), m.clone())]).expect("commit");
    (m, layer)
}

#[test]
fn gc_removes_unreachable_data_and_leftovers_and_keeps_named_images() {
    let t = tempfile::tempdir().expect("tempdir");
    let layout = Layout::new(t.path().to_path_buf());
    layout.create().expect("create");
    let (kept_manifest, kept_layer) = add_image(&layout, "docker.io/library/kept:1", b"k");
    let (gone_manifest, gone_layer) = add_image(&layout, "docker.io/library/gone:1", b"g");
    refs::update(&layout, |i| {
        i.refs.remove("docker.io/library/gone:1");
        Ok(())
    })
    .expect("unname");
    // Leftovers of a crash: a staging dir, a temp index file, a half-built rootfs.
    fs::create_dir_all(layout.tmp_dir().join("txn-crashed/layer-1")).expect("mkdir");
    fs::write(layout.tmp_dir().join("txn-crashed/blob-1"), b"partial").expect("write");
    fs::write(layout.refs_dir().join(".index.json.tmp-abc"), b"{").expect("write");
    fs::create_dir_all(layout.rootfs(&gone_manifest)).expect("mkdir");
    fs::create_dir_all(layout.rootfs(&kept_manifest)).expect("mkdir");
    let gone_blob_bytes = fs::metadata(layout.blob(&gone_layer)).expect("meta").len();

    let report = collect(&layout).expect("gc");

    assert_eq!(report.blobs_removed, 3, "{report:?}"); // manifest, config, layer
    assert_eq!(report.layers_removed, 1, "{report:?}");
    assert_eq!(report.rootfs_removed, 1, "{report:?}");
    assert_eq!(report.temp_removed, 2, "{report:?}");
    assert!(report.bytes_freed >= gone_blob_bytes + 7, "{report:?}");
    assert!(!layout.blob(&gone_manifest).exists());
    assert!(!layout.blob(&gone_layer).exists());
    assert!(!layout.rootfs(&gone_manifest).exists());
    assert_eq!(fs::read_dir(layout.tmp_dir()).expect("ls").count(), 0);
    assert!(!layout.refs_dir().join(".index.json.tmp-abc").exists());

    assert!(layout.blob(&kept_manifest).is_file());
    assert!(layout.blob(&kept_layer).is_file());
    assert!(layout.rootfs(&kept_manifest).is_dir());
    let kept = StoredImage::load(&layout, &kept_manifest).expect("kept image");
    let diff = &kept.config.rootfs.diff_ids[0];
    assert_eq!(fs::read(layout.layer(diff).join("f")).expect("read"), b"k");
    assert_eq!(fs::read_dir(layout.layers_dir()).expect("ls").count(), 1);

    // A second run finds nothing more.
    assert_eq!(collect(&layout).expect("gc"), GcReport::default());
}

#[test]
fn gc_refuses_to_guess_when_a_named_image_is_unreadable() {
    let t = tempfile::tempdir().expect("tempdir");
    let layout = Layout::new(t.path().to_path_buf());
    layout.create().expect("create");
    let (m, layer) = add_image(&layout, "docker.io/library/a:1", b"a");
    fs::remove_file(layout.blob(&m)).expect("rm");
    let err = collect(&layout).expect_err("gc ran");
    assert_eq!(err.code(), "corrupt");
    assert!(
        layout.blob(&layer).is_file(),
        "gc deleted data of a named image"
    );
}
