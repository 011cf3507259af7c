//! A template's guest RAM as a sealed memfd, so no clone can write it.
//!
//! QEMU 7.2 opens a `share=off` memory file read-write (its `readonly=on` would map guest RAM
//! read-only, and `rom=off` arrived in 8.2), so a clone's QEMU held a writable descriptor of
//! the template's `mem`: after a guest escape into QEMU it could change what later clones of
//! that image start from. A memfd with `F_SEAL_WRITE` refuses every write and every shared
//! writable mapping, for every descriptor and every user (root included), while the private
//! copy-on-write mapping QEMU makes for `share=off` still works. Clones get it inherited and
//! named `/proc/self/fd/<n>`.

use std::fs::File;
use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Copy granularity; all-zero chunks are skipped, so the memfd stays as sparse as `mem`.
const CHUNK: usize = 64 * 1024;

/// A sealed, read-only-for-everyone copy of the file at `path`.
pub(crate) fn sealed_copy(path: &Path) -> std::io::Result<OwnedFd> {
    let mut src = File::open(path)?;
    let len = src.metadata()?.len();
    let dst = File::from(memfd("stacyvm-template-ram")?);
    dst.set_len(len)?;
    let mut buf = vec![0u8; CHUNK];
    let mut off = 0u64;
    loop {
        let n = read_full(&mut src, &mut buf)?;
        if n == 0 {
            break;
        }
        if buf[..n].iter().any(|b| *b != 0) {
            dst.write_all_at(&buf[..n], off)?;
        }
        off += n as u64;
    }
    let fd = OwnedFd::from(dst);
    seal(&fd)?;
    Ok(fd)
}

fn read_full(f: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match f.read(&mut buf[got..])? {
            0 => break,
            n => got += n,
        }
    }
    Ok(got)
}

#[expect(unsafe_code, reason = "std has no memfd_create")]
fn memfd(name: &str) -> std::io::Result<OwnedFd> {
    let name = std::ffi::CString::new(name).map_err(std::io::Error::other)?;
    // SAFETY: `name` is a valid NUL-terminated string that outlives the call.
    let fd =
        unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: memfd_create returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[expect(unsafe_code, reason = "std has no fcntl(F_ADD_SEALS)")]
fn seal(fd: &OwnedFd) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let seals = libc::F_SEAL_WRITE | libc::F_SEAL_GROW | libc::F_SEAL_SHRINK | libc::F_SEAL_SEAL;
    // SAFETY: fcntl on a descriptor we own, with integer arguments only.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) } == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[path = "sealed_tests.rs"]
mod tests;
