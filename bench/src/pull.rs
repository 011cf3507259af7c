//! Issue 15, figure 3: `stacyvm image pull` of a ~100 MiB image from a loopback registry into
//! an empty store, against `docker pull` of the same image after `docker rmi`. The registry is
//! Debian's `docker-registry` on a free loopback port with its storage in a temp dir (as the
//! image store's tests run it); the image is built here: random (incompressible) data in three
//! `COPY` layers `FROM scratch` (legacy `docker build`), pushed with `docker push` and removed
//! from the daemon, so nothing of it is local before the first round. Rounds alternate which
//! side goes first; each is the wall time of the command, from start to exit.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tempfile::TempDir;
use tokio::process::{Child, Command};

use crate::server::{free_port, io_err};
use crate::stats::{ms, Summary, Table};
use crate::BenchError;

const REGISTRY_BIN: &str = "/usr/bin/docker-registry";
/// stacyvm / docker pull time the issue asks for.
const TARGET_RATIO: f64 = 1.0;
/// Shares of the image's data in its three layers.
const LAYER_SHARES: [u64; 3] = [50, 30, 20];

pub struct Opts {
    pub mib: u64,
    pub rounds: usize,
}

/// A `docker-registry` on loopback; killed on drop.
struct Registry {
    _child: Child,
    port: u16,
}

