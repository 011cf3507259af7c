//! Pause and resume (sandbox-model.md §2, docs/state.md): a paused sandbox's processes stop
//! where they are and continue after resume; both are idempotent; `status` says `paused`; a
//! paused sandbox can be destroyed.

use std::time::{Duration, Instant};

use stacyvm_types::SandboxState;

use super::process::proc_sh;
use super::{with_sandbox, CheckFailure};
use crate::Provider;

/// The counter's period: its value moves by about 1/PERIOD a second while it runs.
const PERIOD: &str = "0.1";
/// How long the check keeps the sandbox paused (a running counter would move by ~15).
const PAUSED_FOR: Duration = Duration::from_millis(1500);
/// Steps the counter may still take around the pause (the pause call itself and the read
/// after resume are not instantaneous), far below the ~15 it takes when not paused.
const SLACK: u64 = 5;

async fn counter(p: &dyn Provider, id: &str) -> Result<u64, String> {
    let b = p
        .read_file(id, "/workspace/counter")
        .await
        .map_err(|e| format!("read counter: {e:?}"))?;
    let text = String::from_utf8_lossy(&b);
    text.trim()
        .parse()
        .map_err(|_| format!("counter holds {text:?}"))
}

/// Waits until the counter reaches `at_least` (or 20 s pass); returns its value.
async fn counter_reaches(p: &dyn Provider, id: &str, at_least: u64) -> Result<u64, String> {
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        match counter(p, id).await {
            Ok(n) if n >= at_least => return Ok(n),
            Ok(n) if Instant::now() > end => {
                return Err(format!("counter stayed at {n}, wanted {at_least}"))
            }
            Err(e) if Instant::now() > end => return Err(e),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// A counter loop stops advancing while its sandbox is paused and continues after resume;
/// pause and resume are idempotent and `status` follows them.
pub async fn pause_keeps_processes(p: &dyn Provider, image: &str) -> Result<(), CheckFailure> {
    with_sandbox("pause_keeps_processes", p, image, |p, id| async move {
        // Relative paths: commands start in /workspace on every backend (the mock has no
        // other root).
        let cmd = format!(
            "i=0; while :; do i=$((i+1)); echo $i > counter.tmp; mv counter.tmp counter; \
             sleep {PERIOD}; done"
        );
        let started = ok!(p.process_start(&id, proc_sh(&cmd)).await);
        counter_reaches(p, &id, 2).await?;
        // Read before pausing: not every backend can read files of a frozen sandbox.
        let before = counter(p, &id).await?;
        ok!(p.pause(&id).await);
        ok!(p.pause(&id).await);
        ensure!(
            p.capabilities().contains(&"pause"),
            "pause works but capabilities() does not list it"
        );
        let st = ok!(p.status(&id).await);
        ensure!(st == SandboxState::Paused, "status while paused is {st}");
        tokio::time::sleep(PAUSED_FOR).await;
        ok!(p.resume(&id).await);
        let after = counter(p, &id).await?;
        ensure!(
            after <= before + SLACK,
            "the counter ran while paused: {before} before, {after} right after resume"
        );
        ok!(p.resume(&id).await);
        let st = ok!(p.status(&id).await);
        ensure!(st == SandboxState::Running, "status after resume is {st}");
        counter_reaches(p, &id, after + 3).await?;
        let info = ok!(p.process_get(&id, started.pid).await);
        ensure!(
            info.exit_code.is_none(),
            "the process did not survive pause and resume: {info:?}"
        );
        Ok(())
    })
    .await
}

/// A paused sandbox with a running process is destroyed like any other.
pub async fn pause_then_destroy(p: &dyn Provider, image: &str) -> Result<(), CheckFailure> {
    with_sandbox("pause_then_destroy", p, image, |p, id| async move {
        ok!(p.process_start(&id, proc_sh("sleep 600")).await);
        ok!(p.pause(&id).await);
        let destroyed = tokio::time::timeout(Duration::from_secs(30), p.destroy(&id))
            .await
            .map_err(|_| "destroy of a paused sandbox hung".to_string())?;
        ok!(destroyed);
        let st = p.status(&id).await;
        ensure!(
            matches!(
                st,
                Err(crate::ProviderError::SandboxNotFound(_)) | Ok(SandboxState::Destroyed)
            ),
            "status after destroy: {st:?}"
        );
        Ok(())
    })
    .await
}
