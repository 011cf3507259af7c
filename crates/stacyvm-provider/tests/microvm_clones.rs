//! Snapshot clones and the warm pool of the microvm provider: clones of one template get their
//! own identity and disk, a pooled spawn only resumes a paused clone, and the pool refills and
//! shuts down cleanly. At most two VMs run at a time (pooled clones are paused).
//!
//! Needs `scripts/setup-microvm.sh`; without the assets the tests fail. The default nextest
//! profile leaves this binary out (profiles `vm` and `ci` select it).
#![cfg(feature = "microvm")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod microvm_support;

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use stacyvm_provider::conformance::{exec_collect, sh, spec};
use stacyvm_provider::{MicrovmConfig, MicrovmProvider, Provider};
use tokio::time::timeout;

use microvm_support::{config, image, BOOT_BOUND};

/// One VM test at a time in this process.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn spawn(p: &MicrovmProvider) -> String {
    timeout(BOOT_BOUND, p.spawn(&spec(&image())))
        .await
        .expect("spawn within bound")
        .expect("spawn")
        .runtime_id
}

async fn run(p: &MicrovmProvider, id: &str, script: &str) -> String {
    let c = timeout(Duration::from_secs(60), exec_collect(p, id, sh(script)))
        .await
        .expect("exec within bound");
    assert!(matches!(c.result, Ok(0)), "{script}: {c:?}");
    c.stdout_str()
}

/// What a guest says about itself: hostname, machine id, 32 bytes of urandom, clock.
async fn identity(p: &MicrovmProvider, id: &str) -> Vec<String> {
    let out = run(
        p,
        id,
        "hostname; cat /etc/machine-id; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n'; echo; date +%s",
    )
    .await;
    let lines: Vec<String> = out.lines().map(str::to_string).collect();
    assert_eq!(lines.len(), 4, "{out}");
    lines
}

