//! Spawn, destroy and adoption of bwrap sandboxes.
//!
//! A spawn makes, in order: the sandbox directory, the overlay (image store root fs below, the
//! sandbox's `upper/` above), the cgroups with their limits, `sandbox.json`, then bwrap, and
//! waits for its agent to answer. A failure at any step undoes the steps before it. Destroy
//! undoes them in reverse: every process (through the cgroup), the groups, the mount, the
//! directory.

use std::sync::Arc;

use stacyvm_image::ImageRef;
use tokio::time::Instant;

use super::cgroup::{self, Cgroups, Limits};
use super::launch::{self, START_TIMEOUT};
use super::settings::NetworkMode;
use super::state::{self, Meta, Paths};
use super::{layer, net, sys, BwrapProvider, Sandbox};
use crate::{ProviderError, SandboxSpec};

impl BwrapProvider {
    /// The image's root filesystem from the store, pulled first when the store does not have
    /// it (once for concurrent spawns; `ImageStore::rootfs_or_pull`).
    async fn rootfs(&self, image: &str) -> Result<stacyvm_image::RootFs, ProviderError> {
        let r = ImageRef::parse(image)
            .map_err(|e| ProviderError::InvalidInput(format!("image {image:?}: {e}")))?;
        self.store
            .rootfs_or_pull(&r)
            .await
            .map_err(|e| crate::images::pull_error(image, e))
    }

    fn limits(&self, spec: &SandboxSpec) -> Limits {
        let s = &self.settings;
        let mb = if spec.memory_mb > 0 {
            spec.memory_mb
        } else {
            s.default_memory_mb
        };
        let cpus = if spec.vcpus > 0 {
            spec.vcpus
        } else {
            s.default_vcpus
        };
        Limits {
            memory_bytes: u64::try_from(mb.max(16)).unwrap_or(16) * 1024 * 1024,
            pids: s.pids_limit,
            millicpus: u64::try_from(cpus)
                .ok()
                .filter(|c| *c > 0)
                .map(|c| c * 1000),
        }
    }

    /// Makes the sandbox and starts it; on failure nothing of it is left.
    pub(super) async fn create(&self, spec: &SandboxSpec) -> Result<Arc<Sandbox>, ProviderError> {
        let layout = self.layout()?;
        if self.settings.agent.as_os_str().is_empty() {
            return Err(crate::agent::missing("bwrap"));
        }
        let rootfs = self.rootfs(&spec.image).await?;
        let paths = Paths::new(&self.settings.data_dir, &spec.id);
        let mut undo = Undo::new(paths.clone());
        blocking({
            let paths = paths.clone();
            move || paths.create()
        })
        .await?;
        undo.dir = true;
        // From here on a failure unmounts whatever is mounted (not mounted is fine).
        undo.mounted = true;
        let (data_dir, mkfs, disk_mb, user_dns) = (
            self.settings.data_dir.clone(),
            self.settings.mkfs.clone(),
            self.settings.disk_mb,
            (self.settings.network == NetworkMode::User).then(|| self.settings.dns.clone()),
        );
        blocking({
            let paths = paths.clone();
            move || {
                layer::create(&paths, &data_dir, &mkfs, disk_mb)?;
                match user_dns {
                    Some(dns) => net::configure_dns(&paths.upper(), &dns),
                    None => Ok(()),
                }
            }
        })
        .await?;
        let (lower, upper, work, merged) = (
            rootfs.path.clone(),
            paths.upper(),
            paths.work(),
            paths.merged(),
        );
        blocking(move || {
            sys::mount_overlay(&lower, &upper, &work, &merged).map_err(|e| match e.raw_os_error() {
                Some(libc::ENODEV) => ProviderError::Unavailable(
                    "overlayfs is not available on this host (modprobe overlay); bwrap sandboxes \
                     need it for their private writable layer"
                        .into(),
                ),
                _ => ProviderError::internal_with(
                    "mounting the sandbox's root file system failed",
                    e,
                ),
            })
        })
        .await?;
        let (parent, id, limits) = (
            self.settings.cgroup_parent.clone(),
            spec.id.clone(),
            self.limits(spec),
        );
        let groups = blocking(move || cgroup::create(layout, &parent, &id, limits)).await?;
        undo.groups = Some(groups.clone());
        let mut meta = Meta {
            id: spec.id.clone(),
            image: spec.image.clone(),
            lower: rootfs.path.clone(),
            cgroups: groups.clone(),
            pid: None,
            cluster: self.settings.cluster.clone(),
        };
        paths.write_meta(&meta)?;
        let _ = std::fs::write(
            paths.console(),
            format!(
                "[INFO] bwrap sandbox {} started from {}\n",
                spec.id, spec.image
            ),
        );
        let mut child = launch::spawn(
            &self.settings,
            &paths,
            &spec.id,
            &rootfs.config.env,
            &groups,
        )?;
        meta.pid = child.id();
        paths.write_meta(&meta)?;
        let conn = launch::connect(&paths, &spec.id, Instant::now() + START_TIMEOUT, || {
            matches!(child.try_wait(), Ok(None))
        })
        .await?;
        if self.settings.network == NetworkMode::User {
            let bwrap = meta.pid.unwrap_or_default();
            net::attach(&self.settings, bwrap, &groups, &paths.console()).await?;
        }
        undo.disarm();
        Ok(Arc::new(Sandbox::new(meta, paths, Some(child), Some(conn))))
    }

