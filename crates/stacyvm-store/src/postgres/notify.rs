//! The event bridge over LISTEN/NOTIFY on channel `stacyvm_events`. Publishing is one
//! `pg_notify` on the shared pool; listening holds one connection of its own (a separate
//! one-connection pool, so it never takes a slot from the store's queries) and reconnects with
//! a bounded back-off when the server goes away. Payloads sent while it is disconnected are lost,
//! which is the bridge's documented best effort.

use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgListener, PgPool, PgPoolOptions};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use super::db_err;
use crate::{EventBridge, StoreError, MAX_EVENT_PAYLOAD};

/// The NOTIFY channel every control plane listens on.
pub const CHANNEL: &str = "stacyvm_events";
/// Payloads kept for a slow subscriber before it lags.
const BUFFER: usize = 1024;
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);

pub struct PgEventBridge {
    pool: PgPool,
    tx: broadcast::Sender<String>,
    listener: JoinHandle<()>,
}

impl PgEventBridge {
    /// Starts listening (in a task owned by the bridge, stopped when it is dropped). Must be
    /// called inside a Tokio runtime.
    pub(super) fn start(pool: PgPool) -> Self {
        let (tx, _) = broadcast::channel(BUFFER);
        let options = (*pool.connect_options()).clone();
        let listen_pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .connect_lazy_with(options);
        let listener = tokio::spawn(listen(listen_pool, tx.clone()));
        PgEventBridge { pool, tx, listener }
    }
}

impl Drop for PgEventBridge {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

#[async_trait]
impl EventBridge for PgEventBridge {
    async fn publish(&self, payload: &str) -> Result<(), StoreError> {
        if payload.len() > MAX_EVENT_PAYLOAD {
            return Err(StoreError::Unsupported(format!(
                "event payload of {} bytes exceeds {MAX_EVENT_PAYLOAD}",
                payload.len()
            )));
        }
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(payload)
            .execute(&self.pool)
            .await
            .map_err(db_err("event"))?;
        Ok(())
    }

    fn subscribe(&self) -> broadcast::Receiver<String> {
        self.tx.subscribe()
    }
}

/// Listens until the task is aborted, reconnecting after errors.
async fn listen(pool: PgPool, tx: broadcast::Sender<String>) {
    let mut backoff = RETRY_MIN;
    loop {
        let started = tokio::time::Instant::now();
        match session(&pool, &tx).await {
            Ok(()) => return,
            Err(e) => {
                // A session that ran for a while was healthy: start the back-off over.
                if started.elapsed() > RETRY_MAX {
                    backoff = RETRY_MIN;
                }
                tracing::warn!(error = %e, retry_in = ?backoff, "event bridge: listener lost");
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(RETRY_MAX);
    }
}

/// One listening connection; `Ok` only when the pool was closed (nothing left to do).
async fn session(pool: &PgPool, tx: &broadcast::Sender<String>) -> Result<(), sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(CHANNEL).await?;
    tracing::debug!(channel = CHANNEL, "event bridge: listening");
    loop {
        match listener.recv().await {
            // Nobody subscribed yet is fine: events are best-effort.
            Ok(n) => drop(tx.send(n.payload().to_string())),
            Err(sqlx::Error::PoolClosed) => return Ok(()),
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::postgres::test_db::TestDb;
    use crate::Store;

    /// Publishes `payload` until `rx` sees it (the listener may not be connected yet).
    async fn deliver(
        bridge: &dyn EventBridge,
        rx: &mut broadcast::Receiver<String>,
        payload: &str,
    ) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            bridge.publish(payload).await.unwrap();
            let got = tokio::time::timeout(Duration::from_millis(200), async {
                loop {
                    match rx.recv().await {
                        Ok(p) if p == payload => return true,
                        Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                        Err(broadcast::error::RecvError::Closed) => return false,
                    }
                }
            })
            .await;
            if got == Ok(true) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{payload} never arrived"
            );
        }
    }

    #[tokio::test]
    async fn sqlite_has_no_bridge() {
        let s = crate::SqliteStore::open(":memory:").await.unwrap();
        assert!(s.event_bridge().is_none());
    }

    mod needs_pg {
        use super::*;

        #[tokio::test]
        async fn two_stores_on_one_database_hear_each_other() {
            let db = TestDb::create().await;
            let a = db.open().await;
            let b = db.open().await;
            let (ba, bb) = (a.event_bridge().unwrap(), b.event_bridge().unwrap());
            // One bridge per store.
            assert!(std::sync::Arc::ptr_eq(&ba, &a.event_bridge().unwrap()));
            let mut rx_a = ba.subscribe();
            let mut rx_b = bb.subscribe();
            deliver(&*ba, &mut rx_b, "from-a").await;
            deliver(&*bb, &mut rx_a, "from-b").await;
            // The sender hears itself too (callers filter by origin).
            let mut rx_a2 = ba.subscribe();
            deliver(&*ba, &mut rx_a2, "echo").await;
            // The largest payload passes, one byte more is refused before reaching the server.
            let big = "x".repeat(MAX_EVENT_PAYLOAD);
            ba.publish(&big).await.unwrap();
            let err = ba.publish(&format!("{big}y")).await.unwrap_err();
            assert!(matches!(err, StoreError::Unsupported(_)), "{err:?}");
            let got = tokio::time::timeout(Duration::from_secs(5), async {
                loop {
                    if let Ok(p) = rx_b.recv().await {
                        if p.len() == MAX_EVENT_PAYLOAD {
                            return p;
                        }
                    }
                }
            })
            .await
            .unwrap();
            assert_eq!(got, big);
        }
    }
}
