//! The mock's process agent: a host process per sandbox, started on the first process call,
//! gone with the sandbox (and with the provider's shutdown), its processes with it.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use stacyvm_provider::conformance::proc_sh;
use stacyvm_provider::{MockProvider, Provider, ProviderError};
use stacyvm_types::ProcessState;

mod mock_support;
use mock_support::{agent, fixture, spawn};

/// Whether host process `pid` still exists (a zombie counts as gone).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

async fn gone_within(pid: u32, d: Duration) -> bool {
    let end = Instant::now() + d;
    while Instant::now() < end {
        if !alive(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    !alive(pid)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_starts_on_first_use_and_dies_with_the_sandbox() {
    let f = fixture();
    let (id, root) = spawn(&f.p).await;
    assert_eq!(f.p.agent_pid(&id), None, "spawn starts no agent");
    let info = f.p.process_start(&id, proc_sh("sleep 60")).await.unwrap();
    let agent_pid = f.p.agent_pid(&id).unwrap();
    assert!(alive(agent_pid) && alive(info.pid));
    // The socket is not in the sandbox's files.
    let names: Vec<String> =
        f.p.list_files(&id, "/")
            .await
            .unwrap()
            .into_iter()
            .map(|i| i.path)
            .collect();
    assert_eq!(names, ["workspace"]);
    assert!(!root.join("agent.sock").exists());
    // The process runs in the sandbox's workspace with the sandbox's environment.
    let p =
        f.p.process_start(&id, proc_sh("pwd -P; printf '%s\\n' \"$HOME\""))
            .await
            .unwrap();
    let out = stacyvm_provider::conformance::drain(
        f.p.process_output(&id, p.pid, 0, true).await.unwrap(),
    )
    .await
    .unwrap();
    let want = format!("{}\n{}\n", root.join("workspace").display(), root.display());
    assert_eq!(String::from_utf8_lossy(&out.stdout), want);
    let t = Instant::now();
    f.p.destroy(&id).await.unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "destroy took {:?}",
        t.elapsed()
    );
    assert!(
        gone_within(agent_pid, Duration::from_secs(5)).await,
        "agent survived destroy"
    );
    assert!(
        gone_within(info.pid, Duration::from_secs(5)).await,
        "process survived destroy"
    );
    assert_eq!(f.p.agent_pid(&id), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_agent_is_restarted_and_shutdown_leaves_nothing() {
    let f = fixture();
    let (id, _) = spawn(&f.p).await;
    f.p.process_start(&id, proc_sh("true")).await.unwrap();
    let first = f.p.agent_pid(&id).unwrap();
    std::process::Command::new("kill")
        .args(["-9", &first.to_string()])
        .status()
        .unwrap();
    assert!(gone_within(first, Duration::from_secs(5)).await);
    // The old connection broke; the next call starts a fresh agent (the old processes are gone
    // with the old agent: the registry lived there).
    let info = f.p.process_start(&id, proc_sh("sleep 60")).await.unwrap();
    let second = f.p.agent_pid(&id).unwrap();
    assert_ne!(first, second);
    assert_eq!(
        f.p.process_get(&id, info.pid).await.unwrap().state,
        ProcessState::Running
    );
    f.p.shutdown().await;
    assert!(
        gone_within(second, Duration::from_secs(5)).await,
        "agent survived shutdown"
    );
    assert!(
        gone_within(info.pid, Duration::from_secs(5)).await,
        "process survived shutdown"
    );
}

#[tokio::test]
async fn without_an_agent_processes_are_unavailable() {
    let base = tempfile::tempdir().unwrap();
    let p = MockProvider::with_base_dir(base.path()).with_agent(base.path().join("missing"));
    let (id, _) = spawn(&p).await;
    let r = p.process_list(&id).await;
    assert!(
        matches!(&r, Err(ProviderError::Unavailable(m)) if m.contains("cargo build --release")),
        "{r:?}"
    );
    // Exec is unaffected.
    assert_eq!(mock_support::stdout(&p, &id, "echo ok").await, "ok\n");
    let _ = agent();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_proceed_while_a_reader_follows() {
    let f = fixture();
    let (id, _) = spawn(&f.p).await;
    let info = f.p.process_start(&id, proc_sh("sleep 60")).await.unwrap();
    let _reader = f.p.process_output(&id, info.pid, 0, true).await.unwrap();
    let t = Instant::now();
    f.p.process_list(&id).await.unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "list took {:?}",
        t.elapsed()
    );
    let t = Instant::now();
    f.p.destroy(&id).await.unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "destroy took {:?}",
        t.elapsed()
    );
}

/// A reader that stops reading costs the host a bounded buffer, not the process's whole
/// output: once a few frames wait unread the host drops its read and asks again from where the
/// reader stopped, so the agent's ring decides what is lost and a gap record says how much.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_reader_is_not_buffered_on_the_host() {
    use futures_util::StreamExt;
    use stacyvm_types::OutputRecord;
    const TOTAL: u64 = 64 << 20;
    let f = fixture();
    let (id, _) = spawn(&f.p).await;
    let mut spec = proc_sh(&format!("sleep 0.3; head -c {TOTAL} /dev/zero"));
    spec.output_buffer = Some(1 << 20);
    let info = f.p.process_start(&id, spec).await.unwrap();
    let mut stream = f.p.process_output(&id, info.pid, 0, true).await.unwrap();
    // The reader stalls while the process prints everything and exits.
    let end = Instant::now() + Duration::from_secs(30);
    while f.p.process_get(&id, info.pid).await.unwrap().state == ProcessState::Running {
        assert!(Instant::now() < end, "the writer did not finish");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (mut data, mut dropped, mut next, mut exit) = (0u64, 0u64, 0u64, None);
    while let Some(r) = stream.next().await {
        match r.unwrap() {
            OutputRecord::Data { seq, data: d, .. } => {
                assert_eq!(seq, next, "no byte twice, none skipped without a gap");
                assert!(d.iter().all(|b| *b == 0));
                data += d.len() as u64;
                next = seq + d.len() as u64;
            }
            OutputRecord::Gap { seq, dropped_bytes } => {
                assert_eq!(seq, next);
                dropped += dropped_bytes;
                next = seq + dropped_bytes;
            }
            OutputRecord::Exit { exit_code, .. } => exit = Some(exit_code),
        }
    }
    assert_eq!(exit, Some(0));
    assert_eq!(
        data + dropped,
        TOTAL,
        "every byte delivered or reported dropped"
    );
    assert!(
        data <= 4 << 20,
        "{data} bytes reached a reader that read nothing while they were printed: the host \
         buffered them"
    );
    f.p.destroy(&id).await.unwrap();
}

/// Processes get the same clean environment as exec: nothing of the server's own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_do_not_inherit_the_server_environment() {
    std::env::set_var("STACYVM_TEST_PROC_LEAK_CHECK", "secret-from-the-host");
    let f = fixture();
    let (id, root) = spawn(&f.p).await;
    let mut spec = proc_sh("env");
    spec.exec.env.insert("FROM_REQUEST".into(), "yes".into());
    spec.exec.env.insert("HOME".into(), "/elsewhere".into());
    let info = f.p.process_start(&id, spec).await.unwrap();
    let out = stacyvm_provider::conformance::drain(
        f.p.process_output(&id, info.pid, 0, true).await.unwrap(),
    )
    .await
    .unwrap();
    let out = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!out.contains("secret-from-the-host"), "{out}");
    assert!(out.contains("FROM_REQUEST=yes"), "{out}");
    assert!(
        out.lines().any(|l| l.starts_with("PATH=/usr/local/sbin:")),
        "{out}"
    );
    assert!(
        out.lines().any(|l| l == format!("HOME={}", root.display())),
        "the fixed variables win: {out}"
    );
}

/// A persistent mock (`MockProvider::persistent`) leaves its sandboxes and their agents running
/// when it goes away (as with `kill -9` of the control plane); a new one on the same base adopts
/// them and reconnects, and the process's output is all still there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_sandboxes_and_processes_outlive_the_provider() {
    let base = tempfile::tempdir().unwrap();
    let base = base.path().canonicalize().unwrap();
    let a = MockProvider::persistent(&base).with_agent(agent());
    let (id, root) = spawn(&a).await;
    let (quiet, _) = spawn(&a).await;
    mock_support::write(&a, &id, "/workspace/kept", b"yes", None).await;
    let info = a
        .process_start(&id, proc_sh("echo one; sleep 60"))
        .await
        .unwrap();
    let agent_pid = a.agent_pid(&id).unwrap();
    // The check below is that output recorded before the restart is still there after it, so
    // wait until it is recorded (under load, `echo` may not have run yet).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let seen = stacyvm_provider::conformance::drain(
            a.process_output(&id, info.pid, 0, false).await.unwrap(),
        )
        .await
        .unwrap();
        if seen.stdout == b"one\n" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the process never wrote its line: {:?}",
            seen.stdout
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(a);
    assert!(
        alive(agent_pid) && alive(info.pid),
        "dropping the provider ended them"
    );

    let b = MockProvider::persistent(&base).with_agent(agent());
    let ids: Vec<String> = b
        .list_runtimes()
        .await
        .unwrap()
        .unwrap()
        .into_iter()
        .map(|r| r.runtime_id)
        .collect();
    assert!(ids.contains(&id) && ids.contains(&quiet), "{ids:?}");
    assert_eq!(b.host_root(&id).unwrap(), root);
    assert_eq!(b.agent_pid(&id), Some(agent_pid), "adopted, not restarted");
    let list = b.process_list(&id).await.unwrap();
    assert!(
        list.iter()
            .any(|p| p.pid == info.pid && p.state == ProcessState::Running),
        "{list:?}"
    );
    let out = stacyvm_provider::conformance::drain(
        b.process_output(&id, info.pid, 0, false).await.unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(out.stdout, b"one\n");
    assert_eq!(
        b.read_file(&id, "/workspace/kept").await.unwrap().as_ref(),
        b"yes"
    );
    // The sandbox without an agent gets one on demand.
    let q = b.process_start(&quiet, proc_sh("echo hi")).await.unwrap();
    let out = stacyvm_provider::conformance::drain(
        b.process_output(&quiet, q.pid, 0, true).await.unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(out.stdout, b"hi\n");
    let quiet_agent = b.agent_pid(&quiet).unwrap();
    // Destroy still ends everything and removes the directories.
    b.destroy(&id).await.unwrap();
    b.destroy(&quiet).await.unwrap();
    for pid in [agent_pid, info.pid, quiet_agent] {
        assert!(
            gone_within(pid, Duration::from_secs(5)).await,
            "{pid} survived destroy"
        );
    }
    assert!(!root.exists());
    let left: Vec<_> = std::fs::read_dir(&base).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
    assert!(MockProvider::persistent(&base)
        .list_runtimes()
        .await
        .unwrap()
        .unwrap()
        .is_empty());
}

/// Stdin a process does not read waits in the agent only up to a bound (8 MiB); past it a
/// write is refused as unavailable (retry later) instead of the agent keeping every byte, and
/// the process is unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unread_stdin_is_bounded() {
    let f = fixture();
    let (id, _) = spawn(&f.p).await;
    let mut spec = proc_sh("sleep 60");
    spec.stdin = true;
    let info = f.p.process_start(&id, spec).await.unwrap();
    // Twenty writes at once: none completes (the process reads nothing). Each sends its first
    // 512 KiB piece and waits for it to be written, so 10 MiB would wait.
    let mut writes: futures_util::stream::FuturesUnordered<_> = (0..20)
        .map(|_| {
            f.p.process_stdin(
                &id,
                info.pid,
                bytes::Bytes::from(vec![b'x'; 1 << 20]),
                false,
            )
        })
        .collect();
    let mut refused = 0;
    while let Ok(Some(r)) = tokio::time::timeout(
        Duration::from_secs(5),
        futures_util::StreamExt::next(&mut writes),
    )
    .await
    {
        match r {
            Err(ProviderError::Unavailable(m)) if m.contains("still waiting") => refused += 1,
            other => panic!("{other:?}"),
        }
    }
    drop(writes);
    assert!(
        (1..=4).contains(&refused),
        "{refused} of 20 refused (16 pieces of 512 KiB may wait)"
    );
    let now = f.p.process_get(&id, info.pid).await.unwrap();
    assert_eq!(now.state, ProcessState::Running);
    f.p.destroy(&id).await.unwrap();
}
