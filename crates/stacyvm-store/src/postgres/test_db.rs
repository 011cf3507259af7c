//! Throwaway Postgres databases for tests (feature `conformance`). The server is named by
//! `STACYVM_TEST_PG_DSN` (scripts/setup-postgres.sh prints it); its role needs CREATEDB. Each
//! [`TestDb`] is a new `CREATE DATABASE t_<unique>`, dropped again when the value is dropped.
//!
//! Without the variable, or when the server does not answer, [`TestDb::create`] panics: a test
//! that asks for Postgres runs only when selected (nextest profiles `pg` and `ci`, or a module
//! named `needs_pg`; see docs/conventions.md), and once selected it must not pass unchecked.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{Connection, Executor};

use super::PgStore;

/// The variable naming the test server: `postgres://user:pass@127.0.0.1:PORT/postgres`.
pub const DSN_ENV: &str = "STACYVM_TEST_PG_DSN";

const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

/// One fresh, empty database on the test server.
pub struct TestDb {
    admin: PgConnectOptions,
    admin_dsn: String,
    name: String,
}

impl TestDb {
    /// A new empty database. Panics when no test server answers, or on a malformed DSN.
    pub async fn create() -> TestDb {
        let dsn = match std::env::var(DSN_ENV) {
            Ok(dsn) if !dsn.trim().is_empty() => dsn,
            _ => unavailable(&format!("{DSN_ENV} is not set")),
        };
        let admin: PgConnectOptions = dsn
            .parse()
            .unwrap_or_else(|e| panic!("{DSN_ENV} is not a valid postgres DSN: {e}"));
        let mut conn = match connect(&admin).await {
            Ok(conn) => conn,
            Err(why) => unavailable(&why),
        };
        let name = unique_name();
        conn.execute(format!("CREATE DATABASE \"{name}\"").as_str())
            .await
            .unwrap_or_else(|e| {
                panic!("CREATE DATABASE {name} (does the role have CREATEDB?): {e}")
            });
        let _ = conn.close().await;
        TestDb {
            admin,
            admin_dsn: dsn,
            name,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Connect options for this database.
    pub fn options(&self) -> PgConnectOptions {
        self.admin.clone().database(&self.name)
    }

    /// A DSN for this database (the server's DSN with `dbname=` appended, which sqlx lets
    /// override the path).
    pub fn dsn(&self) -> String {
        let sep = if self.admin_dsn.contains('?') {
            '&'
        } else {
            '?'
        };
        format!("{}{sep}dbname={}", self.admin_dsn, self.name)
    }

    /// A new store handle (its own pool) on this database.
    pub async fn open(&self) -> PgStore {
        PgStore::open_with(self.options())
            .await
            .unwrap_or_else(|e| panic!("open postgres store on {}: {e}", self.name))
    }
}

impl Drop for TestDb {
    /// Drops the database on a helper thread with its own runtime: `Drop` cannot await, and
    /// the test's runtime may be the one being torn down. `WITH (FORCE)` ends sessions still
    /// open in pools that have not finished closing.
    fn drop(&mut self) {
        let admin = self.admin.clone();
        let name = self.name.clone();
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async {
                let mut conn = connect(&admin).await?;
                let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
                tokio::time::timeout(ADMIN_TIMEOUT, conn.execute(sql.as_str()))
                    .await
                    .map_err(|_| "timed out".to_string())?
                    .map_err(|e| e.to_string())?;
                let _ = conn.close().await;
                Ok::<(), String>(())
            })
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("warning: could not drop test database {}: {e}", self.name),
            Err(_) => eprintln!("warning: dropping test database {} panicked", self.name),
        }
    }
}

async fn connect(options: &PgConnectOptions) -> Result<PgConnection, String> {
    match tokio::time::timeout(ADMIN_TIMEOUT, PgConnection::connect_with(options)).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(format!(
            "cannot connect to {}:{}: {e}",
            options.get_host(),
            options.get_port()
        )),
        Err(_) => Err(format!(
            "no answer from {}:{} within {}s",
            options.get_host(),
            options.get_port(),
            ADMIN_TIMEOUT.as_secs()
        )),
    }
}

fn unavailable(why: &str) -> ! {
    panic!(
        "this test needs Postgres: {why}. Run `eval \"$(scripts/setup-postgres.sh)\"` to start \
         one and export {DSN_ENV}, or leave Postgres tests out (the default nextest profile does)"
    )
}

/// `t_<pid>_<time>_<n>`: unique across concurrent test processes and within one.
fn unique_name() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "t_{}_{:x}_{}",
        std::process::id(),
        nanos,
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}
