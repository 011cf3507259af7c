//! Snapshot records (sandbox-model.md §2).

use super::{assert_conflict, assert_not_found, secs, t0};
use crate::{Snapshot, Store};

fn snapshot(id: &str, at: i64) -> Snapshot {
    Snapshot {
        id: id.into(),
        name: format!("name of {id}"),
        sandbox_id: "sb-snap0001".into(),
        provider: "mock".into(),
        image: "alpine:3.20".into(),
        kind: "filesystem".into(),
        size_bytes: 1 << 33,
        worker_id: "local".into(),
        created_at: t0() + secs(at),
    }
}

pub async fn snapshots_crud(store: &dyn Store) {
    assert!(store.list_snapshots().await.expect("list").is_empty());
    for (id, at) in [
        ("snap-0000000a", 1),
        ("snap-0000000c", 3),
        ("snap-0000000b", 2),
    ] {
        store
            .insert_snapshot(&snapshot(id, at))
            .await
            .expect("insert");
    }
    assert_eq!(
        store.get_snapshot("snap-0000000b").await.expect("get"),
        snapshot("snap-0000000b", 2)
    );
    assert_conflict(
        store.insert_snapshot(&snapshot("snap-0000000a", 9)).await,
        "taken id",
    );
    let ids: Vec<String> = store
        .list_snapshots()
        .await
        .expect("list")
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(ids, ["snap-0000000c", "snap-0000000b", "snap-0000000a"]);
    assert_not_found(store.get_snapshot("snap-nope").await, "snapshot", "unknown");
    store
        .delete_snapshot("snap-0000000b")
        .await
        .expect("delete");
    assert_not_found(
        store.get_snapshot("snap-0000000b").await,
        "snapshot",
        "deleted",
    );
    assert_not_found(
        store.delete_snapshot("snap-0000000b").await,
        "snapshot",
        "again",
    );
}
