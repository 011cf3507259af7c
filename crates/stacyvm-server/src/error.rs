//! The service layer's error: every transport maps it (HTTP does so in `http/error.rs`).

use stacyvm_provider::ProviderError;
use stacyvm_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("invalid input: {0}")]
    BadRequest(String),
    #[error("sandbox not found: {0}")]
    SandboxNotFound(String),
    #[error("provider not found: {0}")]
    ProviderNotFound(String),
    #[error("file not found: {0}")]
    FileNotFound(String),
    /// Store-level not found (`not found: template "x"`).
    #[error("{0}")]
    NotFound(String),
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("exec timeout: {0}")]
    Timeout(String),
    #[error("resource limit exceeded: {0}")]
    ResourceLimit(String),
    #[error("payload too large: {0}")]
    PayloadTooLarge(String),
    #[error("provider unavailable: {0}")]
    Unavailable(String),
    #[error("{0}")]
    Forbidden(String),
    /// Credentials were missing or wrong (worker routes).
    #[error("{0}")]
    Unauthorized(String),
    /// This control plane lacks what the request needs (worker credentials, a signing key).
    #[error("{0}")]
    NotConfigured(String),
    /// The sandbox runs but offers no preview of that port (not running, no network, port not
    /// forwarded by its backend).
    #[error("preview not available: {0}")]
    PreviewUnavailable(String),
    /// The sandbox runs on a worker that does not proxy previews (it does not advertise the
    /// `preview` capability: an older build or the original worker).
    #[error("preview not supported: {0}")]
    PreviewRemote(String),
    /// A preview request without the sandbox's preview token (docs/preview.md).
    #[error("{0}")]
    PreviewTokenRequired(String),
    /// A preview request with a token that is not the sandbox's.
    #[error("{0}")]
    PreviewTokenInvalid(String),
    /// Nothing answered on the sandbox's port (refused, unreachable, connect timeout); the
    /// message names no address.
    #[error("{0}")]
    PreviewUpstream(String),
    #[error("process not found: {0}")]
    ProcessNotFound(stacyvm_types::Pid),
    #[error("stdin of process {0} is closed")]
    StdinClosed(stacyvm_types::Pid),
    #[error("process {0} has exited")]
    ProcessExited(stacyvm_types::Pid),
    #[error("process {0} has no terminal")]
    NotAPty(stacyvm_types::Pid),
    /// Exec, files and process starts on a paused sandbox (resume it first).
    #[error("sandbox is paused: {0}")]
    SandboxPaused(String),
    /// The sandbox's backend cannot do this (pause without a freezer); says why.
    #[error("not supported: {0}")]
    NotSupported(String),
    #[error("snapshot not found: {0}")]
    SnapshotNotFound(String),
    /// Deleting a volume that a sandbox not yet destroyed mounts.
    #[error("volume in use: {0}")]
    VolumeInUse(String),
    /// A spawn needs a worker (the one holding its volume or snapshot) that cannot take it;
    /// names the worker.
    #[error("worker unavailable: {0}")]
    WorkerUnavailable(String),
    /// Safe message for callers; `source` carries detail that is only logged.
    #[error("{message}")]
    Internal {
        message: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

impl ServiceError {
    pub fn bad_request(msg: impl Into<String>) -> Self {
        ServiceError::BadRequest(msg.into())
    }

    pub fn internal(msg: impl Into<String>) -> Self {
        ServiceError::Internal {
            message: msg.into(),
            source: None,
        }
    }
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound { kind, id } => {
                ServiceError::NotFound(format!("not found: {kind} {id:?}"))
            }
            StoreError::Conflict(m) => ServiceError::Conflict(m),
            StoreError::InvalidTransition(t) => ServiceError::Conflict(t.to_string()),
            other => ServiceError::Internal {
                message: "store error".into(),
                source: Some(Box::new(other)),
            },
        }
    }
}

impl From<ProviderError> for ServiceError {
    fn from(e: ProviderError) -> Self {
        match e {
            ProviderError::ProviderNotFound(n) => ServiceError::ProviderNotFound(n),
            ProviderError::SandboxNotFound(id) => ServiceError::SandboxNotFound(id),
            ProviderError::FileNotFound(p) => ServiceError::FileNotFound(p),
            ProviderError::InvalidInput(m) => ServiceError::BadRequest(m),
            ProviderError::Timeout => ServiceError::Timeout(String::new()),
            ProviderError::Unavailable(m) => ServiceError::Unavailable(m),
            ProviderError::ImageNotFound(m) => {
                ServiceError::BadRequest(format!("image not found: {m}"))
            }
            ProviderError::ProcessNotFound(pid) => ServiceError::ProcessNotFound(pid),
            ProviderError::StdinClosed(pid) => ServiceError::StdinClosed(pid),
            ProviderError::ProcessExited(pid) => ServiceError::ProcessExited(pid),
            ProviderError::NotAPty(pid) => ServiceError::NotAPty(pid),
            ProviderError::NotSupported(m) => ServiceError::NotSupported(m),
            ProviderError::Internal { message, source } => {
                ServiceError::Internal { message, source }
            }
        }
    }
}

pub type ServiceResult<T> = Result<T, ServiceError>;
