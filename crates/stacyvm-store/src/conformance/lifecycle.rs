//! Pause, resume, lifecycle fields and activity of sandbox records (docs/state.md).

use chrono::Utc;
use stacyvm_types::{GoDuration, Lifecycle, OnExpire, SandboxState};

use super::{err, insert, sandbox, secs, t0};
use crate::{InsertLimits, Store, StoreError};

/// `on_expire`, `idle_timeout`, `paused_at` and `last_active_at` are stored as given, to the
/// nanosecond, through both inserts.
pub async fn sandbox_lifecycle_round_trip(store: &dyn Store) {
    let mut sb = sandbox("sb-0000l001", "alice", SandboxState::Paused, t0());
    sb.lifecycle = Lifecycle {
        on_expire: OnExpire::Pause,
        idle_timeout: Some(GoDuration(90_000_000_001)),
    };
    sb.paused_at = Some(t0() + secs(3));
    sb.last_active_at = Some(t0() + chrono::Duration::nanoseconds(7));
    insert(store, &sb).await;
    assert_eq!(store.get_sandbox(&sb.id).await.expect("get"), sb);

    let mut limited = sandbox("sb-0000l002", "bob", SandboxState::Creating, t0());
    limited.lifecycle.idle_timeout = Some(GoDuration::from_secs(5));
    let limits = InsertLimits {
        created_by: "cp-1",
        max_total: 10,
        max_owner: 10,
        max_worker: 0,
    };
    store
        .insert_sandbox_limited(&limited, &limits)
        .await
        .expect("limited insert");
    assert_eq!(store.get_sandbox(&limited.id).await.expect("get"), limited);
}

/// Pause and resume are compare-and-sets, idempotent in their target state; a paused record
/// is neither expired by its TTL nor counted as running, and is counted as paused.
pub async fn sandbox_pause_resume(store: &dyn Store) {
    let now = Utc::now();
    let mut sb = sandbox("sb-0000p001", "alice", SandboxState::Running, now);
    sb.expires_at = now - secs(1);
    insert(store, &sb).await;
    let other = sandbox("sb-0000p002", "alice", SandboxState::Running, now);
    insert(store, &other).await;
    assert_eq!(store.count_paused_sandboxes().await.expect("count"), 0);

    let at = now + chrono::Duration::nanoseconds(5);
    let paused = store.pause_sandbox(&sb.id, at).await.expect("pause");
    assert_eq!(paused.state, SandboxState::Paused);
    assert_eq!(paused.paused_at, Some(at));
    assert_eq!(
        paused.expires_at, sb.expires_at,
        "pausing keeps the TTL deadline"
    );
    let again = store
        .pause_sandbox(&sb.id, at + secs(9))
        .await
        .expect("pause again");
    assert_eq!(again.paused_at, Some(at), "a second pause changes nothing");

    assert_eq!(store.count_paused_sandboxes().await.expect("count"), 1);
    let counts = store
        .count_active_sandboxes(Some("alice"))
        .await
        .expect("active");
    assert_eq!(
        (counts.total, counts.owner),
        (1, 1),
        "paused is not running"
    );
    let expired = store
        .list_expired_sandboxes(now + secs(3600))
        .await
        .expect("expired");
    assert!(
        expired.iter().all(|s| s.id != sb.id),
        "a paused record is not expired by its TTL"
    );
    assert!(matches!(
        err(
            store.set_sandbox_state(&sb.id, SandboxState::Expired).await,
            "paused to expired"
        ),
        StoreError::InvalidTransition(_)
    ));

    let new_expiry = now + secs(600);
    let resumed = store
        .resume_sandbox(&sb.id, new_expiry)
        .await
        .expect("resume");
    assert_eq!(resumed.state, SandboxState::Running);
    assert_eq!(resumed.paused_at, None);
    assert_eq!(resumed.expires_at, new_expiry);
    let again = store
        .resume_sandbox(&sb.id, now + secs(9999))
        .await
        .expect("resume again");
    assert_eq!(
        again.expires_at, new_expiry,
        "a second resume changes nothing"
    );

    // Only running records pause; a destroyed one neither pauses nor resumes.
    store
        .set_sandbox_state(&other.id, SandboxState::Destroyed)
        .await
        .expect("destroy");
    assert!(matches!(
        err(store.pause_sandbox(&other.id, now).await, "pause destroyed"),
        StoreError::InvalidTransition(_) | StoreError::Conflict(_)
    ));
    assert!(matches!(
        err(
            store.resume_sandbox(&other.id, now).await,
            "resume destroyed"
        ),
        StoreError::InvalidTransition(_) | StoreError::Conflict(_)
    ));
    assert!(err(
        store.pause_sandbox(&"sb-absent".into(), now).await,
        "pause absent"
    )
    .is_not_found());
}

/// Activity only moves forward and never touches a destroyed or absent record.
pub async fn sandbox_touch(store: &dyn Store) {
    let now = Utc::now();
    let sb = sandbox("sb-0000t001", "", SandboxState::Running, now);
    insert(store, &sb).await;
    store
        .touch_sandbox(&sb.id, now + secs(10))
        .await
        .expect("touch");
    store
        .touch_sandbox(&sb.id, now + secs(5))
        .await
        .expect("older touch");
    let got = store.get_sandbox(&sb.id).await.expect("get");
    assert_eq!(got.last_active_at, Some(now + secs(10)));
    assert_eq!(got.updated_at, sb.updated_at, "activity is not an update");
    store
        .touch_sandbox(&"sb-absent".into(), now)
        .await
        .expect("absent is ignored");
}
