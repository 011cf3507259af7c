//! The few system calls std does not wrap: the overlay mount, signals to pids we did not spawn,
//! and what bwrap's child does between fork and exec.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use tokio::process::Command;

fn cstr(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

/// `kill(pid, sig)` for a pid > 1; errors (already gone) are moot.
#[expect(
    unsafe_code,
    reason = "std has no safe way to signal a pid it did not spawn"
)]
pub(super) fn kill(pid: i32, sig: i32) {
    if pid <= 1 {
        return;
    }
    // SAFETY: kill(2) only takes integers and touches no memory of this process.
    let _ = unsafe { libc::kill(pid, sig) };
}

/// Moves the calling thread into the network namespace `ns` (an open `/proc/<pid>/ns/net`).
/// Only this thread changes namespace; callers use a thread of their own that ends afterwards.
#[expect(unsafe_code, reason = "std has no setns(2)")]
pub(super) fn enter_netns(ns: &std::fs::File) -> io::Result<()> {
    // SAFETY: setns(2) only reads the descriptor, which `ns` keeps open during the call.
    zero_or_errno(unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) })
}

/// A libc call's `0` as `Ok`, anything else as the `errno` it left.
fn zero_or_errno(r: libc::c_int) -> io::Result<()> {
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Characters the overlay option string cannot carry (`,` splits options, `:` lower dirs).
pub(super) fn overlay_safe(p: &Path) -> bool {
    !p.as_os_str()
        .as_bytes()
        .iter()
        .any(|b| matches!(b, b',' | b':' | b'\\' | b'\n' | 0))
}

/// Mounts `lower` (read-only) under `upper`'s writes at `merged`, `nosuid,nodev`: the image's
/// set-uid files and device nodes mean nothing in the sandbox.
#[expect(unsafe_code, reason = "std has no mount(2)")]
pub(super) fn mount_overlay(
    lower: &Path,
    upper: &Path,
    work: &Path,
    merged: &Path,
) -> io::Result<()> {
    for p in [lower, upper, work] {
        if !overlay_safe(p) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} holds a character overlayfs options cannot carry",
                    p.display()
                ),
            ));
        }
    }
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        upper.display(),
        work.display()
    );
    let opts = CString::new(opts).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let target = cstr(merged)?;
    let kind = c"overlay";
    // SAFETY: every pointer is a NUL-terminated string that outlives the call.
    zero_or_errno(unsafe {
        libc::mount(
            kind.as_ptr(),
            target.as_ptr(),
            kind.as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV,
            opts.as_ptr().cast(),
        )
    })
}

// linux/loop.h: the ioctls and the configuration LOOP_CONFIGURE (Linux 5.8) takes.
const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LOOP_CLR_FD: libc::c_ulong = 0x4C01;
const LO_FLAGS_AUTOCLEAR: u32 = 4;

#[repr(C)]
struct LoopInfo64 {
    device: u64,
    inode: u64,
    rdevice: u64,
    offset: u64,
    sizelimit: u64,
    number: u32,
    encrypt_type: u32,
    encrypt_key_size: u32,
    flags: u32,
    file_name: [u8; 64],
    crypt_name: [u8; 64],
    encrypt_key: [u8; 32],
    init: [u64; 2],
}

#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

fn open_rw(p: &Path) -> io::Result<std::fs::File> {
    std::fs::OpenOptions::new().read(true).write(true).open(p)
}

/// Attaches `image` to a free loop device that clears itself when its last user goes (so the
/// unmount frees it) and mounts it as ext4 at `target` (`nosuid,nodev`, extra options `data`).
/// `record(n)` runs before device `n` is attached, so a crash in between leaves a note of it.
/// `Ok(false)`: this kernel or `/dev` cannot (no LOOP_CONFIGURE, no device node) and the
/// caller should use mount(8). Unlike `mount -o loop`, nothing here scans every loop device
/// or the mount table, so a spawn costs the same with one sandbox or a thousand.
#[expect(unsafe_code, reason = "std has no ioctl(2) or mount(2)")]
pub(super) fn mount_loop_ext4(
    image: &Path,
    target: &Path,
    data: &str,
    record: impl Fn(u32) -> io::Result<()>,
) -> io::Result<bool> {
    let backing = open_rw(image)?;
    let ctl = open_rw(Path::new("/dev/loop-control"))?;
    let target_c = cstr(target)?;
    let data_c = CString::new(data).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // Two spawns may be handed the same free device: the loser's LOOP_CONFIGURE is EBUSY.
    for _ in 0..64 {
        // SAFETY: an ioctl on an fd we own, with no argument.
        let n = unsafe { libc::ioctl(ctl.as_raw_fd(), LOOP_CTL_GET_FREE) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as u32;
        let dev_path = format!("/dev/loop{n}");
        let dev = match open_rw(Path::new(&dev_path)) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        record(n)?;
        // SAFETY: all-zero is a valid LoopConfig (plain integers and byte arrays).
        let mut config: LoopConfig = unsafe { std::mem::zeroed() };
        config.fd = backing.as_raw_fd() as u32;
        config.info.flags = LO_FLAGS_AUTOCLEAR;
        // SAFETY: `config` is a valid loop_config that outlives the call; the kernel reads it.
        let r = unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_CONFIGURE, &config) };
        if r != 0 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EBUSY) => continue,
                Some(libc::EINVAL) | Some(libc::ENOTTY) => return Ok(false),
                _ => return Err(e),
            }
        }
        let dev_c =
            CString::new(dev_path).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        // SAFETY: every pointer is a NUL-terminated string that outlives the call.
        let r = unsafe {
            libc::mount(
                dev_c.as_ptr(),
                target_c.as_ptr(),
                c"ext4".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV,
                data_c.as_ptr().cast(),
            )
        };
        if r != 0 {
            // Dropping `dev` (its last user) clears the device.
            return Err(io::Error::last_os_error());
        }
        return Ok(true);
    }
    Err(io::Error::other("no free loop device after 64 tries"))
}

