//! Freezes the JSON of every protocol message. Re-bless: `STACYVM_BLESS=1 cargo test -p stacyvm-protocol`.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use stacyvm_protocol::*;
use stacyvm_types::{ExecMode, GoDuration};

fn samples() -> BTreeMap<&'static str, Value> {
    let target = Target {
        sandbox_id: "sb-0000abcd".into(),
        provider: "mock".into(),
        runtime_id: "rt-1".into(),
    };
    let lease = LeaseToken {
        resource_id: "sb-0000abcd".into(),
        holder_id: "worker-a".into(),
        generation: 3,
        expires_at: "2026-05-08T10:30:00Z".into(),
    };
    let mut m = BTreeMap::new();
    let v = |x: &dyn Erased| x.value();
    m.insert("protocol_version", json!(PROTOCOL_VERSION));
    m.insert("methods", json!(method::ALL.as_slice()));
    m.insert("lease", v(&lease));
    m.insert(
        "request",
        v(&RpcEnvelope {
            id: "spawn-sb-0000abcd".into(),
            method: method::SPAWN.into(),
            worker_id: "worker-a".into(),
            lease: Some(lease.clone()),
            params: Some(json!({"k": 1})),
        }),
    );
    m.insert(
        "request_minimal",
        v(&RpcEnvelope {
            id: "x".into(),
            method: method::SHUTDOWN.into(),
            worker_id: "w".into(),
            lease: None,
            params: None,
        }),
    );
    m.insert(
        "response_ok",
        v(&RpcResponse {
            id: "x".into(),
            worker_id: "w".into(),
            error: None,
            code: None,
            result: Some(json!({})),
        }),
    );
    m.insert(
        "response_err",
        v(&RpcResponse {
            id: "x".into(),
            worker_id: "w".into(),
            error: Some("boom".into()),
            code: Some(ErrorCode::FileNotFound),
            result: None,
        }),
    );
    m.insert(
        "spawn_params",
        v(&SpawnParams {
            sandbox_id: "sb-0000abcd".into(),
            image: "alpine".into(),
            provider: "mock".into(),
            memory_mb: 512,
            vcpus: 1,
            owner_id: String::new(),
            ttl: GoDuration::from_secs(300),
            metadata: BTreeMap::new(),
            volumes: vec![VolumeMount {
                name: "data".into(),
                mount_path: "/data".into(),
                read_only: false,
            }],
            snapshot: "snap-0000abcd".into(),
        }),
    );
    m.insert(
        "spawn_result",
        v(&SpawnResult {
            sandbox_id: "sb-0000abcd".into(),
            runtime_id: "rt-1".into(),
            state: "running".into(),
            provider: "mock".into(),
            worker_id: "worker-a".into(),
            metadata: BTreeMap::new(),
        }),
    );
    m.insert(
        "status_result",
        v(&StatusResult {
            sandbox_id: "sb-0000abcd".into(),
            state: "running".into(),
            provider: "mock".into(),
            worker_id: "worker-a".into(),
            error: String::new(),
        }),
    );
    m.insert("target", v(&target));
    m.insert(
        "exec_params",
        v(&ExecParams {
            target: target.clone(),
            command: "echo".into(),
            args: vec!["hi".into()],
            mode: ExecMode::Argv,
            env: BTreeMap::new(),
            workdir: String::new(),
            timeout: Some(GoDuration::from_secs(5)),
            user: "user".into(),
        }),
    );
    m.insert(
        "exec_result",
        v(&ExecResult {
            sandbox_id: "sb-0000abcd".into(),
            exit_code: 0,
            stdout: "hi\n".into(),
            stderr: String::new(),
            truncated: false,
        }),
    );
    m.insert(
        "stream_chunk",
        v(&StreamChunk {
            stream: "stdout".into(),
            data: "x".into(),
            exit_code: None,
        }),
    );
    m.insert(
        "stream_exit",
        v(&StreamChunk {
            stream: "exit".into(),
            data: String::new(),
            exit_code: Some(3),
        }),
    );
    m.insert(
        "file_params_write",
        v(&FileWriteParams {
            target: target.clone(),
            path: "/workspace/a".into(),
            content: b"hi".to_vec(),
            mode: "0644".into(),
        }),
    );
    m.insert(
        "file_params_move",
        v(&FileMoveParams {
            target: target.clone(),
            old_path: "/a".into(),
            new_path: "/b".into(),
        }),
    );
    m.insert(
        "file_read_result",
        v(&FileReadResult {
            sandbox_id: "sb-0000abcd".into(),
            content: base64::encode(b"hi"),
        }),
    );
    m.insert(
        "file_write_result",
        v(&FileWriteResult {
            sandbox_id: "sb-0000abcd".into(),
            size: 104_857_600,
        }),
    );
    m.insert("envelope_header", json!(ENVELOPE_HEADER));
    m.insert("capability_file_stream", json!(capability::FILE_STREAM));
    m.insert("capability_preview", json!(capability::PREVIEW));
    m.insert(
        "preview_route",
        json!({
            "path": preview_path("sb-0000abcd", 8080),
            "path_header": PREVIEW_PATH_HEADER,
        }),
    );
    m.insert(
        "file_list_result",
        v(&FileListResult {
            sandbox_id: "sb-0000abcd".into(),
            files: vec![FileInfo {
                path: "workspace/a".into(),
                size: 2,
                mode: "-rw-r--r--".into(),
                is_dir: false,
                mod_time: "2026-05-08T10:30:00Z".into(),
            }],
        }),
    );
    m.insert(
        "file_stat_result",
        v(&FileStatResult {
            sandbox_id: "sb-0000abcd".into(),
            file: FileInfo {
                path: String::new(),
                size: 0,
                mode: String::new(),
                is_dir: false,
                mod_time: String::new(),
            },
        }),
    );
    m.insert(
        "file_glob_result",
        v(&FileGlobResult {
            sandbox_id: "sb-0000abcd".into(),
            matches: vec!["/workspace/a".into()],
        }),
    );
    m.insert(
        "logs_params",
        v(&LogsParams {
            target: target.clone(),
            lines: 50,
        }),
    );
    m.insert(
        "logs_result",
        v(&LogsResult {
            sandbox_id: "sb-0000abcd".into(),
            lines: vec!["l".into()],
        }),
    );
    m.insert(
        "renew_params",
        v(&RenewLeaseParams {
            resource_id: "sb-0000abcd".into(),
            ttl: GoDuration::from_secs(30),
        }),
    );
    m.insert("renew_result", v(&RenewLeaseResult { lease }));
    m.insert(
        "heartbeat",
        v(&HeartbeatBody {
            hostname: "h".into(),
            status: "online".into(),
            providers: Some(vec!["mock".into()]),
            capabilities: None,
            capacity: serde_json::Map::new(),
        }),
    );
    m.insert(
        "lease_renew_body",
        v(&LeaseRenewBody {
            ttl: "30s".into(),
            resource_id: String::new(),
        }),
    );
    added_samples(&mut m, &target);
    process_samples(&mut m, &target);
    watch_samples(&mut m, &target);
    state_samples(&mut m, &target);
    agent_samples(&mut m);
    m
}

