//! Lease safety under a real race on Postgres: several store handles (as several control planes
//! would have) on one throwaway database, 16 tasks × 1,000 attempts on 3 resources, every grant
//! recorded. Skips without `STACYVM_TEST_PG_DSN` except under `CI=true`, where it fails.
//!
//! Plus an opt-in throughput figure:
//! `cargo nextest run -p stacyvm-store --test postgres_lease_race --run-ignored only --no-capture`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use stacyvm_store::pg_test_db::TestDb;
use stacyvm_store::{Lease, PgStore, Store, StoreError};

const HANDLES: usize = 4;
const TASKS: usize = 16;
const ATTEMPTS: usize = 1_000;
const RESOURCES: [&str; 3] = ["res-0", "res-1", "res-2"];
const TTL_MS: i64 = 30;

#[derive(Default)]
struct Log {
    grants: Vec<Lease>,
    /// (resource, holder, generation held when the release succeeded)
    releases: Vec<(String, String, i64)>,
    conflicts: usize,
    refused_renews: usize,
    refused_releases: usize,
}

/// One task: acquire; sometimes renew; usually release; every eighth grant is abandoned and
/// left to expire. Now and then it also renews or releases a resource it does not hold, which
/// must be refused unless its own abandoned lease there is still live.
async fn contend(store: Arc<PgStore>, task: usize) -> Log {
    let holder = format!("holder-{task}");
    let ttl = Duration::from_millis(TTL_MS as u64);
    let mut log = Log::default();
    for attempt in 0..ATTEMPTS {
        let resource = RESOURCES[(task + attempt) % RESOURCES.len()];
        if attempt % 5 == 4 {
            let other = RESOURCES[(task + attempt + 1) % RESOURCES.len()];
            match store.renew_lease(other, &holder, ttl).await {
                Ok(lease) => {
                    log.grants.push(lease.clone());
                    match store.release_lease(other, &holder).await {
                        Ok(()) => {
                            log.releases
                                .push((other.into(), holder.clone(), lease.generation))
                        }
                        Err(StoreError::NotFound { .. }) => log.refused_releases += 1,
                        Err(e) => panic!("release failed unexpectedly: {e:?}"),
                    }
                }
                Err(StoreError::Conflict(_)) => log.refused_renews += 1,
                Err(e) => panic!("renew failed unexpectedly: {e:?}"),
            }
        }
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
                // Only when this task was descheduled past the TTL.
                Err(StoreError::Conflict(_)) => log.refused_renews += 1,
                Err(e) => panic!("renew failed unexpectedly: {e:?}"),
            }
        }
        if attempt % 8 == 7 {
            // Abandoned: stay away past the TTL so another task takes it over by expiry.
            tokio::time::sleep(2 * ttl).await;
            continue;
        }
        match store.release_lease(resource, &holder).await {
            Ok(()) => log
                .releases
                .push((resource.into(), holder.clone(), held.generation)),
            Err(StoreError::NotFound { .. }) => log.refused_releases += 1,
            Err(e) => panic!("release failed unexpectedly: {e:?}"),
        }
        tokio::task::yield_now().await;
    }
    log
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_tasks_never_share_a_lease() {
    let db = TestDb::create().await;
    let mut handles = Vec::new();
    for _ in 0..HANDLES {
        handles.push(Arc::new(db.open().await));
    }
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..TASKS {
        tasks.spawn(contend(Arc::clone(&handles[task % HANDLES]), task));
    }
    let mut all = Log::default();
    while let Some(done) = tasks.join_next().await {
        let log = done.expect("race task panicked");
        all.grants.extend(log.grants);
        all.releases.extend(log.releases);
        all.conflicts += log.conflicts;
        all.refused_renews += log.refused_renews;
        all.refused_releases += log.refused_releases;
    }

    let released: HashSet<&(String, String, i64)> = all.releases.iter().collect();
    let mut handovers = (0, 0); // (after a release, after an expiry)
    let mut issued: HashMap<&str, i64> = HashMap::new();
    for resource in RESOURCES {
        let mut grants: Vec<&Lease> = all
            .grants
            .iter()
            .filter(|l| l.resource_id == resource)
            .collect();
        grants.sort_by_key(|l| l.generation);
        // Generations never repeat and none is missing: every grant the database made is in
        // the log exactly once.
        let gens: Vec<i64> = grants.iter().map(|l| l.generation).collect();
        let want: Vec<i64> = (1..=grants.len() as i64).collect();
        assert_eq!(
            gens, want,
            "{resource}: generations must be 1..n, each once"
        );
        for g in &grants {
            assert_eq!(
                g.expires_at,
                g.updated_at + chrono::Duration::milliseconds(TTL_MS),
                "{resource} gen {}",
                g.generation
            );
        }
        // Ownership changes hands only after the previous holder released that very
        // generation, or after its expiry on the database clock: never two holders at once.
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
                handovers.0 += 1;
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
                handovers.1 += 1;
            }
        }
        issued.insert(resource, grants.len() as i64);
    }
    for (resource, holder, generation) in &all.releases {
        let granted = all
            .grants
            .iter()
            .find(|l| &l.resource_id == resource && l.generation == *generation)
            .expect("a released generation was granted");
        assert_eq!(&granted.holder_id, holder, "released by a non-holder");
    }

    // The database agrees: the next grant continues right after the last recorded one.
    tokio::time::sleep(Duration::from_millis(3 * TTL_MS as u64)).await;
    for resource in RESOURCES {
        let next = handles[0]
            .acquire_lease(resource, "sandbox", "auditor", Duration::from_secs(60))
            .await
            .expect("acquire after the race");
        assert_eq!(next.generation, issued[resource] + 1, "{resource}");
    }

    let grants = all.grants.len();
    eprintln!(
        "{grants} grants, {} releases, {} conflicts, {} refused renews, {} refused releases, \
         handovers: {} by release, {} by expiry",
        all.releases.len(),
        all.conflicts,
        all.refused_renews,
        all.refused_releases,
        handovers.0,
        handovers.1
    );
    assert!(all.conflicts > 0, "the race never produced a conflict");
    assert!(all.refused_renews > 0, "no renew was ever refused");
    assert!(handovers.0 > 0, "no handover after a release was exercised");
    assert!(handovers.1 > 0, "no handover after an expiry was exercised");
}

