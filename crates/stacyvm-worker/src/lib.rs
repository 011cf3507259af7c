//! The StacyVM remote worker (`stacyvm worker`): hosts providers, heartbeats to the control
//! plane, and serves the worker RPC (`POST /rpc`, optionally over mTLS) with lease fencing and
//! drain. See `docs/worker.md`.

mod auth;
mod config;
mod cp;
mod drain;
mod error;
mod files;
mod files_stream;
mod heartbeat;
mod lease;
mod methods;
mod preview;
mod processes;
mod rpc;
mod run;
mod serve;
mod state;
mod state_rpc;
mod stream;
mod tls;
mod watch;

pub use config::{WorkerConfig, WorkerConfigError, WorkerOverrides};
pub use cp::ControlPlaneError;
pub use error::WorkerError;
pub use rpc::{rpc_router, MAX_RPC_BODY};
pub use run::run;
pub use state::WorkerState;
pub use tls::TlsError;
