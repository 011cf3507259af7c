//! The one error type of the config layer (loading, validation, the provider factory). Every variant names the offending key (or env var,
//! or file) so an operator can fix the config without reading code.

use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {} named by STACYVM_CONFIG does not exist", path.display())]
    ExplicitFileMissing { path: PathBuf },

    #[error("cannot determine the current directory")]
    CurrentDir(#[source] io::Error),

    #[error("cannot read config file {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("{origin} is not valid YAML")]
    Syntax {
        origin: String,
        #[source]
        source: serde_norway::Error,
    },

    /// A key the file (or an env override) got wrong: unknown key, wrong type, bad duration.
    #[error("{key}: {message}")]
    Key { key: String, message: String },

    /// An environment override that cannot become a value of its key's type.
    #[error("{var} (override of {key}): {message}")]
    Env {
        var: String,
        key: String,
        message: String,
    },

    #[error("{key} and {file_key} are both set; set only one")]
    SecretConflict { key: String, file_key: String },

    #[error("{file_key}: cannot read secret file {}", path.display())]
    SecretRead {
        file_key: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("{file_key}: secret file {} is empty", path.display())]
    SecretEmpty { file_key: String, path: PathBuf },

    /// A value that parsed but breaks a rule (range, enum, format, cross-key invariant).
    #[error("{key}: {reason}")]
    Invalid { key: String, reason: String },

    #[error("providers.firecracker.enabled: the firecracker provider is not available in this build; use providers.microvm")]
    FirecrackerUnavailable,

    #[error("{key}: the {provider} provider is not shipped in StacyVM (available: mock, docker, microvm)")]
    ProviderNotShipped { key: String, provider: String },

    /// [`crate::build_providers`]: a provider the config asks for cannot be built (not in this
    /// build, or its settings refused by the backend).
    #[error("provider {name}: {message}")]
    ProviderUnavailable { name: &'static str, message: String },
}

impl ConfigError {
    pub(crate) fn invalid(key: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            reason: reason.into(),
        }
    }

    /// The dotted config key the error is about, when there is one.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Key { key, .. }
            | ConfigError::Env { key, .. }
            | ConfigError::SecretConflict { key, .. }
            | ConfigError::Invalid { key, .. }
            | ConfigError::ProviderNotShipped { key, .. } => Some(key),
            ConfigError::SecretRead { file_key, .. }
            | ConfigError::SecretEmpty { file_key, .. } => Some(file_key),
            ConfigError::FirecrackerUnavailable => Some("providers.firecracker.enabled"),
            ConfigError::ExplicitFileMissing { .. }
            | ConfigError::CurrentDir(_)
            | ConfigError::Read { .. }
            | ConfigError::Syntax { .. }
            | ConfigError::ProviderUnavailable { .. } => None,
        }
    }
}
