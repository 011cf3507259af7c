//! The shared provider suite (`stacyvm_provider::conformance`) on the microvm provider, plus
//! its security checks. Guests run under TCG here, so VM starts are kept few: most checks share
//! one VM through [`SharedVm`], which hands that VM to every spawn and wipes `/workspace` in
//! between; `lifecycle` and the agent-kill test start their own. Spawns restore clones of the
//! image's template snapshot (built once, kept in the data dir across test binaries).
//!
//! Needs `scripts/setup-microvm.sh` (assets in `$STACYVM_MICROVM_DIR`, default
//! /var/lib/stacyvm/microvm). Without them the tests fail; the default nextest profile leaves
//! this binary out (profiles `vm` and `ci` select it).
#![cfg(feature = "microvm")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod microvm_support;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use stacyvm_provider::conformance::{self, exec_collect, sh, spec, CheckFailure};
use stacyvm_provider::{
    ByteStream, ChunkSender, ExecRequest, FileStream, MicrovmProvider, ProcessSpec, Provider,
    ProviderError, RecordStream, RuntimeInfo, SandboxSpec, Spawned, WatchStream,
};
use stacyvm_types::{FileInfo, Pid, ProcessInfo, PtySize, SandboxState, Signal};
use tokio::time::timeout;

use microvm_support::{config, image, BOOT_BOUND};

/// Size of the streamed large-file check here (the suite's default is 128 MiB).
const LARGE_ON_TCG: u64 = 24 << 20;

/// One VM test at a time in this process: they are CPU-bound under TCG.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn provider() -> Arc<MicrovmProvider> {
    Arc::new(MicrovmProvider::new(config()).expect("valid config"))
}

/// Hands one booted VM to every spawn of the suite; destroy only forgets it.
struct SharedVm {
    inner: Arc<MicrovmProvider>,
    id: String,
}

