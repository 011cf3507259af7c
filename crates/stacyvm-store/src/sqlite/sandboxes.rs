//! Sandbox records. Destroy is a state change; rows are never deleted.

use std::sync::LazyLock;

use rusqlite::{params, Connection, ToSql};
use stacyvm_types::{Sandbox, SandboxState, Timestamp};

use super::db::{all, exec, first, found, Db};
use super::now;
use crate::rows::{self, to_json, ts};
pub(super) use crate::statements::sandboxes::{COUNT_ACTIVE, LIST, LIST_EXPIRED};
use crate::statements::sandboxes::{GET, INSERT};
use crate::statements::{sandbox_columns, sources_of};
use crate::{columns, ActiveCounts, StoreError};

/// The sandbox columns, in `rows::sandbox`'s order, for statements built elsewhere.
pub(super) const COLUMNS: &str = sandbox_columns!();

const SET_EXPIRY: &str = concat!(
    "UPDATE sandboxes SET expires_at = ?2, updated_at = ?3 \
     WHERE id = ?1 AND state <> 'destroyed' RETURNING ",
    sandbox_columns!()
);

/// The text forms of a sandbox's typed, JSON and time columns, made before the write lock is
/// taken.
pub(super) struct RowText<'a> {
    state: &'static str,
    on_expire: &'static str,
    ids: [&'a str; 4],
    text: [String; 6],
    idle_timeout: i64,
    public_preview: i64,
}

impl<'a> RowText<'a> {
    pub(super) fn of(sb: &'a Sandbox) -> Result<Self, StoreError> {
        Ok(RowText {
            state: sb.state.as_str(),
            on_expire: sb.lifecycle.on_expire.as_str(),
            ids: [
                sb.id.as_str(),
                columns::vm_id(sb),
                columns::worker_id(sb),
                sb.preview_token.as_str(),
            ],
            text: [
                to_json(&sb.metadata, "metadata")?,
                ts(&sb.created_at),
                ts(&sb.expires_at),
                ts(&sb.updated_at),
                columns::opt_ts(sb.paused_at.as_ref()),
                columns::opt_ts(sb.last_active_at.as_ref()),
            ],
            idle_timeout: columns::idle_timeout(sb),
            public_preview: i64::from(sb.public_preview),
        })
    }
}

/// A sandbox's values in `COLUMNS` order, for `?1..?22`.
pub(super) fn values<'a>(sb: &'a Sandbox, text: &'a RowText<'a>) -> Vec<&'a dyn ToSql> {
    let [metadata, created, expires, updated, paused, active] = &text.text;
    let [id, vm_id, worker_id, preview_token] = &text.ids;
    vec![
        id,
        &text.state,
        &sb.provider,
        &sb.image,
        &sb.memory_mb,
        &sb.vcpus,
        metadata,
        &sb.template,
        &sb.owner_id,
        vm_id,
        worker_id,
        &sb.tenant_id,
        &sb.preview_domain,
        created,
        expires,
        updated,
        &text.on_expire,
        &text.idle_timeout,
        paused,
        active,
        preview_token,
        &text.public_preview,
    ]
}

pub(super) async fn insert(db: &Db, sb: &Sandbox) -> Result<(), StoreError> {
    let text = RowText::of(sb)?;
    db.write("sandbox", |c| {
        exec(c, "sandbox", INSERT, values(sb, &text).as_slice()).map(|_| ())
    })
    .await
}

