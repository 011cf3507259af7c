//! Drain mode (DECISIONS.md "Drain"). `worker.shutdown` or SIGTERM turns it on: new spawns get
//! 503 `DRAINING`, heartbeats report `status: "draining"`, and the control plane keeps routing
//! existing sandboxes here. On SIGTERM the process then waits up to `worker.shutdown_timeout`
//! for in-flight RPCs and exits.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::task::TaskTracker;

#[derive(Debug, Clone, Default)]
pub(crate) struct Drain {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    draining: AtomicBool,
    /// Wakes the heartbeat loop so the control plane hears about the drain at once.
    changed: Notify,
}

impl Drain {
    /// Enters drain mode; true the first time.
    pub(crate) fn start(&self) -> bool {
        let first = !self.inner.draining.swap(true, Ordering::SeqCst);
        if first {
            tracing::info!("draining: new spawns are refused");
            // `notify_one` keeps a permit if the heartbeat loop is not waiting right now.
            self.inner.changed.notify_one();
        }
        first
    }

    pub(crate) fn is_draining(&self) -> bool {
        self.inner.draining.load(Ordering::SeqCst)
    }

    /// Resolves after the next `start()` (or at once if one happened unobserved).
    pub(crate) async fn changed(&self) {
        self.inner.changed.notified().await;
    }
}

/// Waits until every task in `tracker` is done or `timeout` passes; true when all finished.
/// Closes the tracker (its tasks keep running; new ones may still be added).
pub(crate) async fn wait_idle(tracker: &TaskTracker, timeout: Duration) -> bool {
    tracker.close();
    tokio::time::timeout(timeout, tracker.wait()).await.is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn start_once_and_wake() {
        let d = Drain::default();
        assert!(!d.is_draining());
        assert!(d.start());
        assert!(!d.start());
        assert!(d.is_draining());
        // The permit from the first start() is waiting.
        tokio::time::timeout(Duration::from_secs(1), d.changed())
            .await
            .expect("woken");
    }

    #[tokio::test]
    async fn wait_idle_times_out_on_busy_tasks() {
        let t = TaskTracker::new();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        t.spawn(async move {
            let _ = rx.await;
        });
        assert!(!wait_idle(&t, Duration::from_millis(50)).await);
        let _ = tx.send(());
        assert!(wait_idle(&t, Duration::from_secs(5)).await);
    }
}
