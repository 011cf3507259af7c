//! Background processes (sandbox-model.md §1): output records byte-exact and in `seq` order,
//! follow to the exit record, stdin, signals, timeouts, list/get, the process errors, PTYs,
//! re-reading after a dropped reader, and destroy ending everything.

use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use stacyvm_types::{OutputRecord, OutputStream, ProcessInfo, ProcessState, PtySize, Signal};

use super::{sh, spec, with_sandbox, CheckFailure, Outcome};
use crate::{ExecRequest, ProcessSpec, Provider, ProviderError, RecordStream};

/// Deadline for a followed read to reach its exit record.
const FOLLOW_DEADLINE: Duration = Duration::from_secs(30);
/// A pid no sandbox hands out (above Linux's pid_max limit).
const NO_PID: u32 = 4_000_000_000;

/// A background process running `cmd` in shell mode.
pub fn proc_sh(cmd: &str) -> ProcessSpec {
    ProcessSpec {
        exec: sh(cmd),
        ..Default::default()
    }
}

/// Output of a read, split by stream; `exit` is the exit record's (code, signal).
#[derive(Debug, Default)]
pub struct ReadOutput {
    pub records: Vec<OutputRecord>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub pty: Vec<u8>,
    pub exit: Option<(i32, Option<Signal>)>,
}

impl ReadOutput {
    fn push(&mut self, r: OutputRecord) {
        match &r {
            OutputRecord::Data { stream, data, .. } => match stream {
                OutputStream::Stdout => self.stdout.extend_from_slice(data),
                OutputStream::Stderr => self.stderr.extend_from_slice(data),
                OutputStream::Pty => self.pty.extend_from_slice(data),
            },
            OutputRecord::Exit {
                exit_code, signal, ..
            } => self.exit = Some((*exit_code, *signal)),
            OutputRecord::Gap { .. } => {}
        }
        self.records.push(r);
    }
}

/// Drains `stream` (within [`FOLLOW_DEADLINE`]), checking that `seq` only increases.
pub async fn drain(mut stream: RecordStream) -> Result<ReadOutput, String> {
    let mut out = ReadOutput::default();
    let all = async {
        while let Some(r) = stream.next().await {
            let r = r.map_err(|e| format!("read failed: {e:?}"))?;
            if let Some(last) = out.records.last() {
                ensure!(
                    r.seq() > last.seq()
                        || matches!(r, OutputRecord::Exit { .. }) && r.seq() >= last.seq(),
                    "seq went from {} to {}",
                    last.seq(),
                    r.seq()
                );
            }
            out.push(r);
        }
        Ok::<(), String>(())
    };
    match tokio::time::timeout(FOLLOW_DEADLINE, all).await {
        Ok(r) => r?,
        Err(_) => return Err(format!("read did not end; got {:?}", out.records)),
    }
    Ok(out)
}

/// Follows process `pid` from `since` to its exit record.
async fn follow(p: &dyn Provider, id: &str, pid: u32, since: u64) -> Result<ReadOutput, String> {
    let s = ok!(p.process_output(id, pid, since, true).await);
    let out = drain(s).await?;
    ensure!(out.exit.is_some(), "no exit record: {:?}", out.records);
    Ok(out)
}

