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

/// `network_mode` of the microvm and bwrap sections.
#[cfg_attr(
    not(any(feature = "microvm", feature = "bwrap")),
    allow(dead_code, reason = "used by the microvm and bwrap backends")
)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NetworkMode {
    /// Only `lo`.
    None,
    /// Outbound connections (QEMU user networking, or pasta for bwrap), and sandbox port 3000
    /// forwarded from a loopback port of the host.
    User,
}

#[cfg_attr(
    not(any(feature = "microvm", feature = "bwrap")),
    allow(dead_code, reason = "used by the microvm and bwrap backends")
)]
impl NetworkMode {
    /// `none` (or empty) and `user`; `None` for anything else.
    pub(crate) fn parse(s: &str) -> Option<Self> {
        match s.trim() {
            "" | "none" => Some(NetworkMode::None),
            "user" => Some(NetworkMode::User),
            _ => None,
        }
    }

    #[cfg_attr(not(feature = "bwrap"), allow(dead_code, reason = "bwrap reports it"))]
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            NetworkMode::None => "none",
            NetworkMode::User => "user",
        }
    }
}
