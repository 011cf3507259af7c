//! PTY processes: a real terminal, its size, and the line discipline's `^C`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use stacyvm_protocol::agent::{AgentPty, GuestMsg, HostMsg, ProcStart};

use super::tests::{all_bytes, sh, Conn};

fn pty(mut req: ProcStart, cols: u16, rows: u16) -> ProcStart {
    req.pty = Some(AgentPty { cols, rows });
    req
}

/// Output of `pid` until it contains `want` (the process keeps running).
fn wait_for(c: &mut Conn, pid: u32, want: &str) -> String {
    let t = Instant::now();
    loop {
        let recs = c.read(pid, 0, false);
        let s = String::from_utf8_lossy(&all_bytes(&recs)).into_owned();
        if s.contains(want) {
            return s;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "no {want:?} in {s:?}"
        );
        std::thread::sleep(Duration::from_millis(30));
    }
}

/// Waits until a process named `comm` runs in session `sid` (the terminal's session).
fn wait_for_job(sid: u32, comm: &str) {
    let t = Instant::now();
    loop {
        let found = std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
            let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
                return false;
            };
            let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
                return false;
            };
            let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
            &stat[open + 1..close] == comm && fields.get(3) == Some(&sid.to_string().as_str())
        });
        if found {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "no {comm} in session {sid}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_pty_process_has_a_terminal() {
    let mut c = Conn::open();
    let p = c.start(pty(
        ProcStart {
            argv: vec!["tty".into()],
            workdir: "/tmp".into(),
            ..Default::default()
        },
        80,
        24,
    ));
    assert!(p.pty);
    let recs = c.read(p.pid, 0, true);
    assert!(recs.iter().all(|r| r.stream == "pty" || r.stream == "exit"));
    let out = String::from_utf8_lossy(&all_bytes(&recs)).into_owned();
    assert!(out.starts_with("/dev/pts/"), "{out:?}");
    assert_eq!(recs.last().unwrap().exit_code, Some(0));
}

#[test]
fn stty_size_follows_resize() {
    let mut c = Conn::open();
    let p = c.start(pty(sh("stty size; read x; stty size"), 100, 30));
    wait_for(&mut c, p.pid, "30 100");
    let m = c.call(HostMsg::ProcResize {
        pid: p.pid,
        cols: 120,
        rows: 40,
    });
    assert_eq!(m, GuestMsg::Ok);
    // A PTY takes input without `stdin: true`.
    assert_eq!(c.stdin(p.pid, b"\n", false), GuestMsg::Written { n: 1 });
    let out = String::from_utf8_lossy(&all_bytes(&c.read(p.pid, 0, true))).into_owned();
    assert!(out.contains("40 120"), "{out:?}");
    let p = c.wait_exit(p.pid);
    assert_eq!(p.exit_code, Some(0));
    let m = c.call(HostMsg::ProcResize {
        pid: p.pid,
        cols: 1,
        rows: 1,
    });
    assert!(
        matches!(
            m,
            GuestMsg::Error {
                code: stacyvm_protocol::agent::ErrorCode::ProcessExited,
                ..
            }
        ),
        "{m:?}"
    );
}

#[test]
fn ctrl_c_interrupts_the_foreground_job() {
    let mut c = Conn::open();
    // Non-interactive: ^C reaches the whole foreground group.
    let p = c.start(pty(sh("sleep 100"), 80, 24));
    wait_for_job(p.pid, "sleep");
    // Also when the agent itself was started with SIGINT ignored (in the background by a
    // shell without job control): the child gets default dispositions.
    assert_eq!(c.stdin(p.pid, b"\x03", false), GuestMsg::Written { n: 1 });
    let p = c.wait_exit(p.pid);
    assert_eq!((p.exit_code, p.signal.as_deref()), (Some(130), Some("INT")));

    // An interactive shell survives; only its foreground job is interrupted.
    let mut req = pty(sh("exec sh -i"), 80, 24);
    req.env.insert("PS1".into(), "$ ".into());
    let p = c.start(req);
    wait_for(&mut c, p.pid, "$ ");
    c.stdin(p.pid, b"sleep 100\n", false);
    wait_for_job(p.pid, "sleep");
    c.stdin(p.pid, b"\x03", false);
    c.stdin(p.pid, b"echo alive $?\n", false);
    wait_for(&mut c, p.pid, "alive 130");
    c.stdin(p.pid, b"exit 7\n", false);
    assert_eq!(c.wait_exit(p.pid).exit_code, Some(7));
}

/// Linux's line discipline signals `^C` itself, so the agent must not (a doubled SIGINT would
/// end programs that take a first `^C` as "cancel the line").
#[test]
fn the_isig_probe_trusts_linux() {
    assert!(super::pty::kernel_handles_isig());
}
