//! Imports without a registry: synthetic `docker save` archives in both layouts Docker writes,
//! OCI layout directories, hostile and damaged archives, and (with Docker) a real `docker save`.

mod common;

use std::path::Path;

use common::*;
use stacyvm_image::{ImageError, ImageRef, ImageStore};

fn r(s: &str) -> ImageRef {
    ImageRef::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn store(t: &tempfile::TempDir) -> ImageStore {
    ImageStore::open(t.path().join("store")).expect("open store")
}

enum Entry<'a> {
    File(&'a [u8]),
    Symlink(&'a str),
}

/// A tar archive of `entries`, as `docker save` would write it.
fn archive(entries: &[(&str, Entry<'_>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, e) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_mtime(0);
        match e {
            Entry::File(data) => {
                h.set_size(data.len() as u64);
                h.set_entry_type(tar::EntryType::Regular);
                b.append_data(&mut h, path, *data).expect("append");
            }
            Entry::Symlink(target) => {
                h.set_size(0);
                h.set_entry_type(tar::EntryType::Symlink);
                b.append_link(&mut h, path, target).expect("append link");
            }
        }
    }
    b.into_inner().expect("tar")
}

fn hex(digest: &str) -> &str {
    digest.strip_prefix("sha256:").expect("sha256")
}

/// A legacy (Docker < 25) `docker save` archive of `img` built from uncompressed `tars`; the
/// second layer is stored once and reached through a symlink, as Docker does for duplicates.
fn legacy_archive(img: &TestImage, tags: &[&str]) -> Vec<u8> {
    let config_name = format!("{}.json", hex(&sha256(&img.config)));
    let (id1, id2, id3) = ("1".repeat(64), "2".repeat(64), "3".repeat(64));
    let manifest = serde_json::to_vec(&serde_json::json!([{
        "Config": config_name,
        "RepoTags": tags,
        "Layers": [format!("{id1}/layer.tar"), format!("{id2}/layer.tar")],
    }]))
    .expect("manifest.json");
    let l1 = format!("{id1}/layer.tar");
    let l2 = format!("{id2}/layer.tar");
    let l3 = format!("{id3}/layer.tar");
    let link = format!("../{id3}/layer.tar");
    archive(&[
        (&l1, Entry::File(&img.blobs[0])),
        (&l3, Entry::File(&img.blobs[1])),
        (&l2, Entry::Symlink(&link)),
        (&config_name, Entry::File(&img.config)),
        ("manifest.json", Entry::File(&manifest)),
        ("repositories", Entry::File(b"{}")),
    ])
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).expect("write");
    p
}

#[tokio::test]
async fn legacy_docker_save_archive_imports_named_and_flattened() {
    let t = tempfile::tempdir().expect("tempdir");
    let s = store(&t);
    let img = image(&two_layer_tars(), false, "amd64");
    let tags = ["stacyvm-test/synthetic:latest", "stacyvm-test/synthetic:v1"];
    let path = write(t.path(), "save.tar", &legacy_archive(&img, &tags));

    let got = s.import(&path, None).await.expect("import");
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].names,
        [
            "docker.io/stacyvm-test/synthetic:latest",
            "docker.io/stacyvm-test/synthetic:v1"
        ]
    );
    assert_eq!(got[0].config_digest.as_str(), sha256(&img.config));
    let rootfs = s
        .rootfs(&r("stacyvm-test/synthetic:v1"))
        .await
        .expect("rootfs");
    assert_two_layer_rootfs(&rootfs.path);
    assert_eq!(rootfs.config.cmd, ["/bin/sh", "-c", "echo hi"]);

    // The same archive gzip-compressed is the same image: same digest, no new blobs.
    let blobs = count(s.root(), "blobs/sha256");
    let gz = write(t.path(), "save.tar.gz", &gzip(&legacy_archive(&img, &tags)));
    let again = s.import(&gz, None).await.expect("import gz");
    assert_eq!(again[0].manifest_digest, got[0].manifest_digest);
    assert_eq!(count(s.root(), "blobs/sha256"), blobs);
    assert_eq!(count(s.root(), "tmp"), 0);
}

