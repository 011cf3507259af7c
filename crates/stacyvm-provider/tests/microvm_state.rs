//! Pause to disk and memory snapshots on real microvm guests (docs/state.md): processes and
//! their memory survive a pause, a provider restart and a clone; a paused VM has no QEMU; a
//! clone gets a new identity; nothing is left behind.
//!
//! Needs `scripts/setup-microvm.sh`; selected by the `vm` nextest profile (binary
//! `microvm_*`), failing without the assets.
#![cfg(feature = "microvm")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod microvm_support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use stacyvm_provider::conformance::{drain, exec_collect, proc_sh, sh, spec};
use stacyvm_provider::{MicrovmProvider, Provider, ProviderError};
use stacyvm_types::SandboxState;
use tokio::time::timeout;

use microvm_support::{config, image, BOOT_BOUND};

/// One VM test at a time in this process: they are CPU-bound under TCG.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Counts in a shell variable (memory), printing each value and keeping the last in a file
/// (replaced by a rename, so a pause or snapshot never catches it empty).
const COUNTER: &str = "i=0; while true; do i=$((i+1)); echo $i; echo $i > /tmp/c.tmp; mv /tmp/c.tmp /tmp/c; sleep 0.2; done";

fn data_dir() -> PathBuf {
    PathBuf::from(config().data_dir)
}

async fn spawn(p: &MicrovmProvider) -> String {
    timeout(BOOT_BOUND, p.spawn(&spec(&image())))
        .await
        .expect("spawn bound")
        .expect("spawn")
        .runtime_id
}

async fn sh_out(p: &MicrovmProvider, id: &str, cmd: &str) -> String {
    let c = timeout(Duration::from_secs(60), exec_collect(p, id, sh(cmd)))
        .await
        .expect("exec bound");
    assert!(matches!(c.result, Ok(0)), "{cmd}: {c:?}");
    c.stdout_str().trim().to_string()
}

async fn counter(p: &MicrovmProvider, id: &str) -> u64 {
    let b = p.read_file(id, "/tmp/c").await.expect("read counter");
    String::from_utf8_lossy(&b)
        .trim()
        .parse()
        .expect("a number")
}

