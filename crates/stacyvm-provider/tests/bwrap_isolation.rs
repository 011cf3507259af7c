//! What a bwrap sandbox isolates, checked by its effects: namespaces (network, pids, host
//! name), no capabilities and `no_new_privs`, the seccomp filter (calls that would succeed
//! without it fail), cgroup limits (a memory hog and a fork loop), the private writable layer,
//! and a destroy that leaves nothing behind. Selected by the `bwrap` nextest profile.
#![cfg(feature = "bwrap")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod bwrap_support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use bwrap_support::{fixture, fixture_with, sh_out, spawn, spawn_with, CGROUP_PARENT, IMAGE};
use bytes::Bytes;
use stacyvm_provider::conformance::sh;
use stacyvm_provider::{ProcessSpec, Provider, ProviderError};
use stacyvm_types::{ProcessState, Signal};

/// Calls a sandbox must not make, each printed as `name=errno` (0 = it worked). Every one of
/// them succeeds for an unprivileged process without the filter (a nested user namespace,
/// a personality, tracing itself, a keyring, clone3), so EPERM/ENOSYS here is the filter's.
const PROBE_C: &str = r#"
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <sys/mount.h>
#include <sys/personality.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <unistd.h>
static void report(const char *name, long r) { printf("%s=%d\n", name, r < 0 ? errno : 0); }
int main(void) {
    report("unshare", unshare(CLONE_NEWUSER));
    report("mount", mount("none", "/tmp", "tmpfs", 0, 0));
    report("ptrace", ptrace(PTRACE_TRACEME, 0, 0, 0));
    report("personality", personality(0x0400000));
    report("keyctl", syscall(SYS_keyctl, 0, -3, 0));
    report("bpf", syscall(SYS_bpf, 0, 0, 0));
    report("setns", syscall(SYS_setns, 0, 0));
    report("clone_newns", syscall(SYS_clone, CLONE_NEWNS | 17, 0, 0, 0, 0));
    report("clone3", syscall(SYS_clone3, 0, 0));
    report("io_uring_setup", syscall(SYS_io_uring_setup, 1, 0));
    return 0;
}
"#;

