//! Lease rules, one by one and under a race.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;

use super::{assert_between, assert_conflict, assert_not_found, secs};
use crate::{Lease, Store, StoreError};

pub async fn lease_acquire_new(store: &dyn Store) {
    assert!(store.list_leases().await.expect("list").is_empty());
    assert_not_found(store.get_lease("sb-1").await, "lease", "get missing");
    let ttl = Duration::from_millis(60_500);
    let before = Utc::now();
    let lease = store
        .acquire_lease("sb-1", "sandbox", "w1", ttl)
        .await
        .expect("acquire");
    let after = Utc::now();
    assert_eq!(
        (
            lease.resource_id.as_str(),
            lease.resource_type.as_str(),
            lease.holder_id.as_str()
        ),
        ("sb-1", "sandbox", "w1")
    );
    assert_eq!(lease.generation, 1);
    assert_between(lease.updated_at, before, after, "updated_at");
    assert_eq!(lease.created_at, lease.updated_at);
    assert_eq!(
        lease.expires_at,
        lease.updated_at + chrono::Duration::milliseconds(60_500)
    );
    assert_eq!(store.get_lease("sb-1").await.expect("get"), lease);
    assert_eq!(store.list_leases().await.expect("list"), [lease]);
}

/// Same holder re-acquires (generation + 1); another holder conflicts while the lease is live
/// and takes over once it expires.
pub async fn lease_acquire_rules(store: &dyn Store) {
    let long = Duration::from_secs(60);
    let first = store
        .acquire_lease("sb-1", "sandbox", "w1", long)
        .await
        .expect("acquire");
    let again = store
        .acquire_lease("sb-1", "sandbox", "w1", long)
        .await
        .expect("re-acquire by holder");
    assert_eq!(again.generation, 2);
    assert_eq!(again.created_at, first.created_at, "same tenure");
    assert!(again.expires_at >= first.expires_at);

    assert_conflict(
        store.acquire_lease("sb-1", "sandbox", "w2", long).await,
        "other holder, live lease",
    );
    assert_eq!(
        store.get_lease("sb-1").await.expect("get"),
        again,
        "unchanged by conflict"
    );

    store
        .acquire_lease("sb-2", "pool_vm", "w1", Duration::from_millis(1))
        .await
        .expect("acquire short");
    tokio::time::sleep(Duration::from_millis(20)).await;
    let taken = store
        .acquire_lease("sb-2", "sandbox", "w2", long)
        .await
        .expect("take over expired");
    assert_eq!((taken.holder_id.as_str(), taken.generation), ("w2", 2));
    assert_eq!(taken.resource_type, "sandbox");
    assert_eq!(taken.created_at, taken.updated_at, "new tenure");
    assert_conflict(
        store.renew_lease("sb-2", "w1", long).await,
        "renew by old holder",
    );
    assert_not_found(
        store.release_lease("sb-2", "w1").await,
        "lease",
        "release by old holder",
    );
    assert_eq!(store.get_lease("sb-2").await.expect("get"), taken);
}

/// Renew: holder of a live lease only; generation + 1 and a new expiry.
pub async fn lease_renew_rules(store: &dyn Store) {
    let first = store
        .acquire_lease("sb-1", "sandbox", "w1", Duration::from_secs(60))
        .await
        .expect("acquire");
    let before = Utc::now();
    let renewed = store
        .renew_lease("sb-1", "w1", Duration::from_secs(120))
        .await
        .expect("renew");
    let after = Utc::now();
    assert_eq!(renewed.generation, 2);
    assert_eq!(renewed.created_at, first.created_at);
    assert_between(renewed.updated_at, before, after, "updated_at");
    assert_eq!(renewed.expires_at, renewed.updated_at + secs(120));
    assert_eq!(store.get_lease("sb-1").await.expect("get"), renewed);

    assert_conflict(
        store
            .renew_lease("sb-1", "w2", Duration::from_secs(60))
            .await,
        "renew by non-holder",
    );
    assert_conflict(
        store
            .renew_lease("sb-none", "w1", Duration::from_secs(60))
            .await,
        "renew of missing lease",
    );
    assert_eq!(
        store.get_lease("sb-1").await.expect("get"),
        renewed,
        "unchanged"
    );

    let short = store
        .acquire_lease("sb-2", "sandbox", "w1", Duration::from_millis(1))
        .await
        .expect("acquire short");
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_conflict(
        store
            .renew_lease("sb-2", "w1", Duration::from_secs(60))
            .await,
        "renew after expiry",
    );
    assert_eq!(
        store
            .get_lease("sb-2")
            .await
            .expect("expired lease is still listed"),
        short
    );
}

