//! Issue 15, figure 1: spawn to first exec output. `POST /sandboxes` then a sync `POST …/exec
//! {"command":"echo x"}` answered with `x`, through one real server with both the bwrap and the
//! docker provider, on the same image; against a bare `bwrap` with the provider's namespace
//! flags running `/bin/echo x` in the image's root filesystem (no overlay, cgroups, seccomp or
//! agent): the floor. The three are interleaved, order rotating every round; each sandbox is
//! destroyed (timed apart) before the next round.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use super::Env;
use crate::pg::Db;
use crate::server::{io_err, Server};
use crate::stats::{ms, Summary, Table};
use crate::{api, BenchError};

/// bwrap's spawn-to-first-output p50 over docker's the issue asks for.
const TARGET_RATIO: f64 = 0.1;

pub struct Opts {
    pub n: usize,
    pub warmup: usize,
}

/// One provider's samples: the spawn request, the first exec, both, and the (untimed in the
/// total) destroy.
#[derive(Default)]
struct Series {
    spawn: Vec<Duration>,
    exec: Vec<Duration>,
    total: Vec<Duration>,
    destroy: Vec<Duration>,
}

struct Sample {
    spawn: Duration,
    exec: Duration,
    total: Duration,
    destroy: Duration,
}

impl Series {
    fn push(&mut self, s: Sample) {
        self.spawn.push(s.spawn);
        self.exec.push(s.exec);
        self.total.push(s.total);
        self.destroy.push(s.destroy);
    }
}

/// Spawn + first exec through the API on `provider`, then destroy. `live` holds the id while
/// the sandbox exists, so a failure leaves it to the caller's cleanup.
async fn through_api(
    c: &reqwest::Client,
    base: &str,
    image: &str,
    provider: &str,
    live: &mut Vec<String>,
) -> Result<Sample, BenchError> {
    let body = json!({"image": image, "provider": provider, "ttl": "10m"});
    let t = Instant::now();
    let (id, spawn) = api::spawn_json(c, base, &body).await?;
    live.push(id.clone());
    let (out, exec) = api::exec_stdout(c, base, &id, "echo x").await?;
    let total = t.elapsed();
    if out != "x\n" {
        return Err(BenchError::Unexpected(format!(
            "{provider}: `echo x` printed {out:?}"
        )));
    }
    let destroy = api::destroy(c, base, &id).await?;
    live.retain(|i| i != &id);
    Ok(Sample {
        spawn,
        exec,
        total,
        destroy,
    })
}

