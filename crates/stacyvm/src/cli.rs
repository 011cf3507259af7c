//! The command tree.

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "stacyvm",
    version,
    about = "Disposable computers for AI agents"
)]
pub struct Cli {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args, Clone)]
pub struct ClientArgs {
    /// Control plane URL for client commands.
    #[arg(long, global = true, default_value = "http://localhost:7423")]
    pub server: String,
    /// API key sent as X-API-Key.
    #[arg(
        long,
        global = true,
        env = "STACYVM_API_KEY",
        hide_env_values = true,
        default_value = ""
    )]
    pub api_key: String,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the control plane (config: $STACYVM_CONFIG, ./stacyvm.yaml, ~/.stacyvm/config.yaml).
    Serve,
    /// Create a sandbox.
    Spawn(SpawnArgs),
    /// Run a command in a sandbox: `stacyvm exec <id> -- <cmd> [args...]`.
    Exec(ExecArgs),
    /// List sandboxes.
    #[command(alias = "ls")]
    List,
    /// Destroy a sandbox.
    Kill {
        /// Sandbox id.
        id: String,
    },
    /// Print the version.
    Version,
    /// Remote worker commands: `stacyvm worker token ...` (see docs/worker-auth.md).
    Worker(WorkerArgs),
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct WorkerArgs {
    #[command(subcommand)]
    pub command: Option<WorkerCommand>,
}

#[derive(Debug, Subcommand)]
pub enum WorkerCommand {
    /// Issue (`token <worker-id>`), inspect, verify signed worker tokens; plan key rotation.
    Token(Box<crate::cli_token::TokenArgs>),
}

#[derive(Debug, Args)]
pub struct SpawnArgs {
    #[arg(long, default_value = "alpine:latest")]
    pub image: String,
    #[arg(long, default_value = "")]
    pub provider: String,
    /// Go duration, e.g. 30m.
    #[arg(long, default_value = "")]
    pub ttl: String,
    /// Memory in MiB.
    #[arg(long, default_value_t = 0)]
    pub memory: i64,
    #[arg(long, default_value_t = 0)]
    pub vcpus: i64,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Sandbox id.
    pub id: String,
    /// Join the arguments and run them through `sh -c`.
    #[arg(long)]
    pub shell: bool,
    /// Go duration limit for the command.
    #[arg(long, default_value = "")]
    pub timeout: String,
    /// The command and its arguments (after `--`).
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}
