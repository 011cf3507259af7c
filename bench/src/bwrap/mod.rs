//! Benchmarks of issue 15 on the bwrap provider (docs/bwrap.md): spawn to first exec output
//! against docker and a bare `bwrap`, exec overhead against a direct fork, and the memory of
//! many idle sandboxes. Each starts its own `stacyvm serve` with `providers.bwrap` on a private
//! data dir, image store and cgroup parent, filled by `docker save` of the test image and
//! `stacyvm image import` (as tests/e2e/test_bwrap_sdk.py does). bwrap sandboxes outlive their
//! control plane by design, so [`Env`]'s drop kills, unmounts and removes whatever a failed run
//! left, and [`Env::leftovers`] checks a finished run left nothing.

pub mod exec;
pub mod first_output;
pub mod idle;

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tempfile::TempDir;
use tokio::process::Command;

use crate::server::io_err;
use crate::BenchError;

const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// The v1 hierarchies the provider makes groups in (docs/bwrap.md, "cgroups").
const V1_CONTROLLERS: [&str; 3] = ["memory", "pids", "cpu"];

pub struct Opts {
    pub image: String,
    /// The static agent; `None` lets the server search for one.
    pub agent: Option<PathBuf>,
}

/// A private image store, data dir and cgroup parent for one benchmark's server.
pub struct Env {
    pub image: String,
    pub agent: Option<PathBuf>,
    pub images: PathBuf,
    pub data: PathBuf,
    pub cgroup_parent: String,
    dir: TempDir,
}

/// What [`Env::leftovers`] found after a run (all zero when destroy cleaned up).
#[derive(Debug, Default)]
pub struct Leftovers {
    pub processes: usize,
    pub mounts: usize,
    pub cgroups: usize,
    pub dirs: usize,
}

impl Leftovers {
    pub fn is_clean(&self) -> bool {
        self.processes + self.mounts + self.cgroups + self.dirs == 0
    }
}

impl std::fmt::Display for Leftovers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} processes, {} mounts, {} cgroups, {} sandbox dirs",
            self.processes, self.mounts, self.cgroups, self.dirs
        )
    }
}

