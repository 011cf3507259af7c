//! The agent's request loop over a socket pair standing in for the virtio port.

use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use stacyvm_protocol::agent::{
    encode_frame, read_frame, ErrorCode, ExecStart, GuestFrame, GuestMsg, HostFrame, HostMsg,
    OutputStream,
};
use stacyvm_protocol::base64;

use super::serve;

struct Host {
    s: UnixStream,
}

impl Host {
    fn start() -> Host {
        let (host, agent) = UnixStream::pair().expect("socketpair");
        agent.set_nonblocking(true).expect("nonblocking");
        let file = std::fs::File::from(OwnedFd::from(agent));
        std::thread::spawn(move || serve(file));
        host.set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        Host { s: host }
    }

    fn send(&mut self, id: u64, msg: HostMsg) {
        let f = encode_frame(&HostFrame { id, msg }).expect("encode");
        self.s.write_all(&f).expect("write");
    }

    fn recv(&mut self) -> GuestFrame {
        loop {
            let f: GuestFrame = read_frame(&mut self.s).expect("frame").expect("not eof");
            if f.id != 0 {
                return f;
            }
        }
    }

    fn hello(&mut self) {
        self.send(
            1,
            HostMsg::Hello {
                min_version: 1,
                max_version: 1,
                hostname: String::new(),
            },
        );
        assert!(matches!(
            self.recv().msg,
            GuestMsg::HelloAck { version: 1, .. }
        ));
    }

    /// Runs a command to its end: (stdout, stderr, final message).
    fn exec(
        &mut self,
        id: u64,
        script: &str,
        timeout_ms: Option<u64>,
    ) -> (Vec<u8>, Vec<u8>, GuestMsg) {
        self.send(
            id,
            HostMsg::Exec(ExecStart {
                argv: vec!["sh".into(), "-c".into(), script.into()],
                workdir: "/tmp".into(),
                timeout_ms,
                ..Default::default()
            }),
        );
        let (mut out, mut err) = (Vec::new(), Vec::new());
        loop {
            let f = self.recv();
            assert_eq!(f.id, id, "{f:?}");
            match f.msg {
                GuestMsg::Output { stream, data } => {
                    let bytes = base64::decode(&data).expect("base64");
                    match stream {
                        OutputStream::Stdout => out.extend(bytes),
                        OutputStream::Stderr => err.extend(bytes),
                    }
                }
                other => return (out, err, other),
            }
        }
    }
}

#[test]
fn handshake_is_required_and_versions_are_checked() {
    let mut h = Host::start();
    h.send(3, HostMsg::Ping);
    let f = h.recv();
    assert!(
        matches!(
            f.msg,
            GuestMsg::Error {
                code: ErrorCode::Version,
                ..
            }
        ),
        "{f:?}"
    );
    h.send(
        4,
        HostMsg::Hello {
            min_version: 9,
            max_version: 12,
            hostname: String::new(),
        },
    );
    assert!(matches!(
        h.recv().msg,
        GuestMsg::Error {
            code: ErrorCode::Version,
            ..
        }
    ));
    h.hello();
    h.send(5, HostMsg::Ping);
    assert_eq!(h.recv().msg, GuestMsg::Pong);
    // Version 2 is offered, and `identity` is answered under its request id (an invalid one
    // here: a valid one would change this host's hostname and clock).
    h.send(
        6,
        HostMsg::Hello {
            min_version: 1,
            max_version: 2,
            hostname: String::new(),
        },
    );
    assert!(matches!(
        h.recv().msg,
        GuestMsg::HelloAck { version: 2, .. }
    ));
    h.send(
        7,
        HostMsg::Identity(stacyvm_protocol::agent::Identity {
            machine_id: "not-hex".into(),
            ..Default::default()
        }),
    );
    let f = h.recv();
    assert_eq!(f.id, 7);
    assert!(
        matches!(
            f.msg,
            GuestMsg::Error {
                code: ErrorCode::InvalidInput,
                ..
            }
        ),
        "{f:?}"
    );
}

#[test]
fn exec_streams_exit_codes_and_kills_the_group_on_timeout() {
    let mut h = Host::start();
    h.hello();
    let (out, err, end) = h.exec(10, "echo out; echo err >&2; exit 42", None);
    assert_eq!(
        (out.as_slice(), err.as_slice()),
        (&b"out\n"[..], &b"err\n"[..])
    );
    assert_eq!(end, GuestMsg::Exit { code: 42 });

    let marker = std::env::temp_dir().join(format!("agent-leak-{}", std::process::id()));
    let _ = std::fs::remove_file(&marker);
    let t = Instant::now();
    let script = format!("(sleep 1; echo leaked > {}) & sleep 30", marker.display());
    let (_, _, end) = h.exec(11, &script, Some(300));
    assert_eq!(end, GuestMsg::TimedOut);
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    std::thread::sleep(Duration::from_millis(1500));
    assert!(!marker.exists(), "a background child survived the timeout");

    h.send(
        12,
        HostMsg::Exec(ExecStart {
            argv: vec!["/nonexistent/cmd".into()],
            workdir: "/tmp".into(),
            ..Default::default()
        }),
    );
    let mut last = h.recv();
    while matches!(last.msg, GuestMsg::Output { .. }) {
        last = h.recv();
    }
    assert_eq!(last.msg, GuestMsg::Exit { code: 127 });
}

