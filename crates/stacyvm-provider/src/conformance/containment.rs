//! Escape and containment checks for providers that isolate (`Provider::isolated()`: docker,
//! bwrap; not the mock, which runs on the host by design). One list, every isolating backend,
//! checked by effect from inside a sandbox: the host's processes, files, devices, kernel
//! keyring and loopback network are out of sight and reach; mount, ptrace or signals to a host
//! process, `unshare` to regain capabilities and writing `/proc/sys` fail; a fork bomb and a
//! memory hog stay inside their sandbox while the host (and the provider) keep answering; one
//! sandbox cannot see or signal another's processes or read its files.
//!
//! The checks expect a fixture with the backend's default limits (a pids limit, memory limits
//! honoured) and a network that is `none` or a bridge on the host (the gateway is tried, so a
//! fixture whose gateway is off the machine should not run [`contain_network`]). They need
//! `cc` with a static libc on the machine running them: the syscall probe is compiled there
//! and copied in (the test images have no compiler). Run them with
//! [`provider_containment_tests!`](crate::provider_containment_tests).

use std::time::Duration;

use bytes::Bytes;
use stacyvm_types::{ProcessState, Signal};

use super::{exec_collect, run_sh, sh, spec, with_sandbox, CheckFailure, Outcome};
use crate::{ExecRequest, ProcessSpec, Provider, ProviderError, SandboxSpec};

/// Calls a contained process must not be able to make, each printed as `name=errno` (0 = it
/// worked). `argv[1]` is the pid of a host process (the test's own).
const PROBE_C: &str = r#"
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <unistd.h>
static void report(const char *name, long r) { printf("%s=%d\n", name, r < 0 ? errno : 0); }
int main(int argc, char **argv) {
    pid_t host = argc > 1 ? atoi(argv[1]) : 1;
    report("mount", mount("none", "/tmp", "tmpfs", 0, 0));
    report("unshare_user", unshare(CLONE_NEWUSER));
    report("unshare_mount", unshare(CLONE_NEWNS));
    report("keyctl", syscall(SYS_keyctl, 0 /* KEYCTL_GET_KEYRING_ID */, -3, 0));
    report("add_key", syscall(SYS_add_key, "user", "stacyvm", "x", 1, -3));
    report("ptrace_host", ptrace(PTRACE_ATTACH, host, 0, 0));
    report("kill_host", kill(host, 0));
    return 0;
}
"#;

/// Every probe name; each must report a non-zero errno.
const PROBE_CALLS: [&str; 7] = [
    "mount",
    "unshare_user",
    "unshare_mount",
    "keyctl",
    "add_key",
    "ptrace_host",
    "kill_host",
];

/// The probe compiled statically for this machine (the sandboxes run the host's kernel and
/// architecture); compiled once per process.
fn probe_binary() -> Result<Bytes, String> {
    static BIN: std::sync::OnceLock<Result<Bytes, String>> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let (src, bin) = (dir.path().join("probe.c"), dir.path().join("probe"));
        std::fs::write(&src, PROBE_C).map_err(|e| e.to_string())?;
        let out = std::process::Command::new("cc")
            .args(["-static", "-O0", "-o"])
            .arg(&bin)
            .arg(&src)
            .output()
            .map_err(|e| format!("cc (gcc and libc6-dev build the probe): {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        std::fs::read(bin)
            .map(Bytes::from)
            .map_err(|e| e.to_string())
    })
    .clone()
}

async fn out(p: &dyn Provider, id: &str, cmd: &str) -> Result<String, String> {
    Ok(run_sh(p, id, cmd).await?.stdout_str())
}

