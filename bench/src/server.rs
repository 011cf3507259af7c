//! A private `stacyvm serve` (mock provider, SQLite in a temp dir or a given Postgres database)
//! on a free loopback port.
//! The child is killed when [`Server`] is dropped, so an error or Ctrl-C never leaves it behind.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tempfile::TempDir;
use tokio::process::{Child, Command};

use crate::pg::Db;
use crate::BenchError;

const HEALTH_DEADLINE: Duration = Duration::from_secs(30);

pub struct Server {
    child: Child,
    pid: u32,
    bin: PathBuf,
    pub port: u16,
    pub base: String,
    log_path: PathBuf,
    // Dropped after the child is killed (field order): removes the DB and mock sandbox dirs.
    dir: TempDir,
}

pub fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> BenchError {
    let context = context.into();
    move |source| BenchError::Io { context, source }
}

pub fn free_port() -> Result<u16, BenchError> {
    // Bind-then-release can race with another process taking the port; the health wait
    // then fails loudly rather than benchmarking someone else's server.
    let l = TcpListener::bind("127.0.0.1:0").map_err(io_err("binding a probe port"))?;
    Ok(l.local_addr()
        .map_err(io_err("reading the probe port"))?
        .port())
}

/// Linux reports `/proc/*/stat` times in USER_HZ ticks, which is 100 on every architecture
/// the kernel exports to user space (sysconf would need libc and unsafe code).
const USER_HZ: u64 = 100;

/// User + system CPU time of a process from its `/proc/<pid>/stat` (10 ms resolution).
pub fn cpu_time_of(path: &str) -> Result<Duration, BenchError> {
    let text = std::fs::read_to_string(path).map_err(io_err(format!("reading {path}")))?;
    // Fields after the parenthesised command name: state is field 3, utime 14, stime 15.
    let rest = text.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    match (tick(11), tick(12)) {
        (Some(u), Some(s)) => Ok(Duration::from_millis((u + s) * 1000 / USER_HZ)),
        _ => Err(BenchError::Server(format!("unexpected format of {path}"))),
    }
}

/// Resident set size of any process, KiB (`VmRSS`); `VmHWM` with `peak`.
pub fn rss_kib_of(pid: u32, peak: bool) -> Result<u64, BenchError> {
    status_field(pid, if peak { "VmHWM:" } else { "VmRSS:" })
}

/// A numeric field of `/proc/<pid>/status` (`kB` units stripped).
pub fn status_field(pid: u32, key: &str) -> Result<u64, BenchError> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).map_err(io_err(format!("reading {path}")))?;
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| BenchError::Server(format!("no {key} in {path}")))
}

/// `stacyvm serve` in `dir` (config `stacyvm.yaml`, sandboxes under `sandboxes/`), its output
/// appended to `log_path` (a respawn keeps the first run's lines).
fn spawn(bin: &Path, dir: &Path, log_path: &Path) -> Result<Child, BenchError> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)
        .map_err(io_err("opening the server log"))?;
    let log2 = log.try_clone().map_err(io_err("cloning the log handle"))?;
    Command::new(bin)
        .arg("serve")
        .current_dir(dir)
        .env("STACYVM_CONFIG", dir.join("stacyvm.yaml"))
        // The mock puts one directory per sandbox under the temp dir; keep them in ours.
        .env("TMPDIR", dir.join("sandboxes"))
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .kill_on_drop(true)
        .spawn()
        .map_err(io_err(format!("starting {}", bin.display())))
}

/// The `providers:` flow mapping of the default benchmark server.
pub const MOCK_PROVIDERS: &str = "{default: \"mock\", mock: {enabled: true}}";

impl Server {
    pub async fn start(bin: &Path) -> Result<Server, BenchError> {
        Self::start_with(bin, MOCK_PROVIDERS).await
    }

    /// Like [`Server::start`] with another `providers:` flow mapping (e.g. docker).
    pub async fn start_with(bin: &Path, providers: &str) -> Result<Server, BenchError> {
        Self::start_on(bin, providers, &Db::Sqlite).await
    }

    /// Like [`Server::start_with`], with the store in `db`.
    pub async fn start_on(bin: &Path, providers: &str, db: &Db) -> Result<Server, BenchError> {
        Self::start_full(bin, providers, db, "").await
    }

