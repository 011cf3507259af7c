//! A private `stacyvm worker` (mock provider) registered with a benchmark control plane, the
//! way tests/e2e (`test_remote_faults.py::Worker`) and scripts/smoke-remote-worker.sh run one:
//! shared worker token, loopback RPC, the control plane's own `local` worker removed so every
//! sandbox is placed on this one.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tempfile::TempDir;
use tokio::process::{Child, Command};

use crate::server::{free_port, io_err, Server};
use crate::{api, BenchError};

/// The shared token of the bench's control plane and worker (loopback only, never a secret).
pub const TOKEN: &str = "bench-worker-token-0123456789abcdef";
pub const ID: &str = "bench-worker";
const REGISTER_DEADLINE: Duration = Duration::from_secs(30);

/// The control plane's extra config lines that let [`Worker`] register.
pub fn control_plane_config() -> String {
    format!("auth: {{worker_token: \"{TOKEN}\"}}\n")
}

/// `processes:` config lines naming the agent, or nothing (the binaries then search for one).
pub fn agent_config(agent: Option<&Path>) -> String {
    agent.map_or_else(String::new, |a| {
        format!("processes: {{agent: \"{}\"}}\n", a.display())
    })
}

pub struct Worker {
    child: Child,
    // Dropped after the child is killed (field order): the worker's mock sandboxes go with it.
    dir: TempDir,
}

impl Worker {
    /// Starts the worker and waits until `cp` lists it as registered and not stale; then
    /// removes `cp`'s `local` worker so placement picks this one.
    pub async fn start(
        bin: &Path,
        cp: &Server,
        agent: Option<&Path>,
    ) -> Result<Worker, BenchError> {
        let dir = tempfile::Builder::new()
            .prefix("stacyvm-bench-worker-")
            .tempdir()
            .map_err(io_err("creating the worker dir"))?;
        let port = free_port()?;
        let config = format!(
            "worker: {{id: \"{ID}\", control_plane_url: \"http://127.0.0.1:{cp_port}\", \
             listen_addr: \"127.0.0.1:{port}\", preview_domain: \"localhost\", \
             heartbeat_interval: \"1s\"}}\n\
             providers: {{default: \"mock\", mock: {{enabled: true}}}}\n\
             auth: {{worker_token: \"{TOKEN}\"}}\n\
             logging: {{level: \"warn\", format: \"json\"}}\n\
             {agent}",
            cp_port = cp.port,
            agent = agent_config(agent),
        );
        let config_path = dir.path().join("worker.yaml");
        std::fs::write(&config_path, config).map_err(io_err("writing the worker config"))?;
        let log_path = dir.path().join("worker.log");
        let log = std::fs::File::create(&log_path).map_err(io_err("creating the worker log"))?;
        let log2 = log.try_clone().map_err(io_err("cloning the log handle"))?;
        let child = Command::new(bin)
            .arg("worker")
            .current_dir(dir.path())
            .env("STACYVM_CONFIG", &config_path)
            .env("TMPDIR", dir.path())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .kill_on_drop(true)
            .spawn()
            .map_err(io_err(format!("starting {} worker", bin.display())))?;
        let mut w = Worker { child, dir };
        w.wait_registered(cp).await?;
        let c = api::http_client()?;
        api::call(
            &c,
            reqwest::Method::DELETE,
            format!("{}/admin/workers/local", cp.base),
            None,
        )
        .await?;
        Ok(w)
    }

    async fn wait_registered(&mut self, cp: &Server) -> Result<(), BenchError> {
        let c = api::http_client()?;
        let url = format!("{}/workers/{ID}", cp.base);
        let start = Instant::now();
        loop {
            if let Some(status) = self
                .child
                .try_wait()
                .map_err(io_err("polling the worker"))?
            {
                return Err(BenchError::Server(format!(
                    "worker exited with {status}; log:\n{}",
                    self.log_tail()
                )));
            }
            if let Ok(r) = c.get(&url).send().await {
                if r.status().is_success() {
                    let v: serde_json::Value = r.json().await?;
                    if v.get("stale") == Some(&serde_json::Value::Bool(false)) {
                        return Ok(());
                    }
                }
            }
            if start.elapsed() > REGISTER_DEADLINE {
                return Err(BenchError::Server(format!(
                    "worker not registered after {REGISTER_DEADLINE:?}; log:\n{}",
                    self.log_tail()
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("worker.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    pub async fn stop(mut self) -> Result<(), BenchError> {
        if self
            .child
            .try_wait()
            .map_err(io_err("polling the worker"))?
            .is_none()
        {
            self.child
                .kill()
                .await
                .map_err(io_err("killing the worker"))?;
        }
        Ok(())
    }
}
