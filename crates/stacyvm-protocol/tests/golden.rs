//! Golden envelopes: the exact bytes of every method's request as the control plane sends it
//! (captured from the client before the typed contract replaced it), each decoded back to the
//! same typed request. Requests the control plane never sends (`worker.exec`,
//! `worker.renew_lease`, `worker.heartbeat`) are pinned in the original worker's shape.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use stacyvm_protocol::*;
use stacyvm_types::{ExecMode, GoDuration};

fn target(runtime_id: &str) -> Target {
    Target {
        sandbox_id: "sb-1".into(),
        provider: "mock".into(),
        runtime_id: runtime_id.into(),
    }
}

fn lease() -> LeaseToken {
    LeaseToken {
        resource_id: "sb-1".into(),
        holder_id: "w".into(),
        generation: 1,
        expires_at: "2026-05-08T10:30:00Z".into(),
    }
}

const LEASE: &str = r#""lease":{"resource_id":"sb-1","holder_id":"w","generation":1,"expires_at":"2026-05-08T10:30:00Z"}"#;

/// `command` in shell mode, nothing else set.
fn exec(command: &str) -> ExecParams {
    ExecParams {
        target: target(""),
        command: command.into(),
        args: Vec::new(),
        mode: ExecMode::Shell,
        env: BTreeMap::new(),
        workdir: String::new(),
        timeout: None,
        user: String::new(),
    }
}

fn path(p: &str) -> FilePathParams {
    FilePathParams {
        target: target(""),
        path: p.into(),
    }
}

