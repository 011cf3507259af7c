//! File-operation checks of the provider conformance suite.

use bytes::Bytes;

use super::{run_sh, with_sandbox, CheckFailure};
use crate::{Provider, ProviderError};

/// Every byte value and a 1 MiB file round-trip exactly.
pub async fn files_binary_roundtrip(p: &dyn Provider, image: &str) -> Result<(), CheckFailure> {
    with_sandbox("files_binary_roundtrip", p, image, |p, id| async move {
        let all: Vec<u8> = (0..=255u8).collect();
        let mut seed = 0x9e37_79b9_u32;
        let big: Vec<u8> = (0..1 << 20)
            .map(|_| {
                seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                seed.to_be_bytes()[0]
            })
            .collect();
        for (path, data) in [
            ("/workspace/bytes.bin", all),
            ("/workspace/big.bin", big),
            ("/workspace/empty.bin", Vec::new()),
        ] {
            ok!(p
                .write_file(&id, path, Bytes::from(data.clone()), None)
                .await);
            let back = ok!(p.read_file(&id, path).await);
            ensure!(
                back.as_ref() == data.as_slice(),
                "{path}: {} bytes back, want {}",
                back.len(),
                data.len()
            );
            let st = ok!(p.stat_file(&id, path).await);
            ensure!(
                st.size == data.len() as i64,
                "{path}: stat size {}",
                st.size
            );
        }
        // Overwrite replaces, not appends.
        ok!(p
            .write_file(
                &id,
                "/workspace/bytes.bin",
                Bytes::from_static(b"new"),
                None
            )
            .await);
        let back = ok!(p.read_file(&id, "/workspace/bytes.bin").await);
        ensure!(back.as_ref() == b"new", "overwrite: {back:?}");
        Ok(())
    })
    .await
}

/// Writes create missing parent directories; commands see the file.
pub async fn files_nested_parents(p: &dyn Provider, image: &str) -> Result<(), CheckFailure> {
    with_sandbox("files_nested_parents", p, image, |p, id| async move {
        let path = "/workspace/a/b/c/d.txt";
        ok!(p
            .write_file(&id, path, Bytes::from_static(b"deep"), None)
            .await);
        let back = ok!(p.read_file(&id, path).await);
        ensure!(back.as_ref() == b"deep", "read {back:?}");
        let st = ok!(p.stat_file(&id, "/workspace/a/b").await);
        ensure!(st.is_dir, "parent not a dir: {st:?}");
        let c = run_sh(p, &id, "cat a/b/c/d.txt").await?;
        ensure!(
            c.stdout_str() == "deep",
            "command sees {:?}",
            c.stdout_str()
        );
        Ok(())
    })
    .await
}

/// Listing shows each entry once, with the right kind and size.
pub async fn files_list(p: &dyn Provider, image: &str) -> Result<(), CheckFailure> {
    with_sandbox("files_list", p, image, |p, id| async move {
        ok!(p
            .write_file(&id, "/workspace/l/one.txt", Bytes::from_static(b"1"), None)
            .await);
        ok!(p
            .write_file(&id, "/workspace/l/two.txt", Bytes::from_static(b"22"), None)
            .await);
        ok!(p
            .write_file(&id, "/workspace/l/sub/x", Bytes::new(), None)
            .await);
        let mut items = ok!(p.list_files(&id, "/workspace/l").await);
        items.sort_by(|a, b| a.path.cmp(&b.path));
        let names: Vec<&str> = items
            .iter()
            .map(|f| f.path.rsplit('/').next().unwrap_or(""))
            .collect();
        ensure!(names == ["one.txt", "sub", "two.txt"], "names {names:?}");
        for f in &items {
            ensure!(f.path.contains("workspace/l/"), "path {:?}", f.path);
            ensure!(!f.mode.is_empty() && !f.mod_time.is_empty(), "entry {f:?}");
        }
        ensure!(
            !items[0].is_dir && items[0].size == 1,
            "one.txt {:?}",
            items[0]
        );
        ensure!(items[1].is_dir, "sub {:?}", items[1]);
        ensure!(
            !items[2].is_dir && items[2].size == 2,
            "two.txt {:?}",
            items[2]
        );
        let r = p.list_files(&id, "/workspace/nope").await;
        ensure!(
            matches!(r, Err(ProviderError::FileNotFound(_))),
            "missing dir: {r:?}"
        );
        Ok(())
    })
    .await
}

