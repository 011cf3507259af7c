//! What the lifecycle needs to know between requests (docs/state.md):
//!
//! - **Activity.** Exec, file, process and preview calls stamp their sandbox here, in memory
//!   (one map write, no store write on the request path). The reaper loop writes stamps to the
//!   store at most once per [`FLUSH_EVERY`] per sandbox (`Store::touch_sandbox`), on every
//!   control plane, so the leader's idle check sees activity served by the others and a
//!   restart loses at most that much. The idle check takes the latest of memory, the stored
//!   stamp and the record's `updated_at` (spawn, pause and resume count as activity).
//! - **Processes of paused sandboxes.** A frozen sandbox cannot answer for its agent (docker
//!   refuses `exec` into a paused container, a stopped agent reads nothing), yet its process
//!   list must still answer. Pause takes the list just before freezing and keeps it here until
//!   resume; nothing in the sandbox changes meanwhile. Lost on a control-plane restart: the
//!   list is then asked of the provider with a short deadline, and a frozen agent that cannot
//!   answer gives `SANDBOX_PAUSED`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use stacyvm_types::{ProcessInfo, SandboxId, Timestamp};

/// How often one sandbox's activity is written to the store at most.
pub(super) const FLUSH_EVERY: Duration = Duration::from_secs(60);

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[derive(Default)]
pub(super) struct Activity {
    /// Latest activity and the stamp last written to the store, per sandbox.
    last: Mutex<HashMap<SandboxId, (Timestamp, Option<Timestamp>)>>,
    paused_procs: Mutex<HashMap<SandboxId, Vec<ProcessInfo>>>,
}

impl Activity {
    pub(super) fn touch(&self, id: &SandboxId) {
        let now = chrono::Utc::now();
        locked(&self.last)
            .entry(id.clone())
            .and_modify(|e| e.0 = now)
            .or_insert((now, None));
    }

    /// The latest activity this control plane saw.
    pub(super) fn last(&self, id: &SandboxId) -> Option<Timestamp> {
        locked(&self.last).get(id).map(|e| e.0)
    }

    /// Stamps due for the store: changed since their last write and that write older than
    /// [`FLUSH_EVERY`]. Marks them written.
    pub(super) fn due(&self, now: Timestamp) -> Vec<(SandboxId, Timestamp)> {
        let every = chrono::Duration::from_std(FLUSH_EVERY).unwrap_or_default();
        let mut out = Vec::new();
        for (id, (last, written)) in locked(&self.last).iter_mut() {
            let stale = written.is_none_or(|w| w < *last && now - w >= every);
            if stale {
                *written = Some(*last);
                out.push((id.clone(), *last));
            }
        }
        out
    }

    /// Forgets a destroyed sandbox.
    pub(super) fn forget(&self, id: &SandboxId) {
        locked(&self.last).remove(id);
        locked(&self.paused_procs).remove(id);
    }

    pub(super) fn keep_processes(&self, id: &SandboxId, procs: Vec<ProcessInfo>) {
        locked(&self.paused_procs).insert(id.clone(), procs);
    }

    pub(super) fn drop_processes(&self, id: &SandboxId) {
        locked(&self.paused_procs).remove(id);
    }

    pub(super) fn processes(&self, id: &SandboxId) -> Option<Vec<ProcessInfo>> {
        locked(&self.paused_procs).get(id).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_is_due_once_per_interval() {
        let a = Activity::default();
        let id = SandboxId::from("sb-1");
        a.touch(&id);
        let now = chrono::Utc::now();
        assert_eq!(a.due(now).len(), 1, "first stamp is written at once");
        a.touch(&id);
        assert!(a.due(now).is_empty(), "not again within the interval");
        let later = now + chrono::Duration::seconds(61);
        assert_eq!(a.due(later).len(), 1);
        assert!(a.due(later).is_empty(), "nothing new since");
        a.forget(&id);
        assert!(a.last(&id).is_none());
    }
}
