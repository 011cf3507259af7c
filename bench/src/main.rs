//! Control-plane benchmarks: start a private `stacyvm serve` (mock provider, SQLite) and print
//! throughput, exec overhead, memory and background-process figures. Prints numbers; asserts nothing about timing.

mod api;
mod bwrap;
mod docker;
mod exec;
mod memory;
mod pg;
mod probe;
mod processes;
mod pull;
mod server;
mod stats;
mod throughput;
mod worker;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("HTTP: {0}")]
    Http(#[from] reqwest::Error),
    #[error("server: {0}")]
    Server(String),
    #[error("{0}")]
    Unexpected(String),
    #[error("interrupted")]
    Interrupted,
}

#[derive(Parser, Debug)]
#[command(about = "StacyVM control-plane benchmarks (prints figures; not a test)")]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    /// The `stacyvm` binary to benchmark.
    #[arg(long, global = true, default_value = "target/release/stacyvm")]
    bin: PathBuf,
    /// Short smoke run (CI): proves the benchmarks still run; figures are not meaningful.
    #[arg(long, global = true)]
    quick: bool,
    /// Client concurrency levels of the spawn benchmark.
    #[arg(long, global = true, value_delimiter = ',', default_value = "1,8,32")]
    levels: Vec<usize>,
    /// Measured seconds per concurrency level (default 5; 0.5 with --quick).
    #[arg(long, global = true)]
    duration_secs: Option<f64>,
    /// Measured execs of each kind (default 500; 50 with --quick).
    #[arg(long, global = true)]
    exec_n: Option<usize>,
    /// Live sandboxes of the memory benchmark (default 10000; 300 with --quick).
    #[arg(long, global = true)]
    sandboxes: Option<usize>,
    /// Local image of the docker benchmark.
    #[arg(long, global = true, default_value = "stacyvm-test/busybox:latest")]
    image: String,
    /// Measured spawns and execs of each kind in the docker benchmark (default 20; 5 with --quick).
    #[arg(long, global = true)]
    docker_n: Option<usize>,
    /// Concurrent spawns of the docker benchmark.
    #[arg(long, global = true, default_value_t = 20)]
    concurrent: usize,
    /// Store of the spawn benchmark's server: sqlite, postgres, or both (one after the other,
    /// then compared).
    #[arg(long, global = true, value_enum, default_value_t = DbChoice::Sqlite)]
    database: DbChoice,
    /// Postgres server for `--database postgres|both`; each run gets a fresh database on it
    /// (created and dropped with `psql`; the role needs CREATEDB).
    #[arg(
        long,
        global = true,
        env = "STACYVM_TEST_PG_DSN",
        hide_env_values = true
    )]
    dsn: Option<String>,
    /// The static in-sandbox agent the servers of the process benchmarks run
    /// (`processes.agent`); build it with `cd crates/stacyvm-agent && cargo build --release`
    /// (that build is the default when it exists).
    #[arg(long, global = true, env = "STACYVM_AGENT")]
    agent: Option<PathBuf>,
    /// Measured samples of the first-output-line benchmark (default 200; 20 with --quick).
    #[arg(long, global = true)]
    proc_n: Option<usize>,
    /// Measured keystrokes of the PTY echo benchmark (default 500; 50 with --quick).
    #[arg(long, global = true)]
    pty_n: Option<usize>,
    /// Control-plane restarts per backend (default 5; 1 with --quick).
    #[arg(long, global = true)]
    restarts: Option<usize>,
    /// Idle processes of the process memory benchmark (default 1000; 50 with --quick).
    #[arg(long, global = true)]
    idle_procs: Option<usize>,
    /// Process benchmarks on local mock sandboxes only: no worker, no docker.
    #[arg(long, global = true)]
    local_only: bool,
    /// Measured rounds of the bwrap spawn-to-first-output benchmark (default 20; 3 with --quick).
    #[arg(long, global = true)]
    first_n: Option<usize>,
    /// Idle sandboxes of the bwrap memory benchmark (default 1000; 10 with --quick).
    #[arg(long, global = true)]
    idle_sandboxes: Option<usize>,
    /// Clients spawning and destroying the idle bwrap sandboxes.
    #[arg(long, global = true, default_value_t = 8)]
    idle_clients: usize,
    /// Size of the pulled image, MiB (default 100; 10 with --quick).
    #[arg(long, global = true)]
    pull_mib: Option<u64>,
    /// Pull rounds, each one `stacyvm image pull` and one `docker pull` (default 3; 1 with
    /// --quick).
    #[arg(long, global = true)]
    pull_rounds: Option<usize>,
    /// Also run the restart benchmark on docker under --quick (always tried otherwise; skipped
    /// with a note without a daemon or the image).
    #[arg(long, global = true)]
    docker_restart: bool,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq)]
enum DbChoice {
    Sqlite,
    Postgres,
    Both,
}

