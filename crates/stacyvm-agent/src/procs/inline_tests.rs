//! The inline read (a start with `read_window`): exact under a slow reader, and cancellable.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use stacyvm_protocol::agent::{AgentRecord, GuestMsg, HostMsg, ProcStart};

use super::super::tests::{all_bytes, seq_output, sh, split, Conn};

/// Sends the start of `req` with a read window of one frame; the request id and the pid.
fn start_streamed(c: &mut Conn, mut req: ProcStart) -> (u64, u32) {
    req.read_window = Some(1);
    c.next += 1;
    let id = c.next;
    c.send(id, HostMsg::ProcStart(req));
    let first = c.recv();
    assert_eq!(first.id, id);
    let GuestMsg::Proc { proc } = first.msg else {
        panic!("the start answers the process first: {first:?}");
    };
    (id, proc.pid)
}

/// The read's records up to its `ReadEnd`, giving one credit back `pause` after each frame.
fn read_slowly(c: &mut Conn, id: u64, pause: Duration) -> Vec<AgentRecord> {
    let mut records = Vec::new();
    loop {
        let f = c.recv();
        assert_eq!(f.id, id, "{f:?}");
        match f.msg {
            GuestMsg::Records { records: r } => records.extend(r),
            GuestMsg::ReadEnd => return records,
            other => panic!("read: {other:?}"),
        }
        std::thread::sleep(pause);
        let credit = HostMsg::ReadCredit {
            target: id,
            frames: 1,
        };
        c.send(0, credit);
    }
}

/// An exec's output waits for its slow reader: every byte, no gap, even through a 16 KiB
/// buffer (less than one read of the pipe). The same process without `exec` loses output to
/// a gap, so the check can fail.
#[test]
fn a_streamed_exec_gives_a_slow_reader_every_byte() {
    const N: u32 = 150_000;
    for exec in [true, false] {
        let mut c = Conn::open();
        let mut req = sh(&format!("seq 1 {N}"));
        req.exec = exec;
        req.output_buffer = Some(16 << 10);
        let (id, _) = start_streamed(&mut c, req);
        let recs = read_slowly(&mut c, id, Duration::from_millis(1));
        let (_, dropped, exit) = split(&recs);
        assert_eq!(exit.and_then(|e| e.exit_code), Some(0), "exec {exec}");
        if exec {
            assert_eq!(dropped, 0);
            assert_eq!(all_bytes(&recs), seq_output(N));
        } else {
            assert!(dropped > 0, "a plain process should have dropped output");
        }
    }
}

/// A cancelled read answers `ReadEnd` and stops holding the exec's output: the process, which
/// waited for credit, then runs to its end.
#[test]
fn cancelling_a_streamed_read_ends_it_and_lets_the_exec_finish() {
    let mut c = Conn::open();
    let mut req = sh("seq 1 300000");
    req.exec = true;
    req.output_buffer = Some(16 << 10);
    let (id, pid) = start_streamed(&mut c, req);
    // One frame of credit: the first frame comes, then the output is held.
    let f = c.recv();
    assert!(matches!(f.msg, GuestMsg::Records { .. }), "{f:?}");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(c.get(pid).state, "running", "the exec waits for its reader");
    c.send(999_999, HostMsg::Cancel { target: id });
    let mut ended = false;
    let mut answered = false;
    while !(ended && answered) {
        let f = c.recv();
        match (f.id, f.msg) {
            (i, GuestMsg::ReadEnd) if i == id => ended = true,
            (999_999, GuestMsg::Ok) => answered = true,
            (i, m) => panic!("unexpected {i}: {m:?}"),
        }
    }
    assert_eq!(c.wait_exit(pid).exit_code, Some(0));
}
