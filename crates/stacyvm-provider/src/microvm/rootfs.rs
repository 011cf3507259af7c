//! Root filesystems: a read-only ext4 base per image, built once and cached, and a qcow2
//! overlay per sandbox on top of it.
//!
//! Lookup order for an image: when the OCI image store (docs/images.md) has it,
//! `images/by-manifest/<digest>.ext4`, built on first use from the store's root filesystem with
//! `mkfs.ext4 -d` (no loop mount, no root, no Docker daemon needed); else, when the local
//! Docker knows it, `images/by-digest/<id>.ext4` (the same, from `docker export`); otherwise a
//! prebuilt `images/<name>.ext4` (what `scripts/setup-microvm.sh` writes).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::process::Command;

use crate::{MicrovmConfig, ProviderError};

/// Size of a freshly built base disk (sparse); the guest's free space comes from it.
const BASE_DISK_MB: u64 = 1024;
const TOOL_TIMEOUT: Duration = Duration::from_secs(300);
/// How long an image's resolved base disk is reused without asking Docker again. Asking costs
/// about 20 ms (a `docker` process), which would dominate a spawn from the warm pool; a
/// re-tagged image is noticed once this has passed.
const RESOLVED_TTL: Duration = Duration::from_secs(10);

pub(crate) struct Rootfs {
    images: PathBuf,
    /// The OCI image store's directory, when one is configured.
    store: Option<PathBuf>,
    /// One build at a time: two spawns of a new image must not both build it.
    build: tokio::sync::Mutex<()>,
    resolved: Mutex<HashMap<String, (PathBuf, Instant)>>,
}

async fn run(cmd: &mut Command, what: &str) -> Result<Vec<u8>, ProviderError> {
    cmd.stdin(Stdio::null()).kill_on_drop(true);
    let out = tokio::time::timeout(TOOL_TIMEOUT, cmd.output())
        .await
        .map_err(|_| ProviderError::internal(format!("{what} timed out")))?
        .map_err(|e| ProviderError::internal_with(format!("{what} could not start"), e))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        tracing::warn!(what, stderr = %err.trim(), "rootfs tool failed");
        return Err(ProviderError::internal(format!("{what} failed")));
    }
    Ok(out.stdout)
}

impl Rootfs {
    pub fn new(data_dir: &Path, store: Option<PathBuf>) -> Self {
        Rootfs {
            images: data_dir.join("images"),
            store,
            build: tokio::sync::Mutex::new(()),
            resolved: Mutex::new(HashMap::new()),
        }
    }

    /// The base disk for `image`, building it when needed (resolutions are reused for
    /// [`RESOLVED_TTL`] while the disk exists).
    pub async fn base(&self, image: &str) -> Result<PathBuf, ProviderError> {
        let cached = {
            let r = self.resolved.lock().unwrap_or_else(|p| p.into_inner());
            r.get(image)
                .filter(|(p, at)| at.elapsed() < RESOLVED_TTL && p.is_file())
                .map(|(p, _)| p.clone())
        };
        if let Some(p) = cached {
            return Ok(p);
        }
        let p = self.resolve(image).await?;
        let mut r = self.resolved.lock().unwrap_or_else(|p| p.into_inner());
        if r.len() > 1024 {
            r.clear();
        }
        r.insert(image.to_string(), (p.clone(), Instant::now()));
        Ok(p)
    }

    async fn resolve(&self, image: &str) -> Result<PathBuf, ProviderError> {
        if let Some(path) = self.store_disk(image).await? {
            return Ok(path);
        }
        if let Some(digest) = docker_image_id(image).await {
            let hex: String = digest
                .trim_start_matches("sha256:")
                .chars()
                .filter(char::is_ascii_hexdigit)
                .collect();
            if !hex.is_empty() {
                let path = self.images.join("by-digest").join(format!("{hex}.ext4"));
                let _guard = self.build.lock().await;
                if !path.exists() {
                    build_from_docker(image, &path).await?;
                }
                return Ok(path);
            }
        }
        let named = self.images.join(MicrovmConfig::image_disk_name(image));
        if named.is_file() {
            return Ok(named);
        }
        Err(ProviderError::ImageNotFound(image.to_string()))
    }

    /// The base disk of `image` built from the image store's root filesystem; `None` when no
    /// store is configured or it does not have the image (the other sources are asked then).
    async fn store_disk(&self, image: &str) -> Result<Option<PathBuf>, ProviderError> {
        let Some(root) = &self.store else {
            return Ok(None);
        };
        let Ok(r) = stacyvm_image::ImageRef::parse(image) else {
            return Ok(None);
        };
        // A store that cannot be opened (no such directory, no permission) is one that does
        // not have the image.
        let Ok(store) = stacyvm_image::ImageStore::open(root.clone()) else {
            return Ok(None);
        };
        let fs = match store.rootfs(&r).await {
            Ok(fs) => fs,
            Err(stacyvm_image::ImageError::NotFound { .. }) => return Ok(None),
            Err(e) => {
                return Err(ProviderError::internal(format!(
                    "image {image} in the image store: {e}"
                )))
            }
        };
        let hex: String = fs
            .manifest_digest
            .to_string()
            .trim_start_matches("sha256:")
            .chars()
            .filter(char::is_ascii_hexdigit)
            .collect();
        let path = self.images.join("by-manifest").join(format!("{hex}.ext4"));
        let _guard = self.build.lock().await;
        if !path.exists() {
            tracing::info!(image, "building a microvm base disk from the image store");
            let src = fs.path.clone();
            build_disk(&path, |tree: PathBuf| async move {
                copy_tree(&src, &tree).await
            })
            .await?;
        }
        Ok(Some(path))
    }
}

