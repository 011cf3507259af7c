//! One file per subcommand. anyhow with context is allowed here only.

pub(crate) mod certify;
mod certify_report;
pub(crate) mod certs;
mod client;
pub(crate) mod config;
mod cp;
pub(crate) mod db;
pub(crate) mod image;
pub(crate) mod microvm;
mod procs;
mod serve;
pub(crate) mod snapshot;
mod term;
mod token;
mod top;
pub(crate) mod volume;
mod worker;

use std::process::ExitCode;

use crate::cli::{Cli, Command, WorkerCommand};

pub async fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve => serve::run().await,
        Command::Spawn(a) => client::spawn(&cli.client, a).await,
        Command::Exec(a) => client::exec(&cli.client, a).await,
        Command::List => client::list(&cli.client).await,
        Command::Kill { id } => client::kill(&cli.client, &id).await,
        Command::Pause { id } => client::pause(&cli.client, &id).await,
        Command::Resume(a) => client::resume(&cli.client, a).await,
        Command::Cp(a) => cp::cp(&cli.client, a).await,
        Command::Ps { id } => procs::ps(&cli.client, &id).await,
        Command::Attach { id, pid } => procs::attach(&cli.client, &id, pid).await,
        Command::Shell { id } => procs::shell(&cli.client, &id).await,
        Command::Top => top::run(&cli.client).await,
        Command::Config(a) => config::run(a),
        Command::Db(a) => db::run(a).await,
        Command::Microvm(a) => microvm::run(a),
        Command::Image(a) => image::run(a).await,
        Command::Volume(a) => volume::run(&cli.client, a).await,
        Command::Snapshot(a) => snapshot::run(&cli.client, a).await,
        Command::Fork(a) => snapshot::fork(&cli.client, a).await,
        Command::Worker(w) => match w.command {
            Some(WorkerCommand::Token(t)) => token::run(*t),
            Some(WorkerCommand::Certs(c)) => certs::run(*c),
            Some(WorkerCommand::Certify(c)) => certify::run(*c).await,
            None => worker::run(w.run).await,
        },
        Command::Version => {
            println!(
                "stacyvm {} ({}/{})",
                env!("CARGO_PKG_VERSION"),
                std::env::consts::OS,
                std::env::consts::ARCH
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
