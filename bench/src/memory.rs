//! Benchmark 3: server RSS with many live mock sandboxes.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::api;
use crate::server::Server;
use crate::stats::{mib, Table};
use crate::BenchError;

/// Allowed RSS growth for 10,000 live sandboxes.
const TARGET_GROWTH_MIB: f64 = 50.0;
/// Clients creating and destroying the sandboxes.
const CLIENTS: usize = 16;
/// Time for the server to finish background work (events, logging) before a reading.
const SETTLE: Duration = Duration::from_millis(500);

pub struct Opts {
    pub sandboxes: usize,
}

/// Spawns `count` sandboxes over [`CLIENTS`] connections; returns the ids made so far and
/// the first error, so whatever was created can still be destroyed.
async fn create_all(base: &str, count: usize) -> (Vec<String>, Option<BenchError>) {
    let next = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (next, base) = (next.clone(), base.to_string());
            tokio::spawn(async move {
                let mut ids = Vec::new();
                let client = match api::http_client() {
                    Ok(c) => c,
                    Err(e) => return (ids, Some(e)),
                };
                while next.fetch_add(1, Ordering::Relaxed) < count {
                    match api::spawn(&client, &base, api::SPAWN_LONG_BODY).await {
                        Ok((id, _)) => ids.push(id),
                        Err(e) => return (ids, Some(e)),
                    }
                }
                (ids, None)
            })
        })
        .collect();
    let mut ids = Vec::with_capacity(count);
    let mut first_err = None;
    for t in tasks {
        match t.await {
            Ok((v, e)) => {
                ids.extend(v);
                if first_err.is_none() {
                    first_err = e;
                }
            }
            Err(e) => {
                first_err.get_or_insert(BenchError::Unexpected(format!("client task failed: {e}")));
            }
        }
    }
    (ids, first_err)
}

/// Destroys `ids` over [`CLIENTS`] connections; returns how many failed and the first error.
async fn destroy_all(base: &str, ids: Vec<String>) -> (usize, Option<String>) {
    let ids = Arc::new(ids);
    let next = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (ids, next, base) = (ids.clone(), next.clone(), base.to_string());
            tokio::spawn(async move {
                let (mut failed, mut first) = (0usize, None);
                let client = match api::http_client() {
                    Ok(c) => c,
                    Err(e) => return (ids.len(), Some(e.to_string())),
                };
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(id) = ids.get(i) else { break };
                    if let Err(e) = api::destroy(&client, &base, id).await {
                        failed += 1;
                        first.get_or_insert_with(|| e.to_string());
                    }
                }
                (failed, first)
            })
        })
        .collect();
    let (mut failed, mut first) = (0, None);
    for t in tasks {
        match t.await {
            Ok((f, e)) => {
                failed += f;
                if first.is_none() {
                    first = e;
                }
            }
            Err(e) => {
                first.get_or_insert_with(|| format!("client task failed: {e}"));
            }
        }
    }
    (failed, first)
}

fn rate(n: usize, d: Duration) -> String {
    format!(
        "{n} in {:.1}s ({:.0}/s)",
        d.as_secs_f64(),
        n as f64 / d.as_secs_f64().max(1e-9)
    )
}

pub async fn run(bin: &Path, o: &Opts) -> Result<(), BenchError> {
    println!(
        "\n## 3. Control-plane memory (server VmRSS) with {} live mock sandboxes",
        o.sandboxes
    );
    let server = Server::start(bin).await?;
    tokio::time::sleep(SETTLE).await;
    let start_kib = server.rss_kib(false)?;

    let t = Instant::now();
    let (ids, create_err) = create_all(&server.base, o.sandboxes).await;
    let create_took = t.elapsed();
    tokio::time::sleep(SETTLE).await;
    let live_kib = server.rss_kib(false)?;
    let created = ids.len();
    let listed = match api::http_client() {
        Ok(c) => api::list_count(&c, &server.base).await,
        Err(e) => Err(e),
    };
    tokio::time::sleep(SETTLE).await;
    let listed_kib = server.rss_kib(false)?;

    let t = Instant::now();
    let (failed, destroy_err) = destroy_all(&server.base, ids).await;
    let destroy_took = t.elapsed();
    tokio::time::sleep(SETTLE).await;
    let after_kib = server.rss_kib(false)?;
    let peak_kib = server.rss_kib(true)?;
    let leftover = server.sandbox_dirs();
    let log_lines = server.log_lines();
    server.stop().await?;
    if let Some(e) = create_err {
        return Err(e);
    }
    if let Some(e) = destroy_err {
        return Err(BenchError::Unexpected(format!(
            "{failed} destroys failed, first: {e}"
        )));
    }

    let growth = mib(live_kib.saturating_sub(start_kib));
    let mut t = Table::new(["stage", "VmRSS MiB", "Δ vs start MiB"]);
    let delta = |k: u64| format!("{:+.1}", mib(k) - mib(start_kib));
    t.row([
        "after start (idle)".to_string(),
        format!("{:.1}", mib(start_kib)),
        String::new(),
    ]);
    t.row([
        format!("{created} live sandboxes"),
        format!("{:.1}", mib(live_kib)),
        delta(live_kib),
    ]);
    t.row([
        format!("after one GET /sandboxes ({created})"),
        format!("{:.1}", mib(listed_kib)),
        delta(listed_kib),
    ]);
    t.row([
        "after destroying all".to_string(),
        format!("{:.1}", mib(after_kib)),
        delta(after_kib),
    ]);
    t.row([
        "peak of the run (VmHWM)".to_string(),
        format!("{:.1}", mib(peak_kib)),
        delta(peak_kib),
    ]);
    println!("{}", t.render());
    println!(
        "   created {}; destroyed {}",
        rate(created, create_took),
        rate(created, destroy_took)
    );
    match listed {
        Ok((n, took)) => println!(
            "   GET /sandboxes with {created} live: {n} listed in {:.1} ms",
            took.as_secs_f64() * 1e3
        ),
        Err(e) => println!("   ! GET /sandboxes failed: {e}"),
    }
    if log_lines > 0 {
        println!("   ! the server logged {log_lines} lines at warn level or above");
    }
    if leftover > 0 {
        println!("   ! {leftover} sandbox directories left behind by the mock");
    }
    if created > 0 {
        println!(
            "   growth per live sandbox: {:.2} KiB",
            live_kib.saturating_sub(start_kib) as f64 / created as f64
        );
    }
    // The target is stated for 10,000; scale it for smaller (--quick) runs.
    let target = TARGET_GROWTH_MIB * created as f64 / 10_000.0;
    let verdict = if growth <= target { "met" } else { "MISSED" };
    println!("   target growth ≤ {target:.1} MiB for {created}: {growth:.1} MiB — {verdict}");
    Ok(())
}
