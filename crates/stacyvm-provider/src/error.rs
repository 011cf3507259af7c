use stacyvm_types::Pid;

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("provider not found: {0}")]
    ProviderNotFound(String),
    #[error("sandbox not found: {0}")]
    SandboxNotFound(String),
    /// Carries the path as the caller gave it, never a host path.
    #[error("file not found: {0}")]
    FileNotFound(String),
    #[error("invalid input: {0}")]
    InvalidInput(String),
    #[error("exec timeout")]
    Timeout,
    #[error("provider unavailable: {0}")]
    Unavailable(String),
    #[error("image not found: {0}")]
    ImageNotFound(String),
    /// No process with that pid is kept in the sandbox.
    #[error("process not found: {0}")]
    ProcessNotFound(Pid),
    /// Stdin to a process started without it, or whose stdin was closed.
    #[error("stdin of process {0} is closed")]
    StdinClosed(Pid),
    /// Stdin or a resize for a process that has exited.
    #[error("process {0} has exited")]
    ProcessExited(Pid),
    /// Resize of a process without a terminal.
    #[error("process {0} has no terminal")]
    NotAPty(Pid),
    /// The backend cannot do this (pause on a provider without a freezer); the message says
    /// why. Answered 409 `NOT_SUPPORTED`.
    #[error("not supported: {0}")]
    NotSupported(String),
    /// The message is safe to show callers; the source (with host detail) is only logged.
    #[error("{message}")]
    Internal {
        message: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

impl ProviderError {
    /// A file operation named a directory (`given` as the caller wrote it).
    pub(crate) fn is_a_directory(given: &str) -> Self {
        ProviderError::InvalidInput(format!("is a directory: {given}"))
    }

    pub fn internal(message: impl Into<String>) -> Self {
        ProviderError::Internal {
            message: message.into(),
            source: None,
        }
    }

    pub fn internal_with(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        ProviderError::Internal {
            message: message.into(),
            source: Some(Box::new(source)),
        }
    }
}
