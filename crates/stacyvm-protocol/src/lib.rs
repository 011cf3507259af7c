//! Wire types of StacyVM: the control plane ↔ worker RPC and heartbeat ([`rpc`], feature
//! `rpc`, on by default) and the host ↔ guest agent protocol ([`agent`]). The guest agent
//! builds with `default-features = false`: it needs only `agent` and `base64`, and its own
//! lockfile must not grow.

pub mod agent;
pub mod base64;
#[cfg(feature = "rpc")]
pub mod rpc;

#[cfg(feature = "rpc")]
pub use rpc::*;
