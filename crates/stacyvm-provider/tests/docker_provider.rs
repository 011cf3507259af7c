//! The docker provider against a real daemon: lifecycle, exec, files, logs, stats.
#![cfg(feature = "docker")]
#![allow(clippy::unwrap_used)]

mod docker_support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use docker_support::*;
use stacyvm_provider::{DockerConfig, DockerProvider, ExecRequest, Provider, ProviderError};
use stacyvm_types::{SandboxState, StreamKind};

#[tokio::test]
async fn lifecycle_labels_and_reconciliation() {
    let p = provider(DockerConfig::default()).await;
    let (id, _guard) = spawn(&p, IMAGE).await;
    assert_eq!(p.status(&id).await.unwrap(), SandboxState::Running);

    let info = client().inspect_container(&id, None).await.unwrap();
    let labels = info.config.as_ref().unwrap().labels.clone().unwrap();
    assert_eq!(labels["stacyvm.managed"], "true");
    assert_eq!(labels["stacyvm.sandbox_id"], id);
    assert_eq!(
        labels[&format!("traefik.http.routers.{id}.rule")],
        format!("Host(`3000-{id}.localhost`)")
    );
    assert_eq!(
        labels[&format!("traefik.http.services.{id}.loadbalancer.server.port")],
        "3000"
    );
    let host = info.host_config.unwrap();
    assert_eq!(host.cap_drop.unwrap(), ["ALL"]);
    assert_eq!(host.pids_limit, Some(256));
    assert_eq!(host.memory, Some(256 << 20));
    assert_eq!(host.nano_cpus, Some(1_000_000_000));
    assert!(host
        .security_opt
        .unwrap()
        .contains(&"no-new-privileges:true".to_string()));
    let volumes: Vec<String> = info
        .mounts
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| m.name)
        .collect();
    assert_eq!(volumes.len(), 1, "one anonymous volume for /workspace");

    let runtimes = p.list_runtimes().await.unwrap().unwrap();
    let me = runtimes.iter().find(|r| r.runtime_id == id).unwrap();
    assert_eq!(me.sandbox_id.as_deref(), Some(id.as_str()));
    assert!(me.running);
    assert_eq!(me.image, IMAGE);

    p.destroy(&id).await.unwrap();
    assert_eq!(p.status(&id).await.unwrap(), SandboxState::Destroyed);
    assert!(matches!(
        p.destroy(&id).await,
        Err(ProviderError::SandboxNotFound(_))
    ));
    let runtimes = p.list_runtimes().await.unwrap().unwrap();
    assert!(runtimes.iter().all(|r| r.runtime_id != id));
    for v in volumes {
        assert!(
            client().inspect_volume(&v).await.is_err(),
            "volume {v} left behind"
        );
    }
    assert!(matches!(
        p.status("sb-nothere").await,
        Err(ProviderError::SandboxNotFound(_))
    ));
    assert!(p.health().await.is_ok());
}

#[tokio::test]
async fn foreign_containers_are_not_ours() {
    let p = provider(DockerConfig::default()).await;
    let name = new_id();
    let _guard = Cleanup(name.clone());
    let opts = bollard::query_parameters::CreateContainerOptionsBuilder::default()
        .name(&name)
        .build();
    let body = bollard::models::ContainerCreateBody {
        image: Some(IMAGE.into()),
        cmd: Some(vec!["sleep".into(), "60".into()]),
        ..Default::default()
    };
    client().create_container(Some(opts), body).await.unwrap();
    client().start_container(&name, None).await.unwrap();
    assert!(matches!(
        p.status(&name).await,
        Err(ProviderError::SandboxNotFound(_))
    ));
    assert!(matches!(
        p.destroy(&name).await,
        Err(ProviderError::SandboxNotFound(_))
    ));
    let r = exec_req(&p, &name, argv("true", &[])).await;
    assert!(matches!(r, Err(ProviderError::SandboxNotFound(_))));
    // Path tricks in the id never reach the Engine API.
    assert!(matches!(
        p.status("../containers/x").await,
        Err(ProviderError::SandboxNotFound(_))
    ));
    // A taken name is refused, not adopted.
    let taken = p.spawn(&spec(&name, IMAGE)).await;
    assert!(
        matches!(taken, Err(ProviderError::InvalidInput(_))),
        "{taken:?}"
    );
}

