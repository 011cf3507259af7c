//! Typed, strict configuration for `stacyvm serve` and `stacyvm worker` (wire-reference §11,
//! DECISIONS.md, docs/configuration.md).
//!
//! Flow: [`Config::load`] finds the file (`$STACYVM_CONFIG`, else `./stacyvm.yaml`, else
//! `~/.stacyvm/config.yaml`, else defaults), applies `STACYVM_A_B_C` env overrides, and
//! deserialises with unknown keys rejected. [`Config::validate`] then resolves `*_file` secrets,
//! checks every rule and returns a [`ValidConfig`] plus warnings for the caller to log.
//! [`build_providers`] turns a validated config into the providers both `serve` and `worker`
//! run, so the two binaries build them from the same code.
//!
//! The `providers.docker` and `providers.microvm` sections are the provider crate's own
//! [`DockerConfig`] and [`MicrovmConfig`]: one type per section (docs/configuration.md).

mod certs;
mod de;
mod env;
mod error;
mod factory;
mod formats;
mod images;
mod load;
mod providers;
mod secrets;
mod sections;
mod valid;
mod validate;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use certs::{cert_facts, CertFacts};
pub use error::ConfigError;
pub use factory::build_providers;
pub use images::{ImagesSection, DEFAULT_IMAGES_ROOT};
use load::defaults_tree;
pub use load::Sources;
pub use providers::{
    CustomSection, E2bSection, FirecrackerSection, MockSection, ProotSection, ProvidersSection,
};
pub use sections::{
    AuthSection, DatabaseSection, DefaultsSection, E2bApiSection, E2bTemplate, LifecycleSection,
    LimitsSection, LoggingSection, PoolSection, ProcessesSection, RateLimitSection, RpcTlsSection,
    ServerSection, WorkerSection,
};
pub use stacyvm_provider::{DockerConfig, DockerPoolSecurity, MicrovmConfig};
pub use valid::{
    Accel, CorsOrigins, DatabaseTarget, LogFormat, LogLevel, MicrovmNetwork, Overflow,
    ProviderChoice, RateLimitKey, ValidConfig,
};
pub use validate::Invalid;

/// The env var that names an explicit config file.
pub const CONFIG_ENV_VAR: &str = "STACYVM_CONFIG";

/// The whole config file as written (after env overrides), before validation. `Serialize`
/// output contains secrets in clear; `Debug` redacts them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerSection,
    pub worker: WorkerSection,
    pub providers: ProvidersSection,
    pub defaults: DefaultsSection,
    /// Ours: per-spawn resource ceilings.
    pub limits: LimitsSection,
    pub auth: AuthSection,
    pub rate_limit: RateLimitSection,
    pub database: DatabaseSection,
    pub logging: LoggingSection,
    pub pool: PoolSection,
    pub processes: ProcessesSection,
    /// Ours: pause retention (docs/state.md).
    pub lifecycle: LifecycleSection,
    /// Ours: the OCI image store (docs/images.md).
    pub images: ImagesSection,
    /// Ours: the E2B-compatible API (docs/e2b.md).
    pub e2b: E2bApiSection,
    /// The file this config was read from; `None` = built-in defaults (plus env).
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
