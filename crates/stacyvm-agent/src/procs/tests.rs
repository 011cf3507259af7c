//! Background processes over the `--listen` socket, served in-process: real processes, real
//! pipes and terminals.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use stacyvm_protocol::agent::{
    encode_frame, read_frame, AgentProc, AgentRecord, ErrorCode, GuestFrame, GuestMsg, HostFrame,
    HostMsg, ProcStart,
};
use stacyvm_protocol::base64;

/// One agent socket for the whole test binary (the registry is global anyway); the watch
/// tests use it too.
pub(crate) fn socket() -> PathBuf {
    static S: OnceLock<PathBuf> = OnceLock::new();
    S.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("agent-procs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("agent.sock");
        let l = crate::listen::bind(&path).unwrap();
        std::thread::spawn(move || crate::listen::serve(l));
        path
    })
    .clone()
}

pub struct Conn {
    s: UnixStream,
    pub next: u64,
}

impl Conn {
    pub fn open() -> Conn {
        let s = UnixStream::connect(socket()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut c = Conn { s, next: 100 };
        c.send(
            1,
            HostMsg::Hello {
                min_version: 3,
                max_version: 3,
                hostname: String::new(),
            },
        );
        assert!(matches!(
            c.recv().msg,
            GuestMsg::HelloAck { version: 3, .. }
        ));
        c
    }

    pub fn send(&mut self, id: u64, msg: HostMsg) {
        let f = encode_frame(&HostFrame { id, msg }).unwrap();
        self.s.write_all(&f).unwrap();
    }

    pub fn recv(&mut self) -> GuestFrame {
        loop {
            let f: GuestFrame = read_frame(&mut self.s).expect("frame").expect("not eof");
            if f.id != 0 {
                return f;
            }
        }
    }

    /// Sends `msg` and returns the one answer.
    pub fn call(&mut self, msg: HostMsg) -> GuestMsg {
        self.next += 1;
        let id = self.next;
        self.send(id, msg);
        let f = self.recv();
        assert_eq!(f.id, id, "{f:?}");
        f.msg
    }

    pub fn start(&mut self, req: ProcStart) -> AgentProc {
        match self.call(HostMsg::ProcStart(req)) {
            GuestMsg::Proc { proc } => proc,
            other => panic!("start: {other:?}"),
        }
    }

    /// All records of a read until `ReadEnd`.
    pub fn read(&mut self, pid: u32, since: u64, follow: bool) -> Vec<AgentRecord> {
        self.read_windowed(pid, since, follow, None)
    }

    /// [`Self::read`], windowed: after each frame, `pause`, then one credit back (a slow host).
    pub fn read_windowed(
        &mut self,
        pid: u32,
        since: u64,
        follow: bool,
        window: Option<(u32, Duration)>,
    ) -> Vec<AgentRecord> {
        self.next += 1;
        let id = self.next;
        self.send(
            id,
            HostMsg::ProcRead {
                pid,
                since,
                follow,
                window: window.map(|(w, _)| w),
            },
        );
        let mut out = Vec::new();
        loop {
            let f = self.recv();
            assert_eq!(f.id, id, "{f:?}");
            match f.msg {
                GuestMsg::Records { records } => {
                    out.extend(records);
                    if let Some((_, pause)) = window {
                        std::thread::sleep(pause);
                        let credit = HostMsg::ReadCredit {
                            target: id,
                            frames: 1,
                        };
                        self.send(0, credit);
                    }
                }
                GuestMsg::ReadEnd => return out,
                other => panic!("read: {other:?}"),
            }
        }
    }

    pub fn get(&mut self, pid: u32) -> AgentProc {
        match self.call(HostMsg::ProcGet { pid }) {
            GuestMsg::Proc { proc } => proc,
            other => panic!("get: {other:?}"),
        }
    }

    pub fn wait_exit(&mut self, pid: u32) -> AgentProc {
        let t = Instant::now();
        loop {
            let p = self.get(pid);
            if p.state == "exited" {
                return p;
            }
            assert!(t.elapsed() < Duration::from_secs(20), "{p:?} still running");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stdin(&mut self, pid: u32, data: &[u8], close: bool) -> GuestMsg {
        self.call(HostMsg::ProcStdin {
            pid,
            data: base64::encode(data),
            close,
        })
    }
}

pub fn sh(script: &str) -> ProcStart {
    ProcStart {
        argv: vec!["sh".into(), "-c".into(), script.into()],
        workdir: "/tmp".into(),
        command: script.into(),
        ..Default::default()
    }
}

/// Bytes per stream, the gap total, and the exit record.
pub fn split(records: &[AgentRecord]) -> (BTreeMap<String, Vec<u8>>, u64, Option<AgentRecord>) {
    let mut streams: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut dropped = 0;
    let mut exit = None;
    for r in records {
        match r.stream.as_str() {
            "gap" => dropped += r.dropped_bytes.unwrap(),
            "exit" => exit = Some(r.clone()),
            s => streams
                .entry(s.to_string())
                .or_default()
                .extend(base64::decode(&r.data).unwrap()),
        }
    }
    (streams, dropped, exit)
}

/// Every byte of the data records, in seq order, checking that seqs are contiguous offsets.
pub fn all_bytes(records: &[AgentRecord]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut expect: Option<u64> = None;
    for r in records {
        if let Some(e) = expect {
            assert_eq!(r.seq, e, "records are not contiguous: {r:?}");
        }
        match r.stream.as_str() {
            "gap" => expect = Some(r.seq + r.dropped_bytes.unwrap()),
            "exit" => expect = None,
            _ => {
                let d = base64::decode(&r.data).unwrap();
                expect = Some(r.seq + d.len() as u64);
                out.extend(d);
            }
        }
    }
    out
}

fn error_code(m: &GuestMsg) -> Option<ErrorCode> {
    match m {
        GuestMsg::Error { code, .. } => Some(*code),
        _ => None,
    }
}

#[test]
fn output_is_recorded_by_stream_with_byte_offsets_and_an_exit_record() {
    let mut c = Conn::open();
    let p = c.start(sh("printf hi; printf err >&2"));
    // So short a command may be over before the start is answered.
    assert!(["running", "exited"].contains(&p.state.as_str()), "{p:?}");
    let recs = c.read(p.pid, 0, true);
    let (streams, dropped, exit) = split(&recs);
    assert_eq!(streams["stdout"], b"hi");
    assert_eq!(streams["stderr"], b"err");
    assert_eq!(dropped, 0);
    let exit = exit.expect("exit record");
    assert_eq!((exit.seq, exit.exit_code, exit.signal), (5, Some(0), None));
    assert_eq!(all_bytes(&recs).len(), 5);
    let p = c.wait_exit(p.pid);
    assert_eq!((p.exit_code, p.next_seq), (Some(0), 6));
    // Resuming after the exit record gives nothing; a follow read ends at once.
    assert!(c.read(p.pid, 6, true).is_empty());
}

#[test]
fn output_is_byte_exact() {
    let mut c = Conn::open();
    let mut req = sh("head -c 1048576 /dev/zero | tr '\\0' a; printf '\\0\\377\\376\\n'");
    req.output_buffer = Some(4 << 20);
    let p = c.start(req);
    let recs = c.read(p.pid, 0, true);
    let mut want = vec![b'a'; 1 << 20];
    want.extend_from_slice(b"\0\xff\xfe\n");
    let got = all_bytes(&recs);
    assert!(got == want, "{} bytes differ", got.len());
}

#[test]
fn overflow_drops_the_oldest_and_reports_the_gap() {
    let mut c = Conn::open();
    let mut req = sh("seq 1 200000");
    req.output_buffer = Some(64 * 1024);
    let p = c.start(req);
    let p = {
        c.wait_exit(p.pid);
        c.get(p.pid)
    };
    let want: Vec<u8> = (1..=200000)
        .flat_map(|i| format!("{i}\n").into_bytes())
        .collect();
    let total = want.len() as u64;
    assert_eq!(p.next_seq, total + 1);
    let recs = c.read(p.pid, 0, false);
    assert_eq!(recs[0].stream, "gap");
    assert_eq!(recs[0].seq, 0);
    let (_, dropped, exit) = split(&recs);
    let data = all_bytes(&recs);
    assert_eq!(dropped + data.len() as u64, total);
    assert!(data.len() <= 64 * 1024);
    assert!(want.ends_with(&data));
    assert_eq!(exit.unwrap().seq, total);
}

#[test]
fn since_resumes_without_duplicates() {
    let mut c = Conn::open();
    let p = c.start(sh("for i in 1 2 3 4 5; do echo line$i; sleep 0.05; done"));
    let all = c.read(p.pid, 0, true);
    let data: Vec<&AgentRecord> = all.iter().filter(|r| r.stream == "stdout").collect();
    assert!(data.len() >= 2, "{all:?}");
    // A reader that saw record n resumes at n + 1.
    let n = data[0].seq;
    let rest = c.read(p.pid, n + 1, false);
    let mut joined = base64::decode(&data[0].data).unwrap();
    joined.extend(all_bytes(&rest));
    assert_eq!(joined, b"line1\nline2\nline3\nline4\nline5\n");
    assert_eq!(rest.last().unwrap().stream, "exit");
}

#[test]
fn follow_reads_see_output_as_it_comes_then_the_exit() {
    let mut c = Conn::open();
    let mut req = sh("cat; echo done");
    req.stdin = true;
    let p = c.start(req);
    // A second connection follows while the first writes.
    let pid = p.pid;
    let reader = std::thread::spawn(move || Conn::open().read(pid, 0, true));
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        c.stdin(pid, b"one\0\xff\n", false),
        GuestMsg::Written { n: 6 }
    );
    assert_eq!(c.stdin(pid, b"two\n", true), GuestMsg::Written { n: 4 });
    let recs = reader.join().unwrap();
    assert_eq!(all_bytes(&recs), b"one\0\xff\ntwo\ndone\n");
    let exit = recs.last().unwrap();
    assert_eq!((exit.stream.as_str(), exit.exit_code), ("exit", Some(0)));
    // Stdin is closed now, and then the process is gone.
    let m = c.stdin(pid, b"x", false);
    assert!(
        matches!(
            error_code(&m),
            Some(ErrorCode::StdinClosed | ErrorCode::ProcessExited)
        ),
        "{m:?}"
    );
    c.wait_exit(pid);
    assert_eq!(
        error_code(&c.stdin(pid, b"x", false)),
        Some(ErrorCode::ProcessExited)
    );
}

#[test]
fn bad_requests_get_their_codes() {
    let mut c = Conn::open();
    let p = c.start(sh("sleep 30"));
    assert_eq!(
        error_code(&c.stdin(p.pid, b"x", false)),
        Some(ErrorCode::StdinClosed)
    );
    let resize = HostMsg::ProcResize {
        pid: p.pid,
        cols: 80,
        rows: 24,
    };
    assert_eq!(error_code(&c.call(resize)), Some(ErrorCode::NotAPty));
    let m = c.call(HostMsg::ProcSignal {
        pid: p.pid,
        signal: "BOGUS".into(),
    });
    assert_eq!(error_code(&m), Some(ErrorCode::InvalidInput));
    for m in [
        HostMsg::ProcGet { pid: u32::MAX },
        HostMsg::ProcSignal {
            pid: u32::MAX,
            signal: "TERM".into(),
        },
        HostMsg::ProcStdin {
            pid: u32::MAX,
            data: String::new(),
            close: true,
        },
    ] {
        assert_eq!(error_code(&c.call(m)), Some(ErrorCode::ProcessNotFound));
    }
    let mut bad = sh("true");
    bad.workdir = "/nonexistent-dir".into();
    assert_eq!(
        error_code(&c.call(HostMsg::ProcStart(bad))),
        Some(ErrorCode::InvalidInput)
    );
    // Signals end it as 128+N with the name; the process was not disturbed by the above.
    let m = c.call(HostMsg::ProcSignal {
        pid: p.pid,
        signal: "SIGTERM".into(),
    });
    assert!(matches!(m, GuestMsg::Proc { .. }), "{m:?}");
    let p = c.wait_exit(p.pid);
    assert_eq!(
        (p.exit_code, p.signal.as_deref()),
        (Some(143), Some("TERM"))
    );
    let resize = HostMsg::ProcResize {
        pid: p.pid,
        cols: 80,
        rows: 24,
    };
    assert_eq!(error_code(&c.call(resize)), Some(ErrorCode::NotAPty));
}

#[test]
fn timeout_kills_the_group_with_124() {
    let mut c = Conn::open();
    let mut req = sh("sleep 30 & sleep 30");
    req.timeout_ms = Some(300);
    let t = Instant::now();
    let p = c.start(req);
    let p = c.wait_exit(p.pid);
    assert_eq!((p.exit_code, p.signal), (Some(124), None));
    assert!(t.elapsed() < Duration::from_secs(5));
}

#[test]
fn an_earlier_deadline_added_later_still_fires_first_and_an_ended_one_never_fires() {
    let mut c = Conn::open();
    let mut late = sh("sleep 30");
    late.timeout_ms = Some(20_000);
    let late = c.start(late);
    let mut quick = sh("exit 3");
    quick.timeout_ms = Some(200);
    let quick = c.start(quick);
    let mut early = sh("sleep 30");
    early.timeout_ms = Some(300);
    let t = Instant::now();
    let early = c.start(early);
    let early = c.wait_exit(early.pid);
    assert_eq!(early.exit_code, Some(124), "{early:?}");
    assert!(t.elapsed() < Duration::from_secs(5));
    // Its deadline passed after it ended: the exit stays its own.
    assert_eq!(c.wait_exit(quick.pid).exit_code, Some(3));
    assert_eq!(
        c.get(late.pid).state,
        "running",
        "the later deadline fired early"
    );
    let _ = c.call(HostMsg::ProcSignal {
        pid: late.pid,
        signal: "KILL".into(),
    });
}

#[test]
fn processes_outlive_their_connection_and_readers_agree() {
    let pid = {
        let mut c = Conn::open();
        let p = c.start(sh("sleep 0.5; seq 1 20000; sleep 0.3; echo end"));
        p.pid
    };
    let list = match Conn::open().call(HostMsg::ProcList) {
        GuestMsg::Procs { procs } => procs,
        other => panic!("{other:?}"),
    };
    assert!(list.iter().any(|p| p.pid == pid && p.state == "running"));
    let readers: Vec<_> = (0..10)
        .map(|_| std::thread::spawn(move || Conn::open().read(pid, 0, true)))
        .collect();
    let results: Vec<Vec<AgentRecord>> = readers.into_iter().map(|r| r.join().unwrap()).collect();
    let first = all_bytes(&results[0]);
    assert!(first.ends_with(b"20000\nend\n"), "{}", first.len());
    for r in &results {
        assert_eq!(r, &results[0]);
    }
}

#[test]
fn cancel_ends_a_follow_read() {
    let mut c = Conn::open();
    let p = c.start(sh("sleep 30"));
    c.send(
        50,
        HostMsg::ProcRead {
            pid: p.pid,
            since: 0,
            follow: true,
            window: None,
        },
    );
    std::thread::sleep(Duration::from_millis(100));
    c.send(51, HostMsg::Cancel { target: 50 });
    let a = c.recv();
    assert_eq!((a.id, a.msg), (51, GuestMsg::Ok));
    let b = c.recv();
    assert_eq!((b.id, b.msg), (50, GuestMsg::ReadEnd));
    // Other requests go on while reads are in flight, and the process was not touched.
    assert_eq!(c.get(p.pid).state, "running");
    c.call(HostMsg::ProcSignal {
        pid: p.pid,
        signal: "KILL".into(),
    });
    assert_eq!(c.wait_exit(p.pid).signal.as_deref(), Some("KILL"));
}

#[test]
fn a_follow_read_beyond_the_end_waits_and_lists_are_newest_first() {
    let mut c = Conn::open();
    let mut req = sh("cat");
    req.stdin = true;
    let p = c.start(req);
    let later = c.start(sh("sleep 5"));
    match c.call(HostMsg::ProcList) {
        GuestMsg::Procs { procs } => {
            let at = |pid| procs.iter().position(|q| q.pid == pid).unwrap();
            assert!(at(later.pid) < at(p.pid), "newest first");
        }
        other => panic!("{other:?}"),
    }
    let pid = p.pid;
    // Waits for offset 4: "abcd" (0..4) is skipped, "efgh" at 4 is the first record sent.
    let reader = std::thread::spawn(move || Conn::open().read(pid, 4, true));
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(c.stdin(pid, b"abcd", false), GuestMsg::Written { n: 4 });
    std::thread::sleep(Duration::from_millis(100));
    c.stdin(pid, b"efgh", true);
    let recs = reader.join().unwrap();
    assert_eq!(recs[0].seq, 4, "{recs:?}");
    assert_eq!(all_bytes(&recs), b"efgh");
    assert_eq!(recs.last().unwrap().seq, 8);
    // A non-follow read beyond the end of a running process answers nothing.
    assert!(c.read(later.pid, 100, false).is_empty());
}

/// Execs work over the socket too, and unlike processes they die with their connection.
#[test]
fn execs_over_the_socket_die_with_their_connection() {
    let dir = std::env::temp_dir().join(format!("agent-exec-sock-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let marker = dir.join("pid");
    let mut c = Conn::open();
    c.send(
        70,
        HostMsg::Exec(stacyvm_protocol::agent::ExecStart {
            argv: vec![
                "sh".into(),
                "-c".into(),
                format!("echo $$ > {}; exec sleep 30", marker.display()),
            ],
            workdir: "/tmp".into(),
            ..Default::default()
        }),
    );
    let t = Instant::now();
    let pid: u32 = loop {
        if let Some(p) = std::fs::read_to_string(&marker)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            break p;
        }
        assert!(t.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(20));
    };
    drop(c);
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    while proc_dir.exists() {
        assert!(t.elapsed() < Duration::from_secs(10), "the exec survived");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Processes start with default signal handling (the agent ignores SIGPIPE), the agent's
/// environment plus theirs, in their workdir; a missing program is an error.
#[test]
fn processes_start_clean() {
    let mut c = Conn::open();
    let mut req = ProcStart {
        argv: vec![
            "sh".into(),
            "-c".into(),
            "grep -E '^Sig(Ign|Blk)' /proc/self/status; echo \"$X $PWD\"; test -n \"$PATH\"".into(),
        ],
        workdir: "/tmp".into(),
        ..Default::default()
    };
    req.env.insert("X".into(), "given".into());
    let p = c.start(req);
    let recs = c.read(p.pid, 0, true);
    let out = String::from_utf8(all_bytes(&recs)).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    let mask = |l: &str| u64::from_str_radix(l.split('\t').nth(1).unwrap(), 16).unwrap();
    assert_eq!(mask(lines[0]), 0, "{out}");
    // glibc's posix_spawn leaves its own two internal signals (32, 33) ignored: no program
    // sees them (SIGRTMIN is 34). Everything else, SIGPIPE included, is at its default.
    assert_eq!(mask(lines[1]) & !(3 << 31), 0, "{out}");
    assert_eq!(lines[2], "given /tmp");
    assert_eq!(recs.last().unwrap().exit_code, Some(0));
    let m = c.call(HostMsg::ProcStart(ProcStart {
        argv: vec!["no-such-program-here".into()],
        workdir: "/tmp".into(),
        ..Default::default()
    }));
    // The caller's mistake, not an agent failure: `not_found` (a process start's 400, an
    // exec's 127 as a shell would answer).
    assert_eq!(error_code(&m), Some(ErrorCode::NotFound), "{m:?}");
}

/// `seq 1 N` as the bytes it prints.
pub fn seq_output(n: u32) -> Vec<u8> {
    (1..=n)
        .flat_map(|i| format!("{i}\n").into_bytes())
        .collect()
}

/// An exec's output waits for a slow reader instead of being dropped: every byte arrives,
/// with a 64 KiB buffer and about 2 MB of output. The same process without `exec` loses most
/// of it to a gap (so the check can fail).
#[test]
fn exec_output_is_held_for_a_slow_reader() {
    const N: u32 = 300_000;
    for exec in [true, false] {
        let mut c = Conn::open();
        let mut req = sh(&format!("seq 1 {N}"));
        req.exec = exec;
        req.output_buffer = Some(64 << 10);
        let pid = c.start(req).pid;
        let recs = c.read_windowed(pid, 0, true, Some((2, Duration::from_millis(2))));
        let (_, dropped, exit) = split(&recs);
        assert_eq!(exit.and_then(|e| e.exit_code), Some(0));
        if exec {
            assert_eq!(dropped, 0);
            assert_eq!(all_bytes(&recs), seq_output(N));
        } else {
            assert!(dropped > 0, "a plain process should have dropped output");
        }
    }
}

/// As exec always did, background leftovers die with the command.
#[test]
fn exec_kills_its_leftovers() {
    check_exec_kills_its_leftovers();
}

/// Kernels before 5.3 have no pidfds: a reader and a waiter thread serve each process instead
/// of one thread (the switch is global, so other tests may run either way meanwhile).
#[test]
fn without_pidfds_a_reader_and_a_waiter_serve_the_process() {
    super::spawn::use_pidfds(false);
    let mut c = Conn::open();
    let p = c.start(sh("printf hi; printf err >&2; exit 3"));
    let (streams, _, exit) = split(&c.read(p.pid, 0, true));
    check_exec_kills_its_leftovers();
    super::spawn::use_pidfds(true);
    assert_eq!(
        (&streams["stdout"][..], &streams["stderr"][..]),
        (&b"hi"[..], &b"err"[..])
    );
    assert_eq!(exit.and_then(|e| e.exit_code), Some(3));
}

fn check_exec_kills_its_leftovers() {
    let mut c = Conn::open();
    let mut req = sh("sleep 100 & echo $!");
    req.exec = true;
    let pid = c.start(req).pid;
    let recs = c.read(pid, 0, true);
    let bg: u32 = String::from_utf8(all_bytes(&recs))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let t = Instant::now();
    while std::path::Path::new(&format!("/proc/{bg}")).exists()
        && std::fs::read_to_string(format!("/proc/{bg}/stat"))
            .map(|s| !s.contains(") Z"))
            .unwrap_or(false)
    {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "sleep {bg} outlived the exec"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Version 5: the start's answer is followed by the read, under the same id, windowed.
#[test]
fn a_start_with_a_read_window_streams_the_output_after_the_proc() {
    let mut c = Conn::open();
    let mut req = sh("echo one; echo two >&2");
    req.exec = true;
    req.read_window = Some(1);
    c.next += 1;
    let id = c.next;
    c.send(id, HostMsg::ProcStart(req));
    let first = c.recv();
    assert_eq!(first.id, id);
    let GuestMsg::Proc { proc } = first.msg else {
        panic!("the start answers the process first: {first:?}");
    };
    let mut records = Vec::new();
    while !records.iter().any(|r: &AgentRecord| r.stream == "exit") {
        let f = c.recv();
        assert_eq!(f.id, id, "{f:?}");
        match f.msg {
            GuestMsg::Records { records: r } => records.extend(r),
            other => panic!("read: {other:?}"),
        }
        c.send(
            0,
            HostMsg::ReadCredit {
                target: id,
                frames: 1,
            },
        );
    }
    assert!(matches!(c.recv().msg, GuestMsg::ReadEnd));
    let text = |s: &str| -> String {
        records
            .iter()
            .filter(|r| r.stream == s)
            .map(|r| String::from_utf8(base64::decode(&r.data).unwrap()).unwrap())
            .collect()
    };
    assert_eq!(text("stdout"), "one\n");
    assert_eq!(text("stderr"), "two\n");
    assert_eq!(records.last().unwrap().exit_code, Some(0));
    assert!(proc.pid > 0);
}
