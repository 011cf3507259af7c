//! `ProcRead`: each read is a thread that copies records out of the process's ring and sends
//! them in `Records` frames, then `ReadEnd`. Readers never hold the ring's lock while sending,
//! so a slow host slows only its own read; the process keeps writing and the ring drops the
//! oldest output, which the reader then reports as a gap.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use stacyvm_protocol::agent::{AgentRecord, ErrorCode, GuestMsg, MAX_RECORDS_PER_FRAME};
use stacyvm_protocol::base64;

use super::ring::Item;
use super::{inline, registry, thread, Exit, Proc};
use crate::session::{lock, Out};

/// Raw output bytes per `Records` frame at most (about 350 KiB encoded): frames stay far below
/// `MAX_FRAME_LEN` and the session's queue stays small.
pub(super) const FRAME_BYTES: usize = 256 * 1024;
/// How often a waiting follow read looks at its cancel flag and its session.
const POLL: Duration = Duration::from_millis(250);

/// A read that may be told to stop (a follow read) or given credit (a windowed one).
struct InFlight {
    cancelled: Arc<AtomicBool>,
    proc: Arc<Proc>,
    /// Frames it may still send; `None` = unlimited.
    credit: Option<Arc<AtomicU64>>,
    /// Served by whoever records the process's output (`inline`), not by a thread.
    inline: bool,
}

/// Reads of one session in flight, by request id, for `Cancel` and `ReadCredit`.
#[derive(Clone, Default)]
pub struct Reads(Arc<Mutex<HashMap<u64, InFlight>>>);

impl Reads {
    /// Ends the read with request id `target`, if there is one; it answers `ReadEnd`.
    pub fn cancel(&self, target: u64) {
        let Some(r) = lock(&self.0).remove(&target) else {
            return;
        };
        if r.inline {
            inline::cancel(&r.proc);
        } else {
            r.cancelled.store(true, Ordering::SeqCst);
            wake(&r.proc);
        }
    }

    pub(super) fn insert_inline(&self, id: u64, proc: Arc<Proc>) {
        let r = InFlight {
            cancelled: Arc::new(AtomicBool::new(false)),
            proc,
            credit: None,
            inline: true,
        };
        lock(&self.0).insert(id, r);
    }

    pub(super) fn remove(&self, id: u64) {
        lock(&self.0).remove(&id);
    }

    pub fn cancel_all(&self) {
        let ids: Vec<u64> = lock(&self.0).keys().copied().collect();
        for id in ids {
            self.cancel(id);
        }
    }

    /// `frames` more frames for the windowed read `target` (unknown ids are ignored: the read
    /// may just have ended).
    pub fn credit(&self, target: u64, frames: u32) {
        let map = lock(&self.0);
        let Some(r) = map.get(&target) else {
            return;
        };
        if r.inline {
            // Sent from here, without the map's lock (the read leaves the map when it ends).
            let p = r.proc.clone();
            drop(map);
            inline::credit(&p, frames);
        } else if let Some(c) = &r.credit {
            c.fetch_add(u64::from(frames), Ordering::SeqCst);
            wake(&r.proc);
        }
    }
}

/// Wakes whatever waits on `p` (readers, held pumps). The lock is taken so the wake-up cannot
/// fall between a waiter's check and its wait.
fn wake(p: &Proc) {
    drop(lock(&p.state));
    p.changed.notify_all();
}

