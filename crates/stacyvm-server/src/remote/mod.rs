//! Calling remote workers: the RPC client (`client.rs`) and a [`Provider`] that forwards every
//! call of one sandbox to its owning worker (`provider.rs`), so the service layer treats local
//! and remote sandboxes alike.

mod client;
mod preview;
mod provider;
mod state;

pub use client::{Endpoint, RemoteError, RpcCredentials, RpcTlsClient, WorkerClient};
pub use preview::{RemotePreview, RemotePreviewError};
pub use provider::RemoteProvider;
