//! The mock provider's process cleanup, symlink confinement and fault injection.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use stacyvm_provider::conformance::{self, exec_collect, sh};
use stacyvm_provider::{chunked, ExecRequest, MockProvider, Provider, ProviderError};
use stacyvm_types::{SandboxState, StreamChunk};
use tokio::sync::mpsc;

mod mock_support;
use mock_support::{fixture, spawn, stdout, write};

/// Process-group cleanup, checked on the host's process table.
mod processes {
    use super::*;

    /// Gone, or a zombie waiting for init: either way no longer running.
    fn dead(pid: u32) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            // The state follows the parenthesised command name.
            Ok(s) => s
                .rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with(['Z', 'X']),
        }
    }

    async fn wait_dead(pid: u32) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !dead(pid) {
            assert!(Instant::now() < deadline, "process {pid} still running");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn timeout_kills_background_children() {
        let f = fixture();
        let (id, _) = spawn(&f.p).await;
        let mut req = sh("sleep 100 & echo $!; wait");
        req.timeout = Some(Duration::from_millis(700));
        let start = Instant::now();
        let c = exec_collect(&f.p, &id, req).await;
        assert!(matches!(c.result, Err(ProviderError::Timeout)), "{c:?}");
        assert!(start.elapsed() < Duration::from_secs(3));
        let pid: u32 = c.stdout_str().trim().parse().unwrap();
        wait_dead(pid).await;
    }

    #[tokio::test]
    async fn leftovers_die_when_the_command_exits() {
        let f = fixture();
        let (id, _) = spawn(&f.p).await;
        let start = Instant::now();
        let out = stdout(&f.p, &id, "sleep 100 & echo $!").await;
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "exec waited for the background child"
        );
        wait_dead(out.trim().parse().unwrap()).await;
    }

    /// Runs `sleep 100` in the background, reports its pid, and hands the exec to `end`.
    async fn pid_then<F, Fut>(
        p: &MockProvider,
        id: &str,
        end: F,
    ) -> (u32, Result<i32, ProviderError>)
    where
        F: FnOnce(mpsc::Receiver<StreamChunk>) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let (tx, mut rx) = mpsc::channel::<StreamChunk>(8);
        let exec = p.exec(id, sh("sleep 100 & echo $!; wait"), tx);
        tokio::pin!(exec);
        let first = tokio::select! {
            c = rx.recv() => c.unwrap(),
            r = &mut exec => panic!("exec ended early: {r:?}"),
        };
        let pid: u32 = String::from_utf8(first.data)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let ((), r) = tokio::join!(end(rx), tokio::time::timeout(Duration::from_secs(5), exec));
        (pid, r.expect("exec did not end"))
    }

    #[tokio::test]
    async fn receiver_dropped_kills_the_group() {
        let f = fixture();
        let (id, _) = spawn(&f.p).await;
        let (pid, r) = pid_then(&f.p, &id, |rx| async move { drop(rx) }).await;
        assert!(matches!(r, Err(ProviderError::Internal { .. })), "{r:?}");
        wait_dead(pid).await;
    }

    #[tokio::test]
    async fn destroy_during_exec_kills_the_group() {
        let f = fixture();
        let (id, _) = spawn(&f.p).await;
        let (p, idr) = (&f.p, id.as_str());
        // Keeps the receiver alive, so only the destroy can end the exec.
        let end = |rx| async move {
            p.destroy(idr).await.unwrap();
            drop(rx);
        };
        let (pid, r) = pid_then(p, &id, end).await;
        assert!(matches!(r, Err(ProviderError::SandboxNotFound(_))), "{r:?}");
        wait_dead(pid).await;
    }

    #[tokio::test]
    async fn dropped_exec_future_kills_the_group() {
        let f = fixture();
        let (id, _) = spawn(&f.p).await;
        let (tx, mut rx) = mpsc::channel::<StreamChunk>(8);
        let pid = {
            let exec = f.p.exec(&id, sh("sleep 100 & echo $!; wait"), tx);
            tokio::pin!(exec);
            let first = tokio::select! {
                c = rx.recv() => c.unwrap(),
                r = &mut exec => panic!("exec ended early: {r:?}"),
            };
            String::from_utf8(first.data)
                .unwrap()
                .trim()
                .parse::<u32>()
                .unwrap()
            // `exec` is dropped here, mid-run.
        };
        wait_dead(pid).await;
    }
}

