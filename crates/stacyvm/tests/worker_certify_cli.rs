//! `stacyvm worker certify`: a production-fit setup certifies (exit 0, every check passes);
//! each kind of mistake fails its own check and the run (exit 1); the report is written as
//! JSON or Markdown where asked.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn stacyvm(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_stacyvm"));
    cmd.current_dir(dir);
    for (k, _) in std::env::vars() {
        if k.starts_with("STACYVM_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("HOME", dir);
    cmd
}

fn pki(dir: &Path) -> PathBuf {
    let out = dir.join("pki");
    let o = stacyvm(dir)
        .args(["worker", "certs", "--out"])
        .arg(&out)
        .args(["--days", "400"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    out
}

/// A stand-in control plane that answers 200 to every request (health checks).
fn fake_control_plane() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            let mut buf = [0u8; 2048];
            let _ = s.read(&mut buf);
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 15\r\nconnection: close\r\n\r\n{\"status\":\"ok\"}");
        }
    });
    port
}

fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn secret(dir: &Path, name: &str, mode: u32) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, "k".repeat(48)).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    p
}

fn certify(dir: &Path, yaml: &str, extra: &[&str]) -> (Output, Value) {
    let cfg = dir.join("worker.yaml");
    std::fs::write(&cfg, yaml).unwrap();
    let out = stacyvm(dir)
        .args([
            "worker",
            "certify",
            "--format",
            "json",
            "--timeout",
            "3",
            "--file",
        ])
        .arg(&cfg)
        .args(extra)
        .output()
        .unwrap();
    let report = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    (out, report)
}

fn status<'a>(report: &'a Value, name: &str) -> &'a str {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name}: {report}"))["status"]
        .as_str()
        .unwrap()
}

#[test]
fn a_production_fit_worker_certifies() {
    let d = tempfile::tempdir().unwrap();
    let (dir, pki) = (d.path(), pki(d.path()));
    let key = secret(dir, "signing.key", 0o600);
    let yaml = format!(
        "worker: {{id: w-prod, control_plane_url: 'http://127.0.0.1:{cp}', listen_addr: '127.0.0.1:{free}',\n  \
         rpc_tls: {{enabled: true, server_cert_file: {p}/server.pem, server_key_file: {p}/server.key, client_ca_file: {p}/ca.pem}}}}\n\
         auth: {{worker_signing_key_file: {key}}}\n",
        cp = fake_control_plane(),
        free = closed_port(),
        p = pki.display(),
        key = key.display(),
    );
    let (out, report) = certify(dir, &yaml, &["--production"]);
    assert!(out.status.success(), "{report:#}");
    assert_eq!(report["result"], "pass", "{report:#}");
    assert_eq!(report["worker_id"], "w-prod");
    for name in [
        "config",
        "credential",
        "auth.worker_signing_key_file",
        "worker.rpc_tls.server_cert_file",
        "worker.rpc_tls.server_key_file",
        "control plane",
        "worker rpc",
    ] {
        assert_eq!(status(&report, name), "pass", "{name}: {report:#}");
    }
}

#[test]
fn each_mistake_fails_its_check() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let not_a_cert = dir.join("server.pem");
    std::fs::write(&not_a_cert, "not a certificate").unwrap();
    let open_key = secret(dir, "server.key", 0o644);
    let token = secret(dir, "token", 0o644);
    let yaml = format!(
        "worker: {{id: w-bad, control_plane_url: 'http://127.0.0.1:{cp}', listen_addr: '127.0.0.1:{free}',\n  \
         rpc_tls: {{enabled: true, server_cert_file: {cert}, server_key_file: {key}}}}}\n\
         auth: {{worker_token_file: {token}}}\n",
        cp = closed_port(),
        free = closed_port(),
        cert = not_a_cert.display(),
        key = open_key.display(),
        token = token.display(),
    );
    let (out, report) = certify(dir, &yaml, &[]);
    assert_eq!(out.status.code(), Some(1), "{report:#}");
    assert_eq!(report["result"], "fail");
    assert_eq!(status(&report, "worker.rpc_tls.server_cert_file"), "fail");
    assert_eq!(status(&report, "control plane"), "fail");
    assert_eq!(
        status(&report, "credential"),
        "warn",
        "a static token is staging-grade"
    );
    assert_eq!(
        status(&report, "auth.worker_token_file"),
        "warn",
        "mode 0644"
    );
    assert_eq!(
        status(&report, "worker.rpc_tls.server_key_file"),
        "warn",
        "mode 0644"
    );
    assert_eq!(
        status(&report, "worker.rpc_tls.client_ca_file"),
        "warn",
        "TLS without client certs"
    );

    // Markdown, to a file.
    let md = dir.join("report.md");
    let o = stacyvm(dir)
        .args([
            "worker",
            "certify",
            "--format",
            "markdown",
            "--timeout",
            "3",
            "--file",
        ])
        .arg(dir.join("worker.yaml"))
        .arg("--out")
        .arg(&md)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let text = std::fs::read_to_string(&md).unwrap();
    assert!(
        text.contains("| Check | Status | Detail |") && text.contains("| control plane | FAIL |"),
        "{text}"
    );
}

#[test]
fn warnings_fail_under_production_rules() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let token = secret(dir, "token", 0o600);
    let yaml = format!(
        "worker: {{id: w-stage, control_plane_url: 'http://127.0.0.1:{cp}'}}\nauth: {{worker_token_file: {t}}}\n",
        cp = fake_control_plane(),
        t = token.display(),
    );
    let (out, report) = certify(dir, &yaml, &[]);
    assert!(
        out.status.success(),
        "staging setup passes with warnings: {report:#}"
    );
    assert_eq!(report["result"], "warn");
    let (out, report) = certify(dir, &yaml, &["--production"]);
    assert_eq!(out.status.code(), Some(1), "{report:#}");
    assert_eq!(status(&report, "credential"), "fail");
}
