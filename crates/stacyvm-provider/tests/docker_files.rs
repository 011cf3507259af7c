//! The docker provider's files API against a real daemon.
#![cfg(feature = "docker")]
#![allow(clippy::unwrap_used)]

mod docker_support;

use bytes::Bytes;
use docker_support::*;
use stacyvm_provider::{DockerConfig, Provider, ProviderError};

#[tokio::test]
async fn write_read_stat_list_glob() {
    let p = provider(DockerConfig::default()).await;
    let (id, _guard) = spawn(&p, IMAGE).await;

    // Binary-exact, larger than any single chunk, parents created.
    let data: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    p.write_file(
        &id,
        "/workspace/deep/er/blob.bin",
        Bytes::from(data.clone()),
        Some("0640"),
    )
    .await
    .unwrap();
    assert_eq!(
        p.read_file(&id, "/workspace/deep/er/blob.bin")
            .await
            .unwrap(),
        data
    );
    let st = p
        .stat_file(&id, "/workspace/deep/er/blob.bin")
        .await
        .unwrap();
    assert_eq!(
        (st.mode.as_str(), st.size, st.is_dir),
        ("640", 3_000_000, false)
    );
    assert_eq!(st.path, "/workspace/deep/er/blob.bin");
    assert_eq!(st.mod_time.len(), "2026-01-01T00:00:00Z".len());
    assert!(st.mod_time.ends_with('Z'));
    let o = sh(
        &p,
        &id,
        "stat -c '%a %s' /workspace/deep/er/blob.bin; stat -c %a /workspace/deep",
    )
    .await;
    assert_eq!(o.stdout, "640 3000000\n755\n");

    // Default mode, "executable", relative paths (relative to /), overwrite.
    p.write_file(&id, "workspace/a.txt", Bytes::from_static(b"one"), None)
        .await
        .unwrap();
    p.write_file(&id, "/workspace/a.txt", Bytes::from_static(b"two"), None)
        .await
        .unwrap();
    p.write_file(
        &id,
        "/workspace/run.sh",
        Bytes::from_static(b"#!/bin/sh\necho ran\n"),
        Some("executable"),
    )
    .await
    .unwrap();
    assert_eq!(sh(&p, &id, "./run.sh").await.stdout, "ran\n");
    assert_eq!(sh(&p, &id, "cat a.txt").await.stdout, "two");
    assert_eq!(
        p.stat_file(&id, "/workspace/a.txt").await.unwrap().mode,
        "644"
    );
    assert_eq!(
        p.stat_file(&id, "/workspace/run.sh").await.unwrap().mode,
        "755"
    );

    // What commands write, the files API reads.
    sh(&p, &id, "mkdir -p /workspace/.hidden && printf x > /workspace/.hidden/h && ln -s a.txt /workspace/link").await;
    assert_eq!(
        &p.read_file(&id, "/workspace/link").await.unwrap()[..],
        b"two"
    );

    let list = p.list_files(&id, "/workspace").await.unwrap();
    let names: Vec<&str> = list.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(
        names,
        [
            "/workspace/.hidden",
            "/workspace/a.txt",
            "/workspace/deep",
            "/workspace/link",
            "/workspace/run.sh"
        ]
    );
    let deep = list.iter().find(|f| f.path == "/workspace/deep").unwrap();
    assert!(deep.is_dir);
    assert_eq!(deep.mode, "755");
    let a = list.iter().find(|f| f.path == "/workspace/a.txt").unwrap();
    assert_eq!((a.size, a.mode.as_str(), a.is_dir), (3, "644", false));
    let root = p.list_files(&id, "/").await.unwrap();
    assert!(root.iter().any(|f| f.path == "/workspace" && f.is_dir));
    assert!(root.iter().any(|f| f.path == "/bin" && f.is_dir));

    assert_eq!(
        p.glob(&id, "/workspace/*.txt").await.unwrap(),
        ["/workspace/a.txt"]
    );
    assert_eq!(
        p.glob(&id, "/workspace/*/h").await.unwrap(),
        ["/workspace/.hidden/h"]
    );
    assert_eq!(
        p.glob(&id, "/workspace/deep/*/*.bin").await.unwrap(),
        ["/workspace/deep/er/blob.bin"]
    );
    assert_eq!(
        p.glob(&id, "/workspace/a.txt").await.unwrap(),
        ["/workspace/a.txt"]
    );
    assert!(p.glob(&id, "/workspace/*.nope").await.unwrap().is_empty());
    assert!(p.glob(&id, "/nowhere/*").await.unwrap().is_empty());
}

