//! Helpers shared by the bwrap provider's test files: a provider on a fresh data dir and image
//! store holding `stacyvm-test/busybox:latest`, imported from an OCI layout this module builds
//! from Debian's `busybox-static` (as scripts/lib/setup.sh builds the docker test image), so no
//! Docker and no registry is needed. Needs root, bubblewrap, busybox-static and the agent.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use stacyvm_provider::conformance::{self, exec_collect, sh};
use stacyvm_provider::{BwrapConfig, BwrapProvider, Provider, SandboxSpec};

pub const IMAGE: &str = "stacyvm-test/busybox:latest";
/// Where busybox-static puts its binary.
const BUSYBOX: &str = "/bin/busybox";
/// The tests' cgroups live apart from a real installation's.
pub const CGROUP_PARENT: &str = "stacyvm-test";

pub struct Fixture {
    pub p: Arc<BwrapProvider>,
    pub config: BwrapConfig,
    pub dir: tempfile::TempDir,
}

impl conformance::Fixture for Fixture {
    fn provider(&self) -> &dyn Provider {
        &*self.p
    }
}

/// Destroys whatever a test left running (a failed check), on a thread of its own: drop may
/// run inside the test's runtime, which cannot be blocked on.
impl Drop for Fixture {
    fn drop(&mut self) {
        let p = self.p.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                for r in p.list_runtimes().await.unwrap().unwrap_or_default() {
                    let _ = p.destroy(&r.runtime_id).await;
                }
            });
        })
        .join();
    }
}

pub fn agent() -> PathBuf {
    stacyvm_provider::agent::built().expect(
        "no stacyvm-agent: cd crates/stacyvm-agent && cargo build --release (or set STACYVM_AGENT)",
    )
}

fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Writes `data` as a blob of the layout; its digest (hex) and size.
fn blob(layout: &Path, data: &[u8]) -> (String, usize) {
    let tmp = layout.join("blob.tmp");
    std::fs::write(&tmp, data).unwrap();
    let sum = run(Command::new("sha256sum").arg(&tmp));
    let hex = String::from_utf8_lossy(&sum[..64]).into_owned();
    std::fs::rename(&tmp, layout.join("blobs/sha256").join(&hex)).unwrap();
    (hex, data.len())
}

/// An OCI layout directory holding a busybox image (one layer).
pub fn busybox_layout(dir: &Path) -> PathBuf {
    assert!(
        Path::new(BUSYBOX).is_file(),
        "{BUSYBOX} missing: apt-get install busybox-static"
    );
    let root = dir.join("busybox-rootfs");
    for d in [
        "bin", "sbin", "usr/bin", "usr/sbin", "etc", "root", "tmp", "proc", "dev",
    ] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    run(Command::new("chmod").arg("1777").arg(root.join("tmp")));
    std::fs::copy(BUSYBOX, root.join("bin/busybox")).unwrap();
    let applets = run(Command::new(BUSYBOX).arg("--list-full"));
    for applet in String::from_utf8_lossy(&applets).lines() {
        let link = root.join(applet);
        if applet != "bin/busybox" && std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink("/bin/busybox", link).unwrap();
        }
    }
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )
    .unwrap();
    std::fs::write(root.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n").unwrap();
    let layout = dir.join("oci");
    std::fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
    let tar = dir.join("layer.tar");
    run(Command::new("tar")
        .arg("-C")
        .arg(&root)
        .args(["--numeric-owner", "-cf"])
        .arg(&tar)
        .arg("."));
    let (layer, layer_size) = blob(&layout, &std::fs::read(&tar).unwrap());
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["/bin/sh"],
        },
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{layer}")]},
    });
    let (config, config_size) = blob(&layout, config.to_string().as_bytes());
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": format!("sha256:{config}"),
            "size": config_size,
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": format!("sha256:{layer}"),
            "size": layer_size,
        }],
    });
    let (manifest, manifest_size) = blob(&layout, manifest.to_string().as_bytes());
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": format!("sha256:{manifest}"),
            "size": manifest_size,
        }],
    });
    std::fs::write(layout.join("index.json"), index.to_string()).unwrap();
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    layout
}

/// The config of a provider on `dir` (data dir and image store inside it).
pub fn config(dir: &Path) -> BwrapConfig {
    BwrapConfig {
        data_dir: dir.join("data").to_string_lossy().into_owned(),
        images_dir: dir.join("images").to_string_lossy().into_owned(),
        agent_path: agent().to_string_lossy().into_owned(),
        cgroup_parent: CGROUP_PARENT.into(),
        ..Default::default()
    }
}

/// A provider on a fresh directory whose store holds [`IMAGE`]; panics when the host cannot
/// run bwrap sandboxes (this binary is selected only where it should).
pub async fn fixture() -> Fixture {
    fixture_with(|_| {}).await
}

/// [`fixture`] with `change` applied to the provider's config.
pub async fn fixture_with(change: impl FnOnce(&mut BwrapConfig)) -> Fixture {
    let dir = tempfile::Builder::new()
        .prefix("stacyvm-bwrap-test-")
        .tempdir()
        .unwrap();
    let mut config = config(dir.path());
    change(&mut config);
    let p = BwrapProvider::new(config.clone()).unwrap();
    p.health().await.expect("bwrap provider unhealthy");
    let layout = busybox_layout(dir.path());
    let tag = stacyvm_image::ImageRef::parse(IMAGE).unwrap();
    p.image_store().import(&layout, Some(&tag)).await.unwrap();
    Fixture {
        p: Arc::new(p),
        config,
        dir,
    }
}

pub fn spec() -> SandboxSpec {
    conformance::spec(IMAGE)
}

pub async fn spawn(p: &dyn Provider) -> String {
    p.spawn(&spec()).await.unwrap().runtime_id
}

pub async fn spawn_with(p: &dyn Provider, memory_mb: i64) -> String {
    let s = SandboxSpec {
        memory_mb,
        ..spec()
    };
    p.spawn(&s).await.unwrap().runtime_id
}

/// Output (stdout then stderr) and exit code of `cmd` in the sandbox.
pub async fn sh_out(p: &dyn Provider, id: &str, cmd: &str) -> (i32, String) {
    let c = exec_collect(p, id, sh(cmd)).await;
    let code = c
        .result
        .as_ref()
        .copied()
        .unwrap_or_else(|e| panic!("{cmd}: {e:?}"));
    (code, format!("{}{}", c.stdout_str(), c.stderr_str()))
}
