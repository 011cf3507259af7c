//! The whole worker process (`run`) against a fake control plane: registration heartbeat,
//! credential selection, `--once`, fatal first heartbeat, drain on `worker.shutdown` and on the
//! shutdown signal, and disconnect handling on the production listener.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{config_with, fake_cp, mock_registry, FakeCp, Rpc, Seen, SIGNING_KEY, TOKEN, WORKER};
use serde_json::{json, Value};
use stacyvm_auth::{Verifier, AUD_CONTROL_PLANE};
use stacyvm_config::Config;
use stacyvm_provider::MockProvider;
use stacyvm_worker::{run, WorkerConfig, WorkerError, WorkerOverrides};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const LISTEN: &str = "  listen_addr: 127.0.0.1:0\n";

struct Running {
    cp: FakeCp,
    mock: Arc<MockProvider>,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), WorkerError>>,
    rpc_url: String,
}

async fn start(flags: WorkerOverrides) -> Running {
    let (cp_url, cp) = fake_cp().await;
    let (mock, reg) = mock_registry();
    let cfg = config_with(&cp_url, LISTEN, flags).with_providers(reg);
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(run(cfg, shutdown.clone()));
    let first = cp.wait_heartbeat(10, |_| true).await;
    let rpc_url = first.body["capacity"]["rpc_url"]
        .as_str()
        .unwrap()
        .to_string();
    Running {
        cp,
        mock,
        shutdown,
        task,
        rpc_url,
    }
}

impl Running {
    async fn stop(self) -> (FakeCp, Duration) {
        let t = Instant::now();
        self.shutdown.cancel();
        let r = tokio::time::timeout(Duration::from_secs(15), self.task)
            .await
            .expect("run returns after shutdown")
            .unwrap();
        assert!(r.is_ok(), "{r:?}");
        (self.cp, t.elapsed())
    }
}