/// Every request variant with its exact JSON.
fn goldens() -> Vec<(RpcRequest, String)> {
    let req = |call, lease| RpcRequest::new(call, "w", "sb-1", lease);
    let full = ExecParams {
        target: target(""),
        command: "echo".into(),
        args: vec!["a b".into()],
        mode: ExecMode::Argv,
        env: BTreeMap::from([("A".to_string(), "1".to_string())]),
        workdir: "/w".into(),
        timeout: Some(GoDuration(1_500_000_000)),
        user: "u".into(),
    };
    let exec_params = r#""params":{"args":["a b"],"command":"echo","env":{"A":"1"},"mode":"argv","provider":"mock","sandbox_id":"sb-1","timeout":"1.5s","user":"u","workdir":"/w"}"#;
    vec![
        (
            req(
                RpcCall::Spawn(SpawnParams {
                    sandbox_id: "sb-1".into(),
                    image: "alpine".into(),
                    provider: "mock".into(),
                    memory_mb: 64,
                    vcpus: 1,
                    owner_id: "o".into(),
                    ttl: GoDuration::from_secs(300),
                    metadata: BTreeMap::from([("k".to_string(), "v".to_string())]),
                    volumes: Vec::new(),
                    snapshot: String::new(),
                }),
                Some(lease()),
            ),
            format!(
                r#"{{"id":"spawn-sb-1","method":"worker.spawn","worker_id":"w",{LEASE},"params":{{"image":"alpine","memory_mb":64,"metadata":{{"k":"v"}},"owner_id":"o","provider":"mock","sandbox_id":"sb-1","ttl":"5m0s","vcpus":1}}}}"#
            ),
        ),
        (
            req(RpcCall::Destroy(target("")), Some(lease())),
            format!(
                r#"{{"id":"destroy-sb-1","method":"worker.destroy","worker_id":"w",{LEASE},"params":{{"provider":"mock","sandbox_id":"sb-1"}}}}"#
            ),
        ),
        (
            req(RpcCall::Status(target("rt-9")), None),
            r#"{"id":"status-sb-1","method":"worker.status","worker_id":"w","params":{"provider":"mock","runtime_id":"rt-9","sandbox_id":"sb-1"}}"#.into(),
        ),
        (
            req(RpcCall::Exec(full.clone()), None),
            format!(r#"{{"id":"exec-sb-1","method":"worker.exec","worker_id":"w",{exec_params}}}"#),
        ),
        (
            req(RpcCall::ExecStream(full), None),
            format!(
                r#"{{"id":"exec-stream-sb-1","method":"worker.exec_stream","worker_id":"w",{exec_params}}}"#
            ),
        ),
        (
            req(
                RpcCall::ExecStream(exec("true")),
                None,
            ),
            r#"{"id":"exec-stream-sb-1","method":"worker.exec_stream","worker_id":"w","params":{"command":"true","mode":"shell","provider":"mock","sandbox_id":"sb-1"}}"#.into(),
        ),
        (
            req(
                RpcCall::FileWrite(FileWriteParams {
                    target: target(""),
                    path: "/workspace/a".into(),
                    content: b"hi".to_vec(),
                    mode: String::new(),
                }),
                None,
            ),
            r#"{"id":"file-write-sb-1","method":"worker.file_write","worker_id":"w","params":{"content":"aGk=","mode":"","path":"/workspace/a","provider":"mock","sandbox_id":"sb-1"}}"#.into(),
        ),
        (
            req(RpcCall::FileRead(path("/workspace/a")), None),
            r#"{"id":"file-read-sb-1","method":"worker.file_read","worker_id":"w","params":{"path":"/workspace/a","provider":"mock","sandbox_id":"sb-1"}}"#.into(),
        ),
        (
            req(RpcCall::FileList(path("/workspace")), None),
            r#"{"id":"file-list-sb-1","method":"worker.file_list","worker_id":"w","params":{"path":"/workspace","provider":"mock","sandbox_id":"sb-1"}}"#.into(),
        ),
        (
            req(
                RpcCall::FileDelete(FileDeleteParams {
                    target: target(""),
                    path: "/workspace/a".into(),
                    recursive: true,
                }),
                None,
            ),
            r#"{"id":"file-delete-sb-1","method":"worker.file_delete","worker_id":"w","params":{"path":"/workspace/a","provider":"mock","recursive":true,"sandbox_id":"sb-1"}}"#.into(),
        ),
        (
            req(
                RpcCall::FileMove(FileMoveParams {
                    target: target(""),
                    old_path: "/a".into(),
                    new_path: "/b".into(),
                }),
                None,
            ),
            r#"{"id":"file-move-sb-1","method":"worker.file_move","worker_id":"w","params":{"new_path":"/b","old_path":"/a","provider":"mock","sandbox_id":"sb-1"}}"#.into(),
        ),
        (
            req(
                RpcCall::FileChmod(FileChmodParams {
                    target: target(""),
                    path: "/a".into(),
                    mode: "0755".into(),
                }),
                None,
            ),
            r#"{"id":"file-chmod-sb-1","method":"worker.file_chmod","worker_id":"w","params":{"mode":"0755","path":"/a","provider":"mock","sandbox_id":"sb-1"}}"#.into(),
        ),
        (
            req(RpcCall::FileStat(path("/workspace/a")), None),
            r#"{"id":"file-stat-sb-1","method":"worker.file_stat","worker_id":"w","params":{"path":"/workspace/a","provider":"mock","sandbox_id":"sb-1"}}"#.into(),
        ),
        (
            req(
                RpcCall::FileGlob(FileGlobParams {
                    target: target(""),
                    pattern: "/workspace/*".into(),
                }),
                None,
            ),
            r#"{"id":"file-glob-sb-1","method":"worker.file_glob","worker_id":"w","params":{"pattern":"/workspace/*","provider":"mock","sandbox_id":"sb-1"}}"#.into(),
        ),
        (
            req(
                RpcCall::Logs(LogsParams {
                    target: target(""),
                    lines: 100,
                }),
                None,
            ),
            r#"{"id":"logs-sb-1","method":"worker.logs","worker_id":"w","params":{"lines":100,"provider":"mock","sandbox_id":"sb-1"}}"#.into(),
        ),
        (
            req(
                RpcCall::RenewLease(RenewLeaseParams {
                    resource_id: "sb-1".into(),
                    ttl: GoDuration::from_secs(600),
                }),
                Some(lease()),
            ),
            format!(
                r#"{{"id":"renew-lease-sb-1","method":"worker.renew_lease","worker_id":"w",{LEASE},"params":{{"resource_id":"sb-1","ttl":"10m0s"}}}}"#
            ),
        ),
        (
            RpcRequest::new(RpcCall::Shutdown, "w", "w", None),
            r#"{"id":"shutdown-w","method":"worker.shutdown","worker_id":"w"}"#.into(),
        ),
        (
            req(
                RpcCall::Heartbeat(serde_json::json!({"hostname": "h", "status": "online"})),
                None,
            ),
            r#"{"id":"heartbeat-sb-1","method":"worker.heartbeat","worker_id":"w","params":{"hostname":"h","status":"online"}}"#.into(),
        ),
        (
            req(RpcCall::FileReadStream(path("/workspace/a")), None),
            r#"{"id":"file-read-stream-sb-1","method":"worker.file_read_stream","worker_id":"w","params":{"path":"/workspace/a","provider":"mock","sandbox_id":"sb-1"}}"#.into(),
        ),
        (
            req(
                RpcCall::FileWriteStream(FileUploadParams {
                    target: target(""),
                    path: "/workspace/a".into(),
                    mode: "0644".into(),
                }),
                None,
            ),
            r#"{"id":"file-write-stream-sb-1","method":"worker.file_write_stream","worker_id":"w","params":{"mode":"0644","path":"/workspace/a","provider":"mock","sandbox_id":"sb-1"}}"#.into(),
        ),
        (
            req(
                RpcCall::ProcessStart(ProcessStartParams {
                    exec: exec("npm run dev"),
                    tag: "web".into(),
                    stdin: true,
                    pty: Some(stacyvm_types::PtySize { cols: 80, rows: 24 }),
                    output_buffer: Some(1 << 20),
                    retain_exited_ms: Some(600_000),
                    follow: false,
                }),
                None,
            ),
            r#"{"id":"process-start-sb-1","method":"worker.process_start","worker_id":"w","params":{"command":"npm run dev","mode":"shell","output_buffer":1048576,"provider":"mock","pty":{"cols":80,"rows":24},"retain_exited_ms":600000,"sandbox_id":"sb-1","stdin":true,"tag":"web"}}"#.into(),
        ),
        (
            req(RpcCall::ProcessList(target("")), None),
            r#"{"id":"process-list-sb-1","method":"worker.process_list","worker_id":"w","params":{"provider":"mock","sandbox_id":"sb-1"}}"#.into(),
        ),
        (
            req(
                RpcCall::ProcessGet(ProcessParams {
                    target: target(""),
                    pid: 7,
                }),
                None,
            ),
            r#"{"id":"process-get-sb-1","method":"worker.process_get","worker_id":"w","params":{"pid":7,"provider":"mock","sandbox_id":"sb-1"}}"#.into(),
        ),
        (
            req(
                RpcCall::ProcessOutput(ProcessOutputParams {
                    target: target(""),
                    pid: 7,
                    since: 12,
                    follow: true,
                }),
                None,
            ),
            r#"{"id":"process-output-sb-1","method":"worker.process_output","worker_id":"w","params":{"follow":true,"pid":7,"provider":"mock","sandbox_id":"sb-1","since":12}}"#.into(),
        ),
        (
            req(
                RpcCall::ProcessStdin(ProcessStdinParams {
                    target: target(""),
                    pid: 7,
                    data: b"hi".to_vec(),
                    close: true,
                }),
                None,
            ),
            r#"{"id":"process-stdin-sb-1","method":"worker.process_stdin","worker_id":"w","params":{"close":true,"data":"aGk=","pid":7,"provider":"mock","sandbox_id":"sb-1"}}"#.into(),
        ),
        (
            req(
                RpcCall::ProcessSignal(ProcessSignalParams {
                    target: target(""),
                    pid: 7,
                    signal: stacyvm_types::Signal::Term,
                }),
                None,
            ),
            r#"{"id":"process-signal-sb-1","method":"worker.process_signal","worker_id":"w","params":{"pid":7,"provider":"mock","sandbox_id":"sb-1","signal":"TERM"}}"#.into(),
        ),
        (
            req(
                RpcCall::ProcessResize(ProcessResizeParams {
                    target: target(""),
                    pid: 7,
                    cols: 100,
                    rows: 30,
                }),
                None,
            ),
            r#"{"id":"process-resize-sb-1","method":"worker.process_resize","worker_id":"w","params":{"cols":100,"pid":7,"provider":"mock","rows":30,"sandbox_id":"sb-1"}}"#.into(),
        ),
        (
            req(RpcCall::Pause(target("rt-1")), None),
            r#"{"id":"pause-sb-1","method":"worker.pause","worker_id":"w","params":{"provider":"mock","runtime_id":"rt-1","sandbox_id":"sb-1"}}"#.into(),
        ),
        (
            req(RpcCall::Resume(target("")), None),
            r#"{"id":"resume-sb-1","method":"worker.resume","worker_id":"w","params":{"provider":"mock","sandbox_id":"sb-1"}}"#.into(),
        ),
        (
            req(
                RpcCall::WatchDir(WatchDirParams {
                    target: target(""),
                    path: "/workspace".into(),
                    recursive: true,
                }),
                None,
            ),
            r#"{"id":"watch-dir-sb-1","method":"worker.watch_dir","worker_id":"w","params":{"path":"/workspace","provider":"mock","recursive":true,"sandbox_id":"sb-1"}}"#.into(),
        ),
    ]
    .into_iter()
    .chain(state_goldens())
    .collect()
}

/// Volumes and snapshots (capability `state`); the subject is the volume or snapshot.
fn state_goldens() -> Vec<(RpcRequest, String)> {
    let vol = |name: &str, size_mb| VolumeParams {
        provider: "docker".into(),
        name: name.into(),
        size_mb,
    };
    let sid = "snap-1";
    let spawn = SpawnParams {
        sandbox_id: "sb-1".into(),
        image: "alpine".into(),
        provider: "docker".into(),
        memory_mb: 64,
        vcpus: 1,
        owner_id: String::new(),
        ttl: GoDuration::from_secs(300),
        metadata: BTreeMap::new(),
        volumes: vec![VolumeMount {
            name: "data".into(),
            mount_path: "/data".into(),
            read_only: true,
        }],
        snapshot: sid.into(),
    };
    vec![
        (
            RpcRequest::new(RpcCall::Spawn(spawn), "w", "sb-1", Some(lease())),
            format!(
                r#"{{"id":"spawn-sb-1","method":"worker.spawn","worker_id":"w",{LEASE},"params":{{"image":"alpine","memory_mb":64,"provider":"docker","sandbox_id":"sb-1","snapshot":"snap-1","ttl":"5m0s","vcpus":1,"volumes":[{{"mount_path":"/data","name":"data","read_only":true}}]}}}}"#
            ),
        ),
        (
            RpcRequest::new(RpcCall::VolumeCreate(vol("data", 512)), "w", "data", None),
            r#"{"id":"volume-create-data","method":"worker.volume_create","worker_id":"w","params":{"name":"data","provider":"docker","size_mb":512}}"#.into(),
        ),
        (
            RpcRequest::new(RpcCall::VolumeDelete(vol("data", 0)), "w", "data", None),
            r#"{"id":"volume-delete-data","method":"worker.volume_delete","worker_id":"w","params":{"name":"data","provider":"docker"}}"#.into(),
        ),
        (
            RpcRequest::new(
                RpcCall::VolumeList(ProviderParams {
                    provider: "docker".into(),
                }),
                "w",
                "w",
                None,
            ),
            r#"{"id":"volume-list-w","method":"worker.volume_list","worker_id":"w","params":{"provider":"docker"}}"#.into(),
        ),
        (
            RpcRequest::new(
                RpcCall::Snapshot(SnapshotParams {
                    target: target(""),
                    snapshot_id: sid.into(),
                }),
                "w",
                "sb-1",
                None,
            ),
            r#"{"id":"snapshot-sb-1","method":"worker.snapshot","worker_id":"w","params":{"provider":"mock","sandbox_id":"sb-1","snapshot_id":"snap-1"}}"#.into(),
        ),
        (
            RpcRequest::new(
                RpcCall::SnapshotDelete(SnapshotRefParams {
                    provider: "mock".into(),
                    snapshot_id: sid.into(),
                }),
                "w",
                sid,
                None,
            ),
            r#"{"id":"snapshot-delete-snap-1","method":"worker.snapshot_delete","worker_id":"w","params":{"provider":"mock","snapshot_id":"snap-1"}}"#.into(),
        ),
        (
            RpcRequest::new(
                RpcCall::SnapshotSweep(SnapshotSweepParams {
                    provider: "mock".into(),
                    known: vec![sid.into()],
                    grace_ms: 900_000,
                }),
                "w",
                "w",
                None,
            ),
            r#"{"id":"snapshot-sweep-w","method":"worker.snapshot_sweep","worker_id":"w","params":{"grace_ms":900000,"known":["snap-1"],"provider":"mock"}}"#.into(),
        ),
    ]
}

#[test]
fn every_method_has_a_golden() {
    let mut seen: Vec<&str> = goldens().iter().map(|(r, _)| r.call.method()).collect();
    seen.sort_unstable();
    seen.dedup();
    let mut all = method::ALL.to_vec();
    all.sort_unstable();
    assert_eq!(seen, all);
}

#[test]
fn requests_encode_to_their_golden_bytes() {
    for (req, want) in goldens() {
        assert_eq!(serde_json::to_string(&req).unwrap(), want, "{req:?}");
    }
}

#[test]
fn golden_bytes_decode_to_the_same_request() {
    for (req, golden) in goldens() {
        let env: RpcEnvelope = serde_json::from_str(&golden).unwrap();
        assert_eq!(env.method, req.call.method(), "{golden}");
        assert_eq!(env.decode().as_ref(), Ok(&req), "{golden}");
        let back: RpcRequest = serde_json::from_str(&golden).unwrap();
        assert_eq!(back, req);
    }
}

/// The original control plane omits empty keys (`omitempty`) and sends `mode` only when set;
/// those shapes decode to the same calls as ours.
#[test]
fn original_shapes_decode() {
    let cases = [
        (
            r#"{"id":"exec-sb-1","method":"worker.exec","worker_id":"w","params":{"sandbox_id":"sb-1","provider":"mock","command":"ls","extra":1}}"#,
            RpcCall::Exec(exec("ls")),
        ),
        (
            r#"{"id":"file-write-sb-1","method":"worker.file_write","worker_id":"w","params":{"sandbox_id":"sb-1","provider":"mock","path":"/a"}}"#,
            RpcCall::FileWrite(FileWriteParams {
                target: target(""),
                path: "/a".into(),
                content: Vec::new(),
                mode: String::new(),
            }),
        ),
        (
            r#"{"id":"logs-sb-1","method":"worker.logs","worker_id":"w","params":{"sandbox_id":"sb-1","provider":"mock"}}"#,
            RpcCall::Logs(LogsParams {
                target: target(""),
                lines: 0,
            }),
        ),
        (
            r#"{"id":"exec-sb-1","method":"worker.exec","worker_id":"w","params":{"sandbox_id":"sb-1","provider":"mock","command":"ls","mode":"","timeout":""}}"#,
            RpcCall::Exec(exec("ls")),
        ),
    ];
    for (json, call) in cases {
        let r: RpcRequest = serde_json::from_str(json).unwrap();
        assert_eq!(r.call, call, "{json}");
    }
    let spawn = r#"{"id":"spawn-sb-1","method":"worker.spawn","worker_id":"w","lease":{"resource_id":"sb-1","holder_id":"w","generation":1,"expires_at":"x"},"params":{"sandbox_id":"sb-1","image":"alpine","provider":"mock","memory_mb":64,"vcpus":1,"ttl":""}}"#;
    let r: RpcRequest = serde_json::from_str(spawn).unwrap();
    assert!(matches!(r.call, RpcCall::Spawn(ref p) if p.ttl.is_zero()));
}

/// Answers as both kinds of worker send them.
#[test]
fn responses() {
    let ok = r#"{"id":"status-sb-1","worker_id":"w","result":{"provider":"mock","sandbox_id":"sb-1","state":"running","worker_id":"w"}}"#;
    let r: RpcResponse = serde_json::from_str(ok).unwrap();
    assert_eq!(r.failure(200), None);
    assert_eq!(serde_json::to_string(&r).unwrap(), ok);
    let st: StatusResult = serde_json::from_value(r.result.unwrap()).unwrap();
    assert_eq!(st.state, "running");

    let ours = r#"{"id":"x","worker_id":"w","error":"sandbox not found: sb-1","code":"SANDBOX_NOT_FOUND"}"#;
    let r: RpcResponse = serde_json::from_str(ours).unwrap();
    assert_eq!(serde_json::to_string(&r).unwrap(), ours);
    assert_eq!(
        r.failure(404),
        Some(RpcFailure::new(
            404,
            Some(ErrorCode::SandboxNotFound),
            "sandbox not found: sb-1"
        ))
    );
    let original = r#"{"id":"x","worker_id":"w","error":"sandbox not found: sb-1"}"#;
    let r: RpcResponse = serde_json::from_str(original).unwrap();
    assert_eq!(r.failure(404).unwrap().code, None);
    let line = r#"{"id":"x","worker_id":"w","result":{"data":"","exit_code":0,"stream":"exit"}}"#;
    let r: RpcResponse = serde_json::from_str(line).unwrap();
    let c: StreamChunk = serde_json::from_value(r.result.unwrap()).unwrap();
    assert_eq!(c.exit_code, Some(0));
}
