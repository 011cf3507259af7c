//! A fresh Postgres database per benchmark run, made and dropped with `psql` (the benchmark
//! has no database driver of its own), so figures never include a previous run's rows.

use std::process::Command;

use crate::BenchError;

/// Where the spawn benchmark's server keeps its store.
#[derive(Debug, Clone)]
pub enum Db {
    /// A file in the server's temp dir.
    Sqlite,
    /// A database on a Postgres server.
    Postgres { dsn: String },
}

impl Db {
    pub fn name(&self) -> &'static str {
        match self {
            Db::Sqlite => "SQLite",
            Db::Postgres { .. } => "Postgres",
        }
    }

    /// The `database:` flow mapping of the server config.
    pub fn config(&self, sqlite_path: &std::path::Path) -> String {
        match self {
            Db::Sqlite => format!(
                "{{driver: \"sqlite\", path: \"{}\"}}",
                sqlite_path.display()
            ),
            Db::Postgres { dsn } => format!("{{driver: \"postgres\", dsn: \"{dsn}\"}}"),
        }
    }
}

/// A database created for this run; dropped (with `psql`) when the value is dropped.
pub struct FreshDb {
    admin_dsn: String,
    name: String,
    pub dsn: String,
}

fn psql(dsn: &str, sql: &str) -> Result<(), BenchError> {
    let out = Command::new("psql")
        .args([dsn, "-v", "ON_ERROR_STOP=1", "-qc", sql])
        .output()
        .map_err(|source| BenchError::Io {
            context: "running psql (is the postgresql client installed?)".into(),
            source,
        })?;
    if !out.status.success() {
        return Err(BenchError::Server(format!(
            "psql: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

impl FreshDb {
    /// `CREATE DATABASE` on the server `admin_dsn` points at (its role needs CREATEDB).
    pub fn create(admin_dsn: &str) -> Result<FreshDb, BenchError> {
        let name = format!(
            "stacyvm_bench_{}_{}",
            std::process::id(),
            chrono::Utc::now().timestamp_millis()
        );
        psql(admin_dsn, &format!("CREATE DATABASE \"{name}\""))?;
        let dsn = with_database(admin_dsn, &name)?;
        Ok(FreshDb {
            admin_dsn: admin_dsn.to_string(),
            name,
            dsn,
        })
    }
}

impl Drop for FreshDb {
    fn drop(&mut self) {
        let sql = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name);
        if let Err(e) = psql(&self.admin_dsn, &sql) {
            eprintln!("stacyvm-bench: could not drop {}: {e}", self.name);
        }
    }
}

/// `dsn` with its path (the database name) replaced by `name`.
fn with_database(dsn: &str, name: &str) -> Result<String, BenchError> {
    let bad = || BenchError::Unexpected(format!("--dsn is not a postgres:// URL: {dsn:?}"));
    let rest = dsn
        .strip_prefix("postgres://")
        .or_else(|| dsn.strip_prefix("postgresql://"))
        .ok_or_else(bad)?;
    let (authority, tail) = rest.split_once('/').unwrap_or((rest, ""));
    let query = tail.split_once('?').map(|(_, q)| q);
    Ok(match query {
        Some(q) => format!("postgres://{authority}/{name}?{q}"),
        None => format!("postgres://{authority}/{name}"),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn database_name_is_replaced() {
        assert_eq!(
            with_database("postgres://u:p@127.0.0.1:5432/postgres", "x").unwrap(),
            "postgres://u:p@127.0.0.1:5432/x"
        );
        assert_eq!(
            with_database("postgresql://h/db?sslmode=disable", "x").unwrap(),
            "postgres://h/x?sslmode=disable"
        );
        assert_eq!(
            with_database("postgres://h", "x").unwrap(),
            "postgres://h/x"
        );
        assert!(with_database("mysql://h/db", "x").is_err());
    }
}
