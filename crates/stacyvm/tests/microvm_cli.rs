//! `stacyvm microvm prepare`: its help, `--check` (which assets are present), and the clear
//! failure of an installed binary that has neither the agent's source nor a prebuilt agent.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Output};

fn stacyvm(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_stacyvm"));
    cmd.args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        // No config file in the cwd or HOME: defaults only.
        .env("HOME", dir);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn prepare_help_names_its_options() {
    let dir = tempfile::tempdir().unwrap();
    let o = stacyvm(dir.path(), &["microvm", "prepare", "--help"], &[]);
    assert!(o.status.success(), "{}", text(&o));
    for want in [
        "--force",
        "--check",
        "--dir",
        "--agent",
        "STACYVM_MICROVM_DIR",
    ] {
        assert!(text(&o).contains(want), "{want} missing: {}", text(&o));
    }
}

#[test]
fn check_reports_present_and_missing_assets() {
    let dir = tempfile::tempdir().unwrap();
    let assets = dir.path().join("assets");
    std::fs::create_dir_all(assets.join("images")).unwrap();
    std::fs::write(assets.join("vmlinux"), "k").unwrap();
    let o = stacyvm(
        dir.path(),
        &["microvm", "prepare", "--check"],
        &[("STACYVM_MICROVM_DIR", &assets.to_string_lossy())],
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let out = text(&o);
    assert!(out.contains("present kernel"), "{out}");
    for missing in [
        "missing initramfs",
        "missing agent",
        "missing image stacyvm-test/busybox:latest",
    ] {
        assert!(out.contains(missing), "{missing}: {out}");
    }
    for f in [
        "initramfs.cpio.gz",
        "stacyvm-agent",
        "images/stacyvm-test_busybox_latest.ext4",
    ] {
        std::fs::write(assets.join(f), "x").unwrap();
    }
    let o = stacyvm(
        dir.path(),
        &["microvm", "prepare", "--check"],
        &[("STACYVM_MICROVM_DIR", &assets.to_string_lossy())],
    );
    // Only qemu may still be missing (it is on PATH wherever the microvm tests run).
    let out = text(&o);
    assert_eq!(
        out.lines().filter(|l| l.starts_with("missing")).count(),
        usize::from(!o.status.success()),
        "{out}"
    );
    assert!(
        !out.contains("missing kernel") && !out.contains("missing agent"),
        "{out}"
    );
}

mod needs_vm {
    use super::*;

    /// The host packages the script installs; without them it would call apt-get.
    fn packages_installed() -> bool {
        let want = [
            "qemu-system-x86",
            "qemu-utils",
            "busybox-static",
            "e2fsprogs",
            "cpio",
            "lz4",
            "xz-utils",
            "zstd",
            "file",
        ];
        want.iter().all(|p| {
            Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", p])
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        })
    }

    #[test]
    fn prepare_without_agent_source_or_prebuilt_agent_fails_clearly() {
        assert!(
            packages_installed(),
            "this test needs the microvm host packages (run scripts/setup-microvm.sh)"
        );
        let dir = tempfile::tempdir().unwrap();
        let assets = dir.path().join("assets");
        // A kernel already there, so the script goes straight to the agent (no download).
        std::fs::create_dir_all(assets.join("modules")).unwrap();
        std::fs::write(assets.join("vmlinux"), "k").unwrap();
        let env = [
            ("STACYVM_MICROVM_DIR", &*assets.to_string_lossy()),
            ("STACYVM_REPO_ROOT", "/nonexistent"),
        ];
        let o = stacyvm(dir.path(), &["microvm", "prepare"], &env);
        assert!(!o.status.success(), "{}", text(&o));
        let out = text(&o);
        assert!(out.contains("[3/5] agent"), "progress lines: {out}");
        assert!(out.contains("STACYVM_MICROVM_AGENT"), "{out}");
        assert!(!assets.join("initramfs.cpio.gz").exists());

        // A prebuilt agent must be static: a dynamic one is refused.
        let sh = std::fs::canonicalize("/bin/sh").unwrap();
        let o = stacyvm(
            dir.path(),
            &["microvm", "prepare", "--agent", &sh.to_string_lossy()],
            &env,
        );
        assert!(!o.status.success(), "{}", text(&o));
        assert!(text(&o).contains("not statically linked"), "{}", text(&o));
    }
}
