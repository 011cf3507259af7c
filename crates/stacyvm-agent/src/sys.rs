//! The few system calls std does not wrap.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
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

/// Waits until at least one of `fds` can be read without blocking (data, end of file or an
/// error); which ones can. An interrupted wait answers none.
pub fn poll_readable(fds: &[BorrowedFd<'_>]) -> io::Result<Vec<bool>> {
    poll_readable_for(fds, None)
}

/// [`poll_readable`], giving up after `timeout` (none ready).
#[expect(unsafe_code, reason = "poll(2) has no std wrapper")]
pub fn poll_readable_for(
    fds: &[BorrowedFd<'_>],
    timeout: Option<Duration>,
) -> io::Result<Vec<bool>> {
    let mut p: Vec<libc::pollfd> = fds
        .iter()
        .map(|fd| libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let len = libc::nfds_t::try_from(p.len()).unwrap_or(libc::nfds_t::MAX);
    // Rounded up: a wait for 0.4 ms must not become a busy loop of zero-length polls.
    let ms = timeout.map_or(-1, |t| {
        libc::c_int::try_from(t.as_micros().div_ceil(1000)).unwrap_or(libc::c_int::MAX)
    });
    // SAFETY: `p` is a valid, exclusively borrowed pollfd array of `len` entries for the whole
    // call, and every fd is kept open by its BorrowedFd lifetime.
    let n = unsafe { libc::poll(p.as_mut_ptr(), len, ms) };
    if n < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(vec![false; p.len()]);
        }
        return Err(e);
    }
    Ok(p.iter().map(|p| p.revents != 0).collect())
}

/// A pidfd for our child `pid` (Linux 5.3+): readable once the child has exited, so one
/// `poll` waits for its output and its end together.
#[expect(unsafe_code, reason = "pidfd_open(2) has no std or libc wrapper")]
pub fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| io::ErrorKind::InvalidInput)?;
    // SAFETY: pidfd_open takes plain integers; a non-negative answer is a new fd we own.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = libc::c_int::try_from(fd).map_err(|_| io::ErrorKind::InvalidData)?;
    // SAFETY: the kernel just returned this fd and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
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

/// SIGKILL to one process. Refuses pids that would hit more than it (0, 1, <0).
#[expect(unsafe_code, reason = "std cannot signal a process it did not spawn")]
pub fn kill_pid(pid: i32) {
    if pid <= 1 {
        return;
    }
    // SAFETY: kill(2) takes plain integers and touches no memory of this process.
    let _ = unsafe { libc::kill(pid, libc::SIGKILL) };
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

/// `RNDADDENTROPY` (`_IOW('R', 0x03, int[2])`) and `RNDRESEEDCRNG` (`_IO('R', 0x07)`) from
/// linux/random.h; libc does not export them.
const RNDADDENTROPY: libc::c_ulong = 0x4008_5203;
const RNDRESEEDCRNG: libc::c_ulong = 0x5207;

/// Credits `seed` to the kernel's entropy pool (`RNDADDENTROPY`, needs CAP_SYS_ADMIN) and
/// reseeds the generator from it (`RNDRESEEDCRNG`), so `/dev/urandom` output changes at once.
#[expect(unsafe_code, reason = "the random ioctls have no std wrapper")]
pub fn add_entropy_and_reseed(urandom: &std::fs::File, seed: &[u8]) -> io::Result<()> {
    // struct rand_pool_info { int entropy_count; int buf_size; __u32 buf[]; }
    let words = seed.len().div_ceil(4);
    let mut info: Vec<u32> = vec![0; 2 + words];
    let bits = u32::try_from(seed.len() * 8).map_err(|_| io::ErrorKind::InvalidInput)?;
    info[0] = bits;
    info[1] = u32::try_from(seed.len()).map_err(|_| io::ErrorKind::InvalidInput)?;
    for (i, chunk) in seed.chunks(4).enumerate() {
        let mut w = [0u8; 4];
        w[..chunk.len()].copy_from_slice(chunk);
        info[2 + i] = u32::from_ne_bytes(w);
    }
    let fd = urandom.as_raw_fd();
    // SAFETY: `info` is a live, properly aligned rand_pool_info whose buf holds buf_size bytes;
    // the kernel only reads it during the call.
    if unsafe { libc::ioctl(fd, RNDADDENTROPY as _, info.as_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: an argument-less ioctl on a file descriptor we own.
    if unsafe { libc::ioctl(fd, RNDRESEEDCRNG as _) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sets the wall clock (`CLOCK_REALTIME`) to `unix_ms`.
#[expect(unsafe_code, reason = "clock_settime(2) has no std wrapper")]
pub fn set_clock(unix_ms: u64) -> io::Result<()> {
    let ts = libc::timespec {
        tv_sec: libc::time_t::try_from(unix_ms / 1000).map_err(|_| io::ErrorKind::InvalidInput)?,
        tv_nsec: ((unix_ms % 1000) * 1_000_000) as libc::c_long,
    };
    // SAFETY: `ts` is a valid timespec that outlives the call; the kernel only reads it.
    if unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &ts) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Collects the exit status of zombie child `pid`, if it is one (never blocks).
#[expect(unsafe_code, reason = "std can only wait for children it spawned")]
pub fn reap(pid: u32) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    let mut status = 0;
    // SAFETY: `status` is a valid out-pointer for the duration of the call.
    let _ = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
}

/// Marks SIGTERM (and SIGINT) as received in [`TERMINATED`] instead of ending the process, so the
/// agent can kill its process groups first (and so it can be stopped at all as PID 1).
#[expect(unsafe_code, reason = "sigaction(2) has no std wrapper")]
pub fn catch_termination() -> io::Result<()> {
    extern "C" fn on_signal(_: libc::c_int) {
        TERMINATED.store(true, std::sync::atomic::Ordering::SeqCst);
    }
    for sig in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: a zeroed sigaction is a valid "no flags, empty mask" value; the handler only
        // stores to an atomic, which is async-signal-safe; `sa` outlives the call.
        let r = unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigaction(sig, &sa, std::ptr::null_mut())
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Set by the SIGTERM handler of [`catch_termination`].
pub static TERMINATED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

pub use crate::threads::thread;
