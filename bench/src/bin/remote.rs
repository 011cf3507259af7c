//! Remote-worker benchmark: one `stacyvm serve` and one `stacyvm worker` (mock provider, shared
//! token, loopback) started from `--bin`; a sandbox on `local` and one on `worker-a`, measured
//! interleaved in the same run. Prints figures; asserts nothing about timing. Self-contained
//! because the bench crate has no library for the main binary's modules.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use tempfile::TempDir;
use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};

const API_KEY: &str = "dev-api-key-dev-api-key-dev-api-key";
const ADMIN_KEY: &str = "dev-admin-key-dev-admin-key-dev";
const WORKER_ID: &str = "worker-a";
const TARGET_EXEC_OVERHEAD: Duration = Duration::from_millis(1);
const TARGET_FIRST_CHUNK: Duration = Duration::from_millis(2);
const TARGET_RSS_GROWTH_MIB: f64 = 32.0;
/// Keeps the first chunk apart from the exit line; the stream is read to its end so the
/// keep-alive connection is reused (timing stops at the first stdout chunk).
const FIRST_CHUNK_CMD: &str = "echo x; sleep 0.3";
const START_DEADLINE: Duration = Duration::from_secs(30);
const RSS_SAMPLE_EVERY: Duration = Duration::from_millis(10);
const SETTLE: Duration = Duration::from_millis(500);
/// Latency counted as a stall (e.g. a delayed-ACK wait, 40 ms on Linux).
const STALL: Duration = Duration::from_millis(20);

#[derive(Debug, thiserror::Error)]
enum BenchError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("HTTP: {0}")]
    Http(#[from] reqwest::Error),
    #[error("{0}")]
    Unexpected(String),
}

type Res<T> = Result<T, BenchError>;

fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> BenchError {
    let context = context.into();
    move |source| BenchError::Io { context, source }
}

fn fail<T>(msg: impl Into<String>) -> Res<T> {
    Err(BenchError::Unexpected(msg.into()))
}

#[derive(Parser, Debug)]
#[command(about = "StacyVM remote worker vs local benchmark (prints figures; not a test)")]
struct Cli {
    /// The `stacyvm` binary (relative paths are tried against the CWD, then the workspace).
    #[arg(long, default_value = "target/release/stacyvm")]
    bin: PathBuf,
    /// Measured sync execs of `true` on each sandbox.
    #[arg(long, default_value_t = 300)]
    exec_n: usize,
    /// Measured first-chunk latencies on each sandbox.
    #[arg(long, default_value_t = 50)]
    chunk_n: usize,
    /// MiB of output streamed through the worker.
    #[arg(long, default_value_t = 100)]
    stream_mib: u64,
    /// MiB of file uploaded to and downloaded from the remote sandbox.
    #[arg(long, default_value_t = 100)]
    file_mib: u64,
}

fn resolve_bin(bin: &Path) -> Res<PathBuf> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let found = [bin.to_path_buf(), workspace.join(bin)]
        .into_iter()
        .find(|p| p.is_file());
    match found.and_then(|p| p.canonicalize().ok()) {
        Some(p) => Ok(p),
        None => fail(format!(
            "{} not found: cargo build --release -p stacyvm",
            bin.display()
        )),
    }
}

fn free_port() -> Res<u16> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(io_err("binding a probe port"))?;
    Ok(l.local_addr().map_err(io_err("probe port"))?.port())
}

/// `VmRSS` or `VmHWM` of a process, KiB.
fn status_kib(pid: u32, key: &str) -> Res<u64> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).map_err(io_err(format!("reading {path}")))?;
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| BenchError::Unexpected(format!("no {key} in {path}")))
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1e3)
}

fn ms_diff(a: Duration, b: Duration) -> String {
    format!("{:+.3}", (a.as_secs_f64() - b.as_secs_f64()) * 1e3)
}

/// Nearest-rank percentile of an ascending slice.
fn pct(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    let idx = rank.clamp(1, sorted.len().max(1)) - 1;
    sorted.get(idx).copied().unwrap_or_default()
}

