//! Benchmark 1: spawn+destroy pairs over HTTP at several client concurrencies.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::api;
use crate::pg::Db;
use crate::server::{cpu_time_of, Server};
use crate::stats::{ms, Summary, Table};
use crate::BenchError;

/// Pairs/s the control plane should sustain at 32 clients on mock + SQLite.
const TARGET_PAIRS_PER_SEC: f64 = 2000.0;
const TARGET_LEVEL: usize = 32;

pub struct Opts {
    pub levels: Vec<usize>,
    pub warmup: Duration,
    pub duration: Duration,
    /// Requests per kind of the cost-split probe.
    pub probe_n: usize,
}

#[derive(Default)]
struct ClientRun {
    spawn: Vec<Duration>,
    destroy: Vec<Duration>,
    pair: Vec<Duration>,
    errors: usize,
    first_error: Option<String>,
    last_done: Option<Instant>,
    /// Pairs completed during the warm-up.
    warm: usize,
}

impl ClientRun {
    fn fail(&mut self, e: BenchError) {
        self.errors += 1;
        self.first_error.get_or_insert_with(|| e.to_string());
    }
}

/// One client: spawn, then destroy, until `stop_at`; pairs started before `measure_from`
/// are warm-up and not recorded.
async fn client_loop(base: String, measure_from: Instant, stop_at: Instant) -> ClientRun {
    let mut run = ClientRun::default();
    let client = match api::http_client() {
        Ok(c) => c,
        Err(e) => {
            run.fail(e);
            return run;
        }
    };
    loop {
        let start = Instant::now();
        if start >= stop_at {
            break;
        }
        let result = match api::spawn(&client, &base, api::SPAWN_BODY).await {
            Ok((id, s)) => api::destroy(&client, &base, &id).await.map(|d| (s, d)),
            Err(e) => Err(e),
        };
        match result {
            Ok((s, d)) if start >= measure_from => {
                run.spawn.push(s);
                run.destroy.push(d);
                run.pair.push(start.elapsed());
                run.last_done = Some(Instant::now());
            }
            Ok(_) => run.warm += 1,
            Err(e) => {
                run.fail(e);
                // A failing server answers fast; do not spin on it.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    run
}

struct LevelResult {
    clients: usize,
    pairs: usize,
    per_sec: f64,
    pair: Summary,
    spawn: Summary,
    destroy: Summary,
    errors: usize,
    /// Server CPU per pair, warm-up included (ms resolution is enough over seconds).
    server_cpu: Duration,
    /// This benchmark's own CPU per pair: client and server share the cores.
    bench_cpu: Duration,
}

fn per_pair(total: Duration, pairs: usize) -> Duration {
    u32::try_from(pairs)
        .ok()
        .and_then(|n| total.checked_div(n))
        .unwrap_or_default()
}

async fn run_level(server: &Server, clients: usize, o: &Opts) -> Result<LevelResult, BenchError> {
    let base = &server.base;
    let (server_cpu0, bench_cpu0) = (server.cpu_time()?, cpu_time_of("/proc/self/stat")?);
    let measure_from = Instant::now() + o.warmup;
    let stop_at = measure_from + o.duration;
    let tasks: Vec<_> = (0..clients)
        .map(|_| tokio::spawn(client_loop(base.to_string(), measure_from, stop_at)))
        .collect();
    let mut all = ClientRun::default();
    for t in tasks {
        let r = t
            .await
            .map_err(|e| BenchError::Unexpected(format!("client task failed: {e}")))?;
        all.spawn.extend(r.spawn);
        all.destroy.extend(r.destroy);
        all.pair.extend(r.pair);
        all.errors += r.errors;
        if all.first_error.is_none() {
            all.first_error = r.first_error;
        }
        all.last_done = all.last_done.max(r.last_done);
        all.warm += r.warm;
    }
    let server_cpu = server.cpu_time()?.saturating_sub(server_cpu0);
    let bench_cpu = cpu_time_of("/proc/self/stat")?.saturating_sub(bench_cpu0);
    if let Some(e) = &all.first_error {
        eprintln!("  ! {} errors at {clients} clients, first: {e}", all.errors);
    }
    let (Some(pair), Some(spawn), Some(destroy), Some(last)) = (
        Summary::of(&all.pair),
        Summary::of(&all.spawn),
        Summary::of(&all.destroy),
        all.last_done,
    ) else {
        return Err(BenchError::Unexpected(format!(
            "no pair completed at {clients} clients: {}",
            all.first_error.unwrap_or_default()
        )));
    };
    let elapsed = last.saturating_duration_since(measure_from).max(o.duration);
    Ok(LevelResult {
        clients,
        pairs: pair.n,
        per_sec: pair.n as f64 / elapsed.as_secs_f64(),
        pair,
        spawn,
        destroy,
        errors: all.errors,
        server_cpu: per_pair(server_cpu, pair.n + all.warm),
        bench_cpu: per_pair(bench_cpu, pair.n + all.warm),
    })
}

/// Pairs/s and server CPU per pair at [`TARGET_LEVEL`] clients, when that level ran.
pub type AtTarget = Option<(f64, Duration)>;

pub async fn run(bin: &Path, o: &Opts, db: &Db) -> Result<AtTarget, BenchError> {
    println!(
        "\n## 1. Spawn+destroy throughput (HTTP, mock provider, {})",
        db.name()
    );
    println!(
        "   each client loops spawn→destroy on its own keep-alive connection; \
         warm-up {:.1}s, then {:.1}s measured per level",
        o.warmup.as_secs_f64(),
        o.duration.as_secs_f64()
    );
    let server = Server::start_on(bin, crate::server::MOCK_PROVIDERS, db).await?;
    let mut results = Vec::new();
    let mut outcome = Ok(());
    for &c in &o.levels {
        match run_level(&server, c, o).await {
            Ok(r) => results.push(r),
            Err(e) => {
                outcome = Err(e);
                break;
            }
        }
    }
    let mut split = String::new();
    if outcome.is_ok() {
        match crate::probe::run(&server, o.probe_n).await {
            Ok(s) => split = s,
            Err(e) => outcome = Err(e),
        }
    }
    let leftover = server.sandbox_dirs();
    let rss = server.rss_kib(false).ok();
    let log_lines = server.log_lines();
    server.stop().await?;
    outcome?;

    let mut t = Table::new([
        "clients",
        "pairs",
        "pairs/s",
        "pair p50",
        "pair p99",
        "spawn p50",
        "spawn p99",
        "destroy p50",
        "destroy p99",
        "srv CPU/pair",
        "bench CPU/pair",
        "errors",
    ]);
    for r in &results {
        t.row([
            r.clients.to_string(),
            r.pairs.to_string(),
            format!("{:.0}", r.per_sec),
            ms(r.pair.p50),
            ms(r.pair.p99),
            ms(r.spawn.p50),
            ms(r.spawn.p99),
            ms(r.destroy.p50),
            ms(r.destroy.p99),
            ms(r.server_cpu),
            ms(r.bench_cpu),
            r.errors.to_string(),
        ]);
    }
    println!("   (latencies in ms)\n{}", t.render());
    if let Some(kib) = rss {
        println!(
            "   server RSS at the end: {:.1} MiB",
            crate::stats::mib(kib)
        );
    }
    if log_lines > 0 {
        println!("   ! the server logged {log_lines} lines at warn level or above");
    }
    if leftover > 0 {
        println!("   ! {leftover} sandbox directories left behind by the mock");
    }
    let at_target = results
        .iter()
        .find(|r| r.clients == TARGET_LEVEL)
        .map(|r| (r.per_sec, r.server_cpu));
    // The target is set for the embedded store.
    let target = results
        .iter()
        .find(|r| r.clients == TARGET_LEVEL)
        .filter(|_| matches!(db, Db::Sqlite));
    if let Some(r) = target {
        let verdict = if r.per_sec >= TARGET_PAIRS_PER_SEC {
            "met"
        } else {
            "MISSED"
        };
        println!(
            "   target ≥ {TARGET_PAIRS_PER_SEC:.0} pairs/s at {TARGET_LEVEL} clients: {:.0} pairs/s \
             ({:.0}% of target) — {verdict}",
            r.per_sec,
            100.0 * r.per_sec / TARGET_PAIRS_PER_SEC
        );
        // Client and server share the cores, so their CPU per pair bounds the rate.
        let nproc = std::thread::available_parallelism().map_or(1, |n| n.get());
        let per_pair = (r.server_cpu + r.bench_cpu).as_secs_f64();
        if per_pair > 0.0 {
            println!(
                "   CPU bound on this machine: {nproc} cores / ({} + {} ms) = {:.0} pairs/s",
                ms(r.server_cpu),
                ms(r.bench_cpu),
                nproc as f64 / per_pair
            );
        }
    }
    if !split.is_empty() {
        println!("{split}");
    }
    Ok(at_target)
}
