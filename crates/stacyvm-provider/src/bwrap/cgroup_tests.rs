//! The cgroup code against a fake cgroupfs in a temp dir. These machines have the hybrid v1
//! layout, so the v2 path never runs in the bwrap suites; here it does, file by file. A fake
//! cannot be the kernel: files a real group gets on `mkdir` are made by the test where the code
//! asks whether they exist, `cgroup.subtree_control` is a FIFO that records every write (a plain
//! file would keep only the last), and "the kernel" empties a group before it is removed.

use std::os::unix::ffi::OsStrExt;
use std::thread::JoinHandle;

use super::*;

const PARENT: &str = "stacyvm";
const ID: &str = "sb-v2";
/// Pids no process can have (above the kernel's `pid_max` limit): were the v1 path taken by
/// mistake, its SIGKILLs would reach nobody.
const FAKE_PIDS: &str = "2147483000\n2147483001\n";

fn limits() -> Limits {
    Limits {
        memory_bytes: 64 * 1024 * 1024,
        pids: Some(100),
        millicpus: Some(1500),
    }
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// A FIFO standing in for `cgroup.subtree_control`: a thread reads every write until
/// [`Recorder::finish`].
struct Recorder {
    path: PathBuf,
    reader: Option<JoinHandle<String>>,
}

impl Recorder {
    const END: &'static str = "<end>";

    fn new(path: PathBuf) -> Recorder {
        // coreutils' mkfifo: the workspace forbids `unsafe`, even for libc::mkfifo.
        let made = std::process::Command::new("mkfifo")
            .arg(&path)
            .status()
            .expect("mkfifo");
        assert!(made.success(), "mkfifo {}", path.display());
        // Opened for reading and writing, so the FIFO always has a reader and never reaches
        // end-of-file: a writer that opened it between two reads of a reopening reader could
        // otherwise have its write fail (EPIPE) and the code drop that token (seen in CI). Writes
        // run together, hence tokens, not lines.
        let mut fifo = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .expect("open fifo");
        let reader = std::thread::spawn(move || {
            use std::io::Read;
            let mut seen = Vec::new();
            let mut buf = [0u8; 256];
            while !seen.ends_with(Recorder::END.as_bytes()) {
                let n = fifo.read(&mut buf).expect("read fifo");
                seen.extend_from_slice(&buf[..n]);
            }
            String::from_utf8_lossy(&seen)
                .trim_end_matches(Recorder::END)
                .to_string()
        });
        Recorder {
            path,
            reader: Some(reader),
        }
    }

    /// Everything written, in order.
    fn finish(mut self) -> String {
        std::fs::write(&self.path, Recorder::END).expect("end the recorder");
        self.reader
            .take()
            .expect("reader")
            .join()
            .expect("reader thread")
    }
}

/// A v2 mount with the root's `cgroup.controllers`, and the parent made ahead so its
/// `cgroup.subtree_control` can be a recorder too.
fn fake_v2() -> (tempfile::TempDir, Recorder, Recorder) {
    let t = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        t.path().join("cgroup.controllers"),
        "cpuset cpu io memory pids\n",
    )
    .expect("controllers");
    std::fs::create_dir(t.path().join(PARENT)).expect("parent");
    let root = Recorder::new(t.path().join("cgroup.subtree_control"));
    let parent = Recorder::new(t.path().join(PARENT).join("cgroup.subtree_control"));
    (t, root, parent)
}

#[test]
fn detect_tells_v2_from_v1_and_names_what_is_missing() {
    let (t, root, parent) = fake_v2();
    assert_eq!(detect_in(t.path()).expect("v2"), Layout::V2);
    drop((root.finish(), parent.finish()));

    let v1 = tempfile::tempdir().expect("tempdir");
    for c in ["memory", "pids"] {
        std::fs::create_dir(v1.path().join(c)).expect("mkdir");
        std::fs::write(v1.path().join(c).join("cgroup.procs"), "").expect("procs");
    }
    let err = detect_in(v1.path())
        .expect_err("cpu is missing")
        .to_string();
    assert!(err.contains("v1 hierarchies for cpu"), "{err}");
    std::fs::create_dir(v1.path().join("cpu")).expect("mkdir");
    std::fs::write(v1.path().join("cpu/cgroup.procs"), "").expect("procs");
    assert_eq!(detect_in(v1.path()).expect("v1"), Layout::V1);
}

#[test]
fn v2_create_enables_controllers_on_each_level_and_writes_the_limits() {
    let (t, root_ctl, parent_ctl) = fake_v2();
    let group = t.path().join(PARENT).join(ID);
    // What the kernel puts in a new group and the code only writes where it exists.
    std::fs::create_dir(&group).expect("group");
    for f in ["memory.swap.max", "cpu.max"] {
        std::fs::write(group.join(f), "max\n").expect("interface file");
    }

    let groups = create_in(t.path(), Layout::V2, PARENT, ID, limits()).expect("create");
    assert_eq!(
        groups,
        Cgroups {
            layout: Layout::V2,
            dirs: vec![group.clone()],
        }
    );
    assert_eq!(root_ctl.finish(), "+memory+pids+cpu");
    assert_eq!(parent_ctl.finish(), "+memory+pids+cpu");
    assert_eq!(read(&group.join("memory.max")), (64u64 << 20).to_string());
    assert_eq!(
        read(&group.join("memory.swap.max")),
        "0",
        "swap must not stretch it"
    );
    assert_eq!(read(&group.join("pids.max")), "100");
    assert_eq!(read(&group.join("cpu.max")), "150000 100000");

    // A new process joins through the one group's cgroup.procs.
    let procs = groups.procs_files().expect("procs files");
    assert_eq!(procs.len(), 1);
    assert_eq!(
        procs[0].as_bytes(),
        group.join("cgroup.procs").as_os_str().as_bytes()
    );
}