/// Runs an update `RETURNING` the sandbox columns; `None` when its WHERE clause matched
/// nothing.
pub(super) fn returning(
    c: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Option<Sandbox>, StoreError> {
    first(c, "sandbox", sql, params, |r| rows::sandbox(r))
}

pub(super) fn get_on(c: &Connection, id: &str) -> Result<Sandbox, StoreError> {
    found(
        first(c, "sandbox", GET, [id], |r| rows::sandbox(r))?,
        "sandbox",
        id,
    )
}

pub(super) async fn get(db: &Db, id: &str) -> Result<Sandbox, StoreError> {
    db.get_keyed("sandbox", GET, id, |r| rows::sandbox(r)).await
}

pub(super) async fn list(db: &Db) -> Result<Vec<Sandbox>, StoreError> {
    db.get_all("sandbox", LIST, |r| rows::sandbox(r)).await
}

/// Per target state, the compare-and-set of `set_state` (`None`: no state may move there).
pub(super) static SET_STATE: LazyLock<Vec<(SandboxState, Option<String>)>> = LazyLock::new(|| {
    SandboxState::ALL
        .into_iter()
        .map(|to| {
            let sources = sources_of(to);
            let sql = (!sources.is_empty()).then(|| {
                format!(
                    "UPDATE sandboxes SET state = ?2, updated_at = ?3 \
                     WHERE id = ?1 AND {sources} RETURNING {}",
                    sandbox_columns!()
                )
            });
            (to, sql)
        })
        .collect()
});

pub(super) const SET_RUNNING: &str = concat!(
    "UPDATE sandboxes SET state = 'running', vm_id = ?2, updated_at = ?3 \
     WHERE id = ?1 AND state = 'creating' RETURNING ",
    sandbox_columns!()
);

/// A compare-and-set: the update applies only while the stored state is one `to` may follow.
/// Inside the write transaction nothing can move the record between the update and the
/// re-read that explains a refusal.
pub(super) async fn set_state(db: &Db, id: &str, to: SandboxState) -> Result<Sandbox, StoreError> {
    let sql = SET_STATE
        .iter()
        .find(|(s, _)| *s == to)
        .and_then(|(_, sql)| sql.as_deref());
    let stamp = ts(&now());
    db.write("sandbox", |c| {
        if let Some(sql) = sql {
            if let Some(sb) = returning(c, sql, params![id, to.as_str(), stamp])? {
                return Ok(sb);
            }
        }
        // Not updated: absent, already `to`, or not allowed.
        let current = get_on(c, id)?;
        if current.state != to {
            current.state.valid_transition(to)?;
        }
        Ok(current)
    })
    .await
}

pub(super) async fn set_expiry(
    db: &Db,
    id: &str,
    expires_at: Timestamp,
) -> Result<Sandbox, StoreError> {
    let row = db
        .write("sandbox", |c| {
            returning(c, SET_EXPIRY, params![id, ts(&expires_at), ts(&now())])
        })
        .await?;
    found(row, "sandbox", id)
}

pub(super) async fn list_expired(db: &Db, now: Timestamp) -> Result<Vec<Sandbox>, StoreError> {
    db.read(|c| all(c, "sandbox", LIST_EXPIRED, [ts(&now)], |r| rows::sandbox(r)))
}

pub(super) async fn count_active(db: &Db, owner: Option<&str>) -> Result<ActiveCounts, StoreError> {
    let counts = db.read(|c| {
        first(
            c,
            "sandbox count",
            COUNT_ACTIVE,
            [owner.unwrap_or("")],
            |r| {
                Ok(ActiveCounts {
                    total: r
                        .get(0)
                        .map_err(|_| StoreError::Corrupt { what: "count" })?,
                    owner: r
                        .get(1)
                        .map_err(|_| StoreError::Corrupt { what: "count" })?,
                })
            },
        )
    })?;
    Ok(counts.unwrap_or_default())
}

/// `creating` → `running`, recording the provider's runtime id in the same statement.
pub(super) async fn set_running(
    db: &Db,
    id: &str,
    vm_id: Option<&str>,
) -> Result<Sandbox, StoreError> {
    let stamp = ts(&now());
    let column = vm_id.unwrap_or("");
    db.write("sandbox", |c| {
        if let Some(sb) = returning(c, SET_RUNNING, params![id, column, stamp])? {
            return Ok(sb);
        }
        StoreError::not_marked_running(get_on(c, id)?, vm_id)
    })
    .await
}
