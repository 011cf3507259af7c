//! The docker provider's hardening, tested from inside a sandbox.
#![cfg(feature = "docker")]
#![allow(clippy::unwrap_used)]

mod docker_support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use docker_support::*;
use stacyvm_provider::{DockerConfig, ExecRequest, Provider, ProviderError};
use stacyvm_types::SandboxState;

#[tokio::test]
async fn no_privileges_no_mounts_no_host_processes() {
    let p = provider(DockerConfig::default()).await;
    let (id, _guard) = spawn(&p, IMAGE).await;

    let o = sh(&p, &id, "mkdir -p /tmp/m && mount -t tmpfs none /tmp/m").await;
    assert_ne!(o.code, 0, "mount must fail: {o:?}");
    let o = sh(
        &p,
        &id,
        "grep -E '^(CapEff|CapBnd|NoNewPrivs)' /proc/self/status",
    )
    .await;
    assert!(
        o.stdout.contains("CapEff:\t0000000000000000"),
        "{}",
        o.stdout
    );
    assert!(
        o.stdout.contains("CapBnd:\t0000000000000000"),
        "{}",
        o.stdout
    );
    assert!(o.stdout.contains("NoNewPrivs:\t1"), "{}", o.stdout);
    let o = sh(&p, &id, "grep Seccomp: /proc/self/status").await;
    assert!(
        o.stdout.contains("Seccomp:\t2"),
        "seccomp filter active: {}",
        o.stdout
    );

    // Only the sandbox's own processes: init, the keep-alive, and this command.
    let o = sh(&p, &id, "ps -o pid,args").await;
    let procs: Vec<&str> = o.stdout.lines().skip(1).collect();
    assert!(procs.len() <= 5, "{}", o.stdout);
    assert!(
        !o.stdout.contains("dockerd") && !o.stdout.contains("containerd"),
        "{}",
        o.stdout
    );
    assert!(o.stdout.contains("sleep 2147483647"), "{}", o.stdout);
}

#[tokio::test]
async fn fork_bomb_is_contained() {
    let cfg = DockerConfig {
        pids_limit: 64,
        ..Default::default()
    };
    let p = provider(cfg).await;
    let (id, _guard) = spawn(&p, IMAGE).await;
    let req = ExecRequest {
        // The bomb runs in a subshell and the main shell then `exec`s: once the pid limit is
        // reached a fork in the main shell would fail and end the command early (not a timeout).
        command: "(f() { f | f & }; f) 2>/dev/null; exec sleep 60".into(),
        timeout: Some(Duration::from_secs(3)),
        ..Default::default()
    };
    let r = exec_req(&p, &id, req).await;
    // On a loaded machine the bomb may fill the pid limit before the agent started the
    // exec's reader thread: then the exec is refused as busy (and its group killed), which
    // is as contained as the timeout.
    let busy = matches!(&r, Err(ProviderError::Unavailable(m)) if m.contains("thread"));
    assert!(matches!(r, Err(ProviderError::Timeout)) || busy, "{r:?}");
    assert!(p.health().await.is_ok());
    assert_eq!(p.status(&id).await.unwrap(), SandboxState::Running);
    // The sandbox recovers: the bomb's processes are gone.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(o) = exec_req(&p, &id, argv("ps", &["-o", "pid"])).await {
            if o.code == 0 && o.stdout.lines().count() <= 6 {
                break;
            }
        }
        assert!(Instant::now() < deadline, "fork bomb still running");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(sh(&p, &id, "echo alive").await.stdout, "alive\n");
}

