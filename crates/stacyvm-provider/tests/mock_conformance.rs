//! The shared provider suite against the mock, plus the mock's own wire formats (wire reference
//! §6 and §13.1), its symlink confinement, process cleanup and fault injection.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use stacyvm_provider::conformance::{self, exec_collect, sh};
use stacyvm_provider::{ExecRequest, MockProvider, Provider, ProviderError};
use stacyvm_types::{ExecMode, SandboxState, StreamChunk};
use tokio::sync::mpsc;

struct Fixture {
    _base: tempfile::TempDir,
    base: PathBuf,
    p: MockProvider,
}

fn fixture() -> Fixture {
    let base = tempfile::tempdir().unwrap();
    let path = base.path().canonicalize().unwrap();
    Fixture {
        p: MockProvider::with_base_dir(&path),
        base: path,
        _base: base,
    }
}

macro_rules! shared {
    ($($name:ident),* $(,)?) => {
        mod shared {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let f = fixture();
                    if let Err(e) = conformance::$name(&f.p, "mock").await {
                        panic!("{e}");
                    }
                }
            )*
        }
    };
}

shared!(
    lifecycle,
    exec_exit_codes,
    exec_stderr,
    exec_argv_mode,
    exec_shell_args,
    exec_env,
    exec_workdir,
    exec_timeout,
    exec_streams_live,
    exec_concurrent,
    files_binary_roundtrip,
    files_nested_parents,
    files_list,
    files_stat,
    files_glob,
    files_move,
    files_chmod,
    files_delete,
    files_path_escape,
    logs,
);

#[tokio::test]
async fn shared_unknown_sandbox() {
    let f = fixture();
    conformance::unknown_sandbox(&f.p).await.unwrap();
}

async fn spawn(p: &MockProvider) -> (String, PathBuf) {
    let spec = conformance::spec("mock");
    let id = p.spawn(&spec).await.unwrap().runtime_id;
    assert_eq!(id, spec.id, "the mock uses the spec id as runtime id");
    let root = p.host_root(&id).unwrap();
    (id, root)
}

async fn write(p: &MockProvider, id: &str, path: &str, data: &'static [u8], mode: Option<&str>) {
    p.write_file(id, path, Bytes::from_static(data), mode)
        .await
        .unwrap();
}

async fn stdout(p: &MockProvider, id: &str, cmd: &str) -> String {
    let c = exec_collect(p, id, sh(cmd)).await;
    assert_eq!(c.result.as_ref().ok(), Some(&0), "{cmd}: {c:?}");
    c.stdout_str()
}

mod format {
    use super::*;

    #[tokio::test]
    async fn identity_and_capabilities() {
        let f = fixture();
        assert_eq!(f.p.name(), "mock");
        assert!(!f.p.isolated());
        assert_eq!(f.p.config_summary(), serde_json::json!({"type": "mock"}));
        let caps = f.p.capabilities();
        for c in [
            "spawn",
            "exec",
            "exec_stream",
            "files",
            "console",
            "health",
            "test_provider",
        ] {
            assert!(caps.contains(&c), "{c}");
        }
        assert!(f.p.health().await.is_ok());
    }