/// Two installations on one daemon (hardening finding 12): each lists its own containers and
/// unlabelled ones (older builds, workers), never the other's; a provider without a cluster
/// (a worker) lists only unlabelled ones.
#[tokio::test]
async fn clusters_list_only_their_own_and_unlabelled_containers() {
    let in_cluster = |c: &str| DockerConfig {
        cluster: Some(c.to_string()),
        ..DockerConfig::default()
    };
    let a = provider(in_cluster("aaaaaaaaaaaaaaaa")).await;
    let b = provider(in_cluster("bbbbbbbbbbbbbbbb")).await;
    let plain = provider(DockerConfig::default()).await;
    let (ida, _ga) = spawn(&a, IMAGE).await;
    let (idb, _gb) = spawn(&b, IMAGE).await;
    let (idp, _gp) = spawn(&plain, IMAGE).await;
    let labels = client().inspect_container(&ida, None).await.unwrap();
    let labels = labels.config.unwrap().labels.unwrap();
    assert_eq!(labels["stacyvm.cluster"], "aaaaaaaaaaaaaaaa");
    let (la, lb, lp) = (listed(&a).await, listed(&b).await, listed(&plain).await);
    assert!(la.contains(&ida) && la.contains(&idp) && !la.contains(&idb));
    assert!(lb.contains(&idb) && lb.contains(&idp) && !lb.contains(&ida));
    assert!(lp.contains(&idp) && !lp.contains(&ida) && !lp.contains(&idb));
}

async fn listed(p: &DockerProvider) -> std::collections::HashSet<String> {
    let l = p.list_runtimes().await.unwrap().unwrap();
    l.into_iter().map(|r| r.runtime_id).collect()
}

#[tokio::test]
async fn exec_modes_env_workdir_and_exit_codes() {
    let p = provider(DockerConfig::default()).await;
    let (id, _guard) = spawn(&p, IMAGE).await;

    let mut req = ExecRequest {
        command: "printf '%s|' \"$FOO\" \"$(pwd)\"; echo oops >&2; exit 3".into(),
        ..Default::default()
    };
    req.env.insert("FOO".into(), "bar baz".into());
    let o = exec_req(&p, &id, req).await.unwrap();
    assert_eq!(o.code, 3);
    assert_eq!(o.stdout, "bar baz|/workspace|");
    assert_eq!(o.stderr, "oops\n");

    // Shell mode quotes args; argv mode passes them literally.
    let req = ExecRequest {
        command: "printf '[%s]'".into(),
        args: vec!["a b".into(), "it's".into(), "$HOME".into()],
        ..Default::default()
    };
    assert_eq!(
        exec_req(&p, &id, req).await.unwrap().stdout,
        "[a b][it's][$HOME]"
    );
    let o = exec_req(&p, &id, argv("printf", &["[%s]", "x y", "*"]))
        .await
        .unwrap();
    assert_eq!((o.code, o.stdout.as_str()), (0, "[x y][*]"));

    let mut req = argv("pwd", &[]);
    req.workdir = Some("/tmp".into());
    assert_eq!(exec_req(&p, &id, req).await.unwrap().stdout, "/tmp\n");
    let mut req = argv("pwd", &[]);
    req.workdir = Some("/nope".into());
    assert!(matches!(
        exec_req(&p, &id, req).await,
        Err(ProviderError::InvalidInput(_))
    ));

    let o = exec_req(&p, &id, argv("no-such-cmd", &[])).await.unwrap();
    assert_eq!(o.code, 127);
    assert!(o.stderr.contains("command not found"), "{o:?}");
    let o = sh(&p, &id, "no-such-cmd").await;
    assert_eq!(o.code, 127);
    assert!(matches!(
        exec_req(&p, &id, argv("  ", &[])).await,
        Err(ProviderError::InvalidInput(_))
    ));

    // Large output arrives complete and in order.
    let o = sh(&p, &id, "seq 1 50000").await;
    let expected: String = (1..=50000).map(|i| format!("{i}\n")).collect();
    assert_eq!(o.stdout, expected);
}

#[tokio::test]
async fn output_streams_live() {
    let p = provider(DockerConfig::default()).await;
    let (id, _guard) = spawn(&p, IMAGE).await;
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    let req = ExecRequest {
        command: "echo first; sleep 2; echo second >&2".into(),
        ..Default::default()
    };
    let started = Instant::now();
    let run = {
        let id = id.clone();
        let p = std::sync::Arc::new(p);
        let p2 = p.clone();
        (tokio::spawn(async move { p2.exec(&id, req, tx).await }), p)
    };
    let first = rx.recv().await.unwrap();
    assert_eq!(first.stream, StreamKind::Stdout);
    assert_eq!(first.data, b"first\n");
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "first chunk was not live"
    );
    let second = rx.recv().await.unwrap();
    assert_eq!(second.stream, StreamKind::Stderr);
    assert_eq!(run.0.await.unwrap().unwrap(), 0);
    assert!(started.elapsed() >= Duration::from_secs(2));
}

