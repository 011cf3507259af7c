//! SQLite backend: one writer connection (SQLite admits one writer at a time anyway) and two
//! readers beside it (WAL), all driven on the caller's thread (see `db`). Other processes on the
//! same file are covered by `busy_timeout`. Migrations are sqlx's (`migrate`).

mod admission;
mod audit;
mod checkpoint;
mod db;
mod e2b_sandboxes;
mod exec_logs;
mod leases;
mod lifecycle;
mod migrate;
mod quotas;
mod sandboxes;
mod snapshots;
mod templates;
mod volumes;
mod workers;

use std::time::Duration;

use chrono::{Datelike, NaiveDate, Utc};
use stacyvm_types::{Sandbox, SandboxId, SandboxState, Timestamp, WorkerId};

use crate::{
    AdminAuditRecord, AuditFilter, E2bSandbox, ExecLog, Lease, NewAdminAudit, OwnerQuota, Snapshot,
    StoreError, Template, Volume, VolumeMount, WorkerRecord,
};
use db::Db;
pub(crate) use migrate::latest_version;

pub struct SqliteStore {
    db: Db,
}

impl SqliteStore {
    /// Opens (creating if missing) the database at `path` and migrates it. `:memory:` gives a
    /// private in-memory database on a single connection.
    pub async fn open(path: &str) -> Result<Self, StoreError> {
        if path.is_empty() {
            return Err(StoreError::Unsupported(
                "sqlite database path must not be empty".into(),
            ));
        }
        let db = Db::open(path)?;
        migrate::run(&db).await?;
        Ok(SqliteStore { db })
    }

    /// Nothing is buffered: every write committed before its call returned. Kept so callers
    /// close every store the same way.
    pub async fn close(&self) {}

    /// The newest migration applied to this database.
    pub async fn schema_version(&self) -> Result<i64, StoreError> {
        migrate::version(&*self.db.writer().await)
    }
}

/// The schema version of the file at `path`, read without changing (or creating) it.
pub(crate) async fn schema_version_at(path: &str) -> Result<i64, StoreError> {
    let flags =
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn =
        rusqlite::Connection::open_with_flags(path, flags).map_err(db::sql_err("database"))?;
    conn.busy_timeout(db::BUSY_TIMEOUT)
        .map_err(db::sql_err("database"))?;
    migrate::version(&conn)
}

/// A path for a new database file `name` in a fresh temporary directory, which lasts as long as
/// the returned guard (tests).
#[cfg(test)]
pub(crate) fn temp_path(name: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join(name).display().to_string();
    (dir, path)
}

fn now() -> Timestamp {
    Utc::now()
}

/// `now + ttl`, saturating at the last instant the text format can hold (end of year 9999).
fn deadline(now: Timestamp, ttl: Duration) -> Timestamp {
    chrono::Duration::from_std(ttl)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        .filter(|t| t.year() <= 9999)
        .or_else(|| {
            NaiveDate::from_ymd_opt(9999, 12, 31)
                .and_then(|d| d.and_hms_nano_opt(23, 59, 59, 999_999_999))
                .map(|n| n.and_utc())
        })
        .unwrap_or(now)
}

