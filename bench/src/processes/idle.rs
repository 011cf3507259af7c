//! Benchmark P4: many idle background processes (`sleep 3600`) in one mock sandbox: the
//! control plane's RSS growth (it keeps one exit watcher per process it started) and the
//! agent's (the host process `stacyvm-agent` serving the sandbox).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use super::client;
use crate::server::{rss_kib_of, status_field, Server};
use crate::BenchError;

const CLIENTS: usize = 8;
const SETTLE: Duration = Duration::from_millis(1000);

pub struct Figures {
    pub n: usize,
    pub took: Duration,
    pub cp_before_kib: u64,
    pub cp_after_kib: u64,
    pub agent_before_kib: u64,
    pub agent_after_kib: u64,
    pub agent_threads_before: u64,
    pub agent_threads_after: u64,
    pub listed_running: usize,
}

/// The host pid of the mock agent serving `sid` (its `--listen` socket lives in a state dir
/// named after the sandbox).
fn agent_pid(sid: &str) -> Result<u32, BenchError> {
    let marker = format!("stacyvm-agent-{sid}-");
    let entries = std::fs::read_dir("/proc").map_err(|source| BenchError::Io {
        context: "listing /proc".into(),
        source,
    })?;
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmd.split(|&b| b == 0).collect();
        let listens = args.iter().any(|a| *a == b"--listen");
        let ours = args
            .iter()
            .any(|a| String::from_utf8_lossy(a).contains(&marker));
        if listens && ours {
            return Ok(pid);
        }
    }
    Err(BenchError::Unexpected(format!(
        "no agent process with {marker} on its command line"
    )))
}

/// Starts `n` processes over [`CLIENTS`] connections.
async fn start_all(base: &str, sid: &str, n: usize) -> Result<(), BenchError> {
    let next = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (next, base, sid) = (next.clone(), base.to_string(), sid.to_string());
            tokio::spawn(async move {
                let c = crate::api::http_client()?;
                let body = json!({"command": "sleep 3600"});
                while next.fetch_add(1, Ordering::Relaxed) < n {
                    client::start(&c, &base, &sid, &body).await?;
                }
                Ok::<_, BenchError>(())
            })
        })
        .collect();
    for t in tasks {
        t.await
            .map_err(|e| BenchError::Unexpected(format!("client task failed: {e}")))??;
    }
    Ok(())
}

pub async fn measure(server: &Server, sid: &str, n: usize) -> Result<Figures, BenchError> {
    let c = crate::api::http_client()?;
    let base = &server.base;
    // One process first: the mock starts the agent on the first process call.
    client::start(&c, base, sid, &json!({"command": "sleep 3600"})).await?;
    let agent = agent_pid(sid)?;
    tokio::time::sleep(SETTLE).await;
    let cp_before_kib = server.rss_kib(false)?;
    let agent_before_kib = rss_kib_of(agent, false)?;
    let agent_threads_before = status_field(agent, "Threads:")?;
    let t = Instant::now();
    start_all(base, sid, n).await?;
    let took = t.elapsed();
    tokio::time::sleep(SETTLE).await;
    let cp_after_kib = server.rss_kib(false)?;
    let agent_after_kib = rss_kib_of(agent, false)?;
    let agent_threads_after = status_field(agent, "Threads:")?;
    let r = c
        .get(format!("{base}/sandboxes/{sid}/processes"))
        .send()
        .await?;
    let list: serde_json::Value = r.json().await?;
    let listed_running = list.as_array().map_or(0, |a| {
        a.iter()
            .filter(|p| p.get("state").and_then(|s| s.as_str()) == Some("running"))
            .count()
    });
    Ok(Figures {
        n,
        took,
        cp_before_kib,
        cp_after_kib,
        agent_before_kib,
        agent_after_kib,
        agent_threads_before,
        agent_threads_after,
        listed_running,
    })
}
