//! [`crate::Provider::watch_dir`] over an [`AgentConn`]: one `Watch` request whose answers are
//! the stream. The provider hands over the path as the agent must see it (a host path for the
//! mock, whose agent runs on the host) and the path as the caller gave it, for errors.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use stacyvm_protocol::agent::{AgentWatchEvent, ErrorCode, GuestMsg, HostMsg, AGENT_WATCH_VERSION};
use stacyvm_types::{WatchEvent, WatchKind};

use super::conn::{AbortOnDrop, AgentConn, BoundedRx, ConnError};
use crate::{ProviderError, WatchStream};

/// How long the agent may take to put the watch in place: a recursive watch of a large tree
/// adds one kernel watch per directory first.
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// `WatchEvents` frames the host keeps unread at most (up to 256 events each). A reader that
/// falls further behind loses its watch (an error item ends the stream) instead of making the
/// host buffer without bound; the agent cannot re-send what the kernel reported once.
const MAX_QUEUED_FRAMES: usize = 64;

/// Maps a failed watch; `given` is the caller's path. The agent's messages name no path (on
/// the mock it only knows the host's), so the caller's is added here.
fn map_err(e: ConnError, given: &str) -> ProviderError {
    match e {
        ConnError::Agent { code, message } => match code {
            ErrorCode::NotFound => ProviderError::FileNotFound(given.to_string()),
            ErrorCode::InvalidInput => ProviderError::InvalidInput(format!("{message}: {given}")),
            ErrorCode::Busy | ErrorCode::Version => ProviderError::Unavailable(message),
            _ => ProviderError::internal(format!("watching {given} failed: {message}")),
        },
        e => super::call_failed(e),
    }
}

/// An agent event in the domain's terms; `None` for a kind this host does not know (a newer
/// agent's), which is skipped.
fn to_event(e: AgentWatchEvent) -> Option<WatchEvent> {
    Some(WatchEvent {
        kind: WatchKind::parse(&e.kind)?,
        name: e.name,
    })
}

/// A watch between its answers.
struct Open<T: AsRef<AgentConn> + Send + Sync + 'static> {
    rx: BoundedRx,
    /// Sends `Cancel` for the watch (and forgets its waiter) when the stream is dropped.
    guard: Option<AbortOnDrop<T>>,
    owner: Arc<T>,
    id: u64,
    given: String,
}

impl<T: AsRef<AgentConn> + Send + Sync + 'static> Open<T> {
    /// The watch ended in the agent: nothing to cancel.
    fn finish(&mut self) {
        if let Some(g) = self.guard.take() {
            g.disarm();
        }
        (*self.owner).as_ref().forget(self.id);
    }

    /// The items of the next answer, and whether the stream goes on.
    async fn next(&mut self) -> (Vec<Result<WatchEvent, ProviderError>>, bool) {
        match self.rx.recv().await {
            Some(GuestMsg::WatchEvents { events }) => (
                events.into_iter().filter_map(to_event).map(Ok).collect(),
                true,
            ),
            Some(GuestMsg::WatchEnd) => {
                self.finish();
                (Vec::new(), false)
            }
            Some(GuestMsg::Error { code, message }) => {
                self.finish();
                let e = map_err(ConnError::Agent { code, message }, &self.given);
                (vec![Err(e)], false)
            }
            Some(m) => {
                self.finish();
                (vec![Err(super::unexpected(m))], false)
            }
            // The guard still cancels the agent's watch when the stream goes.
            None if self.rx.overran() => (
                vec![Err(ProviderError::Unavailable(
                    "the watch fell too far behind its reader and lost events; watch again".into(),
                ))],
                false,
            ),
            None => (vec![Err(map_err(ConnError::Closed, &self.given))], false),
        }
    }
}

/// Watches `path` (as the agent sees it) and returns once the agent says the watch is in place.
pub(crate) async fn watch<T: AsRef<AgentConn> + Send + Sync + 'static>(
    owner: Arc<T>,
    path: String,
    given: &str,
    recursive: bool,
) -> Result<WatchStream, ProviderError> {
    let conn = (*owner).as_ref();
    if conn.version < AGENT_WATCH_VERSION {
        return Err(ProviderError::Unavailable(format!(
            "sandbox agent too old for directory watches (protocol {} < {AGENT_WATCH_VERSION}); \
             recreate the sandbox with a current agent",
            conn.version
        )));
    }
    let (id, rx) = conn
        .start_bounded(HostMsg::Watch { path, recursive }, MAX_QUEUED_FRAMES)
        .await
        .map_err(|e| map_err(e, given))?;
    let guard = AbortOnDrop::new(owner.clone(), HostMsg::Cancel { target: id }).forgetting(id);
    let mut open = Open {
        rx,
        guard: Some(guard),
        owner,
        id,
        given: given.to_string(),
    };
    // Dropping `open` on a failure here cancels whatever the agent started.
    match tokio::time::timeout(START_TIMEOUT, open.rx.recv()).await {
        Ok(Some(GuestMsg::Watching)) => {}
        Ok(Some(GuestMsg::Error { code, message })) => {
            open.finish();
            return Err(map_err(ConnError::Agent { code, message }, given));
        }
        Ok(Some(m)) => return Err(super::unexpected(m)),
        Ok(None) => return Err(map_err(ConnError::Closed, given)),
        Err(_) => return Err(map_err(ConnError::Timeout, given)),
    }
    let events = futures_util::stream::unfold(Some(open), |state| async move {
        let mut open = state?;
        let (items, more) = open.next().await;
        Some((items, more.then_some(open)))
    });
    Ok(events.flat_map(futures_util::stream::iter).boxed())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_callers_path() {
        let agent = |code, message: &str| ConnError::Agent {
            code,
            message: message.into(),
        };
        assert!(matches!(
            map_err(agent(ErrorCode::NotFound, "no such directory"), "/w"),
            ProviderError::FileNotFound(p) if p == "/w"
        ));
        assert!(matches!(
            map_err(agent(ErrorCode::InvalidInput, "not a directory"), "/w/f"),
            ProviderError::InvalidInput(m) if m == "not a directory: /w/f"
        ));
        assert!(matches!(
            map_err(agent(ErrorCode::Busy, "limits"), "/w"),
            ProviderError::Unavailable(_)
        ));
        assert!(matches!(
            map_err(ConnError::Closed, "/w"),
            ProviderError::Unavailable(_)
        ));
    }

    #[test]
    fn unknown_kinds_are_skipped() {
        let e = |kind: &str| AgentWatchEvent {
            name: "a".into(),
            kind: kind.into(),
        };
        assert_eq!(
            to_event(e("rename")),
            Some(WatchEvent {
                name: "a".into(),
                kind: WatchKind::Rename
            })
        );
        assert_eq!(to_event(e("truncate")), None);
    }
}