#[derive(Subcommand, Debug, Clone, Copy, PartialEq)]
enum Cmd {
    /// Spawn, exec, memory and processes (the default).
    All,
    /// Spawn+destroy throughput at each concurrency level.
    Spawn,
    /// Sync exec of `true` over HTTP versus a direct fork.
    Exec,
    /// Server RSS before and after creating many live sandboxes.
    Memory,
    /// Background processes: first output line, PTY echo, re-attach after a restart, idle
    /// memory (needs the agent: --agent or STACYVM_AGENT).
    Processes,
    /// Docker provider vs the bare Engine API (needs dockerd and the local image; not in `all`).
    Docker,
    /// Issue 15: spawn to first exec output on bwrap vs docker vs a bare bwrap (root, bwrap,
    /// dockerd and the image; not in `all`).
    BwrapSpawn,
    /// Issue 15: exec overhead on bwrap vs a direct fork (root, bwrap, dockerd for the image;
    /// not in `all`).
    BwrapExec,
    /// Issue 15: control-plane and per-sandbox memory of many idle bwrap sandboxes (not in
    /// `all`).
    BwrapIdle,
    /// Issue 15: `stacyvm image pull` vs `docker pull` from a loopback registry (dockerd and
    /// docker-registry; not in `all`).
    Pull,
}

/// Where `cd crates/stacyvm-agent && cargo build --release` puts the static agent.
const AGENT_BUILD: &str =
    "crates/stacyvm-agent/target/x86_64-unknown-linux-gnu/release/stacyvm-agent";

/// A relative `--bin` is tried against the CWD, then the workspace root.
fn resolve_bin(bin: &Path) -> Result<PathBuf, BenchError> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let candidates = [bin.to_path_buf(), workspace.join(bin)];
    candidates
        .iter()
        .find(|p| p.is_file())
        .and_then(|p| p.canonicalize().ok())
        .ok_or_else(|| {
            BenchError::Server(format!(
                "{} not found; build it with `cargo build --release -p stacyvm`",
                bin.display()
            ))
        })
}

fn first_line(path: &str, prefix: &str) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let line = text.lines().find(|l| l.starts_with(prefix))?;
    Some(
        line.split_once(':')
            .map_or(line, |(_, v)| v)
            .trim()
            .to_string(),
    )
}

