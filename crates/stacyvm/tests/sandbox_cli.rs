//! The sandbox client commands against a real `stacyvm serve` (mock provider, SQLite in a temp
//! dir, loopback), as a user runs them: spawn, pause, list, resume, kill.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// `stacyvm serve` on a free port, killed on drop.
struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(dir: &Path) -> Server {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(
        dir.join("stacyvm.yaml"),
        format!(
            "server: {{host: 127.0.0.1, port: {port}}}\n\
             providers: {{default: mock, mock: {{enabled: true}}, docker: {{enabled: false}}}}\n\
             database: {{driver: sqlite, path: {}}}\n",
            dir.join("cp.db").display()
        ),
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_stacyvm"))
        .arg("serve")
        .current_dir(dir)
        .env_clear()
        .env("HOME", dir)
        .env("STACYVM_CONFIG", dir.join("stacyvm.yaml"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(
            std::fs::File::create(dir.join("server.log")).unwrap(),
        ))
        .spawn()
        .unwrap();
    let server = Server {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !stacyvm(&server, &["list"]).status.success() {
        assert!(
            Instant::now() < deadline,
            "stacyvm serve did not answer: {}",
            std::fs::read_to_string(dir.join("server.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    server
}

fn stacyvm(server: &Server, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_stacyvm"))
        .args(["--server", &server.url])
        .args(args)
        .env_clear()
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `stacyvm list`'s STATE column for `id`.
fn state_of(server: &Server, id: &str) -> String {
    let o = stacyvm(server, &["list"]);
    assert!(o.status.success(), "{}", text(&o));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .find(|l| l.starts_with(id))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or_default()
        .to_string()
}

#[test]
fn pause_and_resume() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path());
    let o = stacyvm(&server, &["spawn", "-q", "--ttl", "1h"]);
    assert!(o.status.success(), "{}", text(&o));
    let id = String::from_utf8_lossy(&o.stdout).trim().to_string();
    assert!(!id.is_empty());

    let o = stacyvm(&server, &["pause", &id]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), format!("{id} paused\n"));
    assert_eq!(state_of(&server, &id), "paused");
    // Paused: exec is refused with the API's code, and pause again is answered as it is.
    let o = stacyvm(&server, &["exec", &id, "--", "true"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("409 SANDBOX_PAUSED"), "{}", text(&o));
    let o = stacyvm(&server, &["pause", &id]);
    assert!(o.status.success(), "{}", text(&o));

    let o = stacyvm(&server, &["resume", &id, "--ttl", "5m"]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(out.starts_with(&format!("{id} running, expires ")), "{out}");
    assert_eq!(state_of(&server, &id), "running");
    let o = stacyvm(&server, &["exec", &id, "--", "true"]);
    assert!(o.status.success(), "{}", text(&o));
    // Resume of a running sandbox, without --ttl, is answered as it is.
    let o = stacyvm(&server, &["resume", &id]);
    assert!(o.status.success(), "{}", text(&o));

    let o = stacyvm(&server, &["resume", &id, "--ttl", "soon"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("400"), "{}", text(&o));
    let o = stacyvm(&server, &["kill", &id]);
    assert!(o.status.success(), "{}", text(&o));
    for verb in ["pause", "resume"] {
        let o = stacyvm(&server, &[verb, &id]);
        assert!(!o.status.success(), "{verb}: {}", text(&o));
        assert!(text(&o).contains("404"), "{verb}: {}", text(&o));
    }
}

/// Runs `args`, expects success and returns stdout.
fn ok(server: &Server, args: &[&str]) -> String {
    let o = stacyvm(server, args);
    assert!(o.status.success(), "{args:?}: {}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn volumes_snapshots_and_fork() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path());
    let out = ok(&server, &["volume", "create", "data", "--size-mb", "64"]);
    assert_eq!(out, "data created on mock (local)\n");
    let o = stacyvm(
        &server,
        &["volume", "create", "x", "--worker", "worker-nope"],
    );
    assert!(!o.status.success());
    assert!(text(&o).contains("409 WORKER_UNAVAILABLE"), "{}", text(&o));

    let id = ok(
        &server,
        &[
            "spawn",
            "-q",
            "--volume",
            "data:/workspace/vol",
            "--ttl",
            "1h",
        ],
    )
    .trim()
    .to_string();
    ok(
        &server,
        &[
            "exec",
            &id,
            "--",
            "sh",
            "-c",
            "echo v > vol/f; echo s > s.txt",
        ],
    );
    let ls = ok(&server, &["volume", "ls"]);
    let row = ls
        .lines()
        .find(|l| l.starts_with("data "))
        .unwrap_or_default();
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cols, ["data", "mock", "local", "64", id.as_str()], "{ls}");

    let sid = ok(&server, &["snapshot", "create", &id, "--name", "cli"])
        .trim()
        .to_string();
    assert!(sid.starts_with("snap-"), "{sid}");
    assert!(ok(&server, &["snapshot", "ls"]).contains(&sid));
    ok(
        &server,
        &["exec", &id, "--", "sh", "-c", "echo later > s.txt"],
    );
    let copy = ok(&server, &["spawn", "-q", "--snapshot", &sid])
        .trim()
        .to_string();
    assert_eq!(ok(&server, &["exec", &copy, "--", "cat", "s.txt"]), "s\n");
    let forks = ok(&server, &["fork", &id, "--count", "2"]);
    let forks: Vec<&str> = forks.split_whitespace().collect();
    assert_eq!(forks.len(), 2, "{forks:?}");
    for f in &forks {
        assert_eq!(ok(&server, &["exec", f, "--", "cat", "s.txt"]), "later\n");
    }
    // In use: refused; free: gone with its data.
    let o = stacyvm(&server, &["volume", "rm", "data"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("409 VOLUME_IN_USE"), "{}", text(&o));
    ok(&server, &["kill", &id]);
    ok(&server, &["volume", "rm", "data"]);
    assert!(!ok(&server, &["volume", "ls"]).contains("data "));
    ok(&server, &["snapshot", "rm", &sid]);
    assert!(!ok(&server, &["snapshot", "ls"]).contains(&sid));
    let o = stacyvm(&server, &["spawn", "-q", "--snapshot", &sid]);
    assert!(!o.status.success());
    assert!(text(&o).contains("404 SNAPSHOT_NOT_FOUND"), "{}", text(&o));
}
