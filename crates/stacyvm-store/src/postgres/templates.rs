//! Sandbox templates, keyed by name. List fields and maps are stored as JSON text.

use super::{db_err, delete_keyed, get_all, get_keyed, touched, PgStore, Query};
use crate::rows::{self, to_json, ts};
use crate::{StoreError, Template};

const COLUMNS: &str = "name, version, image, description, setup, allowed_hosts, memory_mb, \
     cpu_cores, ttl_seconds, env, secrets, pool_size, created_at, updated_at";

/// Binds `$1`…`$12`: every field from `name` to `pool_size`, in [`COLUMNS`] order.
fn bind_fields<'q>(q: Query<'q>, t: &'q Template) -> Result<Query<'q>, StoreError> {
    Ok(q.bind(&t.name)
        .bind(t.version)
        .bind(&t.image)
        .bind(&t.description)
        .bind(to_json(&t.setup, "setup")?)
        .bind(to_json(&t.allowed_hosts, "allowed_hosts")?)
        .bind(t.memory_mb)
        .bind(t.cpu_cores)
        .bind(t.ttl_seconds)
        .bind(to_json(&t.env, "env")?)
        .bind(to_json(&t.secrets, "secrets")?)
        .bind(t.pool_size))
}

pub(super) async fn create(db: &PgStore, t: &Template) -> Result<(), StoreError> {
    let sql = format!(
        "INSERT INTO templates ({COLUMNS}) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
    );
    bind_fields(sqlx::query(&sql), t)?
        .bind(ts(&t.created_at))
        .bind(ts(&t.updated_at))
        .execute(&db.pool)
        .await
        .map_err(db_err("template"))?;
    Ok(())
}

pub(super) async fn get(db: &PgStore, name: &str) -> Result<Template, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM templates WHERE name = $1");
    get_keyed(db, &sql, "template", name, rows::template).await
}

pub(super) async fn list(db: &PgStore) -> Result<Vec<Template>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM templates ORDER BY name");
    get_all(db, &sql, "template", rows::template).await
}

/// Replaces every field but `name` and `created_at`.
pub(super) async fn replace(db: &PgStore, t: &Template) -> Result<(), StoreError> {
    let q = sqlx::query(
        "UPDATE templates SET version = $2, image = $3, description = $4, setup = $5, \
           allowed_hosts = $6, memory_mb = $7, cpu_cores = $8, ttl_seconds = $9, env = $10, \
           secrets = $11, pool_size = $12, updated_at = $13 \
         WHERE name = $1",
    );
    let done = bind_fields(q, t)?
        .bind(ts(&t.updated_at))
        .execute(&db.pool)
        .await
        .map_err(db_err("template"))?;
    touched(done, "template", &t.name)
}

pub(super) async fn delete(db: &PgStore, name: &str) -> Result<(), StoreError> {
    delete_keyed(
        db,
        "DELETE FROM templates WHERE name = $1",
        "template",
        name,
    )
    .await
}
