//! Benchmark of the microvm provider, in one run: cold boot to ready; restore from the image's
//! snapshot to the first answered exec (no pool); spawn-to-ready from the warm pool; exec round
//! trip of `true`; private memory of idle clones (and of a cold-booted VM for comparison).
//!
//! ```sh
//! bash scripts/setup-microvm.sh
//! cargo run --release -p stacyvm-provider --features microvm --example microvm_bench
//! ```
//!
//! `STACYVM_MICROVM_DIR` (assets, default /var/lib/stacyvm/microvm), `STACYVM_MICROVM_TEST_IMAGE`
//! (default `stacyvm-test/busybox:latest`) and `ROUNDS` (default 5) adjust it. At most two VMs
//! run at once (plus one paused in the pool); every wait is bounded.

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

    use stacyvm_provider::conformance::{exec_collect, spec};
    use stacyvm_provider::{
        ExecRequest, MicrovmConfig, MicrovmProvider, Provider, MICROVM_DEFAULT_DATA_DIR,
    };
    use stacyvm_types::ExecMode;
    use tokio::time::timeout;

    type R<T> = Result<T, Box<dyn Error>>;

    const BOUND: Duration = Duration::from_secs(180);

    fn env(name: &str, default: &str) -> String {
        std::env::var(name).unwrap_or_else(|_| default.to_string())
    }

    fn config() -> MicrovmConfig {
        MicrovmConfig {
            data_dir: env("STACYVM_MICROVM_DIR", MICROVM_DEFAULT_DATA_DIR),
            boot_timeout: Duration::from_secs(150),
            ..Default::default()
        }
    }

    fn image() -> String {
        env("STACYVM_MICROVM_TEST_IMAGE", "stacyvm-test/busybox:latest")
    }

    async fn spawn(p: &MicrovmProvider) -> R<(String, Duration)> {
        let t = Instant::now();
        let s = timeout(BOUND, p.spawn(&spec(&image()))).await??;
        Ok((s.runtime_id, t.elapsed()))
    }

    async fn exec_true(p: &MicrovmProvider, id: &str) -> R<Duration> {
        let req = ExecRequest {
            command: "true".into(),
            mode: ExecMode::Argv,
            ..Default::default()
        };
        let t = Instant::now();
        let c = timeout(Duration::from_secs(60), exec_collect(p, id, req)).await?;
        match c.result {
            Ok(0) => Ok(t.elapsed()),
            other => Err(format!("exec true: {other:?}").into()),
        }
    }

    async fn destroy(p: &MicrovmProvider, id: &str) -> R<()> {
        timeout(Duration::from_secs(30), p.destroy(id)).await??;
        Ok(())
    }

    /// `Private_Clean + Private_Dirty`, `Rss` and `Pss` of a process, in kB.
    fn memory(pid: i32) -> R<(u64, u64, u64)> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))?;
        let field = |name: &str| -> u64 {
            text.lines()
                .filter(|l| l.starts_with(name))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum()
        };
        Ok((field("Private_"), field("Rss:"), field("Pss:")))
    }

    struct Stats(Vec<Duration>);

    impl std::fmt::Display for Stats {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            let mut v = self.0.clone();
            v.sort();
            if v.is_empty() {
                return write!(f, "-");
            }
            let ms = |d: Duration| d.as_secs_f64() * 1000.0;
            write!(
                f,
                "p50 {:.1} ms, min {:.1}, max {:.1} (n={})",
                ms(v[v.len() / 2]),
                ms(v[0]),
                ms(v[v.len() - 1]),
                v.len()
            )
        }
    }

    async fn wait_warm(p: &MicrovmProvider) -> R<()> {
        let t = Instant::now();
        while p.warm_count() == 0 {
            if t.elapsed() > BOUND {
                return Err("the warm pool did not fill".into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    pub async fn run() -> R<()> {
        let rounds: usize = env("ROUNDS", "5").parse()?;
        let mut rows: Vec<(String, String)> = Vec::new();

        // Cold boots.
        let cold = MicrovmProvider::new(MicrovmConfig {
            snapshots: false,
            ..config()
        })?;
        let (mut boots, mut cold_mem) = (Vec::new(), None);
        for _ in 0..rounds.min(3) {
            let (id, took) = spawn(&cold).await?;
            boots.push(took);
            if cold_mem.is_none() {
                tokio::time::sleep(Duration::from_secs(2)).await;
                cold_mem = cold.qemu_pid(&id).map(memory).transpose()?;
            }
            destroy(&cold, &id).await?;
        }
        rows.push((
            "cold boot, spawn → agent ready".into(),
            Stats(boots).to_string(),
        ));
        drop(cold);

        // Restores without the pool (the first spawn builds the template if needed).
        let restore = MicrovmProvider::new(config())?;
        let (first, first_took) = spawn(&restore).await?;
        eprintln!(
            "first spawn ({}): {first_took:?}",
            restore.boot_kind(&first).unwrap_or("?")
        );
        destroy(&restore, &first).await?;
        let (mut to_exec, mut spawns, mut rtts) = (Vec::new(), Vec::new(), Vec::new());
        let mut clone_mem = Vec::new();
        for round in 0..rounds {
            let t = Instant::now();
            let (id, took) = spawn(&restore).await?;
            exec_true(&restore, &id).await?;
            to_exec.push(t.elapsed());
            spawns.push(took);
            if restore.boot_kind(&id) != Some("restored") {
                return Err(format!("spawn was {:?}", restore.boot_kind(&id)).into());
            }
            if round == 0 {
                for _ in 0..50 {
                    rtts.push(exec_true(&restore, &id).await?);
                }
                // Two idle clones side by side: pages of the template's RAM file shared by
                // both count as shared, not private.
                let (other, _) = spawn(&restore).await?;
                tokio::time::sleep(Duration::from_secs(3)).await;
                for vm in [&id, &other] {
                    if let Some(pid) = restore.qemu_pid(vm) {
                        clone_mem.push(memory(pid)?);
                    }
                }
                destroy(&restore, &other).await?;
            }
            destroy(&restore, &id).await?;
        }
        rows.push((
            "restore (no pool), spawn → ready".into(),
            Stats(spawns).to_string(),
        ));
        rows.push((
            "restore (no pool), spawn → first `true` answered".into(),
            Stats(to_exec).to_string(),
        ));
        rows.push((
            "exec round trip of `true` (argv, one clone)".into(),
            Stats(rtts).to_string(),
        ));
        drop(restore);

        // The warm pool.
        let pooled = MicrovmProvider::new(MicrovmConfig {
            warm_pool: 1,
            ..config()
        })?;
        let (first, _) = spawn(&pooled).await?;
        destroy(&pooled, &first).await?;
        let (mut ready, mut resume, mut first_exec) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..rounds * 2 {
            wait_warm(&pooled).await?;
            let (id, took) = spawn(&pooled).await?;
            if pooled.boot_kind(&id) != Some("pooled") {
                return Err(format!("spawn was {:?}", pooled.boot_kind(&id)).into());
            }
            ready.push(took);
            resume.extend(pooled.boot_time(&id));
            first_exec.push(exec_true(&pooled, &id).await?);
            destroy(&pooled, &id).await?;
        }
        pooled.shutdown().await;
        rows.push((
            "warm pool, spawn → ready (caller's view)".into(),
            Stats(ready).to_string(),
        ));
        rows.push((
            "warm pool, of which resume + identity".into(),
            Stats(resume).to_string(),
        ));
        rows.push((
            "warm pool, first `true` after the spawn".into(),
            Stats(first_exec).to_string(),
        ));

        let mb = |kb: u64| kb as f64 / 1024.0;
        for (i, (private, rss, pss)) in clone_mem.iter().enumerate() {
            rows.push((
                format!("idle clone {} memory (256 MiB guest)", i + 1),
                format!(
                    "private {:.1} MB, RSS {:.1} MB, PSS {:.1} MB",
                    mb(*private),
                    mb(*rss),
                    mb(*pss)
                ),
            ));
        }
        if let Some((private, rss, pss)) = cold_mem {
            rows.push((
                "idle cold-booted VM memory (256 MiB guest)".into(),
                format!(
                    "private {:.1} MB, RSS {:.1} MB, PSS {:.1} MB",
                    mb(private),
                    mb(rss),
                    mb(pss)
                ),
            ));
        }
        println!("| what | figure |\n|---|---|");
        for (what, figure) in rows {
            println!("| {what} | {figure} |");
        }
        Ok(())
    }
}