/// The `worker.process_*` params, results and output lines, keyed `process_*`.
fn process_samples(m: &mut BTreeMap<&'static str, Value>, target: &Target) {
    use stacyvm_types::{OutputRecord, OutputStream, ProcessInfo, ProcessState, PtySize, Signal};
    let v = |x: &dyn Erased| x.value();
    let info = ProcessInfo {
        pid: 7,
        tag: "web".into(),
        command: "npm run dev".into(),
        args: vec!["--port".into(), "3000".into()],
        pty: false,
        stdin: true,
        state: ProcessState::Exited,
        exit_code: Some(143),
        signal: Some(Signal::Term),
        started_at_ms: 1_700_000_000_000,
        ended_at_ms: Some(1_700_000_001_000),
        next_seq: 42,
    };
    m.insert(
        "process_params_start",
        v(&ProcessStartParams {
            exec: ExecParams {
                target: target.clone(),
                command: "npm run dev".into(),
                args: Vec::new(),
                mode: ExecMode::Shell,
                env: BTreeMap::new(),
                workdir: String::new(),
                timeout: Some(GoDuration::from_secs(60)),
                user: String::new(),
            },
            tag: "web".into(),
            stdin: true,
            pty: Some(PtySize { cols: 80, rows: 24 }),
            output_buffer: Some(1 << 20),
            retain_exited_ms: Some(600_000),
            follow: false,
        }),
    );
    m.insert(
        "process_params_output",
        v(&ProcessOutputParams {
            target: target.clone(),
            pid: 7,
            since: 3,
            follow: true,
        }),
    );
    m.insert(
        "process_params_stdin",
        v(&ProcessStdinParams {
            target: target.clone(),
            pid: 7,
            data: b"\x00hi".to_vec(),
            close: true,
        }),
    );
    m.insert(
        "process_params_signal",
        v(&ProcessSignalParams {
            target: target.clone(),
            pid: 7,
            signal: Signal::Int,
        }),
    );
    m.insert(
        "process_params_resize",
        v(&ProcessResizeParams {
            target: target.clone(),
            pid: 7,
            cols: 120,
            rows: 40,
        }),
    );
    m.insert(
        "process_result",
        v(&ProcessResult {
            sandbox_id: "sb-0000abcd".into(),
            process: info.clone(),
        }),
    );
    m.insert(
        "process_list_result",
        v(&ProcessListResult {
            sandbox_id: "sb-0000abcd".into(),
            processes: vec![info],
        }),
    );
    m.insert(
        "process_stdin_result",
        v(&ProcessStdinResult {
            sandbox_id: "sb-0000abcd".into(),
            written: 3,
        }),
    );
    let lines: Vec<RecordLine> = [
        OutputRecord::Gap {
            seq: 10,
            dropped_bytes: 10,
        },
        OutputRecord::Data {
            seq: 10,
            stream: OutputStream::Stdout,
            data: b"hi\n".to_vec(),
        },
        OutputRecord::Exit {
            seq: 13,
            exit_code: 0,
            signal: None,
        },
    ]
    .iter()
    .map(RecordLine::from)
    .collect();
    m.insert("process_output_lines", v(&lines));
}

