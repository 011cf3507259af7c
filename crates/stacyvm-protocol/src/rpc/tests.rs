//! Decoding rules of the envelope (every method's JSON is pinned by `tests/golden.rs`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{json, Value};

use super::*;

fn env(method: &str, params: Option<Value>, lease: bool) -> RpcEnvelope {
    RpcEnvelope {
        id: "r1".into(),
        method: method.into(),
        worker_id: "w".into(),
        lease: lease.then(|| LeaseToken {
            resource_id: "sb-1".into(),
            holder_id: "w".into(),
            generation: 1,
            expires_at: "2026-05-08T10:30:00Z".into(),
        }),
        params,
    }
}

fn refused(e: RpcEnvelope) -> String {
    let f = e.decode().expect_err("refused");
    assert_eq!((f.status, f.code), (400, Some(ErrorCode::BadRequest)));
    f.message
}

fn target() -> Value {
    json!({"sandbox_id": "sb-1", "provider": "mock"})
}

fn with(extra: Value) -> Value {
    let mut v = target();
    for (k, x) in extra.as_object().unwrap() {
        v[k] = x.clone();
    }
    v
}

#[test]
fn envelope_rules_in_order() {
    let mut e = env(method::STATUS, Some(target()), false);
    e.id = " ".into();
    assert_eq!(refused(e), "request id is required");
    let mut e = env(method::STATUS, Some(target()), false);
    e.worker_id = String::new();
    assert_eq!(refused(e), "worker_id is required");
    assert_eq!(
        refused(env("worker.nope", Some(target()), true)),
        "unknown worker method: worker.nope"
    );
    assert_eq!(
        refused(env(method::STATUS, None, false)),
        "params are required for worker.status"
    );
    assert_eq!(
        refused(env(method::STATUS, Some(Value::Null), false)),
        "params are required for worker.status"
    );
    // The lease is checked before the params are decoded.
    assert_eq!(
        refused(env(method::SPAWN, Some(target()), false)),
        "lease is required for worker.spawn"
    );
    for m in [method::DESTROY, method::RENEW_LEASE] {
        assert!(refused(env(m, Some(target()), false)).contains("lease is required"));
    }
}

#[test]
fn shutdown_needs_no_params_and_ignores_any() {
    for p in [None, Some(Value::Null), Some(json!({"x": 1}))] {
        let r = env(method::SHUTDOWN, p, false).decode().unwrap();
        assert_eq!(r.call, RpcCall::Shutdown);
    }
}

#[test]
fn params_are_typed() {
    let bad = [
        (method::STATUS, json!({"sandbox_id": 5, "provider": "mock"})),
        (method::STATUS, json!({"provider": "mock"})),
        (
            method::EXEC,
            with(json!({"command": "true", "mode": "weird"})),
        ),
        (
            method::EXEC,
            with(json!({"command": "true", "timeout": "soon"})),
        ),
        (
            method::FILE_WRITE,
            with(json!({"path": "/a", "content": "***"})),
        ),
        (
            method::RENEW_LEASE,
            json!({"resource_id": "sb-1", "ttl": "1 minute"}),
        ),
    ];
    for (m, p) in bad {
        let msg = refused(env(m, Some(p.clone()), true));
        assert!(msg.starts_with("invalid params: "), "{m} {p} → {msg}");
    }
    // Blank ids decode (ids are taken as given) but are refused in the same step.
    for p in [
        json!({"sandbox_id": " ", "provider": "mock"}),
        json!({"sandbox_id": "", "provider": "mock", "command": "true"}),
    ] {
        assert_eq!(
            refused(env(method::STATUS, Some(p), false)),
            "sandbox_id is required"
        );
    }
    let spawn = json!({"sandbox_id": "", "image": "alpine", "provider": "mock", "memory_mb": 64, "vcpus": 1});
    assert_eq!(
        refused(env(method::SPAWN, Some(spawn), true)),
        "sandbox_id is required"
    );
    let renew = json!({"resource_id": " ", "ttl": "1m"});
    assert_eq!(
        refused(env(method::RENEW_LEASE, Some(renew), true)),
        "resource_id is required"
    );
}