    /// Like [`Server::start_on`], with `extra` appended to the config (whole YAML lines, e.g.
    /// `processes:` or `auth:`).
    pub async fn start_full(
        bin: &Path,
        providers: &str,
        db: &Db,
        extra: &str,
    ) -> Result<Server, BenchError> {
        let dir = tempfile::Builder::new()
            .prefix("stacyvm-bench-")
            .tempdir()
            .map_err(io_err("creating the temp dir"))?;
        let port = free_port()?;
        let database = db.config(&dir.path().join("bench.db"));
        let config = format!(
            "server: {{host: \"127.0.0.1\", port: {port}}}\n\
             providers: {providers}\n\
             database: {database}\n\
             logging: {{level: \"warn\", format: \"json\"}}\n\
             defaults: {{max_ttl: \"0s\"}}\n\
             {extra}"
        );
        let config_path = dir.path().join("stacyvm.yaml");
        std::fs::write(&config_path, config).map_err(io_err("writing the config"))?;
        let log_path = dir.path().join("server.log");
        std::fs::create_dir_all(dir.path().join("sandboxes"))
            .map_err(io_err("creating the sandbox dir"))?;
        let child = spawn(bin, dir.path(), &log_path)?;
        let pid = child
            .id()
            .ok_or_else(|| BenchError::Server("server exited immediately".into()))?;
        let mut server = Server {
            child,
            pid,
            bin: bin.to_path_buf(),
            port,
            base: format!("http://127.0.0.1:{port}/api/v1"),
            log_path,
            dir,
        };
        server.wait_healthy().await?;
        Ok(server)
    }

    /// `kill -9` of the server, then the same command again on the same config, database, port
    /// and sandbox dir (nothing is cleaned up in between). Returns when the new process was
    /// spawned; the caller decides how to wait for it.
    pub async fn kill9_and_respawn(&mut self) -> Result<(), BenchError> {
        self.child
            .kill()
            .await
            .map_err(io_err("killing the server"))?;
        self.child = spawn(&self.bin, self.dir.path(), &self.log_path)?;
        self.pid = self
            .child
            .id()
            .ok_or_else(|| BenchError::Server("server exited immediately".into()))?;
        Ok(())
    }

    /// Whether the server process is still running (a respawned one may fail to bind).
    pub fn check_running(&mut self) -> Result<(), BenchError> {
        match self
            .child
            .try_wait()
            .map_err(io_err("polling the server"))?
        {
            None => Ok(()),
            Some(status) => Err(BenchError::Server(format!(
                "server exited with {status}; log:\n{}",
                self.log_tail()
            ))),
        }
    }

    async fn wait_healthy(&mut self) -> Result<(), BenchError> {
        let client = crate::api::http_client()?;
        let url = format!("{}/health", self.base);
        let start = Instant::now();
        loop {
            if let Some(status) = self
                .child
                .try_wait()
                .map_err(io_err("polling the server"))?
            {
                return Err(BenchError::Server(format!(
                    "server exited with {status} before becoming healthy; log:\n{}",
                    self.log_tail()
                )));
            }
            if let Ok(r) = client.get(&url).send().await {
                if r.status().is_success() {
                    return Ok(());
                }
            }
            if start.elapsed() > HEALTH_DEADLINE {
                return Err(BenchError::Server(format!(
                    "server not healthy after {HEALTH_DEADLINE:?}; log:\n{}",
                    self.log_tail()
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Resident set size of the server process, KiB (`VmRSS`); `VmHWM` with `peak`.
    pub fn rss_kib(&self, peak: bool) -> Result<u64, BenchError> {
        rss_kib_of(self.pid, peak)
    }

    /// The API root for WebSocket routes (`ws://…/api/v1`).
    pub fn ws_base(&self) -> String {
        format!("ws://127.0.0.1:{}/api/v1", self.port)
    }

    /// CPU time (user + system) the server process has used so far.
    pub fn cpu_time(&self) -> Result<Duration, BenchError> {
        cpu_time_of(&format!("/proc/{}/stat", self.pid))
    }

    /// Number of directories the mock still holds (sanity check that destroys cleaned up).
    /// Sandbox directories the mock left: not its volume and snapshot stores, which it makes
    /// once for the provider (`stacyvm-volumes-*`, `stacyvm-snapshots-*`).
    pub fn sandbox_dirs(&self) -> usize {
        let shared = |name: &str| {
            name.starts_with("stacyvm-volumes-") || name.starts_with("stacyvm-snapshots-")
        };
        std::fs::read_dir(self.dir.path().join("sandboxes")).map_or(0, |d| {
            d.flatten()
                .filter(|e| !shared(&e.file_name().to_string_lossy()))
                .count()
        })
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Lines the server logged (at `warn`, so any is worth a look; a slow path may be noisy).
    pub fn log_lines(&self) -> usize {
        std::fs::read_to_string(&self.log_path).map_or(0, |t| t.lines().count())
    }

    pub async fn stop(mut self) -> Result<(), BenchError> {
        if self
            .child
            .try_wait()
            .map_err(io_err("polling the server"))?
            .is_none()
        {
            self.child
                .kill()
                .await
                .map_err(io_err("killing the server"))?;
        }
        Ok(())
    }
}
