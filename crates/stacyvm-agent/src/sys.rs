//! The few system calls std does not wrap.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::Duration;

/// What `poll` saw on the port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ready {
    pub readable: bool,
    pub writable: bool,
    /// The host side is not connected (virtio-serial reports it as a hang-up).
    pub hangup: bool,
}

#[expect(unsafe_code, reason = "poll(2) has no std wrapper")]
pub fn poll(fd: BorrowedFd<'_>, events: libc::c_short, timeout: Duration) -> io::Result<Ready> {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events,
        revents: 0,
    };
    let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: `p` is a valid, exclusively borrowed pollfd array of length 1 for the whole call,
    // and the fd is kept open by the BorrowedFd lifetime.
    let n = unsafe { libc::poll(&mut p, 1, ms) };
    if n < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(Ready {
                readable: false,
                writable: false,
                hangup: false,
            });
        }
        return Err(e);
    }
    Ok(Ready {
        readable: p.revents & libc::POLLIN != 0,
        writable: p.revents & libc::POLLOUT != 0,
        hangup: p.revents & (libc::POLLHUP | libc::POLLERR) != 0,
    })
}

/// SIGKILL to a whole process group. Refuses group ids that would hit everything (0, 1, <0).
#[expect(unsafe_code, reason = "std cannot signal a process group")]
pub fn kill_group(pgid: i32) {
    if pgid <= 1 {
        return;
    }
    // SAFETY: kill(2) takes plain integers and touches no memory of this process.
    let _ = unsafe { libc::kill(-pgid, libc::SIGKILL) };
}

#[expect(unsafe_code, reason = "sethostname(2) has no std wrapper")]
pub fn set_hostname(name: &str) -> io::Result<()> {
    let bytes = name.as_bytes();
    // SAFETY: the pointer and length describe `bytes`, which outlives the call; the kernel only
    // reads from it.
    let r = unsafe { libc::sethostname(bytes.as_ptr().cast(), bytes.len()) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
