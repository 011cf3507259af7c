//! `stacyvm config lint [--file F] [--production]`: load the configuration exactly as `serve`
//! and `worker` do (same file lookup, env overrides and validation), then print every error
//! and warning, each starting with its key. Exit 1 on errors, 0 with only warnings (with
//! `--production`, warnings count as errors). CI scripts call it before a deploy.

use std::error::Error as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use stacyvm_config::{Config, ConfigError, ProviderChoice, Sources, CONFIG_ENV_VAR};

#[derive(Debug, Args)]
pub struct ConfigArgs {
    #[command(subcommand)]
    pub command: ConfigCommand,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Check the configuration serve/worker would load; print every error and warning.
    Lint {
        /// Lint this file instead of the lookup ($STACYVM_CONFIG, ./stacyvm.yaml,
        /// ~/.stacyvm/config.yaml). Env overrides still apply.
        #[arg(long)]
        file: Option<PathBuf>,
        /// Also flag what is unfit for production (open API, the unisolated mock provider),
        /// and fail on warnings.
        #[arg(long)]
        production: bool,
    },
}

pub fn run(args: ConfigArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        ConfigCommand::Lint { file, production } => lint(file, production),
    }
}

/// The error and its causes on one line (`Syntax` keeps the YAML position in its source).
fn describe(e: &ConfigError) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(&format!(": {c}"));
        cause = c.source();
    }
    out
}

fn lint(file: Option<PathBuf>, production: bool) -> anyhow::Result<ExitCode> {
    let mut sources = Sources::from_process().context("reading the environment")?;
    if let Some(f) = file {
        if !f.is_file() {
            println!("error: config file {} does not exist", f.display());
            return Ok(ExitCode::FAILURE);
        }
        sources
            .env
            .insert(CONFIG_ENV_VAR.into(), f.to_string_lossy().into_owned());
    }
    let (errors, mut warnings, config) = match Config::load_from(&sources) {
        // Loading stops at the first problem (syntax, unknown key, bad type): nothing to validate.
        Err(e) => (vec![describe(&e)], Vec::new(), None),
        Ok(config) => {
            let copy = config.clone();
            match config.validate_all() {
                Ok(valid) => (Vec::new(), valid.warnings().to_vec(), Some(copy)),
                Err(invalid) => (
                    invalid.errors.iter().map(describe).collect(),
                    invalid.warnings,
                    Some(copy),
                ),
            }
        }
    };
    match config.as_ref().and_then(|c| c.source.as_ref()) {
        Some(path) => println!("config: {}", path.display()),
        None if config.is_some() => println!("config: built-in defaults (no file found)"),
        None => {}
    }
    if production {
        if let Some(c) = &config {
            warnings.extend(production_warnings(c));
        }
    }
    for e in &errors {
        println!("error: {e}");
    }
    for w in &warnings {
        println!("warning: {w}");
    }
    println!("{} error(s), {} warning(s)", errors.len(), warnings.len());
    let failed = !errors.is_empty() || (production && !warnings.is_empty());
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn production_warnings(c: &Config) -> Vec<String> {
    let mut out = Vec::new();
    if c.auth.api_key.trim().is_empty() && c.auth.admin_api_key.trim().is_empty() {
        out.push(
            "auth.api_key: no API key is set; the API is open to anyone who can reach it".into(),
        );
    }
    if c.providers.mock.enabled
        || ProviderChoice::parse(&c.providers.default) == Some(ProviderChoice::Mock)
    {
        out.push(
            "providers.mock: the mock provider runs commands on the host with no isolation".into(),
        );
    }
    out
}