    /// The sandbox recorded in `id`'s directory, as a restarted provider finds it (its agent
    /// connection is made on first use). A directory without a record is what a spawn left
    /// when the provider died before writing it: its mount, groups and files are removed.
    pub(super) fn adopt(&self, id: &str) -> Option<Arc<Sandbox>> {
        let paths = Paths::new(&self.settings.data_dir, id);
        match paths.read_meta().filter(|m| m.id == id) {
            Some(meta) => Some(Arc::new(Sandbox::new(meta, paths, None, None))),
            None => {
                tracing::warn!(sandbox = id, "bwrap: removing an unfinished sandbox");
                let groups = self.layout().ok().map(|l| Cgroups {
                    layout: l,
                    dirs: cgroup::paths(l, &self.settings.cgroup_parent, id),
                });
                let undo = Undo {
                    paths,
                    dir: true,
                    mounted: true,
                    groups,
                };
                if let Err(e) = undo.run() {
                    tracing::warn!(sandbox = id, error = %e, "bwrap: cleanup failed");
                }
                None
            }
        }
    }

    /// Ends everything of `sb`: processes, cgroups, mount, directory.
    pub(super) async fn teardown(&self, sb: &Sandbox) -> Result<(), ProviderError> {
        sb.close();
        super::freeze::thaw_for_kill(&sb.meta.cgroups);
        cgroup::kill(&sb.meta.cgroups).await?;
        // bwrap's outer process is in the groups too; reap it if it is our child.
        if let Some(mut c) = sb.take_child() {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), c.wait()).await;
        }
        let undo = Undo {
            paths: sb.paths.clone(),
            dir: true,
            mounted: true,
            groups: Some(sb.meta.cgroups.clone()),
        };
        blocking(move || undo.run()).await
    }
}

/// What a spawn has made so far, undone on drop unless disarmed (an error or a dropped future
/// leaves nothing behind).
struct Undo {
    paths: Paths,
    dir: bool,
    mounted: bool,
    groups: Option<Cgroups>,
}

impl Undo {
    fn new(paths: Paths) -> Self {
        Undo {
            paths,
            dir: false,
            mounted: false,
            groups: None,
        }
    }

    fn disarm(&mut self) {
        self.dir = false;
        self.mounted = false;
        self.groups = None;
    }

    /// Kills, unmounts and removes what is recorded; the first failure is returned after every
    /// step was tried.
    fn run(mut self) -> Result<(), ProviderError> {
        let mut first = Ok(());
        if let Some(g) = self.groups.take() {
            // A spawn that failed after bwrap started: its processes go first.
            super::freeze::thaw_for_kill(&g);
            for pid in g.pids() {
                sys::kill(pid, libc::SIGKILL);
            }
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            while !g.pids().is_empty() && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(20));
                for pid in g.pids() {
                    sys::kill(pid, libc::SIGKILL);
                }
            }
            first = first.and(cgroup::remove(&g));
            first = first.and(super::freeze::remove(&g));
        }
        if std::mem::take(&mut self.mounted) {
            let r = sys::unmount(&self.paths.merged()).map_err(|e| {
                ProviderError::internal_with("unmounting the sandbox's root file system failed", e)
            });
            // The layer's disk only once the overlay on it is gone (else it is busy).
            first = first.and(r.and_then(|()| layer::remove(&self.paths)));
        }
        // Never remove a directory with a mount still in it: that would delete through it...
        // into the sandbox's own layer only, but keep the rule simple.
        let mounted = [self.paths.merged(), self.paths.layer()]
            .iter()
            .any(|m| sys::is_mounted(m));
        if std::mem::take(&mut self.dir) && !mounted {
            let r = match std::fs::remove_dir_all(&self.paths.dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(
                    ProviderError::internal_with("removing the sandbox directory failed", e),
                ),
                _ => Ok(()),
            };
            first = first.and(r);
        }
        first
    }
}

impl Drop for Undo {
    fn drop(&mut self) {
        if self.dir || self.mounted || self.groups.is_some() {
            let undo = Undo {
                paths: self.paths.clone(),
                dir: std::mem::take(&mut self.dir),
                mounted: std::mem::take(&mut self.mounted),
                groups: self.groups.take(),
            };
            if let Err(e) = undo.run() {
                tracing::warn!(error = %e, "bwrap: cleaning up a failed spawn");
            }
        }
    }
}

/// Ids of sandboxes recorded under the data dir.
pub(super) fn recorded(data_dir: &std::path::Path) -> Vec<String> {
    state::scan(data_dir)
}

pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ProviderError> + Send + 'static,
) -> Result<T, ProviderError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ProviderError::internal_with("bwrap task failed", e))?
}