#[test]
fn remaining_rules() {
    let cases = [
        (
            method::EXEC,
            with(json!({"command": "  "})),
            "command is required",
        ),
        (
            method::EXEC_STREAM,
            with(json!({"command": "true", "timeout": "-1s"})),
            "timeout must not be negative",
        ),
        (method::FILE_READ, target(), "path is required"),
        (
            method::FILE_STAT,
            with(json!({"path": " "})),
            "path is required",
        ),
        (method::FILE_READ_STREAM, target(), "path is required"),
        (method::FILE_WRITE, target(), "path is required"),
        (method::FILE_WRITE_STREAM, target(), "path is required"),
        (method::FILE_DELETE, target(), "path is required"),
        (
            method::FILE_MOVE,
            with(json!({"old_path": "/a"})),
            "new_path is required",
        ),
        (
            method::FILE_CHMOD,
            with(json!({"path": "/a"})),
            "mode is required",
        ),
        (method::FILE_GLOB, target(), "pattern is required"),
        (method::WATCH_DIR, target(), "path is required"),
    ];
    for (m, p, want) in cases {
        let msg = refused(env(m, Some(p.clone()), false));
        assert_eq!(msg, format!("invalid input: {want}"), "{m} {p}");
    }
    let spawn = json!({"sandbox_id": "sb-1", "image": "alpine", "provider": "mock",
        "memory_mb": 64, "vcpus": 1, "ttl": "-5m"});
    assert_eq!(
        refused(env(method::SPAWN, Some(spawn), true)),
        "invalid input: ttl must not be negative"
    );
    let renew = json!({"resource_id": "sb-1", "ttl": "0s"});
    assert_eq!(
        refused(env(method::RENEW_LEASE, Some(renew), true)),
        "ttl must be a positive duration"
    );
    // An empty list path is fine (it lists `/`), and so are absent optional keys.
    let r = env(method::FILE_LIST, Some(target()), false)
        .decode()
        .unwrap();
    assert!(matches!(r.call, RpcCall::FileList(ref p) if p.path.is_empty()));
}

#[test]
fn request_ids_follow_the_method() {
    let t = Target {
        sandbox_id: "sb-1".into(),
        provider: "mock".into(),
        runtime_id: String::new(),
    };
    let r = RpcRequest::new(
        RpcCall::ExecStream(ExecParams {
            target: t.clone(),
            command: "true".into(),
            args: Vec::new(),
            mode: Default::default(),
            env: Default::default(),
            workdir: String::new(),
            timeout: None,
            user: String::new(),
        }),
        "w",
        "sb-1",
        None,
    );
    assert_eq!(r.id, "exec-stream-sb-1");
    let r = RpcRequest::new(RpcCall::Shutdown, "w", "w", None);
    assert_eq!(r.id, "shutdown-w");
    let r = RpcRequest::new(
        RpcCall::FileWriteStream(FileUploadParams {
            target: t,
            path: "/a".into(),
            mode: String::new(),
        }),
        "w",
        "sb-1",
        None,
    );
    assert_eq!(r.id, "file-write-stream-sb-1");
}

#[test]
fn target_runtime_fallback() {
    let mut t = Target {
        sandbox_id: "sb-1".into(),
        provider: "mock".into(),
        runtime_id: String::new(),
    };
    assert_eq!(t.runtime(), "sb-1");
    t.runtime_id = "rt".into();
    assert_eq!(t.runtime(), "rt");
}

#[test]
fn envelope_header_is_ascii_and_round_trips() {
    let req = RpcRequest::new(
        RpcCall::FileWriteStream(FileUploadParams {
            target: Target {
                sandbox_id: "sb-1".into(),
                provider: "mock".into(),
                runtime_id: String::new(),
            },
            path: "/workspace/é 😀\n\"x\"".into(),
            mode: String::new(),
        }),
        "w",
        "sb-1",
        None,
    );
    let v = envelope_header_value(&req);
    assert!(v.bytes().all(|b| (0x20..0x7f).contains(&b)), "{v}");
    let back: RpcRequest = serde_json::from_str(&v).expect("the header value is JSON");
    assert_eq!(back, req);
}

#[test]
fn lease_methods() {
    assert!(method::needs_lease(method::SPAWN));
    assert!(!method::needs_lease(method::EXEC));
}
