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
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgQueryResult, PgRow};
use sqlx::{Connection, Row};
use stacyvm_types::{Sandbox, SandboxId, SandboxState, Timestamp, WorkerId};

use crate::rows::ReadRow;
use crate::{
    ActiveCounts, AdminAuditRecord, AuditFilter, E2bSandbox, ExecLog, Lease, NewAdminAudit,
    OwnerQuota, Snapshot, Store, StoreError, Template, Volume, VolumeMount, WorkerRecord,
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

/// Decodes the row a keyed statement returned, or reports the key as `NotFound`.
fn one<T>(
    row: Option<PgRow>,
    kind: &'static str,
    key: &str,
    decode: fn(&PgRow) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    row.map_or_else(|| Err(StoreError::not_found(kind, key)), |r| decode(&r))
}

/// A statement with its parameters bound so far.
type Query<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

/// The record a statement keyed by `$1 = key` returns, or `NotFound` naming the key.
async fn get_keyed<T>(
    db: &PgStore,
    sql: &str,
    kind: &'static str,
    key: &str,
    decode: fn(&PgRow) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let row = sqlx::query(sql)
        .bind(key)
        .fetch_optional(&db.pool)
        .await
        .map_err(db_err(kind))?;
    one(row, kind, key, decode)
}

/// Every record a statement without parameters returns.
async fn get_all<T>(
    db: &PgStore,
    sql: &str,
    kind: &'static str,
    decode: fn(&PgRow) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    let rows = sqlx::query(sql)
        .fetch_all(&db.pool)
        .await
        .map_err(db_err(kind))?;
    rows.iter().map(decode).collect()
}

/// Runs a delete keyed by `$1 = key`; `NotFound` when it touched no row.
async fn delete_keyed(
    db: &PgStore,
    sql: &str,
    kind: &'static str,
    key: &str,
) -> Result<(), StoreError> {
    let done = sqlx::query(sql)
        .bind(key)
        .execute(&db.pool)
        .await
        .map_err(db_err(kind))?;
    touched(done, kind, key)
}

/// `NotFound` when a keyed update or delete touched no row.
fn touched(done: PgQueryResult, kind: &'static str, key: &str) -> Result<(), StoreError> {
    if done.rows_affected() == 0 {
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

#[async_trait::async_trait]
impl Store for PgStore {
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

    async fn insert_sandbox(&self, sb: &Sandbox) -> Result<(), StoreError> {
        sandboxes::insert(self, sb).await
    }

    async fn get_sandbox(&self, id: &SandboxId) -> Result<Sandbox, StoreError> {
        sandboxes::get(self, id).await
    }

    async fn list_sandboxes(&self) -> Result<Vec<Sandbox>, StoreError> {
        sandboxes::list(self).await
    }

    async fn set_sandbox_state(
        &self,
        id: &SandboxId,
        state: SandboxState,
    ) -> Result<Sandbox, StoreError> {
        sandboxes::set_state(self, id, state).await
    }

    async fn set_sandbox_running(
        &self,
        id: &SandboxId,
        vm_id: Option<&str>,
    ) -> Result<Sandbox, StoreError> {
        sandboxes::set_running(self, id, vm_id).await
    }

    async fn set_sandbox_expiry(
        &self,
        id: &SandboxId,
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

    async fn pause_sandbox(&self, id: &SandboxId, at: Timestamp) -> Result<Sandbox, StoreError> {
        lifecycle::pause(self, id, at).await
    }

    async fn resume_sandbox(
        &self,
        id: &SandboxId,
        expires_at: Timestamp,
    ) -> Result<Sandbox, StoreError> {
        lifecycle::resume(self, id, expires_at).await
    }

    async fn touch_sandbox(&self, id: &SandboxId, at: Timestamp) -> Result<(), StoreError> {
        lifecycle::touch(self, id, at).await
    }

    async fn count_paused_sandboxes(&self) -> Result<i64, StoreError> {
        lifecycle::count_paused(self).await
    }

    async fn insert_exec_log(&self, log: &ExecLog) -> Result<(), StoreError> {
        exec_logs::insert(self, log).await
    }

    async fn list_exec_logs(
        &self,
        sandbox_id: &SandboxId,
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

    async fn get_worker(&self, id: &WorkerId) -> Result<WorkerRecord, StoreError> {
        workers::get(self, id).await
    }

    async fn list_workers(&self) -> Result<Vec<WorkerRecord>, StoreError> {
        workers::list(self).await
    }

    async fn delete_worker(&self, id: &WorkerId) -> Result<(), StoreError> {
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

    async fn prune_leases(
        &self,
        prefix: &str,
        expired_for: std::time::Duration,
    ) -> Result<u64, StoreError> {
        leases::prune(self, prefix, expired_for).await
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

    async fn insert_e2b_sandbox(&self, r: &E2bSandbox) -> Result<(), StoreError> {
        e2b_sandboxes::insert(self, r).await
    }

    async fn get_e2b_sandbox(&self, id: &SandboxId) -> Result<E2bSandbox, StoreError> {
        e2b_sandboxes::get(self, id).await
    }

    async fn insert_volume(&self, v: &Volume) -> Result<(), StoreError> {
        volumes::insert(self, v).await
    }

    async fn get_volume(&self, name: &str) -> Result<Volume, StoreError> {
        volumes::get(self, name).await
    }

    async fn list_volumes(&self) -> Result<Vec<Volume>, StoreError> {
        volumes::list(self).await
    }

    async fn delete_volume(&self, name: &str) -> Result<(), StoreError> {
        volumes::delete(self, name).await
    }

    async fn mount_volumes(
        &self,
        sandbox_id: &SandboxId,
        mounts: &[VolumeMount],
    ) -> Result<(), StoreError> {
        volumes::mount(self, sandbox_id, mounts).await
    }

    async fn list_volume_mounts(&self) -> Result<Vec<VolumeMount>, StoreError> {
        volumes::list_mounts(self).await
    }

    async fn insert_snapshot(&self, s: &Snapshot) -> Result<(), StoreError> {
        snapshots::insert(self, s).await
    }

    async fn get_snapshot(&self, id: &str) -> Result<Snapshot, StoreError> {
        snapshots::get(self, id).await
    }

    async fn list_snapshots(&self) -> Result<Vec<Snapshot>, StoreError> {
        snapshots::list(self).await
    }

    async fn delete_snapshot(&self, id: &str) -> Result<(), StoreError> {
        snapshots::delete(self, id).await
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