#[tokio::test]
async fn move_chmod_delete_and_errors() {
    let p = provider(DockerConfig::default()).await;
    let (id, _guard) = spawn(&p, IMAGE).await;
    p.write_file(&id, "/workspace/d/x.txt", Bytes::from_static(b"x"), None)
        .await
        .unwrap();

    p.move_file(&id, "/workspace/d/x.txt", "/workspace/new/place/y.txt")
        .await
        .unwrap();
    assert_eq!(
        &p.read_file(&id, "/workspace/new/place/y.txt")
            .await
            .unwrap()[..],
        b"x"
    );
    assert!(matches!(
        p.read_file(&id, "/workspace/d/x.txt").await,
        Err(ProviderError::FileNotFound(path)) if path == "/workspace/d/x.txt"
    ));
    assert!(matches!(
        p.move_file(&id, "/workspace/none", "/workspace/z").await,
        Err(ProviderError::FileNotFound(_))
    ));

    p.chmod(&id, "/workspace/new/place/y.txt", "0700")
        .await
        .unwrap();
    assert_eq!(
        p.stat_file(&id, "/workspace/new/place/y.txt")
            .await
            .unwrap()
            .mode,
        "700"
    );
    assert_eq!(
        sh(&p, &id, "stat -c %a /workspace/new/place/y.txt")
            .await
            .stdout,
        "700\n"
    );
    assert!(matches!(
        p.chmod(&id, "/workspace/new/place/y.txt", "rwx").await,
        Err(ProviderError::InvalidInput(_))
    ));
    assert!(matches!(
        p.chmod(&id, "/workspace/nope", "755").await,
        Err(ProviderError::FileNotFound(_))
    ));

    // Non-recursive delete of a non-empty directory fails; recursive succeeds.
    assert!(p.delete_file(&id, "/workspace/new", false).await.is_err());
    p.delete_file(&id, "/workspace/new", true).await.unwrap();
    assert!(matches!(
        p.stat_file(&id, "/workspace/new").await,
        Err(ProviderError::FileNotFound(_))
    ));
    p.delete_file(&id, "/workspace/d", false).await.unwrap();
    assert!(matches!(
        p.delete_file(&id, "/workspace/gone", false).await,
        Err(ProviderError::FileNotFound(_))
    ));
    p.delete_file(&id, "/workspace/gone", true).await.unwrap();
    assert!(matches!(
        p.delete_file(&id, "/", true).await,
        Err(ProviderError::InvalidInput(_))
    ));

    // Paths stay inside the container.
    assert!(matches!(
        p.read_file(&id, "../../etc/passwd").await,
        Err(ProviderError::InvalidInput(_))
    ));
    sh(&p, &id, "ln -s / /workspace/up").await;
    let passwd = p.read_file(&id, "/workspace/up/etc/passwd").await.unwrap();
    assert!(
        String::from_utf8_lossy(&passwd).contains("nobody:x:65534"),
        "the container's own file"
    );
    assert!(matches!(
        p.read_file(&id, "/workspace").await,
        Err(ProviderError::InvalidInput(_))
    ));
    assert!(matches!(
        p.write_file(&id, "/workspace", Bytes::new(), None).await,
        Err(ProviderError::InvalidInput(_))
    ));
    assert!(matches!(
        p.list_files(&id, "/nope").await,
        Err(ProviderError::FileNotFound(_))
    ));
    assert!(matches!(
        p.write_file(&id, "/workspace/f", Bytes::new(), Some("999"))
            .await,
        Err(ProviderError::InvalidInput(_))
    ));
}

