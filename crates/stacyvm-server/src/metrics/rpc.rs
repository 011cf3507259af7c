//! Worker RPC latency by method and outcome, recorded by [`crate::remote::WorkerClient`].

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use stacyvm_protocol::method;

use super::histogram::LatencyHistogram;
use crate::remote::RemoteError;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcLabels {
    method: Cow<'static, str>,
    outcome: &'static str,
}

pub type RpcFamily = Family<RpcLabels, LatencyHistogram>;

/// How a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RpcOutcome {
    /// The worker answered with a result.
    Ok,
    /// The worker answered with an error (its status or code says which).
    Rejected,
    /// No usable answer: unreachable, stalled, undecodable, no credential, or given up on by
    /// the caller.
    Failed,
}

const OUTCOMES: [RpcOutcome; 3] = [RpcOutcome::Ok, RpcOutcome::Rejected, RpcOutcome::Failed];

impl RpcOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            RpcOutcome::Ok => "ok",
            RpcOutcome::Rejected => "rejected",
            RpcOutcome::Failed => "failed",
        }
    }

    fn index(self) -> usize {
        match self {
            RpcOutcome::Ok => 0,
            RpcOutcome::Rejected => 1,
            RpcOutcome::Failed => 2,
        }
    }
}

/// The series of every known method, created up front so a call only touches atomics.
#[derive(Debug, Clone)]
pub struct RpcMetrics {
    family: RpcFamily,
    /// `method::ALL[i]` × [`OUTCOMES`], row-major.
    known: Arc<[LatencyHistogram]>,
}

impl Default for RpcMetrics {
    fn default() -> Self {
        let family = RpcFamily::default();
        let known = method::ALL
            .iter()
            .flat_map(|m| OUTCOMES.iter().map(move |o| (*m, *o)))
            .map(|(m, o)| family.get_or_create_owned(&labels(Cow::Borrowed(m), o)))
            .collect();
        RpcMetrics { family, known }
    }
}

fn labels(method: Cow<'static, str>, outcome: RpcOutcome) -> RpcLabels {
    RpcLabels {
        method,
        outcome: outcome.as_str(),
    }
}

impl RpcMetrics {
    /// The family, for registering in [`super::Metrics`].
    pub fn family(&self) -> &RpcFamily {
        &self.family
    }

    /// Starts timing one call of `method`; see [`RpcTimer`].
    pub fn start<'a>(&'a self, method: &'a str) -> RpcTimer<'a> {
        RpcTimer {
            metrics: self,
            method,
            started: Instant::now(),
            outcome: RpcOutcome::Failed,
        }
    }

    fn series(&self, method: &str, outcome: RpcOutcome) -> LatencyHistogram {
        match method::ALL.iter().position(|m| *m == method) {
            Some(i) => self.known[i * OUTCOMES.len() + outcome.index()].clone(),
            // A method this build does not list: created on first use.
            None => self
                .family
                .get_or_create_owned(&labels(Cow::Owned(method.to_string()), outcome)),
        }
    }
}

/// Records one call when dropped. The outcome is `failed` unless [`RpcTimer::finish`] set it,
/// so an early `?` return or a dropped future counts as a failed call.
pub struct RpcTimer<'a> {
    metrics: &'a RpcMetrics,
    method: &'a str,
    started: Instant,
    outcome: RpcOutcome,
}

impl RpcTimer<'_> {
    /// Sets the outcome from the call's result (recorded when the timer drops).
    pub fn finish<T>(&mut self, result: &Result<T, RemoteError>) {
        self.outcome = match result {
            Ok(_) => RpcOutcome::Ok,
            Err(RemoteError::Rejected(_)) => RpcOutcome::Rejected,
            Err(_) => RpcOutcome::Failed,
        };
    }
}

impl Drop for RpcTimer<'_> {
    fn drop(&mut self) {
        self.metrics
            .series(self.method, self.outcome)
            .observe(self.started.elapsed());
    }
}

#[cfg(test)]
mod tests {
    use stacyvm_protocol::RpcFailure;

    use super::*;

    #[test]
    fn outcomes_land_on_their_series() {
        let m = RpcMetrics::default();
        {
            let mut t = m.start(method::SPAWN);
            t.finish(&Ok::<(), RemoteError>(()));
        }
        {
            let mut t = m.start(method::EXEC);
            t.finish(&Err::<(), _>(RemoteError::Rejected(RpcFailure::new(
                404, None, "x",
            ))));
        }
        drop(m.start(method::EXEC)); // an early return: failed
        drop(m.start("worker.future_method"));
        let count = |meth: &str, o: RpcOutcome| m.series(meth, o).count();
        assert_eq!(count(method::SPAWN, RpcOutcome::Ok), 1);
        assert_eq!(count(method::EXEC, RpcOutcome::Rejected), 1);
        assert_eq!(count(method::EXEC, RpcOutcome::Failed), 1);
        assert_eq!(count(method::EXEC, RpcOutcome::Ok), 0);
        assert_eq!(count("worker.future_method", RpcOutcome::Failed), 1);
    }
}
