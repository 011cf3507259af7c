//! Postgres backend, for several control planes on one database. Every operation is one
//! statement on a pooled connection; row locks taken by `INSERT .. ON CONFLICT` and `UPDATE`
//! serialise writers on the same row, so the compare-and-set rules in the WHERE clauses hold
//! however many processes race. Timestamps the store stamps itself (lease grants, heartbeats,
//! audit rows, `updated_at` of state changes) come from the database clock, `now()`, so all
//! control planes agree on lease expiry whatever their own clocks say.

/// Formats a `timestamptz` SQL expression (a string literal) into the stored text shape.
/// Postgres keeps microseconds, so the last three fraction digits are always 0.
macro_rules! pg_ts {
    ($expr:expr) => {
        concat!(
            "to_char((",
            $expr,
            ") AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"000Z\"')"
        )
    };
}

/// The database clock as stored text. `now()` is fixed for the whole statement, so every use
/// in one statement gives the same instant.
macro_rules! now_ts {
    () => {
        pg_ts!("now()")
    };
}

/// `now() + <interval parameter>` as stored text, saturating at the end of year 9999 like the
/// SQLite backend (bind the TTL with `ttl_interval`).
macro_rules! deadline_ts {
    ($param:literal) => {
        pg_ts!(concat!(
            "LEAST(now() + ",
            $param,
            ", TIMESTAMPTZ '9999-12-31 23:59:59.999999+00')"
        ))
    };
}

mod admission;
mod audit;
mod e2b_sandboxes;
mod exec_logs;
mod leases;
mod lifecycle;
mod notify;
mod quotas;
mod sandboxes;
mod snapshots;
mod templates;
#[cfg(any(test, feature = "conformance"))]
pub mod test_db;
mod volumes;
mod workers;

use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgRow};
use sqlx::{Connection, Row};
use stacyvm_types::{Sandbox, SandboxId, SandboxState, Timestamp, WorkerId};

use crate::rows::ReadRow;
use crate::{
    AdminAuditRecord, AuditFilter, E2bSandbox, ExecLog, Lease, NewAdminAudit, OwnerQuota, Snapshot,
    StoreError, Template, Volume, VolumeMount, WorkerRecord,
};

static MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

/// Per control plane. Postgres' default `max_connections` is 100, shared by every process.
const MAX_CONNECTIONS: u32 = 10;
/// Bounds the first connection at open: a blackholed host must not hang startup.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Bounds every later checkout, including reconnecting after the server went away.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);
/// Closes idle connections before typical server or proxy idle limits cut them.
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// Longest TTL sent to the database (about 10,000 years); the result saturates at year 9999.
const MAX_TTL_MICROS: i64 = 10_000 * 366 * 86_400 * 1_000_000;

pub struct PgStore {
    pool: PgPool,
    /// Started on first use (it needs a runtime and holds a connection).
    bridge: std::sync::OnceLock<std::sync::Arc<notify::PgEventBridge>>,
}

impl PgStore {
    /// Connects to `dsn` (`postgres://user:pass@host:port/db`), migrates, and returns a store on
    /// a lazily filled pool. TLS is not compiled in: `sslmode=require` fails.
    pub async fn open(dsn: &str) -> Result<Self, StoreError> {
        if !(dsn.starts_with("postgres://") || dsn.starts_with("postgresql://")) {
            return Err(StoreError::Unsupported(
                "postgres dsn must be a URL starting with postgres:// or postgresql://".into(),
            ));
        }
        Self::open_with(parse_dsn(dsn)?).await
    }

    /// As [`PgStore::open`], from parsed options.
    pub async fn open_with(options: PgConnectOptions) -> Result<Self, StoreError> {
        let options = if options.get_application_name().is_none() {
            options.application_name("stacyvm")
        } else {
            options
        };
        let mut conn = connect(&options).await?;
        let checked = refuse_newer_schema(&mut conn).await;
        // Best effort: the server drops the session anyway when the socket closes.
        let _ = conn.close().await;
        checked?;
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .idle_timeout(IDLE_TIMEOUT)
            // A dead connection fails one statement and is discarded; a ping per checkout
            // would double the round trips of every operation.
            .test_before_acquire(false)
            .connect_lazy_with(options);
        // sqlx holds an advisory lock while migrating, so control planes starting together
        // apply each migration once.
        MIGRATOR.run(&pool).await.map_err(StoreError::Migrate)?;
        Ok(PgStore {
            pool,
            bridge: std::sync::OnceLock::new(),
        })
    }

