//! Sandbox templates, keyed by name. List fields and maps are stored as JSON text.

use super::{touched, PgStore, Query};
use crate::rows::{to_json, ts};
use crate::statements::templates::INSERT;
use crate::{StoreError, Template};

/// Binds `$1`…`$12`: every field from `name` to `pool_size`, in column order.
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
    let q = bind_fields(sqlx::query(INSERT), t)?
        .bind(ts(&t.created_at))
        .bind(ts(&t.updated_at));
    db.execute("template", q).await.map(drop)
}

/// Replaces every field but `name` and `created_at`.
pub(super) async fn replace(db: &PgStore, t: &Template) -> Result<(), StoreError> {
    let q = sqlx::query(
        "UPDATE templates SET version = $2, image = $3, description = $4, setup = $5, \
           allowed_hosts = $6, memory_mb = $7, cpu_cores = $8, ttl_seconds = $9, env = $10, \
           secrets = $11, pool_size = $12, updated_at = $13 \
         WHERE name = $1",
    );
    let n = db
        .execute("template", bind_fields(q, t)?.bind(ts(&t.updated_at)))
        .await?;
    touched(n, "template", &t.name)
}
