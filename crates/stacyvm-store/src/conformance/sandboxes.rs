//! Sandbox records and their exec logs.

use std::collections::{BTreeMap, HashSet};

use chrono::Utc;
use stacyvm_types::{Placement, PreviewToken, SandboxId, SandboxState, Timestamp, WorkerId};

use super::{
    assert_between, assert_conflict, assert_not_found, err, ids, insert, sandbox, secs, t0,
};
use crate::{ActiveCounts, ExecLog, InsertLimits, Store, StoreError};

pub async fn sandbox_round_trip(store: &dyn Store) {
    let mut sb = sandbox("sb-00000001", "alice", SandboxState::Running, t0());
    sb.metadata = BTreeMap::from([
        ("template".to_string(), "py".to_string()),
        ("quote".to_string(), "it's \"x\" ✓".to_string()),
    ]);
    sb.template = "py".into();
    sb.vm_id = Some("vm-7".into());
    sb.placement = Placement::Remote(WorkerId::from("worker-a"));
    sb.tenant_id = "tenant-0000abcd".into();
    sb.preview_domain = "preview.example".into();
    sb.memory_mb = 2048;
    sb.vcpus = 3;
    sb.expires_at = t0() + chrono::Duration::nanoseconds(1);
    sb.updated_at = t0() + secs(5);
    insert(store, &sb).await;
    assert_eq!(store.get_sandbox(&sb.id).await.expect("get"), sb);

    let now = Utc::now();
    let gone = sandbox("sb-00000002", "", SandboxState::Destroyed, now);
    insert(store, &gone).await;
    assert_eq!(
        store.get_sandbox(&gone.id).await.expect("get destroyed"),
        gone
    );
}

/// The preview token and `public_preview` (migration 0006) through every way a record is
/// written and read: plain and limited inserts, get, list, and the updates that answer the
/// record.
pub async fn sandbox_preview_access(store: &dyn Store) {
    let token = PreviewToken::random();
    let mut public = sandbox("sb-00000001", "alice", SandboxState::Creating, t0());
    public.preview_token = token.clone();
    public.public_preview = true;
    insert(store, &public).await;
    let got = store.get_sandbox(&public.id).await.expect("get");
    assert_eq!(got, public);
    assert!(got.preview_token.matches(token.as_str()) && got.public_preview);

    let mut limited = sandbox("sb-00000002", "bob", SandboxState::Creating, t0() + secs(1));
    limited.preview_token = PreviewToken::random();
    let limits = InsertLimits {
        created_by: "cp-1",
        max_total: 10,
        max_owner: 10,
        max_worker: 10,
    };
    store
        .insert_sandbox_limited(&limited, &limits)
        .await
        .expect("limited insert");
    assert_eq!(store.get_sandbox(&limited.id).await.expect("get"), limited);
    let running = store
        .set_sandbox_running(&limited.id, Some("vm-1"))
        .await
        .expect("running");
    assert_eq!(running.preview_token, limited.preview_token);
    assert!(!running.public_preview);
    let listed = store.list_sandboxes().await.expect("list");
    assert_eq!(
        listed
            .iter()
            .map(|s| (s.id.as_str(), s.preview_token.as_str(), s.public_preview))
            .collect::<Vec<_>>(),
        [
            ("sb-00000002", limited.preview_token.as_str(), false),
            ("sb-00000001", token.as_str(), true),
        ]
    );

    // A record without a token (what the migration leaves on destroyed rows) stays without.
    let mut none = sandbox("sb-00000003", "", SandboxState::Destroyed, t0());
    none.preview_token = PreviewToken::default();
    insert(store, &none).await;
    let got = store.get_sandbox(&none.id).await.expect("get");
    assert!(got.preview_token.is_empty() && !got.preview_token.matches(""));
}

pub async fn sandbox_insert_conflicts(store: &dyn Store) {
    let sb = sandbox("sb-00000001", "alice", SandboxState::Running, t0());
    insert(store, &sb).await;
    let mut other = sandbox("sb-00000001", "bob", SandboxState::Creating, t0() + secs(1));
    other.image = "debian".into();
    assert_conflict(store.insert_sandbox(&other).await, "duplicate id");
    store
        .set_sandbox_state(&sb.id, SandboxState::Destroyed)
        .await
        .expect("destroy");
    assert_conflict(
        store.insert_sandbox(&other).await,
        "id of a destroyed sandbox",
    );
    let kept = store.get_sandbox(&sb.id).await.expect("get");
    assert_eq!(
        (kept.owner_id.as_str(), kept.image.as_str()),
        ("alice", "alpine:latest")
    );
}

