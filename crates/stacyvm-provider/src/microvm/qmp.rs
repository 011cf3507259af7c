//! A minimal QMP client (QEMU's JSON monitor on a unix socket): one command at a time, events
//! skipped, and file descriptors handed to QEMU with `getfd` (SCM_RIGHTS), which is how the
//! snapshot state reaches a QEMU that runs as an unprivileged user under `spawn=deny`.

use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::UnixStream;
use tokio::time::Instant;

/// Largest reply line accepted (query replies are small).
const MAX_LINE: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub(crate) enum QmpError {
    #[error("qmp i/o")]
    Io(#[source] std::io::Error),
    #[error("qmp did not answer in time")]
    Timeout,
    #[error("qmp connection closed")]
    Closed,
    #[error("qmp reply is not json")]
    Json(#[source] serde_json::Error),
    #[error("qmp command {command} failed: {desc}")]
    Command { command: String, desc: String },
}

pub(crate) struct Qmp {
    stream: UnixStream,
    buf: Vec<u8>,
}

impl Qmp {
    /// Connects (retrying until QEMU created the socket or `deadline`), reads the greeting and
    /// leaves capabilities negotiation mode.
    pub async fn connect(sock: &Path, deadline: Instant) -> Result<Qmp, QmpError> {
        let stream = loop {
            match UnixStream::connect(sock).await {
                Ok(s) => break s,
                Err(e) if Instant::now() >= deadline => return Err(QmpError::Io(e)),
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        };
        let mut q = Qmp {
            stream,
            buf: Vec::new(),
        };
        let left = deadline.saturating_duration_since(Instant::now());
        tokio::time::timeout(left, q.read_message())
            .await
            .map_err(|_| QmpError::Timeout)??;
        q.execute("qmp_capabilities", None).await?;
        Ok(q)
    }

    /// Runs `command` and returns its `return` value.
    pub async fn execute(
        &mut self,
        command: &str,
        arguments: Option<Value>,
    ) -> Result<Value, QmpError> {
        let msg = command_line(command, arguments);
        self.stream
            .write_all(msg.as_bytes())
            .await
            .map_err(QmpError::Io)?;
        self.reply(command).await
    }

    /// `getfd`: hands `fd` to QEMU under `name` (for `fd:<name>` migration URIs).
    pub async fn send_fd(&mut self, name: &str, fd: BorrowedFd<'_>) -> Result<(), QmpError> {
        let msg = command_line("getfd", Some(json!({ "fdname": name })));
        loop {
            self.stream.writable().await.map_err(QmpError::Io)?;
            match self.stream.try_io(Interest::WRITABLE, || {
                send_with_fd(&self.stream, msg.as_bytes(), fd)
            }) {
                Ok(n) if n == msg.len() => break,
                // A partial write of one short line on an idle socket does not happen; treat
                // it as a broken connection rather than resend the fd.
                Ok(_) => return Err(QmpError::Closed),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(QmpError::Io(e)),
            }
        }
        self.reply("getfd").await.map(drop)
    }

    /// QEMU's run state (`running`, `paused`, `inmigrate`, `postmigrate`, ...).
    pub async fn status(&mut self) -> Result<String, QmpError> {
        let v = self.execute("query-status", None).await?;
        Ok(v["status"].as_str().unwrap_or_default().to_string())
    }

    async fn reply(&mut self, command: &str) -> Result<Value, QmpError> {
        loop {
            let mut m = self.read_message().await?;
            if let Some(r) = m.get_mut("return") {
                return Ok(r.take());
            }
            if let Some(e) = m.get("error") {
                return Err(QmpError::Command {
                    command: command.to_string(),
                    desc: e["desc"].as_str().unwrap_or("unknown error").to_string(),
                });
            }
            // Anything else is an asynchronous event.
        }
    }

    async fn read_message(&mut self) -> Result<Value, QmpError> {
        loop {
            if let Some(end) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=end).collect();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return serde_json::from_slice(&line).map_err(QmpError::Json);
            }
            if self.buf.len() > MAX_LINE {
                return Err(QmpError::Closed);
            }
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk).await.map_err(QmpError::Io)?;
            if n == 0 {
                return Err(QmpError::Closed);
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

fn command_line(command: &str, arguments: Option<Value>) -> String {
    let mut m = json!({ "execute": command });
    if let Some(a) = arguments {
        m["arguments"] = a;
    }
    m.to_string() + "\n"
}

/// One `sendmsg(2)` of `data` with `fd` attached as SCM_RIGHTS.
#[expect(unsafe_code, reason = "std has no stable API for SCM_RIGHTS")]
fn send_with_fd(sock: &UnixStream, data: &[u8], fd: BorrowedFd<'_>) -> std::io::Result<usize> {
    let raw = fd.as_raw_fd();
    let fd_len = std::mem::size_of::<libc::c_int>() as libc::c_uint;
    // SAFETY: CMSG_SPACE is a pure size computation.
    let space = unsafe { libc::CMSG_SPACE(fd_len) } as usize;
    // u64 words keep the control buffer aligned for cmsghdr.
    let mut control = vec![0u64; space.div_ceil(8)];
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: an all-zero msghdr is a valid empty message; the fields are filled below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: msg_control points to `space` writable, aligned bytes, enough for one cmsghdr
    // carrying one int; CMSG_FIRSTHDR/CMSG_DATA stay inside that buffer. `iov` and `data`
    // outlive the sendmsg call, which only reads them.
    let n = unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        if cmsg.is_null() {
            return Err(std::io::ErrorKind::InvalidInput.into());
        }
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(fd_len) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::c_int>(), raw);
        libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL)
    };
    if n < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[path = "qmp_tests.rs"]
mod tests;
