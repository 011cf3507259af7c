//! Benchmark 4: the docker provider through StacyVM versus the bare Engine API, in one run
//! against the same local image. Spawn-to-running p50 (POST /sandboxes → 201 `running` vs
//! create+start), exec p50 of `sh -c true` (POST exec vs create/start/inspect exec), and the
//! wall time of N concurrent spawns. Every container it creates is removed at the end.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, RemoveContainerOptionsBuilder,
};
use bollard::Docker;
use futures_util::future::join_all;
use futures_util::StreamExt;
use reqwest::header::CONTENT_TYPE;
use reqwest::{Client, StatusCode};

use crate::api;
use crate::server::Server;
use crate::stats::{ms, Summary, Table};
use crate::BenchError;

/// Label on the containers the benchmark creates itself (value: the run id). Deliberately
/// not `stacyvm.managed`: a control plane's startup reconciliation would destroy them.
const BENCH_LABEL: &str = "stacyvm-bench.run";
/// Label the docker provider puts on every sandbox container.
const MANAGED_LABEL: &str = "stacyvm.managed=true";
const SANDBOX_LABEL: &str = "stacyvm.sandbox_id";
/// StacyVM / bare ratio the issue asks for, on spawn and on exec p50.
const TARGET_RATIO: f64 = 1.10;
/// `defaults.memory_mb` of the server, given to the bare containers too.
const MEMORY_BYTES: i64 = 1024 << 20;
/// How long to wait for other people's sandbox containers to go before starting a server
/// (its startup reconciliation destroys containers labelled ours that its store does not know).
const QUIET_WAIT: Duration = Duration::from_secs(60);

pub struct Opts {
    pub image: String,
    pub n: usize,
    pub warmup: usize,
    pub concurrent: usize,
}

fn engine(context: &str) -> impl FnOnce(bollard::errors::Error) -> BenchError + '_ {
    move |e| BenchError::Unexpected(format!("docker engine, {context}: {e}"))
}