#[async_trait::async_trait]
impl Provider for SharedVm {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn capabilities(&self) -> Vec<&'static str> {
        self.inner.capabilities()
    }
    fn config_summary(&self) -> serde_json::Value {
        self.inner.config_summary()
    }
    async fn health(&self) -> Result<(), ProviderError> {
        self.inner.health().await
    }
    async fn spawn(&self, _spec: &SandboxSpec) -> Result<Spawned, ProviderError> {
        let c = exec_collect(
            &*self.inner,
            &self.id,
            sh("rm -rf /workspace && mkdir -p /workspace"),
        )
        .await;
        match &c.result {
            Ok(0) => Ok(Spawned {
                runtime_id: self.id.clone(),
            }),
            other => Err(ProviderError::internal(format!(
                "wiping /workspace: {other:?} {}",
                c.stderr_str()
            ))),
        }
    }
    /// Forgets the shared VM; others (spawned from a snapshot) are destroyed.
    async fn destroy(&self, id: &str) -> Result<(), ProviderError> {
        if id == self.id {
            return Ok(());
        }
        self.inner.destroy(id).await
    }
    async fn pause(&self, id: &str) -> Result<(), ProviderError> {
        self.inner.pause(id).await
    }
    async fn resume(&self, id: &str) -> Result<(), ProviderError> {
        self.inner.resume(id).await
    }
    async fn snapshot(
        &self,
        id: &str,
        snapshot_id: &str,
    ) -> Result<stacyvm_provider::SnapshotMade, ProviderError> {
        self.inner.snapshot(id, snapshot_id).await
    }
    async fn delete_snapshot(&self, snapshot_id: &str) -> Result<(), ProviderError> {
        self.inner.delete_snapshot(snapshot_id).await
    }
    async fn spawn_from_snapshot(
        &self,
        spec: &SandboxSpec,
        mounts: &[stacyvm_provider::VolumeMountSpec],
        snapshot_id: &str,
    ) -> Result<Spawned, ProviderError> {
        self.inner
            .spawn_from_snapshot(spec, mounts, snapshot_id)
            .await
    }
    async fn status(&self, id: &str) -> Result<SandboxState, ProviderError> {
        self.inner.status(id).await
    }
    async fn exec(
        &self,
        id: &str,
        req: ExecRequest,
        out: ChunkSender,
    ) -> Result<i32, ProviderError> {
        self.inner.exec(id, req, out).await
    }
    async fn write_file(
        &self,
        id: &str,
        path: &str,
        content: Bytes,
        mode: Option<&str>,
    ) -> Result<(), ProviderError> {
        self.inner.write_file(id, path, content, mode).await
    }
    async fn read_file(&self, id: &str, path: &str) -> Result<Bytes, ProviderError> {
        self.inner.read_file(id, path).await
    }
    fn streams_files(&self) -> bool {
        self.inner.streams_files()
    }
    async fn read_file_stream(&self, id: &str, path: &str) -> Result<FileStream, ProviderError> {
        self.inner.read_file_stream(id, path).await
    }
    async fn write_file_stream(
        &self,
        id: &str,
        path: &str,
        body: ByteStream,
        mode: Option<&str>,
    ) -> Result<u64, ProviderError> {
        self.inner.write_file_stream(id, path, body, mode).await
    }
    async fn list_files(&self, id: &str, path: &str) -> Result<Vec<FileInfo>, ProviderError> {
        self.inner.list_files(id, path).await
    }
    async fn stat_file(&self, id: &str, path: &str) -> Result<FileInfo, ProviderError> {
        self.inner.stat_file(id, path).await
    }
    async fn glob(&self, id: &str, pattern: &str) -> Result<Vec<String>, ProviderError> {
        self.inner.glob(id, pattern).await
    }
    async fn delete_file(
        &self,
        id: &str,
        path: &str,
        recursive: bool,
    ) -> Result<(), ProviderError> {
        self.inner.delete_file(id, path, recursive).await
    }
    async fn move_file(&self, id: &str, old: &str, new: &str) -> Result<(), ProviderError> {
        self.inner.move_file(id, old, new).await
    }
    async fn chmod(&self, id: &str, path: &str, mode: &str) -> Result<(), ProviderError> {
        self.inner.chmod(id, path, mode).await
    }
    async fn watch_dir(
        &self,
        id: &str,
        path: &str,
        recursive: bool,
    ) -> Result<WatchStream, ProviderError> {
        self.inner.watch_dir(id, path, recursive).await
    }
    async fn logs(&self, id: &str, lines: usize) -> Result<Vec<String>, ProviderError> {
        self.inner.logs(id, lines).await
    }
    async fn list_runtimes(&self) -> Result<Option<Vec<RuntimeInfo>>, ProviderError> {
        self.inner.list_runtimes().await
    }
    async fn process_start(
        &self,
        id: &str,
        spec: ProcessSpec,
    ) -> Result<ProcessInfo, ProviderError> {
        self.inner.process_start(id, spec).await
    }
    async fn process_list(&self, id: &str) -> Result<Vec<ProcessInfo>, ProviderError> {
        self.inner.process_list(id).await
    }
    async fn process_get(&self, id: &str, pid: Pid) -> Result<ProcessInfo, ProviderError> {
        self.inner.process_get(id, pid).await
    }
    async fn process_output(
        &self,
        id: &str,
        pid: Pid,
        since: u64,
        follow: bool,
    ) -> Result<RecordStream, ProviderError> {
        self.inner.process_output(id, pid, since, follow).await
    }
    async fn process_stdin(
        &self,
        id: &str,
        pid: Pid,
        data: Bytes,
        close: bool,
    ) -> Result<u64, ProviderError> {
        self.inner.process_stdin(id, pid, data, close).await
    }
    async fn process_signal(
        &self,
        id: &str,
        pid: Pid,
        signal: Signal,
    ) -> Result<ProcessInfo, ProviderError> {
        self.inner.process_signal(id, pid, signal).await
    }
    async fn process_resize(&self, id: &str, pid: Pid, size: PtySize) -> Result<(), ProviderError> {
        self.inner.process_resize(id, pid, size).await
    }
}