/// The probe, compiled statically (busybox has no libc to link against).
fn probe(dir: &Path) -> Bytes {
    let src = dir.join("probe.c");
    let bin = dir.join("probe");
    std::fs::write(&src, PROBE_C).unwrap();
    let out = std::process::Command::new("cc")
        .args(["-static", "-O0", "-o"])
        .arg(&bin)
        .arg(&src)
        .output()
        .expect("cc (gcc and libc6-dev build the seccomp probe)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Bytes::from(std::fs::read(bin).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_capabilities_and_no_new_privs() {
    let f = fixture().await;
    let p = &*f.p;
    let id = spawn(p).await;
    // Network: only the loopback interface.
    let (_, dev) = sh_out(p, &id, "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '").await;
    assert_eq!(dev.trim(), "lo", "{dev}");
    // Pids: the agent is PID 1, and no host process is visible.
    let (_, init) = sh_out(p, &id, "tr '\\0' ' ' < /proc/1/cmdline").await;
    assert!(init.starts_with("/.stacyvm/agent --listen"), "{init}");
    let (_, all) = sh_out(
        p,
        &id,
        "for c in /proc/[0-9]*/cmdline; do tr '\\0' ' ' < $c; echo; done",
    )
    .await;
    let host_test = std::env::current_exe().unwrap();
    let host_test = host_test.file_name().unwrap().to_string_lossy();
    assert!(
        !all.contains(&*host_test),
        "a host process is visible: {all}"
    );
    assert!(all.lines().filter(|l| !l.is_empty()).count() < 10, "{all}");
    // UTS: the sandbox id is the host name.
    assert_eq!(sh_out(p, &id, "hostname").await.1.trim(), id);
    // No capability in any set, no_new_privs, and the filter installed.
    let (_, status) = sh_out(p, &id, "cat /proc/self/status").await;
    for cap in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        let line = status.lines().find(|l| l.starts_with(cap)).unwrap();
        assert!(line.ends_with("0000000000000000"), "{line}");
    }
    assert!(status.lines().any(|l| l == "NoNewPrivs:\t1"), "{status}");
    assert!(status.lines().any(|l| l == "Seccomp:\t2"), "{status}");
    // The user namespace is there (uid 0 mapped from the provider's uid only).
    let (_, map) = sh_out(p, &id, "cat /proc/self/uid_map").await;
    assert_eq!(map.split_whitespace().collect::<Vec<_>>(), ["0", "0", "1"]);
    p.destroy(&id).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seccomp_denies_what_docker_denies() {
    let f = fixture().await;
    let p = &*f.p;
    let id = spawn(p).await;
    let bin = probe(f.dir.path());
    p.write_file(&id, "/workspace/probe", bin, Some("0755"))
        .await
        .unwrap();
    let (code, out) = sh_out(p, &id, "/workspace/probe").await;
    assert_eq!(code, 0, "{out}");
    let eperm = libc::EPERM.to_string();
    for name in [
        "unshare",
        "mount",
        "ptrace",
        "personality",
        "keyctl",
        "bpf",
        "setns",
        "clone_newns",
        "io_uring_setup",
    ] {
        let want = format!("{name}={eperm}");
        assert!(out.lines().any(|l| l == want), "{want} in {out}");
    }
    let enosys = format!("clone3={}", libc::ENOSYS);
    assert!(out.lines().any(|l| l == enosys), "{out}");
    // Ordinary forks still work (clone without namespace flags).
    assert_eq!(sh_out(p, &id, "echo $(echo nested)").await.1, "nested\n");
    p.destroy(&id).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_hog_is_killed_and_the_sandbox_lives_on() {
    let f = fixture().await;
    let p = &*f.p;
    let id = spawn_with(p, 64).await;
    // `tail` keeps its whole input when it has no newline: 500 MiB under a 64 MiB limit.
    let (_, out) = sh_out(
        p,
        &id,
        "head -c 524288000 /dev/zero | tail > /dev/null; echo $?",
    )
    .await;
    assert_eq!(
        out.lines().next(),
        Some("137"),
        "tail was not SIGKILLed: {out}"
    );
    // The kernel's OOM killer did it, in the sandbox's memory group.
    let memory = &cgroup_dirs(&id)[0];
    let events = ["memory.events", "memory.oom_control"]
        .iter()
        .find_map(|f| std::fs::read_to_string(memory.join(f)).ok())
        .unwrap();
    let kills: u64 = events
        .lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap();
    assert!(kills >= 1, "{events}");
    let stats = p.stats(&id).await.unwrap().unwrap();
    assert_eq!(stats.mem_limit_bytes, 64 * 1024 * 1024);
    assert_eq!(sh_out(p, &id, "echo alive").await.1, "alive\n");
    p.destroy(&id).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fork_loop_stops_at_pids_max_without_wedging_the_agent() {
    let f = fixture_with(|c| c.pids_limit = 48).await;
    let p = &*f.p;
    let id = spawn(p).await;
    let bomb = ProcessSpec {
        exec: sh("i=0; while [ $i -lt 500 ]; do sleep 60 & i=$((i+1)); done; wait"),
        ..ProcessSpec::default()
    };
    let info = p.process_start(&id, bomb).await.unwrap();
    // The group fills up to its limit and stays there.
    let pids_dir = cgroup_dirs(&id)
        .into_iter()
        .find(|d| d.starts_with("/sys/fs/cgroup/pids") || d.join("pids.max").exists())
        .unwrap();
    let mut current = 0;
    for _ in 0..100 {
        current = read_u64(&pids_dir.join("pids.current"));
        if current >= 40 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!((40..=48).contains(&current), "pids.current {current}");
    // The agent still answers while the group is full.
    let listed = tokio::time::timeout(Duration::from_secs(20), p.process_list(&id))
        .await
        .expect("the agent answers at pids.max");
    assert!(listed.is_ok(), "{listed:?}");
    let killed = p.process_signal(&id, info.pid, Signal::Kill).await;
    assert!(killed.is_ok(), "{killed:?}");
    let mut out = None;
    for _ in 0..100 {
        let c = stacyvm_provider::conformance::exec_collect(p, &id, sh("echo recovered")).await;
        if c.result.is_ok() {
            out = Some(c.stdout_str());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(out.as_deref(), Some("recovered\n"));
    let got = p.process_get(&id, info.pid).await.unwrap();
    assert_eq!(got.state, ProcessState::Exited);
    p.destroy(&id).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_stay_in_their_own_sandbox() {
    let f = fixture().await;
    let p = &*f.p;
    let (a, b) = (spawn(p).await, spawn(p).await);
    sh_out(
        p,
        &a,
        "echo mine > /workspace/a.txt; echo x > /etc/touched; rm /bin/ls",
    )
    .await;
    assert_eq!(sh_out(p, &a, "cat /etc/touched").await.1, "x\n");
    let (_, seen) = sh_out(p, &b, "ls /workspace; ls /etc; ls /bin/ls").await;
    assert!(
        !seen.contains("a.txt") && !seen.contains("touched"),
        "{seen}"
    );
    assert!(seen.contains("/bin/ls"), "b lost /bin/ls: {seen}");
    let r = p.read_file(&b, "/workspace/a.txt").await;
    assert!(matches!(r, Err(ProviderError::FileNotFound(_))), "{r:?}");
    // The shared root filesystem in the image store is untouched.
    let tag = stacyvm_image::ImageRef::parse(IMAGE).unwrap();
    let lower = f.p.image_store().rootfs(&tag).await.unwrap().path;
    assert!(!lower.join("etc/touched").exists());
    assert!(std::fs::symlink_metadata(lower.join("bin/ls")).is_ok());
    assert!(!lower.join("workspace/a.txt").exists());
    p.destroy(&a).await.unwrap();
    p.destroy(&b).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destroy_leaves_no_process_mount_cgroup_or_directory() {
    let f = fixture().await;
    let p = &*f.p;
    let id = spawn(p).await;
    p.process_start(
        &id,
        ProcessSpec {
            exec: sh("sleep 600 & setsid sleep 601 & sleep 602"),
            ..ProcessSpec::default()
        },
    )
    .await
    .unwrap();
    let dir = Path::new(&f.config.data_dir).join("sandboxes").join(&id);
    assert!(dir.is_dir());
    assert!(mounts().contains(&dir.join("merged").to_string_lossy().into_owned()));
    let groups = cgroup_dirs(&id);
    assert!(groups.iter().all(|g| g.is_dir()), "{groups:?}");
    // bwrap, the agent and three sleeps (sh execs the last), once they all started.
    let mut members = String::new();
    for _ in 0..100 {
        members = std::fs::read_to_string(groups[0].join("cgroup.procs")).unwrap();
        if members.lines().count() >= 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(members.lines().count() >= 5, "{members}");
    p.destroy(&id).await.unwrap();
    assert!(!dir.exists(), "sandbox directory left");
    assert!(!mounts().contains(&*id), "mount left: {}", mounts());
    for g in &groups {
        assert!(!g.exists(), "cgroup left: {}", g.display());
    }
    for pid in members.lines() {
        let gone = std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|c| !String::from_utf8_lossy(&c).contains("sleep"))
            .unwrap_or(true);
        assert!(gone, "process {pid} survived");
    }
    assert_eq!(
        p.status(&id).await.unwrap(),
        stacyvm_types::SandboxState::Destroyed
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_image_names_the_commands_that_add_it() {
    let f = fixture().await;
    let spec = stacyvm_provider::SandboxSpec {
        // A registry that is not there: the pull on spawn fails at once, without a network.
        image: "127.0.0.1:1/nope/missing:1".into(),
        ..bwrap_support::spec()
    };
    let e = f.p.spawn(&spec).await.unwrap_err();
    match &e {
        ProviderError::Unavailable(m) => {
            assert!(
                m.contains("pulling it failed")
                    && m.contains("stacyvm image pull")
                    && m.contains("import"),
                "{m}"
            )
        }
        e => panic!("{e:?}"),
    }
    let listed = f.p.list_runtimes().await.unwrap().unwrap();
    assert!(listed.is_empty(), "{listed:?}");
    let left = std::fs::read_dir(Path::new(&f.config.data_dir).join("sandboxes"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(left, 0);
}

fn mounts() -> String {
    std::fs::read_to_string("/proc/mounts").unwrap()
}

fn read_u64(p: &Path) -> u64 {
    std::fs::read_to_string(p)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// The sandbox's cgroup directories on this host's layout.
fn cgroup_dirs(id: &str) -> Vec<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    if root.join("cgroup.controllers").exists() {
        vec![root.join(CGROUP_PARENT).join(id)]
    } else {
        ["memory", "pids", "cpu"]
            .iter()
            .map(|c| root.join(c).join(CGROUP_PARENT).join(id))
            .collect()
    }
}
