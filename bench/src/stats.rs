//! Percentiles by sorting (no histogram crate) and the table printing all benchmarks share.

use std::time::Duration;

/// Latency distribution of one series of samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub n: usize,
    pub min: Duration,
    pub p50: Duration,
    pub p90: Duration,
    pub p99: Duration,
    pub max: Duration,
    pub mean: Duration,
}

/// Nearest-rank percentile of an ascending slice; `None` when empty.
pub fn percentile(sorted: &[Duration], pct: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    // Nearest rank: the smallest sample with at least pct% of samples at or below it.
    let rank = ((pct / 100.0) * sorted.len() as f64).ceil() as usize;
    let idx = rank.clamp(1, sorted.len()) - 1;
    sorted.get(idx).copied()
}

impl Summary {
    /// `None` for an empty series.
    pub fn of(samples: &[Duration]) -> Option<Summary> {
        let mut v = samples.to_vec();
        v.sort_unstable();
        let total: Duration = v.iter().sum();
        let n = v.len();
        let mean = total.checked_div(u32::try_from(n).ok()?)?;
        Some(Summary {
            n,
            min: *v.first()?,
            p50: percentile(&v, 50.0)?,
            p90: percentile(&v, 90.0)?,
            p99: percentile(&v, 99.0)?,
            max: *v.last()?,
            mean,
        })
    }
}

/// Milliseconds with three decimals (microsecond resolution).
pub fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1e3)
}

/// Milliseconds of a signed difference `a - b`.
pub fn ms_diff(a: Duration, b: Duration) -> String {
    let diff = a.as_secs_f64() - b.as_secs_f64();
    format!("{:+.3}", diff * 1e3)
}

pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// A plain text table: numbers right-aligned, the leading label columns left-aligned.
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
    left: usize,
}

impl Table {
    pub fn new<S: Into<String>>(header: impl IntoIterator<Item = S>) -> Self {
        Table {
            header: header.into_iter().map(Into::into).collect(),
            rows: Vec::new(),
            left: 1,
        }
    }

    /// Left-aligns the first `n` columns (default 1).
    pub fn left_columns(mut self, n: usize) -> Self {
        self.left = n;
        self
    }

    pub fn row<S: Into<String>>(&mut self, cells: impl IntoIterator<Item = S>) {
        self.rows.push(cells.into_iter().map(Into::into).collect());
    }

    pub fn render(&self) -> String {
        let cols = self.header.len();
        let mut width = vec![0usize; cols];
        for r in std::iter::once(&self.header).chain(&self.rows) {
            for (w, c) in width.iter_mut().zip(r) {
                *w = (*w).max(c.chars().count());
            }
        }
        let line = |r: &[String]| {
            let cells: Vec<String> = r
                .iter()
                .zip(&width)
                .enumerate()
                .map(|(i, (c, w))| {
                    if i < self.left {
                        format!("{c:<w$}")
                    } else {
                        format!("{c:>w$}")
                    }
                })
                .collect();
            format!("  {}", cells.join("  ").trim_end())
        };
        let mut out = vec![line(&self.header)];
        let rule: usize = width.iter().sum::<usize>() + 2 * cols.saturating_sub(1);
        out.push(format!("  {}", "-".repeat(rule)));
        out.extend(self.rows.iter().map(|r| line(r)));
        out.join("\n")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ms_vec(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|&m| Duration::from_millis(m)).collect()
    }

    #[test]
    fn nearest_rank_percentiles() {
        // 1..=100 ms: p50 = 50, p90 = 90, p99 = 99.
        let v = ms_vec(&(1..=100).collect::<Vec<_>>());
        assert_eq!(percentile(&v, 50.0), Some(Duration::from_millis(50)));
        assert_eq!(percentile(&v, 90.0), Some(Duration::from_millis(90)));
        assert_eq!(percentile(&v, 99.0), Some(Duration::from_millis(99)));
        assert_eq!(percentile(&v, 100.0), Some(Duration::from_millis(100)));
        assert_eq!(percentile(&v, 0.0), Some(Duration::from_millis(1)));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn summary_sorts_its_input() {
        let s = Summary::of(&ms_vec(&[30, 10, 20])).unwrap();
        assert_eq!(s.n, 3);
        assert_eq!(s.min, Duration::from_millis(10));
        assert_eq!(s.p50, Duration::from_millis(20));
        assert_eq!(s.max, Duration::from_millis(30));
        assert_eq!(s.mean, Duration::from_millis(20));
        assert!(Summary::of(&[]).is_none());
    }

    #[test]
    fn table_aligns_columns() {
        let mut t = Table::new(["a", "bbb"]);
        t.row(["xx", "1"]);
        let r = t.render();
        let lines: Vec<&str> = r.lines().collect();
        assert_eq!(lines[0], "  a   bbb");
        assert_eq!(lines[2], "  xx    1");
        assert_eq!(
            ms_diff(Duration::from_millis(1), Duration::from_millis(3)),
            "-2.000"
        );
    }
}
