//! Pulls from a real `docker-registry` on loopback: the happy paths by tag, digest and index,
//! and the failures (missing tag, wrong digest, corrupt layer, connection dropped mid-layer),
//! each of which must leave the store as it was.

mod common;

use common::*;
use stacyvm_image::{Credentials, ImageError, ImageRef, ImageStore};

fn r(s: &str) -> ImageRef {
    ImageRef::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn store() -> (tempfile::TempDir, ImageStore) {
    let t = tempfile::tempdir().expect("tempdir");
    let s = ImageStore::open(t.path().join("store")).expect("open store");
    (t, s)
}

#[tokio::test]
async fn pull_by_tag_and_digest_builds_the_flattened_rootfs_once() {
    let reg = Registry::start().await;
    let img = image(&two_layer_tars(), true, "amd64");
    reg.push_image("test/app", "v1", &img).await;
    let (_t, store) = store();

    let by_tag = r(&format!("{}/test/app:v1", reg.host()));
    let pulled = store
        .pull(&by_tag, &Credentials::anonymous())
        .await
        .expect("pull by tag");
    assert_eq!(pulled.manifest_digest.as_str(), img.manifest_digest);
    assert_eq!(pulled.names, [by_tag.to_string()]);
    assert_eq!(pulled.layers, 2);
    assert_eq!(pulled.created.as_deref(), Some("2024-01-02T03:04:05Z"));
    let blobs = count(store.root(), "blobs/sha256");
    assert_eq!(blobs, 4, "manifest + config + 2 layers");
    assert_eq!(count(store.root(), "layers/sha256"), 2);

    let rootfs = store.rootfs(&by_tag).await.expect("rootfs");
    assert_two_layer_rootfs(&rootfs.path);
    assert_eq!(rootfs.config.cmd, ["/bin/sh", "-c", "echo hi"]);
    assert_eq!(rootfs.config.env, ["PATH=/bin", "GREETING=hi"]);
    assert!(rootfs.config.entrypoint.is_empty());
    assert_eq!(rootfs.config.working_dir, "/work");
    assert_eq!(rootfs.config.user, "1000:1000");

    // By digest: same image, nothing downloaded or unpacked again, the same rootfs. The
    // registry loses the config and layer bytes, so fetching any of them again would fail.
    for blob in std::iter::once(&img.config).chain(&img.blobs) {
        std::fs::remove_file(reg.blob_data(&sha256(blob))).expect("drop registry blob");
    }
    let by_digest = r(&format!("{}/test/app@{}", reg.host(), img.manifest_digest));
    let again = store
        .pull(&by_digest, &Credentials::anonymous())
        .await
        .expect("pull by digest");
    assert_eq!(again.manifest_digest, pulled.manifest_digest);
    assert_eq!(count(store.root(), "blobs/sha256"), blobs);
    assert_eq!(count(store.root(), "layers/sha256"), 2);
    let rootfs2 = store.rootfs(&by_digest).await.expect("rootfs by digest");
    assert_eq!(rootfs2.path, rootfs.path);
    assert_eq!(count(store.root(), "rootfs"), 1);

    let list = store.list().await.expect("list");
    assert_eq!(list.len(), 1);
    let mut names = vec![by_tag.to_string(), by_digest.to_string()];
    names.sort();
    assert_eq!(list[0].names, names);
    assert_eq!(
        count(store.root(), "tmp"),
        0,
        "temp files left after success"
    );
}

#[tokio::test]
async fn pull_of_an_index_picks_linux_amd64_and_plain_tar_layers_work() {
    let reg = Registry::start().await;
    let amd = image(&two_layer_tars(), false, "amd64");
    let arm_tar = LayerBuilder::new().file("arch", b"arm64", 0o644).build();
    let arm = image(&[arm_tar], true, "arm64");
    reg.push_image("test/multi", "amd64", &amd).await;
    reg.push_image("test/multi", "arm64", &arm).await;
    let platform = |m: &TestImage, arch: &str| {
        serde_json::json!({
            "mediaType": OCI_MANIFEST, "digest": m.manifest_digest, "size": m.manifest.len(),
            "platform": {"os": "linux", "architecture": arch},
        })
    };
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [platform(&arm, "arm64"), platform(&amd, "amd64")],
    }))
    .expect("index");
    reg.push_manifest("test/multi", "latest", OCI_INDEX, &index)
        .await;

    let (_t, store) = store();
    let name = r(&format!("{}/test/multi", reg.host()));
    let pulled = store
        .pull(&name, &Credentials::anonymous())
        .await
        .expect("pull index");
    assert_eq!(pulled.manifest_digest.as_str(), amd.manifest_digest);
    assert_eq!(pulled.names, [format!("{}/test/multi:latest", reg.host())]);
    let rootfs = store.rootfs(&name).await.expect("rootfs");
    assert_two_layer_rootfs(&rootfs.path);
    assert!(!rootfs.path.join("arch").exists(), "arm64 layer used");
}