#[tokio::test]
async fn timeout_kills_the_command_not_the_sandbox() {
    let p = provider(DockerConfig::default()).await;
    let (id, _guard) = spawn(&p, IMAGE).await;
    let req = ExecRequest {
        // A child in its own session, a grandchild, and the foreground sleep.
        command: "setsid sleep 301 & (sleep 302 &) ; echo started; sleep 303".into(),
        timeout: Some(Duration::from_secs(1)),
        ..Default::default()
    };
    let t = Instant::now();
    let r = exec_req(&p, &id, req).await;
    assert!(matches!(r, Err(ProviderError::Timeout)), "{r:?}");
    assert!(
        t.elapsed() < Duration::from_secs(8),
        "took {:?}",
        t.elapsed()
    );
    assert_eq!(p.status(&id).await.unwrap(), SandboxState::Running);
    let ps = sh(&p, &id, "ps -o args").await.stdout;
    assert!(!ps.contains("sleep 30"), "leftovers: {ps}");

    // Background work is also taken down when the command itself ends.
    let t = Instant::now();
    let o = sh(&p, &id, "sleep 304 & echo bg").await;
    assert_eq!((o.code, o.stdout.as_str()), (0, "bg\n"));
    assert!(t.elapsed() < Duration::from_secs(8));
    let ps = sh(&p, &id, "ps -o args").await.stdout;
    assert!(!ps.contains("sleep 304"), "leftovers: {ps}");
}

#[tokio::test]
async fn a_vanished_caller_kills_the_command() {
    let p = provider(DockerConfig::default()).await;
    let (id, _guard) = spawn(&p, IMAGE).await;
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    let req = ExecRequest {
        command: "echo go; sleep 305".into(),
        ..Default::default()
    };
    let p = std::sync::Arc::new(p);
    let run = {
        let (p, id) = (p.clone(), id.clone());
        tokio::spawn(async move { p.exec(&id, req, tx).await })
    };
    assert_eq!(rx.recv().await.unwrap().data, b"go\n");
    drop(rx);
    let r = tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("exec did not notice the caller left")
        .unwrap();
    assert!(r.is_err(), "{r:?}");
    let ps = sh(p.as_ref(), &id, "ps -o args").await.stdout;
    assert!(!ps.contains("sleep 305"), "left running: {ps}");
}

#[tokio::test]
async fn docker_like_output_is_not_mistaken_for_a_start_failure() {
    let p = provider(DockerConfig::default()).await;
    let (id, _guard) = spawn(&p, IMAGE).await;
    let o = sh(
        &p,
        &id,
        "echo 'OCI runtime exec failed: not really'; sleep 0.3; echo after; exit 126",
    )
    .await;
    assert_eq!(o.code, 126);
    assert_eq!(o.stdout, "OCI runtime exec failed: not really\nafter\n");
    let o = sh(&p, &id, "printf 'OCI runtime exec failed'; exit 4").await;
    assert_eq!((o.code, o.stdout.as_str()), (4, "OCI runtime exec failed"));
}

#[tokio::test]
async fn argv_mode_needs_no_shell() {
    let p = provider(DockerConfig::default()).await;
    noshell_image().await;
    let (id, _guard) = spawn(&p, NOSHELL_IMAGE).await;
    let o = exec_req(&p, &id, argv("echo", &["no", "shell"]))
        .await
        .unwrap();
    assert_eq!((o.code, o.stdout.as_str()), (0, "no shell\n"));
    assert_eq!(
        sh(&p, &id, "echo hi").await.code,
        127,
        "there is no sh to run"
    );
    p.write_file(&id, "/workspace/a.txt", Bytes::from_static(b"hi"), None)
        .await
        .unwrap();
    assert_eq!(
        &p.read_file(&id, "/workspace/a.txt").await.unwrap()[..],
        b"hi"
    );
    // A timeout still ends the call, though nothing in the sandbox can sweep.
    let mut req = argv("sleep", &["30"]);
    req.timeout = Some(Duration::from_millis(500));
    assert!(matches!(
        exec_req(&p, &id, req).await,
        Err(ProviderError::Timeout)
    ));
    p.destroy(&id).await.unwrap();
}

