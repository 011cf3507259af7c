//! Benchmark 5: background processes (issue 11). Four figures, each against its reference in
//! the same run: first output line vs streamed exec, PTY keystroke echo over the attach
//! WebSocket vs a host pty, re-attach after a control-plane kill -9, and the memory of many idle
//! processes. Local sandboxes are the mock's; "remote" ones live on a `stacyvm worker` (mock)
//! registered with the control plane; the restart runs where sandboxes outlive their control
//! plane (remote, docker), since the server's mock sandboxes die with it.

mod client;
mod first_line;
mod idle;
mod pty;
mod report;
mod restart;

use std::path::{Path, PathBuf};

use bollard::Docker;
use serde_json::json;

use crate::pg::Db;
use crate::server::{Server, MOCK_PROVIDERS};
use crate::worker::{self, Worker};
use crate::BenchError;

pub struct Opts {
    /// The static agent (`processes.agent`); `None` lets the servers search for one.
    pub agent: Option<PathBuf>,
    /// Measured samples of P1 (each path).
    pub n: usize,
    /// Measured keystrokes of P2 (each side).
    pub pty_n: usize,
    /// Restarts per backend in P3.
    pub restarts: usize,
    /// Idle processes in P4.
    pub idle: usize,
    /// Also on a remote worker (P1, P2, P3).
    pub remote: bool,
    /// P1 and P3 also on docker (skipped with a note when the daemon or image is missing).
    pub docker: bool,
    pub image: String,
}

fn warmup(n: usize) -> usize {
    (n / 10).clamp(1, 50)
}

fn mock_extra(o: &Opts) -> String {
    worker::agent_config(o.agent.as_deref())
}

/// A control plane with a registered worker that every sandbox is placed on.
async fn remote_cluster(bin: &Path, o: &Opts) -> Result<(Server, Worker), BenchError> {
    let extra = format!("{}{}", worker::control_plane_config(), mock_extra(o));
    let cp = Server::start_full(bin, MOCK_PROVIDERS, &Db::Sqlite, &extra).await?;
    let w = Worker::start(bin, &cp, o.agent.as_deref()).await?;
    Ok((cp, w))
}

async fn spawn(base: &str, body: serde_json::Value) -> Result<String, BenchError> {
    let c = crate::api::http_client()?;
    Ok(client::spawn(&c, base, &body).await?.0)
}

/// A sandbox on the cluster's worker (a figure labelled remote must not be a local one).
async fn spawn_remote(base: &str) -> Result<String, BenchError> {
    let c = crate::api::http_client()?;
    let (id, on) = client::spawn(&c, base, &mock_body()).await?;
    if on != worker::ID {
        return Err(BenchError::Unexpected(format!(
            "sandbox {id} was placed on {on:?}, not on {}",
            worker::ID
        )));
    }
    Ok(id)
}

async fn destroy(base: &str, sid: &str) -> Result<(), BenchError> {
    let c = crate::api::http_client()?;
    client::destroy(&c, base, sid).await
}

fn mock_body() -> serde_json::Value {
    json!({"image": "alpine", "ttl": "1h"})
}

/// P2 on every side, interleaved (the order rotates each round).
async fn pty_all(
    local: (&Server, &str),
    remote: Option<(&Server, &str)>,
    n: usize,
) -> Result<report::PtySamples, BenchError> {
    let c = crate::api::http_client()?;
    let mut lp = pty::SandboxPty::open(&c, &local.0.base, &local.0.ws_base(), local.1).await?;
    let mut rp = match remote {
        Some((s, sid)) => Some(pty::SandboxPty::open(&c, &s.base, &s.ws_base(), sid).await?),
        None => None,
    };
    let mut host = tokio::task::block_in_place(pty::HostPty::open)?;
    let mut s = report::PtySamples::default();
    let w = warmup(n);
    for i in 0..w + n {
        let key = pty::key(i);
        let (mut l, mut r, mut h) = (None, None, None);
        for k in 0..3 {
            match (i + k) % 3 {
                0 => l = Some(lp.keystroke(key).await?),
                1 => {
                    if let Some(p) = rp.as_mut() {
                        r = Some(p.keystroke(key).await?);
                    }
                }
                _ => h = Some(tokio::task::block_in_place(|| host.keystroke(key))?),
            }
        }
        if i >= w {
            s.local.extend(l);
            s.remote.extend(r);
            s.host.extend(h);
        }
    }
    lp.close(&c).await?;
    if let Some(p) = rp {
        p.close(&c).await?;
    }
    Ok(s)
}

