//! Stdin of a process: requests are queued to one writer thread per process, so a process that
//! does not read its stdin never blocks a session's request loop, and bytes land in the order
//! the requests came. Each request is answered once its bytes were written.

use std::fs::File;
use std::io::Write;
use std::sync::mpsc::Receiver;
use std::sync::Weak;

use stacyvm_protocol::agent::{ErrorCode, GuestMsg};

use super::Proc;
use crate::session::Out;

/// End-of-file for a terminal in canonical mode (`^D`): what closing a PTY's input means.
const EOT: u8 = 0x04;

pub struct Item {
    pub data: Vec<u8>,
    pub close: bool,
    pub id: u64,
    pub out: Out,
}

pub fn writer(mut sink: File, rx: Receiver<Item>, is_pty: bool, p: Weak<Proc>) {
    for item in rx {
        let mut r = sink.write_all(&item.data);
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
        if item.close && !is_pty {
            // Dropping the only write end is what gives the process its end-of-file.
            return;
        }
    }
}
