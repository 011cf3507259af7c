//! Per-sandbox cgroups: memory, pids and CPU limits, and the one reliable way to kill every
//! process of a sandbox. Two layouts:
//!
//! - **v2** (`/sys/fs/cgroup/cgroup.controllers` exists): one group
//!   `/sys/fs/cgroup/<parent>/<id>` with `memory.max`, `memory.swap.max`, `pids.max` and
//!   `cpu.max`; killed with `cgroup.kill`. The parent sits at the root because of v2's "no
//!   internal processes" rule: the provider's own cgroup has processes, so it could not hand
//!   controllers to children.
//! - **v1 / hybrid** (per-controller mounts `memory`, `pids`, `cpu`): one group per hierarchy,
//!   `/sys/fs/cgroup/<controller>/<parent>/<id>`, with `memory.limit_in_bytes` (plus
//!   `memory.memsw.limit_in_bytes` where swap is accounted), `pids.max` and
//!   `cpu.cfs_quota_us`; killed by SIGKILLing every pid in the pids group until it is empty.
//!
//! The sandbox's bwrap joins its groups in `pre_exec` (between fork and exec), so the agent
//! and everything it starts are inside from their first instruction: no race with a fork.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::ProviderError;

const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// CFS period for the CPU quota (the kernel's default).
const CPU_PERIOD_US: u64 = 100_000;
/// How long a kill may take to empty a group before destroy reports it.
const KILL_TIMEOUT: Duration = Duration::from_secs(10);

/// The cgroup layout of this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum Layout {
    V2,
    V1,
}

impl Layout {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Layout::V2 => "v2",
            Layout::V1 => "v1",
        }
    }
}

/// What a sandbox may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Limits {
    pub memory_bytes: u64,
    /// `None` = no limit.
    pub pids: Option<u64>,
    /// CPUs in thousandths (1000 = one CPU); `None` = no limit.
    pub millicpus: Option<u64>,
}

/// A sandbox's groups, recorded in its `sandbox.json` so a restarted provider removes the
/// same ones.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Cgroups {
    pub layout: Layout,
    /// v2: the one group; v1: memory, pids, cpu (in that order).
    pub dirs: Vec<PathBuf>,
}

fn fail(what: &str) -> impl Fn(io::Error) -> ProviderError + '_ {
    move |e| ProviderError::internal_with(format!("sandbox cgroup: {what} failed"), e)
}

/// The layout of this host, or `Unavailable` saying what is missing.
pub(super) fn detect() -> Result<Layout, ProviderError> {
    detect_in(Path::new(CGROUP_ROOT))
}

/// [`detect`] on the cgroup mount `root` (the tests' fake cgroupfs; the provider uses
/// [`CGROUP_ROOT`]).
fn detect_in(root: &Path) -> Result<Layout, ProviderError> {
    if root.join("cgroup.controllers").is_file() {
        return Ok(Layout::V2);
    }
    let missing: Vec<&str> = ["memory", "pids", "cpu"]
        .into_iter()
        .filter(|c| !root.join(c).join("cgroup.procs").is_file())
        .collect();
    if missing.is_empty() {
        return Ok(Layout::V1);
    }
    Err(ProviderError::Unavailable(format!(
        "bwrap needs cgroups: neither a cgroup v2 mount at {} nor v1 hierarchies for {}",
        root.display(),
        missing.join(", ")
    )))
}

/// The groups of sandbox `id`: v2 one, v1 memory, pids and cpu (in that order).
pub(super) fn paths(layout: Layout, parent: &str, id: &str) -> Vec<PathBuf> {
    paths_in(Path::new(CGROUP_ROOT), layout, parent, id)
}

fn paths_in(root: &Path, layout: Layout, parent: &str, id: &str) -> Vec<PathBuf> {
    match layout {
        Layout::V2 => vec![root.join(parent).join(id)],
        Layout::V1 => ["memory", "pids", "cpu"]
            .iter()
            .map(|c| root.join(c).join(parent).join(id))
            .collect(),
    }
}

