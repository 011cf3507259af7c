//! Gauges computed at scrape time from the service's summaries (sandboxes by state, workers,
//! leases, queue, quotas, ...). They keep the original's names, labels and help texts and are
//! all typed `gauge`, counters included (wire reference §7.6), so an existing dashboard keeps
//! working; the series recorded as events happen live in [`super::Metrics`].

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

/// Label pairs of one sample, in output order.
pub type Labels = Vec<(&'static str, String)>;

/// One scrape's gauges, encoded in the order they were added.
#[derive(Debug, Default)]
pub struct Gauges(Vec<GaugeFamily>);

#[derive(Debug)]
struct GaugeFamily {
    name: &'static str,
    help: &'static str,
    samples: Vec<(Labels, f64)>,
}

impl Gauges {
    /// A gauge with one sample per label set (none is fine: only `# HELP`/`# TYPE` then).
    pub fn add(
        &mut self,
        name: &'static str,
        help: &'static str,
        samples: impl IntoIterator<Item = (Labels, f64)>,
    ) {
        self.0.push(GaugeFamily {
            name,
            help,
            samples: samples.into_iter().collect(),
        });
    }

    /// A gauge with a single unlabelled sample.
    pub fn one(&mut self, name: &'static str, help: &'static str, value: f64) {
        self.add(name, help, [(Labels::new(), value)]);
    }
}

/// Whole numbers print without a fraction (`3`, not `3.0`), as the original's did.
fn integral(v: f64) -> Option<i64> {
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    (v.fract() == 0.0 && v.abs() < EXACT).then_some(v as i64)
}

impl Collector for Gauges {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for f in &self.0 {
            let mut metric = encoder.encode_descriptor(f.name, f.help, None, MetricType::Gauge)?;
            for (labels, v) in &f.samples {
                let sample = metric.encode_family(labels)?;
                match integral(*v) {
                    Some(n) => ConstGauge::new(n).encode(sample)?,
                    None => ConstGauge::new(*v).encode(sample)?,
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::encoding::prometheus_text::encode;
    use prometheus_client::registry::Registry;

    use super::*;

    #[test]
    fn names_labels_and_values_as_given() {
        let mut g = Gauges::default();
        g.one("stacyvm_uptime_seconds", "Process uptime in seconds.", 1.5);
        g.add(
            "stacyvm_sandboxes_total",
            "Sandboxes by state.",
            [
                (vec![("state", "running".to_string())], 3.0),
                (vec![("state", "a\"b".to_string())], 1.0),
            ],
        );
        g.add(
            "stacyvm_provider_healthy",
            "Provider health (1 healthy).",
            [],
        );
        let mut reg = Registry::default();
        reg.register_collector(Box::new(g));
        let mut out = String::new();
        encode(&mut out, &reg).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            out,
            "# HELP stacyvm_uptime_seconds Process uptime in seconds.\n\
             # TYPE stacyvm_uptime_seconds gauge\n\
             stacyvm_uptime_seconds 1.5\n\
             # HELP stacyvm_sandboxes_total Sandboxes by state.\n\
             # TYPE stacyvm_sandboxes_total gauge\n\
             stacyvm_sandboxes_total{state=\"running\"} 3\n\
             stacyvm_sandboxes_total{state=\"a\\\"b\"} 1\n\
             # HELP stacyvm_provider_healthy Provider health (1 healthy).\n\
             # TYPE stacyvm_provider_healthy gauge\n"
        );
    }
}
