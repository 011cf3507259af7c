//! `stacyvm serve`.

use std::process::ExitCode;

use anyhow::Context;
use stacyvm_config::{Config, LogFormat, ValidConfig};
use tokio_util::sync::CancellationToken;

pub fn init_logging(cfg: &ValidConfig) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("STACYVM_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(cfg.log_level().as_str()));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cfg.log_format() {
        LogFormat::Json => builder.json().init(),
        LogFormat::Pretty => builder.with_ansi(true).init(),
        LogFormat::Text => builder.with_ansi(false).init(),
    }
}

/// Cancels `token` on SIGINT or SIGTERM.
pub fn shutdown_on_signals(token: CancellationToken) {
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let term = std::future::pending::<()>();
        tokio::select! {
            _ = ctrl_c => {}
            () = term => {}
        }
        tracing::info!("shutdown signal received; finishing in-flight requests");
        token.cancel();
    });
}

/// Loads and validates the configuration, starts logging by it, and logs where it came from.
pub fn load_and_log() -> anyhow::Result<ValidConfig> {
    let cfg = Config::load()
        .context("loading configuration")?
        .validate()
        .context("invalid configuration")?;
    init_logging(&cfg);
    if let Some(p) = cfg.source_path() {
        tracing::info!(path = %p.display(), "configuration loaded");
    } else {
        tracing::info!("no configuration file found; using embedded defaults");
    }
    Ok(cfg)
}

pub async fn run() -> anyhow::Result<ExitCode> {
    let cfg = load_and_log()?;
    let token = CancellationToken::new();
    shutdown_on_signals(token.clone());
    stacyvm_server::run(cfg, token).await?;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}
