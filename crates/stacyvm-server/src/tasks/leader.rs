//! One leader for background work among control planes that share a database, and a presence
//! lease per control plane so others can tell when it died.
//!
//! Both are ordinary store leases (§9.4 rules: atomic acquire when free, expired or already
//! ours). They have a tick of their own, [`lease_tick`] (the reconcile interval, at most
//! [`LEASE_TICK_MAX`]), and live `3 × tick`: a dead control plane's leases lapse within 3 s
//! whatever `server.reconcile_interval` is, so leadership moves and its half-made spawns are
//! cleaned up within seconds (with the reconcile interval as the lease tick, a dead leader held
//! on for 90 s). The `leadership` task renews both every tick, independently of how long a pass
//! takes; a loop asks [`Leadership::ensure`] before each pass, which answers from the last grant
//! when it is less than a tick old. A process that stalls longer than the lease loses it and
//! another may start passes; that is the price of fast failover. A clean shutdown releases the
//! lease so the takeover is immediate. On SQLite (one node) the only control plane always leads,
//! a restarted one within one lease lifetime.

use std::time::{Duration, Instant};

use stacyvm_store::{Store, StoreError};

/// The lease whose holder runs the reaper and the reconciler.
pub const BACKGROUND_LEASE: &str = "control-plane/background";
/// `resource_type` of control-plane leases (sandbox leases use `sandbox`).
pub const LEASE_TYPE: &str = "control_plane";

/// Resource-id prefix of presence leases.
pub const PRESENCE_PREFIX: &str = "control-plane/instance/";

/// The presence lease of control plane `instance`: held while it runs.
pub fn presence_lease(instance: &str) -> String {
    format!("{PRESENCE_PREFIX}{instance}")
}

/// A per-process id: `<hostname>-<pid>-<6 hex>`, new at every start, so a restarted control
/// plane never inherits its former self's leases.
pub fn new_instance_id(hostname: &str) -> String {
    let host: String = hostname
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
        .take(64)
        .collect();
    let host = if host.is_empty() { "host".into() } else { host };
    format!(
        "{host}-{}-{:06x}",
        std::process::id(),
        rand::random::<u32>() & 0x00ff_ffff
    )
}

/// Longest renewal period of the leader and presence leases.
pub const LEASE_TICK_MAX: Duration = Duration::from_secs(1);

/// Renewal period of the leader and presence leases for a reconcile interval: the interval, at
/// most [`LEASE_TICK_MAX`], at least 50 ms.
pub fn lease_tick(reconcile: Duration) -> Duration {
    reconcile.clamp(Duration::from_millis(50), LEASE_TICK_MAX)
}

/// Lease lifetime for a lease tick: three ticks, at least one second.
pub fn lease_ttl(tick: Duration) -> Duration {
    (tick * 3).max(Duration::from_secs(1))
}

pub struct Leadership {
    holder: String,
    tick: Duration,
    /// When the request behind the last successful grant was sent; `None` = not leader.
    granted_at: tokio::sync::Mutex<Option<Instant>>,
}

impl Leadership {
    pub fn new(holder: String, tick: Duration) -> Self {
        Leadership {
            holder,
            tick: tick.max(Duration::from_millis(50)),
            granted_at: tokio::sync::Mutex::new(None),
        }
    }

    /// Whether this control plane may run a background pass now: acquires or renews the lease
    /// when the last grant is a tick old. Store errors count as "not leader" (a pass run
    /// without proof of leadership could overlap another control plane's).
    pub async fn ensure(&self, store: &dyn Store) -> bool {
        let mut granted = self.granted_at.lock().await;
        if granted.is_some_and(|at| at.elapsed() < self.tick) {
            return true;
        }
        let was_leader = granted.is_some();
        let sent = Instant::now();
        let res = store
            .acquire_lease(
                BACKGROUND_LEASE,
                LEASE_TYPE,
                &self.holder,
                lease_ttl(self.tick),
            )
            .await;
        match res {
            Ok(lease) => {
                if !was_leader {
                    tracing::info!(
                        instance = %self.holder,
                        generation = lease.generation,
                        "leading background work (reaper, reconciler)"
                    );
                }
                *granted = Some(sent);
                true
            }
            Err(e) => {
                if was_leader {
                    tracing::warn!(instance = %self.holder, error = %e, "lost background leadership");
                } else if !matches!(e, StoreError::Conflict(_)) {
                    tracing::warn!(error = %e, "background leadership check failed");
                }
                *granted = None;
                false
            }
        }
    }

    /// The last answer of [`Leadership::ensure`], without asking the store: true for two ticks
    /// after the last grant (a late tick renews within that), still inside the three-tick lease.
    pub async fn is_leader(&self) -> bool {
        self.granted_at
            .lock()
            .await
            .is_some_and(|at| at.elapsed() < self.tick * 2)
    }

    /// Gives the lease up (clean shutdown) so another control plane takes over at once.
    pub async fn release(&self, store: &dyn Store) {
        let mut granted = self.granted_at.lock().await;
        *granted = None;
        match store.release_lease(BACKGROUND_LEASE, &self.holder).await {
            Ok(()) => tracing::info!(instance = %self.holder, "released background leadership"),
            Err(e) if e.is_not_found() => {}
            Err(e) => tracing::warn!(error = %e, "releasing background leadership failed"),
        }
    }
}