/// Stat reports size and kind; a missing path is `FileNotFound` with the caller's path.
pub async fn files_stat(p: &dyn Provider, image: &str) -> Result<(), CheckFailure> {
    with_sandbox("files_stat", p, image, |p, id| async move {
        ok!(p
            .write_file(
                &id,
                "/workspace/s.txt",
                Bytes::from_static(b"hello world"),
                None
            )
            .await);
        let st = ok!(p.stat_file(&id, "/workspace/s.txt").await);
        ensure!(st.size == 11 && !st.is_dir, "file {st:?}");
        ensure!(st.path == "/workspace/s.txt", "path {:?}", st.path);
        let st = ok!(p.stat_file(&id, "/workspace").await);
        ensure!(st.is_dir, "dir {st:?}");
        let r = p.stat_file(&id, "/workspace/missing.txt").await;
        ensure!(
            matches!(&r, Err(ProviderError::FileNotFound(p)) if p == "/workspace/missing.txt"),
            "missing: {r:?}"
        );
        Ok(())
    })
    .await
}

/// Shell globs return absolute sandbox paths; no match is an empty list.
pub async fn files_glob(p: &dyn Provider, image: &str) -> Result<(), CheckFailure> {
    with_sandbox("files_glob", p, image, |p, id| async move {
        for f in ["a.log", "b.log", "c.txt"] {
            let path = format!("/workspace/g/{f}");
            ok!(p
                .write_file(&id, &path, Bytes::from_static(b"x"), None)
                .await);
        }
        let mut got = ok!(p.glob(&id, "/workspace/g/*.log").await);
        got.sort();
        ensure!(
            got == ["/workspace/g/a.log", "/workspace/g/b.log"],
            "got {got:?}"
        );
        let got = ok!(p.glob(&id, "/workspace/g/*.none").await);
        ensure!(got.is_empty(), "no-match {got:?}");
        Ok(())
    })
    .await
}

/// Move creates destination parents; the source is gone afterwards.
pub async fn files_move(p: &dyn Provider, image: &str) -> Result<(), CheckFailure> {
    with_sandbox("files_move", p, image, |p, id| async move {
        ok!(p
            .write_file(
                &id,
                "/workspace/m/src.txt",
                Bytes::from_static(b"moved"),
                None
            )
            .await);
        ok!(p
            .move_file(&id, "/workspace/m/src.txt", "/workspace/m/new/dir/dst.txt")
            .await);
        let back = ok!(p.read_file(&id, "/workspace/m/new/dir/dst.txt").await);
        ensure!(back.as_ref() == b"moved", "dst {back:?}");
        let r = p.read_file(&id, "/workspace/m/src.txt").await;
        ensure!(
            matches!(r, Err(ProviderError::FileNotFound(_))),
            "src: {r:?}"
        );
        let r = p
            .move_file(&id, "/workspace/m/absent", "/workspace/m/x")
            .await;
        ensure!(
            matches!(r, Err(ProviderError::FileNotFound(_))),
            "missing source: {r:?}"
        );
        Ok(())
    })
    .await
}