#[tokio::test]
async fn damaged_docker_save_archives_are_refused_and_leave_nothing() {
    let t = tempfile::tempdir().expect("tempdir");
    let s = store(&t);
    let img = image(&two_layer_tars(), false, "amd64");
    let good = legacy_archive(&img, &["x/y:z"]);

    // The config file's bytes do not match the digest in its name.
    let config_name = format!("{}.json", hex(&sha256(&img.config)));
    let mut tampered = img.config.clone();
    tampered.extend_from_slice(b" ");
    let manifest = serde_json::to_vec(&serde_json::json!([{
        "Config": config_name, "RepoTags": ["x/y:z"], "Layers": ["a/layer.tar", "b/layer.tar"],
    }]))
    .expect("json");
    let bad_config = archive(&[
        ("a/layer.tar", Entry::File(&img.blobs[0])),
        ("b/layer.tar", Entry::File(&img.blobs[1])),
        (&config_name, Entry::File(&tampered)),
        ("manifest.json", Entry::File(&manifest)),
    ]);
    // A layer tar that is not the one the config's diff_ids name.
    let other = LayerBuilder::new()
        .file("etc/hostname", b"evil\n", 0o644)
        .build();
    let bad_layer = archive(&[
        ("a/layer.tar", Entry::File(&img.blobs[0])),
        ("b/layer.tar", Entry::File(&other)),
        (&config_name, Entry::File(&img.config)),
        ("manifest.json", Entry::File(&manifest)),
    ]);
    let cases: [(&str, Vec<u8>, &str); 5] = [
        ("config", bad_config, "digest_mismatch"),
        ("layer", bad_layer, "digest_mismatch"),
        ("truncated", good[..good.len() / 3].to_vec(), "corrupt"),
        ("not-an-archive", b"hello".repeat(300), "corrupt"),
        (
            "escape",
            LayerBuilder::new().raw_file("../escaped", b"x").build(),
            "corrupt",
        ),
    ];
    for (name, bytes, code) in cases {
        let path = write(t.path(), &format!("{name}.tar"), &bytes);
        let err = s.import(&path, None).await.expect_err(name);
        assert_eq!(err.code(), code, "{name}: {err}");
        assert_store_empty(s.root());
    }
    assert!(!t.path().join("escaped").exists());
    assert!(!t.path().join("store/escaped").exists());
    let missing = s.import(&t.path().join("nope.tar"), None).await;
    assert!(
        matches!(missing, Err(ImageError::NotFound { .. })),
        "{missing:?}"
    );
}

/// Writes `img` as an OCI image layout at `dir`, with `annotations` on its index entry.
fn write_oci_layout(dir: &Path, img: &TestImage, annotations: serde_json::Value) {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).expect("mkdir");
    for b in std::iter::once(&img.config)
        .chain(&img.blobs)
        .chain(std::iter::once(&img.manifest))
    {
        std::fs::write(blobs.join(hex(&sha256(b))), b).expect("write blob");
    }
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).expect("write");
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [{
            "mediaType": OCI_MANIFEST,
            "digest": img.manifest_digest,
            "size": img.manifest.len(),
            "annotations": annotations,
        }],
    });
    std::fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&index).expect("json"),
    )
    .expect("w");
}

#[tokio::test]
async fn docker_25_save_archive_with_an_oci_layout_inside() {
    let t = tempfile::tempdir().expect("tempdir");
    let s = store(&t);
    // Docker 25+ writes uncompressed layers as blobs, an OCI index and a legacy manifest.json.
    let img = image(&two_layer_tars(), false, "amd64");
    let layout = t.path().join("layout");
    write_oci_layout(
        &layout,
        &img,
        serde_json::json!({
            "io.containerd.image.name": "docker.io/stacyvm-test/oci:latest",
            "org.opencontainers.image.ref.name": "latest",
        }),
    );
    let manifest_json = serde_json::to_vec(&serde_json::json!([{
        "Config": format!("blobs/sha256/{}", hex(&sha256(&img.config))),
        "RepoTags": ["stacyvm-test/oci:latest", "stacyvm-test/oci:extra"],
        "Layers": img.blobs.iter().map(|b| format!("blobs/sha256/{}", hex(&sha256(b)))).collect::<Vec<_>>(),
    }]))
    .expect("json");
    std::fs::write(layout.join("manifest.json"), manifest_json).expect("write");
    let mut b = tar::Builder::new(Vec::new());
    b.append_dir_all(".", &layout).expect("tar layout");
    let path = write(t.path(), "save25.tar", &b.into_inner().expect("tar"));

    let got = s.import(&path, None).await.expect("import");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].manifest_digest.as_str(), img.manifest_digest);
    assert_eq!(
        got[0].names,
        [
            "docker.io/stacyvm-test/oci:extra",
            "docker.io/stacyvm-test/oci:latest"
        ]
    );
    let rootfs = s.rootfs(&r("stacyvm-test/oci")).await.expect("rootfs");
    assert_two_layer_rootfs(&rootfs.path);
}

