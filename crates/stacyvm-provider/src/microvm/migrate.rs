//! QEMU migration to and from files, over QMP: how templates save their device state, how a
//! paused VM keeps its memory on disk, and how a memory snapshot is taken. QEMU gets the files
//! as descriptors (`getfd`), since it runs as an unprivileged user that could not open them.

use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;

use super::qmp::Qmp;
use crate::ProviderError;

/// A wedged QEMU; a full 4 GiB guest saves in seconds.
const SAVE_TIMEOUT: Duration = Duration::from_secs(300);
/// QEMU 7.2 limits migration to 32 MiB/s by default; files take what the disk gives.
const MAX_BANDWIDTH: u64 = 1 << 40;

fn failed(what: &'static str) -> impl Fn(super::qmp::QmpError) -> ProviderError {
    move |e| ProviderError::Unavailable(format!("{what}: {e}"))
}

/// Sets `x-ignore-shared`: with it on, RAM in a shared file (a template's) is not saved.
pub(crate) async fn ignore_shared(
    qmp: &mut Qmp,
    on: bool,
    what: &'static str,
) -> Result<(), ProviderError> {
    let caps = json!({ "capabilities": [{ "capability": "x-ignore-shared", "state": on }] });
    qmp.execute("migrate-set-capabilities", Some(caps))
        .await
        .map_err(failed(what))
        .map(drop)
}

/// Creates `path` (0600, must not exist) for a state file.
pub(crate) fn create(path: &Path) -> Result<File, ProviderError> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| ProviderError::internal_with("creating the state file failed", e))
}

/// Migrates the stopped VM into `file` and waits until QEMU says `completed`. The VM stays
/// stopped (`postmigrate`): `cont` runs it again, or it is killed.
pub(crate) async fn save(
    qmp: &mut Qmp,
    file: &File,
    what: &'static str,
) -> Result<(), ProviderError> {
    let q = failed(what);
    qmp.execute(
        "migrate-set-parameters",
        Some(json!({ "max-bandwidth": MAX_BANDWIDTH })),
    )
    .await
    .map_err(&q)?;
    qmp.send_fd("state", file.as_fd()).await.map_err(&q)?;
    qmp.execute("migrate", Some(json!({ "uri": "fd:state" })))
        .await
        .map_err(&q)?;
    let until = Instant::now() + SAVE_TIMEOUT;
    let mut wait = Duration::from_millis(1);
    loop {
        let info = qmp.execute("query-migrate", None).await.map_err(&q)?;
        match info["status"].as_str().unwrap_or_default() {
            "completed" => return Ok(()),
            s @ ("failed" | "cancelled") => {
                let why = info["error-desc"].as_str().unwrap_or_default();
                return Err(ProviderError::Unavailable(format!(
                    "{what}: migration {s} {why}"
                )));
            }
            _ if Instant::now() > until => {
                let _ = qmp.execute("migrate_cancel", None).await;
                return Err(ProviderError::Unavailable(format!("{what}: timed out")));
            }
            _ => {
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_millis(20));
            }
        }
    }
}

/// [`save`] into `dest`, complete or not at all: written to `tmp`, flushed to the disk, then
/// renamed. Returns the bytes written.
pub(crate) async fn save_file(
    qmp: &mut Qmp,
    tmp: &Path,
    dest: &Path,
    what: &'static str,
) -> Result<u64, ProviderError> {
    let _ = std::fs::remove_file(tmp);
    let file = create(tmp)?;
    let r = save(qmp, &file, what).await;
    let r = match r {
        Ok(()) => {
            let tmp = tmp.to_path_buf();
            let dest = dest.to_path_buf();
            tokio::task::spawn_blocking(move || persist(file, &tmp, &dest))
                .await
                .map_err(|e| ProviderError::internal_with("saving the state failed", e))?
                .map_err(|e| ProviderError::internal_with("saving the state failed", e))
        }
        Err(e) => Err(e),
    };
    if r.is_err() {
        let _ = std::fs::remove_file(tmp);
    }
    r
}

/// fsync, rename, fsync of the directory.
fn persist(file: File, tmp: &Path, dest: &Path) -> std::io::Result<u64> {
    file.sync_all()?;
    let len = file.metadata()?.len();
    drop(file);
    std::fs::rename(tmp, dest)?;
    if let Some(dir) = dest.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(len)
}

/// Loads the migration stream in `state` into a QEMU started with `-incoming defer -S` and
/// waits (until `deadline`) for it to be `paused`, ready for `cont`.
pub(crate) async fn load(
    qmp: &mut Qmp,
    state: &Path,
    deadline: tokio::time::Instant,
    what: &'static str,
) -> Result<(), ProviderError> {
    let q = failed(what);
    let file = File::open(state)
        .map_err(|e| ProviderError::Unavailable(format!("{what}: state file: {e}")))?;
    qmp.send_fd("state", file.as_fd()).await.map_err(&q)?;
    drop(file);
    qmp.execute("migrate-incoming", Some(json!({ "uri": "fd:state" })))
        .await
        .map_err(&q)?;
    let mut wait = Duration::from_millis(1);
    loop {
        match qmp.status().await.map_err(&q)?.as_str() {
            "inmigrate" if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_millis(10));
            }
            "paused" => return Ok(()),
            other => return Err(ProviderError::Unavailable(format!("{what}: VM is {other}"))),
        }
    }
}
