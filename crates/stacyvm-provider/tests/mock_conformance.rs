//! The shared provider suite against the mock, plus the mock's own wire formats (wire reference
//! §6 and §13.1) and exec details. Isolation and faults: `mock_isolation.rs`.
#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use stacyvm_provider::conformance::{self, exec_collect, sh};
use stacyvm_provider::{ExecRequest, Provider, ProviderError};
use stacyvm_types::{ExecMode, SandboxState, StreamChunk};
use tokio::sync::mpsc;

mod mock_support;
use mock_support::{fixture, spawn, stdout, write};

async fn fresh() -> mock_support::Fixture {
    fixture()
}

mod shared {
    stacyvm_provider::provider_conformance_tests!(super::fresh, "mock");
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
