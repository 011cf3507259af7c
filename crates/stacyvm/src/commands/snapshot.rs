//! `stacyvm snapshot create|ls|rm` and `stacyvm fork` (docs/state.md).

use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::json;

use super::client::Client;
use crate::cli::ClientArgs;

#[derive(Debug, Args)]
pub struct SnapshotArgs {
    #[command(subcommand)]
    pub command: SnapshotCommand,
}

#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Snapshot a sandbox's files (it keeps running); prints the snapshot id.
    /// `stacyvm spawn --snapshot <sid>` starts a sandbox from it.
    Create {
        /// Sandbox id.
        id: String,
        #[arg(long)]
        name: Option<String>,
    },
    /// List snapshots, newest first.
    #[command(alias = "list")]
    Ls,
    /// Delete a snapshot (sandboxes made from it keep running).
    #[command(alias = "delete")]
    Rm { sid: String },
}

#[derive(Debug, Args)]
pub struct ForkArgs {
    /// Sandbox id.
    pub id: String,
    /// How many copies (1-16).
    #[arg(long, default_value_t = 1)]
    pub count: i64,
}

pub async fn run(c: &ClientArgs, a: SnapshotArgs) -> anyhow::Result<ExitCode> {
    let client = Client::new(c);
    match a.command {
        SnapshotCommand::Create { id, name } => {
            let body = name.map(|n| json!({"name": n}));
            let v = client
                .call(
                    reqwest::Method::POST,
                    &format!("/sandboxes/{id}/snapshots"),
                    body,
                )
                .await?;
            println!("{}", v["id"].as_str().unwrap_or_default());
        }
        SnapshotCommand::Ls => {
            let v = client
                .call(reqwest::Method::GET, "/snapshots", None)
                .await?;
            println!(
                "{:<14} {:<24} {:<12} {:<10} {:>12}  CREATED",
                "ID", "NAME", "SANDBOX", "KIND", "SIZE"
            );
            for s in v.as_array().into_iter().flatten() {
                let t = |k: &str| s[k].as_str().unwrap_or_default().to_string();
                println!(
                    "{:<14} {:<24} {:<12} {:<10} {:>12}  {}",
                    t("id"),
                    t("name"),
                    t("sandbox_id"),
                    t("kind"),
                    s["size_bytes"].as_i64().unwrap_or(0),
                    t("created_at")
                );
            }
        }
        SnapshotCommand::Rm { sid } => {
            client.delete(&format!("/snapshots/{sid}")).await?;
            println!("{sid} deleted");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints the copies' ids, one a line.
pub async fn fork(c: &ClientArgs, a: ForkArgs) -> anyhow::Result<ExitCode> {
    let v = Client::new(c)
        .call(
            reqwest::Method::POST,
            &format!("/sandboxes/{}/fork", a.id),
            Some(json!({"count": a.count})),
        )
        .await?;
    for sb in v.as_array().into_iter().flatten() {
        println!("{}", sb["id"].as_str().unwrap_or_default());
    }
    Ok(ExitCode::SUCCESS)
}
