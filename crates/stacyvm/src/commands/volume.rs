//! `stacyvm volume create|ls|rm` (docs/state.md).

use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::json;

use super::client::Client;
use crate::cli::ClientArgs;

#[derive(Debug, Args)]
pub struct VolumeArgs {
    #[command(subcommand)]
    pub command: VolumeCommand,
}

#[derive(Debug, Subcommand)]
pub enum VolumeCommand {
    /// Create a volume: a disk that outlives the sandboxes that mount it
    /// (`stacyvm spawn --volume NAME:/path[:ro]`).
    Create {
        name: String,
        /// Size in MiB (0 = the backend's default; docker and mock do not enforce it).
        #[arg(long, default_value_t = 0)]
        size_mb: i64,
        /// Provider holding it (default: the server's default provider).
        #[arg(long, default_value = "")]
        provider: String,
        /// Worker holding it (default: where a sandbox would be placed now, `local` when it
        /// can); sandboxes mounting it run there.
        #[arg(long, default_value = "")]
        worker: String,
    },
    /// List volumes and the sandboxes using them.
    #[command(alias = "list")]
    Ls,
    /// Delete a volume and its data (refused while a sandbox mounts it).
    #[command(alias = "delete")]
    Rm { name: String },
}

/// `NAME:/path[:ro]` as a spawn's `volumes` entry.
pub(super) fn mount_arg(s: &str) -> anyhow::Result<serde_json::Value> {
    let (name, rest) = s
        .split_once(':')
        .ok_or_else(|| anyhow::anyhow!("--volume {s:?}: expected NAME:/path[:ro]"))?;
    let (path, ro) = match rest.rsplit_once(':') {
        Some((p, "ro")) => (p, true),
        Some((p, "rw")) => (p, false),
        _ => (rest, false),
    };
    Ok(json!({"name": name, "mount_path": path, "read_only": ro}))
}

pub async fn run(c: &ClientArgs, a: VolumeArgs) -> anyhow::Result<ExitCode> {
    let client = Client::new(c);
    match a.command {
        VolumeCommand::Create {
            name,
            size_mb,
            provider,
            worker,
        } => {
            let mut body = json!({"name": name});
            if size_mb > 0 {
                body["size_mb"] = json!(size_mb);
            }
            if !provider.is_empty() {
                body["provider"] = json!(provider);
            }
            if !worker.is_empty() {
                body["worker_id"] = json!(worker);
            }
            let v = client
                .call(reqwest::Method::POST, "/volumes", Some(body))
                .await?;
            println!(
                "{} created on {} ({})",
                v["name"].as_str().unwrap_or_default(),
                v["provider"].as_str().unwrap_or_default(),
                v["worker_id"].as_str().unwrap_or_default()
            );
        }
        VolumeCommand::Ls => {
            let v = client.call(reqwest::Method::GET, "/volumes", None).await?;
            println!(
                "{:<24} {:<10} {:<12} {:>8}  IN USE BY",
                "NAME", "PROVIDER", "WORKER", "SIZE_MB"
            );
            for vol in v.as_array().into_iter().flatten() {
                let users: Vec<&str> = vol["in_use_by"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|s| s.as_str())
                    .collect();
                println!(
                    "{:<24} {:<10} {:<12} {:>8}  {}",
                    vol["name"].as_str().unwrap_or_default(),
                    vol["provider"].as_str().unwrap_or_default(),
                    vol["worker_id"].as_str().unwrap_or_default(),
                    vol["size_mb"].as_i64().unwrap_or(0),
                    users.join(",")
                );
            }
        }
        VolumeCommand::Rm { name } => {
            client.delete(&format!("/volumes/{name}")).await?;
            println!("{name} deleted");
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn mount_args() {
        assert_eq!(
            mount_arg("data:/data:ro").unwrap(),
            json!({"name": "data", "mount_path": "/data", "read_only": true})
        );
        assert_eq!(
            mount_arg("data:/mnt/x").unwrap(),
            json!({"name": "data", "mount_path": "/mnt/x", "read_only": false})
        );
        assert!(mount_arg("data").is_err());
    }
}
