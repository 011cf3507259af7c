//! The last hour of this control plane's own figures, in memory, for the console's charts
//! (`GET /api/v1/metrics/history`, docs/console.md): spawns and spawn failures per minute,
//! spawn latency by provider (p50/p99 per minute), and active sandboxes by worker as sampled
//! once a minute. Nothing is stored: a restart starts an empty hour.
//!
//! A ring of [`MINUTES`] per-minute buckets indexed by the wall-clock minute; a bucket whose
//! minute has passed out of the window is reset when its slot is reused. Latencies go into a
//! sparse log-scale histogram per (minute, provider), so a percentile is within
//! [`LATENCY_GROWTH`] (8 %) of the true value whatever the spawn rate, and memory grows with
//! the distinct latencies, not with the spawns.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};

/// Buckets kept: one hour of minutes.
pub const MINUTES: usize = 60;
const MINUTES_I64: i64 = 60;
/// Each latency bucket's upper bound is this factor times the previous one.
const LATENCY_GROWTH: f64 = 1.08;

/// A latency histogram: bucket index → observations. Bucket `i` holds values in
/// `(GROWTH^(i-1), GROWTH^i]` microseconds; bucket 0 everything up to 1 µs.
#[derive(Debug, Clone, Default, PartialEq)]
struct Latencies(BTreeMap<u16, u32>);

impl Latencies {
    fn index(elapsed: Duration) -> u16 {
        let us = elapsed.as_secs_f64() * 1e6;
        if us <= 1.0 {
            return 0;
        }
        // A saturating float-to-int cast; 1.08^u16::MAX µs is far past any duration.
        let i = (us.ln() / LATENCY_GROWTH.ln()).ceil() as u16;
        // Float rounding can put an exact bound one bucket high.
        if i > 0 && Self::upper_us(i - 1) >= us {
            i - 1
        } else {
            i
        }
    }

    fn upper_us(i: u16) -> f64 {
        LATENCY_GROWTH.powi(i32::from(i))
    }

    fn observe(&mut self, elapsed: Duration) {
        let n = self.0.entry(Self::index(elapsed)).or_default();
        *n = n.saturating_add(1);
    }

    fn merge(&mut self, other: &Latencies) {
        for (i, n) in &other.0 {
            let c = self.0.entry(*i).or_default();
            *c = c.saturating_add(*n);
        }
    }

    fn count(&self) -> u64 {
        self.0.values().map(|n| u64::from(*n)).sum()
    }

    /// The `q` quantile (0 < q ≤ 1) in milliseconds: the upper bound of the bucket holding the
    /// observation of rank ⌈q·n⌉ (nearest-rank), so it never under-reports. `None` when empty.
    fn quantile_ms(&self, q: f64) -> Option<f64> {
        let n = self.count();
        if n == 0 {
            return None;
        }
        let rank = ((q * n as f64).ceil() as u64).clamp(1, n);
        let mut seen = 0;
        for (i, c) in &self.0 {
            seen += u64::from(*c);
            if seen >= rank {
                return Some(Self::upper_us(*i) / 1000.0);
            }
        }
        None
    }

    fn figures(&self) -> Option<LatencyFigures> {
        Some(LatencyFigures {
            count: self.count(),
            p50_ms: self.quantile_ms(0.5)?,
            p99_ms: self.quantile_ms(0.99)?,
        })
    }
}

/// Spawn latency over some span: how many spawns, and two percentiles in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LatencyFigures {
    pub count: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// One minute's figures, as [`History::snapshot`] reports them.
#[derive(Debug, Clone, PartialEq)]
pub struct MinuteFigures {
    /// The minute's first second.
    pub start: DateTime<Utc>,
    /// Spawns that succeeded (the provider created the sandbox).
    pub spawns: u64,
    /// Spawns the provider failed (admission refusals never reach it and are not counted).
    pub spawn_failures: u64,
    /// Successful spawns' latency by provider.
    pub latency: BTreeMap<String, LatencyFigures>,
    /// Running sandboxes by worker at the minute's sample; `None` = not sampled that minute.
    pub active_by_worker: Option<BTreeMap<String, i64>>,
}

/// The window [`History::snapshot`] returns: [`MINUTES`] minutes, oldest first, the current
/// (partial) minute last, and the latency over the whole window.
#[derive(Debug, Clone, PartialEq)]
pub struct HistorySnapshot {
    pub minutes: Vec<MinuteFigures>,
    pub latency: BTreeMap<String, LatencyFigures>,
}

#[derive(Debug, Clone, Default)]
struct Bucket {
    /// Unix minute this slot holds; a slot holding another minute is stale.
    minute: i64,
    spawns: u64,
    failures: u64,
    latency: BTreeMap<String, Latencies>,
    active: Option<BTreeMap<String, i64>>,
}

/// See the module comment. One short mutex per spawn and per read: a spawn costs far more.
#[derive(Debug)]
pub struct History {
    ring: Mutex<Vec<Bucket>>,
}

