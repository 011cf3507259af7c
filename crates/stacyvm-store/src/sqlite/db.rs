//! The SQLite store's connections and the helpers every query module uses.
//!
//! Statements run on the caller's thread, under a mutex per connection. A keyed statement takes
//! microseconds, far less than shipping it to a connection thread and waking the caller again,
//! which is how sqlx-sqlite runs every statement: measured on a 2-core VM, that hand-off cost
//! ≈ 0.2 ms of CPU per statement and capped spawn+destroy at a third of its target (see
//! docs/store.md). Writes are `BEGIN IMMEDIATE` transactions on the one writer connection, so a
//! read-then-write never meets a stale snapshot and the writer lock is waited for by
//! `busy_timeout` rather than failed. Reads use their own connections, which WAL lets run
//! beside the writer.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rusqlite::types::FromSql;
use rusqlite::{Connection, OpenFlags, Params, Row};

use super::checkpoint::Checkpointer;
use crate::rows::ReadRow;
use crate::StoreError;

/// Reader connections: enough to keep both cores busy beside the writer on a 2-core box.
const READERS: usize = 2;
pub(super) const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Prepared statements kept per connection: every statement of the store fits.
const STATEMENT_CACHE: usize = 128;

pub(super) struct Db {
    /// First, so it stops before the connections close (`None` for `:memory:`).
    _checkpointer: Option<Checkpointer>,
    /// Commits on the writer; the checkpointer decides from it when to run.
    commits: Arc<AtomicU64>,
    /// An async mutex: a write waiting for another yields its tokio worker to other requests
    /// instead of blocking the thread (with two workers, one blocked worker halves the server).
    writer: tokio::sync::Mutex<Connection>,
    /// Empty for `:memory:`, whose data lives on the writer connection alone.
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
}

fn lock(m: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    // A panic while holding the lock leaves at most an open transaction, which `write` rolls
    // back before its next use. The connection stays usable.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn connect(path: &str, flags: OpenFlags) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(path, flags).map_err(sql_err("database"))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(sql_err("database"))?;
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(sql_err("database"))?;
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(sql_err("database"))?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(conn)
}

