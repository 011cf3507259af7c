//! What the E2B-compatible API keeps of the sandboxes it created, keyed by sandbox id and
//! written once. `env_vars` is stored as JSON text, like a template's `env`.

use super::PgStore;
use crate::rows::{to_json, ts};
use crate::statements::e2b_sandboxes::INSERT;
use crate::{E2bSandbox, StoreError};

/// `Conflict` when the sandbox already has a record (the primary key).
pub(super) async fn insert(db: &PgStore, r: &E2bSandbox) -> Result<(), StoreError> {
    let q = sqlx::query(INSERT)
        .bind(r.sandbox_id.as_str())
        .bind(&r.template_id)
        .bind(to_json(&r.env_vars, "env_vars")?)
        .bind(&r.access_token)
        .bind(ts(&r.created_at));
    db.execute("e2b sandbox", q).await.map(drop)
}
