//! Stdin of a process: requests are queued to one writer thread per process, so a process that
//! does not read its stdin never blocks a session's request loop, and bytes land in the order
//! the requests came. Each request is answered once its bytes were written.

use std::fs::File;
use std::io::Write;
use std::sync::mpsc::Receiver;
use std::sync::Weak;

use stacyvm_protocol::agent::{ErrorCode, GuestMsg};

use super::{pty, Proc};
use crate::session::Out;

/// End-of-file for a terminal in canonical mode (`^D`): what closing a PTY's input means.
const EOT: u8 = 0x04;
/// Stdin bytes a process may have waiting (queued, not yet written) at most: a process that
/// does not read its input must not make the agent keep every byte a client sends.
pub const MAX_QUEUED: usize = 8 << 20;

pub struct Item {
    pub data: Vec<u8>,
    pub close: bool,
    pub id: u64,
    pub out: Out,
}

pub fn writer(mut sink: File, rx: Receiver<Item>, is_pty: bool, pgid: i32, p: Weak<Proc>) {
    let emulate_isig = is_pty && !pty::kernel_handles_isig();
    for item in rx {
        let queued = item.data.len();
        let mut r = if emulate_isig {
            write_signalling(&mut sink, &item.data, pgid)
        } else {
            sink.write_all(&item.data)
        };
        if r.is_ok() && item.close && is_pty {
            r = sink.write_all(&[EOT]);
        }
        match r {
            Ok(()) => item.out.send(
                item.id,
                GuestMsg::Written {
                    n: item.data.len() as u64,
                },
            ),
            Err(e) => {
                let exited = p.upgrade().is_some_and(|p| p.exited());
                let (code, what) = if exited {
                    (ErrorCode::ProcessExited, "the process has exited")
                } else {
                    (ErrorCode::StdinClosed, "the process closed its stdin")
                };
                item.out.error(item.id, code, format!("{what}: {e}"));
            }
        }
        if let Some(p) = p.upgrade() {
            p.stdin_queued
                .fetch_sub(queued, std::sync::atomic::Ordering::SeqCst);
        }
        if item.close && !is_pty {
            // Dropping the only write end is what gives the process its end-of-file.
            return;
        }
    }
}

/// Writes `data` to a PTY master whose kernel ignores ISIG: the interrupt characters become
/// signals to the foreground job (as Linux's line discipline would), the rest is written.
fn write_signalling(sink: &mut File, data: &[u8], pgid: i32) -> std::io::Result<()> {
    let mut start = 0;
    for (i, &b) in data.iter().enumerate() {
        if let Some(sig) = pty::interrupt_signal(sink, b) {
            sink.write_all(&data[start..i])?;
            let group = pty::foreground_group(sink).unwrap_or_else(|| pty::newest_job(pgid));
            let _ = pty::signal_group(group, sig);
            start = i + 1;
        }
    }
    sink.write_all(&data[start..])
}
