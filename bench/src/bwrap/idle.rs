//! Issue 15, figure 4: memory of many idle bwrap sandboxes. The control plane's `VmRSS`
//! before and after N live sandboxes (and after destroying them), and what each sandbox costs
//! on the host: the sum over the processes in its cgroup (bwrap, the agent, pasta with
//! `network_mode: user`) of `Pss`, `Rss` and private memory from `/proc/<pid>/smaps_rollup`,
//! its memory cgroup's charge, and the host's `MemAvailable` drop. At the end every sandbox is
//! destroyed and the run checks no process, mount, cgroup or directory is left.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use super::{comm, smaps_rollup, Env};
use crate::pg::Db;
use crate::server::Server;
use crate::stats::{mib, ms, Summary};
use crate::{api, BenchError};

const SETTLE: Duration = Duration::from_secs(2);

pub struct Opts {
    pub sandboxes: usize,
    pub clients: usize,
}

/// `MemAvailable` of the host, KiB.
fn mem_available() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("MemAvailable:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Entries in this process's mount table (`/proc/self/mountinfo`).
fn mount_count() -> usize {
    std::fs::read_to_string("/proc/self/mountinfo").map_or(0, |t| t.lines().count())
}

/// What the sandboxes' processes hold, summed over all sandboxes (KiB).
#[derive(Default)]
struct Usage {
    sandboxes: usize,
    processes: usize,
    pss: u64,
    rss: u64,
    private: u64,
    charged_kib: u64,
    by_name: BTreeMap<String, (usize, u64)>,
}

fn usage(env: &Env, ids: &[String]) -> Usage {
    let mut u = Usage::default();
    for id in ids {
        let procs = std::fs::read_to_string(env.procs_file(id)).unwrap_or_default();
        u.sandboxes += 1;
        for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            let Some((pss, rss, private)) = smaps_rollup(pid) else {
                continue;
            };
            u.processes += 1;
            u.pss += pss;
            u.rss += rss;
            u.private += private;
            let e = u.by_name.entry(comm(pid)).or_default();
            e.0 += 1;
            e.1 += pss;
        }
        u.charged_kib += env.memory_charged(id).unwrap_or(0) / 1024;
    }
    u
}

/// Runs `job` for every index below `n` over `clients` connections; stops at the first error.
async fn fan_out<F, Fut>(n: usize, clients: usize, job: F) -> Result<(), BenchError>
where
    F: Fn(reqwest::Client, usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), BenchError>> + Send + 'static,
{
    let next = Arc::new(AtomicUsize::new(0));
    let job = Arc::new(job);
    let tasks: Vec<_> = (0..clients.max(1))
        .map(|_| {
            let (next, job) = (next.clone(), job.clone());
            tokio::spawn(async move {
                let c = api::http_client()?;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        return Ok::<_, BenchError>(());
                    }
                    if let Err(e) = job(c.clone(), i).await {
                        // Stop the other clients too.
                        next.store(n, Ordering::Relaxed);
                        return Err(e);
                    }
                }
            })
        })
        .collect();
    let mut first = Ok(());
    for t in tasks {
        let r = t
            .await
            .map_err(|e| BenchError::Unexpected(format!("client task failed: {e}")))
            .and_then(|r| r);
        if first.is_ok() {
            first = r;
        }
    }
    first
}

struct Figures {
    n: usize,
    spawn_took: Duration,
    /// Spawn request p50 of the first and the last tenth (in start order).
    spawn_first: Duration,
    spawn_last: Duration,
    mounts_before: usize,
    mounts_live: usize,
    destroy_took: Duration,
    cp_start: u64,
    cp_live: u64,
    cp_after: u64,
    cp_peak: u64,
    avail_drop: i64,
    usage: Usage,
}

