//! The contract every [`Store`] backend must meet, as executable checks. Each `pub async fn`
//! takes a handle on a fresh, empty database and panics on the first violation.
//!
//! A backend runs the whole suite, one test per check, with
//! [`store_conformance_tests!`](crate::store_conformance_tests), given an async fn returning a
//! [`Backend`]. The calling crate needs `tokio` (with `macros` and `rt-multi-thread`).

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Arc;

use chrono::{TimeZone, Utc};
use stacyvm_types::{Placement, Sandbox, SandboxState, Timestamp};

use crate::{Store, StoreError};

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
            sandbox_preview_access,
            sandbox_insert_conflicts,
            sandbox_get_missing,
            sandbox_list_live_newest_first,
            sandbox_local_runtime_ids,
            sandbox_state_transitions,
            sandbox_set_running,
            sandbox_set_expiry,
            sandbox_list_expired,
            sandbox_count_active,
            sandbox_insert_limited,
            sandbox_list_creating,
            sandbox_lifecycle_round_trip,
            sandbox_pause_resume,
            sandbox_touch,
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
            lease_prune,
            audit_filter_and_order,
            audit_prune,
            e2b_sandbox_round_trip,
            volumes_crud,
            volume_mount_rules,
            snapshots_crud,
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

        /// One cluster id per database, the same on every handle, another on another database.
        #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn cluster_id() {
            let backend = $fresh().await;
            let other = $fresh().await;
            let stores = vec![
                $crate::conformance::Backend::connect(&backend).await,
                $crate::conformance::Backend::connect(&backend).await,
                $crate::conformance::Backend::connect(&other).await,
            ];
            $crate::conformance::cluster_id(&stores).await;
        }

        /// Several handles on one database admitting under one limit at once.
        #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn admission_concurrency() {
            let backend = $fresh().await;
            let stores = vec![
                $crate::conformance::Backend::connect(&backend).await,
                $crate::conformance::Backend::connect(&backend).await,
            ];
            $crate::conformance::admission_concurrency(&stores).await;
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

mod admission;
mod e2b;
mod leases;
mod lifecycle;
mod records;
mod sandboxes;
mod snapshots;
mod volumes;

pub use admission::*;
pub use e2b::*;
pub use leases::*;
pub use lifecycle::*;
pub use records::*;
pub use sandboxes::*;
pub use snapshots::*;
pub use volumes::*;

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

/// A sandbox record of `owner` in `state`, created at `created_at` with a 30-minute TTL: the
/// record the checks insert, and a fixture for other crates' tests.
pub fn sandbox(id: &str, owner: &str, state: SandboxState, created_at: Timestamp) -> Sandbox {
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
        vm_id: None,
        placement: Placement::Local,
        tenant_id: String::new(),
        preview_domain: "localhost".into(),
        created_at,
        expires_at: created_at + secs(1800),
        updated_at: created_at,
        lifecycle: Default::default(),
        paused_at: None,
        last_active_at: None,
        preview_token: stacyvm_types::PreviewToken::from_stored(format!("token-of-{id}")),
        public_preview: false,
    }
}

/// A running sandbox of `alice`, created now: the record the backends' own tests insert.
#[cfg(test)]
pub(crate) fn running(id: &str) -> Sandbox {
    sandbox(id, "alice", SandboxState::Running, Utc::now())
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

/// `stores[0]` and `stores[1]` are handles on one database, `stores[2]` on another.
pub async fn cluster_id(stores: &[std::sync::Arc<dyn Store>]) {
    let a = stores[0].cluster_id().await.expect("cluster id");
    assert_eq!(a.len(), 16, "{a}");
    assert!(a.chars().all(|c| c.is_ascii_hexdigit()), "{a}");
    assert_eq!(stores[0].cluster_id().await.expect("again"), a, "stable");
    assert_eq!(stores[1].cluster_id().await.expect("second handle"), a);
    assert_ne!(stores[2].cluster_id().await.expect("other database"), a);
}