#[test]
fn cancel_kills_a_running_command_and_a_new_hello_resets_the_session() {
    let mut h = Host::start();
    h.hello();
    h.send(
        20,
        HostMsg::Exec(ExecStart {
            argv: vec!["sleep".into(), "30".into()],
            workdir: "/tmp".into(),
            ..Default::default()
        }),
    );
    std::thread::sleep(Duration::from_millis(200));
    h.send(21, HostMsg::Cancel { target: 20 });
    let mut got = Vec::new();
    while got.len() < 2 {
        got.push(h.recv());
    }
    assert!(
        got.iter().any(|f| f.id == 21 && f.msg == GuestMsg::Ok),
        "{got:?}"
    );
    assert!(
        got.iter()
            .any(|f| f.id == 20 && f.msg == GuestMsg::Exit { code: 137 }),
        "{got:?}"
    );

    // A command of the old session is killed and its reply never reaches the new one.
    h.send(
        30,
        HostMsg::Exec(ExecStart {
            argv: vec!["sleep".into(), "30".into()],
            workdir: "/tmp".into(),
            ..Default::default()
        }),
    );
    std::thread::sleep(Duration::from_millis(200));
    h.hello();
    h.send(31, HostMsg::Ping);
    let f = h.recv();
    assert_eq!((f.id, f.msg), (31, GuestMsg::Pong));
}

/// Globs run off the request loop, never walk into a link (here one to `/`), and answer under
/// their own id; a relative pattern is refused.
#[test]
fn glob_answers_under_its_id_without_walking_links() {
    let dir = std::env::temp_dir().join(format!("agent-session-glob-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("g")).expect("mkdir");
    std::fs::write(dir.join("g/f"), b"x").expect("write");
    std::os::unix::fs::symlink("/", dir.join("g/root")).expect("link");
    let d = dir.to_string_lossy().into_owned();
    let mut h = Host::start();
    h.hello();
    h.send(
        40,
        HostMsg::Glob {
            pattern: format!("{d}/*/*/*"),
        },
    );
    let f = h.recv();
    assert_eq!(f.id, 40);
    assert_eq!(f.msg, GuestMsg::Matches { paths: Vec::new() }, "{f:?}");
    h.send(
        41,
        HostMsg::Glob {
            pattern: format!("{d}/*/*"),
        },
    );
    let f = h.recv();
    let want = vec![format!("{d}/g/f"), format!("{d}/g/root")];
    assert_eq!((f.id, f.msg), (41, GuestMsg::Matches { paths: want }));
    h.send(
        42,
        HostMsg::Glob {
            pattern: "rel/*".into(),
        },
    );
    let f = h.recv();
    assert!(
        f.id == 42
            && matches!(
                f.msg,
                GuestMsg::Error {
                    code: ErrorCode::InvalidInput,
                    ..
                }
            ),
        "{f:?}"
    );
    // Cancelling a glob that already answered (or any unknown id) is a no-op.
    h.send(43, HostMsg::Cancel { target: 40 });
    assert_eq!(h.recv().msg, GuestMsg::Ok);
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

/// The virtio transport serves background processes too, and they outlive the session.
#[test]
fn processes_run_over_the_port_and_outlive_the_session() {
    let mut h = Host::start();
    h.send(
        1,
        HostMsg::Hello {
            min_version: 1,
            max_version: 3,
            hostname: String::new(),
        },
    );
    assert!(matches!(
        h.recv().msg,
        GuestMsg::HelloAck { version: 3, .. }
    ));
    h.send(
        60,
        HostMsg::ProcStart(stacyvm_protocol::agent::ProcStart {
            argv: vec!["sh".into(), "-c".into(), "sleep 0.3; echo port".into()],
            workdir: "/tmp".into(),
            ..Default::default()
        }),
    );
    let pid = match h.recv().msg {
        GuestMsg::Proc { proc } => proc.pid,
        other => panic!("{other:?}"),
    };
    h.hello(); // a new session
    h.send(
        61,
        HostMsg::ProcRead {
            pid,
            since: 0,
            follow: true,
            window: None,
        },
    );
    let mut data = Vec::new();
    loop {
        match h.recv().msg {
            GuestMsg::Records { records } => {
                for r in records {
                    if r.stream == "stdout" {
                        data.extend(base64::decode(&r.data).expect("base64"));
                    } else {
                        assert_eq!((r.stream.as_str(), r.exit_code), ("exit", Some(0)));
                    }
                }
            }
            GuestMsg::ReadEnd => break,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(data, b"port\n");
}
