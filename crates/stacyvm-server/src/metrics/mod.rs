//! Prometheus metrics (`/metrics/prometheus`), with prometheus-client. One [`Metrics`] per
//! service (no globals): its registry holds the series recorded as things happen (requests,
//! operations, execs, worker RPCs); a scrape adds the gauges computed from the service's
//! summaries ([`Gauges`]). Recording is lock-free: series are created up front or cached where
//! they are recorded, and the histograms are atomic ([`LatencyHistogram`]). docs/metrics.md
//! lists every series.

mod gauges;
mod histogram;
mod history;
mod http;
mod rpc;

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use stacyvm_provider::ProviderError;
use stacyvm_types::ExecMode;

pub use gauges::{Gauges, Labels};
pub use histogram::LatencyHistogram;
pub use history::{History, HistorySnapshot, LatencyFigures, MinuteFigures};
pub use http::{RequestMetrics, RouteSeries};
pub use rpc::RpcMetrics;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabels {
    operation: String,
    provider: String,
    outcome: &'static str,
}

pub type OperationFamily = Family<OperationLabels, LatencyHistogram>;

/// Both series of one (operation, provider), `ok` and `error`.
#[derive(Debug, Clone)]
pub struct OperationSeries {
    ok: LatencyHistogram,
    error: LatencyHistogram,
}

impl OperationSeries {
    pub fn new(family: &OperationFamily, operation: &str, provider: &str) -> Self {
        let get = |outcome| {
            family.get_or_create_owned(&OperationLabels {
                operation: operation.to_string(),
                provider: provider.to_string(),
                outcome,
            })
        };
        OperationSeries {
            ok: get("ok"),
            error: get("error"),
        }
    }

    pub fn observe(&self, elapsed: Duration, failed: bool) {
        if failed { &self.error } else { &self.ok }.observe(elapsed);
    }
}

/// Sync (`POST .../exec`) or streamed (`.../exec/stream`, WebSocket).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecKind {
    Sync,
    Stream,
}

/// How an exec ended, from the provider's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecOutcome {
    /// Exit code 0.
    Ok,
    /// Ran and exited with another code.
    ExitNonzero,
    /// Killed at its timeout.
    Timeout,
    /// The provider failed (sandbox gone, backend unavailable, ...).
    Error,
    /// Ended by the server shutting down.
    Cancelled,
}

impl ExecOutcome {
    const ALL: [ExecOutcome; 5] = [
        ExecOutcome::Ok,
        ExecOutcome::ExitNonzero,
        ExecOutcome::Timeout,
        ExecOutcome::Error,
        ExecOutcome::Cancelled,
    ];

    /// The outcome of a provider's exec result; `None` = cancelled.
    pub fn of(result: Option<&Result<i32, ProviderError>>) -> Self {
        match result {
            Some(Ok(0)) => ExecOutcome::Ok,
            Some(Ok(_)) => ExecOutcome::ExitNonzero,
            Some(Err(ProviderError::Timeout)) => ExecOutcome::Timeout,
            Some(Err(_)) => ExecOutcome::Error,
            None => ExecOutcome::Cancelled,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            ExecOutcome::Ok => "ok",
            ExecOutcome::ExitNonzero => "exit_nonzero",
            ExecOutcome::Timeout => "timeout",
            ExecOutcome::Error => "error",
            ExecOutcome::Cancelled => "cancelled",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ExecLabels {
    kind: &'static str,
    mode: &'static str,
    outcome: &'static str,
}

const EXEC_KINDS: [ExecKind; 2] = [ExecKind::Sync, ExecKind::Stream];
const EXEC_MODES: [ExecMode; 2] = [ExecMode::Shell, ExecMode::Argv];

/// Every live series of one service; see the module comment.
pub struct Metrics {
    registry: Registry,
    requests: RequestMetrics,
    operations: OperationFamily,
    /// `EXEC_KINDS` × `EXEC_MODES` × `ExecOutcome::ALL`, row-major.
    execs: Vec<Counter>,
}

impl Metrics {
    /// `rpc`: the worker client's series, when this service calls workers.
    pub fn new(rpc: Option<&RpcMetrics>) -> Self {
        let mut registry = Registry::default();
        let requests = RequestMetrics::default();
        registry.register(
            "stacyvm_http_request_duration_seconds",
            "HTTP request latency until the response head, by method, route template and status class",
            requests.family().clone(),
        );
        let operations = OperationFamily::default();
        registry.register(
            "stacyvm_operation_duration_seconds",
            "Provider operation latency (spawn, destroy, exec, file operations) by provider and outcome",
            operations.clone(),
        );
        let exec_family = Family::<ExecLabels, Counter>::default();
        let mut execs = Vec::new();
        for kind in EXEC_KINDS {
            for mode in EXEC_MODES {
                for outcome in ExecOutcome::ALL {
                    execs.push(exec_family.get_or_create_owned(&ExecLabels {
                        kind: match kind {
                            ExecKind::Sync => "sync",
                            ExecKind::Stream => "stream",
                        },
                        mode: mode.as_str(),
                        outcome: outcome.as_str(),
                    }));
                }
            }
        }
        // Registered without the suffix: the encoder appends `_total` to counters.
        registry.register(
            "stacyvm_exec",
            "Commands run, by kind (sync or stream), mode and outcome",
            exec_family,
        );
        if let Some(rpc) = rpc {
            registry.register(
                "stacyvm_worker_rpc_duration_seconds",
                "Worker RPC latency by method and outcome (for streams: until the stream ends)",
                rpc.family().clone(),
            );
        }
        Metrics {
            registry,
            requests,
            operations,
            execs,
        }
    }

    /// Where the HTTP layer records request latency.
    pub fn requests(&self) -> &RequestMetrics {
        &self.requests
    }

    /// The family the operation metrics ([`crate::ops::OpMetrics`]) record into.
    pub fn operations(&self) -> &OperationFamily {
        &self.operations
    }

    /// Counts one finished exec.
    pub fn exec_finished(&self, kind: ExecKind, mode: ExecMode, outcome: ExecOutcome) {
        let k = EXEC_KINDS.iter().position(|x| *x == kind).unwrap_or(0);
        let m = EXEC_MODES.iter().position(|x| *x == mode).unwrap_or(0);
        let o = ExecOutcome::ALL
            .iter()
            .position(|x| *x == outcome)
            .unwrap_or(0);
        let i = (k * EXEC_MODES.len() + m) * ExecOutcome::ALL.len() + o;
        if let Some(c) = self.execs.get(i) {
            c.inc();
        }
    }

    /// The text exposition: this scrape's `gauges` first, then the live series.
    pub fn render(&self, gauges: Gauges) -> String {
        let mut scrape = Registry::default();
        scrape.register_collector(Box::new(gauges));
        let mut out = String::new();
        // Writing to a String cannot fail; an encoder error would be a bug in a metric.
        for reg in [&scrape, &self.registry] {
            if let Err(e) = prometheus_client::encoding::prometheus_text::encode(&mut out, reg) {
                tracing::error!(error = %e, "encoding metrics failed");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests;