impl Db {
    /// Opens the writer (switching the file to WAL) and the readers. `:memory:` gets one
    /// private connection.
    pub(super) fn open(path: &str) -> Result<Db, StoreError> {
        let rw = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        if path == ":memory:" {
            return Ok(Db {
                _checkpointer: None,
                commits: Arc::default(),
                writer: tokio::sync::Mutex::new(connect(path, rw)?),
                readers: Vec::new(),
                next_reader: AtomicUsize::new(0),
            });
        }
        let writer = connect(path, rw)?;
        // Only the writer switches the file to WAL: the switch needs an exclusive lock that
        // busy_timeout cannot wait for, and readers inherit the mode from the file.
        let mode: String = writer
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(sql_err("database"))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Unsupported(format!(
                "sqlite database cannot use WAL (journal mode {mode})"
            )));
        }
        let readers = (0..READERS)
            .map(|_| {
                connect(
                    path,
                    OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )
                .and_then(|c| {
                    // A reader never writes; make a slip an error instead of a second writer.
                    c.pragma_update(None, "query_only", "ON")
                        .map_err(sql_err("database"))?;
                    Ok(Mutex::new(c))
                })
            })
            .collect::<Result<_, _>>()?;
        // Checkpoints move off the commit path (see `checkpoint`); the WAL file is cut back to
        // 64 MiB after a checkpoint if a burst grew it.
        for pragma in ["wal_autocheckpoint = 0", "journal_size_limit = 67108864"] {
            writer
                .query_row(&format!("PRAGMA {pragma}"), [], |_| Ok(()))
                .map_err(sql_err("database"))?;
        }
        let commits = Arc::new(AtomicU64::new(0));
        let checkpointer =
            Checkpointer::start(connect(path, rw)?, Arc::clone(&commits)).map_err(|e| {
                StoreError::Unsupported(format!("cannot start the sqlite checkpoint thread: {e}"))
            })?;
        Ok(Db {
            _checkpointer: Some(checkpointer),
            commits,
            writer: tokio::sync::Mutex::new(writer),
            readers,
            next_reader: AtomicUsize::new(0),
        })
    }

    /// Runs `f` in a `BEGIN IMMEDIATE` transaction on the writer; an error rolls it back.
    pub(super) async fn write<T>(
        &self,
        what: &'static str,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let conn = self.writer.lock().await;
        if !conn.is_autocommit() {
            // A panic inside an earlier `f` left its transaction open: drop it.
            let _ = conn.execute_batch("ROLLBACK");
        }
        // Cached statements: BEGIN and COMMIT run on every write.
        exec(&conn, what, "BEGIN IMMEDIATE", [])?;
        let out = f(&conn).and_then(|v| exec(&conn, what, "COMMIT", []).map(|_| v));
        if out.is_err() && !conn.is_autocommit() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        if out.is_ok() {
            self.commits.fetch_add(1, Ordering::Relaxed);
        }
        out
    }

    /// Runs `f` on a reader connection (the writer for `:memory:`); each statement sees the
    /// latest committed state.
    pub(super) fn read<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        if self.readers.is_empty() {
            // `:memory:` (tests, throwaway servers): reads share the writer. Its holder never
            // awaits while holding it, so it runs on another thread and lets go within
            // microseconds: spinning is enough.
            let conn = loop {
                match self.writer.try_lock() {
                    Ok(c) => break c,
                    Err(_) => std::thread::yield_now(),
                }
            };
            return f(&conn);
        }
        let start = self.next_reader.fetch_add(1, Ordering::Relaxed);
        // Prefer an idle reader; wait for one only when all are busy.
        for i in 0..self.readers.len() {
            let m = &self.readers[(start + i) % self.readers.len()];
            match m.try_lock() {
                Ok(conn) => return f(&conn),
                Err(std::sync::TryLockError::Poisoned(p)) => return f(&p.into_inner()),
                Err(std::sync::TryLockError::WouldBlock) => {}
            }
        }
        f(&lock(&self.readers[start % self.readers.len()]))
    }

    /// The record a statement keyed by `$1 = key` returns, or `NotFound` naming the key.
    pub(super) async fn get_keyed<T>(
        &self,
        kind: &'static str,
        sql: &str,
        key: &str,
        decode: impl FnOnce(&Row<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        found(
            self.read(|c| first(c, kind, sql, [key], decode))?,
            kind,
            key,
        )
    }

    /// Every record a statement without parameters returns.
    pub(super) async fn get_all<T>(
        &self,
        kind: &'static str,
        sql: &str,
        decode: impl Fn(&Row<'_>) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        self.read(|c| all(c, kind, sql, [], decode))
    }

    /// Runs a delete keyed by `$1 = key`; `NotFound` when it touched no row.
    pub(super) async fn delete_keyed(
        &self,
        kind: &'static str,
        sql: &str,
        key: &str,
    ) -> Result<(), StoreError> {
        let n = self.execute(kind, sql, [key]).await?;
        touched(n, kind, key)
    }

    /// Runs one statement that changes rows in a write transaction of its own; returns how
    /// many it changed.
    pub(super) async fn execute(
        &self,
        kind: &'static str,
        sql: &str,
        params: impl Params + Send,
    ) -> Result<usize, StoreError> {
        self.write(kind, |c| exec(c, kind, sql, params)).await
    }

    /// Runs `f` on every connection (tests check their settings).
    #[cfg(test)]
    pub(super) async fn for_each_connection(&self, f: impl Fn(&Connection)) {
        f(&*self.writer.lock().await);
        for r in &self.readers {
            f(&lock(r));
        }
    }

    /// The writer connection, for setup and tests.
    pub(super) async fn writer(&self) -> tokio::sync::MutexGuard<'_, Connection> {
        self.writer.lock().await
    }
}

