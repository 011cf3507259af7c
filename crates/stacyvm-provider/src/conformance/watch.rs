//! Directory watches (docs/files.md): every kind is reported with its path relative to the
//! watched directory, a recursive watch covers directories old and new, a plain one only its
//! own entries, and dropping the stream ends the watch inside the sandbox.
//!
//! The changes are made by commands (as a program in the sandbox would make them), one step at
//! a time, each awaited before the next: the kernel may merge or reorder what one step does, so
//! a step only asks that each of its events shows up.

use std::time::Duration;

use futures_util::StreamExt;
use stacyvm_types::WatchKind::{self, Chmod, Create, Remove, Rename, Write};

use super::{run_sh, with_sandbox, CheckFailure};
use crate::{Provider, ProviderError, WatchStream};

/// How long one step's events may take (a remote worker and a TCG guest add their latency).
const WAIT: Duration = Duration::from_secs(20);

type Seen = Vec<(String, WatchKind)>;

/// Reads `s` until each of `want` was seen (adding everything read to `seen`).
async fn expect(
    s: &mut WatchStream,
    seen: &mut Seen,
    want: &[(&str, WatchKind)],
) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let missing: Vec<_> = want
            .iter()
            .filter(|(n, k)| !seen.iter().any(|(sn, sk)| sn == n && sk == k))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        match tokio::time::timeout_at(deadline, s.next()).await {
            Err(_) => return Err(format!("no {missing:?} within {WAIT:?}; saw {seen:?}")),
            Ok(None) => return Err(format!("the watch ended before {missing:?}; saw {seen:?}")),
            Ok(Some(Err(e))) => return Err(format!("the watch failed before {missing:?}: {e:?}")),
            Ok(Some(Ok(e))) => seen.push((e.name, e.kind)),
        }
    }
}

/// inotify instances of the sandbox's agent: a command's parent is the agent that runs it.
async fn agent_watches(p: &dyn Provider, id: &str) -> Result<usize, String> {
    let c = run_sh(
        p,
        id,
        "ls -l /proc/$PPID/fd 2>/dev/null | grep -c inotify; true",
    )
    .await?;
    c.stdout_str()
        .trim()
        .parse()
        .map_err(|_| format!("counting the agent's watches printed {:?}", c.stdout_str()))
}

/// Create, write, chmod, rename and remove under a recursive watch (in a directory that
/// existed and in one made after the watch), a plain watch that ignores subdirectories, the
/// errors, and the end of the watch in the sandbox once its stream is dropped.
pub async fn watch_dir(p: &dyn Provider, image: &str) -> Result<(), CheckFailure> {
    with_sandbox("watch_dir", p, image, |p, id| async move {
        // Relative paths: commands start in /workspace on every backend.
        run_sh(p, &id, "mkdir -p w/old && echo f > w/file").await?;
        let missing = p.watch_dir(&id, "/workspace/nope", true).await;
        ensure!(
            matches!(&missing, Err(ProviderError::FileNotFound(p)) if p == "/workspace/nope"),
            "watching a missing path: {:?}",
            missing.err()
        );
        let file = p.watch_dir(&id, "/workspace/w/file", false).await;
        ensure!(
            matches!(file, Err(ProviderError::InvalidInput(_))),
            "watching a file: {:?}",
            file.err()
        );

        let mut s = ok!(p.watch_dir(&id, "/workspace/w", true).await);
        let seen = &mut Seen::new();
        run_sh(p, &id, "echo hi > w/a.txt").await?;
        expect(&mut s, seen, &[("a.txt", Create), ("a.txt", Write)]).await?;
        run_sh(p, &id, "echo x > w/old/c").await?;
        expect(&mut s, seen, &[("old/c", Create)]).await?;
        // Made at once: the new directory's watch may come after its file, which is then
        // reported by the scan of the new directory.
        run_sh(p, &id, "mkdir w/sub && echo x > w/sub/b.txt").await?;
        expect(&mut s, seen, &[("sub", Create), ("sub/b.txt", Create)]).await?;
        run_sh(p, &id, "echo y >> w/sub/b.txt").await?;
        expect(&mut s, seen, &[("sub/b.txt", Write)]).await?;
        run_sh(p, &id, "chmod 600 w/a.txt").await?;
        expect(&mut s, seen, &[("a.txt", Chmod)]).await?;
        run_sh(p, &id, "mv w/a.txt w/d.txt").await?;
        expect(&mut s, seen, &[("a.txt", Rename), ("d.txt", Create)]).await?;
        run_sh(p, &id, "rm w/d.txt && rm -r w/sub").await?;
        expect(
            &mut s,
            seen,
            &[("d.txt", Remove), ("sub/b.txt", Remove), ("sub", Remove)],
        )
        .await?;
        ensure!(
            seen.iter()
                .all(|(n, _)| !n.starts_with('/') && !n.is_empty()),
            "names must be relative to the watched directory: {seen:?}"
        );

        let mut flat = ok!(p.watch_dir(&id, "/workspace/w", false).await);
        let flat_seen = &mut Seen::new();
        run_sh(p, &id, "echo 1 > w/old/deep && echo 2 > w/top").await?;
        expect(&mut flat, flat_seen, &[("top", Create)]).await?;
        ensure!(
            flat_seen.iter().all(|(n, _)| !n.contains('/')),
            "a plain watch reported a subdirectory's entry: {flat_seen:?}"
        );

        let open = agent_watches(p, &id).await?;
        ensure!(
            open >= 2,
            "the agent holds {open} inotify instances with two watches open"
        );
        drop(flat);
        drop(s);
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let left = agent_watches(p, &id).await?;
            if left == 0 {
                break;
            }
            ensure!(
                tokio::time::Instant::now() < deadline,
                "{left} watches still open in the sandbox {WAIT:?} after their streams were dropped"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    })
    .await
}