impl Registry {
    async fn start(dir: &Path) -> Result<Registry, BenchError> {
        if !Path::new(REGISTRY_BIN).is_file() {
            return Err(BenchError::Unexpected(format!(
                "{REGISTRY_BIN} is missing (apt-get install docker-registry; scripts/lib/setup.sh \
                 setup_registry)"
            )));
        }
        let storage = dir.join("registry");
        std::fs::create_dir(&storage).map_err(io_err("creating the registry storage"))?;
        let port = free_port()?;
        let config = dir.join("registry.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
                 http:\n  addr: 127.0.0.1:{port}\n",
                storage.display()
            ),
        )
        .map_err(io_err("writing the registry config"))?;
        let log = std::fs::File::create(dir.join("registry.log"))
            .map_err(io_err("creating the registry log"))?;
        let log2 = log.try_clone().map_err(io_err("cloning the log handle"))?;
        let child = Command::new(REGISTRY_BIN)
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .kill_on_drop(true)
            .spawn()
            .map_err(io_err("starting docker-registry"))?;
        let reg = Registry {
            _child: child,
            port,
        };
        let c = crate::api::http_client()?;
        let url = format!("http://127.0.0.1:{port}/v2/");
        let start = Instant::now();
        while !c
            .get(&url)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            if start.elapsed() > Duration::from_secs(30) {
                return Err(BenchError::Unexpected(
                    "docker-registry not ready after 30 s".into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(reg)
    }
}

/// Runs a command to completion; its wall time. Output is discarded unless it fails.
async fn timed(cmd: &mut Command, what: &str) -> Result<Duration, BenchError> {
    let t = Instant::now();
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(io_err(format!("running {what}")))?;
    let took = t.elapsed();
    if !out.status.success() {
        return Err(BenchError::Unexpected(format!(
            "{what} exited with {}: {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(took)
}

fn docker() -> Command {
    let mut c = Command::new("docker");
    // The legacy builder: no buildx here, and `FROM scratch` + `COPY` needs nothing more.
    c.env("DOCKER_BUILDKIT", "0");
    c
}

/// `bytes` of xorshift output: incompressible, so gzip in `docker push` keeps the size.
fn random_file(path: &Path, bytes: u64, seed: u64) -> Result<(), BenchError> {
    let f = std::fs::File::create(path).map_err(io_err(format!("creating {}", path.display())))?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
    let mut x = seed | 1;
    let mut buf = vec![0u8; 1 << 16];
    let mut left = bytes;
    while left > 0 {
        for chunk in buf.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes());
        }
        let n = usize::try_from(left.min(buf.len() as u64)).unwrap_or(buf.len());
        w.write_all(&buf[..n])
            .map_err(io_err(format!("writing {}", path.display())))?;
        left -= n as u64;
    }
    w.flush()
        .map_err(io_err(format!("writing {}", path.display())))
}

/// Builds the image in the daemon, pushes it and removes it locally.
async fn build_and_push(dir: &Path, reference: &str, mib: u64) -> Result<(), BenchError> {
    let ctx = dir.join("context");
    std::fs::create_dir(&ctx).map_err(io_err("creating the build context"))?;
    let seed = (u64::from(std::process::id()) << 20) ^ chrono::Utc::now().timestamp() as u64;
    let mut dockerfile = String::from("FROM scratch\n");
    for (i, share) in LAYER_SHARES.iter().enumerate() {
        let name = format!("layer{i}.bin");
        random_file(
            &ctx.join(&name),
            mib * share / 100 * 1024 * 1024,
            seed + i as u64,
        )?;
        dockerfile.push_str(&format!("COPY {name} /{name}\n"));
    }
    std::fs::write(ctx.join("Dockerfile"), dockerfile).map_err(io_err("writing the Dockerfile"))?;
    timed(
        docker()
            .arg("build")
            .arg("-q")
            .arg("-t")
            .arg(reference)
            .arg(&ctx),
        "docker build",
    )
    .await?;
    let _ = std::fs::remove_dir_all(&ctx);
    timed(docker().arg("push").arg("-q").arg(reference), "docker push").await?;
    remove_local(reference).await
}

/// `docker rmi` of the image; afterwards the daemon must not have it.
async fn remove_local(reference: &str) -> Result<(), BenchError> {
    timed(docker().arg("rmi").arg(reference), "docker rmi").await?;
    let still = docker()
        .arg("image")
        .arg("inspect")
        .arg(reference)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .map_err(io_err("docker image inspect"))?;
    if still.success() {
        return Err(BenchError::Unexpected(format!(
            "{reference} is still in the daemon after docker rmi"
        )));
    }
    Ok(())
}

async fn sync() {
    let _ = Command::new("sync").status().await;
}

/// Bytes under `dir` (regular files).
fn du(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(t) if t.is_file() => total += e.metadata().map_or(0, |m| m.len()),
                _ => {}
            }
        }
    }
    total
}

struct Rounds {
    stacyvm: Vec<Duration>,
    docker: Vec<Duration>,
    store_bytes: u64,
}

async fn rounds(bin: &Path, dir: &Path, reference: &str, o: &Opts) -> Result<Rounds, BenchError> {
    let mut r = Rounds {
        stacyvm: Vec::new(),
        docker: Vec::new(),
        store_bytes: 0,
    };
    for round in 0..o.rounds {
        for k in 0..2 {
            sync().await;
            if (round + k) % 2 == 0 {
                let store: PathBuf = dir.join(format!("store-{round}"));
                let took = timed(
                    Command::new(bin)
                        .arg("image")
                        .arg("--root")
                        .arg(&store)
                        .arg("pull")
                        .arg(reference),
                    "stacyvm image pull",
                )
                .await?;
                r.store_bytes = du(&store.join("blobs"));
                let _ = std::fs::remove_dir_all(&store);
                r.stacyvm.push(took);
            } else {
                let took =
                    timed(docker().arg("pull").arg("-q").arg(reference), "docker pull").await?;
                remove_local(reference).await?;
                r.docker.push(took);
            }
        }
        println!(
            "   round {}: stacyvm {} ms, docker {} ms ({} first)",
            round + 1,
            r.stacyvm.last().map_or_else(String::new, |d| ms(*d)),
            r.docker.last().map_or_else(String::new, |d| ms(*d)),
            if round % 2 == 0 { "stacyvm" } else { "docker" }
        );
    }
    Ok(r)
}

fn report(r: &Rounds, mib: u64) -> Result<(), BenchError> {
    let (Some(s), Some(d)) = (Summary::of(&r.stacyvm), Summary::of(&r.docker)) else {
        return Err(BenchError::Unexpected("no pull samples".into()));
    };
    let mut t = Table::new(["pull", "n", "min", "p50", "max", "mean", "MiB/s (p50)"]);
    for (name, x) in [
        ("stacyvm image pull (empty store)", &s),
        ("docker pull (after docker rmi)", &d),
    ] {
        t.row([
            name.to_string(),
            x.n.to_string(),
            ms(x.min),
            ms(x.p50),
            ms(x.max),
            ms(x.mean),
            format!("{:.0}", mib as f64 / x.p50.as_secs_f64()),
        ]);
    }
    println!("   (ms)\n{}", t.render());
    let ratio = s.p50.as_secs_f64() / d.p50.as_secs_f64().max(1e-9);
    let verdict = if ratio <= TARGET_RATIO {
        "met"
    } else {
        "MISSED"
    };
    println!(
        "   stacyvm/docker p50 {ratio:.3} (mean {:.3}) — target ≤ {TARGET_RATIO:.1}: {verdict}",
        s.mean.as_secs_f64() / d.mean.as_secs_f64().max(1e-9)
    );
    println!(
        "   the store held {:.1} MiB of blobs after a pull",
        r.store_bytes as f64 / (1024.0 * 1024.0)
    );
    Ok(())
}

pub async fn run(bin: &Path, o: &Opts) -> Result<(), BenchError> {
    println!(
        "\n## Issue 15.3: pull of a {} MiB image (3 layers) from a loopback registry",
        o.mib
    );
    let dir: TempDir = tempfile::Builder::new()
        .prefix("stacyvm-bench-pull-")
        .tempdir_in("/var/tmp")
        .map_err(io_err("creating the pull temp dir"))?;
    let registry = Registry::start(dir.path()).await?;
    let reference = format!(
        "127.0.0.1:{}/stacyvm-bench/pull:{}",
        registry.port,
        std::process::id()
    );
    println!("   building and pushing {reference} (not timed)");
    build_and_push(dir.path(), &reference, o.mib).await?;
    println!(
        "   {} rounds, alternating which goes first; `sync` before each pull",
        o.rounds
    );
    let r = rounds(bin, dir.path(), &reference, o).await;
    // Whatever failed, the daemon must not keep the image.
    let _ = docker().arg("rmi").arg(&reference).output().await;
    report(&r?, o.mib)
}