impl Default for History {
    fn default() -> Self {
        History {
            ring: Mutex::new(vec![Bucket::default(); MINUTES]),
        }
    }
}

fn unix_minute(t: DateTime<Utc>) -> i64 {
    t.timestamp().div_euclid(60)
}

fn slot_of(minute: i64) -> usize {
    usize::try_from(minute.rem_euclid(MINUTES_I64)).unwrap_or(0)
}

impl History {
    /// Runs `f` on the bucket of `t`'s minute, resetting the slot if it held an older minute.
    /// A time older than the slot's minute (a clock step back) is dropped.
    fn with_bucket(&self, t: DateTime<Utc>, f: impl FnOnce(&mut Bucket)) {
        let minute = unix_minute(t);
        let Ok(mut ring) = self.ring.lock() else {
            return;
        };
        let Some(b) = ring.get_mut(slot_of(minute)) else {
            return;
        };
        if b.minute < minute {
            *b = Bucket {
                minute,
                ..Bucket::default()
            };
        }
        if b.minute == minute {
            f(b);
        }
    }

    /// One spawn that reached its provider: its latency, and whether it failed.
    pub fn spawn_finished(&self, provider: &str, elapsed: Duration, failed: bool) {
        self.spawn_finished_at(Utc::now(), provider, elapsed, failed);
    }

    pub fn spawn_finished_at(
        &self,
        t: DateTime<Utc>,
        provider: &str,
        elapsed: Duration,
        failed: bool,
    ) {
        self.with_bucket(t, |b| {
            if failed {
                b.failures += 1;
                return;
            }
            b.spawns += 1;
            match b.latency.get_mut(provider) {
                Some(l) => l.observe(elapsed),
                None => {
                    let mut l = Latencies::default();
                    l.observe(elapsed);
                    b.latency.insert(provider.to_string(), l);
                }
            }
        });
    }

    /// The minute's sample of running sandboxes by worker (a later sample in the same minute
    /// replaces it).
    pub fn sample_active_at(&self, t: DateTime<Utc>, by_worker: BTreeMap<String, i64>) {
        self.with_bucket(t, |b| b.active = Some(by_worker));
    }

    /// The [`MINUTES`] minutes up to and including `now`'s.
    pub fn snapshot(&self, now: DateTime<Utc>) -> HistorySnapshot {
        let last = unix_minute(now);
        let ring = self.ring.lock().map(|r| r.clone()).unwrap_or_default();
        let mut total: BTreeMap<String, Latencies> = BTreeMap::new();
        let mut minutes = Vec::with_capacity(MINUTES);
        for minute in (last - MINUTES_I64 + 1)..=last {
            let start = Utc
                .timestamp_opt(minute * 60, 0)
                .single()
                .unwrap_or_default();
            let b = ring
                .get(slot_of(minute))
                .filter(|b| b.minute == minute)
                .cloned()
                .unwrap_or_default();
            for (p, l) in &b.latency {
                total.entry(p.clone()).or_default().merge(l);
            }
            minutes.push(MinuteFigures {
                start,
                spawns: b.spawns,
                spawn_failures: b.failures,
                latency: figures(&b.latency),
                active_by_worker: b.active,
            });
        }
        HistorySnapshot {
            minutes,
            latency: figures(&total),
        }
    }
}