async fn boot(p: &MicrovmProvider) -> String {
    let t = Instant::now();
    let s = timeout(BOOT_BOUND, p.spawn(&spec(&image())))
        .await
        .expect("spawn within bound")
        .expect("spawn");
    eprintln!("microvm cold boot to agent ready: {:?}", t.elapsed());
    s.runtime_id
}

/// Every check except `lifecycle` on one VM; all failures are reported together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suite_on_one_vm() {
    let p = provider();
    let _serial = SERIAL.lock().await;
    let id = boot(&p).await;
    let shared = SharedVm {
        inner: p.clone(),
        id: id.clone(),
    };
    let mut failures: Vec<CheckFailure> = Vec::new();
    // `lifecycle` boots its own VM (its own test); `unknown_sandbox`, `process_destroy` and
    // `pause_then_destroy` run on the provider itself, since the shared VM's destroy only
    // forgets it. `pause_keeps_processes` pauses the shared VM to disk and resumes it.
    for check in conformance::checks() {
        if matches!(
            check.name,
            "lifecycle"
                | "unknown_sandbox"
                | "files_stream_large"
                | "process_destroy"
                | "pause_then_destroy"
        ) {
            continue;
        }
        let t = Instant::now();
        match timeout(Duration::from_secs(120), (check.run)(&shared, &image())).await {
            Ok(Ok(())) => eprintln!("ok   {} ({:?})", check.name, t.elapsed()),
            Ok(Err(f)) => failures.push(f),
            Err(_) => failures.push(CheckFailure {
                check: check.name,
                message: "timed out".into(),
            }),
        }
    }
    // TCG moves a few MB/s through the agent: a smaller file, still far past any buffer.
    let t = Instant::now();
    let img = image();
    let large = conformance::files_stream_large_sized(&shared, &img, LARGE_ON_TCG);
    match timeout(Duration::from_secs(120), large).await {
        Ok(Ok(())) => eprintln!("ok   files_stream_large ({:?})", t.elapsed()),
        Ok(Err(f)) => failures.push(f),
        Err(_) => failures.push(CheckFailure {
            check: "files_stream_large",
            message: "timed out".into(),
        }),
    }
    let unknown = conformance::unknown_sandbox(&*p, &image()).await;
    let own_vm = conformance::checks()
        .into_iter()
        .filter(|c| matches!(c.name, "process_destroy" | "pause_then_destroy"));
    for check in own_vm {
        let t = Instant::now();
        match timeout(BOOT_BOUND, (check.run)(&*p, &image())).await {
            Ok(Ok(())) => eprintln!("ok   {} ({:?})", check.name, t.elapsed()),
            Ok(Err(f)) => failures.push(f),
            Err(_) => failures.push(CheckFailure {
                check: check.name,
                message: "timed out".into(),
            }),
        }
    }
    timeout(Duration::from_secs(30), p.destroy(&id))
        .await
        .expect("destroy bound")
        .expect("destroy");
    let listed = p.list_runtimes().await.expect("list").expect("enumerable");
    assert!(
        listed.iter().all(|r| r.runtime_id != id),
        "destroyed VM still listed: {listed:?}"
    );
    let mut all: Vec<String> = failures.iter().map(ToString::to_string).collect();
    if let Err(f) = unknown {
        all.push(f.to_string());
    }
    assert!(
        all.is_empty(),
        "{} checks failed:\n{}",
        all.len(),
        all.join("\n")
    );
}

/// The streamed large-file check at its full 128 MiB, on its own VM. Minutes under TCG, so
/// only by hand: `cargo test -p stacyvm-provider --features microvm --test microvm_conformance
/// -- --ignored large_stream_full_size`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "moves 256 MiB through a TCG guest: minutes"]
async fn large_stream_full_size() {
    let p = provider();
    let _serial = SERIAL.lock().await;
    let t = Instant::now();
    let r = timeout(
        Duration::from_secs(1200),
        conformance::files_stream_large(&*p, &image()),
    )
    .await
    .expect("bound");
    eprintln!("files_stream_large (128 MiB): {:?}", t.elapsed());
    if let Err(e) = r {
        panic!("{e}");
    }
}

