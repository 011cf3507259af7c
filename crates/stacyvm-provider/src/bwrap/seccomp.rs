//! The sandbox's seccomp filter: a deny list at least as strict as Docker's default profile,
//! compiled to BPF with `seccompiler` and handed to `bwrap --add-seccomp-fd`, which installs
//! it as its last step before the agent starts (so bwrap's own setup is not filtered).
//!
//! Two programs, because one seccompiler filter has one action for every rule:
//! - [`DENIED`] and the argument rules answer `EPERM`, as Docker does;
//! - `clone3` answers `ENOSYS`: its flags sit in memory a filter cannot read, and `ENOSYS`
//!   makes libc fall back to `clone`, whose flags the first program checks (Docker's choice).
//!
//! Every other system call is allowed. The filter also checks the architecture: a 32-bit
//! (`int 0x80`) system call kills the process, which closes the classic bypass of a 64-bit
//! deny list; on x86_64 every rule is repeated for the x32 numbering.

use std::collections::BTreeMap;
use std::io::{Seek, SeekFrom, Write};

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

use crate::ProviderError;

/// Denied outright with `EPERM`, by group. The sandbox has no capability, so most of these
/// fail anyway; the filter keeps their kernel code out of reach (defence in depth, as Docker).
pub(super) const DENIED: &[(&str, i64)] = &[
    // Mounts and the root: the sandbox's file system view is fixed by bwrap.
    ("mount", libc::SYS_mount),
    ("umount2", libc::SYS_umount2),
    ("pivot_root", libc::SYS_pivot_root),
    ("open_tree", libc::SYS_open_tree),
    ("move_mount", libc::SYS_move_mount),
    ("fsopen", libc::SYS_fsopen),
    ("fsconfig", libc::SYS_fsconfig),
    ("fsmount", libc::SYS_fsmount),
    ("fspick", libc::SYS_fspick),
    ("mount_setattr", libc::SYS_mount_setattr),
    // New namespaces and joining others (clone with namespace flags: see `clone_rules`).
    ("unshare", libc::SYS_unshare),
    ("setns", libc::SYS_setns),
    // Other processes' memory and state.
    ("ptrace", libc::SYS_ptrace),
    ("process_vm_readv", libc::SYS_process_vm_readv),
    ("process_vm_writev", libc::SYS_process_vm_writev),
    ("process_madvise", libc::SYS_process_madvise),
    ("pidfd_getfd", libc::SYS_pidfd_getfd),
    ("kcmp", libc::SYS_kcmp),
    // Kernel code and kernel-wide state.
    ("init_module", libc::SYS_init_module),
    ("finit_module", libc::SYS_finit_module),
    ("delete_module", libc::SYS_delete_module),
    ("kexec_load", libc::SYS_kexec_load),
    ("kexec_file_load", libc::SYS_kexec_file_load),
    ("reboot", libc::SYS_reboot),
    ("swapon", libc::SYS_swapon),
    ("swapoff", libc::SYS_swapoff),
    ("acct", libc::SYS_acct),
    ("syslog", libc::SYS_syslog),
    ("quotactl", libc::SYS_quotactl),
    ("quotactl_fd", libc::SYS_quotactl_fd),
    ("lookup_dcookie", libc::SYS_lookup_dcookie),
    ("nfsservctl", libc::SYS_nfsservctl),
    // The clock (host-wide).
    ("settimeofday", libc::SYS_settimeofday),
    ("clock_settime", libc::SYS_clock_settime),
    ("clock_adjtime", libc::SYS_clock_adjtime),
    // Large, frequently exploited kernel interfaces.
    ("bpf", libc::SYS_bpf),
    ("perf_event_open", libc::SYS_perf_event_open),
    ("userfaultfd", libc::SYS_userfaultfd),
    ("io_uring_setup", libc::SYS_io_uring_setup),
    ("io_uring_enter", libc::SYS_io_uring_enter),
    ("io_uring_register", libc::SYS_io_uring_register),
    ("fanotify_init", libc::SYS_fanotify_init),
    // Kernel keyrings (not namespaced).
    ("keyctl", libc::SYS_keyctl),
    ("add_key", libc::SYS_add_key),
    ("request_key", libc::SYS_request_key),
    // File handles bypass the mount namespace's view (the "shocker" escape).
    ("open_by_handle_at", libc::SYS_open_by_handle_at),
    ("name_to_handle_at", libc::SYS_name_to_handle_at),
    // Obsolete or hardware access (x86_64 only).
    #[cfg(target_arch = "x86_64")]
    ("iopl", libc::SYS_iopl),
    #[cfg(target_arch = "x86_64")]
    ("ioperm", libc::SYS_ioperm),
    #[cfg(target_arch = "x86_64")]
    ("uselib", libc::SYS_uselib),
    #[cfg(target_arch = "x86_64")]
    ("_sysctl", libc::SYS__sysctl),
    #[cfg(target_arch = "x86_64")]
    ("sysfs", libc::SYS_sysfs),
    #[cfg(target_arch = "x86_64")]
    ("ustat", libc::SYS_ustat),
    ("vhangup", libc::SYS_vhangup),
];

/// `clone` flags that make a namespace: any of them set is `EPERM`.
const NAMESPACE_FLAGS: &[u64] = &[
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWCGROUP as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
];

/// `personality` values Docker allows (Linux, `UNAME26`, `ADDR_NO_RANDOMIZE`, both, and the
/// query `0xffffffff`); any other persona is `EPERM`.
const PERSONALITIES: &[u64] = &[0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff];