async fn measure(
    server: &Server,
    env: &Env,
    o: &Opts,
    ids: &Arc<Mutex<Vec<String>>>,
) -> Result<Figures, BenchError> {
    let base = server.base.clone();
    // One spawn and destroy first: the store builds the image's root filesystem once.
    let c = api::http_client()?;
    let body = json!({"image": env.image, "provider": "bwrap", "ttl": "2h"});
    let (id, _) = api::spawn_json(&c, &base, &body).await?;
    api::destroy(&c, &base, &id).await?;
    tokio::time::sleep(SETTLE).await;
    let cp_start = server.rss_kib(false)?;
    let avail_before = mem_available();

    let mounts_before = mount_count();
    let t = Instant::now();
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(o.sandboxes)));
    let (list, b, body2, lat) = (ids.clone(), base.clone(), body.clone(), latencies.clone());
    let spawned = fan_out(o.sandboxes, o.clients, move |c, i| {
        let (list, b, body, lat) = (list.clone(), b.clone(), body2.clone(), lat.clone());
        async move {
            let (id, took) = api::spawn_json(&c, &b, &body).await?;
            list.lock()
                .map_err(|_| BenchError::Unexpected("id list poisoned".into()))?
                .push(id);
            lat.lock()
                .map_err(|_| BenchError::Unexpected("latency list poisoned".into()))?
                .push((i, took));
            Ok(())
        }
    })
    .await;
    let spawn_took = t.elapsed();
    spawned?;
    let mounts_live = mount_count();
    let mut by_order = latencies
        .lock()
        .map_err(|_| BenchError::Unexpected("latency list poisoned".into()))?
        .clone();
    by_order.sort_unstable();
    let tenth = (by_order.len() / 10).max(1);
    let p50 = |v: &[(usize, Duration)]| {
        let d: Vec<Duration> = v.iter().map(|(_, d)| *d).collect();
        Summary::of(&d).map_or(Duration::ZERO, |s| s.p50)
    };
    let spawn_first = p50(&by_order[..tenth.min(by_order.len())]);
    let spawn_last = p50(&by_order[by_order.len().saturating_sub(tenth)..]);
    tokio::time::sleep(SETTLE).await;
    let cp_live = server.rss_kib(false)?;
    let live: Vec<String> = ids
        .lock()
        .map_err(|_| BenchError::Unexpected("id list poisoned".into()))?
        .clone();
    let usage = usage(env, &live);
    let avail_drop = avail_before as i64 - mem_available() as i64;

    let t = Instant::now();
    let (list, b) = (Arc::new(live), base.clone());
    let destroyed = fan_out(list.len(), o.clients, move |c, i| {
        let (list, b) = (list.clone(), b.clone());
        async move { api::destroy(&c, &b, &list[i]).await.map(|_| ()) }
    })
    .await;
    let destroy_took = t.elapsed();
    destroyed?;
    ids.lock()
        .map_err(|_| BenchError::Unexpected("id list poisoned".into()))?
        .clear();
    tokio::time::sleep(SETTLE).await;
    Ok(Figures {
        n: o.sandboxes,
        spawn_took,
        spawn_first,
        spawn_last,
        mounts_before,
        mounts_live,
        destroy_took,
        cp_start,
        cp_live,
        cp_after: server.rss_kib(false)?,
        cp_peak: server.rss_kib(true)?,
        avail_drop,
        usage,
    })
}

fn report(f: &Figures) {
    let u = &f.usage;
    let per = |kib: u64| kib as f64 / u.sandboxes.max(1) as f64;
    println!(
        "   spawned in {:.1} s ({:.0}/s)",
        f.spawn_took.as_secs_f64(),
        f.n as f64 / f.spawn_took.as_secs_f64()
    );
    println!(
        "   spawn request p50: first tenth {} ms, last tenth {} ms; host mount table {} → {} \
         entries",
        ms(f.spawn_first),
        ms(f.spawn_last),
        f.mounts_before,
        f.mounts_live
    );
    println!(
        "   destroyed in {:.1} s ({:.0}/s)",
        f.destroy_took.as_secs_f64(),
        f.n as f64 / f.destroy_took.as_secs_f64()
    );
    println!("   control plane VmRSS (MiB):");
    println!(
        "     after start + one spawn/destroy   {:8.1}",
        mib(f.cp_start)
    );
    println!(
        "     {} live sandboxes              {:8.1}  (+{:.1} MiB, {:.1} KiB per sandbox)",
        f.n,
        mib(f.cp_live),
        mib(f.cp_live.saturating_sub(f.cp_start)),
        f.cp_live.saturating_sub(f.cp_start) as f64 / f.n.max(1) as f64
    );
    println!(
        "     after destroying them all         {:8.1}  (peak VmHWM {:.1})",
        mib(f.cp_after),
        mib(f.cp_peak)
    );
    println!(
        "   per sandbox ({} sandboxes, {} processes: {}):",
        u.sandboxes,
        u.processes,
        u.by_name
            .iter()
            .map(|(name, (n, pss))| format!("{name} ×{n} Pss {:.1} MiB", mib(*pss)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "     Pss {:.0} KiB, private {:.0} KiB, Rss {:.0} KiB (sums over its processes)",
        per(u.pss),
        per(u.private),
        per(u.rss)
    );
    println!(
        "     memory cgroup charge {:.0} KiB (process memory plus the page cache and kernel \
         memory charged to the group)",
        per(u.charged_kib)
    );
    println!(
        "     host MemAvailable drop {:.0} KiB per sandbox ({:.1} MiB in all; includes kernel \
         objects, and whatever else the machine did meanwhile)",
        f.avail_drop as f64 / f.n.max(1) as f64,
        f.avail_drop as f64 / 1024.0
    );
}

pub async fn run(bin: &Path, env_opts: &super::Opts, o: &Opts) -> Result<(), BenchError> {
    println!(
        "\n## Issue 15.4: memory of {} idle bwrap sandboxes ({} clients spawning)",
        o.sandboxes, o.clients
    );
    let env = Env::prepare(bin, env_opts).await?;
    let server = Server::start_full(bin, &env.providers(false), &Db::Sqlite, &env.extra()).await?;
    let ids = Arc::new(Mutex::new(Vec::new()));
    let measured = measure(&server, &env, o, &ids).await;
    // On failure: destroy what lives through the API while the server runs.
    let left: Vec<String> = ids.lock().map(|v| v.clone()).unwrap_or_default();
    if !left.is_empty() {
        let c = api::http_client()?;
        for id in &left {
            let _ = api::destroy(&c, &server.base, id).await;
        }
    }
    let log_tail = server.log_tail();
    server.stop().await?;
    let f =
        measured.map_err(|e| BenchError::Unexpected(format!("{e}\nserver log:\n{log_tail}")))?;
    report(&f);
    let left = env.leftovers();
    println!(
        "   left after destroying all: {left} — {}",
        if left.is_clean() { "clean" } else { "LEAKED" }
    );
    Ok(())
}