async fn wait_for(what: &str, bound: Duration, mut ok: impl FnMut() -> bool) {
    let r = timeout(bound, async {
        while !ok() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(r.is_ok(), "timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clones_get_their_own_identity_and_disk() {
    let cfg = config();
    let _serial = SERIAL.lock().await;
    let p = MicrovmProvider::new(cfg).expect("valid config");
    let a = spawn(&p).await;
    let b = spawn(&p).await;
    for id in [&a, &b] {
        assert_eq!(p.boot_kind(id), Some("restored"), "{id} was not restored");
        eprintln!("{id}: restored in {:?}", p.boot_time(id).unwrap());
    }
    let ia = identity(&p, &a).await;
    let ib = identity(&p, &b).await;
    assert_eq!(ia[0], a, "hostname of a");
    assert_eq!(ib[0], b, "hostname of b");
    for i in [&ia, &ib] {
        assert!(
            i[1].len() == 32 && i[1].bytes().all(|c| c.is_ascii_hexdigit()),
            "machine id {:?}",
            i[1]
        );
        assert_eq!(i[2].len(), 64, "urandom {:?}", i[2]);
        let host = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let guest: i64 = i[3].parse().unwrap();
        assert!(
            (guest - host).abs() < 60,
            "guest clock {guest} vs host {host}"
        );
    }
    assert_ne!(ia[1], ib[1], "clones share a machine id");
    assert_ne!(ia[2], ib[2], "clones share random output");

    // Disks: what one clone writes, the other does not see (also outside /workspace).
    run(
        &p,
        &a,
        "echo a > /workspace/only-a && echo a > /etc/only-a && sync",
    )
    .await;
    let seen = run(
        &p,
        &b,
        "ls /workspace/only-a /etc/only-a 2>/dev/null; echo end",
    )
    .await;
    assert_eq!(seen.trim(), "end", "b sees a's files: {seen}");
    let data = PathBuf::from(&config().data_dir);
    for id in [&a, &b] {
        timeout(Duration::from_secs(30), p.destroy(id))
            .await
            .unwrap()
            .unwrap();
        assert!(!data.join("vms").join(id).exists(), "{id} files left");
    }
    // The template is kept for later spawns (and other processes).
    let templates: Vec<_> = std::fs::read_dir(data.join("templates"))
        .unwrap()
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(!templates.is_empty(), "no template saved");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_pool_spawn_resumes_a_paused_clone_and_refills() {
    let cfg = config();
    let _serial = SERIAL.lock().await;
    let p = MicrovmProvider::new(MicrovmConfig {
        warm_pool: 1,
        ..cfg
    })
    .expect("valid config");
    // The first spawn of the image registers it with the pool.
    let first = spawn(&p).await;
    assert_ne!(p.boot_kind(&first), Some("pooled"));
    timeout(Duration::from_secs(30), p.destroy(&first))
        .await
        .unwrap()
        .unwrap();
    wait_for("the pool to fill", BOOT_BOUND, || p.warm_count() == 1).await;

    let id = spawn(&p).await;
    assert_eq!(p.boot_kind(&id), Some("pooled"));
    let took = p.boot_time(&id).unwrap();
    eprintln!("spawn from the warm pool: {took:?}");
    assert!(took < Duration::from_secs(2), "pooled spawn took {took:?}");
    let i = identity(&p, &id).await;
    assert_eq!(i[0], id, "pooled clone keeps the pool's hostname");
    // The pooled clone's QEMU is now this sandbox's, under vms/<id>.
    let pid = p.qemu_pid(&id).unwrap();
    let data = PathBuf::from(&config().data_dir);
    let meta = std::fs::read_to_string(data.join("vms").join(&id).join("vm.json")).unwrap();
    assert!(meta.contains(&format!("\"pid\":{pid}")), "{meta}");
    assert!(meta.contains(&id), "{meta}");

    wait_for("the pool to refill", BOOT_BOUND, || p.warm_count() == 1).await;
    let pool_dirs = || {
        std::fs::read_dir(data.join("pool"))
            .map(|rd| {
                rd.flatten()
                    .filter(|e| {
                        e.file_name()
                            .to_string_lossy()
                            .starts_with(&format!("{}-", std::process::id()))
                    })
                    .count()
            })
            .unwrap_or(0)
    };
    assert_eq!(pool_dirs(), 1, "this provider's pool directory");

    timeout(Duration::from_secs(60), p.shutdown())
        .await
        .expect("shutdown within bound");
    assert_eq!(p.warm_count(), 0);
    assert_eq!(pool_dirs(), 0, "pool directory left after shutdown");
    // The sandbox itself is untouched by the pool's shutdown.
    assert_eq!(run(&p, &id, "echo alive").await.trim(), "alive");
    timeout(Duration::from_secs(30), p.destroy(&id))
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clones_cannot_write_the_template_ram() {
    use std::io::Write;

    let cfg = config();
    let _serial = SERIAL.lock().await;
    let p = MicrovmProvider::new(cfg).expect("valid config");
    let id = spawn(&p).await;
    assert_eq!(p.boot_kind(&id), Some("restored"));
    let pid = p.qemu_pid(&id).unwrap();
    let fds: Vec<(PathBuf, PathBuf)> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|e| Some((e.path(), std::fs::read_link(e.path()).ok()?)))
        .collect();
    // No descriptor of the template's RAM file; its sealed copy instead.
    assert!(
        !fds.iter().any(|(_, to)| to.ends_with("mem")),
        "clone holds the template's mem file: {fds:?}"
    );
    let (memfd, _) = fds
        .iter()
        .find(|(_, to)| to.to_string_lossy().contains("memfd:stacyvm-template-ram"))
        .unwrap_or_else(|| panic!("no sealed template RAM in {fds:?}"));
    // Even opened read-write by root, as QEMU opened it, it takes no write.
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(memfd)
        .unwrap();
    let e = f.write_all(b"x").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EPERM), "{e}");
    // The guest still writes its own (private) RAM: 8 MB through its page cache.
    assert_eq!(
        run(
            &p,
            &id,
            "dd if=/dev/zero of=/tmp/ram bs=1M count=8 2>/dev/null && rm /tmp/ram && echo ok"
        )
        .await
        .trim(),
        "ok"
    );
    timeout(Duration::from_secs(30), p.destroy(&id))
        .await
        .unwrap()
        .unwrap();
}
