//! Background loops. Each runs until its `CancellationToken` fires. The reaper and the
//! reconciler run their passes only on the leading control plane (see [`leader`]).

pub mod leader;

use std::time::{Duration, Instant};

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

/// Ends expired sandboxes (destroy, or pause with `on_expire: pause`) and applies the
/// lifecycle (idle timeouts, paused retention) every `reaper_interval`. Every control plane
/// writes its activity stamps first, leader or not (docs/state.md).
pub async fn reaper(svc: Service, cancel: CancellationToken) {
    let mut tick = interval(svc.tick());
    while next_tick(&mut tick, &cancel).await {
        svc.sandboxes().flush_activity().await;
        if !svc.ensure_leadership().await {
            continue;
        }
        match svc.sandboxes().prune().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(ended = n, "reaper ended expired sandboxes"),
            Err(e) => tracing::warn!(error = %e, "reaper pass failed"),
        }
        match svc.sandboxes().lifecycle().await {
            Ok(r) if r == Default::default() => {}
            Ok(r) => tracing::info!(paused = r.paused, destroyed = r.destroyed, "lifecycle pass"),
            Err(e) => tracing::warn!(error = %e, "lifecycle pass failed"),
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
///
/// For [`RECOVERY_WINDOW`] after the start and after this control plane became leader, it
/// also runs the cheap part every lease tick: spawns left half-made by a dead control plane
/// (`abandoned`) and local runtimes nobody wants (`local_orphans`). That is when a dead
/// process's leftovers appear, including containers the daemon finished creating after their
/// caller died; without it they waited for the next full pass (30 s, and 60 s for the local
/// pass).
pub async fn reconciler(svc: Service, cancel: CancellationToken) {
    let mut last_local = Instant::now();
    let mut tick = interval(svc.tick());
    let mut fast = interval(svc.lease_tick());
    let mut recover_until = Instant::now() + RECOVERY_WINDOW;
    loop {
        let full = tokio::select! {
            () = cancel.cancelled() => return,
            _ = tick.tick() => true,
            _ = fast.tick(), if Instant::now() < recover_until => false,
            () = svc.leadership_gained() => {
                recover_until = Instant::now() + RECOVERY_WINDOW;
                true
            }
        };
        if !svc.ensure_leadership().await {
            continue;
        }
        if full {
            tokio::select! {
                () = cancel.cancelled() => return,
                () = svc.reconciler().remote() => {}
            }
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = svc.reconciler().abandoned() => {}
        }
        // Local runtimes change rarely; checking every one costs a provider call each.
        if full && last_local.elapsed() >= LOCAL_RECONCILE_EVERY {
            last_local = Instant::now();
            svc.prune_presence().await;
            tokio::select! {
                () = cancel.cancelled() => return,
                () = svc.reconciler().local(Some(CREATING_GRACE)) => {}
            }
        } else if Instant::now() < recover_until {
            tokio::select! {
                () = cancel.cancelled() => return,
                () = svc.reconciler().local_orphans() => {}
            }
        }
    }
}

/// How often the periodic pass compares local runtimes with the store.
const LOCAL_RECONCILE_EVERY: Duration = Duration::from_secs(60);
/// A `creating` row older than this belongs to a spawn that will not finish.
const CREATING_GRACE: Duration = Duration::from_secs(600);
/// How long after a start or a change of leader the reconciler looks for a dead control
/// plane's leftovers every lease tick: its leases lapse within 3 s, and a Docker daemon under
/// load may take a while to finish the creates it was sent.
const RECOVERY_WINDOW: Duration = Duration::from_secs(30);

/// Every lease tick (at most 1 s): renews this control plane's presence lease, so others can
/// tell when it died, and holds or seeks background leadership, so a dead leader is replaced
/// within a lease lifetime (3 s) whatever the reconcile interval.
pub async fn leases(svc: Service, cancel: CancellationToken) {
    let mut tick = interval(svc.lease_tick());
    while next_tick(&mut tick, &cancel).await {
        svc.renew_presence().await;
        svc.ensure_leadership().await;
    }
}

/// Checks remote workers against their own deadline (last heartbeat + stale window) every
/// lease tick on the leader, and runs the remote pass as soon as one more of them is past it,
/// so its sandboxes turn `unhealthy` within the stale window (plus a tick) instead of at the
/// next reconcile pass.
pub async fn worker_deadlines(svc: Service, cancel: CancellationToken) {
    let mut tick = interval(svc.lease_tick());
    let mut stale = std::collections::HashSet::new();
    while next_tick(&mut tick, &cancel).await {
        if !svc.leads_background().await {
            stale.clear();
            continue;
        }
        if svc.reconciler().newly_stale(&mut stale).await {
            tokio::select! {
                () = cancel.cancelled() => return,
                () = svc.reconciler().remote() => {}
            }
        }
    }
}

/// Samples running sandboxes by worker into the metrics history (the console's charts): now,
/// then just after each wall-clock minute starts, so every minute gets exactly one sample.
pub async fn history_sampler(svc: Service, cancel: CancellationToken) {
    loop {
        svc.system().sample_active().await;
        let now = chrono::Utc::now();
        let into_minute = u64::try_from(now.timestamp().rem_euclid(60)).unwrap_or(0) * 1000
            + u64::from(now.timestamp_subsec_millis());
        // 100 ms past the boundary, so a slow clock tick cannot land in the minute before.
        let wait = Duration::from_millis(60_000 - into_minute.min(59_999) + 100);
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// Shares events with the other control planes on the database (a no-op without a bridge).
pub async fn event_bridge(svc: Service, cancel: CancellationToken) {
    svc.run_event_bridge(cancel).await;
}
