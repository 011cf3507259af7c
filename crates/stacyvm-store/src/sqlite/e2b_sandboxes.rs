//! What the E2B-compatible API keeps of the sandboxes it created, keyed by sandbox id and
//! written once. `env_vars` is stored as JSON text, like a template's `env`.

use super::db::Db;
use crate::rows::{to_json, ts};
use crate::statements::e2b_sandboxes::INSERT;
use crate::{E2bSandbox, StoreError};

/// `Conflict` when the sandbox already has a record (the primary key).
pub(super) async fn insert(db: &Db, r: &E2bSandbox) -> Result<(), StoreError> {
    let env_vars = to_json(&r.env_vars, "env_vars")?;
    let params = (
        r.sandbox_id.as_str(),
        &r.template_id,
        env_vars,
        &r.access_token,
        ts(&r.created_at),
    );
    db.execute("e2b sandbox", INSERT, params).await.map(drop)
}