/// Creates `<parent>/<id>` with `limits` (removing what it made if a step fails).
pub(super) fn create(
    layout: Layout,
    parent: &str,
    id: &str,
    limits: Limits,
) -> Result<Cgroups, ProviderError> {
    create_in(Path::new(CGROUP_ROOT), layout, parent, id, limits)
}

fn create_in(
    root: &Path,
    layout: Layout,
    parent: &str,
    id: &str,
    limits: Limits,
) -> Result<Cgroups, ProviderError> {
    let groups = Cgroups {
        layout,
        dirs: paths_in(root, layout, parent, id),
    };
    let made = match layout {
        Layout::V2 => create_v2(root, parent, &groups.dirs[0], limits),
        Layout::V1 => create_v1(&groups.dirs, limits),
    };
    if let Err(e) = made {
        let _ = remove(&groups);
        return Err(e);
    }
    Ok(groups)
}

fn write(dir: &Path, file: &str, value: &str) -> Result<(), ProviderError> {
    std::fs::write(dir.join(file), value).map_err(|e| {
        ProviderError::internal_with(format!("sandbox cgroup: writing {file} failed"), e)
    })
}

fn create_v2(root: &Path, parent: &str, dir: &Path, limits: Limits) -> Result<(), ProviderError> {
    let parent_dir = root.join(parent);
    std::fs::create_dir_all(&parent_dir).map_err(fail("creating the parent group"))?;
    // Controllers must be enabled on every level above the group. cpu is optional: it cannot be
    // enabled while realtime threads run outside a group, and the sandbox still works without.
    for level in [root, parent_dir.as_path()] {
        for c in ["memory", "pids"] {
            write(level, "cgroup.subtree_control", &format!("+{c}"))?;
        }
        if let Err(e) = write(level, "cgroup.subtree_control", "+cpu") {
            tracing::warn!(error = %e, "bwrap: cgroup v2 cpu controller unavailable, no CPU limit");
        }
    }
    match std::fs::create_dir(dir) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
            return Err(fail("creating the group")(e))
        }
        _ => {}
    }
    write(dir, "memory.max", &limits.memory_bytes.to_string())?;
    // A limit that swap could stretch would not be one; absent without swap accounting.
    if dir.join("memory.swap.max").exists() {
        write(dir, "memory.swap.max", "0")?;
    }
    let pids = limits.pids.map_or("max".into(), |p| p.to_string());
    write(dir, "pids.max", &pids)?;
    if let Some(m) = limits.millicpus {
        if dir.join("cpu.max").exists() {
            write(dir, "cpu.max", &format!("{} {CPU_PERIOD_US}", quota_us(m)))?;
        }
    }
    Ok(())
}

fn create_v1(dirs: &[PathBuf], limits: Limits) -> Result<(), ProviderError> {
    for d in dirs {
        std::fs::create_dir_all(d).map_err(fail("creating the group"))?;
    }
    let (memory, pids, cpu) = (&dirs[0], &dirs[1], &dirs[2]);
    let bytes = limits.memory_bytes.to_string();
    write(memory, "memory.limit_in_bytes", &bytes)?;
    // memsw (memory + swap) must be ≥ the memory limit, so it is written after it; it only
    // exists where swap is accounted.
    if memory.join("memory.memsw.limit_in_bytes").exists() {
        write(memory, "memory.memsw.limit_in_bytes", &bytes)?;
    }
    let max = limits.pids.map_or("max".into(), |p| p.to_string());
    write(pids, "pids.max", &max)?;
    if let Some(m) = limits.millicpus {
        write(cpu, "cpu.cfs_period_us", &CPU_PERIOD_US.to_string())?;
        write(cpu, "cpu.cfs_quota_us", &quota_us(m).to_string())?;
    }
    Ok(())
}

fn quota_us(millicpus: u64) -> u64 {
    // At least 1 ms per period: the kernel's minimum quota.
    (millicpus * CPU_PERIOD_US / 1000).max(1000)
}

