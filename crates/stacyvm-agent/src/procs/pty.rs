//! Pseudo-terminals and process-group signals: the libc calls std does not wrap.

use std::ffi::CStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

/// A new terminal: the master (kept by the agent) and the slave (given to the child). Both are
/// close-on-exec, so no other child inherits them; `Stdio` dups the slave onto 0, 1 and 2.
pub struct Pty {
    pub master: File,
    pub slave: File,
}

#[allow(unsafe_code)]
pub fn open(cols: u16, rows: u16) -> io::Result<Pty> {
    if !std::path::Path::new("/dev/ptmx").exists() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            "no /dev/ptmx: this sandbox has no pseudo-terminals (devpts is not mounted)",
        ));
    }
    // SAFETY: posix_openpt takes flags only and returns a new fd or -1.
    let fd = unsafe { libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by posix_openpt and is owned by nobody else.
    let master = unsafe { File::from(OwnedFd::from_raw_fd(fd)) };
    // SAFETY: grantpt/unlockpt take an fd we own; they touch no memory of ours.
    if unsafe { libc::grantpt(fd) } != 0 || unsafe { libc::unlockpt(fd) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut name = [0 as libc::c_char; 128];
    // SAFETY: the buffer and its length describe `name`, which outlives the call.
    if unsafe { libc::ptsname_r(fd, name.as_mut_ptr(), name.len()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: ptsname_r succeeded, so `name` holds a NUL-terminated string.
    let path = unsafe { CStr::from_ptr(name.as_ptr()) };
    // SAFETY: `path` is a valid C string; open returns a new fd or -1.
    let sfd = unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    };
    if sfd < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!(
                "open {}: {e} (is /dev/pts mounted?)",
                path.to_string_lossy()
            ),
        ));
    }
    // SAFETY: `sfd` was just opened and is owned by nobody else.
    let slave = unsafe { File::from(OwnedFd::from_raw_fd(sfd)) };
    resize(&master, cols, rows)?;
    Ok(Pty { master, slave })
}

/// TIOCSWINSZ on the master; the kernel sends SIGWINCH to the foreground job.
#[allow(unsafe_code)]
pub fn resize(master: &File, cols: u16, rows: u16) -> io::Result<()> {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: `ws` is a valid winsize that outlives the call; the kernel only reads it.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Makes the child a session leader with the terminal on its stdin as controlling terminal, so
/// the line discipline turns `^C` into SIGINT for the foreground job.
#[allow(unsafe_code)]
pub fn controlling_terminal(cmd: &mut Command) {
    // SAFETY: the closure runs between fork and exec and calls only async-signal-safe
    // functions (setsid, ioctl) without allocating.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::ioctl(0, libc::TIOCSCTTY as _, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// `sig` to every process of group `pgid`. Refuses group ids that would hit everything.
#[allow(unsafe_code)]
pub fn signal_group(pgid: i32, sig: i32) -> io::Result<()> {
    if pgid <= 1 {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "bad group"));
    }
    // SAFETY: kill(2) takes plain integers and touches no memory of this process.
    if unsafe { libc::kill(-pgid, sig) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
