//! Children and orphans. Every command the agent starts is waited for by its own thread
//! (`Child::wait`); when the agent is PID 1 (a container's init) it must also reap the orphans
//! the kernel hands it, without stealing the exit status of its own children. So spawns and
//! the orphan scan share one lock: a child is in the tracked set before anything else could see
//! it exit, and the scan only reaps zombies that are not tracked.

use std::collections::HashSet;
use std::io;
use std::process::{Child, Command};
use std::sync::{Mutex, OnceLock};

use crate::session::lock;
use crate::sys;

fn tracked() -> &'static Mutex<HashSet<u32>> {
    static T: OnceLock<Mutex<HashSet<u32>>> = OnceLock::new();
    T.get_or_init(|| Mutex::new(HashSet::new()))
}

/// Spawns `cmd` and tracks the child until [`untrack`].
pub fn spawn_tracked(cmd: &mut Command) -> io::Result<Child> {
    let mut set = lock(tracked());
    let child = cmd.spawn()?;
    set.insert(child.id());
    Ok(child)
}

/// After the owner waited for its child.
pub fn untrack(pid: u32) {
    lock(tracked()).remove(&pid);
}

/// Reaps zombie children the agent did not start itself (only as PID 1: elsewhere orphans go
/// to the real init).
pub fn reap_orphans() {
    if std::process::id() != 1 {
        return;
    }
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return;
    };
    let mut zombies = Vec::new();
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // "pid (comm) S ppid ...": comm may hold spaces and parentheses, so split after the last ')'.
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let mut f = rest.split_whitespace();
        if f.next() == Some("Z") && f.next() == Some("1") {
            zombies.push(pid);
        }
    }
    let set = lock(tracked());
    for pid in zombies {
        if !set.contains(&pid) {
            sys::reap(pid);
        }
    }
}