/// `worker.watch_dir`'s params and answer lines, keyed `watch_*`.
fn watch_samples(m: &mut BTreeMap<&'static str, Value>, target: &Target) {
    use stacyvm_types::{WatchEvent, WatchKind};
    let v = |x: &dyn Erased| x.value();
    m.insert(
        "watch_dir_params",
        v(&WatchDirParams {
            target: target.clone(),
            path: "/workspace".into(),
            recursive: true,
        }),
    );
    let lines: Vec<WatchEvent> = WatchKind::ALL
        .into_iter()
        .map(|kind| WatchEvent {
            name: "sub/a.txt".into(),
            kind,
        })
        .collect();
    m.insert("watch_dir_lines", v(&lines));
}

/// Volumes and snapshots held by workers (capability `state`).
fn state_samples(m: &mut BTreeMap<&'static str, Value>, target: &Target) {
    let v = |x: &dyn Erased| x.value();
    m.insert(
        "volume_params",
        v(&VolumeParams {
            provider: "docker".into(),
            name: "data".into(),
            size_mb: 1024,
        }),
    );
    m.insert(
        "volume_list_result",
        v(&VolumeListResult {
            names: Some(vec!["data".into()]),
        }),
    );
    m.insert(
        "snapshot_params",
        v(&SnapshotParams {
            target: target.clone(),
            snapshot_id: "snap-0000abcd".into(),
        }),
    );
    m.insert(
        "snapshot_result",
        v(&SnapshotResult {
            kind: "filesystem".into(),
            size_bytes: 4096,
        }),
    );
    m.insert(
        "snapshot_sweep",
        json!([
            v(&SnapshotSweepParams {
                provider: "docker".into(),
                known: vec!["snap-0000abcd".into()],
                grace_ms: 900_000,
            }),
            v(&SweepResult {
                removed: vec!["snap-0000ffff".into()],
            }),
        ]),
    );
}

