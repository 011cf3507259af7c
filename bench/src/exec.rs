//! Benchmark 2: sync exec of `true` through HTTP versus forking `sh -c true` here.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::Command;

use crate::api;
use crate::server::Server;
use crate::stats::{ms, ms_diff, Summary, Table};
use crate::BenchError;

/// Allowed p50 cost of the control plane on top of the fork itself.
const TARGET_OVERHEAD: Duration = Duration::from_millis(1);

pub struct Opts {
    pub n: usize,
    pub warmup: usize,
}

/// What the mock does for a shell-mode command, minus the control plane: fork `sh -c`,
/// collect both pipes, wait.
async fn direct_true() -> Result<Duration, BenchError> {
    let t = Instant::now();
    let out = Command::new("sh")
        .args(["-c", "true"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .await
        .map_err(|source| BenchError::Io {
            context: "forking sh -c true".into(),
            source,
        })?;
    let took = t.elapsed();
    if !out.status.success() {
        return Err(BenchError::Unexpected(format!(
            "sh -c true exited with {}",
            out.status
        )));
    }
    Ok(took)
}

struct Samples {
    http: Vec<Duration>,
    direct: Vec<Duration>,
    health: Vec<Duration>,
}

async fn measure(server: &Server, o: &Opts) -> Result<Samples, BenchError> {
    let client = api::http_client()?;
    let base = &server.base;
    let (id, _) = api::spawn(&client, base, api::SPAWN_BODY).await?;
    let mut http = Vec::with_capacity(o.n);
    let mut direct = Vec::with_capacity(o.n);
    let mut health = Vec::with_capacity(o.n);
    let mut result = Ok(());
    for i in 0..o.warmup + o.n {
        // Alternate which goes first so neither always runs on a cache warmed by the other.
        let pair = if i % 2 == 0 {
            match api::exec_true(&client, base, &id).await {
                Ok(h) => direct_true().await.map(|d| (h, d)),
                Err(e) => Err(e),
            }
        } else {
            match direct_true().await {
                Ok(d) => api::exec_true(&client, base, &id).await.map(|h| (h, d)),
                Err(e) => Err(e),
            }
        };
        // The bare HTTP round trip on the same connection, to split the overhead.
        let pair = match pair {
            Ok((h, d)) => api::health(&client, base).await.map(|g| (h, d, g)),
            Err(e) => Err(e),
        };
        match pair {
            Ok((h, d, g)) if i >= o.warmup => {
                http.push(h);
                direct.push(d);
                health.push(g);
            }
            Ok(_) => {}
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    let destroyed = api::destroy(&client, base, &id).await;
    result?;
    destroyed?;
    Ok(Samples {
        http,
        direct,
        health,
    })
}

pub async fn run(bin: &Path, o: &Opts) -> Result<(), BenchError> {
    println!("\n## 2. Exec of `true`: HTTP sync exec vs direct fork (interleaved)");
    println!(
        "   one mock sandbox, one keep-alive connection, {} warm-up + {} measured of each",
        o.warmup, o.n
    );
    let server = Server::start(bin).await?;
    let measured = measure(&server, o).await;
    server.stop().await?;
    let m = measured?;
    let (Some(h), Some(d), Some(g)) = (
        Summary::of(&m.http),
        Summary::of(&m.direct),
        Summary::of(&m.health),
    ) else {
        return Err(BenchError::Unexpected("no exec samples".into()));
    };
    let mut t = Table::new(["path", "n", "min", "p50", "p90", "p99", "max", "mean"]);
    for (name, s) in [
        ("HTTP exec (mock, sh -c true)", &h),
        ("direct sh -c true", &d),
        ("GET /health (HTTP round trip)", &g),
    ] {
        t.row([
            name.to_string(),
            s.n.to_string(),
            ms(s.min),
            ms(s.p50),
            ms(s.p90),
            ms(s.p99),
            ms(s.max),
            ms(s.mean),
        ]);
    }
    t.row([
        "overhead (HTTP − direct)".to_string(),
        String::new(),
        ms_diff(h.min, d.min),
        ms_diff(h.p50, d.p50),
        ms_diff(h.p90, d.p90),
        ms_diff(h.p99, d.p99),
        String::new(),
        ms_diff(h.mean, d.mean),
    ]);
    println!("   (ms)\n{}", t.render());
    println!(
        "   p50 overhead split: HTTP round trip {} ms, service + mock beyond the fork {} ms",
        ms(g.p50),
        ms_diff(h.p50.saturating_sub(g.p50), d.p50)
    );
    let over = h.p50.saturating_sub(d.p50);
    let verdict = if over <= TARGET_OVERHEAD {
        "met"
    } else {
        "MISSED"
    };
    println!(
        "   target p50 overhead ≤ {} ms: {} ms — {verdict}",
        ms(TARGET_OVERHEAD),
        ms_diff(h.p50, d.p50)
    );
    Ok(())
}
