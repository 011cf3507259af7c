//! The agent binary in `--listen` mode, reached through `--bridge` as the docker provider does:
//! processes outlive the connection, watches do not, and the agent takes its process groups with
//! it when its `--exit-with` path disappears or on SIGTERM.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use stacyvm_protocol::agent::{
    encode_frame, read_frame, GuestFrame, GuestMsg, HostFrame, HostMsg, ProcStart,
    AGENT_WATCH_VERSION,
};

const AGENT: &str = env!("CARGO_BIN_EXE_stacyvm-agent");

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("agent-listen-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn start_agent(d: &Path) -> (Child, PathBuf) {
    let sock = d.join("run/agent.sock");
    std::fs::write(d.join("alive"), b"").unwrap();
    let child = Command::new(AGENT)
        .arg("--listen")
        .arg(&sock)
        .arg("--exit-with")
        .arg(d.join("alive"))
        .arg("--workdir")
        .arg(d)
        .spawn()
        .unwrap();
    let t = Instant::now();
    // Connectable, not just present: a stale file of a killed agent may still be there.
    while std::os::unix::net::UnixStream::connect(&sock).is_err() {
        assert!(t.elapsed() < Duration::from_secs(10), "no socket");
        std::thread::sleep(Duration::from_millis(20));
    }
    (child, sock)
}

/// A host connection through `stacyvm-agent --bridge`.
struct Bridge {
    child: Child,
    w: ChildStdin,
    r: ChildStdout,
}

impl Bridge {
    fn open(sock: &Path) -> Bridge {
        Bridge::open_at(sock, 3)
    }

    /// A connection speaking protocol `version`.
    fn open_at(sock: &Path, version: u32) -> Bridge {
        let mut child = Command::new(AGENT)
            .arg("--bridge")
            .arg(sock)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let (w, r) = (child.stdin.take().unwrap(), child.stdout.take().unwrap());
        let mut b = Bridge { child, w, r };
        let hello = HostMsg::Hello {
            min_version: 1,
            max_version: version,
            hostname: String::new(),
        };
        let ack = b.call(1, hello);
        assert!(
            matches!(ack, GuestMsg::HelloAck { version: v, .. } if v == version),
            "{ack:?}"
        );
        b
    }

    fn call(&mut self, id: u64, msg: HostMsg) -> GuestMsg {
        self.w
            .write_all(&encode_frame(&HostFrame { id, msg }).unwrap())
            .unwrap();
        loop {
            let f: GuestFrame = read_frame(&mut self.r).unwrap().unwrap();
            if f.id == id {
                return f.msg;
            }
        }
    }

    fn close(mut self) {
        drop(self.w);
        let status = self.child.wait().unwrap();
        assert!(status.success(), "{status:?}");
    }
}

/// The pid a process wrote into `file`, once it did.
fn read_pid(file: &Path) -> i32 {
    let t = Instant::now();
    loop {
        if let Some(p) = std::fs::read_to_string(file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            return p;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "no pid file");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(s) => s.rsplit(')').next().unwrap().trim_start().starts_with('Z'),
    }
}

fn wait_gone(pid: i32, within: Duration) {
    let t = Instant::now();
    while !gone(pid) {
        assert!(t.elapsed() < within, "process {pid} survived");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn start_sleeper(b: &mut Bridge, d: &Path) -> (u32, i32) {
    let req = ProcStart {
        argv: vec![
            "sh".into(),
            "-c".into(),
            "sleep 100 & echo $! > sleeper.pid; wait".into(),
        ],
        ..Default::default()
    };
    let pid = match b.call(2, HostMsg::ProcStart(req)) {
        GuestMsg::Proc { proc } => proc.pid,
        other => panic!("{other:?}"),
    };
    (pid, read_pid(&d.join("sleeper.pid")))
}

#[test]
fn processes_survive_the_bridge_and_die_with_the_sandbox() {
    let d = dir("exit-with");
    let (mut agent, sock) = start_agent(&d);
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let mut b = Bridge::open(&sock);
    let (pid, sleeper) = start_sleeper(&mut b, &d);
    b.close();

    let mut b = Bridge::open(&sock);
    match b.call(3, HostMsg::ProcList) {
        GuestMsg::Procs { procs } => {
            assert!(procs.iter().any(|p| p.pid == pid && p.state == "running"))
        }
        other => panic!("{other:?}"),
    }
    b.close();
    assert!(!gone(sleeper));

    std::fs::remove_file(d.join("alive")).unwrap();
    let status = agent.wait().unwrap();
    assert!(status.success(), "{status:?}");
    wait_gone(sleeper, Duration::from_secs(5));
    assert!(!sock.exists());
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn sigterm_kills_the_process_groups() {
    let d = dir("term");
    let (mut agent, sock) = start_agent(&d);
    let mut b = Bridge::open(&sock);
    let (_, sleeper) = start_sleeper(&mut b, &d);
    let ok = Command::new("kill")
        .arg("-TERM")
        .arg(agent.id().to_string())
        .status()
        .unwrap();
    assert!(ok.success());
    let status = agent.wait().unwrap();
    assert!(status.success(), "{status:?}");
    wait_gone(sleeper, Duration::from_secs(5));
    drop(b);
    // An agent killed outright leaves its socket file; the next one replaces it.
    let (mut killed, sock) = start_agent(&d);
    killed.kill().unwrap();
    let _ = killed.wait();
    assert!(sock.exists());
    let (mut again, sock) = start_agent(&d);
    Bridge::open(&sock).close();
    again.kill().unwrap();
    let _ = again.wait();
    std::fs::remove_dir_all(&d).unwrap();
}

/// inotify instances the process `pid` holds open.
fn inotify_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter(|fd| {
            std::fs::read_link(fd.path()).is_ok_and(|l| l.to_string_lossy().contains("inotify"))
        })
        .count()
}

fn threads(pid: u32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap()
}

/// Kills the agent when a test ends, also when it fails (the agent would wait for its
/// `--exit-with` path for ever, holding the test harness's output pipe).
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn watches_end_with_their_connection() {
    let d = dir("watch");
    std::fs::create_dir_all(d.join("tree/a/b")).unwrap();
    let (agent, sock) = start_agent(&d);
    let agent = Killed(agent);
    let pid = agent.0.id();
    let before = threads(pid);
    for round in 0..3 {
        let mut b = Bridge::open_at(&sock, AGENT_WATCH_VERSION);
        for id in 2..5 {
            let watch = HostMsg::Watch {
                path: d.join("tree").to_string_lossy().into_owned(),
                recursive: id % 2 == 0,
            };
            assert_eq!(b.call(id, watch), GuestMsg::Watching, "round {round}");
        }
        assert_eq!(inotify_fds(pid), 3);
        b.close();
        // The host is gone: every instance is closed at once, and the watches' threads are
        // back in the pool (whose idle helpers exit after 10 s).
        let t = Instant::now();
        while inotify_fds(pid) > 0 {
            assert!(
                t.elapsed() < Duration::from_secs(5),
                "inotify fds left open"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let t = Instant::now();
    while threads(pid) > before {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "{} threads, {before} before the watches",
            threads(pid)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(agent);
    std::fs::remove_dir_all(&d).unwrap();
}