/// `from` copied to `to` as hard links (the store's files are never written: mkfs only reads
/// them), or as a plain copy across filesystems.
async fn copy_tree(from: &Path, to: &Path) -> Result<(), ProviderError> {
    let linked = run(
        Command::new("cp").arg("-al").arg(from).arg(to),
        "linking the image tree",
    )
    .await;
    if linked.is_ok() {
        return Ok(());
    }
    let _ = tokio::fs::remove_dir_all(to).await;
    run(
        Command::new("cp").arg("-a").arg(from).arg(to),
        "copying the image tree",
    )
    .await
    .map(drop)
}

/// The local Docker's image id, if docker is installed and has the image.
async fn docker_image_id(image: &str) -> Option<String> {
    let mut cmd = Command::new("docker");
    cmd.args(["image", "inspect", "--format", "{{.Id}}", "--", image])
        .stderr(Stdio::null());
    let out = run(&mut cmd, "docker image inspect").await.ok()?;
    let id = String::from_utf8_lossy(&out).trim().to_string();
    (!id.is_empty()).then_some(id)
}

async fn build_from_docker(image: &str, out: &Path) -> Result<(), ProviderError> {
    tracing::info!(image, "building a microvm base disk from docker export");
    let image = image.to_string();
    build_disk(out, |tree: PathBuf| async move {
        let work = tree
            .parent()
            .ok_or_else(|| ProviderError::internal("build directory has no parent"))?;
        let tar = work.join("rootfs.tar");
        let cid = run(
            Command::new("docker").args(["create", "--", &image, "/bin/true"]),
            "docker create",
        )
        .await?;
        let cid = String::from_utf8_lossy(&cid).trim().to_string();
        let exported = run(
            Command::new("docker")
                .arg("export")
                .arg("-o")
                .arg(&tar)
                .arg(&cid),
            "docker export",
        )
        .await;
        let _ = run(Command::new("docker").args(["rm", "-f", &cid]), "docker rm").await;
        exported?;
        tokio::fs::create_dir_all(&tree)
            .await
            .map_err(|e| ProviderError::internal_with("creating a build directory failed", e))?;
        run(
            Command::new("tar")
                .arg("-C")
                .arg(&tree)
                .arg("-xf")
                .arg(&tar),
            "unpacking the image",
        )
        .await
        .map(drop)
    })
    .await
}

/// Builds the base disk `out` from the tree `fill` writes at the path it is given (which does
/// not exist yet): in a temporary directory beside `out`, renamed into place once whole, so a
/// crash leaves no half-built disk under its final name.
async fn build_disk<F, Fut>(out: &Path, fill: F) -> Result<(), ProviderError>
where
    F: FnOnce(PathBuf) -> Fut,
    Fut: std::future::Future<Output = Result<(), ProviderError>>,
{
    let dir = out
        .parent()
        .ok_or_else(|| ProviderError::internal("image cache has no parent directory"))?;
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(|e| ProviderError::internal_with("creating the image cache failed", e))?;
    let work = tempfile::Builder::new()
        .prefix(".build-")
        .tempdir_in(dir)
        .map_err(|e| ProviderError::internal_with("creating a build directory failed", e))?;
    let tree = work.path().join("tree");
    fill(tree.clone()).await?;
    for d in ["proc", "sys", "dev", "tmp", "workspace"] {
        tokio::fs::create_dir_all(tree.join(d))
            .await
            .map_err(|e| ProviderError::internal_with("preparing the image tree failed", e))?;
    }
    let tmp_img = work.path().join("disk.ext4");
    let f = std::fs::File::create(&tmp_img)
        .map_err(|e| ProviderError::internal_with("creating the base disk failed", e))?;
    f.set_len(BASE_DISK_MB << 20)
        .map_err(|e| ProviderError::internal_with("sizing the base disk failed", e))?;
    drop(f);
    run(
        Command::new("mkfs.ext4")
            .args(["-q", "-F", "-L", "stacyvm-root", "-d"])
            .arg(&tree)
            .arg(&tmp_img),
        "mkfs.ext4",
    )
    .await?;
    tokio::fs::rename(&tmp_img, out)
        .await
        .map_err(|e| ProviderError::internal_with("storing the base disk failed", e))
}

/// A qcow2 overlay over the read-only `base` (raw ext4).
pub(crate) async fn create_overlay(base: &Path, overlay: &Path) -> Result<(), ProviderError> {
    run(
        Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
            .arg(base)
            .arg(overlay),
        "qemu-img create",
    )
    .await
    .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stems() {
        assert_eq!(
            MicrovmConfig::image_file_stem("stacyvm-test/busybox:latest"),
            "stacyvm-test_busybox_latest"
        );
        assert_eq!(MicrovmConfig::image_file_stem("../x"), ".._x");
        assert!(!MicrovmConfig::image_file_stem("a/../../b").contains('/'));
    }
}
