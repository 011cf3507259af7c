//! `stacyvm worker certs` and `worker.rpc_tls` start-up checks, with real `serve` and `worker`
//! processes: the generated set carries a sandbox's exec over mTLS end to end, and an X.509 v1
//! certificate (what `openssl x509 -req` without extensions writes) stops either side at
//! start-up with a message naming the key, the file and how to reissue it.
#![allow(clippy::unwrap_used)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const TOKEN: &str = "certs-test-worker-token-0123456789abcdef";

fn stacyvm(dir: &Path, config: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_stacyvm"));
    cmd.current_dir(dir);
    for (k, _) in std::env::vars() {
        if k.starts_with("STACYVM_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("STACYVM_CONFIG", config).env("HOME", dir);
    cmd
}

fn certs(dir: &Path) -> PathBuf {
    let out = dir.join("pki");
    let o = Command::new(env!("CARGO_BIN_EXE_stacyvm"))
        .args(["worker", "certs", "--out"])
        .arg(&out)
        .args(["--hosts", "127.0.0.1,localhost", "--days", "2"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    out
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn cp_yaml(dir: &Path, port: u16, client_cert: &Path, pki: &Path) -> PathBuf {
    let yaml = format!(
        "server: {{host: 127.0.0.1, port: {port}}}\n\
         database: {{path: {db}}}\n\
         providers: {{default: mock, mock: {{enabled: true}}}}\n\
         auth: {{worker_token: {TOKEN}}}\n\
         logging: {{format: text}}\n\
         worker:\n  rpc_tls:\n    enabled: true\n    ca_file: {ca}\n    client_cert_file: {cert}\n    client_key_file: {key}\n",
        db = dir.join("cp.db").display(),
        ca = pki.join("ca.pem").display(),
        cert = client_cert.display(),
        key = client_cert.with_extension("key").display(),
    );
    let path = dir.join("cp.yaml");
    std::fs::write(&path, yaml).unwrap();
    path
}

fn worker_yaml(dir: &Path, cp_port: u16, port: u16, server_cert: &Path, pki: &Path) -> PathBuf {
    let yaml = format!(
        "providers: {{default: mock, mock: {{enabled: true}}}}\n\
         auth: {{worker_token: {TOKEN}}}\n\
         logging: {{format: text}}\n\
         worker:\n  id: w-tls\n  control_plane_url: http://127.0.0.1:{cp_port}\n  listen_addr: 127.0.0.1:{port}\n  heartbeat_interval: 1s\n  rpc_tls:\n    enabled: true\n    server_cert_file: {cert}\n    server_key_file: {key}\n    client_ca_file: {ca}\n",
        cert = server_cert.display(),
        key = server_cert.with_extension("key").display(),
        ca = pki.join("ca.pem").display(),
    );
    let path = dir.join("worker.yaml");
    std::fs::write(&path, yaml).unwrap();
    path
}

/// Kills the process when the test ends, pass or fail.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(dir: &Path, config: &Path, args: &[&str]) -> Proc {
    Proc(
        stacyvm(dir, config)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// Runs a command expected to fail at start-up; returns its stderr.
fn fails_at_startup(dir: &Path, config: &Path, args: &[&str]) -> String {
    let mut child = stacyvm(dir, config)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{args:?} did not stop at start-up");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out: Output = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

async fn wait_for(what: &str, mut ok: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ok().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn generated_certificates_carry_remote_exec_over_mtls() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pki = certs(d);
    let (cp_port, w_port) = (free_port(), free_port());
    let cp_cfg = cp_yaml(d, cp_port, &pki.join("client.pem"), &pki);
    let _cp = spawn(d, &cp_cfg, &["serve"]);
    let base = format!("http://127.0.0.1:{cp_port}/api/v1");
    let http = reqwest::Client::new();
    wait_for("serve to be healthy", async || {
        http.get(format!("{base}/health"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    })
    .await;
    let w_cfg = worker_yaml(d, cp_port, w_port, &pki.join("server.pem"), &pki);
    let _worker = spawn(d, &w_cfg, &["worker"]);
    wait_for("the worker to register", async || {
        http.get(format!("{base}/workers/w-tls"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    })
    .await;
    let r = http
        .delete(format!("{base}/admin/workers/local"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let r = http
        .post(format!("{base}/sandboxes"))
        .json(&json!({"image": "alpine", "provider": "mock"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let sb: Value = r.json().await.unwrap();
    assert_eq!(sb["worker_id"], "w-tls", "{sb}");
    let r = http
        .post(format!(
            "{base}/sandboxes/{}/exec",
            sb["id"].as_str().unwrap()
        ))
        .json(&json!({"command": "echo over-mtls"}))
        .send()
        .await
        .unwrap();
    let status = r.status();
    let out: Value = r.json().await.unwrap();
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["stdout"].as_str().unwrap().trim(), "over-mtls", "{out}");

    // The worker refuses a client without a certificate from the CA (mTLS is really on).
    let ca = reqwest::Certificate::from_pem(&std::fs::read(pki.join("ca.pem")).unwrap()).unwrap();
    let anon = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .build()
        .unwrap();
    let r = anon
        .get(format!("https://127.0.0.1:{w_port}/health"))
        .send()
        .await;
    match r {
        Err(_) => {}
        Ok(resp) => assert!(resp.bytes().await.is_err(), "served without a client cert"),
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl CLI is installed");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A version 1 certificate signed by the generated CA, made the way the original's
/// `smoke-remote-worker.sh --mtls` does: `openssl x509 -req` with no extensions.
fn v1_cert(pki: &Path, name: &str) -> PathBuf {
    openssl(
        pki,
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            &format!("{name}.key"),
        ],
    );
    openssl(
        pki,
        &[
            "req",
            "-new",
            "-key",
            &format!("{name}.key"),
            "-subj",
            "/CN=127.0.0.1",
            "-out",
            &format!("{name}.csr"),
        ],
    );
    openssl(
        pki,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            &format!("{name}.pem"),
        ],
    );
    let text = Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in", &format!("{name}.pem")])
        .current_dir(pki)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&text.stdout).contains("Version: 1"),
        "openssl did not write a v1 certificate"
    );
    pki.join(format!("{name}.pem"))
}

fn assert_clear(msg: &str, key: &str, file: &Path) {
    for needle in [
        key,
        &file.display().to_string(),
        "X.509 version 1",
        "stacyvm worker certs",
    ] {
        assert!(msg.contains(needle), "missing {needle:?} in:\n{msg}");
    }
}

#[test]
fn version_1_certificates_stop_both_sides_at_startup_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pki = certs(d);
    let v1_client = v1_cert(&pki, "v1-client");
    let v1_server = v1_cert(&pki, "v1-server");

    let cp_cfg = cp_yaml(d, free_port(), &v1_client, &pki);
    let err = fails_at_startup(d, &cp_cfg, &["serve"]);
    assert_clear(&err, "worker.rpc_tls.client_cert_file", &v1_client);

    let w_cfg = worker_yaml(d, free_port(), free_port(), &v1_server, &pki);
    let err = fails_at_startup(d, &w_cfg, &["worker"]);
    assert_clear(&err, "worker.rpc_tls.server_cert_file", &v1_server);

    // `config lint` reports the same before anything is started.
    let out = stacyvm(d, &cp_cfg)
        .args(["config", "lint"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_clear(
        &String::from_utf8_lossy(&out.stdout),
        "error: worker.rpc_tls.client_cert_file",
        &v1_client,
    );
}
