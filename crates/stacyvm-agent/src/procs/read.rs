//! `ProcRead`: each read is a thread that copies records out of the process's ring and sends
//! them in `Records` frames, then `ReadEnd`. Readers never hold the ring's lock while sending,
//! so a slow host slows only its own read; the process keeps writing and the ring drops the
//! oldest output, which the reader then reports as a gap.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use stacyvm_protocol::agent::{AgentRecord, ErrorCode, GuestMsg, MAX_RECORDS_PER_FRAME};
use stacyvm_protocol::base64;

use super::ring::Item;
use super::{registry, thread, Proc};
use crate::session::{lock, Out};

/// Raw output bytes per `Records` frame at most (about 350 KiB encoded): frames stay far below
/// `MAX_FRAME_LEN` and the session's queue stays small.
const FRAME_BYTES: usize = 256 * 1024;
/// How often a waiting follow read looks at its cancel flag and its session.
const POLL: Duration = Duration::from_millis(250);

/// A follow read in flight: its cancel flag and its process (whose condvar wakes it).
type Follow = (Arc<AtomicBool>, Arc<Proc>);

/// Follow reads of one session in flight, by request id, for `Cancel`.
#[derive(Clone, Default)]
pub struct Reads(Arc<Mutex<HashMap<u64, Follow>>>);

impl Reads {
    /// Ends the read with request id `target`, if there is one; it answers `ReadEnd`.
    pub fn cancel(&self, target: u64) {
        if let Some((flag, p)) = lock(&self.0).remove(&target) {
            flag.store(true, Ordering::SeqCst);
            // Take the lock so the wake-up cannot fall between the reader's check and wait.
            drop(lock(&p.state));
            p.changed.notify_all();
        }
    }

    pub fn cancel_all(&self) {
        let ids: Vec<u64> = lock(&self.0).keys().copied().collect();
        for id in ids {
            self.cancel(id);
        }
    }
}

pub fn start(id: u64, pid: u32, since: u64, follow: bool, out: Out, reads: &Reads) {
    let Some(p) = registry().get(pid) else {
        out.error(id, ErrorCode::ProcessNotFound, format!("no process {pid}"));
        return;
    };
    let cancelled = Arc::new(AtomicBool::new(false));
    if follow {
        lock(&reads.0).insert(id, (cancelled.clone(), p.clone()));
    }
    let reads = reads.clone();
    thread("proc-read", move || {
        run(id, &p, since, follow, &out, &cancelled);
        lock(&reads.0).remove(&id);
    });
}

fn run(id: u64, p: &Proc, since: u64, follow: bool, out: &Out, cancelled: &AtomicBool) {
    let mut cursor = since;
    loop {
        if !out.is_current() {
            return; // The host is gone; nobody would see the end.
        }
        let st = lock(&p.state);
        let items = st.ring.read(cursor, MAX_RECORDS_PER_FRAME, FRAME_BYTES);
        if items.is_empty() {
            if let Some(exit) = st.exit.clone() {
                let total = st.ring.total();
                drop(st);
                if cursor <= total {
                    let rec = AgentRecord {
                        seq: total,
                        stream: "exit".into(),
                        exit_code: Some(exit.code),
                        signal: exit.signal.map(str::to_string),
                        ..Default::default()
                    };
                    out.send(id, GuestMsg::Records { records: vec![rec] });
                }
                out.send(id, GuestMsg::ReadEnd);
                return;
            }
            if !follow || cancelled.load(Ordering::SeqCst) {
                drop(st);
                out.send(id, GuestMsg::ReadEnd);
                return;
            }
            let _ = p
                .changed
                .wait_timeout(st, POLL)
                .unwrap_or_else(|e| e.into_inner());
            continue;
        }
        drop(st);
        let mut records = Vec::with_capacity(items.len());
        for item in items {
            match item {
                Item::Gap { seq, dropped } => {
                    cursor = seq + dropped;
                    records.push(AgentRecord {
                        seq,
                        stream: "gap".into(),
                        dropped_bytes: Some(dropped),
                        ..Default::default()
                    });
                }
                Item::Data { seq, stream, data } => {
                    cursor = seq + data.len() as u64;
                    records.push(AgentRecord {
                        seq,
                        stream: stream.as_str().into(),
                        data: base64::encode(&data),
                        ..Default::default()
                    });
                }
            }
        }
        out.send(id, GuestMsg::Records { records });
        if cancelled.load(Ordering::SeqCst) {
            out.send(id, GuestMsg::ReadEnd);
            return;
        }
    }
}
