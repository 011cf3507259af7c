//! The bwrap provider's own behaviour beyond the shared suite: restarts (a new provider adopts
//! the sandboxes and reattaches to their agents and processes), a sandbox whose processes died,
//! paused sandboxes (the cgroup freezer's leftovers, a restart while paused), ids, identity.
//! Selected by the `bwrap` nextest profile.
#![cfg(feature = "bwrap")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod bwrap_support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use bwrap_support::{fixture, sh_out, spawn};
use bytes::Bytes;
use stacyvm_provider::conformance::{self, exec_collect, sh};
use stacyvm_provider::{BwrapProvider, ProcessSpec, Provider, ProviderError, SandboxSpec};
use stacyvm_types::{ProcessState, SandboxState};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_provider_adopts_sandboxes_and_their_processes() {
    let f = fixture().await;
    let id = spawn(&*f.p).await;
    let info =
        f.p.process_start(
            &id,
            ProcessSpec {
                exec: sh("echo started; sleep 300"),
                tag: "survivor".into(),
                ..ProcessSpec::default()
            },
        )
        .await
        .unwrap();
    f.p.write_file(
        &id,
        "/workspace/kept.txt",
        Bytes::from_static(b"kept"),
        None,
    )
    .await
    .unwrap();
    // A second provider on the same directory, as after a restart (the first one never
    // destroys anything: sandboxes outlive it by design).
    let p2 = BwrapProvider::new(f.config.clone()).unwrap();
    let listed = p2.list_runtimes().await.unwrap().unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].runtime_id, id);
    assert_eq!(listed[0].sandbox_id.as_deref(), Some(id.as_str()));
    assert_eq!(listed[0].image, bwrap_support::IMAGE);
    assert!(listed[0].running);
    assert_eq!(p2.status(&id).await.unwrap(), SandboxState::Running);
    let procs = p2.process_list(&id).await.unwrap();
    let same = procs
        .iter()
        .find(|p| p.pid == info.pid)
        .expect("process kept");
    assert_eq!(same.state, ProcessState::Running);
    assert_eq!(same.tag, "survivor");
    let got = p2.read_file(&id, "/workspace/kept.txt").await.unwrap();
    assert_eq!(got.as_ref(), b"kept");
    assert_eq!(sh_out(&p2, &id, "echo again").await.1, "again\n");
    p2.destroy(&id).await.unwrap();
    assert!(p2.list_runtimes().await.unwrap().unwrap().is_empty());
    // The first provider learns it is gone as soon as it looks.
    let c = exec_collect(&*f.p, &id, sh("true")).await;
    assert!(c.result.is_err(), "{:?}", c.result);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandbox_whose_processes_died_is_unhealthy_and_still_destroyable() {
    let f = fixture().await;
    let p = &*f.p;
    let id = spawn(p).await;
    // Kill everything from the host, as an OOM or an admin might.
    let procs = format!(
        "/sys/fs/cgroup/pids/{}/{id}/cgroup.procs",
        bwrap_support::CGROUP_PARENT
    );
    let procs = if std::path::Path::new(&procs).exists() {
        procs
    } else {
        format!(
            "/sys/fs/cgroup/{}/{id}/cgroup.procs",
            bwrap_support::CGROUP_PARENT
        )
    };
    for pid in std::fs::read_to_string(&procs).unwrap().lines() {
        let _ = std::process::Command::new("kill")
            .args(["-9", pid])
            .status();
    }
    let mut state = SandboxState::Running;
    for _ in 0..100 {
        state = p.status(&id).await.unwrap();
        if state != SandboxState::Running {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(state, SandboxState::Unhealthy);
    let listed = p.list_runtimes().await.unwrap().unwrap();
    assert!(!listed[0].running, "{listed:?}");
    let c = exec_collect(p, &id, sh("true")).await;
    assert!(
        matches!(&c.result, Err(ProviderError::Unavailable(m)) if m.contains("not running")),
        "{:?}",
        c.result
    );
    p.destroy(&id).await.unwrap();
    assert_eq!(p.status(&id).await.unwrap(), SandboxState::Destroyed);
    p.destroy(&id).await.unwrap();
}

/// The sandbox's groups on this host: the pids group (v1) or its one group (v2), and the v1
/// freezer group pause makes (`None` on v2, where the group freezes itself).
fn groups_of(id: &str) -> (PathBuf, Option<PathBuf>) {
    let parent = bwrap_support::CGROUP_PARENT;
    let v1 = Path::new("/sys/fs/cgroup/pids/cgroup.procs").is_file()
        && !Path::new("/sys/fs/cgroup/cgroup.controllers").is_file();
    if v1 {
        (
            PathBuf::from(format!("/sys/fs/cgroup/pids/{parent}/{id}")),
            Some(PathBuf::from(format!(
                "/sys/fs/cgroup/freezer/{parent}/{id}"
            ))),
        )
    } else {
        (PathBuf::from(format!("/sys/fs/cgroup/{parent}/{id}")), None)
    }
}

fn procs(group: &Path) -> Vec<i32> {
    std::fs::read_to_string(group.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Whether `pid` is gone (or a zombie waiting for a parent outside the sandbox to reap it).
fn dead(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

fn sleeper() -> ProcessSpec {
    ProcessSpec {
        exec: sh("sleep 600"),
        ..ProcessSpec::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_sandbox_is_destroyed_without_leftovers() {
    let f = fixture().await;
    let p = &*f.p;
    let id = spawn(p).await;
    p.process_start(&id, sleeper()).await.unwrap();
    let (group, freezer) = groups_of(&id);
    let members = procs(&group);
    assert!(
        members.len() >= 3,
        "bwrap, the agent and sleep: {members:?}"
    );
    p.pause(&id).await.unwrap();
    assert_eq!(p.status(&id).await.unwrap(), SandboxState::Paused);
    if let Some(freezer) = &freezer {
        let state = std::fs::read_to_string(freezer.join("freezer.state")).unwrap();
        assert_eq!(state.trim(), "FROZEN");
        let frozen = procs(freezer);
        for pid in &members {
            assert!(frozen.contains(pid), "{pid} not frozen: {frozen:?}");
        }
    }
    tokio::time::timeout(Duration::from_secs(30), p.destroy(&id))
        .await
        .expect("destroy of a paused sandbox hung")
        .unwrap();
    assert_eq!(p.status(&id).await.unwrap(), SandboxState::Destroyed);
    assert!(!group.exists(), "left {}", group.display());
    if let Some(freezer) = &freezer {
        assert!(!freezer.exists(), "left {}", freezer.display());
    }
    for pid in members {
        assert!(
            dead(pid),
            "process {pid} of the destroyed sandbox still runs"
        );
    }
    assert!(p.list_runtimes().await.unwrap().unwrap().is_empty());
    // Nothing of it is left for a pause to find.
    let r = p.pause(&id).await;
    assert!(matches!(r, Err(ProviderError::SandboxNotFound(_))), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_provider_resumes_a_paused_sandbox() {
    let f = fixture().await;
    let id = spawn(&*f.p).await;
    let info = f.p.process_start(&id, sleeper()).await.unwrap();
    f.p.pause(&id).await.unwrap();
    // The freezer's state is the record: a new provider reads it, nothing else is kept.
    let p2 = BwrapProvider::new(f.config.clone()).unwrap();
    assert_eq!(p2.status(&id).await.unwrap(), SandboxState::Paused);
    p2.resume(&id).await.unwrap();
    assert_eq!(p2.status(&id).await.unwrap(), SandboxState::Running);
    assert_eq!(sh_out(&p2, &id, "echo thawed").await.1, "thawed\n");
    let same = p2.process_get(&id, info.pid).await.unwrap();
    assert_eq!(same.state, ProcessState::Running, "{same:?}");
    // Paused again and destroyed by the new provider: no freezer group is left either.
    p2.pause(&id).await.unwrap();
    let (group, freezer) = groups_of(&id);
    tokio::time::timeout(Duration::from_secs(30), p2.destroy(&id))
        .await
        .expect("destroy of a paused sandbox hung")
        .unwrap();
    assert!(!group.exists(), "left {}", group.display());
    if let Some(freezer) = freezer {
        assert!(!freezer.exists(), "left {}", freezer.display());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_identity_and_summary() {
    let f = fixture().await;
    let p = &*f.p;
    assert_eq!(p.name(), "bwrap");
    assert!(p.isolated());
    let summary = p.config_summary();
    assert_eq!(summary["type"], "bwrap");
    assert_eq!(summary["network_mode"], "none");
    assert!(
        ["v1", "v2"].contains(&summary["cgroups"].as_str().unwrap()),
        "{summary}"
    );
    for bad in ["../x", "", ".hidden", "a/b"] {
        let spec = SandboxSpec {
            id: bad.into(),
            ..bwrap_support::spec()
        };
        let r = p.spawn(&spec).await;
        assert!(
            matches!(r, Err(ProviderError::InvalidInput(_))),
            "{bad}: {r:?}"
        );
    }
    let id = spawn(p).await;
    let dup = SandboxSpec {
        id: id.clone(),
        ..conformance::spec(bwrap_support::IMAGE)
    };
    let r = p.spawn(&dup).await;
    assert!(matches!(r, Err(ProviderError::InvalidInput(_))), "{r:?}");
    assert_eq!(
        p.preview_target(&id, 3000).await.unwrap(),
        None,
        "none: no preview"
    );
    let logs = p.logs(&id, 10).await.unwrap();
    assert!(logs[0].contains(&id), "{logs:?}");
    p.destroy(&id).await.unwrap();
    // An id may be used again after its sandbox is gone.
    p.spawn(&dup).await.unwrap();
    assert_eq!(p.status(&id).await.unwrap(), SandboxState::Running);
    p.destroy(&id).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unfinished_spawn_is_cleaned_up_at_start() {
    let f = fixture().await;
    // What a provider killed between making the directory and recording it leaves.
    let dir = std::path::Path::new(&f.config.data_dir).join("sandboxes/sb-unfinished");
    for d in ["upper/workspace", "work", "merged", "run"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    let p2 = BwrapProvider::new(f.config.clone()).unwrap();
    assert!(!dir.exists(), "left {}", dir.display());
    assert!(p2.list_runtimes().await.unwrap().unwrap().is_empty());
}

/// With `user` networking pasta forwards nothing to the host: previews still reach the
/// sandbox's ports from inside its namespace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_network_forwards_no_port_to_the_host() {
    use stacyvm_provider::PreviewConn;
    use tokio::io::AsyncReadExt;

    let f = bwrap_support::fixture_with(|c| c.network_mode = "user".into()).await;
    let p = &*f.p;
    assert_eq!(p.config_summary()["network_mode"], "user");
    let id = spawn(p).await;
    let (_, dev) = sh_out(p, &id, "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '").await;
    let ifaces: Vec<&str> = dev.lines().collect();
    assert!(ifaces.contains(&"lo") && ifaces.len() == 2, "{dev}");
    for port in [3000, 8080] {
        assert_eq!(p.preview_target(&id, port).await.unwrap(), None);
    }
    p.process_start(
        &id,
        ProcessSpec {
            exec: sh("echo preview-ok | nc -l -p 3000"),
            ..ProcessSpec::default()
        },
    )
    .await
    .unwrap();
    let mut got = String::new();
    for _ in 0..100 {
        if let PreviewConn::Open(mut s) = p.preview_connect(&id, 3000).await.unwrap() {
            got.clear();
            let _ = tokio::time::timeout(Duration::from_secs(2), s.read_to_string(&mut got)).await;
            if got.contains("preview-ok") {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(got.trim(), "preview-ok");
    p.destroy(&id).await.unwrap();
}

/// Previews reach any port from inside the sandbox's network namespace, also without a
/// network (`none`: only `lo`), and never through the host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn previews_connect_to_any_port_inside_the_namespace() {
    use stacyvm_provider::PreviewConn;
    use tokio::io::AsyncReadExt;

    let f = fixture().await;
    let p = &*f.p;
    let id = spawn(p).await;
    match p.preview_connect(&id, 8080).await.unwrap() {
        PreviewConn::Unreachable(_) => {}
        other => panic!("nothing listens yet: {other:?}"),
    }
    p.process_start(
        &id,
        ProcessSpec {
            exec: sh("echo preview-ok | nc -l -p 8080"),
            ..ProcessSpec::default()
        },
    )
    .await
    .unwrap();
    let mut got = String::new();
    for _ in 0..100 {
        if let PreviewConn::Open(mut s) = p.preview_connect(&id, 8080).await.unwrap() {
            assert!(s.peer_addr().unwrap().ip().is_loopback());
            got.clear();
            let _ = tokio::time::timeout(Duration::from_secs(2), s.read_to_string(&mut got)).await;
            if got.contains("preview-ok") {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(got.trim(), "preview-ok");
    // The host's own loopback port 8080 was never involved: nothing of the sandbox listens
    // there.
    p.destroy(&id).await.unwrap();
    assert!(matches!(
        p.preview_connect(&id, 8080).await,
        Err(ProviderError::SandboxNotFound(_))
    ));
}
