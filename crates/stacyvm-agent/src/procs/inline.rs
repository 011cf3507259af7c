//! A read served without a thread of its own: the read a `ProcStart` asks for with
//! `read_window` (every exec, and a start that streams). Whoever records the process's output
//! or exit (its output thread) sends what the read has credit for right away, and the session
//! thread sends the rest when credit comes. An exec's output and exit then reach the host
//! without waking a reader thread in between (docs/processes.md, "Reads").

use std::sync::Arc;

use stacyvm_protocol::agent::{GuestMsg, MAX_RECORDS_PER_FRAME};

use super::read::{encode, exit_record, Reads, FRAME_BYTES};
use super::Proc;
use crate::session::{lock, Out};

/// The inline read of one process.
pub struct Reader {
    id: u64,
    out: Out,
    reads: Reads,
    /// Frames it may still send.
    credit: u64,
    /// The next offset to send.
    cursor: u64,
    cancelled: bool,
}

/// Makes the read `id` of `p` (from offset 0, with `window` frames of credit) inline, and sends
/// what is there already. Called once the start's answer is sent: nothing may precede it.
pub fn attach(id: u64, p: &Arc<Proc>, window: u32, out: Out, reads: &Reads) {
    {
        let mut st = lock(&p.state);
        st.readers += 1;
        st.had_reader = true;
    }
    reads.insert_inline(id, p.clone());
    *lock(&p.inline) = Some(Reader {
        id,
        out,
        reads: reads.clone(),
        credit: u64::from(window),
        cursor: 0,
        cancelled: false,
    });
    pump(p);
}

pub fn credit(p: &Proc, frames: u32) {
    if let Some(r) = lock(&p.inline).as_mut() {
        r.credit += u64::from(frames);
    }
    pump(p);
}

pub fn cancel(p: &Proc) {
    if let Some(r) = lock(&p.inline).as_mut() {
        r.cancelled = true;
    }
    pump(p);
}

/// Sends what the inline read of `p` has and may send: output records, then the exit record
/// and `ReadEnd`, which end it. Never waits.
pub fn pump(p: &Proc) {
    let mut slot = lock(&p.inline);
    let Some(r) = slot.as_mut() else {
        return;
    };
    loop {
        if r.cancelled || !r.out.is_current() {
            r.out.send(r.id, GuestMsg::ReadEnd);
            break;
        }
        let st = lock(&p.state);
        let items = st.ring.read(r.cursor, MAX_RECORDS_PER_FRAME, FRAME_BYTES);
        if items.is_empty() {
            let Some(exit) = st.exit.clone() else {
                return;
            };
            let total = st.ring.total();
            drop(st);
            if r.cursor > total {
                r.out.send(r.id, GuestMsg::ReadEnd);
                break;
            }
            if r.credit == 0 {
                return;
            }
            let records = GuestMsg::Records {
                records: vec![exit_record(total, &exit)],
            };
            r.out.send_all(r.id, [records, GuestMsg::ReadEnd]);
            break;
        }
        drop(st);
        if r.credit == 0 {
            return;
        }
        r.credit -= 1;
        let records = encode(items, &mut r.cursor);
        r.out.send(r.id, GuestMsg::Records { records });
        // What is sent is what an exec's held output may make room for.
        let mut st = lock(&p.state);
        if r.cursor > st.read_upto {
            st.read_upto = r.cursor;
            drop(st);
            p.changed.notify_all();
        }
    }
    // Ended: the read is gone from its session and no longer holds the process's output.
    let ended = slot.take();
    drop(slot);
    if let Some(r) = ended {
        r.reads.remove(r.id);
    }
    lock(&p.state).readers -= 1;
    p.changed.notify_all();
}

#[cfg(test)]
#[path = "inline_tests.rs"]
mod tests;
