//! The contract every [`Store`] backend must meet, as executable checks. Each `pub async fn`
//! takes a handle on a fresh, empty database and panics on the first violation.
//!
//! A backend runs the whole suite, one test per check, with
//! [`store_conformance_tests!`](crate::store_conformance_tests), given an async fn returning a
//! [`Backend`]. The calling crate needs `tokio` (with `macros` and `rt-multi-thread`).

use std::collections::{BTreeMap, HashSet};
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use stacyvm_types::{Sandbox, SandboxState, Timestamp};

use crate::{
    ActiveCounts, AuditFilter, ExecLog, Lease, NewAdminAudit, OwnerQuota, Store, StoreError,
    Template, TemplateSecret, WorkerRecord,
};

/// One fresh, empty database of some backend.
#[async_trait::async_trait]
pub trait Backend: Send + Sync {
    /// A new handle with its own connections on this same database.
    async fn connect(&self) -> Arc<dyn Store>;
}

/// Expands to one `#[tokio::test]` per check. `$fresh` is an async fn returning a [`Backend`]
/// on a new, empty database; the backend value lives until the test ends.
#[macro_export]
macro_rules! store_conformance_tests {
    ($fresh:path) => {
        $crate::store_conformance_tests!(@each $fresh;
            ping,
            sandbox_round_trip,
            sandbox_insert_conflicts,
            sandbox_get_missing,
            sandbox_list_live_newest_first,
            sandbox_state_transitions,
            sandbox_set_expiry,
            sandbox_list_expired,
            sandbox_count_active,
            exec_logs_newest_first,
            exec_log_needs_sandbox,
            templates_crud,
            quotas_crud,
            workers_crud,
            lease_acquire_new,
            lease_acquire_rules,
            lease_renew_rules,
            lease_release_rules,
            lease_list_ordered,
            audit_filter_and_order,
            audit_prune,
        );

        /// Several handles (separate connections) on one database racing for leases.
        #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn lease_concurrency() {
            let backend = $fresh().await;
            let stores = vec![
                $crate::conformance::Backend::connect(&backend).await,
                $crate::conformance::Backend::connect(&backend).await,
            ];
            $crate::conformance::lease_concurrency(&stores).await;
        }
    };
    (@each $fresh:path; $($check:ident),+ $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let backend = $fresh().await;
                let store = $crate::conformance::Backend::connect(&backend).await;
                $crate::conformance::$check(&*store).await;
            }
        )+
    };
}

// --- helpers -------------------------------------------------------------------------------

/// A fixed instant with every nanosecond digit set, to catch precision loss.
fn t0() -> Timestamp {
    Utc.with_ymd_and_hms(2026, 5, 8, 10, 30, 0)
        .single()
        .expect("valid date")
        + chrono::Duration::nanoseconds(123_456_789)
}

fn secs(n: i64) -> chrono::Duration {
    chrono::Duration::seconds(n)
}

fn sandbox(id: &str, owner: &str, state: SandboxState, created_at: Timestamp) -> Sandbox {
    Sandbox {
        id: id.into(),
        state,
        provider: "mock".into(),
        image: "alpine:latest".into(),
        memory_mb: 1024,
        vcpus: 1,
        metadata: BTreeMap::new(),
        template: String::new(),
        owner_id: owner.into(),
        vm_id: String::new(),
        worker_id: "local".into(),
        tenant_id: String::new(),
        preview_domain: "localhost".into(),
        created_at,
        expires_at: created_at + secs(1800),
        updated_at: created_at,
    }
}

async fn insert(store: &dyn Store, sb: &Sandbox) {
    store.insert_sandbox(sb).await.expect("insert sandbox");
}

#[track_caller]
fn err<T: Debug>(r: Result<T, StoreError>, what: &str) -> StoreError {
    match r {
        Ok(v) => panic!("{what}: expected an error, got Ok({v:?})"),
        Err(e) => e,
    }
}

#[track_caller]
fn assert_not_found<T: Debug>(r: Result<T, StoreError>, kind: &str, what: &str) {
    match err(r, what) {
        StoreError::NotFound { kind: k, .. } if k == kind => {}
        e => panic!("{what}: expected NotFound({kind}), got {e:?}"),
    }
}

#[track_caller]
fn assert_conflict<T: Debug>(r: Result<T, StoreError>, what: &str) {
    match err(r, what) {
        StoreError::Conflict(_) => {}
        e => panic!("{what}: expected Conflict, got {e:?}"),
    }
}

#[track_caller]
fn assert_between(t: Timestamp, before: Timestamp, after: Timestamp, what: &str) {
    assert!(
        before <= t && t <= after,
        "{what}: {t} not within the call ({before} .. {after})"
    );
}