/// Cold boot, exec, destroy, and everything after destroy: its own VM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle() {
    let p = provider();
    let _serial = SERIAL.lock().await;
    let r = timeout(BOOT_BOUND, conformance::lifecycle(&*p, &image()))
        .await
        .expect("lifecycle bound");
    if let Err(e) = r {
        panic!("{e}");
    }
}

/// The guest sees its own root filesystem: no host file is reachable, no host directory is
/// mounted, and guest writes stay in the guest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_cannot_read_host_files() {
    let p = provider();
    let _serial = SERIAL.lock().await;
    let secret_dir = tempfile::tempdir().unwrap();
    let secret = secret_dir.path().join("host-secret.txt");
    std::fs::write(&secret, b"host-only-7f3a").unwrap();
    let secret = secret.to_string_lossy().into_owned();
    let id = boot(&p).await;
    let bound = Duration::from_secs(60);

    let c = timeout(
        bound,
        exec_collect(&*p, &id, sh(&format!("cat {secret}; echo rc=$?"))),
    )
    .await
    .unwrap();
    assert!(matches!(c.result, Ok(0)), "{c:?}");
    assert!(
        !c.stdout_str().contains("host-only-7f3a"),
        "guest read the host file: {c:?}"
    );
    assert!(c.stdout_str().contains("rc=1"), "{c:?}");
    let r = timeout(bound, p.read_file(&id, &secret)).await.unwrap();
    assert!(
        matches!(r, Err(ProviderError::FileNotFound(_))),
        "files API reached the host: {r:?}"
    );
    let c = timeout(
        bound,
        exec_collect(&*p, &id, sh("cat /proc/mounts; echo HOSTNAME=$(hostname)")),
    )
    .await
    .unwrap();
    let mounts = c.stdout_str();
    for fs in ["9p", "virtiofs", "nfs"] {
        assert!(!mounts.contains(fs), "host share {fs} mounted: {mounts}");
    }
    assert!(
        mounts.contains("/dev/vda"),
        "root disk not mounted: {mounts}"
    );
    assert!(
        mounts.contains(&format!("HOSTNAME={id}")),
        "hostname is not the sandbox id: {mounts}"
    );
    // A guest write must not appear anywhere on the host side of the provider.
    let c = timeout(
        bound,
        exec_collect(
            &*p,
            &id,
            sh(&format!(
                "mkdir -p {0} && echo guest > {secret}",
                secret_dir.path().display()
            )),
        ),
    )
    .await
    .unwrap();
    assert!(matches!(c.result, Ok(0)), "{c:?}");
    assert_eq!(
        std::fs::read(&secret).unwrap(),
        b"host-only-7f3a",
        "guest write reached the host"
    );
    timeout(bound, p.destroy(&id)).await.unwrap().unwrap();
}

/// Killing the agent inside the guest fails the running exec cleanly (the guest powers off),
/// the sandbox turns unhealthy, later calls fail fast, and destroy still works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_agent_fails_exec_without_hanging() {
    let p = provider();
    let _serial = SERIAL.lock().await;
    let id = boot(&p).await;
    let c = timeout(
        Duration::from_secs(60),
        exec_collect(&*p, &id, sh("kill -9 $PPID; sleep 30")),
    )
    .await
    .expect("exec must not hang when the agent dies");
    assert!(
        matches!(c.result, Err(ProviderError::Unavailable(_))),
        "{:?}",
        c.result
    );
    let st = timeout(Duration::from_secs(10), p.status(&id))
        .await
        .unwrap();
    assert!(matches!(st, Ok(SandboxState::Unhealthy)), "{st:?}");
    let t = Instant::now();
    let c = timeout(Duration::from_secs(10), exec_collect(&*p, &id, sh("true")))
        .await
        .unwrap();
    assert!(
        matches!(c.result, Err(ProviderError::Unavailable(_))),
        "{:?}",
        c.result
    );
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "exec on a dead agent took {:?}",
        t.elapsed()
    );
    timeout(Duration::from_secs(30), p.destroy(&id))
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(p.status(&id).await, Ok(SandboxState::Destroyed)));
}