    #[tokio::test]
    async fn sandbox_dir_layout_and_destroy() {
        let f = fixture();
        let (id, root) = spawn(&f.p).await;
        assert_eq!(root.parent().unwrap(), f.base);
        let name = root.file_name().unwrap().to_str().unwrap();
        assert!(name.starts_with(&format!("stacyvm-{id}-")), "{name}");
        assert!(root.join("workspace").is_dir());
        let rts = f.p.list_runtimes().await.unwrap().unwrap();
        assert_eq!(rts.len(), 1);
        assert_eq!(rts[0].sandbox_id.as_deref(), Some(id.as_str()));
        assert!(rts[0].running);
        f.p.destroy(&id).await.unwrap();
        assert!(!root.exists(), "destroy removes the directory");
        assert_eq!(f.p.status(&id).await.unwrap(), SandboxState::Destroyed);
        assert!(f.p.list_runtimes().await.unwrap().unwrap().is_empty());
        // A second spawn with a reused id is a fresh sandbox.
        let spec = stacyvm_provider::SandboxSpec {
            id: id.clone(),
            ..conformance::spec("mock")
        };
        f.p.spawn(&spec).await.unwrap();
        assert_eq!(f.p.status(&id).await.unwrap(), SandboxState::Running);
        let dup = f.p.spawn(&spec).await;
        assert!(
            matches!(dup, Err(ProviderError::InvalidInput(_))),
            "{dup:?}"
        );
        let bad = stacyvm_provider::SandboxSpec {
            id: "../x".into(),
            ..conformance::spec("mock")
        };
        assert!(matches!(
            f.p.spawn(&bad).await,
            Err(ProviderError::InvalidInput(_))
        ));
    }

    #[tokio::test]
    async fn dropping_the_provider_removes_directories() {
        let f = fixture();
        let (_id, root) = spawn(&f.p).await;
        drop(f.p);
        assert!(!root.exists());
    }

    #[tokio::test]
    async fn list_is_relative_with_symbolic_modes() {
        let f = fixture();
        let (id, _) = spawn(&f.p).await;
        write(&f.p, &id, "/workspace/a.txt", b"abc", None).await;
        write(&f.p, &id, "/workspace/dir/x", b"", None).await;
        let items = f.p.list_files(&id, "/workspace").await.unwrap();
        let paths: Vec<&str> = items.iter().map(|i| i.path.as_str()).collect();
        assert_eq!(paths, ["workspace/a.txt", "workspace/dir"]);
        assert_eq!(items[0].mode, "-rw-r--r--");
        assert_eq!(items[0].size, 3);
        assert_eq!(items[1].mode, "drwxr-xr-x");
        assert!(items[1].is_dir);
        for i in &items {
            let t = &i.mod_time;
            assert_eq!(t.len(), 20, "{t}");
            assert!(t.ends_with('Z') && t.as_bytes()[10] == b'T', "{t}");
            assert!(stacyvm_types::parse_rfc3339(t).is_some(), "{t}");
        }
        // Root listing, relative request paths and trailing slashes.
        let root: Vec<String> =
            f.p.list_files(&id, "/")
                .await
                .unwrap()
                .into_iter()
                .map(|i| i.path)
                .collect();
        assert_eq!(root, ["workspace"]);
        let rel = f.p.list_files(&id, "workspace/").await.unwrap();
        assert_eq!(rel[0].path, "workspace/a.txt");
        let nested =
            f.p.list_files(&id, "/workspace/./dir/../dir")
                .await
                .unwrap();
        assert_eq!(nested[0].path, "workspace/dir/x");
    }

    #[tokio::test]
    async fn stat_uses_go_octal_modes() {
        let f = fixture();
        let (id, _) = spawn(&f.p).await;
        write(&f.p, &id, "/workspace/hello.txt", b"hello world", None).await;
        let st = f.p.stat_file(&id, "/workspace/hello.txt").await.unwrap();
        assert_eq!((st.mode.as_str(), st.size, st.is_dir), ("644", 11, false));
        assert_eq!(st.path, "/workspace/hello.txt");
        let st = f.p.stat_file(&id, "workspace").await.unwrap();
        assert_eq!((st.mode.as_str(), st.is_dir), ("20000000755", true));
        assert_eq!(st.path, "workspace", "path is echoed verbatim");
        f.p.chmod(&id, "/workspace/hello.txt", "0600")
            .await
            .unwrap();
        assert_eq!(
            f.p.stat_file(&id, "/workspace/hello.txt")
                .await
                .unwrap()
                .mode,
            "600"
        );
    }