/// chmod `0755` makes a script runnable; a bad mode is `InvalidInput`.
pub async fn files_chmod(p: &dyn Provider, image: &str) -> Result<(), CheckFailure> {
    with_sandbox("files_chmod", p, image, |p, id| async move {
        let script = Bytes::from_static(b"#!/bin/sh\necho ran\n");
        ok!(p.write_file(&id, "/workspace/s.sh", script, None).await);
        ok!(p.chmod(&id, "/workspace/s.sh", "0755").await);
        let st = ok!(p.stat_file(&id, "/workspace/s.sh").await);
        ensure!(st.mode.ends_with("755"), "mode {:?}", st.mode);
        let c = run_sh(p, &id, "./s.sh").await?;
        ensure!(
            c.stdout_str() == "ran\n",
            "script: {:?} {:?}",
            c.stdout_str(),
            c.stderr_str()
        );
        ok!(p.chmod(&id, "/workspace/s.sh", "644").await);
        let st = ok!(p.stat_file(&id, "/workspace/s.sh").await);
        ensure!(st.mode.ends_with("644"), "mode {:?}", st.mode);
        let r = p.chmod(&id, "/workspace/s.sh", "rwx").await;
        ensure!(
            matches!(r, Err(ProviderError::InvalidInput(_))),
            "bad mode: {r:?}"
        );
        let r = p.chmod(&id, "/workspace/none", "644").await;
        ensure!(
            matches!(r, Err(ProviderError::FileNotFound(_))),
            "missing: {r:?}"
        );
        Ok(())
    })
    .await
}

/// Delete: missing is `FileNotFound` unless recursive; recursive removes whole trees.
pub async fn files_delete(p: &dyn Provider, image: &str) -> Result<(), CheckFailure> {
    with_sandbox("files_delete", p, image, |p, id| async move {
        ok!(p
            .write_file(&id, "/workspace/d.txt", Bytes::from_static(b"x"), None)
            .await);
        ok!(p.delete_file(&id, "/workspace/d.txt", false).await);
        let r = p.read_file(&id, "/workspace/d.txt").await;
        ensure!(
            matches!(r, Err(ProviderError::FileNotFound(_))),
            "after delete: {r:?}"
        );
        let r = p.delete_file(&id, "/workspace/d.txt", false).await;
        ensure!(
            matches!(&r, Err(ProviderError::FileNotFound(p)) if p == "/workspace/d.txt"),
            "missing: {r:?}"
        );
        ok!(p.delete_file(&id, "/workspace/never", true).await);
        ok!(p
            .write_file(
                &id,
                "/workspace/tree/a/b.txt",
                Bytes::from_static(b"x"),
                None
            )
            .await);
        ok!(p
            .write_file(&id, "/workspace/tree/c.txt", Bytes::from_static(b"x"), None)
            .await);
        ok!(p.delete_file(&id, "/workspace/tree", true).await);
        let r = p.stat_file(&id, "/workspace/tree").await;
        ensure!(
            matches!(r, Err(ProviderError::FileNotFound(_))),
            "tree: {r:?}"
        );
        let st = ok!(p.stat_file(&id, "/workspace").await);
        ensure!(st.is_dir, "workspace went away");
        Ok(())
    })
    .await
}

/// Relative paths climbing out of the sandbox are `InvalidInput`, for every operation.
pub async fn files_path_escape(p: &dyn Provider, image: &str) -> Result<(), CheckFailure> {
    with_sandbox("files_path_escape", p, image, |p, id| async move {
        let bad = "../../etc/passwd";
        let inv = |r: &Result<_, ProviderError>| matches!(r, Err(ProviderError::InvalidInput(_)));
        let r = p.read_file(&id, bad).await.map(drop);
        ensure!(inv(&r), "read: {r:?}");
        let r = p
            .write_file(&id, "../../tmp/escape.txt", Bytes::from_static(b"x"), None)
            .await;
        ensure!(inv(&r), "write: {r:?}");
        let r = p.stat_file(&id, bad).await.map(drop);
        ensure!(inv(&r), "stat: {r:?}");
        let r = p.list_files(&id, "../..").await.map(drop);
        ensure!(inv(&r), "list: {r:?}");
        let r = p.delete_file(&id, bad, true).await;
        ensure!(inv(&r), "delete: {r:?}");
        let r = p.move_file(&id, bad, "/workspace/p").await;
        ensure!(inv(&r), "move from: {r:?}");
        let r = p.chmod(&id, bad, "777").await;
        ensure!(inv(&r), "chmod: {r:?}");
        let r = p.glob(&id, "../../etc/*").await.map(drop);
        ensure!(inv(&r), "glob: {r:?}");
        Ok(())
    })
    .await
}