/// Renews this control plane's presence lease; other control planes read it to decide whether
/// the creator of a half-made sandbox is still alive.
pub async fn renew_presence(store: &dyn Store, instance: &str, tick: Duration) {
    if let Err(e) = store
        .acquire_lease(
            &presence_lease(instance),
            LEASE_TYPE,
            instance,
            lease_ttl(tick),
        )
        .await
    {
        tracing::warn!(error = %e, "control plane presence renewal failed");
    }
}

/// How long the leader keeps the presence lease of a control plane that stopped renewing it
/// (visible in `/diagnostics` meanwhile) before deleting the row.
pub const PRESENCE_KEEP: Duration = Duration::from_secs(600);

/// Deletes the presence leases of control planes that shut down cleanly (released) or lapsed
/// more than `keep` ago. Instance ids are never reused, so every start adds a row and nothing
/// else removes it; a deleted lease reads as "gone" exactly as an expired one does. Failures
/// are logged; the next pass tries again.
pub async fn prune_presence(store: &dyn Store, keep: Duration) {
    match store.prune_leases(PRESENCE_PREFIX, keep).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(
            pruned = n,
            "deleted presence leases of control planes that are gone"
        ),
        Err(e) => tracing::warn!(error = %e, "pruning presence leases failed"),
    }
}

/// Whether control plane `instance` still holds its presence lease. A missing or expired lease
/// means it is gone; a store error is answered "alive" so nothing is cleaned up on doubt.
pub async fn is_alive(store: &dyn Store, instance: &str) -> bool {
    match store.get_lease(&presence_lease(instance)).await {
        Ok(l) => l.holder_id == instance && l.expires_at > chrono::Utc::now(),
        Err(e) if e.is_not_found() => false,
        Err(_) => true,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn instance_ids_are_unique_and_tame() {
        let a = new_instance_id("my host/../x");
        let b = new_instance_id("my host/../x");
        assert_ne!(a, b);
        assert!(a.starts_with("myhost..x-"), "{a}");
        assert!(a
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c)));
        assert!(new_instance_id("").starts_with("host-"));
    }

    /// The leader and presence leases renew at most every second and live three ticks,
    /// whatever the reconcile interval (hardening finding 14: a 30 s interval made a dead
    /// leader hold on for 90 s).
    #[test]
    fn lease_tick_is_short_whatever_the_reconcile_interval() {
        assert_eq!(lease_tick(Duration::from_secs(30)), Duration::from_secs(1));
        assert_eq!(
            lease_ttl(lease_tick(Duration::from_secs(30))),
            Duration::from_secs(3)
        );
        assert_eq!(
            lease_tick(Duration::from_millis(300)),
            Duration::from_millis(300)
        );
        assert_eq!(
            lease_tick(Duration::from_millis(1)),
            Duration::from_millis(50)
        );
    }

    #[tokio::test]
    async fn single_node_always_leads_and_release_frees_the_lease() {
        let store = stacyvm_store::SqliteStore::open(":memory:").await.unwrap();
        let l = Leadership::new("cp-a".into(), Duration::from_millis(100));
        assert!(!l.is_leader().await);
        assert!(l.ensure(&store).await);
        assert!(l.is_leader().await);
        let lease = store.get_lease(BACKGROUND_LEASE).await.unwrap();
        assert_eq!(lease.holder_id, "cp-a");
        // A second holder is refused while the lease is live.
        let other = Leadership::new("cp-b".into(), Duration::from_millis(100));
        assert!(!other.ensure(&store).await);
        l.release(&store).await;
        assert!(!l.is_leader().await);
        assert!(store.get_lease(BACKGROUND_LEASE).await.is_err());
        assert!(other.ensure(&store).await);
    }

    /// Presence leases of control planes that are gone are deleted; the live one and every
    /// other lease stay.
    #[tokio::test]
    async fn presence_of_gone_control_planes_is_pruned() {
        let store = stacyvm_store::SqliteStore::open(":memory:").await.unwrap();
        let tick = Duration::from_millis(1);
        for cp in ["cp-dead", "cp-clean"] {
            store
                .acquire_lease(&presence_lease(cp), LEASE_TYPE, cp, tick)
                .await
                .unwrap();
        }
        store
            .release_lease(&presence_lease("cp-clean"), "cp-clean")
            .await
            .unwrap();
        renew_presence(&store, "cp-live", Duration::from_secs(60)).await;
        store
            .acquire_lease("sb-1", "sandbox", "w1", tick)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        prune_presence(&store, PRESENCE_KEEP).await;
        let ids = |l: Vec<stacyvm_store::Lease>| -> Vec<String> {
            l.into_iter().map(|l| l.resource_id).collect()
        };
        assert_eq!(
            ids(store.list_leases().await.unwrap()),
            [
                presence_lease("cp-dead"),
                presence_lease("cp-live"),
                "sb-1".into()
            ],
            "a clean shutdown's lease goes at once, a lapsed one is kept a while"
        );
        prune_presence(&store, Duration::ZERO).await;
        assert_eq!(
            ids(store.list_leases().await.unwrap()),
            [presence_lease("cp-live"), "sb-1".into()]
        );
        assert!(!is_alive(&store, "cp-dead").await);
        assert!(is_alive(&store, "cp-live").await);
    }
}