/// The one place `rusqlite::Error` becomes a `StoreError`; `what` names the record.
pub(super) fn sql_err(what: &'static str) -> impl Fn(rusqlite::Error) -> StoreError {
    use rusqlite::ffi;
    move |e| match e {
        rusqlite::Error::QueryReturnedNoRows => StoreError::not_found(what, ""),
        rusqlite::Error::SqliteFailure(ref f, _)
            if f.extended_code == ffi::SQLITE_CONSTRAINT_UNIQUE
                || f.extended_code == ffi::SQLITE_CONSTRAINT_PRIMARYKEY =>
        {
            StoreError::Conflict(format!("{what} already exists"))
        }
        rusqlite::Error::FromSqlConversionFailure(..)
        | rusqlite::Error::InvalidColumnType(..)
        | rusqlite::Error::InvalidColumnName(_)
        | rusqlite::Error::IntegralValueOutOfRange(..) => StoreError::Corrupt { what },
        other => StoreError::Sqlite(other),
    }
}

/// Whether `e` is SQLite refusing a row for a foreign key.
pub(super) fn is_foreign_key(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY)
}

/// Reads a column, reporting an undecodable value as `Corrupt`.
pub(super) fn col<T: FromSql>(row: &Row<'_>, name: &'static str) -> Result<T, StoreError> {
    row.get(name)
        .map_err(|_| StoreError::Corrupt { what: name })
}

impl ReadRow for Row<'_> {
    fn opt_text(&self, name: &'static str) -> Result<Option<String>, StoreError> {
        col(self, name)
    }

    fn int(&self, name: &'static str) -> Result<i64, StoreError> {
        col(self, name)
    }

    /// TEXT: SQLite text holds NUL characters.
    fn output(&self, name: &'static str) -> Result<String, StoreError> {
        col(self, name)
    }
}

/// Runs a statement that changes rows; returns how many.
pub(super) fn exec(
    c: &Connection,
    what: &'static str,
    sql: &str,
    params: impl Params,
) -> Result<usize, StoreError> {
    c.prepare_cached(sql)
        .and_then(|mut st| st.execute(params))
        .map_err(sql_err(what))
}

/// The first row of a query, decoded.
pub(super) fn first<T>(
    c: &Connection,
    what: &'static str,
    sql: &str,
    params: impl Params,
    decode: impl FnOnce(&Row<'_>) -> Result<T, StoreError>,
) -> Result<Option<T>, StoreError> {
    let mut st = c.prepare_cached(sql).map_err(sql_err(what))?;
    let mut rows = st.query(params).map_err(sql_err(what))?;
    match rows.next().map_err(sql_err(what))? {
        Some(row) => decode(row).map(Some),
        None => Ok(None),
    }
}

/// Every row of a query, decoded.
pub(super) fn all<T>(
    c: &Connection,
    what: &'static str,
    sql: &str,
    params: impl Params,
    decode: impl Fn(&Row<'_>) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    let mut st = c.prepare_cached(sql).map_err(sql_err(what))?;
    let mut rows = st.query(params).map_err(sql_err(what))?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(sql_err(what))? {
        out.push(decode(row)?);
    }
    Ok(out)
}

/// The decoded row of a keyed statement, or `NotFound` naming the key.
pub(super) fn found<T>(v: Option<T>, kind: &'static str, key: &str) -> Result<T, StoreError> {
    v.ok_or_else(|| StoreError::not_found(kind, key))
}

/// `NotFound` when a keyed update or delete touched no row.
pub(super) fn touched(n: usize, kind: &'static str, key: &str) -> Result<(), StoreError> {
    if n == 0 {
        return Err(StoreError::not_found(kind, key));
    }
    Ok(())
}