/// Waits until the counter of `id` reaches `n`; returns its value.
async fn counter_reaches(p: &MicrovmProvider, id: &str, n: u64) -> u64 {
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        let c = match p.read_file(id, "/tmp/c").await {
            Ok(b) => String::from_utf8_lossy(&b).trim().parse().unwrap_or(0),
            Err(_) => 0,
        };
        if c >= n {
            return c;
        }
        assert!(
            Instant::now() < end,
            "counter of {id} stayed at {c}, wanted {n}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Whether `pid` is a live (not zombie) QEMU.
fn qemu_alive(pid: i32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    let zombie = status
        .lines()
        .any(|l| l.starts_with("State:") && l.contains('Z'));
    !zombie
        && std::fs::read(format!("/proc/{pid}/cmdline"))
            .is_ok_and(|c| String::from_utf8_lossy(&c).contains("qemu"))
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// A process started before the pause runs on after resume with its memory (the counter goes
/// on from where it was, its output continues); the paused VM has no QEMU, only files; a new
/// provider on the same data dir sees it paused and resumes it; destroy removes everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_to_disk_and_resume_after_a_restart() {
    let _serial = SERIAL.lock().await;
    let p = MicrovmProvider::new(config()).unwrap();
    let id = spawn(&p).await;
    let vm_dir = data_dir().join("vms").join(&id);
    let proc = p
        .process_start(&id, proc_sh(COUNTER))
        .await
        .expect("process start");
    counter_reaches(&p, &id, 3).await;
    let qemu = p.qemu_pid(&id).expect("qemu pid");
    assert!(qemu_alive(qemu));
    sh_out(&p, &id, "echo console-mark-7 > /dev/console").await;

    let t = Instant::now();
    timeout(BOOT_BOUND, p.pause(&id))
        .await
        .unwrap()
        .expect("pause");
    eprintln!("pause: {:?}", t.elapsed());
    assert!(!qemu_alive(qemu), "QEMU {qemu} still runs while paused");
    assert_eq!(p.qemu_pid(&id), None);
    assert!(
        vm_dir.join("paused.state").is_file(),
        "{:?}",
        files_in(&vm_dir)
    );
    assert_eq!(p.status(&id).await.unwrap(), SandboxState::Paused);
    p.pause(&id).await.expect("pause is idempotent");
    let r = p.read_file(&id, "/tmp/c").await;
    assert!(r.is_err(), "read from a paused VM: {r:?}");
    let console = p.logs(&id, 100).await.expect("logs while paused");
    assert!(
        console.iter().any(|l| l.contains("console-mark-7")),
        "{console:?}"
    );

    // A restarted provider adopts it.
    drop(p);
    let p = MicrovmProvider::new(config()).unwrap();
    assert_eq!(p.status(&id).await.unwrap(), SandboxState::Paused);
    let listed = p.list_runtimes().await.unwrap().unwrap();
    let me = listed.iter().find(|r| r.runtime_id == id).expect("listed");
    assert!(!me.running, "{me:?}");
    assert_eq!(me.sandbox_id.as_deref(), Some(id.as_str()));

    let t = Instant::now();
    timeout(BOOT_BOUND, p.resume(&id))
        .await
        .unwrap()
        .expect("resume");
    eprintln!("resume: {:?}", t.elapsed());
    p.resume(&id).await.expect("resume is idempotent");
    assert_eq!(p.status(&id).await.unwrap(), SandboxState::Running);
    assert!(!vm_dir.join("paused.state").exists(), "state file kept");
    let console = p.logs(&id, 100).await.unwrap();
    assert!(
        console.iter().any(|l| l.contains("console-mark-7")),
        "console log lost on resume: {console:?}"
    );
    let at_resume = counter(&p, &id).await;
    assert!(at_resume >= 3, "the counter restarted: {at_resume}");
    let later = counter_reaches(&p, &id, at_resume + 3).await;
    // The process is the same one, and its output went on without a restart.
    let info = p.process_get(&id, proc.pid).await.expect("process kept");
    assert!(info.exit_code.is_none(), "{info:?}");
    let out = drain(p.process_output(&id, proc.pid, 0, false).await.unwrap())
        .await
        .expect("output");
    let out = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines: Vec<u64> = out.lines().filter_map(|l| l.parse().ok()).collect();
    assert_eq!(lines.first(), Some(&1), "{out}");
    assert!(
        lines.windows(2).all(|w| w[1] == w[0] + 1),
        "output restarted or skipped: {lines:?}"
    );
    assert!(*lines.last().unwrap() + 1 >= later, "{lines:?} vs {later}");
    // Pause and resume again on the resumed VM.
    p.pause(&id).await.expect("second pause");
    p.resume(&id).await.expect("second resume");
    counter_reaches(&p, &id, later + 2).await;

    // Destroy while paused removes everything.
    p.pause(&id).await.expect("third pause");
    timeout(Duration::from_secs(30), p.destroy(&id))
        .await
        .unwrap()
        .expect("destroy");
    assert!(!vm_dir.exists(), "{:?}", files_in(&vm_dir));
    assert!(matches!(
        p.status(&id).await,
        Ok(SandboxState::Destroyed) | Err(ProviderError::SandboxNotFound(_))
    ));
}

fn new_snapshot_id() -> String {
    format!("snap-{}", &stacyvm_types::new_sandbox_id()[3..])
}

async fn identity(p: &MicrovmProvider, id: &str) -> (String, String) {
    let out = sh_out(p, id, "hostname; cat /etc/machine-id").await;
    let mut l = out.lines().map(str::to_string);
    (l.next().unwrap_or_default(), l.next().unwrap_or_default())
}

/// Clones of a memory snapshot go on with its source's processes and memory (the counter in a
/// shell variable continues from the snapshot's value) and files, each with a new hostname and
/// machine id and its own disk; the source keeps running; a snapshot of a paused VM works too;
/// a deleted snapshot spawns nothing; nothing is left after destroy and delete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_snapshot_clones_keep_processes_with_a_new_identity() {
    let _serial = SERIAL.lock().await;
    let p = MicrovmProvider::new(config()).unwrap();
    assert!(p.capabilities().contains(&"snapshots"));
    let a = spawn(&p).await;
    p.write_file(&a, "/workspace/mark", "before".into(), None)
        .await
        .unwrap();
    let proc = p.process_start(&a, proc_sh(COUNTER)).await.unwrap();
    let at_snap = counter_reaches(&p, &a, 5).await;
    let sid = new_snapshot_id();
    let t = Instant::now();
    let made = timeout(BOOT_BOUND, p.snapshot(&a, &sid))
        .await
        .unwrap()
        .expect("snapshot");
    eprintln!("snapshot: {:?} {made:?}", t.elapsed());
    assert_eq!(made.kind, "memory");
    assert!(made.size_bytes > 1 << 20, "{made:?}");
    let snaps = data_dir().join("snapshots");
    let snap_dir = snaps.join(&sid);
    assert_eq!(
        files_in(&snap_dir),
        ["disk.qcow2", "mem", "snapshot.json", "state"]
    );
    // The source keeps running; what it does later is not in the snapshot.
    counter_reaches(&p, &a, at_snap + 3).await;
    p.write_file(&a, "/workspace/mark", "after".into(), None)
        .await
        .unwrap();
    let a_ident = identity(&p, &a).await;
    assert_eq!(a_ident.0, a);

    let mut clones = Vec::new();
    for _ in 0..2 {
        let t = Instant::now();
        let c = timeout(
            BOOT_BOUND,
            p.spawn_from_snapshot(&spec(&image()), &[], &sid),
        )
        .await
        .unwrap()
        .expect("spawn from snapshot")
        .runtime_id;
        eprintln!("spawn from snapshot: {:?}", t.elapsed());
        clones.push(c);
    }
    let mut machine_ids = vec![a_ident.1.clone()];
    for c in &clones {
        let first = counter(&p, c).await;
        assert!(
            first >= at_snap,
            "the counter of clone {c} started over: {first} < {at_snap}"
        );
        counter_reaches(&p, c, first + 3).await;
        let info = p.process_get(c, proc.pid).await.expect("process in clone");
        assert!(info.exit_code.is_none(), "{info:?}");
        let mark = p.read_file(c, "/workspace/mark").await.unwrap();
        assert_eq!(&mark[..], b"before");
        let (host, machine) = identity(&p, c).await;
        assert_eq!(&host, c, "hostname of the clone");
        assert!(!machine.is_empty());
        assert!(
            !machine_ids.contains(&machine),
            "machine id shared: {machine}"
        );
        machine_ids.push(machine);
    }
    p.write_file(&clones[0], "/workspace/only0", "x".into(), None)
        .await
        .unwrap();
    assert!(
        p.read_file(&clones[1], "/workspace/only0").await.is_err(),
        "clones share a disk"
    );

    // A paused VM can be snapshotted too, from its saved state.
    p.pause(&a).await.expect("pause");
    let sid2 = new_snapshot_id();
    p.snapshot(&a, &sid2)
        .await
        .expect("snapshot of a paused VM");
    assert_eq!(p.status(&a).await.unwrap(), SandboxState::Paused);
    let c2 = timeout(
        BOOT_BOUND,
        p.spawn_from_snapshot(&spec(&image()), &[], &sid2),
    )
    .await
    .unwrap()
    .expect("spawn from the paused VM's snapshot")
    .runtime_id;
    let first = counter(&p, &c2).await;
    assert!(first > at_snap, "{first} <= {at_snap}");
    counter_reaches(&p, &c2, first + 2).await;
    assert_eq!(
        &p.read_file(&c2, "/workspace/mark").await.unwrap()[..],
        b"after"
    );

    for s in [&sid, &sid2] {
        p.delete_snapshot(s).await.expect("delete");
        p.delete_snapshot(s).await.expect("delete is idempotent");
    }
    assert!(!snap_dir.exists());
    let gone = p.spawn_from_snapshot(&spec(&image()), &[], &sid).await;
    assert!(
        matches!(gone, Err(ProviderError::InvalidInput(_))),
        "spawned from a deleted snapshot: {gone:?}"
    );
    // Clones outlive their snapshot.
    let n = counter(&p, &clones[1]).await;
    counter_reaches(&p, &clones[1], n + 2).await;
    for id in [&a, &clones[0], &clones[1], &c2] {
        timeout(Duration::from_secs(30), p.destroy(id))
            .await
            .unwrap()
            .expect("destroy");
        let dir = data_dir().join("vms").join(id);
        assert!(!dir.exists(), "{id}: {:?}", files_in(&dir));
    }
    let left: Vec<String> = files_in(&snaps)
        .into_iter()
        .filter(|n| n.contains(&sid[5..]) || n.contains(&sid2[5..]))
        .collect();
    assert!(left.is_empty(), "left in snapshots/: {left:?}");
}

/// With snapshots off VMs boot cold, with QEMU's default RAM: they pause and resume too (a
/// resume starts QEMU with that RAM layout), but cannot be snapshotted, and the provider does
/// not list `snapshots`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_booted_vms_pause_but_do_not_snapshot() {
    let _serial = SERIAL.lock().await;
    let p = MicrovmProvider::new(stacyvm_provider::MicrovmConfig {
        snapshots: false,
        ..config()
    })
    .unwrap();
    let caps = p.capabilities();
    assert!(
        caps.contains(&"pause") && !caps.contains(&"snapshots"),
        "{caps:?}"
    );
    let id = spawn(&p).await;
    p.process_start(&id, proc_sh(COUNTER)).await.unwrap();
    let n = counter_reaches(&p, &id, 3).await;
    timeout(BOOT_BOUND, p.pause(&id))
        .await
        .unwrap()
        .expect("pause");
    assert_eq!(p.status(&id).await.unwrap(), SandboxState::Paused);
    timeout(BOOT_BOUND, p.resume(&id))
        .await
        .unwrap()
        .expect("resume");
    let at_resume = counter(&p, &id).await;
    assert!(
        at_resume >= n,
        "the counter started over: {at_resume} < {n}"
    );
    counter_reaches(&p, &id, at_resume + 2).await;
    let r = p.snapshot(&id, &new_snapshot_id()).await;
    assert!(matches!(r, Err(ProviderError::NotSupported(_))), "{r:?}");
    timeout(Duration::from_secs(30), p.destroy(&id))
        .await
        .unwrap()
        .expect("destroy");
    assert!(!data_dir().join("vms").join(&id).exists());
}
