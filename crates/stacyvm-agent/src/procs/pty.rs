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
            // Linux makes the caller's group the foreground job with TIOCSCTTY already;
            // gVisor needs it said (failure is harmless: the terminal still works).
            let pgrp = libc::getpid();
            let _ = libc::ioctl(0, libc::TIOCSPGRP as _, &pgrp);
            default_dispositions();
            Ok(())
        });
    }
}

/// Resets every catchable signal to its default action in a child about to exec. An ignored
/// signal stays ignored across exec: an agent started in the background by a shell without job
/// control has SIGINT and SIGQUIT ignored, and its terminal's `^C` would then do nothing.
/// Async-signal-safe (sigaction only), for `pre_exec`.
#[allow(unsafe_code)]
pub fn default_dispositions() {
    // SAFETY: a zeroed sigaction is SIG_DFL with an empty mask; sigaction reads it and writes
    // nothing back (null old action). Signals that cannot be changed just fail.
    unsafe {
        let dfl: libc::sigaction = std::mem::zeroed();
        for sig in 1..32 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::sigaction(sig, &dfl, std::ptr::null_mut());
            }
        }
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

/// Whether the kernel's line discipline turns `^C` into SIGINT. Linux does; older gVisor
/// (runsc) echoes the byte and passes it on, so there the agent signals the foreground job
/// itself ([`interrupt_signal`]). Probed once on a terminal of its own: Linux echoes an
/// interrupt character as `^C`, a discipline without ISIG echoes the raw byte.
pub fn kernel_handles_isig() -> bool {
    static PROBE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *PROBE.get_or_init(|| {
        let Ok(mut p) = open(80, 24) else {
            return true;
        };
        use std::io::{Read, Write};
        use std::os::fd::AsFd;
        if p.master.write_all(b"\x03").is_err() {
            return true;
        }
        let mut echo = Vec::new();
        let mut buf = [0u8; 64];
        while echo.len() < 2 {
            match crate::sys::poll(
                p.master.as_fd(),
                libc::POLLIN,
                std::time::Duration::from_millis(300),
            ) {
                Ok(r) if r.readable => match p.master.read(&mut buf) {
                    Ok(n) if n > 0 => echo.extend_from_slice(&buf[..n]),
                    _ => break,
                },
                _ => break,
            }
        }
        drop(p.slave);
        // Unknown (no echo at all): trust the kernel, a doubled SIGINT would be worse.
        echo.first() != Some(&0x03)
    })
}

/// The signal an input byte stands for when the terminal has ISIG on (`^C`, `^\`, `^Z` as
/// set in its termios), for terminals whose kernel does not do it itself.
#[allow(unsafe_code)]
pub fn interrupt_signal(master: &File, byte: u8) -> Option<i32> {
    // SAFETY: a zeroed termios is a valid out-value; tcgetattr fills it and reads nothing.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: `t` is a valid termios that outlives the call.
    if unsafe { libc::tcgetattr(master.as_raw_fd(), &mut t) } != 0 || t.c_lflag & libc::ISIG == 0 {
        return None;
    }
    let cc = |i: usize| t.c_cc[i];
    match byte {
        0 => None, // _POSIX_VDISABLE
        b if b == cc(libc::VINTR) => Some(libc::SIGINT),
        b if b == cc(libc::VQUIT) => Some(libc::SIGQUIT),
        b if b == cc(libc::VSUSP) => Some(libc::SIGTSTP),
        _ => None,
    }
}

/// The terminal's foreground process group, if the kernel tells.
#[allow(unsafe_code)]
pub fn foreground_group(master: &File) -> Option<i32> {
    let mut pgrp: libc::pid_t = 0;
    // SAFETY: `pgrp` is a valid out-pointer for the duration of the call.
    let r = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPGRP as _, &mut pgrp) };
    (r == 0 && pgrp > 1).then_some(pgrp)
}

/// Best guess at the foreground job of session `sid` where the kernel will not say (gVisor
/// answers TIOCGPGRP on the master with ENOTTY and shows no `tpgid` in /proc): the newest
/// process group in the session other than the leader's (a job-control shell's current job),
/// else the leader's group.
pub fn newest_job(sid: i32) -> i32 {
    let mut best: Option<(u64, i32)> = None;
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return sid;
    };
    for e in dir.flatten() {
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        let num = |i: usize| f.get(i).and_then(|v| v.parse::<i64>().ok());
        let pid = stat
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<i64>().ok());
        // After the comm: state ppid pgrp session ... (starttime is the 20th).
        let (Some(pgrp), Some(session), Some(start)) = (num(2), num(3), num(19)) else {
            continue;
        };
        if session != i64::from(sid) || pgrp == i64::from(sid) || Some(pgrp) != pid {
            continue;
        }
        let (Ok(pgrp), Ok(start)) = (i32::try_from(pgrp), u64::try_from(start)) else {
            continue;
        };
        if best.is_none_or(|(s, _)| start >= s) {
            best = Some((start, pgrp));
        }
    }
    best.map_or(sid, |(_, g)| g)
}
