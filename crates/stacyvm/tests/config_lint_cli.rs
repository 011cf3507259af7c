//! `stacyvm config lint` run as a real process: the lookup and env overrides of `serve`, every
//! error and warning printed with its key, exit 1 on errors and 0 with only warnings.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Output};

/// Runs in `dir` with `HOME=dir` and no inherited `STACYVM_*` variables.
fn lint(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_stacyvm"));
    cmd.arg("config").arg("lint").args(args).current_dir(dir);
    for (k, _) in std::env::vars() {
        if k.starts_with("STACYVM_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("HOME", dir).envs(env.iter().copied());
    let out: Output = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap(), text)
}

const BROKEN: &str = "database:\n  driver: oracle\nlogging:\n  level: loud\ndefaults:\n  ttl: -5s\n  max_sandboxes: -1\nserver:\n  cors_allowed_origins: [\"ftp://x\"]\npool:\n  enabled: true\n";

#[test]
fn every_error_and_warning_is_printed_with_its_key() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("stacyvm.yaml"), BROKEN).unwrap();
    let (code, out) = lint(dir.path(), &[], &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("stacyvm.yaml"),
        "names the file it read: {out}"
    );
    for key in [
        "error: database.driver:",
        "error: logging.level:",
        "error: defaults.ttl:",
        "error: defaults.max_sandboxes:",
        "error: server.cors_allowed_origins[0]:",
        "warning: pool.enabled",
    ] {
        assert!(out.contains(key), "missing {key:?} in:\n{out}");
    }
    assert!(out.contains("5 error(s), 1 warning(s)"), "{out}");
}

#[test]
fn warnings_alone_exit_zero_and_production_fails_on_them() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("stacyvm.yaml"), "pool:\n  enabled: true\n").unwrap();
    let (code, out) = lint(dir.path(), &[], &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("warning: pool.enabled"), "{out}");
    let (code, out) = lint(dir.path(), &["--production"], &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("warning: auth.api_key"), "{out}");
}

#[test]
fn same_lookup_and_env_overrides_as_serve() {
    let dir = tempfile::tempdir().unwrap();
    // No file anywhere: built-in defaults are valid.
    let (code, out) = lint(dir.path(), &[], &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("built-in defaults"), "{out}");
    // ~/.stacyvm/config.yaml is found; env overrides apply on top of it.
    std::fs::create_dir(dir.path().join(".stacyvm")).unwrap();
    std::fs::write(
        dir.path().join(".stacyvm/config.yaml"),
        "logging:\n  level: debug\n",
    )
    .unwrap();
    let (code, out) = lint(dir.path(), &[], &[("STACYVM_LOGGING_LEVEL", "shouty")]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(".stacyvm/config.yaml"), "{out}");
    assert!(out.contains("error: logging.level: \"shouty\""), "{out}");
    // STACYVM_CONFIG wins over the lookup; --file over STACYVM_CONFIG.
    std::fs::write(dir.path().join("bad.yaml"), BROKEN).unwrap();
    std::fs::write(dir.path().join("good.yaml"), "server:\n  port: 8080\n").unwrap();
    let (code, out) = lint(dir.path(), &[], &[("STACYVM_CONFIG", "bad.yaml")]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("bad.yaml"), "{out}");
    let (code, out) = lint(
        dir.path(),
        &["--file", "good.yaml"],
        &[("STACYVM_CONFIG", "bad.yaml")],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("good.yaml"), "{out}");
}

#[test]
fn load_errors_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("stacyvm.yaml"), "bogus: 1\n").unwrap();
    let (code, out) = lint(dir.path(), &[], &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("error: bogus: unknown field"), "{out}");
    let (code, out) = lint(dir.path(), &["--file", "missing.yaml"], &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("missing.yaml does not exist"), "{out}");
}

#[test]
fn trusted_proxies_are_linted() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("stacyvm.yaml");
    std::fs::write(
        &file,
        "server:\n  trusted_proxies: [10.0.0.0/8, \"127.0.0.1\", \"fd00::/8\"]\n",
    )
    .unwrap();
    let (code, out) = lint(dir.path(), &[], &[]);
    assert_eq!(code, 0, "{out}");
    std::fs::write(
        &file,
        "server:\n  trusted_proxies: [10.0.0.0/8, proxy.lan]\n",
    )
    .unwrap();
    let (code, out) = lint(dir.path(), &[], &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("error: server.trusted_proxies[1]:"), "{out}");
    // The env override takes a comma-separated list, as every list key does.
    std::fs::remove_file(&file).unwrap();
    let (code, out) = lint(
        dir.path(),
        &[],
        &[("STACYVM_SERVER_TRUSTED_PROXIES", "10.0.0.0/8,192.168.1.1")],
    );
    assert_eq!(code, 0, "{out}");
}