pub fn start(
    id: u64,
    pid: u32,
    since: u64,
    follow: bool,
    window: Option<u32>,
    out: Out,
    reads: &Reads,
) {
    let Some(p) = registry().get(pid) else {
        out.error(id, ErrorCode::ProcessNotFound, format!("no process {pid}"));
        return;
    };
    let cancelled = Arc::new(AtomicBool::new(false));
    let credit = window.map(|w| Arc::new(AtomicU64::new(u64::from(w))));
    if follow || credit.is_some() {
        lock(&reads.0).insert(
            id,
            InFlight {
                cancelled: cancelled.clone(),
                proc: p.clone(),
                credit: credit.clone(),
                inline: false,
            },
        );
    }
    let reads = reads.clone();
    {
        let mut st = lock(&p.state);
        st.readers += 1;
        st.had_reader = true;
    }
    let end = {
        let (p, reads) = (p.clone(), reads.clone());
        move || {
            lock(&reads.0).remove(&id);
            lock(&p.state).readers -= 1;
            p.changed.notify_all();
        }
    };
    let (rp, rout, rend) = (p, out.clone(), end.clone());
    let started = thread("proc-read", move || {
        run(id, &rp, since, follow, &rout, &cancelled, credit.as_deref());
        rend();
    });
    if let Err(message) = started {
        end();
        out.error(id, ErrorCode::Busy, message);
    }
}

/// Waits until a windowed read may send a frame and takes the credit (an unwindowed one always
/// may); false when the read should stop instead (cancelled, or its host is gone).
fn may_send(p: &Proc, credit: Option<&AtomicU64>, out: &Out, cancelled: &AtomicBool) -> bool {
    let Some(credit) = credit else {
        return true;
    };
    loop {
        if cancelled.load(Ordering::SeqCst) || !out.is_current() {
            return false;
        }
        if credit
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |c| c.checked_sub(1))
            .is_ok()
        {
            return true;
        }
        let st = lock(&p.state);
        if credit.load(Ordering::SeqCst) == 0 && !cancelled.load(Ordering::SeqCst) {
            let _ = p.changed.wait_timeout(st, POLL);
        }
    }
}

fn run(
    id: u64,
    p: &Proc,
    since: u64,
    follow: bool,
    out: &Out,
    cancelled: &AtomicBool,
    credit: Option<&AtomicU64>,
) {
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
                    if !may_send(p, credit, out, cancelled) {
                        out.send(id, GuestMsg::ReadEnd);
                        return;
                    }
                    let records = GuestMsg::Records {
                        records: vec![exit_record(total, &exit)],
                    };
                    out.send_all(id, [records, GuestMsg::ReadEnd]);
                    return;
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
        let records = encode(items, &mut cursor);
        if !may_send(p, credit, out, cancelled) {
            out.send(id, GuestMsg::ReadEnd);
            return;
        }
        out.send(id, GuestMsg::Records { records });
        // What is sent is what an exec's held output may make room for.
        let mut st = lock(&p.state);
        if cursor > st.read_upto {
            st.read_upto = cursor;
            drop(st);
            p.changed.notify_all();
        }
        if cancelled.load(Ordering::SeqCst) {
            out.send(id, GuestMsg::ReadEnd);
            return;
        }
    }
}

/// The records of `items`, moving `cursor` past them.
pub(super) fn encode(items: Vec<Item>, cursor: &mut u64) -> Vec<AgentRecord> {
    let mut records = Vec::with_capacity(items.len());
    for item in items {
        match item {
            Item::Gap { seq, dropped } => {
                *cursor = seq + dropped;
                records.push(AgentRecord {
                    seq,
                    stream: "gap".into(),
                    dropped_bytes: Some(dropped),
                    ..Default::default()
                });
            }
            Item::Data { seq, stream, data } => {
                *cursor = seq + data.len() as u64;
                records.push(AgentRecord {
                    seq,
                    stream: stream.as_str().into(),
                    data: base64::encode(&data),
                    ..Default::default()
                });
            }
        }
    }
    records
}

/// The exit record, at offset `total` (after every output byte).
pub(super) fn exit_record(total: u64, exit: &Exit) -> AgentRecord {
    AgentRecord {
        seq: total,
        stream: "exit".into(),
        exit_code: Some(exit.code),
        signal: exit.signal.map(str::to_string),
        ..Default::default()
    }
}
