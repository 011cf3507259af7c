//! The sandbox's writable layer and its disk quota.
//!
//! Without a quota the overlay's `upper/` and `work/` would sit on `data_dir`'s file system,
//! and one sandbox could fill the host's disk. With `default_disk_mb` > 0 they live on a file
//! system of their own: a sparse ext4 image (`disk.ext4`, `disk_mb` long, no journal, no
//! reserved blocks) loop-mounted at `layer/`. Writing past it is `ENOSPC` in that sandbox
//! only. The image takes host space only as it is written (up to its size; deleting inside
//! does not give it back until destroy).
//!
//! Why not a size-limited tmpfs: it would cost nothing at spawn (the ext4 image costs about
//! 10 ms: a sparse copy of a template formatted once per size, and the loop mount), but its pages are memory, charged to the
//! sandbox's memory cgroup with no swap: a sandbox with 512 MiB of memory could not hold
//! 1 GiB of files, and its files would compete with its processes for the same limit. Disk
//! should be disk. Project quotas would be free at spawn but need `data_dir` on XFS or ext4
//! mounted with `prjquota`, which an operator cannot be assumed to have.
//!
//! The disk is attached with `LOOP_CONFIGURE` and mounted with mount(2) ([`sys::mount_loop_ext4`];
//! mount(8) only where the kernel lacks it): `mount -o loop` scans every loop device and the
//! mount table, so with 1,000 sandboxes a spawn took seconds. The device clears itself when
//! the mount goes, so unmounting frees it; [`remove`] still detaches the one a sandbox's
//! record names (or any a scan finds, for disks mounted by mount(8)), for a provider that
//! died between attaching and mounting.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::state::Paths;
use super::sys;
use crate::ProviderError;

const MIB: u64 = 1024 * 1024;
const MISSING_HINT: &str =
    "apt-get install e2fsprogs, or set defaults.disk_size_mb to 0 for no quota";

/// Why this host cannot give sandboxes a disk quota, if it cannot (`health` reports it).
pub(super) fn unavailable(mkfs: &Path) -> Option<String> {
    if !mkfs.is_file() {
        return Some(format!(
            "{} not found for the sandboxes' disk quota ({MISSING_HINT})",
            mkfs.display()
        ));
    }
    if !Path::new("/dev/loop-control").exists() {
        return Some(
            "no /dev/loop-control: the sandboxes' disk quota needs loop devices \
             (modprobe loop, or set defaults.disk_size_mb to 0 for no quota)"
                .into(),
        );
    }
    None
}

fn run(cmd: &mut Command, what: &str, hint: &str) -> Result<(), ProviderError> {
    let out = cmd
        .output()
        .map_err(|e| ProviderError::Unavailable(format!("{what} could not run: {e} ({hint})")))?;
    if out.status.success() {
        return Ok(());
    }
    // Its output names host paths: the source is logged, never shown to callers.
    let detail = format!(
        "{}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Err(ProviderError::internal_with(
        format!("{what} failed"),
        std::io::Error::other(detail),
    ))
}

/// Makes the writable layer of the sandbox at `paths`: with a quota, its image (a sparse copy
/// of the formatted [`template`] of that size) mounted at `layer/` first; then `upper/`
/// (holding `workspace/`) and `work/` inside.
pub(super) fn create(
    paths: &Paths,
    data_dir: &Path,
    mkfs: &Path,
    disk_mb: Option<u64>,
) -> Result<(), ProviderError> {
    if let Some(mb) = disk_mb {
        let template = template(data_dir, mkfs, mb)?;
        // A sparse copy costs a few ms (the image's few MiB of metadata); mkfs.ext4 costs
        // 15-40 ms, growing with the size.
        run(
            Command::new("cp")
                .args(["--sparse=always", "--reflink=auto"])
                .arg(&template)
                .arg(paths.disk_image()),
            "copying the sandbox's disk",
            "coreutils",
        )?;
        let record = |n: u32| std::fs::write(paths.loop_record(), n.to_string());
        let mounted =
            sys::mount_loop_ext4(&paths.disk_image(), &paths.layer(), "noinit_itable", record)
                .map_err(|e| {
                    ProviderError::internal_with("mounting the sandbox's disk failed", e)
                })?;
        if !mounted {
            // A record left by a refused LOOP_CONFIGURE would hide mount(8)'s device from
            // `remove`'s scan.
            let _ = std::fs::remove_file(paths.loop_record());
            run(
                Command::new("mount")
                    .args(["-t", "ext4", "-o", "loop,nosuid,nodev,noinit_itable"])
                    .arg(paths.disk_image())
                    .arg(paths.layer()),
                "mounting the sandbox's disk",
                "loop devices are needed for the disk quota; defaults.disk_size_mb: 0 turns it off",
            )?;
        }
    }
    paths.create_layer_dirs()
}

