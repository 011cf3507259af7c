//! `stacyvm worker`: the remote worker process.

use std::process::ExitCode;

use anyhow::Context;
use stacyvm_worker::{WorkerConfig, WorkerOverrides};
use tokio_util::sync::CancellationToken;

use super::serve::{load_and_log, shutdown_on_signals};
use crate::cli::WorkerRunArgs;

/// A value clap took from `var` rather than from the command line is not "explicit": the
/// config layer reads the same variables, and `--worker-token-file` may override them.
fn from_flag(value: Option<String>, var: &str) -> Option<String> {
    value.filter(|v| std::env::var(var).ok().as_deref() != Some(v.as_str()))
}

pub async fn run(args: WorkerRunArgs) -> anyhow::Result<ExitCode> {
    let cfg = load_and_log()?;
    let flags = WorkerOverrides {
        id: args.id,
        control_plane: args.control_plane,
        worker_token: if args.worker_token_file.is_some() {
            from_flag(args.worker_token, "STACYVM_AUTH_WORKER_TOKEN")
        } else {
            args.worker_token
        },
        worker_token_file: args.worker_token_file,
        worker_signing_key_file: args.worker_signing_key_file,
        bootstrap_admin_key: if args.bootstrap_admin_key_file.is_some() {
            from_flag(
                args.bootstrap_admin_key,
                "STACYVM_WORKER_BOOTSTRAP_ADMIN_KEY",
            )
        } else {
            args.bootstrap_admin_key
        },
        bootstrap_admin_key_file: args.bootstrap_admin_key_file,
        bootstrap_token_ttl: Some(args.bootstrap_token_ttl),
        heartbeat_interval: args.heartbeat_interval,
        listen: args.listen,
        preview_domain: args.preview_domain,
        once: args.once,
    };
    let worker = WorkerConfig::from_config(&cfg, flags).context("invalid worker settings")?;
    tracing::info!(
        worker_id = worker.id(),
        control_plane = worker.control_plane_url(),
        listen = worker.listen_addr().unwrap_or(""),
        "starting worker"
    );
    let token = CancellationToken::new();
    shutdown_on_signals(token.clone());
    stacyvm_worker::run(worker, token)
        .await
        .context("worker failed")?;
    Ok(ExitCode::SUCCESS)
}
