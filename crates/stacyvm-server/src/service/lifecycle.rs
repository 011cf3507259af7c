//! The service's own life: start and stop around `serve`, the tasks it owns, its place among
//! control planes sharing the database (presence, background leadership, event bridge), and
//! live event subscriptions.

use std::future::Future;
use std::time::Duration;

use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use stacyvm_types::EventKind;

use super::Service;
use crate::events::Event;
use crate::tasks::leader;

/// How long `stop` waits for request-scoped tasks and for the providers.
const TASKS_GRACE: Duration = Duration::from_secs(5);
const PROVIDERS_GRACE: Duration = Duration::from_secs(30);

/// Live events for one subscriber (`GET /events`); ends when the service shuts down.
pub struct EventSubscription {
    rx: broadcast::Receiver<Event>,
    shutdown: CancellationToken,
}

impl EventSubscription {
    /// The next event, or `None` once the service shuts down. A subscriber too slow to keep
    /// up skips what it missed (events are best effort).
    pub async fn next(&mut self) -> Option<Event> {
        loop {
            tokio::select! {
                () = self.shutdown.cancelled() => return None,
                r = self.rx.recv() => match r {
                    Ok(ev) => return Some(ev),
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        }
    }

    /// An event already published, without waiting.
    pub fn try_next(&mut self) -> Option<Event> {
        loop {
            match self.rx.try_recv() {
                Ok(ev) => return Some(ev),
                Err(broadcast::error::TryRecvError::Lagged(_)) => continue,
                Err(_) => return None,
            }
        }
    }
}

impl Service {
    pub fn version(&self) -> &'static str {
        self.version
    }

    /// This process among control planes sharing the database (`<host>-<pid>-<rand>`).
    pub fn instance_id(&self) -> &str {
        &self.instance_id
    }

    pub fn subscribe_events(&self) -> EventSubscription {
        EventSubscription {
            rx: self.events.subscribe(),
            shutdown: self.shutdown.clone(),
        }
    }

    /// The background tick: `server.reconcile_interval`, at least 50 ms.
    pub(crate) fn tick(&self) -> Duration {
        self.settings.reaper_interval.max(Duration::from_millis(50))
    }

    /// Renewal period of the leader and presence leases (see [`leader::lease_tick`]).
    pub(crate) fn lease_tick(&self) -> Duration {
        leader::lease_tick(self.settings.reaper_interval)
    }

    /// Before the listener opens: registers `local`, announces this control plane's presence
    /// and reconciles local sandboxes left by a previous process.
    pub(crate) async fn start(&self) {
        if let Err(e) = self.workers().heartbeat_local().await {
            tracing::warn!(error = %e, "initial local worker registration failed");
        }
        self.renew_presence().await;
        self.reconciler().startup().await;
    }

    /// A token for background loops: cancelled with the service.
    pub(crate) fn background_token(&self) -> CancellationToken {
        self.shutdown.child_token()
    }

    /// Cancels streams, proxied connections and background loops: what a shutdown does first.
    pub fn cancel(&self) {
        self.shutdown.cancel();
    }

    /// After the listener stopped: ends and joins request-scoped tasks and the `background`
    /// loops (bounded), shuts the providers down (warm VMs go, sandboxes stay), hands
    /// background leadership over at once and drops this control plane's presence.
    pub(crate) async fn stop(&self, background: &TaskTracker) {
        self.cancel();
        self.tasks.close();
        let _ = tokio::time::timeout(TASKS_GRACE, self.tasks.wait()).await;
        let _ = tokio::time::timeout(TASKS_GRACE, background.wait()).await;
        self.providers.shutdown(PROVIDERS_GRACE).await;
        self.leadership.release(&*self.store).await;
        let presence = leader::presence_lease(&self.instance_id);
        let _ = self.store.release_lease(&presence, &self.instance_id).await;
    }

    /// Runs `fut` as request-scoped work: owned by the service's tracker and dropped when the
    /// service shuts down.
    pub(crate) fn spawn_until_shutdown<F>(&self, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let stop = self.shutdown.clone();
        self.tasks.spawn(async move {
            tokio::select! {
                () = fut => {}
                () = stop.cancelled() => {}
            }
        });
    }

    /// Whether this control plane may run a background pass now (acquires or renews the
    /// leader lease at most once per tick).
    pub(crate) async fn ensure_leadership(&self) -> bool {
        let was = self.leadership.is_leader().await;
        let leads = self.leadership.ensure(&*self.store).await;
        if leads && !was {
            self.leadership_gained.notify_one();
        }
        leads
    }

    /// Resolves when this control plane became the background leader (a notification given
    /// while nobody waited is kept for the next call).
    pub(crate) async fn leadership_gained(&self) {
        self.leadership_gained.notified().await;
    }

    /// Whether this control plane currently leads background work (answered from the last
    /// lease grant, without a store round trip).
    pub async fn leads_background(&self) -> bool {
        self.leadership.is_leader().await
    }

    /// Deletes the presence leases of control planes gone for longer than
    /// [`leader::PRESENCE_KEEP`] (the leader's job; the rows are never read again).
    pub(crate) async fn prune_presence(&self) {
        leader::prune_presence(&*self.store, leader::PRESENCE_KEEP).await;
    }

    /// Renews this control plane's presence lease, so others can tell when it died.
    pub(crate) async fn renew_presence(&self) {
        leader::renew_presence(&*self.store, &self.instance_id, self.lease_tick()).await;
    }

    /// Shares events with the other control planes on the database (Postgres LISTEN/NOTIFY)
    /// until `cancel` fires; returns at once when the store has no bridge (SQLite). Capacity
    /// freed elsewhere wakes queued spawns.
    pub(crate) async fn run_event_bridge(&self, cancel: CancellationToken) {
        let Some(bridge) = self.store.event_bridge() else {
            return;
        };
        crate::events::run_bridge(&self.events, bridge, &self.instance_id, cancel, |ev| {
            if matches!(
                ev.kind,
                EventKind::SandboxDestroyed
                    | EventKind::ReconcileAction
                    | EventKind::QuotaSaved
                    | EventKind::QuotaDeleted
            ) {
                self.admission().wake();
            }
        })
        .await;
    }
}