/// No host process is visible: the sandbox's process list is short and does not hold this
/// test process (whose command line the check knows).
pub async fn contain_host_processes(p: &dyn Provider, image: &str) -> Result<(), CheckFailure> {
    with_sandbox("contain_host_processes", p, image, |p, id| async move {
        let all = out(
            p,
            &id,
            "for c in /proc/[0-9]*/cmdline; do tr '\\0' ' ' < $c; echo; done",
        )
        .await?;
        let me = std::env::current_exe().map_err(|e| e.to_string())?;
        let me = me.file_name().unwrap_or_default().to_string_lossy();
        ensure!(!all.contains(&*me), "a host process is visible: {all}");
        let n = all.lines().filter(|l| !l.trim().is_empty()).count();
        ensure!(n < 15, "{n} processes visible: {all}");
        Ok(())
    })
    .await
}

/// A file made on the host (in its temp dir) is not there in the sandbox, and the sandbox's
/// host name is its own.
pub async fn contain_host_files(p: &dyn Provider, image: &str) -> Result<(), CheckFailure> {
    with_sandbox("contain_host_files", p, image, |p, id| async move {
        let marker = tempfile::Builder::new()
            .prefix("stacyvm-containment-")
            .tempfile_in("/tmp")
            .map_err(|e| e.to_string())?;
        let path = marker.path().display();
        let seen = out(
            p,
            &id,
            &format!("test -e {path} && echo PRESENT; ls -a /tmp"),
        )
        .await?;
        let name = marker
            .path()
            .file_name()
            .unwrap_or_default()
            .to_string_lossy();
        ensure!(
            !seen.contains("PRESENT") && !seen.contains(&*name),
            "the host's {path} is visible: {seen}"
        );
        let r = p.read_file(&id, &path.to_string()).await;
        ensure!(
            matches!(r, Err(ProviderError::FileNotFound(_))),
            "files API read of the host's {path}: {r:?}"
        );
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        let theirs = out(p, &id, "hostname").await?;
        ensure!(theirs.trim() != host.trim(), "the host's name: {theirs}");
        Ok(())
    })
    .await
}

/// No block device, no memory or kernel-log device, no raw port access.
pub async fn contain_devices(p: &dyn Provider, image: &str) -> Result<(), CheckFailure> {
    with_sandbox("contain_devices", p, image, |p, id| async move {
        let block = out(p, &id, "find /dev -type b 2>/dev/null").await?;
        ensure!(block.trim().is_empty(), "block devices: {block}");
        let found = out(
            p,
            &id,
            "for d in mem kmem port kmsg sda vda nvme0 loop0 loop-control fuse; do \
             [ -e /dev/$d ] && echo $d; done; true",
        )
        .await?;
        ensure!(found.trim().is_empty(), "host devices: {found}");
        let null = out(p, &id, "echo x > /dev/null && echo ok").await?;
        ensure!(null == "ok\n", "/dev/null: {null}");
        Ok(())
    })
    .await
}

/// mount, `unshare` (of a user namespace, to regain capabilities, and of a mount namespace),
/// the kernel keyring, ptrace and signals to a host process, and writes to `/proc/sys` all
/// fail, whatever the exact errno.
pub async fn contain_kernel_interfaces(p: &dyn Provider, image: &str) -> Result<(), CheckFailure> {
    let bin = match probe_binary() {
        Ok(b) => b,
        Err(e) => {
            return Err(CheckFailure {
                check: "contain_kernel_interfaces",
                message: format!("building the probe failed: {e}"),
            })
        }
    };
    with_sandbox("contain_kernel_interfaces", p, image, |p, id| async move {
        ok!(p
            .write_file(&id, "/workspace/probe", bin, Some("0755"))
            .await);
        let got = out(p, &id, &format!("/workspace/probe {}", std::process::id())).await?;
        for call in PROBE_CALLS {
            let line = got
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{call}=")));
            ensure!(
                line.is_some_and(|e| e != "0"),
                "{call} worked (or did not run): {got}"
            );
        }
        // Written back as it is, so a broken sandbox changes nothing on the host.
        let c = exec_collect(
            p,
            &id,
            sh("v=$(cat /proc/sys/kernel/sysrq) && echo $v > /proc/sys/kernel/sysrq"),
        )
        .await;
        ensure!(
            matches!(c.result, Ok(code) if code != 0),
            "writing /proc/sys/kernel/sysrq: {:?} {}",
            c.result,
            c.stderr_str()
        );
        Ok(())
    })
    .await
}