/// A glob reads a tar of its prefix directory under the walk budget: more entries than the
/// budget allows, or a download that outlasts its time (here one huge sparse file, which the
/// archive sends in full), end in a clear 400-class error instead of running on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn glob_stops_at_its_budget() {
    let p = provider(DockerConfig::default()).await;
    let (id, _guard) = spawn(&p, IMAGE).await;
    let o = sh(
        &p,
        &id,
        "for i in $(seq 400); do mkdir -p big/d$i && (cd big/d$i && touch $(seq 300)); done",
    )
    .await;
    assert_eq!(o.code, 0, "{o:?}");
    let r = p.glob(&id, "/workspace/big/*/*").await.map(|v| v.len());
    assert!(
        matches!(&r, Err(ProviderError::InvalidInput(m)) if m.contains("entries")),
        "{r:?}"
    );
    assert_eq!(
        p.glob(&id, "/workspace/big/d7/1*").await.unwrap().len(),
        111
    );

    let o = sh(&p, &id, "mkdir huge && truncate -s 200G huge/sparse").await;
    assert_eq!(o.code, 0, "{o:?}");
    let t = std::time::Instant::now();
    let r = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        p.glob(&id, "/workspace/huge/*"),
    )
    .await
    .expect("the time budget ends the walk");
    assert!(
        matches!(&r, Err(ProviderError::InvalidInput(m)) if m.contains(" s;")),
        "{r:?} after {:?}",
        t.elapsed()
    );
}

/// Streamed uploads past the gathered first MiB go through a temporary file: modes (also ones
/// without owner write) and overwrites work, and nothing is left beside the target.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_uploads_keep_modes_and_leave_nothing_behind() {
    let p = provider(DockerConfig::default()).await;
    let (id, _guard) = spawn(&p, IMAGE).await;
    let data: Bytes = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    for (mode, want) in [("0444", "444"), ("0755", "755"), ("0640", "640")] {
        let n = p
            .write_file_stream(
                &id,
                "/workspace/sub/big.bin",
                stacyvm_provider::chunked(data.clone()),
                Some(mode),
            )
            .await
            .unwrap();
        assert_eq!(n, data.len() as u64);
        let st = p.stat_file(&id, "/workspace/sub/big.bin").await.unwrap();
        assert_eq!((st.mode.as_str(), st.size), (want, 3_000_000), "{mode}");
    }
    let back = stacyvm_provider::collect(
        p.read_file_stream(&id, "/workspace/sub/big.bin")
            .await
            .unwrap()
            .body,
    )
    .await
    .unwrap();
    assert!(back == data, "content differs");
    let o = sh(&p, &id, "ls -A /workspace/sub").await;
    assert_eq!(o.stdout, "big.bin\n", "{o:?}");
    let r = p
        .write_file_stream(
            &id,
            "/workspace/sub",
            stacyvm_provider::chunked(data.clone()),
            None,
        )
        .await;
    assert!(matches!(r, Err(ProviderError::InvalidInput(_))), "{r:?}");

    // An upload whose caller goes away mid-body leaves no temporary file either.
    let stalled = futures_util::StreamExt::chain(
        stacyvm_provider::chunked(data.clone()),
        futures_util::stream::pending(),
    );
    let upload = p.write_file_stream(&id, "/workspace/sub/gone.bin", Box::pin(stalled), None);
    assert!(
        tokio::time::timeout(std::time::Duration::from_secs(3), upload)
            .await
            .is_err(),
        "the upload cannot finish"
    );
    let mut left = String::new();
    for _ in 0..100 {
        left = sh(&p, &id, "ls -A /workspace/sub").await.stdout;
        if left == "big.bin\n" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(left, "big.bin\n");
}
