//! A sandbox on disk: `<data_dir>/sandboxes/<id>/` holds everything the provider needs to find,
//! reach and remove it after a restart:
//!
//! ```text
//! sandbox.json   Meta: id, image, lower dir, cgroups, bwrap's pid, cluster
//! disk.ext4      the writable layer's file system when it has a quota (layer.rs)
//! layer/         where that file system is mounted (a plain directory without a quota),
//!   upper/ work/ the overlay's private writable layer and its work dir
//! merged/        the overlay mount point, bwrap's new root
//! run/           bind-mounted at /.stacyvm/run: the agent's socket
//! console.log    bwrap's and the agent's stdout and stderr
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::cgroup::Cgroups;
use crate::ProviderError;

/// What `sandbox.json` records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct Meta {
    pub id: String,
    pub image: String,
    /// The image store's root filesystem the overlay reads (hard links; never written).
    pub lower: PathBuf,
    pub cgroups: Cgroups,
    /// bwrap's host pid once started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    // Sandboxes from before previews connected inside the namespace also have `preview_port`
    // (pasta's forward of port 3000): read and ignored.
}

/// The paths of one sandbox.
#[derive(Debug, Clone)]
pub(super) struct Paths {
    pub dir: PathBuf,
}

impl Paths {
    pub(super) fn new(data_dir: &Path, id: &str) -> Self {
        Paths {
            dir: data_dir.join("sandboxes").join(id),
        }
    }

    pub(super) fn meta(&self) -> PathBuf {
        self.dir.join("sandbox.json")
    }
    pub(super) fn disk_image(&self) -> PathBuf {
        self.dir.join("disk.ext4")
    }
    /// The loop device spawn attaches the disk to, noted before attaching it.
    pub(super) fn loop_record(&self) -> PathBuf {
        self.dir.join("loop")
    }
    pub(super) fn layer(&self) -> PathBuf {
        self.dir.join("layer")
    }
    pub(super) fn upper(&self) -> PathBuf {
        self.layer().join("upper")
    }
    pub(super) fn work(&self) -> PathBuf {
        self.layer().join("work")
    }
    pub(super) fn merged(&self) -> PathBuf {
        self.dir.join("merged")
    }
    pub(super) fn run(&self) -> PathBuf {
        self.dir.join("run")
    }
    pub(super) fn socket(&self) -> PathBuf {
        self.run().join("agent.sock")
    }
    pub(super) fn console(&self) -> PathBuf {
        self.dir.join("console.log")
    }

    /// Makes the directory (private: it holds the sandbox's whole file system) and its mount
    /// points; the layer's contents come with [`Paths::create_layer_dirs`].
    pub(super) fn create(&self) -> Result<(), ProviderError> {
        use std::os::unix::fs::DirBuilderExt;
        let fail = |e| ProviderError::internal_with("creating the sandbox directory failed", e);
        if let Some(parent) = self.dir.parent() {
            std::fs::create_dir_all(parent).map_err(fail)?;
        }
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&self.dir)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::AlreadyExists => {
                    ProviderError::InvalidInput("sandbox already exists".into())
                }
                _ => fail(e),
            })?;
        for d in [self.layer(), self.merged(), self.run()] {
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(d)
                .map_err(fail)?;
        }
        Ok(())
    }

    /// Makes `upper/` and `work/` in the layer (mounted by then when it has a quota).
    pub(super) fn create_layer_dirs(&self) -> Result<(), ProviderError> {
        use std::os::unix::fs::DirBuilderExt;
        let fail = |e| ProviderError::internal_with("creating the sandbox directory failed", e);
        for d in [self.upper(), self.work()] {
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(d)
                .map_err(fail)?;
        }
        // The writable layer starts with /workspace (the default working directory), so an
        // image without one still works and nothing is ever written to the shared root fs.
        std::fs::DirBuilder::new()
            .mode(0o755)
            .create(self.upper().join("workspace"))
            .map_err(fail)?;
        std::fs::set_permissions(
            self.upper(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .map_err(fail)
    }

    /// Writes `meta` atomically (a crash leaves the old or the new record, never half of one).
    pub(super) fn write_meta(&self, meta: &Meta) -> Result<(), ProviderError> {
        let fail = |e| ProviderError::internal_with("recording the sandbox failed", e);
        let json = serde_json::to_vec_pretty(meta)
            .map_err(|e| ProviderError::internal_with("recording the sandbox failed", e))?;
        let tmp = self.dir.join(".sandbox.json.tmp");
        std::fs::write(&tmp, json).map_err(fail)?;
        std::fs::rename(&tmp, self.meta()).map_err(fail)
    }

    pub(super) fn read_meta(&self) -> Option<Meta> {
        let b = std::fs::read(self.meta()).ok()?;
        serde_json::from_slice(&b).ok()
    }
}

/// The ids of the sandboxes recorded under `data_dir`, sorted.
pub(super) fn scan(data_dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(data_dir.join("sandboxes")) else {
        return Vec::new();
    };
    let mut ids: Vec<String> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|id| super::valid_id(id))
        .collect();
    ids.sort();
    ids
}

/// Whether `pid` is the bwrap of the sandbox in `dir`: alive, not a zombie, and its command
/// line names the sandbox's mount point (a recycled pid does not).
pub(super) fn is_our_bwrap(pid: u32, paths: &Paths) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let zombie = stat
        .rsplit_once(')')
        .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'));
    if zombie {
        return false;
    }
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let merged = paths.merged();
    let want = merged.as_os_str().as_encoded_bytes();
    cmdline.split(|b| *b == 0).any(|arg| arg == want)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[path = "state_tests.rs"]
mod tests;
