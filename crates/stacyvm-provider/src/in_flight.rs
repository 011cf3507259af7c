//! The snapshots a provider is taking now. A snapshot has no record until it is made, so the
//! sweep of unrecorded snapshot pieces (`Provider::sweep_snapshots`) must skip these, however
//! long the copy runs past the grace period: a workspace copy that outlasted it lost its
//! working directory or image mid-copy.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};

/// The ids of the snapshots in flight; clones share one set.
#[derive(Debug, Default, Clone)]
pub(crate) struct SnapshotsInFlight(Arc<Mutex<HashSet<String>>>);

/// An id in the set from [`SnapshotsInFlight::enter`] until the snapshot ends, also when its
/// call is dropped midway.
#[must_use = "the snapshot leaves the set when this is dropped"]
pub(crate) struct InFlight {
    set: SnapshotsInFlight,
    id: String,
}

impl SnapshotsInFlight {
    pub(crate) fn enter(&self, id: &str) -> InFlight {
        self.lock().insert(id.to_string());
        InFlight {
            set: self.clone(),
            id: id.to_string(),
        }
    }

    /// `known` plus every snapshot in flight, by its id and by its working names: the
    /// `.tmp-<id>` directory the mock and microvm copy into before renaming it, and docker's
    /// `tmp-<id>` image tag.
    pub(crate) fn with_known(&self, known: &HashSet<String>) -> HashSet<String> {
        let mut all = known.clone();
        for id in self.lock().iter() {
            all.insert(id.clone());
            all.insert(format!(".tmp-{id}"));
            all.insert(format!("tmp-{id}"));
        }
        all
    }

    fn lock(&self) -> MutexGuard<'_, HashSet<String>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.set.lock().remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_is_in_flight_until_its_guard_drops() {
        let set = SnapshotsInFlight::default();
        let known: HashSet<String> = ["snap-done".to_string()].into();
        {
            let _g = set.enter("snap-1");
            let all = set.with_known(&known);
            for name in ["snap-done", "snap-1", ".tmp-snap-1", "tmp-snap-1"] {
                assert!(all.contains(name), "{name}");
            }
        }
        assert_eq!(set.with_known(&known), known);
    }
}
