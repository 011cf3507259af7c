//! The virtio-serial port: finding it, and moving whole frames through it without ever
//! blocking forever on a host that is not connected.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::sys;

/// `/dev/<vportNpM>` of the port called `name`, waiting up to `wait` for it to show up.
pub fn find_device(name: &str, wait: Duration) -> Option<PathBuf> {
    let start = Instant::now();
    loop {
        if let Ok(dir) = std::fs::read_dir("/sys/class/virtio-ports") {
            for e in dir.flatten() {
                let named =
                    std::fs::read_to_string(e.path().join("name")).is_ok_and(|n| n.trim() == name);
                if named {
                    let dev = Path::new("/dev").join(e.file_name());
                    if dev.exists() {
                        return Some(dev);
                    }
                }
            }
        }
        if start.elapsed() > wait {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Non-blocking, so neither direction can hang on an absent host; [`sys::poll`] does the waiting.
pub fn open(dev: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(dev)
}

/// What one read attempt gave.
pub enum ReadOutcome {
    Data(usize),
    /// Nothing yet (timeout).
    Idle,
    /// The host is not connected.
    Disconnected,
}

pub fn read_some(f: &mut File, buf: &mut [u8]) -> io::Result<ReadOutcome> {
    let r = sys::poll(f.as_fd(), libc::POLLIN, Duration::from_millis(500))?;
    if !r.readable {
        return Ok(if r.hangup {
            ReadOutcome::Disconnected
        } else {
            ReadOutcome::Idle
        });
    }
    match f.read(buf) {
        Ok(0) => Ok(ReadOutcome::Disconnected),
        Ok(n) => Ok(ReadOutcome::Data(n)),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
            ) =>
        {
            Ok(ReadOutcome::Idle)
        }
        Err(e) => Err(e),
    }
}

/// Writes all of `frame`; gives up (returning false) when the host is not connected, so the
/// frame is dropped instead of blocking the agent.
pub fn write_frame(f: &mut File, frame: &[u8]) -> io::Result<bool> {
    let mut off = 0;
    while off < frame.len() {
        match f.write(&frame[off..]) {
            Ok(n) => off += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let r = sys::poll(f.as_fd(), libc::POLLOUT, Duration::from_millis(1000))?;
                if r.hangup && !r.writable {
                    return Ok(false);
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}
