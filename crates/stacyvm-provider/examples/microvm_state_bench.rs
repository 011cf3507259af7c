//! Benchmark of the microvm provider's pause to disk and memory snapshots (docs/state.md),
//! printing figures only: pause and resume of a guest running a process; spawn from a memory
//! snapshot to the first answered exec against a spawn restored from the image's template (the
//! normal spawn); a fork of 10 clones from one snapshot with each clone's private memory.
//!
//! ```sh
//! bash scripts/setup-microvm.sh
//! cargo run --release -p stacyvm-provider --features microvm --example microvm_state_bench
//! ```
//!
//! `STACYVM_MICROVM_DIR`, `STACYVM_MICROVM_TEST_IMAGE`, `ROUNDS` (default 5) and `FORK`
//! (default 10) adjust it. Every wait is bounded; every VM and snapshot made is removed.

#[cfg(not(feature = "microvm"))]
fn main() {
    eprintln!("build with --features microvm");
}

#[cfg(feature = "microvm")]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(bench::run())
}

#[cfg(feature = "microvm")]
mod bench {
    use std::error::Error;
    use std::time::{Duration, Instant};

    use stacyvm_provider::conformance::{exec_collect, proc_sh, spec};
    use stacyvm_provider::{
        ExecRequest, MicrovmConfig, MicrovmProvider, Provider, MICROVM_DEFAULT_DATA_DIR,
    };
    use stacyvm_types::ExecMode;
    use tokio::time::timeout;

    type R<T> = Result<T, Box<dyn Error>>;

    const BOUND: Duration = Duration::from_secs(180);
    /// The guest's process: a counter in a shell variable.
    const COUNTER: &str = "i=0; while true; do i=$((i+1)); echo $i > /tmp/c.tmp; mv /tmp/c.tmp /tmp/c; sleep 0.2; done";

    fn env(name: &str, default: &str) -> String {
        std::env::var(name).unwrap_or_else(|_| default.to_string())
    }

    fn image() -> String {
        env("STACYVM_MICROVM_TEST_IMAGE", "stacyvm-test/busybox:latest")
    }

    async fn exec_true(p: &MicrovmProvider, id: &str) -> R<()> {
        let req = ExecRequest {
            command: "true".into(),
            mode: ExecMode::Argv,
            ..Default::default()
        };
        let c = timeout(Duration::from_secs(60), exec_collect(p, id, req)).await?;
        match c.result {
            Ok(0) => Ok(()),
            other => Err(format!("exec true: {other:?}").into()),
        }
    }

    async fn destroy(p: &MicrovmProvider, id: &str) -> R<()> {
        timeout(Duration::from_secs(30), p.destroy(id)).await??;
        Ok(())
    }

