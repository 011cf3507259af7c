//! Version 6: directory watches (inotify in the agent). One request, many answers:
//!
//! - [`HostMsg::Watch`](super::HostMsg::Watch) `{ path, recursive }` → `Watching` once every
//!   watch is in place (a change made after the host got it is reported), then
//!   `WatchEvents`* as changes happen, until `Cancel { target }` names the request, the host
//!   goes away, or the watched directory itself is removed; the agent then answers `WatchEnd`
//!   (not after the host went away: nobody is left to read it).
//! - Before `Watching`: `Error` `not_found` (no such path), `invalid_input` (not a directory, a
//!   relative path), `busy` (the sandbox's inotify limits or no thread for the watch).
//! - After it: `Error` `busy` when the kernel's event queue overflowed (events were lost), which
//!   ends the watch; the host watches again if it wants to go on.
//!
//! Plain strings here, as in [`super::process`]: the host maps `kind` to its domain type and
//! skips kinds it does not know, so a newer agent's kinds never break an older host's stream.

use serde::{Deserialize, Serialize};

/// Events per `WatchEvents` frame at most: names are at most 4096 bytes, so a frame stays far
/// below `MAX_FRAME_LEN`.
pub const MAX_WATCH_EVENTS_PER_FRAME: usize = 256;

/// One change below the watched directory. `name` is the path relative to it (`a.txt`,
/// `sub/b.txt` in a recursive watch), never absolute; `kind` one of [`watch_kind`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct AgentWatchEvent {
    pub name: String,
    pub kind: String,
}

/// The values of [`AgentWatchEvent::kind`], with fsnotify's meanings (what E2B's envd reports):
/// a rename is `rename` under the old name and `create` under the new one.
pub mod watch_kind {
    /// Created, or moved in (the new name of a rename).
    pub const CREATE: &str = "create";
    /// Content modified.
    pub const WRITE: &str = "write";
    /// Deleted.
    pub const REMOVE: &str = "remove";
    /// Moved away (the old name of a rename).
    pub const RENAME: &str = "rename";
    /// Metadata changed: mode, owner, times, links.
    pub const CHMOD: &str = "chmod";
}
