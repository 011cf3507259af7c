//! Docker's process data plane: the agent bind-mounted into the container, reached with
//! `docker exec … --bridge`. Processes outlive the provider object (a restarted control plane
//! finds them), run as the container's user, work on a read-only root, and a container created
//! without the agent answers `Unavailable`.
#![cfg(feature = "docker")]
#![allow(clippy::unwrap_used)]

mod docker_support;

use docker_support::{provider, spawn, IMAGE, NOBODY_IMAGE};
use stacyvm_provider::conformance::{drain, proc_sh};
use stacyvm_provider::{DockerConfig, Provider, ProviderError};
use stacyvm_types::{ProcessState, Signal};

/// A new provider object (as after a control-plane restart) finds the agent still running
/// and the process still listed, and reads its output from the start again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_outlive_the_provider() {
    let a = provider(DockerConfig::default()).await;
    let (id, _guard) = spawn(&a, IMAGE).await;
    let info = a
        .process_start(&id, proc_sh("echo before; sleep 60"))
        .await
        .unwrap();
    let mut spec = proc_sh("cat");
    spec.stdin = true;
    drop(a);
    let b = provider(DockerConfig::default()).await;
    let list = b.process_list(&id).await.unwrap();
    assert!(
        list.iter()
            .any(|p| p.pid == info.pid && p.state == ProcessState::Running),
        "{list:?}"
    );
    let first = drain(b.process_output(&id, info.pid, 0, false).await.unwrap())
        .await
        .unwrap();
    assert_eq!(first.stdout, b"before\n");
    // A process started without stdin cannot be fed; kill it and check the exit.
    b.process_signal(&id, info.pid, Signal::Kill).await.unwrap();
    let out = drain(b.process_output(&id, info.pid, 0, true).await.unwrap())
        .await
        .unwrap();
    assert_eq!(out.exit, Some((137, Some(Signal::Kill))));
    let cat = b.process_start(&id, spec).await.unwrap();
    b.process_stdin(&id, cat.pid, bytes::Bytes::from_static(b"x\0y"), true)
        .await
        .unwrap();
    let out = drain(b.process_output(&id, cat.pid, 0, true).await.unwrap())
        .await
        .unwrap();
    assert_eq!(out.stdout, b"x\0y");
}

/// Processes run as the container's user, also with a read-only root and no network.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_run_as_the_container_user_on_a_read_only_root() {
    docker_support::nobody_image().await;
    let p = provider(DockerConfig {
        read_only_rootfs: true,
        network_mode: "none".into(),
        ..Default::default()
    })
    .await;
    let (id, _guard) = spawn(&p, NOBODY_IMAGE).await;
    let info = p.process_start(&id, proc_sh("id -un; pwd")).await.unwrap();
    let out = drain(p.process_output(&id, info.pid, 0, true).await.unwrap())
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "nobody\n/workspace\n");
    assert_eq!(out.exit, Some((0, None)));
}

/// A container created without the agent (an older build, or no agent binary then) says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_without_the_agent_is_unavailable() {
    let missing = tempfile::tempdir().unwrap();
    let old = provider(DockerConfig {
        agent_path: missing.path().join("none").to_string_lossy().into_owned(),
        ..Default::default()
    })
    .await;
    let (id, _guard) = spawn(&old, IMAGE).await;
    let r = old.process_list(&id).await;
    assert!(
        matches!(&r, Err(ProviderError::Unavailable(m)) if m.contains("stacyvm-agent")),
        "{r:?}"
    );
    let new = provider(DockerConfig::default()).await;
    let r = new.process_list(&id).await;
    assert!(
        matches!(&r, Err(ProviderError::Unavailable(m)) if m.contains("recreate")),
        "{r:?}"
    );
    // Exec is unaffected.
    assert_eq!(
        docker_support::sh(&new, &id, "echo ok").await.stdout,
        "ok\n"
    );
}
