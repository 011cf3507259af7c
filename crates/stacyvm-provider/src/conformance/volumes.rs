//! Volumes (sandbox-model.md §2, docs/state.md): what one sandbox writes to a volume through
//! the files API, exec or a process is there for the next sandbox that mounts it, after the
//! first is destroyed. A backend without the `volumes` capability must answer `NotSupported`.

use std::time::{Duration, Instant};

use super::process::proc_sh;
use super::{failed, run_sh, spec, CheckFailure, Outcome};

use crate::{Provider, ProviderError, VolumeMountSpec};

/// Below /workspace, so relative paths reach it on every backend (the mock has no other root).
const AT: &str = "/workspace/vol";

fn mount(volume: &str, read_only: bool) -> Vec<VolumeMountSpec> {
    vec![VolumeMountSpec {
        volume: volume.to_string(),
        mount_path: AT.to_string(),
        read_only,
    }]
}

async fn destroy(p: &dyn Provider, id: &str) {
    let _ = p.destroy(id).await;
}

async fn without(p: &dyn Provider, image: &str) -> Outcome {
    let r = p.create_volume("conf-unsupported", 0).await;
    ensure!(
        matches!(r, Err(ProviderError::NotSupported(_))),
        "create_volume without the capability: {r:?}"
    );
    let r = p
        .spawn_with_volumes(&spec(image), &mount("conf-unsupported", false))
        .await;
    if let Ok(s) = &r {
        destroy(p, &s.runtime_id).await;
    }
    ensure!(
        matches!(r, Err(ProviderError::NotSupported(_))),
        "spawn with a volume without the capability: {r:?}"
    );
    Ok(())
}

async fn wait_for_file(p: &dyn Provider, id: &str, path: &str) -> Outcome {
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        match p.read_file(id, path).await {
            Ok(b) if !b.is_empty() => return Ok(()),
            _ if Instant::now() > end => return Err(format!("{path} never appeared")),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

async fn round_trip(p: &dyn Provider, image: &str, name: &str) -> Outcome {
    ok!(p.create_volume(name, 16).await);
    ok!(p.create_volume(name, 16).await); // idempotent
    let listed = ok!(p.list_volumes().await).unwrap_or_default();
    ensure!(
        listed.iter().any(|v| v == name),
        "{name} not listed: {listed:?}"
    );

    let a = ok!(p
        .spawn_with_volumes(&spec(image), &mount(name, false))
        .await)
    .runtime_id;
    let wrote: Outcome = async {
        ok!(p
            .write_file(&a, &format!("{AT}/files.txt"), "files\n".into(), None)
            .await);
        run_sh(p, &a, "echo exec > vol/exec.txt && mkdir -p vol/sub").await?;
        ok!(p
            .process_start(&a, proc_sh("echo process > vol/sub/proc.txt"))
            .await);
        wait_for_file(p, &a, &format!("{AT}/sub/proc.txt")).await?;
        let c = run_sh(p, &a, "cat vol/files.txt vol/exec.txt vol/sub/proc.txt").await?;
        ensure!(
            c.stdout_str() == "files\nexec\nprocess\n",
            "in the writer: {:?}",
            c.stdout_str()
        );
        Ok(())
    }
    .await;
    destroy(p, &a).await;
    wrote?;

    let b = ok!(p.spawn_with_volumes(&spec(image), &mount(name, true)).await).runtime_id;
    let read: Outcome = async {
        let f = ok!(p.read_file(&b, &format!("{AT}/exec.txt")).await);
        ensure!(&f[..] == b"exec\n", "files API in the next sandbox: {f:?}");
        let c = run_sh(p, &b, "cat vol/files.txt vol/exec.txt vol/sub/proc.txt").await?;
        ensure!(
            c.stdout_str() == "files\nexec\nprocess\n",
            "exec in the next sandbox: {:?}",
            c.stdout_str()
        );
        let names: Vec<String> = ok!(p.list_files(&b, AT).await)
            .into_iter()
            .map(|f| f.path)
            .collect();
        ensure!(
            names.iter().any(|n| n.ends_with("files.txt")),
            "listing the mount: {names:?}"
        );
        Ok(())
    }
    .await;
    destroy(p, &b).await;
    read
}

/// Data written to a volume by a sandbox is seen by the next one that mounts it.
pub async fn volume_outlives_sandbox(p: &dyn Provider, image: &str) -> Result<(), CheckFailure> {
    failed(
        "volume_outlives_sandbox",
        async {
            if !p.capabilities().contains(&"volumes") {
                return without(p, image).await;
            }
            let name = format!("conf-{}", &stacyvm_types::new_sandbox_id()[3..]);
            let outcome = round_trip(p, image, &name).await;
            let removed = p.delete_volume(&name).await;
            outcome?;
            ok!(removed);
            ok!(p.delete_volume(&name).await); // a missing one is success
            let listed = ok!(p.list_volumes().await).unwrap_or_default();
            ensure!(!listed.contains(&name), "{name} still listed");
            Ok(())
        }
        .await,
    )
}
