//! Directory watches as providers see them: the stream a watch returns. The watch itself lives
//! in the sandbox's agent (inotify), so every backend that has an agent watches the same way.

use futures_util::stream::BoxStream;
use stacyvm_types::WatchEvent;

use crate::ProviderError;

/// Changes below the watched directory, as they happen. The watch is in place when the stream
/// is returned (a change made after that is reported). It never ends by itself while the
/// directory exists; it ends (`None`) when the directory is removed, and with an error item
/// when the watch breaks (the sandbox went away, the kernel dropped events, the reader fell far
/// behind). Dropping it ends the watch in the sandbox.
pub type WatchStream = BoxStream<'static, Result<WatchEvent, ProviderError>>;

/// The answer of a backend without watches.
pub(crate) fn unsupported(provider: &str) -> ProviderError {
    ProviderError::NotSupported(format!("the {provider} provider cannot watch directories"))
}
