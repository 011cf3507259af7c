//! Pause and resume of mock sandboxes (docs/state.md): SIGSTOP and SIGCONT of the sandbox's
//! agent and of the process group of every process below it. The mock has no cgroup to freeze,
//! so the tree is read from `/proc` (parent pids), which is racy only against a process forking
//! at the very moment of the scan: pausing stops the agent first (it starts nothing while
//! stopped) and scans twice, so a child forked during the first scan is caught by the second.

use std::collections::{HashMap, HashSet};

use super::{lock, MockProvider};
use crate::ProviderError;

/// `(pid, ppid, pgrp, state)` of every process, from `/proc/<pid>/stat`.
fn processes() -> Vec<(i32, i32, i32, char)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| stat(pid).map(|(state, ppid, pgrp)| (pid, ppid, pgrp, state)))
        .collect()
}

/// State, parent and process group of `pid`. The command name may hold spaces and parentheses,
/// so the fields are read after its last `)`.
fn stat(pid: i32) -> Option<(char, i32, i32)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut rest = text.get(text.rfind(')')? + 1..)?.split_whitespace();
    let state = rest.next()?.chars().next()?;
    let ppid = rest.next()?.parse().ok()?;
    let pgrp = rest.next()?.parse().ok()?;
    Some((state, ppid, pgrp))
}

/// Process groups of every descendant of `root` (not `root`'s own).
fn descendant_groups(root: i32) -> HashSet<i32> {
    let procs = processes();
    let mut children: HashMap<i32, Vec<(i32, i32)>> = HashMap::new();
    for (pid, ppid, pgrp, _) in procs {
        children.entry(ppid).or_default().push((pid, pgrp));
    }
    let mut groups = HashSet::new();
    let mut todo = vec![root];
    while let Some(p) = todo.pop() {
        for &(child, pgrp) in children.get(&p).map(Vec::as_slice).unwrap_or_default() {
            groups.insert(pgrp);
            todo.push(child);
        }
    }
    // Never signal our own group or init's, whatever the tree says.
    let own = own_group();
    groups.retain(|g| *g > 1 && *g != own && *g != root);
    groups
}

#[expect(unsafe_code, reason = "std has no getpgrp")]
fn own_group() -> i32 {
    // SAFETY: getpgrp(2) takes no arguments, touches no memory and cannot fail.
    unsafe { libc::getpgrp() }
}

#[expect(unsafe_code, reason = "std has no way to signal a process group")]
fn signal_group(pgid: i32, sig: libc::c_int) {
    // SAFETY: kill(2) only takes integers and touches no memory of this process; a negative
    // pid > 1 in magnitude addresses exactly one process group.
    let _ = unsafe { libc::kill(-pgid, sig) };
}

/// Whether the agent `pid` is stopped (`T`): how an adopted persistent sandbox's pause is
/// found again after the provider restarted.
pub(super) fn stopped(pid: u32) -> bool {
    i32::try_from(pid)
        .ok()
        .and_then(stat)
        .is_some_and(|(state, _, _)| state == 'T')
}

impl MockProvider {
    /// Pauses (`freeze`) or resumes a live sandbox; idempotent either way.
    pub(super) fn freeze(
        &self,
        method: &'static str,
        runtime_id: &str,
        freeze: bool,
    ) -> Result<(), ProviderError> {
        self.enter(method, runtime_id)?;
        let agent = {
            let mut map = lock(&self.sandboxes);
            let sb = map
                .get_mut(runtime_id)
                .ok_or_else(|| ProviderError::SandboxNotFound(runtime_id.to_string()))?;
            sb.paused = freeze;
            sb.agent.as_ref().and_then(|a| a.pid())
        };
        // A sandbox that never ran a process has nothing to stop.
        if let Some(agent) = agent {
            signal_tree(agent, freeze);
        }
        Ok(())
    }
}

/// Stops (`freeze`) or continues the agent `agent` and every process group below it.
pub(super) fn signal_tree(agent: u32, freeze: bool) {
    let Ok(agent) = i32::try_from(agent) else {
        return;
    };
    if freeze {
        // The agent is its own session and group leader.
        signal_group(agent, libc::SIGSTOP);
        for _ in 0..2 {
            for g in descendant_groups(agent) {
                signal_group(g, libc::SIGSTOP);
            }
        }
    } else {
        for g in descendant_groups(agent) {
            signal_group(g, libc::SIGCONT);
        }
        signal_group(agent, libc::SIGCONT);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_its_own_stat() {
        let me = std::process::id() as i32;
        let (state, ppid, _) = super::stat(me).expect("own stat");
        assert!(ppid > 0);
        assert_ne!(state, 'T');
    }
}