/// Lease acquire+release pairs per second on one store handle (pool of 10): uncontended (one
/// resource per pair, like spawn/destroy) and contended (8 tasks on one resource).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "throughput figure; run on its own"]
async fn lease_acquire_release_throughput() {
    const PAIRS: usize = 8_000;
    const TASKS: usize = 8;
    let db = TestDb::create().await;
    let store = Arc::new(db.open().await);
    for contended in [false, true] {
        let started = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for task in 0..TASKS {
            let store = Arc::clone(&store);
            tasks.spawn(async move {
                let holder = format!("h-{task}");
                let mut granted = 0usize;
                for n in (task..PAIRS).step_by(TASKS) {
                    let resource = if contended {
                        "hot".to_string()
                    } else {
                        format!("sb-{n:08x}")
                    };
                    let ttl = Duration::from_secs(60);
                    match store
                        .acquire_lease(&resource, "sandbox", &holder, ttl)
                        .await
                    {
                        Ok(_) => {
                            granted += 1;
                            store
                                .release_lease(&resource, &holder)
                                .await
                                .expect("release");
                        }
                        Err(StoreError::Conflict(_)) => {}
                        Err(e) => panic!("acquire: {e:?}"),
                    }
                }
                granted
            });
        }
        let mut granted = 0;
        while let Some(done) = tasks.join_next().await {
            granted += done.expect("task");
        }
        let secs = started.elapsed().as_secs_f64();
        let label = if contended {
            "contended (1 resource)"
        } else {
            "uncontended"
        };
        println!(
            "postgres lease {label}: {:.0} attempts/s, {:.0} acquire+release pairs/s \
             ({PAIRS} attempts, {granted} granted, {TASKS} tasks)",
            PAIRS as f64 / secs,
            granted as f64 / secs
        );
        assert!(granted > 0);
    }
}
