//! Sandbox records. Destroy is a state change; rows are never deleted.

use stacyvm_types::{Sandbox, SandboxState, Timestamp};

use super::{db_err, get_all, get_keyed, PgStore, Query};
use crate::rows::{self, to_json, ts};
use crate::statements::{sandbox_columns, sources_of};
use crate::{columns, ActiveCounts, StoreError};

/// The sandbox columns, in `rows::sandbox`'s order, for statements built elsewhere.
pub(super) const COLUMNS: &str = sandbox_columns!();

const INSERT: &str = concat!(
    "INSERT INTO sandboxes (",
    sandbox_columns!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22)"
);
const GET: &str = concat!(
    "SELECT ",
    sandbox_columns!(),
    " FROM sandboxes WHERE id = $1"
);
// The state predicates below repeat the partial indexes' WHERE clauses with literal strings.
pub(super) const LIST: &str = concat!(
    "SELECT ",
    sandbox_columns!(),
    " FROM sandboxes WHERE state <> 'destroyed' ORDER BY created_at DESC, id DESC"
);
const SET_EXPIRY: &str = concat!(
    "UPDATE sandboxes SET expires_at = $2, updated_at = ",
    now_ts!(),
    " WHERE id = $1 AND state <> 'destroyed' RETURNING ",
    sandbox_columns!()
);
pub(super) const LIST_EXPIRED: &str = concat!(
    "SELECT ",
    sandbox_columns!(),
    " FROM sandboxes WHERE state NOT IN ('destroyed', 'expired', 'destroying') AND state <> 'paused' \
     AND expires_at < $1 \
     ORDER BY expires_at, id"
);
/// Both counts read only the partial index of active rows; the owner one seeks into it.
pub(super) const COUNT_ACTIVE: &str = "SELECT \
       (SELECT COUNT(*) FROM sandboxes \
          WHERE state NOT IN ('destroyed', 'expired', 'destroying') AND state <> 'paused'), \
       (SELECT COUNT(*) FROM sandboxes \
          WHERE state NOT IN ('destroyed', 'expired', 'destroying') AND state <> 'paused' AND owner_id = $1 AND $1 <> '')";

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
    bind_sandbox(sqlx::query(INSERT), sb, metadata)
        .execute(&db.pool)
        .await
        .map_err(db_err("sandbox"))?;
    Ok(())
}

/// Runs an `UPDATE .. WHERE id = $1 .. RETURNING` whose other parameter is `$2 = value`;
/// `None` when its WHERE clause matched nothing.
pub(super) async fn update_returning(
    db: &PgStore,
    sql: &str,
    id: &str,
    value: &str,
) -> Result<Option<Sandbox>, StoreError> {
    let row = sqlx::query(sql)
        .bind(id)
        .bind(value)
        .fetch_optional(&db.pool)
        .await
        .map_err(db_err("sandbox"))?;
    row.as_ref().map(rows::sandbox).transpose()
}

pub(super) async fn get(db: &PgStore, id: &str) -> Result<Sandbox, StoreError> {
    get_keyed(db, GET, "sandbox", id, rows::sandbox).await
}

pub(super) async fn list(db: &PgStore) -> Result<Vec<Sandbox>, StoreError> {
    get_all(db, LIST, "sandbox", rows::sandbox).await
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
             WHERE id = $1 AND state IN ({sources}) RETURNING {}",
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
    let rows = sqlx::query(LIST_EXPIRED)
        .bind(ts(&now))
        .fetch_all(&db.pool)
        .await
        .map_err(db_err("sandbox"))?;
    rows.iter().map(rows::sandbox).collect()
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
