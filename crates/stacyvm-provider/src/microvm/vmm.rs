//! The QEMU process of one VM: its command line, starting it in its own process group, and
//! killing that whole group.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::process::{Child, Command};

use super::config::{Accel, Settings};
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
    let mut a: Vec<String> = vec![
        "-M".into(),
        "microvm".into(),
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
        format!("file,id=con,path={}", path(&p.console)),
        "-serial".into(),
        "chardev:con".into(),
        "-drive".into(),
        format!(
            "id=root,file={},format=qcow2,if=none,cache=unsafe,discard=unmap",
            path(&p.overlay)
        ),
        "-device".into(),
        "virtio-blk-device,drive=root".into(),
        "-device".into(),
        "virtio-serial-device".into(),
        "-chardev".into(),
        format!(
            "socket,id=agent,path={},server=on,wait=off",
            path(&p.agent_sock)
        ),
        "-device".into(),
        format!(
            "virtserialport,chardev=agent,name={}",
            stacyvm_protocol::agent::PORT_NAME
        ),
    ];
    a.extend(super::net::args(s.network, shape.preview_port));
    if let Some(user) = &s.run_as {
        a.extend(["-runas".into(), user.clone()]);
    }
    a
}

/// Starts QEMU in a new process group, output to `qemu_log`.
pub(crate) fn spawn_qemu(
    qemu: &Path,
    args: &[String],
    p: &VmPaths,
) -> Result<Child, ProviderError> {
    let log = std::fs::File::create(&p.qemu_log)
        .map_err(|e| ProviderError::internal_with("creating the VM log failed", e))?;
    let log2 = log
        .try_clone()
        .map_err(|e| ProviderError::internal_with("creating the VM log failed", e))?;
    Command::new(qemu)
        .args(args)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| ProviderError::Unavailable(format!("starting qemu failed: {e}")))
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
mod tests {
    use super::*;
    use crate::microvm::config::MicrovmConfig;

    #[test]
    fn cpu_mhz() {
        assert_eq!(
            parse_cpu_mhz("model name\t: X\ncpu MHz\t\t: 2300.000\n"),
            Some(2_300_000)
        );
        assert_eq!(parse_cpu_mhz("cpu MHz : 2199.998\n"), Some(2_199_998));
        assert_eq!(parse_cpu_mhz("nothing"), None);
        assert_eq!(parse_cpu_mhz("cpu MHz : x"), None);
    }

    #[test]
    fn command_line() {
        let s = MicrovmConfig {
            data_dir: "/d".into(),
            run_as: "-".into(),
            ..Default::default()
        }
        .validate(false)
        .unwrap();
        let p = VmPaths::new(Path::new("/d/vms"), "sb-1");
        let shape = VmShape {
            memory_mb: 256,
            vcpus: 2,
            preview_port: None,
        };
        let a = qemu_args(&s, &p, &shape, Some(2_300_000));
        let joined = a.join(" ");
        for want in [
            "-M microvm",
            "-accel tcg",
            "-m 256M",
            "-smp 2",
            "-nodefaults",
            "-no-user-config",
            "-kernel /d/vmlinux",
            "-initrd /d/initramfs.cpio.gz",
            "tsc_early_khz=2300000",
            "socket,id=agent,path=/d/vms/sb-1/agent.sock,server=on,wait=off",
            "file=/d/vms/sb-1/disk.qcow2,format=qcow2",
            "elevateprivileges=deny",
        ] {
            assert!(joined.contains(want), "{want} missing in {joined}");
        }
        assert!(!joined.contains("-runas"), "{joined}");
        assert!(!joined.contains("netdev"), "network must be off by default");
        assert!(
            !joined.contains("virtfs") && !joined.contains("9p"),
            "no host sharing"
        );
    }

    #[test]
    fn runas_allows_the_privilege_drop() {
        let s = MicrovmConfig {
            run_as: "nobody".into(),
            ..Default::default()
        }
        .validate(false)
        .unwrap();
        let p = VmPaths::new(Path::new("/d/vms"), "sb-1");
        let shape = VmShape {
            memory_mb: 128,
            vcpus: 1,
            preview_port: None,
        };
        let joined = qemu_args(&s, &p, &shape, None).join(" ");
        assert!(joined.contains("-runas nobody"), "{joined}");
        assert!(joined.contains("elevateprivileges=allow"), "{joined}");
        assert!(!joined.contains("tsc_early_khz"), "{joined}");
    }
}