/// A server on the host's `127.0.0.1` is reached neither as `127.0.0.1` nor through the
/// sandbox's gateway, and the host's own interfaces (other than `lo`/`eth0`, names every
/// sandbox may have) are not in the sandbox.
pub async fn contain_network(p: &dyn Provider, image: &str) -> Result<(), CheckFailure> {
    let listener = match tokio::net::TcpListener::bind(("127.0.0.1", 0)).await {
        Ok(l) => l,
        Err(e) => {
            return Err(CheckFailure {
                check: "contain_network",
                message: format!("binding the host listener failed: {e}"),
            })
        }
    };
    let port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = accepted.clone();
    let server = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        while let Ok((mut c, _)) = listener.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let _ = c.write_all(b"HOST-LOOPBACK\n").await;
        }
    });
    let r = with_sandbox("contain_network", p, image, |p, id| async move {
        // The gateway, if the sandbox has a route out: /proc/net/route prints it as the hex
        // of the address's bytes read as a native-endian u32.
        let gw = out(
            p,
            &id,
            "awk '$2 == \"00000000\" { print $3 }' /proc/net/route",
        )
        .await?;
        let mut targets = vec!["127.0.0.1".to_string()];
        targets.extend(
            gw.lines()
                .filter_map(|h| u32::from_str_radix(h.trim(), 16).ok())
                .filter(|g| *g != 0)
                .map(|g| std::net::Ipv4Addr::from(g.to_ne_bytes()).to_string()),
        );
        for t in &targets {
            let got = out(
                p,
                &id,
                &format!("(echo x; sleep 1) | timeout 5 nc -w 2 {t} {port} 2>&1; true"),
            )
            .await?;
            ensure!(!got.contains("HOST-LOOPBACK"), "reached through {t}: {got}");
        }
        let theirs = out(p, &id, "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '").await?;
        let host: Vec<String> = std::fs::read_dir("/sys/class/net")
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        for name in theirs.lines() {
            ensure!(
                ["lo", "eth0"].contains(&name) || !host.iter().any(|h| h == name),
                "the host's interface {name} is in the sandbox: {theirs}"
            );
        }
        Ok(())
    })
    .await;
    server.abort();
    r?;
    let n = accepted.load(std::sync::atomic::Ordering::SeqCst);
    failure_unless(
        n == 0,
        "contain_network",
        format!("{n} connections reached the host's loopback"),
    )
}

fn failure_unless(ok: bool, check: &'static str, message: String) -> Result<(), CheckFailure> {
    if ok {
        Ok(())
    } else {
        Err(CheckFailure { check, message })
    }
}