    /// Closes the pool, waiting for checked-out connections to come back.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// The newest migration applied to this database.
    pub async fn schema_version(&self) -> Result<i64, StoreError> {
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(db_err("schema version"))?;
        tracked_version(&mut conn).await
    }
}

/// The newest migration this binary carries.
pub(crate) fn latest_version() -> i64 {
    MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0)
}

/// The schema version of the database at `dsn` (0 when never migrated), changing nothing.
pub(crate) async fn schema_version_at(dsn: &str) -> Result<i64, StoreError> {
    let mut conn = connect(&parse_dsn(dsn)?).await?;
    let v = tracked_version(&mut conn).await;
    let _ = conn.close().await;
    v
}

/// The options a DSN names. sqlx's parse errors never echo the DSN, which may carry a password.
fn parse_dsn(dsn: &str) -> Result<PgConnectOptions, StoreError> {
    dsn.parse()
        .map_err(|e| StoreError::Unsupported(format!("invalid postgres dsn: {e}")))
}

/// One direct connection, bounded by `CONNECT_TIMEOUT`. Its error says why (refused, bad
/// password, no such database), where a pool would only report a timeout after retrying.
async fn connect(options: &PgConnectOptions) -> Result<PgConnection, StoreError> {
    let connecting = PgConnection::connect_with(options);
    let reason = match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
        Ok(Ok(conn)) => return Ok(conn),
        Ok(Err(e)) => e.to_string(),
        Err(_) => format!("no answer within {}s", CONNECT_TIMEOUT.as_secs()),
    };
    Err(StoreError::Unreachable {
        target: describe(options),
        reason,
    })
}

/// Whether the database has sqlx's migration table (false: never migrated).
async fn tracked(conn: &mut PgConnection) -> Result<bool, StoreError> {
    sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .fetch_one(&mut *conn)
        .await
        .map_err(db_err("schema version"))
}

async fn tracked_version(conn: &mut PgConnection) -> Result<i64, StoreError> {
    if !tracked(conn).await? {
        return Ok(0);
    }
    let v: Option<i64> =
        sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations WHERE success")
            .fetch_one(&mut *conn)
            .await
            .map_err(db_err("schema version"))?;
    Ok(v.unwrap_or(0))
}

/// `host:port/database` for messages; never the password.
fn describe(o: &PgConnectOptions) -> String {
    let db = o.get_database().unwrap_or(o.get_username());
    match o.get_socket() {
        Some(dir) => format!("{}/{db}", dir.display()),
        None => format!("{}:{}/{db}", o.get_host(), o.get_port()),
    }
}

