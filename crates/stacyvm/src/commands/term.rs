//! The local terminal for `stacyvm shell`: raw mode (restored on drop), the window size and
//! waiting for input.

use std::io::IsTerminal;

/// Raw mode on stdin while alive; the saved settings come back when it drops.
pub struct RawMode {
    saved: libc::termios,
}

impl RawMode {
    /// `None` when stdin is not a terminal (or its settings cannot be read).
    pub fn enter() -> Option<RawMode> {
        if !std::io::stdin().is_terminal() {
            return None;
        }
        let saved = get_attr()?;
        let mut raw = saved;
        make_raw(&mut raw);
        set_attr(&raw).then_some(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        set_attr(&self.saved);
    }
}

#[allow(unsafe_code)]
fn get_attr() -> Option<libc::termios> {
    // SAFETY: `termios` is plain old data, so a zeroed value is valid; tcgetattr only writes
    // into the struct we pass, and fd 0 stays open for the life of the process.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: see above; the pointer is to a live, writable local.
    let rc = unsafe { libc::tcgetattr(libc::STDIN_FILENO, &mut t) };
    (rc == 0).then_some(t)
}

#[allow(unsafe_code)]
fn set_attr(t: &libc::termios) -> bool {
    // SAFETY: `t` points to a valid termios read by tcgetattr (possibly modified by
    // cfmakeraw); tcsetattr only reads it.
    unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, t) == 0 }
}

#[allow(unsafe_code)]
fn make_raw(t: &mut libc::termios) {
    // SAFETY: cfmakeraw only rewrites the flag fields of the struct it is given, which is a
    // valid, exclusively borrowed termios.
    unsafe { libc::cfmakeraw(t) }
}

/// Whether stdin has something to read (or has failed, so a read returns at once) within
/// `timeout_ms`; `false` on timeout or when a signal interrupted the wait.
#[allow(unsafe_code)]
pub fn stdin_ready(timeout_ms: i32) -> bool {
    let mut fds = libc::pollfd {
        fd: libc::STDIN_FILENO,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid, exclusively borrowed pollfd and a count of 1; poll only writes its
    // `revents`.
    let rc = unsafe { libc::poll(&mut fds, 1, timeout_ms) };
    rc > 0 || (rc < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted)
}

/// The terminal's `(cols, rows)` on stdout, else stdin; `None` when neither is a terminal.
#[allow(unsafe_code)]
pub fn size() -> Option<(u16, u16)> {
    for fd in [libc::STDOUT_FILENO, libc::STDIN_FILENO] {
        // SAFETY: `winsize` is plain old data; TIOCGWINSZ writes one into the pointer we pass,
        // which points to a live local, and fails harmlessly on a non-terminal fd.
        let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let rc = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) };
        if rc == 0 && ws.ws_col > 0 && ws.ws_row > 0 {
            return Some((ws.ws_col, ws.ws_row));
        }
    }
    None
}