/// The empty file system of `mb` MiB every sandbox's disk is copied from:
/// `<data_dir>/disk-templates/<mb>.ext4`, formatted once (under a temporary name, renamed
/// when done, so a crash leaves no half-made template and concurrent spawns race harmlessly).
fn template(data_dir: &Path, mkfs: &Path, mb: u64) -> Result<PathBuf, ProviderError> {
    let dir = data_dir.join("disk-templates");
    let path = dir.join(format!("{mb}.ext4"));
    if path.is_file() {
        return Ok(path);
    }
    let fail = |e| ProviderError::internal_with("creating the sandboxes' disk template failed", e);
    std::fs::create_dir_all(&dir).map_err(fail)?;
    let tmp = tempfile::Builder::new()
        .prefix(".mkfs-")
        .tempfile_in(&dir)
        .map_err(fail)?;
    tmp.as_file().set_len(mb * MIB).map_err(fail)?;
    // No journal (a sandbox's disk does not outlive a host crash: its overlay is gone then
    // too), no blocks reserved for root (the sandbox's user is root), and inode tables left to
    // read as the sparse file's zeros rather than written out.
    run(
        Command::new(mkfs)
            .args(["-q", "-F", "-O", "^has_journal", "-m", "0"])
            .args(["-E", "nodiscard,lazy_itable_init=1,lazy_journal_init=1"])
            .arg(tmp.path()),
        "mkfs.ext4",
        MISSING_HINT,
    )?;
    tmp.persist(&path).map_err(|e| fail(e.error))?;
    Ok(path)
}

/// Unmounts the layer's file system (not mounted is fine) and detaches any loop device still
/// backed by a file of the sandbox: the one its record names (one look, however many
/// sandboxes there are), else, for a disk mounted by mount(8), any found by a scan.
pub(super) fn remove(paths: &Paths) -> Result<(), ProviderError> {
    sys::unmount(&paths.layer())
        .map_err(|e| ProviderError::internal_with("unmounting the sandbox's disk failed", e))?;
    match std::fs::read_to_string(paths.loop_record()) {
        Ok(n) => {
            if let Ok(n) = n.trim().parse::<u32>() {
                if backed_by(&format!("loop{n}"), &paths.dir) {
                    tracing::debug!(
                        device = n,
                        "bwrap: detaching the loop device the sandbox used"
                    );
                    sys::detach_loop(n);
                }
            }
        }
        Err(_) if paths.disk_image().exists() => detach_loops(&paths.dir),
        Err(_) => {}
    }
    Ok(())
}

/// Whether block device `name`'s backing file lies under `dir`.
fn backed_by(name: &str, dir: &Path) -> bool {
    let f = Path::new("/sys/block").join(name).join("loop/backing_file");
    let backing = std::fs::read_to_string(f).unwrap_or_default();
    !backing.is_empty() && Path::new(backing.trim_end()).starts_with(dir)
}

/// Detaches every loop device whose backing file lies under `dir` (errors are moot: the
/// device is busy only while mounted, and then [`remove`] unmounted it first).
fn detach_loops(dir: &Path) {
    let Ok(entries) = std::fs::read_dir("/sys/block") else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str().filter(|n| n.starts_with("loop")) else {
            continue;
        };
        if backed_by(name, dir) {
            tracing::warn!(device = name, "bwrap: detaching a leftover loop device");
            // util-linux puts it in /usr/sbin, which a service's `PATH` may lack.
            let losetup = ["/usr/sbin/losetup", "/sbin/losetup"]
                .into_iter()
                .find(|p| Path::new(p).is_file())
                .unwrap_or("losetup");
            let _ = Command::new(losetup)
                .arg("-d")
                .arg(format!("/dev/{name}"))
                .status();
        }
    }
}
