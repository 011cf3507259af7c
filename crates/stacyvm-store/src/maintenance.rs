//! Operator tasks outside a running server: apply migrations and report the schema version
//! (`stacyvm db migrate`), and take a consistent copy of a live SQLite database
//! (`stacyvm db backup`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection};

use crate::StoreError;

/// What `migrate` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MigrationReport {
    /// Schema version before (0 = empty database).
    pub before: i64,
    /// Schema version now.
    pub after: i64,
    /// The newest version this binary knows.
    pub latest: i64,
}

/// What `backup_sqlite` wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupReport {
    pub path: PathBuf,
    pub bytes: u64,
    /// Schema version of the copy.
    pub schema_version: i64,
}

/// How long a backup waits for a writer holding the database (SQLite `busy_timeout`).
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Applies pending migrations to the database `open` would use (`sqlite` path or `postgres`
/// DSN) and reports the versions. A newer schema is refused (`SchemaTooNew`), as at startup.
pub async fn migrate(driver: &str, target: &str) -> Result<MigrationReport, StoreError> {
    let (before, after, latest) = match driver {
        "" | "sqlite" => {
            let before = if Path::new(target).exists() {
                crate::sqlite::schema_version_at(target).await?
            } else {
                0
            };
            let store = crate::SqliteStore::open(target).await?;
            let after = store.schema_version().await?;
            store.close().await;
            (before, after, crate::sqlite::latest_version())
        }
        "postgres" | "postgresql" => {
            let before = crate::postgres::schema_version_at(target).await?;
            let store = crate::PgStore::open(target).await?;
            let after = store.schema_version().await?;
            store.close().await;
            (before, after, crate::postgres::latest_version())
        }
        other => {
            return Err(StoreError::Unsupported(format!(
                "database driver {other:?} is not supported by this build"
            )))
        }
    };
    Ok(MigrationReport {
        before,
        after,
        latest,
    })
}

/// Copies the SQLite database at `source` to `dest` with `VACUUM INTO`: one read transaction,
/// so the copy is consistent even while a server writes, and compact. `dest` must not exist
/// unless `overwrite`; the copy is written beside it and renamed into place, so a failed
/// backup never leaves a half-written `dest`. The source is opened read-only and never
/// migrated or created.
pub async fn backup_sqlite(
    source: &Path,
    dest: &Path,
    overwrite: bool,
) -> Result<BackupReport, StoreError> {
    let io = |what: &str, e: std::io::Error| StoreError::Unsupported(format!("{what}: {e}"));
    if !source.is_file() {
        return Err(StoreError::Unsupported(format!(
            "no SQLite database at {}",
            source.display()
        )));
    }
    if dest.exists() && !overwrite {
        return Err(StoreError::Conflict(format!(
            "{} exists (use --force to overwrite)",
            dest.display()
        )));
    }
    if same_file(source, dest) {
        return Err(StoreError::Unsupported(
            "the backup must not be the database itself".into(),
        ));
    }
    let dir = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "backup".into());
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let mut conn = SqliteConnectOptions::new()
        .filename(source)
        .read_only(true)
        .busy_timeout(BUSY_TIMEOUT)
        .connect()
        .await
        .map_err(StoreError::Database)?;
    let tmp_text = tmp.to_string_lossy().into_owned();
    let copied = sqlx::query("VACUUM INTO ?1")
        .bind(&tmp_text)
        .execute(&mut conn)
        .await
        .map_err(StoreError::Database);
    let _ = conn.close().await;
    if let Err(e) = copied {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    let schema_version = match crate::sqlite::schema_version_at(&tmp_text).await {
        Ok(v) => v,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    std::fs::rename(&tmp, dest).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io("moving the backup into place", e)
    })?;
    let bytes = std::fs::metadata(dest)
        .map_err(|e| io("reading the backup", e))?
        .len();
    Ok(BackupReport {
        path: dest.to_path_buf(),
        bytes,
        schema_version,
    })
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::conformance::running;
    use crate::Store;

    #[tokio::test]
    async fn migrate_reports_versions_and_is_idempotent() {
        let (_dir, path) = crate::sqlite::temp_path("m.db");
        let path = path.as_str();
        let first = migrate("sqlite", path).await.unwrap();
        assert_eq!(first.before, 0);
        assert_eq!(first.after, first.latest);
        assert!(first.latest >= 2);
        let again = migrate("sqlite", path).await.unwrap();
        assert_eq!((again.before, again.after), (first.latest, first.latest));
        assert!(matches!(
            migrate("oracle", path).await,
            Err(StoreError::Unsupported(_))
        ));
    }

    #[tokio::test]
    async fn backup_copies_a_live_database_and_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("live.db");
        let store = crate::SqliteStore::open(src.to_str().unwrap())
            .await
            .unwrap();
        store.insert_sandbox(&running("sb-00000001")).await.unwrap();
        let dest = dir.path().join("copy.db");
        // The server keeps its connections open (WAL) while the copy is taken.
        let report = backup_sqlite(&src, &dest, false).await.unwrap();
        assert!(report.bytes > 0);
        assert_eq!(report.schema_version, crate::sqlite::latest_version());
        let copy = crate::SqliteStore::open(dest.to_str().unwrap())
            .await
            .unwrap();
        assert_eq!(
            copy.get_sandbox(&"sb-00000001".into())
                .await
                .unwrap()
                .owner_id,
            "alice"
        );
        copy.close().await;

        store.insert_sandbox(&running("sb-00000002")).await.unwrap();
        let refused = backup_sqlite(&src, &dest, false).await.unwrap_err();
        assert!(matches!(refused, StoreError::Conflict(_)), "{refused:?}");
        backup_sqlite(&src, &dest, true).await.unwrap();
        let copy = crate::SqliteStore::open(dest.to_str().unwrap())
            .await
            .unwrap();
        assert!(copy.get_sandbox(&"sb-00000002".into()).await.is_ok());
        // No temp files left beside the backup.
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".tmp-"))
            .collect();
        assert!(names.is_empty(), "{names:?}");
        store.close().await;
    }

    #[tokio::test]
    async fn backup_refuses_a_missing_source_and_itself() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.db");
        assert!(backup_sqlite(&missing, &dir.path().join("x.db"), false)
            .await
            .is_err());
        assert!(!missing.exists(), "a missing source must not be created");
        let src = dir.path().join("db.db");
        crate::SqliteStore::open(src.to_str().unwrap())
            .await
            .unwrap()
            .close()
            .await;
        assert!(backup_sqlite(&src, &src, true).await.is_err());
    }

    mod needs_pg {
        use super::*;

        #[tokio::test]
        async fn migrate_on_postgres() {
            let db = crate::postgres::test_db::TestDb::create().await;
            let first = migrate("postgres", &db.dsn()).await.unwrap();
            assert_eq!((first.before, first.after), (0, first.latest));
            let again = migrate("postgres", &db.dsn()).await.unwrap();
            assert_eq!(again.before, first.latest);
        }
    }
}
