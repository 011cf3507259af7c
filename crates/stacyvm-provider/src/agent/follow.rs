//! Start a process and follow its output from 0 in one agent request (protocol v5,
//! `ProcStart.read_window`): the `Proc` answer, then a windowed read under the same id. The
//! host returns a credit for every frame its consumer took, so a slow consumer leaves output
//! in the agent's ring (which drops the oldest, with a gap record, as any follow read would)
//! rather than in a host queue. Older agents get the two requests.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use stacyvm_protocol::agent::{GuestMsg, HostMsg, ProcStart, AGENT_START_READ_VERSION};
use stacyvm_types::{OutputRecord, ProcessInfo};

use super::conn::{AbortOnDrop, AgentConn, ConnError};
use super::procs::{self, map_err, to_info, to_record};
use super::unexpected;
use crate::{ProviderError, RecordStream};

/// Deadline of the start's answer (the read after it may last as long as the process).
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Frames the agent may send ahead of the consumer.
const WINDOW: u32 = 4;

pub(crate) async fn start_follow<T: AsRef<AgentConn> + Send + Sync + 'static>(
    owner: Arc<T>,
    mut msg: ProcStart,
) -> Result<(ProcessInfo, RecordStream), ProviderError> {
    let conn = (*owner).as_ref();
    if conn.version < AGENT_START_READ_VERSION {
        let info = procs::start(conn, msg).await?;
        let records = procs::output(owner, info.pid, 0, true).await?;
        return Ok((info, records));
    }
    procs::check_user(conn, &msg)?;
    msg.read_window = Some(WINDOW);
    let (id, mut rx) = conn
        .start(HostMsg::ProcStart(msg))
        .await
        .map_err(|e| map_err(e, 0))?;
    // Dropping the stream (or failing below) ends the read, never the process.
    let guard = AbortOnDrop::new(owner.clone(), HostMsg::Cancel { target: id }).forgetting(id);
    let info = match tokio::time::timeout(START_TIMEOUT, rx.recv()).await {
        Ok(Some(GuestMsg::Proc { proc })) => to_info(proc),
        Ok(Some(GuestMsg::Error { code, message })) => {
            return Err(map_err(ConnError::Agent { code, message }, 0))
        }
        Ok(Some(other)) => return Err(unexpected(other)),
        Ok(None) => return Err(map_err(ConnError::Closed, 0)),
        Err(_) => return Err(map_err(ConnError::Timeout, 0)),
    };
    let pid = info.pid;
    let state = Some((owner, rx, guard));
    let records = futures_util::stream::unfold(state, move |state| async move {
        let (owner, mut rx, guard) = state?;
        let items: Vec<Result<OutputRecord, ProviderError>> = match rx.recv().await {
            Some(GuestMsg::Records { records }) => records.into_iter().map(to_record).collect(),
            // The read ended without an exit record (a cancelled read): nothing more comes.
            Some(GuestMsg::ReadEnd) => return None,
            Some(GuestMsg::Error { code, message }) => {
                vec![Err(map_err(ConnError::Agent { code, message }, pid))]
            }
            Some(other) => vec![Err(unexpected(other))],
            None => vec![Err(map_err(ConnError::Closed, pid))],
        };
        let done = items
            .iter()
            .any(|r| matches!(r, Ok(OutputRecord::Exit { .. }) | Err(_)));
        if done {
            // The agent ends a read after its exit record by itself.
            if items.iter().all(Result::is_ok) {
                guard.disarm();
                (*owner).as_ref().forget(id);
            }
            return Some((items, None));
        }
        (*owner)
            .as_ref()
            .notify(HostMsg::ReadCredit {
                target: id,
                frames: 1,
            })
            .await;
        Some((items, Some((owner, rx, guard))))
    });
    Ok((info, records.flat_map(futures_util::stream::iter).boxed()))
}
