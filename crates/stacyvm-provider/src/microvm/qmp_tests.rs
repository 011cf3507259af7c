use super::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};

/// A fake QEMU: greets, answers capabilities, emits an event before a reply, fails one
/// command, and receives an fd through getfd.
#[tokio::test]
async fn commands_events_errors_and_fd_passing() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("qmp.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let server = std::thread::spawn(move || {
        let (s, _) = listener.accept().unwrap();
        let mut w = s.try_clone().unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        w.write_all(b"{\"QMP\": {\"version\": {}}}\r\n").unwrap();
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        assert!(line.contains("qmp_capabilities"), "{line}");
        w.write_all(b"{\"return\": {}}\r\n").unwrap();
        line.clear();
        r.read_line(&mut line).unwrap();
        assert!(line.contains("query-status"), "{line}");
        w.write_all(b"{\"event\": \"STOP\"}\r\n{\"return\": {\"status\": \"paused\"}}\r\n")
            .unwrap();
        line.clear();
        r.read_line(&mut line).unwrap();
        w.write_all(b"{\"error\": {\"class\": \"GenericError\", \"desc\": \"nope\"}}\r\n")
            .unwrap();
        // getfd: read with recvmsg to collect the descriptor.
        let fd = recv_fd(&s);
        let mut f = std::fs::File::from(fd);
        let mut got = String::new();
        f.read_to_string(&mut got).unwrap();
        w.write_all(b"{\"return\": {}}\r\n").unwrap();
        got
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut q = Qmp::connect(&sock, deadline).await.unwrap();
    assert_eq!(q.status().await.unwrap(), "paused");
    let e = q.execute("cont", None).await.unwrap_err();
    assert!(
        matches!(&e, QmpError::Command { desc, .. } if desc == "nope"),
        "{e:?}"
    );
    let payload = dir.path().join("payload");
    std::fs::write(&payload, "through the socket").unwrap();
    let f = std::fs::File::open(&payload).unwrap();
    use std::os::fd::AsFd;
    q.send_fd("state", f.as_fd()).await.unwrap();
    assert_eq!(server.join().unwrap(), "through the socket");
}

#[expect(unsafe_code, reason = "test side of SCM_RIGHTS")]
fn recv_fd(s: &std::os::unix::net::UnixStream) -> OwnedFd {
    let mut data = [0u8; 4096];
    let mut control = [0u64; 8];
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    // SAFETY: zeroed msghdr filled with pointers to live local buffers.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control) as _;
        let n = libc::recvmsg(s.as_raw_fd(), &mut msg, 0);
        assert!(n > 0);
        assert!(std::str::from_utf8(&data[..n as usize])
            .unwrap()
            .contains("getfd"));
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        assert!(!cmsg.is_null());
        OwnedFd::from_raw_fd(std::ptr::read_unaligned(
            libc::CMSG_DATA(cmsg).cast::<libc::c_int>(),
        ))
    }
}