/// x32 system calls are the x86_64 numbers with this bit set (and a few of their own).
#[cfg(target_arch = "x86_64")]
const X32_BIT: i64 = 0x4000_0000;
/// x32's own numbers for calls in [`DENIED`] (`kexec_load`, `process_vm_readv`/`writev`).
#[cfg(target_arch = "x86_64")]
const X32_ONLY: &[i64] = &[528, 539, 540];

fn cond(arg: u8, op: SeccompCmpOp, value: u64) -> Result<SeccompCondition, ProviderError> {
    SeccompCondition::new(arg, SeccompCmpArgLen::Qword, op, value).map_err(compile_err)
}

fn compile_err(e: impl std::error::Error + Send + Sync + 'static) -> ProviderError {
    ProviderError::internal_with("building the sandbox's seccomp filter failed", e)
}

/// `clone` with any namespace flag in its first argument (one rule per flag: rules are OR-ed).
fn clone_rules() -> Result<Vec<SeccompRule>, ProviderError> {
    NAMESPACE_FLAGS
        .iter()
        .map(|f| {
            SeccompRule::new(vec![cond(0, SeccompCmpOp::MaskedEq(*f), *f)?]).map_err(compile_err)
        })
        .collect()
}

/// `personality` with a value outside [`PERSONALITIES`] (conditions of a rule are AND-ed).
fn personality_rule() -> Result<Vec<SeccompRule>, ProviderError> {
    let conds = PERSONALITIES
        .iter()
        .map(|v| {
            SeccompCondition::new(0, SeccompCmpArgLen::Dword, SeccompCmpOp::Ne, *v)
                .map_err(compile_err)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(vec![SeccompRule::new(conds).map_err(compile_err)?])
}

/// Adds `rules` for `nr`, and on x86_64 for its x32 twin.
fn add(map: &mut BTreeMap<i64, Vec<SeccompRule>>, nr: i64, rules: Vec<SeccompRule>) {
    #[cfg(target_arch = "x86_64")]
    map.insert(nr | X32_BIT, rules.clone());
    map.insert(nr, rules);
}

fn arch() -> Result<TargetArch, ProviderError> {
    std::env::consts::ARCH.try_into().map_err(compile_err)
}

/// The `EPERM` program: [`DENIED`], `clone` with namespace flags, odd personalities.
pub(super) fn deny_program() -> Result<BpfProgram, ProviderError> {
    let mut rules = BTreeMap::new();
    for (_, nr) in DENIED {
        add(&mut rules, *nr, Vec::new());
    }
    #[cfg(target_arch = "x86_64")]
    for nr in X32_ONLY {
        rules.insert(*nr, Vec::new());
    }
    add(&mut rules, libc::SYS_clone, clone_rules()?);
    add(&mut rules, libc::SYS_personality, personality_rule()?);
    let eperm = SeccompAction::Errno(libc::EPERM as u32);
    let filter =
        SeccompFilter::new(rules, SeccompAction::Allow, eperm, arch()?).map_err(compile_err)?;
    filter.try_into().map_err(compile_err)
}

/// The `ENOSYS` program: `clone3`.
pub(super) fn enosys_program() -> Result<BpfProgram, ProviderError> {
    let mut rules = BTreeMap::new();
    add(&mut rules, libc::SYS_clone3, Vec::new());
    let enosys = SeccompAction::Errno(libc::ENOSYS as u32);
    let filter =
        SeccompFilter::new(rules, SeccompAction::Allow, enosys, arch()?).map_err(compile_err)?;
    filter.try_into().map_err(compile_err)
}

/// The program in the kernel's `struct sock_filter` layout, as `bwrap --add-seccomp-fd` reads
/// it.
fn bytes(p: &BpfProgram) -> Vec<u8> {
    let mut out = Vec::with_capacity(p.len() * 8);
    for i in p {
        out.extend_from_slice(&i.code.to_ne_bytes());
        out.push(i.jt);
        out.push(i.jf);
        out.extend_from_slice(&i.k.to_ne_bytes());
    }
    out
}

/// Both programs, each in an unnamed temporary file positioned at its start, for bwrap to read.
pub(super) fn files() -> Result<Vec<std::fs::File>, ProviderError> {
    let fail = |e| ProviderError::internal_with("writing the seccomp filter failed", e);
    [deny_program()?, enosys_program()?]
        .iter()
        .map(|p| {
            let mut f = tempfile::tempfile().map_err(fail)?;
            f.write_all(&bytes(p)).map_err(fail)?;
            f.seek(SeekFrom::Start(0)).map_err(fail)?;
            Ok(f)
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_programs_compile_and_fit_the_kernel_limit() {
        let deny = deny_program().unwrap();
        let enosys = enosys_program().unwrap();
        // BPF_MAXINSNS: the kernel refuses longer programs.
        assert!(deny.len() < 4096, "{}", deny.len());
        assert!(!enosys.is_empty());
        assert_eq!(bytes(&deny).len(), deny.len() * 8);
        assert_eq!(files().unwrap().len(), 2);
    }

    #[test]
    fn the_table_has_no_duplicates() {
        let mut nrs: Vec<i64> = DENIED.iter().map(|(_, n)| *n).collect();
        nrs.sort_unstable();
        nrs.dedup();
        assert_eq!(nrs.len(), DENIED.len());
        for name in ["mount", "ptrace", "bpf", "unshare", "setns", "keyctl"] {
            assert!(DENIED.iter().any(|(n, _)| *n == name), "{name}");
        }
    }
}
