//! SQLite backend. Writes go through a pool of exactly one connection: SQLite admits one writer
//! at a time anyway, and queueing writers in the pool is far cheaper than letting several
//! connections collide and sleep in the busy handler. Reads use a small separate pool, which WAL
//! lets run beside the writer. Other processes on the same file are covered by `busy_timeout`.

mod admission;
mod audit;
mod exec_logs;
mod leases;
mod quotas;
mod sandboxes;
mod templates;
mod workers;

use std::time::Duration;

use chrono::{Datelike, NaiveDate, NaiveDateTime, Utc};
use serde::de::DeserializeOwned;
use serde::Serialize;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteQueryResult,
    SqliteRow, SqliteSynchronous,
};
use sqlx::Row;
use stacyvm_types::{Sandbox, SandboxState, Timestamp};

use crate::{
    ActiveCounts, AdminAuditRecord, AuditFilter, ExecLog, Lease, NewAdminAudit, OwnerQuota, Store,
    StoreError, Template, WorkerRecord,
};

static MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");

/// Reader connections: enough to keep both cores busy beside the writer on a 2-core box.
const READERS: u32 = 2;
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The one text shape of every stored timestamp: exact to the nanosecond, sortable as a string.
const TS_FORMAT: &str = "%Y-%m-%dT%H:%M:%S%.9fZ";

pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
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
        let base = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .busy_timeout(BUSY_TIMEOUT)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true);
        // A local file connection does not drop like a socket: skip sqlx's ping on every
        // checkout, which would double the round trips to the connection's thread.
        let pool = || SqlitePoolOptions::new().test_before_acquire(false);
        let single = || {
            pool()
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
        };
        let (writer, reader) = if path == ":memory:" {
            // One connection serves both roles; it is never recycled, or the data would vanish.
            let pool = single()
                .connect_with(base.in_memory(true))
                .await
                .map_err(db_err("database"))?;
            (pool.clone(), pool)
        } else {
            // Only the writer switches the file to WAL: the switch needs an exclusive lock that
            // busy_timeout cannot wait for, and readers inherit the mode from the file.
            let writer = single()
                .connect_with(base.clone().journal_mode(SqliteJournalMode::Wal))
                .await
                .map_err(db_err("database"))?;
            let reader = pool()
                .max_connections(READERS)
                .connect_with(base)
                .await
                .map_err(db_err("database"))?;
            (writer, reader)
        };
        migrate(&writer).await?;
        Ok(SqliteStore { writer, reader })
    }

    /// Closes both pools, waiting for checked-out connections to come back.
    pub async fn close(&self) {
        self.reader.close().await;
        self.writer.close().await;
    }

    /// The newest migration applied to this database.
    pub async fn schema_version(&self) -> Result<i64, StoreError> {
        let mut conn = self
            .writer
            .acquire()
            .await
            .map_err(db_err("schema version"))?;
        crate::maintenance::sqlite_version(&mut conn).await
    }
}

/// The newest migration this binary carries.
pub(crate) fn latest_version() -> i64 {
    MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0)
}

/// The schema version of the file at `path`, read without changing (or creating) it.
pub(crate) async fn schema_version_at(path: &str) -> Result<i64, StoreError> {
    use sqlx::{ConnectOptions, Connection};
    let mut conn = SqliteConnectOptions::new()
        .filename(path)
        .read_only(true)
        .busy_timeout(BUSY_TIMEOUT)
        .connect()
        .await
        .map_err(db_err("database"))?;
    let v = crate::maintenance::sqlite_version(&mut conn).await;
    let _ = conn.close().await;
    v
}

/// Refuses a database migrated by a newer binary, then applies the embedded migrations.
async fn migrate(pool: &SqlitePool) -> Result<(), StoreError> {
    let supported = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
    let tracked: Option<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
    )
    .fetch_optional(pool)
    .await
    .map_err(db_err("schema version"))?;
    if tracked.is_some() {
        let found: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations")
            .fetch_one(pool)
            .await
            .map_err(db_err("schema version"))?;
        if let Some(found) = found.filter(|&v| v > supported) {
            return Err(StoreError::SchemaTooNew { found, supported });
        }
    }
    MIGRATOR.run(pool).await.map_err(StoreError::Migrate)
}

