//! `worker.watch_dir`: a directory watch of one of this worker's sandboxes. The watch lives in
//! the sandbox's agent; the worker only routes. It answers 200 with live NDJSON once the watch
//! is in place (a missing path or sandbox fails before, as a JSON answer): one
//! `{"id","worker_id","result": WatchEvent}` line per change; a failure later ends the body with
//! an error line. A closed connection drops the stream, which ends the watch in the sandbox.

use stacyvm_protocol::{RpcFailure, WatchDirParams};

use crate::error::failed_for;
use crate::methods::provider_for;
use crate::processes::ndjson_results;
use crate::rpc::Reply;
use crate::state::WorkerState;

pub(crate) async fn watch_dir(
    state: &WorkerState,
    id: &str,
    p: WatchDirParams,
) -> Result<Reply, RpcFailure> {
    let t = p.target;
    let provider = provider_for(state, &t)?;
    let events = provider
        .watch_dir(t.runtime(), &p.path, p.recursive)
        .await
        .map_err(failed_for(&t.sandbox_id))?;
    Ok(ndjson_results(state, id, &t, None, events, |e| {
        serde_json::to_value(e).ok()
    }))
}