/// `SchemaTooNew` when the database was migrated by a newer binary; changes nothing.
async fn refuse_newer_schema(conn: &mut PgConnection) -> Result<(), StoreError> {
    let supported = latest_version();
    if tracked(conn).await? {
        let found: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations")
            .fetch_one(&mut *conn)
            .await
            .map_err(db_err("schema version"))?;
        if let Some(found) = found.filter(|&v| v > supported) {
            return Err(StoreError::SchemaTooNew { found, supported });
        }
    }
    Ok(())
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

/// A TTL as an interval bind parameter: rounded up to whole microseconds (Postgres' precision,
/// so a tiny TTL never becomes zero) and capped so `now() + ttl` cannot overflow.
fn ttl_interval(ttl: Duration) -> sqlx::postgres::types::PgInterval {
    let micros = ttl.as_nanos().div_ceil(1_000);
    sqlx::postgres::types::PgInterval {
        months: 0,
        days: 0,
        microseconds: i64::try_from(micros).map_or(MAX_TTL_MICROS, |m| m.min(MAX_TTL_MICROS)),
    }
}

/// A statement with its parameters bound so far.
type Query<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

/// The keyed-statement idioms, with the same names and arguments as the SQLite backend's `Db`
/// (the shared `Store` methods call them on either).
impl PgStore {
    /// The record a statement keyed by `$1 = key` returns, or `NotFound` naming the key.
    async fn get_keyed<T>(
        &self,
        kind: &'static str,
        sql: &str,
        key: &str,
        decode: impl FnOnce(&PgRow) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let row = self
            .fetch_optional(kind, sqlx::query(sql).bind(key))
            .await?;
        row.map_or_else(|| Err(StoreError::not_found(kind, key)), |r| decode(&r))
    }

    /// Every record a statement without parameters returns.
    async fn get_all<T>(
        &self,
        kind: &'static str,
        sql: &str,
        decode: impl Fn(&PgRow) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        self.fetch_all(kind, sqlx::query(sql), decode).await
    }

    /// Runs a delete keyed by `$1 = key`; `NotFound` when it touched no row.
    async fn delete_keyed(
        &self,
        kind: &'static str,
        sql: &str,
        key: &str,
    ) -> Result<(), StoreError> {
        let n = self.execute(kind, sqlx::query(sql).bind(key)).await?;
        touched(n, kind, key)
    }

    /// Runs a statement on the pool; how many rows it changed.
    async fn execute(&self, kind: &'static str, q: Query<'_>) -> Result<u64, StoreError> {
        let done = q.execute(&self.pool).await.map_err(db_err(kind))?;
        Ok(done.rows_affected())
    }

    /// The one row a statement returns.
    async fn fetch_one(&self, kind: &'static str, q: Query<'_>) -> Result<PgRow, StoreError> {
        q.fetch_one(&self.pool).await.map_err(db_err(kind))
    }

    /// The row a statement returns, if any.
    async fn fetch_optional(
        &self,
        kind: &'static str,
        q: Query<'_>,
    ) -> Result<Option<PgRow>, StoreError> {
        q.fetch_optional(&self.pool).await.map_err(db_err(kind))
    }

    /// Every row a statement returns, decoded.
    async fn fetch_all<T>(
        &self,
        kind: &'static str,
        q: Query<'_>,
        decode: impl Fn(&PgRow) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        let rows = q.fetch_all(&self.pool).await.map_err(db_err(kind))?;
        rows.iter().map(decode).collect()
    }
}

/// `NotFound` when a keyed update or delete touched no row.
fn touched(n: u64, kind: &'static str, key: &str) -> Result<(), StoreError> {
    if n == 0 {
        return Err(StoreError::not_found(kind, key));
    }
    Ok(())
}

/// Reads a column, reporting an undecodable value as `Corrupt`.
fn col<'r, T>(row: &'r PgRow, name: &'static str) -> Result<T, StoreError>
where
    T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
{
    row.try_get(name)
        .map_err(|_| StoreError::Corrupt { what: name })
}

impl ReadRow for PgRow {
    fn opt_text(&self, name: &'static str) -> Result<Option<String>, StoreError> {
        col(self, name)
    }

    fn int(&self, name: &'static str) -> Result<i64, StoreError> {
        col(self, name)
    }

    /// BYTEA holding UTF-8: Postgres TEXT cannot hold NUL characters.
    fn output(&self, name: &'static str) -> Result<String, StoreError> {
        String::from_utf8(col(self, name)?).map_err(|_| StoreError::Corrupt { what: name })
    }
}

crate::impl_store! { PgStore;
    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(db_err("ping"))
    }

    async fn cluster_id(&self) -> Result<String, StoreError> {
        sqlx::query_scalar::<_, String>("SELECT id FROM cluster")
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err("cluster id"))?
            .ok_or_else(|| StoreError::not_found("cluster", "id"))
    }

    fn event_bridge(&self) -> Option<std::sync::Arc<dyn crate::EventBridge>> {
        // The listener task needs a runtime; outside one there is no bridge.
        tokio::runtime::Handle::try_current().ok()?;
        let bridge = self
            .bridge
            .get_or_init(|| std::sync::Arc::new(notify::PgEventBridge::start(self.pool.clone())));
        Some(bridge.clone())
    }
}

#[cfg(test)]
mod tests;
