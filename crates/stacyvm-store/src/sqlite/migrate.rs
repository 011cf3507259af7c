//! Applies the embedded migrations (`sqlx::migrate!`, so sqlx's checksums) on the store's own
//! writer connection and records them in sqlx's `_sqlx_migrations` table, exactly as sqlx's
//! migrator does: a file migrated by either one opens with the other.

use std::time::Instant;

use rusqlite::Connection;
use sqlx::migrate::{MigrateError, Migrator};

use super::db::{all, exec, sql_err, Db};
use crate::StoreError;

pub(super) static MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");

const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS _sqlx_migrations ( \
    version BIGINT PRIMARY KEY, \
    description TEXT NOT NULL, \
    installed_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP, \
    success BOOLEAN NOT NULL, \
    checksum BLOB NOT NULL, \
    execution_time BIGINT NOT NULL)";

/// The newest migration this binary carries.
pub(crate) fn latest_version() -> i64 {
    MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0)
}

struct Applied {
    version: i64,
    success: bool,
    checksum: Vec<u8>,
}

fn applied(c: &Connection) -> Result<Vec<Applied>, StoreError> {
    all(
        c,
        "schema version",
        "SELECT version, success, checksum FROM _sqlx_migrations ORDER BY version",
        [],
        |r| {
            Ok(Applied {
                version: super::db::col(r, "version")?,
                success: super::db::col(r, "success")?,
                checksum: super::db::col(r, "checksum")?,
            })
        },
    )
}

/// Refuses a database migrated by a newer binary, a half-applied or edited migration; then
/// applies the missing ones, each in its own transaction with its record.
pub(super) async fn run(db: &Db) -> Result<(), StoreError> {
    let supported = latest_version();
    let done = db
        .write("schema version", |c| {
            exec(c, "schema version", CREATE_TABLE, [])?;
            applied(c)
        })
        .await?;
    if let Some(found) = done.iter().map(|a| a.version).max() {
        if found > supported {
            return Err(StoreError::SchemaTooNew { found, supported });
        }
    }
    for m in MIGRATOR.iter() {
        if let Some(a) = done.iter().find(|a| a.version == m.version) {
            if !a.success {
                return Err(StoreError::Migrate(MigrateError::Dirty(m.version)));
            }
            if a.checksum != *m.checksum {
                return Err(StoreError::Migrate(MigrateError::VersionMismatch(
                    m.version,
                )));
            }
            continue;
        }
        let started = Instant::now();
        db.write("migration", |c| {
            c.execute_batch(&m.sql).map_err(sql_err("migration"))?;
            let took = i64::try_from(started.elapsed().as_nanos()).unwrap_or(i64::MAX);
            exec(
                c,
                "migration",
                "INSERT INTO _sqlx_migrations \
                   (version, description, success, checksum, execution_time) \
                 VALUES (?1, ?2, TRUE, ?3, ?4)",
                rusqlite::params![m.version, &*m.description, &*m.checksum, took],
            )
            .map(|_| ())
        })
        .await?;
    }
    Ok(())
}

/// The newest successful migration recorded on `c` (0 when none).
pub(super) fn version(c: &Connection) -> Result<i64, StoreError> {
    let tracked = super::db::first(
        c,
        "schema version",
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
        [],
        |_| Ok(()),
    )?;
    if tracked.is_none() {
        return Ok(0);
    }
    let v: Option<i64> = c
        .query_row(
            "SELECT MAX(version) FROM _sqlx_migrations WHERE success",
            [],
            |r| r.get(0),
        )
        .map_err(sql_err("schema version"))?;
    Ok(v.unwrap_or(0))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::SqliteStore;

    /// 0006 gives every sandbox that is not destroyed a fresh preview token and leaves
    /// destroyed rows without one.
    #[tokio::test]
    async fn migration_6_issues_preview_tokens_to_existing_sandboxes() {
        let (_dir, path) = super::super::temp_path("old.db");
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch(CREATE_TABLE).unwrap();
            for m in MIGRATOR.iter().filter(|m| m.version <= 5) {
                c.execute_batch(&m.sql).unwrap();
                c.execute(
                    "INSERT INTO _sqlx_migrations \
                       (version, description, success, checksum, execution_time) \
                     VALUES (?1, ?2, TRUE, ?3, 0)",
                    rusqlite::params![m.version, &*m.description, &*m.checksum],
                )
                .unwrap();
            }
            for (id, state) in [
                ("sb-1", "running"),
                ("sb-2", "paused"),
                ("sb-3", "destroyed"),
            ] {
                c.execute(
                    "INSERT INTO sandboxes (id, state, created_at, expires_at, updated_at) \
                     VALUES (?1, ?2, '2026-01-01T00:00:00.000000000Z', \
                       '2026-01-01T00:30:00.000000000Z', '2026-01-01T00:00:00.000000000Z')",
                    [id, state],
                )
                .unwrap();
            }
        }
        let store = SqliteStore::open(&path).await.unwrap();
        // Migrated to the newest (6 issued the tokens; later ones leave them alone).
        assert_eq!(
            store.schema_version().await.unwrap(),
            i64::try_from(MIGRATOR.iter().count()).unwrap()
        );
        let token = |id: &'static str| {
            let store = &store;
            async move {
                let sb = crate::Store::get_sandbox(store, &id.into()).await.unwrap();
                assert!(!sb.public_preview);
                sb.preview_token.as_str().to_string()
            }
        };
        let (a, b) = (token("sb-1").await, token("sb-2").await);
        for t in [&a, &b] {
            assert_eq!(t.len(), 32, "{t}");
            assert!(t
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        }
        assert_ne!(a, b);
        assert_eq!(token("sb-3").await, "");
    }
}