async fn run_cmd(cmd: &mut Command, what: &str) -> Result<(), BenchError> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(io_err(format!("running {what}")))?;
    if !out.status.success() {
        return Err(BenchError::Unexpected(format!(
            "{what} exited with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// Whether this host has the v2 (unified) cgroup layout.
fn cgroup_v2() -> bool {
    Path::new(CGROUP_ROOT).join("cgroup.controllers").exists()
}

impl Env {
    /// A fresh store holding `o.image` (from the local Docker daemon), an empty data dir and a
    /// cgroup parent named after this process.
    pub async fn prepare(bin: &Path, o: &Opts) -> Result<Env, BenchError> {
        // Under /var/tmp: the data dir holds overlay upper layers, which tmpfs would put in RAM.
        let dir = tempfile::Builder::new()
            .prefix("stacyvm-bench-bwrap-")
            .tempdir_in("/var/tmp")
            .map_err(io_err("creating the bwrap temp dir"))?;
        let env = Env {
            image: o.image.clone(),
            agent: o.agent.clone(),
            images: dir.path().join("images"),
            data: dir.path().join("data"),
            cgroup_parent: format!("stacyvm-bench-{}", std::process::id()),
            dir,
        };
        let archive = env.dir.path().join("image.tar");
        run_cmd(
            Command::new("docker")
                .arg("save")
                .arg("-o")
                .arg(&archive)
                .arg(&o.image),
            &format!(
                "docker save {} (scripts/setup-docker.sh builds it)",
                o.image
            ),
        )
        .await?;
        run_cmd(
            Command::new(bin)
                .arg("image")
                .arg("--root")
                .arg(&env.images)
                .arg("import")
                .arg(&archive),
            "stacyvm image import",
        )
        .await?;
        Ok(env)
    }

    /// The `providers:` flow mapping: bwrap the default, docker beside it when asked.
    pub fn providers(&self, docker: bool) -> String {
        let agent = self.agent.as_ref().map_or_else(String::new, |a| {
            format!(", agent_path: \"{}\"", a.display())
        });
        format!(
            "{{default: \"bwrap\", mock: {{enabled: false}}, \
             docker: {{enabled: {docker}, default_image: \"{image}\"}}, \
             bwrap: {{enabled: true, data_dir: \"{data}\", images_dir: \"{images}\", \
             cgroup_parent: \"{parent}\"{agent}}}}}",
            image = self.image,
            data = self.data.display(),
            images = self.images.display(),
            parent = self.cgroup_parent,
        )
    }

    /// Extra config lines: the agent for docker's processes, as the other benchmarks name it.
    pub fn extra(&self) -> String {
        crate::worker::agent_config(self.agent.as_deref())
    }

    /// The group directories of the sandboxes (one per hierarchy on v1).
    fn parent_dirs(&self) -> Vec<PathBuf> {
        if cgroup_v2() {
            vec![Path::new(CGROUP_ROOT).join(&self.cgroup_parent)]
        } else {
            V1_CONTROLLERS
                .iter()
                .map(|c| Path::new(CGROUP_ROOT).join(c).join(&self.cgroup_parent))
                .collect()
        }
    }

    /// The group whose `cgroup.procs` lists every process of sandbox `id` (pids on v1).
    pub fn procs_file(&self, id: &str) -> PathBuf {
        let root = Path::new(CGROUP_ROOT);
        let parent = if cgroup_v2() {
            root.join(&self.cgroup_parent)
        } else {
            root.join("pids").join(&self.cgroup_parent)
        };
        parent.join(id).join("cgroup.procs")
    }

    /// The memory group of sandbox `id`'s charged bytes (`memory.usage_in_bytes` on v1,
    /// `memory.current` on v2), if readable.
    pub fn memory_charged(&self, id: &str) -> Option<u64> {
        let root = Path::new(CGROUP_ROOT);
        let file = if cgroup_v2() {
            root.join(&self.cgroup_parent)
                .join(id)
                .join("memory.current")
        } else {
            root.join("memory")
                .join(&self.cgroup_parent)
                .join(id)
                .join("memory.usage_in_bytes")
        };
        std::fs::read_to_string(file).ok()?.trim().parse().ok()
    }

    /// The image's flattened root filesystem in the store (built by the first spawn).
    pub fn rootfs(&self) -> Result<PathBuf, BenchError> {
        let dir = self.images.join("rootfs");
        std::fs::read_dir(&dir)
            .map_err(io_err(format!("listing {}", dir.display())))?
            .flatten()
            .map(|e| e.path())
            .find(|p| p.is_dir())
            .ok_or_else(|| BenchError::Unexpected("the store has no rootfs yet".into()))
    }

    /// Pids in any of our sandboxes' groups.
    fn pids(&self) -> Vec<i32> {
        let mut pids = Vec::new();
        for parent in self.parent_dirs() {
            for g in std::fs::read_dir(&parent).into_iter().flatten().flatten() {
                let procs = std::fs::read_to_string(g.path().join("cgroup.procs"));
                pids.extend(
                    procs
                        .unwrap_or_default()
                        .lines()
                        .filter_map(|l| l.trim().parse::<i32>().ok()),
                );
            }
        }
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// Mount points under our data dir, as this process sees them.
    fn mounts(&self) -> Vec<PathBuf> {
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let data = self.data.to_string_lossy().into_owned();
        info.lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|m| m.starts_with(&data))
            .map(PathBuf::from)
            .collect()
    }

    /// Sandbox groups still under our parent, in every hierarchy.
    fn groups(&self) -> Vec<PathBuf> {
        self.parent_dirs()
            .iter()
            .flat_map(|p| std::fs::read_dir(p).into_iter().flatten().flatten())
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect()
    }

    /// What the sandboxes left: processes in our groups, mounts under the data dir, sandbox
    /// groups, sandbox directories.
    pub fn leftovers(&self) -> Leftovers {
        let dirs = std::fs::read_dir(self.data.join("sandboxes"))
            .map_or(0, |d| d.flatten().filter(|e| e.path().is_dir()).count());
        Leftovers {
            processes: self.pids().len(),
            mounts: self.mounts().len(),
            cgroups: self.groups().len(),
            dirs,
        }
    }

    /// Kills every process in our groups, unmounts what is mounted under the data dir and
    /// removes the groups (best effort; the destroy path should have done it all).
    fn sweep(&self) {
        for _ in 0..50 {
            let pids = self.pids();
            if pids.is_empty() {
                break;
            }
            for pid in pids {
                kill9(pid);
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        for m in self.mounts().iter().rev() {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(m)
                .status();
        }
        for g in self.groups() {
            let _ = std::fs::remove_dir(g);
        }
        for p in self.parent_dirs() {
            let _ = std::fs::remove_dir(p);
        }
    }
}

impl Drop for Env {
    /// A failed or interrupted run leaves sandboxes running (they outlive the server); they go
    /// here, before the temp dir is removed.
    fn drop(&mut self) {
        let left = self.leftovers();
        if !left.is_clean() {
            eprintln!("   ! cleaning up after the run: {left}");
        }
        self.sweep();
    }
}

/// `kill -9 <pid>`, without caring whether it is still there.
#[expect(
    unsafe_code,
    reason = "std can only signal children it spawned; these are the sandboxes' processes"
)]
fn kill9(pid: i32) {
    if pid > 1 {
        // SAFETY: kill(2) takes two integers and touches no memory of this process.
        let _ = unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

/// `Pss`, `Rss` and private (`Private_Clean` + `Private_Dirty`) KiB of one process, from
/// `/proc/<pid>/smaps_rollup`; `None` once it is gone.
pub fn smaps_rollup(pid: i32) -> Option<(u64, u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let field = |key: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    Some((
        field("Pss:"),
        field("Rss:"),
        field("Private_Clean:") + field("Private_Dirty:"),
    ))
}

/// A process's command name (`/proc/<pid>/comm`).
pub fn comm(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}
