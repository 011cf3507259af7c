//! `stacyvm worker token ...` run as a real process: config fallback, exit codes, messages.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Output};

const KEY: &str = "config-signing-key-config-signing-key-0123";

fn stacyvm(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_stacyvm"))
        .args(args)
        .current_dir(dir)
        .env("STACYVM_CONFIG", dir.join("stacyvm.yaml"))
        .env("HOME", dir)
        .env_remove("STACYVM_AUTH_WORKER_SIGNING_KEY")
        .env_remove("STACYVM_AUTH_WORKER_REVOKED_TOKEN_IDS")
        .env_remove("STACYVM_AUTH_WORKER_SIGNING_KEYS")
        .output()
        .unwrap()
}

fn write_config(dir: &Path, revoked: &[&str]) {
    let yaml = format!(
        "auth:\n  worker_signing_key: \"{KEY}\"\n  worker_revoked_token_ids: [{}]\n",
        revoked.join(", ")
    );
    std::fs::write(dir.join("stacyvm.yaml"), yaml).unwrap();
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

#[test]
fn issue_and_verify_with_the_config_key() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), &[]);
    let out = stacyvm(
        dir.path(),
        &[
            "worker",
            "token",
            "worker-a",
            "--format",
            "json",
            "--token-id",
            "jti-1",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let issued: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert!(
        stdout(&out).starts_with("{\n  \""),
        "two-space indented JSON"
    );
    let token = issued["token"].as_str().unwrap();

    let out = stacyvm(
        dir.path(),
        &[
            "worker",
            "token",
            "verify",
            token,
            "--worker-id",
            "worker-a",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let verified: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(verified["signature_verified"], true);
    assert_eq!(verified["token_id"], "jti-1");

    let out = stacyvm(dir.path(), &["worker", "token", "inspect", token]);
    assert!(out.status.success());
    let inspected: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(inspected["signature_verified"], false);
    assert_eq!(inspected["expires_at"], issued["expires_at"]);

    // Revoked through the config: non-zero exit and a clear reason on stderr.
    write_config(dir.path(), &["jti-1"]);
    let out = stacyvm(dir.path(), &["worker", "token", "verify", token]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("verification failed") && err.contains("revoked"),
        "{err}"
    );
    assert!(stdout(&out).is_empty());
}

#[test]
fn verify_with_a_wrong_key_fails() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("stacyvm.yaml"), "auth: {}\n").unwrap();
    let out = stacyvm(dir.path(), &["worker", "token", "w1", "--signing-key", KEY]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = stdout(&out).trim().to_string();
    let out = stacyvm(
        dir.path(),
        &[
            "worker",
            "token",
            "verify",
            &token,
            "--signing-key",
            "some-other-key-some-other-key",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid signature"));
    // No key anywhere: issuing fails with a message naming the ways to give one.
    let out = stacyvm(dir.path(), &["worker", "token", "w1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("signing key is required"));
}

#[test]
fn rotation_plan_prints_text() {
    let dir = tempfile::tempdir().unwrap();
    let out = stacyvm(
        dir.path(),
        &["worker", "token", "rotation-plan", "--ttl", "10m"],
    );
    assert!(out.status.success());
    let text = stdout(&out);
    assert!(text.contains("maximum token TTL: 10m0s"), "{text}");
}