    #[tokio::test]
    async fn write_modes_follow_the_original() {
        let f = fixture();
        let (id, _) = spawn(&f.p).await;
        for (mode, want) in [
            (Some("0755"), "755"),
            (Some("executable"), "755"),
            (Some("0600"), "644"),
            (Some("755"), "644"),
            (None, "644"),
        ] {
            let path = "/workspace/m";
            write(&f.p, &id, path, b"x", mode).await;
            assert_eq!(
                f.p.stat_file(&id, path).await.unwrap().mode,
                want,
                "{mode:?}"
            );
        }
    }

    #[tokio::test]
    async fn glob_is_slash_prefixed_and_sorted() {
        let f = fixture();
        let (id, _) = spawn(&f.p).await;
        for n in ["c.log", "a.log", ".hidden.log", "b.txt", "sub/d.log"] {
            f.p.write_file(&id, &format!("/workspace/{n}"), Bytes::new(), None)
                .await
                .unwrap();
        }
        let got = f.p.glob(&id, "workspace/*.log").await.unwrap();
        assert_eq!(
            got,
            [
                "/workspace/.hidden.log",
                "/workspace/a.log",
                "/workspace/c.log"
            ]
        );
        assert_eq!(
            f.p.glob(&id, "/*/*/d.log").await.unwrap(),
            ["/workspace/sub/d.log"]
        );
        assert_eq!(
            f.p.glob(&id, "/workspace/[ab].*").await.unwrap(),
            ["/workspace/a.log", "/workspace/b.txt"]
        );
        assert!(f.p.glob(&id, "/nothing*").await.unwrap().is_empty());
        assert!(matches!(
            f.p.glob(&id, "/workspace/[").await,
            Err(ProviderError::InvalidInput(_))
        ));
    }

    #[tokio::test]
    async fn relative_paths_are_relative_to_the_root() {
        let f = fixture();
        let (id, root) = spawn(&f.p).await;
        write(&f.p, &id, "workspace/r.txt", b"rel", None).await;
        assert_eq!(
            f.p.read_file(&id, "/workspace/r.txt")
                .await
                .unwrap()
                .as_ref(),
            b"rel"
        );
        write(&f.p, &id, "/top.txt", b"top", None).await;
        assert!(
            root.join("top.txt").is_file(),
            "absolute paths map under the root"
        );
        // Commands run on the host: the file shows up at $SANDBOX_ROOT, not at /top.txt.
        assert_eq!(
            stdout(&f.p, &id, "cat \"$SANDBOX_ROOT/top.txt\"").await,
            "top"
        );
    }

