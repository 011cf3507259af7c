//! Background loops. Each runs until its `CancellationToken` fires. The reaper and the
//! reconciler run their passes only on the leading control plane (see [`leader`]).

pub mod leader;

use std::time::Duration;

use tokio::time::{Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::service::Service;

/// A ticker that does not burst to catch up after a slow pass.
fn interval(period: Duration) -> Interval {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    tick
}

/// Waits for the next tick; false once `cancel` fires.
async fn next_tick(tick: &mut Interval, cancel: &CancellationToken) -> bool {
    tokio::select! {
        () = cancel.cancelled() => false,
        _ = tick.tick() => true,
    }
}

/// Destroys expired sandboxes every `reaper_interval`.
pub async fn reaper(svc: Service, cancel: CancellationToken) {
    let mut tick = interval(svc.tick());
    while next_tick(&mut tick, &cancel).await {
        if !svc.ensure_leadership().await {
            continue;
        }
        match svc.sandboxes().prune().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(destroyed = n, "reaper destroyed expired sandboxes"),
            Err(e) => tracing::warn!(error = %e, "reaper pass failed"),
        }
    }
}

/// Keeps the control plane's own `local` worker registration fresh.
pub async fn local_heartbeat(svc: Service, cancel: CancellationToken) {
    let mut tick = interval(
        svc.settings()
            .local_heartbeat_interval
            .max(Duration::from_millis(50)),
    );
    while next_tick(&mut tick, &cancel).await {
        if let Err(e) = svc.workers().heartbeat_local().await {
            tracing::warn!(error = %e, "local worker heartbeat failed");
        }
    }
}

/// Reconciles remote-owned sandboxes with their workers every `reaper_interval` (its own loop,
/// so a slow destroy in the reaper never delays health marking).
pub async fn reconciler(svc: Service, cancel: CancellationToken) {
    let mut last_local = std::time::Instant::now();
    let mut tick = interval(svc.tick());
    while next_tick(&mut tick, &cancel).await {
        if !svc.ensure_leadership().await {
            continue;
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = svc.reconciler().remote() => {}
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = svc.reconciler().abandoned() => {}
        }
        // Local runtimes change rarely; checking every one costs a provider call each.
        if last_local.elapsed() >= LOCAL_RECONCILE_EVERY {
            last_local = std::time::Instant::now();
            svc.prune_presence().await;
            tokio::select! {
                () = cancel.cancelled() => return,
                () = svc.reconciler().local(Some(CREATING_GRACE)) => {}
            }
        }
    }
}

/// How often the periodic pass compares local runtimes with the store.
const LOCAL_RECONCILE_EVERY: Duration = Duration::from_secs(60);
/// A `creating` row older than this belongs to a spawn that will not finish.
const CREATING_GRACE: Duration = Duration::from_secs(600);

/// Renews this control plane's presence lease every `reaper_interval`, so others can tell
/// when it died (and clean up what it left half-made).
pub async fn presence(svc: Service, cancel: CancellationToken) {
    let mut tick = interval(svc.tick());
    while next_tick(&mut tick, &cancel).await {
        svc.renew_presence().await;
    }
}

/// Shares events with the other control planes on the database (a no-op without a bridge).
pub async fn event_bridge(svc: Service, cancel: CancellationToken) {
    svc.run_event_bridge(cancel).await;
}
