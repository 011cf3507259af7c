//! Params of `worker.watch_dir`: the directory watch of a remote sandbox. The answer is live
//! NDJSON once the watch is in place (failures before are JSON answers): one
//! [`RpcResponse`](super::RpcResponse) per line whose `result` is a
//! [`WatchEvent`](stacyvm_types::WatchEvent) (`{"name","kind"}`), as `worker.process_output`
//! sends records; a failure later ends the body with an error line. Closing the connection
//! ends the watch.

use serde::{Deserialize, Serialize};

use super::messages::Target;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WatchDirParams {
    #[serde(flatten)]
    pub target: Target,
    /// Blank is refused when decoding (`path is required`).
    #[serde(default)]
    pub path: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub recursive: bool,
}
