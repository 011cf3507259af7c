//! Benchmark 2: sync exec of `true` through HTTP versus forking `sh -c true` here. The
//! interleaved measurement and its report are shared with the bwrap exec benchmark
//! (`bwrap/exec.rs`), which runs the same loop against a bwrap sandbox.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::Command;

use crate::api;
use crate::server::Server;
use crate::stats::{ms, ms_diff, Summary, Table};
use crate::BenchError;

/// Allowed p50 cost of the control plane on top of the fork itself.
pub const TARGET_OVERHEAD: Duration = Duration::from_millis(1);

pub struct Opts {
    pub n: usize,
    pub warmup: usize,
}

/// What the provider does for a shell-mode command, minus the control plane: fork `argv`
/// (`sh -c true` for the mock), collect both pipes, wait.
async fn direct(argv: &[&str]) -> Result<Duration, BenchError> {
    let (prog, args) = argv
        .split_first()
        .ok_or_else(|| BenchError::Unexpected("empty direct command".into()))?;
    let t = Instant::now();
    let out = Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .await
        .map_err(|source| BenchError::Io {
            context: format!("forking {}", argv.join(" ")),
            source,
        })?;
    let took = t.elapsed();
    if !out.status.success() {
        return Err(BenchError::Unexpected(format!(
            "{} exited with {}",
            argv.join(" "),
            out.status
        )));
    }
    Ok(took)
}

/// The three interleaved series of [`interleaved`].
pub struct Samples {
    pub http: Vec<Duration>,
    pub direct: Vec<Duration>,
    pub health: Vec<Duration>,
}

/// `o.warmup + o.n` rounds on one keep-alive connection, each a sync `POST …/exec
/// {"command":"true"}` on sandbox `id` and a direct fork of `argv` (order alternating), then a
/// `GET /health` to split the overhead. Warm-up rounds are not kept.
pub async fn interleaved(
    base: &str,
    id: &str,
    argv: &[&str],
    o: &Opts,
) -> Result<Samples, BenchError> {
    let client = api::http_client()?;
    let mut s = Samples {
        http: Vec::with_capacity(o.n),
        direct: Vec::with_capacity(o.n),
        health: Vec::with_capacity(o.n),
    };
    for i in 0..o.warmup + o.n {
        // Alternate which goes first so neither always runs on a cache warmed by the other.
        let (h, d) = if i % 2 == 0 {
            let h = api::exec_true(&client, base, id).await?;
            (h, direct(argv).await?)
        } else {
            let d = direct(argv).await?;
            (api::exec_true(&client, base, id).await?, d)
        };
        // The bare HTTP round trip on the same connection, to split the overhead.
        let g = api::health(&client, base).await?;
        if i >= o.warmup {
            s.http.push(h);
            s.direct.push(d);
            s.health.push(g);
        }
    }
    Ok(s)
}

/// Prints the table of [`interleaved`]'s samples, the overhead split and the verdict against
/// [`TARGET_OVERHEAD`]; `http_label`/`direct_label` name the two paths.
pub fn report(m: &Samples, http_label: &str, direct_label: &str) -> Result<(), BenchError> {
    let (Some(h), Some(d), Some(g)) = (
        Summary::of(&m.http),
        Summary::of(&m.direct),
        Summary::of(&m.health),
    ) else {
        return Err(BenchError::Unexpected("no exec samples".into()));
    };
    let mut t = Table::new(["path", "n", "min", "p50", "p90", "p99", "max", "mean"]);
    for (name, s) in [
        (http_label, &h),
        (direct_label, &d),
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
        "   p50 overhead split: HTTP round trip {} ms, service + provider beyond the fork {} ms",
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

pub async fn run(bin: &Path, o: &Opts) -> Result<(), BenchError> {
    println!("\n## 2. Exec of `true`: HTTP sync exec vs direct fork (interleaved)");
    println!(
        "   one mock sandbox, one keep-alive connection, {} warm-up + {} measured of each",
        o.warmup, o.n
    );
    let server = Server::start(bin).await?;
    let measured = async {
        let client = api::http_client()?;
        let (id, _) = api::spawn(&client, &server.base, api::SPAWN_BODY).await?;
        let m = interleaved(&server.base, &id, &["sh", "-c", "true"], o).await;
        let destroyed = api::destroy(&client, &server.base, &id).await;
        let m = m?;
        destroyed?;
        Ok::<_, BenchError>(m)
    }
    .await;
    server.stop().await?;
    report(
        &measured?,
        "HTTP exec (mock, sh -c true)",
        "direct sh -c true",
    )
}
