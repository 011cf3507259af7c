//! The inotify system calls (libc has them, std does not) and the parsing of what a read
//! returns. Everything unsafe about watches is here.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Size of the fixed part of `struct inotify_event` (wd, mask, cookie, len).
const HEADER: usize = 16;

/// One inotify instance; closing it (drop) removes all its watches.
pub struct Inotify {
    file: std::fs::File,
}

/// One event as the kernel reported it. `name` is empty for events about the watched
/// directory itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawEvent {
    pub wd: i32,
    pub mask: u32,
    pub cookie: u32,
    pub name: Vec<u8>,
}

impl Inotify {
    /// A non-blocking instance (reads answer `WouldBlock` when nothing is queued).
    #[expect(unsafe_code, reason = "inotify_init1(2) has no std wrapper")]
    pub fn new() -> io::Result<Inotify> {
        // SAFETY: inotify_init1 takes flags only; a non-negative answer is a new fd we own.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the kernel just returned this fd and nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Inotify {
            file: std::fs::File::from(fd),
        })
    }

    /// Watches `path` for `mask`; the watch descriptor. Watching a path twice answers the
    /// same descriptor (and replaces its mask).
    #[expect(unsafe_code, reason = "inotify_add_watch(2) has no std wrapper")]
    pub fn add(&self, path: &Path, mask: u32) -> io::Result<i32> {
        let c = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: `c` is a NUL-terminated string that outlives the call; the kernel only reads
        // it.
        let wd = unsafe { libc::inotify_add_watch(self.file.as_raw_fd(), c.as_ptr(), mask) };
        if wd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(wd)
    }

    /// Stops watch `wd` (the kernel then queues `IN_IGNORED` for it); an unknown one is fine.
    #[expect(unsafe_code, reason = "inotify_rm_watch(2) has no std wrapper")]
    pub fn remove(&self, wd: i32) {
        // SAFETY: inotify_rm_watch takes plain integers and touches no memory of ours.
        let _ = unsafe { libc::inotify_rm_watch(self.file.as_raw_fd(), wd) };
    }

    /// Reads what is queued into `buf` (whole events only; the kernel refuses a buffer too
    /// small for the next one with `EINVAL`, which 64 KiB never is).
    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        io::Read::read(&mut &self.file, buf)
    }
}

impl AsFd for Inotify {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

/// The events in `buf` (what one read returned). A truncated tail (never sent by the kernel)
/// is ignored.
pub fn parse(mut buf: &[u8]) -> Vec<RawEvent> {
    let mut out = Vec::new();
    while buf.len() >= HEADER {
        let word = |i: usize| [buf[i], buf[i + 1], buf[i + 2], buf[i + 3]];
        let wd = i32::from_ne_bytes(word(0));
        let mask = u32::from_ne_bytes(word(4));
        let cookie = u32::from_ne_bytes(word(8));
        let len = u32::from_ne_bytes(word(12)) as usize;
        let Some(name) = buf.get(HEADER..HEADER + len) else {
            break;
        };
        // The name is padded with NULs to an aligned length.
        let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
        out.push(RawEvent {
            wd,
            mask,
            cookie,
            name: name[..end].to_vec(),
        });
        buf = &buf[HEADER + len..];
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn raw(wd: i32, mask: u32, cookie: u32, name: &[u8], padded: usize) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&wd.to_ne_bytes());
        v.extend_from_slice(&mask.to_ne_bytes());
        v.extend_from_slice(&cookie.to_ne_bytes());
        v.extend_from_slice(&(padded as u32).to_ne_bytes());
        v.extend_from_slice(name);
        v.resize(v.len() + padded - name.len(), 0);
        v
    }

    #[test]
    fn events_are_parsed_with_their_padding() {
        let mut buf = raw(1, libc::IN_CREATE, 0, b"a.txt", 16);
        buf.extend(raw(2, libc::IN_IGNORED, 0, b"", 0));
        buf.extend(raw(1, libc::IN_MOVED_FROM, 7, b"b", 4));
        buf.extend_from_slice(&[1, 2, 3]);
        let ev = parse(&buf);
        assert_eq!(ev.len(), 3);
        assert_eq!(ev[0].name, b"a.txt");
        assert_eq!(
            (ev[1].wd, ev[1].mask, ev[1].name.len()),
            (2, libc::IN_IGNORED, 0)
        );
        assert_eq!((ev[2].cookie, ev[2].name.as_slice()), (7, &b"b"[..]));
    }

    #[test]
    fn a_real_instance_reports_a_create() {
        let dir = std::env::temp_dir().join(format!("agent-inotify-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let ino = Inotify::new().unwrap();
        let wd = ino.add(&dir, libc::IN_CREATE).unwrap();
        let mut buf = vec![0u8; 4096];
        assert_eq!(
            ino.read(&mut buf).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        std::fs::write(dir.join("x"), b"").unwrap();
        let n = ino.read(&mut buf).unwrap();
        let ev = parse(&buf[..n]);
        assert_eq!((ev[0].wd, ev[0].name.as_slice()), (wd, &b"x"[..]));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