#[tokio::test]
async fn missing_tag_and_unknown_digest_are_not_found_and_leave_nothing() {
    let reg = Registry::start().await;
    let img = image(&two_layer_tars(), true, "amd64");
    reg.push_image("test/app", "v1", &img).await;
    let (_t, store) = store();
    let missing = [
        format!("{}/test/app:nope", reg.host()),
        format!("{}/test/nosuchrepo:v1", reg.host()),
        format!("{}/test/app@sha256:{}", reg.host(), "0".repeat(64)),
    ];
    for m in missing {
        let err = store
            .pull(&r(&m), &Credentials::anonymous())
            .await
            .expect_err("pulled a missing image");
        assert!(matches!(err, ImageError::NotFound { .. }), "{m}: {err:?}");
        assert!(err.to_string().contains("not found"), "{err}");
        assert_store_empty(store.root());
    }
    let err = store
        .rootfs(&r(&format!("{}/test/app:nope", reg.host())))
        .await;
    assert!(matches!(err, Err(ImageError::NotFound { .. })), "{err:?}");
}

#[tokio::test]
async fn a_layer_whose_content_differs_from_its_digest_is_refused() {
    let reg = Registry::start().await;
    let img = image(&two_layer_tars(), true, "amd64");
    reg.push_image("test/bad", "v1", &img).await;
    // The registry now serves other bytes (same length) under the second layer's digest.
    let layer_digest = sha256(&img.blobs[1]);
    let data = reg.blob_data(&layer_digest);
    let mut bytes = std::fs::read(&data).expect("read registry blob");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&data, &bytes).expect("tamper");

    let (_t, store) = store();
    let err = store
        .pull(
            &r(&format!("{}/test/bad:v1", reg.host())),
            &Credentials::anonymous(),
        )
        .await
        .expect_err("accepted a tampered layer");
    match &err {
        ImageError::DigestMismatch { what, expected, .. } => {
            assert!(what.contains(&layer_digest), "{what}");
            assert!(expected.contains(&layer_digest), "{expected}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(err.code(), "digest_mismatch");
    assert_store_empty(store.root());
}

#[tokio::test]
async fn corrupt_layers_are_refused_without_leaving_anything() {
    let reg = Registry::start().await;
    let tars = two_layer_tars();
    let good = gzip(&tars[1]);
    // Served intact (so their digests check out) but not a readable layer.
    let truncated = good[..good.len() / 2].to_vec();
    let garbage = b"this is not a tar archive, nor gzip; only text that goes on".repeat(20);
    for (tag, broken) in [("truncated", truncated), ("garbage", garbage)] {
        let img = image_from_blobs(&tars, vec![gzip(&tars[0]), broken], "amd64");
        reg.push_image("test/corrupt", tag, &img).await;
        let (_t, store) = store();
        let err = store
            .pull(
                &r(&format!("{}/test/corrupt:{tag}", reg.host())),
                &Credentials::anonymous(),
            )
            .await
            .expect_err("accepted a corrupt layer");
        assert!(matches!(err, ImageError::Corrupt { .. }), "{tag}: {err:?}");
        assert_eq!(err.code(), "corrupt");
        assert_store_empty(store.root());
    }
}

#[tokio::test]
async fn a_connection_dropped_mid_layer_is_a_network_error_and_a_retry_succeeds() {
    let reg = Registry::start().await;
    let big = noise(2 * 1024 * 1024, 7);
    let tar = LayerBuilder::new().file("big.bin", &big, 0o644).build();
    let img = image(std::slice::from_ref(&tar), true, "amd64");
    reg.push_image("test/big", "v1", &img).await;
    // Manifest and config answers are a few kB; the 2 MiB layer is cut after 256 kB.
    let proxy = DroppingProxy::start(reg.addr, 256 * 1024).await;

    let (_t, store) = store();
    let through_proxy = r(&format!("{}/test/big:v1", proxy.addr));
    let err = store
        .pull(&through_proxy, &Credentials::anonymous())
        .await
        .expect_err("pull through a dropping proxy succeeded");
    match &err {
        ImageError::Network { context, .. } => {
            assert!(context.contains(&sha256(&img.blobs[0])), "{context}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(err.code(), "network");
    assert_store_empty(store.root());

    let direct = r(&format!("{}/test/big:v1", reg.host()));
    store
        .pull(&direct, &Credentials::anonymous())
        .await
        .expect("direct pull after the failure");
    let rootfs = store.rootfs(&direct).await.expect("rootfs");
    let got = std::fs::read(rootfs.path.join("big.bin")).expect("read");
    assert!(got == big, "big.bin differs after the retry");
}

#[tokio::test]
async fn remove_then_gc_frees_everything_a_pull_wrote() {
    let reg = Registry::start().await;
    let img = image(&two_layer_tars(), true, "amd64");
    reg.push_image("test/app", "v1", &img).await;
    let (_t, store) = store();
    let name = r(&format!("{}/test/app:v1", reg.host()));
    store
        .pull(&name, &Credentials::anonymous())
        .await
        .expect("pull");
    store.rootfs(&name).await.expect("rootfs");

    let nothing = store.gc().await.expect("gc");
    assert_eq!(
        nothing.blobs_removed + nothing.layers_removed + nothing.rootfs_removed,
        0
    );

    store.remove(&name).await.expect("remove");
    let again = store.remove(&name).await;
    assert!(
        matches!(again, Err(ImageError::NotFound { .. })),
        "{again:?}"
    );
    assert!(store.list().await.expect("list").is_empty());
    let report = store.gc().await.expect("gc");
    assert_eq!(
        (
            report.blobs_removed,
            report.layers_removed,
            report.rootfs_removed
        ),
        (4, 2, 1),
        "{report:?}"
    );
    assert!(report.bytes_freed > 0);
    assert_store_empty(store.root());
}