/// min, p50, p90, p99, max of a series (nearest rank; p100 is the max).
fn summary(samples: &[Duration]) -> [Duration; 5] {
    let mut v = samples.to_vec();
    v.sort_unstable();
    [0.0, 50.0, 90.0, 99.0, 100.0].map(|p| pct(&v, p))
}

/// Both child processes and their temp dir. Children are killed on drop (error, Ctrl-C).
struct Procs {
    // Field order: children (control plane, then worker) are dropped, i.e. killed, before the
    // temp dir is removed.
    kids: Vec<Child>,
    pids: Vec<u32>,
    base: String,
    dir: TempDir,
}

impl Procs {
    fn spawn_child(&mut self, bin: &Path, role: &str) -> Res<()> {
        let dir = self.dir.path();
        let log = std::fs::File::create(dir.join(format!("{role}.log")))
            .map_err(io_err("creating a log"))?;
        let log2 = log.try_clone().map_err(io_err("cloning a log handle"))?;
        let tmp = dir.join(format!("{role}-sandboxes"));
        std::fs::create_dir_all(&tmp).map_err(io_err("creating a sandbox dir"))?;
        let child = Command::new(bin)
            .arg(if role == "cp" { "serve" } else { "worker" })
            .current_dir(dir)
            .env("STACYVM_CONFIG", dir.join(format!("{role}.yaml")))
            // The mock keeps one directory per sandbox under TMPDIR; keep them in ours.
            .env("TMPDIR", &tmp)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .kill_on_drop(true)
            .spawn()
            .map_err(io_err(format!("starting {} {role}", bin.display())))?;
        self.pids.push(child.id().unwrap_or(0));
        self.kids.push(child);
        Ok(())
    }

