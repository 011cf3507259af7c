//! The QEMU process of one VM: its command line, starting it in its own process group, and
//! killing that whole group.

use std::os::fd::RawFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::process::{Child, Command};

use super::settings::{Accel, Settings};
use crate::ProviderError;

/// Files of one VM under `<data_dir>/vms/<id>/`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct VmPaths {
    pub dir: PathBuf,
    pub overlay: PathBuf,
    pub agent_sock: PathBuf,
    pub console: PathBuf,
    pub qemu_log: PathBuf,
    pub meta: PathBuf,
    pub qmp_sock: PathBuf,
}

impl VmPaths {
    pub fn new(vms_dir: &Path, id: &str) -> Self {
        let dir = vms_dir.join(id);
        VmPaths {
            overlay: dir.join("disk.qcow2"),
            agent_sock: dir.join("agent.sock"),
            console: dir.join("console.log"),
            qemu_log: dir.join("qemu.log"),
            meta: dir.join("vm.json"),
            qmp_sock: dir.join("qmp.sock"),
            dir,
        }
    }
}

/// What varies per VM.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct VmShape {
    pub memory_mb: i64,
    pub vcpus: i64,
    /// Host port forwarded to guest port 3000 (user networking only).
    pub preview_port: Option<u16>,
}

/// Guest RAM and start-up of a VM.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Launch {
    /// Anonymous RAM; boots the kernel.
    Cold,
    /// Boots the kernel with guest RAM in the file `mem` (a shared mapping), to be snapshotted.
    Template { mem: PathBuf, disk_fds: [RawFd; 2] },
    /// Restores a template: its RAM file mapped copy-on-write, paused until `cont`, the state
    /// arriving later over QMP.
    Clone { mem: PathBuf, disk_fds: [RawFd; 2] },
    /// Resumes a VM paused to disk: anonymous RAM filled by the incoming migration stream,
    /// named `mem` (`named_ram`, as in templates and clones) or the machine's default.
    Resume {
        named_ram: bool,
        disk_fds: [RawFd; 2],
    },
    /// Loads a migration stream into guest RAM kept in the file `mem` (a shared mapping), to
    /// save its device state as a template's: how a memory snapshot's RAM file is made.
    Convert { mem: PathBuf, disk_fds: [RawFd; 2] },
}

impl Launch {
    fn disk_fds(&self) -> Option<&[RawFd; 2]> {
        match self {
            Launch::Cold => None,
            Launch::Template { disk_fds, .. }
            | Launch::Clone { disk_fds, .. }
            | Launch::Resume { disk_fds, .. }
            | Launch::Convert { disk_fds, .. } => Some(disk_fds),
        }
    }

    /// Whether QEMU starts paused, waiting for `migrate-incoming`.
    fn incoming(&self) -> bool {
        !matches!(self, Launch::Cold | Launch::Template { .. })
    }
}
// Snapshots give the overlay as QEMU fd set 1 (`disk_fds`: inherited, one read-write and one
// read-only): QEMU reopens the disk when a migration deactivates or activates it, by which time
// it runs as an unprivileged user that could not open the file by its path.

/// A path inside a QEMU `key=value,...` option: commas are doubled.
fn opt_path(p: &Path) -> String {
    p.to_string_lossy().replace(',', ",,")
}

/// KVM is used only when a hardware module is loaded: these machines' /dev/kvm is PVM-only
/// and cannot run stock guest kernels.
pub(crate) fn kvm_usable() -> bool {
    let loaded = std::fs::read_to_string("/proc/modules").is_ok_and(|m| {
        m.lines()
            .any(|l| l.starts_with("kvm_intel ") || l.starts_with("kvm_amd "))
    });
    loaded && Path::new("/dev/kvm").exists()
}

/// The host's TSC frequency in kHz (guests under TCG see the host TSC), from /proc/cpuinfo.
pub(crate) fn host_tsc_khz() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    parse_cpu_mhz(&info)
}

fn parse_cpu_mhz(cpuinfo: &str) -> Option<u64> {
    let line = cpuinfo.lines().find(|l| l.starts_with("cpu MHz"))?;
    let mhz: f64 = line.split(':').nth(1)?.trim().parse().ok()?;
    let khz = (mhz * 1000.0).round();
    (1.0..1e8).contains(&khz).then_some(khz as u64)
}

/// `qemu_path` as an executable file: a path as given, or a name searched in `PATH`.
pub(crate) fn find_binary(qemu: &Path) -> Option<PathBuf> {
    if qemu.components().count() > 1 {
        return qemu.is_file().then(|| qemu.to_path_buf());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(qemu))
        .find(|p| p.is_file())
}