impl Cgroups {
    /// The `cgroup.procs` files a new process writes `0` to in order to join, prepared before
    /// the fork (nothing may allocate between fork and exec).
    pub(super) fn procs_files(&self) -> Result<Vec<CString>, ProviderError> {
        self.dirs
            .iter()
            .map(|d| {
                CString::new(d.join("cgroup.procs").as_os_str().as_bytes())
                    .map_err(|e| ProviderError::internal_with("sandbox cgroup path", e))
            })
            .collect()
    }

    /// The group whose `cgroup.procs` lists every process of the sandbox.
    pub(super) fn members_dir(&self) -> &Path {
        match self.layout {
            Layout::V2 => &self.dirs[0],
            Layout::V1 => &self.dirs[1],
        }
    }

    /// The pids in the sandbox's groups (empty once the group is gone).
    pub(super) fn pids(&self) -> Vec<i32> {
        std::fs::read_to_string(self.members_dir().join("cgroup.procs"))
            .map(|s| s.lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default()
    }

    /// Memory in use and its limit, in bytes.
    pub(super) fn memory(&self) -> Option<(u64, u64)> {
        let read = |f: &str| -> Option<u64> {
            std::fs::read_to_string(self.dirs[0].join(f))
                .ok()?
                .trim()
                .parse()
                .ok()
        };
        match self.layout {
            Layout::V2 => Some((read("memory.current")?, read("memory.max").unwrap_or(0))),
            Layout::V1 => Some((
                read("memory.usage_in_bytes")?,
                read("memory.limit_in_bytes")?,
            )),
        }
    }
}

/// Kills every process in the sandbox's groups and waits until they are gone.
pub(super) async fn kill(groups: &Cgroups) -> Result<(), ProviderError> {
    let kill_file = groups.members_dir().join("cgroup.kill");
    let one_shot = groups.layout == Layout::V2 && kill_file.exists();
    let deadline = Instant::now() + KILL_TIMEOUT;
    loop {
        if !groups.members_dir().exists() {
            return Ok(());
        }
        let pids = groups.pids();
        if pids.is_empty() {
            return Ok(());
        }
        if one_shot {
            // The kernel kills every member, including ones forked meanwhile.
            let _ = std::fs::write(&kill_file, "1");
        } else {
            // v1: one pass can miss a child forked after the list was read, so repeat until
            // the group is empty. Killing the sandbox's PID 1 (the agent) also makes the kernel
            // kill the rest of its pid namespace and refuse new forks there.
            for pid in pids {
                super::sys::kill(pid, libc::SIGKILL);
            }
        }
        if Instant::now() >= deadline {
            return Err(ProviderError::internal(
                "sandbox processes did not die within 10 s",
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Removes the groups (after [`kill`]); a group already gone is fine.
pub(super) fn remove(groups: &Cgroups) -> Result<(), ProviderError> {
    for d in &groups.dirs {
        remove_dir(d)?;
    }
    Ok(())
}

/// Removes one emptied group; blocking, for up to 2 s while it is busy. Absent is fine.
pub(super) fn remove_dir(d: &Path) -> Result<(), ProviderError> {
    // A dying member may keep the group busy for a moment after it left `cgroup.procs`.
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match std::fs::remove_dir(d) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if Instant::now() < deadline && e.raw_os_error() == Some(libc::EBUSY) => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(fail("removing the group")(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_quota() {
        assert_eq!(quota_us(1000), 100_000);
        assert_eq!(quota_us(2500), 250_000);
        assert_eq!(quota_us(1), 1000, "the kernel's minimum");
    }

    #[test]
    fn layout_names_round_trip_in_json() {
        for l in [Layout::V1, Layout::V2] {
            let s = serde_json::to_string(&l).unwrap_or_default();
            assert_eq!(s, format!("\"{}\"", l.as_str()));
        }
    }
}

#[cfg(test)]
#[path = "cgroup_tests.rs"]
mod fake_fs_tests;
