//! Limited inserts (admission checked by the store) and `creating` records.

use std::sync::Arc;

use stacyvm_types::{Placement, SandboxState};

use super::{assert_conflict, err, insert, sandbox, secs, t0};
use crate::{InsertLimits, LimitHit, Store, StoreError};

#[track_caller]
fn assert_limit(r: Result<(), StoreError>, hit: LimitHit, what: &str) {
    match err(r, what) {
        StoreError::LimitReached(h) if h == hit => {}
        e => panic!("{what}: expected LimitReached({hit}), got {e:?}"),
    }
}

pub async fn sandbox_insert_limited(store: &dyn Store) {
    let limits = |total, owner, worker| InsertLimits {
        created_by: "cp-a",
        max_total: total,
        max_owner: owner,
        max_worker: worker,
    };
    let mut n = 0;
    let mut next = |owner: &str, worker: &str| {
        n += 1;
        let mut sb = sandbox(
            &format!("sb-{n:08}"),
            owner,
            SandboxState::Creating,
            t0() + secs(n),
        );
        sb.placement = Placement::from_worker_id(worker);
        sb
    };
    // No limits: always inserted.
    store
        .insert_sandbox_limited(&next("alice", "local"), &limits(0, 0, 0))
        .await
        .expect("unlimited");
    // Destroyed, expired and destroying records do not count.
    for state in [
        SandboxState::Destroyed,
        SandboxState::Expired,
        SandboxState::Destroying,
    ] {
        insert(store, &{
            let mut sb = next("alice", "w1");
            sb.state = state;
            sb
        })
        .await;
    }
    let second = next("alice", "w1");
    store
        .insert_sandbox_limited(&second, &limits(2, 0, 0))
        .await
        .expect("second of two");
    assert_limit(
        store
            .insert_sandbox_limited(&next("bob", "w2"), &limits(2, 0, 0))
            .await,
        LimitHit::Total,
        "third of two",
    );
    // Owner limit counts only that owner; an empty owner is never limited by it.
    assert_limit(
        store
            .insert_sandbox_limited(&next("alice", "w2"), &limits(0, 2, 0))
            .await,
        LimitHit::Owner,
        "alice's third",
    );
    store
        .insert_sandbox_limited(&next("bob", "w2"), &limits(0, 2, 0))
        .await
        .expect("bob's first");
    store
        .insert_sandbox_limited(&next("", "w2"), &limits(0, 1, 0))
        .await
        .expect("no owner");
    // Worker limit counts records on that worker.
    assert_limit(
        store
            .insert_sandbox_limited(&next("carol", "w2"), &limits(0, 0, 2))
            .await,
        LimitHit::Worker,
        "w2 full",
    );
    store
        .insert_sandbox_limited(&next("carol", "w1"), &limits(0, 0, 2))
        .await
        .expect("w1 has one");
    // When several are reached, the total is named first.
    assert_limit(
        store
            .insert_sandbox_limited(&next("alice", "w1"), &limits(5, 1, 1))
            .await,
        LimitHit::Total,
        "all reached",
    );
    // A duplicate id is a conflict, limits or not.
    assert_conflict(
        store
            .insert_sandbox_limited(&second, &limits(100, 0, 0))
            .await,
        "duplicate",
    );
    assert_conflict(
        store
            .insert_sandbox_limited(&second, &limits(0, 0, 0))
            .await,
        "duplicate, no limits",
    );
    assert_eq!(
        store
            .count_active_sandboxes(None)
            .await
            .expect("count")
            .total,
        5
    );
}

pub async fn sandbox_list_creating(store: &dyn Store) {
    assert!(store
        .list_creating_sandboxes()
        .await
        .expect("empty")
        .is_empty());
    let late = sandbox("sb-late", "", SandboxState::Creating, t0() + secs(10));
    let early = sandbox("sb-early", "", SandboxState::Creating, t0());
    let running = sandbox("sb-run", "", SandboxState::Creating, t0() + secs(5));
    store
        .insert_sandbox_limited(
            &late,
            &InsertLimits {
                created_by: "cp-b",
                max_total: 10,
                ..InsertLimits::default()
            },
        )
        .await
        .expect("late");
    insert(store, &early).await;
    store
        .insert_sandbox_limited(
            &running,
            &InsertLimits {
                created_by: "cp-a",
                ..InsertLimits::default()
            },
        )
        .await
        .expect("running");
    store
        .set_sandbox_running(&"sb-run".into(), None)
        .await
        .expect("mark running");
    let got = store.list_creating_sandboxes().await.expect("list");
    let got: Vec<(&str, &str)> = got
        .iter()
        .map(|c| (c.sandbox.id.as_str(), c.created_by.as_str()))
        .collect();
    assert_eq!(got, [("sb-early", ""), ("sb-late", "cp-b")]);
    let full = store.list_creating_sandboxes().await.expect("list");
    assert_eq!(full[1].sandbox, late);
}

/// Many handles insert at once under one total limit: exactly the limit gets in.
pub async fn admission_concurrency(stores: &[Arc<dyn Store>]) {
    const LIMIT: i64 = 10;
    const TRIES: usize = 48;
    let mut tasks = Vec::new();
    for i in 0..TRIES {
        let store = stores[i % stores.len()].clone();
        tasks.push(tokio::spawn(async move {
            let sb = sandbox(
                &format!("sb-race{i:04}"),
                "",
                SandboxState::Creating,
                t0() + secs(i as i64),
            );
            let limits = InsertLimits {
                created_by: "racer",
                max_total: LIMIT,
                ..InsertLimits::default()
            };
            // SQLite may refuse a write on a stale snapshot when another process's handle
            // wrote first: that is a failed spawn, never one past the limit. Retry it.
            for _ in 0..50 {
                match store.insert_sandbox_limited(&sb, &limits).await {
                    Ok(()) => return true,
                    Err(StoreError::LimitReached(LimitHit::Total)) => return false,
                    Err(StoreError::Database(_) | StoreError::Sqlite(_)) => {
                        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                    }
                    Err(e) => panic!("racing insert: {e:?}"),
                }
            }
            panic!("racing insert kept failing");
        }));
    }
    let mut admitted = 0;
    for t in tasks {
        admitted += i64::from(t.await.expect("task"));
    }
    assert_eq!(
        admitted, LIMIT,
        "admitted {admitted} of {TRIES} with limit {LIMIT}"
    );
    let counts = stores[0].count_active_sandboxes(None).await.expect("count");
    assert_eq!(counts.total, LIMIT);
}