/// The provider's namespace flags (launch.rs `args`) over the image's root filesystem, read
/// only, running `/bin/echo x`: fork to the first line on stdout.
async fn floor(bwrap: &str, rootfs: &Path) -> Result<Duration, BenchError> {
    let t = Instant::now();
    let mut child = Command::new(bwrap)
        .args([
            "--unshare-all",
            "--new-session",
            "--as-pid-1",
            "--cap-drop",
            "ALL",
            "--hostname",
            "floor",
            "--ro-bind",
        ])
        .arg(rootfs)
        .args([
            "/",
            "--proc",
            "/proc",
            "--dev",
            "/dev",
            "--chdir",
            "/",
            "--clearenv",
            "--setenv",
            "PATH",
            "/bin:/usr/bin",
            "--",
            "/bin/echo",
            "x",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(io_err(format!("starting {bwrap}")))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| BenchError::Unexpected("bwrap without stdout".into()))?;
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .await
        .map_err(io_err("reading bwrap's output"))?;
    let took = t.elapsed();
    let out = child
        .wait_with_output()
        .await
        .map_err(io_err("waiting for bwrap"))?;
    if line != "x\n" || !out.status.success() {
        return Err(BenchError::Unexpected(format!(
            "bare bwrap printed {line:?}, exited {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(took)
}

async fn measure(
    server: &Server,
    env: &Env,
    o: &Opts,
    live: &mut Vec<String>,
) -> Result<Samples, BenchError> {
    let c = api::http_client()?;
    let base = &server.base;
    // The first bwrap spawn builds the image's root filesystem in the store; the floor needs it.
    through_api(&c, base, &env.image, "bwrap", live).await?;
    let rootfs = env.rootfs()?;
    let mut s = Samples::default();
    for i in 0..o.warmup + o.n {
        let (mut b, mut d, mut f) = (None, None, None);
        for k in 0..3 {
            match (i + k) % 3 {
                0 => b = Some(through_api(&c, base, &env.image, "bwrap", live).await?),
                1 => d = Some(through_api(&c, base, &env.image, "docker", live).await?),
                _ => f = Some(floor("bwrap", &rootfs).await?),
            }
        }
        if i >= o.warmup {
            s.bwrap.push(b.ok_or_else(none)?);
            s.docker.push(d.ok_or_else(none)?);
            s.floor.push(f.ok_or_else(none)?);
        }
    }
    Ok(s)
}

fn none() -> BenchError {
    BenchError::Unexpected("a round missed a sample".into())
}

#[derive(Default)]
struct Samples {
    bwrap: Series,
    docker: Series,
    floor: Vec<Duration>,
}

fn summary(v: &[Duration]) -> Result<Summary, BenchError> {
    Summary::of(v).ok_or_else(|| BenchError::Unexpected("no samples".into()))
}

fn report(s: &Samples) -> Result<(), BenchError> {
    let mut t = Table::new(["path", "n", "min", "p50", "p90", "max", "mean"]);
    let mut row = |name: &str, v: &[Duration]| -> Result<Summary, BenchError> {
        let x = summary(v)?;
        t.row([
            name.to_string(),
            x.n.to_string(),
            ms(x.min),
            ms(x.p50),
            ms(x.p90),
            ms(x.max),
            ms(x.mean),
        ]);
        Ok(x)
    };
    let b = row("bwrap: spawn + `echo x` answered", &s.bwrap.total)?;
    row("  of which POST /sandboxes", &s.bwrap.spawn)?;
    row("  of which POST …/exec", &s.bwrap.exec)?;
    let d = row("docker (runc): spawn + `echo x` answered", &s.docker.total)?;
    row("  of which POST /sandboxes", &s.docker.spawn)?;
    row("  of which POST …/exec", &s.docker.exec)?;
    let f = row("floor: bare `bwrap … /bin/echo x`", &s.floor)?;
    row("destroy, bwrap (DELETE)", &s.bwrap.destroy)?;
    row("destroy, docker (DELETE)", &s.docker.destroy)?;
    println!("   (ms)\n{}", t.render());
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64().max(1e-9);
    let r50 = ratio(b.p50, d.p50);
    let verdict = if r50 <= TARGET_RATIO { "met" } else { "MISSED" };
    println!(
        "   bwrap/docker p50 {r50:.3} (p90 {:.3}) — target ≤ {TARGET_RATIO:.1}: {verdict}",
        ratio(b.p90, d.p90)
    );
    println!(
        "   bwrap/floor p50 {:.2} (p90 {:.2}); bwrap above the floor: +{} ms p50",
        ratio(b.p50, f.p50),
        ratio(b.p90, f.p90),
        ms(b.p50.saturating_sub(f.p50))
    );
    Ok(())
}

pub async fn run(bin: &Path, env_opts: &super::Opts, o: &Opts) -> Result<(), BenchError> {
    println!("\n## Issue 15.1: spawn to first exec output, bwrap vs docker vs bare bwrap");
    println!(
        "   image {}, {} warm-up + {} measured of each, interleaved (order rotating)",
        env_opts.image, o.warmup, o.n
    );
    let docker = bollard::Docker::connect_with_defaults()
        .map_err(|e| BenchError::Unexpected(format!("docker engine: {e}")))?;
    crate::docker::wait_quiet(&docker).await?;
    let env = Env::prepare(bin, env_opts).await?;
    let server = Server::start_full(bin, &env.providers(true), &Db::Sqlite, &env.extra()).await?;
    let mut live = Vec::new();
    let measured = measure(&server, &env, o, &mut live).await;
    let c = api::http_client()?;
    for id in &live {
        if let Err(e) = api::destroy(&c, &server.base, id).await {
            eprintln!("   ! destroying {id} after the run: {e}");
        }
    }
    let log_tail = server.log_tail();
    server.stop().await?;
    let s =
        measured.map_err(|e| BenchError::Unexpected(format!("{e}\nserver log:\n{log_tail}")))?;
    report(&s)?;
    let left = env.leftovers();
    let docker_left = crate::docker::managed_count(&docker).await?;
    println!("   left after the run: bwrap {left}; docker sandbox containers {docker_left}");
    Ok(())
}
