//! Every worker RPC method through the real router on a loopback socket, mock provider.
#![allow(clippy::unwrap_used)]

mod common;

use common::{fake_cp, lease, start_worker, Rpc, WORKER};
use serde_json::{json, Value};
use stacyvm_protocol::base64;

fn target(sb: &str) -> Value {
    json!({"sandbox_id": sb, "provider": "mock"})
}

fn with(sb: &str, extra: Value) -> Value {
    let mut v = target(sb);
    for (k, x) in extra.as_object().unwrap() {
        v[k] = x.clone();
    }
    v
}

#[tokio::test]
async fn lifecycle_status_exec_logs_destroy() {
    let (cp, _) = fake_cp().await;
    let w = start_worker(&cp).await;
    let rpc = Rpc::new(&w.url);

    let v = rpc.spawn("sb-00000001").await;
    assert_eq!(v["id"], "req-worker.spawn");
    assert_eq!(v["worker_id"], WORKER);
    let r = &v["result"];
    assert_eq!(r["sandbox_id"], "sb-00000001");
    assert_eq!(r["runtime_id"], "sb-00000001");
    assert_eq!(r["state"], "running");
    assert_eq!(r["provider"], "mock");
    assert_eq!(r["worker_id"], WORKER);
    assert!(w.mock.host_root("sb-00000001").is_some());
    assert_eq!(w.state.held_sandboxes(), vec!["sb-00000001"]);

    let (s, v) = rpc.call("worker.status", target("sb-00000001")).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["result"]["state"], "running");
    assert_eq!(v["result"]["worker_id"], WORKER);

    let (s, v) = rpc
        .call(
            "worker.exec",
            with(
                "sb-00000001",
                json!({"command": "echo out; echo err >&2; exit 3"}),
            ),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v["result"],
        json!({"sandbox_id": "sb-00000001", "exit_code": 3, "stdout": "out\n", "stderr": "err\n"})
    );

    // argv mode, env, workdir.
    rpc.call(
        "worker.file_write",
        with(
            "sb-00000001",
            json!({"path": "/workspace/d/x", "content": base64::encode(b"")}),
        ),
    )
    .await;
    let (s, v) = rpc
        .call(
            "worker.exec",
            with(
                "sb-00000001",
                json!({"command": "sh", "args": ["-c", "echo $FOO; basename $(pwd)"], "mode": "argv", "env": {"FOO": "bar"}, "workdir": "/workspace/d"}),
            ),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["result"]["stdout"], "bar\nd\n");

    let (s, v) = rpc
        .call("worker.logs", with("sb-00000001", json!({"lines": 2})))
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v["result"]["lines"],
        json!([
            "[INFO] workspace initialized at /workspace",
            "[INFO] sandbox ready"
        ])
    );

    let (s, v) = rpc
        .call_leased(
            "worker.destroy",
            target("sb-00000001"),
            lease(WORKER, "sb-00000001", 1, 300),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert!(v.get("result").is_none(), "void method has no result: {v}");
    assert!(w.mock.host_root("sb-00000001").is_none());
    assert!(w.state.held_sandboxes().is_empty());

    // Destroying again (runtime gone) still succeeds.
    let (s, v) = rpc
        .call_leased(
            "worker.destroy",
            target("sb-00000001"),
            lease(WORKER, "sb-00000001", 1, 300),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    // Never-existing runtime too.
    let (s, _) = rpc
        .call_leased(
            "worker.destroy",
            target("sb-0000dead"),
            lease(WORKER, "sb-0000dead", 1, 300),
        )
        .await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn runtime_id_takes_precedence_over_sandbox_id() {
    let (cp, _) = fake_cp().await;
    let w = start_worker(&cp).await;
    let rpc = Rpc::new(&w.url);
    rpc.spawn("sb-0000000a").await;
    // A CP id that differs from the runtime id resolves through runtime_id.
    let (s, v) = rpc
        .call(
            "worker.status",
            json!({"sandbox_id": "sb-cp", "provider": "mock", "runtime_id": "sb-0000000a"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["result"]["sandbox_id"], "sb-cp");
    assert_eq!(v["result"]["state"], "running");
}

#[tokio::test]
async fn file_methods() {
    let (cp, _) = fake_cp().await;
    let w = start_worker(&cp).await;
    let rpc = Rpc::new(&w.url);
    let sb = "sb-0000f11e";
    rpc.spawn(sb).await;
    let bytes: Vec<u8> = (0..=255u8).collect();

    let (s, v) = rpc
        .call(
            "worker.file_write",
            with(
                sb,
                json!({"path": "/workspace/a.bin", "content": base64::encode(&bytes)}),
            ),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = rpc
        .call(
            "worker.file_read",
            with(sb, json!({"path": "/workspace/a.bin"})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        base64::decode(v["result"]["content"].as_str().unwrap()).unwrap(),
        bytes
    );

    let (s, v) = rpc
        .call(
            "worker.file_stat",
            with(sb, json!({"path": "/workspace/a.bin"})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["result"]["file"]["size"], 256);
    assert_eq!(v["result"]["file"]["is_dir"], false);

    let (s, v) = rpc
        .call("worker.file_list", with(sb, json!({"path": "/workspace"})))
        .await;
    assert_eq!(s, 200, "{v}");
    let files = v["result"]["files"].as_array().unwrap();
    assert_eq!(files.len(), 1);
    assert_eq!(files[0]["path"], "workspace/a.bin");

    let (s, v) = rpc
        .call(
            "worker.file_move",
            with(
                sb,
                json!({"old_path": "/workspace/a.bin", "new_path": "/workspace/sub/b.log"}),
            ),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = rpc
        .call(
            "worker.file_glob",
            with(sb, json!({"pattern": "/workspace/sub/*.log"})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["result"]["matches"], json!(["/workspace/sub/b.log"]));

    let (s, v) = rpc
        .call(
            "worker.file_chmod",
            with(sb, json!({"path": "/workspace/sub/b.log", "mode": "0700"})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let (_, v) = rpc
        .call(
            "worker.file_stat",
            with(sb, json!({"path": "/workspace/sub/b.log"})),
        )
        .await;
    assert_eq!(v["result"]["file"]["mode"], "700");

    let (s, v) = rpc
        .call(
            "worker.file_delete",
            with(sb, json!({"path": "/workspace/sub", "recursive": true})),
        )
        .await;
    assert_eq!(s, 200, "{v}");

    // Missing file → 404 FILE_NOT_FOUND without host paths.
    let (s, v) = rpc
        .call(
            "worker.file_read",
            with(sb, json!({"path": "/workspace/sub/b.log"})),
        )
        .await;
    assert_eq!(s, 404, "{v}");
    assert_eq!(v["code"], "FILE_NOT_FOUND");
    assert!(!v["error"].as_str().unwrap().contains("/tmp"), "{v}");

    // Bad input → 400.
    let (s, v) = rpc
        .call(
            "worker.file_write",
            with(sb, json!({"path": "/x", "content": "***"})),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(v["code"], "BAD_REQUEST");
    let (s, _) = rpc.call("worker.file_read", target(sb)).await;
    assert_eq!(s, 400);
}

/// Larger than the original's 1 MiB RPC body cap, in both directions.
#[tokio::test]
async fn large_file_round_trip() {
    let (cp, _) = fake_cp().await;
    let w = start_worker(&cp).await;
    let rpc = Rpc::new(&w.url);
    let sb = "sb-0000b16f";
    rpc.spawn(sb).await;
    let data: Vec<u8> = (0..5 * 1024 * 1024).map(|i: u32| (i % 251) as u8).collect();
    let (s, v) = rpc
        .call(
            "worker.file_write",
            with(sb, json!({"path": "big", "content": base64::encode(&data)})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = rpc
        .call("worker.file_read", with(sb, json!({"path": "big"})))
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        base64::decode(v["result"]["content"].as_str().unwrap()).unwrap(),
        data
    );
}

#[tokio::test]
async fn not_found_and_bad_input_statuses() {
    let (cp, _) = fake_cp().await;
    let w = start_worker(&cp).await;
    let rpc = Rpc::new(&w.url);

    let (s, v) = rpc.call("worker.status", target("sb-missing")).await;
    assert_eq!(
        (s, v["code"].as_str()),
        (404, Some("SANDBOX_NOT_FOUND")),
        "{v}"
    );
    assert_eq!(v["error"], "sandbox not found: sb-missing");

    let (s, v) = rpc
        .call(
            "worker.status",
            json!({"sandbox_id": "sb-1", "provider": "nope"}),
        )
        .await;
    assert_eq!(
        (s, v["code"].as_str()),
        (404, Some("PROVIDER_NOT_FOUND")),
        "{v}"
    );

    let (s, v) = rpc
        .call(
            "worker.exec",
            with("sb-missing", json!({"command": "true"})),
        )
        .await;
    assert_eq!(s, 404, "{v}");

    rpc.spawn("sb-0000bad1").await;
    for bad in [
        json!({"command": "true", "timeout": "soon"}),
        json!({"command": "true", "timeout": "-1s"}),
        json!({"command": "true", "mode": "weird"}),
        json!({"command": "  "}),
    ] {
        let (s, v) = rpc
            .call("worker.exec", with("sb-0000bad1", bad.clone()))
            .await;
        assert_eq!(s, 400, "{bad} → {v}");
        assert_eq!(v["code"], "BAD_REQUEST");
    }
    // Params of the wrong shape.
    let (s, v) = rpc.call("worker.exec", json!({"sandbox_id": 5})).await;
    assert_eq!(s, 400, "{v}");

    // Injected provider failure → 500 INTERNAL.
    w.mock.fail_next("status", 1);
    let (s, v) = rpc.call("worker.status", target("sb-0000bad1")).await;
    assert_eq!((s, v["code"].as_str()), (500, Some("INTERNAL")), "{v}");
}

#[tokio::test]
async fn exec_timeout_and_buffered_stream() {
    let (cp, _) = fake_cp().await;
    let w = start_worker(&cp).await;
    let rpc = Rpc::new(&w.url);
    let sb = "sb-00000717";
    rpc.spawn(sb).await;

    let (s, v) = rpc
        .call(
            "worker.exec",
            with(sb, json!({"command": "sleep 5", "timeout": "200ms"})),
        )
        .await;
    assert_eq!(s, 504, "{v}");
    assert_eq!(v["code"], "TIMEOUT");
    assert_eq!(v["error"], format!("exec timeout: {sb}"));

    // exec_stream without the NDJSON header: buffered chunks ending in the exit chunk.
    let (s, v) = rpc
        .call(
            "worker.exec_stream",
            with(sb, json!({"command": "printf 'line 1\\n'; exit 7"})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let chunks = v["result"]["chunks"].as_array().unwrap();
    assert_eq!(v["result"]["sandbox_id"], sb);
    assert_eq!(chunks[0], json!({"stream": "stdout", "data": "line 1\n"}));
    assert_eq!(
        chunks.last().unwrap(),
        &json!({"stream": "exit", "data": "", "exit_code": 7})
    );
}

#[tokio::test]
async fn shutdown_drains_and_heartbeat_method_is_not_implemented() {
    let (cp, _) = fake_cp().await;
    let w = start_worker(&cp).await;
    let rpc = Rpc::new(&w.url);
    rpc.spawn("sb-00000d01").await;

    let (s, v) = rpc
        .send(&Rpc::envelope("worker.shutdown", None, None))
        .await;
    assert_eq!(s, 200, "{v}");
    assert!(w.state.is_draining());

    let (s, v) = rpc
        .call_leased(
            "worker.spawn",
            json!({"sandbox_id": "sb-00000d02", "image": "alpine", "provider": "mock", "memory_mb": 64, "vcpus": 1}),
            lease(WORKER, "sb-00000d02", 1, 300),
        )
        .await;
    assert_eq!((s, v["code"].as_str()), (503, Some("DRAINING")), "{v}");
    assert_eq!(v["error"], "worker is draining");
    assert!(w.mock.host_root("sb-00000d02").is_none());

    // Existing sandboxes keep working while draining.
    let (s, _) = rpc
        .call(
            "worker.exec",
            with("sb-00000d01", json!({"command": "true"})),
        )
        .await;
    assert_eq!(s, 200);

    let (s, v) = rpc.call("worker.heartbeat", json!({"hostname": "x"})).await;
    assert_eq!(s, 501, "{v}");
}

#[tokio::test]
async fn renew_lease_goes_through_the_control_plane() {
    let (cp_url, cp) = fake_cp().await;
    let w = start_worker(&cp_url).await;
    let rpc = Rpc::new(&w.url);
    *cp.renew_generation.lock().unwrap() = 7;

    let (s, v) = rpc
        .call_leased(
            "worker.renew_lease",
            json!({"resource_id": "sb-0000aaaa", "ttl": "10m"}),
            lease(WORKER, "sb-0000aaaa", 6, 60),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["result"]["lease"]["generation"], 7);
    assert_eq!(v["result"]["lease"]["resource_id"], "sb-0000aaaa");
    let seen = cp.all();
    let call = seen.iter().find(|s| s.path.contains("/renew")).unwrap();
    assert_eq!(
        call.path,
        format!("/api/v1/worker/{WORKER}/leases/sb-0000aaaa/renew")
    );
    assert_eq!(call.worker_id, WORKER);
    assert_eq!(call.token, common::TOKEN);
    // The ttl is decoded as a duration and forwarded in Go syntax.
    assert_eq!(call.body["ttl"], "10m0s");

    // The renewed generation now fences the old lease out.
    let (s, v) = rpc
        .call_leased(
            "worker.destroy",
            target("sb-0000aaaa"),
            lease(WORKER, "sb-0000aaaa", 6, 60),
        )
        .await;
    assert_eq!(
        (s, v["code"].as_str()),
        (403, Some("LEASE_REJECTED")),
        "{v}"
    );

    // Control plane refusal → 409; lease for another resource → 403; bad ttl → 400.
    *cp.renew_generation.lock().unwrap() = 0;
    let (s, _) = rpc
        .call_leased(
            "worker.renew_lease",
            json!({"resource_id": "sb-0000aaaa", "ttl": "10m"}),
            lease(WORKER, "sb-0000aaaa", 7, 60),
        )
        .await;
    assert_eq!(s, 409);
    let (s, _) = rpc
        .call_leased(
            "worker.renew_lease",
            json!({"resource_id": "sb-0000aaaa", "ttl": "10m"}),
            lease(WORKER, "sb-0000bbbb", 1, 60),
        )
        .await;
    assert_eq!(s, 403);
    let (s, _) = rpc
        .call_leased(
            "worker.renew_lease",
            json!({"resource_id": "sb-0000aaaa", "ttl": "0s"}),
            lease(WORKER, "sb-0000aaaa", 7, 60),
        )
        .await;
    assert_eq!(s, 400);
}

#[tokio::test]
async fn health_is_open() {
    let (cp, _) = fake_cp().await;
    let w = start_worker(&cp).await;
    for m in [reqwest::Method::GET, reqwest::Method::POST] {
        let r = reqwest::Client::new()
            .request(m, format!("{}/health", w.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v, json!({"status": "ok", "worker_id": WORKER}));
    }
}

/// `server.max_exec_output` caps collected output on the worker too, on the encoded strings:
/// 1 MiB of NUL bytes would be 6 MiB of JSON.
#[tokio::test]
async fn collected_exec_output_is_capped() {
    const CAP: usize = 64 * 1024;
    let (cp, _) = fake_cp().await;
    let cfg = common::config_full(
        &cp,
        "",
        &format!("server:\n  max_exec_output: {CAP}\n"),
        Default::default(),
    );
    let w = common::start_worker_with(cfg).await;
    let rpc = Rpc::new(&w.url);
    rpc.spawn("sb-0000ca91").await;
    let cmd = json!({"command": "head -c 1048576 /dev/zero; echo err >&2; exit 2"});

    let (s, v) = rpc
        .call("worker.exec", with("sb-0000ca91", cmd.clone()))
        .await;
    assert_eq!(s, 200, "{v}");
    let r = &v["result"];
    assert_eq!(
        (r["truncated"].clone(), r["exit_code"].clone()),
        (json!(true), json!(2))
    );
    assert_eq!(r["stderr"], "err\n");
    let out = r["stdout"].as_str().unwrap();
    let encoded = serde_json::to_string(out).unwrap().len();
    assert!(encoded <= CAP && !out.is_empty(), "{encoded} encoded bytes");

    let (s, v) = rpc
        .call("worker.exec_stream", with("sb-0000ca91", cmd))
        .await;
    assert_eq!(s, 200, "{v}");
    let r = &v["result"];
    assert_eq!(r["truncated"], true);
    let chunks = r["chunks"].as_array().unwrap();
    let encoded: usize = chunks
        .iter()
        .map(|c| serde_json::to_string(&c["data"]).unwrap().len())
        .sum();
    assert!(encoded <= CAP + 4 * chunks.len(), "{encoded} encoded bytes");
    assert_eq!(chunks.last().unwrap()["exit_code"], 2);

    let (_, v) = rpc
        .call(
            "worker.exec",
            with("sb-0000ca91", json!({"command": "echo ok"})),
        )
        .await;
    assert_eq!(
        v["result"].get("truncated"),
        None,
        "absent when nothing was cut"
    );
}