/// P1 and P2 (local and remote), then P3 on the remote cluster.
async fn interactive(bin: &Path, o: &Opts) -> Result<(), BenchError> {
    let local = Server::start_full(bin, MOCK_PROVIDERS, &Db::Sqlite, &mock_extra(o)).await?;
    let cluster = if o.remote {
        Some(remote_cluster(bin, o).await?)
    } else {
        None
    };
    let lsid = spawn(&local.base, mock_body()).await?;
    let rsid = match &cluster {
        Some((cp, _)) => Some(spawn_remote(&cp.base).await?),
        None => None,
    };

    println!("\n### P1. First output line: background process vs streamed exec (`echo hi`)");
    println!(
        "   one keep-alive connection, {} warm-up + {} measured of each, interleaved",
        warmup(o.n),
        o.n
    );
    let s = first_line::measure(&local.base, &lsid, o.n, warmup(o.n)).await?;
    report::first_line("local (mock)", &s);
    if let (Some((cp, _)), Some(rsid)) = (&cluster, &rsid) {
        let s = first_line::measure(&cp.base, rsid, o.n, warmup(o.n)).await?;
        report::first_line("remote (worker, mock)", &s);
    }

    println!("\n### P2. PTY keystroke echo round trip (`cat` in a raw terminal, one byte)");
    println!(
        "   attach WebSocket vs a host pty (openpty + the same command), {} warm-up + {} \
         measured of each, interleaved",
        warmup(o.pty_n),
        o.pty_n
    );
    let remote = match (&cluster, &rsid) {
        (Some((cp, _)), Some(sid)) => Some((cp, sid.as_str())),
        _ => None,
    };
    let s = pty_all((&local, &lsid), remote, o.pty_n).await?;
    report::pty(&s);
    destroy(&local.base, &lsid).await?;
    local.stop().await?;

    if let (Some((mut cp, w)), Some(rsid)) = (cluster, rsid) {
        println!("\n### P3. Re-attach after kill -9 of the control plane: remote (worker, mock)");
        let rounds = restart::measure(&mut cp, &rsid, o.restarts).await;
        let rounds = rounds
            .map_err(|e| BenchError::Unexpected(format!("{e}\nworker log:\n{}", w.log_tail())))?;
        report::restart(&rounds);
        destroy(&cp.base, &rsid).await?;
        w.stop().await?;
        cp.stop().await?;
    }
    Ok(())
}

/// Whether docker answers and has the image; the reason when not.
async fn docker_ready(image: &str) -> Result<(), String> {
    let d = Docker::connect_with_defaults().map_err(|e| e.to_string())?;
    d.ping().await.map_err(|e| format!("no daemon: {e}"))?;
    d.inspect_image(image)
        .await
        .map_err(|e| format!("image {image} is not local ({e})"))?;
    Ok(())
}

/// P1 and P3 on docker (one container).
async fn docker(bin: &Path, o: &Opts) -> Result<(), BenchError> {
    println!("\n### P1 and P3 on docker ({})", o.image);
    if let Err(why) = docker_ready(&o.image).await {
        println!("   skipped: {why} (scripts/test.sh setup starts dockerd and builds it)");
        return Ok(());
    }
    let providers = format!(
        "{{default: \"docker\", mock: {{enabled: false}}, \
         docker: {{enabled: true, default_image: \"{}\"}}}}",
        o.image
    );
    let mut server = Server::start_full(bin, &providers, &Db::Sqlite, &mock_extra(o)).await?;
    let sid = spawn(&server.base, json!({"image": o.image, "ttl": "10m"})).await?;
    let first = first_line::measure(&server.base, &sid, o.n, warmup(o.n)).await;
    let rounds = match first {
        Ok(s) => {
            report::first_line("P1 docker, one container", &s);
            println!("   P3 docker: re-attach after kill -9 of the control plane");
            restart::measure(&mut server, &sid, o.restarts).await
        }
        Err(e) => Err(e),
    };
    // The container outlives the server: remove it whatever happened.
    let destroyed = destroy(&server.base, &sid).await;
    let log = server.log_tail();
    server.stop().await?;
    let rounds = rounds.map_err(|e| BenchError::Unexpected(format!("{e}\nserver log:\n{log}")))?;
    destroyed?;
    report::restart(&rounds);
    Ok(())
}

async fn idle(bin: &Path, o: &Opts) -> Result<(), BenchError> {
    println!(
        "\n### P4. {} idle background processes (`sleep 3600`) in one mock sandbox",
        o.idle
    );
    let server = Server::start_full(bin, MOCK_PROVIDERS, &Db::Sqlite, &mock_extra(o)).await?;
    let sid = spawn(&server.base, mock_body()).await?;
    let f = idle::measure(&server, &sid, o.idle).await;
    let destroyed = destroy(&server.base, &sid).await;
    server.stop().await?;
    let f = f?;
    destroyed?;
    report::idle(&f);
    Ok(())
}

pub async fn run(bin: &Path, o: &Opts) -> Result<(), BenchError> {
    println!("\n## 5. Background processes (issue 11)");
    match &o.agent {
        Some(a) => println!("   agent        {} (processes.agent)", a.display()),
        None => println!("   agent        not given (--agent / STACYVM_AGENT): the servers search"),
    }
    interactive(bin, o).await?;
    if o.docker {
        docker(bin, o).await?;
    }
    idle(bin, o).await
}