/// Shapes added with the typed contract (all already on the wire before, untyped).
fn added_samples(m: &mut BTreeMap<&'static str, Value>, target: &Target) {
    let v = |x: &dyn Erased| x.value();
    m.insert("error_codes", json!(ErrorCode::ALL.map(ErrorCode::as_str)));
    m.insert(
        "exec_stream_result",
        v(&ExecStreamResult {
            sandbox_id: "sb-0000abcd".into(),
            chunks: vec![
                StreamChunk {
                    stream: "stdout".into(),
                    data: "x".into(),
                    exit_code: None,
                },
                StreamChunk {
                    stream: "exit".into(),
                    data: String::new(),
                    exit_code: Some(0),
                },
            ],
            truncated: false,
        }),
    );
    m.insert(
        "file_params_path",
        v(&FilePathParams {
            target: target.clone(),
            path: "/workspace/a".into(),
        }),
    );
    m.insert(
        "file_params_upload",
        v(&FileUploadParams {
            target: target.clone(),
            path: "/workspace/a".into(),
            mode: String::new(),
        }),
    );
    m.insert(
        "file_params_delete",
        v(&FileDeleteParams {
            target: target.clone(),
            path: "/workspace/a".into(),
            recursive: true,
        }),
    );
    m.insert(
        "file_params_chmod",
        v(&FileChmodParams {
            target: target.clone(),
            path: "/workspace/a".into(),
            mode: "0755".into(),
        }),
    );
    m.insert(
        "file_params_glob",
        v(&FileGlobParams {
            target: target.clone(),
            pattern: "/workspace/*.log".into(),
        }),
    );
}

/// Host ↔ guest agent messages (`stacyvm_protocol::agent`), keyed `agent_*`.
fn agent_samples(m: &mut BTreeMap<&'static str, Value>) {
    use stacyvm_protocol::agent::*;
    let v = |x: &dyn Erased| x.value();
    let host = |id: u64, msg: HostMsg| v(&HostFrame { id, msg });
    let guest = |id: u64, msg: GuestMsg| v(&GuestFrame { id, msg });
    m.insert(
        "agent_constants",
        json!({
            "version": AGENT_PROTOCOL_VERSION,
            "min_version": AGENT_PROTOCOL_MIN_VERSION,
            "port": PORT_NAME,
            "magic": String::from_utf8_lossy(&MAGIC),
            "max_frame": MAX_FRAME_LEN,
            "file_chunk": FILE_CHUNK,
        }),
    );
    let file = AgentFileInfo {
        path: "/workspace/a".into(),
        size: 2,
        mode: 0o100644,
        is_dir: false,
        mtime: 1_778_236_200,
    };
    let p = || "/workspace/a".to_string();
    let hosts = [
        (
            "hello",
            HostMsg::Hello {
                min_version: 1,
                max_version: 1,
                hostname: "sb-0000abcd".into(),
            },
        ),
        ("ping", HostMsg::Ping),
        (
            "exec",
            HostMsg::Exec(ExecStart {
                argv: vec!["sh".into(), "-c".into(), "echo hi".into()],
                env: BTreeMap::from([("A".into(), "1".into())]),
                workdir: "/workspace".into(),
                timeout_ms: Some(1500),
            }),
        ),
        (
            "exec_minimal",
            HostMsg::Exec(ExecStart {
                argv: vec!["true".into()],
                ..Default::default()
            }),
        ),
        ("cancel", HostMsg::Cancel { target: 3 }),
        (
            "write_open",
            HostMsg::WriteOpen {
                path: p(),
                mode: Some(0o644),
            },
        ),
        (
            "write_chunk",
            HostMsg::WriteChunk {
                handle: 1,
                data: stacyvm_protocol::base64::encode(b"hi"),
            },
        ),
        (
            "write_close",
            HostMsg::WriteClose {
                handle: 1,
                commit: true,
            },
        ),
        (
            "read",
            HostMsg::Read {
                path: p(),
                offset: 0,
                len: 524_288,
            },
        ),
        (
            "list",
            HostMsg::List {
                path: "/workspace".into(),
            },
        ),
        ("stat", HostMsg::Stat { path: p() }),
        (
            "glob",
            HostMsg::Glob {
                pattern: "/workspace/*.log".into(),
            },
        ),
        (
            "delete",
            HostMsg::Delete {
                path: p(),
                recursive: true,
            },
        ),
        (
            "move",
            HostMsg::Move {
                from: p(),
                to: "/workspace/b".into(),
            },
        ),
        (
            "chmod",
            HostMsg::Chmod {
                path: p(),
                mode: 0o755,
            },
        ),
        (
            "identity",
            HostMsg::Identity(Identity {
                hostname: "sb-0000abcd".into(),
                seed: stacyvm_protocol::base64::encode(&[7u8; 32]),
                machine_id: "0123456789abcdef0123456789abcdef".into(),
                unix_time_ms: Some(1_778_236_200_123),
            }),
        ),
        (
            "watch",
            HostMsg::Watch {
                path: "/workspace".into(),
                recursive: true,
            },
        ),
    ];
    for (i, (name, msg)) in hosts.into_iter().enumerate() {
        let key: &'static str = Box::leak(format!("agent_host_{name}").into_boxed_str());
        m.insert(key, host(i as u64 + 1, msg));
    }
    let guests = [
        (
            "hello_ack",
            GuestMsg::HelloAck {
                version: 1,
                agent_version: "0.1.0".into(),
            },
        ),
        ("pong", GuestMsg::Pong),
        (
            "output",
            GuestMsg::Output {
                stream: OutputStream::Stderr,
                data: "eA==".into(),
            },
        ),
        ("exit", GuestMsg::Exit { code: 42 }),
        ("timed_out", GuestMsg::TimedOut),
        ("ok", GuestMsg::Ok),
        ("opened", GuestMsg::Opened { handle: 1 }),
        (
            "data",
            GuestMsg::Data {
                data: "aGk=".into(),
                eof: true,
            },
        ),
        (
            "entries",
            GuestMsg::Entries {
                files: vec![file.clone()],
            },
        ),
        ("stat", GuestMsg::Stat { file }),
        ("matches", GuestMsg::Matches { paths: vec![p()] }),
        (
            "error",
            GuestMsg::Error {
                code: ErrorCode::NotFound,
                message: "no such file".into(),
            },
        ),
        (
            "log",
            GuestMsg::Log {
                line: "agent ready".into(),
            },
        ),
        ("watching", GuestMsg::Watching),
        (
            "watch_events",
            GuestMsg::WatchEvents {
                events: vec![AgentWatchEvent {
                    name: "sub/a.txt".into(),
                    kind: watch_kind::WRITE.into(),
                }],
            },
        ),
        ("watch_end", GuestMsg::WatchEnd),
    ];
    for (i, (name, msg)) in guests.into_iter().enumerate() {
        let key: &'static str = Box::leak(format!("agent_guest_{name}").into_boxed_str());
        m.insert(key, guest(i as u64, msg));
    }
}