#[tokio::test]
async fn missing_image_is_image_not_found() {
    let cfg = DockerConfig {
        pull_timeout: Duration::from_secs(20),
        ..Default::default()
    };
    let p = provider(cfg).await;
    let id = new_id();
    let _guard = Cleanup(id.clone());
    let t = Instant::now();
    let r = p
        .spawn(&spec(&id, "stacyvm-test/does-not-exist:nope"))
        .await;
    match r {
        Err(ProviderError::ImageNotFound(msg)) => {
            assert!(msg.contains("stacyvm-test/does-not-exist:nope"), "{msg}")
        }
        other => panic!("expected ImageNotFound, got {other:?}"),
    }
    assert!(t.elapsed() < Duration::from_secs(30));
    assert!(matches!(
        p.status(&id).await,
        Err(ProviderError::SandboxNotFound(_))
    ));
}

#[tokio::test]
async fn logs_and_stats() {
    let p = provider(DockerConfig::default()).await;
    let (id, _guard) = spawn(&p, IMAGE).await;
    assert!(p.logs(&id, 10).await.unwrap().len() <= 10);
    let st = p.stats(&id).await.unwrap().unwrap();
    assert_eq!(st.mem_limit_bytes, 256 << 20);
    assert!(st.mem_bytes > 0);
    assert!(st.cpu_pct >= 0.0);
    assert!(matches!(
        p.logs("sb-nothere", 5).await,
        Err(ProviderError::SandboxNotFound(_))
    ));
}

