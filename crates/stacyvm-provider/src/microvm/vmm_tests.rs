use super::*;
use crate::MicrovmConfig;

/// Settings (`data_dir` empty: the default), paths and shape of a test VM `sb-1`.
fn fixture(
    data_dir: &str,
    run_as: &str,
    memory_mb: i64,
    vcpus: i64,
) -> (Settings, VmPaths, VmShape) {
    let mut c = MicrovmConfig {
        run_as: run_as.into(),
        ..Default::default()
    };
    if !data_dir.is_empty() {
        c.data_dir = data_dir.into();
    }
    let p = VmPaths::new(Path::new("/d/vms"), "sb-1");
    let shape = VmShape {
        memory_mb,
        vcpus,
        preview_port: None,
    };
    (c.validate(false).unwrap(), p, shape)
}

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
    let (s, p, shape) = fixture("/d", "-", 256, 2);
    let a = qemu_args(&s, &p, &shape, Some(2_300_000), &Launch::Cold);
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
fn template_and_clone_command_lines() {
    let (s, p, shape) = fixture("/d", "-", 256, 1);
    let cold = qemu_args(&s, &p, &shape, None, &Launch::Cold).join(" ");
    assert!(cold.contains("-M microvm -accel"), "{cold}");
    assert!(!cold.contains("memory-backend") && !cold.contains("-incoming"));
    assert!(cold.contains("-qmp unix:/d/vms/sb-1/qmp.sock,server=on,wait=off"));
    let t = Launch::Template {
        mem: "/d/t,1/mem".into(),
        disk_fds: [5, 6],
    };
    let tpl = qemu_args(&s, &p, &shape, None, &t).join(" ");
    assert!(tpl.contains("-M microvm,memory-backend=mem"), "{tpl}");
    assert!(
        tpl.contains("memory-backend-file,id=mem,size=256M,mem-path=/d/t,,1/mem,share=on"),
        "{tpl}"
    );
    assert!(tpl.contains("file=/dev/fdset/1") && !tpl.contains("-incoming"));
    let c = Launch::Clone {
        mem: "/d/t/mem".into(),
        disk_fds: [7, 8],
    };
    let clone = qemu_args(&s, &p, &shape, None, &c).join(" ");
    for want in [
        "mem-path=/d/t/mem,share=off",
        "file=/dev/fdset/1,format=qcow2",
        "-add-fd fd=7,set=1 -add-fd fd=8,set=1",
        "-incoming defer -S",
        // Host-side paths are the clone's own.
        "path=/d/vms/sb-1/agent.sock",
    ] {
        assert!(clone.contains(want), "{want} missing in {clone}");
    }
}

#[test]
fn resume_and_convert_command_lines() {
    let (s, p, shape) = fixture("/d", "-", 256, 1);
    let r = Launch::Resume {
        named_ram: true,
        disk_fds: [7, 8],
    };
    let named = qemu_args(&s, &p, &shape, None, &r).join(" ");
    for want in [
        "-M microvm,memory-backend=mem",
        "memory-backend-ram,id=mem,size=256M",
        "file=/dev/fdset/1,format=qcow2",
        "-add-fd fd=7,set=1 -add-fd fd=8,set=1",
        "-incoming defer -S",
    ] {
        assert!(named.contains(want), "{want} missing in {named}");
    }
    assert!(!named.contains("mem-path"), "{named}");
    let r = Launch::Resume {
        named_ram: false,
        disk_fds: [7, 8],
    };
    let plain = qemu_args(&s, &p, &shape, None, &r).join(" ");
    assert!(plain.contains("-M microvm -accel"), "{plain}");
    assert!(!plain.contains("memory-backend"), "{plain}");
    assert!(plain.contains("-incoming defer -S"), "{plain}");
    let c = Launch::Convert {
        mem: "/d/s/mem".into(),
        disk_fds: [7, 8],
    };
    let conv = qemu_args(&s, &p, &shape, None, &c).join(" ");
    assert!(conv.contains("mem-path=/d/s/mem,share=on"), "{conv}");
    assert!(conv.contains("-incoming defer -S"), "{conv}");
}

#[test]
fn runas_allows_the_privilege_drop() {
    let (s, p, shape) = fixture("", "nobody", 128, 1);
    let joined = qemu_args(&s, &p, &shape, None, &Launch::Cold).join(" ");
    assert!(joined.contains("-runas nobody"), "{joined}");
    assert!(joined.contains("elevateprivileges=allow"), "{joined}");
    assert!(!joined.contains("tsc_early_khz"), "{joined}");
}