/// A process forking until the pids limit stops it leaves the provider answering and another
/// sandbox working; killing it frees its sandbox.
pub async fn contain_fork_bomb(p: &dyn Provider, image: &str) -> Result<(), CheckFailure> {
    let other = match p.spawn(&spec(image)).await {
        Ok(s) => s.runtime_id,
        Err(e) => {
            return Err(CheckFailure {
                check: "contain_fork_bomb",
                message: format!("spawning the bystander failed: {e:?}"),
            })
        }
    };
    let r = with_sandbox("contain_fork_bomb", p, image, |p, id| {
        let other = other.clone();
        async move {
            let bomb = ProcessSpec {
                exec: sh("(while :; do sleep 1000 & done) 2>/dev/null; exec sleep 1000"),
                ..ProcessSpec::default()
            };
            let info = ok!(p.process_start(&id, bomb).await);
            // Full once a fork in the sandbox fails (or after a while: a limit it never
            // reaches is no escape either, as long as everything still answers).
            for _ in 0..50 {
                let probe = ExecRequest {
                    timeout: Some(Duration::from_secs(2)),
                    ..sh("true & wait")
                };
                let c = exec_collect(p, &id, probe).await;
                if !matches!(c.result, Ok(0)) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            ok!(p.health().await);
            let c = exec_collect(p, &other, sh("echo bystander")).await;
            ensure!(
                c.result.is_ok() && c.stdout_str() == "bystander\n",
                "the other sandbox: {:?} {}",
                c.result,
                c.stdout_str()
            );
            ok!(p.process_signal(&id, info.pid, Signal::Kill).await);
            for _ in 0..100 {
                let c = exec_collect(p, &id, sh("echo recovered")).await;
                if c.result.is_ok() && c.stdout_str() == "recovered\n" {
                    return Ok(());
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err("the sandbox never recovered after the bomb was killed".into())
        }
    })
    .await;
    let _ = p.destroy(&other).await;
    r
}

/// A process allocating far past the sandbox's memory is killed; the sandbox and the
/// provider live on.
pub async fn contain_memory_hog(p: &dyn Provider, image: &str) -> Result<(), CheckFailure> {
    let small = SandboxSpec {
        memory_mb: 64,
        ..spec(image)
    };
    let fail = |message: String| CheckFailure {
        check: "contain_memory_hog",
        message,
    };
    let id = p
        .spawn(&small)
        .await
        .map_err(|e| fail(format!("spawn failed: {e:?}")))?
        .runtime_id;
    let body = async {
        // `tail` keeps its whole input when it has no newline: 512 MiB under a 64 MiB limit.
        let got = out(
            p,
            &id,
            "head -c 536870912 /dev/zero | tail > /dev/null; echo $?",
        )
        .await?;
        ensure!(got.trim() == "137", "the hog was not killed: {got}");
        let alive = out(p, &id, "echo alive").await?;
        ensure!(alive == "alive\n", "{alive}");
        ok!(p.health().await);
        Ok(())
    };
    let r: Outcome = body.await;
    let _ = p.destroy(&id).await;
    r.map_err(fail)
}

/// One sandbox cannot see another's processes, signal them, or read its files.
pub async fn contain_other_sandboxes(p: &dyn Provider, image: &str) -> Result<(), CheckFailure> {
    let other = match p.spawn(&spec(image)).await {
        Ok(s) => s.runtime_id,
        Err(e) => {
            return Err(CheckFailure {
                check: "contain_other_sandboxes",
                message: format!("spawning the other sandbox failed: {e:?}"),
            })
        }
    };
    let r = with_sandbox("contain_other_sandboxes", p, image, |p, id| {
        let other = other.clone();
        async move {
            let victim = ProcessSpec {
                exec: sh("exec sleep 4242"),
                ..ProcessSpec::default()
            };
            let info = ok!(p.process_start(&other, victim).await);
            ok!(p
                .write_file(&other, "/workspace/secret", Bytes::from_static(b"s"), None)
                .await);
            let seen = out(
                p,
                &id,
                "for c in /proc/[0-9]*/cmdline; do tr '\\0' ' ' < $c; echo; done",
            )
            .await?;
            ensure!(
                !seen.contains("4242"),
                "the other sandbox's process: {seen}"
            );
            // Every `sleep` this sandbox can see, SIGKILLed.
            let _ = exec_collect(p, &id, sh("killall -9 sleep; true")).await;
            tokio::time::sleep(Duration::from_millis(300)).await;
            let got = ok!(p.process_get(&other, info.pid).await);
            ensure!(
                got.state == ProcessState::Running,
                "the other's process: {got:?}"
            );
            let r = p.read_file(&id, "/workspace/secret").await;
            ensure!(
                matches!(r, Err(ProviderError::FileNotFound(_))),
                "the other's file: {r:?}"
            );
            Ok(())
        }
    })
    .await;
    let _ = p.destroy(&other).await;
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MockProvider;

    /// The checks see a provider that does not isolate: the mock runs commands on the host, so
    /// these fail on it. (The syscall probe is not run there: on the host it would mount.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_mock_fails_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = MockProvider::with_base_dir(dir.path());
        assert!(contain_host_processes(&p, "mock").await.is_err());
        assert!(contain_host_files(&p, "mock").await.is_err());
    }
}