pub async fn sandbox_get_missing(store: &dyn Store) {
    match err(store.get_sandbox(&"sb-missing".into()).await, "get missing") {
        StoreError::NotFound { kind, id } => {
            assert_eq!((kind, id.as_str()), ("sandbox", "sb-missing"));
        }
        e => panic!("expected NotFound, got {e:?}"),
    }
}

/// Everything but destroyed, newest `created_at` first.
pub async fn sandbox_list_live_newest_first(store: &dyn Store) {
    assert!(store.list_sandboxes().await.expect("list").is_empty());
    let rows = [
        ("sb-a", SandboxState::Running, t0()),
        (
            "sb-b",
            SandboxState::Error,
            t0() + chrono::Duration::nanoseconds(1),
        ),
        ("sb-c", SandboxState::Unhealthy, t0() + secs(2)),
        ("sb-d", SandboxState::Expired, t0() - secs(1)),
        ("sb-e", SandboxState::Destroyed, t0() + secs(9)),
        ("sb-f", SandboxState::Running, t0() + secs(3)),
    ];
    for (id, state, created) in rows {
        insert(store, &sandbox(id, "", state, created)).await;
    }
    store
        .set_sandbox_state(&"sb-f".into(), SandboxState::Destroyed)
        .await
        .expect("destroy");
    let list = store.list_sandboxes().await.expect("list");
    assert_eq!(ids(&list), ["sb-c", "sb-b", "sb-a", "sb-d"]);
    assert_eq!(list[1], sandbox("sb-b", "", SandboxState::Error, rows[1].2));
}

/// The whole transition table: valid moves write, invalid ones report both states, re-setting
/// the current state is a no-op that writes nothing.
pub async fn sandbox_state_transitions(store: &dyn Store) {
    for (i, from) in SandboxState::ALL.into_iter().enumerate() {
        for (j, to) in SandboxState::ALL.into_iter().enumerate() {
            let id = SandboxId::from(format!("sb-{i}{j}"));
            let sb = sandbox(&id, "", from, t0());
            insert(store, &sb).await;
            let before = Utc::now();
            let res = store.set_sandbox_state(&id, to).await;
            let after = Utc::now();
            let stored = store.get_sandbox(&id).await.expect("get");
            if from == to {
                assert_eq!(res.expect("same state is a no-op"), sb, "{from}->{to}");
                assert_eq!(stored, sb, "{from}->{to} must not write");
            } else if from.valid_transition(to).is_ok() {
                let moved = res.unwrap_or_else(|e| panic!("{from}->{to}: {e:?}"));
                assert_eq!(moved.state, to);
                assert_between(moved.updated_at, before, after, "updated_at");
                assert_eq!(moved, stored, "returned record is the stored one");
                assert_eq!(moved.created_at, sb.created_at);
                assert_eq!(moved.expires_at, sb.expires_at);
            } else {
                match err(res, "invalid transition") {
                    StoreError::InvalidTransition(e) => {
                        assert_eq!((e.from, e.to), (from, to));
                    }
                    e => panic!("{from}->{to}: expected InvalidTransition, got {e:?}"),
                }
                assert_eq!(stored, sb, "{from}->{to} rejected but written");
            }
        }
    }
    assert_not_found(
        store
            .set_sandbox_state(&"sb-missing".into(), SandboxState::Running)
            .await,
        "sandbox",
        "set state of missing",
    );
}

