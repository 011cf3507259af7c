use std::io::Write;
use std::os::fd::AsRawFd;

use super::*;

#[test]
fn copy_is_exact_and_refuses_writes_through_any_descriptor() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("mem");
    let f = File::create(&p).unwrap();
    f.set_len(1 << 20).unwrap();
    f.write_all_at(b"hello", 3 * CHUNK as u64 + 7).unwrap();
    let fd = sealed_copy(&p).unwrap();
    let copy = std::fs::read(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap();
    assert_eq!(copy, std::fs::read(&p).unwrap());
    // Reopened read-write (as QEMU does with mem-path=/proc/self/fd/N): writes fail.
    let mut rw = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .unwrap();
    let e = rw.write_all(b"x").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EPERM), "{e}");
    assert!(rw.set_len(1).is_err(), "shrink allowed");
}