#[test]
fn agent_frames_decode_from_snapshot_shapes() {
    use stacyvm_protocol::agent::*;
    // Unknown keys are ignored, so a newer peer's additions do not break an older one.
    let f: HostFrame =
        serde_json::from_str(r#"{"id":9,"op":"exec","argv":["true"],"future":1}"#).expect("exec");
    assert_eq!(f.id, 9);
    assert!(matches!(f.msg, HostMsg::Exec(ExecStart { ref argv, .. }) if argv == &["true"]));
    let g: GuestFrame = serde_json::from_str(r#"{"id":0,"op":"log","line":"x"}"#).expect("log");
    assert_eq!(g.msg, GuestMsg::Log { line: "x".into() });
}

trait Erased {
    fn value(&self) -> Value;
}

impl<T: serde::Serialize> Erased for T {
    fn value(&self) -> Value {
        serde_json::to_value(self).expect("serialisable")
    }
}

#[test]
fn schema_snapshot() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/snapshots/schema.json");
    let got = serde_json::to_string_pretty(&samples()).expect("json") + "\n";
    if std::env::var("STACYVM_BLESS").is_ok() {
        std::fs::write(path, &got).expect("write snapshot");
        return;
    }
    let want = std::fs::read_to_string(path).expect("snapshot exists (bless with STACYVM_BLESS=1)");
    assert_eq!(got, want, "protocol shapes changed; see VERSIONING.md");
}

#[test]
fn go_worker_messages_decode() {
    // Shapes the original Go side sends, decoded by our types (unknown keys ignored).
    let req: RpcRequest = serde_json::from_str(
        r#"{"id":"exec-sb-1","method":"worker.exec","worker_id":"w","params":{"sandbox_id":"sb-1","provider":"mock","command":"ls","extra":1}}"#,
    ).expect("request");
    let RpcCall::Exec(p) = req.call else {
        panic!("an exec call: {req:?}")
    };
    assert_eq!(p.target.runtime(), "sb-1");
    assert_eq!(p.command, "ls");
    let c: StreamChunk = serde_json::from_str(r#"{"stream":"stdout","data":"x"}"#).expect("chunk");
    assert_eq!(c.exit_code, None);
}