/// The full QEMU argument list (without the binary).
pub(crate) fn qemu_args(
    s: &Settings,
    p: &VmPaths,
    shape: &VmShape,
    tsc_khz: Option<u64>,
    launch: &Launch,
) -> Vec<String> {
    let mut cmdline = String::from("console=ttyS0 reboot=t panic=-1 quiet");
    if let Some(khz) = tsc_khz {
        // Without it about one boot in five hung on `microvm` (TSC calibration).
        cmdline.push_str(&format!(" tsc_early_khz={khz}"));
    }
    let (accel, cpu) = match s.accel {
        Accel::Kvm => ("kvm", "host"),
        Accel::Tcg => ("tcg", "max"),
    };
    let path = |x: &Path| x.to_string_lossy().into_owned();
    // seccomp: no obsolete syscalls, no spawning, no resource control. `-runas` drops to the
    // user after the filter is installed, so it needs setuid allowed (QEMU 7.2 kills itself
    // with `children`); once unprivileged it cannot regain anything.
    let elevate = if s.run_as.is_some() { "allow" } else { "deny" };
    let named = "microvm,memory-backend=mem";
    let file_ram = |mem: &Path, share: &str| {
        format!(
            "memory-backend-file,id=mem,size={}M,mem-path={},share={share}",
            shape.memory_mb,
            opt_path(mem)
        )
    };
    let (machine, ram) = match launch {
        Launch::Cold
        | Launch::Resume {
            named_ram: false, ..
        } => ("microvm", None),
        Launch::Template { mem, .. } | Launch::Convert { mem, .. } => {
            (named, Some(file_ram(mem, "on")))
        }
        Launch::Clone { mem, .. } => (named, Some(file_ram(mem, "off"))),
        Launch::Resume {
            named_ram: true, ..
        } => (
            named,
            Some(format!(
                "memory-backend-ram,id=mem,size={}M",
                shape.memory_mb
            )),
        ),
    };
    let disk = match launch.disk_fds() {
        None => opt_path(&p.overlay),
        Some(_) => "/dev/fdset/1".to_string(),
    };
    let mut a: Vec<String> = vec![
        "-M".into(),
        machine.into(),
        "-accel".into(),
        accel.into(),
        "-cpu".into(),
        cpu.into(),
        "-m".into(),
        format!("{}M", shape.memory_mb),
        "-smp".into(),
        shape.vcpus.to_string(),
        "-nodefaults".into(),
        "-no-user-config".into(),
        "-nographic".into(),
        "-no-reboot".into(),
        "-sandbox".into(),
        format!("on,obsolete=deny,elevateprivileges={elevate},spawn=deny,resourcecontrol=deny"),
        "-kernel".into(),
        path(&s.kernel),
        "-initrd".into(),
        path(&s.initrd),
        "-append".into(),
        cmdline,
        "-chardev".into(),
        // Appended: a VM resumed from disk keeps its console log.
        format!("file,id=con,path={},append=on", opt_path(&p.console)),
        "-serial".into(),
        "chardev:con".into(),
        "-drive".into(),
        // No image locking: each VM has its own overlay, and the lock QEMU takes back when
        // `cont` follows a completed migration (a memory snapshot) fails on its fd set.
        format!(
            "id=root,file={disk},format=qcow2,if=none,cache=unsafe,discard=unmap,file.locking=off"
        ),
        "-device".into(),
        "virtio-blk-device,drive=root".into(),
        "-device".into(),
        "virtio-serial-device".into(),
        "-chardev".into(),
        format!(
            "socket,id=agent,path={},server=on,wait=off",
            opt_path(&p.agent_sock)
        ),
        "-device".into(),
        format!(
            "virtserialport,chardev=agent,name={}",
            stacyvm_protocol::agent::PORT_NAME
        ),
    ];
    a.extend([
        "-qmp".into(),
        format!("unix:{},server=on,wait=off", opt_path(&p.qmp_sock)),
    ]);
    if let Some(ram) = ram {
        a.extend(["-object".into(), ram]);
    }
    for fd in launch.disk_fds().into_iter().flatten() {
        a.extend(["-add-fd".into(), format!("fd={fd},set=1")]);
    }
    if launch.incoming() {
        a.extend(["-incoming".into(), "defer".into(), "-S".into()]);
    }
    a.extend(super::net::args(s.network, shape.preview_port));
    if let Some(user) = &s.run_as {
        a.extend(["-runas".into(), user.clone()]);
    }
    a
}

/// Starts QEMU in a new process group, output to `qemu_log`. `inherit` are open descriptors
/// (close-on-exec in this process) that QEMU keeps under the same numbers.
pub(crate) fn spawn_qemu(
    qemu: &Path,
    args: &[String],
    p: &VmPaths,
    inherit: &[RawFd],
) -> Result<Child, ProviderError> {
    let log = std::fs::File::create(&p.qemu_log)
        .map_err(|e| ProviderError::internal_with("creating the VM log failed", e))?;
    let log2 = log
        .try_clone()
        .map_err(|e| ProviderError::internal_with("creating the VM log failed", e))?;
    let mut cmd = Command::new(qemu);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .process_group(0)
        .kill_on_drop(true);
    if !inherit.is_empty() {
        keep_fds(&mut cmd, inherit.to_vec());
    }
    cmd.spawn()
        .map_err(|e| ProviderError::Unavailable(format!("starting qemu failed: {e}")))
}

/// Clears close-on-exec on `fds` in the child only. The numbers stay taken in this process
/// until the caller closes them after the spawn, so nothing else can land on them.
#[expect(
    unsafe_code,
    reason = "pre_exec is how a child keeps chosen descriptors"
)]
fn keep_fds(cmd: &mut Command, fds: Vec<RawFd>) {
    // SAFETY: the closure only calls fcntl(2), which is async-signal-safe, and allocates
    // nothing (the Vec was built before the fork).
    unsafe {
        cmd.pre_exec(move || {
            for fd in &fds {
                if libc::fcntl(*fd, libc::F_SETFD, 0) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

/// SIGKILL to QEMU's whole process group.
#[expect(unsafe_code, reason = "std has no safe way to signal a process group")]
pub(crate) fn kill_group(pgid: i32) {
    // Never 0 or 1: kill(2) would hit our own group or every process.
    if pgid <= 1 {
        return;
    }
    // SAFETY: kill(2) only takes integers and touches no memory of this process.
    let _ = unsafe { libc::kill(-pgid, libc::SIGKILL) };
}

/// Whether a process with this pid exists and runs `qemu` (for reconciliation after restart).
pub(crate) fn is_qemu_process(pid: i32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
        c.split(|b| *b == 0)
            .next()
            .is_some_and(|a| String::from_utf8_lossy(a).contains("qemu"))
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[path = "vmm_tests.rs"]
mod tests;