/// The one place `sqlx::Error` becomes a `StoreError` (exec logs add the foreign-key case);
/// `what` names the record in messages.
fn db_err(what: &'static str) -> impl Fn(sqlx::Error) -> StoreError {
    move |e| match e {
        sqlx::Error::RowNotFound => StoreError::not_found(what, ""),
        sqlx::Error::Database(ref d) if d.is_unique_violation() => {
            StoreError::Conflict(format!("{what} already exists"))
        }
        sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Decode(_)
        | sqlx::Error::ColumnNotFound(_) => StoreError::Corrupt { what },
        other => StoreError::Database(other),
    }
}

fn now() -> Timestamp {
    Utc::now()
}

fn ts(t: &Timestamp) -> String {
    t.format(TS_FORMAT).to_string()
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

/// Decodes the row a keyed statement returned, or reports the key as `NotFound`.
fn one<T>(
    row: Option<SqliteRow>,
    kind: &'static str,
    key: &str,
    decode: fn(&SqliteRow) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    row.map_or_else(|| Err(StoreError::not_found(kind, key)), |r| decode(&r))
}

/// `NotFound` when a keyed update or delete touched no row.
fn touched(done: SqliteQueryResult, kind: &'static str, key: &str) -> Result<(), StoreError> {
    if done.rows_affected() == 0 {
        return Err(StoreError::not_found(kind, key));
    }
    Ok(())
}

/// Reads a column, reporting an undecodable value as `Corrupt`.
fn col<'r, T>(row: &'r SqliteRow, name: &'static str) -> Result<T, StoreError>
where
    T: sqlx::Decode<'r, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite>,
{
    row.try_get(name)
        .map_err(|_| StoreError::Corrupt { what: name })
}

fn ts_col(row: &SqliteRow, name: &'static str) -> Result<Timestamp, StoreError> {
    let text: String = col(row, name)?;
    NaiveDateTime::parse_from_str(&text, TS_FORMAT)
        .map(|n| n.and_utc())
        .map_err(|_| StoreError::Corrupt { what: name })
}

fn json_col<T: DeserializeOwned>(row: &SqliteRow, name: &'static str) -> Result<T, StoreError> {
    let text: String = col(row, name)?;
    serde_json::from_str(&text).map_err(|_| StoreError::Corrupt { what: name })
}

fn to_json<T: Serialize>(value: &T, what: &'static str) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|_| StoreError::Corrupt { what })
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.reader)
            .await
            .map(|_| ())
            .map_err(db_err("ping"))
    }

    async fn insert_sandbox(&self, sb: &Sandbox) -> Result<(), StoreError> {
        sandboxes::insert(self, sb).await
    }

    async fn get_sandbox(&self, id: &str) -> Result<Sandbox, StoreError> {
        sandboxes::get(self, id).await
    }

    async fn list_sandboxes(&self) -> Result<Vec<Sandbox>, StoreError> {
        sandboxes::list(self).await
    }

    async fn set_sandbox_state(
        &self,
        id: &str,
        state: SandboxState,
    ) -> Result<Sandbox, StoreError> {
        sandboxes::set_state(self, id, state).await
    }

    async fn set_sandbox_running(&self, id: &str, vm_id: &str) -> Result<Sandbox, StoreError> {
        sandboxes::set_running(self, id, vm_id).await
    }

    async fn set_sandbox_expiry(
        &self,
        id: &str,
        expires_at: Timestamp,
    ) -> Result<Sandbox, StoreError> {
        sandboxes::set_expiry(self, id, expires_at).await
    }

    async fn list_expired_sandboxes(&self, now: Timestamp) -> Result<Vec<Sandbox>, StoreError> {
        sandboxes::list_expired(self, now).await
    }

    async fn count_active_sandboxes(
        &self,
        owner: Option<&str>,
    ) -> Result<ActiveCounts, StoreError> {
        sandboxes::count_active(self, owner).await
    }

    async fn insert_sandbox_limited(
        &self,
        sb: &Sandbox,
        limits: &crate::InsertLimits<'_>,
    ) -> Result<(), StoreError> {
        admission::insert_limited(self, sb, limits).await
    }

    async fn list_creating_sandboxes(&self) -> Result<Vec<crate::CreatingSandbox>, StoreError> {
        admission::list_creating(self).await
    }

    async fn insert_exec_log(&self, log: &ExecLog) -> Result<(), StoreError> {
        exec_logs::insert(self, log).await
    }

    async fn list_exec_logs(
        &self,
        sandbox_id: &str,
        limit: i64,
    ) -> Result<Vec<ExecLog>, StoreError> {
        exec_logs::list(self, sandbox_id, limit).await
    }

    async fn create_template(&self, t: &Template) -> Result<(), StoreError> {
        templates::create(self, t).await
    }

    async fn get_template(&self, name: &str) -> Result<Template, StoreError> {
        templates::get(self, name).await
    }

    async fn list_templates(&self) -> Result<Vec<Template>, StoreError> {
        templates::list(self).await
    }

    async fn replace_template(&self, t: &Template) -> Result<(), StoreError> {
        templates::replace(self, t).await
    }

    async fn delete_template(&self, name: &str) -> Result<(), StoreError> {
        templates::delete(self, name).await
    }

    async fn upsert_quota(&self, q: &OwnerQuota) -> Result<OwnerQuota, StoreError> {
        quotas::upsert(self, q).await
    }

    async fn get_quota(&self, owner_id: &str) -> Result<OwnerQuota, StoreError> {
        quotas::get(self, owner_id).await
    }

    async fn list_quotas(&self) -> Result<Vec<OwnerQuota>, StoreError> {
        quotas::list(self).await
    }

    async fn delete_quota(&self, owner_id: &str) -> Result<(), StoreError> {
        quotas::delete(self, owner_id).await
    }

    async fn upsert_worker(&self, w: &WorkerRecord) -> Result<WorkerRecord, StoreError> {
        workers::upsert(self, w).await
    }

    async fn get_worker(&self, id: &str) -> Result<WorkerRecord, StoreError> {
        workers::get(self, id).await
    }

    async fn list_workers(&self) -> Result<Vec<WorkerRecord>, StoreError> {
        workers::list(self).await
    }

    async fn delete_worker(&self, id: &str) -> Result<(), StoreError> {
        workers::delete(self, id).await
    }

    async fn acquire_lease(
        &self,
        resource_id: &str,
        resource_type: &str,
        holder_id: &str,
        ttl: Duration,
    ) -> Result<Lease, StoreError> {
        leases::acquire(self, resource_id, resource_type, holder_id, ttl).await
    }

    async fn renew_lease(
        &self,
        resource_id: &str,
        holder_id: &str,
        ttl: Duration,
    ) -> Result<Lease, StoreError> {
        leases::renew(self, resource_id, holder_id, ttl).await
    }

    async fn release_lease(&self, resource_id: &str, holder_id: &str) -> Result<(), StoreError> {
        leases::release(self, resource_id, holder_id).await
    }

    async fn get_lease(&self, resource_id: &str) -> Result<Lease, StoreError> {
        leases::get(self, resource_id).await
    }

    async fn list_leases(&self) -> Result<Vec<Lease>, StoreError> {
        leases::list(self).await
    }

    async fn insert_admin_audit(&self, rec: &NewAdminAudit) -> Result<(), StoreError> {
        audit::insert(self, rec).await
    }

    async fn list_admin_audit(
        &self,
        filter: &AuditFilter,
    ) -> Result<Vec<AdminAuditRecord>, StoreError> {
        audit::list(self, filter).await
    }

    async fn prune_admin_audit(&self, before: Timestamp) -> Result<u64, StoreError> {
        audit::prune(self, before).await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::BTreeMap;

    use chrono::TimeZone;

    use super::*;

    struct TempStore {
        _dir: tempfile::TempDir,
        path: String,
        store: SqliteStore,
    }

    async fn temp_store() -> TempStore {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested.db").display().to_string();
        let store = SqliteStore::open(&path).await.unwrap();
        TempStore {
            _dir: dir,
            path,
            store,
        }
    }

    fn sandbox(id: &str) -> Sandbox {
        let t = Utc::now();
        Sandbox {
            id: id.into(),
            state: SandboxState::Running,
            provider: "mock".into(),
            image: "alpine".into(),
            memory_mb: 64,
            vcpus: 1,
            metadata: BTreeMap::new(),
            template: String::new(),
            owner_id: "alice".into(),
            vm_id: String::new(),
            worker_id: "local".into(),
            tenant_id: String::new(),
            preview_domain: String::new(),
            created_at: t,
            expires_at: t,
            updated_at: t,
        }
    }

    #[tokio::test]
    async fn pragmas_apply_to_every_connection() {
        let t = temp_store().await;
        for pool in [&t.store.writer, &t.store.reader] {
            let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
                .fetch_one(pool)
                .await
                .unwrap();
            assert_eq!(mode, "wal");
            let sync: i64 = sqlx::query_scalar("PRAGMA synchronous")
                .fetch_one(pool)
                .await
                .unwrap();
            assert_eq!(sync, 1, "NORMAL");
            let fk: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
                .fetch_one(pool)
                .await
                .unwrap();
            assert_eq!(fk, 1);
            let busy: i64 = sqlx::query_scalar("PRAGMA busy_timeout")
                .fetch_one(pool)
                .await
                .unwrap();
            assert_eq!(busy, 5000);
        }
    }

    #[tokio::test]
    async fn reopen_keeps_data_and_refuses_a_newer_schema() {
        let t = temp_store().await;
        t.store.insert_sandbox(&sandbox("sb-1")).await.unwrap();
        t.store.close().await;
        let again = SqliteStore::open(&t.path).await.unwrap();
        assert_eq!(again.get_sandbox("sb-1").await.unwrap().owner_id, "alice");
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, \
               execution_time) VALUES (9999, 'from the future', TRUE, x'00', 0)",
        )
        .execute(&again.writer)
        .await
        .unwrap();
        again.close().await;
        match SqliteStore::open(&t.path).await {
            Err(StoreError::SchemaTooNew { found, supported }) => {
                assert_eq!((found, supported), (9999, 2));
            }
            Err(e) => panic!("expected SchemaTooNew, got {e:?}"),
            Ok(_) => panic!("expected SchemaTooNew, got a store"),
        }
    }

    #[tokio::test]
    async fn undecodable_rows_are_corrupt() {
        let t = temp_store().await;
        for (id, column, value) in [
            ("sb-state", "state", "idle"),
            ("sb-time", "created_at", "yesterday"),
            ("sb-meta", "metadata", "{not json"),
        ] {
            t.store.insert_sandbox(&sandbox(id)).await.unwrap();
            let sql = format!("UPDATE sandboxes SET {column} = ?1 WHERE id = ?2");
            sqlx::query(&sql)
                .bind(value)
                .bind(id)
                .execute(&t.store.writer)
                .await
                .unwrap();
            match t.store.get_sandbox(id).await {
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
            let plan: Vec<String> = sqlx::query(&format!("EXPLAIN QUERY PLAN {sql}"))
                .bind("alice")
                .fetch_all(&t.store.reader)
                .await
                .unwrap()
                .iter()
                .map(|r| r.get::<String, _>("detail"))
                .collect();
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

    /// The control plane's budget: ≥ 2,000 spawn+destroy pairs per second, each pair being
    /// what spawn and destroy ask of the store. Timing-sensitive, so opt-in:
    /// `cargo test -p stacyvm-store --release -- --ignored --nocapture throughput`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "throughput figure; run on its own, ideally with --release"]
    async fn spawn_destroy_throughput() {
        const PAIRS: usize = 8_000;
        const TASKS: usize = 8;
        let t = temp_store().await;
        let store = std::sync::Arc::new(t.store);
        let started = std::time::Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for task in 0..TASKS {
            let store = std::sync::Arc::clone(&store);
            tasks.spawn(async move {
                for n in (task..PAIRS).step_by(TASKS) {
                    let sb = sandbox(&format!("sb-{n:08x}"));
                    store.count_active_sandboxes(Some("alice")).await.unwrap();
                    store.insert_sandbox(&sb).await.unwrap();
                    let ttl = Duration::from_secs(1800);
                    store
                        .acquire_lease(&sb.id, "sandbox", "local", ttl)
                        .await
                        .unwrap();
                    store
                        .acquire_lease(&sb.id, "sandbox", "local", ttl)
                        .await
                        .unwrap();
                    store
                        .set_sandbox_state(&sb.id, SandboxState::Destroyed)
                        .await
                        .unwrap();
                    store.release_lease(&sb.id, "local").await.unwrap();
                }
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.unwrap();
        }
        let rate = PAIRS as f64 / started.elapsed().as_secs_f64();
        println!("{rate:.0} spawn+destroy pairs/s ({PAIRS} pairs, {TASKS} tasks)");
        assert!(
            rate >= 2_000.0,
            "{rate:.0} pairs/s is below the 2,000/s budget"
        );
    }

    #[tokio::test]
    async fn open_by_driver_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("by-name.db").display().to_string();
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
        store.insert_sandbox(&sandbox("sb-1")).await.unwrap();
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