pub async fn sandbox_set_running(store: &dyn Store) {
    let sb = sandbox("sb-0000c0de", "", SandboxState::Creating, t0());
    insert(store, &sb).await;
    let running = store
        .set_sandbox_running(&sb.id, Some("rt-42"))
        .await
        .expect("mark running");
    assert_eq!(running.state, SandboxState::Running);
    assert_eq!(running.vm_id.as_deref(), Some("rt-42"));
    assert_eq!(store.get_sandbox(&sb.id).await.expect("get"), running);
    // Repeating it is a no-op; a destroyed record cannot come back.
    assert_eq!(
        store
            .set_sandbox_running(&sb.id, Some("rt-42"))
            .await
            .expect("again")
            .state,
        SandboxState::Running
    );
    store
        .set_sandbox_state(&sb.id, SandboxState::Destroyed)
        .await
        .expect("destroy");
    assert!(store
        .set_sandbox_running(&sb.id, Some("rt-42"))
        .await
        .is_err());
    assert_not_found(
        store.set_sandbox_running(&"sb-00000000".into(), None).await,
        "sandbox",
        "mark a missing sandbox running",
    );
    // No runtime id of its own: `vm_id` stays none (the empty column).
    let other = sandbox("sb-0000c0df", "", SandboxState::Creating, t0());
    insert(store, &other).await;
    assert_eq!(
        store
            .set_sandbox_running(&other.id, None)
            .await
            .expect("running")
            .vm_id,
        None
    );
}

pub async fn sandbox_set_expiry(store: &dyn Store) {
    let sb = sandbox("sb-live", "", SandboxState::Running, t0());
    insert(store, &sb).await;
    let new_expiry = t0() + secs(7200) + chrono::Duration::nanoseconds(5);
    let before = Utc::now();
    let got = store
        .set_sandbox_expiry(&sb.id, new_expiry)
        .await
        .expect("extend");
    let after = Utc::now();
    assert_eq!(got.expires_at, new_expiry);
    assert_eq!(got.state, SandboxState::Running);
    assert_between(got.updated_at, before, after, "updated_at");
    assert_eq!(store.get_sandbox(&sb.id).await.expect("get"), got);

    insert(
        store,
        &sandbox("sb-gone", "", SandboxState::Destroyed, t0()),
    )
    .await;
    assert_not_found(
        store
            .set_sandbox_expiry(&"sb-gone".into(), new_expiry)
            .await,
        "sandbox",
        "extend destroyed",
    );
    assert_eq!(
        store
            .get_sandbox(&"sb-gone".into())
            .await
            .expect("get")
            .expires_at,
        t0() + secs(1800)
    );
    assert_not_found(
        store
            .set_sandbox_expiry(&"sb-missing".into(), new_expiry)
            .await,
        "sandbox",
        "extend missing",
    );
}

/// Not destroyed, not in state `expired`, and `expires_at` strictly before `now`.
pub async fn sandbox_list_expired(store: &dyn Store) {
    let now = t0();
    let rows = [
        ("sb-past", SandboxState::Running, now - secs(1), true),
        (
            "sb-just",
            SandboxState::Error,
            now - chrono::Duration::nanoseconds(1),
            true,
        ),
        (
            "sb-unhealthy",
            SandboxState::Unhealthy,
            now - secs(60),
            true,
        ),
        ("sb-creating", SandboxState::Creating, now - secs(60), true),
        ("sb-exact", SandboxState::Running, now, false),
        ("sb-future", SandboxState::Running, now + secs(1), false),
        (
            "sb-destroyed",
            SandboxState::Destroyed,
            now - secs(1),
            false,
        ),
        ("sb-expired", SandboxState::Expired, now - secs(1), false),
    ];
    for (id, state, expires, _) in rows {
        let mut sb = sandbox(id, "", state, now - secs(3600));
        sb.expires_at = expires;
        insert(store, &sb).await;
    }
    let got = store
        .list_expired_sandboxes(now)
        .await
        .expect("list expired");
    let got: HashSet<&str> = ids(&got).into_iter().collect();
    let want: HashSet<&str> = rows.iter().filter(|r| r.3).map(|r| r.0).collect();
    assert_eq!(got, want);
}