#[tokio::test]
async fn registers_with_a_complete_heartbeat() {
    let w = start(WorkerOverrides::default()).await;
    let hb = w.cp.heartbeats()[0].clone();
    assert_eq!(hb.path, format!("/api/v1/worker/{WORKER}/heartbeat"));
    assert_eq!(hb.worker_id, WORKER);
    assert_eq!(hb.token, TOKEN);
    let b = &hb.body;
    assert_eq!(b["status"], "online");
    assert!(!b["hostname"].as_str().unwrap().is_empty());
    assert_eq!(b["providers"], json!(["mock"]));
    assert_eq!(
        b["capabilities"],
        json!([
            "remote_worker",
            "heartbeat",
            "file_stream",
            "processes",
            "watch",
            "preview",
            "user",
            "state"
        ])
    );
    let cap = &b["capacity"];
    assert!(w.rpc_url.starts_with("http://127.0.0.1:"), "{}", w.rpc_url);
    assert!(
        !w.rpc_url.ends_with(":0"),
        "real port advertised: {}",
        w.rpc_url
    );
    assert_eq!(cap["protocol_version"], 1);
    assert_eq!(cap["heartbeat_interval_ms"], 200);
    assert_eq!(cap["sandboxes"], json!([]));
    assert_eq!(cap["max_sandboxes"], 0);
    assert_eq!(cap["max_sandboxes_per_owner"], 0);
    assert_eq!(cap["preview_domain"], "localhost");

    // Heartbeats keep coming and report the sandboxes the worker holds.
    Rpc::new(&w.rpc_url).spawn("sb-00000b01").await;
    w.cp.wait_heartbeat(5, |s| {
        s.body["capacity"]["sandboxes"] == json!(["sb-00000b01"])
    })
    .await;
    let health: Value = reqwest::get(format!("{}/health", w.rpc_url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["worker_id"], WORKER);
    w.stop().await;
}

#[tokio::test]
async fn shutdown_rpc_drains() {
    let w = start(WorkerOverrides::default()).await;
    let rpc = Rpc::new(&w.rpc_url);
    let (s, _) = rpc
        .send(&Rpc::envelope("worker.shutdown", None, None))
        .await;
    assert_eq!(s, 200);
    // The drain wakes the heartbeat loop: well before the next regular beat would be late.
    w.cp.wait_heartbeat(2, |s| s.body["status"] == "draining")
        .await;
    let (s, v) = rpc
        .call_leased(
            "worker.spawn",
            json!({"sandbox_id": "sb-00000b02", "image": "alpine", "provider": "mock", "memory_mb": 64, "vcpus": 1}),
            common::lease(WORKER, "sb-00000b02", 1, 60),
        )
        .await;
    assert_eq!((s, v["code"].as_str()), (503, Some("DRAINING")));
    // Still serving and heartbeating (draining), not exiting.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!w.task.is_finished());
    let n = w.cp.heartbeats().len();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(w.cp.heartbeats().len() > n);
    assert!(w.cp.heartbeats()[n..]
        .iter()
        .all(|s| s.body["status"] == "draining"));
    w.stop().await;
}

async fn stream(url: &str, sb: &str, command: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{url}/rpc"))
        .header("X-Worker-ID", WORKER)
        .header("X-Worker-Token", TOKEN)
        .header("X-Worker-Stream", "ndjson")
        .json(&Rpc::envelope(
            "worker.exec_stream",
            Some(json!({"sandbox_id": sb, "provider": "mock", "command": command})),
            None,
        ))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn signal_drains_waits_for_in_flight_then_exits() {
    let w = start(WorkerOverrides::default()).await;
    let url = w.rpc_url.clone();
    Rpc::new(&url).spawn("sb-00000b03").await;
    let resp = stream(&url, "sb-00000b03", "echo begin; sleep 1; echo end").await;
    assert_eq!(resp.status(), 200);
    let reader = tokio::spawn(async move { resp.text().await.unwrap() });
    tokio::time::sleep(Duration::from_millis(200)).await;

    let (cp, took) = w.stop().await;
    // The in-flight stream finished normally, exit line included.
    let body = reader.await.unwrap();
    let lines: Vec<Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.last().unwrap()["result"]["exit_code"], 0, "{body}");
    assert!(body.contains("end\\n"), "{body}");
    assert!(
        took < Duration::from_secs(3),
        "waited for the stream only: {took:?}"
    );
    // The control plane heard about the drain before the exit, and nothing after.
    let last = cp.heartbeats().last().cloned().unwrap();
    assert_eq!(last.body["status"], "draining");
    // The listener is closed.
    assert!(reqwest::get(format!("{url}/health")).await.is_err());
}

#[tokio::test]
async fn shutdown_timeout_bounds_the_wait_and_kills_leftovers() {
    let w = start(WorkerOverrides::default()).await;
    let url = w.rpc_url.clone();
    let sb = "sb-00000b04";
    Rpc::new(&url).spawn(sb).await;
    let resp = stream(&url, sb, "echo $$ > pid; echo up; exec sleep 60").await;
    let mut resp = resp;
    let first = resp.chunk().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("up"));
    let pid_file = w.mock.host_root(sb).unwrap().join("workspace/pid");
    let pid: u32 = std::fs::read_to_string(pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();

    let (_, took) = w.stop().await;
    // worker.shutdown_timeout is 3s in the test config.
    assert!(took >= Duration::from_millis(2900), "{took:?}");
    assert!(took < Duration::from_secs(9), "{took:?}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z")
    {
        assert!(Instant::now() < deadline, "leftover command {pid} survived");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(resp);
}

#[tokio::test]
async fn disconnect_kills_on_the_production_listener() {
    let w = start(WorkerOverrides::default()).await;
    let sb = "sb-00000b05";
    Rpc::new(&w.rpc_url).spawn(sb).await;
    let mut resp = stream(&w.rpc_url, sb, "echo $$ > pid; echo up; exec sleep 60").await;
    let _ = resp.chunk().await.unwrap().unwrap();
    let pid_file = w.mock.host_root(sb).unwrap().join("workspace/pid");
    let pid: u32 = std::fs::read_to_string(pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    drop(resp);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if stat.is_empty() || stat.contains(") Z") {
            break;
        }
        assert!(Instant::now() < deadline, "command survived the disconnect");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    w.stop().await;
}

#[tokio::test]
async fn first_heartbeat_failure_is_fatal() {
    let (cp_url, cp) = fake_cp().await;
    *cp.heartbeat_status.lock().unwrap() = 401;
    let (_, reg) = mock_registry();
    let cfg = config_with(&cp_url, LISTEN, WorkerOverrides::default()).with_providers(reg);
    let err = tokio::time::timeout(Duration::from_secs(10), run(cfg, CancellationToken::new()))
        .await
        .expect("fails fast")
        .unwrap_err();
    let text = format!("{err}: {}", std::error::Error::source(&err).unwrap());
    assert!(matches!(err, WorkerError::FirstHeartbeat { .. }), "{text}");
    assert!(text.contains("HTTP 401"), "{text}");

    // Unreachable control plane: also fatal.
    let (_, reg) = mock_registry();
    let cfg =
        config_with("http://127.0.0.1:9", LISTEN, WorkerOverrides::default()).with_providers(reg);
    let err = run(cfg, CancellationToken::new()).await.unwrap_err();
    assert!(matches!(err, WorkerError::FirstHeartbeat { .. }));
}

#[tokio::test]
async fn later_failures_are_retried() {
    let w = start(WorkerOverrides::default()).await;
    *w.cp.heartbeat_status.lock().unwrap() = 503;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        !w.task.is_finished(),
        "a later failure must not stop the worker"
    );
    *w.cp.heartbeat_status.lock().unwrap() = 200;
    let n = w.cp.heartbeats().len();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(w.cp.heartbeats().len() > n);
    w.stop().await;
}

#[tokio::test]
async fn once_sends_one_heartbeat_and_exits() {
    let (cp_url, cp) = fake_cp().await;
    let (_, reg) = mock_registry();
    let flags = WorkerOverrides {
        once: true,
        listen: Some("127.0.0.1:7430".into()),
        ..Default::default()
    };
    let cfg = config_with(&cp_url, "", flags).with_providers(reg);
    tokio::time::timeout(Duration::from_secs(10), run(cfg, CancellationToken::new()))
        .await
        .unwrap()
        .unwrap();
    let hbs = cp.heartbeats();
    assert_eq!(hbs.len(), 1);
    assert_eq!(hbs[0].body["capacity"]["rpc_url"], "http://127.0.0.1:7430");
    assert_eq!(hbs[0].body["status"], "online");
}

async fn once_with(yaml_auth: &str, flags: WorkerOverrides) -> (Result<(), WorkerError>, FakeCp) {
    let (cp_url, cp) = fake_cp().await;
    let yaml = format!(
        "worker:\n  id: {WORKER}\n  control_plane_url: \"{cp_url}\"\nproviders:\n  default: mock\n  mock:\n    enabled: true\n  docker:\n    enabled: false\n  firecracker:\n    enabled: false\n{yaml_auth}"
    );
    let valid = Config::from_yaml_str(&yaml).unwrap().validate().unwrap();
    let cfg = WorkerConfig::from_config(
        &valid,
        WorkerOverrides {
            once: true,
            ..flags
        },
    )
    .unwrap()
    .with_providers(mock_registry().1);
    (run(cfg, CancellationToken::new()).await, cp)
}

fn heartbeat(cp: &FakeCp) -> Seen {
    cp.heartbeats().pop().expect("a heartbeat")
}

#[tokio::test]
async fn credential_selection() {
    // Token file, re-read per request.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, "from-file-1\n").unwrap();
    let flags = || WorkerOverrides {
        worker_token_file: Some(file.clone()),
        ..Default::default()
    };
    let (r, cp) = once_with("auth:\n  worker_token: static\n", flags()).await;
    r.unwrap();
    assert_eq!(heartbeat(&cp).token, "from-file-1");
    std::fs::write(&file, "from-file-2-rotated\n").unwrap();
    let (r, cp) = once_with("", flags()).await;
    r.unwrap();
    assert_eq!(heartbeat(&cp).token, "from-file-2-rotated");

    // Bootstrap admin key: a fresh token from the control plane, then the heartbeat with it.
    let (r, cp) = once_with(
        "auth:\n  worker_token: static\n",
        WorkerOverrides {
            bootstrap_admin_key: Some("admin-key".into()),
            bootstrap_token_ttl: Some("2m".into()),
            ..Default::default()
        },
    )
    .await;
    r.unwrap();
    let all = cp.all();
    assert_eq!(all[0].path, "/api/v1/admin/worker-tokens");
    assert_eq!(
        all[0].body,
        json!({"worker_id": WORKER, "ttl": "2m0s", "audience": "worker:control-plane"})
    );
    let v = Verifier::new(vec![SIGNING_KEY.into()], vec![]);
    let claims = v
        .verify(
            &heartbeat(&cp).token,
            AUD_CONTROL_PLANE,
            chrono::Utc::now().timestamp(),
        )
        .unwrap();
    assert_eq!(claims.worker_id, WORKER);
    // A refused bootstrap key makes the (first) heartbeat fail.
    let (r, _) = once_with(
        "",
        WorkerOverrides {
            bootstrap_admin_key: Some("wrong".into()),
            ..Default::default()
        },
    )
    .await;
    assert!(format!("{:?}", r.unwrap_err()).contains("Bootstrap"));

    // Self-minted signed token when only a signing key is configured.
    let (r, cp) = once_with(
        &format!("auth:\n  worker_signing_key: \"{SIGNING_KEY}\"\n"),
        WorkerOverrides::default(),
    )
    .await;
    r.unwrap();
    let claims = v
        .verify(
            &heartbeat(&cp).token,
            AUD_CONTROL_PLANE,
            chrono::Utc::now().timestamp(),
        )
        .unwrap();
    assert_eq!(claims.worker_id, WORKER);
    assert!(claims.exp - claims.iat <= 300);

    // Nothing configured: the first heartbeat fails with a clear message, nothing is sent.
    let (r, cp) = once_with("", WorkerOverrides::default()).await;
    let err = r.unwrap_err();
    let chain = format!("{err}: {}", std::error::Error::source(&err).unwrap());
    assert!(chain.contains("worker token is required"), "{chain}");
    assert!(cp.all().is_empty());
}
