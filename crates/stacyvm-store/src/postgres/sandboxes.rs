//! Sandbox records. Destroy is a state change; rows are never deleted.

use stacyvm_types::{Sandbox, SandboxState, Timestamp};

use super::{db_err, PgStore, Query};
use crate::rows::{self, to_json, ts};
pub(super) use crate::statements::sandboxes::{COUNT_ACTIVE, LIST, LIST_EXPIRED};
use crate::statements::sandboxes::{GET, INSERT};
use crate::statements::{sandbox_columns, sources_of};
use crate::{columns, ActiveCounts, StoreError};

/// The sandbox columns, in `rows::sandbox`'s order, for statements built elsewhere.
pub(super) const COLUMNS: &str = sandbox_columns!();

const SET_EXPIRY: &str = concat!(
    "UPDATE sandboxes SET expires_at = $2, updated_at = ",
    now_ts!(),
    " WHERE id = $1 AND state <> 'destroyed' RETURNING ",
    sandbox_columns!()
);

/// Retries of the compare-and-set in `set_state` when other writers keep moving the record.
const STATE_CAS_ATTEMPTS: usize = 8;

/// Binds `$1`…`$22`: every column in [`COLUMNS`] order (`metadata` as JSON text).
pub(super) fn bind_sandbox<'q>(q: Query<'q>, sb: &'q Sandbox, metadata: String) -> Query<'q> {
    q.bind(sb.id.as_str())
        .bind(sb.state.as_str())
        .bind(&sb.provider)
        .bind(&sb.image)
        .bind(sb.memory_mb)
        .bind(sb.vcpus)
        .bind(metadata)
        .bind(&sb.template)
        .bind(&sb.owner_id)
        .bind(columns::vm_id(sb))
        .bind(columns::worker_id(sb))
        .bind(&sb.tenant_id)
        .bind(&sb.preview_domain)
        .bind(ts(&sb.created_at))
        .bind(ts(&sb.expires_at))
        .bind(ts(&sb.updated_at))
        .bind(sb.lifecycle.on_expire.as_str())
        .bind(columns::idle_timeout(sb))
        .bind(columns::opt_ts(sb.paused_at.as_ref()))
        .bind(columns::opt_ts(sb.last_active_at.as_ref()))
        .bind(sb.preview_token.as_str())
        .bind(i64::from(sb.public_preview))
}

pub(super) async fn insert(db: &PgStore, sb: &Sandbox) -> Result<(), StoreError> {
    let metadata = to_json(&sb.metadata, "metadata")?;
    let q = bind_sandbox(sqlx::query(INSERT), sb, metadata);
    db.execute("sandbox", q).await.map(drop)
}

/// Runs an `UPDATE .. WHERE id = $1 .. RETURNING` whose other parameter is `$2 = value`;
/// `None` when its WHERE clause matched nothing.
pub(super) async fn update_returning(
    db: &PgStore,
    sql: &str,
    id: &str,
    value: &str,
) -> Result<Option<Sandbox>, StoreError> {
    let row = db.fetch_optional("sandbox", sqlx::query(sql).bind(id).bind(value));
    row.await?.as_ref().map(rows::sandbox).transpose()
}

pub(super) async fn get(db: &PgStore, id: &str) -> Result<Sandbox, StoreError> {
    db.get_keyed("sandbox", GET, id, rows::sandbox).await
}

pub(super) async fn list(db: &PgStore) -> Result<Vec<Sandbox>, StoreError> {
    db.get_all("sandbox", LIST, rows::sandbox).await
}

/// A compare-and-set: the update applies only while the stored state is one `to` may follow.
/// Under READ COMMITTED a concurrent writer's row lock makes this statement wait and then
/// re-check the WHERE clause on the new row version, so no invalid transition slips through.
pub(super) async fn set_state(
    db: &PgStore,
    id: &str,
    to: SandboxState,
) -> Result<Sandbox, StoreError> {
    let sources = sources_of(to);
    let sql = if sources.is_empty() {
        None
    } else {
        Some(format!(
            "UPDATE sandboxes SET state = $2, updated_at = {} \
             WHERE id = $1 AND {sources} RETURNING {}",
            now_ts!(),
            sandbox_columns!()
        ))
    };
    for _ in 0..STATE_CAS_ATTEMPTS {
        if let Some(sql) = &sql {
            if let Some(sb) = update_returning(db, sql, id, to.as_str()).await? {
                return Ok(sb);
            }
        }
        // Not updated: absent, already `to`, or not allowed. Decide on the current row.
        let current = get(db, id).await?;
        if current.state == to {
            return Ok(current);
        }
        current.state.valid_transition(to)?;
        // The state changed between the two statements to one that allows `to`: try again.
    }
    Err(StoreError::Conflict(format!(
        "sandbox {id} state keeps changing; gave up moving it to {to}"
    )))
}

pub(super) async fn set_expiry(
    db: &PgStore,
    id: &str,
    expires_at: Timestamp,
) -> Result<Sandbox, StoreError> {
    update_returning(db, SET_EXPIRY, id, &ts(&expires_at))
        .await?
        .ok_or_else(|| StoreError::not_found("sandbox", id))
}

pub(super) async fn list_expired(db: &PgStore, now: Timestamp) -> Result<Vec<Sandbox>, StoreError> {
    let q = sqlx::query(LIST_EXPIRED).bind(ts(&now));
    db.fetch_all("sandbox", q, rows::sandbox).await
}

pub(super) async fn count_active(
    db: &PgStore,
    owner: Option<&str>,
) -> Result<ActiveCounts, StoreError> {
    let (total, owner): (i64, i64) = sqlx::query_as(COUNT_ACTIVE)
        .bind(owner.unwrap_or(""))
        .fetch_one(&db.pool)
        .await
        .map_err(db_err("sandbox count"))?;
    Ok(ActiveCounts { total, owner })
}

/// `creating` → `running`, recording the provider's runtime id in the same statement.
pub(super) async fn set_running(
    db: &PgStore,
    id: &str,
    vm_id: Option<&str>,
) -> Result<Sandbox, StoreError> {
    let sql = format!(
        "UPDATE sandboxes SET state = 'running', vm_id = $2, updated_at = {} \
         WHERE id = $1 AND state = 'creating' RETURNING {}",
        now_ts!(),
        sandbox_columns!()
    );
    if let Some(sb) = update_returning(db, &sql, id, vm_id.unwrap_or("")).await? {
        return Ok(sb);
    }
    StoreError::not_marked_running(get(db, id).await?, vm_id)
}
