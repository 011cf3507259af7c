//! The `providers.docker`, `providers.microvm` and `providers.bwrap` sections of the config
//! file, owned here so one type serves both the file (serde: keys, defaults, unknown keys
//! refused) and the backend that runs on it. Always compiled: a build without a backend still
//! reads its section.
//!
//! Fields the file does not have (set by the provider factory or by tests) are `#[serde(skip)]`
//! and take their value from `Default`. Serialised field order is the schema order that
//! `Config::keys()` and the docs list, so new file keys go where they belong in that order.

mod bwrap;
mod docker;
mod microvm;

pub use bwrap::{BwrapConfig, BWRAP_DEFAULT_DATA_DIR, DEFAULT_IMAGES_DIR};
pub use docker::{DockerConfig, DockerPoolSecurity};
pub use microvm::MicrovmConfig;
