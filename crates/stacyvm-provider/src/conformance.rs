//! Checks every [`Provider`] must pass (STYLE.md convention 9). Each check spawns its own
//! sandbox from `image`, runs, destroys it (also when the check fails) and returns the first
//! broken expectation as a [`CheckFailure`].
//!
//! Only behaviour every backend shares is asserted here: paths under `/workspace` as seen both
//! by the files API and by commands (whose default cwd is `/workspace`), exit codes, error
//! variants. Backend-specific formats (the mock's symbolic list modes, relative list paths) are
//! tested next to each backend.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

use bytes::Bytes;
use stacyvm_types::{new_sandbox_id, ExecMode, SandboxState, StreamChunk, StreamKind};
use tokio::sync::mpsc;

use crate::{ExecRequest, Provider, ProviderError, SandboxSpec};

/// A check that did not hold.
#[derive(Debug, thiserror::Error)]
#[error("{check}: {message}")]
pub struct CheckFailure {
    pub check: &'static str,
    pub message: String,
}

type Outcome = Result<(), String>;

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}

/// Unwraps a provider result inside a check, turning an error into a failure message.
macro_rules! ok {
    ($e:expr) => {
        $e.map_err(|err| format!("{} failed: {err:?}", stringify!($e)))?
    };
}

/// The spec the suite spawns: a fresh `sb-` id and small resources.
pub fn spec(image: &str) -> SandboxSpec {
    SandboxSpec {
        id: new_sandbox_id(),
        image: image.to_string(),
        memory_mb: 256,
        vcpus: 1,
        owner_id: "conformance".into(),
        metadata: BTreeMap::new(),
    }
}

