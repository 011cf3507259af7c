//! Per-operation success/failure counters and latency, for `/metrics`, `/diagnostics` and
//! Prometheus: the JSON figures here, plus the histogram series of
//! `stacyvm_operation_duration_seconds` (recorded under the same lock, so no extra one).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use crate::metrics::{History, OperationFamily, OperationSeries};

/// The operation name of a sandbox spawn (its provider call).
pub const SPAWN: &str = "spawn";

#[derive(Debug, Clone, Default)]
pub struct OpStats {
    pub success_total: u64,
    pub failure_total: u64,
    pub latency_count: u64,
    pub latency_total_ms: f64,
    pub latency_min_ms: f64,
    pub latency_max_ms: f64,
    pub last_error: Option<String>,
    pub last_observed_unix: i64,
}

#[derive(Default)]
pub struct OpMetrics {
    /// Each operation's figures and its histogram series (resolved on its first observation).
    inner: Mutex<BTreeMap<(String, String), (OpStats, OperationSeries)>>,
    durations: OperationFamily,
    /// The last hour of spawns per minute, for the console's charts (fed from `observe`).
    history: History,
}

impl OpMetrics {
    /// Records into `durations` too (a family registered in [`crate::metrics::Metrics`]).
    pub fn new(durations: OperationFamily) -> Self {
        OpMetrics {
            inner: Mutex::default(),
            durations,
            history: History::default(),
        }
    }

    /// The per-minute history spawns are recorded into.
    pub fn history(&self) -> &History {
        &self.history
    }

    pub fn observe(&self, op: &str, provider: &str, elapsed: Duration, error: Option<&str>) {
        let ms = elapsed.as_secs_f64() * 1000.0;
        let Ok(mut map) = self.inner.lock() else {
            return;
        };
        let (s, series) = map
            .entry((op.to_string(), provider.to_string()))
            .or_insert_with(|| {
                let series = OperationSeries::new(&self.durations, op, provider);
                (OpStats::default(), series)
            });
        match error {
            None => s.success_total += 1,
            Some(e) => {
                s.failure_total += 1;
                s.last_error = Some(e.to_string());
            }
        }
        if s.latency_count == 0 || ms < s.latency_min_ms {
            s.latency_min_ms = ms;
        }
        if ms > s.latency_max_ms {
            s.latency_max_ms = ms;
        }
        s.latency_count += 1;
        s.latency_total_ms += ms;
        s.last_observed_unix = chrono::Utc::now().timestamp();
        series.observe(elapsed, error.is_some());
        drop(map);
        if op == SPAWN {
            self.history
                .spawn_finished(provider, elapsed, error.is_some());
        }
    }

    pub fn snapshot(&self) -> Vec<(String, String, OpStats)> {
        self.inner
            .lock()
            .map(|m| {
                m.iter()
                    .map(|((o, p), (s, _))| (o.clone(), p.clone(), s.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }
}
