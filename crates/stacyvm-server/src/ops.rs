//! Per-operation success/failure counters and latency, for `/metrics`, `/diagnostics` and
//! Prometheus.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

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
    inner: Mutex<BTreeMap<(String, String), OpStats>>,
}

impl OpMetrics {
    pub fn observe(&self, op: &str, provider: &str, elapsed: Duration, error: Option<&str>) {
        let ms = elapsed.as_secs_f64() * 1000.0;
        let Ok(mut map) = self.inner.lock() else {
            return;
        };
        let s = map
            .entry((op.to_string(), provider.to_string()))
            .or_default();
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
    }

    pub fn snapshot(&self) -> Vec<(String, String, OpStats)> {
        self.inner
            .lock()
            .map(|m| {
                m.iter()
                    .map(|((o, p), s)| (o.clone(), p.clone(), s.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }
}
