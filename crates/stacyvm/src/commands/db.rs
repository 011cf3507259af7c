//! `stacyvm db backup <out>` and `stacyvm db migrate`: database upkeep without a running
//! server. Both read the configured database (config file and `STACYVM_DATABASE_*`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use stacyvm_config::{Config, DatabaseTarget};

#[derive(Debug, Args)]
pub struct DbArgs {
    #[command(subcommand)]
    pub command: DbCommand,
}

#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Copy the SQLite database to <OUT> consistently, even while a server runs (VACUUM INTO).
    Backup {
        /// Where to write the copy.
        out: PathBuf,
        /// SQLite file to copy (default: database.path of the configuration).
        #[arg(long)]
        database: Option<PathBuf>,
        /// Replace <OUT> if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Apply pending migrations to the configured database and print its schema version.
    Migrate,
}

pub async fn run(args: DbArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        DbCommand::Backup {
            out,
            database,
            force,
        } => backup(out, database, force).await,
        DbCommand::Migrate => migrate().await,
    }
}

fn configured_database() -> anyhow::Result<DatabaseTarget> {
    let cfg = Config::load()
        .context("loading configuration")?
        .validate()
        .context("invalid configuration")?;
    Ok(cfg.database().clone())
}

async fn backup(out: PathBuf, database: Option<PathBuf>, force: bool) -> anyhow::Result<ExitCode> {
    let source = match database {
        Some(p) => p,
        None => match configured_database()? {
            DatabaseTarget::Sqlite { path } => path,
            DatabaseTarget::Postgres { .. } => bail!(
                "the configured database is Postgres: back it up with pg_dump \
                 (db backup copies SQLite databases)"
            ),
        },
    };
    let report = stacyvm_store::backup_sqlite(&source, &out, force)
        .await
        .with_context(|| format!("backing up {}", source.display()))?;
    println!(
        "backup of {} written to {} ({} bytes, schema version {})",
        source.display(),
        report.path.display(),
        report.bytes,
        report.schema_version
    );
    Ok(ExitCode::SUCCESS)
}

async fn migrate() -> anyhow::Result<ExitCode> {
    let (driver, target, shown) = match configured_database()? {
        DatabaseTarget::Sqlite { path } => {
            let p = path.to_string_lossy().into_owned();
            ("sqlite", p.clone(), format!("sqlite {p}"))
        }
        // The DSN may carry a password: never printed.
        DatabaseTarget::Postgres { dsn } => ("postgres", dsn, "postgres".to_string()),
    };
    let r = stacyvm_store::migrate(driver, &target)
        .await
        .with_context(|| format!("migrating the {shown} database"))?;
    if r.before == r.after {
        println!("{shown}: schema version {} (up to date)", r.after);
    } else {
        println!(
            "{shown}: schema version {} -> {} (latest {})",
            r.before, r.after, r.latest
        );
    }
    Ok(ExitCode::SUCCESS)
}
