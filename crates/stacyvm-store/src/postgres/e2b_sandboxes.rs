//! What the E2B-compatible API keeps of the sandboxes it created, keyed by sandbox id and
//! written once. `env_vars` is stored as JSON text, like a template's `env`.

use super::{db_err, get_keyed, PgStore};
use crate::rows::{self, to_json, ts};
use crate::{E2bSandbox, StoreError};

const KIND: &str = "e2b sandbox";

const COLUMNS: &str = "sandbox_id, template_id, env_vars, access_token, created_at";

/// `Conflict` when the sandbox already has a record (the primary key).
pub(super) async fn insert(db: &PgStore, r: &E2bSandbox) -> Result<(), StoreError> {
    let sql = format!("INSERT INTO e2b_sandboxes ({COLUMNS}) VALUES ($1, $2, $3, $4, $5)");
    sqlx::query(&sql)
        .bind(r.sandbox_id.as_str())
        .bind(&r.template_id)
        .bind(to_json(&r.env_vars, "env_vars")?)
        .bind(&r.access_token)
        .bind(ts(&r.created_at))
        .execute(&db.pool)
        .await
        .map_err(db_err(KIND))?;
    Ok(())
}

pub(super) async fn get(db: &PgStore, id: &str) -> Result<E2bSandbox, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM e2b_sandboxes WHERE sandbox_id = $1");
    get_keyed(db, &sql, KIND, id, rows::e2b_sandbox).await
}