/// Waits until the process's output holds `needle` (non-follow reads, polled).
async fn wait_output(
    p: &dyn Provider,
    id: &str,
    pid: u32,
    needle: &str,
) -> Result<ReadOutput, String> {
    let deadline = tokio::time::Instant::now() + FOLLOW_DEADLINE;
    loop {
        let out = drain(ok!(p.process_output(id, pid, 0, false).await)).await?;
        let all = [&out.stdout[..], &out.pty[..]].concat();
        if String::from_utf8_lossy(&all).contains(needle) {
            return Ok(out);
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "output never held {needle:?}: {:?}",
            String::from_utf8_lossy(&all)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls until process `pid` has exited.
async fn wait_exited(p: &dyn Provider, id: &str, pid: u32) -> Outcome {
    let deadline = tokio::time::Instant::now() + FOLLOW_DEADLINE;
    loop {
        let info = ok!(p.process_get(id, pid).await);
        if info.state == ProcessState::Exited {
            return Ok(());
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "still running: {info:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A record without its (possibly huge) data.
fn describe(r: &OutputRecord) -> String {
    match r {
        OutputRecord::Data { stream, data, .. } => format!("{stream:?}, {} bytes", data.len()),
        other => format!("{other:?}"),
    }
}

fn check_exited(info: &ProcessInfo, code: i32, signal: Option<Signal>) -> Outcome {
    ensure!(
        info.state == ProcessState::Exited && info.exit_code == Some(code) && info.signal == signal,
        "expected exited with {code} / {signal:?}: {info:?}"
    );
    Ok(())
}

/// stdout and stderr records are byte-exact; a follow ends with the exit record; a later
/// non-follow read from 0 returns the same records.
pub async fn process_output_streams(p: &dyn Provider, image: &str) -> Result<(), CheckFailure> {
    with_sandbox("process_output_streams", p, image, |p, id| async move {
        let mut spec = proc_sh("printf 'out\\0\\377'; echo err >&2; printf more");
        spec.tag = "t1".into();
        let info = ok!(p.process_start(&id, spec).await);
        ensure!(info.tag == "t1" && !info.pty && !info.stdin, "{info:?}");
        let out = follow(p, &id, info.pid, 0).await?;
        ensure!(out.stdout == b"out\0\xffmore", "stdout {:?}", out.stdout);
        ensure!(out.stderr == b"err\n", "stderr {:?}", out.stderr);
        ensure!(out.exit == Some((0, None)), "exit {:?}", out.exit);
        let again = drain(ok!(p.process_output(&id, info.pid, 0, false).await)).await?;
        ensure!(
            again.records == out.records,
            "re-read differs: {:?} vs {:?}",
            again.records,
            out.records
        );
        let got = ok!(p.process_get(&id, info.pid).await);
        check_exited(&got, 0, None)?;
        // `since` past the end returns nothing (the exit record's seq is the last).
        let last = out.records.last().map(|r| r.seq()).unwrap_or(0);
        let none = drain(ok!(p.process_output(&id, info.pid, last + 1, false).await)).await?;
        ensure!(
            none.records.is_empty(),
            "beyond the end: {:?}",
            none.records
        );
        // The exit code passes through; shell mode quotes args.
        let mut spec = proc_sh("exit");
        spec.exec.args = vec!["3".into()];
        let info = ok!(p.process_start(&id, spec).await);
        let out = follow(p, &id, info.pid, 0).await?;
        ensure!(out.exit == Some((3, None)), "exit {:?}", out.exit);
        // Start and follow in one call: the same process, every byte, the exit last; a start
        // that fails fails before any record.
        let spec = proc_sh("printf one; echo two >&2; exit 4");
        let (info, records) = ok!(p.process_start_follow(&id, spec).await);
        ensure!(info.pid > 0 && !info.pty, "{info:?}");
        let out = drain(records).await?;
        ensure!(out.stdout == b"one", "stdout {:?}", out.stdout);
        ensure!(out.stderr == b"two\n", "stderr {:?}", out.stderr);
        ensure!(out.exit == Some((4, None)), "exit {:?}", out.exit);
        let got = ok!(p.process_get(&id, info.pid).await);
        check_exited(&got, 4, None)?;
        let mut bad = proc_sh("true");
        bad.exec.workdir = Some("/no/such/dir".into());
        ensure!(
            p.process_start_follow(&id, bad).await.is_err(),
            "a start in a missing workdir must fail"
        );
        Ok(())
    })
    .await
}

/// Stdin reaches the process byte-exact and closing it ends `cat`; stdin of a process started
/// without it is `StdinClosed`.
pub async fn process_stdin(p: &dyn Provider, image: &str) -> Result<(), CheckFailure> {
    with_sandbox("process_stdin", p, image, |p, id| async move {
        let mut spec = proc_sh("cat");
        spec.stdin = true;
        let info = ok!(p.process_start(&id, spec).await);
        ensure!(info.stdin, "{info:?}");
        let data = Bytes::from_static(b"hello\0\xff\n");
        let n = ok!(p.process_stdin(&id, info.pid, data.clone(), false).await);
        ensure!(n == data.len() as u64, "wrote {n}");
        let n = ok!(p
            .process_stdin(&id, info.pid, Bytes::from_static(b"end"), true)
            .await);
        ensure!(n == 3, "wrote {n}");
        let out = follow(p, &id, info.pid, 0).await?;
        ensure!(out.stdout == b"hello\0\xff\nend", "stdout {:?}", out.stdout);
        ensure!(out.exit == Some((0, None)), "exit {:?}", out.exit);
        let r = p
            .process_stdin(&id, info.pid, Bytes::from_static(b"x"), false)
            .await;
        ensure!(
            matches!(
                r,
                Err(ProviderError::StdinClosed(_) | ProviderError::ProcessExited(_))
            ),
            "stdin after exit: {r:?}"
        );
        let info = ok!(p.process_start(&id, proc_sh("sleep 30")).await);
        let r = p
            .process_stdin(&id, info.pid, Bytes::from_static(b"x"), false)
            .await;
        ensure!(
            matches!(r, Err(ProviderError::StdinClosed(_))),
            "no stdin: {r:?}"
        );
        ok!(p.process_signal(&id, info.pid, Signal::Kill).await);
        Ok(())
    })
    .await
}

/// TERM ends the process with 143 and signal TERM; a timeout ends it with 124.
pub async fn process_signal_timeout(p: &dyn Provider, image: &str) -> Result<(), CheckFailure> {
    with_sandbox("process_signal_timeout", p, image, |p, id| async move {
        let info = ok!(p.process_start(&id, proc_sh("sleep 30")).await);
        ensure!(info.state == ProcessState::Running, "{info:?}");
        ok!(p.process_signal(&id, info.pid, Signal::Term).await);
        let out = follow(p, &id, info.pid, 0).await?;
        ensure!(
            out.exit == Some((143, Some(Signal::Term))),
            "exit {:?}",
            out.exit
        );
        check_exited(
            &ok!(p.process_get(&id, info.pid).await),
            143,
            Some(Signal::Term),
        )?;
        let mut spec = proc_sh("sleep 30");
        spec.exec.timeout = Some(Duration::from_millis(500));
        let start = std::time::Instant::now();
        let info = ok!(p.process_start(&id, spec).await);
        let out = follow(p, &id, info.pid, 0).await?;
        ensure!(
            out.exit.map(|e| e.0) == Some(124),
            "timeout exit {:?}",
            out.exit
        );
        ensure!(
            start.elapsed() < Duration::from_secs(15),
            "took {:?}",
            start.elapsed()
        );
        Ok(())
    })
    .await
}

/// List and get show the processes; an unknown pid is `ProcessNotFound` on every call, and a
/// resize of a pipe process is `NotAPty`.
pub async fn process_list_and_errors(p: &dyn Provider, image: &str) -> Result<(), CheckFailure> {
    with_sandbox("process_list_and_errors", p, image, |p, id| async move {
        let mut a = proc_sh("sleep 30");
        a.tag = "a".into();
        let a = ok!(p.process_start(&id, a).await);
        let mut b = ProcessSpec {
            exec: ExecRequest {
                command: "sleep".into(),
                args: vec!["30".into()],
                mode: stacyvm_types::ExecMode::Argv,
                ..Default::default()
            },
            ..Default::default()
        };
        b.tag = "b".into();
        let b = ok!(p.process_start(&id, b).await);
        ensure!(b.command == "sleep" && b.args == ["30"], "{b:?}");
        let list = ok!(p.process_list(&id).await);
        let tags: Vec<(u32, &str)> = list.iter().map(|i| (i.pid, i.tag.as_str())).collect();
        ensure!(
            tags.contains(&(a.pid, "a")) && tags.contains(&(b.pid, "b")),
            "{tags:?}"
        );
        let got = ok!(p.process_get(&id, b.pid).await);
        ensure!(
            got.tag == "b" && got.state == ProcessState::Running,
            "{got:?}"
        );
        let r = p
            .process_resize(&id, a.pid, PtySize { cols: 80, rows: 24 })
            .await;
        ensure!(
            matches!(r, Err(ProviderError::NotAPty(_))),
            "resize of a pipe: {r:?}"
        );
        let nf =
            |r: &Result<(), ProviderError>| matches!(r, Err(ProviderError::ProcessNotFound(_)));
        let r = p.process_get(&id, NO_PID).await.map(drop);
        ensure!(nf(&r), "get: {r:?}");
        let r = p.process_output(&id, NO_PID, 0, false).await.map(drop);
        ensure!(nf(&r), "output: {r:?}");
        let r = p
            .process_stdin(&id, NO_PID, Bytes::new(), true)
            .await
            .map(drop);
        ensure!(nf(&r), "stdin: {r:?}");
        let r = p.process_signal(&id, NO_PID, Signal::Term).await.map(drop);
        ensure!(nf(&r), "signal: {r:?}");
        let r = p
            .process_resize(&id, NO_PID, PtySize { cols: 80, rows: 24 })
            .await;
        ensure!(nf(&r), "resize: {r:?}");
        // The others were not touched.
        let got = ok!(p.process_get(&id, a.pid).await);
        ensure!(got.state == ProcessState::Running, "{got:?}");
        let r = p.process_list("sb-nonexistent").await;
        ensure!(
            matches!(r, Err(ProviderError::SandboxNotFound(_))),
            "unknown sandbox: {r:?}"
        );
        Ok(())
    })
    .await
}

/// A PTY process sees a terminal of the asked size, and `stty size` follows a resize.
pub async fn process_pty(p: &dyn Provider, image: &str) -> Result<(), CheckFailure> {
    with_sandbox("process_pty", p, image, |p, id| async move {
        let mut spec = proc_sh("tty; stty size; echo ready; read x; stty size");
        spec.pty = Some(PtySize { cols: 80, rows: 24 });
        let info = ok!(p.process_start(&id, spec).await);
        ensure!(info.pty, "{info:?}");
        let first = wait_output(p, &id, info.pid, "ready").await?;
        let text = String::from_utf8_lossy(&first.pty).into_owned();
        ensure!(text.contains("/dev/pts/"), "tty: {text:?}");
        ensure!(text.contains("24 80"), "size: {text:?}");
        ensure!(
            first.stdout.is_empty() && first.stderr.is_empty(),
            "pty output only: {first:?}"
        );
        ok!(p
            .process_resize(
                &id,
                info.pid,
                PtySize {
                    cols: 100,
                    rows: 30
                }
            )
            .await);
        ok!(p
            .process_stdin(&id, info.pid, Bytes::from_static(b"\n"), false)
            .await);
        let out = follow(p, &id, info.pid, 0).await?;
        let text = String::from_utf8_lossy(&out.pty).into_owned();
        ensure!(text.contains("30 100"), "after resize: {text:?}");
        ensure!(out.exit == Some((0, None)), "exit {:?}", out.exit);
        Ok(())
    })
    .await
}

/// Dropping a following reader ends the read, never the process; a new read from 0 returns the
/// same bytes again.
pub async fn process_reattach(p: &dyn Provider, image: &str) -> Result<(), CheckFailure> {
    with_sandbox("process_reattach", p, image, |p, id| async move {
        let info = ok!(p
            .process_start(&id, proc_sh("echo one; sleep 1; echo two; sleep 30"))
            .await);
        let mut s = ok!(p.process_output(&id, info.pid, 0, true).await);
        let first = tokio::time::timeout(FOLLOW_DEADLINE, s.next()).await;
        let first = match first {
            Ok(Some(Ok(r))) => r,
            other => return Err(format!("first record: {other:?}")),
        };
        drop(s);
        ensure!(
            matches!(&first, OutputRecord::Data { data, .. } if data.starts_with(b"one")),
            "{first:?}"
        );
        let again = wait_output(p, &id, info.pid, "two").await?;
        ensure!(again.stdout == b"one\ntwo\n", "{:?}", again.stdout);
        ensure!(again.records.first() == Some(&first), "{:?}", again.records);
        let got = ok!(p.process_get(&id, info.pid).await);
        ensure!(
            got.state == ProcessState::Running,
            "dropped reader ended it: {got:?}"
        );
        // Resuming after the first record skips exactly its bytes.
        let next = first.seq() + 1;
        let rest = drain(ok!(p.process_output(&id, info.pid, next, false).await)).await?;
        ensure!(
            rest.stdout.ends_with(b"two\n") && !rest.stdout.starts_with(b"one"),
            "{:?}",
            rest.stdout
        );
        ok!(p.process_signal(&id, info.pid, Signal::Kill).await);
        let out = follow(p, &id, info.pid, 0).await?;
        ensure!(
            out.exit == Some((137, Some(Signal::Kill))),
            "exit {:?}",
            out.exit
        );
        Ok(())
    })
    .await
}

/// A 1 MiB line and 1.5 MiB of stdin pass byte-exact; a buffer smaller than the output drops
/// the oldest bytes and a read from 0 says so with a gap record that accounts for every byte.
pub async fn process_large_and_gap(p: &dyn Provider, image: &str) -> Result<(), CheckFailure> {
    with_sandbox("process_large_and_gap", p, image, |p, id| async move {
        let mut spec = proc_sh("head -c 1048576 /dev/zero | tr '\\0' a; echo");
        spec.output_buffer = Some(4 << 20);
        let info = ok!(p.process_start(&id, spec).await);
        let out = follow(p, &id, info.pid, 0).await?;
        let mut want = vec![b'a'; 1 << 20];
        want.push(b'\n');
        ensure!(out.stdout == want, "1 MiB line: {} bytes", out.stdout.len());
        ensure!(out.exit == Some((0, None)), "exit {:?}", out.exit);
        // Stdin in several frames, every byte value.
        let mut spec = proc_sh("cat");
        spec.stdin = true;
        spec.output_buffer = Some(4 << 20);
        let info = ok!(p.process_start(&id, spec).await);
        let data: Vec<u8> = (0..(3 << 19)).map(|i: u32| (i % 251) as u8).collect();
        let n = ok!(p
            .process_stdin(&id, info.pid, Bytes::from(data.clone()), true)
            .await);
        ensure!(n == data.len() as u64, "wrote {n}");
        let out = follow(p, &id, info.pid, 0).await?;
        ensure!(
            out.stdout == data,
            "stdin round trip: {} bytes",
            out.stdout.len()
        );
        // 200 KiB through a 64 KiB buffer.
        let mut spec = proc_sh("head -c 204800 /dev/zero");
        spec.output_buffer = Some(64 << 10);
        let info = ok!(p.process_start(&id, spec).await);
        // Read only once it is over: a follower that keeps up loses nothing.
        wait_exited(p, &id, info.pid).await?;
        let out = drain(ok!(p.process_output(&id, info.pid, 0, false).await)).await?;
        let dropped = match out.records.first() {
            Some(OutputRecord::Gap {
                seq: 0,
                dropped_bytes,
            }) => *dropped_bytes,
            Some(r) => {
                return Err(format!(
                    "no gap record first: seq {} {}",
                    r.seq(),
                    describe(r)
                ))
            }
            None => return Err("no records".into()),
        };
        ensure!(
            dropped + out.stdout.len() as u64 == 204_800 && out.stdout.len() <= 64 << 10,
            "dropped {dropped} + kept {} != 204800",
            out.stdout.len()
        );
        Ok(())
    })
    .await
}

/// Destroying the sandbox ends its processes; process calls then answer `SandboxNotFound`.
pub async fn process_destroy(p: &dyn Provider, image: &str) -> Result<(), CheckFailure> {
    let check = "process_destroy";
    let fail = |message: String| CheckFailure { check, message };
    let id = p
        .spawn(&spec(image))
        .await
        .map_err(|e| fail(format!("spawn failed: {e:?}")))?
        .runtime_id;
    let outcome = async {
        let info = ok!(p.process_start(&id, proc_sh("sleep 60")).await);
        let reader = ok!(p.process_output(&id, info.pid, 0, true).await);
        ok!(p.destroy(&id).await);
        // A follower of a process of a destroyed sandbox ends (with or without an error).
        let mut reader = reader;
        let end = tokio::time::timeout(FOLLOW_DEADLINE, async {
            while let Some(r) = reader.next().await {
                if r.is_err() {
                    break;
                }
            }
        })
        .await;
        ensure!(end.is_ok(), "a follower outlived the sandbox");
        let r = p.process_list(&id).await;
        ensure!(
            matches!(r, Err(ProviderError::SandboxNotFound(_))),
            "list after destroy: {r:?}"
        );
        Ok(())
    }
    .await;
    if outcome.is_err() {
        let _ = p.destroy(&id).await;
    }
    outcome.map_err(fail)
}
