//! The fake's side of the mock (STYLE.md: hand-written fakes): every call is recorded, and
//! tests can make upcoming calls fail or spawns slow.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{lock, MockCall, MockProvider};
use crate::ProviderError;

#[derive(Default)]
pub(super) struct Faults {
    /// Method name → how many upcoming calls fail.
    pub(super) fail_next: HashMap<String, usize>,
    /// Spawns left before every further spawn fails; `None` = no limit.
    pub(super) spawns_left: Option<usize>,
    pub(super) spawn_delay: Option<Duration>,
}

/// Calls kept for `calls()`/`call_count()`; far more than any test makes.
pub(super) const CALL_LOG: usize = 10_000;

impl MockProvider {
    /// The calls made so far (the newest 10,000), oldest first.
    pub fn calls(&self) -> Vec<MockCall> {
        lock(&self.calls).iter().cloned().collect()
    }

    /// How many times `method` was called.
    pub fn call_count(&self, method: &str) -> usize {
        lock(&self.calls)
            .iter()
            .filter(|c| c.method == method)
            .count()
    }

    pub fn clear_calls(&self) {
        lock(&self.calls).clear();
    }

    /// The next `n` calls of `method` (a trait method name, e.g. `"exec"`) fail with
    /// `ProviderError::Internal` before doing anything.
    pub fn fail_next(&self, method: &str, n: usize) {
        lock(&self.faults).fail_next.insert(method.to_string(), n);
    }

    /// The next `n` spawns succeed; every spawn after them fails with `Internal`.
    pub fn fail_spawn_after(&self, n: usize) {
        lock(&self.faults).spawns_left = Some(n);
    }

    /// Every spawn sleeps this long first (`None` to stop).
    pub fn set_spawn_delay(&self, delay: Option<Duration>) {
        lock(&self.faults).spawn_delay = delay;
    }

    /// With `true`, streamed file transfers go through the buffered methods and
    /// `streams_files()` is false, as with a backend that has no streaming path.
    pub fn set_buffered_streams(&self, on: bool) {
        self.buffered_streams.store(on, Ordering::SeqCst);
    }

    /// Drops all pending failures and the spawn delay.
    pub fn clear_faults(&self) {
        *lock(&self.faults) = Faults::default();
    }

    /// Records the call and applies an injected failure, if one is pending.
    pub(super) fn enter(
        &self,
        method: &'static str,
        runtime_id: &str,
    ) -> Result<(), ProviderError> {
        {
            let mut calls = lock(&self.calls);
            if calls.len() >= CALL_LOG {
                calls.pop_front();
            }
            calls.push_back(MockCall {
                method,
                runtime_id: runtime_id.to_string(),
            });
        }
        let mut f = lock(&self.faults);
        if let Some(n) = f.fail_next.get_mut(method).filter(|n| **n > 0) {
            *n -= 1;
            return Err(ProviderError::internal(format!(
                "injected {method} failure"
            )));
        }
        if method == "spawn" {
            match f.spawns_left {
                Some(0) => return Err(ProviderError::internal("injected spawn failure")),
                Some(ref mut n) => *n -= 1,
                None => {}
            }
        }
        Ok(())
    }
}