/// Release: holder only, frees the lease, and generations keep rising on the next grant.
pub async fn lease_release_rules(store: &dyn Store) {
    let long = Duration::from_secs(60);
    assert_not_found(
        store.release_lease("sb-1", "w1").await,
        "lease",
        "release missing",
    );
    let held = store
        .acquire_lease("sb-1", "sandbox", "w1", long)
        .await
        .expect("acquire");
    store.renew_lease("sb-1", "w1", long).await.expect("renew");
    assert_not_found(
        store.release_lease("sb-1", "w2").await,
        "lease",
        "release by non-holder",
    );
    assert_eq!(
        store.get_lease("sb-1").await.expect("still held").holder_id,
        "w1"
    );

    store.release_lease("sb-1", "w1").await.expect("release");
    assert_not_found(store.get_lease("sb-1").await, "lease", "get released");
    assert!(store.list_leases().await.expect("list").is_empty());
    assert_not_found(
        store.release_lease("sb-1", "w1").await,
        "lease",
        "release twice",
    );
    assert_conflict(
        store.renew_lease("sb-1", "w1", long).await,
        "renew released",
    );

    tokio::time::sleep(Duration::from_millis(2)).await;
    let next = store
        .acquire_lease("sb-1", "sandbox", "w2", long)
        .await
        .expect("acquire released lease");
    assert_eq!(
        (next.holder_id.as_str(), next.generation),
        ("w2", 3),
        "generation continues"
    );
    assert!(next.created_at > held.created_at, "new tenure");
    store.release_lease("sb-1", "w2").await.expect("release");
    let back = store
        .acquire_lease("sb-1", "sandbox", "w1", long)
        .await
        .expect("re-acquire");
    assert_eq!(back.generation, 4);
}

/// Held leases, expired ones included, ordered by resource id.
pub async fn lease_list_ordered(store: &dyn Store) {
    for (resource, ttl) in [
        ("sb-c", 60_000),
        ("sb-a", 1),
        ("sb-b", 60_000),
        ("sb-d", 60_000),
    ] {
        store
            .acquire_lease(resource, "sandbox", "w1", Duration::from_millis(ttl))
            .await
            .expect("acquire");
    }
    store.release_lease("sb-d", "w1").await.expect("release");
    tokio::time::sleep(Duration::from_millis(5)).await;
    let list: Vec<String> = store
        .list_leases()
        .await
        .expect("list")
        .into_iter()
        .map(|l| l.resource_id)
        .collect();
    assert_eq!(list, ["sb-a", "sb-b", "sb-c"]);
}

// --- concurrency ---------------------------------------------------------------------------

#[derive(Default)]
struct RaceLog {
    grants: Vec<Lease>,
    /// (resource, holder, generation held when the release succeeded)
    releases: Vec<(String, String, i64)>,
    conflicts: usize,
}