/// Output of one exec, collected.
#[derive(Debug)]
pub struct Collected {
    pub result: Result<i32, ProviderError>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Collected {
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// Runs `req` and gathers all its output.
pub async fn exec_collect(p: &dyn Provider, id: &str, req: ExecRequest) -> Collected {
    let (tx, mut rx) = mpsc::channel::<StreamChunk>(64);
    let gather = async {
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        while let Some(c) = rx.recv().await {
            match c.stream {
                StreamKind::Stdout => stdout.extend_from_slice(&c.data),
                StreamKind::Stderr => stderr.extend_from_slice(&c.data),
            }
        }
        (stdout, stderr)
    };
    let (result, (stdout, stderr)) = tokio::join!(p.exec(id, req, tx), gather);
    Collected {
        result,
        stdout,
        stderr,
    }
}

/// A shell-mode request for `cmd`.
pub fn sh(cmd: &str) -> ExecRequest {
    ExecRequest {
        command: cmd.into(),
        ..Default::default()
    }
}

async fn run_sh(p: &dyn Provider, id: &str, cmd: &str) -> Result<Collected, String> {
    let c = exec_collect(p, id, sh(cmd)).await;
    ensure!(c.result.is_ok(), "exec {cmd:?} failed: {:?}", c.result);
    Ok(c)
}

/// Spawns a sandbox, runs `body` on it, and destroys it whatever the outcome.
async fn with_sandbox<'a, F, Fut>(
    check: &'static str,
    p: &'a dyn Provider,
    image: &str,
    body: F,
) -> Result<(), CheckFailure>
where
    F: FnOnce(&'a dyn Provider, String) -> Fut,
    Fut: Future<Output = Outcome> + 'a,
{
    let fail = |message: String| CheckFailure { check, message };
    let spawned = p
        .spawn(&spec(image))
        .await
        .map_err(|e| fail(format!("spawn failed: {e:?}")))?;
    let id = spawned.runtime_id;
    let outcome = body(p, id.clone()).await;
    let cleanup = match p.destroy(&id).await {
        Ok(()) | Err(ProviderError::SandboxNotFound(_)) => Ok(()),
        Err(e) => Err(format!("cleanup destroy failed: {e:?}")),
    };
    outcome.and(cleanup).map_err(fail)
}

fn failed(check: &'static str, outcome: Outcome) -> Result<(), CheckFailure> {
    outcome.map_err(|message| CheckFailure { check, message })
}

fn is_not_found<T>(r: &Result<T, ProviderError>) -> bool {
    matches!(r, Err(ProviderError::SandboxNotFound(_)))
}

/// spawn → running → exec → destroy → destroyed (or not found); second destroy is idempotent or
/// not found; later calls are not found.
pub async fn lifecycle(p: &dyn Provider, image: &str) -> Result<(), CheckFailure> {
    failed(
        "lifecycle",
        async {
            ok!(p.health().await);
            let spawned = ok!(p.spawn(&spec(image)).await);
            let id = spawned.runtime_id;
            ensure!(!id.is_empty(), "empty runtime id");
            let st = ok!(p.status(&id).await);
            ensure!(st == SandboxState::Running, "status after spawn: {st:?}");
            let c = run_sh(p, &id, "echo hello").await?;
            ensure!(c.stdout_str() == "hello\n", "stdout {:?}", c.stdout_str());
            ok!(p.destroy(&id).await);
            let st = p.status(&id).await;
            ensure!(
                matches!(st, Ok(SandboxState::Destroyed)) || is_not_found(&st),
                "status after destroy: {st:?}"
            );
            let again = p.destroy(&id).await;
            ensure!(
                again.is_ok() || is_not_found(&again),
                "second destroy: {again:?}"
            );
            let c = exec_collect(p, &id, sh("true")).await;
            ensure!(
                is_not_found(&c.result),
                "exec after destroy: {:?}",
                c.result
            );
            let r = p.read_file(&id, "/workspace/x").await;
            ensure!(is_not_found(&r), "read after destroy: {r:?}");
            Ok(())
        }
        .await,
    )
}

/// Unknown runtime ids are `SandboxNotFound` everywhere, except that destroying one may also
/// succeed: destroy is idempotent, and a remote worker answers a destroy of a runtime it does
/// not hold with success (wire-reference §9.3), as it does a second destroy.
pub async fn unknown_sandbox(p: &dyn Provider, _image: &str) -> Result<(), CheckFailure> {
    failed(
        "unknown_sandbox",
        async {
            let id = "sb-nonexistent";
            let r = p.destroy(id).await;
            ensure!(r.is_ok() || is_not_found(&r), "destroy: {r:?}");
            let r = p.status(id).await;
            ensure!(is_not_found(&r), "status: {r:?}");
            let c = exec_collect(p, id, sh("true")).await;
            ensure!(is_not_found(&c.result), "exec: {:?}", c.result);
            let r = p
                .write_file(id, "/workspace/a", Bytes::from_static(b"x"), None)
                .await;
            ensure!(is_not_found(&r), "write_file: {r:?}");
            let r = p.list_files(id, "/workspace").await;
            ensure!(is_not_found(&r), "list_files: {r:?}");
            let r = p.logs(id, 10).await;
            ensure!(is_not_found(&r), "logs: {r:?}");
            let r = p.watch_dir(id, "/workspace", false).await;
            ensure!(is_not_found(&r), "watch_dir: {:?}", r.err());
            Ok(())
        }
        .await,
    )
}

/// Exit codes pass through, including 42; a non-zero exit is not an error.
pub async fn exec_exit_codes(p: &dyn Provider, image: &str) -> Result<(), CheckFailure> {
    with_sandbox("exec_exit_codes", p, image, |p, id| async move {
        for (cmd, want) in [("true", 0), ("false", 1), ("exit 42", 42), ("exit 3", 3)] {
            let c = run_sh(p, &id, cmd).await?;
            ensure!(
                c.result.as_ref().ok() == Some(&want),
                "{cmd}: {:?}",
                c.result
            );
        }
        Ok(())
    })
    .await
}

/// stderr is captured separately from stdout.
pub async fn exec_stderr(p: &dyn Provider, image: &str) -> Result<(), CheckFailure> {
    with_sandbox("exec_stderr", p, image, |p, id| async move {
        let c = run_sh(p, &id, "echo out; echo err >&2; exit 2").await?;
        ensure!(matches!(c.result, Ok(2)), "exit: {:?}", c.result);
        ensure!(c.stdout_str() == "out\n", "stdout {:?}", c.stdout_str());
        ensure!(c.stderr_str() == "err\n", "stderr {:?}", c.stderr_str());
        Ok(())
    })
    .await
}

/// Argv mode passes arguments literally: spaces, quotes and `$` survive.
pub async fn exec_argv_mode(p: &dyn Provider, image: &str) -> Result<(), CheckFailure> {
    with_sandbox("exec_argv_mode", p, image, |p, id| async move {
        let req = ExecRequest {
            command: "printf".into(),
            args: vec!["%s|".into(), "a b".into(), "it's".into(), "$HOME".into()],
            mode: ExecMode::Argv,
            ..Default::default()
        };
        let c = exec_collect(p, &id, req).await;
        ensure!(matches!(c.result, Ok(0)), "exit: {:?}", c.result);
        ensure!(
            c.stdout_str() == "a b|it's|$HOME|",
            "stdout {:?}",
            c.stdout_str()
        );
        Ok(())
    })
    .await
}

/// Shell mode runs `command` through `sh -c` and quotes each arg.
pub async fn exec_shell_args(p: &dyn Provider, image: &str) -> Result<(), CheckFailure> {
    with_sandbox("exec_shell_args", p, image, |p, id| async move {
        let req = ExecRequest {
            command: "X=1; printf '%s|' \"$X\"".into(),
            args: vec!["a b".into(), "it's".into(), "$X".into(), ";exit 9".into()],
            ..Default::default()
        };
        let c = exec_collect(p, &id, req).await;
        ensure!(matches!(c.result, Ok(0)), "exit: {:?}", c.result);
        ensure!(
            c.stdout_str() == "1|a b|it's|$X|;exit 9|",
            "stdout {:?}",
            c.stdout_str()
        );
        Ok(())
    })
    .await
}

/// `env` reaches the command.
pub async fn exec_env(p: &dyn Provider, image: &str) -> Result<(), CheckFailure> {
    with_sandbox("exec_env", p, image, |p, id| async move {
        let mut req = sh("printf '%s' \"$CONFORMANCE_VAR\"");
        req.env
            .insert("CONFORMANCE_VAR".into(), "bar baz 'q'".into());
        let c = exec_collect(p, &id, req).await;
        ensure!(matches!(c.result, Ok(0)), "exit: {:?}", c.result);
        ensure!(
            c.stdout_str() == "bar baz 'q'",
            "stdout {:?}",
            c.stdout_str()
        );
        Ok(())
    })
    .await
}

/// The default cwd is `/workspace` (where the files API writes), and `workdir` moves it.
pub async fn exec_workdir(p: &dyn Provider, image: &str) -> Result<(), CheckFailure> {
    with_sandbox("exec_workdir", p, image, |p, id| async move {
        ok!(p
            .write_file(&id, "/workspace/top.txt", Bytes::from_static(b"top"), None)
            .await);
        ok!(p
            .write_file(
                &id,
                "/workspace/sub/in.txt",
                Bytes::from_static(b"in"),
                None
            )
            .await);
        let c = run_sh(p, &id, "cat top.txt").await?;
        ensure!(
            c.stdout_str() == "top",
            "default cwd: {:?} {:?}",
            c.stdout_str(),
            c.stderr_str()
        );
        let mut req = sh("cat in.txt");
        req.workdir = Some("/workspace/sub".into());
        let c = exec_collect(p, &id, req).await;
        ensure!(
            matches!(c.result, Ok(0)),
            "exit: {:?} {}",
            c.result,
            c.stderr_str()
        );
        ensure!(c.stdout_str() == "in", "workdir cwd: {:?}", c.stdout_str());
        Ok(())
    })
    .await
}

/// A timeout returns `Timeout` promptly, kills the whole process group (a background child
/// never gets to write its marker) and leaves the sandbox usable.
pub async fn exec_timeout(p: &dyn Provider, image: &str) -> Result<(), CheckFailure> {
    with_sandbox("exec_timeout", p, image, |p, id| async move {
        let mut req = sh("(sleep 2; echo leaked > marker) & sleep 30");
        req.timeout = Some(Duration::from_secs(1));
        let start = Instant::now();
        let c = exec_collect(p, &id, req).await;
        ensure!(
            matches!(c.result, Err(ProviderError::Timeout)),
            "result: {:?}",
            c.result
        );
        ensure!(
            start.elapsed() < Duration::from_secs(10),
            "timeout took {:?}",
            start.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(3500).saturating_sub(start.elapsed())).await;
        let r = p.read_file(&id, "/workspace/marker").await;
        ensure!(
            matches!(r, Err(ProviderError::FileNotFound(_))),
            "background child survived the timeout: {r:?}"
        );
        let c = run_sh(p, &id, "echo ok").await?;
        ensure!(
            c.stdout_str() == "ok\n",
            "after timeout: {:?}",
            c.stdout_str()
        );
        Ok(())
    })
    .await
}

/// Output arrives while the command still runs, not only at the end.
pub async fn exec_streams_live(p: &dyn Provider, image: &str) -> Result<(), CheckFailure> {
    with_sandbox("exec_streams_live", p, image, |p, id| async move {
        let (tx, mut rx) = mpsc::channel::<StreamChunk>(64);
        let exec = async {
            let r = p.exec(&id, sh("echo a; sleep 1; echo b"), tx).await;
            (r, Instant::now())
        };
        let gather = async {
            let mut chunks = Vec::new();
            while let Some(c) = rx.recv().await {
                chunks.push((c, Instant::now()));
            }
            chunks
        };
        let ((result, done), chunks) = tokio::join!(exec, gather);
        ensure!(matches!(result, Ok(0)), "exit: {result:?}");
        let Some((first, at)) = chunks.first() else {
            return Err("no output".into());
        };
        ensure!(
            first.stream == StreamKind::Stdout && first.data == b"a\n",
            "first chunk {first:?}"
        );
        ensure!(
            done.duration_since(*at) >= Duration::from_millis(500),
            "first chunk only {:?} before the end",
            done.duration_since(*at)
        );
        let all: Vec<u8> = chunks.iter().flat_map(|(c, _)| c.data.clone()).collect();
        ensure!(
            all == b"a\nb\n",
            "output {:?}",
            String::from_utf8_lossy(&all)
        );
        Ok(())
    })
    .await
}

/// Two execs on one sandbox run side by side: each waits for the other's flag file, so run
/// one after the other they would time out (exit 7) instead of meeting.
pub async fn exec_concurrent(p: &dyn Provider, image: &str) -> Result<(), CheckFailure> {
    with_sandbox("exec_concurrent", p, image, |p, id| async move {
        let meet = |mine: &str, theirs: &str| {
            sh(&format!(
                "touch {mine}; i=0; while [ ! -e {theirs} ]; do \
                 i=$((i+1)); [ $i -gt 200 ] && exit 7; sleep 0.05; done; echo {mine}"
            ))
        };
        let (a, b) = tokio::join!(
            exec_collect(p, &id, meet("flag-a", "flag-b")),
            exec_collect(p, &id, meet("flag-b", "flag-a")),
        );
        ensure!(
            matches!(a.result, Ok(0)) && matches!(b.result, Ok(0)),
            "not concurrent: {a:?} {b:?}"
        );
        ensure!(
            a.stdout_str() == "flag-a\n" && b.stdout_str() == "flag-b\n",
            "{a:?} {b:?}"
        );
        Ok(())
    })
    .await
}

/// A caller slower than the command still gets every byte, in order: exec's output is never
/// dropped (the command waits for the caller instead). About 1.3 MB read one chunk per
/// millisecond.
pub async fn exec_slow_reader(p: &dyn Provider, image: &str) -> Result<(), CheckFailure> {
    with_sandbox("exec_slow_reader", p, image, |p, id| async move {
        const N: u32 = 200_000;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<StreamChunk>(1);
        let run = p.exec(&id, sh(&format!("seq 1 {N}")), tx);
        let slow = async {
            let mut got = Vec::new();
            while let Some(c) = rx.recv().await {
                got.extend_from_slice(&c.data);
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            got
        };
        let (r, got) = tokio::join!(run, slow);
        ensure!(matches!(r, Ok(0)), "exit: {r:?}");
        let want: Vec<u8> = (1..=N)
            .flat_map(|i| format!("{i}\n").into_bytes())
            .collect();
        ensure!(
            got == want,
            "{} of {} bytes, first difference at {:?}",
            got.len(),
            want.len(),
            got.iter().zip(&want).position(|(a, b)| a != b)
        );
        Ok(())
    })
    .await
}

// File operations live in their own module (after the macros it uses).
mod containment;
mod files;
mod links;
mod pause;
mod process;
mod snapshots;
mod stream;
mod suite;
mod volumes;
mod watch;
pub use containment::*;
pub use files::*;
pub use links::*;
pub use pause::*;
pub use process::*;
pub use snapshots::*;
pub use stream::*;
pub use suite::{checks, containment_checks, run_all, Check, CheckFuture, Fixture};
pub use volumes::*;
pub use watch::*;

/// Console logs are available and respect the line limit.
pub async fn logs(p: &dyn Provider, image: &str) -> Result<(), CheckFailure> {
    with_sandbox("logs", p, image, |p, id| async move {
        let all = ok!(p.logs(&id, 100).await);
        ensure!(all.len() <= 100, "{} lines", all.len());
        let one = ok!(p.logs(&id, 1).await);
        ensure!(one.len() <= 1, "limit 1 gave {one:?}");
        ensure!(
            one.last() == all.last(),
            "last line differs: {one:?} vs {all:?}"
        );
        Ok(())
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MockProvider;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mock_passes_everything() {
        let dir = tempfile::tempdir().expect("tempdir");
        // This checkout's agent: an installed one may predate what the suite checks (watches).
        let agent = crate::agent::built().expect(
            "no stacyvm-agent: cd crates/stacyvm-agent && cargo build --release (or set STACYVM_AGENT)",
        );
        let p = MockProvider::with_base_dir(dir.path()).with_agent(agent);
        if let Err(e) = run_all(&p, "mock").await {
            panic!("{e}");
        }
    }
}