/// A background process fills the pid limit (and holds it, unlike a bomb, which may die out)
/// while the agent is asked for more: every call answers (an error is fine, a hang is not),
/// and killing the process's group frees the sandbox.
#[tokio::test]
async fn a_fork_bomb_process_never_wedges_the_agent() {
    use stacyvm_provider::ProcessSpec;
    use stacyvm_types::Signal;
    let cfg = DockerConfig {
        pids_limit: 64,
        ..Default::default()
    };
    let p = provider(cfg).await;
    let (id, _guard) = spawn(&p, IMAGE).await;
    let spec = ProcessSpec {
        exec: ExecRequest {
            // The subshell forks sleeps until a fork fails (and busybox's sh then exits); the
            // process itself stays, as the sleep its shell becomes.
            command: "(while :; do sleep 1000 & done) 2>/dev/null; exec sleep 1000".into(),
            ..Default::default()
        },
        tag: "bomb".into(),
        stdin: false,
        pty: None,
        output_buffer: None,
        retain_exited: None,
    };
    // The fixture: the pid limit really is reached (a fork from the sandbox fails). Threads
    // that ended after a filler stopped leave room, so fillers are added until it is full.
    let mut fillers = vec![p.process_start(&id, spec.clone()).await.unwrap().pid];
    let mut full = false;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let probe = ExecRequest {
            command: "true & wait".into(),
            timeout: Some(Duration::from_secs(2)),
            ..Default::default()
        };
        let r = tokio::time::timeout(Duration::from_secs(60), exec_req(&p, &id, probe)).await;
        if !matches!(r.expect("an exec under a fork bomb must answer"), Ok(o) if o.code == 0) {
            full = true;
            break;
        }
        if let Ok(f) = p.process_start(&id, spec.clone()).await {
            fillers.push(f.pid);
        }
    }
    assert!(full, "the pid limit was never reached");
    for _ in 0..3 {
        let list = tokio::time::timeout(Duration::from_secs(60), p.process_list(&id)).await;
        assert!(
            list.is_ok(),
            "listing processes under a fork bomb must answer"
        );
        let r = exec_req(&p, &id, argv("echo", &["x"]));
        let r = tokio::time::timeout(Duration::from_secs(60), r).await;
        assert!(r.is_ok(), "an exec under a fork bomb must answer");
    }
    for pid in fillers {
        p.process_signal(&id, pid, Signal::Kill).await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(o) = exec_req(&p, &id, argv("echo", &["alive"])).await {
            if o.stdout == "alive\n" {
                break;
            }
        }
        assert!(Instant::now() < deadline, "the sandbox never recovered");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test]
async fn memory_limit_kills_the_command() {
    let p = provider(DockerConfig::default()).await;
    let id = new_id();
    let _guard = Cleanup(id.clone());
    let mut sp = spec(&id, IMAGE);
    sp.memory_mb = 48;
    p.spawn(&sp).await.unwrap();
    // dd allocates (and fills) a 100 MiB buffer.
    let o = sh(&p, &id, "dd if=/dev/zero of=/dev/null bs=100M count=1").await;
    assert_ne!(o.code, 0, "{o:?}");
    assert_eq!(p.status(&id).await.unwrap(), SandboxState::Running);
    assert_eq!(sh(&p, &id, "echo still here").await.stdout, "still here\n");
}

#[tokio::test]
async fn read_only_rootfs_keeps_tmp_and_workspace_writable() {
    let cfg = DockerConfig {
        read_only_rootfs: true,
        ..Default::default()
    };
    let p = provider(cfg).await;
    let (id, _guard) = spawn(&p, IMAGE).await;
    for path in ["/etc/x", "/bin/x", "/x"] {
        let o = sh(&p, &id, &format!("touch {path}")).await;
        assert_ne!(o.code, 0, "{path} must not be writable");
        let w = p
            .write_file(&id, path, Bytes::from_static(b"x"), None)
            .await;
        assert!(
            matches!(w, Err(ProviderError::InvalidInput(_))),
            "{path}: {w:?}"
        );
    }
    let o = sh(&p, &id, "touch /tmp/a /workspace/b && echo ok").await;
    assert_eq!(o.stdout, "ok\n", "{o:?}");
    for path in ["/tmp/api.txt", "/workspace/sub/api.txt"] {
        p.write_file(&id, path, Bytes::from_static(b"api"), None)
            .await
            .unwrap();
        assert_eq!(sh(&p, &id, &format!("cat {path}")).await.stdout, "api");
    }
    assert!(p.delete_file(&id, "/etc/passwd", false).await.is_err());
}

#[tokio::test]
async fn non_root_user_owns_its_workspace() {
    let cfg = DockerConfig {
        user: "nobody".into(),
        read_only_rootfs: true,
        ..Default::default()
    };
    let p = provider(cfg).await;
    let (id, _guard) = spawn(&p, IMAGE).await;
    assert_eq!(sh(&p, &id, "id -u").await.stdout, "65534\n");
    let o = sh(
        &p,
        &id,
        "echo me > /workspace/mine && echo t > /tmp/t && cat /workspace/mine",
    )
    .await;
    assert_eq!(o.stdout, "me\n", "{o:?}");
    p.write_file(
        &id,
        "/workspace/api.txt",
        Bytes::from_static(b"x"),
        Some("0600"),
    )
    .await
    .unwrap();
    let o = sh(
        &p,
        &id,
        "stat -c %U /workspace/api.txt && echo more >> /workspace/api.txt && echo ok",
    )
    .await;
    assert_eq!(o.stdout, "nobody\nok\n", "{o:?}");
    p.chmod(&id, "/workspace/api.txt", "644").await.unwrap();
    p.move_file(&id, "/workspace/api.txt", "/workspace/moved.txt")
        .await
        .unwrap();
    p.delete_file(&id, "/workspace/moved.txt", false)
        .await
        .unwrap();
}

