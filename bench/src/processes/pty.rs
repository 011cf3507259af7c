//! Benchmark P2: keystroke echo round trip in a PTY: one byte sent over the attach WebSocket
//! to `cat` in a sandbox's terminal until it comes back, against the same on a pty of the host
//! (openpty + `cat` spawned here: the floor).
//!
//! The terminal is put in raw mode without echo first, so the byte that comes back is the one
//! `cat` read and wrote (a keystroke through the program, as in a shell's line editor), not the
//! line discipline's echo.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use reqwest::Client;
use serde_json::json;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::client;
use crate::BenchError;

/// Same command on both sides; `ready` says the terminal is raw.
const COMMAND: &str = "stty raw -echo; echo ready; exec cat";
const READY: &[u8] = b"ready\n";
const READY_DEADLINE: Duration = Duration::from_secs(20);
const ECHO_DEADLINE: Duration = Duration::from_secs(10);

fn io(context: &str) -> impl FnOnce(std::io::Error) -> BenchError + '_ {
    move |source| BenchError::Io {
        context: context.to_string(),
        source,
    }
}

/// The byte of keystroke `i` (printable, so a stray one in a log reads plainly).
pub fn key(i: usize) -> u8 {
    b'a' + (i % 26) as u8
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// `cat` on a PTY in a sandbox, attached over the WebSocket.
pub struct SandboxPty {
    ws: Ws,
    base: String,
    sid: String,
    pid: u64,
}

impl SandboxPty {
    pub async fn open(
        c: &Client,
        base: &str,
        ws_base: &str,
        sid: &str,
    ) -> Result<Self, BenchError> {
        let body = json!({"command": COMMAND, "pty": {"cols": 80, "rows": 24}, "stdin": true});
        let pid = client::start(c, base, sid, &body).await?;
        let url = format!("{ws_base}/sandboxes/{sid}/processes/{pid}/attach?since=0");
        // No Nagle: one-byte frames must leave at once.
        let (ws, _) = tokio_tungstenite::connect_async_with_config(url, None, true)
            .await
            .map_err(|e| BenchError::Unexpected(format!("attach WebSocket: {e}")))?;
        let mut p = SandboxPty {
            ws,
            base: base.to_string(),
            sid: sid.to_string(),
            pid,
        };
        let mut seen = Vec::new();
        let wait = async {
            while !seen.windows(READY.len()).any(|w| w == READY) {
                seen.extend_from_slice(&p.next_bytes().await?);
            }
            Ok::<_, BenchError>(())
        };
        tokio::time::timeout(READY_DEADLINE, wait)
            .await
            .map_err(|_| BenchError::Unexpected("the sandbox pty never said ready".into()))??;
        Ok(p)
    }

    async fn next_bytes(&mut self) -> Result<Vec<u8>, BenchError> {
        loop {
            match self.ws.next().await {
                Some(Ok(Message::Binary(b))) => return Ok(b.to_vec()),
                Some(Ok(Message::Text(t))) => {
                    return Err(BenchError::Unexpected(format!(
                        "attach: process ended: {}",
                        t.as_str()
                    )))
                }
                Some(Ok(Message::Close(f))) => {
                    return Err(BenchError::Unexpected(format!("attach closed: {f:?}")))
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(BenchError::Unexpected(format!("attach: {e}"))),
                None => return Err(BenchError::Unexpected("attach ended".into())),
            }
        }
    }

    /// Sends one byte and waits until it comes back.
    pub async fn keystroke(&mut self, byte: u8) -> Result<Duration, BenchError> {
        let t = Instant::now();
        let round = async {
            self.ws
                .send(Message::binary(vec![byte]))
                .await
                .map_err(|e| BenchError::Unexpected(format!("attach send: {e}")))?;
            while !self.next_bytes().await?.contains(&byte) {}
            Ok::<_, BenchError>(())
        };
        tokio::time::timeout(ECHO_DEADLINE, round)
            .await
            .map_err(|_| BenchError::Unexpected("no echo from the sandbox pty".into()))??;
        Ok(t.elapsed())
    }

    pub async fn close(mut self, c: &Client) -> Result<(), BenchError> {
        let _ = self.ws.close(None).await;
        client::kill(c, &self.base, &self.sid, self.pid).await
    }
}

#[expect(unsafe_code, reason = "std has no openpty")]
fn openpty() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let (mut master, mut slave) = (-1, -1);
    // SAFETY: two valid out-pointers; name, termios and winsize may be null.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: openpty just returned these two descriptors; nothing else owns them.
    Ok(unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) })
}

/// `cat` on a pty of the host, driven through the master directly (blocking I/O).
pub struct HostPty {
    master: File,
    child: Child,
}

impl HostPty {
    pub fn open() -> Result<Self, BenchError> {
        let (master, slave) = openpty().map_err(io("openpty"))?;
        let out = slave.try_clone().map_err(io("dup of the pty slave"))?;
        let err = slave.try_clone().map_err(io("dup of the pty slave"))?;
        let child = Command::new("sh")
            .args(["-c", COMMAND])
            .stdin(Stdio::from(slave))
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .map_err(io("spawning sh on the host pty"))?;
        // The parent's slave copies were moved into the Command and dropped with it.
        let mut p = HostPty {
            master: File::from(master),
            child,
        };
        let mut seen = Vec::new();
        let mut buf = [0u8; 256];
        while !seen.windows(READY.len()).any(|w| w == READY) {
            let n = p
                .master
                .read(&mut buf)
                .map_err(io("reading the host pty"))?;
            if n == 0 {
                return Err(BenchError::Unexpected(
                    "host pty closed before ready".into(),
                ));
            }
            seen.extend_from_slice(&buf[..n]);
        }
        Ok(p)
    }

    pub fn keystroke(&mut self, byte: u8) -> Result<Duration, BenchError> {
        let mut buf = [0u8; 256];
        let t = Instant::now();
        self.master
            .write_all(&[byte])
            .map_err(io("writing the host pty"))?;
        loop {
            let n = self
                .master
                .read(&mut buf)
                .map_err(io("reading the host pty"))?;
            if n == 0 {
                return Err(BenchError::Unexpected("host pty closed".into()));
            }
            if buf[..n].contains(&byte) {
                return Ok(t.elapsed());
            }
        }
    }
}

impl Drop for HostPty {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