crate::impl_store! { SqliteStore, db;
    async fn ping(&self) -> Result<(), StoreError> {
        self.db
            .read(|c| db::first(c, "ping", "SELECT 1", [], |_| Ok(())).map(|_| ()))
    }

    async fn cluster_id(&self) -> Result<String, StoreError> {
        let id = self.db.read(|c| {
            db::first(c, "cluster id", "SELECT id FROM cluster", [], |r| {
                db::col(r, "id")
            })
        })?;
        id.ok_or_else(|| StoreError::not_found("cluster", "id"))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use chrono::{NaiveDateTime, TimeZone};

    use super::db::col;
    use super::*;
    use crate::conformance::running;
    use crate::rows::{ts, TS_FORMAT};
    use crate::Store;

    struct TempStore {
        _dir: tempfile::TempDir,
        path: String,
        store: SqliteStore,
    }

    async fn temp_store() -> TempStore {
        let (dir, path) = temp_path("nested.db");
        let store = SqliteStore::open(&path).await.unwrap();
        TempStore {
            _dir: dir,
            path,
            store,
        }
    }

    #[tokio::test]
    async fn pragmas_apply_to_every_connection() {
        let t = temp_store().await;
        t.store
            .db
            .for_each_connection(|c| {
                let get = |p: &str| -> String {
                    c.query_row(&format!("PRAGMA {p}"), [], |r| {
                        r.get::<_, rusqlite::types::Value>(0)
                    })
                    .map(|v| match v {
                        rusqlite::types::Value::Integer(i) => i.to_string(),
                        rusqlite::types::Value::Text(s) => s,
                        other => format!("{other:?}"),
                    })
                    .unwrap()
                };
                assert_eq!(get("journal_mode"), "wal");
                assert_eq!(get("synchronous"), "1", "NORMAL");
                assert_eq!(get("foreign_keys"), "1");
                assert_eq!(get("busy_timeout"), "5000");
            })
            .await;
    }

    /// The typed fields keep the columns they always had: `worker_id` `local` or the worker,
    /// `vm_id` empty for none (no migration, and older binaries read the same rows).
    #[tokio::test]
    async fn typed_fields_keep_their_column_text() {
        let t = temp_store().await;
        let local = running("sb-0000000a");
        let mut remote = running("sb-0000000b");
        remote.placement = stacyvm_types::Placement::Remote("w-1".into());
        remote.vm_id = Some("rt-1".into());
        t.store.insert_sandbox(&local).await.unwrap();
        t.store.insert_sandbox(&remote).await.unwrap();
        let rows = t
            .store
            .db
            .read(|c| {
                db::all(
                    c,
                    "sandbox",
                    "SELECT id, worker_id, vm_id FROM sandboxes ORDER BY id",
                    [],
                    |r| {
                        Ok((
                            col::<String>(r, "id")?,
                            col::<String>(r, "worker_id")?,
                            col::<String>(r, "vm_id")?,
                        ))
                    },
                )
            })
            .unwrap();
        let text = |a: &str, b: &str, c: &str| (a.to_string(), b.to_string(), c.to_string());
        assert_eq!(
            rows,
            [
                text("sb-0000000a", "local", ""),
                text("sb-0000000b", "w-1", "rt-1")
            ]
        );
        assert_eq!(t.store.get_sandbox(&local.id).await.unwrap(), local);
        assert_eq!(t.store.get_sandbox(&remote.id).await.unwrap(), remote);
    }

    /// Readers refuse writes: a slip in a query module cannot make a second writer.
    #[tokio::test]
    async fn readers_are_query_only() {
        let t = temp_store().await;
        let refused = t
            .store
            .db
            .read(|c| Ok(c.execute("DELETE FROM sandboxes", []).is_err()));
        assert!(refused.unwrap());
    }

    #[tokio::test]
    async fn reopen_keeps_data_and_refuses_a_newer_schema() {
        let t = temp_store().await;
        t.store.insert_sandbox(&running("sb-1")).await.unwrap();
        t.store.close().await;
        let again = SqliteStore::open(&t.path).await.unwrap();
        assert_eq!(
            again.get_sandbox(&"sb-1".into()).await.unwrap().owner_id,
            "alice"
        );
        assert_eq!(again.schema_version().await.unwrap(), 10);
        again
            .db
            .writer()
            .await
            .execute(
                "INSERT INTO _sqlx_migrations (version, description, success, checksum, \
                   execution_time) VALUES (9999, 'from the future', TRUE, x'00', 0)",
                [],
            )
            .unwrap();
        again.close().await;
        drop(again);
        match SqliteStore::open(&t.path).await {
            Err(StoreError::SchemaTooNew { found, supported }) => {
                assert_eq!((found, supported), (9999, latest_version()));
            }
            Err(e) => panic!("expected SchemaTooNew, got {e:?}"),
            Ok(_) => panic!("expected SchemaTooNew, got a store"),
        }
    }

    /// The migration records are sqlx's own: sqlx's migrator accepts a file this store
    /// migrated (same versions and checksums) and finds nothing to do.
    #[tokio::test]
    async fn migrations_are_recorded_as_sqlx_records_them() {
        use sqlx::{ConnectOptions, Connection};
        let t = temp_store().await;
        t.store.close().await;
        let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&t.path)
            .connect()
            .await
            .unwrap();
        migrate::MIGRATOR.run(&mut conn).await.unwrap();
        let edited: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(edited, latest_version());
        // An edited migration is refused, as sqlx would.
        sqlx::query("UPDATE _sqlx_migrations SET checksum = x'01' WHERE version = 1")
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
        assert!(matches!(
            SqliteStore::open(&t.path).await,
            Err(StoreError::Migrate(_))
        ));
    }

    /// A panic inside a write leaves no transaction open: the next write works and the
    /// panicking one's change is gone.
    #[tokio::test]
    async fn a_panicking_write_is_rolled_back() {
        let t = temp_store().await;
        let store = std::sync::Arc::new(t.store);
        let inner = std::sync::Arc::clone(&store);
        let task = tokio::spawn(async move {
            inner
                .db
                .write("sandbox", |c| {
                    c.execute("DELETE FROM sandboxes", []).unwrap();
                    c.execute(
                        "INSERT INTO workers (id, hostname, status, capacity, last_heartbeat, \
                           created_at, updated_at) VALUES ('w', '', '', '{}', '', '', '')",
                        [],
                    )
                    .unwrap();
                    panic!("in the middle of a write");
                    #[allow(unreachable_code)]
                    Ok(())
                })
                .await
        });
        assert!(task.await.unwrap_err().is_panic());
        store.insert_sandbox(&running("sb-after")).await.unwrap();
        assert_eq!(
            store.get_sandbox(&"sb-after".into()).await.unwrap().id,
            "sb-after"
        );
        assert!(store
            .get_worker(&"w".into())
            .await
            .unwrap_err()
            .is_not_found());
    }

    /// Commits never checkpoint inline (`wal_autocheckpoint = 0`); the checkpoint thread
    /// copies them into the database file. Without it the file would not grow at all.
    #[tokio::test]
    async fn the_checkpoint_thread_flushes_the_wal() {
        let t = temp_store().await;
        let auto: i64 = t
            .store
            .db
            .writer()
            .await
            .query_row("PRAGMA wal_autocheckpoint", [], |r| r.get(0))
            .unwrap();
        assert_eq!(auto, 0);
        let size = || std::fs::metadata(&t.path).unwrap().len();
        let before = size();
        for n in 0..300 {
            t.store
                .insert_sandbox(&running(&format!("sb-{n:04}")))
                .await
                .unwrap();
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while size() <= before && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(size() > before, "database file still {before} bytes");
    }

    #[tokio::test]
    async fn undecodable_rows_are_corrupt() {
        let t = temp_store().await;
        for (id, column, value) in [
            ("sb-state", "state", "idle"),
            ("sb-time", "created_at", "yesterday"),
            ("sb-meta", "metadata", "{not json"),
        ] {
            t.store.insert_sandbox(&running(id)).await.unwrap();
            let sql = format!("UPDATE sandboxes SET {column} = ?1 WHERE id = ?2");
            t.store
                .db
                .writer()
                .await
                .execute(&sql, rusqlite::params![value, id])
                .unwrap();
            match t.store.get_sandbox(&id.into()).await {
                Err(StoreError::Corrupt { what }) => assert_eq!(what, column),
                other => panic!("{column}: expected Corrupt, got {other:?}"),
            }
        }
        assert!(matches!(
            t.store.list_sandboxes().await,
            Err(StoreError::Corrupt { .. })
        ));
    }

    /// The hot sandbox queries must read the partial indexes, never the whole table (which
    /// keeps every destroyed row forever).
    #[tokio::test]
    async fn sandbox_queries_use_partial_indexes() {
        let t = temp_store().await;
        let partial = [
            "sandboxes_live_by_created",
            "sandboxes_active_by_owner",
            "sandboxes_active_by_expiry",
        ];
        for sql in [
            sandboxes::COUNT_ACTIVE,
            sandboxes::LIST_EXPIRED,
            sandboxes::LIST,
        ] {
            let plan: Vec<String> = t
                .store
                .db
                .read(|c| {
                    let mut st = c.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
                    let n = st.parameter_count();
                    let args = vec!["alice"; n];
                    let rows = st
                        .query_map(rusqlite::params_from_iter(args), |r| r.get::<_, String>(3))
                        .unwrap()
                        .map(Result::unwrap)
                        .collect();
                    Ok(rows)
                })
                .unwrap();
            let reads: Vec<&String> = plan.iter().filter(|d| d.contains("sandboxes")).collect();
            assert!(!reads.is_empty(), "plan: {plan:?}");
            for read in reads {
                assert!(
                    partial.iter().any(|i| read.contains(i)),
                    "{sql}\nreads the table without a partial index: {plan:?}"
                );
            }
        }
    }

    /// The sandbox writes of every spawn and destroy build no ephemeral table beyond the one
    /// `RETURNING` needs: a partial-index predicate or a state test with `IN (…)` of more than
    /// two values would build one per index per row written (migration 0010).
    #[tokio::test]
    async fn sandbox_writes_build_no_ephemeral_tables() {
        let t = temp_store().await;
        let ephemeral = |sql: &str| -> usize {
            let sql = sql.to_string();
            t.store
                .db
                .read(move |c| {
                    let mut st = c.prepare(&format!("EXPLAIN {sql}")).unwrap();
                    let n = st.parameter_count();
                    let ops: Vec<String> = st
                        .query_map(rusqlite::params_from_iter(vec![0; n]), |r| r.get(1))
                        .unwrap()
                        .map(Result::unwrap)
                        .collect();
                    Ok(ops.iter().filter(|op| *op == "OpenEphemeral").count())
                })
                .unwrap()
        };
        assert_eq!(ephemeral(crate::statements::sandboxes::INSERT), 0);
        assert_eq!(ephemeral(crate::statements::sandboxes::INSERT_BY), 0);
        // `INSERT .. SELECT` from its own table buffers the selected row once.
        assert_eq!(ephemeral(&admission::INSERT_LIMITED), 1);
        assert_eq!(ephemeral(sandboxes::SET_RUNNING), 1, "RETURNING");
        for (to, sql) in sandboxes::SET_STATE.iter() {
            if let Some(sql) = sql {
                assert_eq!(ephemeral(sql), 1, "to {to}: RETURNING only\n{sql}");
            }
        }
    }

    #[tokio::test]
    async fn open_by_driver_name() {
        let (_dir, path) = temp_path("by-name.db");
        for driver in ["", "sqlite"] {
            let store = crate::open(driver, &path).await.unwrap();
            store.ping().await.unwrap();
        }
        assert!(matches!(
            crate::open("mysql", "x").await,
            Err(StoreError::Unsupported(_))
        ));
    }

    #[tokio::test]
    async fn memory_database_works_on_one_connection() {
        let store = SqliteStore::open(":memory:").await.unwrap();
        store.insert_sandbox(&running("sb-1")).await.unwrap();
        assert_eq!(store.list_sandboxes().await.unwrap().len(), 1);
        let empty = SqliteStore::open("").await;
        assert!(matches!(empty, Err(StoreError::Unsupported(_))));
    }

    #[test]
    fn timestamps_round_trip_exactly_and_sort() {
        let a =
            Utc.with_ymd_and_hms(2026, 5, 8, 10, 30, 0).unwrap() + chrono::Duration::nanoseconds(7);
        let b = a + chrono::Duration::nanoseconds(1);
        assert_eq!(ts(&a), "2026-05-08T10:30:00.000000007Z");
        assert!(ts(&a) < ts(&b));
        let year_one = Utc.with_ymd_and_hms(1, 1, 1, 0, 0, 0).unwrap();
        assert_eq!(ts(&year_one), "0001-01-01T00:00:00.000000000Z");
        for t in [a, b, year_one, Utc::now()] {
            let parsed = NaiveDateTime::parse_from_str(&ts(&t), TS_FORMAT)
                .unwrap()
                .and_utc();
            assert_eq!(parsed, t);
        }
    }

    #[test]
    fn deadline_saturates_at_year_9999() {
        let now = Utc::now();
        assert_eq!(
            deadline(now, Duration::from_millis(1500)),
            now + chrono::Duration::milliseconds(1500)
        );
        let far = deadline(now, Duration::from_secs(u64::MAX));
        assert_eq!(ts(&far), "9999-12-31T23:59:59.999999999Z");
    }
}
