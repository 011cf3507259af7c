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
    /// Pause a sandbox: its processes freeze where they are and its TTL clock stops until
    /// `resume` (docs/state.md).
    Pause {
        /// Sandbox id.
        id: String,
    },
    /// Resume a paused sandbox: its processes continue.
    Resume(ResumeArgs),
    /// Copy a file into or out of a sandbox: `stacyvm cp ./a <id>:/workspace/a`,
    /// `stacyvm cp <id>:/workspace/a -` (`-` = stdin / stdout).
    Cp(CpArgs),
    /// List a sandbox's background processes (running and recently exited).
    Ps {
        /// Sandbox id.
        id: String,
    },
    /// Re-attach to a background process: print its output from the start and follow it,
    /// passing stdin through; exits with the process's exit code.
    Attach {
        /// Sandbox id.
        id: String,
        /// Process id (from `stacyvm ps`).
        pid: u32,
    },
    /// Open an interactive shell in a sandbox (like `docker exec -it`): a login shell on a
    /// terminal sized like this one; exits with the shell's exit code.
    Shell {
        /// Sandbox id.
        id: String,
    },
    /// A live terminal view of sandboxes, workers and events (1/2/3 switch views, enter opens
    /// a shell in the selected sandbox, d destroys it, q quits; docs/console.md).
    Top,
    /// Print the version.
    Version,
    /// Run a remote worker (docs/worker.md), or manage tokens: `stacyvm worker token ...`.
    Worker(WorkerArgs),
    /// Configuration checks: `config lint [--file F] [--production]`.
    Config(crate::commands::config::ConfigArgs),
    /// Database upkeep: `db backup <out>` (SQLite), `db migrate`.
    Db(crate::commands::db::DbArgs),
    /// microvm provider upkeep: `microvm prepare [--check] [--force]` (docs/microvm.md).
    Microvm(crate::commands::microvm::MicrovmArgs),
    /// The local OCI image store: `image pull|import|ls|rm|gc` (docs/images.md).
    Image(crate::commands::image::ImageArgs),
    /// Volumes, disks that outlive sandboxes: `volume create|ls|rm` (docs/state.md).
    Volume(crate::commands::volume::VolumeArgs),
    /// Snapshots of a sandbox's files: `snapshot create|ls|rm` (docs/state.md).
    Snapshot(crate::commands::snapshot::SnapshotArgs),
    /// Independent copies of a sandbox as it is now; prints their ids.
    Fork(crate::commands::snapshot::ForkArgs),
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct WorkerArgs {
    #[command(subcommand)]
    pub command: Option<WorkerCommand>,
    /// Flags of the worker process (used when no subcommand is given).
    #[command(flatten)]
    pub run: WorkerRunArgs,
}

/// `stacyvm worker`: run a remote worker (config: $STACYVM_CONFIG, ./stacyvm.yaml, ...).
#[derive(Debug, Args)]
pub struct WorkerRunArgs {
    /// Worker id (default: worker.id, else the hostname).
    #[arg(long)]
    pub id: Option<String>,
    /// Control plane URL (default: worker.control_plane_url).
    #[arg(long)]
    pub control_plane: Option<String>,
    /// Static worker token for heartbeats and RPC (default: auth.worker_token).
    #[arg(long, env = "STACYVM_AUTH_WORKER_TOKEN", hide_env_values = true)]
    pub worker_token: Option<String>,
    /// File holding the worker token, re-read on every request.
    #[arg(long)]
    pub worker_token_file: Option<std::path::PathBuf>,
    /// File holding the HMAC key for self-signed tokens (and RPC token verification).
    #[arg(long)]
    pub worker_signing_key_file: Option<std::path::PathBuf>,
    /// Admin API key used to fetch a fresh worker token from the control plane per request.
    #[arg(
        long,
        env = "STACYVM_WORKER_BOOTSTRAP_ADMIN_KEY",
        hide_env_values = true
    )]
    pub bootstrap_admin_key: Option<String>,
    /// File holding the bootstrap admin key.
    #[arg(long)]
    pub bootstrap_admin_key_file: Option<std::path::PathBuf>,
    /// Lifetime of bootstrap-issued tokens (Go duration, at most 15m).
    #[arg(long, default_value = "5m")]
    pub bootstrap_token_ttl: String,
    /// Heartbeat interval (Go duration; default: worker.heartbeat_interval).
    #[arg(long)]
    pub heartbeat_interval: Option<String>,
    /// host:port for the worker RPC server (default: worker.listen_addr; empty = RPC off).
    #[arg(long)]
    pub listen: Option<String>,
    /// Preview domain advertised to the control plane (default: worker.preview_domain).
    #[arg(long)]
    pub preview_domain: Option<String>,
    /// Send one heartbeat and exit.
    #[arg(long)]
    pub once: bool,
}

#[derive(Debug, Subcommand)]
pub enum WorkerCommand {
    /// Issue (`token <worker-id>`), inspect, verify signed worker tokens; plan key rotation.
    Token(Box<crate::cli_token::TokenArgs>),
    /// Write a CA, a worker (server) and a control-plane (client) certificate for
    /// `worker.rpc_tls` (mTLS): `certs --out DIR [--hosts H,...] [--days N]`.
    Certs(Box<crate::commands::certs::CertsArgs>),
    /// Check this worker's identity setup (id, credential, secret files, rotation, revocation,
    /// mTLS material and expiry, reachability) and write a report (text, json, markdown); exit 1
    /// when something would fail in production.
    Certify(Box<crate::commands::certify::CertifyArgs>),
}

#[derive(Debug, Args)]
pub struct CpArgs {
    /// `<sandbox-id>:<path>`, a local path, or `-` for stdin.
    pub src: String,
    /// `<sandbox-id>:<path>`, a local path, or `-` for stdout.
    pub dst: String,
    /// Mode of a file copied into a sandbox: octal (`0755`) or `executable`.
    #[arg(long)]
    pub mode: Option<String>,
}

#[derive(Debug, Args)]
pub struct SpawnArgs {
    /// Print only the new sandbox's id (for `id=$(stacyvm spawn -q)`).
    #[arg(short, long)]
    pub quiet: bool,
    /// The image; default: the server's `defaults.image` (which `auto` checked its store for).
    #[arg(long, default_value = "")]
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
    /// Start from a snapshot (`stacyvm snapshot create`); image and provider come from it.
    #[arg(long, default_value = "")]
    pub snapshot: String,
    /// Mount a volume: `NAME:/path` or `NAME:/path:ro` (repeatable).
    #[arg(long = "volume", value_name = "NAME:/PATH[:ro]")]
    pub volumes: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ResumeArgs {
    /// Sandbox id.
    pub id: String,
    /// New TTL from now (Go duration, e.g. 30m); default: the TTL it had left when paused.
    #[arg(long, default_value = "")]
    pub ttl: String,
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