#[tokio::test]
async fn oci_layout_directory_imports_and_unnamed_images_need_a_tag() {
    let t = tempfile::tempdir().expect("tempdir");
    let s = store(&t);
    let img = image(&two_layer_tars(), true, "amd64");
    let named = t.path().join("named");
    write_oci_layout(
        &named,
        &img,
        serde_json::json!({"org.opencontainers.image.ref.name": "registry.example/team/app:2"}),
    );
    let got = s.import(&named, None).await.expect("import layout");
    assert_eq!(got[0].names, ["registry.example/team/app:2"]);
    assert_eq!(got[0].manifest_digest.as_str(), img.manifest_digest);
    let rootfs = s
        .rootfs(&r("registry.example/team/app:2"))
        .await
        .expect("rootfs");
    assert_two_layer_rootfs(&rootfs.path);

    // A bare tag in ref.name names no repository: the caller must give one.
    let tags = [LayerBuilder::new().file("only", b"1", 0o644).build()];
    let other = image(&tags, true, "amd64");
    let unnamed = t.path().join("unnamed");
    write_oci_layout(
        &unnamed,
        &other,
        serde_json::json!({"org.opencontainers.image.ref.name": "v1"}),
    );
    let err = s.import(&unnamed, None).await.expect_err("unnamed import");
    assert!(
        matches!(err, ImageError::InvalidReference { .. }),
        "{err:?}"
    );
    let tag = r("local/unnamed:v1");
    let got = s.import(&unnamed, Some(&tag)).await.expect("tagged import");
    assert_eq!(got[0].names, ["docker.io/local/unnamed:v1"]);
    assert_eq!(s.list().await.expect("list").len(), 2);
}

#[tokio::test]
async fn a_tampered_blob_in_an_oci_layout_is_refused() {
    let t = tempfile::tempdir().expect("tempdir");
    let s = store(&t);
    let img = image(&two_layer_tars(), true, "amd64");
    let dir = t.path().join("layout");
    write_oci_layout(
        &dir,
        &img,
        serde_json::json!({"org.opencontainers.image.ref.name": "x.example/a:1"}),
    );
    let victim = dir.join("blobs/sha256").join(hex(&sha256(&img.blobs[1])));
    let mut bytes = std::fs::read(&victim).expect("read");
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&victim, bytes).expect("tamper");
    let err = s.import(&dir, None).await.expect_err("tampered import");
    assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err:?}");
    assert_store_empty(s.root());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_on_one_root_import_and_build_concurrently_without_clashing() {
    let t = tempfile::tempdir().expect("tempdir");
    let (a, b) = (store(&t), store(&t));
    let img = image(&two_layer_tars(), false, "amd64");
    let p1 = write(t.path(), "one.tar", &legacy_archive(&img, &["c/one:1"]));
    let p2 = write(t.path(), "two.tar", &legacy_archive(&img, &["c/two:1"]));
    let (one, two) = (r("c/one:1"), r("c/two:1"));
    for _ in 0..5 {
        let (x, y) = tokio::join!(a.import(&p1, None), b.import(&p2, None));
        assert_eq!(
            x.expect("import one")[0].manifest_digest,
            y.expect("import two")[0].manifest_digest
        );
        let (x, y) = tokio::join!(a.rootfs(&one), b.rootfs(&two));
        let (x, y) = (x.expect("rootfs one"), y.expect("rootfs two"));
        assert_eq!(x.path, y.path);
        assert_two_layer_rootfs(&x.path);
    }
    assert_eq!(count(a.root(), "layers/sha256"), 2);
    assert_eq!(count(a.root(), "rootfs"), 1);
    assert_eq!(count(a.root(), "tmp"), 0);
    let names: Vec<_> = a.list().await.expect("list").remove(0).names;
    assert_eq!(names, ["docker.io/c/one:1", "docker.io/c/two:1"]);
    // gc waits for the others and then finds nothing unreachable.
    let (g, imported) = tokio::join!(a.gc(), b.import(&p1, None));
    imported.expect("import during gc");
    let g = g.expect("gc");
    assert_eq!(
        g.blobs_removed + g.layers_removed + g.rootfs_removed,
        0,
        "{g:?}"
    );
}

/// Needs a Docker daemon with the project's test image (selected by the `docker` nextest
/// profile; fails, never skips, when Docker is missing).
mod needs_docker {
    use std::process::Command;

    use super::*;

    const IMAGE: &str = "stacyvm-test/busybox:latest";

    #[tokio::test]
    async fn real_docker_save_archive_gives_a_busybox_rootfs() {
        let t = tempfile::tempdir().expect("tempdir");
        let out = t.path().join("busybox.tar");
        let status = Command::new("docker")
            .args(["save", "-o"])
            .arg(&out)
            .arg(IMAGE)
            .status()
            .expect("docker is not installed");
        assert!(
            status.success(),
            "docker save {IMAGE} failed: is the daemon up and the test image built?"
        );
        let s = store(&t);
        let got = s.import(&out, None).await.expect("import docker save");
        assert!(
            got[0].names.contains(&format!("docker.io/{IMAGE}")),
            "{:?}",
            got[0].names
        );
        let rootfs = s.rootfs(&r(IMAGE)).await.expect("rootfs");
        assert!(
            std::fs::symlink_metadata(rootfs.path.join("bin/busybox")).is_ok(),
            "no bin/busybox in the rootfs"
        );
        assert!(rootfs.path.join("bin").is_dir());
    }
}