/// A restarted provider (a new instance on the same data dir) still sees a VM left by the old
/// one, with its sandbox id, and destroying it kills QEMU and removes its files; QEMU does not
/// run as root.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_provider_lists_and_destroys_orphans() {
    let old = provider();
    let _serial = SERIAL.lock().await;
    let id = boot(&old).await;
    let cfg = config();
    let vm_dir = PathBuf::from(&cfg.data_dir).join("vms").join(&id);
    let fresh = MicrovmProvider::new(cfg).expect("valid config");
    let listed = fresh.list_runtimes().await.unwrap().unwrap();
    let me = listed
        .iter()
        .find(|r| r.runtime_id == id)
        .expect("orphan listed");
    assert!(me.running, "{me:?}");
    assert_eq!(me.sandbox_id.as_deref(), Some(id.as_str()));
    assert_eq!(me.image, image());
    let pid = std::fs::read_to_string(vm_dir.join("vm.json")).unwrap();
    let pid: serde_json::Value = serde_json::from_str(&pid).unwrap();
    let pid = pid["pid"].as_i64().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid_line = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .unwrap()
        .to_string();
    let running_as_root = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"));
    if running_as_root {
        assert_ne!(
            uid_line.split_whitespace().nth(1),
            Some("0"),
            "qemu runs as root: {uid_line}"
        );
    }
    timeout(Duration::from_secs(30), fresh.destroy(&id))
        .await
        .unwrap()
        .unwrap();
    let gone = async {
        // The old instance is QEMU's parent and reaps it only later: a zombie counts as dead.
        while std::fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|s| {
            !s.lines()
                .any(|l| l.starts_with("State:") && l.contains("Z"))
        }) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    timeout(Duration::from_secs(10), gone)
        .await
        .expect("qemu killed by the new provider");
    assert!(!vm_dir.exists(), "VM files left behind");
    let listed = fresh.list_runtimes().await.unwrap().unwrap();
    assert!(listed.iter().all(|r| r.runtime_id != id), "{listed:?}");
    // The old instance's handle now sees a dead VM, not a hang.
    let c = timeout(
        Duration::from_secs(10),
        exec_collect(&*old, &id, sh("true")),
    )
    .await
    .unwrap();
    assert!(c.result.is_err(), "{:?}", c.result);
}

/// Figures for docs/microvm.md, not a check: `cargo test -p stacyvm-provider --features
/// microvm --test microvm_conformance -- --ignored --nocapture measure`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement; run by hand"]
async fn measure_boot_and_exec() {
    let cfg = config();
    // Cold boots: snapshot clones are measured by examples/microvm_bench.rs.
    let p = MicrovmProvider::new(stacyvm_provider::MicrovmConfig {
        snapshots: false,
        ..cfg
    })
    .expect("valid config");
    let _serial = SERIAL.lock().await;
    let mut boots = Vec::new();
    for _ in 0..5 {
        let id = boot(&p).await;
        boots.push(p.boot_time(&id).unwrap());
        let mut rtt = Vec::new();
        for _ in 0..20 {
            let t = Instant::now();
            let c = exec_collect(
                &p,
                &id,
                ExecRequest {
                    command: "true".into(),
                    mode: stacyvm_types::ExecMode::Argv,
                    ..Default::default()
                },
            )
            .await;
            assert!(matches!(c.result, Ok(0)), "{c:?}");
            rtt.push(t.elapsed());
        }
        rtt.sort();
        eprintln!(
            "exec `true` round trip: median {:?}, max {:?}",
            rtt[rtt.len() / 2],
            rtt[rtt.len() - 1]
        );
        p.destroy(&id).await.unwrap();
    }
    boots.sort();
    eprintln!(
        "cold boot (spawn → agent ready): {boots:?}; median {:?}",
        boots[boots.len() / 2]
    );
}