    /// The last lines of both logs.
    fn logs(&self) -> String {
        let tail = |role: &str| {
            let text = std::fs::read_to_string(self.dir.path().join(format!("{role}.log")));
            let text = text.unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(15)..].join("\n")
        };
        let (cp, w) = (tail("cp"), tail("worker"));
        format!("--- cp.log ---\n{cp}\n--- worker.log ---\n{w}")
    }

    /// The smoke script's configs (shared-token mode), with free ports and `warn` logging.
    async fn start(bin: &Path, c: &Client) -> Res<Procs> {
        let dir = tempfile::Builder::new()
            .prefix("stacyvm-bench-remote-")
            .tempdir()
            .map_err(io_err("creating the temp dir"))?;
        let (cp_port, w_port) = (free_port()?, free_port()?);
        let cp_yaml = format!(
            "server: {{host: \"127.0.0.1\", port: {cp_port}}}\n\
             providers: {{default: \"mock\", mock: {{enabled: true}}, docker: {{enabled: false}}, firecracker: {{enabled: false}}}}\n\
             auth:\n  api_key: \"{API_KEY}\"\n  admin_api_key: \"{ADMIN_KEY}\"\n  \
             worker_token: \"dev-worker-token-dev-worker-token\"\n  worker_tokens:\n    \
             {WORKER_ID}: \"dev-worker-a-token-dev-worker-a-token\"\n  admin_fallback_enabled: false\n\
             database: {{driver: \"sqlite\", path: \"{}\"}}\n\
             logging: {{level: \"warn\", format: \"json\"}}\n",
            dir.path().join("stacyvm-remote-worker-staging.db").display()
        );
        let w_yaml = format!(
            "worker:\n  id: \"{WORKER_ID}\"\n  control_plane_url: \"http://127.0.0.1:{cp_port}\"\n  \
             listen_addr: \"127.0.0.1:{w_port}\"\n  preview_domain: \"localhost\"\n  heartbeat_interval: \"2s\"\n\
             providers: {{default: \"mock\", mock: {{enabled: true}}, docker: {{enabled: false}}, firecracker: {{enabled: false}}}}\n\
             auth:\n  worker_token: \"dev-worker-a-token-dev-worker-a-token\"\n\
             logging: {{level: \"warn\", format: \"json\"}}\n"
        );
        std::fs::write(dir.path().join("cp.yaml"), cp_yaml).map_err(io_err("writing cp.yaml"))?;
        std::fs::write(dir.path().join("worker.yaml"), w_yaml)
            .map_err(io_err("writing worker.yaml"))?;
        let base = format!("http://127.0.0.1:{cp_port}/api/v1");
        let mut p = Procs {
            kids: vec![],
            pids: vec![],
            base,
            dir,
        };
        p.spawn_child(bin, "cp")?;
        p.wait_for(c, "health", |v| v.is_object()).await?;
        p.spawn_child(bin, "worker")?;
        p.wait_for(c, "workers", |v| {
            v.as_array().is_some_and(|ws| {
                ws.iter()
                    .any(|w| w["id"] == WORKER_ID && w["stale"] == json!(false))
            })
        })
        .await?;
        Ok(p)
    }

    /// Polls `GET {base}/{path}` until `ok` holds for its JSON, failing fast if a child dies.
    async fn wait_for(&mut self, c: &Client, path: &str, ok: impl Fn(&Value) -> bool) -> Res<()> {
        let t = Instant::now();
        loop {
            for (k, kid) in self.kids.iter_mut().enumerate() {
                if let Some(st) = kid.try_wait().map_err(io_err("polling a child"))? {
                    let role = ["control plane", "worker"].get(k).unwrap_or(&"child");
                    return fail(format!("{role} exited with {st}\n{}", self.logs()));
                }
            }
            if let Ok(r) = c.get(format!("{}/{path}", self.base)).send().await {
                if r.status().is_success() && r.json::<Value>().await.is_ok_and(|v| ok(&v)) {
                    return Ok(());
                }
            }
            if t.elapsed() > START_DEADLINE {
                let logs = self.logs();
                return fail(format!("timed out waiting for GET /{path}\n{logs}"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn stop(mut self) {
        // Errors mean the process is already gone, which is what we want.
        for kid in &mut self.kids {
            let _ = kid.kill().await;
        }
    }
}

fn http_client() -> Res<Client> {
    let mut h = HeaderMap::new();
    h.insert("X-API-Key", HeaderValue::from_static(API_KEY));
    Ok(Client::builder()
        .http1_only()
        .tcp_nodelay(true)
        .default_headers(h)
        .timeout(Duration::from_secs(600))
        .build()?)
}

async fn post_json(c: &Client, url: String, body: &Value) -> Res<(StatusCode, Value)> {
    let r = c.post(url).json(body).send().await?;
    let status = r.status();
    Ok((status, r.json().await.unwrap_or_default()))
}

/// Spawns a mock sandbox; returns `(id, worker_id)`.
async fn spawn(c: &Client, base: &str) -> Res<(String, String)> {
    let body = json!({"image": "alpine:latest", "provider": "mock", "ttl": "1h"});
    let (st, v) = post_json(c, format!("{base}/sandboxes"), &body).await?;
    let (id, worker) = (v["id"].as_str(), v["worker_id"].as_str().unwrap_or(""));
    match id {
        Some(id) if st == StatusCode::CREATED => Ok((id.to_string(), worker.to_string())),
        _ => fail(format!("spawn: HTTP {st}: {v}")),
    }
}

async fn exec_true(c: &Client, base: &str, id: &str) -> Res<Duration> {
    let body = json!({"command": "true"});
    let t = Instant::now();
    let (st, v) = post_json(c, format!("{base}/sandboxes/{id}/exec"), &body).await?;
    let took = t.elapsed();
    if st != StatusCode::OK || v["exit_code"] != json!(0) {
        return fail(format!("exec on {id}: HTTP {st}: {v}"));
    }
    Ok(took)
}

/// Sends a streamed exec and reads the NDJSON to its end holding at most one line; calls
/// `on_line` for each line and returns the exit line's code.
async fn stream_exec(
    c: &Client,
    base: &str,
    id: &str,
    cmd: &str,
    mut on_line: impl FnMut(&Value),
) -> Res<i64> {
    let body = json!({"command": cmd, "stream": true});
    let url = format!("{base}/sandboxes/{id}/exec");
    let mut r = c.post(url).json(&body).send().await?;
    if r.status() != StatusCode::OK {
        let st = r.status();
        return fail(format!("stream exec: HTTP {st}: {}", r.text().await?));
    }
    let (mut buf, mut exit) = (Vec::new(), None);
    while let Some(bytes) = r.chunk().await? {
        let mut rest: &[u8] = &bytes;
        while let Some(pos) = rest.iter().position(|&b| b == b'\n') {
            buf.extend_from_slice(&rest[..pos]);
            rest = &rest[pos + 1..];
            let v: Value = serde_json::from_slice(&buf)
                .map_err(|e| BenchError::Unexpected(format!("bad NDJSON line: {e}")))?;
            buf.clear();
            if v["stream"] == "exit" {
                exit = v["exit_code"].as_i64();
            }
            on_line(&v);
        }
        buf.extend_from_slice(rest);
    }
    exit.ok_or_else(|| BenchError::Unexpected("stream ended without an exit line".into()))
}

/// Time from sending the request to the first stdout line having been read.
async fn first_chunk(c: &Client, base: &str, id: &str) -> Res<Duration> {
    let t = Instant::now();
    let mut first = None;
    let code = stream_exec(c, base, id, FIRST_CHUNK_CMD, |v| {
        if first.is_none() && v["stream"] == "stdout" {
            first = Some(t.elapsed());
        }
    })
    .await?;
    match first {
        Some(d) if code == 0 => Ok(d),
        _ => fail(format!("first-chunk exec: exit {code}, first {first:?}")),
    }
}

/// The floor under both paths: fork `sh -c cmd` here; returns the time to the first stdout
/// byte (EOF for silent commands) and to the exit.
async fn direct(cmd: &str) -> Res<(Duration, Duration)> {
    let t = Instant::now();
    let mut sh = Command::new("sh");
    sh.args(["-c", cmd])
        .stdin(Stdio::null())
        .stderr(Stdio::null());
    let child = sh.stdout(Stdio::piped()).kill_on_drop(true).spawn();
    let mut child = child.map_err(io_err("forking sh"))?;
    let Some(mut out) = child.stdout.take() else {
        return fail("no stdout pipe");
    };
    let mut buf = [0u8; 4096];
    let _ = out.read(&mut buf).await.map_err(io_err("reading sh"))?;
    let first = t.elapsed();
    while out.read(&mut buf).await.map_err(io_err("reading sh"))? > 0 {}
    let st = child.wait().await.map_err(io_err("waiting for sh"))?;
    if !st.success() {
        return fail(format!("sh -c {cmd:?}: {st}"));
    }
    Ok((first, t.elapsed()))
}

/// Runs `f(0)`, `f(1)`, `f(2)` `warmup + n` times, rotating which goes first.
async fn interleaved<F, Fut>(n: usize, warmup: usize, f: F) -> Res<[Vec<Duration>; 3]>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Res<Duration>>,
{
    let mut out: [Vec<Duration>; 3] = Default::default();
    for i in 0..warmup + n {
        for k in (0..3).map(|j| (i + j) % 3) {
            let d = f(k).await?;
            if i >= warmup {
                out[k].push(d);
            }
        }
    }
    Ok(out)
}

/// One table line: a left-aligned label, then right-aligned cells.
fn row<S: AsRef<str>>(label: &str, width: usize, cells: &[S]) {
    let cells = cells.iter().map(|c| format!("{:>10}", c.as_ref()));
    println!("  {label:<width$}{}", cells.collect::<String>());
}

/// Prints local, remote and direct percentiles and remote − local; returns the three p50s.
fn latency_table(title: &str, s: &[Vec<Duration>; 3]) -> [Duration; 3] {
    let [l, r, d] = [&s[0], &s[1], &s[2]].map(|v| summary(v));
    println!("\n## {title} (ms, n={} each)", s[0].len());
    row("path", 26, &["min", "p50", "p90", "p99", "max"]);
    println!("  {}", "-".repeat(76));
    row("local sandbox (CP)", 26, &l.map(ms));
    row("remote sandbox (worker-a)", 26, &r.map(ms));
    row("direct fork, no HTTP", 26, &d.map(ms));
    let diff: Vec<String> = (0..5).map(|i| ms_diff(r[i], l[i])).collect();
    row("overhead remote − local", 26, &diff);
    let stalls = |v: &Vec<Duration>| v.iter().filter(|d| **d >= STALL).count();
    let [a, b, c] = s.each_ref().map(stalls);
    println!("   samples ≥ {STALL:?} (local/remote/direct): {a}/{b}/{c}");
    [l[1], r[1], d[1]]
}

fn verdict(ok: bool) -> &'static str {
    ["MISSED", "met"][usize::from(ok)]
}

/// RSS of the worker (index 0) and the control plane (index 1) around one piece of work, KiB.
struct RssWatch {
    before: [u64; 2],
    peak: [u64; 2],
    hwm: [u64; 2],
    after: [u64; 2],
}

/// Runs `work` while sampling both processes' RSS every [`RSS_SAMPLE_EVERY`]; returns its
/// result, how long it took and the RSS figures (`after` is read [`SETTLE`] later).
async fn watch_rss<T>(
    p: &Procs,
    work: impl std::future::Future<Output = Res<T>>,
) -> Res<(T, Duration, RssWatch)> {
    tokio::time::sleep(SETTLE).await;
    let pids = [p.pids[1], p.pids[0]];
    let read =
        |key: &str| -> Res<[u64; 2]> { Ok([status_kib(pids[0], key)?, status_kib(pids[1], key)?]) };
    let (before, hwm_before) = (read("VmRSS:")?, read("VmHWM:")?);
    let peaks = Arc::new(before.map(AtomicU64::new));
    let sampler = {
        let peaks = peaks.clone();
        tokio::spawn(async move {
            loop {
                for (peak, pid) in peaks.iter().zip(pids) {
                    if let Ok(kib) = status_kib(pid, "VmRSS:") {
                        peak.fetch_max(kib, Ordering::Relaxed);
                    }
                }
                tokio::time::sleep(RSS_SAMPLE_EVERY).await;
            }
        })
    };
    let t = Instant::now();
    let res = work.await;
    let took = t.elapsed();
    sampler.abort();
    let out = res?;
    let hwm = read("VmHWM:")?;
    // A VmHWM raised during the work counts even if the sampler missed the peak.
    let peak = [0, 1].map(|k| {
        let sampled = peaks[k].load(Ordering::Relaxed);
        sampled.max(Some(hwm[k]).filter(|&h| h > hwm_before[k]).unwrap_or(0))
    });
    tokio::time::sleep(SETTLE).await;
    let after = read("VmRSS:")?;
    let w = RssWatch {
        before,
        peak,
        hwm,
        after,
    };
    Ok((out, took, w))
}

/// Prints the RSS table; returns the larger growth of the two processes, MiB.
fn print_rss(w: &RssWatch) -> f64 {
    println!(
        "   RSS read every {RSS_SAMPLE_EVERY:?}; growth = peak − before; after = {SETTLE:?} later"
    );
    let head = ["before", "peak", "VmHWM", "after", "growth"];
    row("process (MiB)", 16, &head);
    println!("  {}", "-".repeat(66));
    let mut worst: f64 = 0.0;
    for (k, name) in ["worker", "control plane"].iter().enumerate() {
        let growth = mib(w.peak[k].saturating_sub(w.before[k]));
        worst = worst.max(growth);
        let cells =
            [w.before[k], w.peak[k], w.hwm[k], w.after[k]].map(|v| format!("{:.1}", mib(v)));
        row(name, 16, &[&cells[..], &[format!("{growth:+.1}")]].concat());
    }
    worst
}

/// Streams `mib_n` MiB through the worker while sampling both processes' RSS.
async fn stream_bench(c: &Client, p: &Procs, id: &str, mib_n: u64) -> Res<()> {
    let bytes_n = mib_n * 1024 * 1024;
    let cmd = format!("head -c {bytes_n} /dev/zero | tr '\\0' 'a'");
    let (mut got, mut lines) = (0u64, 0u64);
    let work = stream_exec(c, &p.base, id, &cmd, |v| {
        if v["stream"] == "stdout" {
            got += v["data"].as_str().map_or(0, |s| s.len() as u64);
            lines += 1;
        }
    });
    let (code, took, w) = watch_rss(p, work).await?;
    if code != 0 || got != bytes_n {
        return fail(format!("stream: exit {code}, {got} of {bytes_n} bytes"));
    }
    println!("\n## {mib_n} MiB streamed through the worker (`{cmd}`, remote sandbox)");
    let secs = took.as_secs_f64();
    let rate = mib_n as f64 / secs.max(1e-9);
    println!("   {got} bytes in {lines} stdout lines, {secs:.2} s, {rate:.1} MiB/s");
    print_rss(&w);
    let worker_growth = mib(w.peak[0].saturating_sub(w.before[0]));
    println!(
        "   target worker RSS growth ≤ {TARGET_RSS_GROWTH_MIB:.0} MiB: {worker_growth:.1} MiB — {}",
        verdict(worker_growth <= TARGET_RSS_GROWTH_MIB)
    );
    Ok(())
}

/// Byte `i` of the benchmark file (cheap to regenerate on both ends, not all one value).
fn file_byte(i: u64) -> u8 {
    (i.wrapping_mul(2_654_435_761) >> 13) as u8
}

/// Uploads `mib_n` MiB (`PUT …/files`, streamed body) to the remote sandbox and downloads it
/// (`GET …/files`, streamed), checking every byte, while sampling both processes' RSS.
async fn file_bench(c: &Client, p: &Procs, id: &str, mib_n: u64) -> Res<()> {
    const PIECE: u64 = 256 * 1024;
    let bytes_n = mib_n * 1024 * 1024;
    let url = format!("{}/sandboxes/{id}/files?path=/workspace/bench.bin", p.base);
    let work = async {
        let pieces = (0..bytes_n.div_ceil(PIECE)).map(move |k| {
            let range = k * PIECE..((k + 1) * PIECE).min(bytes_n);
            Ok::<_, std::io::Error>(range.map(file_byte).collect::<Vec<u8>>())
        });
        let t = Instant::now();
        let r = c
            .put(&url)
            .header("Content-Type", "application/octet-stream")
            .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
                pieces,
            )))
            .send()
            .await?;
        if r.status() != StatusCode::OK {
            let (st, text) = (r.status(), r.text().await?);
            return fail(format!("upload: HTTP {st}: {text}"));
        }
        let up = t.elapsed();
        let t = Instant::now();
        let r = c.get(&url).send().await?;
        if r.status() != StatusCode::OK {
            return fail(format!("download: HTTP {}", r.status()));
        }
        let mut body = r.bytes_stream();
        let mut at = 0u64;
        while let Some(chunk) = futures_util::StreamExt::next(&mut body).await {
            for b in chunk? {
                if b != file_byte(at) {
                    return fail(format!("download: byte {at} differs"));
                }
                at += 1;
            }
        }
        if at != bytes_n {
            return fail(format!("download: {at} of {bytes_n} bytes"));
        }
        Ok((up, t.elapsed()))
    };
    let ((up, down), _, w) = watch_rss(p, work).await?;
    println!(
        "\n## {mib_n} MiB file through the worker (streamed PUT then GET …/files, remote sandbox)"
    );
    let rate = |d: Duration| mib_n as f64 / d.as_secs_f64().max(1e-9);
    println!(
        "   upload {:.2} s ({:.1} MiB/s), download {:.2} s ({:.1} MiB/s), every byte checked",
        up.as_secs_f64(),
        rate(up),
        down.as_secs_f64(),
        rate(down)
    );
    let worst = print_rss(&w);
    println!(
        "   target RSS growth ≤ {TARGET_RSS_GROWTH_MIB:.0} MiB (both processes): {worst:.1} MiB — {}",
        verdict(worst <= TARGET_RSS_GROWTH_MIB)
    );
    Ok(())
}

