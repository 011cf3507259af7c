//! Volumes and their mounts (sandbox-model.md §2).

use stacyvm_types::SandboxState;

use super::{assert_conflict, assert_not_found, insert, sandbox, secs, t0};
use crate::{Store, Volume, VolumeMount};

fn volume(name: &str) -> Volume {
    Volume {
        name: name.into(),
        size_mb: 64,
        provider: "mock".into(),
        worker_id: "local".into(),
        created_at: t0(),
    }
}

fn mount(sb: &str, volume: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        sandbox_id: sb.into(),
        volume: volume.into(),
        mount_path: path.into(),
        read_only,
    }
}

pub async fn volumes_crud(store: &dyn Store) {
    assert!(store.list_volumes().await.expect("list").is_empty());
    for name in ["zeta", "alpha", "mid"] {
        store.insert_volume(&volume(name)).await.expect("insert");
    }
    let other = Volume {
        size_mb: 0,
        provider: "docker".into(),
        worker_id: "w1".into(),
        created_at: t0() + secs(1),
        ..volume("other")
    };
    store.insert_volume(&other).await.expect("insert other");
    assert_eq!(store.get_volume("other").await.expect("get"), other);
    assert_eq!(
        store.get_volume("alpha").await.expect("get"),
        volume("alpha")
    );
    assert_conflict(store.insert_volume(&volume("mid")).await, "taken name");
    let names: Vec<String> = store
        .list_volumes()
        .await
        .expect("list")
        .into_iter()
        .map(|v| v.name)
        .collect();
    assert_eq!(names, ["alpha", "mid", "other", "zeta"]);
    assert_not_found(store.get_volume("nope").await, "volume", "unknown");
    assert_not_found(
        store.delete_volume("nope").await,
        "volume",
        "delete unknown",
    );
    store.delete_volume("mid").await.expect("delete");
    assert_not_found(store.get_volume("mid").await, "volume", "deleted");
    // A deleted name can be taken again.
    store.insert_volume(&volume("mid")).await.expect("again");
}

pub async fn volume_mount_rules(store: &dyn Store) {
    for id in ["sb-vol00001", "sb-vol00002", "sb-vol00003", "sb-vol00004"] {
        insert(store, &sandbox(id, "alice", SandboxState::Running, t0())).await;
    }
    store.insert_volume(&volume("data")).await.expect("insert");
    store.insert_volume(&volume("cache")).await.expect("insert");

    // Unknown volume: nothing of the call is recorded.
    assert_not_found(
        store
            .mount_volumes(
                &"sb-vol00001".into(),
                &[
                    mount("sb-vol00001", "cache", "/cache", false),
                    mount("sb-vol00001", "nope", "/nope", false),
                ],
            )
            .await,
        "volume",
        "unknown volume",
    );
    assert!(store.list_volume_mounts().await.expect("list").is_empty());

    let first = [mount("sb-vol00001", "data", "/data", false)];
    store
        .mount_volumes(&"sb-vol00001".into(), &first)
        .await
        .expect("first read-write");
    // A second read-write mount by another live sandbox is refused; read-only is fine.
    assert_conflict(
        store
            .mount_volumes(
                &"sb-vol00002".into(),
                &[mount("sb-vol00002", "data", "/data", false)],
            )
            .await,
        "second read-write",
    );
    let ro = [mount("sb-vol00003", "data", "/mnt/data", true)];
    store
        .mount_volumes(&"sb-vol00003".into(), &ro)
        .await
        .expect("read-only beside read-write");
    assert_eq!(
        store.list_volume_mounts().await.expect("list"),
        vec![first[0].clone(), ro[0].clone()]
    );

    // In use: the delete is refused and changes nothing.
    assert_conflict(store.delete_volume("data").await, "delete in use");
    store.get_volume("data").await.expect("still there");

    // Once the writer is destroyed, another sandbox may write; destroyed mounts are not listed.
    store
        .set_sandbox_state(&"sb-vol00001".into(), SandboxState::Destroyed)
        .await
        .expect("destroy");
    let second = [mount("sb-vol00004", "data", "/data", false)];
    store
        .mount_volumes(&"sb-vol00004".into(), &second)
        .await
        .expect("read-write after the first writer is gone");
    assert_eq!(
        store.list_volume_mounts().await.expect("list"),
        vec![ro[0].clone(), second[0].clone()]
    );

    for id in ["sb-vol00003", "sb-vol00004"] {
        store
            .set_sandbox_state(&id.into(), SandboxState::Destroyed)
            .await
            .expect("destroy");
    }
    assert!(store.list_volume_mounts().await.expect("list").is_empty());
    store.delete_volume("data").await.expect("delete unused");
    assert_not_found(store.get_volume("data").await, "volume", "deleted");
}
