//! The in-sandbox agent (`crates/stacyvm-agent`) as every provider reaches it: the protocol
//! client ([`conn`]), the process calls over it ([`procs`]), and where the static binary is
//! found for the providers that start it themselves (mock on the host, docker inside the
//! container). See docs/processes.md.

pub(crate) mod conn;
pub(crate) mod exec;
// The files API over the agent, for the providers whose agent sees the sandbox's own root.
#[cfg(any(feature = "microvm", feature = "bwrap"))]
pub(crate) mod files;
pub(crate) mod follow;
pub(crate) mod procs;
#[cfg(any(feature = "microvm", feature = "bwrap"))]
pub(crate) mod transfer;
pub(crate) mod watch;

use std::path::{Path, PathBuf};

use stacyvm_protocol::agent::GuestMsg;

use self::conn::ConnError;
use crate::{ProviderError, MICROVM_DEFAULT_DATA_DIR};

/// A failed agent call other than the agent's own refusal (`ConnError::Agent`, which each API
/// maps itself: only it knows what the codes name): the connection lost or silent, or a
/// frame that could not be read.
pub(crate) fn call_failed(e: ConnError) -> ProviderError {
    match e {
        ConnError::Closed | ConnError::Io(_) => {
            ProviderError::Unavailable("sandbox agent unreachable".into())
        }
        ConnError::Timeout => ProviderError::Unavailable("sandbox agent did not answer".into()),
        e => ProviderError::internal_with("sandbox agent protocol error", e),
    }
}

/// An answer that is not one the request can get.
pub(crate) fn unexpected(m: GuestMsg) -> ProviderError {
    ProviderError::internal(format!("unexpected agent answer {m:?}"))
}

/// Environment variable naming the agent binary (tests, CI, development).
pub const AGENT_ENV: &str = "STACYVM_AGENT";
/// What the binary is called wherever it is installed.
const AGENT_NAME: &str = "stacyvm-agent";
/// Where `cargo build --release` in crates/stacyvm-agent puts it (its own workspace and target).
const REPO_BUILD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../stacyvm-agent/target/x86_64-unknown-linux-gnu/release/stacyvm-agent"
);

/// How to get an agent, for the message of a provider that has none.
pub(crate) const HOW_TO_BUILD: &str =
    "build the static agent (cd crates/stacyvm-agent && cargo build --release, \
or bash scripts/setup-microvm.sh) and set STACYVM_AGENT or the provider's agent_path";

/// The agent binary: `configured`, else `$STACYVM_AGENT`, else the one scripts/setup-microvm.sh
/// installs, else `stacyvm-agent` next to the running executable, else the repository's release
/// build. The first that is a file wins; `None` when none is.
pub fn locate(configured: Option<&Path>) -> Option<PathBuf> {
    let env = std::env::var_os(AGENT_ENV).map(PathBuf::from);
    let installed = Path::new(MICROVM_DEFAULT_DATA_DIR).join(AGENT_NAME);
    let beside = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join(AGENT_NAME)));
    // A configured or named path that is missing is not silently replaced by another binary.
    // Absolute and resolved: docker bind-mounts it.
    if let Some(p) = configured.map(Path::to_path_buf).or(env) {
        return p.canonicalize().ok().filter(|p| p.is_file());
    }
    [Some(installed), beside, Some(PathBuf::from(REPO_BUILD))]
        .into_iter()
        .flatten()
        .find(|p| p.is_file())
        .and_then(|p| p.canonicalize().ok())
}

/// `$STACYVM_AGENT`, else the repository's release build, if it is a file: the agent built
/// from this checkout, for tests and development (the installed one may be older).
pub fn built() -> Option<PathBuf> {
    std::env::var_os(AGENT_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(REPO_BUILD))
        .canonicalize()
        .ok()
        .filter(|p| p.is_file())
}

/// The answer of a process call when no agent binary was found.
/// The refusal of a `user` by a provider running a command without an agent that can switch.
pub(crate) fn no_user_switch(provider: &str) -> ProviderError {
    ProviderError::NotSupported(format!(
        "provider {provider} runs this command without an agent of protocol \
         {}, so it cannot run it as another user; {HOW_TO_BUILD}",
        stacyvm_protocol::agent::AGENT_USER_VERSION
    ))
}

pub(crate) fn missing(provider: &str) -> ProviderError {
    ProviderError::Unavailable(format!(
        "provider {provider} has no stacyvm-agent for background processes: {HOW_TO_BUILD}"
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_configured_path_is_resolved_or_refused() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("agent");
        std::fs::write(&bin, b"").unwrap();
        let rel = dir.path().join("sub/../agent");
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        assert_eq!(locate(Some(&rel)), Some(bin.canonicalize().unwrap()));
        assert_eq!(locate(Some(&dir.path().join("missing"))), None);
        assert_eq!(locate(Some(dir.path())), None, "a directory is no binary");
    }
}