#[tokio::test]
async fn an_image_user_also_owns_its_workspace() {
    let p = provider(DockerConfig::default()).await;
    nobody_image().await;
    let (id, _guard) = spawn(&p, NOBODY_IMAGE).await;
    assert_eq!(sh(&p, &id, "id -u").await.stdout, "65534\n");
    let o = sh(&p, &id, "echo me > /workspace/mine && cat /workspace/mine").await;
    assert_eq!(o.stdout, "me\n", "{o:?}");
    p.write_file(&id, "/workspace/api.txt", Bytes::from_static(b"x"), None)
        .await
        .unwrap();
    let o = sh(
        &p,
        &id,
        "stat -c %U /workspace/api.txt && echo y >> /workspace/api.txt && echo ok",
    )
    .await;
    assert_eq!(o.stdout, "nobody\nok\n", "{o:?}");
}

#[tokio::test]
async fn network_none_has_only_loopback() {
    let cfg = DockerConfig {
        network_mode: "none".into(),
        ..Default::default()
    };
    let p = provider(cfg).await;
    let (id, _guard) = spawn(&p, IMAGE).await;
    let o = sh(&p, &id, "ls /sys/class/net").await;
    assert_eq!(
        o.stdout.split_whitespace().collect::<Vec<_>>(),
        ["lo"],
        "{o:?}"
    );
    assert_eq!(p.preview_target(&id, 3000).await.unwrap(), None);
}

/// The preview proxy's target on the default bridge: the container's own address, where a
/// server started in the sandbox answers (from the daemon's host).
#[tokio::test]
async fn preview_target_is_the_container_address() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let p = provider(DockerConfig::default()).await;
    let (id, _guard) = spawn(&p, IMAGE).await;
    let o = sh(
        &p,
        &id,
        "mkdir -p /tmp/www && echo preview-ok > /tmp/www/index.html && httpd -p 8080 -h /tmp/www",
    )
    .await;
    assert_eq!(o.code, 0, "{o:?}");
    let addr = p.preview_target(&id, 8080).await.unwrap().unwrap();
    assert_eq!(addr.port(), 8080);
    assert!(!addr.ip().is_loopback(), "{addr}");
    let mut body = String::new();
    for _ in 0..50 {
        if let Ok(mut s) = tokio::net::TcpStream::connect(addr).await {
            s.write_all(b"GET /index.html HTTP/1.0\r\n\r\n")
                .await
                .unwrap();
            body.clear();
            let mut buf = Vec::new();
            let _ = s.read_to_end(&mut buf).await;
            body = String::from_utf8_lossy(&buf).into_owned();
            if body.contains("preview-ok") {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(body.contains("preview-ok"), "{body}");
    assert!(matches!(
        p.preview_target("sb-nothere", 8080).await,
        Err(ProviderError::SandboxNotFound(_))
    ));
}

mod needs_gvisor {
    use super::*;

    #[tokio::test]
    async fn runsc_sandboxes_run_under_gvisor() {
        let cfg = DockerConfig {
            network_mode: "none".into(),
            read_only_rootfs: true,
            ..Default::default()
        };
        let p = runsc_provider(cfg).await;
        let (id, _guard) = spawn(&p, IMAGE).await;
        // gVisor's own kernel log, not the host's.
        let o = sh(&p, &id, "dmesg").await;
        assert!(o.stdout.contains("gVisor"), "{o:?}");
        let o = sh(&p, &id, "mkdir -p /tmp/m && mount -t tmpfs none /tmp/m").await;
        assert_ne!(o.code, 0, "mount must fail: {o:?}");
        assert_ne!(sh(&p, &id, "touch /etc/x").await.code, 0);
        // The sandbox's own processes only: its init, the command and ps, and the process
        // agent that runs them (its listener and the bridge the provider talks through).
        let ps = sh(&p, &id, "ps -o pid,args | grep -v /.stacyvm/agent")
            .await
            .stdout;
        assert!(ps.lines().count() <= 5, "{ps}");
        p.write_file(&id, "/tmp/a", Bytes::from_static(b"a"), None)
            .await
            .unwrap();
        assert_eq!(sh(&p, &id, "cat /tmp/a").await.stdout, "a");
    }
}