fn print_context(bin: &Path) {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name")?.split_once(':'));
    let cpu = cpu.map_or("unknown CPU", |(_, v)| v.trim());
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = read("/proc/sys/kernel/osrelease").trim().to_string();
    let load = read("/proc/loadavg").trim().to_string();
    let profile = |release: bool| if release { "release" } else { "debug" };
    let server_release = bin.components().any(|c| c.as_os_str() == "release");
    let now = chrono::Utc::now().format("%Y-%m-%d %H:%M:%S UTC");
    println!("# StacyVM remote worker vs local (mock provider, loopback, shared-token auth)");
    println!("   date         {now}");
    println!("   machine      nproc={nproc}, {cpu}, Linux {kernel}");
    println!("   load avg     {load} (bench, control plane and worker share the cores)");
    println!("   bench build  {}", profile(!cfg!(debug_assertions)));
    let server = profile(server_release);
    println!("   binary       {} ({server} build)", bin.display());
    if cfg!(debug_assertions) || !server_release {
        println!("   ! not a release build on both sides: figures are not representative");
    }
}

async fn measure(cli: &Cli, c: &Client, p: &Procs) -> Res<()> {
    let base = p.base.as_str();
    let (local, lw) = spawn(c, base).await?;
    let r = c.delete(format!("{base}/admin/workers/local"));
    let r = r.header("X-Admin-API-Key", ADMIN_KEY).send().await?;
    if r.status() != StatusCode::OK {
        let (st, text) = (r.status(), r.text().await?);
        return fail(format!("DELETE /admin/workers/local: HTTP {st}: {text}"));
    }
    let (remote, rw) = spawn(c, base).await?;
    if rw != WORKER_ID || lw == WORKER_ID {
        return fail(format!(
            "placement: on {lw:?} then {rw:?}, want local then {WORKER_ID}"
        ));
    }
    println!("   sandboxes    {local} on {lw:?}, {remote} on {rw:?}");
    let ids = [local.as_str(), remote.as_str()];

    let n = cli.exec_n.max(1);
    let f = |k: usize| async move {
        match ids.get(k) {
            Some(id) => exec_true(c, base, id).await,
            None => Ok(direct("true").await?.1),
        }
    };
    let s = interleaved(n, (n / 10).clamp(1, 30), f).await?;
    let [lp, rp, _] = latency_table("Sync exec of `true` (POST …/exec), interleaved", &s);
    println!(
        "   target p50 overhead ≤ {} ms: {} ms — {}",
        ms(TARGET_EXEC_OVERHEAD),
        ms_diff(rp, lp),
        verdict(rp.saturating_sub(lp) <= TARGET_EXEC_OVERHEAD)
    );

    let n = cli.chunk_n.max(1);
    let f = |k: usize| async move {
        match ids.get(k) {
            Some(id) => first_chunk(c, base, id).await,
            None => Ok(direct(FIRST_CHUNK_CMD).await?.0),
        }
    };
    let s = interleaved(n, 3, f).await?;
    let title = format!("First stdout chunk of a streamed `{FIRST_CHUNK_CMD}`, interleaved");
    let [lp, rp, _] = latency_table(&title, &s);
    println!(
        "   target first chunk ≤ {} ms (remote p50): {} ms — {} (remote−local p50 {} ms)",
        ms(TARGET_FIRST_CHUNK),
        ms(rp),
        verdict(rp <= TARGET_FIRST_CHUNK),
        ms_diff(rp, lp)
    );

    stream_bench(c, p, &remote, cli.stream_mib.max(1)).await?;
    file_bench(c, p, &remote, cli.file_mib.max(1)).await?;
    for id in ids {
        let r = c.delete(format!("{base}/sandboxes/{id}")).send().await?;
        if r.status() != StatusCode::OK {
            return fail(format!("destroy {id}: HTTP {}", r.status()));
        }
    }
    Ok(())
}

async fn run(cli: Cli) -> Res<()> {
    let bin = resolve_bin(&cli.bin)?;
    print_context(&bin);
    let c = http_client()?;
    let procs = Procs::start(&bin, &c).await?;
    let res = measure(&cli, &c, &procs).await;
    if res.is_err() {
        eprintln!("{}", procs.logs());
    }
    procs.stop().await;
    res
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // Dropping the future on Ctrl-C drops `Procs`, whose children are killed on drop.
    let result = tokio::select! {
        r = run(cli) => r,
        _ = tokio::signal::ctrl_c() => fail("interrupted"),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stacyvm-bench remote: {e}");
            ExitCode::FAILURE
        }
    }
}
