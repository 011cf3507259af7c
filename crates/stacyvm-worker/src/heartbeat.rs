//! The heartbeat: `POST {control_plane}/api/v1/worker/{id}/heartbeat` every interval. The first
//! one is sent by `run` and is fatal on failure; later failures are logged and retried with a
//! backoff that never waits longer than the interval (the control plane counts silence).

use std::time::Duration;

use serde_json::{json, Map, Value};
use stacyvm_protocol::{capacity, HeartbeatBody, PROTOCOL_VERSION};
use tokio_util::sync::CancellationToken;

use crate::cp::ControlPlaneError;
use crate::state::WorkerState;

/// First retry after a failure; doubles per consecutive failure, capped at the interval.
const FIRST_RETRY: Duration = Duration::from_millis(500);

pub(crate) const CAPABILITIES: [&str; 8] = [
    "remote_worker",
    "heartbeat",
    stacyvm_protocol::capability::FILE_STREAM,
    stacyvm_protocol::capability::PROCESSES,
    stacyvm_protocol::capability::WATCH,
    stacyvm_protocol::capability::PREVIEW,
    stacyvm_protocol::capability::USER,
    stacyvm_protocol::capability::STATE,
];

/// What every heartbeat carries besides live state.
#[derive(Debug, Clone)]
pub(crate) struct Beat {
    pub hostname: String,
    pub interval: Duration,
    pub preview_domain: String,
    /// Only when the RPC server runs.
    pub rpc_url: Option<String>,
    pub max_sandboxes: i64,
    pub max_sandboxes_per_owner: i64,
}

impl Beat {
    pub(crate) fn body(&self, state: &WorkerState) -> HeartbeatBody {
        let mut cap = Map::new();
        cap.insert("max_sandboxes".into(), json!(self.max_sandboxes));
        cap.insert(
            "max_sandboxes_per_owner".into(),
            json!(self.max_sandboxes_per_owner),
        );
        cap.insert("preview_domain".into(), json!(self.preview_domain));
        if let Some(url) = &self.rpc_url {
            cap.insert("rpc_url".into(), json!(url));
        }
        cap.insert(capacity::PROTOCOL_VERSION.into(), json!(PROTOCOL_VERSION));
        let ms = u64::try_from(self.interval.as_millis()).unwrap_or(u64::MAX);
        cap.insert(capacity::HEARTBEAT_INTERVAL_MS.into(), json!(ms));
        let held: Vec<Value> = state
            .held_sandboxes()
            .into_iter()
            .map(Value::from)
            .collect();
        cap.insert(capacity::SANDBOXES.into(), Value::Array(held));
        HeartbeatBody {
            hostname: self.hostname.clone(),
            status: if state.is_draining() {
                "draining"
            } else {
                "online"
            }
            .into(),
            providers: Some(state.inner.providers.names()),
            capabilities: Some(CAPABILITIES.iter().map(|c| (*c).to_string()).collect()),
            capacity: cap,
        }
    }

    pub(crate) async fn send(&self, state: &WorkerState) -> Result<(), ControlPlaneError> {
        state.inner.cp.heartbeat(&self.body(state)).await
    }

    /// Heartbeats until `stop`; a drain starting wakes it for an immediate beat.
    pub(crate) async fn run_loop(self, state: WorkerState, stop: CancellationToken) {
        let mut failures: u32 = 0;
        loop {
            let delay = if failures == 0 {
                self.interval
            } else {
                backoff(failures).min(self.interval)
            };
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(delay) => {}
                () = state.inner.drain.changed() => {}
            }
            let result = tokio::select! {
                () = stop.cancelled() => return,
                r = self.send(&state) => r,
            };
            match result {
                Ok(()) => {
                    if failures > 0 {
                        tracing::info!(after = failures, "heartbeat recovered");
                    }
                    failures = 0;
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    tracing::warn!(
                        error = %error_chain(&e),
                        status = e.status(),
                        consecutive_failures = failures,
                        "heartbeat failed"
                    );
                }
            }
        }
    }
}

fn backoff(failures: u32) -> Duration {
    FIRST_RETRY.saturating_mul(1u32 << failures.saturating_sub(1).min(16))
}

/// `a: b: c` from an error and its sources.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_then_caps() {
        assert_eq!(backoff(1), Duration::from_millis(500));
        assert_eq!(backoff(2), Duration::from_secs(1));
        assert_eq!(backoff(4), Duration::from_secs(4));
        assert!(backoff(1000) >= Duration::from_secs(3600));
    }
}