/// A snapshot image whose record was never written (a crash between the two) is removed by
/// the sweep once past the grace, and a recorded one is kept.
#[tokio::test]
async fn stray_snapshot_images_are_swept() {
    let p = provider(DockerConfig::default()).await;
    let (id, _guard) = spawn(&p, IMAGE).await;
    let (kept, stray) = (
        format!("snap-k{}", &new_id()[3..]),
        format!("snap-s{}", &new_id()[3..]),
    );
    p.snapshot(&id, &kept).await.unwrap();
    p.snapshot(&id, &stray).await.unwrap();
    let exists = |sid: String| async move {
        client()
            .inspect_image(&format!("stacyvm-snap:{sid}"))
            .await
            .is_ok()
    };
    assert!(exists(kept.clone()).await && exists(stray.clone()).await);
    // Within the grace nothing goes: a snapshot is made before its record.
    let only_kept = std::collections::HashSet::from([kept.clone()]);
    let none = p
        .sweep_snapshots(&only_kept, Duration::from_secs(3600))
        .await
        .unwrap();
    assert!(none.is_empty(), "{none:?}");
    assert!(exists(stray.clone()).await);
    // A crash mid-snapshot leaves its helper container: one made as the provider makes them.
    let half = format!("snap-h{}", &new_id()[3..]);
    let helper = client()
        .create_container(
            None::<bollard::query_parameters::CreateContainerOptions>,
            bollard::models::ContainerCreateBody {
                image: Some(IMAGE.into()),
                cmd: Some(vec!["true".into()]),
                labels: Some(std::collections::HashMap::from([(
                    "stacyvm.snapshot-helper".to_string(),
                    half.clone(),
                )])),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .id;
    // A sandbox spawned from the stray snapshot (a fork whose snapshot is gone): it must
    // not inherit the helper label in a form the sweep takes for a helper.
    let stray_image = client()
        .inspect_image(&format!("stacyvm-snap:{stray}"))
        .await
        .unwrap()
        .id
        .unwrap();
    let fork = new_id();
    let _fork_guard = Cleanup(fork.clone());
    p.spawn_from_snapshot(&spec(&fork, IMAGE), &[], &stray)
        .await
        .unwrap();
    let fork_labels = client()
        .inspect_container(&fork, None)
        .await
        .unwrap()
        .config
        .and_then(|c| c.labels)
        .unwrap_or_default();
    assert_eq!(
        fork_labels
            .get("stacyvm.snapshot-helper")
            .map(String::as_str),
        Some("")
    );
    assert_eq!(fork_labels.get("stacyvm.sandbox_id"), Some(&fork));
    // Other tests take snapshots at the same time: every tag and helper there now but ours
    // is "known", and the grace protects any made from here on.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let helpers = client()
        .list_containers(Some(
            bollard::query_parameters::ListContainersOptionsBuilder::default()
                .all(true)
                .build(),
        ))
        .await
        .unwrap();
    let mut known: std::collections::HashSet<String> = client()
        .list_images(None::<bollard::query_parameters::ListImagesOptions>)
        .await
        .unwrap()
        .into_iter()
        .flat_map(|i| i.repo_tags)
        .filter_map(|t| t.strip_prefix("stacyvm-snap:").map(str::to_string))
        .collect();
    known.extend(
        helpers
            .into_iter()
            .filter_map(|c| c.labels?.get("stacyvm.snapshot-helper").cloned()),
    );
    known.remove(&stray);
    known.remove(&half);
    let removed = p
        .sweep_snapshots(&known, Duration::from_secs(2))
        .await
        .unwrap();
    assert!(removed.contains(&format!("helper-{half}")), "{removed:?}");
    assert!(
        client().inspect_container(&helper, None).await.is_err(),
        "the helper container is still there"
    );
    assert!(removed.contains(&stray), "{removed:?}");
    assert!(!removed.contains(&kept), "{removed:?}");
    assert!(
        !exists(stray.clone()).await,
        "the stray snapshot image is still there"
    );
    // Its workspace, kept in a volume of its own (the host-copy path this test runs on).
    assert!(
        client()
            .inspect_volume(&format!("stacyvm-snapws-{stray}"))
            .await
            .is_err(),
        "the stray snapshot's workspace volume is still there"
    );
    assert!(client()
        .inspect_volume(&format!("stacyvm-snapws-{kept}"))
        .await
        .is_ok());
    assert!(exists(kept.clone()).await, "the recorded snapshot went too");
    assert!(
        client().inspect_container(&fork, None).await.is_ok(),
        "the sweep removed a sandbox spawned from a snapshot"
    );
    assert!(!removed.contains(&format!("helper-{stray}")), "{removed:?}");
    // The stray's tag is gone but its image stays while the fork uses it; once the fork is
    // gone, the next sweep removes the untagged image.
    assert!(client().inspect_image(&stray_image).await.is_ok());
    p.destroy(&fork).await.unwrap();
    let again = p
        .sweep_snapshots(&known, Duration::from_secs(2))
        .await
        .unwrap();
    assert!(again.contains(&format!("untagged-{stray}")), "{again:?}");
    assert!(
        client().inspect_image(&stray_image).await.is_err(),
        "the untagged snapshot image outlived its last user"
    );
    p.delete_snapshot(&kept).await.unwrap();
    assert!(!exists(kept.clone()).await);
    assert!(client()
        .inspect_volume(&format!("stacyvm-snapws-{kept}"))
        .await
        .is_err());
}

/// Snapshots where the Docker host's files are not visible (a remote daemon, a server in a
/// container) go through the archive API and a helper image: the same conformance check, and
/// no workspace volume is made.
#[tokio::test]
async fn snapshots_by_archive_restore_files() {
    let p = provider(DockerConfig {
        snapshot_by_archive: true,
        ..DockerConfig::default()
    })
    .await;
    stacyvm_provider::conformance::snapshot_restores_files(&p, IMAGE)
        .await
        .unwrap();
    let (id, _guard) = spawn(&p, IMAGE).await;
    let sid = format!("snap-a{}", &new_id()[3..]);
    p.snapshot(&id, &sid).await.unwrap();
    let labels = client()
        .inspect_image(&format!("stacyvm-snap:{sid}"))
        .await
        .unwrap()
        .config
        .and_then(|c| c.labels)
        .unwrap_or_default();
    assert!(
        !labels.contains_key("stacyvm.snapshot-workspace"),
        "{labels:?}"
    );
    assert!(client()
        .inspect_volume(&format!("stacyvm-snapws-{sid}"))
        .await
        .is_err());
    p.delete_snapshot(&sid).await.unwrap();
    // A snapshot kept in a volume (made on the host) restored without the host's files: the
    // archive API reads the volume through a never-started container.
    let host = provider(DockerConfig::default()).await;
    sh(&host, &id, "echo kept > /workspace/k.txt").await;
    let sid = format!("snap-v{}", &new_id()[3..]);
    host.snapshot(&id, &sid).await.unwrap();
    let copy = new_id();
    let _copy_guard = Cleanup(copy.clone());
    p.spawn_from_snapshot(&spec(&copy, IMAGE), &[], &sid)
        .await
        .unwrap();
    assert_eq!(sh(&p, &copy, "cat /workspace/k.txt").await.stdout, "kept\n");
    host.delete_snapshot(&sid).await.unwrap();
}
