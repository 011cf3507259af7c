//! A latency histogram with fixed buckets, updated with atomics only: recording never takes a
//! lock (prometheus-client's own `Histogram` locks a mutex per observation).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// Upper bounds in seconds: from sub-millisecond mock spawns to minute-long VM boots and execs.
pub const BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// One series; clones share it (so a handle can be cached where it is recorded).
#[derive(Debug, Clone, Default)]
pub struct LatencyHistogram(Arc<Inner>);

#[derive(Debug, Default)]
struct Inner {
    /// Observations per bucket, not cumulative; the last one is `+Inf`.
    counts: [AtomicU64; BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

impl LatencyHistogram {
    pub fn observe(&self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        // `le` buckets: the first bound at or above the value.
        let i = BUCKETS.partition_point(|b| *b < secs);
        if let Some(c) = self.0.counts.get(i) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.0.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Observations so far (the sum of every bucket).
    #[cfg(test)]
    pub fn count(&self) -> u64 {
        self.0
            .counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }
}

impl TypedMetric for LatencyHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for LatencyHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        // The count is the buckets' sum, so a scrape racing an observation stays consistent
        // (only `_sum` may be one observation ahead or behind).
        let mut count = 0;
        let buckets: Vec<(f64, u64)> = self
            .0
            .counts
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let n = c.load(Ordering::Relaxed);
                count += n;
                (BUCKETS.get(i).copied().unwrap_or(f64::INFINITY), n)
            })
            .collect();
        let sum = Duration::from_nanos(self.0.sum_nanos.load(Ordering::Relaxed)).as_secs_f64();
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::encoding::prometheus_text::encode;
    use prometheus_client::registry::Registry;

    use super::*;

    #[test]
    fn buckets_are_cumulative_and_le_inclusive() {
        let h = LatencyHistogram::default();
        let mut reg = Registry::default();
        reg.register("t_seconds", "test", h.clone());
        h.observe(Duration::from_micros(500)); // exactly on the first bound
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(120)); // above every bound
        assert_eq!(h.count(), 3);
        let mut out = String::new();
        encode(&mut out, &reg).unwrap_or_else(|e| panic!("{e}"));
        for line in [
            "# TYPE t_seconds histogram",
            "t_seconds_bucket{le=\"0.0005\"} 1",
            "t_seconds_bucket{le=\"0.0025\"} 1",
            "t_seconds_bucket{le=\"0.005\"} 2",
            "t_seconds_bucket{le=\"60\"} 2",
            "t_seconds_bucket{le=\"+Inf\"} 3",
            "t_seconds_sum 120.0035",
            "t_seconds_count 3",
        ] {
            assert!(
                out.lines().any(|l| l == line),
                "{line:?} missing in:\n{out}"
            );
        }
        assert_eq!(out.matches("le=\"+Inf\"").count(), 1, "{out}");
    }
}