fn figures(m: &BTreeMap<String, Latencies>) -> BTreeMap<String, LatencyFigures> {
    m.iter()
        .filter_map(|(p, l)| Some((p.clone(), l.figures()?)))
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// `secs` after the start of a minute.
    fn at(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + secs, 0).unwrap()
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn counts_land_in_their_minute_and_the_window_ends_now() {
        let h = History::default();
        h.spawn_finished_at(at(59), "mock", ms(5), false);
        h.spawn_finished_at(at(60), "mock", ms(5), false);
        h.spawn_finished_at(at(81), "mock", ms(5), true);
        h.spawn_finished_at(at(85), "docker", ms(500), false);
        let s = h.snapshot(at(85));
        assert_eq!(s.minutes.len(), MINUTES);
        let last = s.minutes.last().unwrap();
        assert_eq!(last.start, at(60));
        assert_eq!((last.spawns, last.spawn_failures), (2, 1));
        let prev = &s.minutes[MINUTES - 2];
        assert_eq!(prev.start, at(0));
        assert_eq!((prev.spawns, prev.spawn_failures), (1, 0));
        assert!(s.minutes[..MINUTES - 2]
            .iter()
            .all(|m| m.spawns == 0 && m.latency.is_empty()));
        // Oldest first, one minute apart.
        for w in s.minutes.windows(2) {
            assert_eq!(w[1].start - w[0].start, chrono::Duration::minutes(1));
        }
        assert_eq!(last.latency["docker"].count, 1);
        assert_eq!(last.latency["mock"].count, 1);
        assert_eq!(s.latency["mock"].count, 2);
        assert!(!last.latency.contains_key("nope"));
    }

    #[test]
    fn buckets_roll_over_after_an_hour() {
        let h = History::default();
        h.spawn_finished_at(at(0), "mock", ms(1), false);
        h.sample_active_at(at(1), BTreeMap::from([("local".to_string(), 3)]));
        // 59 minutes later it is still the window's first minute.
        let s = h.snapshot(at(59 * 60));
        assert_eq!(s.minutes[0].spawns, 1);
        assert_eq!(
            s.minutes[0].active_by_worker,
            Some(BTreeMap::from([("local".to_string(), 3)]))
        );
        // One more minute and it has left the window, though its slot was never reused.
        let s = h.snapshot(at(60 * 60));
        assert!(s.minutes.iter().all(|m| m.spawns == 0));
        assert!(s.minutes.iter().all(|m| m.active_by_worker.is_none()));
        assert!(s.latency.is_empty());
        // Reusing the slot resets it: the new minute counts from zero.
        h.spawn_finished_at(at(60 * 60), "mock", ms(1), true);
        let s = h.snapshot(at(60 * 60));
        let last = s.minutes.last().unwrap();
        assert_eq!((last.spawns, last.spawn_failures), (0, 1));
        assert!(last.latency.is_empty());
        // A late record for a minute whose slot now holds a newer one is dropped.
        h.spawn_finished_at(at(0), "mock", ms(1), false);
        let s = h.snapshot(at(60 * 60));
        assert_eq!(s.minutes.iter().map(|m| m.spawns).sum::<u64>(), 0);
    }

    #[test]
    fn a_later_sample_in_the_same_minute_replaces_the_first() {
        let h = History::default();
        h.sample_active_at(at(0), BTreeMap::from([("local".to_string(), 1)]));
        h.sample_active_at(at(10), BTreeMap::from([("w1".to_string(), 2)]));
        let s = h.snapshot(at(10));
        assert_eq!(
            s.minutes.last().unwrap().active_by_worker,
            Some(BTreeMap::from([("w1".to_string(), 2)]))
        );
        assert_eq!(s.minutes[MINUTES - 2].active_by_worker, None);
    }

    /// Within one bucket's width (8 %) above the exact nearest-rank percentile, never below.
    fn close(got: f64, exact: f64) {
        assert!(
            got >= exact * 0.999 && got <= exact * LATENCY_GROWTH * 1.001,
            "{got} vs exact {exact}"
        );
    }

    #[test]
    fn percentiles_follow_nearest_rank() {
        let h = History::default();
        // 1..=100 ms: p50 is 50 ms, p99 is 99 ms.
        for i in 1..=100 {
            h.spawn_finished_at(at(0), "mock", ms(i), false);
        }
        let f = h.snapshot(at(0)).latency["mock"];
        assert_eq!(f.count, 100);
        close(f.p50_ms, 50.0);
        close(f.p99_ms, 99.0);

        // A long tail: 98 fast spawns and 2 slow ones; p99 is a slow one, p50 a fast one.
        let h = History::default();
        for _ in 0..98 {
            h.spawn_finished_at(at(0), "vm", ms(20), false);
        }
        h.spawn_finished_at(at(0), "vm", Duration::from_secs(3), false);
        h.spawn_finished_at(at(0), "vm", Duration::from_secs(4), false);
        let f = h.snapshot(at(0)).latency["vm"];
        close(f.p50_ms, 20.0);
        close(f.p99_ms, 3000.0);

        // One observation is every percentile; sub-microsecond values are 1 µs.
        let h = History::default();
        h.spawn_finished_at(at(0), "mock", Duration::from_nanos(300), false);
        let f = h.snapshot(at(0)).latency["mock"];
        assert_eq!((f.p50_ms, f.p99_ms), (0.001, 0.001));
    }

    #[test]
    fn the_window_percentile_merges_the_minutes() {
        let h = History::default();
        for i in 1..=50 {
            h.spawn_finished_at(at(0), "mock", ms(i), false);
        }
        for i in 51..=100 {
            h.spawn_finished_at(at(120), "mock", ms(i), false);
        }
        let s = h.snapshot(at(120));
        close(s.latency["mock"].p50_ms, 50.0);
        close(s.latency["mock"].p99_ms, 99.0);
        close(s.minutes.last().unwrap().latency["mock"].p50_ms, 75.0);
    }

    #[test]
    fn bucket_bounds_are_inclusive_and_monotonic() {
        let mut prev = 0;
        for us in [1u64, 2, 3, 10, 100, 1_000, 10_000, 1_000_000, 60_000_000] {
            let i = Latencies::index(Duration::from_micros(us));
            assert!(i >= prev, "{us} µs");
            let v = us as f64;
            assert!(
                Latencies::upper_us(i) >= v * 0.999_999,
                "{us} µs above its bucket"
            );
            if i > 0 {
                assert!(Latencies::upper_us(i - 1) < v, "{us} µs below its bucket");
            }
            prev = i;
        }
    }
}
