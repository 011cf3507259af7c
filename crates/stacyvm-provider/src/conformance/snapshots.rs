//! Snapshots (sandbox-model.md §2, docs/state.md): a sandbox spawned from a snapshot has the
//! files its source had when the snapshot was taken; the source keeps running. A backend
//! without the `snapshots` capability must answer `NotSupported`.

use super::{failed, run_sh, spec, CheckFailure, Outcome};
use crate::{Provider, ProviderError};

async fn round_trip(p: &dyn Provider, image: &str, a: &str, sid: &str) -> Outcome {
    ok!(p
        .write_file(a, "/workspace/files.txt", "files\n".into(), None)
        .await);
    run_sh(p, a, "mkdir -p sub && echo exec > sub/exec.txt").await?;
    let made = ok!(p.snapshot(a, sid).await);
    ensure!(made.size_bytes >= 11, "snapshot size {}", made.size_bytes);
    // The source keeps running, and later changes are not in the snapshot, which outlives
    // it. (Destroyed first: a remote provider serves one sandbox at a time.)
    run_sh(p, a, "echo later > files.txt").await?;
    ok!(p.destroy(a).await);
    let b = ok!(p.spawn_from_snapshot(&spec(image), &[], sid).await).runtime_id;
    let seen = run_sh(p, &b, "cat files.txt sub/exec.txt").await;
    let _ = p.destroy(&b).await;
    let seen = seen?;
    ensure!(
        seen.stdout_str() == "files\nexec\n",
        "restored: {:?}",
        seen.stdout_str()
    );
    ok!(p.delete_snapshot(sid).await);
    ok!(p.delete_snapshot(sid).await); // a missing one is success
    let gone = p.spawn_from_snapshot(&spec(image), &[], sid).await;
    if let Ok(s) = &gone {
        let _ = p.destroy(&s.runtime_id).await;
    }
    ensure!(gone.is_err(), "spawned from a deleted snapshot");
    Ok(())
}

/// A snapshot restores its source's files as they were when it was taken.
pub async fn snapshot_restores_files(p: &dyn Provider, image: &str) -> Result<(), CheckFailure> {
    failed(
        "snapshot_restores_files",
        async {
            let a = ok!(p.spawn(&spec(image)).await).runtime_id;
            let sid = format!("snap-{}", &stacyvm_types::new_sandbox_id()[3..]);
            let outcome = if p.capabilities().contains(&"snapshots") {
                round_trip(p, image, &a, &sid).await
            } else {
                let r = p.snapshot(&a, &sid).await;
                if matches!(r, Err(ProviderError::NotSupported(_))) {
                    Ok(())
                } else {
                    Err(format!("snapshot without the capability: {r:?}"))
                }
            };
            let _ = p.destroy(&a).await;
            outcome
        }
        .await,
    )
}
