//! Events between control planes that share a database. Optional: only backends several
//! control planes can share (Postgres, through LISTEN/NOTIFY) offer one.

use async_trait::async_trait;
use tokio::sync::broadcast;

use crate::StoreError;

/// Largest payload [`EventBridge::publish`] accepts (Postgres refuses NOTIFY payloads of 8000
/// bytes or more).
pub const MAX_EVENT_PAYLOAD: usize = 7999;

/// A best-effort broadcast of opaque text payloads to every control plane on the database,
/// the sender included. Nothing is stored or replayed: a subscriber sees what is published
/// while it listens, and may miss payloads while its connection is being re-established.
#[async_trait]
pub trait EventBridge: Send + Sync {
    /// Sends `payload` (at most [`MAX_EVENT_PAYLOAD`] bytes, else `Unsupported`).
    async fn publish(&self, payload: &str) -> Result<(), StoreError>;
    /// Payloads published from now on, by any control plane. A slow receiver lags (skips).
    fn subscribe(&self) -> broadcast::Receiver<String>;
}
