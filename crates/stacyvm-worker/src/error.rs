//! The worker's error types: [`WorkerError`] for the process; a failed RPC call is the
//! protocol's `RpcFailure` (status, stable code, safe message), built by the helpers below or,
//! for provider failures, by `ProviderError::to_wire`.

use stacyvm_protocol::{ErrorCode, RpcFailure};
use stacyvm_provider::ProviderError;

use crate::config::WorkerConfigError;
use crate::cp::ControlPlaneError;
use crate::lease::LeaseError;
use crate::tls::TlsError;

/// Why the worker process could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("invalid worker configuration")]
    Config(#[from] WorkerConfigError),
    #[error("cannot set up the providers: {0}")]
    Providers(String),
    #[error("worker RPC TLS")]
    Tls(#[from] TlsError),
    #[error("cannot listen on {addr}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot build the control plane client")]
    Client(#[source] reqwest::Error),
    #[error("first heartbeat to {url} failed")]
    FirstHeartbeat {
        url: String,
        #[source]
        source: ControlPlaneError,
    },
}

/// 403 `LEASE_REJECTED`: the call's lease does not fence this worker in.
pub(crate) fn lease_rejected(e: &LeaseError) -> RpcFailure {
    RpcFailure::new(
        403,
        Some(ErrorCode::LeaseRejected),
        format!("lease rejected: {e}"),
    )
}

/// 503 `DRAINING`: no new sandboxes while draining.
pub(crate) fn draining() -> RpcFailure {
    RpcFailure::new(503, Some(ErrorCode::Draining), "worker is draining")
}

/// A provider failure of a call about sandbox `sandbox_id`, as the answer
/// (`ProviderError::to_wire`, the one mapping). Internal detail is logged, never returned.
/// [`provider_failure`] for `sandbox_id`, shaped for `map_err`.
pub(crate) fn failed_for(sandbox_id: &str) -> impl FnOnce(ProviderError) -> RpcFailure + '_ {
    move |e| provider_failure(e, sandbox_id)
}

pub(crate) fn provider_failure(e: ProviderError, sandbox_id: &str) -> RpcFailure {
    if matches!(e, ProviderError::Internal { .. }) {
        tracing::warn!(sandbox_id, error = ?e, "provider operation failed");
    }
    e.to_wire(sandbox_id)
}
