//! Volumes and the record of which sandbox mounts which (sandbox-model.md §2). Mount checks
//! and volume deletes lock the volume's row (`FOR UPDATE`) in one transaction each, so two
//! spawns cannot both take a volume read-write, and a delete cannot slip past a spawn that
//! mounts it.

use sqlx::{PgConnection, Row};
use stacyvm_types::SandboxId;

use super::{db_err, PgStore};
use crate::rows::ts;
use crate::statements::volumes::INSERT;
use crate::{StoreError, Volume, VolumeMount};

const KIND: &str = "volume";

/// A live sandbox (not destroyed) that mounts `$1`, other than `$2`, read-write unless `$3`.
const LIVE_MOUNT: &str = "SELECT m.sandbox_id FROM volume_mounts m \
     JOIN sandboxes s ON s.id = m.sandbox_id \
     WHERE m.volume = $1 AND m.sandbox_id <> $2 AND ($3 OR m.read_only = 0) \
       AND s.state <> 'destroyed' \
     ORDER BY m.sandbox_id LIMIT 1";

pub(super) async fn insert(db: &PgStore, v: &Volume) -> Result<(), StoreError> {
    let q = sqlx::query(INSERT)
        .bind(&v.name)
        .bind(v.size_mb)
        .bind(&v.provider)
        .bind(&v.worker_id)
        .bind(ts(&v.created_at));
    db.execute(KIND, q).await.map(drop)
}

/// Locks the volume's row for the transaction; false when there is none.
async fn lock_volume(c: &mut PgConnection, name: &str) -> Result<bool, StoreError> {
    let row = sqlx::query("SELECT name FROM volumes WHERE name = $1 FOR UPDATE")
        .bind(name)
        .fetch_optional(&mut *c)
        .await
        .map_err(db_err(KIND))?;
    Ok(row.is_some())
}

async fn live_mount(
    c: &mut PgConnection,
    volume: &str,
    except: &str,
    any: bool,
) -> Result<Option<String>, StoreError> {
    let row = sqlx::query(LIVE_MOUNT)
        .bind(volume)
        .bind(except)
        .bind(any)
        .fetch_optional(&mut *c)
        .await
        .map_err(db_err(KIND))?;
    row.map(|r| r.try_get::<String, _>(0))
        .transpose()
        .map_err(db_err(KIND))
}

pub(super) async fn delete(db: &PgStore, name: &str) -> Result<(), StoreError> {
    let mut tx = db.pool.begin().await.map_err(db_err(KIND))?;
    if !lock_volume(&mut tx, name).await? {
        return Err(StoreError::not_found(KIND, name));
    }
    if let Some(sb) = live_mount(&mut tx, name, "", true).await? {
        return Err(StoreError::Conflict(format!(
            "volume {name:?} is in use by sandbox {sb}"
        )));
    }
    for sql in [
        "DELETE FROM volume_mounts WHERE volume = $1",
        "DELETE FROM volumes WHERE name = $1",
    ] {
        sqlx::query(sql)
            .bind(name)
            .execute(&mut *tx)
            .await
            .map_err(db_err(KIND))?;
    }
    tx.commit().await.map_err(db_err(KIND))
}

pub(super) async fn mount(
    db: &PgStore,
    sandbox_id: &SandboxId,
    mounts: &[VolumeMount],
) -> Result<(), StoreError> {
    let mut tx = db.pool.begin().await.map_err(db_err(KIND))?;
    // Rows locked in name order, so two spawns with the same volumes cannot deadlock.
    let mut names: Vec<&str> = mounts.iter().map(|m| m.volume.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    for name in names {
        if !lock_volume(&mut tx, name).await? {
            return Err(StoreError::not_found(KIND, name));
        }
    }
    for m in mounts {
        if !m.read_only {
            if let Some(sb) = live_mount(&mut tx, &m.volume, sandbox_id.as_str(), false).await? {
                return Err(StoreError::Conflict(format!(
                    "volume {:?} is mounted read-write by sandbox {sb}",
                    m.volume
                )));
            }
        }
        sqlx::query(
            "INSERT INTO volume_mounts (sandbox_id, volume, mount_path, read_only) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(sandbox_id.as_str())
        .bind(&m.volume)
        .bind(&m.mount_path)
        .bind(i64::from(m.read_only))
        .execute(&mut *tx)
        .await
        .map_err(db_err(KIND))?;
    }
    tx.commit().await.map_err(db_err(KIND))
}