/// 16 tasks × 200 attempts over 3 resources, spread across `stores` (handles with their own
/// connections on one database). Every grant is recorded; afterwards each resource's grants
/// must carry generations 1, 2, 3, … with no repeat or gap, and whenever the holder changes the
/// previous holder must have released that generation or it must have expired by the new
/// grant's time: no two holders ever hold one resource at once.
pub async fn lease_concurrency(stores: &[Arc<dyn Store>]) {
    const TASKS: usize = 16;
    const ATTEMPTS: usize = 200;
    const RESOURCES: [&str; 3] = ["race-0", "race-1", "race-2"];
    const TTL_MS: i64 = 25;
    assert!(!stores.is_empty(), "need at least one store handle");
    let ttl = Duration::from_millis(TTL_MS as u64);

    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..TASKS {
        let store = Arc::clone(&stores[task % stores.len()]);
        tasks.spawn(async move {
            let holder = format!("holder-{task}");
            let mut log = RaceLog::default();
            for attempt in 0..ATTEMPTS {
                let resource = RESOURCES[(task + attempt * 2) % RESOURCES.len()];
                let mut held = match store.acquire_lease(resource, "sandbox", &holder, ttl).await {
                    Ok(lease) => lease,
                    Err(StoreError::Conflict(_)) => {
                        log.conflicts += 1;
                        tokio::task::yield_now().await;
                        continue;
                    }
                    Err(e) => panic!("acquire failed unexpectedly: {e:?}"),
                };
                log.grants.push(held.clone());
                if attempt % 3 == 0 {
                    match store.renew_lease(resource, &holder, ttl).await {
                        Ok(lease) => {
                            log.grants.push(lease.clone());
                            held = lease;
                        }
                        // Possible only when this task was descheduled past the TTL.
                        Err(StoreError::Conflict(_)) => {}
                        Err(e) => panic!("renew failed unexpectedly: {e:?}"),
                    }
                }
                // Every eighth grant is abandoned, and its holder stays away past the TTL so
                // that another task takes it over by expiry rather than re-acquiring it.
                if attempt % 8 == 7 {
                    tokio::time::sleep(2 * ttl).await;
                    continue;
                }
                match store.release_lease(resource, &holder).await {
                    Ok(()) => {
                        log.releases
                            .push((resource.to_string(), holder.clone(), held.generation));
                    }
                    Err(StoreError::NotFound { .. }) => {}
                    Err(e) => panic!("release failed unexpectedly: {e:?}"),
                }
                tokio::task::yield_now().await;
            }
            log
        });
    }
    let mut all = RaceLog::default();
    while let Some(done) = tasks.join_next().await {
        let log = done.expect("race task panicked");
        all.grants.extend(log.grants);
        all.releases.extend(log.releases);
        all.conflicts += log.conflicts;
    }

    let released: HashSet<(String, String, i64)> = all.releases.iter().cloned().collect();
    let (mut by_release, mut by_expiry) = (0, 0);
    for resource in RESOURCES {
        let mut grants: Vec<&Lease> = all
            .grants
            .iter()
            .filter(|l| l.resource_id == resource)
            .collect();
        grants.sort_by_key(|l| l.generation);
        let gens: Vec<i64> = grants.iter().map(|l| l.generation).collect();
        let want: Vec<i64> = (1..=grants.len() as i64).collect();
        assert_eq!(
            gens, want,
            "{resource}: generations must be 1..n, each exactly once"
        );
        for g in &grants {
            assert_eq!(
                g.expires_at,
                g.updated_at + chrono::Duration::milliseconds(TTL_MS)
            );
        }
        for pair in grants.windows(2) {
            let (prev, next) = (pair[0], pair[1]);
            if prev.holder_id == next.holder_id {
                continue;
            }
            let key = (
                resource.to_string(),
                prev.holder_id.clone(),
                prev.generation,
            );
            if released.contains(&key) {
                by_release += 1;
            } else {
                assert!(
                    next.updated_at >= prev.expires_at,
                    "{resource}: {} got generation {} at {} while {} held generation {} until {}",
                    next.holder_id,
                    next.generation,
                    next.updated_at,
                    prev.holder_id,
                    prev.generation,
                    prev.expires_at
                );
                by_expiry += 1;
            }
        }
    }
    for (resource, holder, generation) in &all.releases {
        let granted = all
            .grants
            .iter()
            .find(|l| &l.resource_id == resource && l.generation == *generation)
            .expect("released generation was granted");
        assert_eq!(
            &granted.holder_id, holder,
            "released by someone who did not hold it"
        );
    }
    assert!(all.conflicts > 0, "the race never produced a conflict");
    assert!(by_release > 0, "no handover after a release was exercised");
    assert!(by_expiry > 0, "no handover after an expiry was exercised");
}

/// Presence leases of control planes that are gone (released, or expired long enough) are
/// deleted; live ones, other prefixes (sandbox leases keep their generations) and look-alike
/// ids stay.
pub async fn lease_prune(store: &dyn Store) {
    const P: &str = "control-plane/instance/";
    let (short, long) = (Duration::from_millis(1), Duration::from_secs(60));
    let grant = |id: &'static str, holder: &'static str, ttl| async move {
        store
            .acquire_lease(id, "control_plane", holder, ttl)
            .await
            .expect("acquire")
    };
    grant("control-plane/instance/dead", "dead", short).await;
    grant("control-plane/instance/live", "live", long).await;
    grant("control-plane/instance/gone", "gone", long).await;
    store
        .release_lease("control-plane/instance/gone", "gone")
        .await
        .expect("release");
    grant("control-plane/instancex", "x", short).await;
    grant("sb-1", "w1", short).await;
    grant("a_b/1", "w1", short).await;
    grant("axb/1", "w1", short).await;
    tokio::time::sleep(Duration::from_millis(20)).await;

    // Released rows go at once; expired ones only past the grace.
    assert_eq!(store.prune_leases(P, long).await.expect("prune"), 1);
    assert_eq!(
        store.prune_leases(P, Duration::ZERO).await.expect("prune"),
        1
    );
    assert_eq!(
        store.prune_leases(P, Duration::ZERO).await.expect("prune"),
        0
    );
    let left: Vec<String> = store
        .list_leases()
        .await
        .expect("list")
        .into_iter()
        .map(|l| l.resource_id)
        .collect();
    assert_eq!(
        left,
        [
            "a_b/1",
            "axb/1",
            "control-plane/instance/live",
            "control-plane/instancex",
            "sb-1"
        ]
    );
    // A pruned row is gone for good (a new grant starts at 1); a kept one counts on.
    let again = grant("control-plane/instance/dead", "dead", long).await;
    assert_eq!(again.generation, 1);
    let sb = store
        .acquire_lease("sb-1", "sandbox", "w2", long)
        .await
        .expect("take over");
    assert_eq!(sb.generation, 2);
    // The prefix is literal: `_` and `%` are no wildcards.
    assert_eq!(
        store
            .prune_leases("a_b/", Duration::ZERO)
            .await
            .expect("prune"),
        1
    );
    assert!(store.get_lease("axb/1").await.is_ok());
    assert!(matches!(
        store.prune_leases("", Duration::ZERO).await,
        Err(StoreError::Unsupported(_))
    ));
}