    #[tokio::test]
    async fn logs_are_three_synthetic_lines() {
        let f = fixture();
        let (id, _) = spawn(&f.p).await;
        let all = f.p.logs(&id, 100).await.unwrap();
        assert_eq!(
            all,
            [
                format!("[INFO] mock sandbox {id} started"),
                "[INFO] workspace initialized at /workspace".into(),
                "[INFO] sandbox ready".into(),
            ]
        );
        assert_eq!(f.p.logs(&id, 2).await.unwrap(), all[1..]);
        assert_eq!(f.p.logs(&id, 3).await.unwrap(), all);
        assert!(f.p.logs(&id, 0).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn delete_edge_cases() {
        let f = fixture();
        let (id, root) = spawn(&f.p).await;
        write(&f.p, &id, "/workspace/full/x", b"x", None).await;
        let r = f.p.delete_file(&id, "/workspace/full", false).await;
        assert!(
            matches!(r, Err(ProviderError::InvalidInput(_))),
            "non-empty dir: {r:?}"
        );
        f.p.delete_file(&id, "/workspace/full/x", false)
            .await
            .unwrap();
        f.p.delete_file(&id, "/workspace/full", false)
            .await
            .unwrap();
        for p in ["/", "", "/workspace/.."] {
            let r = f.p.delete_file(&id, p, true).await;
            assert!(
                matches!(r, Err(ProviderError::InvalidInput(_))),
                "{p:?}: {r:?}"
            );
        }
        assert!(root.join("workspace").is_dir());
    }
}

mod exec {
    use super::*;

    #[tokio::test]
    async fn environment_and_cwd() {
        let f = fixture();
        let (id, root) = spawn(&f.p).await;
        let out = stdout(
            &f.p,
            &id,
            "printf '%s\\n' \"$HOME\" \"$WORKSPACE\" \"$SANDBOX_ROOT\" \"$(pwd -P)\" \"$PATH\"",
        )
        .await;
        let lines: Vec<&str> = out.lines().collect();
        let ws = root.join("workspace");
        assert_eq!(
            lines[..4],
            [
                root.to_str().unwrap(),
                ws.to_str().unwrap(),
                root.to_str().unwrap(),
                ws.to_str().unwrap()
            ]
        );
        assert!(!lines[4].is_empty(), "host env is inherited");
        // The fixed variables win over the request's.
        let mut req = sh("printf %s \"$HOME\"");
        req.env.insert("HOME".into(), "/elsewhere".into());
        assert_eq!(
            exec_collect(&f.p, &id, req).await.stdout_str(),
            root.to_str().unwrap()
        );
        // workdir maps under the root and is confined.
        let mut req = sh("pwd -P");
        req.workdir = Some("/".into());
        assert_eq!(
            exec_collect(&f.p, &id, req).await.stdout_str().trim_end(),
            root.to_str().unwrap()
        );
        for bad in ["/../..", "/workspace/missing"] {
            let mut req = sh("pwd");
            req.workdir = Some(bad.into());
            let r = exec_collect(&f.p, &id, req).await.result;
            assert!(
                matches!(r, Err(ProviderError::InvalidInput(_))),
                "{bad}: {r:?}"
            );
        }
    }

    #[tokio::test]
    async fn missing_program_is_127_and_signals_are_128_plus() {
        let f = fixture();
        let (id, _) = spawn(&f.p).await;
        let req = ExecRequest {
            command: "definitely-not-a-program-xyz".into(),
            args: vec!["a".into()],
            mode: ExecMode::Argv,
            ..Default::default()
        };
        let c = exec_collect(&f.p, &id, req).await;
        assert!(matches!(c.result, Ok(127)), "{c:?}");
        assert_eq!(
            c.stderr_str(),
            "definitely-not-a-program-xyz: command not found\n"
        );
        let c = exec_collect(&f.p, &id, sh("definitely-not-a-program-xyz")).await;
        assert!(matches!(c.result, Ok(127)), "shell mode: {c:?}");
        let c = exec_collect(&f.p, &id, sh("kill -TERM $$")).await;
        assert!(matches!(c.result, Ok(143)), "{c:?}");
        let r = exec_collect(&f.p, &id, sh("  ")).await.result;
        assert!(r.is_ok(), "blank shell command is sh's business: {r:?}");
        let mut req = sh("x");
        req.mode = ExecMode::Argv;
        req.command = String::new();
        let r = exec_collect(&f.p, &id, req).await.result;
        assert!(matches!(r, Err(ProviderError::InvalidInput(_))), "{r:?}");
    }

    #[tokio::test]
    async fn chunks_are_raw_reads_of_at_most_4096_bytes() {
        let f = fixture();
        let (id, _) = spawn(&f.p).await;
        let (tx, mut rx) = mpsc::channel::<StreamChunk>(8);
        let exec = f.p.exec(&id, sh("head -c 100000 /dev/zero"), tx);
        let gather = async {
            let mut sizes = Vec::new();
            while let Some(c) = rx.recv().await {
                sizes.push(c.data.len());
            }
            sizes
        };
        let (r, sizes) = tokio::join!(exec, gather);
        assert_eq!(r.unwrap(), 0);
        assert_eq!(sizes.iter().sum::<usize>(), 100_000);
        assert!(sizes.iter().all(|s| *s > 0 && *s <= 4096), "{sizes:?}");
        assert!(sizes.len() >= 25);
    }
}

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
