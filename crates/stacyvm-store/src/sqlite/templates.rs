//! Sandbox templates, keyed by name. List fields and maps are stored as JSON text.

use rusqlite::ToSql;

use super::db::{exec, touched, Db};
use crate::rows::{to_json, ts};
use crate::statements::templates::INSERT;
use crate::{StoreError, Template};

/// The JSON text of a template's list and map fields, in column order.
fn json_fields(t: &Template) -> Result<[String; 4], StoreError> {
    Ok([
        to_json(&t.setup, "setup")?,
        to_json(&t.allowed_hosts, "allowed_hosts")?,
        to_json(&t.env, "env")?,
        to_json(&t.secrets, "secrets")?,
    ])
}

/// `?1`…`?12`: every field from `name` to `pool_size`, in column order (`json` from
/// [`json_fields`]).
fn field_params<'a>(t: &'a Template, json: &'a [String; 4]) -> Vec<&'a dyn ToSql> {
    let [setup, hosts, env, secrets] = json;
    vec![
        &t.name,
        &t.version,
        &t.image,
        &t.description,
        setup,
        hosts,
        &t.memory_mb,
        &t.cpu_cores,
        &t.ttl_seconds,
        env,
        secrets,
        &t.pool_size,
    ]
}

pub(super) async fn create(db: &Db, t: &Template) -> Result<(), StoreError> {
    let json = json_fields(t)?;
    let (created, updated) = (ts(&t.created_at), ts(&t.updated_at));
    db.write("template", |c| {
        let mut p = field_params(t, &json);
        p.extend([&created as &dyn ToSql, &updated]);
        exec(c, "template", INSERT, p.as_slice()).map(|_| ())
    })
    .await
}

/// Replaces every field but `name` and `created_at`.
pub(super) async fn replace(db: &Db, t: &Template) -> Result<(), StoreError> {
    let json = json_fields(t)?;
    let updated = ts(&t.updated_at);
    let n = db
        .write("template", |c| {
            let mut p = field_params(t, &json);
            p.push(&updated);
            exec(
                c,
                "template",
                "UPDATE templates SET version = ?2, image = ?3, description = ?4, setup = ?5, \
               allowed_hosts = ?6, memory_mb = ?7, cpu_cores = ?8, ttl_seconds = ?9, env = ?10, \
               secrets = ?11, pool_size = ?12, updated_at = ?13 \
             WHERE name = ?1",
                p.as_slice(),
            )
        })
        .await?;
    touched(n, "template", &t.name)
}