/// Counts skip destroyed and expired records; the owner count needs a non-empty owner.
pub async fn sandbox_count_active(store: &dyn Store) {
    assert_eq!(
        store
            .count_active_sandboxes(Some("alice"))
            .await
            .expect("count"),
        ActiveCounts::default()
    );
    let rows = [
        ("sb-1", "alice", SandboxState::Running),
        ("sb-2", "alice", SandboxState::Creating),
        ("sb-3", "alice", SandboxState::Destroyed),
        ("sb-4", "alice", SandboxState::Expired),
        ("sb-5", "bob", SandboxState::Error),
        ("sb-6", "bob", SandboxState::Unhealthy),
        ("sb-7", "", SandboxState::Running),
    ];
    for (id, owner, state) in rows {
        insert(store, &sandbox(id, owner, state, t0())).await;
    }
    let count = |owner: Option<&'static str>| async move {
        store.count_active_sandboxes(owner).await.expect("count")
    };
    let c = |total, owner| ActiveCounts { total, owner };
    assert_eq!(count(Some("alice")).await, c(5, 2));
    assert_eq!(count(Some("bob")).await, c(5, 2));
    assert_eq!(count(Some("carol")).await, c(5, 0));
    assert_eq!(count(Some("")).await, c(5, 0), "empty owner is not counted");
    assert_eq!(count(None).await, c(5, 0));
    store
        .set_sandbox_state(&"sb-1".into(), SandboxState::Destroyed)
        .await
        .expect("destroy");
    assert_eq!(count(Some("alice")).await, c(4, 1));
}

pub async fn exec_logs_newest_first(store: &dyn Store) {
    insert(store, &sandbox("sb-1", "", SandboxState::Running, t0())).await;
    insert(store, &sandbox("sb-2", "", SandboxState::Running, t0())).await;
    let log = |sb: &str, cmd: &str, at: Timestamp| ExecLog {
        sandbox_id: sb.into(),
        command: cmd.into(),
        exit_code: 3,
        stdout: "out\n".into(),
        stderr: "err ✓".into(),
        duration_ms: 42,
        created_at: at,
    };
    let logs = [
        log("sb-1", "first", t0()),
        log("sb-1", "third", t0() + secs(2)),
        log("sb-1", "second", t0() + secs(1)),
        log("sb-1", "third-tie", t0() + secs(2)),
        log("sb-2", "other", t0() + secs(5)),
    ];
    for l in &logs {
        store.insert_exec_log(l).await.expect("insert log");
    }
    let got = store
        .list_exec_logs(&"sb-1".into(), 10)
        .await
        .expect("list");
    let want = [&logs[3], &logs[1], &logs[2], &logs[0]];
    assert_eq!(
        got.iter().collect::<Vec<_>>(),
        want,
        "newest first, later insert wins a tie"
    );
    let got = store.list_exec_logs(&"sb-1".into(), 2).await.expect("list");
    assert_eq!(got.iter().collect::<Vec<_>>(), want[..2]);
    assert!(store
        .list_exec_logs(&"sb-1".into(), 0)
        .await
        .expect("list")
        .is_empty());
    assert!(store
        .list_exec_logs(&"sb-1".into(), -1)
        .await
        .expect("list")
        .is_empty());
    assert!(store
        .list_exec_logs(&"sb-9".into(), 10)
        .await
        .expect("list")
        .is_empty());
    assert_eq!(
        store
            .list_exec_logs(&"sb-2".into(), 10)
            .await
            .expect("list"),
        [logs[4].clone()]
    );
}

pub async fn exec_log_needs_sandbox(store: &dyn Store) {
    let log = ExecLog {
        sandbox_id: "sb-missing".into(),
        command: "true".into(),
        exit_code: 0,
        stdout: String::new(),
        stderr: String::new(),
        duration_ms: 1,
        created_at: t0(),
    };
    assert_not_found(
        store.insert_exec_log(&log).await,
        "sandbox",
        "log for missing sandbox",
    );
}

/// The runtime ids of live local records only: `vm_id` when set, else the id.
pub async fn sandbox_local_runtime_ids(store: &dyn Store) {
    assert!(store
        .list_local_runtime_ids()
        .await
        .expect("list")
        .is_empty());
    let mut with_vm = sandbox("sb-vm", "", SandboxState::Running, t0());
    with_vm.vm_id = Some("ctr-1".into());
    let mut remote = sandbox("sb-remote", "", SandboxState::Running, t0());
    remote.placement = stacyvm_types::Placement::Remote("w-1".into());
    remote.vm_id = Some("ctr-remote".into());
    for sb in [
        with_vm,
        sandbox("sb-plain", "", SandboxState::Paused, t0()),
        sandbox("sb-gone", "", SandboxState::Destroyed, t0()),
        remote,
    ] {
        insert(store, &sb).await;
    }
    let mut ids = store.list_local_runtime_ids().await.expect("list");
    ids.sort();
    assert_eq!(ids, ["ctr-1", "sb-plain"]);
}