/// The bare create request: the provider's hardening, rebuilt here (its builder is private):
/// no capabilities, no-new-privileges, default seccomp, pids 256, 1 GiB without swap, 1 CPU,
/// bridge network, docker-init, an anonymous `/workspace` volume, `/bin/sleep` keep-alive.
fn bare_body(image: &str, name: &str, run_id: &str) -> ContainerCreateBody {
    ContainerCreateBody {
        image: Some(image.to_string()),
        hostname: Some(name.to_string()).filter(|h| h.len() <= 63),
        env: Some(vec!["WORKSPACE=/workspace".into()]),
        entrypoint: Some(Vec::new()),
        cmd: Some(vec!["/bin/sleep".into(), "2147483647".into()]),
        working_dir: Some("/workspace".into()),
        volumes: Some(vec!["/workspace".into()]),
        labels: Some(HashMap::from([(
            BENCH_LABEL.to_string(),
            run_id.to_string(),
        )])),
        stop_timeout: Some(1),
        host_config: Some(HostConfig {
            memory: Some(MEMORY_BYTES),
            memory_swap: Some(MEMORY_BYTES),
            nano_cpus: Some(1_000_000_000),
            pids_limit: Some(256),
            cap_drop: Some(vec!["ALL".into()]),
            security_opt: Some(vec!["no-new-privileges:true".into()]),
            network_mode: Some("bridge".into()),
            readonly_rootfs: Some(false),
            init: Some(true),
            privileged: Some(false),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// What the run created, so cleanup finds it whatever failed.
#[derive(Default)]
struct Ledger {
    sandboxes: Vec<String>,
    bare: Vec<String>,
}

struct Ctx<'a> {
    docker: &'a Docker,
    http: Client,
    base: &'a str,
    spawn_body: String,
    image: &'a str,
    run_id: String,
    seq: usize,
}

impl Ctx<'_> {
    /// POST /sandboxes until 201 with state `running`.
    async fn spawn(&self, ledger: &mut Ledger) -> Result<(String, Duration), BenchError> {
        let t = Instant::now();
        let r = self
            .http
            .post(format!("{}/sandboxes", self.base))
            .header(CONTENT_TYPE, "application/json")
            .body(self.spawn_body.clone())
            .send()
            .await?;
        let status = r.status();
        let body = r.bytes().await?;
        let took = t.elapsed();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        if let Some(id) = v.get("id").and_then(|i| i.as_str()) {
            ledger.sandboxes.push(id.to_string());
        }
        match (status, v.get("id"), v.get("state")) {
            (StatusCode::CREATED, Some(serde_json::Value::String(id)), Some(s))
                if s == "running" =>
            {
                Ok((id.clone(), took))
            }
            _ => Err(BenchError::Unexpected(format!(
                "spawn: HTTP {status}: {}",
                String::from_utf8_lossy(&body).trim()
            ))),
        }
    }

    fn next_name(&mut self) -> String {
        self.seq += 1;
        format!("stacyvm-bench-{}-{}", self.run_id, self.seq)
    }

    /// Bare create + start; returns once the engine says started.
    async fn bare_spawn(&self, name: &str, ledger: &mut Ledger) -> Result<Duration, BenchError> {
        let t = Instant::now();
        let opts = CreateContainerOptionsBuilder::default().name(name).build();
        let body = bare_body(self.image, name, &self.run_id);
        let created = self
            .docker
            .create_container(Some(opts), body)
            .await
            .map_err(engine("create"))?;
        ledger.bare.push(created.id.clone());
        self.docker
            .start_container(&created.id, None)
            .await
            .map_err(engine("start"))?;
        Ok(t.elapsed())
    }

    async fn bare_remove(&self, id: &str) -> Result<Duration, BenchError> {
        let t = Instant::now();
        remove(self.docker, id).await?;
        Ok(t.elapsed())
    }
}

async fn remove(docker: &Docker, id: &str) -> Result<(), BenchError> {
    let rm = RemoveContainerOptionsBuilder::default()
        .force(true)
        .v(true)
        .build();
    match docker.remove_container(id, Some(rm)).await {
        Ok(()) => Ok(()),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(()),
        Err(e) => Err(engine("remove")(e)),
    }
}

/// Bare exec of `sh -c true`: create, start attached, read to EOF, inspect until finished
/// (the same steps and back-off the provider needs to learn the exit code).
async fn bare_exec(docker: &Docker, cid: &str) -> Result<Duration, BenchError> {
    let t = Instant::now();
    let opts = CreateExecOptions {
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        cmd: Some(vec!["sh", "-c", "true"]),
        working_dir: Some("/workspace"),
        ..Default::default()
    };
    let created = docker
        .create_exec(cid, opts)
        .await
        .map_err(engine("exec create"))?;
    let start = StartExecOptions {
        detach: false,
        tty: false,
        output_capacity: Some(64 * 1024),
    };
    let started = docker
        .start_exec(&created.id, Some(start))
        .await
        .map_err(engine("exec start"))?;
    if let StartExecResults::Attached { mut output, .. } = started {
        while let Some(item) = output.next().await {
            if let LogOutput::StdErr { message } = item.map_err(engine("exec output"))? {
                return Err(BenchError::Unexpected(format!(
                    "bare exec wrote to stderr: {}",
                    String::from_utf8_lossy(&message)
                )));
            }
        }
    }
    let mut pause = Duration::from_millis(5);
    let code = loop {
        let i = docker
            .inspect_exec(&created.id)
            .await
            .map_err(engine("exec inspect"))?;
        if i.running != Some(true) {
            break i.exit_code;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(200));
    };
    let took = t.elapsed();
    if code != Some(0) {
        return Err(BenchError::Unexpected(format!("bare exec exited {code:?}")));
    }
    Ok(took)
}

#[derive(Default)]
struct Samples {
    spawn: Vec<Duration>,
    bare_spawn: Vec<Duration>,
    destroy: Vec<Duration>,
    bare_remove: Vec<Duration>,
    exec: Vec<Duration>,
    bare_exec: Vec<Duration>,
    conc_wall: Duration,
    conc_each: Vec<Duration>,
    bare_conc_wall: Duration,
}

async fn measure(ctx: &mut Ctx<'_>, o: &Opts, ledger: &mut Ledger) -> Result<Samples, BenchError> {
    let mut s = Samples::default();
    // Spawn-to-running and destroy, interleaved, order alternating.
    for i in 0..o.warmup + o.n {
        let name = ctx.next_name();
        let (sp, bsp) = if i % 2 == 0 {
            let a = ctx.spawn(ledger).await?;
            (a, ctx.bare_spawn(&name, ledger).await?)
        } else {
            let b = ctx.bare_spawn(&name, ledger).await?;
            (ctx.spawn(ledger).await?, b)
        };
        let d = api::destroy(&ctx.http, ctx.base, &sp.0).await?;
        let r = ctx.bare_remove(&name).await?;
        if i >= o.warmup {
            s.spawn.push(sp.1);
            s.bare_spawn.push(bsp);
            s.destroy.push(d);
            s.bare_remove.push(r);
        }
    }
    // Exec of `true` in one live sandbox of each kind.
    let (sid, _) = ctx.spawn(ledger).await?;
    let name = ctx.next_name();
    ctx.bare_spawn(&name, ledger).await?;
    for i in 0..o.warmup + o.n {
        let (h, b) = if i % 2 == 0 {
            let h = api::exec_true(&ctx.http, ctx.base, &sid).await?;
            (h, bare_exec(ctx.docker, &name).await?)
        } else {
            let b = bare_exec(ctx.docker, &name).await?;
            (api::exec_true(&ctx.http, ctx.base, &sid).await?, b)
        };
        if i >= o.warmup {
            s.exec.push(h);
            s.bare_exec.push(b);
        }
    }
    api::destroy(&ctx.http, ctx.base, &sid).await?;
    remove(ctx.docker, &name).await?;

    // N concurrent spawns through StacyVM, then N concurrent bare create+start.
    let t = Instant::now();
    let results = join_all((0..o.concurrent).map(|_| async {
        let mut l = Ledger::default();
        let r = ctx.spawn(&mut l).await;
        (r, l)
    }))
    .await;
    s.conc_wall = t.elapsed();
    let mut first_err = None;
    let mut ids = Vec::new();
    for (r, l) in results {
        ledger.sandboxes.extend(l.sandboxes);
        match r {
            Ok((id, took)) => {
                ids.push(id);
                s.conc_each.push(took);
            }
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    for r in join_all(ids.iter().map(|id| api::destroy(&ctx.http, ctx.base, id))).await {
        r?;
    }
    if let Some(e) = first_err {
        return Err(e);
    }
    let names: Vec<String> = (0..o.concurrent).map(|_| ctx.next_name()).collect();
    let ctx_ref = &*ctx;
    let t = Instant::now();
    let results = join_all(names.iter().map(|n| async move {
        let mut l = Ledger::default();
        let r = ctx_ref.bare_spawn(n, &mut l).await;
        (r, l)
    }))
    .await;
    s.bare_conc_wall = t.elapsed();
    let mut first_err = None;
    for (r, l) in results {
        ledger.bare.extend(l.bare);
        if let Err(e) = r {
            first_err.get_or_insert(e);
        }
    }
    for r in join_all(names.iter().map(|n| remove(ctx.docker, n))).await {
        r?;
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(s),
    }
}

async fn labelled(docker: &Docker, label: &str) -> Result<Vec<(String, String)>, BenchError> {
    let filters = HashMap::from([("label", vec![label.to_string()])]);
    let opts = ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&filters)
        .build();
    let list = docker
        .list_containers(Some(opts))
        .await
        .map_err(engine("list"))?;
    Ok(list
        .into_iter()
        .filter_map(|c| {
            let sid = c.labels?.get(SANDBOX_LABEL).cloned().unwrap_or_default();
            Some((c.id?, sid))
        })
        .collect())
}

/// Removes what the run created: sandboxes through the API (while the server lives), then
/// any container left with our run label or one of our sandbox ids. Returns how many were
/// left for the engine-level sweep.
async fn cleanup(
    docker: &Docker,
    http: &Client,
    base: Option<&str>,
    run_id: &str,
    ledger: &Ledger,
) -> Result<usize, BenchError> {
    if let Some(base) = base {
        join_all(
            ledger
                .sandboxes
                .iter()
                .map(|id| api::destroy(http, base, id)),
        )
        .await;
    }
    let mut left: Vec<String> = labelled(docker, &format!("{BENCH_LABEL}={run_id}"))
        .await?
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    left.extend(
        labelled(docker, MANAGED_LABEL)
            .await?
            .into_iter()
            .filter(|(_, sid)| ledger.sandboxes.contains(sid))
            .map(|(id, _)| id),
    );
    for r in join_all(left.iter().map(|id| remove(docker, id))).await {
        r?;
    }
    Ok(left.len())
}

fn row(t: &mut Table, name: &str, s: &Summary) {
    t.row([
        name.to_string(),
        s.n.to_string(),
        ms(s.min),
        ms(s.p50),
        ms(s.p90),
        ms(s.max),
        ms(s.mean),
    ]);
}

fn verdict(ratio: f64) -> &'static str {
    if ratio <= TARGET_RATIO {
        "met"
    } else {
        "MISSED"
    }
}

fn report(s: &Samples, o: &Opts) -> Result<(), BenchError> {
    let sum = |v: &[Duration]| {
        Summary::of(v).ok_or_else(|| BenchError::Unexpected("no docker samples".into()))
    };
    let (sp, bsp, de, brm) = (
        sum(&s.spawn)?,
        sum(&s.bare_spawn)?,
        sum(&s.destroy)?,
        sum(&s.bare_remove)?,
    );
    let (ex, bex, conc) = (sum(&s.exec)?, sum(&s.bare_exec)?, sum(&s.conc_each)?);
    let mut t = Table::new(["path", "n", "min", "p50", "p90", "max", "mean"]);
    row(&mut t, "spawn-to-running, StacyVM (POST /sandboxes)", &sp);
    row(&mut t, "spawn, bare create+start", &bsp);
    row(&mut t, "destroy, StacyVM (DELETE)", &de);
    row(&mut t, "destroy, bare remove -f -v", &brm);
    row(&mut t, "exec `true`, StacyVM (POST exec)", &ex);
    row(&mut t, "exec `sh -c true`, bare exec API", &bex);
    row(
        &mut t,
        &format!("spawn each, {} concurrent, StacyVM", o.concurrent),
        &conc,
    );
    println!("   (ms)\n{}", t.render());
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64().max(1e-9);
    let r_spawn = ratio(sp.p50, bsp.p50);
    let r_exec = ratio(ex.p50, bex.p50);
    println!(
        "   spawn p50 ratio StacyVM/bare: {r_spawn:.3} (target ≤ {TARGET_RATIO:.2}) — {}",
        verdict(r_spawn)
    );
    println!(
        "   exec  p50 ratio StacyVM/bare: {r_exec:.3} (target ≤ {TARGET_RATIO:.2}) — {}",
        verdict(r_exec)
    );
    println!(
        "   {} concurrent spawns: wall {} ms through StacyVM, {} ms bare create+start \
         (ratio {:.3})",
        o.concurrent,
        ms(s.conc_wall),
        ms(s.bare_conc_wall),
        ratio(s.conc_wall, s.bare_conc_wall)
    );
    Ok(())
}

/// How many containers carry the docker provider's sandbox label (any control plane's).
pub async fn managed_count(docker: &Docker) -> Result<usize, BenchError> {
    Ok(labelled(docker, MANAGED_LABEL).await?.len())
}

/// Waits (bounded) until no container labelled as a StacyVM sandbox exists, so our server's
/// startup reconciliation does not destroy someone else's.
pub async fn wait_quiet(docker: &Docker) -> Result<(), BenchError> {
    let start = Instant::now();
    let mut noted = false;
    loop {
        let n = labelled(docker, MANAGED_LABEL).await?.len();
        if n == 0 {
            return Ok(());
        }
        if start.elapsed() >= QUIET_WAIT {
            println!("   ! {n} sandbox container(s) of another control plane remain; our server's startup reconciliation will remove them");
            return Ok(());
        }
        if !std::mem::replace(&mut noted, true) {
            println!("   waiting up to {QUIET_WAIT:?} for {n} foreign sandbox container(s) to go");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

pub async fn run(bin: &Path, o: &Opts) -> Result<(), BenchError> {
    println!("\n## 4. Docker: StacyVM (docker provider) vs the bare Engine API");
    println!(
        "   image {}, {} warm-up + {} measured of each (interleaved), {} concurrent spawns",
        o.image, o.warmup, o.n, o.concurrent
    );
    let docker = Docker::connect_with_defaults().map_err(engine("connect"))?;
    docker.ping().await.map_err(engine("ping"))?;
    docker.inspect_image(&o.image).await.map_err(|e| {
        BenchError::Unexpected(format!(
            "image {} is not local ({e}); build it with scripts/setup-docker.sh",
            o.image
        ))
    })?;
    // Leftovers of an interrupted earlier run.
    for (id, _) in labelled(&docker, BENCH_LABEL).await? {
        remove(&docker, &id).await?;
    }
    wait_quiet(&docker).await?;
    let providers = format!(
        "{{default: \"docker\", mock: {{enabled: false}}, \
         docker: {{enabled: true, default_image: \"{}\"}}}}",
        o.image
    );
    let server = Server::start_with(bin, &providers).await?;
    let run_id = format!("{}", std::process::id());
    let mut ledger = Ledger::default();
    let mut ctx = Ctx {
        docker: &docker,
        http: api::http_client()?,
        base: &server.base,
        spawn_body: serde_json::json!({"image": o.image, "ttl": "10m"}).to_string(),
        image: &o.image,
        run_id: run_id.clone(),
        seq: 0,
    };
    let measured = measure(&mut ctx, o, &mut ledger).await;
    let http = ctx.http.clone();
    let swept = cleanup(&docker, &http, Some(&server.base), &run_id, &ledger).await;
    let log_tail = server.log_tail();
    server.stop().await?;
    let s =
        measured.map_err(|e| BenchError::Unexpected(format!("{e}\nserver log:\n{log_tail}")))?;
    let swept = swept?;
    report(&s, o)?;
    println!(
        "   cleanup: {} sandboxes and {} bare containers created, {swept} needed the engine-level sweep",
        ledger.sandboxes.len(),
        ledger.bare.len()
    );
    Ok(())
}
