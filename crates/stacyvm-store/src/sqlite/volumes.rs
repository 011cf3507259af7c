//! Volumes and the record of which sandbox mounts which (sandbox-model.md §2). Mount checks
//! and volume deletes run in one write transaction each, so two spawns cannot both take a
//! volume read-write, and a delete cannot slip past a spawn that mounts it.

use rusqlite::{params, Connection, OptionalExtension};

use super::db::{exec, sql_err, Db};
use crate::rows::ts;
use crate::statements::volumes::INSERT;
use crate::{StoreError, Volume, VolumeMount};
use stacyvm_types::SandboxId;

const KIND: &str = "volume";

/// A live sandbox (not destroyed) that mounts `?1`, other than `?2`, read-write when `?3` = 0.
const LIVE_MOUNT: &str = "SELECT m.sandbox_id FROM volume_mounts m \
     JOIN sandboxes s ON s.id = m.sandbox_id \
     WHERE m.volume = ?1 AND m.sandbox_id <> ?2 AND (?3 <> 0 OR m.read_only = 0) \
       AND s.state <> 'destroyed' \
     ORDER BY m.sandbox_id LIMIT 1";

pub(super) async fn insert(db: &Db, v: &Volume) -> Result<(), StoreError> {
    let params = (
        &v.name,
        v.size_mb,
        &v.provider,
        &v.worker_id,
        ts(&v.created_at),
    );
    db.execute(KIND, INSERT, params).await.map(drop)
}

fn exists(c: &Connection, name: &str) -> Result<bool, StoreError> {
    c.prepare_cached("SELECT 1 FROM volumes WHERE name = ?1")
        .and_then(|mut st| st.query_row([name], |_| Ok(())).optional())
        .map(|r| r.is_some())
        .map_err(sql_err(KIND))
}

/// A live sandbox other than `except` mounting `volume` (read-write only, unless `any`).
fn live_mount(
    c: &Connection,
    volume: &str,
    except: &str,
    any: bool,
) -> Result<Option<String>, StoreError> {
    c.prepare_cached(LIVE_MOUNT)
        .and_then(|mut st| {
            st.query_row(params![volume, except, i64::from(any)], |r| r.get(0))
                .optional()
        })
        .map_err(sql_err(KIND))
}

pub(super) async fn delete(db: &Db, name: &str) -> Result<(), StoreError> {
    db.write(KIND, |c| {
        if !exists(c, name)? {
            return Err(StoreError::not_found(KIND, name));
        }
        if let Some(sb) = live_mount(c, name, "", true)? {
            return Err(StoreError::Conflict(format!(
                "volume {name:?} is in use by sandbox {sb}"
            )));
        }
        exec(
            c,
            KIND,
            "DELETE FROM volume_mounts WHERE volume = ?1",
            [name],
        )?;
        exec(c, KIND, "DELETE FROM volumes WHERE name = ?1", [name]).map(|_| ())
    })
    .await
}

pub(super) async fn mount(
    db: &Db,
    sandbox_id: &SandboxId,
    mounts: &[VolumeMount],
) -> Result<(), StoreError> {
    db.write(KIND, |c| {
        for m in mounts {
            if !exists(c, &m.volume)? {
                return Err(StoreError::not_found(KIND, m.volume.as_str()));
            }
            if !m.read_only {
                if let Some(sb) = live_mount(c, &m.volume, sandbox_id.as_str(), false)? {
                    return Err(StoreError::Conflict(format!(
                        "volume {:?} is mounted read-write by sandbox {sb}",
                        m.volume
                    )));
                }
            }
            exec(
                c,
                KIND,
                "INSERT INTO volume_mounts (sandbox_id, volume, mount_path, read_only) \
                 VALUES (?1, ?2, ?3, ?4)",
                params![
                    sandbox_id.as_str(),
                    m.volume,
                    m.mount_path,
                    i64::from(m.read_only)
                ],
            )?;
        }
        Ok(())
    })
    .await
}
