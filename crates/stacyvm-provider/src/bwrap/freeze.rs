//! Pause and resume of bwrap sandboxes with the cgroup freezer (docs/state.md): processes stop
//! where they are, memory stays, and nothing inside can tell.
//!
//! - **v2**: `cgroup.freeze` of the sandbox's one group (`1`/`0`), done once `cgroup.events`
//!   says `frozen 1`. `cgroup.kill` works on a frozen group, so destroy needs nothing more.
//! - **v1**: the sandbox's groups (memory, pids, cpu) have no freezer, so pause makes
//!   `/sys/fs/cgroup/freezer/<parent>/<id>` and moves every pid of the pids group into it,
//!   repeating until the two lists agree (a child forked meanwhile inherits its parent's new
//!   group, so only a fork during the move can slip past, and the next round takes it), then
//!   writes `FROZEN`. A SIGKILL to a frozen v1 task waits for the thaw, so destroy sends it and
//!   then thaws ([`thaw_for_kill`]), and removes the freezer group with the others ([`remove`]).
//!
//! A pause that does not finish within [`FREEZE_TIMEOUT`] thaws what it froze and fails: the
//! sandbox is left running, as the caller's error says.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::cgroup::{Cgroups, Layout};
use crate::ProviderError;

const FREEZER_ROOT: &str = "/sys/fs/cgroup/freezer";
/// How long freezing may take before pause reports it.
const FREEZE_TIMEOUT: Duration = Duration::from_secs(10);

fn fail(what: &'static str) -> impl Fn(std::io::Error) -> ProviderError {
    move |e| ProviderError::internal_with(format!("sandbox freezer: {what} failed"), e)
}

/// The v1 freezer group of a sandbox: the same `<parent>/<id>` as its other groups.
fn v1_dir(groups: &Cgroups) -> Option<PathBuf> {
    let d = groups.dirs.first()?;
    let id = d.file_name()?;
    let parent = d.parent()?.file_name()?;
    Some(Path::new(FREEZER_ROOT).join(parent).join(id))
}

fn pids_in(dir: &Path) -> HashSet<i32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .map(|s| s.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Whether the sandbox is frozen now.
pub(super) fn frozen(groups: &Cgroups) -> bool {
    match groups.layout {
        Layout::V2 => read(&groups.members_dir().join("cgroup.events"))
            .lines()
            .any(|l| l.trim() == "frozen 1"),
        Layout::V1 => {
            v1_dir(groups).is_some_and(|d| read(&d.join("freezer.state")).trim() == "FROZEN")
        }
    }
}

/// Freezes (`true`) or thaws every process of the sandbox; blocking (file writes and a short
/// wait), idempotent. A freeze that fails is undone.
pub(super) fn set(groups: &Cgroups, freeze: bool) -> Result<(), ProviderError> {
    if !freeze {
        return thaw(groups);
    }
    let r = freeze_all(groups);
    if r.is_err() {
        let _ = thaw(groups);
    }
    r
}

fn thaw(groups: &Cgroups) -> Result<(), ProviderError> {
    match groups.layout {
        Layout::V2 => std::fs::write(groups.members_dir().join("cgroup.freeze"), "0")
            .map_err(fail("writing cgroup.freeze")),
        Layout::V1 => match v1_dir(groups) {
            Some(dir) if dir.exists() => std::fs::write(dir.join("freezer.state"), "THAWED")
                .map_err(fail("writing freezer.state")),
            _ => Ok(()),
        },
    }
}

fn freeze_all(groups: &Cgroups) -> Result<(), ProviderError> {
    match groups.layout {
        Layout::V2 => std::fs::write(groups.members_dir().join("cgroup.freeze"), "1")
            .map_err(fail("writing cgroup.freeze"))?,
        Layout::V1 => {
            let Some(dir) = v1_dir(groups) else {
                return Err(ProviderError::internal("sandbox freezer: no cgroup path"));
            };
            if !Path::new(FREEZER_ROOT).is_dir() {
                return Err(ProviderError::NotSupported(
                    "the bwrap provider needs the cgroup v1 freezer hierarchy \
                     (/sys/fs/cgroup/freezer) to pause sandboxes"
                        .into(),
                ));
            }
            std::fs::create_dir_all(&dir).map_err(fail("creating the freezer group"))?;
            move_all(groups, &dir)?;
            std::fs::write(dir.join("freezer.state"), "FROZEN")
                .map_err(fail("writing freezer.state"))?;
            // A process forked just before the write may still be outside: take it in too
            // (a task joining a frozen group is frozen).
            move_all(groups, &dir)?;
        }
    }
    let deadline = Instant::now() + FREEZE_TIMEOUT;
    while !frozen(groups) {
        if Instant::now() >= deadline {
            return Err(ProviderError::internal(
                "sandbox processes did not freeze within 10 s",
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

/// v1: moves every member of the sandbox into its freezer group, until none is left out.
fn move_all(groups: &Cgroups, dir: &Path) -> Result<(), ProviderError> {
    let deadline = Instant::now() + FREEZE_TIMEOUT;
    loop {
        let inside = pids_in(dir);
        let outside: Vec<i32> = groups
            .pids()
            .into_iter()
            .filter(|p| !inside.contains(p))
            .collect();
        if outside.is_empty() {
            return Ok(());
        }
        for pid in outside {
            // A process that exited meanwhile (ESRCH) needs no freezing.
            let _ = std::fs::write(dir.join("cgroup.procs"), pid.to_string());
        }
        if Instant::now() >= deadline {
            return Err(ProviderError::internal(
                "sandbox processes could not be moved into the freezer",
            ));
        }
    }
}

/// Before a kill of the sandbox's processes (destroy, a failed spawn's cleanup). A frozen v1
/// task takes a SIGKILL only once thawed, so every member is sent one first and the group is
/// thawed after: they die as they wake instead of running on. v2's `cgroup.kill` works on a
/// frozen group, so there is nothing to do.
pub(super) fn thaw_for_kill(groups: &Cgroups) {
    if groups.layout != Layout::V1 {
        return;
    }
    let Some(dir) = v1_dir(groups) else {
        return;
    };
    let state = read(&dir.join("freezer.state"));
    if state.is_empty() || state.trim() == "THAWED" {
        return;
    }
    for pid in groups.pids() {
        super::sys::kill(pid, libc::SIGKILL);
    }
    let _ = std::fs::write(dir.join("freezer.state"), "THAWED");
}

/// Removes the v1 freezer group once the sandbox's processes are gone (absent is fine);
/// blocking.
pub(super) fn remove(groups: &Cgroups) -> Result<(), ProviderError> {
    match groups.layout {
        Layout::V1 => v1_dir(groups).map_or(Ok(()), |d| super::cgroup::remove_dir(&d)),
        Layout::V2 => Ok(()),
    }
}