    /// `Private_Clean + Private_Dirty` and `Pss` of a process, in kB.
    fn memory(pid: i32) -> R<(u64, u64)> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))?;
        let field = |name: &str| -> u64 {
            text.lines()
                .filter(|l| l.starts_with(name))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum()
        };
        Ok((field("Private_"), field("Pss:")))
    }

    fn ms(d: Duration) -> f64 {
        d.as_secs_f64() * 1000.0
    }

    /// `p50 X ms (min–max, n)`.
    fn stats(mut v: Vec<Duration>) -> String {
        if v.is_empty() {
            return "-".into();
        }
        v.sort();
        format!(
            "p50 {:.1} ms ({:.1}–{:.1}, n={})",
            ms(v[v.len() / 2]),
            ms(v[0]),
            ms(v[v.len() - 1]),
            v.len()
        )
    }

    fn mb_stats(mut kb: Vec<u64>) -> String {
        if kb.is_empty() {
            return "-".into();
        }
        kb.sort();
        let mb = |k: u64| k as f64 / 1024.0;
        format!(
            "p50 {:.1} MB ({:.1}–{:.1}, n={})",
            mb(kb[kb.len() / 2]),
            mb(kb[0]),
            mb(kb[kb.len() - 1]),
            kb.len()
        )
    }

    fn snapshot_id() -> String {
        format!("snap-{}", &stacyvm_types::new_sandbox_id()[3..])
    }

    pub async fn run() -> R<()> {
        let rounds: usize = env("ROUNDS", "5").parse()?;
        let fork: usize = env("FORK", "10").parse()?;
        let config = MicrovmConfig {
            data_dir: env("STACYVM_MICROVM_DIR", MICROVM_DEFAULT_DATA_DIR),
            boot_timeout: Duration::from_secs(150),
            ..Default::default()
        };
        let memory_mb = format!("{} MiB", config.default_memory_mb);
        let p = MicrovmProvider::new(config)?;
        let mut rows: Vec<(String, String)> = Vec::new();

        // Normal spawns (restored from the image's template) to the first exec; the first
        // one builds the template if needed and is left out.
        let mut normal = Vec::new();
        for round in 0..=rounds {
            let t = Instant::now();
            let id = timeout(BOUND, p.spawn(&spec(&image()))).await??.runtime_id;
            exec_true(&p, &id).await?;
            if round > 0 {
                normal.push(t.elapsed());
            }
            destroy(&p, &id).await?;
        }

        // Pause and resume of one guest running a process.
        let src = timeout(BOUND, p.spawn(&spec(&image()))).await??.runtime_id;
        p.process_start(&src, proc_sh(COUNTER)).await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let state = std::path::PathBuf::from(env("STACYVM_MICROVM_DIR", MICROVM_DEFAULT_DATA_DIR))
            .join("vms")
            .join(&src)
            .join("paused.state");
        let (mut pauses, mut resumes, mut state_bytes) = (Vec::new(), Vec::new(), 0);
        for _ in 0..rounds {
            let t = Instant::now();
            timeout(BOUND, p.pause(&src)).await??;
            pauses.push(t.elapsed());
            state_bytes = std::fs::metadata(&state).map(|m| m.len()).unwrap_or(0);
            let t = Instant::now();
            timeout(BOUND, p.resume(&src)).await??;
            resumes.push(t.elapsed());
            exec_true(&p, &src).await?;
        }
        rows.push((format!("pause to disk ({memory_mb} guest)"), stats(pauses)));
        rows.push(("resume from disk".into(), stats(resumes)));
        rows.push((
            "saved state".into(),
            format!("{:.1} MB", state_bytes as f64 / 1e6),
        ));

        // Memory snapshots: taking one, then spawns from it to the first exec.
        let mut takes = Vec::new();
        let sid = snapshot_id();
        for round in 0..rounds.max(1) {
            let s = if round == 0 {
                sid.clone()
            } else {
                snapshot_id()
            };
            let t = Instant::now();
            timeout(BOUND, p.snapshot(&src, &s)).await??;
            takes.push(t.elapsed());
            if round > 0 {
                p.delete_snapshot(&s).await?;
            }
        }
        rows.push(("memory snapshot of a running guest".into(), stats(takes)));
        let (mut from_snap, mut first) = (Vec::new(), None);
        for round in 0..=rounds {
            let t = Instant::now();
            let id = timeout(BOUND, p.spawn_from_snapshot(&spec(&image()), &[], &sid))
                .await??
                .runtime_id;
            exec_true(&p, &id).await?;
            if round == 0 {
                first = Some(t.elapsed());
            } else {
                from_snap.push(t.elapsed());
            }
            destroy(&p, &id).await?;
        }
        rows.push((
            "spawn from a memory snapshot → first exec".into(),
            stats(from_snap),
        ));
        rows.push((
            "  the first one (seals the snapshot's RAM)".into(),
            first
                .map(|d| format!("{:.1} ms", ms(d)))
                .unwrap_or_default(),
        ));
        rows.push((
            "normal spawn (template restore) → first exec".into(),
            stats(normal),
        ));

        // Fork of N from the snapshot: all running at once, then their private memory.
        let t = Instant::now();
        let mut clones = Vec::new();
        for _ in 0..fork {
            let id = timeout(BOUND, p.spawn_from_snapshot(&spec(&image()), &[], &sid))
                .await??
                .runtime_id;
            clones.push(id);
        }
        let fork_took = t.elapsed();
        for id in &clones {
            exec_true(&p, id).await?;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (mut private, mut pss) = (Vec::new(), Vec::new());
        for id in &clones {
            let pid = p.qemu_pid(id).ok_or("no qemu pid")?;
            let (pr, ps) = memory(pid)?;
            private.push(pr);
            pss.push(ps);
        }
        let src_mem = memory(p.qemu_pid(&src).ok_or("no qemu pid")?)?;
        rows.push((
            format!("fork of {fork} (spawns one after another)"),
            format!("{:.1} ms", ms(fork_took)),
        ));
        rows.push((
            format!("  each clone's private memory (of {fork} running)"),
            mb_stats(private),
        ));
        rows.push(("  each clone's PSS".into(), mb_stats(pss)));
        rows.push((
            "  the source (resumed from disk: anonymous RAM), private".into(),
            format!("{:.1} MB", src_mem.0 as f64 / 1024.0),
        ));
        for id in &clones {
            destroy(&p, id).await?;
        }
        p.delete_snapshot(&sid).await?;
        destroy(&p, &src).await?;

        let width = rows
            .iter()
            .map(|(k, _)| k.chars().count())
            .max()
            .unwrap_or(0);
        println!("microvm state benchmark, rounds={rounds}");
        for (k, v) in rows {
            println!("{k:<width$}  {v}");
        }
        Ok(())
    }
}