/// Symlinks must never let the files API reach outside the sandbox.
mod confinement {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn assert_invalid<T: std::fmt::Debug>(
        what: &str,
        r: Result<T, ProviderError>,
        hidden: &[&Path],
    ) {
        match r {
            Err(e @ ProviderError::InvalidInput(_)) => {
                let msg = e.to_string();
                for h in hidden {
                    assert!(
                        !msg.contains(h.to_str().unwrap()),
                        "{what}: host path in {msg:?}"
                    );
                }
            }
            other => panic!("{what}: expected InvalidInput, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn symlinks_out_of_the_root_are_rejected() {
        let f = fixture();
        let (id, root) = spawn(&f.p).await;
        let outside = tempfile::tempdir().unwrap();
        let secret = outside.path().join("secret.txt");
        std::fs::write(&secret, b"secret").unwrap();
        let dangling = outside.path().join("created-through-link");
        let ws = root.join("workspace");
        std::os::unix::fs::symlink(outside.path(), ws.join("outdir")).unwrap();
        std::os::unix::fs::symlink(&secret, ws.join("outfile")).unwrap();
        std::os::unix::fs::symlink(&dangling, ws.join("dangling")).unwrap();
        std::os::unix::fs::symlink("../../..", ws.join("up")).unwrap();
        let hidden = [root.as_path(), outside.path(), f.base.as_path()];
        let p = &f.p;

        assert_invalid(
            "read via dir link",
            p.read_file(&id, "/workspace/outdir/secret.txt").await,
            &hidden,
        );
        assert_invalid(
            "read final link",
            p.read_file(&id, "/workspace/outfile").await,
            &hidden,
        );
        assert_invalid(
            "stat",
            p.stat_file(&id, "/workspace/outfile").await,
            &hidden,
        );
        assert_invalid(
            "list",
            p.list_files(&id, "/workspace/outdir").await,
            &hidden,
        );
        assert_invalid("list up", p.list_files(&id, "workspace/up").await, &hidden);
        assert_invalid(
            "chmod",
            p.chmod(&id, "/workspace/outfile", "777").await,
            &hidden,
        );
        assert_invalid(
            "write via dir link",
            p.write_file(
                &id,
                "/workspace/outdir/new.txt",
                Bytes::from_static(b"x"),
                None,
            )
            .await,
            &hidden,
        );
        assert_invalid(
            "write final link",
            p.write_file(&id, "/workspace/outfile", Bytes::from_static(b"x"), None)
                .await,
            &hidden,
        );
        assert_invalid(
            "write dangling link",
            p.write_file(&id, "/workspace/dangling", Bytes::from_static(b"x"), None)
                .await,
            &hidden,
        );
        assert_invalid(
            "move into link",
            p.move_file(&id, "/workspace/x", "/workspace/outdir/y")
                .await,
            &hidden,
        );
        assert_invalid(
            "delete via link",
            p.delete_file(&id, "/workspace/outdir/secret.txt", true)
                .await,
            &hidden,
        );
        assert_invalid(
            "exec workdir",
            exec_collect(
                p,
                &id,
                ExecRequest {
                    workdir: Some("/workspace/outdir".into()),
                    ..sh("pwd")
                },
            )
            .await
            .result,
            &hidden,
        );
        assert!(p.glob(&id, "/workspace/outdir/*").await.unwrap().is_empty());
        assert!(p.glob(&id, "/workspace/up/*").await.unwrap().is_empty());
        assert!(!dangling.exists(), "nothing was created outside");
        assert_eq!(std::fs::read(&secret).unwrap(), b"secret");
        assert_eq!(
            std::fs::metadata(&secret).unwrap().permissions().mode() & 0o777,
            0o644
        );

        // The links themselves are entries of the sandbox: listed, deletable, movable.
        let listed = p.list_files(&id, "/workspace").await.unwrap();
        let outfile = listed
            .iter()
            .find(|i| i.path == "workspace/outfile")
            .unwrap();
        assert!(outfile.mode.starts_with('L'), "{outfile:?}");
        p.move_file(&id, "/workspace/outfile", "/workspace/moved-link")
            .await
            .unwrap();
        p.delete_file(&id, "/workspace/moved-link", false)
            .await
            .unwrap();
        p.delete_file(&id, "/workspace/outdir", true).await.unwrap();
        assert!(secret.exists(), "deleting a link leaves its target alone");
    }

    /// The streamed transfers resolve paths exactly like the buffered ones, and leave no
    /// temporary files behind, whether they succeed or fail.
    #[tokio::test]
    async fn streamed_transfers_stay_confined() {
        let f = fixture();
        let (id, root) = spawn(&f.p).await;
        let outside = tempfile::tempdir().unwrap();
        let secret = outside.path().join("secret.txt");
        std::fs::write(&secret, b"secret").unwrap();
        let ws = root.join("workspace");
        std::os::unix::fs::symlink(outside.path(), ws.join("outdir")).unwrap();
        std::os::unix::fs::symlink(&secret, ws.join("outfile")).unwrap();
        std::os::unix::fs::symlink("../../..", ws.join("up")).unwrap();
        let hidden = [root.as_path(), outside.path(), f.base.as_path()];
        let p = &f.p;
        let body = || chunked(Bytes::from_static(b"overwritten"));

        for path in [
            "/workspace/outdir/secret.txt",
            "/workspace/outfile",
            "workspace/up/etc/passwd",
            "../../etc/passwd",
        ] {
            assert_invalid(
                &format!("stream read {path}"),
                p.read_file_stream(&id, path).await,
                &hidden,
            );
            assert_invalid(
                &format!("stream write {path}"),
                p.write_file_stream(&id, path, body(), None).await,
                &hidden,
            );
        }
        assert_eq!(std::fs::read(&secret).unwrap(), b"secret");
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 1);

        assert_invalid(
            "stream read a directory",
            p.read_file_stream(&id, "/workspace").await,
            &hidden,
        );
        assert_invalid(
            "stream write over a directory",
            p.write_file_stream(&id, "/workspace", body(), None).await,
            &hidden,
        );
        let failing = futures_util::stream::iter(vec![
            Ok(Bytes::from_static(b"partial")),
            Err(ProviderError::InvalidInput("upload interrupted".into())),
        ]);
        let r = p
            .write_file_stream(&id, "/workspace/new.txt", Box::pin(failing), None)
            .await;
        assert!(r.is_err(), "{r:?}");
        p.write_file_stream(&id, "/workspace/ok.txt", body(), Some("executable"))
            .await
            .unwrap();
        let mode = std::fs::metadata(ws.join("ok.txt"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
        let mut names: Vec<String> = std::fs::read_dir(&ws)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["ok.txt", "outdir", "outfile", "up"],
            "no temp files left"
        );
    }

    #[tokio::test]
    async fn symlinks_inside_the_root_work() {
        let f = fixture();
        let (id, root) = spawn(&f.p).await;
        write(&f.p, &id, "/workspace/real/f.txt", b"inside", None).await;
        let ws = root.join("workspace");
        std::os::unix::fs::symlink("real", ws.join("rel")).unwrap();
        std::os::unix::fs::symlink(ws.join("real"), ws.join("abs")).unwrap();
        for p in ["/workspace/rel/f.txt", "/workspace/abs/f.txt"] {
            assert_eq!(
                f.p.read_file(&id, p).await.unwrap().as_ref(),
                b"inside",
                "{p}"
            );
        }
        write(&f.p, &id, "/workspace/rel/g.txt", b"via link", None).await;
        assert_eq!(std::fs::read(ws.join("real/g.txt")).unwrap(), b"via link");
        assert_eq!(
            f.p.stat_file(&id, "/workspace/rel").await.unwrap().mode,
            "20000000755"
        );
    }

    #[tokio::test]
    async fn error_messages_carry_no_host_paths() {
        let f = fixture();
        let (id, root) = spawn(&f.p).await;
        let errs = [
            f.p.read_file(&id, "/workspace/missing").await.unwrap_err(),
            f.p.stat_file(&id, "/workspace/missing").await.unwrap_err(),
            f.p.list_files(&id, "/workspace/missing").await.unwrap_err(),
            f.p.delete_file(&id, "/workspace/missing", false)
                .await
                .unwrap_err(),
            f.p.read_file(&id, "/workspace").await.unwrap_err(),
            f.p.read_file(&id, "../x").await.unwrap_err(),
            f.p.chmod(&id, "/workspace", "bad").await.unwrap_err(),
        ];
        for e in &errs {
            let msg = e.to_string();
            assert!(
                !msg.contains(root.to_str().unwrap()) && !msg.contains(f.base.to_str().unwrap()),
                "{msg}"
            );
        }
        assert!(matches!(&errs[0], ProviderError::FileNotFound(p) if p == "/workspace/missing"));
    }
}

mod faults {
    use super::*;

    #[tokio::test]
    async fn records_calls() {
        let f = fixture();
        let (id, _) = spawn(&f.p).await;
        f.p.read_file(&id, "/nope").await.unwrap_err();
        f.p.destroy(&id).await.unwrap();
        let calls: Vec<(&str, String)> =
            f.p.calls()
                .into_iter()
                .map(|c| (c.method, c.runtime_id))
                .collect();
        assert_eq!(
            calls,
            [
                ("spawn", id.clone()),
                ("read_file", id.clone()),
                ("destroy", id.clone())
            ]
        );
        assert_eq!(f.p.call_count("spawn"), 1);
        f.p.clear_calls();
        assert!(f.p.calls().is_empty());
    }

    #[tokio::test]
    async fn fail_next_fails_exactly_n_calls() {
        let f = fixture();
        let (id, _) = spawn(&f.p).await;
        f.p.fail_next("exec", 2);
        for _ in 0..2 {
            let r = exec_collect(&f.p, &id, sh("true")).await.result;
            assert!(matches!(r, Err(ProviderError::Internal { .. })), "{r:?}");
        }
        assert_eq!(exec_collect(&f.p, &id, sh("true")).await.result.unwrap(), 0);
        f.p.fail_next("health", 1);
        assert!(f.p.health().await.is_err());
        assert!(f.p.health().await.is_ok());
        f.p.fail_next("destroy", 1);
        assert!(f.p.destroy(&id).await.is_err());
        assert_eq!(
            f.p.status(&id).await.unwrap(),
            SandboxState::Running,
            "a failed destroy changes nothing"
        );
    }

    #[tokio::test]
    async fn fail_spawn_after_n() {
        let f = fixture();
        f.p.fail_spawn_after(2);
        spawn(&f.p).await;
        spawn(&f.p).await;
        for _ in 0..2 {
            let r = f.p.spawn(&conformance::spec("mock")).await;
            assert!(matches!(r, Err(ProviderError::Internal { .. })), "{r:?}");
        }
        assert_eq!(
            std::fs::read_dir(&f.base).unwrap().count(),
            2,
            "failed spawns leave no directory"
        );
        f.p.clear_faults();
        spawn(&f.p).await;
    }

    #[tokio::test]
    async fn spawn_delay() {
        let f = fixture();
        f.p.set_spawn_delay(Some(Duration::from_millis(300)));
        let start = Instant::now();
        spawn(&f.p).await;
        assert!(start.elapsed() >= Duration::from_millis(300));
        f.p.set_spawn_delay(None);
        let start = Instant::now();
        spawn(&f.p).await;
        assert!(start.elapsed() < Duration::from_millis(300));
    }
}

/// Commands get a clean environment: nothing of the server's own (its config path, keys)
/// reaches them, only `PATH`, the sandbox's variables and what the request sets.
#[tokio::test]
async fn commands_do_not_inherit_the_server_environment() {
    // Set in this (test) process, as a server would have it; the variable is unique to this
    // test, so other tests running beside it are unaffected.
    std::env::set_var("STACYVM_TEST_LEAK_CHECK", "secret-from-the-host");
    let f = fixture();
    let (id, _) = spawn(&f.p).await;
    let mut req = sh("env");
    req.env.insert("FROM_REQUEST".into(), "yes".into());
    let c = exec_collect(&f.p, &id, req).await;
    assert_eq!(c.result.as_ref().ok(), Some(&0), "{c:?}");
    let out = c.stdout_str();
    assert!(!out.contains("secret-from-the-host"), "{out}");
    assert!(out.contains("FROM_REQUEST=yes"), "{out}");
    assert!(
        out.lines().any(|l| l.starts_with("PATH=/usr/local/sbin:")),
        "{out}"
    );
    assert!(out.lines().any(|l| l.starts_with("WORKSPACE=")), "{out}");
}
