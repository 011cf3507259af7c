//! Watches over the `--listen` socket, served in-process, on real directories.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use stacyvm_protocol::agent::{
    encode_frame, read_frame, ErrorCode, GuestFrame, GuestMsg, HostFrame, HostMsg,
    AGENT_WATCH_VERSION,
};

/// A fresh directory for one test.
fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("agent-watch-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

struct Conn {
    s: UnixStream,
}

type Seen = BTreeSet<(String, String)>;

impl Conn {
    fn open() -> Conn {
        let s = UnixStream::connect(crate::procs::tests::socket()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut c = Conn { s };
        c.send(
            1,
            HostMsg::Hello {
                min_version: AGENT_WATCH_VERSION,
                max_version: AGENT_WATCH_VERSION,
                hostname: String::new(),
            },
        );
        assert!(matches!(c.recv().msg, GuestMsg::HelloAck { .. }));
        c
    }

    fn send(&mut self, id: u64, msg: HostMsg) {
        let f = encode_frame(&HostFrame { id, msg }).unwrap();
        self.s.write_all(&f).unwrap();
    }

    fn recv(&mut self) -> GuestFrame {
        loop {
            let f: GuestFrame = read_frame(&mut self.s).expect("frame").expect("not eof");
            if f.id != 0 {
                return f;
            }
        }
    }

    /// Starts watch `id` and waits for its first answer.
    fn watch(&mut self, id: u64, path: &Path, recursive: bool) -> GuestMsg {
        let path = path.to_string_lossy().into_owned();
        self.send(id, HostMsg::Watch { path, recursive });
        let f = self.recv();
        assert_eq!(f.id, id);
        f.msg
    }

    /// Events of watch `id` until every one of `want` was seen (20 s at most); everything
    /// seen meanwhile.
    fn until(&mut self, id: u64, want: &[(&str, &str)]) -> Seen {
        let mut seen = Seen::new();
        let end = Instant::now() + Duration::from_secs(20);
        while !want
            .iter()
            .all(|(n, k)| seen.contains(&(n.to_string(), k.to_string())))
        {
            assert!(Instant::now() < end, "wanted {want:?}, saw {seen:?}");
            let f = self.recv();
            assert_eq!(f.id, id, "{f:?}");
            match f.msg {
                GuestMsg::WatchEvents { events } => {
                    seen.extend(events.into_iter().map(|e| (e.name, e.kind)));
                }
                other => panic!("{other:?} before {want:?} (saw {seen:?})"),
            }
        }
        seen
    }
}

/// Whether an inotify instance of this process watches `path` (its `fdinfo` lists the inode
/// of every watch).
fn watched(path: &Path) -> bool {
    let ino = format!("ino:{:x} ", std::fs::metadata(path).unwrap().ino());
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .any(|fd| {
            let inotify = std::fs::read_link(fd.path())
                .is_ok_and(|l| l.to_string_lossy().contains("inotify"));
            inotify
                && std::fs::read_to_string(format!(
                    "/proc/self/fdinfo/{}",
                    fd.file_name().to_string_lossy()
                ))
                .is_ok_and(|info| info.contains(&ino))
        })
}

fn wait_unwatched(path: &Path) {
    let end = Instant::now() + Duration::from_secs(10);
    while watched(path) {
        assert!(Instant::now() < end, "{} is still watched", path.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn every_kind_is_reported() {
    let d = dir("kinds");
    let mut c = Conn::open();
    assert_eq!(c.watch(2, &d, false), GuestMsg::Watching);
    std::fs::write(d.join("a.txt"), b"hi").unwrap();
    c.until(2, &[("a.txt", "create"), ("a.txt", "write")]);
    std::fs::set_permissions(d.join("a.txt"), std::fs::Permissions::from_mode(0o600)).unwrap();
    c.until(2, &[("a.txt", "chmod")]);
    std::fs::rename(d.join("a.txt"), d.join("b.txt")).unwrap();
    c.until(2, &[("a.txt", "rename"), ("b.txt", "create")]);
    std::fs::remove_file(d.join("b.txt")).unwrap();
    c.until(2, &[("b.txt", "remove")]);
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn recursive_watches_follow_new_directories() {
    let d = dir("recursive");
    std::fs::create_dir_all(d.join("old/deep")).unwrap();
    let mut c = Conn::open();
    assert_eq!(c.watch(2, &d, true), GuestMsg::Watching);
    // Existing subdirectories are watched from the start.
    std::fs::write(d.join("old/deep/x"), b"").unwrap();
    c.until(2, &[("old/deep/x", "create")]);
    // A tree made at once: whatever its directories held before their watches came is
    // reported by the scan that follows each one.
    std::fs::create_dir_all(d.join("new/a/b")).unwrap();
    std::fs::write(d.join("new/a/b/f"), b"1").unwrap();
    c.until(
        2,
        &[
            ("new", "create"),
            ("new/a", "create"),
            ("new/a/b", "create"),
            ("new/a/b/f", "create"),
        ],
    );
    // And once reported, they are watched.
    std::fs::write(d.join("new/a/b/f"), b"22").unwrap();
    c.until(2, &[("new/a/b/f", "write")]);
    // A directory renamed inside the tree reports under its new name.
    std::fs::rename(d.join("new"), d.join("renamed")).unwrap();
    c.until(2, &[("new", "rename"), ("renamed", "create")]);
    std::fs::write(d.join("renamed/a/g"), b"").unwrap();
    c.until(2, &[("renamed/a/g", "create")]);
    // Removing a subtree reports its entries and stops watching it.
    std::fs::remove_dir_all(d.join("renamed")).unwrap();
    c.until(2, &[("renamed/a/g", "remove"), ("renamed", "remove")]);
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn a_plain_watch_ignores_subdirectories_and_never_follows_links() {
    let d = dir("plain");
    let outside = dir("plain-outside");
    std::fs::create_dir(d.join("sub")).unwrap();
    std::os::unix::fs::symlink(&outside, d.join("link")).unwrap();
    let mut c = Conn::open();
    assert_eq!(c.watch(2, &d, false), GuestMsg::Watching);
    std::fs::write(d.join("sub/inner"), b"").unwrap();
    std::fs::write(outside.join("far"), b"").unwrap();
    std::fs::write(d.join("marker"), b"").unwrap();
    let seen = c.until(2, &[("marker", "create")]);
    assert!(
        seen.iter().all(|(n, _)| n == "marker"),
        "reported beyond the directory: {seen:?}"
    );
    // Recursive, the link is still not entered.
    drop(c);
    let mut c = Conn::open();
    assert_eq!(c.watch(3, &d, true), GuestMsg::Watching);
    std::fs::write(outside.join("far2"), b"").unwrap();
    std::fs::write(d.join("sub/inner2"), b"").unwrap();
    let seen = c.until(3, &[("sub/inner2", "create")]);
    assert!(
        !seen.iter().any(|(n, _)| n.contains("far")),
        "followed the link: {seen:?}"
    );
    assert!(!watched(&outside));
    std::fs::remove_dir_all(&d).unwrap();
    std::fs::remove_dir_all(&outside).unwrap();
}

#[test]
fn bad_paths_are_refused_before_streaming() {
    let d = dir("bad");
    std::fs::write(d.join("file"), b"").unwrap();
    let mut c = Conn::open();
    let code = |m: GuestMsg| match m {
        GuestMsg::Error { code, .. } => code,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        code(c.watch(2, &d.join("missing"), false)),
        ErrorCode::NotFound
    );
    assert_eq!(
        code(c.watch(3, &d.join("file"), true)),
        ErrorCode::InvalidInput
    );
    assert_eq!(
        code(c.watch(4, Path::new("relative"), false)),
        ErrorCode::InvalidInput
    );
    // The session goes on.
    assert_eq!(c.watch(5, &d, false), GuestMsg::Watching);
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn cancel_and_removal_end_a_watch() {
    let d = dir("end");
    std::fs::create_dir(d.join("gone")).unwrap();
    let mut c = Conn::open();
    assert_eq!(c.watch(2, &d, true), GuestMsg::Watching);
    assert!(watched(&d));
    c.send(3, HostMsg::Cancel { target: 2 });
    let mut got = Vec::new();
    while got.len() < 2 {
        got.push(c.recv());
    }
    assert!(
        got.iter().any(|f| f.id == 3 && f.msg == GuestMsg::Ok),
        "{got:?}"
    );
    assert!(
        got.iter().any(|f| f.id == 2 && f.msg == GuestMsg::WatchEnd),
        "{got:?}"
    );
    wait_unwatched(&d);

    // The watched directory removed: its entries' removals, then the end.
    let gone = d.join("gone");
    assert_eq!(c.watch(4, &gone, false), GuestMsg::Watching);
    std::fs::write(gone.join("f"), b"").unwrap();
    c.until(4, &[("f", "create")]);
    std::fs::remove_dir_all(&gone).unwrap();
    loop {
        match c.recv() {
            GuestFrame {
                id: 4,
                msg: GuestMsg::WatchEnd,
            } => break,
            GuestFrame {
                id: 4,
                msg: GuestMsg::WatchEvents { .. },
            } => {}
            other => panic!("{other:?}"),
        }
    }
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn a_closed_connection_stops_its_watches() {
    let d = dir("closed");
    std::fs::create_dir_all(d.join("a/b")).unwrap();
    let mut c = Conn::open();
    assert_eq!(c.watch(2, &d, true), GuestMsg::Watching);
    assert_eq!(c.watch(3, &d.join("a"), false), GuestMsg::Watching);
    assert!(watched(&d) && watched(&d.join("a/b")));
    drop(c);
    // Every instance is closed (the kernel drops their watches with them): no fd, no thread
    // waiting on one.
    wait_unwatched(&d);
    wait_unwatched(&d.join("a"));
    wait_unwatched(&d.join("a/b"));
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn frames_stay_small() {
    let e = |n: usize| stacyvm_protocol::agent::AgentWatchEvent {
        name: "x".repeat(n),
        kind: "create".into(),
    };
    let f = super::frames((0..600).map(|_| e(1)).collect());
    assert_eq!(f.iter().map(Vec::len).collect::<Vec<_>>(), [256, 256, 88]);
    let f = super::frames((0..200).map(|_| e(4096)).collect());
    assert!(
        f.iter().all(|f| f.len() <= 64),
        "{:?}",
        f.iter().map(Vec::len).collect::<Vec<_>>()
    );
    assert_eq!(f.iter().map(Vec::len).sum::<usize>(), 200);
    assert!(super::frames(Vec::new()).is_empty());
}