/// Detaches loop device `n` (busy or already free: nothing happens).
#[expect(unsafe_code, reason = "std has no ioctl(2)")]
pub(super) fn detach_loop(n: u32) {
    if let Ok(dev) = open_rw(Path::new(&format!("/dev/loop{n}"))) {
        // SAFETY: an ioctl on an fd we own, with no argument.
        let _ = unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_CLR_FD, 0) };
    }
}

/// Unmounts `path`; lazily if it is still busy. Not mounted is fine.
#[expect(unsafe_code, reason = "std has no umount2(2)")]
pub(super) fn unmount(path: &Path) -> io::Result<()> {
    let target = cstr(path)?;
    for flags in [0, libc::MNT_DETACH] {
        // SAFETY: `target` is a NUL-terminated string that outlives the call.
        if unsafe { libc::umount2(target.as_ptr(), flags) } == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            // Not a mount point (never mounted, or already gone).
            Some(libc::EINVAL) | Some(libc::ENOENT) => return Ok(()),
            Some(libc::EBUSY) if flags == 0 => continue,
            _ => return Err(e),
        }
    }
    Ok(())
}

/// Whether `path` is a mount point in this process's mount namespace.
pub(super) fn is_mounted(path: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = path.as_os_str().as_bytes();
    // Field 5 is the mount point, with space, tab, newline and backslash octal-escaped.
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|m| unescape_mountinfo(m).as_slice() == want)
}

fn unescape_mountinfo(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        if b[i] == b'\\' {
            if let Some(v) =
                octal.and_then(|d| u8::from_str_radix(std::str::from_utf8(d).ok()?, 8).ok())
            {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// Makes bwrap's child, between fork and exec: the leader of a new session (a signal to the
/// control plane's process group or terminal must not reach the sandbox), a member of the
/// sandbox's cgroups (so nothing it starts runs outside them, not even for an instant), and
/// the owner of `keep` past exec (the seccomp programs bwrap reads).
#[expect(unsafe_code, reason = "pre_exec runs code in the forked child")]
pub(super) fn prepare_child(cmd: &mut Command, cgroup_procs: Vec<CString>, keep: Vec<RawFd>) {
    // SAFETY: the closure only makes async-signal-safe system calls (setsid, open, write,
    // close, fcntl) on memory prepared before the fork, and allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() == -1 {
                return Err(io::Error::last_os_error());
            }
            for path in &cgroup_procs {
                let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(io::Error::last_os_error());
                }
                // "0" moves the writing process itself.
                let n = libc::write(fd, c"0".as_ptr().cast(), 1);
                let err = io::Error::last_os_error();
                libc::close(fd);
                if n != 1 {
                    return Err(err);
                }
            }
            for fd in &keep {
                if libc::fcntl(*fd, libc::F_SETFD, 0) == -1 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape_mountinfo(r"/a\040b"), b"/a b");
        assert_eq!(unescape_mountinfo("/plain"), b"/plain");
        assert_eq!(unescape_mountinfo(r"/x\"), b"/x\\");
        assert!(is_mounted(Path::new("/")) || !Path::new("/proc/self/mountinfo").exists());
    }

    #[test]
    fn overlay_option_characters() {
        assert!(overlay_safe(Path::new("/var/lib/stacyvm/x")));
        assert!(!overlay_safe(Path::new("/a,b")));
        assert!(!overlay_safe(Path::new("/a:b")));
    }
}