fn print_context(bin: &Path, quick: bool) {
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpu = first_line("/proc/cpuinfo", "model name").unwrap_or_else(|| "unknown CPU".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let bench_profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    let server_profile = if bin.components().any(|c| c.as_os_str() == "release") {
        "release"
    } else if bin.components().any(|c| c.as_os_str() == "debug") {
        "debug"
    } else {
        "unknown"
    };
    println!(
        "# StacyVM control-plane benchmarks{}",
        if quick { " (--quick smoke run)" } else { "" }
    );
    println!(
        "   date         {}",
        chrono::Utc::now().format("%Y-%m-%d %H:%M:%S UTC")
    );
    println!(
        "   machine      nproc={nproc}, {cpu}, Linux {}",
        kernel.trim()
    );
    println!(
        "   load avg     {} (client and server share these cores)",
        load.trim()
    );
    println!("   bench build  {bench_profile}");
    println!("   server       {} ({server_profile} build)", bin.display());
    if bench_profile == "debug" || server_profile != "release" {
        println!("   ! not a release build on both sides: figures are not representative");
    }
}

async fn run(cli: Cli) -> Result<(), BenchError> {
    let bin = resolve_bin(&cli.bin)?;
    print_context(&bin, cli.quick);
    let cmd = cli.cmd.unwrap_or(Cmd::All);
    let duration = cli
        .duration_secs
        .unwrap_or(if cli.quick { 0.5 } else { 5.0 });
    if cmd == Cmd::All || cmd == Cmd::Spawn {
        let o = throughput::Opts {
            levels: cli.levels.iter().copied().filter(|&c| c > 0).collect(),
            warmup: Duration::from_secs_f64(if cli.quick { 0.2 } else { 1.0 }),
            duration: Duration::try_from_secs_f64(duration)
                .map_err(|e| BenchError::Unexpected(format!("--duration-secs: {e}")))?,
            probe_n: if cli.quick { 100 } else { 1000 },
        };
        spawn_on_databases(&bin, &o, cli.database, cli.dsn.as_deref()).await?;
    }
    if cmd == Cmd::All || cmd == Cmd::Exec {
        let n = cli
            .exec_n
            .unwrap_or(if cli.quick { 50 } else { 500 })
            .max(1);
        exec::run(
            &bin,
            &exec::Opts {
                n,
                warmup: (n / 10).clamp(1, 50),
            },
        )
        .await?;
    }
    if cmd == Cmd::All || cmd == Cmd::Memory {
        let sandboxes = cli
            .sandboxes
            .unwrap_or(if cli.quick { 300 } else { 10_000 });
        memory::run(&bin, &memory::Opts { sandboxes }).await?;
    }
    if cmd == Cmd::All || cmd == Cmd::Processes {
        let pick = |v: Option<usize>, quick: usize, full: usize| {
            v.unwrap_or(if cli.quick { quick } else { full }).max(1)
        };
        let o = processes::Opts {
            agent: agent(&cli)?,
            n: pick(cli.proc_n, 20, 200),
            pty_n: pick(cli.pty_n, 50, 500),
            restarts: pick(cli.restarts, 1, 5),
            idle: pick(cli.idle_procs, 50, 1000),
            remote: !cli.local_only,
            docker: !cli.local_only && (!cli.quick || cli.docker_restart),
            image: cli.image.clone(),
        };
        processes::run(&bin, &o).await?;
    }
    if cmd == Cmd::Docker {
        let n = cli
            .docker_n
            .unwrap_or(if cli.quick { 5 } else { 20 })
            .max(1);
        let o = docker::Opts {
            image: cli.image.clone(),
            n,
            warmup: (n / 10).clamp(1, 3),
            concurrent: cli.concurrent.max(1),
        };
        docker::run(&bin, &o).await?;
    }
    if matches!(
        cmd,
        Cmd::BwrapSpawn | Cmd::BwrapExec | Cmd::BwrapIdle | Cmd::Pull
    ) {
        first_run(&bin, &cli, cmd).await?;
    }
    Ok(())
}

/// `--agent`, else the checkout's build (as `scripts/test.sh setup` makes it); `None` lets the
/// servers search.
fn agent(cli: &Cli) -> Result<Option<PathBuf>, BenchError> {
    match &cli.agent {
        Some(a) => Ok(Some(a.canonicalize().map_err(|source| BenchError::Io {
            context: format!("agent {}", a.display()),
            source,
        })?)),
        None => Ok(Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(AGENT_BUILD)
            .canonicalize()
            .ok()),
    }
}

/// The issue-15 benchmarks (bwrap and pull); none is part of `all`.
async fn first_run(bin: &Path, cli: &Cli, cmd: Cmd) -> Result<(), BenchError> {
    let pick = |v: Option<usize>, quick: usize, full: usize| {
        v.unwrap_or(if cli.quick { quick } else { full }).max(1)
    };
    let env = bwrap::Opts {
        image: cli.image.clone(),
        agent: agent(cli)?,
    };
    match cmd {
        Cmd::BwrapSpawn => {
            let n = pick(cli.first_n, 3, 20);
            let o = bwrap::first_output::Opts {
                n,
                warmup: (n / 10).clamp(1, 3),
            };
            bwrap::first_output::run(bin, &env, &o).await
        }
        Cmd::BwrapExec => {
            let n = pick(cli.exec_n, 50, 500);
            let o = exec::Opts {
                n,
                warmup: (n / 10).clamp(1, 50),
            };
            bwrap::exec::run(bin, &env, &o).await
        }
        Cmd::BwrapIdle => {
            let o = bwrap::idle::Opts {
                sandboxes: pick(cli.idle_sandboxes, 10, 1000),
                clients: cli.idle_clients.max(1),
            };
            bwrap::idle::run(bin, &env, &o).await
        }
        Cmd::Pull => {
            let o = pull::Opts {
                mib: cli
                    .pull_mib
                    .unwrap_or(if cli.quick { 10 } else { 100 })
                    .max(1),
                rounds: pick(cli.pull_rounds, 1, 3),
            };
            pull::run(bin, &o).await
        }
        _ => Ok(()),
    }
}

/// The spawn benchmark on each chosen store, then the comparison at 32 clients.
async fn spawn_on_databases(
    bin: &Path,
    o: &throughput::Opts,
    choice: DbChoice,
    dsn: Option<&str>,
) -> Result<(), BenchError> {
    let mut figures = Vec::new();
    if choice != DbChoice::Postgres {
        figures.push(("SQLite", throughput::run(bin, o, &pg::Db::Sqlite).await?));
    }
    if choice != DbChoice::Sqlite {
        let admin = dsn.ok_or_else(|| {
            BenchError::Unexpected(
                "--database postgres needs --dsn (or STACYVM_TEST_PG_DSN)".into(),
            )
        })?;
        let fresh = pg::FreshDb::create(admin)?;
        let db = pg::Db::Postgres {
            dsn: fresh.dsn.clone(),
        };
        figures.push(("Postgres", throughput::run(bin, o, &db).await?));
    }
    if let [(a, Some((ra, ca))), (b, Some((rb, cb)))] = figures.as_slice() {
        println!(
            "\n   at 32 clients: {a} {ra:.0} pairs/s ({} ms server CPU/pair), \
             {b} {rb:.0} pairs/s ({} ms); {b}/{a} = {:.2}",
            stats::ms(*ca),
            stats::ms(*cb),
            rb / ra
        );
    }
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // Dropping the benchmark future on Ctrl-C drops its `Server`, which kills the child.
    let result = tokio::select! {
        r = run(cli) => r,
        _ = tokio::signal::ctrl_c() => Err(BenchError::Interrupted),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stacyvm-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
