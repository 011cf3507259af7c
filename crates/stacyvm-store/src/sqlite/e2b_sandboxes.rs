//! What the E2B-compatible API keeps of the sandboxes it created, keyed by sandbox id and
//! written once. `env_vars` is stored as JSON text, like a template's `env`.

use std::sync::LazyLock;

use rusqlite::params;

use super::db::{exec, Db};
use crate::rows::{self, to_json, ts};
use crate::{E2bSandbox, StoreError};

const KIND: &str = "e2b sandbox";

const COLUMNS: &str = "sandbox_id, template_id, env_vars, access_token, created_at";

static INSERT: LazyLock<String> =
    LazyLock::new(|| format!("INSERT INTO e2b_sandboxes ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5)"));
static GET: LazyLock<String> =
    LazyLock::new(|| format!("SELECT {COLUMNS} FROM e2b_sandboxes WHERE sandbox_id = ?1"));

/// `Conflict` when the sandbox already has a record (the primary key).
pub(super) async fn insert(db: &Db, r: &E2bSandbox) -> Result<(), StoreError> {
    let env_vars = to_json(&r.env_vars, "env_vars")?;
    let created = ts(&r.created_at);
    db.write(KIND, |c| {
        exec(
            c,
            KIND,
            &INSERT,
            params![
                r.sandbox_id.as_str(),
                r.template_id,
                env_vars,
                r.access_token,
                created
            ],
        )
        .map(|_| ())
    })
    .await
}

pub(super) fn get(db: &Db, id: &str) -> Result<E2bSandbox, StoreError> {
    db.get_keyed(KIND, &GET, id, |r| rows::e2b_sandbox(r))
}
