//! The worker's error types: [`WorkerError`] for the process, `RpcError` for one RPC call
//! (status + stable code + safe message; the one place provider errors become statuses).

use axum::http::StatusCode;
use stacyvm_protocol::code;
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

/// A failed RPC: becomes an `RpcResponse` with `error` and `code` and this status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RpcError {
    pub status: StatusCode,
    pub code: Option<&'static str>,
    pub message: String,
}

impl RpcError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        RpcError {
            status,
            code: Some(code),
            message: message.into(),
        }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code::BAD_REQUEST, message)
    }

    pub(crate) fn lease(e: &LeaseError) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            code::LEASE_REJECTED,
            format!("lease rejected: {e}"),
        )
    }

    pub(crate) fn draining() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            code::DRAINING,
            "worker is draining",
        )
    }

    pub(crate) fn exec_timeout(sandbox_id: &str) -> Self {
        Self::new(
            StatusCode::GATEWAY_TIMEOUT,
            code::TIMEOUT,
            format!("exec timeout: {sandbox_id}"),
        )
    }

    /// Maps a provider failure for sandbox `sandbox_id` (wire-reference §9.3, DECISIONS.md
    /// status codes). Internal detail is logged, never returned.
    pub(crate) fn provider(e: ProviderError, sandbox_id: &str) -> Self {
        use StatusCode as S;
        match e {
            ProviderError::ProviderNotFound(n) => Self::new(
                S::NOT_FOUND,
                code::PROVIDER_NOT_FOUND,
                format!("provider not found: {n}"),
            ),
            ProviderError::SandboxNotFound(_) => Self::new(
                S::NOT_FOUND,
                code::SANDBOX_NOT_FOUND,
                format!("sandbox not found: {sandbox_id}"),
            ),
            ProviderError::FileNotFound(p) => Self::new(
                S::NOT_FOUND,
                code::FILE_NOT_FOUND,
                format!("file not found: {p}"),
            ),
            ProviderError::InvalidInput(m) => Self::bad_request(format!("invalid input: {m}")),
            ProviderError::ImageNotFound(m) => Self::bad_request(format!("image not found: {m}")),
            ProviderError::Timeout => Self::exec_timeout(sandbox_id),
            ProviderError::Unavailable(m) => Self::new(
                S::SERVICE_UNAVAILABLE,
                code::UNAVAILABLE,
                format!("provider unavailable: {m}"),
            ),
            e @ ProviderError::Internal { .. } => {
                tracing::warn!(sandbox_id, error = ?e, "provider operation failed");
                Self::new(S::INTERNAL_SERVER_ERROR, code::INTERNAL, e.to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_status_table() {
        let cases = [
            (
                ProviderError::ProviderNotFound("x".into()),
                404,
                code::PROVIDER_NOT_FOUND,
            ),
            (
                ProviderError::SandboxNotFound("rt".into()),
                404,
                code::SANDBOX_NOT_FOUND,
            ),
            (
                ProviderError::FileNotFound("/a".into()),
                404,
                code::FILE_NOT_FOUND,
            ),
            (
                ProviderError::InvalidInput("bad".into()),
                400,
                code::BAD_REQUEST,
            ),
            (
                ProviderError::ImageNotFound("img".into()),
                400,
                code::BAD_REQUEST,
            ),
            (ProviderError::Timeout, 504, code::TIMEOUT),
            (
                ProviderError::Unavailable("down".into()),
                503,
                code::UNAVAILABLE,
            ),
            (ProviderError::internal("boom"), 500, code::INTERNAL),
        ];
        for (e, status, c) in cases {
            let r = RpcError::provider(e, "sb-1");
            assert_eq!(r.status.as_u16(), status, "{r:?}");
            assert_eq!(r.code, Some(c));
        }
        let r = RpcError::provider(ProviderError::SandboxNotFound("rt-9".into()), "sb-1");
        assert_eq!(r.message, "sandbox not found: sb-1");
    }
}
