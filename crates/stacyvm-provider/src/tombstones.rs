//! Ids of recently destroyed sandboxes, so `status` can answer `destroyed` (not "not found") and
//! a second destroy is a no-op. Bounded: the oldest ids are forgotten first.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

/// How many destroyed ids are remembered.
const CAPACITY: usize = 4096;

#[derive(Default)]
pub(crate) struct Tombstones(Mutex<(HashSet<String>, VecDeque<String>)>);

impl Tombstones {
    pub(crate) fn remember(&self, id: &str) {
        let mut d = self.lock();
        let (set, order) = &mut *d;
        if set.insert(id.to_string()) {
            order.push_back(id.to_string());
            if order.len() > CAPACITY {
                if let Some(old) = order.pop_front() {
                    set.remove(&old);
                }
            }
        }
    }

    pub(crate) fn contains(&self, id: &str) -> bool {
        self.lock().0.contains(id)
    }

    /// A new sandbox reuses the id.
    pub(crate) fn forget(&self, id: &str) {
        let mut d = self.lock();
        let (set, order) = &mut *d;
        if set.remove(id) {
            order.retain(|x| x != id);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (HashSet<String>, VecDeque<String>)> {
        // The set stays consistent even if a holder panicked (every update is one step).
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_forgets_and_stays_bounded() {
        let t = Tombstones::default();
        t.remember("a");
        t.remember("a");
        assert!(t.contains("a"));
        t.forget("a");
        assert!(!t.contains("a"));
        for i in 0..=CAPACITY {
            t.remember(&i.to_string());
        }
        assert!(!t.contains("0"), "the oldest id is forgotten");
        assert!(t.contains(&CAPACITY.to_string()));
        assert_eq!(t.lock().1.len(), CAPACITY);
    }
}