#[test]
fn v2_without_swap_accounting_or_cpu_limit_writes_only_what_applies() {
    let (t, root_ctl, parent_ctl) = fake_v2();
    let unlimited = Limits {
        pids: None,
        millicpus: None,
        ..limits()
    };
    let groups = create_in(t.path(), Layout::V2, PARENT, ID, unlimited).expect("create");
    drop((root_ctl.finish(), parent_ctl.finish()));
    let group = &groups.dirs[0];
    assert_eq!(read(&group.join("pids.max")), "max");
    // Absent in the kernel's group (no swap accounting, no cpu controller): not created.
    assert!(!group.join("memory.swap.max").exists());
    assert!(!group.join("cpu.max").exists());
}

#[test]
fn v2_a_failed_limit_is_an_error_naming_the_file() {
    let (t, root_ctl, parent_ctl) = fake_v2();
    let group = t.path().join(PARENT).join(ID);
    std::fs::create_dir_all(group.join("memory.max")).expect("unwritable memory.max");
    let err = create_in(t.path(), Layout::V2, PARENT, ID, limits()).expect_err("wrote a dir");
    drop((root_ctl.finish(), parent_ctl.finish()));
    assert_eq!(err.to_string(), "sandbox cgroup: writing memory.max failed");
    assert!(
        !group.join("pids.max").exists(),
        "went on after the failure"
    );
}

#[tokio::test]
async fn v2_stats_kill_and_remove_use_the_one_group() {
    let (t, root_ctl, parent_ctl) = fake_v2();
    let groups = create_in(t.path(), Layout::V2, PARENT, ID, limits()).expect("create");
    drop((root_ctl.finish(), parent_ctl.finish()));
    let group = groups.dirs[0].clone();
    std::fs::write(group.join("memory.current"), "4096\n").expect("memory.current");
    std::fs::write(group.join("cgroup.procs"), FAKE_PIDS).expect("procs");
    std::fs::write(group.join("cgroup.kill"), "").expect("cgroup.kill");
    assert_eq!(groups.pids(), [2_147_483_000, 2_147_483_001]);
    assert_eq!(groups.memory(), Some((4096, 64 << 20)));

    // "The kernel": once `1` is written to cgroup.kill, the members are gone.
    let kernel = {
        let group = group.clone();
        std::thread::spawn(move || {
            while read(&group.join("cgroup.kill")) != "1" {
                std::thread::sleep(Duration::from_millis(5));
            }
            std::fs::write(group.join("cgroup.procs"), "").expect("empty the group");
        })
    };
    kill(&groups).await.expect("kill");
    kernel.join().expect("kernel thread");
    assert!(groups.pids().is_empty());

    // rmdir removes a real group with its interface files; here the test removes them.
    for e in std::fs::read_dir(&group).expect("ls").flatten() {
        std::fs::remove_file(e.path()).expect("rm");
    }
    remove(&groups).expect("remove");
    assert!(!group.exists());
    assert!(
        t.path().join(PARENT).is_dir(),
        "the parent stays for other sandboxes"
    );
    remove(&groups).expect("removing a removed group is fine");
    // Nothing left to kill in a group that is gone.
    kill(&groups).await.expect("kill after remove");
}

#[test]
fn v1_create_writes_one_group_per_controller() {
    let t = tempfile::tempdir().expect("tempdir");
    let memory = t.path().join("memory").join(PARENT).join(ID);
    std::fs::create_dir_all(&memory).expect("memory group");
    std::fs::write(memory.join("memory.memsw.limit_in_bytes"), "").expect("memsw");
    let groups = create_in(t.path(), Layout::V1, PARENT, ID, limits()).expect("create");
    let [m, p, c] = [0, 1, 2].map(|i| groups.dirs[i].clone());
    assert_eq!(m, memory);
    assert_eq!(p, t.path().join("pids").join(PARENT).join(ID));
    assert_eq!(c, t.path().join("cpu").join(PARENT).join(ID));
    let bytes = (64u64 << 20).to_string();
    assert_eq!(read(&m.join("memory.limit_in_bytes")), bytes);
    assert_eq!(read(&m.join("memory.memsw.limit_in_bytes")), bytes);
    assert_eq!(read(&p.join("pids.max")), "100");
    assert_eq!(read(&c.join("cpu.cfs_period_us")), "100000");
    assert_eq!(read(&c.join("cpu.cfs_quota_us")), "150000");
    // Members are listed by the pids group.
    std::fs::write(p.join("cgroup.procs"), FAKE_PIDS).expect("procs");
    assert_eq!(groups.pids().len(), 2);
}