fn ids(list: &[Sandbox]) -> Vec<&str> {
    list.iter().map(|s| s.id.as_str()).collect()
}

// --- checks --------------------------------------------------------------------------------

pub async fn ping(store: &dyn Store) {
    store.ping().await.expect("ping");
}

/// Every field survives the trip, timestamps to the nanosecond; destroyed rows stay readable.
pub async fn sandbox_round_trip(store: &dyn Store) {
    let mut sb = sandbox("sb-00000001", "alice", SandboxState::Running, t0());
    sb.metadata = BTreeMap::from([
        ("template".to_string(), "py".to_string()),
        ("quote".to_string(), "it's \"x\" ✓".to_string()),
    ]);
    sb.template = "py".into();
    sb.vm_id = "vm-7".into();
    sb.worker_id = "worker-a".into();
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
    match err(store.get_sandbox("sb-missing").await, "get missing") {
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
        .set_sandbox_state("sb-f", SandboxState::Destroyed)
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
            let id = format!("sb-{i}{j}");
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
            .set_sandbox_state("sb-missing", SandboxState::Running)
            .await,
        "sandbox",
        "set state of missing",
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
        store.set_sandbox_expiry("sb-gone", new_expiry).await,
        "sandbox",
        "extend destroyed",
    );
    assert_eq!(
        store.get_sandbox("sb-gone").await.expect("get").expires_at,
        t0() + secs(1800)
    );
    assert_not_found(
        store.set_sandbox_expiry("sb-missing", new_expiry).await,
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
        .set_sandbox_state("sb-1", SandboxState::Destroyed)
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
    let got = store.list_exec_logs("sb-1", 10).await.expect("list");
    let want = [&logs[3], &logs[1], &logs[2], &logs[0]];
    assert_eq!(
        got.iter().collect::<Vec<_>>(),
        want,
        "newest first, later insert wins a tie"
    );
    let got = store.list_exec_logs("sb-1", 2).await.expect("list");
    assert_eq!(got.iter().collect::<Vec<_>>(), want[..2]);
    assert!(store
        .list_exec_logs("sb-1", 0)
        .await
        .expect("list")
        .is_empty());
    assert!(store
        .list_exec_logs("sb-1", -1)
        .await
        .expect("list")
        .is_empty());
    assert!(store
        .list_exec_logs("sb-9", 10)
        .await
        .expect("list")
        .is_empty());
    assert_eq!(
        store.list_exec_logs("sb-2", 10).await.expect("list"),
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

fn template(name: &str) -> Template {
    Template {
        name: name.into(),
        version: 1,
        image: "python:3.12".into(),
        description: "py".into(),
        setup: vec!["pip install x".into(), "echo ok".into()],
        allowed_hosts: vec!["pypi.org".into()],
        memory_mb: 512,
        cpu_cores: 1,
        ttl_seconds: 300,
        env: BTreeMap::from([("A".to_string(), "1".to_string())]),
        secrets: vec![TemplateSecret {
            name: "TOKEN".into(),
            inject_at: "/run/token".into(),
        }],
        pool_size: 2,
        created_at: t0(),
        updated_at: t0() + secs(1),
    }
}

pub async fn templates_crud(store: &dyn Store) {
    assert!(store.list_templates().await.expect("list").is_empty());
    for name in ["zeta", "alpha", "mid"] {
        store
            .create_template(&template(name))
            .await
            .expect("create");
    }
    assert_eq!(
        store.get_template("alpha").await.expect("get"),
        template("alpha")
    );
    assert_conflict(
        store.create_template(&template("mid")).await,
        "duplicate name",
    );
    let names: Vec<String> = store
        .list_templates()
        .await
        .expect("list")
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names, ["alpha", "mid", "zeta"]);

    let replacement = Template {
        version: 2,
        image: "python:3.13".into(),
        description: String::new(),
        setup: Vec::new(),
        allowed_hosts: Vec::new(),
        memory_mb: 256,
        cpu_cores: 2,
        ttl_seconds: 60,
        env: BTreeMap::new(),
        secrets: Vec::new(),
        pool_size: 0,
        created_at: Timestamp::default(),
        updated_at: t0() + secs(100),
        ..template("mid")
    };
    store.replace_template(&replacement).await.expect("replace");
    let stored = store.get_template("mid").await.expect("get");
    assert_eq!(
        stored,
        Template {
            created_at: t0(),
            ..replacement.clone()
        },
        "keeps created_at"
    );
    assert_not_found(
        store.replace_template(&template("nope")).await,
        "template",
        "replace missing",
    );
    assert_not_found(store.get_template("nope").await, "template", "get missing");

    store.delete_template("mid").await.expect("delete");
    assert_not_found(store.get_template("mid").await, "template", "get deleted");
    assert_not_found(
        store.delete_template("mid").await,
        "template",
        "delete twice",
    );
    assert_eq!(store.list_templates().await.expect("list").len(), 2);
}

pub async fn quotas_crud(store: &dyn Store) {
    assert!(store.list_quotas().await.expect("list").is_empty());
    let q = |owner: &str, max: i64, at: Timestamp| OwnerQuota {
        owner_id: owner.into(),
        max_sandboxes: max,
        max_ttl_seconds: 7200,
        max_exec_timeout_seconds: 60,
        created_at: at,
        updated_at: at,
    };
    let first = q("bob", 3, t0());
    assert_eq!(store.upsert_quota(&first).await.expect("insert"), first);
    store
        .upsert_quota(&q("alice", 0, t0()))
        .await
        .expect("insert");

    let second = OwnerQuota {
        max_ttl_seconds: 0,
        ..q("bob", 5, t0() + secs(60))
    };
    let stored = store.upsert_quota(&second).await.expect("update");
    let want = OwnerQuota {
        created_at: t0(),
        ..second
    };
    assert_eq!(stored, want, "update keeps created_at");
    assert_eq!(store.get_quota("bob").await.expect("get"), want);
    let owners: Vec<String> = store
        .list_quotas()
        .await
        .expect("list")
        .into_iter()
        .map(|q| q.owner_id)
        .collect();
    assert_eq!(owners, ["alice", "bob"]);

    store.delete_quota("bob").await.expect("delete");
    assert_not_found(store.get_quota("bob").await, "owner_quota", "get deleted");
    assert_not_found(
        store.delete_quota("bob").await,
        "owner_quota",
        "delete twice",
    );
    assert_eq!(store.list_quotas().await.expect("list").len(), 1);
}

/// Heartbeat upserts: the store's clock stamps the row, `created_at` survives updates, and a
/// missing provider list (`None`) stays distinct from an empty one.
pub async fn workers_crud(store: &dyn Store) {
    assert!(store.list_workers().await.expect("list").is_empty());
    let long_ago = Utc
        .with_ymd_and_hms(2000, 1, 1, 0, 0, 0)
        .single()
        .expect("date");
    let mut capacity = serde_json::Map::new();
    capacity.insert("max_sandboxes".into(), serde_json::json!(4));
    capacity.insert("rpc_url".into(), serde_json::json!("http://10.0.0.2:7424"));
    let w = WorkerRecord {
        id: "w-b".into(),
        hostname: "host-b".into(),
        status: "online".into(),
        providers: None,
        capabilities: Some(Vec::new()),
        capacity,
        last_heartbeat: long_ago,
        created_at: long_ago,
        updated_at: long_ago,
    };
    let before = Utc::now();
    let first = store.upsert_worker(&w).await.expect("insert");
    let after = Utc::now();
    assert_between(first.last_heartbeat, before, after, "last_heartbeat");
    assert_eq!(first.updated_at, first.last_heartbeat);
    assert_eq!(first.created_at, first.last_heartbeat);
    assert_eq!(
        (&first.id, &first.hostname, &first.status, &first.capacity),
        (&w.id, &w.hostname, &w.status, &w.capacity)
    );
    assert_eq!(
        (first.providers.clone(), first.capabilities.clone()),
        (None, Some(Vec::new()))
    );
    assert_eq!(store.get_worker("w-b").await.expect("get"), first);

    tokio::time::sleep(Duration::from_millis(2)).await;
    let beat = WorkerRecord {
        status: "draining".into(),
        providers: Some(vec!["mock".into(), "docker".into()]),
        capabilities: None,
        capacity: serde_json::Map::new(),
        ..w.clone()
    };
    let second = store.upsert_worker(&beat).await.expect("update");
    assert_eq!(second.created_at, first.created_at, "created_at kept");
    assert!(
        second.last_heartbeat > first.last_heartbeat,
        "heartbeat advances"
    );
    assert_eq!(second.updated_at, second.last_heartbeat);
    assert_eq!(second.status, "draining");
    assert_eq!(second.providers, beat.providers);
    assert_eq!(second.capabilities, None);
    assert!(second.capacity.is_empty());
    assert_eq!(store.get_worker("w-b").await.expect("get"), second);

    store
        .upsert_worker(&WorkerRecord {
            id: "w-a".into(),
            ..w.clone()
        })
        .await
        .expect("insert");
    let ids: Vec<String> = store
        .list_workers()
        .await
        .expect("list")
        .into_iter()
        .map(|w| w.id)
        .collect();
    assert_eq!(ids, ["w-a", "w-b"]);
    store.delete_worker("w-b").await.expect("delete");
    assert_not_found(store.get_worker("w-b").await, "worker", "get deleted");
    assert_not_found(store.delete_worker("w-b").await, "worker", "delete twice");
}

/// A first grant: generation 1, `expires_at = now + ttl` on the store's clock.
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

fn audit(actor: &str, method: &str, path: &str, status: i64) -> NewAdminAudit {
    NewAdminAudit {
        actor: actor.into(),
        method: method.into(),
        path: path.into(),
        status,
        duration_ms: 7,
        request_id: format!("req-{actor}-{status}"),
        remote_addr: "127.0.0.1:5000".into(),
        user_agent: "curl/8".into(),
        tenant_id: "tenant-1".into(),
    }
}

pub async fn audit_filter_and_order(store: &dyn Store) {
    let recs = [
        audit("admin", "GET", "/api/v1/admin/audit", 200),
        audit("alice", "POST", "/api/v1/admin/worker-tokens", 200),
        audit("admin", "DELETE", "/api/v1/admin/workers/w1", 404),
        audit("alice", "GET", "/api/v1/admin/audit", 400),
        audit("admin", "GET", "/api/v1/admin/audit", 200),
    ];
    let before = Utc::now();
    for r in &recs {
        store.insert_admin_audit(r).await.expect("insert");
    }
    let after = Utc::now();
    let all = store
        .list_admin_audit(&AuditFilter::default())
        .await
        .expect("list");
    assert_eq!(all.len(), recs.len());
    for (got, want) in all.iter().zip(recs.iter().rev()) {
        assert_eq!(
            (
                &got.actor,
                &got.method,
                &got.path,
                got.status,
                got.duration_ms
            ),
            (
                &want.actor,
                &want.method,
                &want.path,
                want.status,
                want.duration_ms
            )
        );
        assert_eq!(
            (
                &got.request_id,
                &got.remote_addr,
                &got.user_agent,
                &got.tenant_id
            ),
            (
                &want.request_id,
                &want.remote_addr,
                &want.user_agent,
                &want.tenant_id
            )
        );
        assert_between(got.created_at, before, after, "created_at");
    }
    assert!(all
        .windows(2)
        .all(|w| w[0].id > w[1].id && w[0].created_at >= w[1].created_at));

    let list = |f: AuditFilter| async move {
        store
            .list_admin_audit(&f)
            .await
            .expect("list")
            .into_iter()
            .map(|r| r.id)
            .collect::<Vec<_>>()
    };
    let id = |i: usize| all[recs.len() - 1 - i].id;
    let f = AuditFilter::default;
    assert_eq!(
        list(AuditFilter {
            actor: "alice".into(),
            ..f()
        })
        .await,
        [id(3), id(1)]
    );
    assert_eq!(
        list(AuditFilter {
            method: "DELETE".into(),
            ..f()
        })
        .await,
        [id(2)]
    );
    let path = "/api/v1/admin/audit".to_string();
    assert_eq!(
        list(AuditFilter {
            path: path.clone(),
            ..f()
        })
        .await,
        [id(4), id(3), id(0)]
    );
    assert_eq!(
        list(AuditFilter {
            status: Some(404),
            ..f()
        })
        .await,
        [id(2)]
    );
    let both = AuditFilter {
        actor: "admin".into(),
        path,
        status: Some(200),
        ..f()
    };
    assert_eq!(list(both).await, [id(4), id(0)]);
    assert_eq!(list(AuditFilter { limit: 2, ..f() }).await, [id(4), id(3)]);
    assert!(list(AuditFilter {
        actor: "nobody".into(),
        ..f()
    })
    .await
    .is_empty());
}

pub async fn audit_prune(store: &dyn Store) {
    assert_eq!(
        store
            .prune_admin_audit(Utc::now())
            .await
            .expect("prune empty"),
        0
    );
    for status in [200, 201] {
        store
            .insert_admin_audit(&audit("old", "GET", "/x", status))
            .await
            .expect("insert");
    }
    tokio::time::sleep(Duration::from_millis(2)).await;
    let cut = Utc::now();
    tokio::time::sleep(Duration::from_millis(2)).await;
    store
        .insert_admin_audit(&audit("new", "GET", "/x", 202))
        .await
        .expect("insert");
    assert_eq!(store.prune_admin_audit(cut).await.expect("prune"), 2);
    let left = store
        .list_admin_audit(&AuditFilter::default())
        .await
        .expect("list");
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].actor, "new");
    assert_eq!(store.prune_admin_audit(cut).await.expect("prune again"), 0);
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
